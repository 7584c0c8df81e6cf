//! Cryptographic services of a [`Session`]: AES-GCM encrypt/decrypt (the hot path), ECDSA sign/verify, random
//! numbers and SHA-256. The hot path takes no module-wide lock: two atomic loads, one read lock on the token's
//! object map, an `Arc` clone, and the cached GCM cipher of the key object.

use crate::attributes::{KeyType, ObjectClass};
use crate::error::HsmError;
use crate::keymgmt::check_allowed;
use crate::mechanism::{GcmOutput, Mechanism};
use crate::object::{KeyMaterial, ObjectHandle};
use crate::primitives::{self, GcmKey};
use crate::session::Session;
use zeroize::Zeroizing;

/// Largest `generate_random` request.
pub const MAX_RANDOM_LEN: usize = 1 << 20;

impl Session {
    fn gcm_key<R>(
        &self,
        key: ObjectHandle,
        mechanism: &Mechanism,
        encrypt: bool,
        f: impl FnOnce(&GcmKey) -> Result<R, HsmError>,
    ) -> Result<R, HsmError> {
        let obj = self.lookup(key, HsmError::KeyHandleInvalid)?;
        if obj.attrs.class != ObjectClass::SecretKey || obj.attrs.key_type != KeyType::Aes {
            return Err(HsmError::KeyTypeInconsistent);
        }
        if (encrypt && !obj.attrs.encrypt) || (!encrypt && !obj.attrs.decrypt) {
            return Err(HsmError::KeyFunctionNotPermitted);
        }
        check_allowed(&obj, mechanism)?;
        match obj.material.as_deref() {
            Some(KeyMaterial::Secret { gcm: Some(g), .. }) => f(g),
            Some(_) => Err(HsmError::KeyTypeInconsistent),
            None => Err(HsmError::UserNotLoggedIn),
        }
    }

    /// `C_Encrypt` with `CKM_AES_GCM` (96-bit IV, 128-bit tag). With `iv: None` the module generates the IV
    /// (per-token deterministic construction, SP 800-38D §8.2.1) and returns it.
    pub fn encrypt(
        &self,
        mechanism: &Mechanism,
        key: ObjectHandle,
        plaintext: &[u8],
    ) -> Result<GcmOutput, HsmError> {
        self.check()?;
        let Mechanism::AesGcm { iv, aad } = mechanism else {
            return Err(HsmError::MechanismInvalid);
        };
        self.gcm_key(key, mechanism, true, |g| {
            let iv = iv.unwrap_or_else(|| self.inner.token.iv.next());
            Ok(GcmOutput {
                iv,
                ciphertext_and_tag: g.encrypt(&iv, aad, plaintext)?,
            })
        })
    }

    /// `C_Decrypt` with `CKM_AES_GCM`; the IV is required (`MechanismParamInvalid`). A bad tag gives
    /// `EncryptedDataInvalid` and no plaintext.
    pub fn decrypt(
        &self,
        mechanism: &Mechanism,
        key: ObjectHandle,
        ciphertext_and_tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        self.check()?;
        let Mechanism::AesGcm { iv, aad } = mechanism else {
            return Err(HsmError::MechanismInvalid);
        };
        let iv = iv.ok_or(HsmError::MechanismParamInvalid)?;
        self.gcm_key(key, mechanism, false, |g| {
            g.decrypt(&iv, aad, ciphertext_and_tag)
        })
    }

    /// `C_Sign` with `CKM_ECDSA` (data is a 32-byte hash) or `CKM_ECDSA_SHA256`; returns r || s (64 bytes).
    pub fn sign(
        &self,
        key: ObjectHandle,
        mechanism: &Mechanism,
        data: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        self.check()?;
        if !matches!(mechanism, Mechanism::Ecdsa | Mechanism::EcdsaSha256) {
            return Err(HsmError::MechanismInvalid);
        }
        let obj = self.lookup(key, HsmError::KeyHandleInvalid)?;
        if obj.attrs.class != ObjectClass::PrivateKey || obj.attrs.key_type != KeyType::Ec {
            return Err(HsmError::KeyTypeInconsistent);
        }
        if !obj.attrs.sign {
            return Err(HsmError::KeyFunctionNotPermitted);
        }
        check_allowed(&obj, mechanism)?;
        let Some(KeyMaterial::EcPrivate { sk }) = obj.material.as_deref() else {
            return Err(HsmError::UserNotLoggedIn);
        };
        match mechanism {
            Mechanism::Ecdsa => primitives::ecdsa_sign_prehash(sk, data),
            _ => Ok(primitives::ecdsa_sign_sha256(sk, data)),
        }
    }

    /// `C_Verify` with `CKM_ECDSA` or `CKM_ECDSA_SHA256` using an EC public key; `SignatureInvalid` on mismatch,
    /// `SignatureLenRange` when the signature is not 64 bytes.
    pub fn verify(
        &self,
        key: ObjectHandle,
        mechanism: &Mechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<(), HsmError> {
        self.check()?;
        let prehashed = match mechanism {
            Mechanism::Ecdsa => true,
            Mechanism::EcdsaSha256 => false,
            _ => return Err(HsmError::MechanismInvalid),
        };
        let obj = self.lookup(key, HsmError::KeyHandleInvalid)?;
        if obj.attrs.class != ObjectClass::PublicKey || obj.attrs.key_type != KeyType::Ec {
            return Err(HsmError::KeyTypeInconsistent);
        }
        if !obj.attrs.verify {
            return Err(HsmError::KeyFunctionNotPermitted);
        }
        check_allowed(&obj, mechanism)?;
        let vk = obj
            .material
            .as_deref()
            .and_then(KeyMaterial::verifying_key)
            .ok_or(HsmError::DeviceError)?;
        primitives::ecdsa_verify(vk, data, signature, prehashed)
    }

    /// `C_GenerateRandom` through the continuous RNG test; at most [`MAX_RANDOM_LEN`] bytes.
    pub fn generate_random(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        self.check()?;
        if len > MAX_RANDOM_LEN {
            return Err(HsmError::DataLenRange);
        }
        let mut out = vec![0u8; len];
        self.inner.hsm.random(&mut out)?;
        Ok(out)
    }

    /// `C_Digest` with `CKM_SHA256`.
    pub fn digest_sha256(&self, data: &[u8]) -> Result<[u8; 32], HsmError> {
        self.check()?;
        Ok(primitives::sha256(data))
    }
}
