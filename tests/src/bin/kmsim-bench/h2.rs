//! One bare HTTP/2 connection as the transport of the generated gRPC clients: hyper's
//! HTTP/2 client connection driven by the connection thread's runtime, without tonic's
//! `Channel` (whose buffer task adds a queue hop and a wake-up to every call), so the
//! generator's own CPU per call stays small next to the server's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;

/// The sending half of one HTTP/2 connection; clones share the connection.
#[derive(Clone)]
pub struct Connection {
    sender: SendRequest<Body>,
}

impl Connection {
    /// Connects to `origin` (`http://host:port`) with `TCP_NODELAY` and spawns the
    /// connection's driver on the current runtime.
    pub async fn connect(origin: &Uri) -> Result<Self, String> {
        let authority = origin
            .authority()
            .ok_or_else(|| format!("{origin} has no host:port"))?;
        let tcp = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .map_err(|error| format!("cannot connect to {origin}: {error}"))?;
        tcp.set_nodelay(true)
            .map_err(|error| format!("cannot set TCP_NODELAY: {error}"))?;
        let (sender, driver) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|error| format!("HTTP/2 handshake with {origin} failed: {error}"))?;
        tokio::spawn(async move {
            // The connection ends when every sender is dropped; an error then is the
            // server going away, which the calls in flight report themselves.
            let _ = driver.await;
        });
        Ok(Self { sender })
    }
}

impl tower::Service<http::Request<Body>> for Connection {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.sender.send_request(request))
    }
}
