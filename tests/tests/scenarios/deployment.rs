//! The scenario the product exists for: a database deployment keeps its data key wrapped by a
//! customer root key, survives restarts and rotation, and is cryptoshredded when the key is
//! purged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_client::datakey::DataKeyError;
use kmsim_proto::v1 as pb;
use kmsim_tests::TestServer;
use kmsim_tests::deployment::Deployment;

#[tokio::test]
async fn a_deployment_follows_rotation_and_is_shredded_with_its_key() {
    let server = TestServer::start().await;
    let instance = server.instance_of(pb::InstanceFlavor::Hpcs).await;
    let root = server.root_key(&instance).await;
    let mut pg = Deployment::provision(server.client(), "pg-1", root.crn.parse().unwrap())
        .await
        .unwrap();
    let first_version = pg.key_version().to_owned();
    pg.write("users/1", b"alice").unwrap();

    pg.restart().await.unwrap();
    assert_eq!(pg.read("users/1").unwrap().as_deref(), Some(&b"alice"[..]));
    assert_eq!(pg.key_version(), first_version);

    // The root key rotates: the next start-up persists the rewrapped data key.
    server
        .keys()
        .rotate_key(pb::RotateKeyRequest {
            key: root.crn.clone(),
            material: None,
        })
        .await
        .unwrap();
    pg.restart().await.unwrap();
    assert_ne!(pg.key_version(), first_version);
    assert_eq!(pg.read("users/1").unwrap().as_deref(), Some(&b"alice"[..]));

    // Another rotation an hour later, followed by the sync task (rewrap without unlock).
    server.advance(Duration::from_secs(3600));
    let rotated = server
        .keys()
        .rotate_key(pb::RotateKeyRequest {
            key: root.crn.clone(),
            material: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    pg.sync_kms_state().await.unwrap();
    assert_eq!(pg.key_version(), rotated.current_version.unwrap().id);

    // Disabled key: a restart cannot unlock the data.
    server
        .keys()
        .disable_key(pb::DisableKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(pg.restart().await, Err(DataKeyError::Kms(_))));
    assert!(!pg.is_unlocked());
    assert!(matches!(pg.read("users/1"), Err(DataKeyError::Locked)));
    server.advance(Duration::from_secs(30));
    server
        .keys()
        .enable_key(pb::EnableKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    pg.restart().await.unwrap();
    assert_eq!(pg.read("users/1").unwrap().as_deref(), Some(&b"alice"[..]));

    // Cryptoshredding: delete, purge after 4 hours; the data is gone for good.
    server
        .keys()
        .delete_key(pb::DeleteKeyRequest {
            key: root.crn.clone(),
            force: false,
        })
        .await
        .unwrap();
    server.advance(Duration::from_secs(4 * 3600));
    server
        .keys()
        .purge_key(pb::PurgeKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    let error = pg.restart().await.unwrap_err();
    let DataKeyError::Kms(kms) = error else {
        panic!("expected a KMS refusal, got {error:?}")
    };
    assert_eq!(kms.reason_code(), Some("KEY_NOT_FOUND_ERR"));
    assert!(matches!(pg.read("users/1"), Err(DataKeyError::Locked)));
}

#[tokio::test]
async fn a_registered_deployment_answers_rotation_and_guards_its_key_through_soft_deletion() {
    use crate::registrations::{PG_1, authorize, service_key};

    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let api_key = service_key(&server, PG_1).await;
    let service = server
        .client()
        .with_bearer_token(&server.token(&api_key).await)
        .unwrap();
    let mut pg = Deployment::provision(server.client(), "pg-1", root.crn.parse().unwrap())
        .await
        .unwrap();
    pg.write("users/1", b"alice").unwrap();
    let registration = pg.register(service.clone(), PG_1).await.unwrap();
    assert_eq!(registration.key_version_id, pg.key_version());
    let mut events = service.watch_lifecycle_events(PG_1, 0).await.unwrap();

    // The key rotates: the deployment is told, rewraps, moves its registration forward and
    // acknowledges in agreement.
    let rotated = server
        .keys()
        .rotate_key(pb::RotateKeyRequest {
            key: root.crn.clone(),
            material: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let acked = pg.handle_lifecycle_event(&event).await.unwrap().unwrap();
    assert_eq!(
        acked.status,
        pb::LifecycleDeliveryStatus::Acknowledged as i32
    );
    let new_version = rotated.current_version.unwrap().id;
    assert_eq!(pg.key_version(), new_version);
    let root_ref: kmsim_client::KeyRef = root.crn.parse().unwrap();
    let listed = server
        .client()
        .list_key_registrations(&root_ref)
        .await
        .unwrap();
    assert_eq!(listed[0].key_version_id, new_version);
    assert_eq!(pg.read("users/1").unwrap().as_deref(), Some(&b"alice"[..]));

    // Deprovisioned: the registration stays through the 9-day soft deletion, guarding the key.
    let retained = pg
        .deprovision(Duration::from_secs(9 * 24 * 3600))
        .await
        .unwrap();
    assert!(retained.unwrap().deleted);
    let refused = server.client().delete(&root_ref, false).await.unwrap_err();
    assert_eq!(refused.reason_code(), Some("PROTECTED_RESOURCE_ERR"));
    server
        .advance_rpc(Duration::from_secs(9 * 24 * 3600 + 1))
        .await;
    server.client().delete(&root_ref, false).await.unwrap();
}
