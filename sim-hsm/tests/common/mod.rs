//! Shared fixtures for the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use sim_hsm::*;

pub const SO_PIN: &[u8] = b"so-pin-1234";
pub const USER_PIN: &[u8] = b"user-pin-1234";
pub const MK_BYTES: [u8; 32] = [0x4b; 32];
pub const LABEL: &str = "token-1";

/// Test configuration: a small PBKDF2 count keeps the suite fast (the default is tested separately).
pub fn config() -> HsmConfig {
    HsmConfig {
        pin_kdf_iterations: 1_000,
        ..HsmConfig::default()
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(s).unwrap()
}

pub struct Fixture {
    pub hsm: Hsm,
    pub store: Arc<MemoryObjectStore>,
    pub slot: SlotId,
    pub config: HsmConfig,
}

/// A module with a dev master key and one token ("token-1") whose user PIN is set.
pub fn fixture() -> Fixture {
    fixture_with(config())
}

pub fn fixture_with(config: HsmConfig) -> Fixture {
    let store = Arc::new(MemoryObjectStore::new());
    let hsm = Hsm::new(config.clone(), store.clone()).unwrap();
    hsm.activate_dev_master_key(&DevMasterKey::from_bytes(MK_BYTES))
        .unwrap();
    let slot = hsm.empty_slot().unwrap();
    hsm.init_token(slot, SO_PIN, LABEL).unwrap();
    let so = hsm.open_session(slot, true).unwrap();
    so.login(UserType::So, SO_PIN).unwrap();
    so.init_pin(USER_PIN).unwrap();
    so.logout().unwrap();
    so.close();
    Fixture {
        hsm,
        store,
        slot,
        config,
    }
}

impl Fixture {
    /// An R/W session logged in as the user.
    pub fn user(&self) -> Session {
        let s = self.hsm.open_session(self.slot, true).unwrap();
        s.login(UserType::User, USER_PIN).unwrap();
        s
    }

    /// An R/W session logged in as the SO.
    pub fn so(&self) -> Session {
        let s = self.hsm.open_session(self.slot, true).unwrap();
        s.login(UserType::So, SO_PIN).unwrap();
        s
    }

    /// A new module over the same store with the same master key ("process restart").
    pub fn restart(&self) -> Hsm {
        let hsm = Hsm::new(self.config.clone(), self.store.clone()).unwrap();
        hsm.activate_dev_master_key(&DevMasterKey::from_bytes(MK_BYTES))
            .unwrap();
        hsm
    }
}

/// Objects visible to `s`.
pub fn count(s: &Session) -> usize {
    s.find_objects(&AttributeQuery::all()).unwrap().len()
}

/// An AES KEK (wrap + unwrap) from known bytes.
pub fn kek(s: &Session, bytes: &[u8]) -> ObjectHandle {
    let t = KeyTemplate::aes_kek(bytes.len());
    s.create_secret_key(&t, Zeroizing::new(bytes.to_vec()))
        .unwrap()
}

/// An extractable, non-sensitive secret key from known bytes (AES when the length allows, else generic).
pub fn target(s: &Session, bytes: &[u8]) -> ObjectHandle {
    let t = readable_template(bytes.len());
    s.create_secret_key(&t, Zeroizing::new(bytes.to_vec()))
        .unwrap()
}

/// Template for an extractable, non-sensitive key whose VALUE can be read back.
pub fn readable_template(len: usize) -> KeyTemplate {
    let base = if matches!(len, 16 | 24 | 32) {
        KeyTemplate::aes(len)
    } else {
        KeyTemplate::generic_secret(len)
    };
    base.with_sensitive(false).with_extractable(true)
}

pub fn value(s: &Session, h: ObjectHandle) -> Vec<u8> {
    match s.get_attribute(h, AttributeType::Value).unwrap() {
        AttributeValue::Value(v) => v.to_vec(),
        other => panic!("unexpected {other:?}"),
    }
}

pub fn boolean(s: &Session, h: ObjectHandle, t: AttributeType) -> bool {
    s.get_attribute(h, t).unwrap().as_bool().unwrap()
}

pub fn gcm(iv: Option<[u8; 12]>) -> Mechanism {
    Mechanism::AesGcm {
        iv,
        aad: b"aad".to_vec(),
    }
}
