//! Lifecycle events to registered resources (adopters), reference section 1.11: one event per
//! registration when a root key is rotated, disabled, enabled, deleted or restored
//! (`Kms::commit_key_notifying`), stored durably in the same store batch as the action
//! (tree `lifecycle_events`, keyed by the big-endian sequence number) before its reply, with a global increasing sequence number so a
//! watcher can resume; acknowledgements (a conflicting adopter state fails the event with
//! 409), the 4-hour acknowledgement deadline (a scheduler timer fails the event with 408), and
//! `SyncKey` (a copy of the key's last event, at most once an hour).
//!
//! Live watchers learn of new sequence numbers through a broadcast channel and then read the
//! events from the index, so a lagging watcher re-reads what it missed instead of losing it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::auth::{Identity, IdentityKind};
use crate::clock::Timestamp;
use crate::error::KmsError;
use crate::kms::iam::Action as Permission;
use crate::kms::ids::{InstanceId, KeyId, KeyRef, KeyVersionId, LifecycleEventId, ResourceCrn};
use crate::kms::records::{KeyRecord, Lifecycle};
use crate::kms::scheduler::TimerSubject;
use crate::kms::state::KeyState;
use crate::kms::{KeyEntry, Kms, decode, encode, lock, read, write};
use crate::store::{Change, Tree};

/// An adopter must acknowledge within this time, or the event fails with 408.
pub const ACK_DEADLINE: Duration = Duration::from_secs(4 * 3600);
/// `SyncKey` needs more than this since the key's last notification or lifecycle action.
pub const SYNC_COOL_DOWN: Duration = Duration::from_secs(3600);
/// Live watchers' notification buffer; a watcher further behind re-reads the index.
const NOTIFY_CAPACITY: usize = 256;

/// What happened to the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleKind {
    /// Rotated.
    Rotate,
    /// Disabled.
    Disable,
    /// Enabled.
    Enable,
    /// Deleted.
    Delete,
    /// Restored.
    Restore,
    /// `SyncKey` on a key without any previous event.
    Sync,
}

/// Where an event stands with its adopter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// Not yet acknowledged.
    Pending,
    /// Acknowledged with an agreeing state.
    Acknowledged,
    /// Failed: 408 (no acknowledgement in time) or 409 (conflicting adopter state).
    Failed {
        /// 408 or 409.
        reason: u16,
    },
}

/// An adopter's acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// When.
    pub time: Timestamp,
    /// The key state the adopter applies.
    pub adopter_key_state: KeyState,
    /// The key version the adopter uses, if it said.
    pub key_version: Option<KeyVersionId>,
    /// The acknowledging identity.
    pub by: String,
}

/// One lifecycle event for one registered resource, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LifecycleEventRecord {
    /// Global sequence number.
    pub sequence: u64,
    /// Event id.
    pub id: LifecycleEventId,
    /// What happened.
    pub kind: LifecycleKind,
    /// The key.
    pub key: KeyId,
    /// The key's instance.
    pub instance: InstanceId,
    /// The key's CRN, as text.
    pub key_crn: String,
    /// The registered resource.
    pub resource_crn: ResourceCrn,
    /// The key's state after the action.
    pub key_state: KeyState,
    /// The current version after the action.
    pub new_key_version: Option<KeyVersionId>,
    /// The version current before the action.
    pub old_key_version: Option<KeyVersionId>,
    /// Emission time.
    pub time: Timestamp,
    /// Delivery status.
    pub status: DeliveryStatus,
    /// The acknowledgement, once received.
    #[serde(default)]
    pub ack: Option<Acknowledgement>,
    /// Re-sent by `SyncKey`.
    #[serde(default)]
    pub sync: bool,
}

/// Every lifecycle event, and the live watchers' channel.
#[derive(Debug)]
pub(crate) struct LifecycleState {
    events: RwLock<BTreeMap<u64, Arc<LifecycleEventRecord>>>,
    by_id: RwLock<HashMap<LifecycleEventId, u64>>,
    /// The last sequence number used; held while events are appended or change status, so
    /// sequence order is index order and status writes do not race.
    writing: Mutex<u64>,
    notify: broadcast::Sender<u64>,
}

impl Default for LifecycleState {
    fn default() -> Self {
        Self {
            events: RwLock::default(),
            by_id: RwLock::default(),
            writing: Mutex::new(0),
            notify: broadcast::channel(NOTIFY_CAPACITY).0,
        }
    }
}

fn event_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// Numbers `drafts` after sequence `last`; returns them and the new last sequence.
fn number_events(drafts: Vec<LifecycleEventRecord>, last: u64) -> (Vec<LifecycleEventRecord>, u64) {
    let mut next = last;
    let events = drafts
        .into_iter()
        .map(|mut event| {
            next += 1;
            event.sequence = next;
            event
        })
        .collect();
    (events, next)
}

/// The store writes of numbered events.
fn event_changes(events: &[LifecycleEventRecord]) -> Vec<Change> {
    events
        .iter()
        .map(|e| Change::Put {
            tree: Tree::LifecycleEvents,
            key: event_key(e.sequence).to_vec(),
            value: encode(e),
        })
        .collect()
}

impl Kms {
    /// Commits a key record changed by a lifecycle action (`kind`) together with one event per
    /// registration of the key (live and soft-deleted), in ONE flushed store batch: the action
    /// and its notifications are durable together or not at all. Then publishes both and wakes
    /// live watchers. The caller holds the key's mutation lock.
    pub(crate) fn commit_key_notifying(
        &self,
        entry: &KeyEntry,
        record: KeyRecord,
        kind: LifecycleKind,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let drafts = self.lifecycle_drafts(&record, kind, false)?;
        if drafts.is_empty() {
            return self.commit_key(entry, record);
        }
        let mut last = lock(&self.lifecycle.writing);
        let (events, next) = number_events(drafts, *last);
        let mut changes = vec![Change::Put {
            tree: Tree::Keys,
            key: record.id.as_bytes().to_vec(),
            value: encode(&record),
        }];
        changes.extend(event_changes(&events));
        self.store.apply(changes)?;
        *last = next;
        let committed = self.publish_key(entry, record);
        self.publish_lifecycle(events, next);
        Ok(committed)
    }

    fn lifecycle_drafts(
        &self,
        record: &KeyRecord,
        kind: LifecycleKind,
        sync: bool,
    ) -> Result<Vec<LifecycleEventRecord>, KmsError> {
        let registrations = self.registrations_of(record.id);
        if registrations.is_empty() {
            return Ok(Vec::new());
        }
        let instance = self.instance(record.instance)?;
        let key_crn = instance.record.crn().key(record.id).to_string();
        let now = self.now();
        let key_state = match record.state_at(now) {
            Lifecycle::Live(state) => state,
            Lifecycle::Purged => KeyState::Destroyed,
        };
        let new_key_version = record.current_version().map(|v| v.id);
        let old_key_version = if kind == LifecycleKind::Rotate {
            record.versions.iter().rev().nth(1).map(|v| v.id)
        } else {
            new_key_version
        };
        Ok(registrations
            .into_iter()
            .map(|r| LifecycleEventRecord {
                sequence: 0,
                id: LifecycleEventId::from_uuid(self.new_id()),
                kind,
                key: record.id,
                instance: record.instance,
                key_crn: key_crn.clone(),
                resource_crn: r.resource_crn,
                key_state,
                new_key_version,
                old_key_version,
                time: now,
                status: DeliveryStatus::Pending,
                ack: None,
                sync,
            })
            .collect())
    }

    /// Numbers the drafts, writes them in one flushed batch, publishes them, schedules their
    /// acknowledgement deadlines and wakes watchers.
    fn append_lifecycle(
        &self,
        drafts: Vec<LifecycleEventRecord>,
    ) -> Result<Vec<Arc<LifecycleEventRecord>>, KmsError> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let mut last = lock(&self.lifecycle.writing);
        let (events, next) = number_events(drafts, *last);
        self.store.apply(event_changes(&events))?;
        *last = next;
        Ok(self.publish_lifecycle(events, next))
    }

    /// After `events` are durably written (the caller holds `writing`): indexes them,
    /// schedules their acknowledgement deadlines and wakes watchers up to sequence `last`.
    fn publish_lifecycle(
        &self,
        events: Vec<LifecycleEventRecord>,
        last: u64,
    ) -> Vec<Arc<LifecycleEventRecord>> {
        let events: Vec<Arc<LifecycleEventRecord>> = events.into_iter().map(Arc::new).collect();
        {
            let mut index = write(&self.lifecycle.events);
            let mut by_id = write(&self.lifecycle.by_id);
            for event in &events {
                index.insert(event.sequence, Arc::clone(event));
                by_id.insert(event.id, event.sequence);
                self.scheduler.schedule(
                    event.time.plus(ACK_DEADLINE),
                    TimerSubject::LifecycleAck(event.sequence),
                );
            }
        }
        // No live watcher is fine: they re-read the index when they subscribe.
        let _ = self.lifecycle.notify.send(last);
        events
    }

    /// Replaces a stored event (status change). The caller holds `writing`.
    fn rewrite_lifecycle(
        &self,
        event: LifecycleEventRecord,
    ) -> Result<Arc<LifecycleEventRecord>, KmsError> {
        self.store.put(
            Tree::LifecycleEvents,
            &event_key(event.sequence),
            encode(&event),
        )?;
        let event = Arc::new(event);
        write(&self.lifecycle.events).insert(event.sequence, Arc::clone(&event));
        Ok(event)
    }

    /// Records an adopter's acknowledgement (service identities authorized on the event's
    /// instance only). A key state other than the event's, or a key version other than the
    /// event's new version, fails the event with 409; otherwise it is acknowledged. An event
    /// already acknowledged or failed: `LIFECYCLE_EVENT_SETTLED_ERR`.
    pub fn ack_lifecycle_event(
        &self,
        who: &Identity,
        id: LifecycleEventId,
        adopter_key_state: KeyState,
        key_version: Option<KeyVersionId>,
    ) -> Result<Arc<LifecycleEventRecord>, KmsError> {
        if who.kind != IdentityKind::Service {
            return Err(KmsError::ServiceOnly);
        }
        let event = self
            .lifecycle_event(id)
            .ok_or(KmsError::LifecycleEventNotFound)?;
        self.authorize(who, Some(event.instance), Permission::AckLifecycleEvent)?;
        let _writing = lock(&self.lifecycle.writing);
        let current = read(&self.lifecycle.events)
            .get(&event.sequence)
            .cloned()
            .ok_or(KmsError::LifecycleEventNotFound)?;
        if current.status != DeliveryStatus::Pending {
            return Err(KmsError::LifecycleEventSettled);
        }
        let conflict = adopter_key_state != current.key_state
            || key_version.is_some_and(|v| Some(v) != current.new_key_version);
        let mut next = (*current).clone();
        next.status = if conflict {
            DeliveryStatus::Failed { reason: 409 }
        } else {
            DeliveryStatus::Acknowledged
        };
        next.ack = Some(Acknowledgement {
            time: self.now(),
            adopter_key_state,
            key_version,
            by: who.id.to_string(),
        });
        let failed = conflict.then(|| next.clone());
        let written = self.rewrite_lifecycle(next)?;
        if let Some(failed) = failed {
            self.audit_lifecycle_failure(&failed, Some(who));
        }
        Ok(written)
    }

    /// Records a lifecycle event's failure in the audit trail, as Activity Tracker logs it:
    /// `kms.secrets.ack-<kind>` (`hs-crypto.` for HPCS), outcome failure, HTTP status 408 (no
    /// acknowledgement within 4 hours) or 409 (the adopter's key state conflicts), with the
    /// key as target. `who` is the adopter whose acknowledgement conflicted; a timeout has no
    /// initiator.
    fn audit_lifecycle_failure(&self, event: &LifecycleEventRecord, who: Option<&Identity>) {
        let DeliveryStatus::Failed { reason } = event.status else {
            return;
        };
        let name = match event.kind {
            LifecycleKind::Rotate => "secrets.ack-rotate",
            LifecycleKind::Disable => "secrets.ack-disable",
            LifecycleKind::Enable => "secrets.ack-enable",
            LifecycleKind::Delete => "secrets.ack-delete",
            LifecycleKind::Restore => "secrets.ack-restore",
            LifecycleKind::Sync => "secrets.ack-sync",
        };
        let spec = crate::audit::ActionSpec {
            name,
            family: crate::audit::Family::KeyProtect,
            durability: crate::audit::Durability::Batched,
        };
        // The instance's flavor names the prefix (`kms.` or `hs-crypto.`).
        let service = self
            .instance(event.instance)
            .ok()
            .map(|instance| instance.record.flavor.service());
        let (grpc_code, code, method) = if reason == 408 {
            (
                tonic::Code::DeadlineExceeded,
                "LIFECYCLE_ACK_TIMEOUT_ERR",
                String::new(),
            )
        } else {
            (
                tonic::Code::FailedPrecondition,
                "LIFECYCLE_ADOPTER_STATE_CONFLICT_ERR",
                "/kmsim.v1.EventService/AckLifecycleEvent".to_owned(),
            )
        };
        self.audit().record(crate::audit::AuditRecord {
            sequence: 0,
            time: self.now(),
            action: crate::audit::action_name(spec, service),
            outcome: crate::audit::Outcome::Failure,
            severity: crate::audit::Severity::Warning,
            grpc_code: grpc_code as i32,
            reason: code.to_owned(),
            http_status: reason,
            initiator_id: who.map(|w| w.id),
            initiator_kind: who.map(|w| w.kind),
            target_crn: event.key_crn.clone(),
            instance: Some(event.instance),
            method,
            key_state: Some(event.key_state),
            key_version_id: event
                .new_key_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
            rewrapped_key_version_id: String::new(),
            injected: false,
            injected_latency_ms: 0,
            correlation_id: event.id.to_string(),
        });
    }

    /// Timer: an event still pending 4 hours after emission fails with 408. Returns whether
    /// it changed.
    pub(crate) fn expire_lifecycle_ack(
        &self,
        sequence: u64,
        now: Timestamp,
    ) -> Result<bool, KmsError> {
        let _writing = lock(&self.lifecycle.writing);
        let Some(event) = read(&self.lifecycle.events).get(&sequence).cloned() else {
            return Ok(false);
        };
        if event.status != DeliveryStatus::Pending || now < event.time.plus(ACK_DEADLINE) {
            return Ok(false);
        }
        let mut next = (*event).clone();
        next.status = DeliveryStatus::Failed { reason: 408 };
        let failed = next.clone();
        self.rewrite_lifecycle(next)?;
        self.audit_lifecycle_failure(&failed, None);
        Ok(true)
    }

    /// `SyncKey`: re-sends the key's last lifecycle event (as new events: new ids and sequence
    /// numbers, the key's current state and version, `sync` set) to every registration. Only
    /// when more than an hour has passed since the key's last notification or change
    /// (`REQ_TOO_EARLY_ERR` with the wait). A key that never had an event sends `Sync`.
    pub fn sync_key(
        &self,
        who: &Identity,
        key: &KeyRef,
    ) -> Result<Vec<Arc<LifecycleEventRecord>>, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::SyncKey)?;
        let (_, entry, _, _) = self.resolve_live(key)?;
        let _guard = lock(&entry.mutation);
        let record = entry.snapshot();
        let now = self.now();
        let last_event = read(&self.lifecycle.events)
            .values()
            .rev()
            .find(|e| e.key == record.id)
            .cloned();
        let last_action = last_event
            .as_ref()
            .map_or(record.update_time, |e| e.time.max(record.update_time));
        let allowed = last_action.plus(SYNC_COOL_DOWN);
        if now <= allowed {
            return Err(KmsError::TooEarly {
                retry_after: now.until(allowed).max(Duration::from_millis(1)),
            });
        }
        let kind = last_event.map_or(LifecycleKind::Sync, |e| e.kind);
        let drafts = self.lifecycle_drafts(&record, kind, true)?;
        self.append_lifecycle(drafts)
    }

    /// One event by id.
    pub fn lifecycle_event(&self, id: LifecycleEventId) -> Option<Arc<LifecycleEventRecord>> {
        let sequence = *read(&self.lifecycle.by_id).get(&id)?;
        read(&self.lifecycle.events).get(&sequence).cloned()
    }

    /// Up to `limit` stored events after `after`, in sequence order, for `resource` (every
    /// resource when `None`), on instances `who` may read (others are skipped). Also returns
    /// the last sequence number examined, so a watcher does not re-examine skipped events.
    pub fn lifecycle_events_after(
        &self,
        who: &Identity,
        after: u64,
        resource: Option<&ResourceCrn>,
        limit: usize,
    ) -> (Vec<Arc<LifecycleEventRecord>>, u64) {
        let index = read(&self.lifecycle.events);
        let mut examined = after;
        let mut found = Vec::new();
        for (sequence, event) in index.range(after.saturating_add(1)..) {
            if found.len() >= limit {
                break;
            }
            examined = *sequence;
            if resource.is_some_and(|r| r != &event.resource_crn) {
                continue;
            }
            if self
                .authorize(who, Some(event.instance), Permission::WatchLifecycleEvents)
                .is_err()
            {
                continue;
            }
            found.push(Arc::clone(event));
        }
        (found, examined)
    }

    /// A receiver woken (with the last sequence number) whenever events are appended.
    pub fn subscribe_lifecycle(&self) -> broadcast::Receiver<u64> {
        self.lifecycle.notify.subscribe()
    }

    /// Loads every event from the store and schedules the acknowledgement deadlines of
    /// pending ones.
    pub(crate) fn load_lifecycle(&self) -> Result<(), KmsError> {
        let mut events = BTreeMap::new();
        let mut by_id = HashMap::new();
        for (_, bytes) in self.store.scan_prefix(Tree::LifecycleEvents, b"")? {
            let event: LifecycleEventRecord = decode(Tree::LifecycleEvents, &bytes)?;
            if event.status == DeliveryStatus::Pending {
                self.scheduler.schedule(
                    event.time.plus(ACK_DEADLINE),
                    TimerSubject::LifecycleAck(event.sequence),
                );
            }
            by_id.insert(event.id, event.sequence);
            events.insert(event.sequence, Arc::new(event));
        }
        let mut last = lock(&self.lifecycle.writing);
        *last = (*last).max(events.keys().next_back().copied().unwrap_or(0));
        *write(&self.lifecycle.events) = events;
        *write(&self.lifecycle.by_id) = by_id;
        Ok(())
    }

    /// Forgets every event in memory (reset; the caller wipes the tree). Sequence numbers keep
    /// increasing, so a watcher never sees one twice.
    pub(crate) fn clear_lifecycle(&self) {
        let _writing = lock(&self.lifecycle.writing);
        write(&self.lifecycle.events).clear();
        write(&self.lifecycle.by_id).clear();
    }
}
