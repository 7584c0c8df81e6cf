//! The tower layer that authenticates every RPC: it reads `authorization` metadata, asks the
//! domain's [`Authenticator`](super::Authenticator) for the caller's
//! [`Identity`](super::Identity), and puts it into the request extensions (the edge takes it
//! from there). A call that cannot be authenticated is answered `UNAUTHENTICATED` before it
//! reaches any service. Health, reflection and `IamService/CreateToken` (which exchanges an
//! API key for a token) are the only unauthenticated paths. Tokens are never logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tower::{Layer, Service};

use crate::kms::Kms;

/// Paths (gRPC `/package.Service/Method`) served without a bearer token.
const UNAUTHENTICATED_PREFIXES: [&str; 4] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/kmsim.v1.IamService/CreateToken",
];

/// Whether `path` needs no bearer token.
pub fn is_public(path: &str) -> bool {
    UNAUTHENTICATED_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// Authenticates every request of the services it wraps.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    kms: Arc<Kms>,
}

impl AuthLayer {
    /// Authenticates against `kms`'s IAM state.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            kms: Arc::clone(&self.kms),
        }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    kms: Arc<Kms>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !is_public(request.uri().path()) {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            match self.kms.authenticate(header) {
                Ok(identity) => {
                    if let Some(context) = request.extensions().get::<crate::audit::CallContext>() {
                        context.set_initiator(identity);
                    }
                    request.extensions_mut().insert(identity);
                }
                Err(error) => {
                    let response = tonic::Status::from(error).into_http();
                    return Box::pin(std::future::ready(Ok(response)));
                }
            }
        }
        // The clone is the one that was polled ready; keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}
