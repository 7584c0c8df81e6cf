//! `SimulatorService.AdvanceClock` fires token expiry exactly: an import token and a bearer
//! token both work one millisecond before their expiry and are refused exactly at it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error};
use tonic::Code;
use tonic_types::StatusExt;

const ONE_MS: Duration = Duration::from_millis(1);

#[tokio::test]
async fn an_import_token_expires_exactly_at_its_expiry_under_advance_clock() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let created = server
        .keys()
        .create_import_token(pb::CreateImportTokenRequest {
            instance: instance.clone(),
            expiration_seconds: 300,
            max_allowed_retrievals: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let token = created.token.unwrap();
    let expiry = token.expiration_time.unwrap();
    let keys = server.keys();
    let get = || {
        let mut keys = keys.clone();
        let instance = instance.clone();
        async move {
            keys.get_import_token(pb::GetImportTokenRequest { instance })
                .await
        }
    };
    let moved = server.advance_rpc(Duration::from_secs(300) - ONE_MS).await;
    let now = moved.time.unwrap();
    assert_eq!(
        (now.seconds * 1000 + i64::from(now.nanos) / 1_000_000) + 1,
        expiry.seconds * 1000 + i64::from(expiry.nanos) / 1_000_000
    );
    get().await.unwrap();
    server.advance_rpc(ONE_MS).await;
    assert_error(
        get().await,
        Code::FailedPrecondition,
        "IMPORT_TOKEN_EXPIRED_ERR",
    );
}

#[tokio::test]
async fn a_bearer_token_expires_exactly_at_its_expiry_under_advance_clock() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "reader@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    server
        .iam()
        .create_access_policy(pb::CreateAccessPolicyRequest {
            identity_id: created.api_key.unwrap().identity.unwrap().id,
            instance: instance.clone(),
            roles: vec![pb::Role::Reader as i32],
        })
        .await
        .unwrap();
    let token = server
        .iam_as(None)
        .create_token(pb::CreateTokenRequest {
            api_key: created.secret,
            expires_in_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let keys = server.keys_as(Some(&token));
    let list = || {
        let mut keys = keys.clone();
        let instance = instance.clone();
        async move {
            keys.list_keys(pb::ListKeysRequest {
                instance,
                ..Default::default()
            })
            .await
        }
    };
    list().await.unwrap();
    server.advance_rpc(Duration::from_secs(60) - ONE_MS).await;
    list().await.unwrap();
    server.advance_rpc(ONE_MS).await;
    let expired = assert_error(list().await, Code::Unauthenticated, "UNAUTHORIZED_ERR");
    assert_eq!(
        expired
            .get_error_details()
            .error_info()
            .unwrap()
            .metadata
            .get("auth_failure")
            .map(String::as_str),
        Some("expired")
    );
}
