//! Resource names: the [`Crn`] of a KMS instance or key, and the [`KeyRef`] that names a key in
//! a request. Both are parsed once ("parse, don't validate"): a value of either type is always
//! well-formed, prints back to the exact string the server accepts, and exposes its parts
//! through accessors.
//!
//! Formats (see `proto/kmsim/v1/key.proto` and the IBM CRN specification):
//!
//! - key CRN: `crn:v1:<env>:public:<kms|hs-crypto>:<region>:a/<account>:<instance>:key:<key-id>`
//! - instance CRN: `crn:v1:<env>:public:<kms|hs-crypto>:<region>:a/<account>:<instance>::`
//! - key path: `instances/{instance-id}/keys/{key-id-or-alias}`

use std::fmt;
use std::str::FromStr;

use kmsim_proto::v1::{InstanceFlavor, Key};

/// Why a CRN or key reference was refused. Each variant names the part that is wrong, so
/// callers can match on it; none carries the offending text (it may be long or sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input is empty.
    #[error("empty resource name")]
    Empty,
    /// The input does not start with `crn:v1:` (or `crn:` with another version).
    #[error("not a CRN: it must start with \"crn:v1:\"")]
    NotACrn,
    /// The CRN version is not `v1`.
    #[error("unsupported CRN version (only v1)")]
    UnsupportedVersion,
    /// The CRN does not have exactly ten `:`-separated segments.
    #[error("a CRN has exactly 10 ':'-separated segments")]
    SegmentCount,
    /// The environment (`bluemix`, `staging`, ...) is empty or has characters other than
    /// lowercase letters, digits and `-`.
    #[error("invalid CRN environment")]
    InvalidEnvironment,
    /// The CRN type is not `public`.
    #[error("CRN type must be \"public\"")]
    NotPublic,
    /// The service name is neither `kms` nor `hs-crypto`.
    #[error("CRN service must be \"kms\" or \"hs-crypto\"")]
    UnsupportedService,
    /// The region is empty or has characters other than lowercase letters, digits and `-`.
    #[error("invalid CRN region")]
    InvalidRegion,
    /// The scope is not `a/<account>` with a non-empty alphanumeric account.
    #[error("invalid CRN scope: expected \"a/<account>\" with an alphanumeric account")]
    InvalidAccount,
    /// The instance id is empty or has characters other than letters, digits and `-`.
    #[error("invalid instance id")]
    InvalidInstance,
    /// The resource type is neither `key` nor empty (an instance CRN).
    #[error("unsupported CRN resource type (only \"key\", or empty for an instance)")]
    UnsupportedResourceType,
    /// The key id is empty or has characters other than letters, digits, `-` and `_`, or the
    /// resource of an instance CRN is not empty.
    #[error("invalid key id in CRN")]
    InvalidKeyId,
    /// A key reference was given an instance CRN (one without `:key:<id>`).
    #[error("an instance CRN does not name a key")]
    NotAKeyCrn,
    /// A key reference is neither a CRN nor `instances/{instance}/keys/{key}`.
    #[error("a key reference is a key CRN or \"instances/{{instance}}/keys/{{id-or-alias}}\"")]
    InvalidKeyPath,
    /// The key id or alias of a key path is empty, longer than 90 characters, or has
    /// characters other than letters, digits, `-` and `_`.
    #[error("invalid key id or alias")]
    InvalidKey,
}

/// The service a CRN names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrnService {
    /// IBM Key Protect (`kms`).
    Kms,
    /// IBM Hyper Protect Crypto Services (`hs-crypto`).
    HsCrypto,
}

impl CrnService {
    /// The service name as written in a CRN.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kms => "kms",
            Self::HsCrypto => "hs-crypto",
        }
    }

    /// The instance flavor this service corresponds to.
    pub fn flavor(self) -> InstanceFlavor {
        match self {
            Self::Kms => InstanceFlavor::KeyProtect,
            Self::HsCrypto => InstanceFlavor::Hpcs,
        }
    }
}

impl fmt::Display for CrnService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed Cloud Resource Name of a KMS instance or of a key in one.
///
/// ```
/// use kmsim_client::{Crn, CrnService};
///
/// let crn: Crn = "crn:v1:bluemix:public:kms:us-south:a/abc123:4f6c0e1a-0000-4000-8000-000000000001:key:9a1e0e1a-0000-4000-8000-000000000002"
///     .parse()?;
/// assert_eq!(crn.service(), CrnService::Kms);
/// assert_eq!(crn.region(), "us-south");
/// assert_eq!(crn.account(), "abc123");
/// assert_eq!(crn.key_id(), Some("9a1e0e1a-0000-4000-8000-000000000002"));
/// assert!(crn.instance_crn().to_string().ends_with("-000000000001::"));
/// # Ok::<(), kmsim_client::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Crn {
    env: String,
    service: CrnService,
    region: String,
    account: String,
    instance: String,
    key_id: Option<String>,
}

fn is_lower_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_instance_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn is_key_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 90
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Crn {
    /// Parses a key or instance CRN.
    ///
    /// # Errors
    /// A [`ParseError`] naming the first malformed part.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        let parts: Vec<&str> = s.split(':').collect();
        if parts.first() != Some(&"crn") || parts.len() < 2 {
            return Err(ParseError::NotACrn);
        }
        if parts[1] != "v1" {
            return Err(ParseError::UnsupportedVersion);
        }
        let [
            _,
            _,
            env,
            ctype,
            service,
            region,
            scope,
            instance,
            rtype,
            resource,
        ] = parts[..]
        else {
            return Err(ParseError::SegmentCount);
        };
        if !is_lower_token(env) {
            return Err(ParseError::InvalidEnvironment);
        }
        if ctype != "public" {
            return Err(ParseError::NotPublic);
        }
        let service = match service {
            "kms" => CrnService::Kms,
            "hs-crypto" => CrnService::HsCrypto,
            _ => return Err(ParseError::UnsupportedService),
        };
        if !is_lower_token(region) {
            return Err(ParseError::InvalidRegion);
        }
        let account = scope
            .strip_prefix("a/")
            .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or(ParseError::InvalidAccount)?;
        if !is_instance_id(instance) {
            return Err(ParseError::InvalidInstance);
        }
        let key_id = match rtype {
            "" if resource.is_empty() => None,
            "" => return Err(ParseError::InvalidKeyId),
            "key" if is_key_token(resource) => Some(resource.to_owned()),
            "key" => return Err(ParseError::InvalidKeyId),
            _ => return Err(ParseError::UnsupportedResourceType),
        };
        Ok(Self {
            env: env.to_owned(),
            service,
            region: region.to_owned(),
            account: account.to_owned(),
            instance: instance.to_owned(),
            key_id,
        })
    }

    /// The environment (`bluemix` in production, `staging`, ...).
    pub fn env(&self) -> &str {
        &self.env
    }

    /// Key Protect (`kms`) or HPCS (`hs-crypto`).
    pub fn service(&self) -> CrnService {
        self.service
    }

    /// The region, for example `us-south`.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The owning account id (the part after `a/`).
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The key id, for a key CRN; `None` for an instance CRN.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// True for a key CRN.
    pub fn is_key(&self) -> bool {
        self.key_id.is_some()
    }

    /// The CRN of the instance (itself, for an instance CRN).
    #[must_use]
    pub fn instance_crn(&self) -> Crn {
        Crn {
            key_id: None,
            ..self.clone()
        }
    }

    /// The CRN of the key `key_id` in this CRN's instance.
    ///
    /// # Errors
    /// [`ParseError::InvalidKeyId`] if `key_id` is not a valid key id.
    pub fn with_key(&self, key_id: &str) -> Result<Crn, ParseError> {
        if !is_key_token(key_id) {
            return Err(ParseError::InvalidKeyId);
        }
        Ok(Crn {
            key_id: Some(key_id.to_owned()),
            ..self.clone()
        })
    }
}

impl fmt::Display for Crn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crn:v1:{}:public:{}:{}:a/{}:{}:",
            self.env, self.service, self.region, self.account, self.instance
        )?;
        match &self.key_id {
            Some(key) => write!(f, "key:{key}"),
            None => f.write_str(":"),
        }
    }
}

impl FromStr for Crn {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Crn {
    type Error = ParseError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

/// How a [`KeyRef`] names its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Repr {
    Crn(Crn),
    Path { instance: String, key: String },
}

/// The name of a key in a request: either its full CRN or
/// `instances/{instance-id}/keys/{key-id-or-alias}`.
///
/// Its [`Display`](fmt::Display) form is the string the server accepts in the `key` field.
///
/// ```
/// use kmsim_client::KeyRef;
///
/// let by_alias = KeyRef::in_instance("4f6c0e1a-0000-4000-8000-000000000001", "db-root")?;
/// assert_eq!(by_alias.to_string(), "instances/4f6c0e1a-0000-4000-8000-000000000001/keys/db-root");
/// assert_eq!(by_alias.key(), "db-root");
/// assert!(by_alias.as_crn().is_none());
///
/// let by_crn: KeyRef = "crn:v1:bluemix:public:hs-crypto:eu-de:a/acct1:inst-1:key:k-1".parse()?;
/// assert_eq!(by_crn.instance_id(), "inst-1");
/// assert_eq!(by_crn.key(), "k-1");
/// # Ok::<(), kmsim_client::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef(Repr);

impl KeyRef {
    /// Parses a key CRN or a `instances/{instance}/keys/{id-or-alias}` path.
    ///
    /// # Errors
    /// A [`ParseError`]: the CRN's, [`ParseError::NotAKeyCrn`] for an instance CRN, or
    /// [`ParseError::InvalidKeyPath`] / [`ParseError::InvalidInstance`] /
    /// [`ParseError::InvalidKey`] for a malformed path.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        if s.starts_with("crn:") {
            return Self::from_crn(Crn::parse(s)?);
        }
        let mut parts = s.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("instances"), Some(instance), Some("keys"), Some(key), None) => {
                Self::in_instance(instance, key)
            }
            _ => Err(ParseError::InvalidKeyPath),
        }
    }

    /// Names key `key` (its id or one of its aliases) in instance `instance_id`.
    ///
    /// # Errors
    /// [`ParseError::InvalidInstance`] or [`ParseError::InvalidKey`].
    pub fn in_instance(instance_id: &str, key: &str) -> Result<Self, ParseError> {
        if !is_instance_id(instance_id) {
            return Err(ParseError::InvalidInstance);
        }
        if !is_key_token(key) {
            return Err(ParseError::InvalidKey);
        }
        Ok(Self(Repr::Path {
            instance: instance_id.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// Names a key by its CRN.
    ///
    /// # Errors
    /// [`ParseError::NotAKeyCrn`] for an instance CRN.
    pub fn from_crn(crn: Crn) -> Result<Self, ParseError> {
        if crn.is_key() {
            Ok(Self(Repr::Crn(crn)))
        } else {
            Err(ParseError::NotAKeyCrn)
        }
    }

    /// Names a key returned by the server, by its CRN.
    ///
    /// # Errors
    /// A [`ParseError`] if the key's `crn` field is not a key CRN.
    pub fn from_key(key: &Key) -> Result<Self, ParseError> {
        Self::from_crn(Crn::parse(&key.crn)?)
    }

    /// The CRN, when the key is named by one.
    pub fn as_crn(&self) -> Option<&Crn> {
        match &self.0 {
            Repr::Crn(crn) => Some(crn),
            Repr::Path { .. } => None,
        }
    }

    /// The instance id.
    pub fn instance_id(&self) -> &str {
        match &self.0 {
            Repr::Crn(crn) => crn.instance(),
            Repr::Path { instance, .. } => instance,
        }
    }

    /// The key id (always, for a CRN) or alias.
    pub fn key(&self) -> &str {
        match &self.0 {
            // A `Repr::Crn` is built only by `from_crn`, which requires a key CRN.
            Repr::Crn(crn) => crn.key_id().unwrap_or_default(),
            Repr::Path { key, .. } => key,
        }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Crn(crn) => crn.fmt(f),
            Repr::Path { instance, key } => write!(f, "instances/{instance}/keys/{key}"),
        }
    }
}

impl FromStr for KeyRef {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for KeyRef {
    type Error = ParseError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<Crn> for KeyRef {
    type Error = ParseError;

    fn try_from(crn: Crn) -> Result<Self, Self::Error> {
        Self::from_crn(crn)
    }
}

impl TryFrom<&Key> for KeyRef {
    type Error = ParseError;

    fn try_from(key: &Key) -> Result<Self, Self::Error> {
        Self::from_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "4f6c0e1a-1b2c-4d3e-8f40-5a6b7c8d9e0f";
    const KEY: &str = "9a1e0e1a-1b2c-4d3e-8f40-5a6b7c8d9e0f";

    fn key_crn(service: &str) -> String {
        format!("crn:v1:bluemix:public:{service}:us-south:a/0123abcd:{INSTANCE}:key:{KEY}")
    }

    #[test]
    fn key_crn_round_trips_with_accessors() {
        for (service, expected) in [
            ("kms", CrnService::Kms),
            ("hs-crypto", CrnService::HsCrypto),
        ] {
            let text = key_crn(service);
            let crn: Crn = text.parse().unwrap();
            assert_eq!(crn.to_string(), text);
            assert_eq!(crn.env(), "bluemix");
            assert_eq!(crn.service(), expected);
            assert_eq!(crn.region(), "us-south");
            assert_eq!(crn.account(), "0123abcd");
            assert_eq!(crn.instance(), INSTANCE);
            assert_eq!(crn.key_id(), Some(KEY));
            assert!(crn.is_key());
        }
        assert_eq!(CrnService::HsCrypto.flavor(), InstanceFlavor::Hpcs);
    }

    #[test]
    fn instance_crn_round_trips_and_converts() {
        let text = format!("crn:v1:staging:public:kms:eu-de:a/acct:{INSTANCE}::");
        let crn = Crn::parse(&text).unwrap();
        assert_eq!(crn.to_string(), text);
        assert_eq!(crn.key_id(), None);
        assert!(!crn.is_key());
        let key = crn.with_key(KEY).unwrap();
        assert_eq!(
            key.to_string(),
            format!("crn:v1:staging:public:kms:eu-de:a/acct:{INSTANCE}:key:{KEY}")
        );
        assert_eq!(key.instance_crn(), crn);
        assert_eq!(crn.with_key("bad key"), Err(ParseError::InvalidKeyId));
    }

    #[test]
    fn malformed_crns_name_the_bad_part() {
        let cases = [
            ("", ParseError::Empty),
            ("instances/x", ParseError::NotACrn),
            ("crn", ParseError::NotACrn),
            (
                "crn:v2:bluemix:public:kms:us-south:a/a:i:key:k",
                ParseError::UnsupportedVersion,
            ),
            (
                "crn:v1:bluemix:public:kms:us-south:a/a:i:key",
                ParseError::SegmentCount,
            ),
            (
                "crn:v1:bluemix:public:kms:us-south:a/a:i:key:k:extra",
                ParseError::SegmentCount,
            ),
            (
                "crn:v1:Blue:public:kms:us-south:a/a:i:key:k",
                ParseError::InvalidEnvironment,
            ),
            (
                "crn:v1:bluemix:private:kms:us-south:a/a:i:key:k",
                ParseError::NotPublic,
            ),
            (
                "crn:v1:bluemix:public:cos:us-south:a/a:i:key:k",
                ParseError::UnsupportedService,
            ),
            (
                "crn:v1:bluemix:public:kms::a/a:i:key:k",
                ParseError::InvalidRegion,
            ),
            (
                "crn:v1:bluemix:public:kms:us-south:acct:i:key:k",
                ParseError::InvalidAccount,
            ),
            (
                "crn:v1:bluemix:public:kms:us-south:a/:i:key:k",
                ParseError::InvalidAccount,
            ),
            (
                "crn:v1:bluemix:public:kms:us-south:a/a::key:k",
                ParseError::InvalidInstance,
            ),
            (
                "crn:v1:bluemix:public:kms:us-south:a/a:i:policy:p",
                ParseError::UnsupportedResourceType,
            ),
            (
                "crn:v1:bluemix:public:kms:us-south:a/a:i:key:",
                ParseError::InvalidKeyId,
            ),
            (
                "crn:v1:bluemix:public:kms:us-south:a/a:i::k",
                ParseError::InvalidKeyId,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Crn::parse(text), Err(expected), "{text}");
        }
    }

    #[test]
    fn key_ref_accepts_both_forms_and_renders_them() {
        let path = format!("instances/{INSTANCE}/keys/my_alias-1");
        let by_path = KeyRef::parse(&path).unwrap();
        assert_eq!(by_path.to_string(), path);
        assert_eq!(by_path.instance_id(), INSTANCE);
        assert_eq!(by_path.key(), "my_alias-1");
        assert!(by_path.as_crn().is_none());

        let crn_text = key_crn("kms");
        let by_crn = KeyRef::parse(&crn_text).unwrap();
        assert_eq!(by_crn.to_string(), crn_text);
        assert_eq!(by_crn.instance_id(), INSTANCE);
        assert_eq!(by_crn.key(), KEY);
        assert_eq!(by_crn.as_crn().map(Crn::region), Some("us-south"));

        let key = Key {
            crn: crn_text.clone(),
            ..Key::default()
        };
        assert_eq!(KeyRef::try_from(&key).unwrap(), by_crn);
    }

    #[test]
    fn malformed_key_refs_are_refused() {
        let instance_crn = format!("crn:v1:bluemix:public:kms:us-south:a/a:{INSTANCE}::");
        let cases = [
            ("", ParseError::Empty),
            (instance_crn.as_str(), ParseError::NotAKeyCrn),
            ("crn:v1:bluemix:public:kms", ParseError::SegmentCount),
            ("instances/i/keys", ParseError::InvalidKeyPath),
            ("instances/i/keys/k/extra", ParseError::InvalidKeyPath),
            ("instance/i/keys/k", ParseError::InvalidKeyPath),
            ("just-an-id", ParseError::InvalidKeyPath),
            ("instances//keys/k", ParseError::InvalidInstance),
            ("instances/i/keys/", ParseError::InvalidKey),
            ("instances/i/keys/has space", ParseError::InvalidKey),
        ];
        for (text, expected) in cases {
            assert_eq!(KeyRef::parse(text), Err(expected), "{text:?}");
        }
        let long = "a".repeat(91);
        assert_eq!(KeyRef::in_instance("i", &long), Err(ParseError::InvalidKey));
    }
}
