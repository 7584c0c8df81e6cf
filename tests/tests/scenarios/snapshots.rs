//! `SimulatorService.ExportSnapshot` / `ImportSnapshot` end to end: a snapshot round-trips the
//! whole state (instances, keys with their versions, deleted keys, aliases, IAM identities and
//! API keys, the HSM's key material) through a `Reset`; tampered, malformed and foreign
//! (another master key) snapshots are refused with the state untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error};
use tonic::Code;

async fn wrap(server: &TestServer, key: &pb::Key, aad: &str) -> Vec<u8> {
    server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: b"a data key of 32 bytes..........".to_vec(),
            aad: vec![aad.to_owned()],
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext
}

async fn unwrap(
    server: &TestServer,
    key: &str,
    ciphertext: &[u8],
    aad: &str,
) -> Result<Vec<u8>, tonic::Status> {
    server
        .keys()
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.to_owned(),
            ciphertext: ciphertext.to_vec(),
            aad: vec![aad.to_owned()],
        })
        .await
        .map(|r| r.into_inner().plaintext)
}

async fn instance_ids(server: &TestServer) -> Vec<String> {
    let mut ids: Vec<String> = server
        .instances()
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .instances
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

async fn get_key(server: &TestServer, key: &str) -> Result<pb::Key, tonic::Status> {
    server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: key.to_owned(),
        })
        .await
        .map(|r| r.into_inner().key.unwrap())
}

async fn export(server: &TestServer) -> pb::ExportSnapshotResponse {
    server
        .simulator()
        .export_snapshot(pb::ExportSnapshotRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn import(
    server: &TestServer,
    snapshot: Vec<u8>,
) -> Result<pb::ImportSnapshotResponse, tonic::Status> {
    server
        .simulator()
        .import_snapshot(pb::ImportSnapshotRequest { snapshot })
        .await
        .map(tonic::Response::into_inner)
}

async fn create_token(server: &TestServer, secret: &str) -> Result<String, tonic::Status> {
    server
        .iam_as(None)
        .create_token(pb::CreateTokenRequest {
            api_key: secret.to_owned(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().access_token)
}

#[tokio::test]
async fn export_reset_import_restores_everything_and_old_ciphertexts_unwrap() {
    let server = TestServer::start().await;
    let first = server.instance().await;
    let second = server.instance().await;
    let aliased = server
        .keys()
        .create_key(pb::CreateKeyRequest {
            instance: first.clone(),
            name: "aliased".into(),
            r#type: pb::KeyType::Root as i32,
            aliases: vec!["orders-root".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let rotated = server.root_key(&second).await;
    let deleted = server.root_key(&second).await;
    let before_rotation = wrap(&server, &rotated, "v1").await;
    server
        .keys()
        .rotate_key(pb::RotateKeyRequest {
            key: rotated.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let after_rotation = wrap(&server, &rotated, "v2").await;
    let by_alias = wrap(&server, &aliased, "alias").await;
    server
        .keys()
        .delete_key(pb::DeleteKeyRequest {
            key: deleted.crn.clone(),
            force: false,
        })
        .await
        .unwrap();
    let api_key = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "alice@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rotated_before = get_key(&server, &rotated.crn).await.unwrap();
    let instances_before = instance_ids(&server).await;

    let exported = export(&server).await;
    assert_eq!(exported.instances, 2);
    assert_eq!(exported.keys, 3);
    let status = server
        .hsm()
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        exported.master_key_verification_pattern,
        status.current_master_key.unwrap().verification_pattern
    );
    // Sealed: no record id or name appears in the blob.
    let blob = &exported.snapshot;
    for needle in [rotated.id.as_bytes(), b"alice@example.com", b"orders-root"] {
        assert!(!blob.windows(needle.len()).any(|w| w == needle));
    }

    server.simulator().reset(pb::ResetRequest {}).await.unwrap();
    assert!(instance_ids(&server).await.is_empty());
    assert_error(
        get_key(&server, &rotated.crn).await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
    // Reset keeps IAM; delete the identity so the import must bring it back.
    server
        .iam()
        .delete_identity(pb::DeleteIdentityRequest {
            id: api_key
                .api_key
                .as_ref()
                .unwrap()
                .identity
                .as_ref()
                .unwrap()
                .id
                .clone(),
        })
        .await
        .unwrap();
    assert_error(
        create_token(&server, &api_key.secret).await,
        Code::Unauthenticated,
        "UNAUTHORIZED_ERR",
    );

    let imported = import(&server, exported.snapshot.clone()).await.unwrap();
    assert_eq!((imported.instances, imported.keys), (2, 3));
    assert_eq!(instance_ids(&server).await, instances_before);
    let rotated_after = get_key(&server, &rotated.crn).await.unwrap();
    assert_eq!(rotated_after, rotated_before);
    assert_eq!(
        unwrap(&server, &rotated.crn, &before_rotation, "v1")
            .await
            .unwrap(),
        b"a data key of 32 bytes.........."
    );
    assert_eq!(
        unwrap(&server, &rotated.crn, &after_rotation, "v2")
            .await
            .unwrap(),
        b"a data key of 32 bytes.........."
    );
    let alias_path = format!("instances/{first}/keys/orders-root");
    assert_eq!(
        unwrap(&server, &alias_path, &by_alias, "alias")
            .await
            .unwrap(),
        b"a data key of 32 bytes.........."
    );
    let deleted_after = server
        .keys()
        .list_keys(pb::ListKeysRequest {
            instance: second.clone(),
            states: vec![pb::KeyState::Destroyed as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(
        deleted_after
            .iter()
            .map(|k| k.id.clone())
            .collect::<Vec<_>>(),
        vec![deleted.id.clone()]
    );
    // The IAM identity and its API key are back.
    create_token(&server, &api_key.secret).await.unwrap();
    // New keys work after the import.
    let fresh = server.root_key(&first).await;
    let ciphertext = wrap(&server, &fresh, "new").await;
    unwrap(&server, &fresh.crn, &ciphertext, "new")
        .await
        .unwrap();
}

#[tokio::test]
async fn tampered_malformed_and_foreign_snapshots_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let ciphertext = wrap(&server, &key, "x").await;
    let exported = export(&server).await;

    let mut tampered = exported.snapshot.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    assert_error(
        import(&server, tampered).await,
        Code::InvalidArgument,
        "SNAPSHOT_AUTHENTICATION_ERR",
    );
    let mut truncated = exported.snapshot.clone();
    truncated.truncate(30);
    assert_error(
        import(&server, truncated).await,
        Code::InvalidArgument,
        "SNAPSHOT_MALFORMED_ERR",
    );
    assert_error(
        import(&server, b"not a snapshot".to_vec()).await,
        Code::InvalidArgument,
        "SNAPSHOT_MALFORMED_ERR",
    );
    let status = assert_error(
        import(&server, Vec::new()).await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(kmsim_tests::violated_fields(&status), vec!["snapshot"]);

    // A snapshot from a server with another master key.
    let other = TestServer::start().await;
    let other_instance = other.instance().await;
    other.root_key(&other_instance).await;
    let foreign = export(&other).await;
    assert_ne!(
        foreign.master_key_verification_pattern,
        exported.master_key_verification_pattern
    );
    assert_error(
        import(&server, foreign.snapshot).await,
        Code::FailedPrecondition,
        "SNAPSHOT_MASTER_KEY_MISMATCH_ERR",
    );

    // Nothing changed.
    assert_eq!(instance_ids(&server).await, vec![instance.clone()]);
    assert_eq!(
        unwrap(&server, &key.crn, &ciphertext, "x").await.unwrap(),
        b"a data key of 32 bytes.........."
    );
    // Administration calls: an unauthenticated caller is refused.
    let unauthenticated =
        kmsim_proto::v1::simulator_service_client::SimulatorServiceClient::new(server.channel())
            .export_snapshot(pb::ExportSnapshotRequest {})
            .await;
    assert_eq!(unauthenticated.unwrap_err().code(), Code::Unauthenticated);
}
