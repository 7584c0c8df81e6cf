//! The outermost tower layer: records one audit event for every call to a kmsim.v1 service,
//! allowed or refused (including calls the auth layer refuses and faults the fault layer
//! injects). Health and reflection are not recorded.
//!
//! Per call it puts an [`AuditNote`] into the request extensions (the auth layer adds the
//! caller, the fault layer marks injections, handlers add key state and versions), reads the
//! request's first string field (the key or instance reference) to name the target when the
//! handler did not, and reads the outcome from the response headers: tonic answers errors
//! trailers-only, so `grpc-status` and `grpc-status-details-bin` (with the Key Protect
//! reason) are headers; a response without `grpc-status` in its headers is a success (a
//! stream is recorded once, when it opens).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::Code;
use tonic::body::Body;
use tonic_types::StatusExt;
use tower::{Layer, Service};

use super::{
    ActionSpec, AuditNote, AuditRecord, AuditTarget, Durability, Outcome, action_for, action_name,
    severity,
};
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
        let note = AuditNote::default();
        request.extensions_mut().insert(note.clone());
        let correlation_id = correlation_id(&kms, request.headers());
        Box::pin(async move {
            // The trail fails closed: while events cannot be written, no call is served.
            if let Err(error) = kms.audit().accepting() {
                let response = refusal(error);
                let event = build_event(
                    &kms,
                    spec,
                    &note,
                    None,
                    request.uri().path().to_owned(),
                    correlation_id,
                    response.headers(),
                );
                kms.audit().record(event);
                return Ok(response);
            }
            let (parts, body) = request.into_parts();
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                // An unreadable body fails in the service too; record what it answers.
                Err(_) => Bytes::new(),
            };
            let target = crate::faults::layer::first_string_field(&bytes)
                .and_then(|subject| kms.audit_target(&subject));
            let method = parts.uri.path().to_owned();
            let request =
                http::Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
            let response = inner.call(request).await?;
            let event = build_event(
                &kms,
                spec,
                &note,
                target,
                method,
                correlation_id,
                response.headers(),
            );
            let durable = (spec.durability == Durability::BeforeReply
                && event.outcome == Outcome::Success)
                || kms.audit().data_events_are_durable();
            if durable {
                if let Err(error) = kms.audit().record_durable(event).await {
                    // Never answered OK unrecorded: the event is kept and retried, the caller
                    // is told the storage failed.
                    return Ok(refusal(error));
                }
            } else {
                kms.audit().record(event);
            }
            Ok(response)
        })
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

/// Builds the event of a call answered with `headers`.
pub fn build_event(
    kms: &Kms,
    spec: ActionSpec,
    note: &AuditNote,
    target: Option<AuditTarget>,
    method: String,
    correlation_id: String,
    headers: &http::HeaderMap,
) -> AuditRecord {
    let (grpc_code, reason, http_status) = match tonic::Status::from_header_map(headers) {
        Some(status) if status.code() != Code::Ok => {
            let info = status.get_error_details().error_info().cloned();
            let http = info
                .as_ref()
                .and_then(|i| i.metadata.get("http_status"))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| http_status_of(status.code()));
            (
                status.code(),
                info.map(|i| i.reason).unwrap_or_default(),
                http,
            )
        }
        _ => (Code::Ok, String::new(), 200),
    };
    let mut fields = note.fields();
    // What the handler noted wins; otherwise the target the request named, with the key's
    // state refreshed after a successful mutation (reads and failures do not change it).
    if let (None, Some(target)) = (&fields.target_crn, target) {
        fields.target_crn = Some(target.crn);
        fields.instance = Some((target.instance, target.service));
        if fields.key_state.is_none() {
            fields.key_state = match target.key {
                Some(key)
                    if grpc_code == Code::Ok && spec.durability == Durability::BeforeReply =>
                {
                    kms.audit_key_state(key)
                }
                _ => target.key_state,
            };
        }
    }
    let initiator: Option<Identity> = fields.initiator;
    AuditRecord {
        sequence: 0,
        time: kms.now(),
        action: action_name(spec, fields.instance.map(|(_, service)| service)),
        outcome: if grpc_code == Code::Ok {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        severity: severity(spec, http_status),
        grpc_code: grpc_code as i32,
        reason,
        http_status,
        initiator_id: initiator.map(|who| who.id),
        initiator_kind: initiator.map(|who| who.kind),
        target_crn: fields.target_crn.unwrap_or_default(),
        instance: fields.instance.map(|(id, _)| id),
        method,
        key_state: fields.key_state,
        key_version_id: fields.key_version_id.unwrap_or_default(),
        rewrapped_key_version_id: fields.rewrapped_key_version_id.unwrap_or_default(),
        injected: fields.injected,
        injected_latency_ms: fields
            .injected_latency
            .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
            .unwrap_or(0),
        correlation_id,
    }
}
