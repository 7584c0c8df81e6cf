//! Bad input gets the caller's status, not the server's: a body that is not valid protobuf is
//! `INVALID_ARGUMENT` with `BAD_BODY_ERR` (and audited as http 400), on every service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Buf, BufMut};
use kmsim_proto::v1 as pb;
use kmsim_tests::{DEV_TOKEN, TestServer, assert_error};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Sends and receives raw bytes, so a test can send a body no generated client would.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Clone, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

async fn send_raw(
    server: &TestServer,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(server.channel());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {DEV_TOKEN}").parse().unwrap(),
    );
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn undecodable_bodies_are_invalid_argument_with_bad_body_err() {
    let server = TestServer::start().await;
    // Field 1 with wire type 7 (no such wire type); a truncated length-delimited field.
    for body in [vec![0x0f], vec![0x0a, 0x05, b'a']] {
        for path in [
            "/kmsim.v1.KeyService/CreateKey",
            "/kmsim.v1.InstanceService/CreateInstance",
            "/kmsim.v1.IamService/CreateToken",
        ] {
            let status = assert_error(
                send_raw(&server, path, body.clone()).await,
                Code::InvalidArgument,
                "BAD_BODY_ERR",
            );
            assert!(
                status.message().contains("not a valid protobuf"),
                "{status:?}"
            );
        }
    }
    // A valid body on the same path is served.
    let instance = server.instance().await;
    let good = prost::Message::encode_to_vec(&pb::ListKeysRequest {
        instance,
        ..Default::default()
    });
    send_raw(&server, "/kmsim.v1.KeyService/ListKeys", good)
        .await
        .expect("a valid body is served");

    // The audit trail records the refused call as the caller's mistake (400), not a 500.
    let events = server
        .events()
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.reason == "BAD_BODY_ERR")
        .collect();
    assert!(!refused.is_empty(), "refused bodies are audited");
    assert!(refused.iter().all(|e| e.http_status == 400), "{refused:?}");
}

fn create_key_request(instance: &str, name: &str, description: &str) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        instance: instance.to_owned(),
        name: name.to_owned(),
        description: description.to_owned(),
        r#type: pb::KeyType::Root as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn names_refuse_controls_bidi_overrides_and_non_characters() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let mut keys = server.keys();
    for bad in [
        "nul\0name",
        "line\nbreak",
        "evil\u{202E}txt.exe",
        "isolate\u{2066}x",
        "non\u{FFFF}char",
        "non\u{FDD0}char",
        "plane\u{1FFFE}x",
    ] {
        let refused = assert_error(
            keys.create_key(create_key_request(&instance, bad, ""))
                .await,
            Code::InvalidArgument,
            "BAD_BODY_ERR",
        );
        assert!(refused.message().contains("name"), "{refused:?}");
        assert_error(
            keys.create_key(create_key_request(&instance, "fine", bad))
                .await,
            Code::InvalidArgument,
            "BAD_BODY_ERR",
        );
        assert_error(
            server
                .instances()
                .create_instance(pb::CreateInstanceRequest {
                    name: bad.to_owned(),
                    flavor: pb::InstanceFlavor::KeyProtect as i32,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "BAD_BODY_ERR",
        );
    }
    let key = keys
        .create_key(create_key_request(&instance, "Schlüssel 🔑 ключ", "ok"))
        .await
        .expect("letters of any script and emoji are fine")
        .into_inner()
        .key
        .unwrap();
    assert_eq!(key.name, "Schlüssel 🔑 ключ");
}

#[tokio::test]
async fn authorization_is_decided_before_fields_are_validated() {
    let server = TestServer::start().await;
    let mine = server.instance().await;
    let theirs = server.instance().await;
    let created = server
        .iam()
        .create_api_key(pb::CreateApiKeyRequest {
            kind: pb::IdentityKind::User as i32,
            name: "writer on one instance".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let identity = created.api_key.unwrap().identity.unwrap().id;
    server
        .iam()
        .create_access_policy(pb::CreateAccessPolicyRequest {
            identity_id: identity,
            instance: mine.clone(),
            roles: vec![pb::Role::Writer as i32],
        })
        .await
        .unwrap();
    let token = server.token(&created.secret).await;
    let mut keys = server.keys_as(Some(&token));
    // An invalid name in an instance the caller may not touch: PERMISSION_DENIED, so the
    // caller learns nothing about that instance's rules.
    for name in ["x", "bad\u{202E}name", ""] {
        assert_error(
            keys.create_key(create_key_request(&theirs, name, "")).await,
            Code::PermissionDenied,
            "UNAUTHORIZED_ERR",
        );
        // In its own instance, the same request is the field error.
        assert_error(
            keys.create_key(create_key_request(&mine, name, "")).await,
            Code::InvalidArgument,
            "BAD_BODY_ERR",
        );
    }
    keys.create_key(create_key_request(&mine, "valid", ""))
        .await
        .expect("a Writer creates keys in its own instance");
}
