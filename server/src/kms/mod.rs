//! The KMS domain: instances, keys and their lifecycle, envelope encryption and secure
//! import. It knows nothing of protobuf; it takes parsed values, reads time only from the
//! [`Clock`], keeps an in-memory index of every record (reads never touch the store), and
//! writes every mutation through the [`Store`] (flushed) before updating the index.

mod ceremony;
pub mod ciphertext;
mod clock_audit;
mod hsm_admin;
pub mod iam;
pub mod ids;
mod import;
pub(crate) mod index;
mod instances;
pub mod keys;
pub mod keystore;
pub mod lifecycle;
pub mod policies;
pub mod records;
pub mod registrations;
pub mod scheduler;
mod seeding;
mod simulator;
pub mod snapshot;
pub mod state;
mod wrap;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sim_hsm::{DevMasterKey, Hsm};

use crate::clock::{Clock, Timestamp};
use crate::error::KmsError;
use crate::store::{Store, StoreError, Tree};
use ids::{AccountId, Alias, InstanceId, KeyId, KeyName, KeyRef, Region};
use keystore::{HsmCredentials, Keystore};
use records::{ImportTokenRecord, InstanceRecord, KeyRecord, Lifecycle};
use scheduler::Scheduler;

pub use ceremony::RotationOutcome;
pub use hsm_admin::{HsmReport, WipeKind};
pub use import::ImportTokenView;
pub use instances::NewInstance;
pub use keys::{KeyListQuery, KeyView, Material, NewKey, Page};
pub use simulator::{ClockMove, ClockReading, ResetSummary};
pub use wrap::{RewrapResult, UnwrapResult, WrapResult};

/// Defaults the domain applies where a request leaves a value out.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Region of new instances.
    pub region: Region,
    /// Account of new instances.
    pub account: AccountId,
}

/// A loaded instance: its record, its keystore session, and its per-instance indexes.
#[derive(Debug)]
pub(crate) struct InstanceEntry {
    pub(crate) record: InstanceRecord,
    /// The keystore session; `None` once an HSM zeroization or tamper response destroyed the
    /// instance's token (its keys' metadata stays, their material is gone).
    pub(crate) keystore: RwLock<Option<Keystore>>,
    /// Alias -> key, unique per instance.
    pub(crate) aliases: RwLock<HashMap<Alias, KeyId>>,
    /// The instance's import token, if any.
    pub(crate) import_token: Mutex<Option<ImportTokenRecord>>,
    /// Serialises instance-wide mutations (key creation with aliases, alias changes).
    pub(crate) mutation: Mutex<()>,
    /// The instance's policies, current (the record holds them as last loaded).
    pub(crate) policies: RwLock<policies::InstancePolicies>,
    /// The keystore is not open yet because the HSM has not passed its self-tests since
    /// start-up ([`Kms::open_awaiting_keystores`] opens it once they pass).
    pub(crate) awaiting_hsm: AtomicBool,
}

impl InstanceEntry {
    /// The instance's keystore; `KEY_MATERIAL_DESTROYED_ERR` once the HSM wiped it, or the
    /// HSM's self-test failure (`HSM_SELF_TEST_FAILED_ERR`) while it awaits the HSM.
    pub(crate) fn keystore(&self) -> Result<Keystore, KmsError> {
        self.keystore_if_intact().ok_or_else(|| {
            if self.awaiting_hsm.load(Ordering::Acquire) {
                KmsError::Hsm(sim_hsm::HsmError::FipsSelfTestFailed)
            } else {
                KmsError::KeyMaterialDestroyed(self.record.id)
            }
        })
    }

    /// The instance's keystore, unless the HSM wiped it.
    pub(crate) fn keystore_if_intact(&self) -> Option<Keystore> {
        read(&self.keystore).clone()
    }
}

/// A loaded key: the current record, swapped whole on every mutation, and a lock that
/// serialises the key's mutations (readers never wait on it).
#[derive(Debug)]
pub(crate) struct KeyEntry {
    pub(crate) record: RwLock<Arc<KeyRecord>>,
    pub(crate) mutation: Mutex<()>,
}

impl KeyEntry {
    fn new(record: KeyRecord) -> Self {
        Self {
            record: RwLock::new(Arc::new(record)),
            mutation: Mutex::new(()),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<KeyRecord> {
        Arc::clone(&read(&self.record))
    }
}

/// A resolved key that exists now: its instance, its entry, the record read, and the
/// record's effective state.
pub(crate) type LiveKey = (
    Arc<InstanceEntry>,
    Arc<KeyEntry>,
    Arc<KeyRecord>,
    state::KeyState,
);

/// The KMS.
#[derive(Debug)]
pub struct Kms {
    hsm: Arc<Hsm>,
    /// The master key the HSM runs with, re-activated after a zeroization or reset; replaced
    /// when a master-key ceremony makes a new key current (`ceremony`).
    master_key: RwLock<Arc<DevMasterKey>>,
    /// What the KMS keeps of the master-key ceremony.
    ceremony: ceremony::CeremonyState,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    credentials: HsmCredentials,
    defaults: Defaults,
    instances: index::ShardedMap<InstanceId, Arc<InstanceEntry>>,
    keys: index::ShardedMap<KeyId, Arc<KeyEntry>>,
    /// Each instance's keys in listing order (creation time, then id).
    key_order: index::Ordered<InstanceId, (Timestamp, KeyId), Arc<KeyEntry>>,
    /// Serialises instance creation and deletion (token slots are module-wide).
    instance_admin: Mutex<()>,
    scheduler: Scheduler,
    /// Serialises timer firing, so a caller that fires timers returns only after any firing
    /// already under way (e.g. the background task's) has finished.
    pub(crate) firing: Mutex<()>,
    /// Serialises moves of the simulated clock (persist, then move, then fire).
    clock_admin: Mutex<()>,
    /// Injected fault rules, applied by the gRPC layer.
    faults: Arc<crate::faults::Faults>,
    iam: iam::IamState,
    registrations: registrations::RegistrationState,
    lifecycle: lifecycle::LifecycleState,
    /// Ids, secrets and salts (seeded under `--deterministic`).
    pub(crate) random: crate::random::Randomness,
    /// The audit trail (`crate::audit`).
    audit: crate::audit::AuditTrail,
}

/// Locks a mutex, recovering from poisoning: every critical section either completes its
/// update or leaves the previous value in place, so a panic elsewhere cannot leave it torn.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read-locks, recovering from poisoning (see [`lock`]).
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write-locks, recovering from poisoning (see [`lock`]).
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn decode<T: serde::de::DeserializeOwned>(tree: Tree, bytes: &[u8]) -> Result<T, KmsError> {
    serde_json::from_slice(bytes).map_err(|error| KmsError::Store(StoreError::corrupt(tree, error)))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data (strings, numbers, vectors): serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Kms {
    /// Loads every record from `store` and opens each instance's keystore in `hsm` (whose
    /// master key must be active: `master_key`). An instance whose token the HSM no longer
    /// holds (wiped by a zeroization or tamper response) loads with its keystore destroyed.
    /// A simulated clock is moved forward to the time a previous run stored, if later. Also
    /// opens IAM and its token-signing key (created on first start, from `random`);
    /// `dev_token` accepts [`crate::auth::DEV_TOKEN`] as the bootstrap admin.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        hsm: Arc<Hsm>,
        master_key: Arc<DevMasterKey>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        credentials: HsmCredentials,
        defaults: Defaults,
        dev_token: bool,
        random: crate::random::Randomness,
    ) -> Result<Self, KmsError> {
        let iam = iam::IamState::open(&hsm, store.as_ref(), &random, dev_token)?;
        let audit = crate::audit::AuditTrail::open(Arc::clone(&store), Arc::clone(&clock))?;
        let kms = Self {
            audit,
            iam,
            faults: Arc::new(crate::faults::Faults::with_random(random.clone())),
            random,
            hsm,
            master_key: RwLock::new(master_key),
            ceremony: ceremony::CeremonyState::default(),
            store,
            clock,
            credentials,
            defaults,
            instances: index::ShardedMap::default(),
            keys: index::ShardedMap::default(),
            key_order: index::Ordered::default(),
            instance_admin: Mutex::new(()),
            scheduler: Scheduler::default(),
            firing: Mutex::new(()),
            clock_admin: Mutex::new(()),
            registrations: registrations::RegistrationState::default(),
            lifecycle: lifecycle::LifecycleState::default(),
        };
        kms.reload()?;
        Ok(kms)
    }

    /// Loads the in-memory state from the store: the clock, then every index ([`Kms::load`]).
    /// The one path used at start-up and after a snapshot import replaced the store's
    /// contents, so state added to `load` is restored by both.
    fn reload(&self) -> Result<(), KmsError> {
        self.restore_clock()?;
        self.load()
    }

    fn load(&self) -> Result<(), KmsError> {
        let mut instances = HashMap::new();
        // An HSM that failed its start-up self-tests cannot open keystores: they are opened
        // when self-tests pass (`open_awaiting_keystores`).
        let hsm_ready = self.hsm.status().state == sim_hsm::ModuleState::Operational;
        for (_, bytes) in self.store.scan_prefix(Tree::Instances, b"")? {
            let record: InstanceRecord = decode(Tree::Instances, &bytes)?;
            let keystore = match hsm_ready
                .then(|| Keystore::open(&self.hsm, record.id, &self.credentials))
            {
                None => None,
                Some(opened) => match opened {
                    Ok(keystore) => Some(keystore),
                    Err(KmsError::KeyMaterialDestroyed(_)) => {
                        tracing::warn!(instance = %record.id, "the instance's keystore was destroyed by the HSM; its keys are unusable");
                        None
                    }
                    Err(error) => return Err(error),
                },
            };
            let token = match self.store.get(Tree::ImportTokens, record.id.as_bytes())? {
                Some(bytes) => Some(decode::<ImportTokenRecord>(Tree::ImportTokens, &bytes)?),
                None => None,
            };
            instances.insert(
                record.id,
                Arc::new(InstanceEntry {
                    policies: RwLock::new(record.policies.clone()),
                    record,
                    keystore: RwLock::new(keystore),
                    aliases: RwLock::new(HashMap::new()),
                    import_token: Mutex::new(token),
                    mutation: Mutex::new(()),
                    awaiting_hsm: AtomicBool::new(!hsm_ready),
                }),
            );
        }
        let mut keys = HashMap::new();
        for (_, bytes) in self.store.scan_prefix(Tree::Keys, b"")? {
            let record: KeyRecord = decode(Tree::Keys, &bytes)?;
            if let Some(instance) = instances.get(&record.instance) {
                let mut aliases = write(&instance.aliases);
                for alias in &record.aliases {
                    aliases.insert(alias.alias.clone(), record.id);
                }
            }
            if let Some(deadline) = record.next_deadline() {
                self.scheduler.schedule(deadline, record.id);
            }
            keys.insert(record.id, Arc::new(KeyEntry::new(record)));
        }
        self.instances.replace(instances);
        self.key_order
            .replace(keys.values().map(|entry: &Arc<KeyEntry>| {
                let record = entry.snapshot();
                (
                    record.instance,
                    (record.create_time, record.id),
                    Arc::clone(entry),
                )
            }));
        self.keys.replace(keys);
        self.load_registrations()?;
        self.load_lifecycle()?;
        Ok(())
    }

    /// The current time by the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The service's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The audit trail.
    pub fn audit(&self) -> &crate::audit::AuditTrail {
        &self.audit
    }

    /// A loaded key by id (the audit layer reads its state).
    pub(crate) fn key_entry(&self, id: KeyId) -> Option<Arc<KeyEntry>> {
        self.keys.get(&id)
    }

    /// The HSM.
    pub fn hsm(&self) -> &Arc<Hsm> {
        &self.hsm
    }

    /// Whether the store is open and writable.
    pub fn store_healthy(&self) -> bool {
        self.store.is_healthy()
    }

    /// The store's condition; after a failed write it first tries a small write, so that
    /// health recovers once the cause (a full disk) is gone.
    pub fn store_health(&self) -> crate::store::StoreHealth {
        self.store.probe()
    }

    pub(crate) fn instance(&self, id: InstanceId) -> Result<Arc<InstanceEntry>, KmsError> {
        self.instances
            .get(&id)
            .ok_or(KmsError::InstanceNotFound(id))
    }

    /// Resolves a key reference to its instance and key entry. A CRN whose service, region
    /// or account differ from the instance's names no key: `KEY_NOT_FOUND_ERR`.
    pub(crate) fn resolve(
        &self,
        key: &KeyRef,
    ) -> Result<(Arc<InstanceEntry>, Arc<KeyEntry>), KmsError> {
        let instance = self
            .instance(key.instance())
            .map_err(|_| KmsError::KeyNotFound)?;
        let key_id = match key {
            KeyRef::Crn(crn) => {
                let own = instance.record.crn();
                if crn.service != own.service
                    || crn.region != own.region
                    || crn.account != own.account
                {
                    return Err(KmsError::KeyNotFound);
                }
                match crn.resource {
                    ids::CrnResource::Key(id) => id,
                    ids::CrnResource::Instance => return Err(KmsError::KeyNotFound),
                }
            }
            KeyRef::Path {
                key: KeyName::Id(id),
                ..
            } => *id,
            KeyRef::Path {
                key: KeyName::Alias(alias),
                ..
            } => *read(&instance.aliases)
                .get(alias)
                .ok_or(KmsError::KeyNotFound)?,
        };
        let entry = self.keys.get(&key_id).ok_or(KmsError::KeyNotFound)?;
        if entry.snapshot().instance != instance.record.id {
            return Err(KmsError::KeyNotFound);
        }
        Ok((instance, entry))
    }

    /// Like [`Kms::resolve`], and fails with `KEY_NOT_FOUND_ERR` for a key past its
    /// automatic purge time. Returns the record and its effective state.
    pub(crate) fn resolve_live(&self, key: &KeyRef) -> Result<LiveKey, KmsError> {
        let (instance, entry) = self.resolve(key)?;
        let record = entry.snapshot();
        match record.state_at(self.now()) {
            Lifecycle::Live(state) => Ok((instance, entry, record, state)),
            Lifecycle::Purged => Err(KmsError::KeyNotFound),
        }
    }

    /// Writes a key record durably, then publishes it in the index and schedules its next
    /// deadline. The caller holds the key's mutation lock.
    pub(crate) fn commit_key(
        &self,
        entry: &KeyEntry,
        record: KeyRecord,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        self.store
            .put(Tree::Keys, record.id.as_bytes(), encode(&record))?;
        Ok(self.publish_key(entry, record))
    }

    /// After `record` is durably written: publishes it in the index and schedules its next
    /// deadline. The caller holds the key's mutation lock.
    pub(crate) fn publish_key(&self, entry: &KeyEntry, record: KeyRecord) -> Arc<KeyRecord> {
        if let Some(deadline) = record.next_deadline() {
            self.scheduler.schedule(deadline, record.id);
        }
        let record = Arc::new(record);
        *write(&entry.record) = Arc::clone(&record);
        record
    }

    pub(crate) fn new_id(&self) -> uuid::Uuid {
        self.random.uuid()
    }

    /// The server's random source (ids, API-key secrets and salts).
    pub fn randomness(&self) -> &crate::random::Randomness {
        &self.random
    }

    /// Fires every timer due at the clock's current time: Active keys past expiry are written
    /// as Deactivated, and deleted keys past 90 days are purged (material shredded). Returns
    /// how many keys changed.
    pub fn fire_due_timers(&self) -> Result<usize, KmsError> {
        let _firing = lock(&self.firing);
        self.fire_due_timers_locked()
    }

    /// [`Kms::fire_due_timers`] for a caller that holds `firing` (so that the clock's move
    /// and the firing it causes are one step no background firing can split).
    pub(crate) fn fire_due_timers_locked(&self) -> Result<usize, KmsError> {
        let now = self.now();
        let mut changed = 0;
        for subject in self.scheduler.take_due(now) {
            let fired = match subject {
                scheduler::TimerSubject::Key(key) => self.settle_key(key, now)?,
                scheduler::TimerSubject::Registrations(key) => {
                    self.settle_registrations(key, now)?
                }
                scheduler::TimerSubject::LifecycleAck(sequence) => {
                    self.expire_lifecycle_ack(sequence, now)?
                }
            };
            if fired {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The next scheduled deadline, if any.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.scheduler.next()
    }

    fn settle_key(&self, key: KeyId, now: Timestamp) -> Result<bool, KmsError> {
        let Some(entry) = self.keys.get(&key) else {
            return Ok(false);
        };
        let _guard = lock(&entry.mutation);
        let (record, policy_changed) = self.settle_policies(&entry, entry.snapshot(), now)?;
        match record.state_at(now) {
            Lifecycle::Purged => {
                let instance = self.instance(record.instance)?;
                self.shred(&instance, &record)?;
                self.audit_timer("secrets.purge", &record, state::KeyState::Destroyed);
                Ok(true)
            }
            Lifecycle::Live(state) if state != record.state => {
                let mut next = (*record).clone();
                next.state = state;
                next.update_time = now;
                let written = self.commit_key(&entry, next)?;
                if state == state::KeyState::Deactivated {
                    self.audit_timer("secrets.expire", &written, state);
                }
                Ok(true)
            }
            Lifecycle::Live(_) => {
                if let Some(deadline) = record.next_deadline().filter(|d| *d > now) {
                    self.scheduler.schedule(deadline, key);
                }
                Ok(policy_changed)
            }
        }
    }

    /// Destroys every version's material in the HSM, then removes the key's record and
    /// aliases. Material first: an interruption leaves a key without material, never
    /// material without a key. The caller holds the key's mutation lock.
    pub(crate) fn shred(
        &self,
        instance: &InstanceEntry,
        record: &KeyRecord,
    ) -> Result<(), KmsError> {
        // A destroyed keystore already lost every version's material.
        if let Some(keystore) = instance.keystore_if_intact() {
            for version in &record.versions {
                keystore.destroy(sim_hsm::ObjectHandle(version.handle))?;
            }
        }
        self.drop_registrations(record.id)?;
        self.store.delete(Tree::Keys, record.id.as_bytes())?;
        {
            let mut aliases = write(&instance.aliases);
            for alias in &record.aliases {
                aliases.remove(&alias.alias);
            }
        }
        self.keys.remove(&record.id);
        self.key_order
            .remove(&record.instance, &(record.create_time, record.id));
        Ok(())
    }
}
