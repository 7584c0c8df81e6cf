//! The audit trail's storage: one writer thread assigns sequence numbers in arrival order,
//! writes events to [`Tree::Audit`] (keyed by the big-endian sequence number) in batches,
//! and only then publishes them on the live feed, so a reader that subscribes before reading
//! the store misses nothing.
//!
//! Batching: a data call (wrap, unwrap, reads) only enqueues its event (no disk flush on the
//! hot path); the writer collects events for up to [`BATCH_WINDOW`] or [`BATCH_MAX`] events,
//! then writes and flushes them in one store batch. A successful mutation's event, a
//! [`AuditTrail::sync`] and shutdown make the writer write at once, and their callers wait
//! for it. What an acknowledged data call guarantees: its event is enqueued before the reply,
//! is visible to every later List or Watch, and is on disk within [`BATCH_WINDOW`] plus one
//! flush (or at graceful shutdown); a crash of the process may lose the events of the last
//! window.
//!
//! With `--audit-durability sync` every event is written before its call is answered.
//!
//! **Fail closed.** When a batch cannot be written (a full disk, an I/O error), its events are
//! kept in memory and retried, the trail turns *failing*, and the audit layer refuses every
//! call until a write succeeds again ([`AuditTrail::accepting`]): no call is answered OK
//! unrecorded from then on. A mutation whose own event could not be written is answered
//! with the storage error (its change is made; its event is retried until it is written).
//!
//! **Retention.** After each write the writer prunes the oldest events beyond
//! [`AuditOptions::max_events`] or older than [`AuditOptions::max_age`] (by the server's
//! clock), at most [`PRUNE_MAX`] per batch, logs what it pruned and counts it
//! ([`AuditTrail::pruned`]).
//!
//! Sequence numbers start at 1 and never go back: after a restart they continue from the
//! last stored event, and a reset, which wipes the trail, stores a high-water mark so that
//! numbers are not reused either.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot};

use super::{AuditFilter, AuditPage, AuditRecord};
use crate::clock::Clock;
use crate::error::KmsError;
use crate::kms::lock;
use crate::store::{Change, Store, StoreError, StoreErrorKind, Tree};

/// Longest a data event waits before it is written.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most events written in one batch.
pub const BATCH_MAX: usize = 512;
/// Events the live feed buffers per subscriber before it lags (and re-reads the store).
const LIVE_CAPACITY: usize = 4096;
/// The key, in [`Tree::Simulator`], of the next sequence number after a reset.
const NEXT_SEQUENCE_KEY: &[u8] = b"audit_next_sequence";
/// The most events one batch prunes.
pub const PRUNE_MAX: usize = 10_000;
/// The most events kept in memory while writes fail; beyond it the oldest are lost (and
/// logged). Calls are refused while writes fail, so only refusals' events accumulate.
const RETRY_MAX: usize = 100_000;
/// How often a failing writer retries when no event arrives.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// When a data call's event reaches the disk (`--audit-durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuditDurability {
    /// In the next batch, within [`BATCH_WINDOW`]: a crash can lose the last window's
    /// events of data calls (mutations' events are always written before the reply).
    #[default]
    Batched,
    /// Before the call is answered, like a mutation's.
    Sync,
}

/// Durability and retention of the trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditOptions {
    /// When data calls' events are written.
    pub durability: AuditDurability,
    /// The most events kept (0: no bound).
    pub max_events: u64,
    /// The longest an event is kept, by the server's clock (zero: no bound).
    pub max_age: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            durability: AuditDurability::Batched,
            max_events: 1_000_000,
            max_age: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

const WRITING: u8 = 0;
const FAILING_FULL: u8 = 1;
const FAILING: u8 = 2;

enum Message {
    /// An event to write in the next batch; `done` is told once it is written (or failed).
    Event(
        Box<AuditRecord>,
        Option<oneshot::Sender<Result<(), StoreError>>>,
    ),
    /// Write what is pending now, then tell.
    Sync(oneshot::Sender<Result<(), StoreError>>),
    /// New options.
    Configure(AuditOptions),
    /// Write what is pending, then delete every event (a reset), then tell.
    Wipe(SyncSender<Result<(), StoreError>>),
    /// Write what is pending and stop.
    Stop,
}

/// The audit trail: the writer's queue, the live feed, and read access to the stored events.
#[derive(Debug)]
pub struct AuditTrail {
    queue: Sender<Message>,
    live: broadcast::Sender<Arc<AuditRecord>>,
    store: Arc<dyn Store>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Set when the server shuts down: live watches end.
    closing: tokio::sync::watch::Sender<bool>,
    /// Shared with the writer: whether writes fail, and how many events were pruned.
    status: Arc<Status>,
    durability: std::sync::atomic::AtomicBool,
}

/// What the writer reports to the trail's users without a lock.
#[derive(Debug, Default)]
struct Status {
    /// [`WRITING`], [`FAILING_FULL`] or [`FAILING`].
    state: AtomicU8,
    /// Events pruned by retention since start.
    pruned: AtomicU64,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Event(..) => "Event",
            Message::Sync(_) => "Sync",
            Message::Configure(_) => "Configure",
            Message::Wipe(_) => "Wipe",
            Message::Stop => "Stop",
        })
    }
}

fn sequence_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

fn encode(event: &AuditRecord) -> Vec<u8> {
    super::codec::encode(event)
}

fn decode(bytes: &[u8]) -> Result<AuditRecord, KmsError> {
    super::codec::decode(bytes)
        .map_err(|error| KmsError::Store(StoreError::corrupt(Tree::Audit, error)))
}

fn next_sequence(store: &dyn Store) -> Result<u64, KmsError> {
    let after_last = match store.last(Tree::Audit)? {
        Some((key, _)) => {
            let bytes: [u8; 8] = key.as_slice().try_into().map_err(|_| {
                KmsError::Store(StoreError::corrupt(
                    Tree::Audit,
                    "an audit key is not 8 bytes",
                ))
            })?;
            u64::from_be_bytes(bytes).saturating_add(1)
        }
        None => 1,
    };
    let mark = match store.get(Tree::Simulator, NEXT_SEQUENCE_KEY)? {
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                KmsError::Store(StoreError::corrupt(
                    Tree::Simulator,
                    "the audit sequence mark is not 8 bytes",
                ))
            })?;
            u64::from_be_bytes(bytes)
        }
        None => 1,
    };
    Ok(after_last.max(mark))
}

impl AuditTrail {
    /// Opens the trail over `store` and starts its writer thread; `clock` dates retention.
    pub fn open(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Result<Self, KmsError> {
        let next = next_sequence(store.as_ref())?;
        let mut first = next;
        store.scan_from(Tree::Audit, b"", &mut |key, _| {
            if let Ok(bytes) = <[u8; 8]>::try_from(key) {
                first = u64::from_be_bytes(bytes);
            }
            false
        })?;
        let (queue, inbox) = mpsc::channel();
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let status = Arc::new(Status::default());
        let writer = Writer {
            inbox,
            store: Arc::clone(&store),
            live: live.clone(),
            next,
            first,
            clock,
            options: AuditOptions::default(),
            retry: Vec::new(),
            status: Arc::clone(&status),
            last_age_check: None,
        };
        let handle = std::thread::Builder::new()
            .name("kmsim-audit".to_owned())
            .spawn(move || writer.run())
            .map_err(|error| {
                KmsError::Store(StoreError::backend(format!(
                    "cannot start the audit writer: {error}"
                )))
            })?;
        Ok(Self {
            queue,
            live,
            store,
            writer: std::sync::Mutex::new(Some(handle)),
            closing: tokio::sync::watch::Sender::new(false),
            status,
            durability: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Sets the durability of data events and the retention bounds.
    pub fn configure(&self, options: AuditOptions) {
        self.durability.store(
            options.durability == AuditDurability::Sync,
            Ordering::Relaxed,
        );
        self.send(Message::Configure(options));
    }

    /// Whether data calls' events are written before the reply (`--audit-durability sync`).
    pub fn data_events_are_durable(&self) -> bool {
        self.durability.load(Ordering::Relaxed)
    }

    /// `Ok` while events can be written; the storage failure while they cannot, when every
    /// call must be refused (the trail fails closed).
    pub fn accepting(&self) -> Result<(), StoreError> {
        match self.status.state.load(Ordering::Acquire) {
            WRITING => Ok(()),
            FAILING_FULL => Err(StoreError::new(
                StoreErrorKind::Full,
                "the audit trail cannot be written: the disk is full",
            )),
            _ => Err(StoreError::new(
                StoreErrorKind::Io,
                "the audit trail cannot be written",
            )),
        }
    }

    /// Events pruned by retention since the server started.
    pub fn pruned(&self) -> u64 {
        self.status.pruned.load(Ordering::Relaxed)
    }

    fn send(&self, message: Message) {
        if self.queue.send(message).is_err() {
            // The writer only stops when the trail is dropped.
            tracing::error!("the audit writer has stopped; an audit event was lost");
        }
    }

    /// Enqueues `event` for the next batch (no disk access).
    pub fn record(&self, event: AuditRecord) {
        self.send(Message::Event(Box::new(event), None));
    }

    /// Writes `event` and returns once it is on disk, or with the storage failure that kept
    /// it from the disk (the event is then kept and retried).
    pub async fn record_durable(&self, event: AuditRecord) -> Result<(), StoreError> {
        let (done, written) = oneshot::channel();
        self.send(Message::Event(Box::new(event), Some(done)));
        written.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Returns once every event enqueued before the call is written (or their write failed).
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (done, written) = oneshot::channel();
        self.send(Message::Sync(done));
        written.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Writes what is pending, then deletes every stored event (a reset). Sequence numbers
    /// continue. Blocks the calling (non-async) thread until done.
    pub fn wipe(&self) -> Result<(), KmsError> {
        let (done, result) = mpsc::sync_channel(1);
        self.send(Message::Wipe(done));
        result
            .recv()
            .map_err(|_| KmsError::Store(StoreError::backend("the audit writer has stopped")))?
            .map_err(KmsError::Store)
    }

    /// Whether the server is shutting down (live watches end when it turns true).
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Sets whether the server is shutting down: `true` ends every live watch.
    pub fn set_closing(&self, closing: bool) {
        self.closing.send_replace(closing);
    }

    /// A live feed of events as they are written.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditRecord>> {
        self.live.subscribe()
    }

    /// Up to `limit` stored events after sequence `after` that pass `filter`, oldest first.
    pub fn read(
        &self,
        after: u64,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<AuditPage, KmsError> {
        let mut events = Vec::new();
        let mut failure = None;
        let start = sequence_key(after.saturating_add(1));
        self.store.scan_from(Tree::Audit, &start, &mut |_, value| {
            match decode(value) {
                Ok(event) if filter.matches(&event) => events.push(event),
                Ok(_) => {}
                Err(error) => {
                    failure = Some(error);
                    return false;
                }
            }
            events.len() <= limit
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        let more = events.len() > limit;
        events.truncate(limit);
        Ok(AuditPage { events, more })
    }
}

impl Drop for AuditTrail {
    fn drop(&mut self) {
        let _ = self.queue.send(Message::Stop);
        if let Some(handle) = lock(&self.writer).take() {
            // The writer releases the store when it stops: wait, so that a restart in the
            // same process can open the database again.
            let _ = handle.join();
        }
    }
}

fn stopped() -> StoreError {
    StoreError::new(StoreErrorKind::Closed, "the audit writer has stopped")
}

/// The writer thread's state.
struct Writer {
    inbox: Receiver<Message>,
    store: Arc<dyn Store>,
    live: broadcast::Sender<Arc<AuditRecord>>,
    /// The sequence number of the next event.
    next: u64,
    /// The sequence number of the oldest stored event (`next` when none is stored).
    first: u64,
    clock: Arc<dyn Clock>,
    options: AuditOptions,
    /// Numbered events whose write failed, oldest first: written before anything newer.
    retry: Vec<AuditRecord>,
    status: Arc<Status>,
    last_age_check: Option<Instant>,
}

#[derive(Default)]
struct Batch {
    events: Vec<AuditRecord>,
    waiting: Vec<oneshot::Sender<Result<(), StoreError>>>,
    wipe: Option<SyncSender<Result<(), StoreError>>>,
    options: Option<AuditOptions>,
    stop: bool,
}

impl Batch {
    /// Adds `message`; returns whether the batch must be written now.
    fn add(&mut self, message: Message) -> bool {
        match message {
            Message::Event(event, done) => {
                self.events.push(*event);
                if let Some(done) = done {
                    self.waiting.push(done);
                }
            }
            Message::Sync(done) => self.waiting.push(done),
            Message::Configure(options) => self.options = Some(options),
            Message::Wipe(done) => self.wipe = Some(done),
            Message::Stop => self.stop = true,
        }
        !self.waiting.is_empty()
            || self.wipe.is_some()
            || self.stop
            || self.events.len() >= BATCH_MAX
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = if self.retry.is_empty() {
                match self.inbox.recv() {
                    Ok(message) => Some(message),
                    Err(_) => return,
                }
            } else {
                // Writes are failing: retry now and then even when no event arrives.
                match self.inbox.recv_timeout(RETRY_INTERVAL) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let mut batch = Batch::default();
            let mut now = match first {
                Some(message) => batch.add(message),
                None => true,
            };
            let deadline = Instant::now() + BATCH_WINDOW;
            while !now {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.inbox.recv_timeout(left) {
                    Ok(message) => now = batch.add(message),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        batch.stop = true;
                        break;
                    }
                }
            }
            // Whatever else already arrived joins this batch.
            while !batch.stop && batch.events.len() < BATCH_MAX {
                match self.inbox.try_recv() {
                    Ok(message) => {
                        batch.add(message);
                    }
                    Err(_) => break,
                }
            }
            if let Some(options) = batch.options {
                self.options = options;
            }
            let result = self.write(batch.events);
            for done in batch.waiting {
                let _ = done.send(result.clone());
            }
            if let Some(done) = batch.wipe {
                let _ = done.send(self.wipe());
            }
            if batch.stop {
                return;
            }
        }
    }

    /// Numbers `events`, then writes them after any that failed before, with the retention's
    /// deletions, in one store batch. On failure the events are kept for the next attempt and
    /// the trail turns failing.
    fn write(&mut self, events: Vec<AuditRecord>) -> Result<(), StoreError> {
        for mut event in events {
            event.sequence = self.next;
            self.next += 1;
            self.retry.push(event);
        }
        if self.retry.len() > RETRY_MAX {
            let lost = self.retry.len() - RETRY_MAX;
            self.retry.drain(..lost);
            tracing::error!(
                lost,
                "audit events that could not be written were dropped from memory"
            );
        }
        if self.retry.is_empty() {
            return Ok(());
        }
        let mut changes = Vec::with_capacity(self.retry.len());
        for event in &self.retry {
            changes.push(Change::Put {
                tree: Tree::Audit,
                key: sequence_key(event.sequence).to_vec(),
                value: encode(event),
            });
        }
        let pruned = self.prune(&mut changes);
        if let Err(error) = self.store.apply(changes) {
            let state = if error.kind() == StoreErrorKind::Full {
                FAILING_FULL
            } else {
                FAILING
            };
            if self.status.state.swap(state, Ordering::AcqRel) == WRITING {
                tracing::error!(%error, pending = self.retry.len(), "cannot write audit events: refusing every call until the trail can be written (they are kept and retried)");
            }
            return Err(error);
        }
        if self.status.state.swap(WRITING, Ordering::AcqRel) != WRITING {
            tracing::info!(
                written = self.retry.len(),
                "the audit trail is written again; calls are accepted"
            );
        }
        if pruned > 0 {
            self.first += pruned;
            self.status.pruned.fetch_add(pruned, Ordering::Relaxed);
            tracing::info!(
                pruned,
                max_events = self.options.max_events,
                max_age = ?self.options.max_age,
                "audit retention pruned the oldest events"
            );
        }
        for event in self.retry.drain(..) {
            // No subscriber is fine.
            let _ = self.live.send(Arc::new(event));
        }
        Ok(())
    }

    /// Adds to `changes` the deletions of the oldest stored events beyond the retention
    /// bounds (at most [`PRUNE_MAX`]); returns how many.
    fn prune(&mut self, changes: &mut Vec<Change>) -> u64 {
        let stored_after = self.next.saturating_sub(self.first);
        let by_count = match self.options.max_events {
            0 => 0,
            max => stored_after.saturating_sub(max),
        };
        let mut count = by_count.min(PRUNE_MAX as u64);
        let age_due = self
            .last_age_check
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if !self.options.max_age.is_zero() && count < PRUNE_MAX as u64 && age_due {
            self.last_age_check = Some(Instant::now());
            let horizon = self.clock.now().as_millis().saturating_sub(
                i64::try_from(self.options.max_age.as_millis()).unwrap_or(i64::MAX),
            );
            let mut old = 0u64;
            let start = sequence_key(self.first);
            let limit = PRUNE_MAX as u64;
            let scanned = self
                .store
                .scan_from(Tree::Audit, &start, &mut |_, value| match decode(value) {
                    Ok(event) if event.time.as_millis() < horizon && old < limit => {
                        old += 1;
                        true
                    }
                    _ => false,
                });
            if scanned.is_ok() {
                count = count.max(old);
            }
        }
        for sequence in self.first..self.first + count {
            changes.push(Change::Delete {
                tree: Tree::Audit,
                key: sequence_key(sequence).to_vec(),
            });
        }
        count
    }

    fn wipe(&mut self) -> Result<(), StoreError> {
        let mut changes = Vec::new();
        self.store.scan_from(Tree::Audit, b"", &mut |key, _| {
            changes.push(Change::Delete {
                tree: Tree::Audit,
                key: key.to_vec(),
            });
            true
        })?;
        changes.push(Change::Put {
            tree: Tree::Simulator,
            key: NEXT_SEQUENCE_KEY.to_vec(),
            value: self.next.to_be_bytes().to_vec(),
        });
        self.store.apply(changes)?;
        self.first = self.next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Outcome, Severity};
    use crate::clock::SystemClock;
    use crate::clock::Timestamp;
    use crate::store::RedbStore;

    fn event(action: &str) -> AuditRecord {
        AuditRecord {
            sequence: 0,
            time: Timestamp::from_millis(1),
            action: action.to_owned(),
            outcome: Outcome::Success,
            severity: Severity::Normal,
            grpc_code: 0,
            reason: String::new(),
            http_status: 200,
            initiator_id: None,
            initiator_kind: None,
            target_crn: String::new(),
            instance: None,
            method: String::new(),
            key_state: None,
            key_version_id: String::new(),
            rewrapped_key_version_id: String::new(),
            injected: false,
            injected_latency_ms: 0,
            correlation_id: String::new(),
        }
    }

    #[tokio::test]
    async fn batches_keep_order_and_numbers_survive_reopen_and_wipe() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store: Arc<dyn Store> =
                Arc::new(RedbStore::open(dir.path(), Default::default()).unwrap());
            let trail = AuditTrail::open(Arc::clone(&store), Arc::new(SystemClock)).unwrap();
            for n in 0..10 {
                trail.record(event(&format!("a{n}")));
            }
            trail.sync().await.unwrap();
            let page = trail.read(0, &AuditFilter::default(), 100).unwrap();
            let sequences: Vec<u64> = page.events.iter().map(|e| e.sequence).collect();
            assert_eq!(sequences, (1..=10).collect::<Vec<_>>());
            assert_eq!(page.events[3].action, "a3");
            let page = trail.read(4, &AuditFilter::default(), 3).unwrap();
            assert_eq!(page.events[0].sequence, 5);
            assert!(page.more);
            tokio::task::spawn_blocking(move || {
                trail.wipe().unwrap();
                assert!(
                    trail
                        .read(0, &AuditFilter::default(), 10)
                        .unwrap()
                        .events
                        .is_empty()
                );
            })
            .await
            .unwrap();
        }
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(dir.path(), Default::default()).unwrap());
        let trail = AuditTrail::open(store, Arc::new(SystemClock)).unwrap();
        trail.record_durable(event("after")).await.unwrap();
        let page = trail.read(0, &AuditFilter::default(), 10).unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].sequence, 11);
    }
}
