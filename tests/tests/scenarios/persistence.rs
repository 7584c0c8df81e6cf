//! State survives a restart: instances, keys, versions, aliases, deletion timelines and import
//! tokens come back from the store, and old ciphertexts still unwrap. A different master key
//! cannot open the state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::config::random_credentials;
use kmsim_tests::{TestServer, key_path};

#[tokio::test]
async fn restart_keeps_instances_keys_versions_and_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let master = [0x42; 32];
    let credentials = random_credentials();
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));

    let server = TestServer::start_with(
        kmsim_tests::persistent_config(dir.path(), master, &credentials, clock.clone()),
        clock.clone(),
    )
    .await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut keys = server.keys();
    keys.create_key_alias(pb::CreateKeyAliasRequest {
        key: key.crn.clone(),
        alias: "survivor".into(),
    })
    .await
    .unwrap();
    let old = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            aad: vec!["x".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rotated = keys
        .rotate_key(pb::RotateKeyRequest {
            key: key.crn.clone(),
            material: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let standard = keys
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "std".into(),
            r#type: pb::KeyType::Standard as i32,
            material: Some(pb::create_key_request::Material::Payload(vec![9; 24])),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let doomed = server.root_key(&instance).await;
    keys.delete_key(pb::DeleteKeyRequest {
        key: doomed.crn.clone(),
        force: false,
    })
    .await
    .unwrap();
    keys.create_import_token(pb::CreateImportTokenRequest {
        instance: instance.clone(),
        expiration_seconds: 3600,
        max_allowed_retrievals: 3,
    })
    .await
    .unwrap();
    keys.get_import_token(pb::GetImportTokenRequest {
        instance: instance.clone(),
    })
    .await
    .unwrap();
    server.stop().await;

    let server = TestServer::start_with(
        kmsim_tests::persistent_config(dir.path(), master, &credentials, clock.clone()),
        clock.clone(),
    )
    .await;
    let mut keys = server.keys();
    let instances = server
        .instances()
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(instances.instances.len(), 1);
    assert_eq!(instances.instances[0].id, instance);
    let reloaded = keys
        .get_key(pb::GetKeyRequest {
            key: key_path(&instance, "survivor"),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(reloaded.id, key.id);
    assert_eq!(reloaded.version_count, 2);
    assert_eq!(reloaded.current_version, rotated.current_version);
    let unwrapped = keys
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: old.ciphertext,
            aad: vec!["x".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unwrapped.plaintext, old.plaintext);
    assert_eq!(unwrapped.rewrapped_key_version, rotated.current_version);
    let standard_again = keys
        .get_key(pb::GetKeyRequest {
            key: standard.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(standard_again.payload, vec![9; 24]);
    let doomed_again = keys
        .get_key(pb::GetKeyRequest {
            key: doomed.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(doomed_again.state, pb::KeyState::Destroyed as i32);
    assert_eq!(
        doomed_again.deletion_time,
        keys.get_key(pb::GetKeyRequest {
            key: doomed.crn.clone()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .deletion_time
    );
    let token = keys
        .get_import_token(pb::GetImportTokenRequest {
            instance: instance.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert_eq!(
        token.remaining_retrievals, 1,
        "the retrieval used before the restart stays used"
    );
    server.stop().await;

    // Another master key cannot open the keystore.
    let result = kmsim_server::open(&kmsim_tests::persistent_config(
        dir.path(),
        [0x43; 32],
        &credentials,
        clock,
    ));
    assert!(
        result.is_err(),
        "a foreign master key must not open the state"
    );
}
