//! The thin layer over the RustCrypto crates: AES-KW/KWP with SP 800-38F length rules, AES-GCM, the KCV, P-256
//! ECDSA/ECDH, HKDF, PBKDF2 and SHA-256. Nothing here is hand-rolled cryptography; this module only validates
//! lengths, dispatches on key sizes and maps errors to [`HsmError`].

use aes::cipher::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use aes_kw::{KwAes128, KwAes192, KwAes256, KwpAes128, KwpAes192, KwpAes256};
use p256::PublicKey;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::HsmError;

type Aes192Gcm = AesGcm<aes::Aes192, U12>;

/// GCM tag length.
pub(crate) const GCM_TAG_LEN: usize = 16;

/// Largest KWP input (SP 800-38F: fewer than 2^32 octets).
const KWP_MAX: usize = u32::MAX as usize;

/// Which key-wrap algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KwMode {
    /// RFC 3394 / SP 800-38F KW.
    Kw,
    /// RFC 5649 / SP 800-38F KWP.
    Kwp,
}

macro_rules! with_kw {
    ($kek:expr, $mode:expr, |$k:ident| $body:expr) => {
        match ($kek.len(), $mode) {
            (16, KwMode::Kw) => {
                let $k = KwAes128::new_from_slice($kek).map_err(|_| HsmError::KeySizeRange)?;
                $body
            }
            (24, KwMode::Kw) => {
                let $k = KwAes192::new_from_slice($kek).map_err(|_| HsmError::KeySizeRange)?;
                $body
            }
            (32, KwMode::Kw) => {
                let $k = KwAes256::new_from_slice($kek).map_err(|_| HsmError::KeySizeRange)?;
                $body
            }
            (16, KwMode::Kwp) => {
                let $k = KwpAes128::new_from_slice($kek).map_err(|_| HsmError::KeySizeRange)?;
                $body
            }
            (24, KwMode::Kwp) => {
                let $k = KwpAes192::new_from_slice($kek).map_err(|_| HsmError::KeySizeRange)?;
                $body
            }
            (32, KwMode::Kwp) => {
                let $k = KwpAes256::new_from_slice($kek).map_err(|_| HsmError::KeySizeRange)?;
                $body
            }
            _ => Err(HsmError::KeySizeRange),
        }
    };
}

/// Wraps `data` under `kek`. KW: `data` must be a multiple of 8 and at least 16 bytes; KWP: 1 to 2^32-1 bytes;
/// otherwise `KeySizeRange`.
pub(crate) fn kw_wrap(kek: &[u8], data: &[u8], mode: KwMode) -> Result<Vec<u8>, HsmError> {
    let out_len = match mode {
        KwMode::Kw => {
            if data.len() < 16 || data.len() % 8 != 0 {
                return Err(HsmError::KeySizeRange);
            }
            data.len() + 8
        }
        KwMode::Kwp => {
            if data.is_empty() || data.len() > KWP_MAX {
                return Err(HsmError::KeySizeRange);
            }
            data.len().div_ceil(8) * 8 + 8
        }
    };
    let mut out = vec![0u8; out_len];
    let n = with_kw!(kek, mode, |k| k
        .wrap_key(data, &mut out)
        .map(<[u8]>::len)
        .map_err(|_| HsmError::KeySizeRange))?;
    out.truncate(n);
    Ok(out)
}

/// Unwraps `wrapped` under `kek`. Lengths (KW: >= 24, KWP: >= 16, both multiples of 8) are checked before any
/// cryptography (`WrappedKeyLenRange`); an integrity failure gives `WrappedKeyInvalid` and the temporary buffer is
/// zeroized.
pub(crate) fn kw_unwrap(
    kek: &[u8],
    wrapped: &[u8],
    mode: KwMode,
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let min = match mode {
        KwMode::Kw => 24,
        KwMode::Kwp => 16,
    };
    if wrapped.len() < min || wrapped.len() % 8 != 0 {
        return Err(HsmError::WrappedKeyLenRange);
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
    let n = with_kw!(kek, mode, |k| k
        .unwrap_key(wrapped, &mut out)
        .map(<[u8]>::len)
        .map_err(|_| HsmError::WrappedKeyInvalid))?;
    out.truncate(n);
    if n == 0 {
        // SP 800-38F KWP carries at least one octet; aes-kw accepts an empty payload, we do not.
        return Err(HsmError::WrappedKeyInvalid);
    }
    Ok(out)
}

/// `CKA_CHECK_VALUE` of an AES key: the first 3 bytes of AES-ECB(key, 0^128).
pub(crate) fn aes_kcv(key: &[u8]) -> Result<[u8; 3], HsmError> {
    use aes::cipher::BlockCipherEncrypt;
    let mut block = aes::Block::default();
    match key.len() {
        16 => aes::Aes128::new_from_slice(key)
            .map_err(|_| HsmError::KeySizeRange)?
            .encrypt_block(&mut block),
        24 => aes::Aes192::new_from_slice(key)
            .map_err(|_| HsmError::KeySizeRange)?
            .encrypt_block(&mut block),
        32 => aes::Aes256::new_from_slice(key)
            .map_err(|_| HsmError::KeySizeRange)?
            .encrypt_block(&mut block),
        _ => return Err(HsmError::KeySizeRange),
    }
    Ok([block[0], block[1], block[2]])
}

/// `CKA_CHECK_VALUE` of a generic secret: the first 3 bytes of SHA-256(value) (documented module choice).
pub(crate) fn generic_kcv(value: &[u8]) -> [u8; 3] {
    let d = Sha256::digest(value);
    [d[0], d[1], d[2]]
}

/// SHA-256.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// An initialised AES-GCM cipher for a 128/192/256-bit key (cached in key objects; zeroized on drop).
pub(crate) enum GcmKey {
    A128(Box<Aes128Gcm>),
    A192(Box<Aes192Gcm>),
    A256(Box<Aes256Gcm>),
}

impl GcmKey {
    pub(crate) fn new(key: &[u8]) -> Result<Self, HsmError> {
        let bad = |_| HsmError::KeySizeRange;
        Ok(match key.len() {
            16 => Self::A128(Box::new(Aes128Gcm::new_from_slice(key).map_err(bad)?)),
            24 => Self::A192(Box::new(Aes192Gcm::new_from_slice(key).map_err(bad)?)),
            32 => Self::A256(Box::new(Aes256Gcm::new_from_slice(key).map_err(bad)?)),
            _ => return Err(HsmError::KeySizeRange),
        })
    }

    /// Encrypts; returns ciphertext || tag in one allocation.
    pub(crate) fn encrypt(
        &self,
        iv: &[u8; 12],
        aad: &[u8],
        pt: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let mut out = Vec::with_capacity(pt.len() + GCM_TAG_LEN);
        out.extend_from_slice(pt);
        let nonce = (*iv).into();
        let tag = match self {
            Self::A128(c) => c.encrypt_inout_detached(&nonce, aad, out.as_mut_slice().into()),
            Self::A192(c) => c.encrypt_inout_detached(&nonce, aad, out.as_mut_slice().into()),
            Self::A256(c) => c.encrypt_inout_detached(&nonce, aad, out.as_mut_slice().into()),
        }
        .map_err(|_| HsmError::DataLenRange)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypts ciphertext || tag; a bad tag gives `EncryptedDataInvalid` and no plaintext.
    pub(crate) fn decrypt(
        &self,
        iv: &[u8; 12],
        aad: &[u8],
        ct_tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let ct_len = ct_tag
            .len()
            .checked_sub(GCM_TAG_LEN)
            .ok_or(HsmError::EncryptedDataLenRange)?;
        let (ct, tag) = ct_tag.split_at(ct_len);
        let mut out = Zeroizing::new(ct.to_vec());
        let nonce = (*iv).into();
        let tag = aes_gcm::Tag::try_from(tag).map_err(|_| HsmError::EncryptedDataLenRange)?;
        match self {
            Self::A128(c) => c.decrypt_inout_detached(&nonce, aad, out.as_mut_slice().into(), &tag),
            Self::A192(c) => c.decrypt_inout_detached(&nonce, aad, out.as_mut_slice().into(), &tag),
            Self::A256(c) => c.decrypt_inout_detached(&nonce, aad, out.as_mut_slice().into(), &tag),
        }
        .map_err(|_| HsmError::EncryptedDataInvalid)?;
        Ok(out)
    }
}

/// Seals with AES-256-GCM under a 32-byte key: returns nonce || ciphertext || tag.
pub(crate) fn seal256(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    pt: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let c = Aes256Gcm::new_from_slice(key).map_err(|_| HsmError::GeneralError)?;
    let mut out = Vec::with_capacity(12 + pt.len() + GCM_TAG_LEN);
    out.extend_from_slice(nonce);
    out.extend_from_slice(pt);
    let n = (*nonce).into();
    let tag = c
        .encrypt_inout_detached(&n, aad, out[12..].as_mut().into())
        .map_err(|_| HsmError::GeneralError)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a [`seal256`] blob; any failure is `err`.
pub(crate) fn open256(
    key: &[u8; 32],
    aad: &[u8],
    blob: &[u8],
    err: fn() -> HsmError,
) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    if blob.len() < 12 + GCM_TAG_LEN {
        return Err(err());
    }
    let (nonce, rest) = blob.split_at(12);
    let mut iv = [0u8; 12];
    iv.copy_from_slice(nonce);
    let c = GcmKey::A256(Box::new(
        Aes256Gcm::new_from_slice(key).map_err(|_| HsmError::GeneralError)?,
    ));
    c.decrypt(&iv, aad, rest).map_err(|_| err())
}

/// PBKDF2-HMAC-SHA256 of a PIN into a 256-bit KEK.
pub(crate) fn pin_kek(pin: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(pin, salt, iterations, &mut out[..]);
    out
}

/// HKDF-SHA256 (extract then expand) into `okm`.
pub(crate) fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    okm: &mut [u8],
) -> Result<(), HsmError> {
    let salt = if salt.is_empty() { None } else { Some(salt) };
    hkdf::Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, okm)
        .map_err(|_| HsmError::KeySizeRange)
}

/// HMAC-SHA256 (for the self-test).
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac};
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    match hmac::Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().into()
        }
        Err(_) => [0u8; 32],
    }
}

/// A P-256 signing key from a 32-byte big-endian scalar; zero or >= n gives `err`.
pub(crate) fn ec_key_from_scalar(scalar: &[u8], err: HsmError) -> Result<SigningKey, HsmError> {
    if scalar.len() != 32 {
        return Err(err);
    }
    SigningKey::from_slice(scalar).map_err(|_| err)
}

/// Uncompressed SEC1 encoding (65 bytes) of a verifying key.
pub(crate) fn sec1_uncompressed(vk: &VerifyingKey) -> Vec<u8> {
    vk.to_sec1_point(false).as_bytes().to_vec()
}

/// ECDSA over the message with SHA-256 (RFC 6979 deterministic nonces); r || s.
pub(crate) fn ecdsa_sign_sha256(sk: &SigningKey, msg: &[u8]) -> Vec<u8> {
    let sig: Signature = sk.sign(msg);
    sig.to_bytes().to_vec()
}

/// ECDSA over a 32-byte prehash; r || s.
pub(crate) fn ecdsa_sign_prehash(sk: &SigningKey, hash: &[u8]) -> Result<Vec<u8>, HsmError> {
    if hash.len() != 32 {
        return Err(HsmError::DataLenRange);
    }
    let sig: Signature = sk.sign_prehash(hash).map_err(|_| HsmError::DataLenRange)?;
    Ok(sig.to_bytes().to_vec())
}

/// Verifies r || s; `prehashed` selects CKM_ECDSA (32-byte hash) over CKM_ECDSA_SHA256.
pub(crate) fn ecdsa_verify(
    vk: &VerifyingKey,
    data: &[u8],
    sig: &[u8],
    prehashed: bool,
) -> Result<(), HsmError> {
    if sig.len() != 64 {
        return Err(HsmError::SignatureLenRange);
    }
    let sig = Signature::from_slice(sig).map_err(|_| HsmError::SignatureInvalid)?;
    let ok = if prehashed {
        if data.len() != 32 {
            return Err(HsmError::DataLenRange);
        }
        vk.verify_prehash(data, &sig).is_ok()
    } else {
        vk.verify(data, &sig).is_ok()
    };
    if ok {
        Ok(())
    } else {
        Err(HsmError::SignatureInvalid)
    }
}

/// Parses ECDH public data: raw uncompressed (65), compressed (33) or a DER OCTET STRING holding either.
/// Off-curve points and the identity give `MechanismParamInvalid`.
pub(crate) fn parse_ec_public(data: &[u8]) -> Result<PublicKey, HsmError> {
    let point = match data.len() {
        65 | 33 => data,
        n if n >= 2 && data[0] == 0x04 && usize::from(data[1]) == n - 2 => &data[2..],
        _ => data,
    };
    PublicKey::from_sec1_bytes(point).map_err(|_| HsmError::MechanismParamInvalid)
}

/// ECDH (CKD_NULL): the 32-byte x-coordinate.
pub(crate) fn ecdh(sk: &SigningKey, peer: &PublicKey) -> Zeroizing<[u8; 32]> {
    let shared = p256::ecdh::diffie_hellman(sk.as_nonzero_scalar(), peer.as_affine());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(shared.raw_secret_bytes());
    out
}

/// PKCS#8 DER of a private key (what C_WrapKey wraps).
pub(crate) fn pkcs8_encode(sk: &SigningKey) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let doc = sk.to_pkcs8_der().map_err(|_| HsmError::GeneralError)?;
    Ok(Zeroizing::new(doc.as_bytes().to_vec()))
}

/// A private key from PKCS#8 DER; malformed data gives `WrappedKeyInvalid`.
pub(crate) fn pkcs8_decode(der: &[u8]) -> Result<SigningKey, HsmError> {
    SigningKey::from_pkcs8_der(der).map_err(|_| HsmError::WrappedKeyInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kw_lengths() {
        let kek = [0u8; 32];
        assert!(matches!(
            kw_wrap(&kek, &[0; 8], KwMode::Kw),
            Err(HsmError::KeySizeRange)
        ));
        assert!(matches!(
            kw_wrap(&kek, &[0; 17], KwMode::Kw),
            Err(HsmError::KeySizeRange)
        ));
        assert!(matches!(
            kw_wrap(&kek, &[], KwMode::Kwp),
            Err(HsmError::KeySizeRange)
        ));
        let w = kw_wrap(&kek, &[1; 7], KwMode::Kwp).unwrap();
        assert_eq!(w.len(), 16);
        assert_eq!(&kw_unwrap(&kek, &w, KwMode::Kwp).unwrap()[..], &[1; 7]);
        assert!(matches!(
            kw_unwrap(&kek, &w, KwMode::Kw),
            Err(HsmError::WrappedKeyLenRange)
        ));
    }

    #[test]
    fn gcm_round_trip() {
        let k = GcmKey::new(&[3; 32]).unwrap();
        let ct = k.encrypt(&[1; 12], b"a", b"hello").unwrap();
        assert_eq!(&k.decrypt(&[1; 12], b"a", &ct).unwrap()[..], b"hello");
        assert!(matches!(
            k.decrypt(&[1; 12], b"b", &ct),
            Err(HsmError::EncryptedDataInvalid)
        ));
    }
}
