//! The HSM master-key ceremony over the KMS (`HsmService.AddAdministrator` ...
//! `RotateMasterKey`): administrators' signed commands go to the HSM unchanged; the KMS keeps
//! a copy of the key parts it passed on, so that when a rotation (or first activation) makes
//! their XOR the HSM's current master key, the KMS knows that key and re-activates it after a
//! zeroization or reset ([`Kms::master_key`]).
//!
//! A rotated master key survives a restart only if the server is started with it: under
//! `--dev` the new key is written to the development secrets file (before the HSM re-seals,
//! and the old key is written back if re-sealing fails); with `--master-key-file` the server
//! never rewrites the operator's file, and the operator must replace its contents with the new
//! key (the XOR of the parts) before restarting, or the start fails with the HSM's
//! `WrongMasterKey`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sim_hsm::{AdminSignature, CommandContext, DevMasterKey, HsmError, MasterKeyRegister};
use zeroize::Zeroizing;

use crate::error::KmsError;
use crate::kms::{Kms, lock, read, write};

/// What the KMS keeps of the ceremony.
#[derive(Debug, Default)]
pub(crate) struct CeremonyState {
    /// The parts in the HSM's new register, in load order.
    parts: Mutex<Vec<Zeroizing<[u8; 32]>>>,
    /// The development secrets file a new master key is written to (`--dev`).
    dev_secrets: Mutex<Option<PathBuf>>,
}

/// The outcome of `RotateMasterKey`.
#[derive(Debug, Clone, Copy)]
pub struct RotationOutcome {
    /// The current register after the call.
    pub current: MasterKeyRegister,
    /// Whether the rotation is still in progress.
    pub in_progress: bool,
}

/// Maps the HSM's `ArgumentsBad` for a ceremony command to [`KmsError::CeremonyArguments`].
fn ceremony(error: HsmError) -> KmsError {
    match error {
        HsmError::ArgumentsBad => KmsError::CeremonyArguments,
        other => KmsError::Hsm(other),
    }
}

impl Kms {
    /// The master key the HSM runs with (re-activated after a zeroization or reset).
    pub fn master_key(&self) -> Arc<DevMasterKey> {
        Arc::clone(&read(&self.master_key))
    }

    /// Makes the KMS write a master key that a ceremony makes current into the development
    /// secrets file `path` (`--dev`).
    pub fn persist_master_key_to(&self, path: PathBuf) {
        *lock(&self.ceremony.dev_secrets) = Some(path);
    }

    /// The context administrators sign commands for.
    pub fn admin_command_context(&self) -> CommandContext {
        self.hsm.admin_command_context()
    }

    /// Installs an administrator.
    pub fn add_administrator(
        &self,
        name: &str,
        public_key_sec1: &[u8],
        signatures: &[AdminSignature],
    ) -> Result<(), KmsError> {
        self.hsm
            .add_administrator(name, public_key_sec1, signatures)
            .map_err(ceremony)
    }

    /// Sets the signature and revocation thresholds.
    pub fn set_thresholds(
        &self,
        signature: u8,
        revocation: u8,
        signatures: &[AdminSignature],
    ) -> Result<(), KmsError> {
        self.hsm
            .set_thresholds(signature, revocation, signatures)
            .map_err(ceremony)
    }

    /// Loads a master-key part into the HSM's new register and keeps a copy. Returns the new
    /// register.
    pub fn load_master_key_part(
        &self,
        part: Zeroizing<[u8; 32]>,
        signatures: &[AdminSignature],
    ) -> Result<MasterKeyRegister, KmsError> {
        let mut parts = lock(&self.ceremony.parts);
        self.hsm
            .load_master_key_part(part.clone(), signatures)
            .map_err(ceremony)?;
        let register = self.hsm.status().new_master_key;
        // The HSM clears its register on zeroize, activation and rotation: keep exactly the
        // parts it holds, this one last.
        parts.truncate(usize::from(register.parts_loaded.saturating_sub(1)));
        parts.push(part);
        Ok(register)
    }

    /// Commits the HSM's new register. Returns it.
    pub fn commit_master_key(
        &self,
        signatures: &[AdminSignature],
    ) -> Result<MasterKeyRegister, KmsError> {
        self.hsm.commit_master_key(signatures).map_err(ceremony)?;
        Ok(self.hsm.status().new_master_key)
    }

    /// First activation of the committed key (the HSM's current register must be empty).
    /// Returns the current register.
    pub fn activate_master_key(
        &self,
        signatures: &[AdminSignature],
    ) -> Result<MasterKeyRegister, KmsError> {
        let mut parts = lock(&self.ceremony.parts);
        let new_key = combine(&parts);
        self.hsm.activate_master_key(signatures).map_err(ceremony)?;
        parts.clear();
        self.adopt_master_key(new_key)?;
        self.ensure_iam_signer()?;
        Ok(self.hsm.status().current_master_key)
    }

    /// Rotates the HSM to the committed key: begins, and unless `pause`, finishes (see
    /// [`Kms::finish_master_key_rotation`]).
    pub fn rotate_master_key(
        &self,
        signatures: &[AdminSignature],
        pause: bool,
    ) -> Result<RotationOutcome, KmsError> {
        self.hsm
            .begin_master_key_rotation(signatures)
            .map_err(ceremony)?;
        tracing::warn!("HSM master-key rotation begun: key creation and rotation are refused");
        if !pause {
            self.finish_master_key_rotation()?;
        }
        let status = self.hsm.status();
        Ok(RotationOutcome {
            current: status.current_master_key,
            in_progress: status.rotation_in_progress,
        })
    }

    /// Finishes a rotation: the HSM re-seals every record under the new key, which becomes the
    /// KMS's master key (written first to the `--dev` secrets file, and written back to the old
    /// key if re-sealing fails). `MASTER_KEY_REGISTER_STATE_ERR` when no rotation is in progress.
    pub fn finish_master_key_rotation(&self) -> Result<MasterKeyRegister, KmsError> {
        let mut parts = lock(&self.ceremony.parts);
        if !self.hsm.status().rotation_in_progress {
            return Err(HsmError::MasterKeyRegisterState.into());
        }
        let new_key = combine(&parts);
        let old_key = self.master_key();
        if let Some(key) = &new_key {
            self.write_dev_master_key(key)?;
        }
        if let Err(error) = self.hsm.finish_master_key_rotation() {
            if new_key.is_some() {
                self.write_dev_master_key(&old_key)?;
            }
            return Err(error.into());
        }
        parts.clear();
        // IAM's token-signing key is sealed outside the HSM's records: re-seal it too.
        self.ensure_iam_signer()?;
        self.adopt_master_key(new_key)?;
        tracing::warn!(
            "HSM master-key rotation finished: every record is sealed under the new key"
        );
        Ok(self.hsm.status().current_master_key)
    }

    /// Makes `key` (the XOR of the parts the KMS passed on) the KMS's master key, after
    /// checking it is the HSM's current key. Without the parts (loaded before a restart) the
    /// KMS cannot know the key: an error says so, and the old key stays.
    fn adopt_master_key(&self, key: Option<DevMasterKey>) -> Result<(), KmsError> {
        let current = self.hsm.master_key_verification_pattern();
        match key {
            Some(key) if Some(key.verification_pattern()) == current => {
                *write(&self.master_key) = Arc::new(key);
                tracing::warn!(
                    vp = %hex::encode(key_vp(&self.master_key())),
                    "the HSM runs a new master key; start the server with it from now on"
                );
                Ok(())
            }
            _ => {
                tracing::error!(
                    "the HSM's new master key is not the XOR of the parts this server loaded; it cannot be re-activated after a reset"
                );
                Err(HsmError::MasterKeyRegisterState.into())
            }
        }
    }

    fn write_dev_master_key(&self, key: &DevMasterKey) -> Result<(), KmsError> {
        let Some(path) = lock(&self.ceremony.dev_secrets).clone() else {
            return Ok(());
        };
        crate::config::update_dev_master_key(&path, key).map_err(|error| {
            KmsError::Store(crate::store::StoreError::backend(format!(
                "cannot write the new master key to {}: {error}",
                path.display()
            )))
        })
    }
}

fn key_vp(key: &DevMasterKey) -> [u8; 8] {
    key.verification_pattern()
}

/// The XOR of two or three parts, as the HSM combines them.
fn combine(parts: &[Zeroizing<[u8; 32]>]) -> Option<DevMasterKey> {
    if parts.len() < 2 {
        return None;
    }
    let mut value = Zeroizing::new([0u8; 32]);
    for part in parts {
        for (a, b) in value.iter_mut().zip(part.iter()) {
            *a ^= b;
        }
    }
    Some(DevMasterKey::from_bytes(*value))
}
