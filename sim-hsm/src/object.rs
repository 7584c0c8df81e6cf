//! Key objects held by a token: their attributes, their in-memory key material (zeroized on drop) and the
//! encoding of an object's stored record (attributes in clear inside the master-key seal, the value additionally
//! sealed under the token key with the attributes bound as associated data).

use std::fmt;
use std::sync::Arc;

use p256::ecdsa::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::attributes::{Attrs, KeyType, ObjectClass};
use crate::codec::{Reader, Writer};
use crate::error::HsmError;
use crate::primitives::{self, GcmKey};

/// An object handle. Unlike PKCS#11 handles, a token object's handle is **stable across restarts**: it is
/// persisted with the object, so callers may store it. Handles encode the slot ID in the upper 32 bits, so a
/// handle from another token is never valid here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectHandle(pub u64);

/// Key material in memory. Secret bytes are `Zeroizing`; p256 keys zeroize on drop.
pub(crate) enum KeyMaterial {
    /// AES or generic secret; AES keys carry their initialised GCM cipher (hot path).
    Secret {
        value: Zeroizing<Vec<u8>>,
        gcm: Option<GcmKey>,
    },
    /// P-256 private key.
    EcPrivate { sk: SigningKey },
    /// P-256 public key.
    EcPublic { vk: VerifyingKey },
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret { value, .. } => write!(f, "Secret(<{} bytes>)", value.len()),
            Self::EcPrivate { .. } => f.write_str("EcPrivate(<redacted>)"),
            Self::EcPublic { .. } => f.write_str("EcPublic"),
        }
    }
}

impl KeyMaterial {
    /// Secret-key material; AES values of 16/24/32 bytes get a cached GCM cipher.
    pub(crate) fn secret(key_type: KeyType, value: Zeroizing<Vec<u8>>) -> Result<Self, HsmError> {
        let gcm = if key_type == KeyType::Aes {
            Some(GcmKey::new(&value)?)
        } else {
            None
        };
        Ok(Self::Secret { value, gcm })
    }

    /// The bytes sealed under the token key (secret value or private scalar). None for public keys.
    pub(crate) fn secret_bytes(&self) -> Option<Zeroizing<Vec<u8>>> {
        match self {
            Self::Secret { value, .. } => Some(value.clone()),
            Self::EcPrivate { sk } => Some(Zeroizing::new(sk.to_bytes().to_vec())),
            Self::EcPublic { .. } => None,
        }
    }

    pub(crate) fn verifying_key(&self) -> Option<&VerifyingKey> {
        match self {
            Self::EcPrivate { sk } => Some(sk.verifying_key()),
            Self::EcPublic { vk } => Some(vk),
            Self::Secret { .. } => None,
        }
    }

    /// Rebuilds material from sealed bytes.
    pub(crate) fn from_secret_bytes(
        attrs: &Attrs,
        bytes: Zeroizing<Vec<u8>>,
    ) -> Result<Self, HsmError> {
        match attrs.class {
            ObjectClass::SecretKey => Self::secret(attrs.key_type, bytes),
            ObjectClass::PrivateKey => Ok(Self::EcPrivate {
                sk: primitives::ec_key_from_scalar(&bytes, HsmError::DeviceError)?,
            }),
            ObjectClass::PublicKey => Err(HsmError::DeviceError),
        }
    }
}

/// Why a loaded object cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The record or its inner blob failed authentication or parsing.
    Corrupt,
    /// The record is sealed under another master key.
    ForeignMasterKey,
}

impl Fault {
    pub(crate) fn error(self) -> HsmError {
        match self {
            Self::Corrupt => HsmError::DeviceError,
            Self::ForeignMasterKey => HsmError::WrongMasterKey,
        }
    }
}

/// A key object. Immutable once shared: attribute changes replace the `Arc<KeyObject>` in the token's map.
#[derive(Debug, Clone)]
pub(crate) struct KeyObject {
    pub handle: u64,
    pub attrs: Attrs,
    /// None while the token's key store is still locked (no login since start-up) or when `fault` is set.
    pub material: Option<Arc<KeyMaterial>>,
    /// The value sealed under the token key (token objects; kept to unlock later and to rewrite the record).
    pub sealed_value: Option<Vec<u8>>,
    /// The session that owns a session object (`CKA_TOKEN=false`).
    pub session: Option<u64>,
    pub fault: Option<Fault>,
}

/// Associated data binding a value to its token, handle and attributes.
fn value_aad(serial: &str, handle: u64, attrs: &Attrs) -> Zeroizing<Vec<u8>> {
    let mut w = Writer::new();
    w.str("sim-hsm/object-value/v1").str(serial).u64(handle);
    attrs.encode(&mut w);
    w.finish()
}

/// Seals secret bytes under the token key.
pub(crate) fn seal_value(
    token_key: &[u8; 32],
    nonce: &[u8; 12],
    serial: &str,
    handle: u64,
    attrs: &Attrs,
    bytes: &[u8],
) -> Result<Vec<u8>, HsmError> {
    primitives::seal256(token_key, nonce, &value_aad(serial, handle, attrs), bytes)
}

/// Opens a value sealed by [`seal_value`]; any failure is `DeviceError`.
pub(crate) fn open_value(
    token_key: &[u8; 32],
    serial: &str,
    handle: u64,
    attrs: &Attrs,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    primitives::open256(token_key, &value_aad(serial, handle, attrs), blob, || {
        HsmError::DeviceError
    })
}

/// Body of an object record (before the master-key seal).
pub(crate) fn encode_record(
    handle: u64,
    attrs: &Attrs,
    sealed_value: Option<&[u8]>,
) -> Zeroizing<Vec<u8>> {
    let mut w = Writer::new();
    w.u8(1).u64(handle);
    attrs.encode(&mut w);
    w.opt_bytes(sealed_value);
    w.finish()
}

/// Parses an object record body.
pub(crate) fn decode_record(body: &[u8]) -> Result<(u64, Attrs, Option<Vec<u8>>), HsmError> {
    let mut r = Reader::new(body);
    if r.u8()? != 1 {
        return Err(HsmError::DeviceError);
    }
    let handle = r.u64()?;
    let attrs = Attrs::decode(&mut r)?;
    let sealed = r.opt_bytes()?.map(<[u8]>::to_vec);
    r.finish()?;
    Ok((handle, attrs, sealed))
}

/// Public-key material from the stored point (public keys are not secret and need no token key).
pub(crate) fn public_material(attrs: &Attrs) -> Result<KeyMaterial, HsmError> {
    let point = attrs.ec_point.as_deref().ok_or(HsmError::DeviceError)?;
    let vk = VerifyingKey::from_sec1_bytes(point).map_err(|_| HsmError::DeviceError)?;
    Ok(KeyMaterial::EcPublic { vk })
}
