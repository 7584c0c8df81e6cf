//! HPCS-style ceremony: R-33 .. R-35.
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::Arc;

use common::*;
use sim_hsm::p256::ecdsa::SigningKey;
use sim_hsm::*;

fn admin(n: u8) -> (SigningKey, Vec<u8>) {
    let sk = SigningKey::from_slice(&[n; 32]).unwrap();
    let pk = sk.verifying_key().to_sec1_point(false).as_bytes().to_vec();
    (sk, pk)
}

fn sign(hsm: &Hsm, who: &[(u8, &str)], cmd: &AdminCommand) -> Vec<AdminSignature> {
    let ctx = hsm.admin_command_context();
    who.iter()
        .map(|(n, name)| sign_command(&admin(*n).0, name, &ctx, cmd))
        .collect()
}

fn module() -> (Hsm, Arc<MemoryObjectStore>) {
    let store = Arc::new(MemoryObjectStore::new());
    (Hsm::new(config(), store.clone()).unwrap(), store)
}

/// Two admins, thresholds 2/2.
fn with_quorum() -> (Hsm, Arc<MemoryObjectStore>) {
    let (hsm, store) = module();
    hsm.add_administrator("alice", &admin(1).1, &[]).unwrap();
    hsm.add_administrator("bob", &admin(2).1, &[]).unwrap();
    hsm.set_thresholds(2, 2, &[]).unwrap();
    (hsm, store)
}

const BOTH: [(u8, &str); 2] = [(1, "alice"), (2, "bob")];

fn load_parts(hsm: &Hsm, parts: &[[u8; 32]]) {
    for p in parts {
        let sigs = sign(hsm, &BOTH, &AdminCommand::load_master_key_part(p));
        hsm.load_master_key_part(Zeroizing::new(*p), &sigs).unwrap();
    }
}

fn xor(parts: &[[u8; 32]]) -> [u8; 32] {
    let mut v = [0u8; 32];
    for p in parts {
        for i in 0..32 {
            v[i] ^= p[i];
        }
    }
    v
}

#[test]
fn r33_imprint_mode_rules() {
    let (hsm, _) = module();
    let st = hsm.status();
    assert!(st.imprint_mode);
    assert_eq!(st.current_master_key.state, RegisterState::Empty);
    let e = hsm
        .load_master_key_part(Zeroizing::new([1; 32]), &[])
        .unwrap_err();
    assert!(matches!(e, HsmError::ImprintMode));
    assert_eq!(e.ckr(), 0x30);
    assert!(matches!(
        hsm.set_thresholds(1, 1, &[]),
        Err(HsmError::ArgumentsBad)
    ));
    for i in 1..=8u8 {
        hsm.add_administrator(&format!("admin{i}"), &admin(i).1, &[])
            .unwrap();
    }
    assert!(matches!(
        hsm.add_administrator("ninth", &admin(9).1, &[]),
        Err(HsmError::ArgumentsBad)
    ));
    assert!(matches!(
        hsm.add_administrator("admin1", &admin(10).1, &[]),
        Err(HsmError::ArgumentsBad)
    ));
    assert!(matches!(
        hsm.add_administrator("bad", &[4, 1, 2], &[]),
        Err(HsmError::ArgumentsBad)
    ));
    assert!(matches!(
        hsm.set_thresholds(0, 1, &[]),
        Err(HsmError::ArgumentsBad)
    ));
    assert!(matches!(
        hsm.set_thresholds(9, 1, &[]),
        Err(HsmError::ArgumentsBad)
    ));
    hsm.set_thresholds(3, 2, &[]).unwrap();
    let st = hsm.status();
    assert!(!st.imprint_mode);
    assert_eq!((st.signature_threshold, st.revocation_threshold), (3, 2));
    assert_eq!(st.administrators.len(), 8);
}

#[test]
fn r34_quorum_needs_distinct_valid_signatures() {
    let (hsm, _) = with_quorum();
    let cmd = AdminCommand::AddAdministrator {
        name: "carol".into(),
        public_key: admin(3).1,
    };
    let one = sign(&hsm, &[(1, "alice")], &cmd);
    let e = hsm
        .add_administrator("carol", &admin(3).1, &one)
        .unwrap_err();
    assert!(matches!(e, HsmError::InsufficientSignatures));
    let same_twice = sign(&hsm, &[(1, "alice"), (1, "alice")], &cmd);
    assert!(matches!(
        hsm.add_administrator("carol", &admin(3).1, &same_twice),
        Err(HsmError::InsufficientSignatures)
    ));
    // A signature by the wrong key under bob's name does not count.
    let forged = sign(&hsm, &[(1, "alice"), (7, "bob")], &cmd);
    assert!(matches!(
        hsm.add_administrator("carol", &admin(3).1, &forged),
        Err(HsmError::InsufficientSignatures)
    ));
    // Signatures over another command do not count.
    let other = sign(&hsm, &BOTH, &AdminCommand::CommitMasterKey);
    assert!(matches!(
        hsm.add_administrator("carol", &admin(3).1, &other),
        Err(HsmError::InsufficientSignatures)
    ));
    let two = sign(&hsm, &BOTH, &cmd);
    hsm.add_administrator("carol", &admin(3).1, &two).unwrap();
    // Replaying the accepted command fails: the counter moved on.
    hsm.remove_administrator(
        "carol",
        &sign(
            &hsm,
            &BOTH,
            &AdminCommand::RemoveAdministrator {
                name: "carol".into(),
            },
        ),
    )
    .unwrap();
    assert!(matches!(
        hsm.add_administrator("carol", &admin(3).1, &two),
        Err(HsmError::InsufficientSignatures)
    ));
    assert_eq!(
        hsm.status().administrators,
        vec!["alice".to_string(), "bob".to_string()]
    );
    // Removing below a threshold is refused.
    let rm = sign(
        &hsm,
        &BOTH,
        &AdminCommand::RemoveAdministrator { name: "bob".into() },
    );
    assert!(matches!(
        hsm.remove_administrator("bob", &rm),
        Err(HsmError::ArgumentsBad)
    ));
}

#[test]
fn r34_revocation_threshold_applies_to_removal() {
    let (hsm, _) = module();
    for (i, n) in [(1, "alice"), (2, "bob"), (3, "carol")] {
        hsm.add_administrator(n, &admin(i).1, &[]).unwrap();
    }
    hsm.set_thresholds(1, 2, &[]).unwrap();
    let cmd = AdminCommand::RemoveAdministrator {
        name: "carol".into(),
    };
    let one = sign(&hsm, &[(1, "alice")], &cmd);
    assert!(matches!(
        hsm.remove_administrator("carol", &one),
        Err(HsmError::InsufficientSignatures)
    ));
    hsm.remove_administrator("carol", &sign(&hsm, &BOTH, &cmd))
        .unwrap();
}

#[test]
fn r35_register_state_machine_and_verification_pattern() {
    let (hsm, _) = with_quorum();
    let parts = [[0x11u8; 32], [0x22u8; 32], [0x35u8; 32]];
    assert!(matches!(
        hsm.commit_master_key(&sign(&hsm, &BOTH, &AdminCommand::CommitMasterKey)),
        Err(HsmError::MasterKeyRegisterState)
    ));
    load_parts(&hsm, &parts[..1]);
    assert_eq!(
        hsm.status().new_master_key.state,
        RegisterState::PartiallyLoaded
    );
    assert!(matches!(
        hsm.commit_master_key(&sign(&hsm, &BOTH, &AdminCommand::CommitMasterKey)),
        Err(HsmError::MasterKeyRegisterState)
    ));
    load_parts(&hsm, &parts[1..]);
    let st = hsm.status();
    assert_eq!(st.new_master_key.state, RegisterState::FullUncommitted);
    assert_eq!(st.new_master_key.parts_loaded, 3);
    let expected_vp = DevMasterKey::from_bytes(xor(&parts)).verification_pattern();
    assert_eq!(st.new_master_key.verification_pattern, Some(expected_vp));
    let e = hsm
        .load_master_key_part(
            Zeroizing::new([9; 32]),
            &sign(&hsm, &BOTH, &AdminCommand::load_master_key_part(&[9; 32])),
        )
        .unwrap_err();
    assert!(matches!(e, HsmError::ArgumentsBad));
    assert!(matches!(
        hsm.activate_master_key(&sign(&hsm, &BOTH, &AdminCommand::ActivateMasterKey)),
        Err(HsmError::MasterKeyRegisterState)
    ));
    // Commit needs the quorum too.
    assert!(matches!(
        hsm.commit_master_key(&sign(&hsm, &[(1, "alice")], &AdminCommand::CommitMasterKey)),
        Err(HsmError::InsufficientSignatures)
    ));
    hsm.commit_master_key(&sign(&hsm, &BOTH, &AdminCommand::CommitMasterKey))
        .unwrap();
    assert_eq!(
        hsm.status().new_master_key.state,
        RegisterState::FullCommitted
    );
    hsm.activate_master_key(&sign(&hsm, &BOTH, &AdminCommand::ActivateMasterKey))
        .unwrap();
    let st = hsm.status();
    assert_eq!(st.current_master_key.state, RegisterState::Valid);
    assert_eq!(
        st.current_master_key.verification_pattern,
        Some(expected_vp)
    );
    assert_eq!(st.new_master_key.state, RegisterState::Empty);
    // The module now works; the same key as a dev key reopens the store after a restart.
    let slot = hsm.empty_slot().unwrap();
    hsm.init_token(slot, SO_PIN, "ceremony").unwrap();
}

#[test]
fn r35_rotation_reseals_everything_and_blocks_key_creation_meanwhile() {
    let (hsm, store) = with_quorum();
    let mk1 = [[0x01u8; 32], [0x02u8; 32]];
    load_parts(&hsm, &mk1);
    hsm.commit_master_key(&sign(&hsm, &BOTH, &AdminCommand::CommitMasterKey))
        .unwrap();
    hsm.activate_master_key(&sign(&hsm, &BOTH, &AdminCommand::ActivateMasterKey))
        .unwrap();
    let slot = hsm.empty_slot().unwrap();
    hsm.init_token(slot, SO_PIN, "rot").unwrap();
    let so = hsm.open_session(slot, true).unwrap();
    so.login(UserType::So, SO_PIN).unwrap();
    so.init_pin(USER_PIN).unwrap();
    so.close();
    let s = hsm.open_session(slot, true).unwrap();
    s.login(UserType::User, USER_PIN).unwrap();
    let k = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    let ct = s.encrypt(&gcm(None), k, b"dek").unwrap();
    let old_records = store.records();

    let mk2 = [[0x0Au8; 32], [0x0Bu8; 32]];
    load_parts(&hsm, &mk2);
    hsm.commit_master_key(&sign(&hsm, &BOTH, &AdminCommand::CommitMasterKey))
        .unwrap();
    hsm.begin_master_key_rotation(&sign(&hsm, &BOTH, &AdminCommand::RotateMasterKey))
        .unwrap();
    assert!(hsm.status().rotation_in_progress);
    let before = count(&s);
    let e = s.generate_key(&KeyTemplate::aes(32)).unwrap_err();
    assert!(matches!(e, HsmError::MasterKeyRotationInProgress));
    assert!(matches!(
        s.create_secret_key(&KeyTemplate::aes(16), Zeroizing::new(vec![1; 16])),
        Err(HsmError::MasterKeyRotationInProgress)
    ));
    let kek = s.generate_key(&KeyTemplate::aes_kek(32).with_token(false));
    assert!(kek.is_err());
    assert_eq!(count(&s), before);
    // Existing keys keep working during the rotation.
    assert_eq!(
        &s.decrypt(&gcm(Some(ct.iv)), k, &ct.ciphertext_and_tag)
            .unwrap()[..],
        b"dek"
    );
    hsm.finish_master_key_rotation().unwrap();
    let st = hsm.status();
    assert!(!st.rotation_in_progress);
    let vp2 = DevMasterKey::from_bytes(xor(&mk2)).verification_pattern();
    assert_eq!(st.current_master_key.verification_pattern, Some(vp2));
    assert_eq!(st.new_master_key.state, RegisterState::Empty);
    s.generate_key(&KeyTemplate::aes(32)).unwrap();
    // Every record is now sealed under MK2.
    let vp1 = DevMasterKey::from_bytes(xor(&mk1)).verification_pattern();
    for (_, v) in store.records() {
        assert_eq!(&v[5..13], &vp2);
    }
    // Restart: MK1 is refused, MK2 opens the store with the same handles.
    let h2 = Hsm::new(config(), store.clone()).unwrap();
    assert!(matches!(
        h2.activate_dev_master_key(&DevMasterKey::from_bytes(xor(&mk1))),
        Err(HsmError::WrongMasterKey)
    ));
    h2.activate_dev_master_key(&DevMasterKey::from_bytes(xor(&mk2)))
        .unwrap();
    let s2 = h2.open_session(slot, true).unwrap();
    s2.login(UserType::User, USER_PIN).unwrap();
    assert_eq!(
        &s2.decrypt(&gcm(Some(ct.iv)), k, &ct.ciphertext_and_tag)
            .unwrap()[..],
        b"dek"
    );
    // A blob saved before the rotation (sealed under MK1) is refused with the WKID-mismatch-like error.
    let (key, old) = old_records
        .iter()
        .find(|(k, _)| k.windows(5).any(|w| w == b"/obj/"))
        .unwrap();
    assert_eq!(&old[5..13], &vp1);
    store.insert_raw(key, old);
    let h3 = Hsm::new(config(), store.clone()).unwrap();
    h3.activate_dev_master_key(&DevMasterKey::from_bytes(xor(&mk2)))
        .unwrap();
    let s3 = h3.open_session(slot, true).unwrap();
    s3.login(UserType::User, USER_PIN).unwrap();
    let e = s3.encrypt(&gcm(None), k, b"x").unwrap_err();
    assert!(matches!(e, HsmError::WrongMasterKey));
    assert_eq!(e.ckr(), 0x8001_0001);
}

#[test]
fn ceremony_commands_are_bound_to_the_module_instance() {
    let (a, _) = with_quorum();
    let (b, _) = with_quorum();
    let cmd = AdminCommand::load_master_key_part(&[5; 32]);
    let sigs_for_a = sign(&a, &BOTH, &cmd);
    assert!(matches!(
        b.load_master_key_part(Zeroizing::new([5; 32]), &sigs_for_a),
        Err(HsmError::InsufficientSignatures)
    ));
    // Signing a different part than the one supplied does not count either.
    let sigs_other_part = sign(&a, &BOTH, &AdminCommand::load_master_key_part(&[6; 32]));
    assert!(matches!(
        a.load_master_key_part(Zeroizing::new([5; 32]), &sigs_other_part),
        Err(HsmError::InsufficientSignatures)
    ));
    a.load_master_key_part(Zeroizing::new([5; 32]), &sigs_for_a)
        .unwrap();
}
