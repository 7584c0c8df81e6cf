//! Simulated time end to end, as issue 5's acceptance walks it: one `AdvanceClock` per step
//! fires every timer that falls due before it returns. Past a rotation interval the key has a
//! new version and the registered resource got the lifecycle event; past the 9-day retention
//! a soft-deleted registration disappears and a plain delete succeeds; past 4 hours purge is
//! allowed; past 30 days restore is refused; past 90 days the key is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_client::KeyRef;
use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error, key_path};
use tonic::Code;

use crate::registrations::{PG_1, authorize, register, service_key};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn key(server: &TestServer, path: &str) -> Result<pb::Key, tonic::Status> {
    server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: path.to_owned(),
        })
        .await
        .map(|r| r.into_inner().key.unwrap())
}

async fn delete(server: &TestServer, path: &str) -> Result<pb::Key, tonic::Status> {
    server
        .keys()
        .delete_key(pb::DeleteKeyRequest {
            key: path.to_owned(),
            force: false,
        })
        .await
        .map(|r| r.into_inner().key.unwrap())
}

#[tokio::test]
async fn one_advance_per_step_walks_a_key_from_rotation_to_purge() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    let path = key_path(&instance, &root.id);
    let client = server.client();
    let key_ref = KeyRef::parse(&path).unwrap();
    client.set_rotation_policy(&key_ref, true, 1).await.unwrap();

    // A database deployment registers against the key and watches its events.
    authorize(&server, &instance).await;
    let service_api_key = service_key(&server, PG_1).await;
    let service_token = server.token(&service_api_key).await;
    register(&server, &service_token, &path, PG_1, false)
        .await
        .unwrap();
    let mut events = server
        .events_as(Some(&service_token))
        .watch_lifecycle_events(pb::WatchLifecycleEventsRequest {
            resource_crn: PG_1.to_owned(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();

    // Past the rotation interval (one 30-day month): a new version, and the event.
    server.advance_rpc(30 * DAY + HOUR).await;
    let rotated = key(&server, &path).await.unwrap();
    assert_eq!(rotated.version_count, 2, "rotated by its policy");
    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("the rotation event arrives")
        .unwrap()
        .expect("the stream stays open");
    assert_eq!(event.kind(), pb::LifecycleEventKind::Rotate);
    assert_eq!(event.resource_crn, PG_1);
    assert_eq!(event.key_id, root.id);
    assert_eq!(
        event.new_key_version_id,
        rotated.current_version.as_ref().unwrap().id
    );
    assert_ne!(event.new_key_version_id, event.old_key_version_id);

    // The deployment is deleted with a 9-day soft-deletion period: its registration stays
    // (soft-deleted) and still blocks a plain delete. (Tokens last a day of simulated time.)
    let service_token = server.token(&service_api_key).await;
    server
        .registrations_as(Some(&service_token))
        .delete_registration(pb::DeleteRegistrationRequest {
            key: path.clone(),
            resource_crn: PG_1.to_owned(),
            retain_for: Some(prost_types::Duration::try_from(9 * DAY).unwrap()),
        })
        .await
        .unwrap();
    assert_error(
        delete(&server, &path).await,
        Code::FailedPrecondition,
        "PROTECTED_RESOURCE_ERR",
    );
    server.advance_rpc(9 * DAY + Duration::from_secs(1)).await;
    let listed = server
        .registrations()
        .list_registrations(pb::ListRegistrationsRequest {
            key: path.clone(),
            resource_crn: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .registrations;
    assert!(listed.is_empty(), "gone after 9 days: {listed:?}");
    let deleted = delete(&server, &path).await.unwrap();
    assert_eq!(deleted.state(), pb::KeyState::Destroyed);
    // A second key deleted at the same moment shows purge; the first one goes on.
    let other = server.root_key(&instance).await;
    let other_path = key_path(&instance, &other.id);
    delete(&server, &other_path).await.unwrap();

    // Purge is refused for 4 hours, then allowed.
    let purge = |path: String| {
        let keys = server.keys();
        async move {
            let mut keys = keys;
            keys.purge_key(pb::PurgeKeyRequest { key: path }).await
        }
    };
    server.advance_rpc(4 * HOUR - Duration::from_secs(1)).await;
    assert_error(
        purge(other_path.clone()).await,
        Code::FailedPrecondition,
        "REQ_TOO_EARLY_ERR",
    );
    server.advance_rpc(Duration::from_secs(2)).await;
    purge(other_path.clone()).await.unwrap();
    assert_error(
        key(&server, &other_path).await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );

    // Past 30 days: restore refused.
    server.advance_rpc(30 * DAY).await;
    assert_error(
        server
            .keys()
            .restore_key(pb::RestoreKeyRequest { key: path.clone() })
            .await,
        Code::FailedPrecondition,
        "KEY_RESTORE_EXPIRED",
    );
    assert_eq!(
        key(&server, &path).await.unwrap().state(),
        pb::KeyState::Destroyed
    );

    // Past 90 days: purged by the service, the key no longer exists.
    server.advance_rpc(60 * DAY).await;
    assert_error(
        key(&server, &path).await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
}
