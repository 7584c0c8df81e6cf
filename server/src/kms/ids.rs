//! Identifiers and names, parsed once at the edge ("parse, don't validate"): instance, key,
//! version and import-token ids, aliases, regions, accounts, CRNs and the two ways a request
//! names a key (`KeyRef`) or an instance (`InstanceRef`). Code below the edge never takes a
//! `&str` for any of them.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Why a name or identifier was refused. Each variant is one rule; its `Display` text is the
/// field-violation description sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The value is empty.
    #[error("must not be empty")]
    Empty,
    /// Not a UUID.
    #[error("must be a UUID")]
    NotUuid,
    /// An alias shaped like a UUID, which Key Protect forbids.
    #[error("an alias must not be shaped like a UUID")]
    AliasLooksLikeUuid,
    /// An alias with a character other than letters, digits, `-` and `_`.
    #[error("an alias may contain only letters, digits, '-' and '_'")]
    AliasCharacters,
    /// An alias outside 2..=90 characters.
    #[error("an alias must be 2 to 90 characters long")]
    AliasLength,
    /// A region or account with characters outside `[a-z0-9-]`, or too long.
    #[error("must be 1 to 64 characters of lowercase letters, digits and '-'")]
    Label,
    /// Not a CRN of the form `crn:v1:<env>:public:<service>:<region>:a/<account>:<instance>:<type>:<id>`.
    #[error(
        "must be a CRN: crn:v1:<env>:public:<service>:<region>:a/<account>:<instance>:<type>:<id>"
    )]
    CrnShape,
    /// A CRN of a service other than `kms` or `hs-crypto`.
    #[error("the CRN's service must be kms or hs-crypto")]
    CrnService,
    /// A CRN naming something other than a key where a key is expected (or the reverse).
    #[error("the CRN names the wrong kind of resource")]
    CrnResourceType,
    /// Neither a CRN nor `instances/{instance}/keys/{key}`.
    #[error("must be a key CRN or instances/{{instance-id}}/keys/{{key-id-or-alias}}")]
    KeyRefShape,
    /// Neither an instance id, `instances/{id}`, nor an instance CRN.
    #[error("must be an instance id, instances/{{instance-id}}, or an instance CRN")]
    InstanceRefShape,
    /// Not a CRN of any service (`crn:v1:` followed by eight more `:`-separated fields).
    #[error("must be a CRN: crn:v1:<env>:<type>:<service>:<region>:<scope>:<instance>:<type>:<id>")]
    ResourceCrnShape,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The 16 bytes of the UUID.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// From the 16 bytes of the UUID.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                if s.is_empty() {
                    return Err(ParseError::Empty);
                }
                // Only the canonical hyphenated form: ids are printed that way, and a second
                // spelling would let one key hide behind two strings.
                if s.len() != 36 {
                    return Err(ParseError::NotUuid);
                }
                Uuid::parse_str(s).map(Self).map_err(|_| ParseError::NotUuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }
    };
}

uuid_id!(
    /// A KMS instance's GUID.
    InstanceId
);
uuid_id!(
    /// A key's id.
    KeyId
);
uuid_id!(
    /// A key version's id; ciphertexts carry it.
    KeyVersionId
);
uuid_id!(
    /// An import token's id.
    ImportTokenId
);

/// A key alias: 2 to 90 letters, digits, `-` and `_`, case-sensitive, never UUID-shaped.
#[derive(
    Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Alias(String);

impl Alias {
    /// The alias text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Alias {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        if !(2..=90).contains(&s.len()) {
            return Err(ParseError::AliasLength);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ParseError::AliasCharacters);
        }
        if Uuid::parse_str(s).is_ok() {
            return Err(ParseError::AliasLooksLikeUuid);
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! label {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                if s.is_empty() {
                    return Err(ParseError::Empty);
                }
                let ok = s.len() <= 64
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if ok { Ok(Self(s.to_owned())) } else { Err(ParseError::Label) }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

label!(
    /// A region such as `us-south`.
    Region
);
label!(
    /// An account id.
    AccountId
);
label!(
    /// The name of a service that calls kmsim, such as `databases-for-postgresql` (the
    /// source of a service-to-service authorization).
    SourceService
);

uuid_id!(
    /// An IAM identity (user or service).
    IdentityId
);
uuid_id!(
    /// An API key's id (never its secret).
    ApiKeyId
);
uuid_id!(
    /// An access policy's id.
    PolicyId
);
uuid_id!(
    /// A service-to-service authorization's id.
    AuthorizationId
);
uuid_id!(
    /// A lifecycle event's id.
    LifecycleEventId
);

/// The CRN of a resource of any service, such as a database deployment: `crn:v1:` and eight
/// more `:`-separated fields, the service name (fifth field) not empty, at most 512 characters.
#[derive(Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ResourceCrn(String);

impl ResourceCrn {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ResourceCrn {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        let fields: Vec<&str> = s.split(':').collect();
        let ok = s.len() <= 512
            && fields.len() == 10
            && fields[0] == "crn"
            && fields[1] == "v1"
            && !fields[4].is_empty()
            && s.chars().all(|c| c.is_ascii_graphic());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::ResourceCrnShape)
        }
    }
}

impl fmt::Display for ResourceCrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The CRN service name, which follows from the instance flavor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum ServiceName {
    /// IBM Key Protect (`kms`).
    Kms,
    /// Hyper Protect Crypto Services (`hs-crypto`).
    HsCrypto,
}

impl ServiceName {
    /// The name as it appears in CRNs and audit event prefixes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kms => "kms",
            Self::HsCrypto => "hs-crypto",
        }
    }
}

/// A parsed CRN of a KMS instance or key:
/// `crn:v1:<env>:public:<service>:<region>:a/<account>:<instance>:<type>:<resource>`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Crn {
    /// `bluemix`, `staging`...
    pub environment: String,
    /// `kms` or `hs-crypto`.
    pub service: ServiceName,
    /// The region.
    pub region: Region,
    /// The account.
    pub account: AccountId,
    /// The instance GUID.
    pub instance: InstanceId,
    /// What the CRN names below the instance.
    pub resource: CrnResource,
}

/// The resource part of a KMS CRN.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CrnResource {
    /// The instance itself (`::`).
    Instance,
    /// A key (`key:<id>`).
    Key(KeyId),
}

impl Crn {
    /// The CRN of an instance.
    pub fn instance(
        service: ServiceName,
        region: &Region,
        account: &AccountId,
        id: InstanceId,
    ) -> Self {
        Self {
            environment: "bluemix".to_owned(),
            service,
            region: region.clone(),
            account: account.clone(),
            instance: id,
            resource: CrnResource::Instance,
        }
    }

    /// The CRN of a key in this CRN's instance.
    pub fn key(&self, key: KeyId) -> Self {
        Self {
            resource: CrnResource::Key(key),
            ..self.clone()
        }
    }
}

impl FromStr for Crn {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        let parts: Vec<&str> = s.split(':').collect();
        let [
            crn,
            v1,
            environment,
            public,
            service,
            region,
            account,
            instance,
            kind,
            resource,
        ] = parts.as_slice()
        else {
            return Err(ParseError::CrnShape);
        };
        if *crn != "crn" || *v1 != "v1" || *public != "public" || environment.is_empty() {
            return Err(ParseError::CrnShape);
        }
        let service = match *service {
            "kms" => ServiceName::Kms,
            "hs-crypto" => ServiceName::HsCrypto,
            _ => return Err(ParseError::CrnService),
        };
        let account = account.strip_prefix("a/").ok_or(ParseError::CrnShape)?;
        let resource = match (*kind, *resource) {
            ("", "") => CrnResource::Instance,
            ("key", id) => CrnResource::Key(id.parse()?),
            _ => return Err(ParseError::CrnResourceType),
        };
        Ok(Self {
            environment: (*environment).to_owned(),
            service,
            region: region.parse()?,
            account: account.parse()?,
            instance: instance.parse()?,
            resource,
        })
    }
}

impl fmt::Display for Crn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crn:v1:{}:public:{}:{}:a/{}:{}:",
            self.environment,
            self.service.as_str(),
            self.region,
            self.account,
            self.instance
        )?;
        match &self.resource {
            CrnResource::Instance => f.write_str(":"),
            CrnResource::Key(id) => write!(f, "key:{id}"),
        }
    }
}

/// How a request names a key within an instance: by id or by alias.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KeyName {
    /// The key id.
    Id(KeyId),
    /// One of the key's aliases.
    Alias(Alias),
}

/// A request's reference to a key: its CRN, or `instances/{i}/keys/{id-or-alias}`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KeyRef {
    /// A full CRN: the service, region and account must match the instance's.
    Crn(Crn),
    /// A path.
    Path {
        /// The instance.
        instance: InstanceId,
        /// The key within it.
        key: KeyName,
    },
}

impl KeyRef {
    /// The instance the reference points into.
    pub fn instance(&self) -> InstanceId {
        match self {
            Self::Crn(crn) => crn.instance,
            Self::Path { instance, .. } => *instance,
        }
    }
}

impl FromStr for KeyRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        if s.starts_with("crn:") {
            let crn: Crn = s.parse()?;
            return match crn.resource {
                CrnResource::Key(_) => Ok(Self::Crn(crn)),
                CrnResource::Instance => Err(ParseError::CrnResourceType),
            };
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
                let instance = instance.parse()?;
                let key = if key.len() == 36 && uuid::Uuid::parse_str(key).is_ok() {
                    KeyName::Id(key.parse()?)
                } else {
                    KeyName::Alias(key.parse()?)
                };
                Ok(Self::Path { instance, key })
            }
            _ => Err(ParseError::KeyRefShape),
        }
    }
}

/// A request's reference to an instance: its id, `instances/{id}`, or its CRN.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum InstanceRef {
    /// By id (bare or as `instances/{id}`).
    Id(InstanceId),
    /// By CRN: service, region and account must match.
    Crn(Crn),
}

impl InstanceRef {
    /// The instance id.
    pub fn id(&self) -> InstanceId {
        match self {
            Self::Id(id) => *id,
            Self::Crn(crn) => crn.instance,
        }
    }
}

impl FromStr for InstanceRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        if s.starts_with("crn:") {
            let crn: Crn = s.parse()?;
            return match crn.resource {
                CrnResource::Instance => Ok(Self::Crn(crn)),
                CrnResource::Key(_) => Err(ParseError::CrnResourceType),
            };
        }
        let id = s.strip_prefix("instances/").unwrap_or(s);
        id.parse()
            .map(Self::Id)
            .map_err(|_| ParseError::InstanceRefShape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "5a4ab2a7-4d3a-44a1-9b61-6c1a0e0b1f00";
    const KEY: &str = "0e8f6b6d-7a32-4a5e-9d0c-2b7e5c3a1f11";

    #[test]
    fn key_crn_round_trips() {
        let text = format!("crn:v1:bluemix:public:hs-crypto:us-south:a/acct1:{INSTANCE}:key:{KEY}");
        let crn: Crn = text.parse().unwrap();
        assert_eq!(crn.service, ServiceName::HsCrypto);
        assert_eq!(crn.to_string(), text);
        let instance_crn = format!("crn:v1:bluemix:public:kms:us-south:a/acct1:{INSTANCE}::");
        assert_eq!(
            instance_crn.parse::<Crn>().unwrap().to_string(),
            instance_crn
        );
    }

    #[test]
    fn key_refs_accept_crn_id_and_alias() {
        let by_id: KeyRef = format!("instances/{INSTANCE}/keys/{KEY}").parse().unwrap();
        assert!(matches!(
            by_id,
            KeyRef::Path {
                key: KeyName::Id(_),
                ..
            }
        ));
        let by_alias: KeyRef = format!("instances/{INSTANCE}/keys/pg-root")
            .parse()
            .unwrap();
        assert!(matches!(
            by_alias,
            KeyRef::Path {
                key: KeyName::Alias(_),
                ..
            }
        ));
        let crn: KeyRef =
            format!("crn:v1:bluemix:public:kms:us-south:a/acct1:{INSTANCE}:key:{KEY}")
                .parse()
                .unwrap();
        assert_eq!(crn.instance().to_string(), INSTANCE);
    }

    #[test]
    fn malformed_refs_are_refused_precisely() {
        assert_eq!(KEY.parse::<KeyRef>(), Err(ParseError::KeyRefShape));
        assert_eq!("".parse::<KeyRef>(), Err(ParseError::Empty));
        assert_eq!(
            format!("crn:v1:bluemix:public:s3:us-south:a/acct1:{INSTANCE}:key:{KEY}")
                .parse::<KeyRef>(),
            Err(ParseError::CrnService)
        );
        assert_eq!(
            format!("crn:v1:bluemix:public:kms:us-south:a/acct1:{INSTANCE}::").parse::<KeyRef>(),
            Err(ParseError::CrnResourceType)
        );
        assert_eq!(
            format!("instances/{INSTANCE}/keys/a b").parse::<KeyRef>(),
            Err(ParseError::AliasCharacters)
        );
        assert_eq!(
            "instances/nope/keys/x1".parse::<KeyRef>(),
            Err(ParseError::NotUuid)
        );
    }

    #[test]
    fn aliases_follow_key_protect_rules() {
        assert!("pg-root_1".parse::<Alias>().is_ok());
        assert_eq!(KEY.parse::<Alias>(), Err(ParseError::AliasLooksLikeUuid));
        assert_eq!("x".parse::<Alias>(), Err(ParseError::AliasLength));
        assert_eq!("a.b".parse::<Alias>(), Err(ParseError::AliasCharacters));
    }

    #[test]
    fn instance_refs() {
        assert_eq!(
            INSTANCE.parse::<InstanceRef>().unwrap().id().to_string(),
            INSTANCE
        );
        assert_eq!(
            format!("instances/{INSTANCE}")
                .parse::<InstanceRef>()
                .unwrap()
                .id()
                .to_string(),
            INSTANCE
        );
        assert_eq!(
            "garbage".parse::<InstanceRef>(),
            Err(ParseError::InstanceRefShape)
        );
    }
}
