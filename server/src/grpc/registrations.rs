//! `kmsim.v1.RegistrationService`.
//! SKELETON: owned by the registrations work; every method below is to be implemented.

use std::sync::Arc;

use kmsim_proto::v1 as pb;
use pb::registration_service_server::RegistrationService;
use tonic::{Request, Response, Status};

use crate::kms::Kms;

/// The RegistrationService adapter.
#[derive(Debug, Clone)]
pub struct Registrations {
    #[allow(dead_code)]
    kms: Arc<Kms>,
}

impl Registrations {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

fn skeleton() -> Status {
    Status::unimplemented("skeleton")
}

#[tonic::async_trait]
impl RegistrationService for Registrations {
    async fn create_registration(
        &self,
        _request: Request<pb::CreateRegistrationRequest>,
    ) -> Result<Response<pb::CreateRegistrationResponse>, Status> {
        Err(skeleton())
    }

    async fn list_registrations(
        &self,
        _request: Request<pb::ListRegistrationsRequest>,
    ) -> Result<Response<pb::ListRegistrationsResponse>, Status> {
        Err(skeleton())
    }

    async fn update_registration(
        &self,
        _request: Request<pb::UpdateRegistrationRequest>,
    ) -> Result<Response<pb::UpdateRegistrationResponse>, Status> {
        Err(skeleton())
    }

    async fn delete_registration(
        &self,
        _request: Request<pb::DeleteRegistrationRequest>,
    ) -> Result<Response<pb::DeleteRegistrationResponse>, Status> {
        Err(skeleton())
    }
}
