//! The HSM master-key ceremony over gRPC (`HsmService.AddAdministrator` ...
//! `RotateMasterKey`) with kmsim-client's `ceremony` module signing commands: imprint mode,
//! thresholds, unsigned / under-signed / badly signed / replayed commands refused, key parts,
//! commit, rotation (paused, to observe that key creation and rotation are refused while
//! everything else works), every key usable afterwards, the new key re-activated after a
//! zeroization and, under `--dev`, written to the development secrets file for restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use kmsim_client::ceremony::{Administrator, Ceremony};
use kmsim_client::proto as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::config::random_credentials;
use kmsim_tests::{TestServer, assert_error, persistent_config};
use sim_hsm::{AdminCommand, DevMasterKey};
use tonic::Code;

const PART_1: [u8; 32] = [0x11; 32];
const PART_2: [u8; 32] = [0x2e; 32];

fn combined() -> DevMasterKey {
    let mut key = [0u8; 32];
    for (k, (a, b)) in key.iter_mut().zip(PART_1.iter().zip(PART_2.iter())) {
        *k = a ^ b;
    }
    DevMasterKey::from_bytes(key)
}

fn status_of(error: kmsim_client::ClientError) -> tonic::Status {
    error.status().cloned().expect("an RPC error")
}

async fn wrap(server: &TestServer, key: &pb::Key) -> Result<Vec<u8>, tonic::Status> {
    server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: b"0123456789abcdef0123456789abcdef".to_vec(),
            aad: vec![],
        })
        .await
        .map(|r| r.into_inner().ciphertext)
}

async fn unwrap(server: &TestServer, key: &pb::Key, ciphertext: &[u8]) -> Vec<u8> {
    server
        .keys()
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: ciphertext.to_vec(),
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext
}

async fn create_key(server: &TestServer, instance: &str) -> Result<pb::Key, tonic::Status> {
    server
        .keys()
        .create_key(pb::CreateKeyRequest {
            instance: instance.to_owned(),
            name: "during".into(),
            r#type: pb::KeyType::Root as i32,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().key.unwrap())
}

async fn rotate(server: &TestServer, key: &pb::Key) -> Result<(), tonic::Status> {
    server
        .keys()
        .rotate_key(pb::RotateKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn current_vp(server: &TestServer) -> String {
    server
        .hsm()
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .current_master_key
        .unwrap()
        .verification_pattern
}

/// Installs alice and bob with thresholds 2/2 and loads and commits the two parts.
async fn prepare(ceremony: &Ceremony, alice: &Administrator, bob: &Administrator) {
    ceremony.add_administrator(alice, &[]).await.unwrap();
    ceremony.add_administrator(bob, &[]).await.unwrap();
    ceremony.set_thresholds(2, 2, &[]).await.unwrap();
    ceremony
        .load_master_key_part(&PART_1, &[alice, bob])
        .await
        .unwrap();
    ceremony
        .load_master_key_part(&PART_2, &[alice, bob])
        .await
        .unwrap();
    ceremony.commit_master_key(&[alice, bob]).await.unwrap();
}

#[tokio::test]
async fn full_ceremony_with_a_paused_rotation_keeps_every_key_usable() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let before = wrap(&server, &key).await.unwrap();
    let old_vp = current_vp(&server).await;

    let client = server.client();
    let ceremony = Ceremony::new(&client);
    let alice = Administrator::generate("alice");
    let bob = Administrator::generate("bob");

    // Imprint mode: no key part before thresholds are set.
    assert_error(
        ceremony
            .load_master_key_part(&PART_1, &[])
            .await
            .map_err(status_of),
        Code::FailedPrecondition,
        "HSM_IMPRINT_MODE_ERR",
    );
    ceremony.add_administrator(&alice, &[]).await.unwrap();
    ceremony.add_administrator(&bob, &[]).await.unwrap();
    assert_error(
        ceremony
            .add_administrator(&bob, &[])
            .await
            .map_err(status_of),
        Code::InvalidArgument,
        "HSM_CEREMONY_ARGUMENT_ERR",
    );
    assert_error(
        ceremony.set_thresholds(3, 1, &[]).await.map_err(status_of),
        Code::InvalidArgument,
        "HSM_CEREMONY_ARGUMENT_ERR",
    );
    ceremony.set_thresholds(2, 2, &[]).await.unwrap();
    let status = server
        .hsm()
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.imprint_mode);
    assert_eq!(status.administrators, vec!["alice", "bob"]);
    assert_eq!(
        (status.signature_threshold, status.revocation_threshold),
        (2, 2)
    );

    // Unsigned, under-signed, badly signed and replayed commands are refused.
    for signers in [vec![], vec![&alice]] {
        assert_error(
            ceremony
                .load_master_key_part(&PART_1, &signers)
                .await
                .map_err(status_of),
            Code::PermissionDenied,
            "HSM_ADMIN_SIGNATURES_INSUFFICIENT_ERR",
        );
    }
    let impostor = Administrator::generate("bob");
    assert_error(
        ceremony
            .load_master_key_part(&PART_1, &[&alice, &impostor])
            .await
            .map_err(status_of),
        Code::PermissionDenied,
        "HSM_ADMIN_SIGNATURES_INSUFFICIENT_ERR",
    );
    let stale = ceremony.context().await.unwrap();
    let register = ceremony
        .load_master_key_part(&PART_1, &[&alice, &bob])
        .await
        .unwrap();
    assert_eq!(
        register.state,
        pb::MasterKeyRegisterState::PartiallyLoaded as i32
    );
    let command = AdminCommand::load_master_key_part(&PART_2);
    let replayed = server
        .hsm()
        .load_master_key_part(pb::LoadMasterKeyPartRequest {
            part: PART_2.to_vec(),
            signatures: vec![alice.sign(&stale, &command), bob.sign(&stale, &command)],
        })
        .await;
    assert_error(
        replayed,
        Code::PermissionDenied,
        "HSM_ADMIN_SIGNATURES_INSUFFICIENT_ERR",
    );
    let short = server
        .hsm()
        .load_master_key_part(pb::LoadMasterKeyPartRequest {
            part: vec![1; 31],
            signatures: vec![],
        })
        .await;
    assert_error(short, Code::InvalidArgument, "BAD_BODY_ERR");
    let register = ceremony
        .load_master_key_part(&PART_2, &[&alice, &bob])
        .await
        .unwrap();
    assert_eq!(
        register.state,
        pb::MasterKeyRegisterState::FullUncommitted as i32
    );
    let register = ceremony.commit_master_key(&[&alice, &bob]).await.unwrap();
    assert_eq!(
        register.state,
        pb::MasterKeyRegisterState::FullCommitted as i32
    );
    assert_eq!(
        register.verification_pattern,
        hex(combined().verification_pattern())
    );
    // The current register holds the running key: activation is for an empty one.
    assert_error(
        ceremony
            .activate_master_key(&[&alice, &bob])
            .await
            .map_err(status_of),
        Code::FailedPrecondition,
        "MASTER_KEY_REGISTER_STATE_ERR",
    );

    // Rotation, paused in progress.
    let rotating = ceremony
        .rotate_master_key(&[&alice, &bob], true)
        .await
        .unwrap();
    assert!(rotating.rotation_in_progress);
    assert_eq!(current_vp(&server).await, old_vp);
    assert_error(
        create_key(&server, &instance).await,
        Code::FailedPrecondition,
        "MASTER_KEY_ROTATION_IN_PROGRESS_ERR",
    );
    assert_error(
        rotate(&server, &key).await,
        Code::FailedPrecondition,
        "MASTER_KEY_ROTATION_IN_PROGRESS_ERR",
    );
    // Everything else works.
    server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap();
    let listed = server
        .keys()
        .list_keys(pb::ListKeysRequest {
            instance: instance.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    let during = wrap(&server, &key).await.unwrap();
    assert_eq!(
        unwrap(&server, &key, &before).await,
        unwrap(&server, &key, &during).await
    );

    let current = ceremony.finish_master_key_rotation().await.unwrap();
    assert_eq!(current.state, pb::MasterKeyRegisterState::Valid as i32);
    let new_vp = hex(combined().verification_pattern());
    assert_eq!(current.verification_pattern, new_vp);
    assert_eq!(
        server.kms.master_key().verification_pattern(),
        combined().verification_pattern()
    );
    assert_error(
        ceremony
            .finish_master_key_rotation()
            .await
            .map_err(status_of),
        Code::FailedPrecondition,
        "MASTER_KEY_REGISTER_STATE_ERR",
    );

    // Every key usable: old ciphertexts unwrap, new wraps, creation and rotation work.
    assert_eq!(
        unwrap(&server, &key, &before).await,
        b"0123456789abcdef0123456789abcdef"
    );
    unwrap(&server, &key, &during).await;
    rotate(&server, &key).await.unwrap();
    let after = wrap(&server, &key).await.unwrap();
    unwrap(&server, &key, &after).await;
    unwrap(&server, &key, &before).await;
    let fresh = create_key(&server, &instance).await.unwrap();
    wrap(&server, &fresh).await.unwrap();

    // A zeroization re-activates the new master key (not the start-up one).
    server.hsm().zeroize(pb::ZeroizeRequest {}).await.unwrap();
    assert_eq!(current_vp(&server).await, new_vp);
    server.instance().await;
}

fn hex(bytes: [u8; 8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn under_dev_a_rotated_master_key_is_written_to_the_secrets_file_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = random_credentials();
    let start_key = [7u8; 32];
    let secrets = dir.path().join(kmsim_server::config::DEV_SECRETS_FILE);
    let json = format!(
        "{{\"master_key\":\"{}\",\"so_pin\":\"{}\",\"user_pin\":\"{}\"}}",
        "07".repeat(32),
        String::from_utf8(credentials.so_pin.to_vec()).unwrap(),
        String::from_utf8(credentials.user_pin.to_vec()).unwrap(),
    );
    std::fs::write(&secrets, json).unwrap();
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));
    let server = TestServer::start_with(
        persistent_config(dir.path(), start_key, &credentials, clock.clone()),
        clock.clone(),
    )
    .await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let ciphertext = wrap(&server, &key).await.unwrap();
    let client = server.client();
    let ceremony = Ceremony::new(&client);
    let alice = Administrator::generate("alice");
    let bob = Administrator::generate("bob");
    prepare(&ceremony, &alice, &bob).await;
    let rotated = ceremony
        .rotate_master_key(&[&alice, &bob], false)
        .await
        .unwrap();
    assert!(!rotated.rotation_in_progress);
    server.stop().await;

    let written: serde_json_value::Secrets =
        serde_json_value::parse(&std::fs::read_to_string(&secrets).unwrap());
    assert_eq!(written.master_key, hex_key(&combined()));
    assert_eq!(
        written.so_pin.as_bytes(),
        credentials.so_pin.as_slice(),
        "the PINs are kept"
    );
    let server = TestServer::start_with(
        persistent_config(
            dir.path(),
            *combined().to_bytes(),
            &credentials,
            clock.clone(),
        ),
        clock,
    )
    .await;
    assert_eq!(
        unwrap(&server, &key, &ciphertext).await,
        b"0123456789abcdef0123456789abcdef"
    );
    server.stop().await;
}

fn hex_key(key: &DevMasterKey) -> String {
    key.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal reader of the development secrets file (the tests crate has no JSON library).
mod serde_json_value {
    pub struct Secrets {
        pub master_key: String,
        pub so_pin: String,
    }

    fn field(text: &str, name: &str) -> String {
        let start = text.find(&format!("\"{name}\"")).unwrap();
        let rest = &text[start + name.len() + 2..];
        let open = rest.find('"').unwrap();
        let rest = &rest[open + 1..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    pub fn parse(text: &str) -> Secrets {
        Secrets {
            master_key: field(text, "master_key"),
            so_pin: field(text, "so_pin"),
        }
    }
}
