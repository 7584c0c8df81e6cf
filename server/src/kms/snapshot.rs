//! Whole-state snapshots (`SimulatorService.ExportSnapshot` / `ImportSnapshot`).
//!
//! A snapshot holds every entry of every store tree ([`Tree::ALL`], so trees added later are
//! included without changes here) except the audit trail, and the clock's time, as JSON, sealed by the HSM under its
//! current master key ([`sim_hsm::Hsm::seal_export`], AES-256-GCM): HSM records are already
//! sealed by the master key, KMS records hold no key material, and the seal makes the whole
//! blob useless (and unforgeable) without the master key. Layout: [`MAGIC`] followed by the
//! HSM's sealed blob, whose header names the master key's verification pattern.
//!
//! Import checks everything before touching anything (header, master key, seal, contents),
//! then rewrites every tree in one store transaction, makes the HSM reload its objects, and
//! reloads the KMS through the same code [`Kms::open`] uses, so any state loaded there is
//! restored too. Fault rules are cleared. The audit trail is history, not state: a snapshot
//! does not carry it and an import leaves it as it is (the import itself is recorded in it,
//! with sequence numbers that continue). A simulated clock moves forward to the snapshot's
//! time if that is later; it never moves backwards.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::error::KmsError;
use crate::kms::{Kms, lock, write};
use crate::store::{Change, Tree};

/// The first bytes of every snapshot.
pub const MAGIC: &[u8] = b"KMSIM-SNAPSHOT/1\n";

/// The HSM sealing context of snapshots.
const CONTEXT: &[u8] = b"kmsim-snapshot/v1";

/// The store key (in [`Tree::Simulator`]) of the simulated clock's time; as in `simulator.rs`.
const CLOCK_KEY: &[u8] = b"clock";

/// The sealed contents.
#[derive(serde::Serialize, serde::Deserialize)]
struct Contents {
    /// The server's time at export, in milliseconds since the epoch.
    time_millis: i64,
    /// Tree name -> (hex key, hex value) entries in key order.
    trees: BTreeMap<String, Vec<(String, String)>>,
}

/// An exported snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotExport {
    /// The sealed blob.
    pub blob: Vec<u8>,
    /// Verification pattern of the master key it is sealed under.
    pub verification_pattern: [u8; 8],
    /// Instances in the snapshot.
    pub instances: usize,
    /// Keys in the snapshot.
    pub keys: usize,
    /// The server's time at export.
    pub time: Timestamp,
}

/// What an import restored.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotImport {
    /// Instances after the import.
    pub instances: usize,
    /// Keys after the import.
    pub keys: usize,
    /// The server's time after the import.
    pub time: Timestamp,
}

/// Whether `tree` belongs in a snapshot: every tree but the audit trail.
fn in_snapshot(tree: Tree) -> bool {
    tree != Tree::Audit
}

impl Kms {
    /// Exports the whole durable state, sealed under the HSM's current master key. Holds the
    /// instance-administration and timer locks, so no instance is created or deleted and no
    /// timer fires while the trees are read.
    pub fn export_snapshot(&self) -> Result<SnapshotExport, KmsError> {
        let _admin = lock(&self.instance_admin);
        let _firing = lock(&self.firing);
        let time = self.now();
        let mut trees = BTreeMap::new();
        for tree in Tree::ALL.into_iter().filter(|t| in_snapshot(*t)) {
            let entries = self
                .store
                .scan_prefix(tree, b"")?
                .into_iter()
                .map(|(key, value)| (hex::encode(key), hex::encode(value)))
                .collect();
            trees.insert(tree.name().to_owned(), entries);
        }
        let contents = Contents {
            time_millis: time.as_millis(),
            trees,
        };
        // Strings, numbers and maps only: serialising cannot fail.
        let plain = Zeroizing::new(serde_json::to_vec(&contents).unwrap_or_default());
        let sealed = self.hsm.seal_export(CONTEXT, &plain)?;
        let verification_pattern = sim_hsm::export::sealed_export_fingerprint(&sealed)
            .ok_or(KmsError::Hsm(sim_hsm::HsmError::DeviceError))?;
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(SnapshotExport {
            blob,
            verification_pattern,
            instances: self.instances.len(),
            keys: self.keys.len(),
            time,
        })
    }

    /// Replaces the whole state with `blob` (see the module documentation). Refused, with the
    /// state untouched: `SNAPSHOT_MALFORMED_ERR`, `SNAPSHOT_MASTER_KEY_MISMATCH_ERR`,
    /// `SNAPSHOT_AUTHENTICATION_ERR`, or the HSM's error when it is not operational or a
    /// master-key rotation is in progress.
    pub fn import_snapshot(&self, blob: &[u8]) -> Result<SnapshotImport, KmsError> {
        let sealed = blob
            .strip_prefix(MAGIC)
            .ok_or(KmsError::SnapshotMalformed)?;
        let fingerprint = sim_hsm::export::sealed_export_fingerprint(sealed)
            .ok_or(KmsError::SnapshotMalformed)?;
        let status = self.hsm.status();
        if status.state != sim_hsm::ModuleState::Operational {
            return Err(sim_hsm::HsmError::FipsSelfTestFailed.into());
        }
        if status.rotation_in_progress {
            return Err(sim_hsm::HsmError::MasterKeyRotationInProgress.into());
        }
        if self.hsm.master_key_verification_pattern() != Some(fingerprint) {
            return Err(KmsError::SnapshotMasterKeyMismatch);
        }
        let plain = match self.hsm.open_export(CONTEXT, sealed) {
            Ok(plain) => plain,
            Err(sim_hsm::HsmError::WrongMasterKey) => {
                return Err(KmsError::SnapshotMasterKeyMismatch);
            }
            Err(sim_hsm::HsmError::DeviceError) => return Err(KmsError::SnapshotAuthentication),
            Err(other) => return Err(other.into()),
        };
        let contents: Contents =
            serde_json::from_slice(&plain).map_err(|_| KmsError::SnapshotMalformed)?;
        let mut puts = Vec::new();
        for (name, entries) in &contents.trees {
            let tree = Tree::ALL
                .into_iter()
                .filter(|t| in_snapshot(*t))
                .find(|tree| tree.name() == name)
                .ok_or(KmsError::SnapshotMalformed)?;
            for (key, value) in entries {
                let key = hex::decode(key).map_err(|_| KmsError::SnapshotMalformed)?;
                let value = hex::decode(value).map_err(|_| KmsError::SnapshotMalformed)?;
                puts.push(Change::Put { tree, key, value });
            }
        }

        let _admin = lock(&self.instance_admin);
        let _moving = lock(&self.clock_admin);
        let _firing = lock(&self.firing);
        let mut changes = Vec::new();
        for tree in Tree::ALL.into_iter().filter(|t| in_snapshot(*t)) {
            for (key, _) in self.store.scan_prefix(tree, b"")? {
                changes.push(Change::Delete { tree, key });
            }
        }
        changes.extend(puts);
        if self.clock.simulated().is_some() {
            let time = contents.time_millis.max(self.now().as_millis());
            changes.push(Change::Put {
                tree: Tree::Simulator,
                key: CLOCK_KEY.to_vec(),
                value: time.to_be_bytes().to_vec(),
            });
        }
        self.store.apply(changes)?;

        for instance in self.instances.values() {
            if let Some(keystore) = write(&instance.keystore).take() {
                keystore.close();
            }
        }
        self.scheduler.clear();
        self.faults.clear(None);
        self.hsm.reload_from_store()?;
        self.iam
            .reload(&self.hsm, self.store.as_ref(), &self.random)?;
        self.reload()?;
        tracing::info!("imported a snapshot: the whole state was replaced");
        Ok(SnapshotImport {
            instances: self.instances.len(),
            keys: self.keys.len(),
            time: self.now(),
        })
    }
}
