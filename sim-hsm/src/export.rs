//! Sealed exports and store reloads, for whole-state snapshots taken by the module's host.
//!
//! [`Hsm::seal_export`] seals a host-supplied blob with AES-256-GCM under the current master key (the same
//! sealing as stored records, bound to an `export/` context so an export can never pass for a store record
//! and the reverse); [`Hsm::open_export`] opens it, failing with `WrongMasterKey` for a blob sealed under
//! another master key and `DeviceError` for a damaged or forged one. [`Hsm::reload_from_store`] drops the
//! tokens in module memory and loads them again from the object store (after the host replaced the store's
//! contents wholesale, e.g. when importing a snapshot).

use std::sync::atomic::Ordering;

use zeroize::Zeroizing;

use crate::error::HsmError;
use crate::hsm::Hsm;
use crate::token::{read, write};

/// The associated-data prefix that separates exports from store records (whose keys start `tok/`).
const EXPORT_CONTEXT: &[u8] = b"export/";

fn context_key(context: &[u8]) -> Vec<u8> {
    let mut key = EXPORT_CONTEXT.to_vec();
    key.extend_from_slice(context);
    key
}

impl Hsm {
    /// Seals `plaintext` under the current master key for `context` (a label the opener must repeat).
    /// `FipsSelfTestFailed` outside the operational state, `MasterKeyNotLoaded` without a master key.
    pub fn seal_export(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let inner = &self.inner;
        inner.ensure_operational()?;
        let nonce = inner.random_array::<12>()?;
        let master = read(&inner.master);
        let key = master.as_ref().ok_or(HsmError::MasterKeyNotLoaded)?;
        key.seal(&context_key(context), &nonce, plaintext)
    }

    /// Opens a blob made by [`Hsm::seal_export`] for the same `context`: `WrongMasterKey` when it was sealed
    /// under another master key, `DeviceError` when it is damaged, forged or made for another context.
    pub fn open_export(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let inner = &self.inner;
        inner.ensure_operational()?;
        let master = read(&inner.master);
        let key = master.as_ref().ok_or(HsmError::MasterKeyNotLoaded)?;
        key.open(&context_key(context), sealed)
    }

    /// The verification pattern of the current master key, if one is active.
    #[must_use]
    pub fn master_key_verification_pattern(&self) -> Option<[u8; 8]> {
        read(&self.inner.master)
            .as_ref()
            .map(|key| key.fingerprint())
    }

    /// Forgets every token held in module memory (open sessions on them stop working) and loads the tokens
    /// again from the object store under the current master key. Refused while a master-key rotation is in
    /// progress (`MasterKeyRotationInProgress`). When loading fails the previous tokens are kept.
    pub fn reload_from_store(&self) -> Result<(), HsmError> {
        let inner = &self.inner;
        inner.ensure_operational()?;
        if inner.rotating.load(Ordering::Acquire) {
            return Err(HsmError::MasterKeyRotationInProgress);
        }
        let key = write(&inner.master)
            .take()
            .ok_or(HsmError::MasterKeyNotLoaded)?;
        let previous = std::mem::take(&mut *write(&inner.tokens));
        let result = inner.install_master_key(key.clone());
        if result.is_err() {
            *write(&inner.master) = Some(key);
            *write(&inner.tokens) = previous;
        }
        result
    }
}

/// The master-key verification pattern named in the header of a blob from [`Hsm::seal_export`], or `None`
/// when the blob is too short or its header is not one `seal_export` writes.
#[must_use]
pub fn sealed_export_fingerprint(sealed: &[u8]) -> Option<[u8; 8]> {
    // Header (13), nonce (12) and GCM tag (16) at the least.
    if sealed.len() < 13 + 12 + 16 {
        return None;
    }
    crate::seal::record_fingerprint(sealed)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hsm::HsmConfig;
    use crate::master_key::DevMasterKey;
    use crate::store::MemoryObjectStore;

    fn hsm(store: Arc<MemoryObjectStore>, key: u8) -> Hsm {
        let config = HsmConfig {
            pin_kdf_iterations: 1_000,
            ..HsmConfig::default()
        };
        let hsm = Hsm::new(config, store).unwrap();
        hsm.activate_dev_master_key(&DevMasterKey::from_bytes([key; 32]))
            .unwrap();
        hsm
    }

    #[test]
    fn exports_open_only_under_the_same_key_and_context() {
        let a = hsm(Arc::new(MemoryObjectStore::new()), 1);
        let b = hsm(Arc::new(MemoryObjectStore::new()), 2);
        let sealed = a.seal_export(b"ctx", b"state").unwrap();
        assert_eq!(&a.open_export(b"ctx", &sealed).unwrap()[..], b"state");
        assert_eq!(
            sealed_export_fingerprint(&sealed),
            a.master_key_verification_pattern()
        );
        assert!(matches!(
            a.open_export(b"other", &sealed),
            Err(HsmError::DeviceError)
        ));
        assert!(matches!(
            b.open_export(b"ctx", &sealed),
            Err(HsmError::WrongMasterKey)
        ));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            a.open_export(b"ctx", &tampered),
            Err(HsmError::DeviceError)
        ));
        assert_eq!(sealed_export_fingerprint(&sealed[..20]), None);
    }

    #[test]
    fn reload_from_store_sees_tokens_written_behind_the_modules_back() {
        let store = Arc::new(MemoryObjectStore::new());
        let a = hsm(Arc::clone(&store), 3);
        let slot = a.empty_slot().unwrap();
        a.init_token(slot, b"so-pin-1", "copied").unwrap();
        let records = store.records();
        // A second module over an empty store receives the first one's records.
        let other = Arc::new(MemoryObjectStore::new());
        let b = hsm(Arc::clone(&other), 3);
        assert_eq!(b.find_slot_by_label("copied"), None);
        for (key, value) in records {
            other.insert_raw(&key, &value);
        }
        b.reload_from_store().unwrap();
        assert!(b.find_slot_by_label("copied").is_some());
        assert!(b.empty_slot().is_some());
    }
}
