//! The embedded sled backend of [`Store`]: one sled tree per [`Tree`], atomic batches through
//! sled transactions, and a flush before every write returns.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sled::Transactional;

use super::{Change, Entries, Entry, Store, StoreError, Tree};

/// A [`Store`] in a sled database directory.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    trees: HashMap<Tree, sled::Tree>,
    healthy: AtomicBool,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        // A database closed a moment ago in this process (a restart in tests) may still be
        // releasing its file lock from sled's background thread: wait briefly for it.
        let mut attempts = 0;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(error))
                    if error.kind() == std::io::ErrorKind::WouldBlock && attempts < 40 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(error) => return Err(StoreError::backend(error)),
            }
        };
        Self::from_db(db)
    }

    /// A store in a temporary directory that is removed when dropped (for tests).
    pub fn temporary() -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(StoreError::backend)?;
        Self::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        let mut trees = HashMap::new();
        for tree in Tree::ALL {
            trees.insert(
                tree,
                db.open_tree(tree.name()).map_err(StoreError::backend)?,
            );
        }
        Ok(Self {
            db,
            trees,
            healthy: AtomicBool::new(true),
        })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        // Every `Tree` is opened in `from_db`, so the lookup cannot fail.
        &self.trees[&tree]
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|error| {
            self.healthy.store(false, Ordering::SeqCst);
            StoreError::backend(error)
        })
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tree(tree)
            .get(key)
            .map(|value| value.map(|v| v.to_vec()))
            .map_err(StoreError::backend)
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.tree(tree)
            .scan_prefix(prefix)
            .map(|entry| {
                entry
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(StoreError::backend)
            })
            .collect()
    }

    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        // A sled transaction over no tree panics: an empty batch has nothing to write.
        if changes.is_empty() {
            return Ok(());
        }
        let touched: Vec<Tree> = {
            let mut touched: Vec<Tree> = changes
                .iter()
                .map(|change| match change {
                    Change::Put { tree, .. } | Change::Delete { tree, .. } => *tree,
                })
                .collect();
            touched.sort_by_key(|tree| tree.name());
            touched.dedup();
            touched
        };
        if let [tree] = touched.as_slice() {
            // One tree: a sled batch is atomic too, and much cheaper than a transaction.
            let mut batch = sled::Batch::default();
            for change in changes {
                match change {
                    Change::Put { key, value, .. } => batch.insert(key, value),
                    Change::Delete { key, .. } => batch.remove(key),
                }
            }
            self.tree(*tree)
                .apply_batch(batch)
                .map_err(StoreError::backend)?;
            return self.flush();
        }
        let trees: Vec<sled::Tree> = touched.iter().map(|t| self.tree(*t).clone()).collect();
        let result = trees.as_slice().transaction(|tx_trees| {
            for change in &changes {
                let (tree, key) = match change {
                    Change::Put { tree, key, .. } | Change::Delete { tree, key } => (tree, key),
                };
                // `touched` holds every tree named by a change, so the position exists.
                let index = touched.iter().position(|t| t == tree).unwrap_or_default();
                let tx = &tx_trees[index];
                match change {
                    Change::Put { value, .. } => {
                        tx.insert(key.as_slice(), value.as_slice())?;
                    }
                    Change::Delete { .. } => {
                        tx.remove(key.as_slice())?;
                    }
                }
            }
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        });
        result.map_err(|error| StoreError::backend(format!("{error:?}")))?;
        self.flush()
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    fn scan_from(
        &self,
        tree: Tree,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for entry in self.tree(tree).range(start..) {
            let (key, value) = entry.map_err(StoreError::backend)?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn last(&self, tree: Tree) -> Result<Option<Entry>, StoreError> {
        self.tree(tree)
            .last()
            .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .map_err(StoreError::backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_batch_is_a_no_op() {
        let store = SledStore::temporary().unwrap();
        store.apply(Vec::new()).unwrap();
        assert!(store.is_healthy());
    }

    #[test]
    fn batches_apply_across_trees() {
        let store = SledStore::temporary().unwrap();
        store
            .apply(vec![
                Change::Put {
                    tree: Tree::Keys,
                    key: b"k1".to_vec(),
                    value: b"v1".to_vec(),
                },
                Change::Put {
                    tree: Tree::Instances,
                    key: b"i1".to_vec(),
                    value: b"w".to_vec(),
                },
            ])
            .unwrap();
        assert_eq!(store.get(Tree::Keys, b"k1").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(
            store.get(Tree::Instances, b"i1").unwrap(),
            Some(b"w".to_vec())
        );
        assert_eq!(store.get(Tree::Keys, b"i1").unwrap(), None);
        store.delete(Tree::Keys, b"k1").unwrap();
        assert_eq!(store.scan_prefix(Tree::Keys, b"").unwrap(), vec![]);
        assert!(store.is_healthy());
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put(Tree::Hsm, b"obj", b"sealed".to_vec()).unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get(Tree::Hsm, b"obj").unwrap(),
            Some(b"sealed".to_vec())
        );
    }
}
