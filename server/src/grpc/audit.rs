//! The audit trail's RPCs: `EventService.ListAuditEvents` and `WatchAuditEvents`, and the
//! mapping of stored events ([`crate::audit::AuditRecord`]) to protobuf.

use std::pin::Pin;
use std::sync::Arc;

use kmsim_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::audit::{AuditFilter, AuditRecord, Outcome, Severity};
use crate::auth::IdentityKind;
use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::grpc::{caller, page_size, parse};
use crate::kms::Kms;
use crate::kms::ids::InstanceRef;

/// The stream `WatchAuditEvents` answers with.
pub type AuditEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::AuditEvent, Status>> + Send + 'static>>;

/// Events a replay reads from the store at a time.
const REPLAY_PAGE: usize = 500;

/// A stored event as protobuf.
pub fn event_to_proto(event: &AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        sequence: event.sequence,
        time: Some(event.time.to_proto()),
        action: event.action.clone(),
        outcome: match event.outcome {
            Outcome::Success => pb::AuditOutcome::Success,
            Outcome::Failure => pb::AuditOutcome::Failure,
        } as i32,
        severity: match event.severity {
            Severity::Normal => pb::AuditSeverity::Normal,
            Severity::Warning => pb::AuditSeverity::Warning,
            Severity::Critical => pb::AuditSeverity::Critical,
        } as i32,
        grpc_code: event.grpc_code,
        reason: event.reason.clone(),
        http_status: i32::from(event.http_status),
        initiator: Some(initiator(event)),
        target_crn: event.target_crn.clone(),
        instance_id: event.instance.map(|id| id.to_string()).unwrap_or_default(),
        method: event.method.clone(),
        key_state: event.key_state.map_or(0, |state| state as i32),
        key_version_id: event.key_version_id.clone(),
        rewrapped_key_version_id: event.rewrapped_key_version_id.clone(),
        injected: event.injected,
        correlation_id: event.correlation_id.clone(),
        injected_latency_ms: event.injected_latency_ms,
    }
}

/// Who made the call: its identity; none for an unauthenticated call; the service itself
/// (named by the action's prefix) for what its clock did, the one kind of event without a
/// gRPC method.
fn initiator(event: &AuditRecord) -> pb::AuditInitiator {
    match (event.initiator_id, event.initiator_kind) {
        (None, _) if event.method.is_empty() => pb::AuditInitiator {
            id: event
                .action
                .split_once('.')
                .map(|(service, _)| service.to_owned())
                .unwrap_or_default(),
            kind: pb::AuditInitiatorKind::System as i32,
        },
        (id, kind) => pb::AuditInitiator {
            id: id.map(|id| id.to_string()).unwrap_or_default(),
            kind: match kind {
                None => pb::AuditInitiatorKind::Unspecified,
                Some(IdentityKind::User) => pb::AuditInitiatorKind::User,
                Some(IdentityKind::Service) => pb::AuditInitiatorKind::Service,
            } as i32,
        },
    }
}

fn time(
    field: &'static str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Option<Timestamp>, KmsError> {
    value
        .map(|ts| Timestamp::from_proto(ts).ok_or(KmsError::field(field, FieldProblem::OutOfRange)))
        .transpose()
}

fn filter(filter: Option<pb::AuditEventFilter>) -> Result<AuditFilter, KmsError> {
    let filter = filter.unwrap_or_default();
    let instance = match filter.instance_id.as_str() {
        "" => None,
        value => Some(parse::<InstanceRef>("filter.instance_id", value)?.id()),
    };
    let outcome = match pb::AuditOutcome::try_from(filter.outcome) {
        Ok(pb::AuditOutcome::Unspecified) => None,
        Ok(pb::AuditOutcome::Success) => Some(Outcome::Success),
        Ok(pb::AuditOutcome::Failure) => Some(Outcome::Failure),
        Err(_) => {
            return Err(KmsError::field(
                "filter.outcome",
                FieldProblem::UnknownEnumValue,
            ));
        }
    };
    if filter.action_prefix.chars().count() > 100 {
        return Err(KmsError::field(
            "filter.action_prefix",
            FieldProblem::TooLong,
        ));
    }
    Ok(AuditFilter {
        instance,
        action_prefix: filter.action_prefix,
        outcome,
        start: time("filter.start_time", filter.start_time.as_ref())?,
        end: time("filter.end_time", filter.end_time.as_ref())?,
    })
}

/// Page tokens: the last returned event's sequence number, hex.
fn decode_page_token(token: &str) -> Result<Option<u64>, KmsError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || KmsError::field("page_token", FieldProblem::BadPageToken);
    let bytes: [u8; 8] = hex::decode(token)
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

/// `EventService.ListAuditEvents`.
pub async fn list_audit_events(
    kms: &Arc<Kms>,
    request: Request<pb::ListAuditEventsRequest>,
) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
    let who = caller(&request)?;
    let request = request.into_inner();
    let filter = filter(request.filter)?;
    let size = page_size("page_size", request.page_size, 100, 1000)?;
    let after = decode_page_token(&request.page_token)?
        .unwrap_or(0)
        .max(request.after_sequence);
    let page = kms.list_audit_events(&who, &filter, after, size).await?;
    let next_page_token = match (page.more, page.events.last()) {
        (true, Some(last)) => hex::encode(last.sequence.to_be_bytes()),
        _ => String::new(),
    };
    Ok(Response::new(pb::ListAuditEventsResponse {
        events: page.events.iter().map(event_to_proto).collect(),
        next_page_token,
    }))
}

/// Sends every stored event after `*last` that passes `filter`; advances `*last`. Returns
/// false once the watcher has gone.
async fn replay(
    kms: &Arc<Kms>,
    filter: &AuditFilter,
    last: &mut u64,
    out: &mpsc::Sender<Result<pb::AuditEvent, Status>>,
) -> bool {
    loop {
        let reader = Arc::clone(kms);
        let (after, query) = (*last, filter.clone());
        let page =
            tokio::task::spawn_blocking(move || reader.audit().read(after, &query, REPLAY_PAGE))
                .await;
        let page = match page {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => {
                let _ = out.send(Err(Status::from(error))).await;
                return false;
            }
            Err(_) => {
                let _ = out
                    .send(Err(Status::internal("the replay's worker stopped")))
                    .await;
                return false;
            }
        };
        for event in &page.events {
            *last = event.sequence;
            if out.send(Ok(event_to_proto(event))).await.is_err() {
                return false;
            }
        }
        if !page.more {
            return true;
        }
    }
}

/// `EventService.WatchAuditEvents`: replays the stored events after `after_sequence`, then
/// streams new ones as they are written. A watcher that falls behind the live feed re-reads
/// the store from its last event, so it never misses one. The stream ends when the server
/// shuts down.
pub async fn watch_audit_events(
    kms: &Arc<Kms>,
    request: Request<pb::WatchAuditEventsRequest>,
) -> Result<Response<AuditEventStream>, Status> {
    let who = caller(&request)?;
    let request = request.into_inner();
    let filter = filter(request.filter)?;
    kms.authorize_audit(&who, &filter)?;
    // Subscribe before reading the store: an event is published only after it is stored.
    let mut live = kms.audit().subscribe();
    let mut closing = kms.audit().closing();
    // Every call answered before this one is in the replay.
    kms.audit().sync().await.map_err(KmsError::Store)?;
    let (out, events) = mpsc::channel(64);
    let kms = Arc::clone(kms);
    let mut last = request.after_sequence;
    tokio::spawn(async move {
        if !replay(&kms, &filter, &mut last, &out).await {
            return;
        }
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                () = out.closed() => return,
                _ = closing.wait_for(|closing| *closing) => return,
            };
            match received {
                Ok(event) => {
                    if event.sequence <= last {
                        continue;
                    }
                    last = event.sequence;
                    if filter.matches(&event) && out.send(Ok(event_to_proto(&event))).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !replay(&kms, &filter, &mut last, &out).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(events))))
}
