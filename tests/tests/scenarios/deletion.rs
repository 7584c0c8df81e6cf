//! The deletion timeline, driven by the simulated clock: restore guard, purge too early, purge
//! allowed after 4 h, restore closed after 30 days, automatic purge after 90 days, and a purged
//! key unwraps nothing, ever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error};
use tonic::Code;
use tonic_types::StatusExt;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn deleted_key_with_ciphertexts(server: &TestServer) -> (pb::Key, Vec<Vec<u8>>) {
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut keys = server.keys();
    let first = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    keys.rotate_key(pb::RotateKeyRequest {
        key: key.crn.clone(),
        material: None,
    })
    .await
    .unwrap();
    let second = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let deleted = keys
        .delete_key(pb::DeleteKeyRequest {
            key: key.crn.clone(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(deleted.state, pb::KeyState::Destroyed as i32);
    assert!(deleted.deleted);
    let deletion = deleted.deletion_time.unwrap().seconds;
    assert_eq!(
        deleted.purge_allowed_time.unwrap().seconds,
        deletion + 4 * 3600
    );
    assert_eq!(
        deleted.restore_expire_time.unwrap().seconds,
        deletion + 30 * 24 * 3600
    );
    assert_eq!(
        deleted.purge_scheduled_time.unwrap().seconds,
        deletion + 90 * 24 * 3600
    );
    assert!(!deleted.purge_allowed);
    assert!(deleted.restore_allowed);
    (deleted, vec![first, second])
}

#[tokio::test]
async fn purge_is_refused_for_four_hours_then_shreds_every_version() {
    let server = TestServer::start().await;
    let (key, ciphertexts) = deleted_key_with_ciphertexts(&server).await;
    let mut keys = server.keys();
    assert_error(
        keys.delete_key(pb::DeleteKeyRequest {
            key: key.crn.clone(),
            force: false,
        })
        .await,
        Code::FailedPrecondition,
        "KEY_DELETED_ERR",
    );
    let status = assert_error(
        keys.purge_key(pb::PurgeKeyRequest {
            key: key.crn.clone(),
        })
        .await,
        Code::FailedPrecondition,
        "REQ_TOO_EARLY_ERR",
    );
    assert_eq!(
        status.get_error_details().retry_info().unwrap().retry_delay,
        Some(4 * HOUR)
    );
    server.advance(4 * HOUR - Duration::from_secs(1));
    assert_error(
        keys.purge_key(pb::PurgeKeyRequest {
            key: key.crn.clone(),
        })
        .await,
        Code::FailedPrecondition,
        "REQ_TOO_EARLY_ERR",
    );
    server.advance(Duration::from_secs(1));
    let listed = keys
        .get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert!(listed.purge_allowed);
    keys.purge_key(pb::PurgeKeyRequest {
        key: key.crn.clone(),
    })
    .await
    .unwrap();

    // Gone: metadata, unwrap with either version, and a second purge.
    assert_error(
        keys.get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
    for ciphertext in ciphertexts {
        assert_error(
            keys.unwrap_key(pb::UnwrapKeyRequest {
                key: key.crn.clone(),
                ciphertext,
                aad: vec![],
            })
            .await,
            Code::NotFound,
            "KEY_NOT_FOUND_ERR",
        );
    }
    assert_error(
        keys.purge_key(pb::PurgeKeyRequest {
            key: key.crn.clone(),
        })
        .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
}

#[tokio::test]
async fn restore_waits_thirty_seconds_and_closes_after_thirty_days() {
    let server = TestServer::start().await;
    let (key, ciphertexts) = deleted_key_with_ciphertexts(&server).await;
    let mut keys = server.keys();
    assert_error(
        keys.restore_key(pb::RestoreKeyRequest {
            key: key.crn.clone(),
        })
        .await,
        Code::FailedPrecondition,
        "REQ_TOO_EARLY_ERR",
    );
    server.advance(Duration::from_secs(30));
    let restored = keys
        .restore_key(pb::RestoreKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(restored.state, pb::KeyState::Active as i32);
    assert!(restored.deletion_time.is_none());
    // Both versions work again.
    for ciphertext in &ciphertexts {
        keys.unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: ciphertext.clone(),
            aad: vec![],
        })
        .await
        .unwrap();
    }

    keys.delete_key(pb::DeleteKeyRequest {
        key: key.crn.clone(),
        force: false,
    })
    .await
    .unwrap();
    server.advance(30 * DAY - Duration::from_secs(1));
    let still = keys
        .get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert!(still.restore_allowed);
    server.advance(Duration::from_secs(1));
    assert_error(
        keys.restore_key(pb::RestoreKeyRequest {
            key: key.crn.clone(),
        })
        .await,
        Code::FailedPrecondition,
        "KEY_RESTORE_EXPIRED",
    );
    let closed = keys
        .get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert!(!closed.restore_allowed);
    assert!(closed.purge_allowed);
}

#[tokio::test]
async fn deleted_keys_are_purged_automatically_after_ninety_days() {
    let server = TestServer::start().await;
    let (key, ciphertexts) = deleted_key_with_ciphertexts(&server).await;
    let mut keys = server.keys();
    server.advance(90 * DAY - Duration::from_secs(1));
    keys.get_key(pb::GetKeyRequest {
        key: key.crn.clone(),
    })
    .await
    .unwrap();
    server.advance(Duration::from_secs(1));
    assert_error(
        keys.get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
    let listed = keys
        .list_keys(pb::ListKeysRequest {
            instance: key.instance_id.clone(),
            states: vec![pb::KeyState::Destroyed as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.keys.is_empty());
    for ciphertext in ciphertexts {
        assert_error(
            keys.unwrap_key(pb::UnwrapKeyRequest {
                key: key.crn.clone(),
                ciphertext,
                aad: vec![],
            })
            .await,
            Code::NotFound,
            "KEY_NOT_FOUND_ERR",
        );
    }
    // The scheduler removed it from the index too, not just from view.
    assert_eq!(server.kms.next_deadline(), None);
}
