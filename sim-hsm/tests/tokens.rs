//! Slots, tokens, PINs, sessions and the access matrix: R-9 .. R-16.
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::Arc;

use common::*;
use sim_hsm::token::flags;
use sim_hsm::*;

fn bare() -> (Hsm, Arc<MemoryObjectStore>) {
    let store = Arc::new(MemoryObjectStore::new());
    let hsm = Hsm::new(config(), store.clone()).unwrap();
    hsm.activate_dev_master_key(&DevMasterKey::from_bytes(MK_BYTES))
        .unwrap();
    (hsm, store)
}

#[test]
fn r9_slots_gain_an_empty_slot_after_init() {
    let (hsm, _) = bare();
    let slots = hsm.slots();
    assert_eq!(slots.len(), 1);
    assert!(!slots[0].initialized);
    let info = hsm.token_info(slots[0].slot).unwrap();
    assert_eq!(
        info.flags,
        flags::RNG
            | flags::LOGIN_REQUIRED
            | flags::RESTORE_KEY_NOT_NEEDED
            | flags::SO_PIN_LOCKED
            | flags::SO_PIN_TO_BE_CHANGED
    );
    assert!(slots[0].slot.0 <= 0x7FFF_FFFF);
    hsm.init_token(slots[0].slot, SO_PIN, "alpha").unwrap();
    let slots = hsm.slots();
    assert_eq!(slots.len(), 2);
    let info = hsm.token_info(slots[0].slot).unwrap();
    assert_eq!(info.label, "alpha");
    assert_ne!(info.flags & flags::TOKEN_INITIALIZED, 0);
    assert_eq!(info.flags & flags::USER_PIN_INITIALIZED, 0);
    assert_eq!(hsm.find_slot_by_label("alpha"), Some(slots[0].slot));
    assert_eq!(hsm.find_slot_by_label("beta"), None);
    assert!(matches!(
        hsm.token_info(SlotId(0x00FF_FFFF_FFFF)),
        Err(HsmError::SlotIdInvalid)
    ));
}

#[test]
fn r10_pin_length_limits() {
    let (hsm, _) = bare();
    let slot = hsm.empty_slot().unwrap();
    assert!(matches!(
        hsm.init_token(slot, b"123", "x"),
        Err(HsmError::PinIncorrect)
    ));
    assert!(matches!(
        hsm.init_token(slot, &[b'a'; 256], "x"),
        Err(HsmError::PinIncorrect)
    ));
    hsm.init_token(slot, SO_PIN, "x").unwrap();
    let s = hsm.open_session(slot, true).unwrap();
    s.login(UserType::So, SO_PIN).unwrap();
    assert!(matches!(s.init_pin(b"123"), Err(HsmError::PinLenRange)));
    s.init_pin(USER_PIN).unwrap();
    assert!(matches!(
        s.set_pin(SO_PIN, b"123"),
        Err(HsmError::PinLenRange)
    ));
    s.logout().unwrap();
    s.login(UserType::User, USER_PIN).unwrap();
    assert!(matches!(
        s.set_pin(USER_PIN, b"123"),
        Err(HsmError::PinLenRange)
    ));
}

#[test]
fn r11_reinitialisation_rules() {
    let f = fixture();
    let s = f.user();
    s.generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    assert!(matches!(
        f.hsm.init_token(f.slot, SO_PIN, "again"),
        Err(HsmError::SessionExists)
    ));
    s.close();
    assert!(matches!(
        f.hsm.init_token(f.slot, b"wrong-pin", "again"),
        Err(HsmError::PinIncorrect)
    ));
    assert_ne!(
        f.hsm.token_info(f.slot).unwrap().flags & flags::SO_PIN_COUNT_LOW,
        0
    );
    f.hsm.init_token(f.slot, SO_PIN, "again").unwrap();
    let info = f.hsm.token_info(f.slot).unwrap();
    assert_eq!(info.label, "again");
    assert_eq!(
        info.flags & (flags::SO_PIN_COUNT_LOW | flags::USER_PIN_INITIALIZED),
        0
    );
    let so = f.so();
    so.init_pin(USER_PIN).unwrap();
    so.close();
    let u = f.user();
    assert!(u.find_objects(&AttributeQuery::all()).unwrap().is_empty());
    assert!(
        f.store
            .records()
            .iter()
            .all(|(k, _)| !k.windows(4).any(|w| w == b"obj/"))
    );
    // No second empty slot appears for a re-initialisation.
    assert_eq!(f.hsm.slots().len(), 2);
}

#[test]
fn r12_role_separation() {
    let f = fixture();
    // init_pin needs an R/W SO session.
    let u = f.user();
    assert!(matches!(
        u.init_pin(b"newpin12"),
        Err(HsmError::UserNotLoggedIn)
    ));
    let private_key = u
        .generate_key(&KeyTemplate::aes_kek(32).with_token(true))
        .unwrap();
    let (_, ec_priv) = u
        .generate_key_pair(
            &KeyTemplate::ec_public(),
            &KeyTemplate::ec_private().with_token(true),
        )
        .unwrap();
    let target = u
        .generate_key(&KeyTemplate::aes(32).with_extractable(true).with_token(true))
        .unwrap();
    // Logging in twice, or as the SO while the user is logged in.
    assert!(matches!(
        u.login(UserType::User, USER_PIN),
        Err(HsmError::UserAlreadyLoggedIn)
    ));
    assert!(matches!(
        u.login(UserType::So, SO_PIN),
        Err(HsmError::UserAnotherAlreadyLoggedIn)
    ));
    u.logout().unwrap();
    let public_rw = f.hsm.open_session(f.slot, true).unwrap();
    assert!(matches!(
        public_rw.init_pin(b"newpin12"),
        Err(HsmError::UserNotLoggedIn)
    ));
    // SO login with an R/O session open.
    let ro = f.hsm.open_session(f.slot, false).unwrap();
    assert!(matches!(
        u.login(UserType::So, SO_PIN),
        Err(HsmError::SessionReadOnlyExists)
    ));
    ro.close();
    u.login(UserType::So, SO_PIN).unwrap();
    assert!(matches!(
        f.hsm.open_session(f.slot, false),
        Err(HsmError::SessionReadWriteSoExists)
    ));
    assert!(matches!(
        u.login(UserType::User, USER_PIN),
        Err(HsmError::UserAnotherAlreadyLoggedIn)
    ));
    assert!(matches!(
        u.login(UserType::So, SO_PIN),
        Err(HsmError::UserAlreadyLoggedIn)
    ));
    // The SO cannot use private keys.
    assert!(matches!(
        u.sign(ec_priv, &Mechanism::EcdsaSha256, b"m"),
        Err(HsmError::UserNotLoggedIn)
    ));
    assert!(matches!(
        u.wrap_key(&Mechanism::AesKeyWrap, private_key, target),
        Err(HsmError::UserNotLoggedIn)
    ));
    u.logout().unwrap();
    // User login before init_pin on a new token.
    let slot2 = f.hsm.empty_slot().unwrap();
    f.hsm.init_token(slot2, SO_PIN, "two").unwrap();
    let s2 = f.hsm.open_session(slot2, true).unwrap();
    assert!(matches!(
        s2.login(UserType::User, USER_PIN),
        Err(HsmError::UserPinNotInitialized)
    ));
}

fn user_flags(f: &Fixture) -> u64 {
    f.hsm.token_info(f.slot).unwrap().flags
        & (flags::USER_PIN_COUNT_LOW | flags::USER_PIN_FINAL_TRY | flags::USER_PIN_LOCKED)
}

#[test]
fn r13_lockout_after_three_wrong_user_pins() {
    let f = fixture();
    let s = f.hsm.open_session(f.slot, true).unwrap();
    for expected in [
        flags::USER_PIN_COUNT_LOW,
        flags::USER_PIN_FINAL_TRY,
        flags::USER_PIN_LOCKED,
    ] {
        assert!(matches!(
            s.login(UserType::User, b"bad-pin!"),
            Err(HsmError::PinIncorrect)
        ));
        assert_eq!(user_flags(&f), expected);
    }
    let e = s.login(UserType::User, USER_PIN).unwrap_err();
    assert!(matches!(e, HsmError::PinLocked));
    assert_eq!(e.ckr(), 0xA4);
}

#[test]
fn r13_correct_pin_resets_counter() {
    let f = fixture();
    let s = f.hsm.open_session(f.slot, true).unwrap();
    for _ in 0..2 {
        assert!(s.login(UserType::User, b"bad-pin!").is_err());
    }
    assert_eq!(user_flags(&f), flags::USER_PIN_FINAL_TRY);
    s.login(UserType::User, USER_PIN).unwrap();
    assert_eq!(user_flags(&f), 0);
    s.logout().unwrap();
    for _ in 0..2 {
        assert!(s.login(UserType::User, b"bad-pin!").is_err());
    }
    s.login(UserType::User, USER_PIN).unwrap();
}

#[test]
fn r13_lock_survives_reset_and_restart() {
    let f = fixture();
    let s = f.hsm.open_session(f.slot, true).unwrap();
    for _ in 0..2 {
        assert!(s.login(UserType::User, b"bad-pin!").is_err());
    }
    // The counter (not only the lock) persists.
    let h2 = f.restart();
    let slot = h2.find_slot_by_label(LABEL).unwrap();
    let s2 = h2.open_session(slot, true).unwrap();
    assert!(matches!(
        s2.login(UserType::User, b"bad-pin!"),
        Err(HsmError::PinIncorrect)
    ));
    assert_ne!(
        h2.token_info(slot).unwrap().flags & flags::USER_PIN_LOCKED,
        0
    );
    assert_eq!(h2.reset(), ModuleState::Operational);
    assert!(matches!(
        s2.login(UserType::User, USER_PIN),
        Err(HsmError::PinLocked)
    ));
    let h3 = f.restart();
    let s3 = h3.open_session(slot, true).unwrap();
    assert!(matches!(
        s3.login(UserType::User, USER_PIN),
        Err(HsmError::PinLocked)
    ));
}

#[test]
fn r13_so_init_pin_unlocks() {
    let f = fixture();
    let s = f.hsm.open_session(f.slot, true).unwrap();
    for _ in 0..3 {
        assert!(s.login(UserType::User, b"bad-pin!").is_err());
    }
    s.login(UserType::So, SO_PIN).unwrap();
    s.init_pin(b"fresh-pin").unwrap();
    s.logout().unwrap();
    assert_eq!(user_flags(&f), 0);
    s.login(UserType::User, b"fresh-pin").unwrap();
}

#[test]
fn r13_retry_limit_is_configurable() {
    let f = fixture_with(HsmConfig {
        pin_retry_limit: 5,
        ..config()
    });
    let s = f.hsm.open_session(f.slot, true).unwrap();
    for _ in 0..4 {
        assert!(matches!(
            s.login(UserType::User, b"bad-pin!"),
            Err(HsmError::PinIncorrect)
        ));
    }
    assert_eq!(user_flags(&f), flags::USER_PIN_FINAL_TRY);
    s.login(UserType::User, USER_PIN).unwrap();
}

#[test]
fn r14_so_lockout_blocks_login_and_reinit() {
    let f = fixture();
    let s = f.hsm.open_session(f.slot, true).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            s.login(UserType::So, b"bad-so-pin"),
            Err(HsmError::PinIncorrect)
        ));
    }
    assert_ne!(
        f.hsm.token_info(f.slot).unwrap().flags & flags::SO_PIN_LOCKED,
        0
    );
    assert!(matches!(
        s.login(UserType::So, SO_PIN),
        Err(HsmError::PinLocked)
    ));
    s.close();
    assert!(matches!(
        f.hsm.init_token(f.slot, SO_PIN, "x"),
        Err(HsmError::PinLocked)
    ));
    // Only zeroizing the token gets out of it.
    f.hsm.zeroize_token(f.slot).unwrap();
    assert_eq!(
        f.hsm.token_info(f.slot).unwrap().flags & flags::TOKEN_INITIALIZED,
        0
    );
    f.hsm.init_token(f.slot, SO_PIN, "x").unwrap();
}

#[test]
fn r14_level1_never_locks_the_so_pin() {
    let f = fixture_with(HsmConfig {
        security_level: SecurityLevel::Level1,
        ..config()
    });
    let s = f.hsm.open_session(f.slot, true).unwrap();
    for _ in 0..5 {
        assert!(matches!(
            s.login(UserType::So, b"bad-so-pin"),
            Err(HsmError::PinIncorrect)
        ));
    }
    s.login(UserType::So, SO_PIN).unwrap();
}

#[test]
fn r14_level4_so_lockout_zeroizes_the_token() {
    let f = fixture_with(HsmConfig {
        security_level: SecurityLevel::Level4,
        ..config()
    });
    let u = f.user();
    u.generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    u.close();
    let s = f.hsm.open_session(f.slot, true).unwrap();
    for _ in 0..3 {
        assert!(s.login(UserType::So, b"bad-so-pin").is_err());
    }
    assert_eq!(
        f.hsm.token_info(f.slot).unwrap().flags & flags::TOKEN_INITIALIZED,
        0
    );
    assert!(f.store.is_empty());
}

#[test]
fn r15_logout_destroys_private_session_objects() {
    let f = fixture();
    let s = f.user();
    let session_private = s.generate_key(&KeyTemplate::aes(32)).unwrap();
    let token_private = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    let session_public = s
        .generate_key(&KeyTemplate::aes(32).with_private(false))
        .unwrap();
    s.logout().unwrap();
    assert!(matches!(
        s.encrypt(&gcm(None), session_private, b"x"),
        Err(HsmError::KeyHandleInvalid)
    ));
    assert!(matches!(
        s.encrypt(&gcm(None), token_private, b"x"),
        Err(HsmError::UserNotLoggedIn)
    ));
    assert!(s.encrypt(&gcm(None), session_public, b"x").is_ok());
    s.login(UserType::User, USER_PIN).unwrap();
    assert!(matches!(
        s.encrypt(&gcm(None), session_private, b"x"),
        Err(HsmError::KeyHandleInvalid)
    ));
    assert!(matches!(
        s.get_attribute(session_private, AttributeType::Label),
        Err(HsmError::ObjectHandleInvalid)
    ));
    assert!(s.encrypt(&gcm(None), token_private, b"x").is_ok());
}

#[test]
fn r15_closing_the_last_session_logs_out() {
    let f = fixture();
    let s = f.user();
    let k = s
        .generate_key(&KeyTemplate::aes(32).with_token(true))
        .unwrap();
    s.close();
    let s2 = f.hsm.open_session(f.slot, true).unwrap();
    assert_eq!(s2.state(), SessionState::ReadWritePublic);
    assert!(matches!(
        s2.encrypt(&gcm(None), k, b"x"),
        Err(HsmError::UserNotLoggedIn)
    ));
    let s3 = s2.clone();
    f.hsm.close_all_sessions(f.slot).unwrap();
    assert!(matches!(
        s3.generate_random(1),
        Err(HsmError::SessionHandleInvalid)
    ));
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Exp {
    Ok,
    Unli,
    Sro,
}

fn outcome<T>(r: Result<T, HsmError>) -> Exp {
    match r {
        Ok(_) => Exp::Ok,
        Err(HsmError::UserNotLoggedIn) => Exp::Unli,
        Err(HsmError::SessionReadOnly) => Exp::Sro,
        Err(e) => panic!("unexpected {e:?}"),
    }
}

#[test]
fn r16_access_matrix() {
    use Exp::*;
    let f = fixture();
    let setup = f.user();
    let pub_tok = setup
        .generate_key(&KeyTemplate::aes(16).with_token(true).with_private(false))
        .unwrap();
    let priv_tok = setup
        .generate_key(&KeyTemplate::aes(16).with_token(true))
        .unwrap();
    setup.close();
    // (state, read public, read private, write public token, write private token, write public session,
    //  write private session)
    let table = [
        (SessionState::ReadOnlyPublic, Ok, Unli, Sro, Sro, Ok, Unli),
        (SessionState::ReadWritePublic, Ok, Unli, Ok, Unli, Ok, Unli),
        (SessionState::ReadOnlyUser, Ok, Ok, Sro, Sro, Ok, Ok),
        (SessionState::ReadWriteUser, Ok, Ok, Ok, Ok, Ok, Ok),
        (SessionState::ReadWriteSo, Ok, Unli, Ok, Unli, Ok, Unli),
    ];
    for (state, rp, rq, wpt, wqt, wps, wqs) in table {
        f.hsm.close_all_sessions(f.slot).unwrap();
        let (rw, who) = match state {
            SessionState::ReadOnlyPublic => (false, None),
            SessionState::ReadWritePublic => (true, None),
            SessionState::ReadOnlyUser => (false, Some((UserType::User, USER_PIN))),
            SessionState::ReadWriteUser => (true, Some((UserType::User, USER_PIN))),
            SessionState::ReadWriteSo => (true, Some((UserType::So, SO_PIN))),
        };
        let s = f.hsm.open_session(f.slot, rw).unwrap();
        if let Some((u, pin)) = who {
            s.login(u, pin).unwrap();
        }
        assert_eq!(s.state(), state);
        let ctx = format!("{state:?}");
        assert_eq!(
            outcome(s.get_attribute(pub_tok, AttributeType::Label)),
            rp,
            "{ctx} read public"
        );
        assert_eq!(
            outcome(s.get_attribute(priv_tok, AttributeType::Label)),
            rq,
            "{ctx} read private"
        );
        let generate = |token: bool, private: bool| {
            outcome(s.generate_key(&KeyTemplate::aes(16).with_token(token).with_private(private)))
        };
        assert_eq!(generate(true, false), wpt, "{ctx} write public token");
        assert_eq!(generate(true, true), wqt, "{ctx} write private token");
        assert_eq!(generate(false, false), wps, "{ctx} write public session");
        assert_eq!(generate(false, true), wqs, "{ctx} write private session");
        // Modify follows the same matrix as create.
        let label = AttributeValue::Label("renamed".into());
        let exp_mod_priv = if wqt == Ok {
            Ok
        } else if rq == Unli {
            Unli
        } else {
            wqt
        };
        assert_eq!(
            outcome(s.set_attribute(priv_tok, label.clone())),
            exp_mod_priv,
            "{ctx} modify private token"
        );
        assert_eq!(
            outcome(s.set_attribute(pub_tok, label)),
            wpt,
            "{ctx} modify public token"
        );
    }
}
