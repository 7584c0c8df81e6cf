//! Every action in every key state, against Key Protect's action x state matrix (reference
//! section 1.6).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, reason};
use tonic::Code;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Active,
    Suspended,
    Deactivated,
    Destroyed,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Get,
    ListDefault,
    ListDestroyedFilter,
    Rotate,
    Wrap,
    Unwrap,
    Rewrap,
    Disable,
    Enable,
    Delete,
    Restore,
    Purge,
    ListVersions,
}

/// (action, allowed in [Active, Suspended, Deactivated, Destroyed]).
const MATRIX: [(Action, [bool; 4]); 13] = [
    (Action::Get, [true, true, true, true]),
    (Action::ListDefault, [true, true, true, false]),
    (Action::ListDestroyedFilter, [false, false, false, true]),
    (Action::Rotate, [true, false, true, false]),
    (Action::Wrap, [true, false, false, false]),
    (Action::Unwrap, [true, false, true, false]),
    (Action::Rewrap, [true, false, true, false]),
    (Action::Disable, [true, false, false, false]),
    (Action::Enable, [false, true, false, false]),
    (Action::Delete, [true, true, true, false]),
    (Action::Restore, [false, false, false, true]),
    (Action::Purge, [false, false, false, true]),
    (Action::ListVersions, [true, true, true, true]),
];

struct Subject {
    key: pb::Key,
    ciphertext: Vec<u8>,
}

async fn subject(server: &TestServer, instance: &str, state: State) -> Subject {
    let mut keys = server.keys();
    let expiration = (state == State::Deactivated).then(|| {
        let now = server.clock_now();
        prost_types::Timestamp {
            seconds: now.seconds + 60,
            nanos: 0,
        }
    });
    let key = keys
        .create_key(pb::CreateKeyRequest {
            instance: instance.to_owned(),
            name: format!("{state:?} key"),
            r#type: pb::KeyType::Root as i32,
            expiration_time: expiration,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let ciphertext = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.crn.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    match state {
        State::Active | State::Deactivated => {}
        State::Suspended => {
            keys.disable_key(pb::DisableKeyRequest {
                key: key.crn.clone(),
            })
            .await
            .unwrap();
        }
        State::Destroyed => {
            keys.delete_key(pb::DeleteKeyRequest {
                key: key.crn.clone(),
                force: false,
            })
            .await
            .unwrap();
        }
    }
    Subject { key, ciphertext }
}

trait ClockNow {
    fn clock_now(&self) -> prost_types::Timestamp;
}

impl ClockNow for TestServer {
    fn clock_now(&self) -> prost_types::Timestamp {
        use kmsim_server::clock::Clock;
        self.clock.now().to_proto()
    }
}

/// Performs `action`; `Ok(())` when it succeeded (for listings: when the key was listed).
async fn perform(
    server: &TestServer,
    instance: &str,
    subject: &Subject,
    action: Action,
) -> Result<(), tonic::Status> {
    let mut keys = server.keys();
    let key = subject.key.crn.clone();
    let listed = |states: Vec<i32>| {
        let mut keys = server.keys();
        let instance = instance.to_owned();
        let id = subject.key.id.clone();
        async move {
            let page = keys
                .list_keys(pb::ListKeysRequest {
                    instance,
                    states,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if page.keys.iter().any(|k| k.id == id) {
                Ok(())
            } else {
                Err(tonic::Status::not_found("not listed"))
            }
        }
    };
    match action {
        Action::Get => keys.get_key(pb::GetKeyRequest { key }).await.map(drop),
        Action::ListDefault => listed(vec![]).await,
        Action::ListDestroyedFilter => listed(vec![pb::KeyState::Destroyed as i32]).await,
        Action::Rotate => keys
            .rotate_key(pb::RotateKeyRequest {
                key,
                material: None,
            })
            .await
            .map(drop),
        Action::Wrap => keys
            .wrap_key(pb::WrapKeyRequest {
                key,
                ..Default::default()
            })
            .await
            .map(drop),
        Action::Unwrap => keys
            .unwrap_key(pb::UnwrapKeyRequest {
                key,
                ciphertext: subject.ciphertext.clone(),
                aad: vec![],
            })
            .await
            .map(drop),
        Action::Rewrap => keys
            .rewrap_key(pb::RewrapKeyRequest {
                key,
                ciphertext: subject.ciphertext.clone(),
                aad: vec![],
            })
            .await
            .map(drop),
        Action::Disable => keys
            .disable_key(pb::DisableKeyRequest { key })
            .await
            .map(drop),
        Action::Enable => keys
            .enable_key(pb::EnableKeyRequest { key })
            .await
            .map(drop),
        Action::Delete => keys
            .delete_key(pb::DeleteKeyRequest { key, force: false })
            .await
            .map(drop),
        Action::Restore => keys
            .restore_key(pb::RestoreKeyRequest { key })
            .await
            .map(drop),
        Action::Purge => keys.purge_key(pb::PurgeKeyRequest { key }).await.map(drop),
        Action::ListVersions => keys
            .list_key_versions(pb::ListKeyVersionsRequest {
                key,
                ..Default::default()
            })
            .await
            .map(drop),
    }
}

#[tokio::test]
async fn every_action_in_every_state_matches_key_protect() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let states = [
        State::Active,
        State::Suspended,
        State::Deactivated,
        State::Destroyed,
    ];
    for (action, row) in MATRIX {
        let mut subjects = Vec::new();
        for state in states {
            subjects.push(subject(&server, &instance, state).await);
        }
        // Past every guard: expiry (1 min), enable/restore (30 s), purge (4 h); well inside the
        // 30-day restore window.
        server.advance(Duration::from_secs(5 * 3600));
        for ((state, subject), allowed) in states.into_iter().zip(&subjects).zip(row) {
            let got = server
                .keys()
                .get_key(pb::GetKeyRequest {
                    key: subject.key.crn.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .key
                .unwrap()
                .state;
            let expected_state = match state {
                State::Active => pb::KeyState::Active,
                State::Suspended => pb::KeyState::Suspended,
                State::Deactivated => pb::KeyState::Deactivated,
                State::Destroyed => pb::KeyState::Destroyed,
            };
            assert_eq!(got, expected_state as i32, "set-up of {state:?}");

            let result = perform(&server, &instance, subject, action).await;
            match (allowed, result) {
                (true, Ok(())) => {}
                (false, Err(status))
                    if matches!(action, Action::ListDefault | Action::ListDestroyedFilter) =>
                {
                    assert_eq!(status.code(), Code::NotFound, "{action:?} in {state:?}");
                }
                (false, Err(status)) => {
                    let expected = if state == State::Destroyed {
                        "KEY_DELETED_ERR"
                    } else {
                        "KEY_ACTION_INVALID_STATE_ERR"
                    };
                    assert_eq!(
                        status.code(),
                        Code::FailedPrecondition,
                        "{action:?} in {state:?}: {status:?}"
                    );
                    assert_eq!(
                        reason(&status).as_deref(),
                        Some(expected),
                        "{action:?} in {state:?}: {status:?}"
                    );
                }
                (true, Err(status)) => panic!("{action:?} in {state:?} should succeed: {status:?}"),
                (false, Ok(())) => panic!("{action:?} in {state:?} should be refused"),
            }
        }
    }
}

#[tokio::test]
async fn expiry_moves_a_key_to_deactivated_and_enable_of_expired_key_is_refused() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let mut keys = server.keys();
    let now = server.clock_now();
    let key = keys
        .create_key(pb::CreateKeyRequest {
            instance: instance.clone(),
            name: "expiring".into(),
            r#type: pb::KeyType::Root as i32,
            expiration_time: Some(prost_types::Timestamp {
                seconds: now.seconds + 3600,
                nanos: 0,
            }),
            ..Default::default()
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
    server.advance(Duration::from_secs(2 * 3600));
    let status = keys
        .enable_key(pb::EnableKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("KEY_EXPIRED_ERR"));

    // An expiration in the past is refused at creation.
    let status = keys
        .create_key(pb::CreateKeyRequest {
            instance,
            name: "already expired".into(),
            r#type: pb::KeyType::Root as i32,
            expiration_time: Some(now),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        kmsim_tests::violated_fields(&status),
        vec!["expiration_time"]
    );
}

#[tokio::test]
async fn enable_waits_thirty_seconds_after_disable() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let mut keys = server.keys();
    keys.disable_key(pb::DisableKeyRequest {
        key: key.crn.clone(),
    })
    .await
    .unwrap();
    server.advance(Duration::from_secs(29));
    let status = keys
        .enable_key(pb::EnableKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("REQ_TOO_EARLY_ERR"));
    server.advance(Duration::from_secs(1));
    let enabled = keys
        .enable_key(pb::EnableKeyRequest {
            key: key.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(enabled.state, pb::KeyState::Active as i32);
}
