//! Lifecycle events end to end: rotating a key registered by two resources reaches both
//! adopters' streams; acknowledgements are recorded (a conflicting state fails the event with
//! 409, no acknowledgement within 4 hours with 408); disable, enable, delete and restore emit
//! too; a stream resumes after a sequence number across a server restart; `SyncKey` re-sends
//! the last event at most once an hour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::config::random_credentials;
use kmsim_tests::{TestServer, assert_error};
use tonic::Code;
use tonic_types::StatusExt;

use crate::registrations::{PG_1, PG_2, authorize, register, service, service_key, user};

type Events = tonic::Streaming<pb::LifecycleEvent>;

const HOUR: Duration = Duration::from_secs(3600);

async fn watch(server: &TestServer, token: &str, resource: &str, after: u64) -> Events {
    server
        .events_as(Some(token))
        .watch_lifecycle_events(pb::WatchLifecycleEventsRequest {
            resource_crn: resource.to_owned(),
            after_sequence: after,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next(stream: &mut Events) -> pb::LifecycleEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event arrives")
        .unwrap()
        .expect("the stream stays open")
}

async fn nothing_more(stream: &mut Events) {
    if let Ok(message) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("unexpected message: {message:?}");
    }
}

async fn ack(
    server: &TestServer,
    token: &str,
    event: &pb::LifecycleEvent,
    state: pb::KeyState,
    version: &str,
) -> Result<pb::LifecycleEvent, tonic::Status> {
    server
        .events_as(Some(token))
        .ack_lifecycle_event(pb::AckLifecycleEventRequest {
            event_id: event.event_id.clone(),
            adopter_key_state: state as i32,
            key_version_id: version.to_owned(),
        })
        .await
        .map(|r| r.into_inner().event.unwrap())
}

async fn rotate(server: &TestServer, key: &str) -> pb::Key {
    server
        .keys()
        .rotate_key(pb::RotateKeyRequest {
            key: key.to_owned(),
            material: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
}

async fn sync(server: &TestServer, key: &str) -> Result<Vec<pb::LifecycleEvent>, tonic::Status> {
    server
        .keys()
        .sync_key(pb::SyncKeyRequest {
            key: key.to_owned(),
        })
        .await
        .map(|r| r.into_inner().events)
}

#[tokio::test]
async fn rotation_reaches_both_registered_resources_and_acks_are_recorded() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let (pg1, pg2) = (service(&server, PG_1).await, service(&server, PG_2).await);
    register(&server, &pg1, &root.crn, PG_1, false)
        .await
        .unwrap();
    register(&server, &pg2, &root.crn, PG_2, false)
        .await
        .unwrap();
    let mut stream1 = watch(&server, &pg1, PG_1, 0).await;
    let mut stream2 = watch(&server, &pg2, PG_2, 0).await;
    let old_version = root.current_version.unwrap().id;

    let rotated = rotate(&server, &root.crn).await;
    let new_version = rotated.current_version.unwrap().id;
    let (event1, event2) = (next(&mut stream1).await, next(&mut stream2).await);
    for (event, resource) in [(&event1, PG_1), (&event2, PG_2)] {
        assert_eq!(event.kind, pb::LifecycleEventKind::Rotate as i32);
        assert_eq!(event.resource_crn, resource);
        assert_eq!(event.key_crn, root.crn);
        assert_eq!(event.key_id, root.id);
        assert_eq!(event.key_state, pb::KeyState::Active as i32);
        assert_eq!(event.new_key_version_id, new_version);
        assert_eq!(event.old_key_version_id, old_version);
        assert_eq!(event.status, pb::LifecycleDeliveryStatus::Pending as i32);
        assert!(!event.sync);
    }
    assert_ne!(event1.sequence, event2.sequence);
    assert_ne!(event1.event_id, event2.event_id);
    nothing_more(&mut stream1).await;

    // Only services acknowledge.
    assert_error(
        ack(
            &server,
            kmsim_tests::DEV_TOKEN,
            &event1,
            pb::KeyState::Active,
            "",
        )
        .await,
        Code::PermissionDenied,
        "SERVICE_ONLY_ERR",
    );
    // Agreeing state and version: acknowledged.
    let acked = ack(&server, &pg1, &event1, pb::KeyState::Active, &new_version)
        .await
        .unwrap();
    assert_eq!(
        acked.status,
        pb::LifecycleDeliveryStatus::Acknowledged as i32
    );
    assert_eq!(acked.adopter_key_state, pb::KeyState::Active as i32);
    assert_eq!(acked.adopter_key_version_id, new_version);
    assert!(acked.ack_time.is_some());
    assert_error(
        ack(&server, &pg1, &event1, pb::KeyState::Active, "").await,
        Code::FailedPrecondition,
        "LIFECYCLE_EVENT_SETTLED_ERR",
    );
    // A conflicting state: failed with 409.
    let conflicting = ack(&server, &pg2, &event2, pb::KeyState::Suspended, "")
        .await
        .unwrap();
    assert_eq!(
        conflicting.status,
        pb::LifecycleDeliveryStatus::Failed as i32
    );
    assert_eq!(conflicting.failure_reason, 409);

    // Disable: both are told; nobody acknowledges; 4 hours later the events have failed 408.
    server
        .keys()
        .disable_key(pb::DisableKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    let disabled1 = next(&mut stream1).await;
    let disabled2 = next(&mut stream2).await;
    assert_eq!(disabled1.kind, pb::LifecycleEventKind::Disable as i32);
    assert_eq!(disabled1.key_state, pb::KeyState::Suspended as i32);
    assert_eq!(disabled2.kind, pb::LifecycleEventKind::Disable as i32);
    assert!(disabled2.sequence > event2.sequence);
    server.advance_rpc(HOUR * 4 - Duration::from_secs(1)).await;
    // Still pending just before the deadline: one acknowledgement comes in time.
    ack(&server, &pg2, &disabled2, pb::KeyState::Suspended, "")
        .await
        .unwrap();
    server.advance_rpc(Duration::from_secs(2)).await;
    let history: Vec<pb::LifecycleEvent> = {
        let mut replay = watch(&server, &pg1, PG_1, 0).await;
        vec![next(&mut replay).await, next(&mut replay).await]
    };
    assert_eq!(history[0].event_id, event1.event_id);
    assert_eq!(
        history[0].status,
        pb::LifecycleDeliveryStatus::Acknowledged as i32
    );
    assert_eq!(history[1].event_id, disabled1.event_id);
    assert_eq!(
        history[1].status,
        pb::LifecycleDeliveryStatus::Failed as i32
    );
    assert_eq!(history[1].failure_reason, 408);
    assert_error(
        ack(&server, &pg1, &disabled1, pb::KeyState::Suspended, "").await,
        Code::FailedPrecondition,
        "LIFECYCLE_EVENT_SETTLED_ERR",
    );
    let late = {
        let mut replay = watch(&server, &pg2, PG_2, disabled2.sequence - 1).await;
        next(&mut replay).await
    };
    assert_eq!(
        late.status,
        pb::LifecycleDeliveryStatus::Acknowledged as i32
    );

    // Both failures are in the audit trail, as Activity Tracker logs them.
    let failures: Vec<pb::AuditEvent> = server
        .events()
        .list_audit_events(pb::ListAuditEventsRequest {
            filter: Some(pb::AuditEventFilter {
                action_prefix: "kms.secrets.ack-".to_owned(),
                outcome: pb::AuditOutcome::Failure as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let summary: Vec<(&str, i32, &str)> = failures
        .iter()
        .map(|e| (e.action.as_str(), e.http_status, e.correlation_id.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("kms.secrets.ack-rotate", 409, conflicting.event_id.as_str()),
            ("kms.secrets.ack-disable", 408, disabled1.event_id.as_str()),
        ],
        "{failures:#?}"
    );
    assert_eq!(failures[1].target_crn, root.crn);

    // Enable, delete (force: the key is registered) and restore emit too, in order.
    server
        .keys()
        .enable_key(pb::EnableKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    server
        .keys()
        .delete_key(pb::DeleteKeyRequest {
            key: root.crn.clone(),
            force: true,
        })
        .await
        .unwrap();
    server.advance_rpc(Duration::from_secs(31)).await;
    server
        .keys()
        .restore_key(pb::RestoreKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    let kinds: Vec<(i32, i32)> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            let event = next(&mut stream1).await;
            out.push((event.kind, event.key_state));
        }
        out
    };
    assert_eq!(
        kinds,
        vec![
            (
                pb::LifecycleEventKind::Enable as i32,
                pb::KeyState::Active as i32
            ),
            (
                pb::LifecycleEventKind::Delete as i32,
                pb::KeyState::Destroyed as i32
            ),
            (
                pb::LifecycleEventKind::Restore as i32,
                pb::KeyState::Active as i32
            ),
        ]
    );
    nothing_more(&mut stream1).await;
}

#[tokio::test]
async fn watchers_see_only_what_they_may_read_and_bad_acks_are_refused() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let pg = service(&server, PG_1).await;
    register(&server, &pg, &root.crn, PG_1, false)
        .await
        .unwrap();
    let reader = user(&server, &instance, &[pb::Role::Reader]).await;
    let stranger = user(&server, &instance, &[]).await;
    let mut reading = watch(&server, &reader, "", 0).await;
    let mut strange = watch(&server, &stranger, "", 0).await;
    rotate(&server, &root.crn).await;
    let seen = next(&mut reading).await;
    assert_eq!(seen.resource_crn, PG_1);
    nothing_more(&mut strange).await;

    assert_error(
        ack(&server, &pg, &seen, pb::KeyState::Unspecified, "").await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    let unknown = pb::LifecycleEvent {
        event_id: "0b1c2d3e-0000-4000-8000-000000000000".into(),
        ..Default::default()
    };
    assert_error(
        ack(&server, &pg, &unknown, pb::KeyState::Active, "").await,
        Code::NotFound,
        "LIFECYCLE_EVENT_NOT_FOUND_ERR",
    );
    // A version other than the event's new version conflicts.
    let old = seen.old_key_version_id.clone();
    let failed = ack(&server, &pg, &seen, pb::KeyState::Active, &old)
        .await
        .unwrap();
    assert_eq!(failed.failure_reason, 409);
}

#[tokio::test]
async fn sync_key_resends_the_last_event_at_most_once_an_hour() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let pg = service(&server, PG_1).await;
    register(&server, &pg, &root.crn, PG_1, false)
        .await
        .unwrap();
    let mut stream = watch(&server, &pg, PG_1, 0).await;

    // Within an hour of the key's creation: too early, with the wait.
    let early = assert_error(
        sync(&server, &root.crn).await,
        Code::FailedPrecondition,
        "REQ_TOO_EARLY_ERR",
    );
    assert!(early.get_error_details().retry_info().is_some());
    server.advance_rpc(HOUR * 2).await;
    let rotated = rotate(&server, &root.crn).await;
    let original = next(&mut stream).await;
    server.advance_rpc(HOUR - Duration::from_secs(1)).await;
    let early = assert_error(
        sync(&server, &root.crn).await,
        Code::FailedPrecondition,
        "REQ_TOO_EARLY_ERR",
    );
    let wait = early
        .get_error_details()
        .retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(wait <= Duration::from_secs(2), "{wait:?}");

    server.advance_rpc(Duration::from_secs(2)).await;
    let sent = sync(&server, &root.crn).await.unwrap();
    assert_eq!(sent.len(), 1);
    let resent = next(&mut stream).await;
    assert_eq!(resent.event_id, sent[0].event_id);
    assert!(resent.sync);
    assert_eq!(resent.kind, pb::LifecycleEventKind::Rotate as i32);
    assert_eq!(
        resent.new_key_version_id,
        rotated.current_version.unwrap().id
    );
    assert!(resent.sequence > original.sequence);
    assert_ne!(resent.event_id, original.event_id);
    // The sync itself is a notification: the next one waits another hour.
    assert_error(
        sync(&server, &root.crn).await,
        Code::FailedPrecondition,
        "REQ_TOO_EARLY_ERR",
    );
    // A Reader may not sync.
    let reader = user(&server, &instance, &[pb::Role::Reader]).await;
    assert_error(
        server
            .keys_as(Some(&reader))
            .sync_key(pb::SyncKeyRequest {
                key: root.crn.clone(),
            })
            .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
}

#[tokio::test]
async fn a_stream_resumes_after_a_sequence_number_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let master = [0x24; 32];
    let credentials = random_credentials();
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));
    let config = || kmsim_tests::persistent_config(dir.path(), master, &credentials, clock.clone());

    let server = TestServer::start_with(config(), clock.clone()).await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let pg_key = service_key(&server, PG_1).await;
    let pg = server.token(&pg_key).await;
    register(&server, &pg, &root.crn, PG_1, false)
        .await
        .unwrap();
    let seen = {
        let mut stream = watch(&server, &pg, PG_1, 0).await;
        rotate(&server, &root.crn).await;
        next(&mut stream).await
    };
    server.stop().await;

    let server = TestServer::start_with(config(), clock.clone()).await;
    // The registration survived: a plain delete is still refused.
    assert_error(
        server
            .keys()
            .delete_key(pb::DeleteKeyRequest {
                key: root.crn.clone(),
                force: false,
            })
            .await,
        Code::FailedPrecondition,
        "PROTECTED_RESOURCE_ERR",
    );
    // From the start: the stored event, unchanged.
    let mut replay = watch(&server, &pg, PG_1, 0).await;
    let again = next(&mut replay).await;
    assert_eq!(again.event_id, seen.event_id);
    assert_eq!(again.sequence, seen.sequence);
    // Resuming after it: only what is new, with a later sequence number.
    let mut resumed = watch(&server, &pg, PG_1, seen.sequence).await;
    nothing_more(&mut resumed).await;
    server
        .keys()
        .disable_key(pb::DisableKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    let fresh = next(&mut resumed).await;
    assert_eq!(fresh.kind, pb::LifecycleEventKind::Disable as i32);
    assert!(fresh.sequence > seen.sequence);
    // The pending event's 4-hour deadline survived the restart too.
    server.advance_rpc(HOUR * 24).await;
    let pg = server.token(&pg_key).await;
    let expired = {
        let mut replay = watch(&server, &pg, PG_1, 0).await;
        next(&mut replay).await
    };
    assert_eq!(expired.event_id, seen.event_id);
    assert_eq!(expired.failure_reason, 408);
    drop((replay, resumed));
    server.stop().await;
}

#[tokio::test]
async fn reset_wipes_registrations_and_lifecycle_events() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let pg = service(&server, PG_1).await;
    register(&server, &pg, &root.crn, PG_1, false)
        .await
        .unwrap();
    rotate(&server, &root.crn).await;
    let before = {
        let mut stream = watch(&server, kmsim_tests::DEV_TOKEN, "", 0).await;
        next(&mut stream).await
    };
    server.simulator().reset(pb::ResetRequest {}).await.unwrap();

    let registrations = server
        .registrations()
        .list_registrations(pb::ListRegistrationsRequest {
            key: String::new(),
            resource_crn: PG_1.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .registrations;
    assert!(registrations.is_empty());
    let mut stream = watch(&server, kmsim_tests::DEV_TOKEN, "", 0).await;
    nothing_more(&mut stream).await;
    assert!(
        server
            .kms
            .lifecycle_event(before.event_id.parse().unwrap())
            .is_none()
    );
}

/// The adopter's acknowledgement of an HPCS key's event is audited as the instance's:
/// `hs-crypto.secrets-event.ack` with the instance id and the key's CRN, so the instance's
/// Manager sees it in the instance's trail (a refused, second acknowledgement too).
#[tokio::test]
async fn an_hpcs_keys_acknowledgement_is_audited_with_its_instance() {
    let server = TestServer::start().await;
    let instance = server.instance_of(pb::InstanceFlavor::Hpcs).await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let pg1 = service(&server, PG_1).await;
    register(&server, &pg1, &root.crn, PG_1, false)
        .await
        .unwrap();
    let mut stream = watch(&server, &pg1, PG_1, 0).await;
    let rotated = rotate(&server, &root.crn).await;
    let version = rotated.current_version.unwrap().id;
    let event = next(&mut stream).await;
    ack(&server, &pg1, &event, pb::KeyState::Active, &version)
        .await
        .unwrap();
    assert_error(
        ack(&server, &pg1, &event, pb::KeyState::Active, &version).await,
        Code::FailedPrecondition,
        "LIFECYCLE_EVENT_SETTLED_ERR",
    );
    server.kms.audit().sync().await.unwrap();
    let trail = server
        .events()
        .list_audit_events(pb::ListAuditEventsRequest {
            filter: Some(pb::AuditEventFilter {
                instance_id: instance.clone(),
                ..Default::default()
            }),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let acks: Vec<_> = trail
        .iter()
        .filter(|e| e.action.ends_with("secrets-event.ack"))
        .collect();
    assert_eq!(acks.len(), 2, "{trail:#?}");
    for ack in &acks {
        assert_eq!(ack.action, "hs-crypto.secrets-event.ack");
        assert_eq!(ack.instance_id, instance);
        assert_eq!(ack.target_crn, root.crn);
        assert_eq!(ack.key_version_id, version);
    }
    assert_eq!(acks[0].outcome, pb::AuditOutcome::Success as i32);
    assert_eq!(acks[1].outcome, pb::AuditOutcome::Failure as i32);
}
