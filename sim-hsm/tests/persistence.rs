//! Persistence, destruction, zeroization and tamper: R-28 .. R-31.
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::Arc;

use common::*;
use sim_hsm::token::flags;
use sim_hsm::*;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn object_records(store: &MemoryObjectStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .records()
        .into_iter()
        .filter(|(k, _)| contains(k, b"/obj/"))
        .collect()
}

#[test]
fn r28_stored_records_hold_no_plaintext_secrets() {
    let f = fixture();
    let s = f.user();
    let aes = [0xA5u8; 32];
    let generic = b"generic-secret-value-0123456789!".to_vec();
    let scalar = hex("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721");
    s.create_secret_key(
        &KeyTemplate::aes(32).with_token(true).with_private(false),
        Zeroizing::new(aes.to_vec()),
    )
    .unwrap();
    s.create_secret_key(
        &readable_template(32).with_token(true),
        Zeroizing::new(generic.clone()),
    )
    .unwrap();
    s.import_ec_private_key(
        &KeyTemplate::ec_private().with_token(true),
        Zeroizing::new(scalar.clone()),
    )
    .unwrap();
    let g = s
        .generate_key(&readable_template(32).with_token(true))
        .unwrap();
    let generated = value(&s, g);
    let records = f.store.records();
    assert!(records.len() >= 6);
    for (k, v) in &records {
        for secret in [
            &aes[..],
            &generic,
            &scalar,
            &generated,
            SO_PIN,
            USER_PIN,
            &MK_BYTES[..],
        ] {
            let probe = &secret[..secret.len().min(16)];
            assert!(
                !contains(v, probe),
                "secret found in {}",
                String::from_utf8_lossy(k)
            );
            assert!(!contains(k, probe));
        }
        assert!(v.starts_with(b"SHSM"));
    }
}

#[test]
fn r28_restart_finds_tokens_objects_and_handles() {
    let f = fixture();
    let s = f.user();
    let k = s
        .generate_key(&KeyTemplate::aes(32).with_token(true).with_label("kek-1"))
        .unwrap();
    let (pubk, privk) = s
        .generate_key_pair(
            &KeyTemplate::ec_public().with_token(true),
            &KeyTemplate::ec_private()
                .with_token(true)
                .with_id(b"id-7".to_vec()),
        )
        .unwrap();
    let session_obj = s.generate_key(&KeyTemplate::aes(16)).unwrap();
    let kcv = s.check_value(k).unwrap();
    let ct = s.encrypt(&gcm(None), k, b"dek").unwrap();
    let sig = s.sign(privk, &Mechanism::EcdsaSha256, b"m").unwrap();
    let slot_serial = f.hsm.token_info(f.slot).unwrap().serial;

    let h2 = f.restart();
    let slot = h2.find_slot_by_label(LABEL).unwrap();
    assert_eq!(slot, f.slot);
    assert_eq!(h2.token_info(slot).unwrap().serial, slot_serial);
    assert_eq!(h2.slots().len(), 2);
    let s2 = h2.open_session(slot, true).unwrap();
    // Before login the private objects cannot be used.
    assert!(matches!(
        s2.encrypt(&gcm(None), k, b"x"),
        Err(HsmError::UserNotLoggedIn)
    ));
    assert!(matches!(
        s2.login(UserType::User, b"wrong-pin"),
        Err(HsmError::PinIncorrect)
    ));
    assert_ne!(
        h2.token_info(slot).unwrap().flags & flags::USER_PIN_COUNT_LOW,
        0
    );
    s2.login(UserType::User, USER_PIN).unwrap();
    assert_eq!(
        s2.find_objects(&AttributeQuery::by_label("kek-1")).unwrap(),
        vec![k]
    );
    assert_eq!(
        s2.find_objects(&AttributeQuery::by_id(b"id-7".to_vec()))
            .unwrap(),
        vec![privk]
    );
    assert!(matches!(
        s2.check_value(session_obj),
        Err(HsmError::KeyHandleInvalid)
    ));
    assert_eq!(s2.check_value(k).unwrap(), kcv);
    assert_eq!(
        &s2.decrypt(&gcm(Some(ct.iv)), k, &ct.ciphertext_and_tag)
            .unwrap()[..],
        b"dek"
    );
    s2.verify(pubk, &Mechanism::EcdsaSha256, b"m", &sig)
        .unwrap();
    // Handles keep increasing after restart: no reuse.
    let new = s2
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    assert!(new.0 > privk.0 && new != session_obj);
}

#[test]
fn r28_flipped_byte_gives_an_error_never_garbage() {
    let f = fixture();
    let s = f.user();
    let k = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    let k2 = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    let ct = s.encrypt(&gcm(None), k2, b"x").unwrap();
    s.close();
    let key_name = format!(
        "tok/{}/obj/{:016x}",
        f.hsm.token_info(f.slot).unwrap().serial,
        k.0
    );
    let original = f.store.get(key_name.as_bytes()).unwrap().unwrap();
    for idx in [0, 4, 6, 13, 20, 30, original.len() / 2, original.len() - 1] {
        f.store.insert_raw(key_name.as_bytes(), &original);
        assert!(f.store.corrupt(key_name.as_bytes(), idx));
        let h = f.restart();
        let s = h.open_session(f.slot, true).unwrap();
        s.login(UserType::User, USER_PIN).unwrap();
        let e = s.encrypt(&gcm(None), k, b"x").unwrap_err();
        assert!(
            matches!(e, HsmError::DeviceError | HsmError::WrongMasterKey),
            "byte {idx}: {e:?}"
        );
        // The other key still works.
        assert_eq!(
            &s.decrypt(&gcm(Some(ct.iv)), k2, &ct.ciphertext_and_tag)
                .unwrap()[..],
            b"x"
        );
    }
    // A damaged token record makes the token unrecognised.
    f.store.insert_raw(key_name.as_bytes(), &original);
    let info = format!("tok/{}/info", f.hsm.token_info(f.slot).unwrap().serial);
    assert!(f.store.corrupt(info.as_bytes(), 40));
    let h = f.restart();
    assert!(matches!(
        h.token_info(f.slot),
        Err(HsmError::TokenNotRecognized)
    ));
    assert!(matches!(
        h.open_session(f.slot, true),
        Err(HsmError::TokenNotRecognized)
    ));
}

#[test]
fn r28_default_pin_kdf_iterations_is_100k() {
    assert_eq!(HsmConfig::default().pin_kdf_iterations, 100_000);
    assert_eq!(HsmConfig::default().pin_retry_limit, 3);
    assert_eq!(HsmConfig::default().min_pin_len, 4);
    assert_eq!(HsmConfig::default().max_pin_len, 255);
    assert_eq!(HsmConfig::default().security_level, SecurityLevel::Level2);
}

#[test]
fn r28_foreign_master_key_and_missing_master_key() {
    let f = fixture();
    let h = Hsm::new(config(), f.store.clone()).unwrap();
    let e = h
        .activate_dev_master_key(&DevMasterKey::from_bytes([1; 32]))
        .unwrap_err();
    assert!(matches!(e, HsmError::WrongMasterKey));
    assert_eq!(e.ckr(), 0x8001_0001);
    let fresh = Hsm::new(config(), Arc::new(MemoryObjectStore::new())).unwrap();
    let slot = fresh.empty_slot().unwrap();
    let e = fresh.init_token(slot, SO_PIN, "x").unwrap_err();
    assert!(matches!(e, HsmError::MasterKeyNotLoaded));
    assert_eq!(e.ckr(), 0x8001_0009);
    // Idempotent for the same key, refused for another one.
    f.hsm
        .activate_dev_master_key(&DevMasterKey::from_bytes(MK_BYTES))
        .unwrap();
    assert!(matches!(
        f.hsm
            .activate_dev_master_key(&DevMasterKey::from_bytes([2; 32])),
        Err(HsmError::MasterKeyAlreadyActive)
    ));
}

#[test]
fn r29_set_pin_rewrites_only_the_pin_blob() {
    let f = fixture();
    let s = f.user();
    let k = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    let before = f.store.records();
    s.set_pin(USER_PIN, b"new-user-pin").unwrap();
    let after = f.store.records();
    let changed: Vec<String> = before
        .iter()
        .zip(after.iter())
        .filter(|(a, b)| a != b)
        .map(|(a, _)| String::from_utf8_lossy(&a.0).into_owned())
        .collect();
    assert_eq!(before.len(), after.len());
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].ends_with("/info"));
    s.logout().unwrap();
    assert!(matches!(
        s.login(UserType::User, USER_PIN),
        Err(HsmError::PinIncorrect)
    ));
    s.login(UserType::User, b"new-user-pin").unwrap();
    s.encrypt(&gcm(None), k, b"x").unwrap();
    let h2 = f.restart();
    let s2 = h2.open_session(f.slot, true).unwrap();
    s2.login(UserType::User, b"new-user-pin").unwrap();
    s2.encrypt(&gcm(None), k, b"x").unwrap();
    // R/O sessions cannot change PINs.
    let ro = h2.open_session(f.slot, false).unwrap();
    assert!(matches!(
        ro.set_pin(b"new-user-pin", b"another1"),
        Err(HsmError::SessionReadOnly)
    ));
}

#[test]
fn r30_destroy_zeroizes_and_removes_record() {
    let f = fixture();
    let s = f.user();
    let k = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    assert_eq!(object_records(&f.store).len(), 1);
    s.destroy_object(k).unwrap();
    assert!(object_records(&f.store).is_empty());
    assert!(matches!(
        s.encrypt(&gcm(None), k, b"x"),
        Err(HsmError::KeyHandleInvalid)
    ));
    assert!(matches!(
        s.destroy_object(k),
        Err(HsmError::ObjectHandleInvalid)
    ));
    let h2 = f.restart();
    let s2 = h2.open_session(f.slot, true).unwrap();
    s2.login(UserType::User, USER_PIN).unwrap();
    assert!(matches!(s2.check_value(k), Err(HsmError::KeyHandleInvalid)));
}

fn zeroize_checks(f: &Fixture, s: &Session, k: ObjectHandle) {
    let info = f.hsm.token_info(f.slot).unwrap();
    assert_eq!(info.flags & flags::TOKEN_INITIALIZED, 0);
    assert!(matches!(
        s.encrypt(&gcm(None), k, b"x"),
        Err(HsmError::KeyHandleInvalid)
    ));
    s.logout().ok();
    assert!(matches!(
        s.login(UserType::User, USER_PIN),
        Err(HsmError::UserPinNotInitialized)
    ));
    assert!(f.store.is_empty());
    let st = f.hsm.status();
    assert_eq!(st.current_master_key.state, RegisterState::Empty);
    assert!(st.imprint_mode);
    assert_eq!((st.signature_threshold, st.revocation_threshold), (0, 0));
    assert!(st.administrators.is_empty());
    assert_eq!(st.initialized_tokens, 0);
    // The old master key no longer opens anything; a new one starts from scratch.
    assert!(matches!(
        f.hsm.init_token(f.slot, SO_PIN, "x"),
        Err(HsmError::MasterKeyNotLoaded)
    ));
}

#[test]
fn r31_zeroize_wipes_everything() {
    let f = fixture();
    let s = f.user();
    let k = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    let admin = sim_hsm::p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
    let pk = admin
        .verifying_key()
        .to_sec1_point(false)
        .as_bytes()
        .to_vec();
    f.hsm.add_administrator("a", &pk, &[]).unwrap();
    f.hsm.set_thresholds(1, 1, &[]).unwrap();
    f.hsm.zeroize().unwrap();
    zeroize_checks(&f, &s, k);
    assert!(f.hsm.last_error().is_none());
}

#[test]
fn r31_tamper_wipes_everything_and_logs() {
    let f = fixture();
    let s = f.user();
    let k = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    f.hsm.tamper().unwrap();
    zeroize_checks(&f, &s, k);
    assert_eq!(f.hsm.last_error().unwrap().test, "TAMPER");
    assert_eq!(f.hsm.status().tamper_events, 1);
    // The module can be brought back with a new master key.
    f.hsm
        .activate_dev_master_key(&DevMasterKey::from_bytes([9; 32]))
        .unwrap();
    s.close();
    f.hsm.init_token(f.slot, SO_PIN, "fresh").unwrap();
}
