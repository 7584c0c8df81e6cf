//! Envelope encryption as a database deployment does it: a [`DataKeyManager`] holds one data
//! encryption key (DEK) protected by a KMS root key, keeps the plaintext DEK only in memory
//! (zeroized when dropped or locked, never printed), and encrypts data locally with
//! AES-256-GCM.
//!
//! Life cycle, as a deployment uses it:
//!
//! 1. At creation, [`DataKeyManager::provision`] asks the KMS for a new DEK (a wrap without
//!    plaintext) and returns its [`WrappedDataKey`], which the caller persists.
//! 2. At every start, [`DataKeyManager::unlock`] unwraps the persisted form. If the root key
//!    was rotated since, the KMS also returns the DEK rewrapped under the current version, and
//!    `unlock` hands that back for the caller to persist in place of the old one.
//! 3. After a rotation event, [`DataKeyManager::rewrap`] moves the wrapped DEK to the current
//!    version without the plaintext leaving the KMS.
//! 4. [`DataKeyManager::encrypt`] / [`DataKeyManager::decrypt`] protect data with the DEK.
//! 5. When the root key is disabled or shredded, [`DataKeyManager::lock`] forgets the DEK;
//!    encrypt and decrypt then fail with [`DataKeyError::Locked`] until the next unlock.
//!
//! # Local ciphertext format, version 1
//!
//! | Offset | Length | Content |
//! |--------|--------|---------|
//! | 0      | 4      | magic `"KDE1"` |
//! | 4      | 12     | random AES-GCM nonce |
//! | 16     | n + 16 | AES-256-GCM ciphertext of the n plaintext bytes, then the 16-byte tag |
//!
//! The associated data is the 4-byte magic followed by the caller's `context` bytes (for
//! example a table and column name). The context is not stored: decrypt must be given the
//! same bytes.

use std::fmt;
use std::sync::{PoisonError, RwLock};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use zeroize::Zeroizing;

use crate::client::KmsClient;
use crate::error::ClientError;
use crate::refs::KeyRef;

/// Magic of the local ciphertext format, version 1.
pub const MAGIC: &[u8; 4] = b"KDE1";
/// Length of the AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of the header (magic and nonce).
pub const HEADER_LEN: usize = MAGIC.len() + NONCE_LEN;
/// Length of a data key: AES-256.
pub const DEK_LEN: usize = 32;

/// A data key wrapped by the root key: what the caller persists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    /// The KMS ciphertext of the DEK.
    pub ciphertext: Vec<u8>,
    /// The root key version that wrapped it.
    pub key_version_id: String,
}

/// Why a data-key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataKeyError {
    /// No data key is unlocked: call `unlock` (or `provision`) first.
    #[error("the data key is locked")]
    Locked,
    /// `provision` was called while a data key is unlocked; `lock` first to replace it.
    #[error("a data key is already unlocked")]
    AlreadyUnlocked,
    /// The KMS call failed.
    #[error("KMS call failed: {0}")]
    Kms(#[from] ClientError),
    /// The KMS returned a data key that is not 32 bytes.
    #[error("the KMS returned a data key of the wrong length")]
    InvalidDataKeyLength,
    /// The KMS response lacks the key version.
    #[error("the KMS response names no key version")]
    MissingKeyVersion,
    /// The ciphertext is shorter than a header and tag.
    #[error("ciphertext too short")]
    TooShort,
    /// The ciphertext does not start with the format's magic.
    #[error("not a kmsim data ciphertext (bad magic)")]
    BadMagic,
    /// Authentication failed: wrong data key, wrong context or tampered ciphertext.
    #[error("decryption failed: wrong key or context, or tampered ciphertext")]
    Decrypt,
    /// Encryption failed (the plaintext is beyond AES-GCM's limit).
    #[error("encryption failed")]
    Encrypt,
    /// The operating system's random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// The unlocked DEK. Zeroized on drop; never printed.
pub(crate) struct Dek(Zeroizing<[u8; DEK_LEN]>);

impl Dek {
    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self, DataKeyError> {
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        if bytes.len() != DEK_LEN {
            return Err(DataKeyError::InvalidDataKeyLength);
        }
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    /// A fresh random key from the operating system's generator.
    pub(crate) fn random() -> Result<Self, DataKeyError> {
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        getrandom::fill(&mut key[..]).map_err(|_| DataKeyError::Random)?;
        Ok(Self(key))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.0).into())
    }
}

/// Encrypts `plaintext` under `dek` in the format of the module documentation.
pub(crate) fn seal(dek: &Dek, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, DataKeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| DataKeyError::Random)?;
    let aad = [MAGIC.as_slice(), context].concat();
    let body = dek
        .cipher()
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| DataKeyError::Encrypt)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decrypts a ciphertext made by [`seal`].
pub(crate) fn open(
    dek: &Dek,
    ciphertext: &[u8],
    context: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DataKeyError> {
    if ciphertext.len() < HEADER_LEN + TAG_LEN {
        return Err(DataKeyError::TooShort);
    }
    let (magic, rest) = ciphertext.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(DataKeyError::BadMagic);
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DataKeyError::TooShort)?;
    let aad = [MAGIC.as_slice(), context].concat();
    dek.cipher()
        .decrypt(
            &nonce.into(),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| DataKeyError::Decrypt)
}

/// One deployment's data key, bound to a KMS client, a root key and the AAD strings used
/// with it.
///
/// Methods take `&self`, so the manager can be shared (for example in an `Arc`) between the
/// tasks that encrypt and the one that reacts to key lifecycle events. `Debug` shows whether
/// the key is unlocked, never the key.
pub struct DataKeyManager {
    client: KmsClient,
    root_key: KeyRef,
    aad: Vec<String>,
    dek: RwLock<Option<Dek>>,
}

impl fmt::Debug for DataKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyManager")
            .field("root_key", &self.root_key.to_string())
            .field("aad", &self.aad)
            .field("unlocked", &self.is_unlocked())
            .finish()
    }
}

impl DataKeyManager {
    /// A locked manager for the DEK wrapped by `root_key` with the AAD strings `aad` (for
    /// example the deployment's CRN).
    pub fn new(client: KmsClient, root_key: KeyRef, aad: Vec<String>) -> Self {
        Self {
            client,
            root_key,
            aad,
            dek: RwLock::new(None),
        }
    }

    /// The root key that protects the DEK.
    pub fn root_key(&self) -> &KeyRef {
        &self.root_key
    }

    /// The AAD strings bound to the wrapped DEK.
    pub fn aad(&self) -> &[String] {
        &self.aad
    }

    /// True while a DEK is held in memory.
    pub fn is_unlocked(&self) -> bool {
        // A poisoned lock still holds a consistent `Option` (it is only ever replaced whole).
        self.dek
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn aad_refs(&self) -> Vec<&str> {
        self.aad.iter().map(String::as_str).collect()
    }

    fn install(&self, dek: Dek) {
        *self.dek.write().unwrap_or_else(PoisonError::into_inner) = Some(dek);
    }

    /// Asks the KMS for a new DEK, keeps it unlocked and returns its wrapped form for the
    /// caller to persist.
    ///
    /// # Errors
    /// [`DataKeyError::AlreadyUnlocked`] if a DEK is held (call [`lock`](Self::lock) first to
    /// replace it), [`DataKeyError::Kms`], [`DataKeyError::InvalidDataKeyLength`].
    pub async fn provision(&self) -> Result<WrappedDataKey, DataKeyError> {
        if self.is_unlocked() {
            return Err(DataKeyError::AlreadyUnlocked);
        }
        let generated = self
            .client
            .generate_data_key(&self.root_key, &self.aad_refs())
            .await?;
        let dek = Dek::from_slice(&generated.plaintext)?;
        let wrapped = WrappedDataKey {
            ciphertext: generated.ciphertext,
            key_version_id: non_empty_version(generated.key_version.id)?,
        };
        let mut slot = self.dek.write().unwrap_or_else(PoisonError::into_inner);
        // Another task may have provisioned or unlocked while the call was in flight.
        if slot.is_some() {
            return Err(DataKeyError::AlreadyUnlocked);
        }
        *slot = Some(dek);
        Ok(wrapped)
    }

    /// Unwraps the persisted DEK and keeps it unlocked (replacing any DEK held).
    ///
    /// Returns `Some` with the DEK rewrapped under the root key's current version when the
    /// persisted form was made under an older one: persist it in place of `wrapped`.
    ///
    /// # Errors
    /// [`DataKeyError::Kms`] (for example `KEY_ACTION_INVALID_STATE_ERR` for a disabled key,
    /// `UNPROCESSABLE_CIPHERTEXT_ERR` for a wrong AAD), [`DataKeyError::InvalidDataKeyLength`].
    pub async fn unlock(
        &self,
        wrapped: &WrappedDataKey,
    ) -> Result<Option<WrappedDataKey>, DataKeyError> {
        let unwrapped = self
            .client
            .unwrap(&self.root_key, &wrapped.ciphertext, &self.aad_refs())
            .await?;
        let dek = Dek::from_slice(&unwrapped.plaintext)?;
        let rewrapped = match unwrapped.rewrapped {
            Some(w) => Some(WrappedDataKey {
                ciphertext: w.ciphertext,
                key_version_id: non_empty_version(w.key_version.id)?,
            }),
            None => None,
        };
        self.install(dek);
        Ok(rewrapped)
    }

    /// Rewraps the persisted DEK under the root key's current version, without the plaintext
    /// leaving the KMS, and returns the new form to persist. Works locked or unlocked.
    ///
    /// # Errors
    /// [`DataKeyError::Kms`].
    pub async fn rewrap(&self, wrapped: &WrappedDataKey) -> Result<WrappedDataKey, DataKeyError> {
        let rewrapped = self
            .client
            .rewrap(&self.root_key, &wrapped.ciphertext, &self.aad_refs())
            .await?;
        Ok(WrappedDataKey {
            ciphertext: rewrapped.ciphertext,
            key_version_id: non_empty_version(rewrapped.current_version.id)?,
        })
    }

    /// Forgets the DEK (zeroizing it). Returns true if one was held.
    pub fn lock(&self) -> bool {
        self.dek
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some()
    }

    /// Encrypts `plaintext` under the DEK, bound to `context` (see the module documentation
    /// for the format).
    ///
    /// # Errors
    /// [`DataKeyError::Locked`], [`DataKeyError::Random`], [`DataKeyError::Encrypt`].
    pub fn encrypt(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, DataKeyError> {
        let guard = self.dek.read().unwrap_or_else(PoisonError::into_inner);
        let dek = guard.as_ref().ok_or(DataKeyError::Locked)?;
        seal(dek, plaintext, context)
    }

    /// Decrypts a ciphertext made by [`encrypt`](Self::encrypt) with the same `context`.
    ///
    /// # Errors
    /// [`DataKeyError::Locked`], [`DataKeyError::TooShort`], [`DataKeyError::BadMagic`],
    /// [`DataKeyError::Decrypt`].
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DataKeyError> {
        let guard = self.dek.read().unwrap_or_else(PoisonError::into_inner);
        let dek = guard.as_ref().ok_or(DataKeyError::Locked)?;
        open(dek, ciphertext, context)
    }

    #[cfg(test)]
    fn unlock_with(&self, key: &[u8]) -> Result<(), DataKeyError> {
        self.install(Dek::from_slice(key)?);
        Ok(())
    }
}

pub(crate) fn non_empty_version(id: String) -> Result<String, DataKeyError> {
    if id.is_empty() {
        Err(DataKeyError::MissingKeyVersion)
    } else {
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> DataKeyManager {
        let client = KmsClient::connect_lazy("http://127.0.0.1:1").unwrap();
        let root = KeyRef::in_instance("inst-1", "db-root").unwrap();
        DataKeyManager::new(
            client,
            root,
            vec!["crn:v1:bluemix:public:databases".to_owned()],
        )
    }

    #[test]
    fn round_trip_with_context() {
        let dek = Dek::from_slice(&[7u8; 32]).unwrap();
        let ct = seal(&dek, b"row 42", b"users.email").unwrap();
        assert_eq!(&ct[..4], MAGIC);
        assert_eq!(ct.len(), HEADER_LEN + 6 + TAG_LEN);
        assert_eq!(
            open(&dek, &ct, b"users.email").unwrap().as_slice(),
            b"row 42"
        );
        let empty = seal(&dek, b"", b"").unwrap();
        assert!(open(&dek, &empty, b"").unwrap().is_empty());
    }

    #[test]
    fn nonces_are_random() {
        let dek = Dek::from_slice(&[7u8; 32]).unwrap();
        let a = seal(&dek, b"same", b"").unwrap();
        let b = seal(&dek, b"same", b"").unwrap();
        assert_ne!(a[4..16], b[4..16]);
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_context_key_or_tampering_fails() {
        let dek = Dek::from_slice(&[7u8; 32]).unwrap();
        let other = Dek::from_slice(&[8u8; 32]).unwrap();
        let ct = seal(&dek, b"secret", b"ctx").unwrap();
        assert!(matches!(
            open(&dek, &ct, b"ctx2"),
            Err(DataKeyError::Decrypt)
        ));
        assert!(matches!(
            open(&other, &ct, b"ctx"),
            Err(DataKeyError::Decrypt)
        ));
        for i in [4, 16, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert!(
                matches!(open(&dek, &bad, b"ctx"), Err(DataKeyError::Decrypt)),
                "{i}"
            );
        }
        let mut bad_magic = ct.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            open(&dek, &bad_magic, b"ctx"),
            Err(DataKeyError::BadMagic)
        ));
        assert!(matches!(
            open(&dek, &ct[..HEADER_LEN + TAG_LEN - 1], b"ctx"),
            Err(DataKeyError::TooShort)
        ));
    }

    #[test]
    fn data_key_must_be_32_bytes() {
        assert!(matches!(
            Dek::from_slice(&[0; 16]),
            Err(DataKeyError::InvalidDataKeyLength)
        ));
        assert!(matches!(
            Dek::from_slice(&[0; 33]),
            Err(DataKeyError::InvalidDataKeyLength)
        ));
    }

    #[tokio::test]
    async fn locked_manager_refuses_to_encrypt_or_decrypt() {
        let m = manager();
        assert!(!m.is_unlocked());
        assert!(matches!(m.encrypt(b"x", b""), Err(DataKeyError::Locked)));
        assert!(matches!(
            m.decrypt(&[0; 64], b""),
            Err(DataKeyError::Locked)
        ));
        assert!(!m.lock());
    }

    #[tokio::test]
    async fn lock_forgets_the_key_and_unlock_restores_it() {
        let m = manager();
        m.unlock_with(&[3u8; 32]).unwrap();
        assert!(m.is_unlocked());
        let ct = m.encrypt(b"hello", b"t").unwrap();
        assert_eq!(m.decrypt(&ct, b"t").unwrap().as_slice(), b"hello");
        assert!(m.lock());
        assert!(matches!(m.decrypt(&ct, b"t"), Err(DataKeyError::Locked)));
        m.unlock_with(&[3u8; 32]).unwrap();
        assert_eq!(m.decrypt(&ct, b"t").unwrap().as_slice(), b"hello");
        // A different key (another deployment's) cannot read it.
        m.unlock_with(&[4u8; 32]).unwrap();
        assert!(matches!(m.decrypt(&ct, b"t"), Err(DataKeyError::Decrypt)));
    }

    #[tokio::test]
    async fn provision_refuses_while_unlocked() {
        let m = manager();
        m.unlock_with(&[3u8; 32]).unwrap();
        assert!(matches!(
            m.provision().await,
            Err(DataKeyError::AlreadyUnlocked)
        ));
    }

    #[tokio::test]
    async fn debug_shows_no_key() {
        let m = manager();
        m.unlock_with(&[0xAB; 32]).unwrap();
        let printed = format!("{m:?}");
        assert!(printed.contains("unlocked: true"));
        assert!(!printed.contains("171"));
    }
}
