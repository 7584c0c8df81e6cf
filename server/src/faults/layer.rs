//! The tower layer that applies fault rules to every kmsim call before it reaches its
//! service: it fails the call with the injected status, or delays it, or lets it through.
//! The rules that filter by instance or key are left, in the call's context, to the edge,
//! which applies them ([`apply_to_subject`]) as soon as it has parsed what the request names.
//! With no rule in force a call costs one atomic load and its body is never read; only a call
//! that a method rule fails or delays (so that it never reaches the edge, or may be cancelled
//! before it does) has its first field decoded here (with prost) to name its subject.

use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use prost::Message;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::audit::{CallContext, Subject};
use crate::error::KmsError;
use crate::faults::{Faults, Injection, Scope};

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
        let path = request.uri().path();
        if self.faults.is_empty() || exempt(path) {
            return Box::pin(inner.call(request));
        }
        let context = request.extensions().get::<CallContext>().cloned();
        if self.faults.needs_subject(path) {
            if let Some(context) = &context {
                context.defer_faults(Arc::clone(&self.faults));
            }
        }
        match self.faults.decide(path, Scope::Method) {
            Some(Injection::Fail(failure)) => {
                tracing::info!(%path, ?failure, "injected fault");
                Box::pin(async move {
                    if let Some(context) = &context {
                        context.mark_injected(None);
                        // The call never reaches the edge, so its subject is read here: only
                        // on this path, where a rule fails the call, is the body read.
                        if let Some(subject) = subject_of(request.into_body()).await {
                            context.name_subject(subject);
                        }
                    }
                    Ok(tonic::Status::from(KmsError::Injected(failure)).into_http())
                })
            }
            Some(Injection::Delay(delay)) => {
                tracing::info!(%path, ?delay, "injected latency");
                if let Some(context) = &context {
                    context.mark_injected(Some(delay));
                }
                Box::pin(async move {
                    // A call cancelled while it waits never reaches the edge: name its subject
                    // now (only a call a rule delays has its body read here).
                    let request = match &context {
                        Some(context) => {
                            let (parts, body) = request.into_parts();
                            let bytes = match body.collect().await {
                                Ok(collected) => collected.to_bytes(),
                                // An unreadable body fails in the service too.
                                Err(_) => bytes::Bytes::new(),
                            };
                            if let Some(subject) = subject_in(&bytes) {
                                context.name_subject(subject);
                            }
                            let body = Body::new(http_body_util::Full::new(bytes));
                            http::Request::from_parts(parts, body)
                        }
                        None => request,
                    };
                    tokio::time::sleep(delay).await;
                    inner.call(request).await
                })
            }
            None => Box::pin(inner.call(request)),
        }
    }
}

/// The subject named by a request body's first field (the key or instance reference every
/// kmsim request that names one starts with), decoded with prost.
async fn subject_of(body: Body) -> Option<Subject> {
    subject_in(&body.collect().await.ok()?.to_bytes())
}

/// The subject named by the first field of the uncompressed unary gRPC body `bytes`.
fn subject_in(bytes: &[u8]) -> Option<Subject> {
    /// The first field of every kmsim request that names a key or an instance.
    #[derive(Clone, PartialEq, Message)]
    struct Named {
        #[prost(string, tag = "1")]
        subject: String,
    }

    // The gRPC message prefix: an uncompressed flag and the message's length.
    let (&[0, a, b, c, d], message) = bytes.split_first_chunk::<5>()? else {
        return None;
    };
    let length = usize::try_from(u32::from_be_bytes([a, b, c, d])).ok()?;
    let named = Named::decode(message.get(..length)?).ok()?;
    parse_subject(&named.subject)
}

/// A key reference, else an instance reference.
fn parse_subject(text: &str) -> Option<Subject> {
    if let Ok(key) = text.parse::<crate::kms::ids::KeyRef>() {
        return Some(Subject::Key(key));
    }
    let instance: crate::kms::ids::InstanceRef = text.parse().ok()?;
    Some(Subject::Instance(instance.id()))
}

/// Records `subject` as what the call of `context` names, and applies the fault rules the
/// layer left to it: an injected failure is returned as the call's error; an injected delay
/// is waited out here. The edge calls it as soon as it has parsed the request's subject.
pub async fn apply_to_subject(
    context: Option<&CallContext>,
    subject: Subject,
) -> Result<(), tonic::Status> {
    let Some(context) = context else {
        return Ok(());
    };
    let Some((faults, path, subject)) = context.name_subject(subject) else {
        return Ok(());
    };
    match faults.decide(&path, Scope::Subject(&subject)) {
        Some(Injection::Fail(failure)) => {
            tracing::info!(%path, ?failure, "injected fault");
            context.mark_injected(None);
            Err(KmsError::Injected(failure).into())
        }
        Some(Injection::Delay(delay)) => {
            tracing::info!(%path, ?delay, "injected latency");
            context.mark_injected(Some(delay));
            tokio::time::sleep(delay).await;
            Ok(())
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_call_names_the_subject_of_its_body() {
        let instance = crate::kms::ids::InstanceId::from_bytes([1; 16]);
        let frame = |message: &[u8]| {
            let mut body = vec![0];
            body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
            body.extend_from_slice(message);
            Body::new(http_body_util::Full::new(bytes::Bytes::from(body)))
        };
        let text = instance.to_string();
        let mut message = vec![0x10, 5, 0x0A, u8::try_from(text.len()).unwrap()];
        message.extend_from_slice(text.as_bytes());
        assert_eq!(
            subject_of(frame(&message)).await,
            Some(Subject::Instance(instance))
        );
        assert_eq!(subject_of(frame(&[0x10, 5])).await, None);
        assert_eq!(subject_of(frame(&[0x0A, 9, b'a'])).await, None);
        assert_eq!(
            subject_of(Body::new(http_body_util::Full::new(bytes::Bytes::new()))).await,
            None
        );
    }

    #[test]
    fn only_kmsim_services_other_than_the_simulator_are_faulted() {
        assert!(!exempt("/kmsim.v1.KeyService/WrapKey"));
        assert!(!exempt("/kmsim.v1.HsmService/GetStatus"));
        assert!(exempt("/kmsim.v1.SimulatorService/ClearFaults"));
        assert!(exempt("/grpc.health.v1.Health/Check"));
    }
}
