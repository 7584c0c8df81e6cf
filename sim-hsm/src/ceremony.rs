//! HPCS-style master-key ceremony (R-33..R-35): administrators with P-256 signature keys, signature and
//! revocation thresholds, imprint mode, signed administrative commands with replay protection, the new
//! master-key register (parts, commit, activate) and master-key rotation (re-sealing every stored record).
//!
//! Signed commands: an [`AdminCommand`] is turned into canonical bytes together with the module's
//! [`CommandContext`] (a random per-start instance nonce and a command counter that increases after every
//! accepted command), then signed with ECDSA P-256/SHA-256 ([`sign_command`]). Outside imprint mode a command
//! needs `signature_threshold` valid signatures from distinct administrators (removing an administrator needs
//! `revocation_threshold`). A replayed command fails because the counter moved on.
//!
//! The ceremony state (administrators, thresholds, registers) lives in module memory only: after a process
//! restart the crypto unit is back in imprint mode, and the same key parts (or the dev key) re-activate the
//! store.

use std::sync::atomic::Ordering;

use p256::ecdsa::VerifyingKey;
use zeroize::Zeroizing;

use crate::error::HsmError;
use crate::hsm::{Hsm, lock};
use crate::master_key::{MasterKeyRegister, RegisterState};
use crate::primitives;
use crate::seal::{self, MasterKey};
use crate::store::StoreOp;
use crate::token::{read, write};

/// Maximum number of administrators.
pub const MAX_ADMINISTRATORS: usize = 8;

pub use kmsim_proto::admin::{AdminCommand, AdminSignature, CommandContext, sign_command};

struct Admin {
    name: String,
    key: VerifyingKey,
}

/// Ceremony state kept by the module.
pub(crate) struct Ceremony {
    admins: Vec<Admin>,
    signature_threshold: u8,
    revocation_threshold: u8,
    instance: [u8; 16],
    counter: u64,
    parts: Vec<Zeroizing<[u8; 32]>>,
    committed: bool,
}

impl Ceremony {
    pub(crate) fn new() -> Self {
        Self {
            admins: Vec::new(),
            signature_threshold: 0,
            revocation_threshold: 0,
            instance: [0; 16],
            counter: 0,
            parts: Vec::new(),
            committed: false,
        }
    }

    pub(crate) fn instance_is_unset(&self) -> bool {
        self.instance == [0; 16]
    }

    pub(crate) fn set_instance(&mut self, instance: [u8; 16]) {
        self.instance = instance;
    }

    pub(crate) fn imprint_mode(&self) -> bool {
        self.signature_threshold == 0
    }

    pub(crate) fn signature_threshold(&self) -> u8 {
        self.signature_threshold
    }

    pub(crate) fn revocation_threshold(&self) -> u8 {
        self.revocation_threshold
    }

    pub(crate) fn admin_names(&self) -> Vec<String> {
        self.admins.iter().map(|a| a.name.clone()).collect()
    }

    fn state(&self) -> RegisterState {
        match (self.parts.len(), self.committed) {
            (0, _) => RegisterState::Empty,
            (1, _) => RegisterState::PartiallyLoaded,
            (_, false) => RegisterState::FullUncommitted,
            (_, true) => RegisterState::FullCommitted,
        }
    }

    fn value(&self) -> Option<Zeroizing<[u8; 32]>> {
        if self.parts.len() < 2 {
            return None;
        }
        let mut v = Zeroizing::new([0u8; 32]);
        for p in &self.parts {
            for (a, b) in v.iter_mut().zip(p.iter()) {
                *a ^= b;
            }
        }
        Some(v)
    }

    pub(crate) fn new_register(&self) -> MasterKeyRegister {
        MasterKeyRegister {
            state: self.state(),
            verification_pattern: self.value().map(|v| seal::verification_pattern(&v)),
            parts_loaded: u8::try_from(self.parts.len()).unwrap_or(u8::MAX),
        }
    }

    fn clear_new(&mut self) {
        self.parts.clear();
        self.committed = false;
    }

    pub(crate) fn zeroize(&mut self) {
        self.admins.clear();
        self.signature_threshold = 0;
        self.revocation_threshold = 0;
        self.clear_new();
        self.counter = self.counter.wrapping_add(1);
    }

    fn context(&self) -> CommandContext {
        CommandContext {
            instance: self.instance,
            counter: self.counter,
        }
    }

    /// Checks the quorum for `cmd` (none in imprint mode) and advances the counter.
    fn authorize(
        &mut self,
        cmd: &AdminCommand,
        sigs: &[AdminSignature],
        revocation: bool,
    ) -> Result<(), HsmError> {
        if !self.imprint_mode() {
            let need = usize::from(if revocation {
                self.revocation_threshold
            } else {
                self.signature_threshold
            });
            let msg = cmd.canonical_bytes(&self.context());
            let mut signers: Vec<&str> = Vec::new();
            for s in sigs {
                let Some(admin) = self.admins.iter().find(|a| a.name == s.admin) else {
                    continue;
                };
                if signers.contains(&admin.name.as_str()) {
                    continue;
                }
                if primitives::ecdsa_verify(&admin.key, &msg, &s.signature, false).is_ok() {
                    signers.push(admin.name.as_str());
                }
            }
            if signers.len() < need {
                return Err(HsmError::InsufficientSignatures);
            }
        }
        self.counter += 1;
        Ok(())
    }
}

impl Hsm {
    /// The context administrators must sign commands for (instance nonce and current counter).
    #[must_use]
    pub fn admin_command_context(&self) -> CommandContext {
        lock(&self.inner.ceremony).context()
    }

    /// Installs an administrator (max 8, else `ArgumentsBad`; duplicate name or bad key: `ArgumentsBad`).
    pub fn add_administrator(
        &self,
        name: &str,
        public_key_sec1: &[u8],
        signatures: &[AdminSignature],
    ) -> Result<(), HsmError> {
        self.inner.ensure_operational()?;
        let key =
            VerifyingKey::from_sec1_bytes(public_key_sec1).map_err(|_| HsmError::ArgumentsBad)?;
        let mut c = lock(&self.inner.ceremony);
        if c.admins.len() >= MAX_ADMINISTRATORS
            || name.is_empty()
            || c.admins.iter().any(|a| a.name == name)
        {
            return Err(HsmError::ArgumentsBad);
        }
        let cmd = AdminCommand::AddAdministrator {
            name: name.to_owned(),
            public_key: public_key_sec1.to_vec(),
        };
        c.authorize(&cmd, signatures, false)?;
        c.admins.push(Admin {
            name: name.to_owned(),
            key,
        });
        Ok(())
    }

    /// Removes an administrator; needs the revocation threshold. Refused (`ArgumentsBad`) when fewer
    /// administrators than a threshold would remain.
    pub fn remove_administrator(
        &self,
        name: &str,
        signatures: &[AdminSignature],
    ) -> Result<(), HsmError> {
        self.inner.ensure_operational()?;
        let mut c = lock(&self.inner.ceremony);
        let Some(pos) = c.admins.iter().position(|a| a.name == name) else {
            return Err(HsmError::ArgumentsBad);
        };
        let remaining = c.admins.len() - 1;
        if remaining < usize::from(c.signature_threshold.max(c.revocation_threshold)) {
            return Err(HsmError::ArgumentsBad);
        }
        let cmd = AdminCommand::RemoveAdministrator {
            name: name.to_owned(),
        };
        c.authorize(&cmd, signatures, true)?;
        c.admins.remove(pos);
        Ok(())
    }

    /// Sets the thresholds: each in 1..=min(8, #admins), else `ArgumentsBad`. Leaves imprint mode.
    pub fn set_thresholds(
        &self,
        signature: u8,
        revocation: u8,
        signatures: &[AdminSignature],
    ) -> Result<(), HsmError> {
        self.inner.ensure_operational()?;
        let mut c = lock(&self.inner.ceremony);
        let max = c.admins.len().min(MAX_ADMINISTRATORS);
        let ok = |v: u8| v >= 1 && usize::from(v) <= max;
        if !ok(signature) || !ok(revocation) {
            return Err(HsmError::ArgumentsBad);
        }
        c.authorize(
            &AdminCommand::SetThresholds {
                signature,
                revocation,
            },
            signatures,
            false,
        )?;
        c.signature_threshold = signature;
        c.revocation_threshold = revocation;
        Ok(())
    }

    /// Loads one 256-bit key part into the new register (2 or 3 parts, XOR-combined). `ImprintMode` before the
    /// thresholds are set; `MasterKeyRegisterState` once committed; `ArgumentsBad` for a fourth part.
    pub fn load_master_key_part(
        &self,
        part: Zeroizing<[u8; 32]>,
        signatures: &[AdminSignature],
    ) -> Result<(), HsmError> {
        self.inner.ensure_operational()?;
        let mut c = lock(&self.inner.ceremony);
        if c.imprint_mode() {
            return Err(HsmError::ImprintMode);
        }
        if c.committed {
            return Err(HsmError::MasterKeyRegisterState);
        }
        if c.parts.len() >= 3 {
            return Err(HsmError::ArgumentsBad);
        }
        c.authorize(
            &AdminCommand::load_master_key_part(&part),
            signatures,
            false,
        )?;
        c.parts.push(part);
        Ok(())
    }

    /// Clears the new register.
    pub fn clear_new_master_key(&self, signatures: &[AdminSignature]) -> Result<(), HsmError> {
        self.inner.ensure_operational()?;
        if self.inner.rotating.load(Ordering::Acquire) {
            return Err(HsmError::MasterKeyRotationInProgress);
        }
        let mut c = lock(&self.inner.ceremony);
        if c.imprint_mode() {
            return Err(HsmError::ImprintMode);
        }
        c.authorize(&AdminCommand::ClearNewMasterKey, signatures, false)?;
        c.clear_new();
        Ok(())
    }

    /// Commits the new register: `FullUncommitted -> FullCommitted`, else `MasterKeyRegisterState`.
    pub fn commit_master_key(&self, signatures: &[AdminSignature]) -> Result<(), HsmError> {
        self.inner.ensure_operational()?;
        let mut c = lock(&self.inner.ceremony);
        if c.imprint_mode() {
            return Err(HsmError::ImprintMode);
        }
        if c.state() != RegisterState::FullUncommitted {
            return Err(HsmError::MasterKeyRegisterState);
        }
        c.authorize(&AdminCommand::CommitMasterKey, signatures, false)?;
        c.committed = true;
        Ok(())
    }

    /// First activation: the committed new key becomes the current (`Valid`) master key, the new register is
    /// cleared and every token is loaded from the store. Needs an empty current register
    /// (`MasterKeyRegisterState`; use [`Hsm::rotate_master_key`] otherwise).
    pub fn activate_master_key(&self, signatures: &[AdminSignature]) -> Result<(), HsmError> {
        self.inner.ensure_operational()?;
        let mut c = lock(&self.inner.ceremony);
        if c.imprint_mode() {
            return Err(HsmError::ImprintMode);
        }
        if c.state() != RegisterState::FullCommitted || read(&self.inner.master).is_some() {
            return Err(HsmError::MasterKeyRegisterState);
        }
        let value = c.value().ok_or(HsmError::MasterKeyRegisterState)?;
        let mk = MasterKey::new(value);
        token_store_check(self, &mk)?;
        c.authorize(&AdminCommand::ActivateMasterKey, signatures, false)?;
        self.inner.install_master_key(mk)?;
        c.clear_new();
        Ok(())
    }

    /// Begins a rotation to the committed new key. Until [`Hsm::finish_master_key_rotation`], creating key
    /// objects and initialising tokens fail with `MasterKeyRotationInProgress`.
    pub fn begin_master_key_rotation(&self, signatures: &[AdminSignature]) -> Result<(), HsmError> {
        self.inner.ensure_operational()?;
        let mut c = lock(&self.inner.ceremony);
        if c.imprint_mode() {
            return Err(HsmError::ImprintMode);
        }
        if c.state() != RegisterState::FullCommitted || read(&self.inner.master).is_none() {
            return Err(HsmError::MasterKeyRegisterState);
        }
        if self.inner.rotating.load(Ordering::Acquire) {
            return Err(HsmError::MasterKeyRotationInProgress);
        }
        c.authorize(&AdminCommand::RotateMasterKey, signatures, false)?;
        self.inner.rotating.store(true, Ordering::Release);
        Ok(())
    }

    /// Re-seals every stored record under the new key in one atomic [`crate::store::ObjectStore::apply`], then
    /// makes the new key current and clears the new register. Records that do not open under the current key
    /// (damaged or foreign) are left untouched.
    pub fn finish_master_key_rotation(&self) -> Result<(), HsmError> {
        let inner = &self.inner;
        if !inner.rotating.load(Ordering::Acquire) {
            return Err(HsmError::MasterKeyRegisterState);
        }
        let mut c = lock(&inner.ceremony);
        let result = (|| {
            let value = c.value().ok_or(HsmError::MasterKeyRegisterState)?;
            let new_key = MasterKey::new(value);
            let mut master = write(&inner.master);
            let current = master.as_ref().ok_or(HsmError::MasterKeyNotLoaded)?;
            let mut batch = Vec::new();
            for (key, value) in inner.store.scan_prefix(b"tok/")? {
                let Ok(body) = current.open(&key, &value) else {
                    continue;
                };
                let nonce = inner.random_array::<12>()?;
                batch.push(StoreOp::Put {
                    value: new_key.seal(&key, &nonce, &body)?,
                    key,
                });
            }
            inner.store.apply(&batch)?;
            *master = Some(new_key);
            Ok(())
        })();
        if result.is_ok() {
            c.clear_new();
        }
        inner.rotating.store(false, Ordering::Release);
        result
    }

    /// [`Hsm::begin_master_key_rotation`] followed by [`Hsm::finish_master_key_rotation`].
    pub fn rotate_master_key(&self, signatures: &[AdminSignature]) -> Result<(), HsmError> {
        self.begin_master_key_rotation(signatures)?;
        self.finish_master_key_rotation()
    }
}

fn token_store_check(hsm: &Hsm, mk: &MasterKey) -> Result<(), HsmError> {
    crate::token::check_store_owner(hsm.inner.store.as_ref(), mk)
}
