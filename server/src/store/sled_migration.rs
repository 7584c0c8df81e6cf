//! Moves a data directory written by an earlier kmsim (a sled database in `<data-dir>/db`)
//! into redb, once, at start-up.
//!
//! The copy is built in `kmsim.redb.migrating`, committed, and only then renamed to
//! `kmsim.redb`; the sled directory is then renamed to `db.sled-migrated` (kept as a backup,
//! never read again). A crash at any point leaves either the untouched sled directory (and the
//! migration runs again) or the complete redb file.

use std::path::Path;

use redb::TableDefinition;

use super::{StoreError, StoreErrorKind, StoreOptions, Tree};

/// The sled database directory of earlier versions, in the data directory.
pub const SLED_DIRECTORY: &str = "db";
/// What the sled directory is renamed to once migrated.
pub const SLED_BACKUP: &str = "db.sled-migrated";

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |error| {
        StoreError::new(
            StoreErrorKind::Io,
            format!("sled migration, {}: {error}", path.display()),
        )
    }
}

fn engine(what: &str) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |error| {
        StoreError::new(
            StoreErrorKind::Io,
            format!("sled migration, {what}: {error}"),
        )
    }
}

/// Migrates `dir/db` (sled) into `db_path` (redb) when the former exists and the latter does not.
pub(super) fn migrate_if_present(
    dir: &Path,
    db_path: &Path,
    options: StoreOptions,
) -> Result<(), StoreError> {
    let sled_dir = dir.join(SLED_DIRECTORY);
    if db_path.exists() || !sled_dir.join("conf").exists() {
        return Ok(());
    }
    tracing::warn!(from = %sled_dir.display(), to = %db_path.display(), "migrating an earlier kmsim data directory from sled to redb");
    let sled = sled::Config::new()
        .path(&sled_dir)
        .open()
        .map_err(|error| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "cannot open the sled database {} to migrate it: {error}",
                    sled_dir.display()
                ),
            )
        })?;
    let staging = db_path.with_extension("redb.migrating");
    match std::fs::remove_file(&staging) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io(&staging)(error)),
    }
    let mut copied = 0usize;
    {
        let staging_name = staging.display().to_string();
        let db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .create(&staging)
            .map_err(|e| engine(&staging_name)(e.into()))?;
        let txn = db
            .begin_write()
            .map_err(|e| engine(&staging_name)(e.into()))?;
        for tree in Tree::ALL {
            let source = sled.open_tree(tree.name()).map_err(|error| {
                StoreError::new(
                    StoreErrorKind::Corrupt,
                    format!("sled tree {}: {error}", tree.name()),
                )
            })?;
            let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(tree.name());
            let mut table = txn
                .open_table(definition)
                .map_err(|e| engine(&staging_name)(e.into()))?;
            for entry in source.iter() {
                let (key, value) = entry.map_err(|error| {
                    StoreError::new(
                        StoreErrorKind::Corrupt,
                        format!("sled tree {}: {error}", tree.name()),
                    )
                })?;
                table
                    .insert(key.as_ref(), value.as_ref())
                    .map_err(|e| engine(&staging_name)(e.into()))?;
                copied += 1;
            }
        }
        txn.commit().map_err(|e| engine(&staging_name)(e.into()))?;
    }
    drop(sled);
    std::fs::rename(&staging, db_path).map_err(io(db_path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    let backup = dir.join(SLED_BACKUP);
    std::fs::rename(&sled_dir, &backup).map_err(io(&sled_dir))?;
    tracing::warn!(records = copied, backup = %backup.display(), "sled data directory migrated to redb; the sled files are kept as a backup and can be deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RedbStore, Store};

    #[test]
    fn a_sled_directory_is_migrated_once_and_kept_as_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sled = sled::Config::new()
                .path(dir.path().join(SLED_DIRECTORY))
                .open()
                .unwrap();
            sled.open_tree(Tree::Keys.name())
                .unwrap()
                .insert(b"k1", b"v1")
                .unwrap();
            sled.open_tree(Tree::Audit.name())
                .unwrap()
                .insert(7u64.to_be_bytes(), b"event")
                .unwrap();
            sled.flush().unwrap();
        }
        {
            let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.get(Tree::Keys, b"k1").unwrap(), Some(b"v1".to_vec()));
            assert_eq!(
                store.last(Tree::Audit).unwrap().map(|(k, _)| k),
                Some(7u64.to_be_bytes().to_vec())
            );
            store.put(Tree::Keys, b"k2", b"v2".to_vec()).unwrap();
        }
        assert!(!dir.path().join(SLED_DIRECTORY).exists());
        assert!(dir.path().join(SLED_BACKUP).exists());
        // The second start uses redb only: the write after the migration is there.
        let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.scan_prefix(Tree::Keys, b"").unwrap().len(), 2);
    }
}
