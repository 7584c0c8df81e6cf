//! The policy methods of [`KmsClient`]: key policies (rotation, dual-authorization delete),
//! setting a key for deletion and unsetting it, and instance policies (defaults for new keys,
//! key create/import access).

use kmsim_proto::v1::{
    DualAuthDeletePolicy, DualAuthDeleteState, GetInstancePoliciesRequest, GetKeyPoliciesRequest,
    InstancePolicies, KeyPolicies, RotationPolicy, SetInstancePoliciesRequest,
    SetKeyForDeletionRequest, SetKeyPoliciesRequest, UnsetKeyForDeletionRequest,
};

use crate::KmsClient;
use crate::client::required;
use crate::error::ClientError;
use crate::refs::KeyRef;
use crate::retry::rpc;

impl KmsClient {
    // ----- KeyService: policies and dual-authorization delete -----

    /// Sets a key's rotation policy: `interval_months` (1..=12, months of 30 days).
    ///
    /// # Errors
    /// A [`ClientError`]; `BAD_BODY_ERR` with a field violation for an interval out of range,
    /// `KEY_ROOT_REQ_ERR` for a standard key, `KEY_IMPORTED_ROTATION_POLICY_ERR` for an
    /// imported key.
    pub async fn set_rotation_policy(
        &self,
        key: &KeyRef,
        enabled: bool,
        interval_months: i32,
    ) -> Result<KeyPolicies, ClientError> {
        self.set_key_policies(SetKeyPoliciesRequest {
            key: key.to_string(),
            rotation: Some(RotationPolicy {
                enabled,
                interval_months,
                ..Default::default()
            }),
            dual_auth_delete: None,
        })
        .await
    }

    /// Enables (or, for a key without it, records as disabled) the key's dual-authorization
    /// delete policy.
    ///
    /// # Errors
    /// A [`ClientError`]; `DUAL_AUTH_POLICY_PERMANENT_ERR` when disabling an enabled policy.
    pub async fn set_dual_auth_delete_policy(
        &self,
        key: &KeyRef,
        enabled: bool,
    ) -> Result<KeyPolicies, ClientError> {
        self.set_key_policies(SetKeyPoliciesRequest {
            key: key.to_string(),
            rotation: None,
            dual_auth_delete: Some(DualAuthDeletePolicy {
                enabled,
                metadata: None,
            }),
        })
        .await
    }

    /// Sets key policies with a full request.
    ///
    /// # Errors
    /// As [`set_rotation_policy`](Self::set_rotation_policy) and
    /// [`set_dual_auth_delete_policy`](Self::set_dual_auth_delete_policy).
    pub async fn set_key_policies(
        &self,
        request: SetKeyPoliciesRequest,
    ) -> Result<KeyPolicies, ClientError> {
        let response = rpc!(
            self,
            NotIdempotent,
            self.keys.clone(),
            set_key_policies,
            request
        )?;
        required(response.policies, "policies")
    }

    /// Returns a key's policies.
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn get_key_policies(&self, key: &KeyRef) -> Result<KeyPolicies, ClientError> {
        let request = GetKeyPoliciesRequest {
            key: key.to_string(),
        };
        let response = rpc!(
            self,
            Idempotent,
            self.keys.clone(),
            get_key_policies,
            request
        )?;
        required(response.policies, "policies")
    }

    /// Gives the first authorization to delete a key with a dual-authorization delete policy;
    /// a different identity may then delete it within 7 days.
    ///
    /// # Errors
    /// A [`ClientError`]; `NOT_DUAL_AUTH_ERR` for a key without the policy.
    pub async fn set_key_for_deletion(
        &self,
        key: &KeyRef,
    ) -> Result<DualAuthDeleteState, ClientError> {
        let request = SetKeyForDeletionRequest {
            key: key.to_string(),
        };
        let response = rpc!(
            self,
            NotIdempotent,
            self.keys.clone(),
            set_key_for_deletion,
            request
        )?;
        required(response.dual_auth_delete, "dual_auth_delete")
    }

    /// Cancels a pending authorization to delete.
    ///
    /// # Errors
    /// A [`ClientError`]; `NOT_DUAL_AUTH_ERR` for a key without the policy.
    pub async fn unset_key_for_deletion(
        &self,
        key: &KeyRef,
    ) -> Result<DualAuthDeleteState, ClientError> {
        let request = UnsetKeyForDeletionRequest {
            key: key.to_string(),
        };
        let response = rpc!(
            self,
            NotIdempotent,
            self.keys.clone(),
            unset_key_for_deletion,
            request
        )?;
        required(response.dual_auth_delete, "dual_auth_delete")
    }

    // ----- InstanceService: policies -----

    /// Sets instance policies (absent ones stay as they are).
    ///
    /// # Errors
    /// A [`ClientError`]; `BAD_BODY_ERR` with a field violation when no policy is given or
    /// the rotation interval is out of range.
    pub async fn set_instance_policies(
        &self,
        request: SetInstancePoliciesRequest,
    ) -> Result<InstancePolicies, ClientError> {
        let response = rpc!(
            self,
            NotIdempotent,
            self.instances.clone(),
            set_instance_policies,
            request
        )?;
        required(response.policies, "policies")
    }

    /// Returns an instance's policies (by id, `instances/{id}` or CRN).
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn get_instance_policies(
        &self,
        instance: &str,
    ) -> Result<InstancePolicies, ClientError> {
        let request = GetInstancePoliciesRequest {
            instance: instance.to_owned(),
        };
        let response = rpc!(
            self,
            Idempotent,
            self.instances.clone(),
            get_instance_policies,
            request
        )?;
        required(response.policies, "policies")
    }
}
