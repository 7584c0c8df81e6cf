//! The seed story, one test per statement, played by a simulated database deployment
//! (`kmsim_tests::deployment`, built on the client's database-encryption component) against
//! the real server: a missing authorization fails provisioning; the key is chosen at creation
//! (a random key otherwise); a bare key id is refused; a rotation re-encrypts under the new
//! version with its audit events; deleting the deployment keeps the key's delete behind
//! `force` for 9 days; a force delete locks the disks (metadata stays readable) and is
//! audited as `hs-crypto.secrets.delete`; a backup restores into a new deployment; an HSM
//! zeroization locks the deployment as cryptoshredding does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_client::component::{AccessState, ComponentError, DeploymentKey, MemoryStateStore};
use kmsim_client::{KeyRef, KmsClient};
use kmsim_proto::v1 as pb;
use kmsim_tests::deployment::{Deployment, SYNC_TASK, deployment_crn};
use kmsim_tests::{TestServer, assert_error};
use tonic::Code;

use crate::registrations::{authorize, service_key};

/// An HPCS instance with a root key, `databases-for-postgresql` authorized on it, and the
/// database service's client: (instance id, root key, service client).
async fn setup(server: &TestServer) -> (String, pb::Key, KmsClient) {
    let instance = server.instance_of(pb::InstanceFlavor::Hpcs).await;
    let root = server.root_key(&instance).await;
    authorize(server, &instance).await;
    let service = service_client(server).await;
    (instance, root, service)
}

async fn service_client(server: &TestServer) -> KmsClient {
    let api_key = service_key(server, &deployment_crn("any")).await;
    KmsClient::builder(server.endpoint.clone())
        .api_key(api_key)
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

async fn audit_actions(server: &TestServer, instance: &str) -> Vec<String> {
    server
        .client()
        .list_audit_events(
            pb::AuditEventFilter {
                instance_id: instance.to_owned(),
                ..Default::default()
            },
            0,
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.outcome == pb::AuditOutcome::Success as i32)
        .map(|e| e.action)
        .collect()
}

async fn delete_key(server: &TestServer, crn: &str, force: bool) -> Result<(), tonic::Status> {
    server
        .keys()
        .delete_key(pb::DeleteKeyRequest {
            key: crn.to_owned(),
            force,
        })
        .await
        .map(drop)
}

#[tokio::test]
async fn without_the_authorization_provisioning_fails() {
    let server = TestServer::start().await;
    let instance = server.instance_of(pb::InstanceFlavor::Hpcs).await;
    let root = server.root_key(&instance).await;
    let service = service_client(&server).await;
    let refused = Deployment::create(service, "pg-1", Some(&root.crn)).await;
    assert!(matches!(
        refused,
        Err(ComponentError::ServiceNotAuthorized(_))
    ));
}

#[tokio::test]
async fn the_key_is_chosen_at_creation_and_a_random_key_is_used_otherwise() {
    let server = TestServer::start().await;
    let (_, root, service) = setup(&server).await;
    let mut byok = Deployment::create(service.clone(), "pg-1", Some(&root.crn))
        .await
        .unwrap();
    let mut random = Deployment::create(service.clone(), "pg-2", None)
        .await
        .unwrap();
    byok.write("users/1", b"alice").unwrap();
    random.write("users/1", b"bob").unwrap();
    assert_eq!(random.read("users/1").unwrap().unwrap(), b"bob");
    // The BYOK deployment is registered with its key, at its version; the other with none.
    let registrations = service
        .list_key_registrations(&KeyRef::from_key(&root).unwrap())
        .await
        .unwrap();
    assert_eq!(registrations.len(), 1);
    assert_eq!(registrations[0].resource_crn, deployment_crn("pg-1"));
    assert_eq!(
        Some(registrations[0].key_version_id.clone()),
        byok.key().key_version()
    );
    assert_eq!(random.key().key_version(), None);
    assert!(
        service
            .list_resource_registrations(&deployment_crn("pg-2"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_bare_key_id_is_refused() {
    let server = TestServer::start().await;
    let (_, root, service) = setup(&server).await;
    let refused = Deployment::create(service, "pg-1", Some(&root.id)).await;
    assert!(matches!(refused, Err(ComponentError::KeyCrnRequired(_))));
}

#[tokio::test]
async fn a_rotation_re_encrypts_under_the_new_version_and_is_audited() {
    let server = TestServer::start().await;
    let (instance, root, service) = setup(&server).await;
    let mut pg = Deployment::create(service, "pg-1", Some(&root.crn))
        .await
        .unwrap();
    pg.write("users/1", b"alice").unwrap();
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
    let new_version = rotated.current_version.unwrap().id;
    until("the sync task is done", || {
        pg.tasks().iter().any(|t| t.name == SYNC_TASK && t.done)
    })
    .await;
    assert_eq!(pg.key().key_version(), Some(new_version));
    assert_eq!(pg.read("users/1").unwrap().unwrap(), b"alice");
    let actions = audit_actions(&server, &instance).await;
    for action in [
        "hs-crypto.secrets.rotate",
        "hs-crypto.secrets.rewrap",
        "hs-crypto.registrations.write",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn deleting_the_deployment_needs_force_for_the_key_for_nine_days() {
    let server = TestServer::start().await;
    let (_, root, service) = setup(&server).await;
    let pg = Deployment::create(service, "pg-1", Some(&root.crn))
        .await
        .unwrap();
    pg.delete().await.unwrap();
    assert_error(
        delete_key(&server, &root.crn, false).await,
        Code::FailedPrecondition,
        "PROTECTED_RESOURCE_ERR",
    );
    server
        .advance_rpc(Duration::from_secs(9 * 24 * 3600 + 1))
        .await;
    delete_key(&server, &root.crn, false).await.unwrap();
}

#[tokio::test]
async fn a_force_delete_locks_the_disks_and_leaves_metadata_readable() {
    let server = TestServer::start().await;
    let (instance, root, service) = setup(&server).await;
    let mut pg = Deployment::create(service, "pg-1", Some(&root.crn))
        .await
        .unwrap();
    pg.write("users/1", b"alice").unwrap();
    delete_key(&server, &root.crn, true).await.unwrap();
    until("the nodes show the key shredded", || {
        pg.nodes()
            .iter()
            .all(|n| n.key_status == AccessState::Shredded)
    })
    .await;
    assert!(matches!(
        pg.read("users/1"),
        Err(ComponentError::AccessRefused(AccessState::Shredded))
    ));
    assert!(pg.write("users/2", b"bob").is_err());
    assert_eq!(pg.row_ids(), ["users/1"]);
    assert!(
        audit_actions(&server, &instance)
            .await
            .iter()
            .any(|a| a == "hs-crypto.secrets.delete")
    );
}

#[tokio::test]
async fn a_backup_restores_into_a_new_deployment() {
    let server = TestServer::start().await;
    let (instance, root, service) = setup(&server).await;
    let backup_root = server.root_key(&instance).await;
    let backup_key = DeploymentKey::provision(
        service.clone(),
        &deployment_crn("pg-1-backups"),
        Some(&backup_root.crn),
        std::sync::Arc::new(MemoryStateStore::new()),
    )
    .await
    .unwrap();
    let mut pg = Deployment::create(service.clone(), "pg-1", Some(&root.crn))
        .await
        .unwrap();
    for i in 0..10 {
        pg.write(&format!("users/{i}"), format!("user {i}").as_bytes())
            .unwrap();
    }
    let backup = pg.backup(&backup_key).unwrap();
    pg.delete().await.unwrap();

    let restored = Deployment::restore(service, "pg-2", Some(&root.crn), &backup, &backup_key)
        .await
        .unwrap();
    for i in 0..10 {
        assert_eq!(
            restored.read(&format!("users/{i}")).unwrap().unwrap(),
            format!("user {i}").as_bytes()
        );
    }
}

#[tokio::test]
async fn an_hsm_zeroization_locks_like_cryptoshredding() {
    let server = TestServer::start().await;
    let (_, root, service) = setup(&server).await;
    let mut pg = Deployment::create(service, "pg-1", Some(&root.crn))
        .await
        .unwrap();
    pg.write("users/1", b"alice").unwrap();
    server.hsm().zeroize(pb::ZeroizeRequest {}).await.unwrap();
    // No lifecycle event announces it: the nodes' check finds it.
    assert_eq!(pg.check_key().await.unwrap(), AccessState::Shredded);
    assert!(
        pg.nodes()
            .iter()
            .all(|n| n.key_status == AccessState::Shredded)
    );
    assert!(matches!(
        pg.read("users/1"),
        Err(ComponentError::AccessRefused(AccessState::Shredded))
    ));
    assert_eq!(pg.row_ids(), ["users/1"]);
}
