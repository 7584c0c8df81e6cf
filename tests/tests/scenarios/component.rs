//! The database-encryption component (`kmsim_client::component::DeploymentKey`) against the
//! real server: provisioning rules (full key CRN, service authorization, a local key without
//! a CRN), following the key through rotate / disable / enable / delete / restore with
//! acknowledgements that tell the real state, resuming after a server restart mid-stream, no
//! row lost under a 20 % fault rate, and deprovisioning with the 9-day retention.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kmsim_client::component::{
    AccessState, ComponentError, DeploymentKey, MemoryStateStore, StateStore,
};
use kmsim_client::{KeyRef, KmsClient};
use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::config::random_credentials;
use kmsim_tests::TestServer;
use tokio::sync::oneshot;

use crate::registrations::{PG_1, authorize, service_key};

/// The database service's client: its service identity's API key, exchanged for tokens.
async fn service_client(server: &TestServer, api_key: &str) -> KmsClient {
    KmsClient::builder(server.endpoint.clone())
        .api_key(api_key)
        .request_timeout(Duration::from_secs(300))
        .connect()
        .await
        .unwrap()
}

/// Waits (up to 30 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Runs `component.follow` in a task until the returned sender is dropped or fired.
fn follow(component: &Arc<DeploymentKey>) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let component = Arc::clone(component);
    tokio::spawn(async move {
        component
            .follow(async {
                let _ = stopped.await;
            })
            .await;
    });
    stop
}

async fn rotate(server: &TestServer, crn: &str) -> String {
    server
        .keys()
        .rotate_key(pb::RotateKeyRequest {
            key: crn.to_owned(),
            material: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .current_version
        .unwrap()
        .id
}

/// The deployment's registration as the key lists it.
async fn registration(server: &TestServer, crn: &str) -> pb::Registration {
    server
        .client()
        .list_key_registrations(&crn.parse::<KeyRef>().unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.resource_crn == PG_1)
        .unwrap()
}

/// The deployment's lifecycle events, as stored (replayed from the start).
async fn events(server: &TestServer, api_key: &str) -> Vec<pb::LifecycleEvent> {
    let client = service_client(server, api_key).await;
    let mut stream = client.watch_lifecycle_events(PG_1, 0).await.unwrap();
    let mut all = Vec::new();
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(Duration::from_millis(300), stream.message()).await
    {
        all.push(event);
    }
    all
}

#[tokio::test]
async fn provisioning_needs_a_full_key_crn_and_an_authorization() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    let api_key = service_key(&server, PG_1).await;
    let client = service_client(&server, &api_key).await;
    let store = || Arc::new(MemoryStateStore::new()) as Arc<dyn StateStore>;

    // Not yet authorized: a distinct error, and nothing saved.
    let unauthorized = store();
    let error = DeploymentKey::provision(
        client.clone(),
        PG_1,
        Some(&root.crn),
        Arc::clone(&unauthorized),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, ComponentError::ServiceNotAuthorized(_)),
        "{error:?}"
    );
    assert_eq!(unauthorized.load().unwrap(), None);

    authorize(&server, &instance).await;
    for bare in [
        root.id.clone(),
        format!("instances/{instance}/keys/{}", root.id),
    ] {
        let error = DeploymentKey::provision(client.clone(), PG_1, Some(&bare), store())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ComponentError::KeyCrnRequired(k) if *k == bare),
            "{error:?}"
        );
    }
    // The instance CRN is not a key CRN either.
    let instance_crn = root.crn.split_once(":key:").unwrap().0.to_owned() + "::";
    assert!(matches!(
        DeploymentKey::provision(client.clone(), PG_1, Some(&instance_crn), store()).await,
        Err(ComponentError::KeyCrnRequired(_))
    ));

    let saved = store();
    let pg = DeploymentKey::provision(client, PG_1, Some(&root.crn), Arc::clone(&saved))
        .await
        .unwrap();
    assert_eq!(pg.access(), AccessState::Open);
    let version = pg.key_version().unwrap();
    assert_eq!(
        version,
        root.current_version.clone().unwrap().id,
        "wrapped by the current version"
    );
    assert_eq!(
        registration(&server, &root.crn).await.key_version_id,
        version
    );
    assert_eq!(saved.load().unwrap().unwrap(), pg.state());
    let record = pg.encrypt("users/1", b"alice").unwrap();
    assert_eq!(pg.decrypt("users/1", &record).unwrap().as_slice(), b"alice");
    assert!(matches!(
        pg.decrypt("users/2", &record),
        Err(ComponentError::Crypto(_))
    ));
}

#[tokio::test]
async fn without_a_key_crn_each_deployment_gets_its_own_random_key() {
    let server = TestServer::start().await;
    let client = server.client();
    let a = DeploymentKey::provision(
        client.clone(),
        PG_1,
        None,
        Arc::new(MemoryStateStore::new()),
    )
    .await
    .unwrap();
    let store = Arc::new(MemoryStateStore::new());
    let b = DeploymentKey::provision(client.clone(), PG_1, None, store.clone())
        .await
        .unwrap();
    assert_eq!(a.key_version(), None);
    let record = a.encrypt("r", b"x").unwrap();
    assert_eq!(a.decrypt("r", &record).unwrap().as_slice(), b"x");
    assert!(matches!(
        b.decrypt("r", &record),
        Err(ComponentError::Crypto(_))
    ));
    // Nothing was registered anywhere, and such a key cannot be reopened.
    assert!(
        client
            .list_resource_registrations(PG_1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        DeploymentKey::open(client, store).await,
        Err(ComponentError::LocalKeyNotPersisted)
    ));
}

#[tokio::test]
async fn the_component_follows_its_key_through_the_lifecycle() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let api_key = service_key(&server, PG_1).await;
    let client = service_client(&server, &api_key).await;
    let store = Arc::new(MemoryStateStore::new());
    let pg = Arc::new(
        DeploymentKey::provision(client.clone(), PG_1, Some(&root.crn), store.clone())
            .await
            .unwrap(),
    );
    let record = pg.encrypt("users/1", b"alice").unwrap();
    let _stop = follow(&pg);

    // Rotate: rewrapped under the new version, saved, registration moved, acknowledged.
    let v2 = rotate(&server, &root.crn).await;
    until("the rotation is applied", || pg.events_applied() == 1).await;
    assert_eq!(pg.key_version().as_deref(), Some(v2.as_str()));
    assert_eq!(
        store.load().unwrap().unwrap().key_version_id(),
        Some(v2.as_str())
    );
    assert_eq!(registration(&server, &root.crn).await.key_version_id, v2);
    assert_eq!(pg.decrypt("users/1", &record).unwrap().as_slice(), b"alice");

    // Disable: access refused until enabled.
    server
        .keys()
        .disable_key(pb::DisableKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    until("the disable is applied", || pg.events_applied() == 2).await;
    assert_eq!(pg.access(), AccessState::Suspended);
    assert!(matches!(
        pg.decrypt("users/1", &record),
        Err(ComponentError::AccessRefused(AccessState::Suspended))
    ));
    server.advance(Duration::from_secs(30));
    server
        .keys()
        .enable_key(pb::EnableKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    until("the enable is applied", || pg.events_applied() == 3).await;
    assert_eq!(pg.decrypt("users/1", &record).unwrap().as_slice(), b"alice");

    // Delete (forced past the registration): zeroized and locked; restore: open again.
    server
        .keys()
        .delete_key(pb::DeleteKeyRequest {
            key: root.crn.clone(),
            force: true,
        })
        .await
        .unwrap();
    until("the delete is applied", || pg.events_applied() == 4).await;
    assert_eq!(pg.access(), AccessState::Shredded);
    assert!(matches!(
        pg.encrypt("users/2", b"bob"),
        Err(ComponentError::AccessRefused(AccessState::Shredded))
    ));
    server.advance(Duration::from_secs(30));
    server
        .keys()
        .restore_key(pb::RestoreKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    until("the restore is applied", || pg.events_applied() == 5).await;
    assert_eq!(pg.decrypt("users/1", &record).unwrap().as_slice(), b"alice");

    // Every event was acknowledged with the state the deployment was really in.
    let events = events(&server, &api_key).await;
    assert_eq!(events.len(), 5);
    let told: Vec<i32> = events.iter().map(|e| e.adopter_key_state).collect();
    assert_eq!(
        told,
        [
            pb::KeyState::Active,
            pb::KeyState::Suspended,
            pb::KeyState::Active,
            pb::KeyState::Destroyed,
            pb::KeyState::Active
        ]
        .map(|s| s as i32)
    );
    assert!(
        events
            .iter()
            .all(|e| e.status == pb::LifecycleDeliveryStatus::Acknowledged as i32),
        "{events:?}"
    );
    assert_eq!(
        store.load().unwrap().unwrap().last_sequence,
        events[4].sequence
    );
}

#[tokio::test]
async fn the_component_resumes_after_a_server_restart_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = random_credentials();
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));
    let config =
        || kmsim_tests::persistent_config(dir.path(), [0x31; 32], &credentials, clock.clone());
    let server = TestServer::start_with(config(), clock.clone()).await;
    let address = server.endpoint.trim_start_matches("http://").to_owned();
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let api_key = service_key(&server, PG_1).await;
    let client = service_client(&server, &api_key).await;
    let store = Arc::new(MemoryStateStore::new());
    let pg = Arc::new(
        DeploymentKey::provision(client.clone(), PG_1, Some(&root.crn), store.clone())
            .await
            .unwrap(),
    );
    let record = pg.encrypt("users/1", b"alice").unwrap();
    let _stop = follow(&pg);
    rotate(&server, &root.crn).await;
    until("the first rotation is applied", || pg.events_applied() == 1).await;

    // The server goes away mid-stream and comes back; the key rotates (an hour later)
    // before the component has reconnected, then is disabled.
    server.stop().await;
    let server = TestServer::start_at(config(), clock.clone(), &address).await;
    server.advance(Duration::from_secs(3600));
    let v3 = rotate(&server, &root.crn).await;
    until("the rotation made during the outage is applied", || {
        pg.events_applied() == 2
    })
    .await;
    assert_eq!(pg.key_version().as_deref(), Some(v3.as_str()));
    assert_eq!(registration(&server, &root.crn).await.key_version_id, v3);
    server
        .keys()
        .disable_key(pb::DisableKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    until("the disable is applied", || pg.events_applied() == 3).await;
    assert_eq!(pg.access(), AccessState::Suspended);

    // Each event applied and acknowledged once, in order.
    let events = events(&server, &api_key).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.status == pb::LifecycleDeliveryStatus::Acknowledged as i32)
    );
    assert_eq!(
        store.load().unwrap().unwrap().last_sequence,
        events[2].sequence
    );

    // A new process reopens from the saved state once the key is enabled again.
    server.advance(Duration::from_secs(30));
    server
        .keys()
        .enable_key(pb::EnableKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    let reopened = DeploymentKey::open(client, store).await.unwrap();
    assert_eq!(
        reopened.decrypt("users/1", &record).unwrap().as_slice(),
        b"alice"
    );
    server.stop().await;
}

#[tokio::test]
async fn no_row_is_lost_under_a_20_percent_fault_rate() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let api_key = service_key(&server, PG_1).await;
    let client = service_client(&server, &api_key).await;
    let store = Arc::new(MemoryStateStore::new());
    let pg = Arc::new(
        DeploymentKey::provision(client.clone(), PG_1, Some(&root.crn), store.clone())
            .await
            .unwrap(),
    );
    let _stop = follow(&pg);
    server
        .simulator()
        .inject_fault(pb::InjectFaultRequest {
            rule: Some(pb::FaultRule {
                method: "*".into(),
                instance: instance.clone(),
                kind: pb::FaultKind::Unavailable as i32,
                trigger: Some(pb::fault_rule::Trigger::Probability(0.2)),
                seed: 20,
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    let mut rows = Vec::new();
    let mut rotations = 0;
    for i in 0..200 {
        let id = format!("rows/{i}");
        // Writes wait while a rotation is being applied, never fail.
        let sealed = pg.encrypt(&id, id.as_bytes()).unwrap();
        rows.push((id, sealed));
        if i % 40 == 39 {
            // The operator retries a rotation refused by the fault.
            server.advance(Duration::from_secs(3600));
            while server
                .keys()
                .rotate_key(pb::RotateKeyRequest {
                    key: root.crn.clone(),
                    material: None,
                })
                .await
                .is_err()
            {}
            rotations += 1;
            until("the rotation is applied", || {
                pg.events_applied() == rotations
            })
            .await;
        }
    }
    let fired: u64 = server
        .simulator()
        .list_faults(pb::ListFaultsRequest {})
        .await
        .unwrap()
        .into_inner()
        .rules
        .iter()
        .map(|r| r.fired)
        .sum();
    assert!(fired >= 5, "the faults hit the component's calls: {fired}");
    server
        .simulator()
        .clear_faults(pb::ClearFaultsRequest::default())
        .await
        .unwrap();
    let current = server
        .client()
        .get_key(&root.crn.parse().unwrap())
        .await
        .unwrap()
        .current_version
        .unwrap()
        .id;
    assert_eq!(pg.key_version().as_deref(), Some(current.as_str()));
    assert_eq!(
        registration(&server, &root.crn).await.key_version_id,
        current
    );
    // Every row reads back, in this process and in a new one opened from the saved state.
    let reopened = DeploymentKey::open(client, store).await.unwrap();
    for (id, sealed) in &rows {
        assert_eq!(pg.decrypt(id, sealed).unwrap().as_slice(), id.as_bytes());
        assert_eq!(
            reopened.decrypt(id, sealed).unwrap().as_slice(),
            id.as_bytes()
        );
    }
    let events = events(&server, &api_key).await;
    assert_eq!(events.len(), 5);
    assert!(
        events
            .iter()
            .all(|e| e.status == pb::LifecycleDeliveryStatus::Acknowledged as i32)
    );
}

#[tokio::test]
async fn deprovisioning_keeps_the_registration_for_nine_days() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let api_key = service_key(&server, PG_1).await;
    let client = service_client(&server, &api_key).await;
    let pg = DeploymentKey::provision(
        client,
        PG_1,
        Some(&root.crn),
        Arc::new(MemoryStateStore::new()),
    )
    .await
    .unwrap();
    let deleted = pg.deprovision(None).await.unwrap().unwrap();
    assert!(deleted.deleted);
    let retained = deleted.remove_time.unwrap().seconds - deleted.delete_time.unwrap().seconds;
    assert_eq!(retained, 9 * 24 * 3600);
    // During the window the key's plain delete is refused; force is needed.
    let refused = server
        .keys()
        .delete_key(pb::DeleteKeyRequest {
            key: root.crn.clone(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        kmsim_tests::reason(&refused).as_deref(),
        Some("PROTECTED_RESOURCE_ERR")
    );
}
