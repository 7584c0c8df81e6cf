//! HSM administration: status, self-tests (with an optional injected failure), and the
//! tamper response / zeroization that wipe every instance's keystore (cryptoshredding at the
//! HSM level: key metadata stays, key material is gone).
//!
//! Each administration call is one `Kms` method, so the permission check that
//! authentication will add sits at the top of each.

use std::sync::atomic::Ordering;

use sim_hsm::{ModuleState, ModuleStatus, SlotInfo};

use crate::error::KmsError;
use crate::kms::keystore::Keystore;
use crate::kms::{Kms, lock, write};

/// How the HSM's key material is wiped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WipeKind {
    /// A tamper event: wiped, and recorded as the HSM's last failure.
    Tamper,
    /// An orderly zeroization.
    Zeroize,
}

/// What the HSM reports about itself.
#[derive(Debug, Clone)]
pub struct HsmReport {
    /// State, self-tests, last failure, master-key registers, ceremony.
    pub status: ModuleStatus,
    /// Every slot, initialised or not.
    pub slots: Vec<SlotInfo>,
}

impl Kms {
    /// The HSM's status and slots.
    pub fn hsm_status(&self) -> HsmReport {
        HsmReport {
            status: self.hsm.status(),
            slots: self.hsm.slots(),
        }
    }

    /// Runs the HSM's power-on self-tests; with `fail`, that test (a canonical name from
    /// `sim_hsm::selftest`) fails in this run, leaving the HSM in its error state. The injected
    /// failure applies to this run only. When the run passes, the master key is (re-)activated
    /// if a wipe in the error state left none. Returns the HSM's report after the run.
    pub fn run_self_tests(&self, fail: Option<&'static str>) -> Result<HsmReport, KmsError> {
        if fail.is_some() {
            self.hsm.set_self_test_failure(fail);
        }
        let state = self.hsm.run_self_tests();
        if fail.is_some() {
            self.hsm.set_self_test_failure(None);
        }
        if state == ModuleState::Operational {
            tracing::info!("HSM self-tests passed");
            // Idempotent for the key already active.
            self.hsm.activate_dev_master_key(&self.master_key())?;
            self.ensure_iam_signer()?;
            self.open_awaiting_keystores()?;
        } else {
            tracing::error!(
                ?fail,
                "HSM self-tests failed: the HSM is in its error state"
            );
        }
        Ok(self.hsm_status())
    }

    /// Opens the keystores that could not be opened because the HSM failed its self-tests at
    /// start-up (the server started anyway, NOT_SERVING); a keystore the HSM no longer holds
    /// loads as destroyed.
    pub(crate) fn open_awaiting_keystores(&self) -> Result<(), KmsError> {
        for instance in self.instances.values() {
            if !instance.awaiting_hsm.load(Ordering::Acquire) {
                continue;
            }
            let keystore = match Keystore::open(&self.hsm, instance.record.id, &self.credentials) {
                Ok(keystore) => Some(keystore),
                Err(KmsError::KeyMaterialDestroyed(_)) => None,
                Err(error) => return Err(error),
            };
            *write(&instance.keystore) = keystore;
            instance.awaiting_hsm.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Wipes the HSM (tamper response or zeroization): every instance's keystore is
    /// destroyed, so every key becomes unusable (`KEY_MATERIAL_DESTROYED_ERR`) while its
    /// metadata stays. The master key is re-activated so new instances can be created.
    /// Returns how many instances lost their keystore.
    pub fn wipe_hsm(&self, kind: WipeKind) -> Result<usize, KmsError> {
        let _admin = lock(&self.instance_admin);
        let mut destroyed = 0;
        for instance in self.instances.values() {
            if let Some(keystore) = write(&instance.keystore).take() {
                keystore.close();
                destroyed += 1;
            }
        }
        let wiped = match kind {
            WipeKind::Tamper => self.hsm.tamper(),
            WipeKind::Zeroize => self.hsm.zeroize(),
        };
        tracing::warn!(
            ?kind,
            keystores = destroyed,
            "HSM wiped: every key's material is destroyed"
        );
        // Re-activate even after a partial wipe, so the service can create new instances; in
        // the error state that waits for self-tests to pass (`run_self_tests`).
        let activated = if self.hsm.status().state == ModuleState::Operational {
            self.hsm.activate_dev_master_key(&self.master_key())
        } else {
            Ok(())
        };
        wiped?;
        activated?;
        if self.hsm.status().state == ModuleState::Operational {
            self.ensure_iam_signer()?;
        }
        Ok(destroyed)
    }
}
