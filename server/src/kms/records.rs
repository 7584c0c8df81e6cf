//! The persisted records of instances, keys and import tokens, and the time rules that
//! derive a key's effective state from its record (expiry, the deletion timeline). Records
//! hold no key material: only HSM object handles.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::kms::ids::{
    AccountId, Alias, Crn, ImportTokenId, InstanceId, KeyId, KeyVersionId, Region, ServiceName,
};
use crate::kms::policies::{InstancePolicies, KeyPolicies};
use crate::kms::state::KeyState;

/// Purge is allowed this long after deletion.
pub const PURGE_ALLOWED_AFTER: Duration = Duration::from_secs(4 * 3600);
/// Restore is allowed for this long after deletion.
pub const RESTORE_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// A deleted key is purged automatically this long after deletion.
pub const AUTO_PURGE_AFTER: Duration = Duration::from_secs(90 * 24 * 3600);
/// At most one rotation per this period.
pub const ROTATION_COOL_DOWN: Duration = Duration::from_secs(3600);
/// Enable is refused this long after disable; restore this long after delete.
pub const STATE_CHANGE_GUARD: Duration = Duration::from_secs(30);

/// Which service an instance imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flavor {
    /// IBM Key Protect.
    KeyProtect,
    /// Hyper Protect Crypto Services.
    Hpcs,
}

impl Flavor {
    /// The CRN service name.
    pub fn service(self) -> ServiceName {
        match self {
            Flavor::KeyProtect => ServiceName::Kms,
            Flavor::Hpcs => ServiceName::HsCrypto,
        }
    }
}

/// A KMS instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The GUID.
    pub id: InstanceId,
    /// Display name.
    pub name: String,
    /// Key Protect or HPCS.
    pub flavor: Flavor,
    /// Region.
    pub region: Region,
    /// Account.
    pub account: AccountId,
    /// Creation time.
    pub create_time: Timestamp,
    /// Instance policies (the live copy is `InstanceEntry::policies`).
    #[serde(default)]
    pub policies: InstancePolicies,
}

impl InstanceRecord {
    /// The instance's CRN.
    pub fn crn(&self) -> Crn {
        Crn::instance(self.flavor.service(), &self.region, &self.account, self.id)
    }
}

/// Root or standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyKind {
    /// Root key.
    Root,
    /// Standard key.
    Standard,
}

/// One version of a key's material.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Version id.
    pub id: KeyVersionId,
    /// Creation time.
    pub create_time: Timestamp,
    /// The HSM object that holds the material (stable across restarts).
    pub handle: u64,
}

/// An alias of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The alias.
    pub alias: Alias,
    /// When it was added.
    pub create_time: Timestamp,
}

/// The deletion of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deletion {
    /// When.
    pub time: Timestamp,
    /// By whom.
    pub by: String,
}

impl Deletion {
    /// From when purge is allowed.
    pub fn purge_allowed_time(&self) -> Timestamp {
        self.time.plus(PURGE_ALLOWED_AFTER)
    }
    /// Until when restore is allowed.
    pub fn restore_expire_time(&self) -> Timestamp {
        self.time.plus(RESTORE_WINDOW)
    }
    /// When the key is purged automatically.
    pub fn purge_scheduled_time(&self) -> Timestamp {
        self.time.plus(AUTO_PURGE_AFTER)
    }
}

/// A key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key id.
    pub id: KeyId,
    /// Owning instance.
    pub instance: InstanceId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Root or standard.
    pub kind: KeyKind,
    /// Whether the material came from the caller.
    pub imported: bool,
    /// Material length in bytes.
    pub size_bytes: usize,
    /// The state as last written; see [`KeyRecord::state_at`] for the effective state.
    pub state: KeyState,
    /// Versions, oldest first; the last is current.
    pub versions: Vec<VersionRecord>,
    /// Aliases, in creation order.
    pub aliases: Vec<AliasRecord>,
    /// Creation time.
    pub create_time: Timestamp,
    /// Last change.
    pub update_time: Timestamp,
    /// Last rotation.
    pub last_rotate_time: Option<Timestamp>,
    /// Expiration.
    pub expiration_time: Option<Timestamp>,
    /// Last disable, for the 30-second enable guard.
    pub disable_time: Option<Timestamp>,
    /// Set while Destroyed.
    pub deletion: Option<Deletion>,
    /// Creator identity.
    pub created_by: String,
    /// Rotation and dual-authorization delete policies, and a pending authorization to
    /// delete.
    #[serde(default)]
    pub policies: KeyPolicies,
}

/// A key's effective condition at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// The key exists in this state.
    Live(KeyState),
    /// The key was deleted 90 days ago or more: it no longer exists.
    Purged,
}

impl KeyRecord {
    /// The effective state at `now`: an Active key past its expiration is Deactivated, and a
    /// key deleted 90 days ago is purged, whether or not the scheduler has written it yet.
    pub fn state_at(&self, now: Timestamp) -> Lifecycle {
        match self.state {
            KeyState::Destroyed => match &self.deletion {
                Some(deletion) if now >= deletion.purge_scheduled_time() => Lifecycle::Purged,
                _ => Lifecycle::Live(KeyState::Destroyed),
            },
            KeyState::Active if self.is_expired(now) => Lifecycle::Live(KeyState::Deactivated),
            state => Lifecycle::Live(state),
        }
    }

    /// Whether the expiration time has passed.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expiration_time.is_some_and(|expiry| now >= expiry)
    }

    /// The current version.
    pub fn current_version(&self) -> Option<&VersionRecord> {
        self.versions.last()
    }

    /// The version with this id.
    pub fn version(&self, id: KeyVersionId) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.id == id)
    }

    /// The next time at which the effective state changes by itself, if any.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let lifecycle = match (self.state, &self.deletion, self.expiration_time) {
            (KeyState::Destroyed, Some(deletion), _) => Some(deletion.purge_scheduled_time()),
            (KeyState::Active, _, Some(expiry)) => Some(expiry),
            _ => None,
        };
        [lifecycle, self.policy_deadline()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// An instance's import token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportTokenRecord {
    /// Token id.
    pub id: ImportTokenId,
    /// Creation time.
    pub create_time: Timestamp,
    /// Expiry.
    pub expiration_time: Timestamp,
    /// Allowed retrievals.
    pub max_retrievals: u32,
    /// Remaining retrievals.
    pub remaining_retrievals: u32,
    /// HSM private key (derive only).
    pub private_handle: u64,
    /// HSM public key object.
    pub public_handle: u64,
    /// Uncompressed SEC1 public key.
    pub public_key: Vec<u8>,
    /// The challenge nonce (public by design: it is handed to the client).
    pub nonce: Vec<u8>,
}
