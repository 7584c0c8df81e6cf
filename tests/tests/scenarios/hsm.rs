//! `HsmService` end to end: the HSM's status; a failed self-test puts it in its error state
//! (every key operation `UNAVAILABLE` / `HSM_SELF_TEST_FAILED_ERR`, health NOT_SERVING) until
//! a passing `RunSelfTests`; `Tamper` and `Zeroize` destroy every key's material while its
//! metadata stays readable and listable, also after a restart, and new instances still work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::config::random_credentials;
use kmsim_tests::{TestServer, assert_error, violated_fields};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn wrap(server: &TestServer, key: &pb::Key) -> Result<pb::WrapKeyResponse, tonic::Status> {
    server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn unwrap(
    server: &TestServer,
    key: &pb::Key,
    ciphertext: &[u8],
) -> Result<Vec<u8>, tonic::Status> {
    server
        .keys()
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.crn.clone(),
            ciphertext: ciphertext.to_vec(),
            aad: vec![],
        })
        .await
        .map(|r| r.into_inner().plaintext)
}

async fn status(server: &TestServer) -> pb::GetStatusResponse {
    server
        .hsm()
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Waits (up to 10 s) until health reports `expected` for `service`.
async fn await_health(server: &TestServer, service: &str, expected: ServingStatus) {
    let mut health = HealthClient::new(server.channel());
    let mut last = None;
    for _ in 0..200 {
        last = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .ok()
            .map(|r| r.into_inner().status);
        if last == Some(expected as i32) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health of {service:?} stayed {last:?}, expected {expected:?}");
}

#[tokio::test]
async fn status_reports_state_self_tests_master_key_and_slots() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let report = status(&server).await;
    assert_eq!(report.state, pb::HsmState::Operational as i32);
    assert_eq!(report.self_tests.len(), 15);
    assert!(report.self_tests.iter().all(|t| t.passed));
    assert!(report.self_tests.iter().any(|t| t.name == "AES-GCM-ENC"));
    assert!(report.last_failure.is_none());
    let current = report.current_master_key.unwrap();
    assert_eq!(current.state, pb::MasterKeyRegisterState::Valid as i32);
    assert_eq!(current.verification_pattern.len(), 16);
    assert_eq!(
        report.new_master_key.unwrap().state,
        pb::MasterKeyRegisterState::Empty as i32
    );
    // The instance's keystore only: IAM's token-signing key lives outside the HSM's slots.
    assert_eq!(report.initialized_tokens, 1);
    assert!(!report.slots.iter().any(|s| s.label == "kmsim-iam"));
    let label = instance.replace('-', "");
    assert!(
        report
            .slots
            .iter()
            .any(|s| s.initialized && s.label == label),
        "{:?}",
        report.slots
    );
    assert!(report.slots.iter().any(|s| !s.initialized), "an empty slot");
    assert!(report.imprint_mode);
    assert_eq!(report.tamper_events, 0);
}

#[tokio::test]
async fn a_failed_self_test_stops_key_operations_and_health_until_self_tests_pass() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let wrapped = wrap(&server, &key).await.unwrap();
    await_health(&server, "kmsim.v1.KeyService", ServingStatus::Serving).await;

    let status = assert_error(
        server
            .hsm()
            .run_self_tests(pb::RunSelfTestsRequest {
                fail_test: "no-such-test".into(),
            })
            .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), ["fail_test"]);

    let failed = server
        .hsm()
        .run_self_tests(pb::RunSelfTestsRequest {
            fail_test: "aes-gcm-enc".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.state, pb::HsmState::Error as i32);
    assert!(
        failed
            .self_tests
            .iter()
            .any(|t| t.name == "AES-GCM-ENC" && !t.passed),
        "{:?}",
        failed.self_tests
    );
    let report = self::status(&server).await;
    assert_eq!(report.state, pb::HsmState::Error as i32);
    assert_eq!(report.last_failure.unwrap().test, "AES-GCM-ENC");

    assert_error(
        wrap(&server, &key).await,
        Code::Unavailable,
        "HSM_SELF_TEST_FAILED_ERR",
    );
    assert_error(
        unwrap(&server, &key, &wrapped.ciphertext).await,
        Code::Unavailable,
        "HSM_SELF_TEST_FAILED_ERR",
    );
    assert_error(
        server
            .keys()
            .create_key(pb::CreateKeyRequest {
                instance: instance.clone(),
                name: "refused".into(),
                r#type: pb::KeyType::Root as i32,
                ..Default::default()
            })
            .await,
        Code::Unavailable,
        "HSM_SELF_TEST_FAILED_ERR",
    );
    await_health(&server, "", ServingStatus::NotServing).await;
    await_health(&server, "kmsim.v1.KeyService", ServingStatus::NotServing).await;

    let recovered = server
        .hsm()
        .run_self_tests(pb::RunSelfTestsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recovered.state, pb::HsmState::Operational as i32);
    assert!(recovered.self_tests.iter().all(|t| t.passed));
    assert_eq!(
        unwrap(&server, &key, &wrapped.ciphertext).await.unwrap(),
        wrapped.plaintext
    );
    wrap(&server, &key).await.unwrap();
    await_health(&server, "", ServingStatus::Serving).await;
    await_health(&server, "kmsim.v1.KeyService", ServingStatus::Serving).await;
}

/// Checks that `key` (with `ciphertext` wrapped before the wipe) is unusable but listed.
async fn assert_shredded(server: &TestServer, instance: &str, key: &pb::Key, ciphertext: &[u8]) {
    assert_error(
        unwrap(server, key, ciphertext).await,
        Code::FailedPrecondition,
        "KEY_MATERIAL_DESTROYED_ERR",
    );
    assert_error(
        wrap(server, key).await,
        Code::FailedPrecondition,
        "KEY_MATERIAL_DESTROYED_ERR",
    );
    assert_error(
        server
            .keys()
            .rotate_key(pb::RotateKeyRequest {
                key: key.crn.clone(),
                material: None,
            })
            .await,
        Code::FailedPrecondition,
        "KEY_MATERIAL_DESTROYED_ERR",
    );
    let got = server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(got.id, key.id);
    assert_eq!(got.name, key.name);
    let listed = server
        .keys()
        .list_keys(pb::ListKeysRequest {
            instance: instance.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.keys.iter().any(|k| k.id == key.id), "{listed:?}");
}

/// Checks that a new instance's keys work end to end.
async fn assert_new_keys_work(server: &TestServer) {
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let wrapped = wrap(server, &key).await.unwrap();
    assert_eq!(
        unwrap(server, &key, &wrapped.ciphertext).await.unwrap(),
        wrapped.plaintext
    );
}

#[tokio::test]
async fn tamper_destroys_every_keys_material_and_keeps_metadata() {
    let server = TestServer::start().await;
    let mut subjects = Vec::new();
    for _ in 0..2 {
        let instance = server.instance().await;
        let key = server.root_key(&instance).await;
        let ciphertext = wrap(&server, &key).await.unwrap().ciphertext;
        subjects.push((instance, key, ciphertext));
    }
    let tampered = server
        .hsm()
        .tamper(pb::TamperRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tampered.keystores_destroyed, 2);
    for (instance, key, ciphertext) in &subjects {
        assert_shredded(&server, instance, key, ciphertext).await;
    }
    assert_error(
        server
            .keys()
            .create_key(pb::CreateKeyRequest {
                instance: subjects[0].0.clone(),
                name: "no keystore".into(),
                r#type: pb::KeyType::Root as i32,
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "KEY_MATERIAL_DESTROYED_ERR",
    );
    let report = status(&server).await;
    assert_eq!(report.tamper_events, 1);
    assert_eq!(report.last_failure.unwrap().test, "TAMPER");
    // Every slot is wiped (IAM's token-signing key is not in one).
    assert_eq!(report.initialized_tokens, 0);
    assert_eq!(report.state, pb::HsmState::Operational as i32);
    assert_new_keys_work(&server).await;
    // A shredded instance can still be deleted.
    server
        .instances()
        .delete_instance(pb::DeleteInstanceRequest {
            instance: subjects[1].0.clone(),
            force: true,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn zeroized_keystores_stay_destroyed_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = random_credentials();
    let start = || {
        let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
            1_767_225_600_000,
        )));
        TestServer::start_with(
            kmsim_tests::persistent_config(dir.path(), [0x61; 32], &credentials, clock.clone()),
            clock,
        )
    };
    let server = start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let ciphertext = wrap(&server, &key).await.unwrap().ciphertext;
    let zeroized = server
        .hsm()
        .zeroize(pb::ZeroizeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(zeroized.keystores_destroyed, 1);
    assert_eq!(status(&server).await.tamper_events, 0);
    assert_shredded(&server, &instance, &key, &ciphertext).await;
    // An instance created after the wipe, used across the restart.
    let fresh = server.instance().await;
    let fresh_key = server.root_key(&fresh).await;
    let fresh_wrapped = wrap(&server, &fresh_key).await.unwrap();
    server.stop().await;

    let server = start().await;
    assert_shredded(&server, &instance, &key, &ciphertext).await;
    assert_eq!(
        unwrap(&server, &fresh_key, &fresh_wrapped.ciphertext)
            .await
            .unwrap(),
        fresh_wrapped.plaintext
    );
    assert_new_keys_work(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_zeroize_in_the_error_state_is_recovered_by_passing_self_tests() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let ciphertext = wrap(&server, &key).await.unwrap().ciphertext;
    let failed = server
        .hsm()
        .run_self_tests(pb::RunSelfTestsRequest {
            fail_test: "DRBG".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.state, pb::HsmState::Error as i32);
    let zeroized = server
        .hsm()
        .zeroize(pb::ZeroizeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(zeroized.keystores_destroyed, 1);
    let report = status(&server).await;
    assert_eq!(report.state, pb::HsmState::Error as i32);
    assert_eq!(
        report.current_master_key.unwrap().state,
        pb::MasterKeyRegisterState::Empty as i32,
        "the wipe took the master key"
    );

    let recovered = server
        .hsm()
        .run_self_tests(pb::RunSelfTestsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recovered.state, pb::HsmState::Operational as i32);
    assert_eq!(
        status(&server).await.current_master_key.unwrap().state,
        pb::MasterKeyRegisterState::Valid as i32
    );
    assert_shredded(&server, &instance, &key, &ciphertext).await;
    assert_new_keys_work(&server).await;
}
