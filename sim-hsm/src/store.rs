//! The HSM's only window to persistence: the [`ObjectStore`] trait, its error type and an in-memory implementation.
//!
//! The HSM writes only sealed records (see `seal`), so a store never sees plaintext key material, PINs or token
//! keys. Keys are byte strings; the HSM uses the prefixes `tok/<serial>/...`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

/// An error raised by an [`ObjectStore`] implementation. Opaque: the HSM maps it to `CKR_DEVICE_ERROR`.
#[derive(Debug)]
pub struct StoreError {
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl StoreError {
    /// Wraps a backend error.
    pub fn new(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            source: Box::new(source),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "object store error: {}", self.source)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// A stored record: (key, sealed value).
pub type Record = (Vec<u8>, Vec<u8>);

/// One operation of an atomic batch ([`ObjectStore::apply`]).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Insert or overwrite `key` with `value`.
    Put {
        /// Record key.
        key: Vec<u8>,
        /// Record value (a sealed record).
        value: Vec<u8>,
    },
    /// Remove `key` (no error if absent).
    Delete {
        /// Record key.
        key: Vec<u8>,
    },
}

impl fmt::Debug for StoreOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put { key, value } => write!(
                f,
                "Put({:?}, {} bytes)",
                String::from_utf8_lossy(key),
                value.len()
            ),
            Self::Delete { key } => write!(f, "Delete({:?})", String::from_utf8_lossy(key)),
        }
    }
}

/// Persistence backend used by the HSM. Implementations must be thread-safe; every method is synchronous.
pub trait ObjectStore: Send + Sync {
    /// Reads one record.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes one record. Durable when it returns Ok.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Deletes one record (no error if absent).
    fn delete(&self, key: &[u8]) -> Result<(), StoreError>;
    /// Every record whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Record>, StoreError>;
    /// Applies all puts and deletes atomically and durably (used by master-key rotation and zeroize).
    fn apply(&self, batch: &[StoreOp]) -> Result<(), StoreError>;
}

/// An [`ObjectStore`] kept in memory (tests, benchmarks, ephemeral servers). Cloning is not supported; share it in
/// an `Arc`.
#[derive(Default)]
pub struct MemoryObjectStore {
    records: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl fmt::Debug for MemoryObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryObjectStore")
            .field("records", &self.lock().len())
            .finish()
    }
}

impl MemoryObjectStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A poisoned lock only means another thread panicked mid-operation; every operation here is a single
        // map call, so the map is still consistent.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of every stored record (for tests that inspect what reached "disk").
    #[must_use]
    pub fn records(&self) -> Vec<Record> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Flips the low bit of byte `byte_index` of the record `key` (simulates disk corruption or tampering).
    /// Returns false when the record does not exist or is too short.
    pub fn corrupt(&self, key: &[u8], byte_index: usize) -> bool {
        let mut map = self.lock();
        match map.get_mut(key).and_then(|v| v.get_mut(byte_index)) {
            Some(b) => {
                *b ^= 0x01;
                true
            }
            None => false,
        }
    }

    /// Overwrites a record's bytes directly (tests that replay or transplant records).
    pub fn insert_raw(&self, key: &[u8], value: &[u8]) {
        self.lock().insert(key.to_vec(), value.to_vec());
    }

    /// Number of records.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no record is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl ObjectStore for MemoryObjectStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.lock().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        Ok(self
            .lock()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, batch: &[StoreOp]) -> Result<(), StoreError> {
        let mut map = self.lock();
        for op in batch {
            match op {
                StoreOp::Put { key, value } => {
                    map.insert(key.clone(), value.clone());
                }
                StoreOp::Delete { key } => {
                    map.remove(key);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_and_apply() {
        let s = MemoryObjectStore::new();
        s.put(b"a/1", b"x").unwrap();
        s.put(b"a/2", b"y").unwrap();
        s.put(b"b/1", b"z").unwrap();
        assert_eq!(s.scan_prefix(b"a/").unwrap().len(), 2);
        s.apply(&[
            StoreOp::Delete {
                key: b"a/1".to_vec(),
            },
            StoreOp::Put {
                key: b"c".to_vec(),
                value: b"w".to_vec(),
            },
        ])
        .unwrap();
        assert_eq!(s.get(b"a/1").unwrap(), None);
        assert_eq!(s.get(b"c").unwrap(), Some(b"w".to_vec()));
        assert!(s.corrupt(b"c", 0));
        assert_eq!(s.get(b"c").unwrap(), Some(b"v".to_vec()));
    }
}
