//! `kmsim.v1.EventService`: the audit trail (`grpc::audit`) and lifecycle events for
//! registered resources (`grpc::lifecycle`).

use std::sync::Arc;

use kmsim_proto::v1 as pb;
use pb::event_service_server::EventService;
use tonic::{Request, Response, Status};

use crate::grpc::{audit, lifecycle};
use crate::kms::Kms;

/// The EventService adapter.
#[derive(Debug, Clone)]
pub struct Events {
    kms: Arc<Kms>,
}

impl Events {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

#[tonic::async_trait]
impl EventService for Events {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        audit::list_audit_events(&self.kms, request).await
    }

    type WatchAuditEventsStream = audit::AuditEventStream;

    async fn watch_audit_events(
        &self,
        request: Request<pb::WatchAuditEventsRequest>,
    ) -> Result<Response<Self::WatchAuditEventsStream>, Status> {
        audit::watch_audit_events(&self.kms, request).await
    }

    type WatchLifecycleEventsStream = lifecycle::LifecycleEventStream;

    async fn watch_lifecycle_events(
        &self,
        request: Request<pb::WatchLifecycleEventsRequest>,
    ) -> Result<Response<Self::WatchLifecycleEventsStream>, Status> {
        lifecycle::watch_lifecycle_events(&self.kms, request).await
    }

    async fn ack_lifecycle_event(
        &self,
        request: Request<pb::AckLifecycleEventRequest>,
    ) -> Result<Response<pb::AckLifecycleEventResponse>, Status> {
        lifecycle::ack_lifecycle_event(&self.kms, request).await
    }
}
