//! Registrations end to end: a database service registers only while authorized; users
//! (admins included) cannot create, update or delete registrations; root keys only; duplicate
//! registrations; the key version only moves forward; and the delete rules (a live or
//! soft-deleted registration blocks a plain delete, `force` works unless a registration
//! prevents key deletion, a soft-deleted registration disappears after `retain_for`, and a
//! purge removes the key's registrations).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error};
use tonic::Code;

pub(crate) const POSTGRES: &str = "databases-for-postgresql";
pub(crate) const PG_1: &str =
    "crn:v1:bluemix:public:databases-for-postgresql:us-south:a/kmsim:pg-deployment-1::";
pub(crate) const PG_2: &str =
    "crn:v1:bluemix:public:databases-for-postgresql:us-south:a/kmsim:pg-deployment-2::";
const NINE_DAYS: Duration = Duration::from_secs(9 * 24 * 3600);

/// A new service identity of `databases-for-postgresql` acting for `source`; its token.
pub(crate) async fn service(server: &TestServer, source: &str) -> String {
    server.token(&service_key(server, source).await).await
}

/// A new service identity of `databases-for-postgresql` acting for `source`; its API key.
pub(crate) async fn service_key(server: &TestServer, source: &str) -> String {
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::Service as i32,
            name: POSTGRES.to_owned(),
            source_instance_crn: source.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    created.secret
}

/// A new user with `roles` on `instance`; its token.
pub(crate) async fn user(server: &TestServer, instance: &str, roles: &[pb::Role]) -> String {
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "a user".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let identity = created.api_key.unwrap().identity.unwrap().id;
    if !roles.is_empty() {
        server
            .iam()
            .create_access_policy(pb::CreateAccessPolicyRequest {
                identity_id: identity,
                instance: instance.to_owned(),
                roles: roles.iter().map(|r| *r as i32).collect(),
            })
            .await
            .unwrap();
    }
    server.token(&created.secret).await
}

/// Authorizes `databases-for-postgresql` (every source instance) on `instance`; returns the
/// authorization id.
pub(crate) async fn authorize(server: &TestServer, instance: &str) -> String {
    server
        .iam()
        .create_authorization(pb::CreateAuthorizationRequest {
            source_service_name: POSTGRES.into(),
            source_instance_crn: String::new(),
            target_instance: instance.to_owned(),
            role: pb::Role::Reader as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .authorization
        .unwrap()
        .id
}

pub(crate) async fn register(
    server: &TestServer,
    token: &str,
    key: &str,
    resource: &str,
    prevent: bool,
) -> Result<pb::Registration, tonic::Status> {
    server
        .registrations_as(Some(token))
        .create_registration(pb::CreateRegistrationRequest {
            key: key.to_owned(),
            resource_crn: resource.to_owned(),
            prevent_key_deletion: prevent,
            description: format!("{resource} disk key"),
            key_version_id: String::new(),
        })
        .await
        .map(|r| r.into_inner().registration.unwrap())
}

async fn list_by_key(server: &TestServer, key: &str) -> Vec<pb::Registration> {
    server
        .registrations()
        .list_registrations(pb::ListRegistrationsRequest {
            key: key.to_owned(),
            resource_crn: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .registrations
}

async fn unregister(
    server: &TestServer,
    token: &str,
    key: &str,
    resource: &str,
    retain_for: Duration,
) -> Result<Option<pb::Registration>, tonic::Status> {
    server
        .registrations_as(Some(token))
        .delete_registration(pb::DeleteRegistrationRequest {
            key: key.to_owned(),
            resource_crn: resource.to_owned(),
            retain_for: (!retain_for.is_zero())
                .then(|| prost_types::Duration::try_from(retain_for).unwrap()),
        })
        .await
        .map(|r| r.into_inner().registration)
}

async fn delete_key(server: &TestServer, key: &str, force: bool) -> Result<pb::Key, tonic::Status> {
    server
        .keys()
        .delete_key(pb::DeleteKeyRequest {
            key: key.to_owned(),
            force,
        })
        .await
        .map(|r| r.into_inner().key.unwrap())
}

#[tokio::test]
async fn a_database_service_registers_only_while_authorized() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    let pg = service(&server, PG_1).await;

    assert_error(
        register(&server, &pg, &root.crn, PG_1, false).await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    assert!(list_by_key(&server, &root.crn).await.is_empty());

    let authorization = authorize(&server, &instance).await;
    let registration = register(&server, &pg, &root.crn, PG_1, false)
        .await
        .unwrap();
    assert_eq!(registration.resource_crn, PG_1);
    assert_eq!(registration.key_id, root.id);
    assert_eq!(registration.key_crn, root.crn);
    assert_eq!(
        registration.key_version_id,
        root.current_version.as_ref().unwrap().id
    );
    assert!(!registration.deleted);
    assert!(!registration.created_by.is_empty());
    // The service can list by key and by resource.
    let listed = server
        .registrations_as(Some(&pg))
        .list_registrations(pb::ListRegistrationsRequest {
            key: String::new(),
            resource_crn: PG_1.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .registrations;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_crn, root.crn);

    server
        .iam()
        .delete_authorization(pb::DeleteAuthorizationRequest { id: authorization })
        .await
        .unwrap();
    assert_error(
        register(&server, &pg, &root.crn, PG_2, false).await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    assert_error(
        unregister(&server, &pg, &root.crn, PG_1, Duration::ZERO).await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    // Nothing changed meanwhile.
    assert_eq!(list_by_key(&server, &root.crn).await.len(), 1);
}

#[tokio::test]
async fn only_services_register_and_only_against_root_keys() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let pg = service(&server, PG_1).await;
    let manager = user(&server, &instance, &[pb::Role::Manager]).await;
    let reader = user(&server, &instance, &[pb::Role::Reader]).await;
    let stranger = user(&server, &instance, &[]).await;

    // Users, even a Manager and the admin, cannot create, update or delete registrations.
    for token in [manager.as_str(), kmsim_tests::DEV_TOKEN] {
        assert_error(
            register(&server, token, &root.crn, PG_1, false).await,
            Code::PermissionDenied,
            "SERVICE_ONLY_ERR",
        );
    }
    register(&server, &pg, &root.crn, PG_1, false)
        .await
        .unwrap();
    assert_error(
        server
            .registrations_as(Some(&manager))
            .update_registration(pb::UpdateRegistrationRequest {
                key: root.crn.clone(),
                resource_crn: PG_1.into(),
                description: Some("hijacked".into()),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "SERVICE_ONLY_ERR",
    );
    assert_error(
        unregister(&server, &manager, &root.crn, PG_1, Duration::ZERO).await,
        Code::PermissionDenied,
        "SERVICE_ONLY_ERR",
    );

    // Duplicate.
    assert_error(
        register(&server, &pg, &root.crn, PG_1, true).await,
        Code::AlreadyExists,
        "REGISTRATION_EXISTS_ERR",
    );

    // Standard keys cannot be registered.
    let standard = server
        .keys()
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "std".into(),
            r#type: pb::KeyType::Standard as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_error(
        register(&server, &pg, &standard.crn, PG_1, false).await,
        Code::FailedPrecondition,
        "KEY_ROOT_REQ_REG_ERR",
    );

    // A malformed resource CRN is a field violation.
    let bad = assert_error(
        register(&server, &pg, &root.crn, "not-a-crn", false).await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(kmsim_tests::violated_fields(&bad), vec!["resource_crn"]);

    // A Reader lists; a user without a role on the instance does not.
    let listed = server
        .registrations_as(Some(&reader))
        .list_registrations(pb::ListRegistrationsRequest {
            key: root.crn.clone(),
            resource_crn: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .registrations;
    assert_eq!(listed.len(), 1);
    assert_error(
        server
            .registrations_as(Some(&stranger))
            .list_registrations(pb::ListRegistrationsRequest {
                key: root.crn.clone(),
                resource_crn: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    // By resource, a stranger simply sees nothing.
    let none = server
        .registrations_as(Some(&stranger))
        .list_registrations(pb::ListRegistrationsRequest {
            key: String::new(),
            resource_crn: PG_1.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .registrations;
    assert!(none.is_empty());
}

#[tokio::test]
async fn the_key_version_of_a_registration_only_moves_forward() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let pg = service(&server, PG_1).await;
    let first = register(&server, &pg, &root.crn, PG_1, false)
        .await
        .unwrap()
        .key_version_id;
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
    let second = rotated.current_version.unwrap().id;
    assert_ne!(first, second);

    let update = |version: &str| pb::UpdateRegistrationRequest {
        key: root.crn.clone(),
        resource_crn: PG_1.into(),
        key_version_id: version.to_owned(),
        ..Default::default()
    };
    let mut client = server.registrations_as(Some(&pg));
    let moved = client
        .update_registration(update(&second))
        .await
        .unwrap()
        .into_inner()
        .registration
        .unwrap();
    assert_eq!(moved.key_version_id, second);
    assert!(moved.key_version_create_time.is_some());
    assert_error(
        client.update_registration(update(&first)).await,
        Code::FailedPrecondition,
        "KEY_VERSION_INVALID",
    );
    assert_error(
        client
            .update_registration(update("0b1c2d3e-0000-4000-8000-000000000000"))
            .await,
        Code::FailedPrecondition,
        "KEY_VERSION_INVALID",
    );
    // Other fields change without touching the version.
    let described = client
        .update_registration(pb::UpdateRegistrationRequest {
            key: root.crn.clone(),
            resource_crn: PG_1.into(),
            description: Some("moved to v2".into()),
            prevent_key_deletion: Some(true),
            key_version_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .registration
        .unwrap();
    assert_eq!(described.description, "moved to v2");
    assert!(described.prevent_key_deletion);
    assert_eq!(described.key_version_id, second);
    assert_error(
        client
            .update_registration(pb::UpdateRegistrationRequest {
                key: root.crn.clone(),
                resource_crn: PG_2.into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "REGISTRATION_NOT_FOUND_ERR",
    );
}

#[tokio::test]
async fn registrations_guard_key_deletion() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    authorize(&server, &instance).await;
    let pg_key = service_key(&server, PG_1).await;
    let pg = server.token(&pg_key).await;

    // A live registration blocks a plain delete; force deletes anyway (cryptoshredding).
    let live = server.root_key(&instance).await;
    register(&server, &pg, &live.crn, PG_1, false)
        .await
        .unwrap();
    let blocked = assert_error(
        delete_key(&server, &live.crn, false).await,
        Code::FailedPrecondition,
        "PROTECTED_RESOURCE_ERR",
    );
    let info = tonic_types::StatusExt::get_error_details(&blocked)
        .error_info()
        .cloned()
        .unwrap();
    assert_eq!(info.metadata["http_status"], "409");
    let forced = delete_key(&server, &live.crn, true).await.unwrap();
    assert_eq!(forced.state, pb::KeyState::Destroyed as i32);

    // prevent_key_deletion blocks even force, until the flag is lifted.
    let kept = server.root_key(&instance).await;
    register(&server, &pg, &kept.crn, PG_1, true).await.unwrap();
    assert_error(
        delete_key(&server, &kept.crn, true).await,
        Code::FailedPrecondition,
        "PREV_KEY_DEL_ERR",
    );
    assert_error(
        delete_key(&server, &kept.crn, false).await,
        Code::FailedPrecondition,
        "PROTECTED_RESOURCE_ERR",
    );
    server
        .registrations_as(Some(&pg))
        .update_registration(pb::UpdateRegistrationRequest {
            key: kept.crn.clone(),
            resource_crn: PG_1.into(),
            prevent_key_deletion: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    delete_key(&server, &kept.crn, true).await.unwrap();

    // A soft-deleted registration (the deployment's 9-day soft deletion) still blocks a
    // plain delete until its time has passed.
    let soft = server.root_key(&instance).await;
    register(&server, &pg, &soft.crn, PG_1, false)
        .await
        .unwrap();
    let retained = unregister(&server, &pg, &soft.crn, PG_1, NINE_DAYS)
        .await
        .unwrap()
        .unwrap();
    assert!(retained.deleted);
    assert!(retained.remove_time.is_some());
    let listed = list_by_key(&server, &soft.crn).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].deleted);
    assert_error(
        delete_key(&server, &soft.crn, false).await,
        Code::FailedPrecondition,
        "PROTECTED_RESOURCE_ERR",
    );
    server
        .advance_rpc(NINE_DAYS - Duration::from_secs(60))
        .await;
    assert_eq!(list_by_key(&server, &soft.crn).await.len(), 1);
    assert_error(
        delete_key(&server, &soft.crn, false).await,
        Code::FailedPrecondition,
        "PROTECTED_RESOURCE_ERR",
    );
    server.advance_rpc(Duration::from_secs(61)).await;
    assert!(list_by_key(&server, &soft.crn).await.is_empty());
    delete_key(&server, &soft.crn, false).await.unwrap();
    // Nine days later the deployment's token has expired: it gets a new one.
    let pg = server.token(&pg_key).await;

    // retain_for zero removes at once.
    let quick = server.root_key(&instance).await;
    register(&server, &pg, &quick.crn, PG_1, false)
        .await
        .unwrap();
    assert!(
        unregister(&server, &pg, &quick.crn, PG_1, Duration::ZERO)
            .await
            .unwrap()
            .is_none()
    );
    assert_error(
        unregister(&server, &pg, &quick.crn, PG_1, Duration::ZERO).await,
        Code::NotFound,
        "REGISTRATION_NOT_FOUND_ERR",
    );
    delete_key(&server, &quick.crn, false).await.unwrap();

    // Purging a force-deleted key removes its registration (9 days passed: purge allowed);
    // the other force-deleted key keeps its own.
    let by_resource = |server: &TestServer| {
        let mut client = server.registrations();
        async move {
            client
                .list_registrations(pb::ListRegistrationsRequest {
                    key: String::new(),
                    resource_crn: PG_1.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .registrations
        }
    };
    let before = by_resource(&server).await;
    assert_eq!(before.len(), 2, "{before:?}");
    server
        .keys()
        .purge_key(pb::PurgeKeyRequest {
            key: live.crn.clone(),
        })
        .await
        .unwrap();
    let after = by_resource(&server).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].key_id, kept.id);
}
