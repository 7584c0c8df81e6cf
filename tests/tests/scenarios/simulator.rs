//! `SimulatorService` end to end: the simulated clock moves only through `AdvanceClock` and
//! `SetTime`, fires every timer before the call returns (purge allowed after 4 h, restore
//! closed after 30 days, automatic purge after 90 days), validates its input, is refused on
//! the system clock, survives a restart without going back in time; and `Reset` wipes all
//! state while leaving a working server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::config::random_credentials;
use kmsim_tests::{TestServer, assert_error, violated_fields};
use tonic::Code;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const START: i64 = 1_767_225_600_000;

fn ts(millis: i64) -> prost_types::Timestamp {
    Timestamp::from_millis(millis).to_proto()
}

fn duration(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

async fn delete(server: &TestServer, key: &pb::Key) {
    server
        .keys()
        .delete_key(pb::DeleteKeyRequest {
            key: key.crn.clone(),
            force: false,
        })
        .await
        .unwrap();
}

async fn get(server: &TestServer, key: &pb::Key) -> Result<pb::Key, tonic::Status> {
    server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .map(|r| r.into_inner().key.unwrap())
}

#[tokio::test]
async fn advancing_opens_purge_then_closes_restore_then_purges_the_key() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    delete(&server, &key).await;
    assert!(!get(&server, &key).await.unwrap().purge_allowed);

    let moved = server.advance_rpc(4 * HOUR).await;
    assert_eq!(
        moved.time.unwrap(),
        ts(START + 4 * 3600 * 1000),
        "the new time is returned"
    );
    let after_4h = get(&server, &key).await.unwrap();
    assert!(after_4h.purge_allowed);
    assert!(after_4h.restore_allowed);

    server.advance_rpc(30 * DAY).await;
    assert_error(
        server
            .keys()
            .restore_key(pb::RestoreKeyRequest {
                key: key.crn.clone(),
            })
            .await,
        Code::FailedPrecondition,
        "KEY_RESTORE_EXPIRED",
    );

    // Past 90 days: the purge timer fired within the call, so the record is gone from
    // the domain itself (not only hidden by the lazy state rules).
    let moved = server.advance_rpc(60 * DAY).await;
    assert_eq!(moved.timers_fired, 1);
    assert!(server.kms.next_deadline().is_none());
    assert_error(
        get(&server, &key).await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
    let listed = server
        .keys()
        .list_keys(pb::ListKeysRequest {
            instance: instance.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.keys.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn advancing_a_hundred_days_purges_many_keys_in_one_call() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let mut created = Vec::new();
    for _ in 0..40 {
        let key = server.root_key(&instance).await;
        delete(&server, &key).await;
        created.push(key);
    }
    let moved = server.advance_rpc(100 * DAY).await;
    assert_eq!(moved.timers_fired, 40);
    assert_eq!(moved.time.unwrap(), ts(START + 100 * 24 * 3600 * 1000));
    for key in &created {
        assert_error(get(&server, key).await, Code::NotFound, "KEY_NOT_FOUND_ERR");
    }
}

#[tokio::test]
async fn get_time_and_set_time_move_only_forward() {
    let server = TestServer::start().await;
    let mut simulator = server.simulator();
    let time = simulator
        .get_time(pb::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(time.time.unwrap(), ts(START));
    assert_eq!(time.clock, pb::ClockKind::Simulated as i32);

    let later = START + 5 * 24 * 3600 * 1000 + 123;
    let set = simulator
        .set_time(pb::SetTimeRequest {
            time: Some(ts(later)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.time.unwrap(), ts(later));
    // Setting the current time again is allowed; earlier is not.
    simulator
        .set_time(pb::SetTimeRequest {
            time: Some(ts(later)),
        })
        .await
        .unwrap();
    assert_error(
        simulator
            .set_time(pb::SetTimeRequest {
                time: Some(ts(later - 1)),
            })
            .await,
        Code::FailedPrecondition,
        "CLOCK_BACKWARDS_ERR",
    );
    let status = assert_error(
        simulator.set_time(pb::SetTimeRequest { time: None }).await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), ["time"]);
    let now = simulator
        .get_time(pb::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.time.unwrap(), ts(later));
    // The key's clock is the simulator's: a key created now carries that time.
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    assert_eq!(key.create_time.unwrap(), ts(later));
}

#[tokio::test]
async fn advance_clock_requires_a_positive_well_formed_duration() {
    let server = TestServer::start().await;
    let mut simulator = server.simulator();
    for bad in [
        None,
        duration(0, 0),
        duration(-60, 0),
        duration(0, -5),
        duration(1, -5),
        duration(1, 1_000_000_000),
        duration(i64::MAX, 0),
    ] {
        let status = assert_error(
            simulator
                .advance_clock(pb::AdvanceClockRequest { duration: bad })
                .await,
            Code::InvalidArgument,
            "BAD_BODY_ERR",
        );
        assert_eq!(violated_fields(&status), ["duration"], "{bad:?}");
    }
    let now = simulator
        .get_time(pb::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.time.unwrap(), ts(START), "refused moves change nothing");
    let moved = simulator
        .advance_clock(pb::AdvanceClockRequest {
            duration: duration(0, 1_000_000),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.time.unwrap(), ts(START + 1));
}

#[tokio::test]
async fn the_system_clock_cannot_be_moved() {
    let server = TestServer::start_with_system_clock().await;
    let mut simulator = server.simulator();
    let time = simulator
        .get_time(pb::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(time.clock, pb::ClockKind::System as i32);
    let real = Timestamp::from_system_time(std::time::SystemTime::now()).as_millis();
    let reported = Timestamp::from_proto(&time.time.unwrap())
        .unwrap()
        .as_millis();
    assert!((real - reported).abs() < 60_000, "{real} vs {reported}");
    assert_error(
        simulator
            .advance_clock(pb::AdvanceClockRequest {
                duration: duration(3600, 0),
            })
            .await,
        Code::FailedPrecondition,
        "CLOCK_NOT_SIMULATED_ERR",
    );
    assert_error(
        simulator
            .set_time(pb::SetTimeRequest {
                time: Some(ts(real + 86_400_000)),
            })
            .await,
        Code::FailedPrecondition,
        "CLOCK_NOT_SIMULATED_ERR",
    );
}

#[tokio::test]
async fn a_restart_never_moves_the_simulated_clock_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = random_credentials();
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(START)));
    let server = TestServer::start_with(
        kmsim_tests::persistent_config(dir.path(), [0x51; 32], &credentials, clock.clone()),
        clock,
    )
    .await;
    server.advance_rpc(10 * DAY).await;
    server.stop().await;

    // Restarted with the original start time: the stored, later time wins.
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(START)));
    let server = TestServer::start_with(
        kmsim_tests::persistent_config(dir.path(), [0x51; 32], &credentials, clock.clone()),
        clock,
    )
    .await;
    let now = server
        .simulator()
        .get_time(pb::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner();
    let after_ten_days = START + 10 * 24 * 3600 * 1000;
    assert_eq!(now.time.unwrap(), ts(after_ten_days));
    server.stop().await;

    // Restarted with a later start time: that one wins.
    let later = after_ten_days + 3_600_000;
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(later)));
    let server = TestServer::start_with(
        kmsim_tests::persistent_config(dir.path(), [0x51; 32], &credentials, clock.clone()),
        clock,
    )
    .await;
    let now = server
        .simulator()
        .get_time(pb::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.time.unwrap(), ts(later));
    server.stop().await;
}

#[tokio::test]
async fn reset_wipes_everything_and_leaves_a_working_server() {
    let server = TestServer::start().await;
    let mut keys = server.keys();
    let mut old_keys = Vec::new();
    for _ in 0..2 {
        let instance = server.instance().await;
        let key = server.root_key(&instance).await;
        keys.create_key_alias(pb::CreateKeyAliasRequest {
            key: key.crn.clone(),
            alias: "kept-nowhere".into(),
        })
        .await
        .unwrap();
        keys.create_import_token(pb::CreateImportTokenRequest {
            instance: instance.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let deleted = server.root_key(&instance).await;
        delete(&server, &deleted).await;
        old_keys.push(key);
    }
    server.advance_rpc(HOUR).await;

    let reset = server
        .simulator()
        .reset(pb::ResetRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reset.instances_removed, reset.keys_removed), (2, 4));
    let listed = server
        .instances()
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.instances.is_empty());
    assert_eq!(listed.total_size, 0);
    for key in &old_keys {
        assert_error(get(&server, key).await, Code::NotFound, "KEY_NOT_FOUND_ERR");
    }
    assert!(server.kms.next_deadline().is_none(), "timers are dropped");
    let status = server
        .hsm()
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.initialized_tokens, 0,
        "every slot is wiped (IAM's token-signing key is not in one)"
    );
    assert_eq!(status.state, pb::HsmState::Operational as i32);
    // The clock keeps its time.
    let now = server
        .simulator()
        .get_time(pb::GetTimeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.time.unwrap(), ts(START + 3_600_000));

    // New instances, aliases and keys work, with the same alias as before.
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    keys.create_key_alias(pb::CreateKeyAliasRequest {
        key: key.crn.clone(),
        alias: "kept-nowhere".into(),
    })
    .await
    .unwrap();
    let wrapped = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
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
    let status = server
        .hsm()
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    // The new instance's keystore.
    assert_eq!(status.initialized_tokens, 1);
}
