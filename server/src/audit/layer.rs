//! The outermost tower layer: records one audit event for every call to a kmsim.v1 service,
//! allowed or refused (including calls the auth layer refuses and faults the fault layer
//! injects). Health and reflection are not recorded.
//!
//! Per call it puts a [`CallContext`] into the request extensions and makes it the task's
//! current context while the inner services run; the auth layer adds the caller, the fault
//! layer marks injections, the edge names the subject it parsed and the key's state and
//! versions, and the error mapping notes the typed failure. The layer never reads the request
//! body. The outcome: a response without `grpc-status` in its headers is a success (tonic
//! answers errors trailers-only, so an error's status is a header; a stream is recorded once,
//! when it opens); a failure's reason comes from the context, and only a status the error
//! mapping did not build (tonic's own) is decoded from `grpc-status-details-bin`. A call the
//! client cancels before it is answered is recorded as `CANCELLED` (HTTP 499).

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Code;
use tonic::body::Body;
use tonic_types::StatusExt;
use tower::{Layer, Service};

use super::context::{CallContext, CallFields, Failure};
use super::{AuditRecord, Durability, Outcome, action_for, action_name, severity};
use crate::auth::Identity;
use crate::kms::Kms;

/// The request header whose value, when visible ASCII of at most 128 bytes, becomes the
/// event's correlation id.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Records every kmsim.v1 call in the audit trail.
#[derive(Debug, Clone)]
pub struct AuditLayer {
    kms: Arc<Kms>,
}

impl AuditLayer {
    /// Records into `kms`'s trail.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            kms: Arc::clone(&self.kms),
        }
    }
}

/// The service [`AuditLayer`] produces.
#[derive(Debug, Clone)]
pub struct Audit<S> {
    inner: S,
    kms: Arc<Kms>,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S> Service<http::Request<Body>> for Audit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was not made ready takes `self`'s place (tower's usual pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(spec) = action_for(request.uri().path()) else {
            return Box::pin(inner.call(request));
        };
        let kms = Arc::clone(&self.kms);
        let context = CallContext::new(spec, request.uri().path().to_owned());
        // The trail fails closed: while events cannot be written, no call is served.
        if let Err(error) = kms.audit().accepting() {
            let response = refusal(error);
            let event = build_event(
                &kms,
                &context.fields(),
                correlation_id(&kms, request.headers()),
                outcome_of(response.headers(), &context),
            );
            kms.audit().record(event);
            return Box::pin(async move { Ok(response) });
        }
        request.extensions_mut().insert(context.clone());
        let mut pending = Pending {
            kms: Some(Arc::clone(&kms)),
            context: context.clone(),
            correlation_id: correlation_id(&kms, request.headers()),
        };
        let call = context.sync_scope(|| inner.call(request));
        Box::pin(async move {
            let response = context.scope(call).await?;
            if let Some(kms) = pending.kms.take() {
                let event = build_event(
                    &kms,
                    &pending.context.fields(),
                    std::mem::take(&mut pending.correlation_id),
                    outcome_of(response.headers(), &pending.context),
                );
                let durable = (spec.durability == Durability::BeforeReply
                    && event.outcome == Outcome::Success)
                    || kms.audit().data_events_are_durable();
                if durable {
                    if let Err(error) = kms.audit().record_durable(event).await {
                        // Never answered OK unrecorded: the event is kept and retried, the
                        // caller is told the storage failed.
                        return Ok(refusal(error));
                    }
                } else {
                    kms.audit().record(event);
                }
            }
            Ok(response)
        })
    }
}

/// A call not yet recorded: when its future is dropped before it is answered (the client
/// cancelled it, or the connection went away), it is recorded as `CANCELLED`.
struct Pending {
    /// Taken once the call is recorded.
    kms: Option<Arc<Kms>>,
    context: CallContext,
    correlation_id: String,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(kms) = self.kms.take() {
            let cancelled = Failure {
                code: Code::Cancelled,
                reason: "",
                http_status: http_status_of(Code::Cancelled),
            };
            let event = build_event(
                &kms,
                &self.context.fields(),
                std::mem::take(&mut self.correlation_id),
                Answer::from(cancelled),
            );
            kms.audit().record(event);
        }
    }
}

/// The response of a call refused (or whose event could not be written) for a storage
/// failure of the audit trail.
fn refusal(error: crate::store::StoreError) -> http::Response<Body> {
    tonic::Status::from(crate::error::KmsError::Store(error)).into_http()
}

/// The client's correlation id, or a fresh one from the server's random source
/// (`kmsim-<prefix>-<counter>`, reproducible under `--deterministic`:
/// [`crate::random::Randomness::correlation_id`]).
fn correlation_id(kms: &Kms, headers: &http::HeaderMap) -> String {
    if let Some(value) = headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
    {
        return value.to_owned();
    }
    kms.randomness().correlation_id()
}

/// The HTTP status Key Protect answers for a gRPC code, when the error carries none.
fn http_status_of(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// How a call was answered: its gRPC code, reason and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The gRPC code.
    pub code: Code,
    /// The Key Protect reason code of a failure.
    pub reason: String,
    /// The HTTP status Key Protect would have answered.
    pub http_status: u16,
}

impl Answer {
    /// A success.
    pub fn ok() -> Self {
        Self {
            code: Code::Ok,
            reason: String::new(),
            http_status: 200,
        }
    }
}

impl From<Failure> for Answer {
    fn from(failure: Failure) -> Self {
        Self {
            code: failure.code,
            reason: failure.reason.to_owned(),
            http_status: failure.http_status,
        }
    }
}

/// The answer of a call whose response carries `headers`: success without a `grpc-status`
/// header; a failure as the error mapping noted it in `context` when it built that status;
/// otherwise (a status of tonic's own) decoded from the headers.
pub fn outcome_of(headers: &http::HeaderMap, context: &CallContext) -> Answer {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map(Code::from_i32)
    else {
        return Answer::ok();
    };
    if code == Code::Ok {
        return Answer::ok();
    }
    if let Some(failure) = context.fields().failure.filter(|f| f.code == code) {
        return failure.into();
    }
    match tonic::Status::from_header_map(headers) {
        Some(status) => {
            let info = status.get_error_details().error_info().cloned();
            let http_status = info
                .as_ref()
                .and_then(|i| i.metadata.get("http_status"))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| http_status_of(code));
            Answer {
                code,
                reason: info.map(|i| i.reason).unwrap_or_default(),
                http_status,
            }
        }
        None => Answer {
            code,
            reason: String::new(),
            http_status: http_status_of(code),
        },
    }
}

/// Builds the event of a call with context `fields`, answered `answer`.
pub fn build_event(
    kms: &Kms,
    fields: &CallFields,
    correlation_id: String,
    answer: Answer,
) -> AuditRecord {
    let spec = fields.spec;
    let succeeded = answer.code == Code::Ok;
    let mut target_crn = fields.target_crn.clone();
    let mut instance = fields.instance;
    let mut key_state = fields.key_state;
    // What the edge noted from the domain wins; otherwise the target the request named, with
    // the key's state refreshed after a successful mutation (reads and failures do not change
    // it).
    if target_crn.is_none() {
        if let Some(target) = fields.subject.as_ref().and_then(|s| kms.audit_target(s)) {
            target_crn = Some(target.crn);
            instance = Some((target.instance, target.service));
            if key_state.is_none() {
                key_state = match target.key {
                    Some(key) if succeeded && spec.durability == Durability::BeforeReply => {
                        kms.audit_key_state(key)
                    }
                    _ => target.key_state,
                };
            }
        }
    }
    let initiator: Option<Identity> = fields.initiator;
    AuditRecord {
        sequence: 0,
        time: kms.now(),
        action: action_name(spec, instance.map(|(_, service)| service)),
        outcome: if succeeded {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        severity: severity(spec, answer.http_status),
        grpc_code: answer.code as i32,
        reason: answer.reason,
        http_status: answer.http_status,
        initiator_id: initiator.map(|who| who.id),
        initiator_kind: initiator.map(|who| who.kind),
        target_crn: target_crn.unwrap_or_default(),
        instance: instance.map(|(id, _)| id),
        method: fields.method.clone(),
        key_state,
        key_version_id: fields.key_version_id.clone().unwrap_or_default(),
        rewrapped_key_version_id: fields.rewrapped_key_version_id.clone().unwrap_or_default(),
        injected: fields.injected,
        injected_latency_ms: fields
            .injected_latency
            .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
            .unwrap_or(0),
        correlation_id,
    }
}
