//! What the clock does is audited: an automatic rotation by policy, an expiry to Deactivated,
//! an automatic purge after 90 days, a registration's retention ending and a
//! dual-authorization window lapsing each write an event named as the manual action's (with
//! the instance flavour's prefix), on the key's CRN and instance, with the service itself as
//! initiator (kind SYSTEM, id the service name, no method).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_client::KeyRef;
use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, key_path};

use crate::registrations::{PG_1, authorize, register, service};

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn every_timer_action_writes_a_system_audit_event() {
    let server = TestServer::start().await;
    let instance = server.instance_of(pb::InstanceFlavor::Hpcs).await;
    let client = server.client();
    let mut keys = server.keys();
    let path = |key: &pb::Key| key_path(&instance, &key.id);

    // Rotation by policy.
    let rotating = server.root_key(&instance).await;
    client
        .set_rotation_policy(&KeyRef::parse(&path(&rotating)).unwrap(), true, 1)
        .await
        .unwrap();
    // Expiry.
    let now = server.kms.now();
    let expiring = keys
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "expiring".into(),
            r#type: pb::KeyType::Root as i32,
            expiration_time: Some(prost_types::Timestamp {
                seconds: now.as_millis() / 1000 + 86_400,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    // Automatic purge.
    let purged = server.root_key(&instance).await;
    keys.delete_key(pb::DeleteKeyRequest {
        key: path(&purged),
        force: false,
    })
    .await
    .unwrap();
    // Dual authorization lapsing.
    let dual = server.root_key(&instance).await;
    client
        .set_dual_auth_delete_policy(&KeyRef::parse(&path(&dual)).unwrap(), true)
        .await
        .unwrap();
    keys.set_key_for_deletion(pb::SetKeyForDeletionRequest { key: path(&dual) })
        .await
        .unwrap();
    // A registration's retention ending.
    let registered = server.root_key(&instance).await;
    authorize(&server, &instance).await;
    let pg1 = service(&server, PG_1).await;
    register(&server, &pg1, &registered.crn, PG_1, false)
        .await
        .unwrap();
    server
        .registrations_as(Some(&pg1))
        .delete_registration(pb::DeleteRegistrationRequest {
            key: registered.crn.clone(),
            resource_crn: PG_1.to_owned(),
            retain_for: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
        })
        .await
        .unwrap();

    server.advance_rpc(91 * DAY).await;
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
    let system: Vec<&pb::AuditEvent> = trail
        .iter()
        .filter(|e| e.initiator.as_ref().unwrap().kind == pb::AuditInitiatorKind::System as i32)
        .collect();
    let find = |action: &str, key: &pb::Key| -> Vec<&pb::AuditEvent> {
        system
            .iter()
            .copied()
            .filter(|e| e.action == action && e.target_crn == key.crn)
            .collect()
    };
    for event in &system {
        let initiator = event.initiator.as_ref().unwrap();
        assert_eq!(initiator.id, "hs-crypto", "{event:?}");
        assert!(event.method.is_empty(), "{event:?}");
        assert_eq!(event.instance_id, instance);
        assert_eq!(event.outcome, pb::AuditOutcome::Success as i32);
        assert_eq!(event.http_status, 200);
        assert!(event.correlation_id.starts_with("kmsim-"), "{event:?}");
    }

    let rotations = find("hs-crypto.secrets.rotate", &rotating);
    assert!(!rotations.is_empty(), "{system:#?}");
    let current = client
        .get_key(&KeyRef::parse(&path(&rotating)).unwrap())
        .await
        .unwrap()
        .current_version
        .unwrap()
        .id;
    assert_ne!(current, rotating.current_version.unwrap().id);
    assert_eq!(rotations.last().unwrap().key_version_id, current);
    assert_eq!(
        rotations[0].severity,
        pb::AuditSeverity::Warning as i32,
        "as a manual rotation"
    );

    let expired = find("hs-crypto.secrets.expire", &expiring);
    assert_eq!(expired.len(), 1, "{system:#?}");
    assert_eq!(expired[0].key_state, pb::KeyState::Deactivated as i32);

    let purges = find("hs-crypto.secrets.purge", &purged);
    assert_eq!(purges.len(), 1, "{system:#?}");
    assert_eq!(purges[0].key_state, pb::KeyState::Destroyed as i32);

    let lapses = find("hs-crypto.secrets.unsetkeyfordeletion", &dual);
    assert_eq!(lapses.len(), 1, "{system:#?}");

    let removed = find("hs-crypto.registrations.delete", &registered);
    assert_eq!(removed.len(), 1, "{system:#?}");
    assert_eq!(removed[0].severity, pb::AuditSeverity::Critical as i32);

    // No call made by a caller is attributed to the system.
    assert!(
        trail
            .iter()
            .filter(|e| !e.method.is_empty())
            .all(|e| e.initiator.as_ref().unwrap().kind != pb::AuditInitiatorKind::System as i32)
    );
}
