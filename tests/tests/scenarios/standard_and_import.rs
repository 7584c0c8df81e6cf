//! Standard keys (payload readable), plaintext import of root and standard keys, rotation of
//! imported keys, and import tokens: expiry and retrieval budget.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error, violated_fields};
use tonic::Code;

fn create(instance: &str, kind: pb::KeyType, material: Option<Vec<u8>>) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        instance: instance.to_owned(),
        name: "imported".into(),
        r#type: kind as i32,
        material: material.map(pb::create_key_request::Material::Payload),
        ..Default::default()
    }
}

#[tokio::test]
async fn standard_keys_return_their_payload() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let mut keys = server.keys();
    let generated = keys
        .create_key(create(&instance, pb::KeyType::Standard, None))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(generated.payload.len(), 32);
    assert!(generated.extractable);
    assert!(!generated.imported);
    let fetched = keys
        .get_key(pb::GetKeyRequest {
            key: generated.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(fetched.payload, generated.payload);

    let imported = keys
        .create_key(create(&instance, pb::KeyType::Standard, Some(vec![3; 16])))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(imported.payload, vec![3; 16]);
    assert!(imported.imported);
    assert_eq!(imported.key_size_bits, 128);

    // A deleted standard key hides its payload.
    keys.delete_key(pb::DeleteKeyRequest {
        key: imported.crn.clone(),
        force: false,
    })
    .await
    .unwrap();
    let deleted = keys
        .get_key(pb::GetKeyRequest { key: imported.crn })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert!(deleted.payload.is_empty());
}

#[tokio::test]
async fn imported_root_keys_of_every_size_wrap_and_need_material_to_rotate() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let mut keys = server.keys();
    for size in [16usize, 24, 32] {
        let key = keys
            .create_key(create(
                &instance,
                pb::KeyType::Root,
                Some(vec![size as u8; size]),
            ))
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        assert!(key.imported);
        assert!(!key.extractable);
        assert!(
            key.payload.is_empty(),
            "root key material is never returned"
        );
        assert_eq!(key.key_size_bits, (size * 8) as i32);
        let wrapped = keys
            .wrap_key(pb::WrapKeyRequest {
                key: key.crn.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error(
            keys.rotate_key(pb::RotateKeyRequest {
                key: key.crn.clone(),
                material: None,
            })
            .await,
            Code::InvalidArgument,
            "KEY_PAYLOAD_REQ_ERR",
        );
        let status = assert_error(
            keys.rotate_key(pb::RotateKeyRequest {
                key: key.crn.clone(),
                material: Some(pb::rotate_key_request::Material::Payload(vec![
                    1;
                    if size == 32 {
                        16
                    } else {
                        32
                    }
                ])),
            })
            .await,
            Code::InvalidArgument,
            "BAD_BODY_ERR",
        );
        assert_eq!(violated_fields(&status), vec!["payload"]);
        keys.rotate_key(pb::RotateKeyRequest {
            key: key.crn.clone(),
            material: Some(pb::rotate_key_request::Material::Payload(vec![0xEE; size])),
        })
        .await
        .unwrap();
        let unwrapped = keys
            .unwrap_key(pb::UnwrapKeyRequest {
                key: key.crn.clone(),
                ciphertext: wrapped.ciphertext,
                aad: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unwrapped.plaintext, wrapped.plaintext);
        assert!(!unwrapped.rewrapped_ciphertext.is_empty());
    }
    for bad in [vec![1; 15], vec![1; 33], vec![]] {
        let result = keys
            .create_key(create(&instance, pb::KeyType::Root, Some(bad.clone())))
            .await;
        let status = assert_error(result, Code::InvalidArgument, "BAD_BODY_ERR");
        assert_eq!(
            violated_fields(&status),
            vec!["payload"],
            "{} bytes",
            bad.len()
        );
    }
}

#[tokio::test]
async fn import_token_expires_and_counts_retrievals() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let mut keys = server.keys();
    assert_error(
        keys.get_import_token(pb::GetImportTokenRequest {
            instance: instance.clone(),
        })
        .await,
        Code::NotFound,
        "IMPORT_TOKEN_NOT_FOUND_ERR",
    );
    for (expiration_seconds, max_allowed_retrievals, field) in [
        (299, 1, "expiration_seconds"),
        (86_401, 1, "expiration_seconds"),
        (600, 501, "max_allowed_retrievals"),
    ] {
        let status = assert_error(
            keys.create_import_token(pb::CreateImportTokenRequest {
                instance: instance.clone(),
                expiration_seconds,
                max_allowed_retrievals,
            })
            .await,
            Code::InvalidArgument,
            "BAD_BODY_ERR",
        );
        assert_eq!(violated_fields(&status), vec![field]);
    }
    let created = keys
        .create_import_token(pb::CreateImportTokenRequest {
            instance: instance.clone(),
            expiration_seconds: 0,
            max_allowed_retrievals: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert!(
        created.public_key.is_empty() && created.nonce.is_empty(),
        "creation reveals nothing"
    );
    assert_eq!(
        created.expiration_time.unwrap().seconds - created.create_time.unwrap().seconds,
        600,
        "default lifetime"
    );
    for remaining in [1, 0] {
        let token = keys
            .get_import_token(pb::GetImportTokenRequest {
                instance: instance.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap();
        assert_eq!(token.public_key.len(), 65);
        assert_eq!(token.public_key[0], 0x04);
        assert_eq!(token.nonce.len(), 16);
        assert_eq!(token.remaining_retrievals, remaining);
    }
    assert_error(
        keys.get_import_token(pb::GetImportTokenRequest {
            instance: instance.clone(),
        })
        .await,
        Code::FailedPrecondition,
        "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR",
    );
    keys.create_import_token(pb::CreateImportTokenRequest {
        instance: instance.clone(),
        expiration_seconds: 300,
        max_allowed_retrievals: 5,
    })
    .await
    .unwrap();
    server.advance(Duration::from_secs(300));
    assert_error(
        keys.get_import_token(pb::GetImportTokenRequest { instance })
            .await,
        Code::FailedPrecondition,
        "IMPORT_TOKEN_EXPIRED_ERR",
    );
}

async fn retrieved_token(
    server: &TestServer,
    instance: &str,
    expiration_seconds: i32,
) -> pb::ImportToken {
    let mut keys = server.keys();
    keys.create_import_token(pb::CreateImportTokenRequest {
        instance: instance.to_owned(),
        expiration_seconds,
        max_allowed_retrievals: 5,
    })
    .await
    .unwrap();
    keys.get_import_token(pb::GetImportTokenRequest {
        instance: instance.to_owned(),
    })
    .await
    .unwrap()
    .into_inner()
    .token
    .unwrap()
}

fn secure(instance: &str, import: pb::SecureImport) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        instance: instance.to_owned(),
        name: "securely imported".into(),
        r#type: pb::KeyType::Root as i32,
        material: Some(pb::create_key_request::Material::SecureImport(import)),
        ..Default::default()
    }
}

/// AES-GCM of `nonce` under `material` with `iv`, as the secure-import scheme prescribes.
fn encrypt_nonce(material: &[u8], iv: &[u8], nonce: &[u8]) -> Vec<u8> {
    use aes_gcm::aead::{Aead, KeyInit};
    let iv: [u8; 12] = iv.try_into().unwrap();
    aes_gcm::Aes256Gcm::new_from_slice(material)
        .unwrap()
        .encrypt(&iv.into(), nonce)
        .unwrap()
}

#[tokio::test]
async fn secure_import_creates_and_rotates_a_root_key() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let mut keys = server.keys();
    let token = retrieved_token(&server, &instance, 600).await;
    let material = [0x61u8; 32];
    let sealed = kmsim_client::secure_import::seal_for_token(&token, &material).unwrap();
    let key = keys
        .create_key(secure(&instance, sealed))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert!(key.imported);
    assert_eq!(key.key_size_bits, 256);
    let wrapped = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // An imported key rotates only with new material: here through the token again.
    let sealed = kmsim_client::secure_import::seal_for_token(&token, &[0x62u8; 32]).unwrap();
    let rotated = keys
        .rotate_key(pb::RotateKeyRequest {
            key: key.crn.clone(),
            material: Some(pb::rotate_key_request::Material::SecureImport(sealed)),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(rotated.version_count, 2);
    let unwrapped = keys
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: wrapped.ciphertext,
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unwrapped.plaintext, wrapped.plaintext);
    assert_eq!(unwrapped.rewrapped_key_version, rotated.current_version);

    // 128-bit material works too.
    let sealed = kmsim_client::secure_import::seal_for_token(&token, &[0x63u8; 16]).unwrap();
    let small = keys
        .create_key(secure(&instance, sealed))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(small.key_size_bits, 128);

    // Standard keys cannot be securely imported.
    let sealed = kmsim_client::secure_import::seal_for_token(&token, &material).unwrap();
    let mut request = secure(&instance, sealed);
    request.r#type = pb::KeyType::Standard as i32;
    assert_error(
        keys.create_key(request).await,
        Code::FailedPrecondition,
        "KEY_ROOT_REQ_ERR",
    );
}

#[tokio::test]
async fn secure_import_refuses_wrong_nonce_iv_material_token_and_expiry() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let other_instance = server.instance().await;
    let mut keys = server.keys();
    let token = retrieved_token(&server, &instance, 300).await;
    let material = [0x17u8; 32];
    let count = || {
        let mut keys = server.keys();
        let instance = instance.clone();
        async move {
            keys.list_keys(pb::ListKeysRequest {
                instance,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .total_size
        }
    };

    // The nonce proof decrypts, but to another nonce.
    let mut sealed = kmsim_client::secure_import::seal_for_token(&token, &material).unwrap();
    sealed.encrypted_nonce = encrypt_nonce(&material, &sealed.iv, &[0u8; 16]);
    assert_error(
        keys.create_key(secure(&instance, sealed)).await,
        Code::InvalidArgument,
        "INCORRECT_NONCE_ERR",
    );

    // The nonce was not encrypted with this IV.
    let mut sealed = kmsim_client::secure_import::seal_for_token(&token, &material).unwrap();
    sealed.iv[0] ^= 1;
    assert_error(
        keys.create_key(secure(&instance, sealed)).await,
        Code::InvalidArgument,
        "INCORRECT_NONCE_IV_ERR",
    );

    // The material was not encrypted for this token.
    let mut sealed = kmsim_client::secure_import::seal_for_token(&token, &material).unwrap();
    sealed.encrypted_material[3] ^= 0x80;
    let status = assert_error(
        keys.create_key(secure(&instance, sealed)).await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(
        violated_fields(&status),
        vec!["secure_import.encrypted_material"]
    );

    // A malformed ephemeral key and IV.
    let mut sealed = kmsim_client::secure_import::seal_for_token(&token, &material).unwrap();
    sealed.ephemeral_public_key = vec![4; 65];
    let status = assert_error(
        keys.create_key(secure(&instance, sealed)).await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(
        violated_fields(&status),
        vec!["secure_import.ephemeral_public_key"]
    );
    let mut sealed = kmsim_client::secure_import::seal_for_token(&token, &material).unwrap();
    sealed.iv.pop();
    let status = assert_error(
        keys.create_key(secure(&instance, sealed)).await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), vec!["secure_import.iv"]);

    // Sealed for this instance's token, presented to another instance.
    let sealed = kmsim_client::secure_import::seal_for_token(&token, &material).unwrap();
    assert_error(
        keys.create_key(secure(&other_instance, sealed)).await,
        Code::NotFound,
        "IMPORT_TOKEN_NOT_FOUND_ERR",
    );

    // Nothing was created by any refusal.
    assert_eq!(count().await, 0);

    // The token expires.
    let sealed = kmsim_client::secure_import::seal_for_token(&token, &material).unwrap();
    server.advance(Duration::from_secs(300));
    assert_error(
        keys.create_key(secure(&instance, sealed)).await,
        Code::FailedPrecondition,
        "IMPORT_TOKEN_EXPIRED_ERR",
    );
    assert_eq!(count().await, 0);
}
