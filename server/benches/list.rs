//! `ListKeys` with many keys: one page of 10 and of 2,000, the next page after a cursor, and
//! a search matching one key, in-process, with the keys spread over two instances (the
//! listing must not pay for the other instance's keys). `KMSIM_BENCH_KEYS` sets how many
//! keys the listed instance holds (default 10,000).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kmsim_server::Config;
use kmsim_server::auth::DEV_TOKEN;
use kmsim_server::clock::SystemClock;
use kmsim_server::kms::keys::KeySearch;
use kmsim_server::kms::records::{Flavor, KeyKind};
use kmsim_server::kms::{KeyListQuery, Kms, Material, NewInstance, NewKey};

fn populate(kms: &Kms, admin: &kmsim_server::auth::Identity, count: usize) -> String {
    let mut listed = String::new();
    for (n, name) in ["listed", "other"].into_iter().enumerate() {
        let instance = kms
            .create_instance(
                admin,
                NewInstance {
                    name: name.into(),
                    flavor: Flavor::KeyProtect,
                    region: None,
                    account: None,
                },
            )
            .unwrap();
        if n == 0 {
            listed = instance.id.to_string();
        }
        for i in 0..count {
            kms.create_key(
                admin,
                NewKey {
                    instance: instance.id.to_string().parse().unwrap(),
                    name: format!("key-{i:06}"),
                    description: String::new(),
                    kind: KeyKind::Root,
                    expiration_time: None,
                    aliases: Vec::new(),
                    material: Material::Generate(32),
                },
            )
            .unwrap();
        }
    }
    listed
}

fn list(c: &mut Criterion) {
    let count: usize = std::env::var("KMSIM_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut config = Config::ephemeral(Arc::new(SystemClock));
    config.hsm.pin_kdf_iterations = 1_000;
    let kms = kmsim_server::open(&config).unwrap();
    let admin = kms
        .authenticate(Some(format!("Bearer {DEV_TOKEN}").as_bytes()))
        .unwrap();
    let instance = populate(&kms, &admin, count);
    let query = |page_size: usize, search: Option<KeySearch>| KeyListQuery {
        instance: instance.parse().unwrap(),
        page_size,
        after: None,
        states: Vec::new(),
        extractable: None,
        search,
    };
    let first = kms.list_keys(&admin, &query(10, None)).unwrap();
    let last = first.items.last().unwrap();
    let cursor = (last.record.create_time.as_millis(), last.record.id);

    let mut group = c.benchmark_group(format!("list_keys_{count}"));
    group.bench_function("page_of_10", |b| {
        b.iter(|| kms.list_keys(&admin, black_box(&query(10, None))).unwrap())
    });
    group.bench_function("page_of_2000", |b| {
        b.iter(|| {
            kms.list_keys(&admin, black_box(&query(2000, None)))
                .unwrap()
        })
    });
    group.bench_function("next_page_of_10", |b| {
        let mut next = query(10, None);
        next.after = Some(cursor);
        b.iter(|| kms.list_keys(&admin, black_box(&next)).unwrap())
    });
    group.bench_function("search_one", |b| {
        let search = query(10, Some(KeySearch::Name("key-000042".into())));
        b.iter(|| kms.list_keys(&admin, black_box(&search)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, list);
criterion_main!(benches);
