//! Fault injection end to end: every fault kind reaches the client as specified, every-Nth
//! and seeded-probability rules fire on exactly the calls they say, instance and key filters
//! narrow a rule, counts use a rule up, and clearing (or Reset) stops faults. The simulator's
//! own service is never faulted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use kmsim_proto::v1 as pb;
use kmsim_server::faults::SeededDraws;
use kmsim_tests::{TestServer, assert_error, violated_fields};
use pb::fault_rule::Trigger;
use tonic::Code;
use tonic_types::StatusExt;

fn rule(method: &str, kind: pb::FaultKind) -> pb::FaultRule {
    pb::FaultRule {
        method: method.into(),
        kind: kind as i32,
        ..Default::default()
    }
}

async fn inject(server: &TestServer, rule: pb::FaultRule) -> pb::FaultRule {
    server
        .simulator()
        .inject_fault(pb::InjectFaultRequest { rule: Some(rule) })
        .await
        .unwrap()
        .into_inner()
        .rule
        .unwrap()
}

async fn list(server: &TestServer) -> Vec<pb::FaultRule> {
    server
        .simulator()
        .list_faults(pb::ListFaultsRequest {})
        .await
        .unwrap()
        .into_inner()
        .rules
}

async fn get(server: &TestServer, key: &pb::Key) -> Result<pb::Key, tonic::Status> {
    server
        .keys()
        .get_key(pb::GetKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .map(|r| r.into_inner().key.unwrap())
}

async fn wrap(server: &TestServer, key: &pb::Key) -> Result<Vec<u8>, tonic::Status> {
    server
        .keys()
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().ciphertext)
}

#[tokio::test]
async fn each_fault_kind_reaches_the_client() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    for (kind, code, reason) in [
        (
            pb::FaultKind::Unavailable,
            Code::Unavailable,
            "INJECTED_UNAVAILABLE_ERR",
        ),
        (
            pb::FaultKind::Internal,
            Code::Internal,
            "INJECTED_INTERNAL_ERR",
        ),
        (
            pb::FaultKind::DeadlineExceeded,
            Code::DeadlineExceeded,
            "INJECTED_DEADLINE_EXCEEDED_ERR",
        ),
        (
            pb::FaultKind::HsmDeviceError,
            Code::Unavailable,
            "HSM_DEVICE_ERR",
        ),
        (
            pb::FaultKind::ResourceExhausted,
            Code::ResourceExhausted,
            "INJECTED_RATE_LIMIT_ERR",
        ),
    ] {
        let mut fault = rule("kmsim.v1.KeyService/GetKey", kind);
        fault.count = 1;
        fault.retry_delay = Some(prost_types::Duration {
            seconds: 7,
            nanos: 0,
        });
        inject(&server, fault).await;
        let status = assert_error(get(&server, &key).await, code, reason);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(
            info.metadata.get("injected").map(String::as_str),
            Some("true")
        );
        if kind == pb::FaultKind::ResourceExhausted {
            assert_eq!(
                status.get_error_details().retry_info().unwrap().retry_delay,
                Some(Duration::from_secs(7))
            );
        }
        // Count 1: used up, so the next call goes through and the rule is gone.
        get(&server, &key).await.unwrap();
        assert!(list(&server).await.is_empty(), "{kind:?}");
    }

    let mut latency = rule("GetKey", pb::FaultKind::Latency);
    latency.latency = Some(prost_types::Duration {
        seconds: 0,
        nanos: 400_000_000,
    });
    latency.count = 1;
    inject(&server, latency).await;
    let started = Instant::now();
    get(&server, &key).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the call was not delayed: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn every_nth_fires_on_exactly_every_nth_matching_call() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut fault = rule("kmsim.v1.KeyService/WrapKey", pb::FaultKind::Unavailable);
    fault.trigger = Some(Trigger::EveryNth(3));
    let injected = inject(&server, fault).await;
    assert!(!injected.id.is_empty());
    let mut failed = Vec::new();
    for call in 1..=9 {
        // Other methods neither fail nor count.
        get(&server, &key).await.unwrap();
        if wrap(&server, &key).await.is_err() {
            failed.push(call);
        }
    }
    assert_eq!(failed, [3, 6, 9]);
    let rules = list(&server).await;
    assert_eq!(rules.len(), 1);
    assert_eq!((rules[0].matched, rules[0].fired), (9, 3));
    assert_eq!(rules[0].id, injected.id);
}

#[tokio::test]
async fn seeded_probability_fires_as_the_seeded_generator_says() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let (probability, seed) = (0.3, 42);
    let mut fault = rule("GetKey", pb::FaultKind::Internal);
    fault.trigger = Some(Trigger::Probability(probability));
    fault.seed = seed;
    for _round in 0..2 {
        let injected = inject(&server, fault.clone()).await;
        let mut draws = SeededDraws::new(seed);
        let expected: Vec<bool> = (0..40).map(|_| draws.fires(probability)).collect();
        let mut observed = Vec::new();
        for _ in 0..40 {
            observed.push(get(&server, &key).await.is_err());
        }
        assert_eq!(observed, expected);
        let fired = expected.iter().filter(|f| **f).count();
        assert!(fired > 0 && fired < 40, "{fired}");
        let rules = list(&server).await;
        assert_eq!(rules[0].fired, u64::try_from(fired).unwrap());
        // Clearing by id stops it; the same seed replays the same sequence.
        let cleared = server
            .simulator()
            .clear_faults(pb::ClearFaultsRequest { id: injected.id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cleared.cleared, 1);
        for _ in 0..10 {
            get(&server, &key).await.unwrap();
        }
    }
}

#[tokio::test]
async fn instance_and_key_filters_narrow_a_rule() {
    let server = TestServer::start().await;
    let a = server.instance().await;
    let b = server.instance().await;
    let key_a = server.root_key(&a).await;
    let key_b = server.root_key(&b).await;

    let mut by_key = rule("*", pb::FaultKind::Unavailable);
    by_key.key = key_a.id.clone();
    inject(&server, by_key).await;
    assert_error(
        wrap(&server, &key_a).await,
        Code::Unavailable,
        "INJECTED_UNAVAILABLE_ERR",
    );
    wrap(&server, &key_b).await.unwrap();
    // A key named by path matches too.
    assert_error(
        server
            .keys()
            .get_key(pb::GetKeyRequest {
                key: kmsim_tests::key_path(&a, &key_a.id),
            })
            .await,
        Code::Unavailable,
        "INJECTED_UNAVAILABLE_ERR",
    );
    server
        .simulator()
        .clear_faults(pb::ClearFaultsRequest::default())
        .await
        .unwrap();

    let mut by_instance = rule("kmsim.v1.KeyService/*", pb::FaultKind::Internal);
    by_instance.instance = b.clone();
    inject(&server, by_instance).await;
    let create = |instance: String| pb::CreateKeyRequest {
        instance,
        name: "filtered".into(),
        r#type: pb::KeyType::Root as i32,
        ..Default::default()
    };
    assert_error(
        server.keys().create_key(create(b.clone())).await,
        Code::Internal,
        "INJECTED_INTERNAL_ERR",
    );
    assert_error(
        wrap(&server, &key_b).await,
        Code::Internal,
        "INJECTED_INTERNAL_ERR",
    );
    server.keys().create_key(create(a.clone())).await.unwrap();
    wrap(&server, &key_a).await.unwrap();
}

#[tokio::test]
async fn clearing_and_reset_stop_faults_and_bad_rules_are_refused() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    for (bad, field) in [
        (rule("", pb::FaultKind::Internal), "rule.method"),
        (rule("a/b/c", pb::FaultKind::Internal), "rule.method"),
        (rule("*", pb::FaultKind::Unspecified), "rule.kind"),
        (rule("*", pb::FaultKind::Latency), "rule.latency"),
        (
            pb::FaultRule {
                trigger: Some(Trigger::Probability(1.5)),
                ..rule("*", pb::FaultKind::Internal)
            },
            "rule.probability",
        ),
        (
            pb::FaultRule {
                trigger: Some(Trigger::EveryNth(0)),
                ..rule("*", pb::FaultKind::Internal)
            },
            "rule.every_nth",
        ),
        (
            pb::FaultRule {
                instance: "not-an-id".into(),
                ..rule("*", pb::FaultKind::Internal)
            },
            "rule.instance",
        ),
    ] {
        let status = assert_error(
            server
                .simulator()
                .inject_fault(pb::InjectFaultRequest { rule: Some(bad) })
                .await,
            Code::InvalidArgument,
            "BAD_BODY_ERR",
        );
        assert_eq!(violated_fields(&status), [field]);
    }
    assert!(list(&server).await.is_empty());

    // "*" faults every kmsim call but the simulator's own, which can always clear it.
    inject(&server, rule("*", pb::FaultKind::Unavailable)).await;
    inject(&server, rule("WrapKey", pb::FaultKind::Internal)).await;
    assert_error(
        get(&server, &key).await,
        Code::Unavailable,
        "INJECTED_UNAVAILABLE_ERR",
    );
    assert_error(
        server.hsm().get_status(pb::GetStatusRequest {}).await,
        Code::Unavailable,
        "INJECTED_UNAVAILABLE_ERR",
    );
    let cleared = server
        .simulator()
        .clear_faults(pb::ClearFaultsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cleared.cleared, 2);
    get(&server, &key).await.unwrap();
    wrap(&server, &key).await.unwrap();

    inject(&server, rule("*", pb::FaultKind::Unavailable)).await;
    server.simulator().reset(pb::ResetRequest {}).await.unwrap();
    assert!(list(&server).await.is_empty());
    server
        .instances()
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_call_the_client_cancels_is_audited_as_cancelled() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut latency = rule("WrapKey", pb::FaultKind::Latency);
    latency.latency = Some(prost_types::Duration {
        seconds: 5,
        nanos: 0,
    });
    latency.count = 1;
    inject(&server, latency).await;
    // The client gives up long before the delayed call is answered (no deadline is sent, so
    // only the dropped stream tells the server).
    let gave_up = tokio::time::timeout(Duration::from_millis(300), wrap(&server, &key)).await;
    assert!(gave_up.is_err(), "the delayed call answered early");
    let deadline = Instant::now() + Duration::from_secs(5);
    let event = loop {
        let events = server
            .client()
            .list_audit_events(pb::AuditEventFilter::default(), 0)
            .await
            .unwrap();
        if let Some(event) = events.into_iter().find(|e| e.action == "kms.secrets.wrap") {
            break event;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled call was not audited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(event.outcome, pb::AuditOutcome::Failure as i32);
    assert_eq!(event.grpc_code, Code::Cancelled as i32);
    assert_eq!(event.http_status, 499);
    assert_eq!(event.target_crn, key.crn);
    assert!(event.injected);
    assert_eq!(event.injected_latency_ms, 5000);
}
