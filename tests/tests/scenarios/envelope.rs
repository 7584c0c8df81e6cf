//! Envelope encryption with root keys: wrap, unwrap, rewrap, and every way a ciphertext can be
//! refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error, key_path, violated_fields};
use tonic::Code;

#[tokio::test]
async fn wrap_without_plaintext_generates_a_32_byte_data_key_that_unwraps() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut keys = server.keys();
    let aad = vec!["deployment:pg-1".to_owned(), "disk".to_owned()];
    let wrapped = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: vec![],
            aad: aad.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wrapped.plaintext.len(), 32);
    assert_eq!(
        wrapped.key_version.as_ref().unwrap().id,
        key.current_version.as_ref().unwrap().id
    );
    assert_eq!(&wrapped.ciphertext[..4], b"KMW1");

    // By CRN and by path, the same key.
    for name in [key.crn.clone(), key_path(&instance, &key.id)] {
        let unwrapped = keys
            .unwrap_key(pb::UnwrapKeyRequest {
                key: name,
                ciphertext: wrapped.ciphertext.clone(),
                aad: aad.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unwrapped.plaintext, wrapped.plaintext);
        assert!(unwrapped.rewrapped_ciphertext.is_empty());
        assert!(unwrapped.rewrapped_key_version.is_none());
    }
}

#[tokio::test]
async fn supplied_plaintext_is_not_echoed_and_round_trips() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut keys = server.keys();
    let dek = vec![0x5a; 48];
    let wrapped = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: dek.clone(),
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        wrapped.plaintext.is_empty(),
        "a supplied data key is never sent back"
    );
    let unwrapped = keys
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: wrapped.ciphertext,
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unwrapped.plaintext, dek);
}

#[tokio::test]
async fn aad_mismatch_flipped_byte_and_foreign_ciphertext_are_unprocessable() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let other = server.root_key(&instance).await;
    let mut keys = server.keys();
    let aad = vec!["a".to_owned()];
    let wrapped = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: vec![],
            aad: aad.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    let unwrap = |key: String, ciphertext: Vec<u8>, aad: Vec<String>| {
        let mut keys = server.keys();
        async move {
            keys.unwrap_key(pb::UnwrapKeyRequest {
                key,
                ciphertext,
                aad,
            })
            .await
        }
    };
    // Different AAD, missing AAD, split AAD.
    for wrong in [
        vec!["b".to_owned()],
        vec![],
        vec!["a".to_owned(), String::new()],
    ] {
        assert_error(
            unwrap(key.crn.clone(), wrapped.ciphertext.clone(), wrong).await,
            Code::InvalidArgument,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
        );
    }
    // Every single flipped byte, header included.
    for index in 0..wrapped.ciphertext.len() {
        let mut tampered = wrapped.ciphertext.clone();
        tampered[index] ^= 0x01;
        assert_error(
            unwrap(key.crn.clone(), tampered, aad.clone()).await,
            Code::InvalidArgument,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
        );
    }
    // Truncated.
    let truncated = wrapped.ciphertext[..wrapped.ciphertext.len() - 1].to_vec();
    assert_error(
        unwrap(key.crn.clone(), truncated, aad.clone()).await,
        Code::InvalidArgument,
        "UNPROCESSABLE_CIPHERTEXT_ERR",
    );
    // Another key of the same instance.
    assert_error(
        unwrap(other.crn.clone(), wrapped.ciphertext.clone(), aad.clone()).await,
        Code::InvalidArgument,
        "UNPROCESSABLE_CIPHERTEXT_ERR",
    );
    // Rewrap refuses the same way.
    assert_error(
        keys.rewrap_key(pb::RewrapKeyRequest {
            key: other.crn.clone(),
            ciphertext: wrapped.ciphertext.clone(),
            aad,
        })
        .await,
        Code::InvalidArgument,
        "UNPROCESSABLE_CIPHERTEXT_ERR",
    );
}

#[tokio::test]
async fn malformed_requests_name_the_field() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut keys = server.keys();

    let status = assert_error(
        keys.wrap_key(pb::WrapKeyRequest {
            key: "not-a-key".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), vec!["key"]);

    let status = assert_error(
        keys.wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: vec![1; 4097],
            aad: vec![],
        })
        .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), vec!["plaintext"]);

    let status = assert_error(
        keys.wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: vec![],
            aad: vec!["x".repeat(256)],
        })
        .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), vec!["aad"]);

    let status = assert_error(
        keys.unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: vec![],
            aad: vec![],
        })
        .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), vec!["ciphertext"]);

    // A well-formed reference to a key that does not exist.
    let missing = key_path(&instance, "00000000-0000-4000-8000-000000000000");
    assert_error(
        keys.wrap_key(pb::WrapKeyRequest {
            key: missing,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
    // The right key id under a CRN of the wrong service or region names nothing.
    let wrong_service = key.crn.replace(":kms:", ":hs-crypto:");
    assert_error(
        keys.wrap_key(pb::WrapKeyRequest {
            key: wrong_service,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
    let wrong_region = key.crn.replace(":us-south:", ":eu-de:");
    assert_error(
        keys.wrap_key(pb::WrapKeyRequest {
            key: wrong_region,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
}

#[tokio::test]
async fn standard_keys_cannot_wrap() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let mut keys = server.keys();
    let standard = keys
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "secret".into(),
            r#type: pb::KeyType::Standard as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_error(
        keys.wrap_key(pb::WrapKeyRequest {
            key: standard.crn.clone(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "KEY_ROOT_REQ_ERR",
    );
    assert_error(
        keys.rotate_key(pb::RotateKeyRequest {
            key: standard.crn,
            material: None,
        })
        .await,
        Code::FailedPrecondition,
        "KEY_ROOT_REQ_ERR",
    );
}

#[tokio::test]
async fn hpcs_instances_mint_hs_crypto_crns() {
    let server = TestServer::start().await;
    let instance = server.instance_of(pb::InstanceFlavor::Hpcs).await;
    let key = server.root_key(&instance).await;
    assert!(
        key.crn
            .starts_with("crn:v1:bluemix:public:hs-crypto:us-south:a/kmsim:"),
        "{}",
        key.crn
    );
    assert!(key.crn.ends_with(&format!(":{instance}:key:{}", key.id)));
    let wrapped = server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wrapped.plaintext.len(), 32);
}
