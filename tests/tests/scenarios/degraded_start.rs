//! Start-up with an HSM whose power-on self-tests fail (forced by `HsmConfig::fail_self_test`,
//! as `SIM_HSM_FAIL_CAST` does): the server starts anyway with health NOT_SERVING for every
//! service, key operations fail with `UNAVAILABLE` / `HSM_SELF_TEST_FAILED_ERR`, metadata reads
//! work, and a passing `HsmService.RunSelfTests` activates the master key and opens the
//! keystores: health SERVING, and keys made before the restart work again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::config::random_credentials;
use kmsim_tests::{TestServer, assert_error, persistent_config};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICES: [&str; 5] = [
    "",
    "kmsim.v1.KeyService",
    "kmsim.v1.InstanceService",
    "kmsim.v1.HsmService",
    "kmsim.v1.SimulatorService",
];

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

async fn wrap(server: &TestServer, key: &str) -> Result<Vec<u8>, tonic::Status> {
    server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key.to_owned(),
            plaintext: b"0123456789abcdef".to_vec(),
            aad: vec![],
        })
        .await
        .map(|r| r.into_inner().ciphertext)
}

async fn unwrap(
    server: &TestServer,
    key: &str,
    ciphertext: &[u8],
) -> Result<Vec<u8>, tonic::Status> {
    server
        .keys()
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.to_owned(),
            ciphertext: ciphertext.to_vec(),
            aad: vec![],
        })
        .await
        .map(|r| r.into_inner().plaintext)
}

#[tokio::test]
async fn a_self_test_failure_at_start_up_serves_not_serving_until_run_self_tests_passes() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = random_credentials();
    let master = [3u8; 32];
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));
    let server = TestServer::start_with(
        persistent_config(dir.path(), master, &credentials, clock.clone()),
        clock.clone(),
    )
    .await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let ciphertext = wrap(&server, &key.crn).await.unwrap();
    server.stop().await;

    let mut config = persistent_config(dir.path(), master, &credentials, clock.clone());
    config.hsm.fail_self_test = Some(sim_hsm::selftest::AES_GCM_ENC.to_owned());
    let server = TestServer::start_with(config, clock.clone()).await;
    for service in SERVICES {
        await_health(&server, service, ServingStatus::NotServing).await;
    }
    let status = server
        .hsm()
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::HsmState::Error as i32);
    assert_eq!(status.last_failure.unwrap().test, "AES-GCM-ENC");
    // Key operations name the HSM's error state.
    let failed = assert_error(
        wrap(&server, &key.crn).await,
        Code::Unavailable,
        "HSM_SELF_TEST_FAILED_ERR",
    );
    assert!(failed.message().contains("self-test"), "{failed:?}");
    assert_error(
        unwrap(&server, &key.crn, &ciphertext).await,
        Code::Unavailable,
        "HSM_SELF_TEST_FAILED_ERR",
    );
    assert_error(
        server
            .keys()
            .create_key(pb::CreateKeyRequest {
                instance: instance.clone(),
                name: "new".into(),
                r#type: pb::KeyType::Root as i32,
                ..Default::default()
            })
            .await,
        Code::Unavailable,
        "HSM_SELF_TEST_FAILED_ERR",
    );
    // Metadata reads work.
    let read = server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(read.id, key.id);
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

    // A passing run recovers everything.
    let run = server
        .hsm()
        .run_self_tests(pb::RunSelfTestsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.state, pb::HsmState::Operational as i32);
    for service in SERVICES {
        await_health(&server, service, ServingStatus::Serving).await;
    }
    assert_eq!(
        unwrap(&server, &key.crn, &ciphertext).await.unwrap(),
        b"0123456789abcdef"
    );
    let again = wrap(&server, &key.crn).await.unwrap();
    unwrap(&server, &key.crn, &again).await.unwrap();
    let other = server.root_key(&instance).await;
    wrap(&server, &other.crn).await.unwrap();
    server.stop().await;
}

/// Power-on self-tests failing on a fresh data directory: creating an instance names the
/// HSM's error state (`UNAVAILABLE` / `HSM_SELF_TEST_FAILED_ERR`), not an internal slot error,
/// and works once a `RunSelfTests` passes.
#[tokio::test]
async fn creating_an_instance_while_power_on_self_tests_failed_names_the_self_test_failure() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = random_credentials();
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));
    let mut config = persistent_config(dir.path(), [4u8; 32], &credentials, clock.clone());
    config.hsm.fail_self_test = Some(sim_hsm::selftest::AES_GCM_ENC.to_owned());
    let server = TestServer::start_with(config, clock.clone()).await;
    let mut instances = server.instances();
    let request = pb::CreateInstanceRequest {
        name: "while failed".into(),
        ..Default::default()
    };
    assert_error(
        instances.create_instance(request.clone()).await,
        Code::Unavailable,
        "HSM_SELF_TEST_FAILED_ERR",
    );
    server
        .hsm()
        .run_self_tests(pb::RunSelfTestsRequest::default())
        .await
        .unwrap();
    instances.create_instance(request).await.unwrap();
    server.stop().await;
}

/// The health of every service, checked once, with no waiting.
async fn health_now(server: &TestServer) -> Vec<i32> {
    let mut health = HealthClient::new(server.channel());
    let mut statuses = Vec::new();
    for service in SERVICES {
        statuses.push(
            health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .unwrap()
                .into_inner()
                .status,
        );
    }
    statuses
}

/// Health changes in the same call as the HSM: as soon as a failing `RunSelfTests` returns,
/// every service is NOT_SERVING; as soon as a passing one (or a `Tamper`, `Zeroize` or
/// `Reset`, which leave the HSM operational) returns, every service is SERVING.
#[tokio::test]
async fn health_changes_in_the_same_call_as_the_hsm() {
    let server = TestServer::start().await;
    let serving = vec![ServingStatus::Serving as i32; SERVICES.len()];
    let not_serving = vec![ServingStatus::NotServing as i32; SERVICES.len()];
    assert_eq!(health_now(&server).await, serving);
    for _ in 0..3 {
        server
            .hsm()
            .run_self_tests(pb::RunSelfTestsRequest {
                fail_test: "AES-GCM-ENC".into(),
            })
            .await
            .unwrap();
        assert_eq!(health_now(&server).await, not_serving);
        server
            .hsm()
            .run_self_tests(pb::RunSelfTestsRequest::default())
            .await
            .unwrap();
        assert_eq!(health_now(&server).await, serving);
    }
    server
        .hsm()
        .run_self_tests(pb::RunSelfTestsRequest {
            fail_test: "AES-GCM-ENC".into(),
        })
        .await
        .unwrap();
    assert_eq!(health_now(&server).await, not_serving);
    // A reset re-runs the self-tests (its injected failure cleared): SERVING at once.
    server.simulator().reset(pb::ResetRequest {}).await.unwrap();
    assert_eq!(health_now(&server).await, serving);
    server.hsm().tamper(pb::TamperRequest {}).await.unwrap();
    assert_eq!(health_now(&server).await, serving);
    server.hsm().zeroize(pb::ZeroizeRequest {}).await.unwrap();
    assert_eq!(health_now(&server).await, serving);
}
