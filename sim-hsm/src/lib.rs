//! A simulated FIPS-style hardware security module (the `sim-hsm` crate of kmsim).
//!
//! * Slots and tokens with SO/User PINs, PKCS#11 login rules, a persisted wrong-PIN lockout and the PKCS#11
//!   access matrix.
//! * Key objects (AES, generic secrets, P-256) with PKCS#11 attributes and sticky-attribute rules; secret
//!   material never leaves the module in plaintext except a non-sensitive, extractable secret key's `VALUE`
//!   below security level 3.
//! * AES-KW/KWP wrap and unwrap (SoftHSM check order), AES-GCM, ECDSA, ECDH, HKDF.
//! * FIPS 140-style power-on self-tests, conditional tests, an error state, fault injection and an error log.
//! * Sealed persistence through [`store::ObjectStore`]: every record is AES-256-GCM sealed under a master key,
//!   object values additionally under a per-token key wrapped by PBKDF2-derived PIN keys.
//! * An HPCS-style master-key ceremony (administrators, quorum signatures, key parts, rotation).
//!
//! Deviation from PKCS#11: [`ObjectHandle`]s of token objects are stable across restarts (persisted with the
//! object), so callers may store them.
//!
//! ```
//! use std::sync::Arc;
//! use sim_hsm::{DevMasterKey, Hsm, HsmConfig, KeyTemplate, Mechanism, MemoryObjectStore, UserType};
//!
//! # fn main() -> Result<(), sim_hsm::HsmError> {
//! let config = HsmConfig { pin_kdf_iterations: 1_000, ..HsmConfig::default() };
//! let hsm = Hsm::new(config, Arc::new(MemoryObjectStore::new()))?;
//! hsm.activate_dev_master_key(&DevMasterKey::generate())?;
//! let slot = hsm.empty_slot().expect("one empty slot");
//! hsm.init_token(slot, b"so-secret", "kms")?;
//! let so = hsm.open_session(slot, true)?;
//! so.login(UserType::So, b"so-secret")?;
//! so.init_pin(b"user-secret")?;
//! so.close();
//!
//! let s = hsm.open_session(slot, true)?;
//! s.login(UserType::User, b"user-secret")?;
//! let kek = s.generate_key(&KeyTemplate::aes(32).with_token(true).with_label("kek-1"))?;
//! let out = s.encrypt(&Mechanism::AesGcm { iv: None, aad: b"ctx".to_vec() }, kek, b"data key")?;
//! let back = s.decrypt(
//!     &Mechanism::AesGcm { iv: Some(out.iv), aad: b"ctx".to_vec() },
//!     kek,
//!     &out.ciphertext_and_tag,
//! )?;
//! assert_eq!(&back[..], b"data key");
//! # Ok(())
//! # }
//! ```
//!
//! Defaults stricter than SoftHSM: secret and private keys are `SENSITIVE=true, EXTRACTABLE=false` unless the
//! template says otherwise.

pub mod attributes;
pub mod ceremony;
mod codec;
mod crypto_ops;
pub mod error;
pub mod export;
pub mod hsm;
mod keymgmt;
pub mod master_key;
pub mod mechanism;
pub mod object;
mod primitives;
pub mod rng;
mod seal;
pub mod selftest;
pub mod session;
pub mod store;
pub mod token;

pub use attributes::{
    AttributeQuery, AttributeType, AttributeValue, KeyTemplate, KeyType, ObjectClass,
};
pub use ceremony::{AdminCommand, AdminSignature, CommandContext, sign_command};
pub use crypto_ops::MAX_RANDOM_LEN;
pub use error::HsmError;
pub use hsm::{
    FailureRecord, Hsm, HsmConfig, ModuleState, ModuleStatus, SecurityLevel, SelfTestHook,
};
pub use master_key::{DevMasterKey, MasterKeyRegister, RegisterState};
pub use mechanism::{EcKdf, GcmOutput, Mechanism};
pub use object::ObjectHandle;
pub use p256;
pub use selftest::SelfTestResult;
pub use session::{Session, SessionState, UserType};
pub use store::{MemoryObjectStore, ObjectStore, StoreError, StoreOp};
pub use token::{SlotId, SlotInfo, TokenInfo};
pub use zeroize::Zeroizing;
