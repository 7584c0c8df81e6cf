//! The registration and lifecycle-event part of [`KmsClient`]: RegistrationService
//! (create, list, update, delete registrations), the lifecycle half of EventService (watch
//! and acknowledge lifecycle events) and `KeyService.SyncKey`.

use std::time::Duration;

use kmsim_proto::v1::event_service_client::EventServiceClient;
use kmsim_proto::v1::registration_service_client::RegistrationServiceClient;
use kmsim_proto::v1::{
    AckLifecycleEventRequest, CreateRegistrationRequest, DeleteRegistrationRequest, KeyState,
    LifecycleEvent, ListRegistrationsRequest, Registration, SyncKeyRequest,
    UpdateRegistrationRequest, WatchLifecycleEventsRequest,
};

use crate::client::{AuthenticatedChannel, KmsClient};
use crate::error::ClientError;
use crate::refs::KeyRef;
use crate::retry::rpc;

fn registration(value: Option<Registration>) -> Result<Registration, ClientError> {
    value.ok_or(ClientError::MalformedResponse("registration"))
}

impl KmsClient {
    /// The generated RegistrationService client, with this client's credentials.
    pub fn registration_service(&self) -> RegistrationServiceClient<AuthenticatedChannel> {
        RegistrationServiceClient::with_interceptor(
            self.channel().clone(),
            self.interceptor().clone(),
        )
    }

    /// The generated EventService client, with this client's credentials.
    pub fn event_service(&self) -> EventServiceClient<AuthenticatedChannel> {
        EventServiceClient::with_interceptor(self.channel().clone(), self.interceptor().clone())
    }

    // ----- RegistrationService -----

    /// Registers `resource_crn` against a root key, at the key's current version (service
    /// identities only).
    ///
    /// # Errors
    /// A [`ClientError`]; `SERVICE_ONLY_ERR` for a user, `KEY_ROOT_REQ_REG_ERR` for a
    /// standard key, `REGISTRATION_EXISTS_ERR` when already registered.
    pub async fn create_registration(
        &self,
        key: &KeyRef,
        resource_crn: &str,
        prevent_key_deletion: bool,
        description: &str,
    ) -> Result<Registration, ClientError> {
        let request = CreateRegistrationRequest {
            key: key.to_string(),
            resource_crn: resource_crn.to_owned(),
            prevent_key_deletion,
            description: description.to_owned(),
            key_version_id: String::new(),
        };
        let response = rpc!(
            self,
            NotIdempotent,
            self.registration_service(),
            create_registration,
            request
        )?;
        registration(response.registration)
    }

    /// A key's registrations (soft-deleted ones included), oldest first.
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn list_key_registrations(
        &self,
        key: &KeyRef,
    ) -> Result<Vec<Registration>, ClientError> {
        let request = ListRegistrationsRequest {
            key: key.to_string(),
            resource_crn: String::new(),
        };
        let response = rpc!(
            self,
            Idempotent,
            self.registration_service(),
            list_registrations,
            request
        )?;
        Ok(response.registrations)
    }

    /// A resource's registrations on every instance the caller may read.
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn list_resource_registrations(
        &self,
        resource_crn: &str,
    ) -> Result<Vec<Registration>, ClientError> {
        let request = ListRegistrationsRequest {
            key: String::new(),
            resource_crn: resource_crn.to_owned(),
        };
        let response = rpc!(
            self,
            Idempotent,
            self.registration_service(),
            list_registrations,
            request
        )?;
        Ok(response.registrations)
    }

    /// Updates a registration with a full request (unset fields keep their value).
    ///
    /// # Errors
    /// A [`ClientError`]; `KEY_VERSION_INVALID` for a version that is not the key's or older
    /// than the registration's.
    pub async fn update_registration(
        &self,
        request: UpdateRegistrationRequest,
    ) -> Result<Registration, ClientError> {
        let response = rpc!(
            self,
            NotIdempotent,
            self.registration_service(),
            update_registration,
            request
        )?;
        registration(response.registration)
    }

    /// Moves a registration to the key version `key_version_id` (only forward).
    ///
    /// # Errors
    /// As [`update_registration`](Self::update_registration).
    pub async fn set_registration_key_version(
        &self,
        key: &KeyRef,
        resource_crn: &str,
        key_version_id: &str,
    ) -> Result<Registration, ClientError> {
        self.update_registration(UpdateRegistrationRequest {
            key: key.to_string(),
            resource_crn: resource_crn.to_owned(),
            key_version_id: key_version_id.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Deletes a registration: at once when `retain_for` is zero, otherwise it stays
    /// soft-deleted (still guarding the key) for `retain_for`. Returns the soft-deleted
    /// registration, or `None` when it was removed at once.
    ///
    /// # Errors
    /// A [`ClientError`]; `BAD_BODY_ERR` for a `retain_for` over 365 days.
    pub async fn delete_registration(
        &self,
        key: &KeyRef,
        resource_crn: &str,
        retain_for: Duration,
    ) -> Result<Option<Registration>, ClientError> {
        // Beyond the protobuf range, send the maximum: the server refuses it as out of range.
        let retain = (!retain_for.is_zero()).then(|| {
            prost_types::Duration::try_from(retain_for).unwrap_or(prost_types::Duration {
                seconds: i64::MAX,
                nanos: 0,
            })
        });
        let request = DeleteRegistrationRequest {
            key: key.to_string(),
            resource_crn: resource_crn.to_owned(),
            retain_for: retain,
        };
        let response = rpc!(
            self,
            NotIdempotent,
            self.registration_service(),
            delete_registration,
            request
        )?;
        Ok(response.registration)
    }

    // ----- Lifecycle events -----

    /// Streams lifecycle events after `after_sequence` (0: from the first), for
    /// `resource_crn` (empty: every resource the caller may read): stored ones first, then
    /// new ones as they happen. Resume after a disconnect with the last `sequence` seen.
    /// Connect with an endpoint without a request timeout to keep the stream open longer
    /// than [`crate::DEFAULT_REQUEST_TIMEOUT`].
    ///
    /// # Errors
    /// A [`ClientError`] when the stream cannot be opened.
    pub async fn watch_lifecycle_events(
        &self,
        resource_crn: &str,
        after_sequence: u64,
    ) -> Result<tonic::Streaming<LifecycleEvent>, ClientError> {
        let request = WatchLifecycleEventsRequest {
            resource_crn: resource_crn.to_owned(),
            after_sequence,
        };
        // Not retried (the caller resumes by sequence number), but sent again once with a new
        // token if the server refused the old one.
        rpc!(
            self,
            NotIdempotent,
            self.event_service(),
            watch_lifecycle_events,
            request
        )
    }

    /// Acknowledges a lifecycle event with the key state the adopter now applies and,
    /// optionally, the key version it uses (service identities only). Returns the event with
    /// its delivery status (failed with 409 when the state or version conflicts).
    ///
    /// # Errors
    /// A [`ClientError`]; `LIFECYCLE_EVENT_SETTLED_ERR` for an event already acknowledged or
    /// failed.
    pub async fn ack_lifecycle_event(
        &self,
        event_id: &str,
        adopter_key_state: KeyState,
        key_version_id: Option<&str>,
    ) -> Result<LifecycleEvent, ClientError> {
        let request = AckLifecycleEventRequest {
            event_id: event_id.to_owned(),
            adopter_key_state: adopter_key_state as i32,
            key_version_id: key_version_id.unwrap_or_default().to_owned(),
        };
        let response = rpc!(
            self,
            NotIdempotent,
            self.event_service(),
            ack_lifecycle_event,
            request
        )?;
        response
            .event
            .ok_or(ClientError::MalformedResponse("event"))
    }

    /// Re-sends the key's last lifecycle event to every registered resource; returns the
    /// events sent.
    ///
    /// # Errors
    /// A [`ClientError`]; `REQ_TOO_EARLY_ERR` (with a retry delay) within an hour of the last
    /// notification or lifecycle action.
    pub async fn sync_key(&self, key: &KeyRef) -> Result<Vec<LifecycleEvent>, ClientError> {
        let request = SyncKeyRequest {
            key: key.to_string(),
        };
        let response = rpc!(self, NotIdempotent, self.key_service(), sync_key, request)?;
        Ok(response.events)
    }
}
