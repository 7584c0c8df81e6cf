//! The audit trail's RPCs: `EventService.ListAuditEvents` and `WatchAuditEvents`.
//! SKELETON: owned by the audit work; every function below is to be implemented.

use std::pin::Pin;
use std::sync::Arc;

use kmsim_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::kms::Kms;

/// The stream `WatchAuditEvents` answers with.
pub type AuditEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::AuditEvent, Status>> + Send + 'static>>;

fn skeleton() -> Status {
    Status::unimplemented("skeleton")
}

/// `EventService.ListAuditEvents`.
pub async fn list_audit_events(
    _kms: &Arc<Kms>,
    _request: Request<pb::ListAuditEventsRequest>,
) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
    Err(skeleton())
}

/// `EventService.WatchAuditEvents`.
pub async fn watch_audit_events(
    _kms: &Arc<Kms>,
    _request: Request<pb::WatchAuditEventsRequest>,
) -> Result<Response<AuditEventStream>, Status> {
    Err(skeleton())
}
