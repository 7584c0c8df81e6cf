//! Start-up seeding (`--seed-file`): reads a YAML (`.yaml`, `.yml`) or JSON (`.json`) file
//! describing instances, identities with fixed API keys, access policies, service
//! authorizations and keys with fixed ids (and, where given, fixed material), and makes the
//! stored state contain them, acting as the bootstrap admin through the domain's own create
//! functions, so every rule a caller would meet is checked.
//!
//! Two stages, so nothing is half-checked: [`SeedFile::load`] parses the whole file into typed
//! values (ids, aliases, CRNs, material) and rejects a bad entry before anything is written;
//! [`apply`] then walks instances, keys, identities, policies and authorizations in that order.
//!
//! Idempotent: an object that already exists with the file's attributes is left alone; one
//! that exists with different attributes (or different material) stops the start-up with an
//! error naming it. A key's first version id is fixed too (given, or derived from the key id),
//! because every ciphertext names the version that made it: a key seeded with the same
//! material and ids in another data directory unwraps ciphertext made in this one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::auth::{Identity, IdentityKind};
use crate::clock::Timestamp;
use crate::kms::iam::{ApiKeyOwner, Role, is_valid_api_key_secret, parse_api_key_id};
use crate::kms::ids::{
    AccountId, Alias, ApiKeyId, AuthorizationId, IdentityId, InstanceId, InstanceRef, KeyId,
    KeyVersionId, PolicyId, Region, ResourceCrn, SourceService,
};
use crate::kms::keystore::MaterialUse;
use crate::kms::records::{Flavor, KeyKind};
use crate::kms::{Kms, Material, NewInstance, NewKey};

/// Why seeding failed: the file, the entry (`keys[2] (id …)`) and the problem.
#[derive(Debug, thiserror::Error)]
#[error("seed file {}: {entry}: {problem}", file.as_ref().map_or_else(|| "<unnamed>".into(), |f| f.display().to_string()))]
pub struct SeedError {
    /// The file, once known.
    pub file: Option<PathBuf>,
    /// The entry, such as `keys[1] (id 6a1e…)`, or `file` for the file as a whole.
    pub entry: String,
    /// What is wrong.
    pub problem: String,
}

impl SeedError {
    fn new(entry: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            file: None,
            entry: entry.into(),
            problem: problem.into(),
        }
    }

    /// The same error, naming `path` as the file.
    pub fn in_file(mut self, path: &Path) -> Self {
        self.file = Some(path.to_path_buf());
        self
    }
}

/// What [`apply`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeedSummary {
    /// Objects created.
    pub created: usize,
    /// Objects that already existed as the file describes them.
    pub unchanged: usize,
}

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFile {
    instances: Vec<RawInstance>,
    identities: Vec<RawIdentity>,
    policies: Vec<RawPolicy>,
    authorizations: Vec<RawAuthorization>,
    keys: Vec<RawKey>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawFlavor {
    KeyProtect,
    Hpcs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    id: String,
    name: String,
    #[serde(default)]
    flavor: Option<RawFlavor>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    account: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    id: String,
    kind: IdentityKind,
    name: String,
    #[serde(default)]
    source_instance: Option<String>,
    api_keys: Vec<RawApiKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    secret: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    id: String,
    identity: String,
    #[serde(default)]
    instance: Option<String>,
    roles: Vec<Role>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    id: String,
    source: String,
    #[serde(default)]
    source_instance: Option<String>,
    target: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Root,
    Standard,
}

/// `{hex: ...}` or `{base64: ...}` (a struct, not an enum: YAML would want a tag).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaterial {
    #[serde(default)]
    hex: Option<String>,
    #[serde(default)]
    base64: Option<String>,
}

impl std::fmt::Debug for RawMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawMaterial(..)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    instance: String,
    name: String,
    #[serde(default)]
    description: String,
    kind: RawKind,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    expiration_time: Option<String>,
    #[serde(default)]
    material: Option<RawMaterial>,
    #[serde(default)]
    size_bits: Option<u32>,
    #[serde(default)]
    version_id: Option<String>,
}

// ---------------------------------------------------------------------------------------
// The file, parsed.

#[derive(Debug)]
struct SeedInstance {
    entry: String,
    id: InstanceId,
    name: String,
    flavor: Flavor,
    region: Option<Region>,
    account: Option<AccountId>,
}

#[derive(Debug)]
struct SeedApiKey {
    id: ApiKeyId,
    secret: Zeroizing<String>,
    description: String,
}

#[derive(Debug)]
struct SeedIdentity {
    entry: String,
    id: IdentityId,
    kind: IdentityKind,
    name: String,
    service: Option<SourceService>,
    source_instance: Option<ResourceCrn>,
    api_keys: Vec<SeedApiKey>,
}

#[derive(Debug)]
struct SeedPolicy {
    entry: String,
    id: PolicyId,
    identity: IdentityId,
    instance: Option<InstanceId>,
    roles: Vec<Role>,
}

#[derive(Debug)]
struct SeedAuthorization {
    entry: String,
    id: AuthorizationId,
    source: SourceService,
    source_instance: Option<ResourceCrn>,
    target: InstanceId,
}

#[derive(Debug)]
struct SeedKey {
    entry: String,
    id: KeyId,
    version: KeyVersionId,
    instance: InstanceId,
    name: String,
    description: String,
    kind: KeyKind,
    aliases: Vec<Alias>,
    expiration_time: Option<Timestamp>,
    material: Option<Zeroizing<Vec<u8>>>,
    size_bytes: usize,
}

/// A parsed, checked seed file.
#[derive(Debug)]
pub struct SeedFile {
    instances: Vec<SeedInstance>,
    identities: Vec<SeedIdentity>,
    policies: Vec<SeedPolicy>,
    authorizations: Vec<SeedAuthorization>,
    keys: Vec<SeedKey>,
}

/// The format of a seed file, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedFormat {
    /// `.yaml` or `.yml`.
    Yaml,
    /// `.json`.
    Json,
}

impl SeedFormat {
    /// The format of `path`, by its extension (case-insensitive).
    pub fn of(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// The first version id of a seeded key that does not give one: derived from the key id, so
/// every data directory seeded from the same file agrees on it.
pub fn derived_version_id(key: KeyId) -> KeyVersionId {
    let digest = Sha256::new()
        .chain_update(b"kmsim-seed-version-v1")
        .chain_update(key.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    KeyVersionId::from_uuid(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

fn parse<T: std::str::FromStr>(entry: &str, field: &str, text: &str) -> Result<T, SeedError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| SeedError::new(entry, format!("field `{field}` ({text:?}): {e}")))
}

fn parse_opt<T: std::str::FromStr>(
    entry: &str,
    field: &str,
    text: Option<&String>,
) -> Result<Option<T>, SeedError>
where
    T::Err: std::fmt::Display,
{
    text.map(|t| parse(entry, field, t)).transpose()
}

fn unique<T: std::hash::Hash + Eq>(
    seen: &mut HashSet<T>,
    id: T,
    entry: &str,
) -> Result<(), SeedError> {
    if seen.insert(id) {
        Ok(())
    } else {
        Err(SeedError::new(entry, "the id appears twice in the file"))
    }
}

fn decode_material(entry: &str, raw: &RawMaterial) -> Result<Zeroizing<Vec<u8>>, SeedError> {
    use base64::Engine;
    let bytes = match (&raw.hex, &raw.base64) {
        (Some(text), None) => hex::decode(text.trim())
            .map_err(|_| SeedError::new(entry, "field `material.hex` is not hex"))?,
        (None, Some(text)) => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SeedError::new(entry, "field `material.base64` is not base64"))?,
        _ => {
            return Err(SeedError::new(
                entry,
                "field `material` needs exactly one of `hex` and `base64`",
            ));
        }
    };
    let bytes = Zeroizing::new(bytes);
    if matches!(bytes.len(), 16 | 24 | 32) {
        Ok(bytes)
    } else {
        Err(SeedError::new(
            entry,
            format!(
                "field `material` must be 16, 24 or 32 bytes, not {}",
                bytes.len()
            ),
        ))
    }
}

impl SeedFile {
    /// Reads and parses `path` (YAML or JSON by extension). Every error names the file.
    pub fn load(path: &Path) -> Result<Self, SeedError> {
        let in_file = |e: SeedError| e.in_file(path);
        let format = SeedFormat::of(path).ok_or_else(|| {
            in_file(SeedError::new(
                "file",
                "unknown extension: use .yaml, .yml or .json",
            ))
        })?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| in_file(SeedError::new("file", format!("cannot read: {e}"))))?;
        Self::parse(&text, format).map_err(in_file)
    }

    /// Parses seed-file text.
    pub fn parse(text: &str, format: SeedFormat) -> Result<Self, SeedError> {
        let raw: RawFile = match format {
            SeedFormat::Yaml if text.trim().is_empty() => RawFile::default(),
            SeedFormat::Yaml => serde_yaml_ng::from_str(text)
                .map_err(|e| SeedError::new("file", format!("not a valid seed file: {e}")))?,
            SeedFormat::Json => serde_json::from_str(text)
                .map_err(|e| SeedError::new("file", format!("not a valid seed file: {e}")))?,
        };
        Self::check(raw)
    }

    fn check(raw: RawFile) -> Result<Self, SeedError> {
        let mut instance_ids = HashSet::new();
        let mut instances = Vec::new();
        for (i, r) in raw.instances.iter().enumerate() {
            let entry = format!("instances[{i}] (id {})", r.id);
            let id: InstanceId = parse(&entry, "id", &r.id)?;
            unique(&mut instance_ids, id, &entry)?;
            let name = r.name.trim().to_owned();
            if name.is_empty() || name.chars().count() > 90 {
                return Err(SeedError::new(
                    &entry,
                    "field `name` must be 1 to 90 characters",
                ));
            }
            instances.push(SeedInstance {
                id,
                name,
                flavor: match r.flavor.unwrap_or(RawFlavor::KeyProtect) {
                    RawFlavor::KeyProtect => Flavor::KeyProtect,
                    RawFlavor::Hpcs => Flavor::Hpcs,
                },
                region: parse_opt(&entry, "region", r.region.as_ref())?,
                account: parse_opt(&entry, "account", r.account.as_ref())?,
                entry,
            });
        }

        let mut identity_ids = HashSet::new();
        let mut api_key_ids = HashSet::new();
        let mut identities = Vec::new();
        for (i, r) in raw.identities.iter().enumerate() {
            let entry = format!("identities[{i}] (id {})", r.id);
            let id: IdentityId = parse(&entry, "id", &r.id)?;
            unique(&mut identity_ids, id, &entry)?;
            let service = match r.kind {
                IdentityKind::Service => Some(parse::<SourceService>(&entry, "name", &r.name)?),
                IdentityKind::User => None,
            };
            if r.kind == IdentityKind::User && r.source_instance.is_some() {
                return Err(SeedError::new(
                    &entry,
                    "field `source_instance` is for service identities only",
                ));
            }
            if r.kind == IdentityKind::User && r.name.trim().is_empty() {
                return Err(SeedError::new(&entry, "field `name` must not be empty"));
            }
            if r.api_keys.is_empty() {
                return Err(SeedError::new(
                    &entry,
                    "field `api_keys` needs at least one API key (an identity without one cannot act)",
                ));
            }
            let mut api_keys = Vec::new();
            for (k, key) in r.api_keys.iter().enumerate() {
                let key_entry = format!("{entry} api_keys[{k}]");
                let secret = Zeroizing::new(key.secret.trim().to_owned());
                let key_id = parse_api_key_id(&secret)
                    .filter(|_| is_valid_api_key_secret(&secret))
                    .ok_or_else(|| {
                        SeedError::new(
                            &key_entry,
                            "field `secret` must be a kmsim API key: kmsim-ak-<32 hex digits: the key's id>-<16 to 128 characters of A-Z a-z 0-9 - _>",
                        )
                    })?;
                unique(&mut api_key_ids, key_id, &key_entry)?;
                api_keys.push(SeedApiKey {
                    id: key_id,
                    secret,
                    description: key.description.clone(),
                });
            }
            identities.push(SeedIdentity {
                id,
                kind: r.kind,
                name: r.name.trim().to_owned(),
                service,
                source_instance: parse_opt(&entry, "source_instance", r.source_instance.as_ref())?,
                api_keys,
                entry,
            });
        }

        let mut policy_ids = HashSet::new();
        let mut policies = Vec::new();
        for (i, r) in raw.policies.iter().enumerate() {
            let entry = format!("policies[{i}] (id {})", r.id);
            let id: PolicyId = parse(&entry, "id", &r.id)?;
            unique(&mut policy_ids, id, &entry)?;
            if r.roles.is_empty() {
                return Err(SeedError::new(&entry, "field `roles` must not be empty"));
            }
            policies.push(SeedPolicy {
                id,
                identity: parse(&entry, "identity", &r.identity)?,
                instance: parse_opt(&entry, "instance", r.instance.as_ref())?,
                roles: r.roles.clone(),
                entry,
            });
        }

        let mut authorization_ids = HashSet::new();
        let mut authorizations = Vec::new();
        for (i, r) in raw.authorizations.iter().enumerate() {
            let entry = format!("authorizations[{i}] (id {})", r.id);
            let id: AuthorizationId = parse(&entry, "id", &r.id)?;
            unique(&mut authorization_ids, id, &entry)?;
            authorizations.push(SeedAuthorization {
                id,
                source: parse(&entry, "source", &r.source)?,
                source_instance: parse_opt(&entry, "source_instance", r.source_instance.as_ref())?,
                target: parse(&entry, "target", &r.target)?,
                entry,
            });
        }

        let mut key_ids = HashSet::new();
        let mut version_ids = HashSet::new();
        let mut keys = Vec::new();
        for (i, r) in raw.keys.iter().enumerate() {
            let entry = format!("keys[{i}] (id {})", r.id);
            let id: KeyId = parse(&entry, "id", &r.id)?;
            unique(&mut key_ids, id, &entry)?;
            let version = match &r.version_id {
                Some(text) => parse(&entry, "version_id", text)?,
                None => derived_version_id(id),
            };
            if !version_ids.insert(version) {
                return Err(SeedError::new(
                    &entry,
                    "the version id appears twice in the file",
                ));
            }
            let name = r.name.trim().to_owned();
            if name.len() < 2 || name.chars().count() > 90 {
                return Err(SeedError::new(
                    &entry,
                    "field `name` must be 2 to 90 characters",
                ));
            }
            let aliases = r
                .aliases
                .iter()
                .map(|a| parse::<Alias>(&entry, "aliases", a))
                .collect::<Result<Vec<_>, _>>()?;
            let expiration_time = match &r.expiration_time {
                Some(text) => Some(Timestamp::parse_rfc3339(text).ok_or_else(|| {
                    SeedError::new(
                        &entry,
                        format!("field `expiration_time` ({text:?}) is not an RFC 3339 time"),
                    )
                })?),
                None => None,
            };
            let material = r
                .material
                .as_ref()
                .map(|m| decode_material(&entry, m))
                .transpose()?;
            let size_bytes = match (&material, r.size_bits) {
                (Some(_), Some(_)) => {
                    return Err(SeedError::new(
                        &entry,
                        "give `material` or `size_bits`, not both (the material's length is its size)",
                    ));
                }
                (Some(bytes), None) => bytes.len(),
                (None, None) => 32,
                (None, Some(bits @ (128 | 192 | 256))) => bits as usize / 8,
                (None, Some(bits)) => {
                    return Err(SeedError::new(
                        &entry,
                        format!("field `size_bits` must be 128, 192 or 256, not {bits}"),
                    ));
                }
            };
            keys.push(SeedKey {
                id,
                version,
                instance: parse(&entry, "instance", &r.instance)?,
                name,
                description: r.description.clone(),
                kind: match r.kind {
                    RawKind::Root => KeyKind::Root,
                    RawKind::Standard => KeyKind::Standard,
                },
                aliases,
                expiration_time,
                material,
                size_bytes,
                entry,
            });
        }
        Ok(Self {
            instances,
            identities,
            policies,
            authorizations,
            keys,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Applying it.

fn conflict(entry: &str, what: &str) -> SeedError {
    SeedError::new(
        entry,
        format!(
            "already exists with a different {what} (the stored object conflicts with the file)"
        ),
    )
}

fn refused(entry: &str, error: crate::error::KmsError) -> SeedError {
    SeedError::new(entry, format!("refused: {error}"))
}

/// Runs `create` with `ids` as the ids the domain mints, and checks that it used them all.
fn with_ids<T>(
    kms: &Kms,
    entry: &str,
    ids: &[uuid::Uuid],
    create: impl FnOnce() -> Result<T, crate::error::KmsError>,
) -> Result<T, SeedError> {
    let (result, used) = kms.randomness().preset_ids(ids, create);
    let value = result.map_err(|e| refused(entry, e))?;
    if used == ids.len() {
        Ok(value)
    } else {
        Err(SeedError::new(
            entry,
            "internal: the domain did not take the file's ids",
        ))
    }
}

/// Checks the whole of `file` against the stored state without writing anything: every
/// entry that exists must match, and every entry to create must name instances and
/// identities that exist (stored or created by the file), aliases free in their instance,
/// API key ids no other identity owns, and an instance whose keystore is intact. Start-up
/// runs it before the bootstrap admin's key file is written and before [`apply`], so a bad
/// file stops the start with nothing written (what can still fail in `apply` is the store or
/// the HSM itself).
pub fn check(kms: &Kms, file: &SeedFile) -> Result<(), SeedError> {
    let mut new_instances = HashSet::new();
    for instance in &file.instances {
        if !instance_exists(kms, instance)? {
            new_instances.insert(instance.id);
        }
    }
    let instance_known = |id: InstanceId| new_instances.contains(&id) || kms.instance(id).is_ok();
    let mut taken: HashSet<(InstanceId, &Alias)> = HashSet::new();
    for key in &file.keys {
        if key_exists(kms, key)? {
            continue;
        }
        let entry = &key.entry;
        if !new_instances.contains(&key.instance) {
            kms.seed_target_ready(key.instance)
                .map_err(|e| refused(entry, e))?;
        }
        for alias in &key.aliases {
            let owner = kms.alias_owner(key.instance, alias);
            if owner.is_some_and(|owner| owner != key.id) || !taken.insert((key.instance, alias)) {
                return Err(SeedError::new(
                    entry,
                    format!(
                        "refused: alias {alias} is already used in instance {}",
                        key.instance
                    ),
                ));
            }
        }
    }
    let mut new_identities = std::collections::HashMap::new();
    for identity in &file.identities {
        let entry = &identity.entry;
        let exists = match kms.identity_record(identity.id) {
            Some(record) => {
                if record.kind != identity.kind {
                    return Err(conflict(entry, "kind"));
                }
                if record.name != identity.name {
                    return Err(conflict(entry, "name"));
                }
                if record.source_instance != identity.source_instance {
                    return Err(conflict(entry, "source_instance"));
                }
                true
            }
            None => {
                new_identities.insert(identity.id, identity.kind);
                false
            }
        };
        if !exists && identity.api_keys.is_empty() {
            return Err(SeedError::new(entry, "no API key"));
        }
        for key in &identity.api_keys {
            let owned_elsewhere = if exists {
                kms.api_key_matches(key.id, identity.id, &key.secret) == Some(false)
            } else {
                kms.api_key_matches(key.id, identity.id, "").is_some()
            };
            if owned_elsewhere {
                return Err(SeedError::new(
                    entry,
                    format!(
                        "API key {} already exists with another secret or identity",
                        hex::encode(key.id.as_bytes())
                    ),
                ));
            }
        }
    }
    for policy in &file.policies {
        if policy_exists(kms, policy)? {
            continue;
        }
        let entry = &policy.entry;
        let kind = new_identities
            .get(&policy.identity)
            .copied()
            .or_else(|| kms.identity_record(policy.identity).map(|r| r.kind));
        match kind {
            None => {
                return Err(SeedError::new(
                    entry,
                    format!("refused: identity {} not found", policy.identity),
                ));
            }
            Some(kind) if kind != IdentityKind::User => {
                return Err(SeedError::new(
                    entry,
                    "refused: policies are for users; a service acts through authorizations",
                ));
            }
            Some(_) => {}
        }
        let admin = policy.roles.contains(&Role::Administrator);
        match policy.instance {
            Some(instance) if !admin => {
                if !instance_known(instance) {
                    return Err(SeedError::new(
                        entry,
                        format!("refused: instance {instance} not found"),
                    ));
                }
            }
            None if admin && policy.roles.len() == 1 => {}
            Some(_) | None => {
                return Err(SeedError::new(
                    entry,
                    "refused: Administrator is server-wide and alone; other roles need an instance",
                ));
            }
        }
    }
    for authorization in &file.authorizations {
        if authorization_exists(kms, authorization)? {
            continue;
        }
        if !instance_known(authorization.target) {
            return Err(SeedError::new(
                &authorization.entry,
                format!("refused: instance {} not found", authorization.target),
            ));
        }
    }
    Ok(())
}

/// Makes the stored state contain everything in `file` (see the module documentation).
/// Call it before the server takes requests, after [`check`].
pub fn apply(kms: &Kms, file: &SeedFile) -> Result<SeedSummary, SeedError> {
    let admin = kms
        .bootstrap_admin_identity()
        .ok_or_else(|| SeedError::new("file", "the bootstrap admin does not exist"))?;
    let mut summary = SeedSummary::default();
    let mut count = |created: bool| {
        if created {
            summary.created += 1;
        } else {
            summary.unchanged += 1;
        }
    };
    for instance in &file.instances {
        count(seed_instance(kms, &admin, instance)?);
    }
    for key in &file.keys {
        count(seed_key(kms, &admin, key)?);
    }
    for identity in &file.identities {
        count(seed_identity(kms, &admin, identity)?);
    }
    for policy in &file.policies {
        count(seed_policy(kms, &admin, policy)?);
    }
    for authorization in &file.authorizations {
        count(seed_authorization(kms, &admin, authorization)?);
    }
    Ok(summary)
}

fn seed_instance(kms: &Kms, admin: &Identity, seed: &SeedInstance) -> Result<bool, SeedError> {
    let entry = &seed.entry;
    if instance_exists(kms, seed)? {
        return Ok(false);
    }
    let new = NewInstance {
        name: seed.name.clone(),
        flavor: seed.flavor,
        region: seed.region.clone(),
        account: seed.account.clone(),
    };
    with_ids(kms, entry, &[uuid_of(seed.id.as_bytes())], || {
        kms.create_instance(admin, new)
    })?;
    Ok(true)
}

/// Whether the instance exists as the file describes it; an error when it exists otherwise.
fn instance_exists(kms: &Kms, seed: &SeedInstance) -> Result<bool, SeedError> {
    let entry = &seed.entry;
    if let Ok(existing) = kms.instance(seed.id) {
        let record = &existing.record;
        if record.name != seed.name {
            return Err(conflict(entry, "name"));
        }
        if record.flavor != seed.flavor {
            return Err(conflict(entry, "flavor"));
        }
        if seed.region.as_ref().is_some_and(|r| *r != record.region) {
            return Err(conflict(entry, "region"));
        }
        if seed.account.as_ref().is_some_and(|a| *a != record.account) {
            return Err(conflict(entry, "account"));
        }
        return Ok(true);
    }
    Ok(false)
}

fn seed_key(kms: &Kms, admin: &Identity, seed: &SeedKey) -> Result<bool, SeedError> {
    let entry = &seed.entry;
    if key_exists(kms, seed)? {
        return Ok(false);
    }
    let new = NewKey {
        instance: InstanceRef::Id(seed.instance),
        name: seed.name.clone(),
        description: seed.description.clone(),
        kind: seed.kind,
        expiration_time: seed.expiration_time,
        aliases: seed.aliases.clone(),
        material: match &seed.material {
            Some(bytes) => Material::Plain(bytes.clone()),
            None => Material::Generate(seed.size_bytes),
        },
    };
    let ids = [
        uuid_of(seed.id.as_bytes()),
        uuid_of(seed.version.as_bytes()),
    ];
    with_ids(kms, entry, &ids, || kms.create_key(admin, new))?;
    Ok(true)
}

/// Whether the key exists as the file describes it (material included); an error when it
/// exists otherwise.
fn key_exists(kms: &Kms, seed: &SeedKey) -> Result<bool, SeedError> {
    let entry = &seed.entry;
    if let Some(record) = kms.key_record(seed.id) {
        if record.instance != seed.instance {
            return Err(conflict(entry, "instance"));
        }
        if record.name != seed.name {
            return Err(conflict(entry, "name"));
        }
        if record.description != seed.description {
            return Err(conflict(entry, "description"));
        }
        if record.kind != seed.kind {
            return Err(conflict(entry, "kind"));
        }
        if record.expiration_time != seed.expiration_time {
            return Err(conflict(entry, "expiration_time"));
        }
        if !seed
            .aliases
            .iter()
            .all(|a| record.aliases.iter().any(|r| r.alias == *a))
        {
            return Err(conflict(entry, "set of aliases"));
        }
        let Some(first) = record.versions.first() else {
            return Err(conflict(entry, "version history"));
        };
        if first.id != seed.version {
            return Err(conflict(entry, "first version id"));
        }
        if record.size_bytes != seed.size_bytes || record.imported != seed.material.is_some() {
            return Err(conflict(entry, "material"));
        }
        if let Some(material) = &seed.material {
            let usage = match seed.kind {
                KeyKind::Root => MaterialUse::Root,
                KeyKind::Standard => MaterialUse::Standard,
            };
            let same = kms
                .material_matches(seed.instance, first.handle, usage, material)
                .map_err(|e| refused(entry, e))?;
            if !same {
                return Err(conflict(entry, "material"));
            }
        }
        return Ok(true);
    }
    Ok(false)
}

fn uuid_of(bytes: &[u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*bytes)
}

fn seed_identity(kms: &Kms, admin: &Identity, seed: &SeedIdentity) -> Result<bool, SeedError> {
    let entry = &seed.entry;
    let mut created = false;
    let mut keys = seed.api_keys.iter();
    match kms.identity_record(seed.id) {
        Some(record) => {
            if record.kind != seed.kind {
                return Err(conflict(entry, "kind"));
            }
            if record.name != seed.name {
                return Err(conflict(entry, "name"));
            }
            if record.source_instance != seed.source_instance {
                return Err(conflict(entry, "source_instance"));
            }
        }
        None => {
            // The first API key creates the identity with it.
            let Some(first) = keys.next() else {
                return Err(SeedError::new(entry, "no API key"));
            };
            if kms.api_key_matches(first.id, seed.id, "").is_some() {
                return Err(SeedError::new(
                    entry,
                    "its first API key's id belongs to another identity",
                ));
            }
            let owner = match &seed.service {
                Some(service) => ApiKeyOwner::NewService {
                    service: service.clone(),
                    source_instance: seed.source_instance.clone(),
                },
                None => ApiKeyOwner::NewUser {
                    name: seed.name.clone(),
                },
            };
            with_ids(kms, entry, &[uuid_of(seed.id.as_bytes())], || {
                kms.create_api_key_with(
                    admin,
                    owner,
                    first.description.clone(),
                    Some(first.secret.clone()),
                )
            })?;
            created = true;
        }
    }
    for key in keys {
        match kms.api_key_matches(key.id, seed.id, &key.secret) {
            Some(true) => {}
            Some(false) => {
                return Err(SeedError::new(
                    entry,
                    format!(
                        "API key {} already exists with another secret or identity",
                        hex::encode(key.id.as_bytes())
                    ),
                ));
            }
            None => {
                kms.create_api_key_with(
                    admin,
                    ApiKeyOwner::Existing(seed.id),
                    key.description.clone(),
                    Some(key.secret.clone()),
                )
                .map_err(|e| refused(entry, e))?;
                created = true;
            }
        }
    }
    Ok(created)
}

fn seed_policy(kms: &Kms, admin: &Identity, seed: &SeedPolicy) -> Result<bool, SeedError> {
    let entry = &seed.entry;
    if policy_exists(kms, seed)? {
        return Ok(false);
    }
    with_ids(kms, entry, &[uuid_of(seed.id.as_bytes())], || {
        kms.create_access_policy(admin, seed.identity, seed.instance, seed.roles.clone())
    })?;
    Ok(true)
}

/// Whether the policy exists as the file describes it; an error when it exists otherwise.
fn policy_exists(kms: &Kms, seed: &SeedPolicy) -> Result<bool, SeedError> {
    let entry = &seed.entry;
    if let Some(record) = kms.policy_record(seed.id) {
        if record.identity != seed.identity {
            return Err(conflict(entry, "identity"));
        }
        if record.instance != seed.instance {
            return Err(conflict(entry, "instance"));
        }
        if record.roles != seed.roles {
            return Err(conflict(entry, "set of roles"));
        }
        return Ok(true);
    }
    Ok(false)
}

fn seed_authorization(
    kms: &Kms,
    admin: &Identity,
    seed: &SeedAuthorization,
) -> Result<bool, SeedError> {
    let entry = &seed.entry;
    if authorization_exists(kms, seed)? {
        return Ok(false);
    }
    with_ids(kms, entry, &[uuid_of(seed.id.as_bytes())], || {
        kms.create_authorization(
            admin,
            seed.source.clone(),
            seed.source_instance.clone(),
            seed.target,
        )
    })?;
    Ok(true)
}

/// Whether the authorization exists as the file describes it; an error when it exists
/// otherwise.
fn authorization_exists(kms: &Kms, seed: &SeedAuthorization) -> Result<bool, SeedError> {
    let entry = &seed.entry;
    if let Some(record) = kms.authorization_record(seed.id) {
        if record.source != seed.source {
            return Err(conflict(entry, "source"));
        }
        if record.source_instance != seed.source_instance {
            return Err(conflict(entry, "source_instance"));
        }
        if record.target != seed.target {
            return Err(conflict(entry, "target"));
        }
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY: &str = "kmsim-ak-0123456789abcdef0123456789abcdef-abcdefghijklmnopqrstuv";

    fn yaml(text: &str) -> Result<SeedFile, SeedError> {
        SeedFile::parse(text, SeedFormat::Yaml)
    }

    #[test]
    fn format_by_extension() {
        assert_eq!(SeedFormat::of(Path::new("a.YAML")), Some(SeedFormat::Yaml));
        assert_eq!(SeedFormat::of(Path::new("a.yml")), Some(SeedFormat::Yaml));
        assert_eq!(SeedFormat::of(Path::new("a.json")), Some(SeedFormat::Json));
        assert_eq!(SeedFormat::of(Path::new("a.toml")), None);
        assert_eq!(SeedFormat::of(Path::new("seed")), None);
    }

    #[test]
    fn bad_entries_are_named() {
        let cases = [
            (
                "instances: [{id: nope, name: x}]",
                "instances[0] (id nope)",
                "`id`",
            ),
            (
                "keys: [{id: 6a1e3f52-4c7d-4e0f-9a3b-0c1d2e3f4a5b, instance: 6a1e3f52-4c7d-4e0f-9a3b-0c1d2e3f4a5c, name: kk, kind: root, material: {hex: '00ff'}}]",
                "keys[0]",
                "16, 24 or 32 bytes",
            ),
            (
                "identities: [{id: 6a1e3f52-4c7d-4e0f-9a3b-0c1d2e3f4a5b, kind: user, name: a, api_keys: [{secret: hunter2}]}]",
                "identities[0] (id 6a1e3f52-4c7d-4e0f-9a3b-0c1d2e3f4a5b) api_keys[0]",
                "kmsim-ak-",
            ),
            ("keys: [{id: x, colour: red}]", "file", "colour"),
            ("instances: [", "file", "not a valid seed file"),
        ];
        for (text, entry, problem) in cases {
            let error = yaml(text).unwrap_err();
            assert!(error.entry.starts_with(entry), "{text}: {error}");
            assert!(error.problem.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let text = "instances: [{id: 6a1e3f52-4c7d-4e0f-9a3b-0c1d2e3f4a5b, name: a}, {id: 6a1e3f52-4c7d-4e0f-9a3b-0c1d2e3f4a5b, name: b}]";
        let error = yaml(text).unwrap_err();
        assert_eq!(
            error.entry,
            "instances[1] (id 6a1e3f52-4c7d-4e0f-9a3b-0c1d2e3f4a5b)"
        );
    }

    #[test]
    fn api_key_shape() {
        assert!(is_valid_api_key_secret(KEY));
        assert!(!is_valid_api_key_secret(
            "kmsim-ak-0123456789abcdef0123456789abcdef-short"
        ));
        assert!(!is_valid_api_key_secret(
            "kmsim-ak-0123456789abcdef0123456789abcdef-has space in it!!"
        ));
        assert!(!is_valid_api_key_secret(
            "kmsim-ak-0123456789abcdef0123456789abcdefXabcdefghijklmnopqrstuv"
        ));
    }

    #[test]
    fn derived_version_ids_are_stable_and_distinct() {
        let a = KeyId::from_bytes([1; 16]);
        let b = KeyId::from_bytes([2; 16]);
        assert_eq!(derived_version_id(a), derived_version_id(a));
        assert_ne!(derived_version_id(a), derived_version_id(b));
    }
}
