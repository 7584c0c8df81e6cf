//! Key and instance policies (reference sections 1.5, 1.7 and 1.9): the policy records kept
//! on keys and instances, rotation policies and the automatic rotation they drive,
//! dual-authorization delete (set for deletion, the 7-day authorization, the check
//! `DeleteKey` makes), and the instance policies (defaults for keys created later, key
//! create/import access).
//!
//! Decisions: a rotation policy is refused on imported keys (Key Protect offers policies only
//! for keys whose material it generated) and on standard keys; a clock that jumps several
//! intervals at once rotates a key once, and the next rotation is due one interval after that
//! rotation; only Active keys rotate automatically; once dual-authorization delete is enabled
//! on a key it cannot be disabled; setting a key for deletion again replaces the pending
//! authorization.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::Identity;
use crate::clock::Timestamp;
use crate::error::KmsError;
use crate::kms::iam::Action as Permission;
use crate::kms::ids::{Crn, CrnResource, InstanceRef, KeyRef};
use crate::kms::keys::Material;
use crate::kms::records::{InstanceRecord, KeyKind, KeyRecord, Lifecycle};
use crate::kms::state::{Action, KeyState};
use crate::kms::{InstanceEntry, KeyEntry, Kms, encode, lock, read, write};
use crate::store::Tree;

/// One rotation-interval month: Key Protect counts intervals in 30-day blocks.
pub const ROTATION_MONTH: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest rotation interval, in months.
pub const MAX_ROTATION_MONTHS: u8 = 12;
/// How long an authorization to delete (`SetKeyForDeletion`) stays valid.
pub const DELETION_AUTHORIZATION_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// When an automatic rotation fails (e.g. the HSM is unavailable), it is retried this much
/// later.
pub const AUTO_ROTATION_RETRY: Duration = Duration::from_secs(3600);

/// A rotation interval of 1 to 12 months of 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct RotationInterval(u8);

impl RotationInterval {
    /// The interval of `months`, if 1..=12.
    pub fn from_months(months: i64) -> Option<Self> {
        u8::try_from(months)
            .ok()
            .filter(|m| (1..=MAX_ROTATION_MONTHS).contains(m))
            .map(Self)
    }

    /// The number of months.
    pub fn months(self) -> u8 {
        self.0
    }

    /// The interval as a duration (months x 30 days).
    pub fn duration(self) -> Duration {
        ROTATION_MONTH * u32::from(self.0)
    }
}

impl TryFrom<u8> for RotationInterval {
    type Error = &'static str;
    fn try_from(months: u8) -> Result<Self, Self::Error> {
        Self::from_months(i64::from(months)).ok_or("a rotation interval is 1 to 12 months")
    }
}

impl From<RotationInterval> for u8 {
    fn from(interval: RotationInterval) -> Self {
        interval.0
    }
}

/// Who set a policy first and last, and when; the policy's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyMeta {
    /// The policy id, kept across updates.
    pub id: uuid::Uuid,
    /// First setter.
    pub created_by: String,
    /// First set.
    pub create_time: Timestamp,
    /// Last setter.
    pub updated_by: String,
    /// Last set.
    pub update_time: Timestamp,
}

impl PolicyMeta {
    fn new(id: uuid::Uuid, by: &str, now: Timestamp) -> Self {
        Self {
            id,
            created_by: by.to_owned(),
            create_time: now,
            updated_by: by.to_owned(),
            update_time: now,
        }
    }

    /// This metadata after another set, or new metadata for a first set.
    fn next(previous: Option<&Self>, id: uuid::Uuid, by: &str, now: Timestamp) -> Self {
        match previous {
            Some(meta) => Self {
                updated_by: by.to_owned(),
                update_time: now,
                ..meta.clone()
            },
            None => Self::new(id, by, now),
        }
    }

    /// The policy's CRN: the CRN of the instance (`within` is the instance's or one of its
    /// keys') with resource `policy:<id>`.
    pub fn crn(&self, within: &Crn) -> String {
        let instance = Crn {
            resource: CrnResource::Instance,
            ..within.clone()
        }
        .to_string();
        let base = instance.strip_suffix(':').unwrap_or(&instance);
        format!("{base}policy:{}", self.id)
    }
}

/// A rotation policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// Whether the key rotates automatically.
    pub enabled: bool,
    /// The interval.
    pub interval: RotationInterval,
    /// Metadata.
    pub meta: PolicyMeta,
}

/// A dual-authorization delete policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DualAuthPolicy {
    /// Whether deleting needs two Managers.
    pub enabled: bool,
    /// Metadata.
    pub meta: PolicyMeta,
}

/// The first authorization of a dual-authorization delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletionAuthorization {
    /// The identity that set the key for deletion.
    pub by: String,
    /// When.
    pub time: Timestamp,
}

impl DeletionAuthorization {
    /// When the authorization lapses.
    pub fn expire_time(&self) -> Timestamp {
        self.time.plus(DELETION_AUTHORIZATION_WINDOW)
    }
}

/// A key's policies and its pending authorization to delete.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyPolicies {
    /// Rotation policy.
    #[serde(default)]
    pub rotation: Option<RotationPolicy>,
    /// Dual-authorization delete policy.
    #[serde(default)]
    pub dual_auth_delete: Option<DualAuthPolicy>,
    /// Set by `SetKeyForDeletion`; may have lapsed (see
    /// [`KeyRecord::pending_deletion_authorization`]).
    #[serde(default)]
    pub deletion_authorization: Option<DeletionAuthorization>,
}

/// Which keys may be created or imported in an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateImportAccess {
    /// The rules.
    pub rules: CreateImportRules,
    /// Metadata.
    pub meta: PolicyMeta,
}

/// The flags of a key create/import access policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateImportRules {
    /// Whether the policy is enforced.
    pub enabled: bool,
    /// Generated root keys allowed.
    pub create_root_key: bool,
    /// Generated standard keys allowed.
    pub create_standard_key: bool,
    /// Imported root keys allowed.
    pub import_root_key: bool,
    /// Imported standard keys allowed.
    pub import_standard_key: bool,
    /// Imports must use the import token.
    pub enforce_token: bool,
}

/// The rule of a key create/import access policy a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateImportRule {
    /// `create_root_key` is false.
    CreateRootKey,
    /// `create_standard_key` is false.
    CreateStandardKey,
    /// `import_root_key` is false.
    ImportRootKey,
    /// `import_standard_key` is false.
    ImportStandardKey,
    /// `enforce_token` is true and the material came in plaintext.
    EnforceToken,
}

impl CreateImportRule {
    /// The policy attribute's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateRootKey => "create_root_key",
            Self::CreateStandardKey => "create_standard_key",
            Self::ImportRootKey => "import_root_key",
            Self::ImportStandardKey => "import_standard_key",
            Self::EnforceToken => "enforce_token",
        }
    }
}

impl CreateImportRules {
    /// Whether a key of `kind` with `material` may be created.
    pub fn check(&self, kind: KeyKind, material: &Material) -> Result<(), KmsError> {
        if !self.enabled {
            return Ok(());
        }
        let denied = |rule| Err(KmsError::KeyCreateImportAccess { denied: rule });
        match (kind, material) {
            (KeyKind::Root, Material::Generate(_)) if !self.create_root_key => {
                denied(CreateImportRule::CreateRootKey)
            }
            (KeyKind::Standard, Material::Generate(_)) if !self.create_standard_key => {
                denied(CreateImportRule::CreateStandardKey)
            }
            (KeyKind::Root, Material::Plain(_) | Material::Secure(_)) if !self.import_root_key => {
                denied(CreateImportRule::ImportRootKey)
            }
            (KeyKind::Standard, Material::Plain(_) | Material::Secure(_))
                if !self.import_standard_key =>
            {
                denied(CreateImportRule::ImportStandardKey)
            }
            (_, Material::Plain(_)) if self.enforce_token => denied(CreateImportRule::EnforceToken),
            _ => Ok(()),
        }
    }
}

/// An instance's policies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstancePolicies {
    /// Dual-authorization delete default for keys created later.
    #[serde(default)]
    pub dual_auth_delete: Option<DualAuthPolicy>,
    /// Rotation default for generated root keys created later.
    #[serde(default)]
    pub rotation: Option<RotationPolicy>,
    /// Key create/import access.
    #[serde(default)]
    pub key_create_import_access: Option<CreateImportAccess>,
}

/// A validated rotation policy from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationSetting {
    /// Enabled.
    pub enabled: bool,
    /// Interval.
    pub interval: RotationInterval,
}

/// A validated `SetKeyPolicies` request: absent policies stay as they are.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicyChange {
    /// The rotation policy to set.
    pub rotation: Option<RotationSetting>,
    /// The dual-authorization delete policy to set (enabled or not).
    pub dual_auth_delete: Option<bool>,
}

/// A validated `SetInstancePolicies` request: absent policies stay as they are.
#[derive(Debug, Clone, Copy)]
pub struct InstancePolicyChange {
    /// Dual-authorization delete default.
    pub dual_auth_delete: Option<bool>,
    /// Rotation default.
    pub rotation: Option<RotationSetting>,
    /// Key create/import access.
    pub key_create_import_access: Option<CreateImportRules>,
}

/// A key's policies as a caller sees them.
#[derive(Debug, Clone)]
pub struct KeyPoliciesView {
    /// The key's record.
    pub record: Arc<KeyRecord>,
    /// The instance's CRN (policy CRNs derive from it).
    pub instance_crn: Crn,
    /// When the view was taken.
    pub now: Timestamp,
}

/// An instance's policies as a caller sees them.
#[derive(Debug, Clone)]
pub struct InstancePoliciesView {
    /// The policies.
    pub policies: InstancePolicies,
    /// The instance's CRN.
    pub instance_crn: Crn,
}

impl KeyRecord {
    /// Whether the key has a dual-authorization delete policy.
    pub fn dual_auth_enabled(&self) -> bool {
        self.policies
            .dual_auth_delete
            .as_ref()
            .is_some_and(|p| p.enabled)
    }

    /// The authorization to delete given by `SetKeyForDeletion`, unless it has lapsed.
    pub fn pending_deletion_authorization(&self, now: Timestamp) -> Option<&DeletionAuthorization> {
        self.policies
            .deletion_authorization
            .as_ref()
            .filter(|a| now < a.expire_time())
    }

    /// When the next automatic rotation is due, if the rotation policy is enabled: one
    /// interval after the last rotation, or after creation.
    pub fn next_rotation_time(&self) -> Option<Timestamp> {
        let policy = self.policies.rotation.as_ref().filter(|p| p.enabled)?;
        let base = self.last_rotate_time.unwrap_or(self.create_time);
        Some(base.plus(policy.interval.duration()))
    }

    /// The next time a policy acts on the key by itself: an automatic rotation (Active keys
    /// only) or the lapse of an authorization to delete.
    pub fn policy_deadline(&self) -> Option<Timestamp> {
        let rotation = self
            .next_rotation_time()
            .filter(|_| self.state == KeyState::Active);
        let lapse = self
            .policies
            .deletion_authorization
            .as_ref()
            .map(DeletionAuthorization::expire_time);
        [rotation, lapse].into_iter().flatten().min()
    }
}

/// The dual-authorization check of `DeleteKey`, applied to the record about to be written
/// (`next`): a key without the policy passes; a key with it passes only when another identity
/// set it for deletion less than 7 days ago, and the authorization is then used up.
pub(crate) fn take_deletion_authorization(
    next: &mut KeyRecord,
    who: &Identity,
    now: Timestamp,
) -> Result<(), KmsError> {
    if !next.dual_auth_enabled() {
        return Ok(());
    }
    let by = who.id.to_string();
    match next.pending_deletion_authorization(now) {
        Some(authorization) if authorization.by != by => {
            next.policies.deletion_authorization = None;
            Ok(())
        }
        _ => Err(KmsError::AuthorizationsNotMet),
    }
}

impl Kms {
    /// Sets a key's rotation and/or dual-authorization delete policy (Manager).
    pub fn set_key_policies(
        &self,
        who: &Identity,
        key: &KeyRef,
        change: KeyPolicyChange,
    ) -> Result<KeyPoliciesView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::ManagePolicies)?;
        let by = who.id.to_string();
        let view = self.mutate(key, |_, record, state, now| {
            Action::ManagePolicies.check(record.id, state)?;
            let mut next = record.clone();
            if let Some(rotation) = change.rotation {
                if record.kind != KeyKind::Root {
                    return Err(KmsError::RootKeyRequired);
                }
                if record.imported {
                    return Err(KmsError::ImportedKeyRotationPolicy);
                }
                let meta = PolicyMeta::next(
                    record.policies.rotation.as_ref().map(|p| &p.meta),
                    self.new_id(),
                    &by,
                    now,
                );
                next.policies.rotation = Some(RotationPolicy {
                    enabled: rotation.enabled,
                    interval: rotation.interval,
                    meta,
                });
            }
            if let Some(enabled) = change.dual_auth_delete {
                if record.dual_auth_enabled() && !enabled {
                    return Err(KmsError::DualAuthPolicyPermanent);
                }
                let meta = PolicyMeta::next(
                    record.policies.dual_auth_delete.as_ref().map(|p| &p.meta),
                    self.new_id(),
                    &by,
                    now,
                );
                next.policies.dual_auth_delete = Some(DualAuthPolicy { enabled, meta });
            }
            next.update_time = now;
            Ok(next)
        })?;
        let instance = self.instance(view.record.instance)?;
        Ok(KeyPoliciesView {
            record: view.record,
            instance_crn: instance.record.crn(),
            now: view.now,
        })
    }

    /// Returns a key's policies (Reader).
    pub fn get_key_policies(
        &self,
        who: &Identity,
        key: &KeyRef,
    ) -> Result<KeyPoliciesView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::ReadPolicies)?;
        let (instance, _, record, _) = self.resolve_live(key)?;
        Ok(KeyPoliciesView {
            record,
            instance_crn: instance.record.crn(),
            now: self.now(),
        })
    }

    /// The first authorization of a dual-authorization delete (Manager): records who and
    /// when; the key stays usable. `NOT_DUAL_AUTH_ERR` without the policy.
    pub fn set_key_for_deletion(
        &self,
        who: &Identity,
        key: &KeyRef,
    ) -> Result<crate::kms::KeyView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::AuthorizeDeletion)?;
        self.mutate(key, |_, record, state, now| {
            Action::ManagePolicies.check(record.id, state)?;
            if !record.dual_auth_enabled() {
                return Err(KmsError::NotDualAuth);
            }
            let mut next = record.clone();
            next.policies.deletion_authorization = Some(DeletionAuthorization {
                by: who.id.to_string(),
                time: now,
            });
            next.update_time = now;
            Ok(next)
        })
    }

    /// Cancels a pending authorization to delete (Manager). `NOT_DUAL_AUTH_ERR` without the
    /// policy; succeeds when none is pending.
    pub fn unset_key_for_deletion(
        &self,
        who: &Identity,
        key: &KeyRef,
    ) -> Result<crate::kms::KeyView, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::AuthorizeDeletion)?;
        self.mutate(key, |_, record, state, now| {
            Action::ManagePolicies.check(record.id, state)?;
            if !record.dual_auth_enabled() {
                return Err(KmsError::NotDualAuth);
            }
            let mut next = record.clone();
            if next.policies.deletion_authorization.take().is_some() {
                next.update_time = now;
            }
            Ok(next)
        })
    }

    /// Sets an instance's policies (Manager). Defaults apply to keys created afterwards.
    pub fn set_instance_policies(
        &self,
        who: &Identity,
        reference: &InstanceRef,
        change: InstancePolicyChange,
    ) -> Result<InstancePoliciesView, KmsError> {
        self.authorize(who, Some(reference.id()), Permission::ManagePolicies)?;
        let instance = self.policy_instance(reference)?;
        let _guard = lock(&instance.mutation);
        let now = self.now();
        let by = who.id.to_string();
        let mut next = read(&instance.policies).clone();
        if let Some(enabled) = change.dual_auth_delete {
            let meta = PolicyMeta::next(
                next.dual_auth_delete.as_ref().map(|p| &p.meta),
                self.new_id(),
                &by,
                now,
            );
            next.dual_auth_delete = Some(DualAuthPolicy { enabled, meta });
        }
        if let Some(rotation) = change.rotation {
            let meta = PolicyMeta::next(
                next.rotation.as_ref().map(|p| &p.meta),
                self.new_id(),
                &by,
                now,
            );
            next.rotation = Some(RotationPolicy {
                enabled: rotation.enabled,
                interval: rotation.interval,
                meta,
            });
        }
        if let Some(rules) = change.key_create_import_access {
            let meta = PolicyMeta::next(
                next.key_create_import_access.as_ref().map(|p| &p.meta),
                self.new_id(),
                &by,
                now,
            );
            next.key_create_import_access = Some(CreateImportAccess { rules, meta });
        }
        let record = InstanceRecord {
            policies: next.clone(),
            ..instance.record.clone()
        };
        self.store
            .put(Tree::Instances, record.id.as_bytes(), encode(&record))?;
        *write(&instance.policies) = next.clone();
        Ok(InstancePoliciesView {
            policies: next,
            instance_crn: instance.record.crn(),
        })
    }

    /// Returns an instance's policies (Reader).
    pub fn get_instance_policies(
        &self,
        who: &Identity,
        reference: &InstanceRef,
    ) -> Result<InstancePoliciesView, KmsError> {
        self.authorize(who, Some(reference.id()), Permission::ReadPolicies)?;
        let instance = self.policy_instance(reference)?;
        let policies = read(&instance.policies).clone();
        Ok(InstancePoliciesView {
            policies,
            instance_crn: instance.record.crn(),
        })
    }

    fn policy_instance(&self, reference: &InstanceRef) -> Result<Arc<InstanceEntry>, KmsError> {
        let instance = self.instance(reference.id())?;
        if let InstanceRef::Crn(crn) = reference {
            if *crn != instance.record.crn() {
                return Err(KmsError::InstanceNotFound(reference.id()));
            }
        }
        Ok(instance)
    }

    /// `CreateKey`'s check of the instance's key create/import access policy.
    pub(crate) fn check_create_import_access(
        &self,
        instance: &InstanceEntry,
        kind: KeyKind,
        material: &Material,
    ) -> Result<(), KmsError> {
        match &read(&instance.policies).key_create_import_access {
            Some(access) => access.rules.check(kind, material),
            None => Ok(()),
        }
    }

    /// The policies a new key starts with: the instance's dual-authorization delete default,
    /// and its rotation default for a root key whose material was generated.
    pub(crate) fn initial_key_policies(
        &self,
        instance: &InstanceEntry,
        kind: KeyKind,
        imported: bool,
        who: &Identity,
        now: Timestamp,
    ) -> KeyPolicies {
        let defaults = read(&instance.policies);
        let by = who.id.to_string();
        let dual_auth_delete = defaults
            .dual_auth_delete
            .as_ref()
            .filter(|p| p.enabled)
            .map(|_| DualAuthPolicy {
                enabled: true,
                meta: PolicyMeta::new(self.new_id(), &by, now),
            });
        let rotation = defaults
            .rotation
            .as_ref()
            .filter(|p| p.enabled && kind == KeyKind::Root && !imported)
            .map(|p| RotationPolicy {
                enabled: true,
                interval: p.interval,
                meta: PolicyMeta::new(self.new_id(), &by, now),
            });
        KeyPolicies {
            rotation,
            dual_auth_delete,
            deletion_authorization: None,
        }
    }

    /// The timer work of policies on one key, under its mutation lock: drops a lapsed
    /// authorization to delete, and rotates the key when its rotation policy says so (once,
    /// however many intervals have passed). Returns the record as it is now and whether it
    /// changed. A failed automatic rotation is logged and retried an hour later; it does not
    /// stop the other timers.
    pub(crate) fn settle_policies(
        &self,
        entry: &KeyEntry,
        record: Arc<KeyRecord>,
        now: Timestamp,
    ) -> Result<(Arc<KeyRecord>, bool), KmsError> {
        let mut record = record;
        let mut changed = false;
        if record
            .policies
            .deletion_authorization
            .as_ref()
            .is_some_and(|a| now >= a.expire_time())
        {
            let mut next = (*record).clone();
            next.policies.deletion_authorization = None;
            record = self.commit_key(entry, next)?;
            if let Lifecycle::Live(state) = record.state_at(now) {
                self.audit_timer("secrets.unsetkeyfordeletion", &record, state);
            }
            changed = true;
        }
        let due = record.next_rotation_time().is_some_and(|t| t <= now);
        if due && record.state_at(now) == Lifecycle::Live(KeyState::Active) {
            let instance = self.instance(record.instance)?;
            match self.rotate_locked(&instance, entry, &record, KeyState::Active, now, None) {
                Ok(rotated) => {
                    tracing::info!(key = %record.id, "rotated automatically by its rotation policy");
                    self.audit_timer("secrets.rotate", &rotated, KeyState::Active);
                    record = rotated;
                    changed = true;
                }
                Err(error) => {
                    tracing::warn!(key = %record.id, %error, "automatic rotation failed; retrying in an hour");
                    self.scheduler
                        .schedule(now.plus(AUTO_ROTATION_RETRY), record.id);
                }
            }
        }
        Ok((record, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::ids::{AccountId, InstanceId};
    use crate::kms::records::Flavor;

    #[test]
    fn intervals_are_one_to_twelve_months_of_thirty_days() {
        assert!(RotationInterval::from_months(0).is_none());
        assert!(RotationInterval::from_months(13).is_none());
        assert!(RotationInterval::from_months(-1).is_none());
        let two = RotationInterval::from_months(2).unwrap();
        assert_eq!(two.duration(), Duration::from_secs(60 * 24 * 3600));
        assert!(serde_json::from_str::<RotationInterval>("13").is_err());
        assert_eq!(
            serde_json::from_str::<RotationInterval>("12")
                .unwrap()
                .months(),
            12
        );
    }

    #[test]
    fn an_instance_stored_before_policies_existed_loads_without_any() {
        let record = InstanceRecord {
            id: InstanceId::from_uuid(uuid::Uuid::new_v4()),
            name: "old".into(),
            flavor: Flavor::KeyProtect,
            region: "us-south".parse().unwrap(),
            account: "kmsim".parse::<AccountId>().unwrap(),
            create_time: Timestamp::from_millis(1),
            policies: InstancePolicies::default(),
        };
        let mut json = serde_json::to_value(&record).unwrap();
        json.as_object_mut().unwrap().remove("policies");
        let loaded: InstanceRecord = serde_json::from_value(json).unwrap();
        assert!(loaded.policies.dual_auth_delete.is_none());
        assert!(loaded.policies.rotation.is_none());
        assert!(loaded.policies.key_create_import_access.is_none());
    }

    #[test]
    fn create_import_rules_name_the_rule_that_forbids() {
        let rules = CreateImportRules {
            enabled: true,
            create_root_key: true,
            create_standard_key: false,
            import_root_key: true,
            import_standard_key: true,
            enforce_token: true,
        };
        assert!(rules.check(KeyKind::Root, &Material::Generate(32)).is_ok());
        let denied = |kind, material: &Material| match rules.check(kind, material) {
            Err(KmsError::KeyCreateImportAccess { denied }) => Some(denied),
            _ => None,
        };
        assert_eq!(
            denied(KeyKind::Standard, &Material::Generate(32)),
            Some(CreateImportRule::CreateStandardKey)
        );
        let plain = Material::Plain(zeroize::Zeroizing::new(vec![0; 32]));
        assert_eq!(
            denied(KeyKind::Root, &plain),
            Some(CreateImportRule::EnforceToken)
        );
        let off = CreateImportRules {
            enabled: false,
            ..rules
        };
        assert!(off.check(KeyKind::Standard, &plain).is_ok());
    }
}
