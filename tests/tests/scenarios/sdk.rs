//! The client SDK against the real server: retries of idempotent calls recover from injected
//! `UNAVAILABLE` and `RESOURCE_EXHAUSTED` faults with no duplicate side effects, mutations are
//! never retried, the retry policy bounds a persistent failure; an API key is exchanged for
//! tokens that are refreshed before they expire (once for many concurrent callers) and after
//! the server refuses an expired one; errors expose the typed reason; TLS, mutual TLS, and an
//! `https` endpoint that never falls back to plaintext.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kmsim_client::{ClientError, KeyRef, KmsClient, Reason, RetryPolicy, ServerClock};
use kmsim_proto::v1 as pb;
use kmsim_server::clock::{Clock, SimulatedClock};
use kmsim_tests::TestServer;
use tonic::Code;

/// Quick retries so the tests do not wait.
fn quick(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        multiplier: 2.0,
        budget: Duration::from_secs(10),
    }
}

async fn inject(server: &TestServer, method: &str, kind: pb::FaultKind, every_nth: u32) {
    server
        .simulator()
        .inject_fault(pb::InjectFaultRequest {
            rule: Some(pb::FaultRule {
                method: method.into(),
                kind: kind as i32,
                retry_delay: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 200_000_000,
                }),
                trigger: Some(pb::fault_rule::Trigger::EveryNth(every_nth)),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

/// The only fault rule's (matched, fired) counts.
async fn fault_counts(server: &TestServer) -> (u64, u64) {
    let rules = server
        .simulator()
        .list_faults(pb::ListFaultsRequest {})
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(rules.len(), 1);
    (rules[0].matched, rules[0].fired)
}

/// Audit events of `action` in `instance`, split by outcome: (successes, failures).
async fn audited(client: &KmsClient, instance: &str, action: &str) -> (usize, usize) {
    let events = client
        .list_audit_events(
            pb::AuditEventFilter {
                instance_id: instance.to_owned(),
                action_prefix: action.to_owned(),
                ..Default::default()
            },
            0,
        )
        .await
        .unwrap();
    let ok = events
        .iter()
        .filter(|e| e.action == action && e.outcome == pb::AuditOutcome::Success as i32)
        .count();
    let failed = events
        .iter()
        .filter(|e| e.action == action && e.outcome == pb::AuditOutcome::Failure as i32)
        .count();
    (ok, failed)
}

#[tokio::test]
async fn retries_recover_from_unavailable_with_each_wrap_audited_once() {
    let server = TestServer::start().await;
    let client = server.client().with_retry_policy(quick(5));
    let instance = server.instance().await;
    let key = KeyRef::from_key(&server.root_key(&instance).await).unwrap();
    inject(&server, "WrapKey", pb::FaultKind::Unavailable, 2).await;

    for i in 0..6 {
        let wrapped = client.wrap(&key, b"sixteen byte key", &["aad"]).await;
        assert!(wrapped.is_ok(), "wrap {i}: {wrapped:?}");
    }
    let (matched, fired) = fault_counts(&server).await;
    assert!(fired >= 5, "every other attempt failed: {fired}");
    assert_eq!(matched, 6 + fired, "each failed attempt was sent once more");
    // Each wrap took effect once; the refused attempts are audited as failures.
    let (ok, failed) = audited(&client, &instance, "kms.secrets.wrap").await;
    assert_eq!(ok, 6);
    assert_eq!(u64::try_from(failed).unwrap(), fired);
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_servers_retry_delay() {
    let server = TestServer::start().await;
    let client = server.client().with_retry_policy(quick(3));
    let instance = server.instance().await;
    let key = KeyRef::from_key(&server.root_key(&instance).await).unwrap();
    let wrapped = client.wrap(&key, b"sixteen byte key", &[]).await.unwrap();
    inject(&server, "UnwrapKey", pb::FaultKind::ResourceExhausted, 1).await;
    // Every attempt is refused: the client waits the 200 ms the server asks for between
    // attempts, then gives up with the server's typed error and its delay.
    let started = std::time::Instant::now();
    let error = client
        .unwrap(&key, &wrapped.ciphertext, &[])
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert_eq!(error.reason(), Some(Reason::InjectedRateLimit));
    assert_eq!(error.retry_delay(), Some(Duration::from_millis(200)));
    assert_eq!(error.http_status(), Some(429));
    assert_eq!(fault_counts(&server).await, (3, 3));

    // Once the limit lifts (the rule fires on every 2nd call), the retry succeeds.
    server
        .simulator()
        .clear_faults(pb::ClearFaultsRequest::default())
        .await
        .unwrap();
    inject(&server, "UnwrapKey", pb::FaultKind::ResourceExhausted, 2).await;
    for _ in 0..3 {
        let plain = client.unwrap(&key, &wrapped.ciphertext, &[]).await.unwrap();
        assert_eq!(plain.plaintext.as_slice(), b"sixteen byte key");
    }
    let (ok, _) = audited(&client, &instance, "kms.secrets.unwrap").await;
    assert_eq!(ok, 3);
}

#[tokio::test]
async fn mutations_are_never_retried() {
    let server = TestServer::start().await;
    let client = server.client().with_retry_policy(quick(5));
    let instance = server.instance().await;
    let key = KeyRef::from_key(&server.root_key(&instance).await).unwrap();

    inject(&server, "CreateKey", pb::FaultKind::Unavailable, 1).await;
    let error = client
        .create_root_key(&instance, "never twice")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(error.reason(), Some(Reason::InjectedUnavailable));
    assert_eq!(fault_counts(&server).await, (1, 1), "sent once");
    server
        .simulator()
        .clear_faults(pb::ClearFaultsRequest::default())
        .await
        .unwrap();

    inject(&server, "RotateKey", pb::FaultKind::DeadlineExceeded, 1).await;
    let error = client.rotate(&key).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded);
    assert_eq!(fault_counts(&server).await, (1, 1), "sent once");
    assert_eq!(
        audited(&client, &instance, "kms.secrets.rotate").await,
        (0, 1)
    );
}

#[tokio::test]
async fn the_policy_bounds_a_persistent_failure() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = KeyRef::from_key(&server.root_key(&instance).await).unwrap();
    inject(&server, "GetKey", pb::FaultKind::Unavailable, 1).await;

    let error = server
        .client()
        .with_retry_policy(quick(3))
        .get_key(&key)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert_eq!(fault_counts(&server).await, (3, 3), "three attempts");

    // A spent budget stops after the first attempt, as does a policy without retries.
    for policy in [
        RetryPolicy {
            budget: Duration::ZERO,
            ..quick(10)
        },
        RetryPolicy::none(),
    ] {
        let error = server
            .client()
            .with_retry_policy(policy)
            .get_key(&key)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unavailable);
    }
    assert_eq!(fault_counts(&server).await, (5, 5));
}

/// The server's simulated clock, as the client reads it.
struct SimClock(Arc<SimulatedClock>);

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimClock")
    }
}

impl ServerClock for SimClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.0.now().as_millis()).unwrap())
    }
}

/// A user with `Manager` on a new instance with one root key: (API key secret, key).
async fn manager(server: &TestServer) -> (String, KeyRef) {
    let instance = server.instance().await;
    let key = KeyRef::from_key(&server.root_key(&instance).await).unwrap();
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "sdk user".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    server
        .iam()
        .create_access_policy(pb::CreateAccessPolicyRequest {
            identity_id: created.api_key.unwrap().identity.unwrap().id,
            instance,
            roles: vec![pb::Role::Manager as i32],
        })
        .await
        .unwrap();
    (created.secret, key)
}

#[tokio::test]
async fn an_api_key_token_is_refreshed_before_it_expires_once_for_many_callers() {
    let server = TestServer::start().await;
    let (api_key, key) = manager(&server).await;
    let client = KmsClient::builder(server.endpoint.clone())
        .api_key(api_key)
        .token_lifetime(Duration::from_secs(3600))
        .server_clock(Arc::new(SimClock(server.clock.clone())))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.token_exchanges(), 1, "exchanged at connect");
    client.get_key(&key).await.unwrap();

    server.advance(Duration::from_secs(2000));
    client.get_key(&key).await.unwrap();
    assert_eq!(client.token_exchanges(), 1, "55 % of the lifetime: kept");

    // Past 80 % (the old token would still be accepted for 700 s): a new one is fetched,
    // once, however many tasks call at the same moment.
    server.advance(Duration::from_secs(900));
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let client = client.clone();
            let key = key.clone();
            tokio::spawn(async move { client.get_key(&key).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(client.token_exchanges(), 2);

    // Another lifetime later, still working on the third token.
    server.advance(Duration::from_secs(3000));
    client.get_key(&key).await.unwrap();
    assert_eq!(client.token_exchanges(), 3);
}

#[tokio::test]
async fn an_expired_token_is_replaced_when_the_server_refuses_it() {
    let server = TestServer::start().await;
    let (api_key, key) = manager(&server).await;
    // The client reads its own clock, which the simulated server clock leaves behind.
    let client = KmsClient::builder(server.endpoint.clone())
        .api_key(api_key)
        .connect()
        .await
        .unwrap();
    server.advance(Duration::from_secs(2 * 3600));
    let rotated = client.rotate(&key).await.unwrap();
    assert_eq!(client.token_exchanges(), 2);
    // The rotation was sent once more after the refusal, and happened once.
    assert_eq!(client.list_key_versions(&key).await.unwrap().len(), 2);
    assert_eq!(rotated.id, key.key());
}

#[tokio::test]
async fn a_wrong_api_key_fails_at_connect_with_the_typed_reason() {
    let server = TestServer::start().await;
    let error = KmsClient::builder(server.endpoint.clone())
        .api_key("not-an-api-key")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert_eq!(error.reason(), Some(Reason::Unauthorized));
    assert_eq!(error.http_status(), Some(401));

    let client = server.client();
    let instance = server.instance().await;
    let missing = KeyRef::in_instance(&instance, "no-such-alias").unwrap();
    let error = client.get_key(&missing).await.unwrap_err();
    assert_eq!(error.reason(), Some(Reason::KeyNotFound));
    assert_eq!(error.reason_code(), Some("KEY_NOT_FOUND_ERR"));
    assert_eq!(error.http_status(), Some(404));
    assert!(matches!(error, ClientError::Rpc(_)));
}

#[tokio::test]
async fn an_https_endpoint_never_falls_back_to_plaintext() {
    let server = TestServer::start().await;
    let https = server.endpoint.replace("http://", "https://");
    let (ca, _, _) = pki();
    let error = KmsClient::builder(https)
        .ca_certificate_pem(ca.clone())
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Connect(_)), "{error:?}");
    assert_eq!(error.code(), Code::Unavailable);
    // TLS options on an http endpoint are refused rather than ignored.
    let error = KmsClient::builder(server.endpoint.clone())
        .ca_certificate_pem(ca)
        .connect_lazy()
        .unwrap_err();
    assert!(matches!(error, ClientError::TlsOptionsWithoutHttps));
}

/// A CA, a server certificate for `localhost` and a client certificate, all signed by it:
/// (CA PEM, server (cert, key) PEM, client (cert, key) PEM).
fn pki() -> (String, (String, String), (String, String)) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    (ca_cert.pem(), leaf("localhost"), leaf("client.example"))
}

/// Serves the health service over mutual TLS (client certificates from `ca` required).
async fn tls_health_server(ca: &str, server: &(String, String)) -> String {
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let (_, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server.0, &server.1))
        .client_ca_root(Certificate::from_pem(ca));
    tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("https://localhost:{port}")
}

async fn health(client: &KmsClient) -> Result<(), tonic::Status> {
    tonic_health::pb::health_client::HealthClient::new(client.channel().clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map(drop)
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let (ca, server_id, client_id) = pki();
    let endpoint = tls_health_server(&ca, &server_id).await;

    let client = KmsClient::builder(endpoint.clone())
        .ca_certificate_pem(ca.clone())
        .client_identity_pem(client_id.0.clone(), client_id.1.clone().into_bytes().into())
        .connect()
        .await
        .unwrap();
    health(&client).await.unwrap();

    // Without a client certificate the server refuses the handshake.
    let anonymous = KmsClient::builder(endpoint.clone())
        .ca_certificate_pem(ca)
        .connect()
        .await;
    let refused = match anonymous {
        Err(error) => error.code() == Code::Unavailable,
        Ok(client) => health(&client).await.is_err(),
    };
    assert!(refused, "a client without a certificate got through");

    // A server certificate from another CA is not trusted.
    let (other_ca, _, _) = pki();
    let untrusted = KmsClient::builder(endpoint)
        .ca_certificate_pem(other_ca)
        .client_identity_pem(client_id.0, client_id.1.into_bytes().into())
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(untrusted, ClientError::Connect(_)),
        "{untrusted:?}"
    );
}
