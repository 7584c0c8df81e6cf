//! The Key Protect REST facade and the IAM token endpoint, over plain HTTP/1.1 against the
//! real server (gRPC and REST in-process over one domain): the same state over both protocols,
//! the same audit events, Key Protect's status codes and bodies, and bad input answered with
//! Key Protect's error body and the right status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kmsim_proto::v1 as pb;
use kmsim_server::audit::{AuditFilter, AuditRecord, Outcome};
use kmsim_tests::{DEV_TOKEN, TestServer, key_path};
use serde_json::{Value, json};

/// A REST client of a facade served beside `server`'s gRPC, over the same domain.
struct Rest {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    token: String,
    instance: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    raw: Bytes,
}

impl Answer {
    #[track_caller]
    fn reason(&self) -> String {
        self.body["resources"][0]["reasons"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no Key Protect error body: {}", self.body))
            .to_owned()
    }

    #[track_caller]
    fn expect_error(&self, status: u16, reason: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.reason(), reason, "{}", self.body);
        assert_eq!(
            self.body["metadata"]["collectionType"],
            "application/vnd.ibm.kms.error+json"
        );
        assert_eq!(self.body["resources"][0]["reasons"][0]["status"], status);
        let message = self.body["resources"][0]["errorMsg"].as_str().unwrap();
        assert!(message.ends_with(&format!("({reason})")), "{message}");
    }

    fn key(&self) -> &Value {
        &self.body["resources"][0]
    }
}

impl Rest {
    async fn start(server: &TestServer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(kmsim_server::rest::serve(
            listener,
            Arc::clone(&server.kms),
            std::future::pending(),
        ));
        Self {
            base: format!("http://{address}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            token: DEV_TOKEN.to_owned(),
            instance: server.instance().await,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !has("authorization") {
            request = request.header("authorization", format!("Bearer {}", self.token));
        }
        if !has("bluemix-instance") {
            request = request.header("bluemix-instance", &self.instance);
        }
        for (name, value) in headers {
            if !value.is_empty() {
                request = request.header(*name, *value);
            }
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response.into_body().collect().await.unwrap().to_bytes();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        };
        Answer {
            status,
            headers,
            body,
            raw,
        }
    }

    async fn json(&self, method: Method, path: &str, body: Value) -> Answer {
        self.send(
            method,
            path,
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[("accept", "application/json")], None)
            .await
    }

    async fn post_empty(&self, path: &str) -> Answer {
        self.send(Method::POST, path, &[], None).await
    }

    async fn create_key(&self, name: &str, extractable: bool) -> Answer {
        self.send(
            Method::POST,
            "/api/v2/keys",
            &[("content-type", "application/vnd.ibm.kms.key+json")],
            Some(
                serde_json::to_vec(&key_collection(json!({
                    "type": "application/vnd.ibm.kms.key+json",
                    "name": name,
                    "extractable": extractable,
                })))
                .unwrap(),
            ),
        )
        .await
    }
}

fn key_collection(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [resource],
    })
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(value: &Value) -> Vec<u8> {
    STANDARD.decode(value.as_str().unwrap()).unwrap()
}

async fn audit_events(server: &TestServer) -> Vec<AuditRecord> {
    let admin = server
        .kms
        .authenticate(Some(format!("Bearer {DEV_TOKEN}").as_bytes()))
        .unwrap();
    server
        .kms
        .list_audit_events(&admin, &AuditFilter::default(), 0, 1000)
        .await
        .unwrap()
        .events
}

#[tokio::test]
async fn rest_and_grpc_share_keys_both_ways() {
    let server = TestServer::start().await;
    let rest = Rest::start(&server).await;

    // A key created over REST wraps over gRPC; REST unwraps it.
    let created = rest.create_key("rest-root", false).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let key = created.key();
    assert_eq!(key["state"], 1);
    assert_eq!(key["extractable"], false);
    assert_eq!(key["type"], "application/vnd.ibm.kms.key+json");
    let id = key["id"].as_str().unwrap().to_owned();
    let dek = [7u8; 32];
    let wrapped = server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key_path(&rest.instance, &id),
            plaintext: dek.to_vec(),
            aad: vec!["tenant-1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let unwrapped = rest
        .json(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/unwrap"),
            json!({"ciphertext": b64(&wrapped.ciphertext), "aad": ["tenant-1"]}),
        )
        .await;
    assert_eq!(unwrapped.status, StatusCode::OK, "{}", unwrapped.body);
    assert_eq!(unb64(&unwrapped.body["plaintext"]), dek);
    assert_eq!(
        unwrapped.body["keyVersion"]["id"],
        wrapped.key_version.unwrap().id
    );

    // A key created over gRPC wraps over REST (the legacy `?action=` form, a generated DEK);
    // gRPC unwraps it.
    let grpc_key = server.root_key(&rest.instance).await;
    let wrap = rest
        .json(
            Method::POST,
            &format!("/api/v2/keys/{}?action=wrap", grpc_key.id),
            json!({"aad": ["a", "b"]}),
        )
        .await;
    assert_eq!(wrap.status, StatusCode::OK, "{}", wrap.body);
    let generated = unb64(&wrap.body["plaintext"]);
    assert_eq!(generated.len(), 32);
    let back = server
        .keys()
        .unwrap_key(pb::UnwrapKeyRequest {
            key: grpc_key.crn.clone(),
            ciphertext: unb64(&wrap.body["ciphertext"]),
            aad: vec!["a".into(), "b".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext, generated);

    // The wrong AAD fails the same way over REST as over gRPC.
    let refused = rest
        .json(
            Method::POST,
            &format!("/api/v2/keys/{}/actions/unwrap", grpc_key.id),
            json!({"ciphertext": wrap.body["ciphertext"], "aad": ["a"]}),
        )
        .await;
    refused.expect_error(422, "UNPROCESSABLE_CIPHERTEXT_ERR");

    // A standard key's GET carries its payload; metadata does not.
    let standard = rest.create_key("rest-standard", true).await;
    let sid = standard.key()["id"].as_str().unwrap().to_owned();
    let got = rest.get(&format!("/api/v2/keys/{sid}")).await;
    assert_eq!(unb64(&got.key()["payload"]).len(), 32);
    let meta = rest.get(&format!("/api/v2/keys/{sid}/metadata")).await;
    assert_eq!(meta.status, StatusCode::OK);
    assert!(meta.key().get("payload").is_none());
    server.stop().await;
}

#[tokio::test]
async fn rest_key_lifecycle_follows_key_protect() {
    let server = TestServer::start().await;
    let rest = Rest::start(&server).await;
    let id = rest.create_key("lifecycle", false).await.key()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dek = b"0123456789abcdef0123456789abcdef";
    let old = rest
        .json(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/wrap"),
            json!({"plaintext": b64(dek)}),
        )
        .await;
    assert!(old.body.get("plaintext").is_none());

    // Aliases, and the key by alias.
    let alias = rest
        .post_empty(&format!("/api/v2/keys/{id}/aliases/pg-root"))
        .await;
    assert_eq!(alias.status, StatusCode::CREATED, "{}", alias.body);
    assert_eq!(alias.body["resources"][0]["alias"], "pg-root");
    let by_alias = rest.get("/api/v2/keys/pg-root").await;
    assert_eq!(by_alias.key()["id"], id.as_str());

    // Disable and enable answer 204 with no body; the state numbers follow.
    let disabled = rest
        .send(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/disable"),
            &[(
                "content-type",
                "application/vnd.ibm.kms.key_action_disable+json",
            )],
            None,
        )
        .await;
    assert_eq!(disabled.status, StatusCode::NO_CONTENT);
    assert!(disabled.raw.is_empty());
    assert_eq!(
        rest.get(&format!("/api/v2/keys/{id}")).await.key()["state"],
        2
    );
    rest.json(
        Method::POST,
        &format!("/api/v2/keys/{id}/actions/wrap"),
        json!({}),
    )
    .await
    .expect_error(409, "KEY_ACTION_INVALID_STATE_ERR");
    server.advance(Duration::from_secs(31));
    let enabled = rest
        .post_empty(&format!("/api/v2/keys/{id}/actions/enable"))
        .await;
    assert_eq!(enabled.status, StatusCode::NO_CONTENT, "{}", enabled.body);
    assert_eq!(
        rest.get(&format!("/api/v2/keys/{id}")).await.key()["state"],
        1
    );

    // Rotate (204); the old ciphertext unwraps and comes back rewrapped; a second rotation
    // within the hour is refused with Retry-After.
    let rotated = rest
        .post_empty(&format!("/api/v2/keys/{id}/actions/rotate"))
        .await;
    assert_eq!(rotated.status, StatusCode::NO_CONTENT, "{}", rotated.body);
    let again = rest
        .post_empty(&format!("/api/v2/keys/{id}/actions/rotate"))
        .await;
    again.expect_error(409, "KEY_ROTATION_NOT_PERMITTED");
    assert!(again.headers.contains_key("retry-after"));
    let unwrapped = rest
        .json(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/unwrap"),
            json!({"ciphertext": old.body["ciphertext"]}),
        )
        .await;
    assert_eq!(unb64(&unwrapped.body["plaintext"]), dek);
    assert_ne!(
        unwrapped.body["rewrappedKeyVersion"]["id"],
        unwrapped.body["keyVersion"]["id"]
    );
    assert!(unwrapped.body["ciphertext"].is_string());
    let rewrapped = rest
        .json(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/rewrap"),
            json!({"ciphertext": old.body["ciphertext"]}),
        )
        .await;
    assert_eq!(
        rewrapped.body["rewrappedKeyVersion"]["id"],
        unwrapped.body["rewrappedKeyVersion"]["id"]
    );
    let versions = rest
        .get(&format!("/api/v2/keys/{id}/versions?totalCount=true"))
        .await;
    assert_eq!(versions.body["metadata"]["totalCount"], 2);

    // Listing with the empty `state=` every Python listing sends, and the HEAD total.
    let listed = rest.get("/api/v2/keys?state=&limit=10").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["metadata"]["collectionTotal"], 1);
    let total = rest
        .send(Method::HEAD, "/api/v2/keys?state=", &[], None)
        .await;
    assert_eq!(total.status, StatusCode::OK);
    assert_eq!(total.headers["key-total"], "1");
    rest.get("/api/v2/keys?limit=0")
        .await
        .expect_error(400, "INVALID_QUERY_PARAM_ERR");

    // Policies: set rotation, read it back.
    let policy = rest
        .json(
            Method::PUT,
            &format!("/api/v2/keys/{id}/policies?policy=rotation"),
            json!({
                "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
                "resources": [{"type": "application/vnd.ibm.kms.policy+json", "rotation": {"interval_month": 3}}],
            }),
        )
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.body);
    let policies = rest.get(&format!("/api/v2/keys/{id}/policies")).await;
    assert_eq!(
        policies.body["resources"][0]["rotation"]["interval_month"],
        3
    );

    // Delete (204), delete again (410), restore too early (409), then restore (201).
    let deleted = rest
        .send(Method::DELETE, &format!("/api/v2/keys/{id}"), &[], None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let purge = rest
        .send(
            Method::DELETE,
            &format!("/api/v2/keys/{id}/purge"),
            &[],
            None,
        )
        .await;
    purge.expect_error(409, "REQ_TOO_EARLY_ERR");
    assert!(purge.headers.contains_key("retry-after"));
    server.advance(Duration::from_secs(31));
    let restored = rest
        .send(
            Method::POST,
            &format!("/api/v2/keys/{id}/restore"),
            &[("accept", "application/vnd.ibm.kms.key+json")],
            None,
        )
        .await;
    assert_eq!(restored.status, StatusCode::CREATED, "{}", restored.body);
    assert_eq!(restored.key()["state"], 1);

    // Force delete with the representation, then purge after 4 hours.
    let deleted = rest
        .send(
            Method::DELETE,
            &format!("/api/v2/keys/{id}?force=true"),
            &[("prefer", "return=representation")],
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.key()["state"], 5);
    server.advance(Duration::from_secs(4 * 3600 + 1));
    let purged = rest
        .send(
            Method::DELETE,
            &format!("/api/v2/keys/{id}/purge"),
            &[],
            None,
        )
        .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    rest.get(&format!("/api/v2/keys/{id}"))
        .await
        .expect_error(404, "KEY_NOT_FOUND_ERR");
    server.stop().await;
}

#[tokio::test]
async fn rest_bad_input_gets_key_protect_errors() {
    let server = TestServer::start().await;
    let rest = Rest::start(&server).await;
    let id = rest.create_key("target", false).await.key()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrap = format!("/api/v2/keys/{id}/actions/wrap");

    let malformed = rest
        .send(
            Method::POST,
            "/api/v2/keys",
            &[("content-type", "application/json")],
            Some(b"{\"metadata\":".to_vec()),
        )
        .await;
    malformed.expect_error(400, "BAD_BODY_ERR");
    let mismatch = rest
        .json(
            Method::POST,
            "/api/v2/keys",
            json!({
                "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 2},
                "resources": [{"name": "x1", "extractable": false}],
            }),
        )
        .await;
    mismatch.expect_error(400, "COLLECTION_TOTAL_MISMATCH_ERR");
    rest.send(
        Method::POST,
        "/api/v2/keys",
        &[("content-type", "application/json")],
        None,
    )
    .await
    .expect_error(400, "NO_BODY_ERR");
    rest.send(
        Method::POST,
        &wrap,
        &[("content-type", "text/plain")],
        Some(b"hello".to_vec()),
    )
    .await
    .expect_error(415, "UNSUPPORTED_MEDIA_TYPE_ERR");
    rest.send(
        Method::POST,
        &wrap,
        &[("content-type", "application/json")],
        Some(vec![b' '; 70 * 1024]),
    )
    .await
    .expect_error(413, "BODY_TOO_LARGE_ERR");
    rest.json(Method::POST, &wrap, json!({"plaintext": "not base64!"}))
        .await
        .expect_error(400, "BAD_BODY_ERR");
    rest.send(
        Method::GET,
        "/api/v2/keys",
        &[("bluemix-instance", "3f1c5a9e-0000-4000-8000-000000000000")],
        None,
    )
    .await
    .expect_error(404, "INSTANCE_NOT_FOUND_ERR");
    rest.send(
        Method::GET,
        "/api/v2/keys",
        &[("bluemix-instance", "not an instance")],
        None,
    )
    .await
    .expect_error(400, "INVALID_HEADER_ERR");
    rest.send(
        Method::GET,
        "/api/v2/keys",
        &[("x-kms-key-ring", "other-ring")],
        None,
    )
    .await
    .expect_error(404, "KEY_RING_NOT_FOUND_ERR");
    let ok_ring = rest
        .send(
            Method::GET,
            "/api/v2/keys",
            &[("x-kms-key-ring", "default")],
            None,
        )
        .await;
    assert_eq!(ok_ring.status, StatusCode::OK);
    rest.send(
        Method::GET,
        "/api/v2/keys",
        &[("authorization", "Bearer nope")],
        None,
    )
    .await
    .expect_error(400, "BEARER_SUB_EXTRACTION_ERR");
    // No Authorization header at all (an empty value sends none).
    rest.send(Method::GET, "/api/v2/keys", &[("authorization", "")], None)
        .await
        .expect_error(401, "UNAUTHORIZED_ERR");
    rest.post_empty(&format!("/api/v2/keys/{id}/actions/explode"))
        .await
        .expect_error(400, "INVALID_QUERY_PARAM_ERR");
    rest.get("/api/v2/keys/no_such_alias")
        .await
        .expect_error(404, "KEY_NOT_FOUND_ERR");
    rest.get("/api/v2/nothing-here")
        .await
        .expect_error(404, "NOT_FOUND_ERR");
    server.stop().await;
}

#[tokio::test]
async fn rest_calls_are_audited_like_grpc_calls() {
    let server = TestServer::start().await;
    let rest = Rest::start(&server).await;
    let key = server.root_key(&rest.instance).await;
    let wrapped = rest
        .send(
            Method::POST,
            &format!("/api/v2/keys/{}/actions/wrap", key.id),
            &[
                ("content-type", "application/json"),
                ("correlation-id", "rest-corr-1"),
            ],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(wrapped.status, StatusCode::OK);
    assert_eq!(wrapped.headers["correlation-id"], "rest-corr-1");
    let refused = rest
        .send(
            Method::POST,
            &format!("/api/v2/keys/{}/actions/unwrap", key.id),
            &[
                ("content-type", "application/json"),
                ("x-correlation-id", "rest-corr-2"),
            ],
            Some(br#"{"ciphertext":"AAAA"}"#.to_vec()),
        )
        .await;
    assert_eq!(refused.status.as_u16(), 422, "{}", refused.body);
    // The same two calls over gRPC.
    server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    server
        .keys()
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: vec![0, 0, 0],
            ..Default::default()
        })
        .await
        .unwrap_err();

    let events = audit_events(&server).await;
    let find = |correlation: &str| {
        events
            .iter()
            .find(|e| e.correlation_id == correlation)
            .unwrap_or_else(|| panic!("no event {correlation}: {events:#?}"))
            .clone()
    };
    let rest_wrap = find("rest-corr-1");
    let rest_unwrap = find("rest-corr-2");
    let grpc_wrap = events
        .iter()
        .find(|e| e.method == "/kmsim.v1.KeyService/WrapKey")
        .unwrap();
    let grpc_unwrap = events
        .iter()
        .find(|e| e.method == "/kmsim.v1.KeyService/UnwrapKey")
        .unwrap();
    for (rest_event, grpc_event) in [(&rest_wrap, grpc_wrap), (&rest_unwrap, grpc_unwrap)] {
        assert_eq!(rest_event.action, grpc_event.action);
        assert_eq!(rest_event.outcome, grpc_event.outcome);
        assert_eq!(rest_event.reason, grpc_event.reason);
        assert_eq!(rest_event.http_status, grpc_event.http_status);
        assert_eq!(rest_event.target_crn, grpc_event.target_crn);
        assert_eq!(rest_event.initiator_id, grpc_event.initiator_id);
    }
    assert_eq!(rest_wrap.action, "kms.secrets.wrap");
    assert_eq!(rest_wrap.outcome, Outcome::Success);
    assert_eq!(rest_wrap.method, "POST /api/v2/keys/{id}/actions/wrap");
    assert!(!rest_wrap.key_version_id.is_empty());
    assert_eq!(rest_unwrap.action, "kms.secrets.unwrap");
    assert_eq!(rest_unwrap.outcome, Outcome::Failure);
    assert_eq!(rest_unwrap.http_status, 422);
    server.stop().await;
}

#[tokio::test]
async fn iam_token_endpoint_exchanges_api_keys_for_tokens_rest_accepts() {
    let server = TestServer::start().await;
    let mut rest = Rest::start(&server).await;
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
    let identity = created.api_key.unwrap().identity.unwrap().id;
    server
        .iam()
        .create_access_policy(pb::CreateAccessPolicyRequest {
            identity_id: identity.clone(),
            instance: rest.instance.clone(),
            roles: vec![pb::Role::Manager as i32],
        })
        .await
        .unwrap();
    let form = |key: &str| {
        format!(
            "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={key}&response_type=cloud_iam"
        )
        .into_bytes()
    };
    let form_type = [("content-type", "application/x-www-form-urlencoded")];
    for path in ["/identity/token", "/oidc/token"] {
        let answer = rest
            .send(Method::POST, path, &form_type, Some(form(&created.secret)))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["token_type"], "Bearer");
        assert_eq!(answer.body["expires_in"], 3600);
        assert!(answer.body["refresh_token"].is_string());
        let token = answer.body["access_token"].as_str().unwrap();
        // A JWT with numeric iat and exp, as the SDKs decode it.
        let claims = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
        assert_eq!(answer.body["expiration"], claims["exp"]);
        rest.token = token.to_owned();
        let created = rest
            .create_key(&format!("by-sdk-user{}", path.len()), false)
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        assert_eq!(created.key()["createdBy"], identity.as_str());
    }
    let bad = rest
        .send(
            Method::POST,
            "/identity/token",
            &form_type,
            Some(form(
                "kmsim-ak-00000000000000000000000000000000-AAAAAAAAAAAAAAAAAAAA",
            )),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["errorCode"], "BXNIM0415E");
    assert_eq!(
        bad.body["errorMessage"],
        "Provided API key could not be found"
    );
    assert!(bad.body["context"]["requestId"].is_string());
    let wrong_type = rest
        .send(
            Method::POST,
            "/identity/token",
            &[("content-type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_type.body["errorCode"], "BXNIM0109E");
    let events = audit_events(&server).await;
    let tokens: Vec<&AuditRecord> = events
        .iter()
        .filter(|e| e.action == "kmsim.iam.token.create")
        .collect();
    assert_eq!(tokens.len(), 4);
    assert_eq!(tokens[2].reason, "UNAUTHORIZED_ERR");
    server.stop().await;
}

#[tokio::test]
async fn rest_registration_writes_are_for_services_and_protect_keys() {
    const POSTGRES: &str = "databases-for-postgresql";
    const DEPLOYMENT: &str =
        "crn:v1:bluemix:public:databases-for-postgresql:us-south:a/kmsim:0b1c2d3e-pg-1::";
    let server = TestServer::start().await;
    let mut rest = Rest::start(&server).await;
    let id = rest.create_key("protected", false).await.key()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let encoded = DEPLOYMENT.replace('/', "%2F");
    let path = format!("/api/v2/keys/{id}/registrations/{encoded}");
    let body = json!({"preventKeyDeletion": false, "description": "pg data"});

    // A user (the admin, here) may not write registrations.
    rest.json(Method::POST, &path, body.clone())
        .await
        .expect_error(403, "SERVICE_ONLY_ERR");

    // A service identity authorized on the instance may.
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::Service as i32,
            name: POSTGRES.into(),
            source_instance_crn: DEPLOYMENT.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    server
        .iam()
        .create_authorization(pb::CreateAuthorizationRequest {
            source_service_name: POSTGRES.into(),
            source_instance_crn: DEPLOYMENT.into(),
            target_instance: rest.instance.clone(),
            role: pb::Role::Reader as i32,
        })
        .await
        .unwrap();
    let admin_token = std::mem::replace(&mut rest.token, server.token(&created.secret).await);
    let registered = rest.json(Method::POST, &path, body).await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    assert_eq!(registered.body["resources"][0]["resourceCrn"], DEPLOYMENT);
    let patched = rest
        .json(Method::PATCH, &path, json!({"description": "pg data v2"}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["resources"][0]["description"], "pg data v2");

    // The admin lists it by key and by CRN, and cannot delete the key without force.
    rest.token = admin_token;
    let by_key = rest
        .get(&format!("/api/v2/keys/{id}/registrations?totalCount=true"))
        .await;
    assert_eq!(by_key.body["metadata"]["totalCount"], 1, "{}", by_key.body);
    let by_crn = rest
        .get(&format!(
            "/api/v2/keys/registrations?urlEncodedResourceCRNQuery={encoded}"
        ))
        .await;
    assert_eq!(by_crn.body["resources"][0]["keyId"], id.as_str());
    rest.send(Method::DELETE, &format!("/api/v2/keys/{id}"), &[], None)
        .await
        .expect_error(409, "PROTECTED_RESOURCE_ERR");
    server.stop().await;
}
