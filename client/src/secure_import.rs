//! The client half of kmsim's secure import (the `SecureImport` message of
//! `proto/kmsim/v1/key.proto`): sealing 16/24/32-byte key material for an instance's import
//! token so that only the server's HSM can recover it.
//!
//! The scheme, all primitives from RustCrypto:
//!
//! 1. An ephemeral P-256 key pair; ECDH with the token's public key gives Z (the 32-byte
//!    x-coordinate of the shared point).
//! 2. KEK = HKDF-SHA256(ikm = Z, salt = token nonce, info = `"kmsim import-token v1"` || token
//!    id as ASCII), 32 bytes.
//! 3. `encrypted_material` = AES-KWP (RFC 5649) of the material under the KEK.
//! 4. `encrypted_nonce` = AES-GCM of the token nonce under the material itself (AES-128/192/256
//!    by its length) with a random 12-byte IV and no associated data, tag appended.

use aes_gcm::aead::Aead;
use aes_gcm::aead::consts::U12;
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, KeyInit};
use aes_kw::KwpAes256;
use hkdf::Hkdf;
use kmsim_proto::v1::{ImportToken, SecureImport};
use p256::PublicKey;
use p256::ecdh::EphemeralSecret;
use p256::elliptic_curve::Generate;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The HKDF `info` prefix; the token id follows it.
pub const HKDF_INFO_PREFIX: &[u8] = b"kmsim import-token v1";
/// Length of an import token's nonce.
pub const NONCE_LEN: usize = 16;
/// Length of the AES-GCM IV of `encrypted_nonce`.
pub const IV_LEN: usize = 12;

/// Why material could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecureImportError {
    /// The token has no public key (only `GetImportToken` returns it), or it is not a valid
    /// SEC1-encoded P-256 point.
    #[error("the import token has no valid P-256 public key")]
    InvalidPublicKey,
    /// The token's nonce is not 16 bytes (only `GetImportToken` returns it).
    #[error("the import token's nonce is not 16 bytes")]
    InvalidNonce,
    /// The token id is empty.
    #[error("the import token has no id")]
    MissingTokenId,
    /// The material is not 16, 24 or 32 bytes long.
    #[error("key material must be 16, 24 or 32 bytes")]
    InvalidMaterialLength,
    /// The operating system's random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// A primitive refused its input (never expected with validated lengths).
    #[error("a cryptographic primitive failed")]
    Crypto,
}

/// The parts of an import token that sealing needs, parsed and checked.
#[derive(Debug, Clone)]
pub struct ImportTokenKey {
    id: String,
    public_key: PublicKey,
    nonce: [u8; NONCE_LEN],
}

impl ImportTokenKey {
    /// Parses the public key, nonce and id of a token returned by `GetImportToken`.
    ///
    /// # Errors
    /// [`SecureImportError::InvalidPublicKey`], [`SecureImportError::InvalidNonce`] or
    /// [`SecureImportError::MissingTokenId`].
    pub fn from_token(token: &ImportToken) -> Result<Self, SecureImportError> {
        Self::new(&token.id, &token.public_key, &token.nonce)
    }

    /// Builds the key from its raw parts: the token id, the SEC1 P-256 public key and the
    /// 16-byte nonce.
    ///
    /// # Errors
    /// As [`from_token`](Self::from_token).
    pub fn new(id: &str, public_key: &[u8], nonce: &[u8]) -> Result<Self, SecureImportError> {
        if id.is_empty() {
            return Err(SecureImportError::MissingTokenId);
        }
        let public_key = PublicKey::from_sec1_bytes(public_key)
            .map_err(|_| SecureImportError::InvalidPublicKey)?;
        let nonce = nonce
            .try_into()
            .map_err(|_| SecureImportError::InvalidNonce)?;
        Ok(Self {
            id: id.to_owned(),
            public_key,
            nonce,
        })
    }

    /// The token id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The token nonce.
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }
}

/// Derives the key-encryption key from the ECDH secret `z`, the nonce and the token id
/// (step 3 of the scheme). Shared by both sides of the scheme.
///
/// # Errors
/// [`SecureImportError::Crypto`] if HKDF refuses the output length (it never does for 32).
pub fn derive_kek(
    z: &[u8],
    nonce: &[u8],
    token_id: &str,
) -> Result<Zeroizing<[u8; 32]>, SecureImportError> {
    let mut info = Vec::with_capacity(HKDF_INFO_PREFIX.len() + token_id.len());
    info.extend_from_slice(HKDF_INFO_PREFIX);
    info.extend_from_slice(token_id.as_bytes());
    let mut kek = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(nonce), z)
        .expand(&info, kek.as_mut_slice())
        .map_err(|_| SecureImportError::Crypto)?;
    Ok(kek)
}

/// AES-GCM encryption (tag appended) under a 16-, 24- or 32-byte key.
fn gcm_encrypt(
    key: &[u8],
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, SecureImportError> {
    let nonce = (*iv).into();
    let out = match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .map_err(|_| SecureImportError::InvalidMaterialLength)?
            .encrypt(&nonce, plaintext),
        24 => AesGcm::<Aes192, U12>::new_from_slice(key)
            .map_err(|_| SecureImportError::InvalidMaterialLength)?
            .encrypt(&nonce, plaintext),
        32 => Aes256Gcm::new_from_slice(key)
            .map_err(|_| SecureImportError::InvalidMaterialLength)?
            .encrypt(&nonce, plaintext),
        _ => return Err(SecureImportError::InvalidMaterialLength),
    };
    out.map_err(|_| SecureImportError::Crypto)
}

/// Seals `material` for the import token `token` (see the module documentation), ready to
/// put in `CreateKeyRequest.secure_import` or `RotateKeyRequest.secure_import`.
///
/// Every intermediate secret (ECDH secret, KEK) is zeroized when dropped; the caller should
/// hold `material` in a [`Zeroizing`] buffer.
///
/// # Errors
/// [`SecureImportError::InvalidMaterialLength`] unless `material` is 16, 24 or 32 bytes;
/// [`SecureImportError::Random`] if the system random generator fails.
pub fn seal(token: &ImportTokenKey, material: &[u8]) -> Result<SecureImport, SecureImportError> {
    if !matches!(material.len(), 16 | 24 | 32) {
        return Err(SecureImportError::InvalidMaterialLength);
    }
    let ephemeral = EphemeralSecret::try_generate().map_err(|_| SecureImportError::Random)?;
    let shared = ephemeral.diffie_hellman(&token.public_key);
    let kek = derive_kek(shared.raw_secret_bytes(), &token.nonce, &token.id)?;

    let kwp = KwpAes256::new_from_slice(kek.as_slice()).map_err(|_| SecureImportError::Crypto)?;
    // KWP output is the material padded to 8 bytes plus the 8-byte integrity block.
    let mut wrapped = vec![0u8; material.len().div_ceil(8) * 8 + 8];
    let encrypted_material = kwp
        .wrap_key(material, &mut wrapped)
        .map_err(|_| SecureImportError::Crypto)?
        .to_vec();

    let mut iv = [0u8; IV_LEN];
    getrandom::fill(&mut iv).map_err(|_| SecureImportError::Random)?;
    let encrypted_nonce = gcm_encrypt(material, &iv, &token.nonce)?;

    Ok(SecureImport {
        ephemeral_public_key: ephemeral.public_key().to_sec1_bytes().into_vec(),
        encrypted_material,
        encrypted_nonce,
        iv: iv.to_vec(),
        import_token_id: token.id.clone(),
    })
}

/// Parses `token` and seals `material` for it: [`ImportTokenKey::from_token`] then [`seal`].
///
/// # Errors
/// As both.
pub fn seal_for_token(
    token: &ImportToken,
    material: &[u8],
) -> Result<SecureImport, SecureImportError> {
    seal(&ImportTokenKey::from_token(token)?, material)
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::Aead;
    use p256::SecretKey;

    use super::*;

    /// Why the receiving side refused, mirroring the server's reason codes.
    #[derive(Debug, PartialEq, Eq)]
    enum Refusal {
        /// KWP integrity check failed (wrong KEK: wrong token key, nonce or id).
        Unwrap,
        /// GCM authentication failed (`INCORRECT_NONCE_IV_ERR`).
        NonceIv,
        /// The nonce decrypted but differs (`INCORRECT_NONCE_ERR`).
        Nonce,
    }

    /// The server's half, written independently with the same primitives.
    fn open(
        token_secret: &SecretKey,
        token_id: &str,
        expected_nonce: &[u8],
        sealed: &SecureImport,
    ) -> Result<Zeroizing<Vec<u8>>, Refusal> {
        let eph = PublicKey::from_sec1_bytes(&sealed.ephemeral_public_key).unwrap();
        let shared = p256::ecdh::diffie_hellman(token_secret.to_nonzero_scalar(), eph.as_affine());
        let kek = derive_kek(shared.raw_secret_bytes(), expected_nonce, token_id).unwrap();
        let kwp = KwpAes256::new_from_slice(kek.as_slice()).unwrap();
        let mut buf = Zeroizing::new(vec![0u8; sealed.encrypted_material.len()]);
        let material = Zeroizing::new(
            kwp.unwrap_key(&sealed.encrypted_material, &mut buf)
                .map_err(|_| Refusal::Unwrap)?
                .to_vec(),
        );
        let iv: [u8; IV_LEN] = sealed.iv.as_slice().try_into().unwrap();
        let nonce = iv.into();
        let decrypted = match material.len() {
            16 => Aes128Gcm::new_from_slice(&material)
                .unwrap()
                .decrypt(&nonce, sealed.encrypted_nonce.as_slice()),
            24 => AesGcm::<Aes192, U12>::new_from_slice(&material)
                .unwrap()
                .decrypt(&nonce, sealed.encrypted_nonce.as_slice()),
            32 => Aes256Gcm::new_from_slice(&material)
                .unwrap()
                .decrypt(&nonce, sealed.encrypted_nonce.as_slice()),
            other => panic!("unexpected material length {other}"),
        }
        .map_err(|_| Refusal::NonceIv)?;
        if decrypted != expected_nonce {
            return Err(Refusal::Nonce);
        }
        Ok(material)
    }

    fn token() -> (SecretKey, ImportToken) {
        let secret = SecretKey::generate();
        let token = ImportToken {
            id: "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b".to_owned(),
            public_key: secret.public_key().to_sec1_bytes().into_vec(),
            nonce: (0u8..16).collect(),
            ..ImportToken::default()
        };
        (secret, token)
    }

    #[test]
    fn round_trips_for_every_material_length() {
        let (secret, token) = token();
        for len in [16usize, 24, 32] {
            let material = Zeroizing::new((0..len).map(|i| (i * 7 + 3) as u8).collect::<Vec<_>>());
            let sealed = seal_for_token(&token, &material).unwrap();
            assert_eq!(sealed.ephemeral_public_key.len(), 65);
            assert_eq!(sealed.ephemeral_public_key[0], 4, "uncompressed SEC1");
            assert_eq!(sealed.encrypted_material.len(), len + 8);
            assert_eq!(sealed.encrypted_nonce.len(), NONCE_LEN + 16);
            assert_eq!(sealed.iv.len(), IV_LEN);
            assert_eq!(sealed.import_token_id, token.id);
            let opened = open(&secret, &token.id, &token.nonce, &sealed).unwrap();
            assert_eq!(opened.as_slice(), material.as_slice());
        }
    }

    #[test]
    fn each_seal_is_fresh() {
        let (_, token) = token();
        let material = [9u8; 32];
        let a = seal_for_token(&token, &material).unwrap();
        let b = seal_for_token(&token, &material).unwrap();
        assert_ne!(a.ephemeral_public_key, b.ephemeral_public_key);
        assert_ne!(a.encrypted_material, b.encrypted_material);
        assert_ne!(a.iv, b.iv);
    }

    #[test]
    fn wrong_nonce_fails() {
        let (secret, token) = token();
        let sealed = seal_for_token(&token, &[1u8; 16]).unwrap();
        let mut other_nonce = token.nonce.clone();
        other_nonce[0] ^= 1;
        // The nonce is the HKDF salt, so the KEK differs and KWP's integrity check fails.
        assert_eq!(
            open(&secret, &token.id, &other_nonce, &sealed),
            Err(Refusal::Unwrap)
        );
    }

    #[test]
    fn wrong_token_id_fails() {
        let (secret, token) = token();
        let sealed = seal_for_token(&token, &[1u8; 24]).unwrap();
        assert_eq!(
            open(&secret, "another-token", &token.nonce, &sealed),
            Err(Refusal::Unwrap)
        );
    }

    #[test]
    fn wrong_token_key_fails() {
        let (_, token) = token();
        let (other_secret, _) = self::token();
        let sealed = seal_for_token(&token, &[1u8; 32]).unwrap();
        assert_eq!(
            open(&other_secret, &token.id, &token.nonce, &sealed),
            Err(Refusal::Unwrap)
        );
    }

    #[test]
    fn tampered_nonce_ciphertext_or_iv_fails_authentication() {
        let (secret, token) = token();
        let mut sealed = seal_for_token(&token, &[5u8; 32]).unwrap();
        sealed.iv[0] ^= 1;
        assert_eq!(
            open(&secret, &token.id, &token.nonce, &sealed),
            Err(Refusal::NonceIv)
        );
        sealed.iv[0] ^= 1;
        sealed.encrypted_nonce[3] ^= 1;
        assert_eq!(
            open(&secret, &token.id, &token.nonce, &sealed),
            Err(Refusal::NonceIv)
        );
    }

    #[test]
    fn nonce_encrypted_for_another_token_is_detected() {
        // A client that sealed the material correctly but encrypted a stale nonce: the server
        // decrypts it fine, then finds it differs.
        let (secret, token) = token();
        let material = [3u8; 16];
        let mut sealed = seal_for_token(&token, &material).unwrap();
        let iv: [u8; IV_LEN] = sealed.iv.as_slice().try_into().unwrap();
        sealed.encrypted_nonce = gcm_encrypt(&material, &iv, &[0xAA; NONCE_LEN]).unwrap();
        assert_eq!(
            open(&secret, &token.id, &token.nonce, &sealed),
            Err(Refusal::Nonce)
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        let (_, token) = token();
        for len in [0usize, 8, 15, 17, 31, 33, 64] {
            assert_eq!(
                seal_for_token(&token, &vec![0u8; len]),
                Err(SecureImportError::InvalidMaterialLength),
                "{len}"
            );
        }
        let no_key = ImportToken {
            public_key: Vec::new(),
            ..token.clone()
        };
        assert_eq!(
            ImportTokenKey::from_token(&no_key).map(|_| ()),
            Err(SecureImportError::InvalidPublicKey)
        );
        let short_nonce = ImportToken {
            nonce: vec![0; 12],
            ..token.clone()
        };
        assert_eq!(
            ImportTokenKey::from_token(&short_nonce).map(|_| ()),
            Err(SecureImportError::InvalidNonce)
        );
        let no_id = ImportToken {
            id: String::new(),
            ..token.clone()
        };
        assert_eq!(
            ImportTokenKey::from_token(&no_id).map(|_| ()),
            Err(SecureImportError::MissingTokenId)
        );
        let compressed = ImportToken {
            public_key: PublicKey::from_sec1_bytes(&token.public_key)
                .map(|pk| p256::Sec1Point::from(pk).compress().as_bytes().to_vec())
                .unwrap(),
            ..token
        };
        assert!(ImportTokenKey::from_token(&compressed).is_ok());
    }
}
