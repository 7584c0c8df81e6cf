//! Object attributes: classes, key types, `CKA_*` attribute types and values, key templates and search queries.
//!
//! Also owns the module's internal attribute set of a key object (`Attrs`) and its stable binary encoding, which
//! is bound as associated data to the object's sealed value.

use std::fmt;

use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::HsmError;

/// `CK_UNAVAILABLE_INFORMATION`: the length reported for a sensitive attribute.
pub const CK_UNAVAILABLE_INFORMATION: u64 = u64::MAX;

/// DER encoding of the P-256 (prime256v1) OID, the value of `CKA_EC_PARAMS`.
pub const EC_PARAMS_P256: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// `CK_OBJECT_CLASS` of the key objects the module holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectClass {
    /// `CKO_PUBLIC_KEY` (2).
    PublicKey,
    /// `CKO_PRIVATE_KEY` (3).
    PrivateKey,
    /// `CKO_SECRET_KEY` (4).
    SecretKey,
}

impl ObjectClass {
    /// The `CKO_*` code.
    #[must_use]
    pub fn code(self) -> u64 {
        match self {
            Self::PublicKey => 2,
            Self::PrivateKey => 3,
            Self::SecretKey => 4,
        }
    }

    /// From a `CKO_*` code.
    #[must_use]
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            2 => Some(Self::PublicKey),
            3 => Some(Self::PrivateKey),
            4 => Some(Self::SecretKey),
            _ => None,
        }
    }
}

/// `CK_KEY_TYPE` of the key objects the module holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `CKK_EC` (3), curve P-256 only.
    Ec,
    /// `CKK_GENERIC_SECRET` (0x10).
    GenericSecret,
    /// `CKK_AES` (0x1F).
    Aes,
}

impl KeyType {
    /// The `CKK_*` code.
    #[must_use]
    pub fn code(self) -> u64 {
        match self {
            Self::Ec => 3,
            Self::GenericSecret => 0x10,
            Self::Aes => 0x1F,
        }
    }

    /// From a `CKK_*` code.
    #[must_use]
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            3 => Some(Self::Ec),
            0x10 => Some(Self::GenericSecret),
            0x1F => Some(Self::Aes),
            _ => None,
        }
    }
}

macro_rules! attribute_types {
    ($($(#[$doc:meta])* $name:ident = $code:expr),* $(,)?) => {
        /// A `CKA_*` attribute type understood by the module.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AttributeType {
            $($(#[$doc])* $name,)*
        }

        impl AttributeType {
            /// The `CKA_*` code.
            #[must_use]
            pub fn code(self) -> u64 {
                match self { $(Self::$name => $code,)* }
            }

            /// From a `CKA_*` code.
            #[must_use]
            pub fn from_code(code: u64) -> Option<Self> {
                match code { $($code => Some(Self::$name),)* _ => None }
            }
        }
    };
}

attribute_types! {
    /// `CKA_CLASS`.
    Class = 0x0,
    /// `CKA_TOKEN` (persistent object).
    Token = 0x1,
    /// `CKA_PRIVATE` (visible only to the logged-in user).
    Private = 0x2,
    /// `CKA_LABEL`.
    Label = 0x3,
    /// `CKA_VALUE` (secret key material; readable only in the narrow case documented on `Session::get_attribute`).
    Value = 0x11,
    /// `CKA_KEY_TYPE`.
    KeyType = 0x100,
    /// `CKA_ID`.
    Id = 0x102,
    /// `CKA_SENSITIVE`.
    Sensitive = 0x103,
    /// `CKA_ENCRYPT`.
    Encrypt = 0x104,
    /// `CKA_DECRYPT`.
    Decrypt = 0x105,
    /// `CKA_WRAP`.
    Wrap = 0x106,
    /// `CKA_UNWRAP`.
    Unwrap = 0x107,
    /// `CKA_SIGN`.
    Sign = 0x108,
    /// `CKA_VERIFY`.
    Verify = 0x10A,
    /// `CKA_DERIVE`.
    Derive = 0x10C,
    /// `CKA_VALUE_LEN`.
    ValueLen = 0x161,
    /// `CKA_EXTRACTABLE`.
    Extractable = 0x162,
    /// `CKA_LOCAL`.
    Local = 0x163,
    /// `CKA_NEVER_EXTRACTABLE`.
    NeverExtractable = 0x164,
    /// `CKA_ALWAYS_SENSITIVE`.
    AlwaysSensitive = 0x165,
    /// `CKA_KEY_GEN_MECHANISM`.
    KeyGenMechanism = 0x166,
    /// `CKA_MODIFIABLE`.
    Modifiable = 0x170,
    /// `CKA_EC_PARAMS`.
    EcParams = 0x180,
    /// `CKA_EC_POINT` (DER OCTET STRING of the uncompressed point).
    EcPoint = 0x181,
    /// `CKA_CHECK_VALUE` (3-byte KCV).
    CheckValue = 0x90,
    /// `CKA_TRUSTED`.
    Trusted = 0x86,
    /// `CKA_WRAP_WITH_TRUSTED`.
    WrapWithTrusted = 0x210,
    /// `CKA_WRAP_TEMPLATE`.
    WrapTemplate = 0x4000_0211,
    /// `CKA_UNWRAP_TEMPLATE`.
    UnwrapTemplate = 0x4000_0212,
    /// `CKA_ALLOWED_MECHANISMS`.
    AllowedMechanisms = 0x4000_0600,
}

impl AttributeType {
    /// True for the CK_BBOOL attributes (carried by [`AttributeValue::Bool`]).
    #[must_use]
    pub fn is_bool(self) -> bool {
        matches!(
            self,
            Self::Token
                | Self::Private
                | Self::Sensitive
                | Self::Encrypt
                | Self::Decrypt
                | Self::Wrap
                | Self::Unwrap
                | Self::Sign
                | Self::Verify
                | Self::Derive
                | Self::Extractable
                | Self::Local
                | Self::NeverExtractable
                | Self::AlwaysSensitive
                | Self::Modifiable
                | Self::Trusted
                | Self::WrapWithTrusted
        )
    }
}

/// A typed attribute value. `Value` is zeroized on drop and redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// `CKA_CLASS`.
    Class(ObjectClass),
    /// `CKA_KEY_TYPE`.
    KeyType(KeyType),
    /// `CKA_LABEL`.
    Label(String),
    /// `CKA_ID`.
    Id(Vec<u8>),
    /// A CK_BBOOL attribute; the type must satisfy [`AttributeType::is_bool`].
    Bool(AttributeType, bool),
    /// `CKA_VALUE`.
    Value(Zeroizing<Vec<u8>>),
    /// `CKA_VALUE_LEN` in bytes.
    ValueLen(usize),
    /// `CKA_CHECK_VALUE`.
    CheckValue([u8; 3]),
    /// `CKA_EC_PARAMS` (DER OID).
    EcParams(Vec<u8>),
    /// `CKA_EC_POINT` (DER OCTET STRING).
    EcPoint(Vec<u8>),
    /// `CKA_KEY_GEN_MECHANISM`.
    KeyGenMechanism(u64),
    /// `CKA_ALLOWED_MECHANISMS`.
    AllowedMechanisms(Vec<u64>),
    /// `CKA_WRAP_TEMPLATE`.
    WrapTemplate(Vec<AttributeValue>),
    /// `CKA_UNWRAP_TEMPLATE`.
    UnwrapTemplate(Vec<AttributeValue>),
}

impl fmt::Debug for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Class(c) => write!(f, "Class({c:?})"),
            Self::KeyType(k) => write!(f, "KeyType({k:?})"),
            Self::Label(l) => write!(f, "Label({l:?})"),
            Self::Id(i) => write!(f, "Id({i:02x?})"),
            Self::Bool(t, b) => write!(f, "{t:?}({b})"),
            Self::Value(v) => write!(f, "Value(<{} bytes redacted>)", v.len()),
            Self::ValueLen(n) => write!(f, "ValueLen({n})"),
            Self::CheckValue(c) => write!(f, "CheckValue({c:02x?})"),
            Self::EcParams(p) => write!(f, "EcParams({p:02x?})"),
            Self::EcPoint(p) => write!(f, "EcPoint({} bytes)", p.len()),
            Self::KeyGenMechanism(m) => write!(f, "KeyGenMechanism({m:#x})"),
            Self::AllowedMechanisms(m) => write!(f, "AllowedMechanisms({m:x?})"),
            Self::WrapTemplate(t) => write!(f, "WrapTemplate({t:?})"),
            Self::UnwrapTemplate(t) => write!(f, "UnwrapTemplate({t:?})"),
        }
    }
}

impl AttributeValue {
    /// The attribute type this value belongs to.
    #[must_use]
    pub fn attribute_type(&self) -> AttributeType {
        match self {
            Self::Class(_) => AttributeType::Class,
            Self::KeyType(_) => AttributeType::KeyType,
            Self::Label(_) => AttributeType::Label,
            Self::Id(_) => AttributeType::Id,
            Self::Bool(t, _) => *t,
            Self::Value(_) => AttributeType::Value,
            Self::ValueLen(_) => AttributeType::ValueLen,
            Self::CheckValue(_) => AttributeType::CheckValue,
            Self::EcParams(_) => AttributeType::EcParams,
            Self::EcPoint(_) => AttributeType::EcPoint,
            Self::KeyGenMechanism(_) => AttributeType::KeyGenMechanism,
            Self::AllowedMechanisms(_) => AttributeType::AllowedMechanisms,
            Self::WrapTemplate(_) => AttributeType::WrapTemplate,
            Self::UnwrapTemplate(_) => AttributeType::UnwrapTemplate,
        }
    }

    /// The boolean carried, if this is a CK_BBOOL attribute.
    #[must_use]
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(_, b) => Some(*b),
            _ => None,
        }
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Class(c) => w.u8(0).u64(c.code()),
            Self::KeyType(k) => w.u8(1).u64(k.code()),
            Self::Label(l) => w.u8(2).str(l),
            Self::Id(i) => w.u8(3).bytes(i),
            Self::Bool(t, b) => w.u8(4).u64(t.code()).bool(*b),
            // Values never reach a record through templates (rejected by `validate_template`).
            Self::Value(_) => w.u8(5),
            Self::ValueLen(n) => w.u8(6).u64(*n as u64),
            Self::CheckValue(c) => w.u8(7).bytes(c),
            Self::EcParams(p) => w.u8(8).bytes(p),
            Self::EcPoint(p) => w.u8(9).bytes(p),
            Self::KeyGenMechanism(m) => w.u8(10).u64(*m),
            Self::AllowedMechanisms(m) => {
                w.u8(11).u32(len32(m.len()));
                for x in m {
                    w.u64(*x);
                }
                w
            }
            Self::WrapTemplate(t) => {
                w.u8(12);
                encode_list(w, t);
                w
            }
            Self::UnwrapTemplate(t) => {
                w.u8(13);
                encode_list(w, t);
                w
            }
        };
    }

    fn decode(r: &mut Reader<'_>, depth: u8) -> Result<Self, HsmError> {
        let bad = || HsmError::DeviceError;
        Ok(match r.u8()? {
            0 => Self::Class(ObjectClass::from_code(r.u64()?).ok_or_else(bad)?),
            1 => Self::KeyType(KeyType::from_code(r.u64()?).ok_or_else(bad)?),
            2 => Self::Label(r.string()?),
            3 => Self::Id(r.bytes()?.to_vec()),
            4 => {
                let t = AttributeType::from_code(r.u64()?).ok_or_else(bad)?;
                Self::Bool(t, r.bool()?)
            }
            6 => Self::ValueLen(usize::try_from(r.u64()?).map_err(|_| bad())?),
            7 => Self::CheckValue(<[u8; 3]>::try_from(r.bytes()?).map_err(|_| bad())?),
            8 => Self::EcParams(r.bytes()?.to_vec()),
            9 => Self::EcPoint(r.bytes()?.to_vec()),
            10 => Self::KeyGenMechanism(r.u64()?),
            11 => {
                let n = r.u32()?;
                let mut m = Vec::new();
                for _ in 0..n {
                    m.push(r.u64()?);
                }
                Self::AllowedMechanisms(m)
            }
            12 if depth == 0 => Self::WrapTemplate(decode_list(r, 1)?),
            13 if depth == 0 => Self::UnwrapTemplate(decode_list(r, 1)?),
            _ => return Err(bad()),
        })
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn encode_list(w: &mut Writer, list: &[AttributeValue]) {
    w.u32(len32(list.len()));
    for a in list {
        a.encode(w);
    }
}

fn decode_list(r: &mut Reader<'_>, depth: u8) -> Result<Vec<AttributeValue>, HsmError> {
    let n = r.u32()?;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(AttributeValue::decode(r, depth)?);
    }
    Ok(v)
}

/// Checks that a WRAP/UNWRAP template holds only plain attributes (no VALUE, no nested templates, well-typed
/// booleans).
pub(crate) fn validate_template(list: &[AttributeValue]) -> Result<(), HsmError> {
    for a in list {
        match a {
            AttributeValue::Value(_)
            | AttributeValue::WrapTemplate(_)
            | AttributeValue::UnwrapTemplate(_) => return Err(HsmError::AttributeValueInvalid),
            AttributeValue::Bool(t, _) if !t.is_bool() => {
                return Err(HsmError::AttributeValueInvalid);
            }
            _ => {}
        }
    }
    Ok(())
}

/// A key template for generate/create/unwrap/derive calls (the subset of `CK_ATTRIBUTE` templates the module
/// understands). Defaults (document of record): `private=true`, `token=false`, `SENSITIVE=true` and
/// `EXTRACTABLE=false` for secret and private keys (stricter than SoftHSM), every usage flag false.
///
/// Merging with an `UNWRAP_TEMPLATE`: an `Option` field counts as "specified" when `Some`; a plain `bool` usage
/// field counts as specified only when `true` (a `false` is the default and is overridden by the unwrap template).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyTemplate {
    /// `CKA_CLASS`; required for unwrap (secret or private key). Filled in by the constructors.
    pub class: Option<ObjectClass>,
    /// `CKA_KEY_TYPE`.
    pub key_type: Option<KeyType>,
    /// `CKA_VALUE_LEN` in bytes (AES: 16, 24 or 32).
    pub value_len: Option<usize>,
    /// `CKA_LABEL` (at most 255 bytes).
    pub label: String,
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// `CKA_TOKEN`: persist the object (sealed in the object store) and keep its handle across restarts.
    pub token: bool,
    /// `CKA_PRIVATE`.
    pub private: bool,
    /// `CKA_SENSITIVE` (default true for secret and private keys).
    pub sensitive: Option<bool>,
    /// `CKA_EXTRACTABLE` (default false for secret and private keys).
    pub extractable: Option<bool>,
    /// `CKA_ENCRYPT`.
    pub encrypt: bool,
    /// `CKA_DECRYPT`.
    pub decrypt: bool,
    /// `CKA_WRAP`.
    pub wrap: bool,
    /// `CKA_UNWRAP`.
    pub unwrap: bool,
    /// `CKA_SIGN`.
    pub sign: bool,
    /// `CKA_VERIFY`.
    pub verify: bool,
    /// `CKA_DERIVE`.
    pub derive: bool,
    /// `CKA_TRUSTED` (only the SO may set it true).
    pub trusted: bool,
    /// `CKA_WRAP_WITH_TRUSTED`.
    pub wrap_with_trusted: bool,
    /// `CKA_WRAP_TEMPLATE`.
    pub wrap_template: Option<Vec<AttributeValue>>,
    /// `CKA_UNWRAP_TEMPLATE`.
    pub unwrap_template: Option<Vec<AttributeValue>>,
    /// `CKA_ALLOWED_MECHANISMS` (`CKM_*` codes).
    pub allowed_mechanisms: Option<Vec<u64>>,
}

impl Default for KeyTemplate {
    fn default() -> Self {
        Self {
            class: None,
            key_type: None,
            value_len: None,
            label: String::new(),
            id: Vec::new(),
            token: false,
            private: true,
            sensitive: None,
            extractable: None,
            encrypt: false,
            decrypt: false,
            wrap: false,
            unwrap: false,
            sign: false,
            verify: false,
            derive: false,
            trusted: false,
            wrap_with_trusted: false,
            wrap_template: None,
            unwrap_template: None,
            allowed_mechanisms: None,
        }
    }
}

impl KeyTemplate {
    /// An AES key of `len` bytes with ENCRYPT and DECRYPT set.
    #[must_use]
    pub fn aes(len: usize) -> Self {
        Self {
            class: Some(ObjectClass::SecretKey),
            key_type: Some(KeyType::Aes),
            value_len: Some(len),
            encrypt: true,
            decrypt: true,
            ..Self::default()
        }
    }

    /// An AES key-encryption key of `len` bytes with WRAP and UNWRAP set.
    #[must_use]
    pub fn aes_kek(len: usize) -> Self {
        Self {
            class: Some(ObjectClass::SecretKey),
            key_type: Some(KeyType::Aes),
            value_len: Some(len),
            wrap: true,
            unwrap: true,
            ..Self::default()
        }
    }

    /// A generic secret of `len` bytes with DERIVE set.
    #[must_use]
    pub fn generic_secret(len: usize) -> Self {
        Self {
            class: Some(ObjectClass::SecretKey),
            key_type: Some(KeyType::GenericSecret),
            value_len: Some(len),
            derive: true,
            ..Self::default()
        }
    }

    /// A P-256 private key with SIGN and DERIVE set.
    #[must_use]
    pub fn ec_private() -> Self {
        Self {
            class: Some(ObjectClass::PrivateKey),
            key_type: Some(KeyType::Ec),
            sign: true,
            derive: true,
            ..Self::default()
        }
    }

    /// A P-256 public key with VERIFY set and `private=false`.
    #[must_use]
    pub fn ec_public() -> Self {
        Self {
            class: Some(ObjectClass::PublicKey),
            key_type: Some(KeyType::Ec),
            verify: true,
            private: false,
            ..Self::default()
        }
    }

    /// Sets `CKA_LABEL`.
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Sets `CKA_ID`.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<Vec<u8>>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets `CKA_TOKEN` (persistent object).
    #[must_use]
    pub fn with_token(mut self, token: bool) -> Self {
        self.token = token;
        self
    }

    /// Sets `CKA_PRIVATE`.
    #[must_use]
    pub fn with_private(mut self, private: bool) -> Self {
        self.private = private;
        self
    }

    /// Sets `CKA_SENSITIVE`.
    #[must_use]
    pub fn with_sensitive(mut self, sensitive: bool) -> Self {
        self.sensitive = Some(sensitive);
        self
    }

    /// Sets `CKA_EXTRACTABLE`.
    #[must_use]
    pub fn with_extractable(mut self, extractable: bool) -> Self {
        self.extractable = Some(extractable);
        self
    }

    /// Sets `CKA_WRAP` and `CKA_UNWRAP`.
    #[must_use]
    pub fn with_wrap_unwrap(mut self, on: bool) -> Self {
        self.wrap = on;
        self.unwrap = on;
        self
    }

    /// Sets `CKA_ALLOWED_MECHANISMS`.
    #[must_use]
    pub fn with_allowed_mechanisms(mut self, mechs: Vec<u64>) -> Self {
        self.allowed_mechanisms = Some(mechs);
        self
    }
}

/// A search template for `Session::find_objects`: every `Some` field must match. `AttributeQuery::default()`
/// matches every object visible to the session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributeQuery {
    /// `CKA_CLASS`.
    pub class: Option<ObjectClass>,
    /// `CKA_KEY_TYPE`.
    pub key_type: Option<KeyType>,
    /// `CKA_LABEL`.
    pub label: Option<String>,
    /// `CKA_ID`.
    pub id: Option<Vec<u8>>,
    /// `CKA_TOKEN`.
    pub token: Option<bool>,
    /// `CKA_PRIVATE`.
    pub private: Option<bool>,
}

impl AttributeQuery {
    /// Matches every visible object.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// Matches objects with this label.
    #[must_use]
    pub fn by_label(label: impl Into<String>) -> Self {
        Self {
            label: Some(label.into()),
            ..Self::default()
        }
    }

    /// Matches objects with this ID.
    #[must_use]
    pub fn by_id(id: impl Into<Vec<u8>>) -> Self {
        Self {
            id: Some(id.into()),
            ..Self::default()
        }
    }

    /// Matches objects of this class.
    #[must_use]
    pub fn by_class(class: ObjectClass) -> Self {
        Self {
            class: Some(class),
            ..Self::default()
        }
    }

    pub(crate) fn matches(&self, a: &Attrs) -> bool {
        self.class.is_none_or(|c| c == a.class)
            && self.key_type.is_none_or(|k| k == a.key_type)
            && self.label.as_ref().is_none_or(|l| *l == a.label)
            && self.id.as_ref().is_none_or(|i| *i == a.id)
            && self.token.is_none_or(|t| t == a.token)
            && self.private.is_none_or(|p| p == a.private)
    }
}

/// The attributes of a key object, minus its value. Stored in the object record and bound as AEAD associated data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attrs {
    pub class: ObjectClass,
    pub key_type: KeyType,
    pub label: String,
    pub id: Vec<u8>,
    pub token: bool,
    pub private: bool,
    pub modifiable: bool,
    pub sensitive: bool,
    pub extractable: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
    pub local: bool,
    pub encrypt: bool,
    pub decrypt: bool,
    pub wrap: bool,
    pub unwrap: bool,
    pub sign: bool,
    pub verify: bool,
    pub derive: bool,
    pub trusted: bool,
    pub wrap_with_trusted: bool,
    /// Length of the value in bytes (secret keys), 32 for EC keys.
    pub value_len: usize,
    pub check_value: Option<[u8; 3]>,
    /// Uncompressed SEC1 point (EC keys).
    pub ec_point: Option<Vec<u8>>,
    pub key_gen_mechanism: Option<u64>,
    pub allowed_mechanisms: Option<Vec<u64>>,
    pub wrap_template: Option<Vec<AttributeValue>>,
    pub unwrap_template: Option<Vec<AttributeValue>>,
}

impl Attrs {
    /// Builds the attribute set of a new object from a template. `class`/`key_type` are the resolved ones.
    pub(crate) fn from_template(
        t: &KeyTemplate,
        class: ObjectClass,
        key_type: KeyType,
        value_len: usize,
    ) -> Result<Self, HsmError> {
        if t.label.len() > 255 {
            return Err(HsmError::AttributeValueInvalid);
        }
        if let Some(w) = &t.wrap_template {
            validate_template(w)?;
        }
        if let Some(u) = &t.unwrap_template {
            validate_template(u)?;
        }
        let public = class == ObjectClass::PublicKey;
        let sensitive = if public {
            false
        } else {
            t.sensitive.unwrap_or(true)
        };
        let extractable = if public {
            true
        } else {
            t.extractable.unwrap_or(false)
        };
        if public && (t.sensitive == Some(true) || t.extractable == Some(false)) {
            return Err(HsmError::TemplateInconsistent);
        }
        Ok(Self {
            class,
            key_type,
            label: t.label.clone(),
            id: t.id.clone(),
            token: t.token,
            private: t.private,
            modifiable: true,
            sensitive,
            extractable,
            always_sensitive: sensitive,
            never_extractable: !extractable,
            local: false,
            encrypt: t.encrypt,
            decrypt: t.decrypt,
            wrap: t.wrap,
            unwrap: t.unwrap,
            sign: t.sign,
            verify: t.verify,
            derive: t.derive,
            trusted: t.trusted,
            wrap_with_trusted: t.wrap_with_trusted,
            value_len,
            check_value: None,
            ec_point: None,
            key_gen_mechanism: None,
            allowed_mechanisms: t.allowed_mechanisms.clone(),
            wrap_template: t.wrap_template.clone(),
            unwrap_template: t.unwrap_template.clone(),
        })
    }

    /// The value of one attribute (never `Value`: the caller handles key material). `None` = not present.
    pub(crate) fn get(&self, t: AttributeType) -> Option<AttributeValue> {
        use AttributeType as A;
        let b = |v: bool| Some(AttributeValue::Bool(t, v));
        let secret_or_private = self.class != ObjectClass::PublicKey;
        match t {
            A::Class => Some(AttributeValue::Class(self.class)),
            A::KeyType => Some(AttributeValue::KeyType(self.key_type)),
            A::Label => Some(AttributeValue::Label(self.label.clone())),
            A::Id => Some(AttributeValue::Id(self.id.clone())),
            A::Token => b(self.token),
            A::Private => b(self.private),
            A::Modifiable => b(self.modifiable),
            A::Local => b(self.local),
            A::Encrypt => b(self.encrypt),
            A::Decrypt => b(self.decrypt),
            A::Wrap => b(self.wrap),
            A::Unwrap => b(self.unwrap),
            A::Sign => b(self.sign),
            A::Verify => b(self.verify),
            A::Derive => b(self.derive),
            A::Trusted => b(self.trusted),
            A::Sensitive if secret_or_private => b(self.sensitive),
            A::Extractable if secret_or_private => b(self.extractable),
            A::AlwaysSensitive if secret_or_private => b(self.always_sensitive),
            A::NeverExtractable if secret_or_private => b(self.never_extractable),
            A::WrapWithTrusted if secret_or_private => b(self.wrap_with_trusted),
            A::ValueLen if self.class == ObjectClass::SecretKey => {
                Some(AttributeValue::ValueLen(self.value_len))
            }
            A::CheckValue => self.check_value.map(AttributeValue::CheckValue),
            A::EcParams if self.key_type == KeyType::Ec => {
                Some(AttributeValue::EcParams(EC_PARAMS_P256.to_vec()))
            }
            A::EcPoint if self.key_type == KeyType::Ec => self.ec_point.as_ref().map(|p| {
                let mut der = Vec::with_capacity(p.len() + 2);
                der.push(0x04);
                der.push(u8::try_from(p.len()).unwrap_or(0));
                der.extend_from_slice(p);
                AttributeValue::EcPoint(der)
            }),
            A::KeyGenMechanism => self.key_gen_mechanism.map(AttributeValue::KeyGenMechanism),
            A::AllowedMechanisms => Some(AttributeValue::AllowedMechanisms(
                self.allowed_mechanisms.clone().unwrap_or_default(),
            )),
            A::WrapTemplate => self.wrap_template.clone().map(AttributeValue::WrapTemplate),
            A::UnwrapTemplate => self
                .unwrap_template
                .clone()
                .map(AttributeValue::UnwrapTemplate),
            _ => None,
        }
    }

    /// True when every attribute of `template` is present on this object with an equal value.
    pub(crate) fn matches_template(&self, template: &[AttributeValue]) -> bool {
        template
            .iter()
            .all(|want| self.get(want.attribute_type()).as_ref() == Some(want))
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u8(1) // format version
            .u64(self.class.code())
            .u64(self.key_type.code())
            .str(&self.label)
            .bytes(&self.id);
        let flags = [
            self.token,
            self.private,
            self.modifiable,
            self.sensitive,
            self.extractable,
            self.always_sensitive,
            self.never_extractable,
            self.local,
            self.encrypt,
            self.decrypt,
            self.wrap,
            self.unwrap,
            self.sign,
            self.verify,
            self.derive,
            self.trusted,
            self.wrap_with_trusted,
        ];
        let mut bits: u32 = 0;
        for (i, f) in flags.iter().enumerate() {
            if *f {
                bits |= 1 << i;
            }
        }
        w.u32(bits).u64(self.value_len as u64);
        w.opt_bytes(self.check_value.as_ref().map(|c| &c[..]));
        w.opt_bytes(self.ec_point.as_deref());
        match self.key_gen_mechanism {
            Some(m) => w.u8(1).u64(m),
            None => w.u8(0),
        };
        match &self.allowed_mechanisms {
            Some(m) => {
                w.u8(1).u32(len32(m.len()));
                for x in m {
                    w.u64(*x);
                }
            }
            None => {
                w.u8(0);
            }
        }
        for t in [&self.wrap_template, &self.unwrap_template] {
            match t {
                Some(list) => {
                    w.u8(1);
                    encode_list(w, list);
                }
                None => {
                    w.u8(0);
                }
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, HsmError> {
        let bad = || HsmError::DeviceError;
        if r.u8()? != 1 {
            return Err(bad());
        }
        let class = ObjectClass::from_code(r.u64()?).ok_or_else(bad)?;
        let key_type = KeyType::from_code(r.u64()?).ok_or_else(bad)?;
        let label = r.string()?;
        let id = r.bytes()?.to_vec();
        let bits = r.u32()?;
        let f = |i: u32| bits & (1 << i) != 0;
        let value_len = usize::try_from(r.u64()?).map_err(|_| bad())?;
        let check_value = match r.opt_bytes()? {
            Some(c) => Some(<[u8; 3]>::try_from(c).map_err(|_| bad())?),
            None => None,
        };
        let ec_point = r.opt_bytes()?.map(<[u8]>::to_vec);
        let key_gen_mechanism = if r.bool()? { Some(r.u64()?) } else { None };
        let allowed_mechanisms = if r.bool()? {
            let n = r.u32()?;
            let mut m = Vec::new();
            for _ in 0..n {
                m.push(r.u64()?);
            }
            Some(m)
        } else {
            None
        };
        let wrap_template = if r.bool()? {
            Some(decode_list(r, 1)?)
        } else {
            None
        };
        let unwrap_template = if r.bool()? {
            Some(decode_list(r, 1)?)
        } else {
            None
        };
        Ok(Self {
            class,
            key_type,
            label,
            id,
            token: f(0),
            private: f(1),
            modifiable: f(2),
            sensitive: f(3),
            extractable: f(4),
            always_sensitive: f(5),
            never_extractable: f(6),
            local: f(7),
            encrypt: f(8),
            decrypt: f(9),
            wrap: f(10),
            unwrap: f(11),
            sign: f(12),
            verify: f(13),
            derive: f(14),
            trusted: f(15),
            wrap_with_trusted: f(16),
            value_len,
            check_value,
            ec_point,
            key_gen_mechanism,
            allowed_mechanisms,
            wrap_template,
            unwrap_template,
        })
    }

    #[cfg(test)]
    pub(crate) fn encoded(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }
}

/// Merges an `UNWRAP_TEMPLATE` into a caller template (see [`KeyTemplate`] for what "specified" means).
pub(crate) fn merge_unwrap_template(
    t: &KeyTemplate,
    unwrap_template: &[AttributeValue],
) -> Result<KeyTemplate, HsmError> {
    let mut out = t.clone();
    for a in unwrap_template {
        let conflict = |specified: bool, equal: bool| specified && !equal;
        use AttributeType as A;
        let c = match a {
            AttributeValue::Class(c) => {
                let r = conflict(t.class.is_some(), t.class == Some(*c));
                out.class = Some(*c);
                r
            }
            AttributeValue::KeyType(k) => {
                let r = conflict(t.key_type.is_some(), t.key_type == Some(*k));
                out.key_type = Some(*k);
                r
            }
            AttributeValue::ValueLen(n) => {
                let r = conflict(t.value_len.is_some(), t.value_len == Some(*n));
                out.value_len = Some(*n);
                r
            }
            AttributeValue::Label(l) => {
                let r = conflict(!t.label.is_empty(), t.label == *l);
                out.label.clone_from(l);
                r
            }
            AttributeValue::Id(i) => {
                let r = conflict(!t.id.is_empty(), t.id == *i);
                out.id.clone_from(i);
                r
            }
            AttributeValue::Bool(A::Sensitive, v) => {
                let r = conflict(t.sensitive.is_some(), t.sensitive == Some(*v));
                out.sensitive = Some(*v);
                r
            }
            AttributeValue::Bool(A::Extractable, v) => {
                let r = conflict(t.extractable.is_some(), t.extractable == Some(*v));
                out.extractable = Some(*v);
                r
            }
            AttributeValue::Bool(A::Token, v) => {
                let r = conflict(t.token, t.token == *v);
                out.token = *v;
                r
            }
            AttributeValue::Bool(A::Private, v) => {
                // `private` defaults to true, so only an explicit false counts as specified.
                let r = conflict(!t.private, t.private == *v);
                out.private = *v;
                r
            }
            AttributeValue::Bool(kind, v) => {
                let field = match kind {
                    A::Encrypt => &mut out.encrypt,
                    A::Decrypt => &mut out.decrypt,
                    A::Wrap => &mut out.wrap,
                    A::Unwrap => &mut out.unwrap,
                    A::Sign => &mut out.sign,
                    A::Verify => &mut out.verify,
                    A::Derive => &mut out.derive,
                    A::Trusted => &mut out.trusted,
                    A::WrapWithTrusted => &mut out.wrap_with_trusted,
                    _ => return Err(HsmError::TemplateInconsistent),
                };
                let r = conflict(*field, *field == *v);
                *field = *v;
                r
            }
            AttributeValue::AllowedMechanisms(m) => {
                let r = conflict(
                    t.allowed_mechanisms.is_some(),
                    t.allowed_mechanisms.as_ref() == Some(m),
                );
                out.allowed_mechanisms = Some(m.clone());
                r
            }
            _ => return Err(HsmError::TemplateInconsistent),
        };
        if c {
            return Err(HsmError::TemplateInconsistent);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_round_trip() {
        let t = KeyTemplate::aes(32)
            .with_label("k")
            .with_id(vec![1, 2])
            .with_allowed_mechanisms(vec![0x1087]);
        let mut a = Attrs::from_template(&t, ObjectClass::SecretKey, KeyType::Aes, 32).unwrap();
        a.wrap_template = Some(vec![AttributeValue::Bool(AttributeType::Extractable, true)]);
        a.check_value = Some([1, 2, 3]);
        let enc = a.encoded();
        let mut r = Reader::new(&enc);
        let b = Attrs::decode(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn merge_conflicts() {
        let t = KeyTemplate::aes(32).with_extractable(true);
        let u = [AttributeValue::Bool(AttributeType::Extractable, false)];
        assert!(matches!(
            merge_unwrap_template(&t, &u),
            Err(HsmError::TemplateInconsistent)
        ));
        let t2 = KeyTemplate::aes(32);
        let m = merge_unwrap_template(&t2, &u).unwrap();
        assert_eq!(m.extractable, Some(false));
    }
}
