//! Key and instance policies (`KeyService` and `InstanceService` policy RPCs).
//! SKELETON: owned by the policies work; every function below is to be implemented.

use std::sync::Arc;

use kmsim_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::kms::Kms;

fn skeleton() -> Status {
    Status::unimplemented("skeleton")
}

/// `KeyService.SetKeyPolicies`.
pub async fn set_key_policies(
    _kms: &Arc<Kms>,
    _request: Request<pb::SetKeyPoliciesRequest>,
) -> Result<Response<pb::SetKeyPoliciesResponse>, Status> {
    Err(skeleton())
}

/// `KeyService.GetKeyPolicies`.
pub async fn get_key_policies(
    _kms: &Arc<Kms>,
    _request: Request<pb::GetKeyPoliciesRequest>,
) -> Result<Response<pb::GetKeyPoliciesResponse>, Status> {
    Err(skeleton())
}

/// `KeyService.SetKeyForDeletion`.
pub async fn set_key_for_deletion(
    _kms: &Arc<Kms>,
    _request: Request<pb::SetKeyForDeletionRequest>,
) -> Result<Response<pb::SetKeyForDeletionResponse>, Status> {
    Err(skeleton())
}

/// `KeyService.UnsetKeyForDeletion`.
pub async fn unset_key_for_deletion(
    _kms: &Arc<Kms>,
    _request: Request<pb::UnsetKeyForDeletionRequest>,
) -> Result<Response<pb::UnsetKeyForDeletionResponse>, Status> {
    Err(skeleton())
}

/// `InstanceService.SetInstancePolicies`.
pub async fn set_instance_policies(
    _kms: &Arc<Kms>,
    _request: Request<pb::SetInstancePoliciesRequest>,
) -> Result<Response<pb::SetInstancePoliciesResponse>, Status> {
    Err(skeleton())
}

/// `InstanceService.GetInstancePolicies`.
pub async fn get_instance_policies(
    _kms: &Arc<Kms>,
    _request: Request<pb::GetInstancePoliciesRequest>,
) -> Result<Response<pb::GetInstancePoliciesResponse>, Status> {
    Err(skeleton())
}
