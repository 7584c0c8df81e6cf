//! Durable state behind the [`Store`] trait: named trees of byte keys and values, where every
//! acknowledged write is on disk before it returns.
//!
//! - [`RedbStore`] (`redb_store`): the embedded engine, redb, with group commit;
//! - `commit_mark`: the commit counter kept beside the database, which turns a rollback of the
//!   database file into a refusal to start;
//! - `sled_migration`: moves a data directory of an earlier kmsim (sled) into redb on start-up;
//! - [`HsmObjectStore`]: lends one tree to the HSM as its `ObjectStore`.

mod commit_mark;
mod redb_store;
mod sled_migration;

use std::sync::Arc;

pub use redb_store::{RedbStore, StoreOptions};

/// The trees (tables) of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Instance records, keyed by instance id bytes.
    Instances,
    /// Key records, keyed by key id bytes.
    Keys,
    /// Import tokens, keyed by instance id bytes.
    ImportTokens,
    /// The HSM's sealed object records.
    Hsm,
    /// The simulator's own state (the simulated clock's time), keyed by name.
    Simulator,
    /// IAM identities, keyed by identity id bytes.
    Identities,
    /// IAM API keys (salted hashes only), keyed by API key id bytes.
    ApiKeys,
    /// IAM access policies, keyed by policy id bytes.
    AccessPolicies,
    /// Service-to-service authorizations, keyed by authorization id bytes.
    Authorizations,
    /// Registrations, keyed by key id bytes followed by the resource CRN.
    Registrations,
    /// Lifecycle events, keyed by big-endian sequence number.
    LifecycleEvents,
    /// The audit trail, keyed by the event's big-endian sequence number.
    Audit,
}

impl Tree {
    /// Every tree.
    pub const ALL: [Tree; 12] = [
        Tree::Instances,
        Tree::Keys,
        Tree::ImportTokens,
        Tree::Hsm,
        Tree::Simulator,
        Tree::Identities,
        Tree::ApiKeys,
        Tree::AccessPolicies,
        Tree::Authorizations,
        Tree::Registrations,
        Tree::LifecycleEvents,
        Tree::Audit,
    ];

    /// The tree's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Instances => "instances",
            Tree::Keys => "keys",
            Tree::ImportTokens => "import_tokens",
            Tree::Hsm => "hsm",
            Tree::Simulator => "simulator",
            Tree::Identities => "iam_identities",
            Tree::ApiKeys => "iam_api_keys",
            Tree::AccessPolicies => "iam_access_policies",
            Tree::Authorizations => "iam_authorizations",
            Tree::Registrations => "registrations",
            Tree::LifecycleEvents => "lifecycle_events",
            Tree::Audit => "audit",
        }
    }
}

/// Key-value pairs, as scans return them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One key-value pair.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace.
    Put {
        /// The tree.
        tree: Tree,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove (absent keys are fine).
    Delete {
        /// The tree.
        tree: Tree,
        /// The key.
        key: Vec<u8>,
    },
}

/// What kind of storage failure happened: what a client may be told (through a reason code)
/// and what decides whether the server can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The disk (or the file system's quota) is full: nothing of the failed write was
    /// acknowledged. Writes work again once space is freed.
    Full,
    /// An I/O failure of the device or file system: nothing of the failed write was
    /// acknowledged.
    Io,
    /// A file or record failed its integrity check (a checksum, a decode, a commit counter).
    Corrupt,
    /// The store is closed or its committer stopped.
    Closed,
    /// Another process holds the database.
    Locked,
}

/// A storage failure. Clients see only its [`StoreErrorKind`] (as a reason code and a short
/// message); the detail (the backend's text, the file, the tree) is for the log and operators.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct StoreError {
    kind: StoreErrorKind,
    detail: String,
}

impl StoreError {
    /// A failure of `kind`, with `detail` for the log.
    pub fn new(kind: StoreErrorKind, detail: impl std::fmt::Display) -> Self {
        Self {
            kind,
            detail: detail.to_string(),
        }
    }

    /// An I/O failure of the backend (see [`StoreErrorKind::Io`]).
    pub fn backend(error: impl std::fmt::Display) -> Self {
        Self::new(StoreErrorKind::Io, error)
    }

    /// A record that could not be decoded.
    pub fn corrupt(tree: Tree, error: impl std::fmt::Display) -> Self {
        Self::new(
            StoreErrorKind::Corrupt,
            format!("corrupt record in tree {}: {error}", tree.name()),
        )
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

/// The store's condition, for health checks and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreHealth {
    /// Reads and writes work.
    Healthy,
    /// The last write failed because the disk is full.
    Full,
    /// The last write failed with an I/O error.
    Failed,
}

/// Durable, ordered key-value trees. Every method that changes data returns only after the
/// change is flushed to stable storage.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Reads one value.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry of a tree whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// Applies every change atomically, then flushes.
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError>;
    /// The store's condition after its last write (for health checks).
    fn health(&self) -> StoreHealth;

    /// Whether the store is open and its last write succeeded.
    fn is_healthy(&self) -> bool {
        self.health() == StoreHealth::Healthy
    }

    /// After a failed write: tries a small write now (reopening the backend if it must), so that
    /// health recovers once the cause (a full disk) is gone, without waiting for a client's
    /// write. Returns the resulting condition.
    fn probe(&self) -> StoreHealth {
        self.health()
    }

    /// Visits the entries of a tree whose key is at or after `start`, in key order, while
    /// `visit` returns true. Backends override it to avoid reading the whole tree.
    fn scan_from(
        &self,
        tree: Tree,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for (key, value) in self.scan_prefix(tree, b"")? {
            if key.as_slice() >= start && !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    /// The entry with the greatest key of a tree, if any.
    fn last(&self, tree: Tree) -> Result<Option<Entry>, StoreError> {
        Ok(self.scan_prefix(tree, b"")?.pop())
    }

    /// Inserts or replaces one value, durably.
    fn put(&self, tree: Tree, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.apply(vec![Change::Put {
            tree,
            key: key.to_vec(),
            value,
        }])
    }

    /// Removes one value, durably.
    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        self.apply(vec![Change::Delete {
            tree,
            key: key.to_vec(),
        }])
    }
}

/// The HSM's view of the store: its own tree, nothing else.
#[derive(Debug, Clone)]
pub struct HsmObjectStore {
    store: Arc<dyn Store>,
}

impl HsmObjectStore {
    /// Lends `store`'s HSM tree to the HSM.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn hsm_error(error: StoreError) -> sim_hsm::StoreError {
    sim_hsm::StoreError::new(error)
}

impl sim_hsm::ObjectStore for HsmObjectStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, sim_hsm::StoreError> {
        self.store.get(Tree::Hsm, key).map_err(hsm_error)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), sim_hsm::StoreError> {
        self.store
            .put(Tree::Hsm, key, value.to_vec())
            .map_err(hsm_error)
    }

    fn delete(&self, key: &[u8]) -> Result<(), sim_hsm::StoreError> {
        self.store.delete(Tree::Hsm, key).map_err(hsm_error)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, sim_hsm::StoreError> {
        self.store.scan_prefix(Tree::Hsm, prefix).map_err(hsm_error)
    }

    fn apply(&self, batch: &[sim_hsm::StoreOp]) -> Result<(), sim_hsm::StoreError> {
        let changes = batch
            .iter()
            .map(|op| match op {
                sim_hsm::StoreOp::Put { key, value } => Change::Put {
                    tree: Tree::Hsm,
                    key: key.clone(),
                    value: value.clone(),
                },
                sim_hsm::StoreOp::Delete { key } => Change::Delete {
                    tree: Tree::Hsm,
                    key: key.clone(),
                },
            })
            .collect();
        self.store.apply(changes).map_err(hsm_error)
    }
}
