//! Lifecycle events for registered resources: `EventService.WatchLifecycleEvents` (stored
//! events after a sequence number, then live ones) and `AckLifecycleEvent`, and
//! `KeyService.SyncKey`. The domain is `kms::lifecycle`.

use std::pin::Pin;
use std::sync::Arc;

use kmsim_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::{FieldProblem, KmsError};
use crate::grpc::{blocking, caller, context, name_instance, name_key, parse};
use crate::kms::Kms;
use crate::kms::ids::{InstanceRef, KeyRef, KeyVersionId, LifecycleEventId, ResourceCrn};
use crate::kms::lifecycle::{DeliveryStatus, LifecycleEventRecord, LifecycleKind};
use crate::kms::state::KeyState;

/// The stream `WatchLifecycleEvents` answers with.
pub type LifecycleEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::LifecycleEvent, Status>> + Send + 'static>>;

/// Events a watcher reads from the index at a time.
const WATCH_BATCH: usize = 256;
/// Events buffered towards a slow watcher before its task waits.
const WATCH_BUFFER: usize = 64;

/// A lifecycle event as protobuf.
pub fn event_to_proto(event: &LifecycleEventRecord) -> pb::LifecycleEvent {
    let (status, failure_reason) = match event.status {
        DeliveryStatus::Pending => (pb::LifecycleDeliveryStatus::Pending, 0),
        DeliveryStatus::Acknowledged => (pb::LifecycleDeliveryStatus::Acknowledged, 0),
        DeliveryStatus::Failed { reason } => {
            (pb::LifecycleDeliveryStatus::Failed, i32::from(reason))
        }
    };
    let kind = match event.kind {
        LifecycleKind::Rotate => pb::LifecycleEventKind::Rotate,
        LifecycleKind::Disable => pb::LifecycleEventKind::Disable,
        LifecycleKind::Enable => pb::LifecycleEventKind::Enable,
        LifecycleKind::Delete => pb::LifecycleEventKind::Delete,
        LifecycleKind::Restore => pb::LifecycleEventKind::Restore,
        LifecycleKind::Sync => pb::LifecycleEventKind::Sync,
    };
    let ack = event.ack.as_ref();
    pb::LifecycleEvent {
        sequence: event.sequence,
        event_id: event.id.to_string(),
        kind: kind as i32,
        key_id: event.key.to_string(),
        key_crn: event.key_crn.clone(),
        resource_crn: event.resource_crn.to_string(),
        key_state: event.key_state as i32,
        new_key_version_id: event
            .new_key_version
            .map(|v| v.to_string())
            .unwrap_or_default(),
        old_key_version_id: event
            .old_key_version
            .map(|v| v.to_string())
            .unwrap_or_default(),
        time: Some(event.time.to_proto()),
        status: status as i32,
        failure_reason,
        ack_time: ack.map(|a| a.time.to_proto()),
        adopter_key_state: ack.map_or(0, |a| a.adopter_key_state as i32),
        adopter_key_version_id: ack
            .and_then(|a| a.key_version)
            .map(|v| v.to_string())
            .unwrap_or_default(),
        sync: event.sync,
    }
}

fn key_state(field: &'static str, value: i32) -> Result<KeyState, KmsError> {
    match value {
        0 => Err(KmsError::field(field, FieldProblem::Missing)),
        _ => KeyState::ALL
            .into_iter()
            .find(|s| *s as i32 == value)
            .ok_or(KmsError::field(field, FieldProblem::UnknownEnumValue)),
    }
}

/// `KeyService.SyncKey`.
pub async fn sync_key(
    kms: &Arc<Kms>,
    request: Request<pb::SyncKeyRequest>,
) -> Result<Response<pb::SyncKeyResponse>, Status> {
    let who = caller(&request)?;
    let call = context(&request);
    let key: KeyRef = parse("key", &request.get_ref().key)?;
    name_key(call.as_ref(), &key).await?;
    let events = blocking(kms, move |kms| kms.sync_key(&who, &key)).await?;
    Ok(Response::new(pb::SyncKeyResponse {
        events: events.iter().map(|e| event_to_proto(e)).collect(),
    }))
}

/// `EventService.WatchLifecycleEvents`: a task per watcher replays the stored events after
/// `after_sequence`, then waits for the domain's notification and reads what is new (a
/// watcher that lagged behind the notification channel simply reads more). The task holds
/// the domain only while reading, so a server shutdown is not held up by it; it ends when the
/// client goes away or the domain is dropped.
pub async fn watch_lifecycle_events(
    kms: &Arc<Kms>,
    request: Request<pb::WatchLifecycleEventsRequest>,
) -> Result<Response<LifecycleEventStream>, Status> {
    let who = caller(&request)?;
    let call = context(&request);
    let request = request.into_inner();
    let resource: Option<ResourceCrn> = if request.resource_crn.is_empty() {
        None
    } else {
        Some(parse("resource_crn", &request.resource_crn)?)
    };
    // A resource of this simulator (a key or an instance) is the call's subject.
    if let Ok(key) = request.resource_crn.parse::<KeyRef>() {
        name_key(call.as_ref(), &key).await?;
    } else if let Ok(instance) = request.resource_crn.parse::<InstanceRef>() {
        name_instance(call.as_ref(), instance.id()).await?;
    }
    // Subscribe before the first read, so nothing appended in between is missed.
    let mut notified = kms.subscribe_lifecycle();
    // The server's shutdown ends live watches, so draining does not wait for them.
    let mut closing = kms.audit().closing();
    let domain = Arc::downgrade(kms);
    let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
    tokio::spawn(async move {
        let mut last = request.after_sequence;
        loop {
            let (batch, examined) = {
                let Some(kms) = domain.upgrade() else { return };
                kms.lifecycle_events_after(&who, last, resource.as_ref(), WATCH_BATCH)
            };
            let full = batch.len() >= WATCH_BATCH;
            last = examined;
            for event in batch {
                if sender.send(Ok(event_to_proto(&event))).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                received = notified.recv() => match received {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                () = sender.closed() => return,
                _ = closing.wait_for(|closing| *closing) => return,
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
}

/// `EventService.AckLifecycleEvent`.
pub async fn ack_lifecycle_event(
    kms: &Arc<Kms>,
    request: Request<pb::AckLifecycleEventRequest>,
) -> Result<Response<pb::AckLifecycleEventResponse>, Status> {
    let who = caller(&request)?;
    let note = crate::grpc::context(&request);
    let request = request.into_inner();
    let id: LifecycleEventId = parse("event_id", &request.event_id)?;
    // The event names its key: the audit event carries the key's CRN and instance, and the
    // instance flavour's prefix (`kms.` or `hs-crypto.`), acknowledged or refused alike.
    if let (Some(note), Some(event)) = (note, kms.lifecycle_event(id)) {
        if let Ok(crn) = event.key_crn.parse::<crate::kms::ids::Crn>() {
            note.set_target(&crn);
        }
        if let Some(version) = event.new_key_version {
            note.set_key_version(version);
        }
    }
    let state = key_state("adopter_key_state", request.adopter_key_state)?;
    let version: Option<KeyVersionId> = if request.key_version_id.is_empty() {
        None
    } else {
        Some(parse("key_version_id", &request.key_version_id)?)
    };
    let event = blocking(kms, move |kms| {
        kms.ack_lifecycle_event(&who, id, state, version)
    })
    .await?;
    Ok(Response::new(pb::AckLifecycleEventResponse {
        event: Some(event_to_proto(&event)),
    }))
}
