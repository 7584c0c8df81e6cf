//! Lifecycle events for registered resources: `EventService.WatchLifecycleEvents` and
//! `AckLifecycleEvent`, and `KeyService.SyncKey`.
//! SKELETON: owned by the registrations work; every function below is to be implemented.

use std::pin::Pin;
use std::sync::Arc;

use kmsim_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::kms::Kms;

/// The stream `WatchLifecycleEvents` answers with.
pub type LifecycleEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::LifecycleEvent, Status>> + Send + 'static>>;

fn skeleton() -> Status {
    Status::unimplemented("skeleton")
}

/// `KeyService.SyncKey`.
pub async fn sync_key(
    _kms: &Arc<Kms>,
    _request: Request<pb::SyncKeyRequest>,
) -> Result<Response<pb::SyncKeyResponse>, Status> {
    Err(skeleton())
}

/// `EventService.WatchLifecycleEvents`.
pub async fn watch_lifecycle_events(
    _kms: &Arc<Kms>,
    _request: Request<pb::WatchLifecycleEventsRequest>,
) -> Result<Response<LifecycleEventStream>, Status> {
    Err(skeleton())
}

/// `EventService.AckLifecycleEvent`.
pub async fn ack_lifecycle_event(
    _kms: &Arc<Kms>,
    _request: Request<pb::AckLifecycleEventRequest>,
) -> Result<Response<pb::AckLifecycleEventResponse>, Status> {
    Err(skeleton())
}
