//! How long `SimulatorService.Reset` takes (the domain call behind it) with 100 keys in 4
//! instances, on a temporary sled store: `cargo bench -p kmsim-server --bench reset`.
//! Target: well under a second.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kmsim_server::Config;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::kms::ids::InstanceRef;
use kmsim_server::kms::records::{Flavor, KeyKind};
use kmsim_server::kms::{Kms, Material, NewInstance, NewKey};

const INSTANCES: usize = 4;
const KEYS_PER_INSTANCE: usize = 25;

fn populate(kms: &Kms) {
    // The development token acts as the bootstrap admin (`Config::ephemeral` accepts it).
    let dev = format!("Bearer {}", kmsim_server::auth::DEV_TOKEN);
    let who = kms.authenticate(Some(dev.as_bytes())).unwrap();
    for i in 0..INSTANCES {
        let instance = kms
            .create_instance(
                &who,
                NewInstance {
                    name: format!("bench {i}"),
                    flavor: Flavor::KeyProtect,
                    region: None,
                    account: None,
                },
            )
            .unwrap();
        for k in 0..KEYS_PER_INSTANCE {
            kms.create_key(
                &who,
                NewKey {
                    instance: InstanceRef::Id(instance.id),
                    name: format!("key {k}"),
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
}

fn reset(c: &mut Criterion) {
    let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
        1_767_225_600_000,
    )));
    let kms = kmsim_server::open(&Config::ephemeral(clock)).unwrap();
    let mut group = c.benchmark_group("simulator");
    group.sample_size(10);
    group.bench_function("reset_100_keys", |b| {
        b.iter_batched(
            || populate(&kms),
            |()| {
                let summary = kms.reset().unwrap();
                assert_eq!(summary.keys, INSTANCES * KEYS_PER_INSTANCE);
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, reset);
criterion_main!(benches);
