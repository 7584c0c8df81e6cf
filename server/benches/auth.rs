//! What authentication costs on the hot path: verifying an ES256 bearer token without the
//! cache, authenticating a cached token (SHA-256 of the token, cache lookup, expiry and
//! revocation checks), an in-process `Kms::wrap` of a 32-byte data key, and the two together
//! (an authenticated wrap as the server does it, minus gRPC).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kmsim_server::Config;
use kmsim_server::auth::DEV_TOKEN;
use kmsim_server::clock::SystemClock;
use kmsim_server::kms::iam::{ApiKeyOwner, Role};
use kmsim_server::kms::ids::KeyRef;
use kmsim_server::kms::records::{Flavor, KeyKind};
use kmsim_server::kms::{Material, NewInstance, NewKey};
use zeroize::Zeroizing;

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
    let instance_ref = instance.id.to_string().parse().unwrap();
    let key = kms
        .create_key(
            &admin,
            NewKey {
                instance: instance_ref,
                name: "bench root".into(),
                description: String::new(),
                kind: KeyKind::Root,
                expiration_time: None,
                aliases: Vec::new(),
                material: Material::Generate(32),
            },
        )
        .unwrap();
    let key_ref: KeyRef = format!("instances/{}/keys/{}", instance.id, key.record.id)
        .parse()
        .unwrap();
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
    let header = format!("Bearer {}", token.token.as_str());
    // Warm the cache.
    kms.authenticate(Some(header.as_bytes())).unwrap();
    let plaintext = [0x42u8; 32];

    let mut group = c.benchmark_group("auth");
    group.measurement_time(std::time::Duration::from_secs(3));
    group.bench_function("verify_es256_uncached", |b| {
        b.iter(|| {
            kms.authenticator()
                .verify_uncached(black_box(&token.token))
                .unwrap()
        })
    });
    group.bench_function("authenticate_cached", |b| {
        b.iter(|| {
            kms.authenticate(Some(black_box(header.as_bytes())))
                .unwrap()
        })
    });
    group.bench_function("kms_wrap_32_bytes", |b| {
        b.iter(|| {
            kms.wrap(
                &admin,
                &key_ref,
                Some(Zeroizing::new(black_box(plaintext.to_vec()))),
                &[],
            )
            .unwrap()
        })
    });
    group.bench_function("authenticate_cached_then_wrap", |b| {
        b.iter(|| {
            let who = kms
                .authenticate(Some(black_box(header.as_bytes())))
                .unwrap();
            kms.wrap(
                &who,
                &key_ref,
                Some(Zeroizing::new(black_box(plaintext.to_vec()))),
                &[],
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
