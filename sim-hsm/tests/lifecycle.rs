//! Module life cycle and self-tests: R-1 .. R-8.
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::SystemTime;

use common::*;
use sim_hsm::rng::RandomSource;
use sim_hsm::*;

#[test]
fn r1_power_on_self_tests_all_pass() {
    let hsm = Hsm::new(config(), Arc::new(MemoryObjectStore::new())).unwrap();
    let st = hsm.status();
    assert_eq!(st.state, ModuleState::Operational);
    assert!(st.self_tests.len() >= 6);
    assert!(st.self_tests.iter().all(|t| t.passed));
    for name in [
        "AES-KW-WRAP",
        "AES-KW-UNWRAP",
        "AES-KWP-WRAP",
        "AES-KWP-UNWRAP",
        "ECDH-P256",
        "ECDSA-P256-SIGN",
        "ECDSA-P256-VERIFY",
        "SHA-256",
        "DRBG",
    ] {
        assert!(st.self_tests.iter().any(|t| t.name == name), "{name}");
    }
    assert!(hsm.last_error().is_none());
}

#[test]
fn r2_output_inhibited_while_self_tests_run() {
    let f = fixture();
    let s = f.user();
    let key = s.generate_key(&KeyTemplate::aes(32)).unwrap();
    let (paused_tx, paused_rx) = mpsc::channel::<()>();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let resume_rx = std::sync::Mutex::new(resume_rx);
    let paused_tx = std::sync::Mutex::new(paused_tx);
    f.hsm.set_self_test_hook(Some(Arc::new(move |name| {
        if name == sim_hsm::selftest::ECDH_P256 {
            paused_tx.lock().unwrap().send(()).unwrap();
            resume_rx.lock().unwrap().recv().unwrap();
        }
    })));
    let hsm = f.hsm.clone();
    let t = std::thread::spawn(move || hsm.reset());
    paused_rx.recv().unwrap();
    assert_eq!(f.hsm.status().state, ModuleState::SelfTesting);
    let e = s.encrypt(&gcm(None), key, b"secret").unwrap_err();
    assert_eq!(e.ckr(), 0x1B6);
    assert!(matches!(
        s.generate_random(16),
        Err(HsmError::FipsSelfTestFailed)
    ));
    assert!(matches!(
        s.digest_sha256(b"x"),
        Err(HsmError::FipsSelfTestFailed)
    ));
    resume_tx.send(()).unwrap();
    assert_eq!(t.join().unwrap(), ModuleState::Operational);
    f.hsm.set_self_test_hook(None);
    assert!(s.encrypt(&gcm(None), key, b"secret").is_ok());
}

#[test]
fn r3_fault_injection_from_config_enters_error_state() {
    let cfg = HsmConfig {
        fail_self_test: Some("AES-KW-UNWRAP".into()),
        ..config()
    };
    let hsm = Hsm::new(cfg, Arc::new(MemoryObjectStore::new())).unwrap();
    let st = hsm.status();
    assert_eq!(st.state, ModuleState::Error);
    assert_eq!(st.last_failure.unwrap().test, "AES-KW-UNWRAP");
    let failed: Vec<_> = st.self_tests.iter().filter(|t| !t.passed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].name, "AES-KW-UNWRAP");
}

#[test]
fn r3_fault_injection_at_run_time() {
    let f = fixture();
    f.hsm.set_self_test_failure(Some("sha-256"));
    assert_eq!(f.hsm.reset(), ModuleState::Error);
    assert_eq!(f.hsm.last_error().unwrap().test, "SHA-256");
}

#[test]
fn r4_error_state_refuses_all_crypto_with_0x1b6() {
    let f = fixture();
    let s = f.user();
    let aes = s.generate_key(&KeyTemplate::aes(32)).unwrap();
    let kek = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    let tgt = s
        .generate_key(&KeyTemplate::aes(32).with_extractable(true))
        .unwrap();
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, kek, tgt).unwrap();
    let (pub_h, priv_h) = s
        .generate_key_pair(&KeyTemplate::ec_public(), &KeyTemplate::ec_private())
        .unwrap();
    let ct = s.encrypt(&gcm(Some([1; 12])), aes, b"x").unwrap();
    let sig = s.sign(priv_h, &Mechanism::EcdsaSha256, b"m").unwrap();
    let point = s.public_key_sec1(pub_h).unwrap();

    f.hsm.set_self_test_failure(Some("AES-GCM-ENC"));
    assert_eq!(f.hsm.reset(), ModuleState::Error);

    let fips = |r: Result<(), HsmError>| assert_eq!(r.unwrap_err().ckr(), 0x1B6);
    fips(s.encrypt(&gcm(None), aes, b"x").map(drop));
    fips(
        s.decrypt(&gcm(Some([1; 12])), aes, &ct.ciphertext_and_tag)
            .map(drop),
    );
    fips(s.generate_key(&KeyTemplate::aes(32)).map(drop));
    fips(
        s.generate_key_pair(&KeyTemplate::ec_public(), &KeyTemplate::ec_private())
            .map(drop),
    );
    fips(s.wrap_key(&Mechanism::AesKeyWrap, kek, tgt).map(drop));
    fips(
        s.unwrap_key(&Mechanism::AesKeyWrap, kek, &wrapped, &KeyTemplate::aes(32))
            .map(drop),
    );
    let ecdh = Mechanism::Ecdh1Derive {
        kdf: EcKdf::Null,
        shared_data: vec![],
        public_data: point,
    };
    fips(s.derive_key(&ecdh, priv_h, &KeyTemplate::aes(32)).map(drop));
    fips(s.sign(priv_h, &Mechanism::EcdsaSha256, b"m").map(drop));
    fips(s.verify(pub_h, &Mechanism::EcdsaSha256, b"m", &sig));
    fips(s.generate_random(32).map(drop));
    fips(s.digest_sha256(b"m").map(drop));
    fips(s.get_attribute(aes, AttributeType::Label).map(drop));
    fips(f.hsm.open_session(f.slot, true).map(drop));
    // Status and zeroize still work.
    assert_eq!(f.hsm.status().state, ModuleState::Error);
    f.hsm.zeroize().unwrap();
}

#[test]
fn r5_only_reset_leaves_error_state() {
    let f = fixture();
    let s = f.hsm.open_session(f.slot, true).unwrap();
    f.hsm.set_self_test_failure(Some("ECDSA-P256-SIGN"));
    assert_eq!(f.hsm.reset(), ModuleState::Error);
    assert!(matches!(
        s.login(UserType::User, USER_PIN),
        Err(HsmError::FipsSelfTestFailed)
    ));
    assert_eq!(f.hsm.status().state, ModuleState::Error);
    // Fault still present: stays in Error.
    assert_eq!(f.hsm.run_self_tests(), ModuleState::Error);
    f.hsm.set_self_test_failure(None);
    assert_eq!(f.hsm.reset(), ModuleState::Operational);
    s.login(UserType::User, USER_PIN).unwrap();
    assert_eq!(s.generate_random(16).unwrap().len(), 16);
}

#[test]
fn r6_error_log_keeps_most_recent_failure_with_time() {
    let f = fixture();
    let before = SystemTime::now();
    f.hsm.set_self_test_failure(Some("HKDF-SHA256"));
    f.hsm.reset();
    let rec = f.hsm.last_error().unwrap();
    assert_eq!(rec.test, "HKDF-SHA256");
    assert!(rec.time >= before && rec.time <= SystemTime::now());
    f.hsm.set_self_test_failure(Some("DRBG"));
    f.hsm.reset();
    assert_eq!(f.hsm.last_error().unwrap().test, "DRBG");
    // The log survives leaving the error state.
    f.hsm.set_self_test_failure(None);
    assert_eq!(f.hsm.reset(), ModuleState::Operational);
    assert_eq!(f.hsm.status().last_failure.unwrap().test, "DRBG");
}

#[test]
fn r7_pct_failure_is_fatal_and_creates_no_object() {
    for name in ["PCT-ECDSA-P256", "PCT-ECDH-P256"] {
        let f = fixture();
        let s = f.user();
        let before = count(&s);
        f.hsm.set_self_test_failure(Some(name));
        let e = s
            .generate_key_pair(
                &KeyTemplate::ec_public().with_token(true),
                &KeyTemplate::ec_private().with_token(true),
            )
            .unwrap_err();
        assert_eq!(e.ckr(), 0x1B6);
        assert_eq!(f.hsm.status().state, ModuleState::Error);
        assert_eq!(f.hsm.last_error().unwrap().test, name);
        f.hsm.set_self_test_failure(None);
        assert_eq!(f.hsm.reset(), ModuleState::Operational);
        assert_eq!(count(&s), before);
        assert_eq!(
            f.store
                .records()
                .iter()
                .filter(|(k, _)| k.windows(4).any(|w| w == b"obj/"))
                .count(),
            0
        );
    }
}

#[test]
fn r7_pct_runs_on_imported_keys_too() {
    let f = fixture();
    let s = f.user();
    f.hsm.set_self_test_failure(Some("PCT-ECDSA-P256"));
    let e = s
        .import_ec_private_key(&KeyTemplate::ec_private(), Zeroizing::new(vec![7u8; 32]))
        .unwrap_err();
    assert!(matches!(e, HsmError::FipsSelfTestFailed));
    f.hsm.set_self_test_failure(None);
    f.hsm.reset();
    assert_eq!(count(&s), 0);
}

/// A source that behaves until `stuck` is set, then returns a constant.
struct StuckSource {
    stuck: Arc<AtomicBool>,
    n: AtomicU64,
}

impl RandomSource for StuckSource {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), HsmError> {
        if self.stuck.load(Ordering::SeqCst) {
            dest.fill(0xAB);
        } else {
            let n = self.n.fetch_add(1, Ordering::SeqCst);
            for (i, b) in dest.iter_mut().enumerate() {
                *b = (n.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8 ^ (n >> 8) as u8;
            }
        }
        Ok(())
    }
}

#[test]
fn r8_continuous_rng_test_trips_on_repeated_block() {
    let stuck = Arc::new(AtomicBool::new(false));
    let src = StuckSource {
        stuck: stuck.clone(),
        n: AtomicU64::new(1),
    };
    let store = Arc::new(MemoryObjectStore::new());
    let hsm = Hsm::with_random_source(config(), store, Box::new(src)).unwrap();
    hsm.activate_dev_master_key(&DevMasterKey::from_bytes(MK_BYTES))
        .unwrap();
    let slot = hsm.empty_slot().unwrap();
    hsm.init_token(slot, SO_PIN, "t").unwrap();
    let s = hsm.open_session(slot, true).unwrap();
    stuck.store(true, Ordering::SeqCst);
    // The first stuck block differs from the last good one; the second equals the first.
    let first = s.generate_random(16);
    assert!(first.is_ok());
    let second = s.generate_random(16);
    assert!(matches!(second, Err(HsmError::FipsSelfTestFailed)));
    assert_eq!(hsm.status().state, ModuleState::Error);
    assert_eq!(hsm.last_error().unwrap().test, "CRNGT");
}

#[test]
fn hsm_and_session_are_send_sync_and_cheap_to_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Hsm>();
    check::<Session>();
    fn store<T: ObjectStore>() {}
    store::<MemoryObjectStore>();
}

#[test]
fn debug_output_never_contains_key_material() {
    let mk = DevMasterKey::from_bytes([0xAB; 32]);
    let d = format!("{mk:?}");
    assert!(!d.contains("ab, ab") && !d.contains("171, 171"), "{d}");
    let f = fixture();
    let s = f.user();
    let d = format!("{:?} {:?}", f.hsm, s);
    assert!(!d.contains(std::str::from_utf8(USER_PIN).unwrap()));
    assert!(!d.contains(std::str::from_utf8(SO_PIN).unwrap()));
}
