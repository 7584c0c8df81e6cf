//! What the audit trail costs on the hot path: building and enqueueing one wrap event
//! in-process (target lookup, note, outcome from headers, enqueue for the batched writer), and
//! an authenticated `WrapKey` over gRPC on loopback through the server's layers with and
//! without the audit layer.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kmsim_proto::v1 as pb;
use kmsim_proto::v1::key_service_client::KeyServiceClient;
use kmsim_proto::v1::key_service_server::KeyServiceServer;
use kmsim_server::Config;
use kmsim_server::audit::layer::{Answer, build_event, outcome_of};
use kmsim_server::audit::{CallContext, Subject, action_for};
use kmsim_server::auth::DEV_TOKEN;
use kmsim_server::clock::SystemClock;
use kmsim_server::kms::iam::{ApiKeyOwner, Role};
use kmsim_server::kms::records::{Flavor, KeyKind};
use kmsim_server::kms::{Kms, Material, NewInstance, NewKey};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;

/// Serves KeyService on a loopback port with the server's layers (audit optional).
async fn serve(kms: Arc<Kms>, audit: bool) -> Channel {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let keys = KeyServiceServer::new(kmsim_server::grpc::keys::Keys::new(Arc::clone(&kms)));
    let auth = kmsim_server::auth::layer::AuthLayer::new(Arc::clone(&kms));
    let faults = kmsim_server::faults::layer::FaultLayer::new(Arc::clone(kms.faults()));
    let incoming = TcpListenerStream::new(listener);
    if audit {
        let router = tonic::transport::Server::builder()
            .layer(kmsim_server::audit::layer::AuditLayer::new(Arc::clone(
                &kms,
            )))
            .layer(auth)
            .layer(faults)
            .add_service(keys);
        tokio::spawn(router.serve_with_incoming(incoming));
    } else {
        let router = tonic::transport::Server::builder()
            .layer(auth)
            .layer(faults)
            .add_service(keys);
        tokio::spawn(router.serve_with_incoming(incoming));
    }
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut config = Config::ephemeral(Arc::new(SystemClock));
    config.hsm.pin_kdf_iterations = 1_000;
    let kms = kmsim_server::open(&config).unwrap();
    let admin = kms
        .authenticate(Some(format!("Bearer {DEV_TOKEN}").as_bytes()))
        .unwrap();
    let instance = kms
        .create_instance(
            &admin,
            NewInstance {
                name: "bench".into(),
                flavor: Flavor::KeyProtect,
                region: None,
                account: None,
            },
        )
        .unwrap();
    let key = kms
        .create_key(
            &admin,
            NewKey {
                instance: instance.id.to_string().parse().unwrap(),
                name: "bench root".into(),
                description: String::new(),
                kind: KeyKind::Root,
                expiration_time: None,
                aliases: Vec::new(),
                material: Material::Generate(32),
            },
        )
        .unwrap();
    let crn = key.crn.to_string();
    let api_key = kms
        .create_api_key(
            &admin,
            ApiKeyOwner::NewUser {
                name: "bench".into(),
            },
            String::new(),
        )
        .unwrap();
    kms.create_access_policy(
        &admin,
        api_key.identity.id,
        Some(instance.id),
        vec![Role::Reader],
    )
    .unwrap();
    let token = kms
        .create_token(&api_key.secret, std::time::Duration::from_secs(3600))
        .unwrap();
    let header: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", token.token.as_str()).parse().unwrap();

    let mut group = c.benchmark_group("audit");
    group.measurement_time(std::time::Duration::from_secs(3));

    let spec = action_for("/kmsim.v1.KeyService/WrapKey").unwrap();
    let headers = http::HeaderMap::new();
    let subject = Subject::Key(crn.parse().unwrap());
    let method = "/kmsim.v1.KeyService/WrapKey";
    group.bench_function("resolve_target", |b| {
        b.iter(|| kms.audit_target(black_box(&subject)))
    });
    group.bench_function("build_wrap_event", |b| {
        b.iter(|| {
            let context = CallContext::new(spec, method.to_owned());
            context.set_initiator(admin);
            context.name_subject(subject.clone());
            let answer = outcome_of(&headers, &context);
            build_event(&kms, &context.fields(), "bench".to_owned(), answer)
        })
    });
    group.bench_function("build_and_enqueue_wrap_event", |b| {
        b.iter(|| {
            let context = CallContext::new(spec, method.to_owned());
            context.set_initiator(admin);
            context.name_subject(subject.clone());
            context.set_key_version("00000000-0000-4000-8000-000000000000");
            let event = build_event(&kms, &context.fields(), "bench".to_owned(), Answer::ok());
            kms.audit().record(event);
        })
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    for audit in [false, true] {
        let channel = runtime.block_on(serve(Arc::clone(&kms), audit));
        let client = KeyServiceClient::new(channel);
        let name = if audit {
            "grpc_wrap_authenticated_with_audit"
        } else {
            "grpc_wrap_authenticated_without_audit"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut client = client.clone();
                let mut request = tonic::Request::new(pb::WrapKeyRequest {
                    key: crn.clone(),
                    plaintext: vec![0x42; 32],
                    aad: Vec::new(),
                });
                request
                    .metadata_mut()
                    .insert("authorization", header.clone());
                runtime.block_on(async move { client.wrap_key(request).await.unwrap() })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
