//! Envelope encryption with root keys: wrap, unwrap (with automatic rewrap when the
//! ciphertext is from an older version) and rewrap. The hot path: resolves the key from the
//! in-memory index, checks the state matrix, and asks the HSM; it touches no disk and takes no
//! lock shared by all keys.

use sim_hsm::ObjectHandle;
use zeroize::Zeroizing;

use crate::auth::Identity;
use crate::error::KmsError;
use crate::kms::Kms;
use crate::kms::ciphertext::{self, Ciphertext};
use crate::kms::iam::Action as Permission;
use crate::kms::ids::KeyRef;
use crate::kms::keystore::Keystore;
use crate::kms::records::{KeyKind, KeyRecord, VersionRecord};
use crate::kms::state::Action;

/// Length of a generated data key.
pub const DATA_KEY_LEN: usize = 32;

/// The result of a wrap.
#[derive(Debug)]
pub struct WrapResult {
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
    /// The generated data key, when the request supplied none.
    pub generated: Option<Zeroizing<Vec<u8>>>,
    /// The version that wrapped it.
    pub version: VersionRecord,
}

/// The result of an unwrap.
#[derive(Debug)]
pub struct UnwrapResult {
    /// The data key.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The version the ciphertext was made under.
    pub version: VersionRecord,
    /// When that was not the current version: the data key rewrapped under the current one.
    pub rewrapped: Option<(Vec<u8>, VersionRecord)>,
}

/// The result of a rewrap.
#[derive(Debug)]
pub struct RewrapResult {
    /// The ciphertext under the current version.
    pub ciphertext: Vec<u8>,
    /// The version the input was made under.
    pub version: VersionRecord,
    /// The current version.
    pub rewrapped_version: VersionRecord,
}

fn seal_with(
    keystore: &Keystore,
    record: &KeyRecord,
    version: &VersionRecord,
    aad: &[String],
    plaintext: &[u8],
) -> Result<Vec<u8>, KmsError> {
    let associated = ciphertext::associated_data(record.id, version.id, aad);
    let out = keystore.seal(ObjectHandle(version.handle), associated, plaintext)?;
    Ok(ciphertext::encode(
        version.id,
        &out.iv,
        &out.ciphertext_and_tag,
    ))
}

fn open_with(
    keystore: &Keystore,
    record: &KeyRecord,
    bytes: &[u8],
    aad: &[String],
) -> Result<(Zeroizing<Vec<u8>>, VersionRecord), KmsError> {
    let parsed = Ciphertext::parse(bytes)?;
    let version = record
        .version(parsed.version)
        .ok_or(KmsError::UnprocessableCiphertext)?;
    let associated = ciphertext::associated_data(record.id, version.id, aad);
    let plaintext = keystore.open_sealed(
        ObjectHandle(version.handle),
        parsed.iv,
        associated,
        parsed.sealed,
    )?;
    Ok((plaintext, version.clone()))
}

impl Kms {
    /// Wraps `plaintext` (or a generated 32-byte data key when `None`) under the key's
    /// current version.
    pub fn wrap(
        &self,
        who: &Identity,
        key: &KeyRef,
        plaintext: Option<Zeroizing<Vec<u8>>>,
        aad: &[String],
    ) -> Result<WrapResult, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::UseKey)?;
        let (instance, _, record, state) = self.resolve_live(key)?;
        Action::Wrap.check(record.id, state)?;
        if record.kind != KeyKind::Root {
            return Err(KmsError::RootKeyRequired);
        }
        let version = record.current_version().ok_or(KmsError::KeyNotFound)?;
        let (data, generated) = match plaintext {
            Some(data) => (data, false),
            None => (
                Zeroizing::new(instance.keystore()?.random(DATA_KEY_LEN)?),
                true,
            ),
        };
        let ciphertext = seal_with(&instance.keystore()?, &record, version, aad, &data)?;
        Ok(WrapResult {
            ciphertext,
            generated: generated.then_some(data),
            version: version.clone(),
        })
    }

    /// Unwraps a ciphertext; rewraps it under the current version when it is older.
    pub fn unwrap(
        &self,
        who: &Identity,
        key: &KeyRef,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<UnwrapResult, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::UseKey)?;
        let (instance, _, record, state) = self.resolve_live(key)?;
        Action::Unwrap.check(record.id, state)?;
        if record.kind != KeyKind::Root {
            return Err(KmsError::RootKeyRequired);
        }
        let (plaintext, version) = open_with(&instance.keystore()?, &record, ciphertext, aad)?;
        let current = record.current_version().ok_or(KmsError::KeyNotFound)?;
        let rewrapped = if current.id == version.id {
            None
        } else {
            let bytes = seal_with(&instance.keystore()?, &record, current, aad, &plaintext)?;
            Some((bytes, current.clone()))
        };
        Ok(UnwrapResult {
            plaintext,
            version,
            rewrapped,
        })
    }

    /// Rewraps a ciphertext under the current version; the data key never leaves the server.
    pub fn rewrap(
        &self,
        who: &Identity,
        key: &KeyRef,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<RewrapResult, KmsError> {
        self.authorize(who, Some(key.instance()), Permission::UseKey)?;
        let (instance, _, record, state) = self.resolve_live(key)?;
        Action::Rewrap.check(record.id, state)?;
        if record.kind != KeyKind::Root {
            return Err(KmsError::RootKeyRequired);
        }
        let (plaintext, version) = open_with(&instance.keystore()?, &record, ciphertext, aad)?;
        let current = record.current_version().ok_or(KmsError::KeyNotFound)?;
        let ciphertext = seal_with(&instance.keystore()?, &record, current, aad, &plaintext)?;
        Ok(RewrapResult {
            ciphertext,
            version,
            rewrapped_version: current.clone(),
        })
    }
}
