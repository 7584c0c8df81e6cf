//! Read-only helpers for start-up seeding (`crate::seed`): a key's record by id across all
//! instances, an alias's owner, whether an instance can take new keys, and whether stored
//! material equals material a seed file gives.

use std::sync::Arc;

use sim_hsm::ObjectHandle;
use zeroize::Zeroizing;

use crate::error::KmsError;
use crate::kms::Kms;
use crate::kms::ids::{Alias, InstanceId, KeyId};
use crate::kms::keystore::MaterialUse;
use crate::kms::records::KeyRecord;

/// Associated data of the probe that compares root-key material.
const PROBE_AAD: &[u8] = b"kmsim-seed-material-check";

impl Kms {
    /// The record of key `id`, in whatever instance it is (ids are unique server-wide).
    pub(crate) fn key_record(&self, id: KeyId) -> Option<Arc<KeyRecord>> {
        self.keys.get(&id).map(|entry| entry.snapshot())
    }

    /// The key that holds `alias` in `instance`, if any.
    pub(crate) fn alias_owner(&self, instance: InstanceId, alias: &Alias) -> Option<KeyId> {
        let instance = self.instance(instance).ok()?;
        crate::kms::read(&instance.aliases).get(alias).copied()
    }

    /// Whether `instance` exists and can take new keys (its keystore is intact).
    pub(crate) fn seed_target_ready(&self, instance: InstanceId) -> Result<(), KmsError> {
        self.instance(instance)?.keystore().map(|_| ())
    }

    /// Whether the material behind `handle` in `instance`'s keystore equals `material`. A
    /// standard key's payload is read back and compared; a root key's material never leaves
    /// the HSM, so a probe sealed under it must open under a temporary copy of `material`
    /// (destroyed right after).
    pub(crate) fn material_matches(
        &self,
        instance: InstanceId,
        handle: u64,
        usage: MaterialUse,
        material: &Zeroizing<Vec<u8>>,
    ) -> Result<bool, KmsError> {
        let keystore = self.instance(instance)?.keystore()?;
        match usage {
            // Start-up only: no caller can time this comparison.
            MaterialUse::Standard => Ok(*keystore.payload(ObjectHandle(handle))? == **material),
            MaterialUse::Root => {
                let probe = keystore.seal(ObjectHandle(handle), PROBE_AAD.to_vec(), &[0u8; 16])?;
                let copy = keystore.import(
                    MaterialUse::Root,
                    material.clone(),
                    "kmsim:seed-material-check",
                )?;
                let opened = keystore.open_sealed(
                    copy,
                    probe.iv,
                    PROBE_AAD.to_vec(),
                    &probe.ciphertext_and_tag,
                );
                keystore.destroy(copy)?;
                match opened {
                    Ok(_) => Ok(true),
                    Err(KmsError::UnprocessableCiphertext) => Ok(false),
                    Err(error) => Err(error),
                }
            }
        }
    }
}
