//! Hot-path benchmarks: AES-256-GCM wrap/unwrap of a 32-byte data key with a loaded key, and AES-KW wrap of a
//! 32-byte key.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sim_hsm::{
    DevMasterKey, Hsm, HsmConfig, KeyTemplate, Mechanism, MemoryObjectStore, UserType, Zeroizing,
};

fn bench(c: &mut Criterion) {
    let store = Arc::new(MemoryObjectStore::new());
    let config = HsmConfig {
        pin_kdf_iterations: 1_000,
        ..HsmConfig::default()
    };
    let hsm = Hsm::new(config, store).unwrap();
    hsm.activate_dev_master_key(&DevMasterKey::from_bytes([7; 32]))
        .unwrap();
    let slot = hsm.empty_slot().unwrap();
    hsm.init_token(slot, b"so-pin-1234", "bench").unwrap();
    let so = hsm.open_session(slot, true).unwrap();
    so.login(UserType::So, b"so-pin-1234").unwrap();
    so.init_pin(b"user-pin-1234").unwrap();
    so.logout().unwrap();
    let s = hsm.open_session(slot, true).unwrap();
    s.login(UserType::User, b"user-pin-1234").unwrap();

    let kek = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    let dek = [0x42u8; 32];
    let enc = Mechanism::AesGcm {
        iv: None,
        aad: Vec::new(),
    };
    let out = s.encrypt(&enc, kek, &dek).unwrap();
    let dec = Mechanism::AesGcm {
        iv: Some(out.iv),
        aad: Vec::new(),
    };

    let wrap_kek = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    let target = s
        .create_secret_key(
            &KeyTemplate::aes(32).with_extractable(true),
            Zeroizing::new(vec![0x11; 32]),
        )
        .unwrap();

    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("gcm_wrap_32B_dek", |b| {
        b.iter(|| s.encrypt(black_box(&enc), kek, black_box(&dek)).unwrap())
    });
    g.bench_function("gcm_unwrap_32B_dek", |b| {
        b.iter(|| {
            s.decrypt(black_box(&dec), kek, black_box(&out.ciphertext_and_tag))
                .unwrap()
        })
    });
    g.bench_function("aes_kw_wrap_32B_key", |b| {
        b.iter(|| {
            s.wrap_key(black_box(&Mechanism::AesKeyWrap), wrap_kek, target)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
