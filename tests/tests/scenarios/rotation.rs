//! Rotation and versions: old ciphertexts keep unwrapping and come back rewrapped, rewrap
//! never exposes the data key, and at most one rotation per hour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error};
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn old_ciphertexts_unwrap_and_come_back_rewrapped() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut keys = server.keys();
    let v1 = key.current_version.clone().unwrap();
    let aad = vec!["tenant-7".to_owned()];
    let wrapped = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: vec![],
            aad: aad.clone(),
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
    let v2 = rotated.current_version.clone().unwrap();
    assert_ne!(v1.id, v2.id);
    assert_eq!(rotated.version_count, 2);
    assert!(rotated.last_rotate_time.is_some());

    let unwrapped = keys
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: wrapped.ciphertext.clone(),
            aad: aad.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unwrapped.plaintext, wrapped.plaintext);
    assert_eq!(unwrapped.key_version.unwrap().id, v1.id);
    assert_eq!(unwrapped.rewrapped_key_version.unwrap().id, v2.id);
    assert!(!unwrapped.rewrapped_ciphertext.is_empty());

    // The rewrapped ciphertext is under v2 and unwraps with no further rewrap.
    let again = keys
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: unwrapped.rewrapped_ciphertext,
            aad: aad.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.plaintext, wrapped.plaintext);
    assert_eq!(again.key_version.unwrap().id, v2.id);
    assert!(again.rewrapped_ciphertext.is_empty());

    // New wraps use v2.
    let fresh = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: vec![],
            aad: aad.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.key_version.unwrap().id, v2.id);
}

#[tokio::test]
async fn rewrap_moves_a_ciphertext_forward_without_the_plaintext() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut keys = server.keys();
    let wrapped = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: vec![],
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    keys.rotate_key(pb::RotateKeyRequest {
        key: key.crn.clone(),
        material: None,
    })
    .await
    .unwrap();
    let rewrapped = keys
        .rewrap_key(pb::RewrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: wrapped.ciphertext.clone(),
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rewrapped.key_version.unwrap().id,
        key.current_version.unwrap().id
    );
    let current = rewrapped.rewrapped_key_version.unwrap();
    assert_ne!(rewrapped.ciphertext, wrapped.ciphertext);
    assert!(
        !rewrapped
            .ciphertext
            .windows(32)
            .any(|w| w == wrapped.plaintext.as_slice())
    );
    let unwrapped = keys
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: rewrapped.ciphertext,
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unwrapped.plaintext, wrapped.plaintext);
    assert_eq!(unwrapped.key_version.unwrap().id, current.id);
}

#[tokio::test]
async fn one_rotation_per_hour() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut keys = server.keys();
    keys.rotate_key(pb::RotateKeyRequest {
        key: key.crn.clone(),
        material: None,
    })
    .await
    .unwrap();
    server.advance(Duration::from_secs(59 * 60));
    let status = assert_error(
        keys.rotate_key(pb::RotateKeyRequest {
            key: key.crn.clone(),
            material: None,
        })
        .await,
        Code::FailedPrecondition,
        "KEY_ROTATION_NOT_PERMITTED",
    );
    let retry = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap();
    assert_eq!(retry, Duration::from_secs(60));
    server.advance(Duration::from_secs(60));
    let third = keys
        .rotate_key(pb::RotateKeyRequest {
            key: key.crn.clone(),
            material: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(third.version_count, 3);

    let versions = keys
        .list_key_versions(pb::ListKeyVersionsRequest {
            key: key.crn.clone(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(versions.total_size, 3);
    assert_eq!(versions.versions.len(), 2);
    assert_eq!(
        versions.versions[0].id,
        third.current_version.unwrap().id,
        "newest first"
    );
    let rest = keys
        .list_key_versions(pb::ListKeyVersionsRequest {
            key: key.crn.clone(),
            page_size: 2,
            page_token: versions.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.versions.len(), 1);
    assert_eq!(
        rest.versions[0].id,
        key.current_version.unwrap().id,
        "the original version comes last"
    );
    assert!(rest.next_page_token.is_empty());
}

#[tokio::test]
async fn generated_keys_refuse_material_on_rotation() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let status = assert_error(
        server
            .keys()
            .rotate_key(pb::RotateKeyRequest {
                key: key.crn,
                material: Some(pb::rotate_key_request::Material::Payload(vec![7; 32])),
            })
            .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(kmsim_tests::violated_fields(&status), vec!["payload"]);
}
