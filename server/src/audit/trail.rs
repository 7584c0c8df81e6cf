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
//! Sequence numbers start at 1 and never go back: after a restart they continue from the
//! last stored event, and a reset, which wipes the trail, stores a high-water mark so that
//! numbers are not reused either.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot};

use super::{AuditFilter, AuditPage, AuditRecord};
use crate::error::KmsError;
use crate::kms::lock;
use crate::store::{Change, Store, StoreError, Tree};

/// Longest a data event waits before it is written.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most events written in one batch.
pub const BATCH_MAX: usize = 512;
/// Events the live feed buffers per subscriber before it lags (and re-reads the store).
const LIVE_CAPACITY: usize = 4096;
/// The key, in [`Tree::Simulator`], of the next sequence number after a reset.
const NEXT_SEQUENCE_KEY: &[u8] = b"audit_next_sequence";

enum Message {
    /// An event to write in the next batch; `done` is told once it is written.
    Event(Box<AuditRecord>, Option<oneshot::Sender<()>>),
    /// Write what is pending now, then tell.
    Sync(oneshot::Sender<()>),
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
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Event(..) => "Event",
            Message::Sync(_) => "Sync",
            Message::Wipe(_) => "Wipe",
            Message::Stop => "Stop",
        })
    }
}

fn sequence_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
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
    /// Opens the trail over `store` and starts its writer thread.
    pub fn open(store: Arc<dyn Store>) -> Result<Self, KmsError> {
        let next = next_sequence(store.as_ref())?;
        let (queue, inbox) = mpsc::channel();
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let writer = Writer {
            inbox,
            store: Arc::clone(&store),
            live: live.clone(),
            next,
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
        })
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

    /// Writes `event` and returns once it is on disk (or its write failed and was logged).
    pub async fn record_durable(&self, event: AuditRecord) {
        let (done, written) = oneshot::channel();
        self.send(Message::Event(Box::new(event), Some(done)));
        let _ = written.await;
    }

    /// Returns once every event enqueued before the call is written.
    pub async fn sync(&self) {
        let (done, written) = oneshot::channel();
        self.send(Message::Sync(done));
        let _ = written.await;
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

/// The writer thread's state.
struct Writer {
    inbox: Receiver<Message>,
    store: Arc<dyn Store>,
    live: broadcast::Sender<Arc<AuditRecord>>,
    next: u64,
}

#[derive(Default)]
struct Batch {
    events: Vec<AuditRecord>,
    waiting: Vec<oneshot::Sender<()>>,
    wipe: Option<SyncSender<Result<(), StoreError>>>,
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
            let Ok(first) = self.inbox.recv() else {
                return;
            };
            let mut batch = Batch::default();
            let mut now = batch.add(first);
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
            self.write(batch.events);
            for done in batch.waiting {
                let _ = done.send(());
            }
            if let Some(done) = batch.wipe {
                let _ = done.send(self.wipe());
            }
            if batch.stop {
                return;
            }
        }
    }

    fn write(&mut self, events: Vec<AuditRecord>) {
        if events.is_empty() {
            return;
        }
        let mut written = Vec::with_capacity(events.len());
        let mut changes = Vec::with_capacity(events.len());
        for mut event in events {
            event.sequence = self.next;
            self.next += 1;
            changes.push(Change::Put {
                tree: Tree::Audit,
                key: sequence_key(event.sequence).to_vec(),
                value: super::codec::encode(&event),
            });
            written.push(Arc::new(event));
        }
        if let Err(error) = self.store.apply(changes) {
            tracing::error!(%error, count = written.len(), "cannot write audit events; they are lost");
            return;
        }
        for event in written {
            // No subscriber is fine.
            let _ = self.live.send(event);
        }
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
        self.store.apply(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Outcome, Severity};
    use crate::clock::Timestamp;
    use crate::store::SledStore;

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
            let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
            let trail = AuditTrail::open(Arc::clone(&store)).unwrap();
            for n in 0..10 {
                trail.record(event(&format!("a{n}")));
            }
            trail.sync().await;
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
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let trail = AuditTrail::open(store).unwrap();
        trail.record_durable(event("after")).await;
        let page = trail.read(0, &AuditFilter::default(), 10).unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].sequence, 11);
    }
}
