//! Registrations: which cloud resources (database deployments, ...) a root key protects
//! (reference section 1.10). Owns the registration records, their in-memory index, the
//! service-only rules of create/update/delete, the forward-only key version, soft deletion
//! with `retain_for` (removed by a scheduler timer), and the delete guard of a key
//! (`Kms::check_registrations_allow_delete`).
//!
//! Every registration mutation holds the key's mutation lock, so the delete guard (which runs
//! under the same lock in `delete_key`) sees a consistent set.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{Identity, IdentityKind};
use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::kms::iam::Action as Permission;
use crate::kms::ids::{Crn, InstanceId, KeyId, KeyRef, KeyVersionId, ResourceCrn};
use crate::kms::records::{KeyKind, Lifecycle};
use crate::kms::scheduler::TimerSubject;
use crate::kms::state::KeyState;
use crate::kms::{Kms, decode, encode, lock, read, write};
use crate::store::{Change, Tree};

/// Longest registration description, in characters.
pub const MAX_DESCRIPTION: usize = 240;
/// Longest `retain_for`.
pub const MAX_RETAIN_FOR: Duration = Duration::from_secs(365 * 24 * 3600);

/// The soft deletion of a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationDeletion {
    /// When it was deleted.
    pub time: Timestamp,
    /// When it is removed for good.
    pub remove_at: Timestamp,
}

/// A registration, as stored (tree `registrations`, keyed by key id bytes + resource CRN).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrationRecord {
    /// The key.
    pub key: KeyId,
    /// The key's instance.
    pub instance: InstanceId,
    /// The registered resource.
    pub resource_crn: ResourceCrn,
    /// Free text.
    pub description: String,
    /// Refuse even a forced delete of the key.
    pub prevent_key_deletion: bool,
    /// The key version the resource uses.
    pub key_version: KeyVersionId,
    /// Creation time.
    pub create_time: Timestamp,
    /// Last change.
    pub update_time: Timestamp,
    /// Creator identity.
    pub created_by: String,
    /// Identity of the last change.
    pub updated_by: String,
    /// Set while soft-deleted.
    #[serde(default)]
    pub deletion: Option<RegistrationDeletion>,
}

impl RegistrationRecord {
    fn store_key(&self) -> Vec<u8> {
        store_key(self.key, &self.resource_crn)
    }
}

fn store_key(key: KeyId, resource: &ResourceCrn) -> Vec<u8> {
    let mut bytes = key.as_bytes().to_vec();
    bytes.extend_from_slice(resource.as_str().as_bytes());
    bytes
}

/// Every registration, by key.
#[derive(Debug, Default)]
pub(crate) struct RegistrationState {
    by_key: RwLock<HashMap<KeyId, Vec<RegistrationRecord>>>,
}

/// A validated `CreateRegistration`.
#[derive(Debug, Clone)]
pub struct NewRegistration {
    /// The root key.
    pub key: KeyRef,
    /// The resource.
    pub resource_crn: ResourceCrn,
    /// Refuse even a forced delete of the key.
    pub prevent_key_deletion: bool,
    /// Free text.
    pub description: String,
    /// The key version the resource uses (`None`: the current one).
    pub key_version: Option<KeyVersionId>,
}

/// A validated `UpdateRegistration`: `None` keeps a value.
#[derive(Debug, Clone)]
pub struct RegistrationUpdate {
    /// The key.
    pub key: KeyRef,
    /// The resource.
    pub resource_crn: ResourceCrn,
    /// New description.
    pub description: Option<String>,
    /// New prevent flag.
    pub prevent_key_deletion: Option<bool>,
    /// New key version (only forward).
    pub key_version: Option<KeyVersionId>,
}

/// What `ListRegistrations` selects.
#[derive(Debug, Clone)]
pub enum RegistrationQuery {
    /// The registrations of one key, optionally of one resource only.
    Key(KeyRef, Option<ResourceCrn>),
    /// The registrations of one resource, on every instance the caller may read.
    Resource(ResourceCrn),
}

/// A registration as a caller sees it.
#[derive(Debug, Clone)]
pub struct RegistrationView {
    /// The record.
    pub record: RegistrationRecord,
    /// The key's CRN.
    pub key_crn: Crn,
    /// When the registration's key version was created (if the key still has it).
    pub key_version_create_time: Option<Timestamp>,
}

fn check_description(description: &str) -> Result<(), KmsError> {
    if description.chars().count() > MAX_DESCRIPTION {
        Err(KmsError::field("description", FieldProblem::TooLong))
    } else {
        Ok(())
    }
}

impl Kms {
    /// Service identities only (`SERVICE_ONLY_ERR` for users, admins included), and only
    /// through an authorization on `instance`.
    fn authorize_service(
        &self,
        who: &Identity,
        instance: InstanceId,
        action: Permission,
    ) -> Result<(), KmsError> {
        if who.kind != IdentityKind::Service {
            return Err(KmsError::ServiceOnly);
        }
        self.authorize(who, Some(instance), action)
    }

    fn registration_view(&self, record: RegistrationRecord) -> Result<RegistrationView, KmsError> {
        let instance = self.instance(record.instance)?;
        let key_version_create_time = self.keys.get(&record.key).and_then(|entry| {
            entry
                .snapshot()
                .version(record.key_version)
                .map(|v| v.create_time)
        });
        Ok(RegistrationView {
            key_crn: instance.record.crn().key(record.key),
            key_version_create_time,
            record,
        })
    }

    fn find_registration(&self, key: KeyId, resource: &ResourceCrn) -> Option<RegistrationRecord> {
        read(&self.registrations.by_key)
            .get(&key)
            .and_then(|list| list.iter().find(|r| &r.resource_crn == resource).cloned())
    }

    /// Writes a registration durably, then publishes it. The caller holds the key's lock.
    fn put_registration(&self, record: RegistrationRecord) -> Result<(), KmsError> {
        self.store
            .put(Tree::Registrations, &record.store_key(), encode(&record))?;
        let mut map = write(&self.registrations.by_key);
        let list = map.entry(record.key).or_default();
        match list
            .iter_mut()
            .find(|r| r.resource_crn == record.resource_crn)
        {
            Some(slot) => *slot = record,
            None => list.push(record),
        }
        Ok(())
    }

    /// Removes a registration durably, then from the index. The caller holds the key's lock.
    fn remove_registration(&self, key: KeyId, resource: &ResourceCrn) -> Result<(), KmsError> {
        self.store
            .delete(Tree::Registrations, &store_key(key, resource))?;
        let mut map = write(&self.registrations.by_key);
        if let Some(list) = map.get_mut(&key) {
            list.retain(|r| &r.resource_crn != resource);
            if list.is_empty() {
                map.remove(&key);
            }
        }
        Ok(())
    }

    /// Registers a resource against a root key (service identities authorized on the key's
    /// instance only). A soft-deleted registration of the same resource is revived.
    pub fn create_registration(
        &self,
        who: &Identity,
        new: NewRegistration,
    ) -> Result<RegistrationView, KmsError> {
        self.authorize_service(who, new.key.instance(), Permission::ManageRegistrations)?;
        check_description(&new.description)?;
        let (_, entry, _, _) = self.resolve_live(&new.key)?;
        let _guard = lock(&entry.mutation);
        let record = entry.snapshot();
        let now = self.now();
        let state = match record.state_at(now) {
            Lifecycle::Live(state) => state,
            Lifecycle::Purged => return Err(KmsError::KeyNotFound),
        };
        if record.kind != KeyKind::Root {
            return Err(KmsError::RegistrationRootKeyRequired);
        }
        if state == KeyState::Destroyed {
            return Err(KmsError::KeyDeleted(record.id));
        }
        let key_version = match new.key_version {
            Some(id) => record.version(id).ok_or(KmsError::KeyVersionInvalid)?.id,
            None => {
                record
                    .current_version()
                    .ok_or(KmsError::KeyVersionInvalid)?
                    .id
            }
        };
        let existing = self.find_registration(record.id, &new.resource_crn);
        if existing.as_ref().is_some_and(|r| r.deletion.is_none()) {
            return Err(KmsError::RegistrationExists);
        }
        let registration = RegistrationRecord {
            key: record.id,
            instance: record.instance,
            resource_crn: new.resource_crn,
            description: new.description,
            prevent_key_deletion: new.prevent_key_deletion,
            key_version,
            create_time: existing.as_ref().map_or(now, |r| r.create_time),
            update_time: now,
            created_by: existing
                .as_ref()
                .map_or_else(|| who.id.to_string(), |r| r.created_by.clone()),
            updated_by: who.id.to_string(),
            deletion: None,
        };
        self.put_registration(registration.clone())?;
        self.registration_view(registration)
    }

    /// Lists registrations by key (callers with `Reader` on the key's instance, authorized
    /// services, admins) or by resource (those on instances the caller may read), oldest first.
    pub fn list_registrations(
        &self,
        who: &Identity,
        query: &RegistrationQuery,
    ) -> Result<Vec<RegistrationView>, KmsError> {
        let mut found: Vec<RegistrationRecord> = match query {
            RegistrationQuery::Key(key, resource) => {
                self.authorize(who, Some(key.instance()), Permission::ListRegistrations)?;
                let (_, _, record, _) = self.resolve_live(key)?;
                read(&self.registrations.by_key)
                    .get(&record.id)
                    .map(|list| {
                        list.iter()
                            .filter(|r| resource.as_ref().is_none_or(|c| &r.resource_crn == c))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default()
            }
            RegistrationQuery::Resource(resource) => read(&self.registrations.by_key)
                .values()
                .flatten()
                .filter(|r| &r.resource_crn == resource)
                .filter(|r| {
                    self.authorize(who, Some(r.instance), Permission::ListRegistrations)
                        .is_ok()
                })
                .cloned()
                .collect(),
        };
        found.sort_by(|a, b| {
            (a.create_time, a.resource_crn.as_str()).cmp(&(b.create_time, b.resource_crn.as_str()))
        });
        found
            .into_iter()
            .map(|r| self.registration_view(r))
            .collect()
    }

    /// Updates a live registration (service identities only). The key version only moves
    /// forward and must be one of the key's (`KEY_VERSION_INVALID`).
    pub fn update_registration(
        &self,
        who: &Identity,
        update: RegistrationUpdate,
    ) -> Result<RegistrationView, KmsError> {
        self.authorize_service(who, update.key.instance(), Permission::ManageRegistrations)?;
        if let Some(description) = &update.description {
            check_description(description)?;
        }
        let (_, entry, _, _) = self.resolve_live(&update.key)?;
        let _guard = lock(&entry.mutation);
        let record = entry.snapshot();
        let now = self.now();
        let mut registration = self
            .find_registration(record.id, &update.resource_crn)
            .filter(|r| r.deletion.is_none())
            .ok_or(KmsError::RegistrationNotFound)?;
        if let Some(version) = update.key_version {
            let position = |id: KeyVersionId| record.versions.iter().position(|v| v.id == id);
            let new = position(version).ok_or(KmsError::KeyVersionInvalid)?;
            let old = position(registration.key_version).unwrap_or(0);
            if new < old {
                return Err(KmsError::KeyVersionInvalid);
            }
            registration.key_version = version;
        }
        if let Some(description) = update.description {
            registration.description = description;
        }
        if let Some(prevent) = update.prevent_key_deletion {
            registration.prevent_key_deletion = prevent;
        }
        registration.update_time = now;
        registration.updated_by = who.id.to_string();
        self.put_registration(registration.clone())?;
        self.registration_view(registration)
    }

    /// Deletes a registration (service identities only): at once when `retain_for` is zero,
    /// otherwise soft-deleted until `retain_for` has passed (it still guards the key
    /// meanwhile). Returns the soft-deleted registration, or `None` when removed.
    pub fn delete_registration(
        &self,
        who: &Identity,
        key: &KeyRef,
        resource: &ResourceCrn,
        retain_for: Duration,
    ) -> Result<Option<RegistrationView>, KmsError> {
        self.authorize_service(who, key.instance(), Permission::ManageRegistrations)?;
        if retain_for > MAX_RETAIN_FOR {
            return Err(KmsError::field("retain_for", FieldProblem::OutOfRange));
        }
        let (_, entry, _, _) = self.resolve_live(key)?;
        let _guard = lock(&entry.mutation);
        let record = entry.snapshot();
        let now = self.now();
        let mut registration = self
            .find_registration(record.id, resource)
            .ok_or(KmsError::RegistrationNotFound)?;
        if retain_for.is_zero() {
            self.remove_registration(record.id, resource)?;
            return Ok(None);
        }
        let remove_at = now.plus(retain_for);
        registration.deletion = Some(RegistrationDeletion {
            time: now,
            remove_at,
        });
        registration.update_time = now;
        registration.updated_by = who.id.to_string();
        self.put_registration(registration.clone())?;
        self.scheduler
            .schedule(remove_at, TimerSubject::Registrations(record.id));
        self.registration_view(registration).map(Some)
    }

    /// The delete guard of a key: any registration (live or soft-deleted) refuses a plain
    /// delete (`PROTECTED_RESOURCE_ERR`); `force` overrides that unless a registration
    /// prevents key deletion (`PREV_KEY_DEL_ERR`). The caller holds the key's lock.
    pub(crate) fn check_registrations_allow_delete(
        &self,
        key: KeyId,
        force: bool,
    ) -> Result<(), KmsError> {
        let map = read(&self.registrations.by_key);
        let Some(list) = map.get(&key).filter(|list| !list.is_empty()) else {
            return Ok(());
        };
        if !force {
            Err(KmsError::ProtectedResource)
        } else if list.iter().any(|r| r.prevent_key_deletion) {
            Err(KmsError::PreventKeyDeletion)
        } else {
            Ok(())
        }
    }

    /// Every registration of a key (live and soft-deleted).
    pub(crate) fn registrations_of(&self, key: KeyId) -> Vec<RegistrationRecord> {
        read(&self.registrations.by_key)
            .get(&key)
            .cloned()
            .unwrap_or_default()
    }

    /// Removes every registration of a key (purge). The caller holds the key's lock.
    pub(crate) fn drop_registrations(&self, key: KeyId) -> Result<(), KmsError> {
        let list = self.registrations_of(key);
        if list.is_empty() {
            return Ok(());
        }
        self.store.apply(
            list.iter()
                .map(|r| Change::Delete {
                    tree: Tree::Registrations,
                    key: r.store_key(),
                })
                .collect(),
        )?;
        write(&self.registrations.by_key).remove(&key);
        Ok(())
    }

    /// Timer: removes the key's soft-deleted registrations whose time has come. Returns
    /// whether any was removed.
    pub(crate) fn settle_registrations(
        &self,
        key: KeyId,
        now: Timestamp,
    ) -> Result<bool, KmsError> {
        let entry = self.keys.get(&key);
        let _guard = entry.as_ref().map(|e| lock(&e.mutation));
        let due: Vec<ResourceCrn> = self
            .registrations_of(key)
            .into_iter()
            .filter(|r| r.deletion.as_ref().is_some_and(|d| d.remove_at <= now))
            .map(|r| r.resource_crn)
            .collect();
        for resource in &due {
            self.remove_registration(key, resource)?;
            // Its retention ended: recorded as the registration's deletion.
            if let Some(record) = entry.as_ref().map(|e| e.snapshot()) {
                let state = match record.state_at(now) {
                    Lifecycle::Live(state) => state,
                    Lifecycle::Purged => KeyState::Destroyed,
                };
                self.audit_timer("registrations.delete", &record, state);
            }
        }
        Ok(!due.is_empty())
    }

    /// Loads every registration from the store and schedules pending removals.
    pub(crate) fn load_registrations(&self) -> Result<(), KmsError> {
        let mut map: HashMap<KeyId, Vec<RegistrationRecord>> = HashMap::new();
        for (_, bytes) in self.store.scan_prefix(Tree::Registrations, b"")? {
            let record: RegistrationRecord = decode(Tree::Registrations, &bytes)?;
            if let Some(deletion) = &record.deletion {
                self.scheduler
                    .schedule(deletion.remove_at, TimerSubject::Registrations(record.key));
            }
            map.entry(record.key).or_default().push(record);
        }
        *write(&self.registrations.by_key) = map;
        Ok(())
    }

    /// Forgets every registration in memory (reset; the caller wipes the tree).
    pub(crate) fn clear_registrations(&self) {
        write(&self.registrations.by_key).clear();
    }
}
