//! `kmsim.v1.RegistrationService`: parses registration requests into typed values, calls the
//! domain (`kms::registrations`) and maps registrations to protobuf.

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use pb::registration_service_server::RegistrationService;
use tonic::{Request, Response, Status};

use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::grpc::{blocking, caller, context, name_key, parse};
use crate::kms::Kms;
use crate::kms::ids::{KeyRef, KeyVersionId, ResourceCrn};
use crate::kms::registrations::{
    NewRegistration, RegistrationQuery, RegistrationUpdate, RegistrationView,
};

/// The RegistrationService adapter.
#[derive(Debug, Clone)]
pub struct Registrations {
    kms: Arc<Kms>,
}

impl Registrations {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

/// A registration as protobuf.
pub fn registration_to_proto(view: &RegistrationView) -> pb::Registration {
    let record = &view.record;
    let deletion = record.deletion.as_ref();
    pb::Registration {
        key_id: record.key.to_string(),
        key_crn: view.key_crn.to_string(),
        instance_id: record.instance.to_string(),
        resource_crn: record.resource_crn.to_string(),
        description: record.description.clone(),
        prevent_key_deletion: record.prevent_key_deletion,
        key_version_id: record.key_version.to_string(),
        key_version_create_time: view.key_version_create_time.map(Timestamp::to_proto),
        create_time: Some(record.create_time.to_proto()),
        update_time: Some(record.update_time.to_proto()),
        created_by: record.created_by.clone(),
        updated_by: record.updated_by.clone(),
        deleted: deletion.is_some(),
        delete_time: deletion.map(|d| d.time.to_proto()),
        remove_time: deletion.map(|d| d.remove_at.to_proto()),
    }
}

fn optional_version(value: &str) -> Result<Option<KeyVersionId>, KmsError> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse("key_version_id", value).map(Some)
    }
}

fn retain_for(value: Option<prost_types::Duration>) -> Result<Duration, KmsError> {
    match value {
        None => Ok(Duration::ZERO),
        Some(d) => Duration::try_from(d)
            .map_err(|_| KmsError::field("retain_for", FieldProblem::OutOfRange)),
    }
}

#[tonic::async_trait]
impl RegistrationService for Registrations {
    async fn create_registration(
        &self,
        request: Request<pb::CreateRegistrationRequest>,
    ) -> Result<Response<pb::CreateRegistrationResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = parse::<KeyRef>("key", &request.key);
        if let Ok(key) = &key {
            name_key(call.as_ref(), key).await?;
        }
        let new = NewRegistration {
            key: key?,
            resource_crn: parse("resource_crn", &request.resource_crn)?,
            prevent_key_deletion: request.prevent_key_deletion,
            description: request.description,
            key_version: optional_version(&request.key_version_id)?,
        };
        let view = blocking(&self.kms, move |kms| kms.create_registration(&who, new)).await?;
        Ok(Response::new(pb::CreateRegistrationResponse {
            registration: Some(registration_to_proto(&view)),
        }))
    }

    async fn list_registrations(
        &self,
        request: Request<pb::ListRegistrationsRequest>,
    ) -> Result<Response<pb::ListRegistrationsResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let resource: Option<ResourceCrn> = if request.resource_crn.is_empty() {
            None
        } else {
            Some(parse("resource_crn", &request.resource_crn)?)
        };
        let query = if request.key.is_empty() {
            RegistrationQuery::Resource(
                resource.ok_or(KmsError::field("resource_crn", FieldProblem::Missing))?,
            )
        } else {
            let key: KeyRef = parse("key", &request.key)?;
            name_key(call.as_ref(), &key).await?;
            RegistrationQuery::Key(key, resource)
        };
        let views = self.kms.list_registrations(&who, &query)?;
        Ok(Response::new(pb::ListRegistrationsResponse {
            registrations: views.iter().map(registration_to_proto).collect(),
        }))
    }

    async fn update_registration(
        &self,
        request: Request<pb::UpdateRegistrationRequest>,
    ) -> Result<Response<pb::UpdateRegistrationResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = parse::<KeyRef>("key", &request.key);
        if let Ok(key) = &key {
            name_key(call.as_ref(), key).await?;
        }
        let update = RegistrationUpdate {
            key: key?,
            resource_crn: parse("resource_crn", &request.resource_crn)?,
            description: request.description,
            prevent_key_deletion: request.prevent_key_deletion,
            key_version: optional_version(&request.key_version_id)?,
        };
        let view = blocking(&self.kms, move |kms| kms.update_registration(&who, update)).await?;
        Ok(Response::new(pb::UpdateRegistrationResponse {
            registration: Some(registration_to_proto(&view)),
        }))
    }

    async fn delete_registration(
        &self,
        request: Request<pb::DeleteRegistrationRequest>,
    ) -> Result<Response<pb::DeleteRegistrationResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key: KeyRef = parse("key", &request.key)?;
        name_key(call.as_ref(), &key).await?;
        let resource: ResourceCrn = parse("resource_crn", &request.resource_crn)?;
        let retain = retain_for(request.retain_for)?;
        let view = blocking(&self.kms, move |kms| {
            kms.delete_registration(&who, &key, &resource, retain)
        })
        .await?;
        Ok(Response::new(pb::DeleteRegistrationResponse {
            registration: view.as_ref().map(registration_to_proto),
        }))
    }
}
