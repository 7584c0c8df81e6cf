//! The audit trail end to end: a scripted sequence of calls (allowed, refused with 403,
//! unauthenticated, on an HPCS instance, injected faults) yields exactly the expected event
//! names, outcomes and severities in order; no event and no file of the data directory holds
//! a plaintext, ciphertext, AAD, token or API key; events survive a restart with sequence
//! numbers continuing; listing pages and filters; only Administrators and the instance's
//! Managers read events; Watch replays then streams live events; Reset wipes the trail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::config::random_credentials;
use kmsim_tests::{TestServer, assert_error, reason};
use pb::event_service_client::EventServiceClient;
use pb::fault_rule::Trigger;
use tokio_stream::StreamExt;
use tonic::Code;

const PLAINTEXT: [u8; 32] = [
    0xA1, 0x5E, 0xC2, 0x37, 0x91, 0x0D, 0xFE, 0x44, 0x6B, 0x23, 0x88, 0x19, 0xD4, 0x70, 0x3C, 0xAB,
    0x52, 0xE6, 0x0F, 0x9D, 0x31, 0xC8, 0x7A, 0x15, 0xB0, 0x4E, 0x93, 0x2F, 0x6D, 0xE1, 0x08, 0xC5,
];
const AAD: &str = "audit-aad-marker-7f3e9c21";

fn all() -> pb::AuditEventFilter {
    pb::AuditEventFilter::default()
}

async fn list(server: &TestServer, filter: pb::AuditEventFilter) -> Vec<pb::AuditEvent> {
    server
        .client()
        .list_audit_events(filter, 0)
        .await
        .expect("the admin lists audit events")
}

fn events_as(
    server: &TestServer,
    token: &str,
) -> EventServiceClient<kmsim_client::AuthenticatedChannel> {
    EventServiceClient::with_interceptor(server.channel(), TestServer::auth(Some(token)))
}

/// A new user with `roles` on `instance`, its id and a token (three audited calls).
async fn user(server: &TestServer, instance: &str, roles: &[pb::Role]) -> (String, String, String) {
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "audited user".into(),
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
            roles: roles.iter().map(|r| *r as i32).collect(),
        })
        .await
        .unwrap();
    let token = server
        .iam_as(None)
        .create_token(pb::CreateTokenRequest {
            api_key: created.secret.clone(),
            expires_in_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    (identity, created.secret, token)
}

fn summary(events: &[pb::AuditEvent]) -> Vec<(String, pb::AuditOutcome, pb::AuditSeverity)> {
    events
        .iter()
        .map(|e| {
            (
                e.action.clone(),
                pb::AuditOutcome::try_from(e.outcome).unwrap(),
                pb::AuditSeverity::try_from(e.severity).unwrap(),
            )
        })
        .collect()
}

/// Every form a secret could take in an event or on disk.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    vec![
        secret.to_vec(),
        secret
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
    ]
}

fn assert_absent(haystack: &[u8], secrets: &[Vec<u8>], what: &str) {
    for secret in secrets {
        for form in forms(secret) {
            assert!(
                !haystack.windows(form.len()).any(|w| w == form.as_slice()),
                "{what} holds secret material"
            );
        }
    }
}

fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn a_scripted_sequence_yields_the_expected_events_and_no_secrets() {
    use pb::AuditOutcome::{Failure, Success};
    use pb::AuditSeverity::{Critical, Normal, Warning};

    let dir = tempfile::tempdir().unwrap();
    let master = [0x24; 32];
    let credentials = random_credentials();
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));
    let config = || kmsim_tests::persistent_config(dir.path(), master, &credentials, clock.clone());
    let server = TestServer::start_with(config(), clock.clone()).await;
    let mut keys = server.keys();

    let kp = server.instance().await;
    let key = server.root_key(&kp).await;
    let wrapped = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            plaintext: PLAINTEXT.to_vec(),
            aad: vec![AAD.into()],
        })
        .await
        .unwrap()
        .into_inner();
    let version = wrapped.key_version.clone().unwrap().id;
    keys.unwrap_key(pb::UnwrapKeyRequest {
        key: key.crn.clone(),
        ciphertext: wrapped.ciphertext.clone(),
        aad: vec![AAD.into()],
    })
    .await
    .unwrap();
    let (reader, api_key, token) = user(&server, &kp, &[pb::Role::Reader]).await;
    let refused = assert_error(
        server
            .keys_as(Some(&token))
            .delete_key(pb::DeleteKeyRequest {
                key: key.crn.clone(),
                force: false,
            })
            .await,
        Code::PermissionDenied,
        "UNAUTHORIZED_ERR",
    );
    let unauthenticated = server
        .keys_as(None)
        .get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let hpcs = server.instance_of(pb::InstanceFlavor::Hpcs).await;
    let hpcs_key = server.root_key(&hpcs).await;
    keys.wrap_key(pb::WrapKeyRequest {
        key: hpcs_key.crn.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let rotated = keys
        .rotate_key(pb::RotateKeyRequest {
            key: key.crn.clone(),
            material: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    keys.disable_key(pb::DisableKeyRequest {
        key: key.crn.clone(),
    })
    .await
    .unwrap();
    keys.delete_key(pb::DeleteKeyRequest {
        key: key.crn.clone(),
        force: false,
    })
    .await
    .unwrap();
    server
        .simulator()
        .inject_fault(pb::InjectFaultRequest {
            rule: Some(pb::FaultRule {
                method: "WrapKey".into(),
                kind: pb::FaultKind::Unavailable as i32,
                trigger: Some(Trigger::EveryNth(1)),
                count: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let injected = keys
        .wrap_key(pb::WrapKeyRequest {
            key: hpcs_key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(injected.code(), Code::Unavailable);

    let events = list(&server, all()).await;
    let expected = [
        ("kmsim.instances.create", Success, Normal),
        ("kms.secrets.create", Success, Normal),
        ("kms.secrets.wrap", Success, Normal),
        ("kms.secrets.unwrap", Success, Normal),
        ("kmsim.iam.api-key.create", Success, Normal),
        ("kmsim.iam.access-policy.create", Success, Normal),
        ("kmsim.iam.token.create", Success, Normal),
        ("kms.secrets.delete", Failure, Critical),
        ("kms.secrets.read", Failure, Critical),
        ("kmsim.instances.create", Success, Normal),
        ("hs-crypto.secrets.create", Success, Normal),
        ("hs-crypto.secrets.wrap", Success, Normal),
        ("kms.secrets.rotate", Success, Warning),
        ("kms.secrets.disable", Success, Warning),
        ("kms.secrets.delete", Success, Critical),
        ("kmsim.simulator.inject-fault", Success, Normal),
        ("hs-crypto.secrets.wrap", Failure, Critical),
    ]
    .map(|(a, o, s)| (a.to_owned(), o, s));
    assert_eq!(summary(&events), expected);
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=17).collect::<Vec<_>>());

    let admin = events[0].initiator.clone().unwrap();
    assert!(!admin.id.is_empty());
    assert_eq!(admin.kind, pb::AuditInitiatorKind::User as i32);
    assert_eq!(events[0].method, "/kmsim.v1.InstanceService/CreateInstance");
    // The wrap and unwrap name the key, its state and the version that made the ciphertext.
    for event in &events[2..4] {
        assert_eq!(event.target_crn, key.crn);
        assert_eq!(event.instance_id, kp);
        assert_eq!(event.key_state, pb::KeyState::Active as i32);
        assert_eq!(event.key_version_id, version);
        assert_eq!(event.initiator, Some(admin.clone()));
        assert_eq!((event.grpc_code, event.http_status), (0, 200));
        assert!(event.reason.is_empty());
        assert!(!event.injected);
        assert!(event.time.is_some());
    }
    // The refusal names the reader, the reason and the statuses.
    assert_eq!(events[7].initiator.as_ref().unwrap().id, reader);
    assert_eq!(events[7].reason, reason(&refused).unwrap());
    assert_eq!(
        (events[7].grpc_code, events[7].http_status),
        (Code::PermissionDenied as i32, 403)
    );
    assert_eq!(events[7].target_crn, key.crn);
    // The unauthenticated call has no initiator.
    assert_eq!(
        events[8].initiator,
        Some(pb::AuditInitiator {
            id: String::new(),
            kind: pb::AuditInitiatorKind::Unspecified as i32,
        })
    );
    assert_eq!(events[8].http_status, 401);
    assert_eq!(events[8].reason, reason(&unauthenticated).unwrap());
    assert_eq!(events[6].initiator.as_ref().unwrap().id, "");
    // The HPCS key's CRN and instance.
    assert_eq!(events[11].target_crn, hpcs_key.crn);
    assert!(events[11].target_crn.contains(":hs-crypto:"));
    assert_eq!(events[11].instance_id, hpcs);
    // Rotate names the new version; disable and delete the resulting state.
    assert_eq!(
        events[12].key_version_id,
        rotated.current_version.unwrap().id
    );
    assert_ne!(events[12].key_version_id, version);
    assert_eq!(events[13].key_state, pb::KeyState::Suspended as i32);
    assert_eq!(events[14].key_state, pb::KeyState::Destroyed as i32);
    // Only the injected failure is marked injected.
    assert!(events[16].injected);
    assert_eq!(events[16].http_status, 503);
    assert_eq!(events[16].reason, reason(&injected).unwrap());
    assert_eq!(events.iter().filter(|e| e.injected).count(), 1);
    // Correlation ids are unique.
    let mut ids: Vec<&str> = events.iter().map(|e| e.correlation_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len());

    let secrets: Vec<Vec<u8>> = vec![
        PLAINTEXT.to_vec(),
        wrapped.ciphertext.clone(),
        AAD.as_bytes().to_vec(),
        api_key.as_bytes().to_vec(),
        token.as_bytes().to_vec(),
        kmsim_tests::DEV_TOKEN.as_bytes().to_vec(),
    ];
    for event in &events {
        assert_absent(format!("{event:?}").as_bytes(), &secrets, "an event");
    }

    // A restart keeps every event; numbering continues after the listing's own event.
    server.stop().await;
    let server = TestServer::start_with(config(), clock.clone()).await;
    server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: hpcs_key.crn.clone(),
        })
        .await
        .unwrap();
    let after = list(&server, all()).await;
    assert_eq!(after[..17], events[..]);
    assert_eq!(after[17].action, "kmsim.audit-events.list");
    assert_eq!(after[17].sequence, 18);
    assert_eq!(after[18].action, "hs-crypto.secrets.read");
    assert_eq!(after[18].sequence, 19);
    assert_eq!(after.len(), 19);
    server.stop().await;

    // No file of the data directory holds any of the secrets.
    let mut paths = Vec::new();
    files(dir.path(), &mut paths);
    let mut scanned = 0;
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        assert_absent(&bytes, &secrets, &path.display().to_string());
    }
    assert!(scanned > 0);
}

#[tokio::test]
async fn listing_pages_filters_and_permissions() {
    let server = TestServer::start().await;
    let kp = server.instance().await;
    let key = server.root_key(&kp).await;
    let hpcs = server.instance_of(pb::InstanceFlavor::Hpcs).await;
    let hpcs_key = server.root_key(&hpcs).await;
    let mut keys = server.keys();
    for _ in 0..5 {
        keys.wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let missing = format!("instances/{kp}/keys/00000000-0000-4000-8000-000000000000");
    keys.wrap_key(pb::WrapKeyRequest {
        key: missing,
        ..Default::default()
    })
    .await
    .unwrap_err();
    let cut = Timestamp::from_millis(1_767_225_600_000).plus(Duration::from_secs(60));
    server.advance(Duration::from_secs(60));
    keys.wrap_key(pb::WrapKeyRequest {
        key: hpcs_key.crn.clone(),
        ..Default::default()
    })
    .await
    .unwrap();

    let everything = list(&server, all()).await;
    assert_eq!(everything.len(), 11);

    // Pages of 3 make up the whole list; the last page has no token.
    let client = server.client();
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_audit_events_page(all(), 0, 3, &token)
            .await
            .unwrap();
        assert!(page.events.len() <= 3);
        paged.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // The listings' own events follow the first eleven.
    assert!(paged.len() > 11);
    assert_eq!(paged[..11], everything[..]);
    assert!(paged.windows(2).all(|w| w[0].sequence < w[1].sequence));

    let only_kp = list(
        &server,
        pb::AuditEventFilter {
            instance_id: kp.clone(),
            ..all()
        },
    )
    .await;
    assert_eq!(only_kp.len(), 1 + 1 + 5 + 1);
    assert!(only_kp.iter().all(|e| e.instance_id == kp));
    let hpcs_events = list(
        &server,
        pb::AuditEventFilter {
            action_prefix: "hs-crypto.".into(),
            ..all()
        },
    )
    .await;
    assert_eq!(
        hpcs_events
            .iter()
            .map(|e| e.action.as_str())
            .collect::<Vec<_>>(),
        ["hs-crypto.secrets.create", "hs-crypto.secrets.wrap"]
    );
    let failures = list(
        &server,
        pb::AuditEventFilter {
            outcome: pb::AuditOutcome::Failure as i32,
            ..all()
        },
    )
    .await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].reason, "KEY_NOT_FOUND_ERR");
    assert_eq!(failures[0].instance_id, kp);
    let later = list(
        &server,
        pb::AuditEventFilter {
            start_time: Some(cut.to_proto()),
            action_prefix: "kms.".into(),
            ..all()
        },
    )
    .await;
    assert_eq!(later.len(), 0);
    let later = list(
        &server,
        pb::AuditEventFilter {
            start_time: Some(cut.to_proto()),
            action_prefix: "hs-crypto.secrets.wrap".into(),
            ..all()
        },
    )
    .await;
    assert_eq!(later.len(), 1);
    let earlier = list(
        &server,
        pb::AuditEventFilter {
            end_time: Some(cut.to_proto()),
            ..all()
        },
    )
    .await;
    assert_eq!(earlier.len(), 10);
    let tail = client.list_audit_events(all(), 9).await.unwrap();
    assert_eq!(tail[0].sequence, 10);

    // Bad requests.
    let mut events = server.events();
    for bad in [
        pb::ListAuditEventsRequest {
            page_token: "zz".into(),
            ..Default::default()
        },
        pb::ListAuditEventsRequest {
            page_size: 1001,
            ..Default::default()
        },
        pb::ListAuditEventsRequest {
            filter: Some(pb::AuditEventFilter {
                outcome: 9,
                ..all()
            }),
            ..Default::default()
        },
    ] {
        let status = events.list_audit_events(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    // A Manager of an instance reads that instance's events, and only when naming it.
    let (_, _, manager) = user(&server, &kp, &[pb::Role::Manager]).await;
    let (_, _, writer) = user(&server, &kp, &[pb::Role::Writer]).await;
    let own = events_as(&server, &manager)
        .list_audit_events(pb::ListAuditEventsRequest {
            filter: Some(pb::AuditEventFilter {
                instance_id: kp.clone(),
                ..all()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(own.events.len() >= 8);
    assert!(own.events.iter().all(|e| e.instance_id == kp));
    for (token, filter) in [
        (&manager, all()),
        (
            &manager,
            pb::AuditEventFilter {
                instance_id: hpcs.clone(),
                ..all()
            },
        ),
        (
            &writer,
            pb::AuditEventFilter {
                instance_id: kp.clone(),
                ..all()
            },
        ),
    ] {
        assert_error(
            events_as(&server, token)
                .list_audit_events(pb::ListAuditEventsRequest {
                    filter: Some(filter.clone()),
                    ..Default::default()
                })
                .await,
            Code::PermissionDenied,
            "UNAUTHORIZED_ERR",
        );
        let status = events_as(&server, token)
            .watch_audit_events(pb::WatchAuditEventsRequest {
                filter: Some(filter),
                after_sequence: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }

    // Injected latency: the call succeeds, its event is marked with the added delay.
    server
        .simulator()
        .inject_fault(pb::InjectFaultRequest {
            rule: Some(pb::FaultRule {
                method: "GetKey".into(),
                kind: pb::FaultKind::Latency as i32,
                latency: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 20_000_000,
                }),
                trigger: Some(Trigger::EveryNth(1)),
                count: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    keys.get_key(pb::GetKeyRequest {
        key: key.crn.clone(),
    })
    .await
    .unwrap();
    let delayed = list(
        &server,
        pb::AuditEventFilter {
            action_prefix: "kms.secrets.read".into(),
            ..all()
        },
    )
    .await;
    assert_eq!(delayed.len(), 1);
    assert!(delayed[0].injected);
    assert_eq!(delayed[0].injected_latency_ms, 20);
    assert_eq!(delayed[0].outcome, pb::AuditOutcome::Success as i32);

    // Reset wipes the trail; numbering continues.
    let before = list(&server, all()).await;
    let last = before.last().unwrap().sequence;
    server.simulator().reset(pb::ResetRequest {}).await.unwrap();
    let after = list(&server, all()).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].action, "kmsim.simulator.reset");
    assert!(after[0].sequence > last + 1);
}

async fn next(stream: &mut tonic::Streaming<pb::AuditEvent>) -> pb::AuditEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event arrives")
        .expect("the stream stays open")
        .expect("no error")
}

#[tokio::test]
async fn watch_replays_then_streams_live_events() {
    let server = TestServer::start().await;
    let kp = server.instance().await;
    let key = server.root_key(&kp).await;
    let mut keys = server.keys();
    keys.wrap_key(pb::WrapKeyRequest {
        key: key.crn.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = server.client();
    let filter = pb::AuditEventFilter {
        action_prefix: "kms.secrets.".into(),
        ..all()
    };
    let mut stream = client.watch_audit_events(filter.clone(), 0).await.unwrap();
    let created = next(&mut stream).await;
    assert_eq!(created.action, "kms.secrets.create");
    let wrapped = next(&mut stream).await;
    assert_eq!(wrapped.action, "kms.secrets.wrap");
    // Live: a call made now arrives; calls the filter rejects do not.
    server.instance().await;
    keys.unwrap_key(pb::UnwrapKeyRequest {
        key: key.crn.clone(),
        ciphertext: vec![1; 80],
        aad: Vec::new(),
    })
    .await
    .unwrap_err();
    keys.rotate_key(pb::RotateKeyRequest {
        key: key.crn.clone(),
        material: None,
    })
    .await
    .unwrap();
    let live = next(&mut stream).await;
    assert_eq!(live.action, "kms.secrets.unwrap");
    assert_eq!(live.outcome, pb::AuditOutcome::Failure as i32);
    let live = next(&mut stream).await;
    assert_eq!(live.action, "kms.secrets.rotate");
    assert!(live.sequence > wrapped.sequence + 2);

    // Resuming after a sequence number replays only what followed.
    let mut resumed = client
        .watch_audit_events(filter, wrapped.sequence)
        .await
        .unwrap();
    assert_eq!(next(&mut resumed).await.action, "kms.secrets.unwrap");
    assert_eq!(next(&mut resumed).await.action, "kms.secrets.rotate");
    drop(stream);
    drop(resumed);
    server.stop().await;
}

#[tokio::test]
async fn a_watcher_that_falls_behind_misses_nothing() {
    use kmsim_server::audit::{AuditRecord, Outcome, Severity};

    let server = TestServer::start().await;
    let client = server.client();
    let mut stream = client.watch_audit_events(all(), 0).await.unwrap();
    // Far more events than the live feed buffers, while the watcher reads nothing.
    let count = 6000;
    for n in 0..count {
        server.kms.audit().record(AuditRecord {
            sequence: 0,
            time: server.kms.now(),
            action: format!("kmsim.bench.event-{n}"),
            outcome: Outcome::Success,
            severity: Severity::Normal,
            grpc_code: 0,
            reason: String::new(),
            http_status: 200,
            initiator_id: None,
            initiator_kind: None,
            target_crn: String::new(),
            instance: None,
            method: String::new(),
            key_state: None,
            key_version_id: String::new(),
            rewrapped_key_version_id: String::new(),
            injected: false,
            injected_latency_ms: 0,
            correlation_id: String::new(),
        });
    }
    server.kms.audit().sync().await.unwrap();
    let mut previous = 0;
    let mut seen = 0;
    while seen < count {
        let event = next(&mut stream).await;
        assert_eq!(event.sequence, previous + 1, "no gap, no repeat");
        previous = event.sequence;
        if event.action.starts_with("kmsim.bench.") {
            assert_eq!(event.action, format!("kmsim.bench.event-{seen}"));
            seen += 1;
        }
    }
    drop(stream);
    server.stop().await;
}
