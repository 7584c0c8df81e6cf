//! Key and instance policies (`KeyService.SetKeyPolicies`, `GetKeyPolicies`,
//! `SetKeyForDeletion`, `UnsetKeyForDeletion`; `InstanceService.SetInstancePolicies`,
//! `GetInstancePolicies`): parse the request into the domain's policy changes, call
//! `kms::policies`, and map the policies back to protobuf. Also the policy parts of `Key`
//! ([`dual_auth_to_proto`], [`key_rotation_to_proto`]).

use std::sync::Arc;

use kmsim_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::grpc::{blocking, caller, context, name_instance, name_key, parse};
use crate::kms::Kms;
use crate::kms::ids::{Crn, InstanceRef, KeyRef};
use crate::kms::policies::{
    CreateImportAccess, CreateImportRules, DualAuthPolicy, InstancePoliciesView,
    InstancePolicyChange, KeyPoliciesView, KeyPolicyChange, PolicyMeta, RotationInterval,
    RotationPolicy, RotationSetting,
};
use crate::kms::records::KeyRecord;

fn rotation_setting(
    field: &'static str,
    policy: &pb::RotationPolicy,
) -> Result<RotationSetting, KmsError> {
    let interval = RotationInterval::from_months(i64::from(policy.interval_months))
        .ok_or(KmsError::field(field, FieldProblem::OutOfRange))?;
    Ok(RotationSetting {
        enabled: policy.enabled,
        interval,
    })
}

fn create_import_rules(policy: &pb::KeyCreateImportAccessPolicy) -> CreateImportRules {
    CreateImportRules {
        enabled: policy.enabled,
        create_root_key: policy.create_root_key,
        create_standard_key: policy.create_standard_key,
        import_root_key: policy.import_root_key,
        import_standard_key: policy.import_standard_key,
        enforce_token: policy.enforce_token,
    }
}

fn meta_to_proto(meta: &PolicyMeta, instance: &Crn) -> pb::PolicyMetadata {
    pb::PolicyMetadata {
        id: meta.id.to_string(),
        crn: meta.crn(instance),
        created_by: meta.created_by.clone(),
        create_time: Some(meta.create_time.to_proto()),
        updated_by: meta.updated_by.clone(),
        update_time: Some(meta.update_time.to_proto()),
    }
}

fn rotation_to_proto(
    policy: &RotationPolicy,
    instance: &Crn,
    next: Option<Timestamp>,
) -> pb::RotationPolicy {
    pb::RotationPolicy {
        enabled: policy.enabled,
        interval_months: i32::from(policy.interval.months()),
        metadata: Some(meta_to_proto(&policy.meta, instance)),
        next_rotation_time: next.map(Timestamp::to_proto),
    }
}

fn dual_auth_policy_to_proto(policy: &DualAuthPolicy, instance: &Crn) -> pb::DualAuthDeletePolicy {
    pb::DualAuthDeletePolicy {
        enabled: policy.enabled,
        metadata: Some(meta_to_proto(&policy.meta, instance)),
    }
}

fn access_to_proto(policy: &CreateImportAccess, instance: &Crn) -> pb::KeyCreateImportAccessPolicy {
    let rules = &policy.rules;
    pb::KeyCreateImportAccessPolicy {
        enabled: rules.enabled,
        create_root_key: rules.create_root_key,
        create_standard_key: rules.create_standard_key,
        import_root_key: rules.import_root_key,
        import_standard_key: rules.import_standard_key,
        enforce_token: rules.enforce_token,
        metadata: Some(meta_to_proto(&policy.meta, instance)),
    }
}

/// A key's rotation policy as protobuf (for `Key.rotation`), with its next due time.
pub fn key_rotation_to_proto(record: &KeyRecord, instance: &Crn) -> Option<pb::RotationPolicy> {
    record
        .policies
        .rotation
        .as_ref()
        .map(|policy| rotation_to_proto(policy, instance, record.next_rotation_time()))
}

/// A key's dual-authorization delete state at `now` (for `Key.dual_auth_delete`).
pub fn dual_auth_to_proto(record: &KeyRecord, now: Timestamp) -> pb::DualAuthDeleteState {
    let pending = record.pending_deletion_authorization(now);
    pb::DualAuthDeleteState {
        enabled: record.dual_auth_enabled(),
        key_set_for_deletion: pending.is_some(),
        set_for_deletion_by: pending.map(|a| a.by.clone()).unwrap_or_default(),
        set_for_deletion_time: pending.map(|a| a.time.to_proto()),
        auth_expiration: pending.map(|a| a.expire_time().to_proto()),
    }
}

fn key_policies_to_proto(view: &KeyPoliciesView) -> pb::KeyPolicies {
    let record = &view.record;
    pb::KeyPolicies {
        rotation: key_rotation_to_proto(record, &view.instance_crn),
        dual_auth_delete: record
            .policies
            .dual_auth_delete
            .as_ref()
            .map(|p| dual_auth_policy_to_proto(p, &view.instance_crn)),
    }
}

fn instance_policies_to_proto(view: &InstancePoliciesView) -> pb::InstancePolicies {
    let crn = &view.instance_crn;
    let policies = &view.policies;
    pb::InstancePolicies {
        dual_auth_delete: policies
            .dual_auth_delete
            .as_ref()
            .map(|p| dual_auth_policy_to_proto(p, crn)),
        rotation: policies
            .rotation
            .as_ref()
            .map(|p| rotation_to_proto(p, crn, None)),
        key_create_import_access: policies
            .key_create_import_access
            .as_ref()
            .map(|p| access_to_proto(p, crn)),
    }
}

/// `KeyService.SetKeyPolicies`.
pub async fn set_key_policies(
    kms: &Arc<Kms>,
    request: Request<pb::SetKeyPoliciesRequest>,
) -> Result<Response<pb::SetKeyPoliciesResponse>, Status> {
    let who = caller(&request)?;
    let call = context(&request);
    let request = request.into_inner();
    let key: KeyRef = parse("key", &request.key)?;
    name_key(call.as_ref(), &key).await?;
    if request.rotation.is_none() && request.dual_auth_delete.is_none() {
        return Err(KmsError::field("rotation", FieldProblem::Missing).into());
    }
    let change = KeyPolicyChange {
        rotation: request
            .rotation
            .as_ref()
            .map(|p| rotation_setting("rotation.interval_months", p))
            .transpose()?,
        dual_auth_delete: request.dual_auth_delete.map(|p| p.enabled),
    };
    let view = blocking(kms, move |kms| kms.set_key_policies(&who, &key, change)).await?;
    Ok(Response::new(pb::SetKeyPoliciesResponse {
        policies: Some(key_policies_to_proto(&view)),
    }))
}

/// `KeyService.GetKeyPolicies`.
pub async fn get_key_policies(
    kms: &Arc<Kms>,
    request: Request<pb::GetKeyPoliciesRequest>,
) -> Result<Response<pb::GetKeyPoliciesResponse>, Status> {
    let who = caller(&request)?;
    let call = context(&request);
    let key: KeyRef = parse("key", &request.get_ref().key)?;
    name_key(call.as_ref(), &key).await?;
    let view = kms.get_key_policies(&who, &key)?;
    Ok(Response::new(pb::GetKeyPoliciesResponse {
        policies: Some(key_policies_to_proto(&view)),
    }))
}

/// `KeyService.SetKeyForDeletion`.
pub async fn set_key_for_deletion(
    kms: &Arc<Kms>,
    request: Request<pb::SetKeyForDeletionRequest>,
) -> Result<Response<pb::SetKeyForDeletionResponse>, Status> {
    let who = caller(&request)?;
    let call = context(&request);
    let key: KeyRef = parse("key", &request.get_ref().key)?;
    name_key(call.as_ref(), &key).await?;
    let view = blocking(kms, move |kms| kms.set_key_for_deletion(&who, &key)).await?;
    Ok(Response::new(pb::SetKeyForDeletionResponse {
        dual_auth_delete: Some(dual_auth_to_proto(&view.record, view.now)),
    }))
}

/// `KeyService.UnsetKeyForDeletion`.
pub async fn unset_key_for_deletion(
    kms: &Arc<Kms>,
    request: Request<pb::UnsetKeyForDeletionRequest>,
) -> Result<Response<pb::UnsetKeyForDeletionResponse>, Status> {
    let who = caller(&request)?;
    let call = context(&request);
    let key: KeyRef = parse("key", &request.get_ref().key)?;
    name_key(call.as_ref(), &key).await?;
    let view = blocking(kms, move |kms| kms.unset_key_for_deletion(&who, &key)).await?;
    Ok(Response::new(pb::UnsetKeyForDeletionResponse {
        dual_auth_delete: Some(dual_auth_to_proto(&view.record, view.now)),
    }))
}

/// `InstanceService.SetInstancePolicies`.
pub async fn set_instance_policies(
    kms: &Arc<Kms>,
    request: Request<pb::SetInstancePoliciesRequest>,
) -> Result<Response<pb::SetInstancePoliciesResponse>, Status> {
    let who = caller(&request)?;
    let call = context(&request);
    let request = request.into_inner();
    let instance: InstanceRef = parse("instance", &request.instance)?;
    name_instance(call.as_ref(), instance.id()).await?;
    if request.dual_auth_delete.is_none()
        && request.rotation.is_none()
        && request.key_create_import_access.is_none()
    {
        return Err(KmsError::field("dual_auth_delete", FieldProblem::Missing).into());
    }
    let change = InstancePolicyChange {
        dual_auth_delete: request.dual_auth_delete.map(|p| p.enabled),
        rotation: request
            .rotation
            .as_ref()
            .map(|p| rotation_setting("rotation.interval_months", p))
            .transpose()?,
        key_create_import_access: request
            .key_create_import_access
            .as_ref()
            .map(create_import_rules),
    };
    let view = blocking(kms, move |kms| {
        kms.set_instance_policies(&who, &instance, change)
    })
    .await?;
    Ok(Response::new(pb::SetInstancePoliciesResponse {
        policies: Some(instance_policies_to_proto(&view)),
    }))
}

/// `InstanceService.GetInstancePolicies`.
pub async fn get_instance_policies(
    kms: &Arc<Kms>,
    request: Request<pb::GetInstancePoliciesRequest>,
) -> Result<Response<pb::GetInstancePoliciesResponse>, Status> {
    let who = caller(&request)?;
    let call = context(&request);
    let instance: InstanceRef = parse("instance", &request.get_ref().instance)?;
    name_instance(call.as_ref(), instance.id()).await?;
    let view = kms.get_instance_policies(&who, &instance)?;
    Ok(Response::new(pb::GetInstancePoliciesResponse {
        policies: Some(instance_policies_to_proto(&view)),
    }))
}
