//! A simulated database deployment, as a BYOK database service runs one: it keeps its data key
//! only wrapped at rest (under a customer root key in kmsim), unlocks it at start-up, encrypts
//! its "disk" with it, follows root-key rotation by persisting the rewrapped form, and loses
//! access to its data when the root key is disabled or shredded.

use std::collections::BTreeMap;

use kmsim_client::datakey::{DataKeyError, DataKeyManager, WrappedDataKey};
use kmsim_client::{KeyRef, KmsClient};

/// A deployment: its name, its encrypted disk and its wrapped data key.
pub struct Deployment {
    name: String,
    manager: DataKeyManager,
    /// What the deployment keeps at rest: the wrapped data key...
    wrapped: WrappedDataKey,
    /// ...and records encrypted under the data key.
    disk: BTreeMap<String, Vec<u8>>,
}

impl Deployment {
    /// Provisions a deployment whose data key is wrapped by `root` (database services require
    /// the key's full CRN).
    pub async fn provision(
        client: KmsClient,
        name: &str,
        root: KeyRef,
    ) -> Result<Self, DataKeyError> {
        let manager = DataKeyManager::new(client, root, vec![format!("deployment:{name}")]);
        let wrapped = manager.provision().await?;
        Ok(Self {
            name: name.to_owned(),
            manager,
            wrapped,
            disk: BTreeMap::new(),
        })
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key version the data key is currently wrapped under.
    pub fn key_version(&self) -> &str {
        &self.wrapped.key_version_id
    }

    /// Writes a record, encrypted.
    pub fn write(&mut self, id: &str, value: &[u8]) -> Result<(), DataKeyError> {
        let sealed = self.manager.encrypt(value, id.as_bytes())?;
        self.disk.insert(id.to_owned(), sealed);
        Ok(())
    }

    /// Reads a record.
    pub fn read(&self, id: &str) -> Result<Option<Vec<u8>>, DataKeyError> {
        match self.disk.get(id) {
            Some(sealed) => Ok(Some(self.manager.decrypt(sealed, id.as_bytes())?.to_vec())),
            None => Ok(None),
        }
    }

    /// A restart: forgets the data key, then unlocks it again from the wrapped form at rest.
    /// When the root key was rotated meanwhile, persists the rewrapped form.
    pub async fn restart(&mut self) -> Result<(), DataKeyError> {
        self.manager.lock();
        if let Some(rewrapped) = self.manager.unlock(&self.wrapped).await? {
            self.wrapped = rewrapped;
        }
        Ok(())
    }

    /// The "syncing KMS state" task after a rotation event: rewraps the data key under the
    /// root key's current version without unlocking it again.
    pub async fn sync_kms_state(&mut self) -> Result<(), DataKeyError> {
        self.wrapped = self.manager.rewrap(&self.wrapped).await?;
        Ok(())
    }

    /// Whether the data key is in memory.
    pub fn is_unlocked(&self) -> bool {
        self.manager.is_unlocked()
    }
}
