//! Key and instance policies end to end: automatic rotation by the service clock (fires when
//! the interval passes and not before, once per clock jump, old ciphertexts still unwrap),
//! dual-authorization delete between two Managers (same user refused, lapse after 7 days,
//! unset, `NOT_DUAL_AUTH_ERR`, the policy cannot be removed), permissions, instance defaults
//! for new keys only, key create/import access, and validation of intervals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_client::KeyRef;
use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error, key_path, violated_fields};
use tonic::Code;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A new user identity with `role` on `instance`, and its token.
async fn user(server: &TestServer, instance: &str, role: pb::Role) -> (String, String) {
    let (identity, api_key) = user_with_api_key(server, instance, role).await;
    (identity, server.token(&api_key).await)
}

/// A new user identity with `role` on `instance`, and its API key.
async fn user_with_api_key(
    server: &TestServer,
    instance: &str,
    role: pb::Role,
) -> (String, String) {
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: format!("user with {role:?}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let identity = created.api_key.unwrap().identity.unwrap().id;
    server
        .iam()
        .create_access_policy(pb::CreateAccessPolicyRequest {
            identity_id: identity.clone(),
            instance: instance.to_owned(),
            roles: vec![role as i32],
        })
        .await
        .unwrap();
    (identity, created.secret)
}

async fn get_key(server: &TestServer, key: &str) -> pb::Key {
    server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: key.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
}

fn rotation(enabled: bool, interval_months: i32) -> Option<pb::RotationPolicy> {
    Some(pb::RotationPolicy {
        enabled,
        interval_months,
        ..Default::default()
    })
}

fn dual_auth(enabled: bool) -> Option<pb::DualAuthDeletePolicy> {
    Some(pb::DualAuthDeletePolicy {
        enabled,
        metadata: None,
    })
}

async fn set_key_policies(
    server: &TestServer,
    token: &str,
    request: pb::SetKeyPoliciesRequest,
) -> Result<pb::KeyPolicies, tonic::Status> {
    server
        .keys_as(Some(token))
        .set_key_policies(request)
        .await
        .map(|r| r.into_inner().policies.unwrap())
}

async fn set_for_deletion(
    server: &TestServer,
    token: &str,
    key: &str,
) -> Result<pb::DualAuthDeleteState, tonic::Status> {
    server
        .keys_as(Some(token))
        .set_key_for_deletion(pb::SetKeyForDeletionRequest {
            key: key.to_owned(),
        })
        .await
        .map(|r| r.into_inner().dual_auth_delete.unwrap())
}

async fn delete(server: &TestServer, token: &str, key: &str) -> Result<pb::Key, tonic::Status> {
    server
        .keys_as(Some(token))
        .delete_key(pb::DeleteKeyRequest {
            key: key.to_owned(),
            force: false,
        })
        .await
        .map(|r| r.into_inner().key.unwrap())
}

async fn wrap(server: &TestServer, key: &str, plaintext: &[u8]) -> Vec<u8> {
    server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key.to_owned(),
            plaintext: plaintext.to_vec(),
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext
}

async fn unwrap(server: &TestServer, key: &str, ciphertext: &[u8]) -> Vec<u8> {
    server
        .keys()
        .unwrap_key(pb::UnwrapKeyRequest {
            key: key.to_owned(),
            ciphertext: ciphertext.to_vec(),
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext
}

/// A root key of `instance` with a dual-authorization delete policy, and its path.
async fn dual_auth_key(server: &TestServer, instance: &str) -> String {
    let root = server.root_key(instance).await;
    let path = key_path(instance, &root.id);
    let client = server.client();
    let policies = client
        .set_dual_auth_delete_policy(&KeyRef::parse(&path).unwrap(), true)
        .await
        .unwrap();
    assert!(policies.dual_auth_delete.unwrap().enabled);
    path
}

#[tokio::test]
async fn automatic_rotation_fires_when_the_interval_passes_and_not_before() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    let path = key_path(&instance, &root.id);
    let old_ciphertext = wrap(&server, &path, b"a data key of 32 bytes, exactly.").await;

    let client = server.client();
    let key = KeyRef::parse(&path).unwrap();
    let policies = client.set_rotation_policy(&key, true, 1).await.unwrap();
    let policy = policies.rotation.unwrap();
    assert!(policy.enabled);
    assert_eq!(policy.interval_months, 1);
    let created = root.create_time.unwrap().seconds;
    assert_eq!(
        policy.next_rotation_time.unwrap().seconds,
        created + 30 * 24 * 3600,
        "one month is 30 days, counted from creation"
    );
    let metadata = policy.metadata.unwrap();
    assert!(
        metadata
            .crn
            .ends_with(&format!(":{instance}:policy:{}", metadata.id)),
        "{metadata:?}"
    );
    assert_eq!(metadata.created_by, root.created_by);
    assert_eq!(metadata.updated_by, root.created_by);

    // Not before the interval.
    server.advance_rpc(29 * DAY).await;
    let key_now = get_key(&server, &path).await;
    assert_eq!(key_now.version_count, 1, "no rotation before 30 days");
    assert!(key_now.last_rotate_time.is_none());
    assert!(key_now.rotation.as_ref().unwrap().enabled);

    // The interval passes: AdvanceClock fires the rotation before it returns.
    server.advance_rpc(DAY + Duration::from_secs(1)).await;
    let rotated = get_key(&server, &path).await;
    assert_eq!(rotated.version_count, 2, "rotated once the interval passed");
    assert_ne!(
        rotated.current_version.as_ref().unwrap().id,
        root.current_version.as_ref().unwrap().id
    );
    let rotate_time = rotated.last_rotate_time.unwrap().seconds;
    assert_eq!(
        rotated
            .rotation
            .unwrap()
            .next_rotation_time
            .unwrap()
            .seconds,
        rotate_time + 30 * 24 * 3600,
        "the next rotation is due one interval after this one"
    );
    // New wraps use the new version; the old ciphertext still unwraps.
    let new_wrap = server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: path.clone(),
            plaintext: b"another".to_vec(),
            aad: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        new_wrap.key_version.unwrap().id,
        rotated.current_version.unwrap().id
    );
    assert_eq!(
        unwrap(&server, &path, &old_ciphertext).await,
        b"a data key of 32 bytes, exactly."
    );

    // A clock jump over three intervals rotates once.
    server.advance_rpc(95 * DAY).await;
    assert_eq!(get_key(&server, &path).await.version_count, 3);

    // A disabled policy does not rotate.
    let disabled = client.set_rotation_policy(&key, false, 1).await.unwrap();
    let disabled = disabled.rotation.unwrap();
    assert!(!disabled.enabled);
    assert!(disabled.next_rotation_time.is_none());
    assert_eq!(
        disabled.metadata.unwrap().id,
        metadata.id,
        "an update keeps the policy's id"
    );
    server.advance_rpc(61 * DAY).await;
    assert_eq!(get_key(&server, &path).await.version_count, 3);
}

#[tokio::test]
async fn a_suspended_key_does_not_rotate_automatically() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    let path = key_path(&instance, &root.id);
    let client = server.client();
    let key = KeyRef::parse(&path).unwrap();
    client.set_rotation_policy(&key, true, 1).await.unwrap();
    client.disable(&key).await.unwrap();
    server.advance_rpc(31 * DAY).await;
    assert_eq!(get_key(&server, &path).await.version_count, 1);
    client.enable(&key).await.unwrap();
    // Overdue: the next timer pass rotates it.
    server.advance_rpc(Duration::from_secs(1)).await;
    assert_eq!(get_key(&server, &path).await.version_count, 2);
}

#[tokio::test]
async fn rotation_policies_need_generated_root_keys_and_valid_intervals() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let client = server.client();
    let standard = client
        .create_standard_key(&instance, "secret")
        .await
        .unwrap();
    let imported = client
        .import_root_key(&instance, "imported", &[7u8; 32])
        .await
        .unwrap();
    let root = server.root_key(&instance).await;
    let admin = kmsim_tests::DEV_TOKEN;

    let request = |key: &pb::Key, policy| pb::SetKeyPoliciesRequest {
        key: key_path(&instance, &key.id),
        rotation: policy,
        dual_auth_delete: None,
    };
    assert_error(
        set_key_policies(&server, admin, request(&standard, rotation(true, 3))).await,
        Code::FailedPrecondition,
        "KEY_ROOT_REQ_ERR",
    );
    assert_error(
        set_key_policies(&server, admin, request(&imported, rotation(true, 3))).await,
        Code::FailedPrecondition,
        "KEY_IMPORTED_ROTATION_POLICY_ERR",
    );
    for months in [0, 13, -1] {
        let status = assert_error(
            set_key_policies(&server, admin, request(&root, rotation(true, months))).await,
            Code::InvalidArgument,
            "BAD_BODY_ERR",
        );
        assert_eq!(violated_fields(&status), ["rotation.interval_months"]);
    }
    let status = assert_error(
        set_key_policies(&server, admin, request(&root, None)).await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), ["rotation"]);
    let status = assert_error(
        server
            .instances()
            .set_instance_policies(pb::SetInstancePoliciesRequest {
                instance: instance.clone(),
                rotation: rotation(true, 13),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), ["rotation.interval_months"]);
    // Nothing was stored by the refused requests.
    let policies = client
        .get_key_policies(&KeyRef::parse(&key_path(&instance, &root.id)).unwrap())
        .await
        .unwrap();
    assert!(policies.rotation.is_none() && policies.dual_auth_delete.is_none());
    // Twelve months is the longest interval.
    let policies = set_key_policies(&server, admin, request(&root, rotation(true, 12)))
        .await
        .unwrap();
    assert_eq!(policies.rotation.unwrap().interval_months, 12);
}

#[tokio::test]
async fn dual_auth_delete_needs_a_second_manager() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let (a_id, a) = user(&server, &instance, pb::Role::Manager).await;
    let (_, b) = user(&server, &instance, pb::Role::Manager).await;
    let path = dual_auth_key(&server, &instance).await;

    let key = get_key(&server, &path).await;
    let state = key.dual_auth_delete.unwrap();
    assert!(state.enabled && !state.key_set_for_deletion);

    // Nobody set it for deletion: refused.
    assert_error(
        delete(&server, &b, &path).await,
        Code::FailedPrecondition,
        "AUTHORIZATIONS_NOT_MET",
    );

    // A sets it for deletion; the key stays Active and usable.
    let state = set_for_deletion(&server, &a, &path).await.unwrap();
    assert!(state.key_set_for_deletion);
    assert_eq!(state.set_for_deletion_by, a_id);
    assert_eq!(
        state.auth_expiration.unwrap().seconds,
        state.set_for_deletion_time.unwrap().seconds + 7 * 24 * 3600
    );
    let key = get_key(&server, &path).await;
    assert_eq!(key.state, pb::KeyState::Active as i32);
    assert!(key.dual_auth_delete.unwrap().key_set_for_deletion);
    wrap(&server, &path, b"still usable").await;

    // The same user cannot give the second authorization.
    assert_error(
        delete(&server, &a, &path).await,
        Code::FailedPrecondition,
        "AUTHORIZATIONS_NOT_MET",
    );
    assert_eq!(get_key(&server, &path).await.state, 1);

    // A different Manager can.
    let deleted = delete(&server, &b, &path).await.unwrap();
    assert_eq!(deleted.state, pb::KeyState::Destroyed as i32);
}

#[tokio::test]
async fn the_authorization_lapses_after_seven_days_and_unset_cancels_it() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let (_, a_key) = user_with_api_key(&server, &instance, pb::Role::Manager).await;
    let (_, b_key) = user_with_api_key(&server, &instance, pb::Role::Manager).await;
    let a = server.token(&a_key).await;
    let path = dual_auth_key(&server, &instance).await;

    set_for_deletion(&server, &a, &path).await.unwrap();
    server.advance_rpc(7 * DAY).await;
    let (a, b) = (server.token(&a_key).await, server.token(&b_key).await);
    let state = get_key(&server, &path).await.dual_auth_delete.unwrap();
    assert!(
        !state.key_set_for_deletion,
        "lapsed after 7 days: {state:?}"
    );
    assert!(state.auth_expiration.is_none());
    assert_error(
        delete(&server, &b, &path).await,
        Code::FailedPrecondition,
        "AUTHORIZATIONS_NOT_MET",
    );

    // Within the 7 days it works; unset cancels.
    set_for_deletion(&server, &a, &path).await.unwrap();
    server.advance_rpc(6 * DAY).await;
    let (a, b) = (server.token(&a_key).await, server.token(&b_key).await);
    let state = server
        .keys_as(Some(&b))
        .unset_key_for_deletion(pb::UnsetKeyForDeletionRequest { key: path.clone() })
        .await
        .unwrap()
        .into_inner()
        .dual_auth_delete
        .unwrap();
    assert!(!state.key_set_for_deletion);
    assert_error(
        delete(&server, &b, &path).await,
        Code::FailedPrecondition,
        "AUTHORIZATIONS_NOT_MET",
    );

    set_for_deletion(&server, &a, &path).await.unwrap();
    server.advance_rpc(6 * DAY).await;
    let b = server.token(&b_key).await;
    delete(&server, &b, &path).await.unwrap();
}

#[tokio::test]
async fn dual_auth_is_needed_to_set_for_deletion_and_cannot_be_removed() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let root = server.root_key(&instance).await;
    let path = key_path(&instance, &root.id);
    let admin = kmsim_tests::DEV_TOKEN;

    assert_error(
        set_for_deletion(&server, admin, &path).await,
        Code::FailedPrecondition,
        "NOT_DUAL_AUTH_ERR",
    );
    assert_error(
        server
            .keys()
            .unset_key_for_deletion(pb::UnsetKeyForDeletionRequest { key: path.clone() })
            .await,
        Code::FailedPrecondition,
        "NOT_DUAL_AUTH_ERR",
    );

    let request = |enabled| pb::SetKeyPoliciesRequest {
        key: path.clone(),
        rotation: None,
        dual_auth_delete: dual_auth(enabled),
    };
    // Recording a disabled policy on a key without one is allowed and changes nothing.
    let policies = set_key_policies(&server, admin, request(false))
        .await
        .unwrap();
    assert!(!policies.dual_auth_delete.unwrap().enabled);
    let policies = set_key_policies(&server, admin, request(true))
        .await
        .unwrap();
    assert!(policies.dual_auth_delete.unwrap().enabled);
    assert_error(
        set_key_policies(&server, admin, request(false)).await,
        Code::FailedPrecondition,
        "DUAL_AUTH_POLICY_PERMANENT_ERR",
    );
    let policies = server
        .keys()
        .get_key_policies(pb::GetKeyPoliciesRequest { key: path.clone() })
        .await
        .unwrap()
        .into_inner()
        .policies
        .unwrap();
    assert!(policies.dual_auth_delete.unwrap().enabled, "still enabled");
    // Even the administrator alone cannot delete it now.
    assert_error(
        delete(&server, admin, &path).await,
        Code::FailedPrecondition,
        "AUTHORIZATIONS_NOT_MET",
    );
}

#[tokio::test]
async fn setting_policies_needs_a_manager_and_reading_them_a_reader() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let (_, writer) = user(&server, &instance, pb::Role::Writer).await;
    let (_, reader) = user(&server, &instance, pb::Role::Reader).await;
    let path = dual_auth_key(&server, &instance).await;

    let denied = assert_error(
        set_key_policies(
            &server,
            &writer,
            pb::SetKeyPoliciesRequest {
                key: path.clone(),
                rotation: rotation(true, 1),
                dual_auth_delete: None,
            },
        )
        .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    assert!(denied.message().contains("Manager"), "{denied:?}");
    assert_error(
        set_for_deletion(&server, &writer, &path).await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    assert_error(
        server
            .instances_as(Some(&writer))
            .set_instance_policies(pb::SetInstancePoliciesRequest {
                instance: instance.clone(),
                dual_auth_delete: dual_auth(true),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    // A Reader reads policies.
    let policies = server
        .keys_as(Some(&reader))
        .get_key_policies(pb::GetKeyPoliciesRequest { key: path.clone() })
        .await
        .unwrap()
        .into_inner()
        .policies
        .unwrap();
    assert!(policies.dual_auth_delete.unwrap().enabled);
    server
        .instances_as(Some(&reader))
        .get_instance_policies(pb::GetInstancePoliciesRequest {
            instance: instance.clone(),
        })
        .await
        .unwrap();
    // Another instance's Manager reaches nothing here.
    let other = server.instance().await;
    let (_, outsider) = user(&server, &other, pb::Role::Manager).await;
    assert_error(
        set_for_deletion(&server, &outsider, &path).await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
}

#[tokio::test]
async fn instance_defaults_apply_to_keys_created_later() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let before = server.root_key(&instance).await;
    let client = server.client();

    let policies = client
        .set_instance_policies(pb::SetInstancePoliciesRequest {
            instance: instance.clone(),
            dual_auth_delete: dual_auth(true),
            rotation: rotation(true, 2),
            key_create_import_access: None,
        })
        .await
        .unwrap();
    assert!(policies.dual_auth_delete.as_ref().unwrap().enabled);
    assert_eq!(policies.rotation.as_ref().unwrap().interval_months, 2);
    assert!(policies.key_create_import_access.is_none());
    let read_back = client.get_instance_policies(&instance).await.unwrap();
    assert_eq!(read_back, policies);
    assert!(
        read_back
            .rotation
            .unwrap()
            .metadata
            .unwrap()
            .crn
            .contains(":policy:")
    );

    // The key created before keeps its (absent) policies.
    let before = get_key(&server, &key_path(&instance, &before.id)).await;
    assert!(!before.dual_auth_delete.unwrap().enabled);
    assert!(before.rotation.is_none());

    // New keys get the defaults; an imported key gets no rotation policy.
    let after = server.root_key(&instance).await;
    assert!(after.dual_auth_delete.as_ref().unwrap().enabled);
    assert_eq!(after.rotation.as_ref().unwrap().interval_months, 2);
    let imported = client
        .import_root_key(&instance, "imported", &[9u8; 32])
        .await
        .unwrap();
    assert!(imported.dual_auth_delete.unwrap().enabled);
    assert!(imported.rotation.is_none());

    // The default rotation policy drives automatic rotation (60 days).
    server.advance_rpc(59 * DAY).await;
    let after_path = key_path(&instance, &after.id);
    assert_eq!(get_key(&server, &after_path).await.version_count, 1);
    server.advance_rpc(DAY).await;
    assert_eq!(get_key(&server, &after_path).await.version_count, 2);
    assert_eq!(
        get_key(&server, &key_path(&instance, &before.id))
            .await
            .version_count,
        1
    );
}

#[tokio::test]
async fn key_create_import_access_is_enforced() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let client = server.client();
    let access = |create_root_key, import_root_key, enforce_token| pb::SetInstancePoliciesRequest {
        instance: instance.clone(),
        key_create_import_access: Some(pb::KeyCreateImportAccessPolicy {
            enabled: true,
            create_root_key,
            create_standard_key: false,
            import_root_key,
            import_standard_key: false,
            enforce_token,
            metadata: None,
        }),
        ..Default::default()
    };
    client
        .set_instance_policies(access(true, false, false))
        .await
        .unwrap();

    client.create_root_key(&instance, "allowed").await.unwrap();
    let denied = |result: Result<pb::Key, kmsim_client::ClientError>, rule: &str| {
        let error = result.unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
        assert_eq!(error.reason_code(), Some("KEY_CREATE_IMPORT_ACCESS_ERR"));
        let status = error.status().unwrap();
        let info = tonic_types::StatusExt::get_error_details(status)
            .error_info()
            .cloned()
            .unwrap();
        assert_eq!(info.metadata.get("denied").map(String::as_str), Some(rule));
    };
    denied(
        client.create_standard_key(&instance, "standard").await,
        "create_standard_key",
    );
    denied(
        client
            .import_root_key(&instance, "import", &[1u8; 32])
            .await,
        "import_root_key",
    );

    // Imports allowed, but only through the import token.
    client
        .set_instance_policies(access(false, true, true))
        .await
        .unwrap();
    denied(
        client.create_root_key(&instance, "generated").await,
        "create_root_key",
    );
    denied(
        client.import_root_key(&instance, "plain", &[1u8; 32]).await,
        "enforce_token",
    );
    client.create_import_token(&instance, 600, 5).await.unwrap();
    let sealed = client
        .secure_import_root_key(&instance, "sealed", &[2u8; 32])
        .await
        .unwrap();
    assert!(sealed.imported);

    // A disabled policy enforces nothing.
    let mut off = access(false, false, false);
    off.key_create_import_access.as_mut().unwrap().enabled = false;
    client.set_instance_policies(off).await.unwrap();
    client
        .create_standard_key(&instance, "standard")
        .await
        .unwrap();
}

#[tokio::test]
async fn instance_policies_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(kmsim_server::clock::SimulatedClock::new(
        kmsim_server::clock::Timestamp::from_millis(1_767_225_600_000),
    ));
    let master = [5u8; 32];
    let credentials = kmsim_server::config::random_credentials();
    let config = kmsim_tests::persistent_config(dir.path(), master, &credentials, clock.clone());
    let server = TestServer::start_with(config, clock.clone()).await;
    let instance = server.instance().await;
    let path = dual_auth_key(&server, &instance).await;
    server
        .client()
        .set_instance_policies(pb::SetInstancePoliciesRequest {
            instance: instance.clone(),
            dual_auth_delete: dual_auth(true),
            ..Default::default()
        })
        .await
        .unwrap();
    server.stop().await;

    let config = kmsim_tests::persistent_config(dir.path(), master, &credentials, clock.clone());
    let server = TestServer::start_with(config, clock).await;
    let policies = server
        .client()
        .get_instance_policies(&instance)
        .await
        .unwrap();
    assert!(policies.dual_auth_delete.unwrap().enabled);
    assert!(
        get_key(&server, &path)
            .await
            .dual_auth_delete
            .unwrap()
            .enabled
    );
    assert!(
        server
            .root_key(&instance)
            .await
            .dual_auth_delete
            .unwrap()
            .enabled
    );
}
