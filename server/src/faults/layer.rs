//! The tower layer that applies fault rules to every kmsim call before it reaches its
//! service: it fails the call with the injected status, or delays it, or lets it through.
//! The request is read only when a rule for the method filters by instance or key; then its
//! first protobuf field (the `instance` or `key` reference of every kmsim request) is the
//! call's subject.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::error::KmsError;
use crate::faults::{Faults, Injection};

/// Calls to these paths are never faulted: the simulator's controls (so faults can always be
/// cleared), health and reflection.
fn exempt(path: &str) -> bool {
    !path.starts_with("/kmsim.v1.") || path.starts_with("/kmsim.v1.SimulatorService/")
}

/// Applies [`Faults`] to every call.
#[derive(Debug, Clone)]
pub struct FaultLayer {
    faults: Arc<Faults>,
}

impl FaultLayer {
    /// A layer over `faults`.
    pub fn new(faults: Arc<Faults>) -> Self {
        Self { faults }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService {
            inner,
            faults: Arc::clone(&self.faults),
        }
    }
}

/// The service [`FaultLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct FaultService<S> {
    inner: S,
    faults: Arc<Faults>,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S> Service<http::Request<Body>> for FaultService<S>
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

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was not made ready takes `self`'s place (tower's usual pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        if exempt(&path) || self.faults.is_empty() {
            return Box::pin(inner.call(request));
        }
        let faults = Arc::clone(&self.faults);
        let note = request
            .extensions()
            .get::<crate::audit::AuditNote>()
            .cloned();
        Box::pin(async move {
            let (request, subject) = if faults.needs_subject(&path) {
                let (parts, body) = request.into_parts();
                let bytes = match body.collect().await {
                    Ok(collected) => collected.to_bytes(),
                    // An unreadable body cannot be matched; the service reports it.
                    Err(_) => Bytes::new(),
                };
                let subject = first_string_field(&bytes);
                let body = Body::new(http_body_util::Full::new(bytes));
                (http::Request::from_parts(parts, body), subject)
            } else {
                (request, None)
            };
            match faults.decide(&path, subject.as_deref()) {
                Some(Injection::Fail(failure)) => {
                    tracing::info!(%path, ?failure, "injected fault");
                    if let Some(note) = &note {
                        note.mark_injected(None);
                    }
                    Ok(tonic::Status::from(KmsError::Injected(failure)).into_http())
                }
                Some(Injection::Delay(delay)) => {
                    tracing::info!(%path, ?delay, "injected latency");
                    if let Some(note) = &note {
                        note.mark_injected(Some(delay));
                    }
                    tokio::time::sleep(delay).await;
                    inner.call(request).await
                }
                None => inner.call(request).await,
            }
        })
    }
}

/// Field 1 of the (uncompressed) message in a unary gRPC request body, when it is a UTF-8
/// length-delimited field.
pub(crate) fn first_string_field(body: &[u8]) -> Option<String> {
    // The gRPC frame: compression flag, 4-byte length, message.
    let (&[0, a, b, c, d], rest) = body.split_first_chunk::<5>()? else {
        return None;
    };
    let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).ok()?;
    let mut message = rest.get(..len)?;
    while !message.is_empty() {
        let tag = prost::encoding::decode_varint(&mut message).ok()?;
        let (field, wire_type) = (tag >> 3, tag & 7);
        let skip = match wire_type {
            0 => {
                prost::encoding::decode_varint(&mut message).ok()?;
                0
            }
            1 => 8,
            2 => {
                let len =
                    usize::try_from(prost::encoding::decode_varint(&mut message).ok()?).ok()?;
                if field == 1 {
                    return std::str::from_utf8(message.get(..len)?)
                        .ok()
                        .map(str::to_owned);
                }
                len
            }
            5 => 4,
            _ => return None,
        };
        message = message.get(skip..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut body = vec![0];
        body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    #[test]
    fn reads_the_first_string_field() {
        // field 2 varint 5, field 1 "abc"
        assert_eq!(
            first_string_field(&frame(&[0x10, 5, 0x0A, 3, b'a', b'b', b'c'])),
            Some("abc".to_owned())
        );
        assert_eq!(first_string_field(&frame(&[0x10, 5])), None);
        assert_eq!(first_string_field(&frame(&[0x0A, 9, b'a'])), None);
        assert_eq!(first_string_field(&[1, 0, 0, 0, 0]), None);
        assert_eq!(first_string_field(&[]), None);
    }

    #[test]
    fn only_kmsim_services_other_than_the_simulator_are_faulted() {
        assert!(!exempt("/kmsim.v1.KeyService/WrapKey"));
        assert!(!exempt("/kmsim.v1.HsmService/GetStatus"));
        assert!(exempt("/kmsim.v1.SimulatorService/ClearFaults"));
        assert!(exempt("/grpc.health.v1.Health/Check"));
    }
}
