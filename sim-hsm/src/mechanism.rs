//! PKCS#11 mechanisms supported by the module ([`Mechanism`]), their `CKM_*` codes and parameters.

use std::fmt;

/// `CKM_EC_KEY_PAIR_GEN`.
pub const CKM_EC_KEY_PAIR_GEN: u64 = 0x1040;
/// `CKM_ECDSA`.
pub const CKM_ECDSA: u64 = 0x1041;
/// `CKM_ECDSA_SHA256`.
pub const CKM_ECDSA_SHA256: u64 = 0x1044;
/// `CKM_ECDH1_DERIVE`.
pub const CKM_ECDH1_DERIVE: u64 = 0x1050;
/// `CKM_AES_KEY_GEN`.
pub const CKM_AES_KEY_GEN: u64 = 0x1080;
/// `CKM_AES_GCM`.
pub const CKM_AES_GCM: u64 = 0x1087;
/// `CKM_AES_KEY_WRAP` (RFC 3394 / SP 800-38F KW).
pub const CKM_AES_KEY_WRAP: u64 = 0x2109;
/// `CKM_AES_KEY_WRAP_PAD`: accepted as an alias of KWP (SoftHSM implements RFC 5649 under this number).
pub const CKM_AES_KEY_WRAP_PAD: u64 = 0x210A;
/// `CKM_AES_KEY_WRAP_KWP` (RFC 5649 / SP 800-38F KWP), the canonical KWP number.
pub const CKM_AES_KEY_WRAP_KWP: u64 = 0x210B;
/// `CKM_HKDF_DERIVE` (PKCS#11 v3.0), here HKDF-SHA256.
pub const CKM_HKDF_DERIVE: u64 = 0x402A;

/// `CKD_NULL`: no KDF after ECDH (the raw x-coordinate is the shared secret).
pub const CKD_NULL: u64 = 0x1;

/// An ECDH key-derivation function (`CK_EC_KDF_TYPE`). Only [`EcKdf::Null`] is supported (SoftHSM-compatible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcKdf {
    /// `CKD_NULL`.
    Null,
    /// Any other `CKD_*` value; refused with `MechanismParamInvalid`.
    Other(u64),
}

impl EcKdf {
    /// The `CKD_*` code.
    #[must_use]
    pub fn code(self) -> u64 {
        match self {
            Self::Null => CKD_NULL,
            Self::Other(c) => c,
        }
    }

    /// From a `CKD_*` code.
    #[must_use]
    pub fn from_code(code: u64) -> Self {
        if code == CKD_NULL {
            Self::Null
        } else {
            Self::Other(code)
        }
    }
}

/// A mechanism with its parameters.
#[derive(Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// `CKM_AES_KEY_WRAP` (0x2109), strict SP 800-38F KW (no parameter).
    AesKeyWrap,
    /// `CKM_AES_KEY_WRAP_KWP` (0x210B; 0x210A is accepted by [`Mechanism::from_code`] as an alias).
    AesKeyWrapKwp,
    /// `CKM_AES_GCM` (0x1087) with a 96-bit IV and a 128-bit tag.
    AesGcm {
        /// The IV. `None` on encrypt: the module generates it (returned in [`GcmOutput`]). Required on decrypt.
        iv: Option<[u8; 12]>,
        /// Additional authenticated data.
        aad: Vec<u8>,
    },
    /// `CKM_ECDH1_DERIVE` (0x1050).
    Ecdh1Derive {
        /// The KDF; only [`EcKdf::Null`] is supported.
        kdf: EcKdf,
        /// Shared data; must be empty.
        shared_data: Vec<u8>,
        /// The peer's public point: raw uncompressed (65 bytes), compressed (33 bytes) or a DER OCTET STRING.
        public_data: Vec<u8>,
    },
    /// `CKM_HKDF_DERIVE` (0x402A) with SHA-256, extract and expand.
    HkdfDerive {
        /// HKDF salt (may be empty).
        salt: Vec<u8>,
        /// HKDF info.
        info: Vec<u8>,
    },
    /// `CKM_EC_KEY_PAIR_GEN` (0x1040), P-256 only.
    EcKeyPairGen,
    /// `CKM_ECDSA` (0x1041): the data is a 32-byte SHA-256 hash.
    Ecdsa,
    /// `CKM_ECDSA_SHA256` (0x1044): the module hashes the data.
    EcdsaSha256,
    /// `CKM_AES_KEY_GEN` (0x1080).
    AesKeyGen,
}

impl fmt::Debug for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AesKeyWrap => f.write_str("AesKeyWrap"),
            Self::AesKeyWrapKwp => f.write_str("AesKeyWrapKwp"),
            Self::AesGcm { iv, aad } => f
                .debug_struct("AesGcm")
                .field("iv", &iv.is_some())
                .field("aad_len", &aad.len())
                .finish(),
            Self::Ecdh1Derive { kdf, .. } => {
                f.debug_struct("Ecdh1Derive").field("kdf", kdf).finish()
            }
            Self::HkdfDerive { .. } => f.write_str("HkdfDerive"),
            Self::EcKeyPairGen => f.write_str("EcKeyPairGen"),
            Self::Ecdsa => f.write_str("Ecdsa"),
            Self::EcdsaSha256 => f.write_str("EcdsaSha256"),
            Self::AesKeyGen => f.write_str("AesKeyGen"),
        }
    }
}

impl Mechanism {
    /// The canonical `CKM_*` code.
    #[must_use]
    pub fn code(&self) -> u64 {
        match self {
            Self::AesKeyWrap => CKM_AES_KEY_WRAP,
            Self::AesKeyWrapKwp => CKM_AES_KEY_WRAP_KWP,
            Self::AesGcm { .. } => CKM_AES_GCM,
            Self::Ecdh1Derive { .. } => CKM_ECDH1_DERIVE,
            Self::HkdfDerive { .. } => CKM_HKDF_DERIVE,
            Self::EcKeyPairGen => CKM_EC_KEY_PAIR_GEN,
            Self::Ecdsa => CKM_ECDSA,
            Self::EcdsaSha256 => CKM_ECDSA_SHA256,
            Self::AesKeyGen => CKM_AES_KEY_GEN,
        }
    }

    /// The mechanism for a `CKM_*` code, with empty/default parameters. 0x210A maps to [`Mechanism::AesKeyWrapKwp`].
    #[must_use]
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            CKM_AES_KEY_WRAP => Self::AesKeyWrap,
            CKM_AES_KEY_WRAP_KWP | CKM_AES_KEY_WRAP_PAD => Self::AesKeyWrapKwp,
            CKM_AES_GCM => Self::AesGcm {
                iv: None,
                aad: Vec::new(),
            },
            CKM_ECDH1_DERIVE => Self::Ecdh1Derive {
                kdf: EcKdf::Null,
                shared_data: Vec::new(),
                public_data: Vec::new(),
            },
            CKM_HKDF_DERIVE => Self::HkdfDerive {
                salt: Vec::new(),
                info: Vec::new(),
            },
            CKM_EC_KEY_PAIR_GEN => Self::EcKeyPairGen,
            CKM_ECDSA => Self::Ecdsa,
            CKM_ECDSA_SHA256 => Self::EcdsaSha256,
            CKM_AES_KEY_GEN => Self::AesKeyGen,
            _ => return None,
        })
    }

    /// Whether `ALLOWED_MECHANISMS` containing `code` permits this mechanism (0x210A and 0x210B are equivalent).
    pub(crate) fn permitted_by(&self, allowed: &[u64]) -> bool {
        let own = self.code();
        allowed
            .iter()
            .any(|&c| c == own || (own == CKM_AES_KEY_WRAP_KWP && c == CKM_AES_KEY_WRAP_PAD))
    }
}

/// Every mechanism code the module supports (0x210A listed as the KWP alias).
#[must_use]
pub fn supported_mechanisms() -> Vec<u64> {
    vec![
        CKM_EC_KEY_PAIR_GEN,
        CKM_ECDSA,
        CKM_ECDSA_SHA256,
        CKM_ECDH1_DERIVE,
        CKM_AES_KEY_GEN,
        CKM_AES_GCM,
        CKM_AES_KEY_WRAP,
        CKM_AES_KEY_WRAP_PAD,
        CKM_AES_KEY_WRAP_KWP,
        CKM_HKDF_DERIVE,
    ]
}

/// Result of an AES-GCM encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcmOutput {
    /// The 96-bit IV actually used.
    pub iv: [u8; 12],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext_and_tag: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in supported_mechanisms() {
            let m = Mechanism::from_code(c).unwrap();
            if c == CKM_AES_KEY_WRAP_PAD {
                assert_eq!(m.code(), CKM_AES_KEY_WRAP_KWP);
            } else {
                assert_eq!(m.code(), c);
            }
        }
        assert!(Mechanism::AesKeyWrapKwp.permitted_by(&[CKM_AES_KEY_WRAP_PAD]));
        assert!(!Mechanism::AesKeyWrap.permitted_by(&[CKM_AES_KEY_WRAP_PAD]));
    }
}
