//! IAM: identities and their API keys, bearer tokens, users' access policies, service-to-
//! service authorizations, the bootstrap admin, and every permission check ([`Action`] ->
//! required [`Role`] in [`Action::required`], and [`Kms::authorize`]).
//!
//! Rules:
//! - Roles on an instance: `Reader` < `ReaderPlus` < `Writer` < `Manager` (each includes the
//!   ones before it); `KeyPurge` is separate. `Administrator` is server-wide (a policy without
//!   an instance) and includes every role on every instance, instance administration and IAM.
//! - A user acts through access policies. A service identity acts only through an
//!   authorization naming its service (and, if the authorization names one, its source
//!   instance CRN), only on the authorization's target instance, and only as `Reader`.
//! - Checks happen before a key is resolved, against the instance named by the request, so a
//!   caller cannot probe another instance's keys.
//! - API keys are stored as HMAC-SHA256(salt, secret) and compared in constant time; a token
//!   names the API key it came from, and deleting the key or its identity revokes it.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sim_hsm::Hsm;
use sim_hsm::p256::ecdsa::signature::Signer as _;
use sim_hsm::p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::auth::{self, AuthFailure, Authenticator, Credentials, Identity, IdentityKind};
use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::kms::ids::{
    ApiKeyId, AuthorizationId, IdentityId, InstanceId, PolicyId, ResourceCrn, SourceService,
};
use crate::kms::{Kms, decode, encode, lock, read, write};
use crate::random::Randomness;
use crate::store::{Change, Store, StoreError, Tree};

/// The label of the HSM token that held the token-signing key before it moved out of the
/// HSM's slots (a data directory from then has one; start-up frees its slot).
const LEGACY_IAM_TOKEN_LABEL: &str = "kmsim-iam";
/// The store key, in [`Tree::Simulator`], of the token-signing key sealed under the HSM's
/// master key. Outside the HSM's slots, so a reset, tamper response or zeroization (which
/// wipe every slot) keeps it: IAM is a service of its own, and nobody is signed out.
const SIGNING_RECORD: &[u8] = b"iam-signing-key";
/// The sealing context of [`SIGNING_RECORD`] (an export of another kind never opens as it).
const SIGNING_CONTEXT: &[u8] = b"kmsim-iam-signing-key";
/// Prefix of every API key secret.
const API_KEY_PREFIX: &str = "kmsim-ak";
/// Lifetime of a token when the request leaves it out.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A role: on an instance, or `Administrator` on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// List, get metadata, wrap, unwrap, rewrap.
    Reader,
    /// Reader, and read a standard key's payload.
    ReaderPlus,
    /// ReaderPlus, and create, import, rotate, aliases, import tokens.
    Writer,
    /// Writer, and delete, restore, disable, enable.
    Manager,
    /// Purge deleted keys.
    KeyPurge,
    /// Everything, on every instance; instances and IAM.
    Administrator,
}

impl Role {
    fn rank(self) -> Option<u8> {
        match self {
            Role::Reader => Some(1),
            Role::ReaderPlus => Some(2),
            Role::Writer => Some(3),
            Role::Manager => Some(4),
            Role::KeyPurge | Role::Administrator => None,
        }
    }

    /// Whether holding `self` satisfies `required`.
    pub fn grants(self, required: Role) -> bool {
        if self == Role::Administrator || self == required {
            return true;
        }
        match (self.rank(), required.rank()) {
            (Some(held), Some(needed)) => held >= needed,
            _ => false,
        }
    }

    /// The name Key Protect uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::ReaderPlus => "ReaderPlus",
            Role::Writer => "Writer",
            Role::Manager => "Manager",
            Role::KeyPurge => "KeyPurge",
            Role::Administrator => "Administrator",
        }
    }
}

/// Everything a caller can ask for, each needing one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create an instance.
    CreateInstance,
    /// List every instance.
    ListInstances,
    /// Get one instance.
    GetInstance,
    /// Delete an instance.
    DeleteInstance,
    /// Any IamService call except `CreateToken`.
    ManageIam,
    /// List keys.
    ListKeys,
    /// Get a key's metadata.
    GetKey,
    /// Read a standard key's payload.
    ReadPayload,
    /// List a key's versions.
    ListKeyVersions,
    /// Wrap, unwrap or rewrap.
    UseKey,
    /// Create or import a key.
    CreateKey,
    /// Rotate a key.
    RotateKey,
    /// Create or delete an alias.
    ManageAliases,
    /// Create or get the instance's import token.
    ManageImportToken,
    /// Disable or enable a key.
    SetKeyState,
    /// Delete a key.
    DeleteKey,
    /// Restore a deleted key.
    RestoreKey,
    /// Purge a deleted key.
    PurgeKey,
    /// Set key or instance policies.
    ManagePolicies,
    /// Read key or instance policies.
    ReadPolicies,
    /// Set or unset a key for deletion (dual-authorization delete).
    AuthorizeDeletion,
    /// Simulator and HSM administration: the clock, faults, reset, self-tests, tamper and
    /// zeroize.
    Administer,
    /// Create, update or delete a registration (service identities only, through an
    /// authorization, which grants `Reader`).
    ManageRegistrations,
    /// List registrations.
    ListRegistrations,
    /// Watch lifecycle events.
    WatchLifecycleEvents,
    /// Acknowledge a lifecycle event (service identities only).
    AckLifecycleEvent,
    /// Re-send a key's last lifecycle event (`SyncKey`).
    SyncKey,
    /// Read an instance's audit events (every instance's: Administrator).
    ReadAuditEvents,
}

impl Action {
    /// The role the action needs: the one permission table.
    pub fn required(self) -> Role {
        match self {
            Action::CreateInstance
            | Action::ListInstances
            | Action::DeleteInstance
            | Action::ManageIam
            | Action::Administer => Role::Administrator,
            Action::GetInstance
            | Action::ListKeys
            | Action::GetKey
            | Action::ListKeyVersions
            | Action::ReadPolicies
            | Action::UseKey => Role::Reader,
            Action::ReadPayload => Role::ReaderPlus,
            Action::CreateKey
            | Action::RotateKey
            | Action::ManageAliases
            | Action::ManageImportToken => Role::Writer,
            Action::SetKeyState
            | Action::DeleteKey
            | Action::RestoreKey
            | Action::ManagePolicies
            | Action::AuthorizeDeletion
            | Action::ReadAuditEvents => Role::Manager,
            Action::PurgeKey => Role::KeyPurge,
            Action::ManageRegistrations
            | Action::ListRegistrations
            | Action::WatchLifecycleEvents
            | Action::AckLifecycleEvent => Role::Reader,
            Action::SyncKey => Role::Writer,
        }
    }
}

/// An identity, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// The id.
    pub id: IdentityId,
    /// User or service.
    pub kind: IdentityKind,
    /// A user's display name, or a service identity's service name.
    pub name: String,
    /// For a service identity: the source instance it acts for.
    pub source_instance: Option<ResourceCrn>,
    /// Whether this is the bootstrap admin (what the development token acts as).
    pub bootstrap_admin: bool,
    /// Creation time.
    pub create_time: Timestamp,
}

/// An API key, as stored: never the secret, only HMAC-SHA256(salt, secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// The id (also the middle part of the secret, to find the record).
    pub id: ApiKeyId,
    /// The identity.
    pub identity: IdentityId,
    /// Free text.
    pub description: String,
    /// Per-key salt, hex.
    pub salt: String,
    /// HMAC-SHA256(salt, secret), hex.
    pub hash: String,
    /// Creation time.
    pub create_time: Timestamp,
}

/// A user's roles on an instance (or `Administrator` on the server).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The id.
    pub id: PolicyId,
    /// The user.
    pub identity: IdentityId,
    /// The instance; `None` for a server-wide `Administrator` policy.
    pub instance: Option<InstanceId>,
    /// The roles.
    pub roles: Vec<Role>,
    /// Creation time.
    pub create_time: Timestamp,
    /// Who created it.
    pub created_by: IdentityId,
}

/// A service-to-service authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationRecord {
    /// The id.
    pub id: AuthorizationId,
    /// The source service.
    pub source: SourceService,
    /// The one source instance authorized, or `None` for all.
    pub source_instance: Option<ResourceCrn>,
    /// The target KMS instance.
    pub target: InstanceId,
    /// Always `Reader`.
    pub role: Role,
    /// Creation time.
    pub create_time: Timestamp,
    /// Who created it.
    pub created_by: IdentityId,
}

/// Who a new API key is for.
#[derive(Debug, Clone)]
pub enum ApiKeyOwner {
    /// An existing identity.
    Existing(IdentityId),
    /// A new user.
    NewUser {
        /// Display name.
        name: String,
    },
    /// A new service identity.
    NewService {
        /// The service.
        service: SourceService,
        /// The source instance it acts for.
        source_instance: Option<ResourceCrn>,
    },
}

/// A new API key: its metadata and the secret (returned once).
#[derive(Debug)]
pub struct NewApiKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// Its identity.
    pub identity: IdentityRecord,
    /// The secret.
    pub secret: Zeroizing<String>,
}

/// An issued bearer token.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token.
    pub token: Zeroizing<String>,
    /// When it expires.
    pub expires: Timestamp,
    /// Its identity.
    pub identity: IdentityRecord,
}

/// The IAM state: records indexed in memory (reads never touch the store), the token signer
/// and the authenticator.
pub(crate) struct IamState {
    identities: RwLock<HashMap<IdentityId, IdentityRecord>>,
    api_keys: RwLock<HashMap<ApiKeyId, ApiKeyRecord>>,
    policies: RwLock<PolicyIndex>,
    authorizations: RwLock<HashMap<AuthorizationId, AuthorizationRecord>>,
    /// Serialises IAM mutations.
    mutation: Mutex<()>,
    /// The token-signing key, unsealed from [`SIGNING_RECORD`] (zeroized when dropped). It
    /// survives HSM wipes. `None` while the HSM has not passed its self-tests since start-up
    /// (nothing can unseal it then: only the development token authenticates, and no token
    /// can be issued).
    signer: RwLock<Option<SigningKey>>,
    pub(crate) authenticator: Authenticator,
}

impl std::fmt::Debug for IamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IamState { .. }")
    }
}

/// Access policies by id, and the ids of each identity's policies, so that an authorization
/// check reads only the caller's policies (it runs on every call, the wrap path included).
#[derive(Debug, Default)]
struct PolicyIndex {
    by_id: HashMap<PolicyId, PolicyRecord>,
    by_identity: HashMap<IdentityId, Vec<PolicyId>>,
}

impl From<HashMap<PolicyId, PolicyRecord>> for PolicyIndex {
    fn from(by_id: HashMap<PolicyId, PolicyRecord>) -> Self {
        let mut by_identity: HashMap<IdentityId, Vec<PolicyId>> = HashMap::new();
        for policy in by_id.values() {
            by_identity
                .entry(policy.identity)
                .or_default()
                .push(policy.id);
        }
        Self { by_id, by_identity }
    }
}

impl PolicyIndex {
    /// Every policy.
    fn values(&self) -> impl Iterator<Item = &PolicyRecord> {
        self.by_id.values()
    }

    /// `identity`'s policies.
    fn of(&self, identity: IdentityId) -> impl Iterator<Item = &PolicyRecord> {
        self.by_identity
            .get(&identity)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    fn contains_key(&self, id: &PolicyId) -> bool {
        self.by_id.contains_key(id)
    }

    fn insert(&mut self, id: PolicyId, policy: PolicyRecord) {
        if let Some(old) = self.by_id.insert(id, policy.clone()) {
            self.unlink(old.identity, id);
        }
        self.by_identity
            .entry(policy.identity)
            .or_default()
            .push(id);
    }

    fn remove(&mut self, id: &PolicyId) -> Option<PolicyRecord> {
        let removed = self.by_id.remove(id)?;
        self.unlink(removed.identity, *id);
        Some(removed)
    }

    fn unlink(&mut self, identity: IdentityId, id: PolicyId) {
        if let Some(ids) = self.by_identity.get_mut(&identity) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_identity.remove(&identity);
            }
        }
    }
}

fn load_tree<K: std::hash::Hash + Eq, V: serde::de::DeserializeOwned>(
    store: &dyn Store,
    tree: Tree,
    key: impl Fn(&V) -> K,
) -> Result<HashMap<K, V>, KmsError> {
    let mut map = HashMap::new();
    for (_, bytes) in store.scan_prefix(tree, b"")? {
        let value: V = decode(tree, &bytes)?;
        map.insert(key(&value), value);
    }
    Ok(map)
}

fn hash_secret(salt: &[u8], secret: &str) -> hmac::Hmac<sha2::Sha256> {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(salt)
        .unwrap_or_else(|_| unreachable!());
    mac.update(secret.as_bytes());
    mac
}

/// The id inside an API key secret, `kmsim-ak-<id as 32 hex digits>-<random part>`, when
/// the secret has that shape (the random part is 16 to 128 base64url characters).
pub fn parse_api_key_id(secret: &str) -> Option<ApiKeyId> {
    let rest = secret.strip_prefix(API_KEY_PREFIX)?.strip_prefix('-')?;
    let bytes = hex::decode(rest.get(..32)?).ok()?;
    let id = ApiKeyId::from_bytes(<[u8; 16]>::try_from(bytes.as_slice()).ok()?);
    Some(id).filter(|_| rest.get(32..33) == Some("-"))
}

/// Whether `secret` is a well-formed kmsim API key: [`parse_api_key_id`] succeeds and the
/// random part is 16 to 128 base64url characters.
pub fn is_valid_api_key_secret(secret: &str) -> bool {
    let Some(tail) = secret.get(API_KEY_PREFIX.len() + 34..) else {
        return false;
    };
    parse_api_key_id(secret).is_some()
        && (16..=128).contains(&tail.len())
        && tail
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl IamState {
    /// Loads the records and unseals the token-signing key (created and sealed on first
    /// start). A token left in the HSM by an older kmsim's IAM is zeroized, freeing its slot.
    pub(crate) fn open(
        hsm: &Hsm,
        store: &dyn Store,
        random: &Randomness,
        dev_token: bool,
    ) -> Result<Self, KmsError> {
        let (signer, verifying) = if hsm.status().state == sim_hsm::ModuleState::Operational {
            if let Some(slot) = hsm.find_slot_by_label(LEGACY_IAM_TOKEN_LABEL) {
                hsm.zeroize_token(slot)?;
            }
            let key = load_or_create_signer(hsm, store, random)?;
            let verifying = *key.verifying_key();
            (Some(key), verifying)
        } else {
            // The HSM failed its self-tests at start-up: no bearer token verifies until it
            // recovers (`ensure_iam_signer` unseals the real key); the development token works.
            (None, unusable_verifying_key()?)
        };
        Ok(Self {
            identities: RwLock::new(load_tree(store, Tree::Identities, |r: &IdentityRecord| {
                r.id
            })?),
            api_keys: RwLock::new(load_tree(store, Tree::ApiKeys, |r: &ApiKeyRecord| r.id)?),
            policies: RwLock::new(PolicyIndex::from(load_tree(
                store,
                Tree::AccessPolicies,
                |r: &PolicyRecord| r.id,
            )?)),
            authorizations: RwLock::new(load_tree(
                store,
                Tree::Authorizations,
                |r: &AuthorizationRecord| r.id,
            )?),
            mutation: Mutex::new(()),
            signer: RwLock::new(signer),
            authenticator: Authenticator::new(verifying, dev_token),
        })
    }

    /// Reloads every IAM record from `store` and the token-signing key it holds, through
    /// [`IamState::open`] (after the store's contents were replaced: a snapshot import).
    pub(crate) fn reload(
        &self,
        hsm: &Hsm,
        store: &dyn Store,
        random: &Randomness,
    ) -> Result<(), KmsError> {
        let fresh = Self::open(hsm, store, random, false)?;
        let key = take(fresh.signer).ok_or(KmsError::Hsm(sim_hsm::HsmError::FipsSelfTestFailed))?;
        let verifying = *key.verifying_key();
        *write(&self.identities) = take(fresh.identities);
        *write(&self.api_keys) = take(fresh.api_keys);
        *write(&self.policies) = take(fresh.policies);
        *write(&self.authorizations) = take(fresh.authorizations);
        *write(&self.signer) = Some(key);
        self.authenticator.rekey(verifying);
        Ok(())
    }

    fn is_admin(&self, identity: IdentityId) -> bool {
        read(&self.policies)
            .of(identity)
            .any(|p| p.instance.is_none() && p.roles.contains(&Role::Administrator))
    }
}

impl Credentials for IamState {
    fn live_identity(&self, identity: IdentityId, api_key: ApiKeyId) -> Option<Identity> {
        let key_live = read(&self.api_keys)
            .get(&api_key)
            .is_some_and(|k| k.identity == identity);
        if !key_live {
            return None;
        }
        read(&self.identities).get(&identity).map(|r| Identity {
            id: r.id,
            kind: r.kind,
        })
    }

    fn bootstrap_admin(&self) -> Option<Identity> {
        read(&self.identities)
            .values()
            .find(|r| r.bootstrap_admin)
            .map(|r| Identity {
                id: r.id,
                kind: r.kind,
            })
    }
}

/// A verifying key whose signing key is discarded at once: no token verifies against it.
fn unusable_verifying_key() -> Result<VerifyingKey, KmsError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|_| KmsError::Hsm(sim_hsm::HsmError::DeviceError))?;
    let key = sim_hsm::p256::ecdsa::SigningKey::from_slice(&seed[..])
        .map_err(|_| KmsError::Hsm(sim_hsm::HsmError::DeviceError))?;
    Ok(*key.verifying_key())
}

/// The token-signing key sealed in `store` ([`SIGNING_RECORD`]), or a new one (from `random`,
/// so `--deterministic` makes it predictable) sealed there. The HSM must be operational.
fn load_or_create_signer(
    hsm: &Hsm,
    store: &dyn Store,
    random: &Randomness,
) -> Result<SigningKey, KmsError> {
    if let Some(sealed) = store.get(Tree::Simulator, SIGNING_RECORD)? {
        let plain = hsm.open_export(SIGNING_CONTEXT, &sealed)?;
        return SigningKey::from_slice(&plain).map_err(|_| {
            KmsError::Store(StoreError::corrupt(
                Tree::Simulator,
                "the sealed IAM token-signing key is not a P-256 scalar",
            ))
        });
    }
    let key = loop {
        // A 32-byte string is a valid scalar but with probability ~2^-128.
        let mut scalar = Zeroizing::new([0u8; 32]);
        random.fill(&mut scalar[..]);
        if let Ok(key) = SigningKey::from_slice(&scalar[..]) {
            break key;
        }
    };
    seal_signer(hsm, store, &key)?;
    Ok(key)
}

/// Seals `key` under the HSM's current master key into [`SIGNING_RECORD`].
fn seal_signer(hsm: &Hsm, store: &dyn Store, key: &SigningKey) -> Result<(), KmsError> {
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&key.to_bytes());
    let sealed = hsm.seal_export(SIGNING_CONTEXT, &scalar[..])?;
    store.put(Tree::Simulator, SIGNING_RECORD, sealed)?;
    Ok(())
}

/// The value of a lock that is being dropped (recovering from poisoning, see `kms::lock`).
fn take<T>(lock: RwLock<T>) -> T {
    lock.into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn put<T: Serialize>(tree: Tree, key: &[u8; 16], value: &T) -> Change {
    Change::Put {
        tree,
        key: key.to_vec(),
        value: encode(value),
    }
}

fn delete(tree: Tree, key: &[u8; 16]) -> Change {
    Change::Delete {
        tree,
        key: key.to_vec(),
    }
}

impl Kms {
    /// Authenticates the value of a request's `authorization` metadata.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Identity, KmsError> {
        self.iam
            .authenticator
            .authenticate(header, self.now(), &self.iam)
            .map_err(KmsError::Unauthenticated)
    }

    /// Once the HSM is operational with its master key (after self-tests pass, a wipe, a
    /// reset or a master-key change): unseals the token-signing key if it is not loaded yet
    /// (the HSM failed its start-up self-tests), and re-seals it when the master key it is
    /// sealed under is no longer the HSM's current one. HSM wipes never touch it: tokens
    /// issued before a reset, tamper response or zeroization keep verifying.
    pub(crate) fn ensure_iam_signer(&self) -> Result<(), KmsError> {
        let mut signer = write(&self.iam.signer);
        match signer.as_ref() {
            Some(key) => {
                let stored = self.store.get(Tree::Simulator, SIGNING_RECORD)?;
                let sealed_under = stored
                    .as_deref()
                    .and_then(sim_hsm::export::sealed_export_fingerprint);
                if sealed_under.is_none()
                    || sealed_under != self.hsm.master_key_verification_pattern()
                {
                    seal_signer(&self.hsm, self.store.as_ref(), key)?;
                }
            }
            None => {
                let key = load_or_create_signer(&self.hsm, self.store.as_ref(), &self.random)?;
                self.iam.authenticator.rekey(*key.verifying_key());
                *signer = Some(key);
            }
        }
        Ok(())
    }

    /// The authenticator (for benchmarks and white-box tests).
    pub fn authenticator(&self) -> &Authenticator {
        &self.iam.authenticator
    }

    /// Whether `who` may perform `action` on `instance` (`None` for server-wide actions).
    /// The only permission check: every domain entry point calls it first.
    pub fn authorize(
        &self,
        who: &Identity,
        instance: Option<InstanceId>,
        action: Action,
    ) -> Result<(), KmsError> {
        let required = action.required();
        let denied = Err(KmsError::PermissionDenied { required });
        if who.kind == IdentityKind::User && self.iam.is_admin(who.id) {
            return Ok(());
        }
        let Some(instance) = instance else {
            return denied;
        };
        let allowed = match who.kind {
            IdentityKind::User => read(&self.iam.policies).of(who.id).any(|p| {
                p.instance == Some(instance) && p.roles.iter().any(|r| r.grants(required))
            }),
            IdentityKind::Service => {
                let identities = read(&self.iam.identities);
                let Some(caller) = identities.get(&who.id) else {
                    return denied;
                };
                Role::Reader.grants(required)
                    && read(&self.iam.authorizations).values().any(|a| {
                        a.target == instance
                            && a.source.as_str() == caller.name
                            && a.source_instance
                                .as_ref()
                                .is_none_or(|crn| caller.source_instance.as_ref() == Some(crn))
                    })
            }
        };
        if allowed { Ok(()) } else { denied }
    }

    /// On first start (no identities stored), creates the bootstrap admin identity with a
    /// server-wide `Administrator` policy and an API key, hands the secret to `deliver`
    /// (which writes it to the admin key file) and only then commits. Returns whether it did.
    pub fn bootstrap_admin(
        &self,
        deliver: impl FnOnce(&str) -> std::io::Result<()>,
    ) -> Result<bool, std::io::Error> {
        let _guard = lock(&self.iam.mutation);
        if !read(&self.iam.identities).is_empty() {
            return Ok(false);
        }
        let now = self.now();
        let identity = IdentityRecord {
            id: IdentityId::from_uuid(self.new_id()),
            kind: IdentityKind::User,
            name: "admin".to_owned(),
            source_instance: None,
            bootstrap_admin: true,
            create_time: now,
        };
        let (key, secret) = self.new_api_key_record(identity.id, "bootstrap admin".to_owned());
        let policy = PolicyRecord {
            id: PolicyId::from_uuid(self.new_id()),
            identity: identity.id,
            instance: None,
            roles: vec![Role::Administrator],
            create_time: now,
            created_by: identity.id,
        };
        deliver(&secret)?;
        self.store
            .apply(vec![
                put(Tree::Identities, identity.id.as_bytes(), &identity),
                put(Tree::ApiKeys, key.id.as_bytes(), &key),
                put(Tree::AccessPolicies, policy.id.as_bytes(), &policy),
            ])
            .map_err(std::io::Error::other)?;
        write(&self.iam.identities).insert(identity.id, identity);
        write(&self.iam.api_keys).insert(key.id, key);
        write(&self.iam.policies).insert(policy.id, policy);
        Ok(true)
    }

    fn new_api_key_record(
        &self,
        identity: IdentityId,
        description: String,
    ) -> (ApiKeyRecord, Zeroizing<String>) {
        let id = ApiKeyId::from_uuid(self.new_id());
        let secret = Zeroizing::new(format!(
            "{API_KEY_PREFIX}-{}-{}",
            hex::encode(id.as_bytes()),
            self.random.secret(32).as_str()
        ));
        self.api_key_record_for(id, identity, description, secret)
    }

    /// The record of API key `id` with the given secret (hashed with a fresh salt).
    fn api_key_record_for(
        &self,
        id: ApiKeyId,
        identity: IdentityId,
        description: String,
        secret: Zeroizing<String>,
    ) -> (ApiKeyRecord, Zeroizing<String>) {
        let salt = self.random.secret(16);
        let hash = hex::encode(
            hash_secret(salt.as_bytes(), &secret)
                .finalize()
                .into_bytes(),
        );
        let record = ApiKeyRecord {
            id,
            identity,
            description,
            salt: hex::encode(salt.as_bytes()),
            hash,
            create_time: self.now(),
        };
        (record, secret)
    }

    /// Creates an API key for an existing or a new identity. Administrators only.
    pub fn create_api_key(
        &self,
        who: &Identity,
        owner: ApiKeyOwner,
        description: String,
    ) -> Result<NewApiKey, KmsError> {
        self.create_api_key_with(who, owner, description, None)
    }

    /// [`Kms::create_api_key`], with a caller-chosen secret when `fixed` is `Some` (start-up
    /// seeding): it must be a well-formed kmsim API key ([`is_valid_api_key_secret`]; else the
    /// field `secret` is malformed) whose id is unused (else `secret` is `NotAllowed`).
    pub(crate) fn create_api_key_with(
        &self,
        who: &Identity,
        owner: ApiKeyOwner,
        description: String,
        fixed: Option<Zeroizing<String>>,
    ) -> Result<NewApiKey, KmsError> {
        self.authorize(who, None, Action::ManageIam)?;
        let fixed = match fixed {
            Some(secret) => Some((
                parse_api_key_id(&secret)
                    .filter(|_| is_valid_api_key_secret(&secret))
                    .ok_or(KmsError::field(
                        "secret",
                        FieldProblem::Malformed(crate::kms::ids::ParseError::NotUuid),
                    ))?,
                secret,
            )),
            None => None,
        };
        let _guard = lock(&self.iam.mutation);
        if let Some((id, _)) = &fixed {
            if read(&self.iam.api_keys).contains_key(id) {
                return Err(KmsError::field("secret", FieldProblem::NotAllowed));
            }
        }
        let now = self.now();
        let (identity, new_identity) = match owner {
            ApiKeyOwner::Existing(id) => (
                read(&self.iam.identities)
                    .get(&id)
                    .cloned()
                    .ok_or(KmsError::IdentityNotFound)?,
                false,
            ),
            ApiKeyOwner::NewUser { name } => (
                IdentityRecord {
                    id: IdentityId::from_uuid(self.new_id()),
                    kind: IdentityKind::User,
                    name,
                    source_instance: None,
                    bootstrap_admin: false,
                    create_time: now,
                },
                true,
            ),
            ApiKeyOwner::NewService {
                service,
                source_instance,
            } => (
                IdentityRecord {
                    id: IdentityId::from_uuid(self.new_id()),
                    kind: IdentityKind::Service,
                    name: service.to_string(),
                    source_instance,
                    bootstrap_admin: false,
                    create_time: now,
                },
                true,
            ),
        };
        let (record, secret) = match fixed {
            Some((id, secret)) => self.api_key_record_for(id, identity.id, description, secret),
            None => self.new_api_key_record(identity.id, description),
        };
        let mut changes = vec![put(Tree::ApiKeys, record.id.as_bytes(), &record)];
        if new_identity {
            changes.push(put(Tree::Identities, identity.id.as_bytes(), &identity));
        }
        self.store.apply(changes)?;
        if new_identity {
            write(&self.iam.identities).insert(identity.id, identity.clone());
        }
        write(&self.iam.api_keys).insert(record.id, record.clone());
        Ok(NewApiKey {
            record,
            identity,
            secret,
        })
    }

    /// Deletes an API key; its tokens stop working at once. Administrators only.
    pub fn delete_api_key(&self, who: &Identity, id: ApiKeyId) -> Result<(), KmsError> {
        self.authorize(who, None, Action::ManageIam)?;
        let _guard = lock(&self.iam.mutation);
        if !read(&self.iam.api_keys).contains_key(&id) {
            return Err(KmsError::ApiKeyNotFound);
        }
        self.store.delete(Tree::ApiKeys, id.as_bytes())?;
        write(&self.iam.api_keys).remove(&id);
        self.iam.authenticator.cache().forget_api_key(id);
        Ok(())
    }

    /// Deletes an identity with its API keys and access policies. Administrators only; the
    /// bootstrap admin cannot be deleted (that would lock everyone out).
    pub fn delete_identity(&self, who: &Identity, id: IdentityId) -> Result<(), KmsError> {
        self.authorize(who, None, Action::ManageIam)?;
        let _guard = lock(&self.iam.mutation);
        match read(&self.iam.identities).get(&id) {
            None => return Err(KmsError::IdentityNotFound),
            Some(record) if record.bootstrap_admin => {
                return Err(KmsError::field("id", FieldProblem::NotAllowed));
            }
            Some(_) => {}
        }
        let keys: Vec<ApiKeyId> = read(&self.iam.api_keys)
            .values()
            .filter(|k| k.identity == id)
            .map(|k| k.id)
            .collect();
        let policies: Vec<PolicyId> = read(&self.iam.policies).of(id).map(|p| p.id).collect();
        let mut changes = vec![delete(Tree::Identities, id.as_bytes())];
        changes.extend(keys.iter().map(|k| delete(Tree::ApiKeys, k.as_bytes())));
        changes.extend(
            policies
                .iter()
                .map(|p| delete(Tree::AccessPolicies, p.as_bytes())),
        );
        self.store.apply(changes)?;
        write(&self.iam.identities).remove(&id);
        {
            let mut api_keys = write(&self.iam.api_keys);
            for key in &keys {
                api_keys.remove(key);
            }
        }
        {
            let mut all = write(&self.iam.policies);
            for policy in &policies {
                all.remove(policy);
            }
        }
        self.iam.authenticator.cache().forget_identity(id);
        Ok(())
    }

    /// Exchanges an API key for a bearer token signed in the HSM, expiring `lifetime` from
    /// now by the server's clock.
    pub fn create_token(&self, secret: &str, lifetime: Duration) -> Result<IssuedToken, KmsError> {
        let bad = KmsError::Unauthenticated(AuthFailure::BadApiKey);
        let id =
            parse_api_key_id(secret).ok_or(KmsError::Unauthenticated(AuthFailure::BadApiKey))?;
        let record = read(&self.iam.api_keys).get(&id).cloned().ok_or(bad)?;
        let salt = hex::decode(&record.salt).unwrap_or_default();
        let expected = hex::decode(&record.hash).unwrap_or_default();
        hash_secret(&salt, secret)
            .verify_slice(&expected)
            .map_err(|_| KmsError::Unauthenticated(AuthFailure::BadApiKey))?;
        let identity = read(&self.iam.identities)
            .get(&record.identity)
            .cloned()
            .ok_or(KmsError::Unauthenticated(AuthFailure::BadApiKey))?;
        let now = self.now();
        let issued = now.as_millis().div_euclid(1000);
        let lifetime_secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let claims = auth::token::Claims {
            sub: identity.id,
            kind: identity.kind,
            akid: record.id,
            iat: issued,
            exp: issued.saturating_add(lifetime_secs),
            nbf: None,
            jti: self.new_id(),
        };
        let input = auth::token::signing_input(&claims);
        let signature: Signature = {
            let signer = read(&self.iam.signer);
            let key = signer
                .as_ref()
                .ok_or(KmsError::Hsm(sim_hsm::HsmError::FipsSelfTestFailed))?;
            key.sign(input.as_bytes())
        };
        Ok(IssuedToken {
            token: Zeroizing::new(auth::token::assemble(&input, &signature.to_bytes())),
            expires: claims.expiration(),
            identity,
        })
    }

    /// Grants a user roles on an instance, or `Administrator` on the server.
    pub fn create_access_policy(
        &self,
        who: &Identity,
        identity: IdentityId,
        instance: Option<InstanceId>,
        roles: Vec<Role>,
    ) -> Result<PolicyRecord, KmsError> {
        self.authorize(who, None, Action::ManageIam)?;
        let _guard = lock(&self.iam.mutation);
        match read(&self.iam.identities).get(&identity) {
            None => return Err(KmsError::IdentityNotFound),
            Some(record) if record.kind != IdentityKind::User => {
                return Err(KmsError::field("identity_id", FieldProblem::NotAUser));
            }
            Some(_) => {}
        }
        let admin = roles.contains(&Role::Administrator);
        match instance {
            Some(instance) if !admin => {
                self.instance(instance)?;
            }
            None if admin && roles.len() == 1 => {}
            Some(_) | None => return Err(KmsError::field("roles", FieldProblem::RoleScope)),
        }
        let record = PolicyRecord {
            id: PolicyId::from_uuid(self.new_id()),
            identity,
            instance,
            roles,
            create_time: self.now(),
            created_by: who.id,
        };
        self.store
            .put(Tree::AccessPolicies, record.id.as_bytes(), encode(&record))?;
        write(&self.iam.policies).insert(record.id, record.clone());
        Ok(record)
    }

    /// Lists access policies, by creation time then id.
    pub fn list_access_policies(
        &self,
        who: &Identity,
        identity: Option<IdentityId>,
        instance: Option<InstanceId>,
    ) -> Result<Vec<PolicyRecord>, KmsError> {
        self.authorize(who, None, Action::ManageIam)?;
        let mut all: Vec<PolicyRecord> = read(&self.iam.policies)
            .values()
            .filter(|p| identity.is_none_or(|i| p.identity == i))
            .filter(|p| instance.is_none_or(|i| p.instance == Some(i)))
            .cloned()
            .collect();
        all.sort_by_key(|p| (p.create_time, p.id));
        Ok(all)
    }

    /// Deletes an access policy.
    pub fn delete_access_policy(&self, who: &Identity, id: PolicyId) -> Result<(), KmsError> {
        self.authorize(who, None, Action::ManageIam)?;
        let _guard = lock(&self.iam.mutation);
        if !read(&self.iam.policies).contains_key(&id) {
            return Err(KmsError::PolicyNotFound);
        }
        self.store.delete(Tree::AccessPolicies, id.as_bytes())?;
        write(&self.iam.policies).remove(&id);
        Ok(())
    }

    /// Authorizes a source service (one of its instances, or all) to use a target instance
    /// as `Reader`.
    pub fn create_authorization(
        &self,
        who: &Identity,
        source: SourceService,
        source_instance: Option<ResourceCrn>,
        target: InstanceId,
    ) -> Result<AuthorizationRecord, KmsError> {
        self.authorize(who, None, Action::ManageIam)?;
        self.instance(target)?;
        let _guard = lock(&self.iam.mutation);
        let record = AuthorizationRecord {
            id: AuthorizationId::from_uuid(self.new_id()),
            source,
            source_instance,
            target,
            role: Role::Reader,
            create_time: self.now(),
            created_by: who.id,
        };
        self.store
            .put(Tree::Authorizations, record.id.as_bytes(), encode(&record))?;
        write(&self.iam.authorizations).insert(record.id, record.clone());
        Ok(record)
    }

    /// Lists authorizations, by creation time then id.
    pub fn list_authorizations(
        &self,
        who: &Identity,
        target: Option<InstanceId>,
        source: Option<SourceService>,
    ) -> Result<Vec<AuthorizationRecord>, KmsError> {
        self.authorize(who, None, Action::ManageIam)?;
        let mut all: Vec<AuthorizationRecord> = read(&self.iam.authorizations)
            .values()
            .filter(|a| target.is_none_or(|t| a.target == t))
            .filter(|a| source.as_ref().is_none_or(|s| a.source == *s))
            .cloned()
            .collect();
        all.sort_by_key(|a| (a.create_time, a.id));
        Ok(all)
    }

    /// Deletes an authorization; the service loses access at once.
    pub fn delete_authorization(
        &self,
        who: &Identity,
        id: AuthorizationId,
    ) -> Result<(), KmsError> {
        self.authorize(who, None, Action::ManageIam)?;
        let _guard = lock(&self.iam.mutation);
        if !read(&self.iam.authorizations).contains_key(&id) {
            return Err(KmsError::AuthorizationNotFound);
        }
        self.store.delete(Tree::Authorizations, id.as_bytes())?;
        write(&self.iam.authorizations).remove(&id);
        Ok(())
    }

    /// The bootstrap admin's identity (start-up seeding acts as it).
    pub(crate) fn bootstrap_admin_identity(&self) -> Option<Identity> {
        Credentials::bootstrap_admin(&self.iam)
    }

    /// Whether API key `id` exists, belongs to `identity` and has `secret`: `None` when no
    /// such key exists.
    pub(crate) fn api_key_matches(
        &self,
        id: ApiKeyId,
        identity: IdentityId,
        secret: &str,
    ) -> Option<bool> {
        let record = read(&self.iam.api_keys).get(&id).cloned()?;
        let salt = hex::decode(&record.salt).unwrap_or_default();
        let expected = hex::decode(&record.hash).unwrap_or_default();
        Some(
            record.identity == identity
                && hash_secret(&salt, secret).verify_slice(&expected).is_ok(),
        )
    }

    /// An access policy's record (start-up seeding compares it with the file's).
    pub(crate) fn policy_record(&self, id: PolicyId) -> Option<PolicyRecord> {
        read(&self.iam.policies).by_id.get(&id).cloned()
    }

    /// An authorization's record (start-up seeding compares it with the file's).
    pub(crate) fn authorization_record(&self, id: AuthorizationId) -> Option<AuthorizationRecord> {
        read(&self.iam.authorizations).get(&id).cloned()
    }

    /// An identity's record.
    pub fn identity_record(&self, id: IdentityId) -> Option<IdentityRecord> {
        read(&self.iam.identities).get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_hierarchy() {
        assert!(Role::Manager.grants(Role::Reader));
        assert!(Role::Writer.grants(Role::ReaderPlus));
        assert!(!Role::Reader.grants(Role::ReaderPlus));
        assert!(!Role::Manager.grants(Role::KeyPurge));
        assert!(!Role::KeyPurge.grants(Role::Reader));
        assert!(Role::KeyPurge.grants(Role::KeyPurge));
        assert!(Role::Administrator.grants(Role::KeyPurge));
        assert!(!Role::Manager.grants(Role::Administrator));
    }

    #[test]
    fn the_policy_index_finds_exactly_an_identitys_policies() {
        let (alice, bob) = (
            IdentityId::from_bytes([1; 16]),
            IdentityId::from_bytes([2; 16]),
        );
        let policy = |id: u8, identity| PolicyRecord {
            id: PolicyId::from_bytes([id; 16]),
            identity,
            instance: None,
            roles: vec![Role::Reader],
            create_time: Timestamp::from_millis(0),
            created_by: alice,
        };
        let ids = |index: &PolicyIndex, who| {
            let mut ids: Vec<PolicyId> = index.of(who).map(|p| p.id).collect();
            ids.sort_by_key(|id| *id.as_bytes());
            ids
        };
        let mut index = PolicyIndex::from(HashMap::from([(
            PolicyId::from_bytes([10; 16]),
            policy(10, alice),
        )]));
        index.insert(PolicyId::from_bytes([11; 16]), policy(11, alice));
        index.insert(PolicyId::from_bytes([12; 16]), policy(12, bob));
        assert_eq!(
            ids(&index, alice),
            [
                PolicyId::from_bytes([10; 16]),
                PolicyId::from_bytes([11; 16])
            ]
        );
        assert_eq!(ids(&index, bob), [PolicyId::from_bytes([12; 16])]);
        // Re-inserting a policy for another identity moves it.
        index.insert(PolicyId::from_bytes([11; 16]), policy(11, bob));
        assert_eq!(ids(&index, alice), [PolicyId::from_bytes([10; 16])]);
        assert_eq!(ids(&index, bob).len(), 2);
        assert!(index.remove(&PolicyId::from_bytes([10; 16])).is_some());
        assert!(ids(&index, alice).is_empty());
        assert!(index.remove(&PolicyId::from_bytes([10; 16])).is_none());
        assert_eq!(index.values().count(), 2);
        assert!(index.contains_key(&PolicyId::from_bytes([12; 16])));
    }
}
