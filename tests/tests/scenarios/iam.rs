//! Authentication and IAM end to end: the service-to-service seed scenario, the role x RPC
//! matrix (no token, malformed, expired, forged and tampered tokens, each role, another
//! instance's policy, a service with and without an authorization), API key -> token
//! exchange and revocation, and identities recorded as creators and deleters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_server::auth::token::{Claims, assemble, parse, signing_input};
use kmsim_server::clock::{Clock, SimulatedClock, Timestamp};
use kmsim_tests::{TestServer, assert_error, key_path, reason};
use sim_hsm::p256::ecdsa::signature::Signer;
use sim_hsm::p256::ecdsa::{Signature, SigningKey};
use tonic::Code;

const POSTGRES: &str = "databases-for-postgresql";
const PG_DEPLOYMENT: &str =
    "crn:v1:bluemix:public:databases-for-postgresql:us-south:a/kmsim:0b1c2d3e-pg-1::";

/// A new user identity with `roles` on `instance` (no policy when empty), and its token.
async fn user(server: &TestServer, instance: &str, roles: &[pb::Role]) -> (String, String) {
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: format!("user with {roles:?}"),
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
                identity_id: identity.clone(),
                instance: instance.to_owned(),
                roles: roles.iter().map(|r| *r as i32).collect(),
            })
            .await
            .unwrap();
    }
    (identity, server.token(&created.secret).await)
}

/// A new service identity of `service` acting for `source`, and its token.
async fn service(server: &TestServer, service: &str, source: &str) -> (String, String) {
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::Service as i32,
            name: service.to_owned(),
            source_instance_crn: source.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let identity = created.api_key.unwrap().identity.unwrap().id;
    (identity, server.token(&created.secret).await)
}

async fn authorize(server: &TestServer, instance: &str, source_crn: &str) -> String {
    server
        .iam()
        .create_authorization(pb::CreateAuthorizationRequest {
            source_service_name: POSTGRES.into(),
            source_instance_crn: source_crn.into(),
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

async fn wrap(server: &TestServer, token: &str, key: &str) -> Result<Vec<u8>, tonic::Status> {
    server
        .keys_as(Some(token))
        .wrap_key(pb::WrapKeyRequest {
            key: key.to_owned(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().ciphertext)
}

#[tokio::test]
async fn seed_scenario_a_database_service_needs_an_authorization() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    let (_, pg) = service(&server, POSTGRES, PG_DEPLOYMENT).await;

    // No authorization yet: the database service cannot wrap, unwrap or read the key.
    let denied = assert_error(
        wrap(&server, &pg, &root.crn).await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    assert!(denied.message().contains("Reader"), "{denied:?}");
    assert_error(
        server
            .keys_as(Some(&pg))
            .get_key(pb::GetKeyRequest {
                key: root.crn.clone(),
            })
            .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );

    // An authorization for another deployment of the same service does not count.
    let other = authorize(
        &server,
        &instance,
        "crn:v1:bluemix:public:databases-for-postgresql:us-south:a/kmsim:other-pg::",
    )
    .await;
    assert_error(
        wrap(&server, &pg, &root.crn).await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );

    // Authorize the service (all its instances): wrap, unwrap and get work.
    let authorization = authorize(&server, &instance, "").await;
    let ciphertext = wrap(&server, &pg, &root.crn).await.unwrap();
    let unwrapped = server
        .keys_as(Some(&pg))
        .unwrap_key(pb::UnwrapKeyRequest {
            key: root.crn.clone(),
            ciphertext: ciphertext.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unwrapped.plaintext.len(), 32);
    server
        .keys_as(Some(&pg))
        .get_key(pb::GetKeyRequest {
            key: root.crn.clone(),
        })
        .await
        .unwrap();
    // Reader only: it cannot create or delete keys.
    assert_error(
        server
            .keys_as(Some(&pg))
            .rotate_key(pb::RotateKeyRequest {
                key: root.crn.clone(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    let listed = server
        .iam()
        .list_authorizations(pb::ListAuthorizationsRequest {
            target_instance: instance.clone(),
            source_service_name: POSTGRES.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.authorizations.len(), 2);

    // Withdraw both authorizations: refused again, at once (the token is still cached).
    for id in [authorization, other] {
        server
            .iam()
            .delete_authorization(pb::DeleteAuthorizationRequest { id })
            .await
            .unwrap();
    }
    assert_error(
        wrap(&server, &pg, &root.crn).await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    assert_error(
        server
            .keys_as(Some(&pg))
            .unwrap_key(pb::UnwrapKeyRequest {
                key: root.crn.clone(),
                ciphertext,
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );

    // An authorization for this very deployment works too.
    authorize(&server, &instance, PG_DEPLOYMENT).await;
    wrap(&server, &pg, &root.crn).await.unwrap();
}

/// Every KeyService, InstanceService and RegistrationService RPC, and the EventService RPCs
/// whose refusals depend on the caller. (`WatchLifecycleEvents` is not here: it refuses no
/// authenticated caller, it only leaves out the events of instances the caller cannot read;
/// `lifecycle::watchers_see_only_what_they_may_read_and_bad_acks_are_refused` covers it.
/// The simulator and HSM services are administrator-only: `simulator` and `hsm` cover them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    CreateKey,
    GetKey,
    ListKeys,
    WrapKey,
    UnwrapKey,
    RewrapKey,
    RotateKey,
    ListKeyVersions,
    DisableKey,
    EnableKey,
    DeleteKey,
    RestoreKey,
    PurgeKey,
    CreateKeyAlias,
    DeleteKeyAlias,
    CreateImportToken,
    GetImportToken,
    CreateInstance,
    GetInstance,
    ListInstances,
    DeleteInstance,
    SyncKey,
    SetKeyPolicies,
    GetKeyPolicies,
    SetKeyForDeletion,
    UnsetKeyForDeletion,
    SetInstancePolicies,
    GetInstancePolicies,
    CreateRegistration,
    ListRegistrations,
    UpdateRegistration,
    DeleteRegistration,
    ListAuditEvents,
    WatchAuditEvents,
    AckLifecycleEvent,
}

const RPCS: [Rpc; 35] = [
    Rpc::CreateKey,
    Rpc::GetKey,
    Rpc::ListKeys,
    Rpc::WrapKey,
    Rpc::UnwrapKey,
    Rpc::RewrapKey,
    Rpc::RotateKey,
    Rpc::ListKeyVersions,
    Rpc::DisableKey,
    Rpc::EnableKey,
    Rpc::DeleteKey,
    Rpc::RestoreKey,
    Rpc::PurgeKey,
    Rpc::CreateKeyAlias,
    Rpc::DeleteKeyAlias,
    Rpc::CreateImportToken,
    Rpc::GetImportToken,
    Rpc::CreateInstance,
    Rpc::GetInstance,
    Rpc::ListInstances,
    Rpc::DeleteInstance,
    Rpc::SyncKey,
    Rpc::SetKeyPolicies,
    Rpc::GetKeyPolicies,
    Rpc::SetKeyForDeletion,
    Rpc::UnsetKeyForDeletion,
    Rpc::SetInstancePolicies,
    Rpc::GetInstancePolicies,
    Rpc::CreateRegistration,
    Rpc::ListRegistrations,
    Rpc::UpdateRegistration,
    Rpc::DeleteRegistration,
    Rpc::ListAuditEvents,
    Rpc::WatchAuditEvents,
    Rpc::AckLifecycleEvent,
];

/// Who may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// This role (or one that includes it) on the instance.
    Role(pb::Role),
    /// A service identity authorized on the instance; users (admins too) are refused with
    /// `SERVICE_ONLY_ERR`.
    ServiceOnly,
}

impl Rpc {
    /// What Key Protect requires (`Administrator` for instance administration).
    fn required(self) -> Need {
        Need::Role(match self {
            Rpc::GetKey
            | Rpc::ListKeys
            | Rpc::WrapKey
            | Rpc::UnwrapKey
            | Rpc::RewrapKey
            | Rpc::ListKeyVersions
            | Rpc::GetInstance
            | Rpc::GetKeyPolicies
            | Rpc::GetInstancePolicies
            | Rpc::ListRegistrations => pb::Role::Reader,
            Rpc::CreateKey
            | Rpc::RotateKey
            | Rpc::CreateKeyAlias
            | Rpc::DeleteKeyAlias
            | Rpc::CreateImportToken
            | Rpc::GetImportToken
            | Rpc::SyncKey => pb::Role::Writer,
            Rpc::DisableKey
            | Rpc::EnableKey
            | Rpc::DeleteKey
            | Rpc::RestoreKey
            | Rpc::SetKeyPolicies
            | Rpc::SetKeyForDeletion
            | Rpc::UnsetKeyForDeletion
            | Rpc::SetInstancePolicies
            | Rpc::ListAuditEvents
            | Rpc::WatchAuditEvents => pb::Role::Manager,
            Rpc::PurgeKey => pb::Role::KeyPurge,
            Rpc::CreateInstance | Rpc::ListInstances | Rpc::DeleteInstance => {
                pb::Role::Administrator
            }
            Rpc::CreateRegistration
            | Rpc::UpdateRegistration
            | Rpc::DeleteRegistration
            | Rpc::AckLifecycleEvent => return Need::ServiceOnly,
        })
    }
}

/// What one matrix row holds.
fn grants(held: pb::Role, required: pb::Role) -> bool {
    let rank = |r: pb::Role| match r {
        pb::Role::Reader => Some(1),
        pb::Role::ReaderPlus => Some(2),
        pb::Role::Writer => Some(3),
        pb::Role::Manager => Some(4),
        _ => None,
    };
    held == required || matches!((rank(held), rank(required)), (Some(h), Some(r)) if h >= r)
}

/// The keys, ciphertext and lifecycle event one row of the matrix works on.
struct Fixture {
    instance: String,
    root: pb::Key,
    victim: pb::Key,
    ciphertext: Vec<u8>,
    /// A pending lifecycle event of `root` (registered by a deployment, then rotated).
    event_id: String,
}

async fn fixture(server: &TestServer) -> Fixture {
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    let victim = server.root_key(&instance).await;
    let ciphertext = wrap(server, kmsim_tests::DEV_TOKEN, &root.crn)
        .await
        .unwrap();
    let (_, deployment) = service(server, POSTGRES, PG_DEPLOYMENT).await;
    let authorization = authorize(server, &instance, PG_DEPLOYMENT).await;
    server
        .registrations_as(Some(&deployment))
        .create_registration(pb::CreateRegistrationRequest {
            key: root.crn.clone(),
            resource_crn: PG_DEPLOYMENT.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    server
        .iam()
        .delete_authorization(pb::DeleteAuthorizationRequest { id: authorization })
        .await
        .unwrap();
    server
        .keys()
        .rotate_key(pb::RotateKeyRequest {
            key: root.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = server
        .events()
        .watch_lifecycle_events(pb::WatchLifecycleEventsRequest {
            resource_crn: PG_DEPLOYMENT.to_owned(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let event_id = loop {
        let event = events.message().await.unwrap().unwrap();
        if event.key_id == root.id {
            break event.event_id;
        }
    };
    Fixture {
        instance,
        root,
        victim,
        ciphertext,
        event_id,
    }
}

async fn call(
    server: &TestServer,
    token: Option<&str>,
    rpc: Rpc,
    f: &Fixture,
) -> Result<(), tonic::Status> {
    let mut keys = server.keys_as(token);
    let mut instances = server.instances_as(token);
    let mut registrations = server.registrations_as(token);
    let mut events = server.events_as(token);
    let root = f.root.crn.clone();
    match rpc {
        Rpc::CreateKey => keys
            .create_key(pb::CreateKeyRequest {
                instance: f.instance.clone(),
                name: "matrix".into(),
                r#type: pb::KeyType::Root as i32,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetKey => keys
            .get_key(pb::GetKeyRequest { key: root })
            .await
            .map(drop),
        Rpc::ListKeys => keys
            .list_keys(pb::ListKeysRequest {
                instance: f.instance.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::WrapKey => keys
            .wrap_key(pb::WrapKeyRequest {
                key: root,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::UnwrapKey => keys
            .unwrap_key(pb::UnwrapKeyRequest {
                key: root,
                ciphertext: f.ciphertext.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::RewrapKey => keys
            .rewrap_key(pb::RewrapKeyRequest {
                key: root,
                ciphertext: f.ciphertext.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::RotateKey => keys
            .rotate_key(pb::RotateKeyRequest {
                key: root,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::ListKeyVersions => keys
            .list_key_versions(pb::ListKeyVersionsRequest {
                key: root,
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::DisableKey => keys
            .disable_key(pb::DisableKeyRequest {
                key: f.victim.crn.clone(),
            })
            .await
            .map(drop),
        Rpc::EnableKey => keys
            .enable_key(pb::EnableKeyRequest {
                key: f.victim.crn.clone(),
            })
            .await
            .map(drop),
        Rpc::DeleteKey => keys
            .delete_key(pb::DeleteKeyRequest {
                key: f.victim.crn.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::RestoreKey => keys
            .restore_key(pb::RestoreKeyRequest {
                key: f.victim.crn.clone(),
            })
            .await
            .map(drop),
        Rpc::PurgeKey => keys
            .purge_key(pb::PurgeKeyRequest {
                key: f.victim.crn.clone(),
            })
            .await
            .map(drop),
        Rpc::CreateKeyAlias => keys
            .create_key_alias(pb::CreateKeyAliasRequest {
                key: root,
                alias: "matrix-alias".into(),
            })
            .await
            .map(drop),
        Rpc::DeleteKeyAlias => keys
            .delete_key_alias(pb::DeleteKeyAliasRequest {
                key: root,
                alias: "matrix-alias".into(),
            })
            .await
            .map(drop),
        Rpc::CreateImportToken => keys
            .create_import_token(pb::CreateImportTokenRequest {
                instance: f.instance.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetImportToken => keys
            .get_import_token(pb::GetImportTokenRequest {
                instance: f.instance.clone(),
            })
            .await
            .map(drop),
        Rpc::CreateInstance => instances
            .create_instance(pb::CreateInstanceRequest {
                name: "matrix".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetInstance => instances
            .get_instance(pb::GetInstanceRequest {
                instance: f.instance.clone(),
            })
            .await
            .map(drop),
        Rpc::ListInstances => instances
            .list_instances(pb::ListInstancesRequest::default())
            .await
            .map(drop),
        Rpc::DeleteInstance => instances
            .delete_instance(pb::DeleteInstanceRequest {
                instance: f.instance.clone(),
                force: false,
            })
            .await
            .map(drop),
        Rpc::SyncKey => keys
            .sync_key(pb::SyncKeyRequest { key: root })
            .await
            .map(drop),
        Rpc::SetKeyPolicies => keys
            .set_key_policies(pb::SetKeyPoliciesRequest {
                key: root,
                rotation: Some(pb::RotationPolicy {
                    enabled: true,
                    interval_months: 3,
                    ..Default::default()
                }),
                dual_auth_delete: None,
            })
            .await
            .map(drop),
        Rpc::GetKeyPolicies => keys
            .get_key_policies(pb::GetKeyPoliciesRequest { key: root })
            .await
            .map(drop),
        Rpc::SetKeyForDeletion => keys
            .set_key_for_deletion(pb::SetKeyForDeletionRequest { key: root })
            .await
            .map(drop),
        Rpc::UnsetKeyForDeletion => keys
            .unset_key_for_deletion(pb::UnsetKeyForDeletionRequest { key: root })
            .await
            .map(drop),
        Rpc::SetInstancePolicies => instances
            .set_instance_policies(pb::SetInstancePoliciesRequest {
                instance: f.instance.clone(),
                rotation: Some(pb::RotationPolicy {
                    enabled: true,
                    interval_months: 12,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::GetInstancePolicies => instances
            .get_instance_policies(pb::GetInstancePoliciesRequest {
                instance: f.instance.clone(),
            })
            .await
            .map(drop),
        Rpc::CreateRegistration => registrations
            .create_registration(pb::CreateRegistrationRequest {
                key: root,
                resource_crn: PG_DEPLOYMENT.to_owned(),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::ListRegistrations => registrations
            .list_registrations(pb::ListRegistrationsRequest {
                key: root,
                resource_crn: String::new(),
            })
            .await
            .map(drop),
        Rpc::UpdateRegistration => registrations
            .update_registration(pb::UpdateRegistrationRequest {
                key: root,
                resource_crn: PG_DEPLOYMENT.to_owned(),
                description: Some("updated by the matrix".to_owned()),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::DeleteRegistration => registrations
            .delete_registration(pb::DeleteRegistrationRequest {
                key: root,
                resource_crn: PG_DEPLOYMENT.to_owned(),
                retain_for: None,
            })
            .await
            .map(drop),
        Rpc::ListAuditEvents => events
            .list_audit_events(pb::ListAuditEventsRequest {
                filter: Some(pb::AuditEventFilter {
                    instance_id: f.instance.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(drop),
        Rpc::WatchAuditEvents => events
            .watch_audit_events(pb::WatchAuditEventsRequest {
                filter: Some(pb::AuditEventFilter {
                    instance_id: f.instance.clone(),
                    ..Default::default()
                }),
                after_sequence: 0,
            })
            .await
            .map(drop),
        Rpc::AckLifecycleEvent => events
            .ack_lifecycle_event(pb::AckLifecycleEventRequest {
                event_id: f.event_id.clone(),
                adopter_key_state: pb::KeyState::Active as i32,
                key_version_id: String::new(),
            })
            .await
            .map(drop),
    }
}

/// Whether a result shows the call got past authentication and authorization (it may still
/// fail for a domain reason, such as purging an active key).
fn allowed(result: &Result<(), tonic::Status>) -> bool {
    match result {
        Ok(()) => true,
        Err(status) => !matches!(
            status.code(),
            Code::PermissionDenied | Code::Unauthenticated
        ),
    }
}

/// A token with the claims of `genuine`, signed by another P-256 key.
fn forged(genuine: &str) -> String {
    let claims: Claims = parse(genuine).unwrap().claims;
    let key = SigningKey::from_slice(&[42u8; 32]).unwrap();
    let input = signing_input(&claims);
    let signature: Signature = key.sign(input.as_bytes());
    assemble(&input, &signature.to_bytes())
}

/// `genuine`'s signature on claims that now say something else (a later expiry).
fn tampered(genuine: &str) -> String {
    let mut claims: Claims = parse(genuine).unwrap().claims;
    claims.exp += 86_400;
    let (_, signature) = genuine.rsplit_once('.').unwrap();
    format!("{}.{signature}", signing_input(&claims))
}

#[tokio::test]
async fn role_by_rpc_matrix() {
    let server = TestServer::start().await;

    // A token that verified once (so it is cached), then expired by the simulated clock.
    let warmup = fixture(&server).await;
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "expiring".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    server
        .iam()
        .create_access_policy(pb::CreateAccessPolicyRequest {
            identity_id: created.api_key.unwrap().identity.unwrap().id,
            instance: warmup.instance.clone(),
            roles: vec![pb::Role::Manager as i32],
        })
        .await
        .unwrap();
    let expiring = server
        .iam_as(None)
        .create_token(pb::CreateTokenRequest {
            api_key: created.secret,
            expires_in_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    call(&server, Some(&expiring), Rpc::GetKey, &warmup)
        .await
        .unwrap();
    server.advance(Duration::from_secs(61));

    let roles = [
        pb::Role::Reader,
        pb::Role::ReaderPlus,
        pb::Role::Writer,
        pb::Role::Manager,
        pb::Role::KeyPurge,
    ];
    // One fixture for every row: each call is judged only on whether it got past
    // authentication and authorization, which are checked before the key's state.
    let f = fixture(&server).await;
    let other = server.instance().await;
    let (_, reader) = user(&server, &f.instance, &[pb::Role::Reader]).await;
    let mut role_tokens = Vec::new();
    for role in roles {
        role_tokens.push((role, user(&server, &f.instance, &[role]).await.1));
    }
    let (_, outsider) = user(&server, &other, &[pb::Role::Manager, pb::Role::KeyPurge]).await;
    let (_, pg) = service(&server, POSTGRES, PG_DEPLOYMENT).await;
    for rpc in RPCS {
        // Unauthenticated callers.
        let cases: [(&str, Option<&str>, &str); 5] = [
            ("no token", None, "UNAUTHORIZED_ERR"),
            (
                "malformed",
                Some("not-a-token"),
                "BEARER_SUB_EXTRACTION_ERR",
            ),
            ("expired", Some(&expiring), "UNAUTHORIZED_ERR"),
            ("forged", Some(&forged(&reader)), "UNAUTHORIZED_ERR"),
            ("tampered", Some(&tampered(&reader)), "UNAUTHORIZED_ERR"),
        ];
        for (what, token, expected) in cases {
            let result = call(&server, token, rpc, &f).await;
            let status = result.expect_err(&format!("{rpc:?} with {what} token succeeded"));
            assert_eq!(status.code(), Code::Unauthenticated, "{rpc:?} {what}");
            assert_eq!(reason(&status).as_deref(), Some(expected), "{rpc:?} {what}");
        }

        // Users are refused service-only calls whatever their roles.
        let user_refusal = match rpc.required() {
            Need::ServiceOnly => "SERVICE_ONLY_ERR",
            Need::Role(_) => "UNAUTHORIZED_ERR",
        };

        // Each role on the instance.
        for (role, token) in &role_tokens {
            let role = *role;
            let result = call(&server, Some(token), rpc, &f).await;
            let expected = match rpc.required() {
                Need::Role(required) => grants(role, required),
                Need::ServiceOnly => false,
            };
            assert_eq!(
                allowed(&result),
                expected,
                "{rpc:?} as {role:?}: {result:?}"
            );
            if !expected {
                assert_error(result, Code::PermissionDenied, user_refusal);
            }
        }

        // A Manager of another instance reaches nothing here.
        assert_error(
            call(&server, Some(&outsider), rpc, &f).await,
            Code::PermissionDenied,
            user_refusal,
        );

        // A service identity: nothing without an authorization, Reader with one.
        assert_error(
            call(&server, Some(&pg), rpc, &f).await,
            Code::PermissionDenied,
            "UNAUTHORIZED_ERR",
        );
        let authorization = authorize(&server, &f.instance, PG_DEPLOYMENT).await;
        let result = call(&server, Some(&pg), rpc, &f).await;
        assert_eq!(
            allowed(&result),
            matches!(
                rpc.required(),
                Need::Role(pb::Role::Reader) | Need::ServiceOnly
            ),
            "{rpc:?} as an authorized service: {result:?}"
        );
        server
            .iam()
            .delete_authorization(pb::DeleteAuthorizationRequest { id: authorization })
            .await
            .unwrap();

        // The admin may do everything users may do.
        let result = call(&server, Some(kmsim_tests::DEV_TOKEN), rpc, &f).await;
        match rpc.required() {
            Need::Role(_) => assert!(allowed(&result), "{rpc:?} as admin: {result:?}"),
            Need::ServiceOnly => {
                assert_error(result, Code::PermissionDenied, "SERVICE_ONLY_ERR");
            }
        }
    }
}

#[tokio::test]
async fn reader_gets_metadata_and_reader_plus_the_payload() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let standard = server
        .keys()
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "standard".into(),
            r#type: pb::KeyType::Standard as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let get = |token: String| {
        let mut keys = server.keys_as(Some(&token));
        let crn = standard.crn.clone();
        async move {
            keys.get_key(pb::GetKeyRequest { key: crn })
                .await
                .unwrap()
                .into_inner()
                .key
                .unwrap()
        }
    };
    let (_, reader) = user(&server, &instance, &[pb::Role::Reader]).await;
    let (_, reader_plus) = user(&server, &instance, &[pb::Role::ReaderPlus]).await;
    let as_reader = get(reader).await;
    assert_eq!(as_reader.id, standard.id);
    assert!(as_reader.payload.is_empty(), "a Reader gets no payload");
    assert_eq!(get(reader_plus).await.payload.len(), 32);
}

#[tokio::test]
async fn api_key_exchange_and_revocation() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;

    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "alice@example.com".into(),
            description: "alice's laptop".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let api_key = created.api_key.unwrap();
    let identity = api_key.identity.unwrap();
    server
        .iam()
        .create_access_policy(pb::CreateAccessPolicyRequest {
            identity_id: identity.id.clone(),
            instance: instance.clone(),
            roles: vec![pb::Role::Writer as i32],
        })
        .await
        .unwrap();

    // The exchange: a bearer token with an expiry by the server's clock.
    let response = server
        .iam_as(None)
        .create_token(pb::CreateTokenRequest {
            api_key: created.secret.clone(),
            expires_in_seconds: 600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.token_type, "Bearer");
    assert_eq!(response.identity.unwrap().id, identity.id);
    let expires = response.expiration_time.unwrap();
    assert_eq!(
        expires.seconds * 1000,
        server.clock.now().as_millis() + 600_000
    );
    let token = response.access_token;
    assert_eq!(token.split('.').count(), 3, "a compact JWT");
    wrap(&server, &token, &root.crn).await.unwrap();

    // A second key of the same identity.
    let second = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            identity_id: identity.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.api_key.unwrap().identity.unwrap().id, identity.id);
    let second_token = server.token(&second.secret).await;

    // Wrong secrets are refused.
    let mut wrong = created.secret.clone();
    wrong.pop();
    wrong.push('x');
    for bad in [wrong.as_str(), "kmsim-ak-nope", "hunter2"] {
        assert_error(
            server
                .iam_as(None)
                .create_token(pb::CreateTokenRequest {
                    api_key: bad.into(),
                    expires_in_seconds: 0,
                })
                .await,
            Code::Unauthenticated,
            "UNAUTHORIZED_ERR",
        );
    }

    // Deleting the API key revokes its (cached) token at once, and the key itself.
    server
        .iam()
        .delete_api_key(pb::DeleteApiKeyRequest {
            id: api_key.id.clone(),
        })
        .await
        .unwrap();
    assert_error(
        wrap(&server, &token, &root.crn).await,
        Code::Unauthenticated,
        "UNAUTHORIZED_ERR",
    );
    assert_error(
        server
            .iam_as(None)
            .create_token(pb::CreateTokenRequest {
                api_key: created.secret,
                expires_in_seconds: 0,
            })
            .await,
        Code::Unauthenticated,
        "UNAUTHORIZED_ERR",
    );
    // The identity's other key still works, until the identity is deleted.
    wrap(&server, &second_token, &root.crn).await.unwrap();
    server
        .iam()
        .delete_identity(pb::DeleteIdentityRequest {
            id: identity.id.clone(),
        })
        .await
        .unwrap();
    assert_error(
        wrap(&server, &second_token, &root.crn).await,
        Code::Unauthenticated,
        "UNAUTHORIZED_ERR",
    );
    let policies = server
        .iam()
        .list_access_policies(pb::ListAccessPoliciesRequest {
            identity_id: identity.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        policies.policies.is_empty(),
        "the identity's policies went with it"
    );
}

#[tokio::test]
async fn iam_is_for_administrators_and_policies_are_validated() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let (_, manager) = user(&server, &instance, &[pb::Role::Manager]).await;
    assert_error(
        server
            .iam_as(Some(&manager))
            .create_api_key(pb::CreateApiKeyRequest {
                kind: pb::IdentityKind::User as i32,
                name: "escalation".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    assert_error(
        server
            .iam_as(None)
            .list_authorizations(pb::ListAuthorizationsRequest::default())
            .await,
        Code::Unauthenticated,
        "UNAUTHORIZED_ERR",
    );

    // Service identities act through authorizations, not policies.
    let (pg, _) = service(&server, POSTGRES, "").await;
    let status = assert_error(
        server
            .iam()
            .create_access_policy(pb::CreateAccessPolicyRequest {
                identity_id: pg,
                instance: instance.clone(),
                roles: vec![pb::Role::Reader as i32],
            })
            .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(kmsim_tests::violated_fields(&status), ["identity_id"]);
    // Only Reader can be authorized.
    let status = assert_error(
        server
            .iam()
            .create_authorization(pb::CreateAuthorizationRequest {
                source_service_name: POSTGRES.into(),
                target_instance: instance.clone(),
                role: pb::Role::Writer as i32,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(kmsim_tests::violated_fields(&status), ["role"]);

    // A user made Administrator may manage instances.
    let (admin_id, admin) = user(&server, &instance, &[]).await;
    server
        .iam()
        .create_access_policy(pb::CreateAccessPolicyRequest {
            identity_id: admin_id,
            instance: String::new(),
            roles: vec![pb::Role::Administrator as i32],
        })
        .await
        .unwrap();
    server
        .instances_as(Some(&admin))
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn identities_are_recorded_and_instances_are_isolated() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let other = server.instance().await;
    let (writer_id, writer) = user(&server, &instance, &[pb::Role::Writer]).await;
    let (manager_id, manager) = user(&server, &instance, &[pb::Role::Manager]).await;
    let key = server
        .keys_as(Some(&writer))
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "recorded".into(),
            r#type: pb::KeyType::Root as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(key.created_by, writer_id);
    let deleted = server
        .keys_as(Some(&manager))
        .delete_key(pb::DeleteKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(deleted.deleted_by, manager_id);

    // A Manager of the other instance cannot reach this instance's key through a path that
    // names its own instance either: the key is not in that instance.
    let (_, outsider) = user(&server, &other, &[pb::Role::Manager]).await;
    assert_error(
        server
            .keys_as(Some(&outsider))
            .get_key(pb::GetKeyRequest {
                key: key_path(&other, &key.id),
            })
            .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
    assert_error(
        server
            .keys_as(Some(&outsider))
            .get_key(pb::GetKeyRequest {
                key: key_path(&instance, &key.id),
            })
            .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
}

/// IAM is a service of its own: its token-signing key lives outside the HSM's slots, so
/// tokens issued before a zeroization, a tamper response or a reset keep working (an
/// administrator's and a role-less user's alike), and API keys still exchange for tokens.
#[tokio::test]
async fn tokens_issued_before_an_hsm_wipe_or_a_reset_keep_working() {
    let server = TestServer::start().await;
    let mut iam = server.iam();
    let created = iam
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "operator".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let plain_user = server.token(&created.secret).await;
    let admin = iam
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "administrator".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    iam.create_access_policy(pb::CreateAccessPolicyRequest {
        identity_id: admin.api_key.unwrap().identity.unwrap().id,
        instance: String::new(),
        roles: vec![pb::Role::Administrator as i32],
    })
    .await
    .unwrap();
    let admin_token = server.token(&admin.secret).await;
    let instance = server.instance().await;

    let check = |stage: &'static str| {
        let plain_user = plain_user.clone();
        let admin_token = admin_token.clone();
        let server = &server;
        async move {
            // The role-less user is refused for permission, not authentication.
            let refused = server
                .instances_as(Some(&plain_user))
                .list_instances(pb::ListInstancesRequest::default())
                .await
                .unwrap_err();
            assert_eq!(
                refused.code(),
                Code::PermissionDenied,
                "{stage}: {refused:?}"
            );
            server
                .instances_as(Some(&admin_token))
                .list_instances(pb::ListInstancesRequest::default())
                .await
                .unwrap_or_else(|e| panic!("{stage}: the admin's token is refused: {e:?}"));
        }
    };
    check("before").await;
    server.hsm().zeroize(pb::ZeroizeRequest {}).await.unwrap();
    check("after Zeroize").await;
    server.hsm().tamper(pb::TamperRequest {}).await.unwrap();
    check("after Tamper").await;
    server.simulator().reset(pb::ResetRequest {}).await.unwrap();
    check("after Reset").await;
    // The admin's token administers the reset server; API keys still exchange for tokens.
    let fresh = server
        .instances_as(Some(&admin_token))
        .create_instance(pb::CreateInstanceRequest {
            name: "after reset".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(fresh.instance.unwrap().id, instance);
    let renewed = server.token(&created.secret).await;
    let again = server
        .instances_as(Some(&renewed))
        .list_instances(pb::ListInstancesRequest::default())
        .await;
    assert_eq!(again.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn access_policies_and_authorizations_are_listed_in_pages() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    for _ in 0..5 {
        user(&server, &instance, &[pb::Role::Reader]).await;
    }
    for n in 0..3 {
        authorize(
            &server,
            &instance,
            &format!("crn:v1:bluemix:public:databases-for-postgresql:us-south:a/kmsim:pg-{n}::"),
        )
        .await;
    }

    // Policies on the instance, two at a time: every one exactly once, in order.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = server
            .iam()
            .list_access_policies(pb::ListAccessPoliciesRequest {
                instance: instance.clone(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.policies.len() <= 2);
        pages += 1;
        seen.extend(page.policies.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let all: Vec<String> = server
        .iam()
        .list_access_policies(pb::ListAccessPoliciesRequest {
            instance: instance.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .policies
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(all.len(), 5);
    assert_eq!(
        seen, all,
        "the pages add up to the whole list, in its order"
    );

    // Authorizations: a page of 2, then the last one.
    let first = server
        .iam()
        .list_authorizations(pb::ListAuthorizationsRequest {
            target_instance: instance.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.authorizations.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let last = server
        .iam()
        .list_authorizations(pb::ListAuthorizationsRequest {
            target_instance: instance.clone(),
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.authorizations.len(), 1);
    assert!(last.next_page_token.is_empty());
    assert!(
        first
            .authorizations
            .iter()
            .all(|a| a.id != last.authorizations[0].id)
    );

    // Bad paging arguments are field violations.
    let bad_token = server
        .iam()
        .list_access_policies(pb::ListAccessPoliciesRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await;
    assert_error(bad_token, Code::InvalidArgument, "BAD_BODY_ERR");
    let too_big = server
        .iam()
        .list_authorizations(pb::ListAuthorizationsRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert_eq!(kmsim_tests::violated_fields(&too_big), ["page_size"]);
}

/// A token minted under a simulated clock set years ahead is refused by the same data
/// directory served on the system clock (its `iat` lies in the future), as UNAUTHENTICATED.
#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let master = [0x24; 32];
    let credentials = kmsim_server::config::random_credentials();
    // 2030-01-01, years after the machine's clock.
    let ahead = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_893_456_000_000,
    )));
    let server = TestServer::start_with(
        kmsim_tests::persistent_config(dir.path(), master, &credentials, ahead.clone()),
        ahead,
    )
    .await;
    let instance = server.instance().await;
    let (_, token) = user(&server, &instance, &[pb::Role::Reader]).await;
    server
        .keys_as(Some(&token))
        .list_keys(pb::ListKeysRequest {
            instance: instance.clone(),
            ..Default::default()
        })
        .await
        .expect("valid under the clock that issued it");
    server.stop().await;

    let mut config = kmsim_tests::persistent_config(
        dir.path(),
        master,
        &credentials,
        Arc::new(SimulatedClock::starting_now()),
    );
    config.clock = Arc::new(kmsim_server::clock::SystemClock);
    let server = TestServer::start_with(config, Arc::new(SimulatedClock::starting_now())).await;
    let refused = server
        .keys_as(Some(&token))
        .list_keys(pb::ListKeysRequest {
            instance,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("UNAUTHORIZED_ERR"));
}
