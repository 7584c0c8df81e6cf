//! Keys and their lifecycle: create (generated, imported or securely imported material),
//! get, list, rotate and versions, disable and enable, delete, restore and purge, and aliases.
//! Every state check goes through the matrix in `state`; every time rule through `records`.

use std::sync::Arc;

use sim_hsm::ObjectHandle;
use zeroize::Zeroizing;

use crate::auth::Identity;
use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::kms::iam::Action as Permission;
use crate::kms::ids::{Alias, Crn, InstanceRef, KeyId, KeyRef, KeyVersionId};
use crate::kms::keystore::{MaterialUse, SecureImportInput};
use crate::kms::lifecycle::LifecycleKind;
use crate::kms::records::{
    AliasRecord, Deletion, InstanceRecord, KeyKind, KeyRecord, Lifecycle, ROTATION_COOL_DOWN,
    STATE_CHANGE_GUARD, VersionRecord,
};
use crate::kms::state::{Action, KeyState};
use crate::kms::{InstanceEntry, KeyEntry, Kms, lock, read, write};

/// At most this many aliases per key.
pub const MAX_ALIASES: usize = 5;

/// Where a new key's (or version's) material comes from.
#[derive(Debug)]
pub enum Material {
    /// Generated inside the HSM, of this many bytes.
    Generate(usize),
    /// Supplied in plaintext (16, 24 or 32 bytes).
    Plain(Zeroizing<Vec<u8>>),
    /// Encrypted for the instance's import token.
    Secure(SecureImportInput),
}

/// A validated `CreateKey` request.
#[derive(Debug)]
pub struct NewKey {
    /// The instance.
    pub instance: InstanceRef,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Root or standard.
    pub kind: KeyKind,
    /// Expiration.
    pub expiration_time: Option<Timestamp>,
    /// Aliases to add.
    pub aliases: Vec<Alias>,
    /// The material.
    pub material: Material,
}

/// A key as a caller sees it at one instant.
#[derive(Debug)]
pub struct KeyView {
    /// The record.
    pub record: Arc<KeyRecord>,
    /// The key's CRN.
    pub crn: Crn,
    /// Effective state.
    pub state: KeyState,
    /// When the view was taken.
    pub now: Timestamp,
    /// A standard key's payload, when the call returns it.
    pub payload: Option<Zeroizing<Vec<u8>>>,
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Whether more items follow.
    pub more: bool,
    /// Total matching items.
    pub total: usize,
}

impl<T> Page<T> {
    /// From `page_size + 1` fetched items: the extra one only says that more follow.
    pub fn from_overfetch(mut items: Vec<T>, page_size: usize, total: usize) -> Self {
        let more = items.len() > page_size;
        items.truncate(page_size);
        Self { items, more, total }
    }
}

/// Filters and paging of `ListKeys`.
#[derive(Debug, Clone)]
pub struct KeyListQuery {
    /// The instance.
    pub instance: InstanceRef,
    /// Page size.
    pub page_size: usize,
    /// Cursor: creation time and id of the last item of the previous page.
    pub after: Option<(i64, KeyId)>,
    /// States to include (empty: Active, Suspended, Deactivated).
    pub states: Vec<KeyState>,
    /// Only standard (true) or root (false) keys.
    pub extractable: Option<bool>,
    /// Search text.
    pub search: Option<KeySearch>,
}

/// `ListKeys` search.
#[derive(Debug, Clone)]
pub enum KeySearch {
    /// Case-insensitive substring of the name, or an exact alias.
    Any(String),
    /// Case-insensitive substring of the name.
    Name(String),
    /// Exact alias.
    Alias(String),
}

impl KeySearch {
    fn matches(&self, record: &KeyRecord) -> bool {
        let alias_is = |text: &str| record.aliases.iter().any(|a| a.alias.as_str() == text);
        let name_has = |text: &str| record.name.to_lowercase().contains(&text.to_lowercase());
        match self {
            KeySearch::Any(text) => name_has(text) || alias_is(text),
            KeySearch::Name(text) => name_has(text),
            KeySearch::Alias(text) => alias_is(text),
        }
    }
}

fn version_label(key: KeyId, version: KeyVersionId) -> String {
    format!("kmsim:key:{key}:{version}")
}

impl Kms {
    fn view(
        &self,
        instance: &InstanceRecord,
        record: Arc<KeyRecord>,
        state: KeyState,
        now: Timestamp,
    ) -> KeyView {
        KeyView {
            crn: instance.crn().key(record.id),
            record,
            state,
            now,
            payload: None,
        }
    }

    fn with_payload(
        &self,
        instance: &InstanceEntry,
        mut view: KeyView,
    ) -> Result<KeyView, KmsError> {
        if view.record.kind == KeyKind::Standard && view.state != KeyState::Destroyed {
            if let Some(version) = view.record.current_version() {
                view.payload = Some(instance.keystore()?.payload(ObjectHandle(version.handle))?);
            }
        }
        Ok(view)
    }

    /// Makes material for `key` in the instance's keystore.
    fn make_material(
        &self,
        instance: &InstanceEntry,
        usage: MaterialUse,
        material: Material,
        label: &str,
    ) -> Result<(ObjectHandle, usize, bool), KmsError> {
        match material {
            Material::Generate(size) => Ok((
                instance.keystore()?.generate(usage, size, label)?,
                size,
                false,
            )),
            Material::Plain(bytes) => {
                let size = bytes.len();
                Ok((
                    instance.keystore()?.import(usage, bytes, label)?,
                    size,
                    true,
                ))
            }
            Material::Secure(input) => {
                let token = self.usable_import_token(instance, input.token)?;
                let handle = instance.keystore()?.secure_import(
                    ObjectHandle(token.private_handle),
                    &token.nonce,
                    &input,
                    usage,
                    label,
                )?;
                let size = instance.keystore()?.material_len(handle)?;
                Ok((handle, size, true))
            }
        }
    }

    /// Creates a key.
    pub fn create_key(&self, who: &Identity, new: NewKey) -> Result<KeyView, KmsError> {
        self.authorize(who, Some(new.instance.id()), Permission::CreateKey)?;
        let instance = self.instance(new.instance.id())?;
        if let InstanceRef::Crn(crn) = &new.instance {
            if *crn != instance.record.crn() {
                return Err(KmsError::InstanceNotFound(crn.instance));
            }
        }
        let now = self.now();
        if new.expiration_time.is_some_and(|t| t <= now) {
            return Err(KmsError::field(
                "expiration_time",
                FieldProblem::NotInFuture,
            ));
        }
        if new.kind == KeyKind::Standard && matches!(new.material, Material::Secure(_)) {
            return Err(KmsError::RootKeyRequired);
        }
        if new.aliases.len() > MAX_ALIASES {
            return Err(KmsError::AliasQuotaExceeded);
        }
        let _instance_guard = lock(&instance.mutation);
        {
            let aliases = read(&instance.aliases);
            if new.aliases.iter().any(|a| aliases.contains_key(a)) {
                return Err(KmsError::AliasNotUnique);
            }
            let mut seen = std::collections::HashSet::new();
            if !new.aliases.iter().all(|a| seen.insert(a)) {
                return Err(KmsError::AliasNotUnique);
            }
        }
        self.check_create_import_access(&instance, new.kind, &new.material)?;
        let id = KeyId::from_uuid(self.new_id());
        let version = KeyVersionId::from_uuid(self.new_id());
        let usage = match new.kind {
            KeyKind::Root => MaterialUse::Root,
            KeyKind::Standard => MaterialUse::Standard,
        };
        let (handle, size_bytes, imported) =
            self.make_material(&instance, usage, new.material, &version_label(id, version))?;
        let record = KeyRecord {
            id,
            instance: instance.record.id,
            name: new.name,
            description: new.description,
            kind: new.kind,
            imported,
            size_bytes,
            state: KeyState::Active,
            versions: vec![VersionRecord {
                id: version,
                create_time: now,
                handle: handle.0,
            }],
            aliases: new
                .aliases
                .iter()
                .map(|alias| AliasRecord {
                    alias: alias.clone(),
                    create_time: now,
                })
                .collect(),
            create_time: now,
            update_time: now,
            last_rotate_time: None,
            expiration_time: new.expiration_time,
            disable_time: None,
            deletion: None,
            created_by: who.id.to_string(),
            policies: self.initial_key_policies(&instance, new.kind, imported, who, now),
        };
        let entry = Arc::new(KeyEntry::new(record.clone()));
        let committed = match self.commit_key(&entry, record) {
            Ok(record) => record,
            Err(error) => {
                // Nothing refers to the material yet: do not leave it behind.
                let _ = instance
                    .keystore()
                    .and_then(|keystore| keystore.destroy(handle));
                return Err(error);
            }
        };
        {
            let mut aliases = write(&instance.aliases);
            for alias in &new.aliases {
                aliases.insert(alias.clone(), id);
            }
        }
        self.key_order.insert(
            committed.instance,
            (committed.create_time, id),
            Arc::clone(&entry),
        );
        self.keys.insert(id, entry);
        let view = self.view(&instance.record, committed, KeyState::Active, now);
        self.with_payload(&instance, view)
    }

    /// Returns a key, with a standard key's payload when the caller may read it
    /// (`ReaderPlus`); a `Reader` gets the metadata only.
    pub fn get_key(&self, who: &Identity, key: &KeyRef) -> Result<KeyView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::GetKey)?;
        let payload_allowed = self
            .authorize(who, Some(key.instance()), Permission::ReadPayload)
            .is_ok();
        let (instance, _, record, state) = self.resolve_live(key)?;
        let view = self.view(&instance.record, record, state, self.now());
        if payload_allowed {
            self.with_payload(&instance, view)
        } else {
            Ok(view)
        }
    }

    /// Lists keys (without payloads).
    pub fn list_keys(
        &self,
        who: &Identity,
        query: &KeyListQuery,
    ) -> Result<Page<KeyView>, KmsError> {
        self.authorize(who, Some(query.instance.id()), Permission::ListKeys)?;
        let instance = self.instance(query.instance.id())?;
        let now = self.now();
        let default_states = [KeyState::Active, KeyState::Suspended, KeyState::Deactivated];
        let states: &[KeyState] = if query.states.is_empty() {
            &default_states
        } else {
            &query.states
        };
        // One pass over the instance's keys in listing order, from the start (the total
        // counts every match) without sorting or copying the instance; views are built for
        // the page only.
        let after = query
            .after
            .map(|(time, id)| (Timestamp::from_millis(time), id));
        let mut total = 0;
        let mut page: Vec<(Arc<KeyRecord>, KeyState)> = Vec::new();
        self.key_order
            .scan(&instance.record.id, None, &mut |order, entry| {
                let record = entry.snapshot();
                let Lifecycle::Live(state) = record.state_at(now) else {
                    return true;
                };
                let matches = states.contains(&state)
                    && query
                        .extractable
                        .is_none_or(|e| e == (record.kind == KeyKind::Standard))
                    && query.search.as_ref().is_none_or(|s| s.matches(&record));
                if matches {
                    total += 1;
                    if page.len() <= query.page_size && after.is_none_or(|a| *order > a) {
                        page.push((record, state));
                    }
                }
                true
            });
        let items: Vec<KeyView> = page
            .into_iter()
            .map(|(record, state)| self.view(&instance.record, record, state, now))
            .collect();
        Ok(Page::from_overfetch(items, query.page_size, total))
    }

    /// Applies a mutation to one key under its mutation lock: `change` sees the current record
    /// and its effective state and returns the new record, which is written durably.
    pub(crate) fn mutate<F>(&self, key: &KeyRef, change: F) -> Result<KeyView, KmsError>
    where
        F: FnOnce(&InstanceEntry, &KeyRecord, KeyState, Timestamp) -> Result<KeyRecord, KmsError>,
    {
        self.mutate_notifying(key, None, change)
    }

    /// [`Kms::mutate`] for a lifecycle action: with `notify`, the new record is written
    /// together with one lifecycle event per registration of the key (one store batch).
    fn mutate_notifying<F>(
        &self,
        key: &KeyRef,
        notify: Option<LifecycleKind>,
        change: F,
    ) -> Result<KeyView, KmsError>
    where
        F: FnOnce(&InstanceEntry, &KeyRecord, KeyState, Timestamp) -> Result<KeyRecord, KmsError>,
    {
        let (instance, entry) = self.resolve(key)?;
        let _guard = lock(&entry.mutation);
        let record = entry.snapshot();
        let now = self.now();
        let state = match record.state_at(now) {
            Lifecycle::Live(state) => state,
            Lifecycle::Purged => return Err(KmsError::KeyNotFound),
        };
        let next = change(&instance, &record, state, now)?;
        let committed = match notify {
            Some(kind) => self.commit_key_notifying(&entry, next, kind)?,
            None => self.commit_key(&entry, next)?,
        };
        let state = match committed.state_at(now) {
            Lifecycle::Live(state) => state,
            Lifecycle::Purged => KeyState::Destroyed,
        };
        Ok(self.view(&instance.record, committed, state, now))
    }

    /// Rotates a root key: a new version becomes current. Imported keys need new material of
    /// the same length; generated keys refuse it.
    pub fn rotate_key(
        &self,
        who: &Identity,
        key: &KeyRef,
        material: Option<Material>,
    ) -> Result<KeyView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::RotateKey)?;
        let (instance, entry) = self.resolve(key)?;
        let _guard = lock(&entry.mutation);
        let record = entry.snapshot();
        let now = self.now();
        let state = match record.state_at(now) {
            Lifecycle::Live(state) => state,
            Lifecycle::Purged => return Err(KmsError::KeyNotFound),
        };
        let committed = self.rotate_locked(&instance, &entry, &record, state, now, material)?;
        Ok(self.view(&instance.record, committed, state, now))
    }

    /// The one rotation, manual (`RotateKey`) or automatic (rotation policy): checks the
    /// state, the root kind and the hourly limit, makes the new version's material (generated,
    /// or `material` for an imported key), and writes the record durably. The caller holds
    /// the key's mutation lock and has read `record` and its effective `state` under it.
    pub(crate) fn rotate_locked(
        &self,
        instance: &InstanceEntry,
        entry: &KeyEntry,
        record: &KeyRecord,
        state: KeyState,
        now: Timestamp,
        material: Option<Material>,
    ) -> Result<Arc<KeyRecord>, KmsError> {
        let next = {
            Action::Rotate.check(record.id, state)?;
            if record.kind != KeyKind::Root {
                return Err(KmsError::RootKeyRequired);
            }
            if let Some(last) = record.last_rotate_time {
                let allowed = last.plus(ROTATION_COOL_DOWN);
                if now < allowed {
                    return Err(KmsError::RotationTooSoon {
                        retry_after: now.until(allowed),
                    });
                }
            }
            let material = match (record.imported, material) {
                (true, None) => return Err(KmsError::PayloadRequired),
                (false, Some(_)) => {
                    return Err(KmsError::field("payload", FieldProblem::NotAllowed));
                }
                (true, Some(Material::Plain(bytes))) if bytes.len() != record.size_bytes => {
                    return Err(KmsError::field(
                        "payload",
                        FieldProblem::MaterialLengthMismatch,
                    ));
                }
                (true, Some(material)) => material,
                (false, None) => Material::Generate(record.size_bytes),
            };
            let version = KeyVersionId::from_uuid(self.new_id());
            let (handle, size, _) = self.make_material(
                instance,
                MaterialUse::Root,
                material,
                &version_label(record.id, version),
            )?;
            if size != record.size_bytes {
                let _ = instance
                    .keystore()
                    .and_then(|keystore| keystore.destroy(handle));
                return Err(KmsError::field(
                    "secure_import",
                    FieldProblem::MaterialLengthMismatch,
                ));
            }
            let mut next = record.clone();
            next.versions.push(VersionRecord {
                id: version,
                create_time: now,
                handle: handle.0,
            });
            next.last_rotate_time = Some(now);
            next.update_time = now;
            next
        };
        // Manual and automatic rotations alike notify the registered resources, in the same
        // store batch as the new version.
        self.commit_key_notifying(entry, next, LifecycleKind::Rotate)
    }

    /// A key's versions, newest first.
    pub fn list_key_versions(
        &self,
        who: &Identity,
        key: &KeyRef,
    ) -> Result<Vec<VersionRecord>, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::ListKeyVersions)?;
        let (_, _, record, state) = self.resolve_live(key)?;
        Action::ListVersions.check(record.id, state)?;
        Ok(record.versions.iter().rev().cloned().collect())
    }

    /// Disables (suspends) an active key.
    pub fn disable_key(&self, who: &Identity, key: &KeyRef) -> Result<KeyView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::SetKeyState)?;
        self.mutate_notifying(
            key,
            Some(LifecycleKind::Disable),
            |_, record, state, now| {
                Action::Disable.check(record.id, state)?;
                let mut next = record.clone();
                next.state = KeyState::Suspended;
                next.disable_time = Some(now);
                next.update_time = now;
                Ok(next)
            },
        )
    }

    /// Enables a suspended key, 30 seconds or more after it was disabled.
    pub fn enable_key(&self, who: &Identity, key: &KeyRef) -> Result<KeyView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::SetKeyState)?;
        self.mutate_notifying(key, Some(LifecycleKind::Enable), |_, record, state, now| {
            Action::Enable.check(record.id, state)?;
            if let Some(disabled) = record.disable_time {
                let allowed = disabled.plus(STATE_CHANGE_GUARD);
                if now < allowed {
                    return Err(KmsError::TooEarly {
                        retry_after: now.until(allowed),
                    });
                }
            }
            if record.is_expired(now) {
                return Err(KmsError::KeyExpired);
            }
            let mut next = record.clone();
            next.state = KeyState::Active;
            next.update_time = now;
            Ok(next)
        })
    }

    /// Deletes (soft) a key. Registrations guard deletion
    /// (`Kms::check_registrations_allow_delete`): `force` overrides them unless one
    /// prevents key deletion; with no registrations `force` changes nothing.
    pub fn delete_key(
        &self,
        who: &Identity,
        key: &KeyRef,
        force: bool,
    ) -> Result<KeyView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::DeleteKey)?;
        self.mutate_notifying(key, Some(LifecycleKind::Delete), |_, record, state, now| {
            Action::Delete.check(record.id, state)?;
            self.check_registrations_allow_delete(record.id, force)?;
            let mut next = record.clone();
            crate::kms::policies::take_deletion_authorization(&mut next, who, now)?;
            next.state = KeyState::Destroyed;
            next.deletion = Some(Deletion {
                time: now,
                by: who.id.to_string(),
            });
            next.update_time = now;
            Ok(next)
        })
    }

    /// Restores a deleted key within 30 days (and 30 seconds or more after the delete). It
    /// comes back Active, or Deactivated if it has expired meanwhile.
    pub fn restore_key(&self, who: &Identity, key: &KeyRef) -> Result<KeyView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::RestoreKey)?;
        self.mutate_notifying(
            key,
            Some(LifecycleKind::Restore),
            |_, record, state, now| {
                Action::Restore.check(record.id, state)?;
                let deletion = record
                    .deletion
                    .as_ref()
                    .ok_or(KmsError::ActionInvalidState { state })?;
                let allowed = deletion.time.plus(STATE_CHANGE_GUARD);
                if now < allowed {
                    return Err(KmsError::TooEarly {
                        retry_after: now.until(allowed),
                    });
                }
                if now >= deletion.restore_expire_time() {
                    return Err(KmsError::RestoreExpired);
                }
                let mut next = record.clone();
                next.state = KeyState::Active;
                next.deletion = None;
                next.disable_time = None;
                next.update_time = now;
                Ok(next)
            },
        )
    }

    /// Purges a deleted key 4 hours or more after deletion: every version's material is
    /// destroyed in the HSM and the key ceases to exist.
    pub fn purge_key(&self, who: &Identity, key: &KeyRef) -> Result<KeyView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::PurgeKey)?;
        let (instance, entry) = self.resolve(key)?;
        let _guard = lock(&entry.mutation);
        let record = entry.snapshot();
        let now = self.now();
        let state = match record.state_at(now) {
            Lifecycle::Live(state) => state,
            Lifecycle::Purged => return Err(KmsError::KeyNotFound),
        };
        if state != KeyState::Destroyed {
            return Err(KmsError::ActionInvalidState { state });
        }
        let deletion = record
            .deletion
            .as_ref()
            .ok_or(KmsError::ActionInvalidState { state })?;
        let allowed = deletion.purge_allowed_time();
        if now < allowed {
            return Err(KmsError::TooEarly {
                retry_after: now.until(allowed),
            });
        }
        self.shred(&instance, &record)?;
        Ok(self.view(&instance.record, record, KeyState::Destroyed, now))
    }

    /// Adds an alias.
    pub fn create_key_alias(
        &self,
        who: &Identity,
        key: &KeyRef,
        alias: Alias,
    ) -> Result<(KeyId, AliasRecord), KmsError> {
        self.authorize(who, Some(key.instance()), Permission::ManageAliases)?;
        let (instance, entry) = self.resolve(key)?;
        let _instance_guard = lock(&instance.mutation);
        let mut created = None;
        self.mutate(key, |_, record, state, now| {
            Action::ManageAliases.check(record.id, state)?;
            if read(&instance.aliases).contains_key(&alias) {
                return Err(KmsError::AliasNotUnique);
            }
            if record.aliases.len() >= MAX_ALIASES {
                return Err(KmsError::AliasQuotaExceeded);
            }
            let mut next = record.clone();
            let alias_record = AliasRecord {
                alias: alias.clone(),
                create_time: now,
            };
            next.aliases.push(alias_record.clone());
            next.update_time = now;
            created = Some(alias_record);
            Ok(next)
        })?;
        let key_id = entry.snapshot().id;
        write(&instance.aliases).insert(alias, key_id);
        let alias_record = created.ok_or(KmsError::AliasNotFound)?;
        Ok((key_id, alias_record))
    }

    /// Removes an alias.
    pub fn delete_key_alias(
        &self,
        who: &Identity,
        key: &KeyRef,
        alias: &Alias,
    ) -> Result<(), KmsError> {
        self.authorize(who, Some(key.instance()), Permission::ManageAliases)?;
        let (instance, _) = self.resolve(key)?;
        let _instance_guard = lock(&instance.mutation);
        self.mutate(key, |_, record, state, now| {
            Action::ManageAliases.check(record.id, state)?;
            if !record.aliases.iter().any(|a| &a.alias == alias) {
                return Err(KmsError::AliasNotFound);
            }
            let mut next = record.clone();
            next.aliases.retain(|a| &a.alias != alias);
            next.update_time = now;
            Ok(next)
        })?;
        write(&instance.aliases).remove(alias);
        Ok(())
    }
}
