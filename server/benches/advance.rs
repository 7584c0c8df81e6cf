//! How long one `SimulatorService.AdvanceClock` of 100 days takes (the domain call behind it)
//! with 1,000 keys whose timers all fall due inside the jump: a third rotate by policy every
//! month, a third were deleted (purged at 90 days), a third expire (deactivated). Every timer
//! fires once, in time order; there is no per-second loop.
//! `cargo bench -p kmsim-server --bench advance`. Target: one call, well under a few seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kmsim_server::Config;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::kms::ids::{InstanceRef, KeyName, KeyRef};
use kmsim_server::kms::policies::{KeyPolicyChange, RotationInterval, RotationSetting};
use kmsim_server::kms::records::{Flavor, KeyKind};
use kmsim_server::kms::{Kms, Material, NewInstance, NewKey};

const INSTANCES: usize = 4;
const KEYS_PER_INSTANCE: usize = 250;
const DAY: Duration = Duration::from_secs(24 * 3600);

fn populate(kms: &Kms) {
    // The development token acts as the bootstrap admin (`Config::ephemeral` accepts it).
    let dev = format!("Bearer {}", kmsim_server::auth::DEV_TOKEN);
    let who = kms.authenticate(Some(dev.as_bytes())).unwrap();
    let expiry = kms.now().plus(10 * DAY);
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
            let view = kms
                .create_key(
                    &who,
                    NewKey {
                        instance: InstanceRef::Id(instance.id),
                        name: format!("key {k}"),
                        description: String::new(),
                        kind: KeyKind::Root,
                        expiration_time: (k % 3 == 2).then_some(expiry),
                        aliases: Vec::new(),
                        material: Material::Generate(32),
                    },
                )
                .unwrap();
            let key = KeyRef::Path {
                instance: instance.id,
                key: KeyName::Id(view.record.id),
            };
            match k % 3 {
                0 => {
                    let change = KeyPolicyChange {
                        rotation: Some(RotationSetting {
                            enabled: true,
                            interval: RotationInterval::from_months(1).unwrap(),
                        }),
                        dual_auth_delete: None,
                    };
                    kms.set_key_policies(&who, &key, change).unwrap();
                }
                1 => {
                    kms.delete_key(&who, &key, false).unwrap();
                }
                _ => {}
            }
        }
    }
}

fn advance(c: &mut Criterion) {
    let mut group = c.benchmark_group("simulator");
    group.sample_size(10);
    group.bench_function("advance_100_days_1000_keys", |b| {
        b.iter_batched(
            || {
                let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
                    1_767_225_600_000,
                )));
                let kms = kmsim_server::open(&Config::ephemeral(clock)).unwrap();
                populate(&kms);
                kms
            },
            |kms| {
                let moved = kms.advance_clock(100 * DAY).unwrap();
                // Every key changed at least once: rotated, purged or deactivated.
                assert!(moved.timers_fired >= INSTANCES * KEYS_PER_INSTANCE);
                kms
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, advance);
criterion_main!(benches);
