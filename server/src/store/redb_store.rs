//! The embedded redb backend of [`Store`], with group commit.
//!
//! - One file, `<data-dir>/kmsim.redb` (mode 0600): one redb table per [`Tree`], plus a
//!   `meta` table holding the commit counter. Every page is checksummed; the whole file is
//!   verified when it is opened, so a damaged file fails to open with an error naming it.
//! - **Group commit.** Writers do not commit themselves: [`Store::apply`] hands its batch to
//!   the committer thread and waits. The committer takes every batch that is waiting, applies
//!   them in arrival order in one write transaction, commits it with one fsync
//!   (`Durability::Immediate`), and only then answers each writer. Concurrent mutations share
//!   a commit; a batch is acknowledged only after the commit that covers it; no lock of the
//!   caller is needed, and none of the store's is held by a caller during the fsync.
//! - **Rollback detection.** Every commit increments the counter in `meta`; after the commit
//!   the counter is written to the commit mark beside the file (see `commit_mark`). A database
//!   behind its mark refuses to open.
//! - **Failures.** A failed commit answers every waiting writer with a typed [`StoreError`]
//!   ([`StoreErrorKind::Full`] for a full disk), turns the store's health to `Full` or
//!   `Failed`, and makes the next commit (or [`Store::probe`]) reopen the database first, as
//!   redb requires after an I/O error. Nothing is retried behind a writer's back: once space
//!   is freed, the next write (or the health watcher's probe) succeeds, without a restart.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::commit_mark::CommitMark;
use super::{Change, Entries, Entry, Store, StoreError, StoreErrorKind, StoreHealth, Tree};

/// The database file's name in the data directory.
pub const DATABASE_FILE: &str = "kmsim.redb";
/// The commit mark's file name in the data directory.
pub const COMMIT_MARK_FILE: &str = "kmsim.redb.commit";

/// The most batches one commit takes (more wait for the next commit).
const GROUP_MAX: usize = 4096;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const COMMIT_COUNTER: &str = "commit";

fn table(tree: Tree) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(tree.name())
}

/// Tuning of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most memory redb's page cache may use, in bytes.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Where the database lives.
#[derive(Debug, Clone)]
enum Location {
    /// A file, with its commit mark.
    File { db: PathBuf },
    /// Memory only (tests and `Storage::Temporary`).
    Memory,
}

/// A [`Store`] in a redb database file (or in memory).
#[derive(Debug)]
pub struct RedbStore {
    shared: Arc<Shared>,
    queue: Sender<Message>,
    committer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// What readers and the committer share.
#[derive(Debug)]
struct Shared {
    /// `None` while a reopen failed.
    db: RwLock<Option<Database>>,
    health: AtomicU8,
    location: Location,
    options: StoreOptions,
}

enum Message {
    Apply(Vec<Change>, SyncSender<Result<(), StoreError>>),
    Probe(SyncSender<StoreHealth>),
    Stop,
}

const HEALTHY: u8 = 0;
const FULL: u8 = 1;
const FAILED: u8 = 2;

impl Shared {
    fn health(&self) -> StoreHealth {
        match self.health.load(Ordering::Acquire) {
            HEALTHY => StoreHealth::Healthy,
            FULL => StoreHealth::Full,
            _ => StoreHealth::Failed,
        }
    }

    fn set_health(&self, health: StoreHealth) {
        let value = match health {
            StoreHealth::Healthy => HEALTHY,
            StoreHealth::Full => FULL,
            StoreHealth::Failed => FAILED,
        };
        let before = self.health.swap(value, Ordering::AcqRel);
        if before != value && value == HEALTHY {
            tracing::info!(file = %self.describe(), "storage: writes succeed again");
        }
    }

    fn describe(&self) -> String {
        match &self.location {
            Location::File { db, .. } => db.display().to_string(),
            Location::Memory => "(in memory)".to_owned(),
        }
    }

    fn read<T>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let guard = self
            .db
            .read()
            .map_err(|_| StoreError::new(StoreErrorKind::Closed, "the store's lock is poisoned"))?;
        let db = guard.as_ref().ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Io,
                format!("{} is not open after a failed write", self.describe()),
            )
        })?;
        read(db).map_err(|error| classify(&self.describe(), error))
    }
}

/// Maps a redb error to a typed [`StoreError`], keeping redb's text for the log.
fn classify(file: &str, error: impl Into<redb::Error>) -> StoreError {
    let error: redb::Error = error.into();
    let kind = match &error {
        redb::Error::Io(io) if is_full(io) => StoreErrorKind::Full,
        redb::Error::Corrupted(_) => StoreErrorKind::Corrupt,
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreErrorKind::Locked
        }
        redb::Error::DatabaseClosed => StoreErrorKind::Closed,
        _ => StoreErrorKind::Io,
    };
    let detail = match kind {
        StoreErrorKind::Locked => {
            format!(
                "{file} is in use by another kmsim process (only one server may use a data directory)"
            )
        }
        StoreErrorKind::Full => format!("{file}: the disk is full ({error})"),
        _ => format!("{file}: {error}"),
    };
    StoreError::new(kind, detail)
}

fn is_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || error.raw_os_error() == Some(28)
}

/// Opens the database at `location`, verifying every page, and creates the tables.
fn open_database(location: &Location, options: StoreOptions) -> Result<Database, StoreError> {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(options.cache_bytes);
    match location {
        Location::Memory => builder
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|error| classify("(in memory)", error)),
        Location::File { db, .. } => {
            builder.set_check_integrity_on_open(true);
            let name = db.display().to_string();
            let mut attempts = 0;
            loop {
                // redb verifies every page on open; a damaged file it cannot parse may panic
                // instead of returning `Corrupted`: both are a refusal naming the file.
                let opened = std::panic::catch_unwind(AssertUnwindSafe(|| builder.create(db)));
                match opened {
                    Ok(Ok(database)) => return Ok(database),
                    // A database closed a moment ago in this process (a restart in tests) may
                    // still be closing: wait briefly before calling it locked.
                    Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) if attempts < 40 => {
                        attempts += 1;
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    Ok(Err(error)) => return Err(classify(&name, error)),
                    Err(_) => {
                        return Err(StoreError::new(
                            StoreErrorKind::Corrupt,
                            format!("{name} is damaged: the storage engine could not read it"),
                        ));
                    }
                }
            }
        }
    }
}

/// Creates every table (a no-op when they exist) and returns the commit counter.
fn prepare(db: &Database, file: &str) -> Result<u64, StoreError> {
    let classify = |error: redb::Error| classify(file, error);
    let txn = db.begin_write().map_err(|e| classify(e.into()))?;
    let counter = {
        for tree in Tree::ALL {
            txn.open_table(table(tree))
                .map_err(|e| classify(e.into()))?;
        }
        let meta = txn.open_table(META).map_err(|e| classify(e.into()))?;
        let counter = meta
            .get(COMMIT_COUNTER)
            .map_err(|e| classify(e.into()))?
            .map(|value| value.value())
            .unwrap_or(0); // A new database has made no commit yet.
        counter
    };
    txn.commit().map_err(|e| classify(e.into()))?;
    Ok(counter)
}

impl RedbStore {
    /// Opens (or creates) the database in the data directory `dir`. A data directory of an
    /// earlier kmsim (sled, in `dir/db`) is migrated first.
    ///
    /// Refuses to open, with an error naming the file, when the file is damaged, when it is
    /// behind its commit mark (a rollback), or when the database is missing but its commit
    /// mark exists (never a fresh start over an existing directory).
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let db_path = dir.join(DATABASE_FILE);
        let mark_path = dir.join(COMMIT_MARK_FILE);
        super::sled_migration::migrate_if_present(dir, &db_path, options)?;
        if !db_path.exists() && mark_path.exists() {
            return Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "{} is missing but its commit mark {} exists: refusing to start a fresh database over existing data (restore the file from a backup)",
                    db_path.display(),
                    mark_path.display()
                ),
            ));
        }
        let location = Location::File {
            db: db_path.clone(),
        };
        let db = open_database(&location, options)?;
        restrict(&db_path)?;
        let counter = prepare(&db, &db_path.display().to_string())?;
        let (mark, marked) = CommitMark::open(&mark_path)?;
        match marked {
            Some(marked) if marked > counter => {
                return Err(StoreError::new(
                    StoreErrorKind::Corrupt,
                    format!(
                        "{} holds commit {counter} but commit {marked} was acknowledged (see {}): the file was rolled back or replaced by an older copy; restore it from a backup",
                        db_path.display(),
                        mark_path.display()
                    ),
                ));
            }
            None if counter > 0 => {
                return Err(StoreError::new(
                    StoreErrorKind::Corrupt,
                    format!(
                        "the commit mark {} is missing for {} (commit {counter}): the database cannot be checked for a rollback",
                        mark_path.display(),
                        db_path.display()
                    ),
                ));
            }
            _ => mark.record(counter)?,
        }
        Self::start(db, location, options, counter, Some(mark))
    }

    /// A store in memory, gone when dropped (tests, `Storage::Temporary`).
    pub fn temporary() -> Result<Self, StoreError> {
        let options = StoreOptions::default();
        let db = open_database(&Location::Memory, options)?;
        let counter = prepare(&db, "(in memory)")?;
        Self::start(db, Location::Memory, options, counter, None)
    }

    fn start(
        db: Database,
        location: Location,
        options: StoreOptions,
        counter: u64,
        mark: Option<CommitMark>,
    ) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            health: AtomicU8::new(HEALTHY),
            location,
            options,
        });
        let (queue, inbox) = mpsc::channel();
        let committer = Committer {
            shared: Arc::clone(&shared),
            inbox,
            counter,
            mark,
            needs_reopen: false,
        };
        let handle = std::thread::Builder::new()
            .name("kmsim-commit".to_owned())
            .spawn(move || committer.run())
            .map_err(|error| {
                StoreError::new(
                    StoreErrorKind::Io,
                    format!("cannot start the committer: {error}"),
                )
            })?;
        Ok(Self {
            shared,
            queue,
            committer: std::sync::Mutex::new(Some(handle)),
        })
    }

    fn stopped() -> StoreError {
        StoreError::new(StoreErrorKind::Closed, "the store's committer has stopped")
    }
}

/// Makes `path` readable by its owner only.
fn restrict(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|error| {
        StoreError::new(
            StoreErrorKind::Io,
            format!("cannot restrict {} to mode 0600: {error}", path.display()),
        )
    })
}

impl Store for RedbStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(table(tree))?;
            Ok(table.get(key)?.map(|value| value.value().to_vec()))
        })
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Entries, StoreError> {
        let mut entries = Vec::new();
        self.scan_from(tree, prefix, &mut |key, value| {
            if key.starts_with(prefix) {
                entries.push((key.to_vec(), value.to_vec()));
                true
            } else {
                false
            }
        })?;
        Ok(entries)
    }

    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Message::Apply(changes, reply))
            .map_err(|_| Self::stopped())?;
        answer.recv().map_err(|_| Self::stopped())?
    }

    fn health(&self) -> StoreHealth {
        self.shared.health()
    }

    fn probe(&self) -> StoreHealth {
        if self.shared.health() == StoreHealth::Healthy {
            return StoreHealth::Healthy;
        }
        let (reply, answer) = mpsc::sync_channel(1);
        if self.queue.send(Message::Probe(reply)).is_err() {
            return StoreHealth::Failed;
        }
        answer.recv().unwrap_or(StoreHealth::Failed)
    }

    fn scan_from(
        &self,
        tree: Tree,
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.shared.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(table(tree))?;
            for entry in table.range::<&[u8]>(start..)? {
                let (key, value) = entry?;
                if !visit(key.value(), value.value()) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn last(&self, tree: Tree) -> Result<Option<Entry>, StoreError> {
        self.shared.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(table(tree))?;
            Ok(table
                .last()?
                .map(|(key, value)| (key.value().to_vec(), value.value().to_vec())))
        })
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        let _ = self.queue.send(Message::Stop);
        let handle = match self.committer.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            // The committer closes the database when it stops: wait, so that a restart in the
            // same process can open the file again.
            let _ = handle.join();
        }
    }
}

/// The committer thread's state.
struct Committer {
    shared: Arc<Shared>,
    inbox: Receiver<Message>,
    counter: u64,
    mark: Option<CommitMark>,
    needs_reopen: bool,
}

impl Committer {
    fn run(mut self) {
        let mut stop = false;
        while !stop {
            let Ok(first) = self.inbox.recv() else {
                break;
            };
            let mut batches = Vec::new();
            let mut probes = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Apply(changes, reply) => batches.push((changes, reply)),
                    Message::Probe(reply) => probes.push(reply),
                    Message::Stop => stop = true,
                }
                if !stop && batches.len() < GROUP_MAX {
                    next = self.inbox.try_recv().ok();
                }
            }
            if !batches.is_empty() || !probes.is_empty() {
                let result = self.commit(batches.iter().map(|(changes, _)| changes));
                for (_, reply) in batches {
                    let _ = reply.send(result.clone());
                }
                let health = self.shared.health();
                for reply in probes {
                    let _ = reply.send(health);
                }
            }
        }
        if let Some(mark) = &self.mark {
            mark.sync();
        }
        // Close the database before the store's owner learns the thread stopped.
        if let Ok(mut guard) = self.shared.db.write() {
            guard.take();
        }
    }

    /// Commits every batch (and the next counter) in one durable transaction.
    fn commit<'a>(
        &mut self,
        batches: impl Iterator<Item = &'a Vec<Change>>,
    ) -> Result<(), StoreError> {
        let file = self.shared.describe();
        if self.needs_reopen {
            self.reopen()?;
        }
        let next = self.counter + 1;
        let result = self.shared.read(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut tables = HashMap::new();
                for change in batches.flatten() {
                    let tree = match change {
                        Change::Put { tree, .. } | Change::Delete { tree, .. } => *tree,
                    };
                    let open = match tables.entry(tree) {
                        std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(txn.open_table(table(tree))?)
                        }
                    };
                    match change {
                        Change::Put { key, value, .. } => {
                            open.insert(key.as_slice(), value.as_slice())?;
                        }
                        Change::Delete { key, .. } => {
                            open.remove(key.as_slice())?;
                        }
                    }
                }
                let mut meta = txn.open_table(META)?;
                meta.insert(COMMIT_COUNTER, next)?;
            }
            txn.commit()?;
            Ok(())
        });
        match result {
            Ok(()) => {
                self.counter = next;
                if let Some(mark) = &self.mark {
                    if let Err(error) = mark.record(next) {
                        // The commit is durable; only rollback detection for it is lost.
                        tracing::error!(%error, "cannot update the commit mark");
                    }
                }
                self.shared.set_health(StoreHealth::Healthy);
                Ok(())
            }
            Err(error) => {
                self.fail(&error);
                tracing::error!(file = %file, %error, "storage: a commit failed; nothing of it was acknowledged");
                Err(error)
            }
        }
    }

    fn fail(&mut self, error: &StoreError) {
        self.needs_reopen = true;
        self.shared
            .set_health(if error.kind() == StoreErrorKind::Full {
                StoreHealth::Full
            } else {
                StoreHealth::Failed
            });
    }

    /// Closes and reopens the database (redb requires it after an I/O error), checking that
    /// the reopened file holds every acknowledged commit.
    fn reopen(&mut self) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        let mut guard = shared
            .db
            .write()
            .map_err(|_| StoreError::new(StoreErrorKind::Closed, "the store's lock is poisoned"))?;
        guard.take();
        let db = open_database(&shared.location, shared.options)
            .inspect_err(|error| self.fail(error))?;
        let counter = prepare(&db, &shared.describe()).inspect_err(|error| self.fail(error))?;
        if counter < self.counter {
            let error = StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "{} reopened at commit {counter}, behind the acknowledged commit {}",
                    shared.describe(),
                    self.counter
                ),
            );
            self.fail(&error);
            return Err(error);
        }
        self.counter = counter;
        *guard = Some(db);
        self.needs_reopen = false;
        tracing::info!(file = %shared.describe(), "storage: reopened the database after a failed write");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(tree: Tree, key: &[u8], value: &[u8]) -> Change {
        Change::Put {
            tree,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn an_empty_batch_is_a_no_op() {
        let store = RedbStore::temporary().unwrap();
        store.apply(Vec::new()).unwrap();
        assert!(store.is_healthy());
    }

    #[test]
    fn batches_apply_across_trees() {
        let store = RedbStore::temporary().unwrap();
        store
            .apply(vec![
                put(Tree::Keys, b"k1", b"v1"),
                put(Tree::Instances, b"i1", b"w"),
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
    fn scans_respect_prefix_start_and_order() {
        let store = RedbStore::temporary().unwrap();
        store
            .apply(vec![
                put(Tree::Audit, b"a2", b"2"),
                put(Tree::Audit, b"a1", b"1"),
                put(Tree::Audit, b"b1", b"3"),
            ])
            .unwrap();
        let keys: Vec<Vec<u8>> = store
            .scan_prefix(Tree::Audit, b"a")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a1".to_vec(), b"a2".to_vec()]);
        let mut seen = Vec::new();
        store
            .scan_from(Tree::Audit, b"a2", &mut |k, _| {
                seen.push(k.to_vec());
                true
            })
            .unwrap();
        assert_eq!(seen, vec![b"a2".to_vec(), b"b1".to_vec()]);
        assert_eq!(
            store.last(Tree::Audit).unwrap(),
            Some((b"b1".to_vec(), b"3".to_vec()))
        );
    }

    #[test]
    fn concurrent_writers_share_commits_and_all_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Arc::new(RedbStore::open(dir.path(), StoreOptions::default()).unwrap());
            let writers: Vec<_> = (0..8u8)
                .map(|w| {
                    let store = Arc::clone(&store);
                    std::thread::spawn(move || {
                        for n in 0..25u8 {
                            store.put(Tree::Keys, &[w, n], vec![w, n]).unwrap();
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap();
            }
        }
        let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.scan_prefix(Tree::Keys, b"").unwrap().len(), 200);
    }

    #[test]
    fn files_are_private_and_data_survives_reopen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
            store.put(Tree::Hsm, b"obj", b"sealed".to_vec()).unwrap();
        }
        for file in [DATABASE_FILE, COMMIT_MARK_FILE] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(
            store.get(Tree::Hsm, b"obj").unwrap(),
            Some(b"sealed".to_vec())
        );
    }

    #[test]
    fn a_rolled_back_file_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DATABASE_FILE);
        let old = dir.path().join("old-copy");
        {
            let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
            store.put(Tree::Keys, b"k", b"1".to_vec()).unwrap();
        }
        std::fs::copy(&db, &old).unwrap();
        {
            let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
            store.delete(Tree::Keys, b"k").unwrap();
        }
        std::fs::copy(&old, &db).unwrap();
        let error = RedbStore::open(dir.path(), StoreOptions::default()).unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Corrupt);
        assert!(error.to_string().contains(DATABASE_FILE), "{error}");
    }

    #[test]
    fn a_missing_database_beside_its_mark_refuses_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
            store.put(Tree::Keys, b"k", b"1".to_vec()).unwrap();
        }
        std::fs::remove_file(dir.path().join(DATABASE_FILE)).unwrap();
        let error = RedbStore::open(dir.path(), StoreOptions::default()).unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Corrupt);
        assert!(!dir.path().join(DATABASE_FILE).exists());
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path(), StoreOptions::default()).unwrap();
        let error = RedbStore::open(dir.path(), StoreOptions::default()).unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Locked);
        assert!(error.to_string().contains("another kmsim"), "{error}");
    }
}
