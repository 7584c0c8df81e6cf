//! TLS and mutual TLS with a real rustls client (tonic's `ClientTlsConfig`): a CA made here
//! signs the server's and the clients' certificates; a plaintext client, a client that does
//! not trust the server, and (under mTLS) a client without a certificate or with one another
//! CA signed are all refused, while a proper client's calls are served. The self-signed
//! development certificate (`--dev-tls`) is trusted by using it as the CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::tls::TlsSettings;
use kmsim_server::{Config, ServeOptions};
use kmsim_tests::{DEV_TOKEN, TestServer};
use pb::instance_service_client::InstanceServiceClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A certificate and its private key, as PEM.
struct Pem {
    cert: String,
    key: String,
}

/// A CA that signs certificates for the test.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, names: &[&str], common_name: &str) -> Pem {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A server over TLS on 127.0.0.1; stops when dropped.
struct TlsServer {
    port: u16,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn start(tls: TlsSettings) -> TlsServer {
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));
    let config = Config::ephemeral(clock);
    let kms = tokio::task::spawn_blocking(move || kmsim_server::open(&config))
        .await
        .unwrap()
        .expect("server state opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (shutdown, stop) = oneshot::channel::<()>();
    let mut options = ServeOptions::default();
    options.tls = Some(tls);
    tokio::spawn(async move {
        kmsim_server::serve_kms_with(listener, kms, &options, async {
            let _ = stop.await;
        })
        .await
        .expect("server runs until shutdown");
    });
    TlsServer {
        port,
        shutdown: Some(shutdown),
    }
}

fn settings(server: &Pem, client_ca: Option<&str>) -> TlsSettings {
    TlsSettings::from_pem(
        server.cert.clone().into_bytes(),
        server.key.clone().into_bytes().into(),
        client_ca.map(|ca| ca.as_bytes().to_vec()),
    )
    .expect("rustls accepts the test certificates")
}

/// Connects to `server` trusting `ca`, presenting `identity` if any, and lists instances as
/// the admin: `Ok` when the call was served.
async fn list_instances(
    server: &TlsServer,
    ca: &str,
    identity: Option<&Pem>,
) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", server.port))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    call(channel).await
}

async fn call(channel: Channel) -> Result<(), String> {
    InstanceServiceClient::with_interceptor(channel, TestServer::auth(Some(DEV_TOKEN)))
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("call: {status:?}"))
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_server_and_refuses_plaintext() {
    let ca = TestCa::new("kmsim test CA");
    let server_cert = ca.sign(&["localhost", "127.0.0.1"], "kmsim");
    let server = start(settings(&server_cert, None)).await;

    list_instances(&server, &ca.pem(), None)
        .await
        .expect("a TLS client trusting the CA is served");

    let other = TestCa::new("another CA");
    let refused = list_instances(&server, &other.pem(), None).await;
    assert!(refused.is_err(), "a client trusting another CA is refused");

    // A plaintext HTTP/2 client never reaches a service.
    let plaintext = Channel::from_shared(format!("http://127.0.0.1:{}", server.port))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    match plaintext {
        Err(_) => {}
        Ok(channel) => assert!(call(channel).await.is_err(), "plaintext is refused"),
    }
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let ca = TestCa::new("kmsim test CA");
    let clients = TestCa::new("kmsim client CA");
    let server_cert = ca.sign(&["localhost"], "kmsim");
    let server = start(settings(&server_cert, Some(&clients.pem()))).await;

    let good = clients.sign(&[], "database-service");
    list_instances(&server, &ca.pem(), Some(&good))
        .await
        .expect("a client with a certificate from the client CA is served");

    let without = list_instances(&server, &ca.pem(), None).await;
    assert!(without.is_err(), "no client certificate: refused");

    let rogue = TestCa::new("rogue CA").sign(&[], "database-service");
    let rogue = list_instances(&server, &ca.pem(), Some(&rogue)).await;
    assert!(rogue.is_err(), "a certificate another CA signed: refused");

    // A refused handshake does not stop the listener.
    list_instances(&server, &ca.pem(), Some(&good))
        .await
        .expect("still served after refused handshakes");
}

#[tokio::test]
async fn the_development_certificate_is_trusted_as_its_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = kmsim_server::tls::dev_certificate(dir.path()).unwrap();
    let server = start(TlsSettings::load(&cert, &key, None).unwrap()).await;
    let pem = std::fs::read_to_string(&cert).unwrap();
    list_instances(&server, &pem, None)
        .await
        .expect("a client using the development certificate as its CA is served");
}
