//! An instance's keystore: its own token in the HSM, and the only code of the server that
//! speaks to `sim-hsm`. It creates key material inside the HSM, wraps and unwraps data keys
//! with AES-GCM there, runs the secure-import protocol there, and shreds material. Key bytes
//! never pass through here, except a standard key's payload, which Key Protect returns by
//! design.

use std::sync::Arc;

use sim_hsm::{
    GcmOutput, Hsm, HsmError, KeyTemplate, Mechanism, ObjectHandle, Session, SlotId, UserType,
};
use zeroize::Zeroizing;

use crate::error::KmsError;
use crate::kms::ids::{ImportTokenId, InstanceId};

/// The PINs the server uses to administer and use instance tokens: the KMS service's own
/// credentials to its HSM.
#[derive(Clone)]
pub struct HsmCredentials {
    /// The security officer PIN, used to initialise tokens and set user PINs.
    pub so_pin: Zeroizing<Vec<u8>>,
    /// The user PIN, used for every cryptographic operation.
    pub user_pin: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for HsmCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HsmCredentials { .. }")
    }
}

/// What a key's material is for; decides its HSM attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaterialUse {
    /// Root key version: sensitive, never extractable, encrypt/decrypt (AES-GCM wrapping of
    /// data keys).
    Root,
    /// Standard key: extractable and not sensitive, so its payload can be read back.
    Standard,
}

/// The label of the HSM token that holds an instance's keys: the instance id as 32 hex
/// digits (PKCS#11 token labels hold at most 32 characters).
pub fn token_label(instance: InstanceId) -> String {
    hex::encode(instance.as_bytes())
}

const IMPORT_INFO_PREFIX: &[u8] = b"kmsim import-token v1";

/// An instance's token, logged in as the user.
#[derive(Clone)]
pub struct Keystore {
    session: Session,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keystore { .. }")
    }
}

/// The public half of a new import-token key pair.
#[derive(Debug)]
pub struct ImportKeyPair {
    /// The private key (stays in the HSM).
    pub private: ObjectHandle,
    /// The public key object.
    pub public: ObjectHandle,
    /// Uncompressed SEC1 point.
    pub public_key: Vec<u8>,
}

/// The inputs of a secure import, parsed at the edge.
#[derive(Debug)]
pub struct SecureImportInput {
    /// The client's ephemeral public key (SEC1).
    pub ephemeral_public_key: Vec<u8>,
    /// AES-KWP of the material under the derived KEK.
    pub encrypted_material: Vec<u8>,
    /// AES-GCM of the nonce under the material, tag appended.
    pub encrypted_nonce: Vec<u8>,
    /// The GCM IV.
    pub iv: [u8; 12],
    /// The token the material was encrypted for.
    pub token: ImportTokenId,
}

impl Keystore {
    /// Creates a new token for `instance` on the HSM's empty slot and logs in.
    pub fn create(
        hsm: &Hsm,
        instance: InstanceId,
        creds: &HsmCredentials,
    ) -> Result<Self, KmsError> {
        Self::create_labelled(hsm, &token_label(instance), creds)
    }

    fn create_labelled(hsm: &Hsm, label: &str, creds: &HsmCredentials) -> Result<Self, KmsError> {
        let slot = empty_slot(hsm)?;
        hsm.init_token(slot, &creds.so_pin, label)?;
        let slot = hsm
            .find_slot_by_label(label)
            .ok_or(KmsError::Hsm(HsmError::SlotIdInvalid))?;
        let admin = hsm.open_session(slot, true)?;
        admin.login(UserType::So, &creds.so_pin)?;
        admin.init_pin(&creds.user_pin)?;
        admin.logout()?;
        admin.close();
        Self::open_slot(hsm, slot, creds)
    }

    /// Opens the existing token of `instance` and logs in. `KEY_MATERIAL_DESTROYED_ERR` when
    /// the HSM holds no such token (a zeroization or tamper response wiped it).
    pub fn open(hsm: &Hsm, instance: InstanceId, creds: &HsmCredentials) -> Result<Self, KmsError> {
        let slot = hsm
            .find_slot_by_label(&token_label(instance))
            .ok_or(KmsError::KeyMaterialDestroyed(instance))?;
        Self::open_slot(hsm, slot, creds)
    }

    fn open_slot(hsm: &Hsm, slot: SlotId, creds: &HsmCredentials) -> Result<Self, KmsError> {
        let session = hsm.open_session(slot, true)?;
        match session.login(UserType::User, &creds.user_pin) {
            Ok(()) | Err(HsmError::UserAlreadyLoggedIn) => {}
            Err(error) => return Err(error.into()),
        }
        Ok(Self { session })
    }

    /// Destroys the token's login (the token itself is left for the HSM's zeroize).
    pub fn close(self) {
        self.session.close();
    }

    fn template(usage: MaterialUse, size_bytes: usize, label: &str) -> KeyTemplate {
        let mut template = KeyTemplate::aes(size_bytes);
        template.label = label.to_owned();
        template.token = true;
        template.private = true;
        match usage {
            MaterialUse::Root => {
                template.sensitive = Some(true);
                template.extractable = Some(false);
                template.encrypt = true;
                template.decrypt = true;
            }
            MaterialUse::Standard => {
                template.sensitive = Some(false);
                template.extractable = Some(true);
                template.encrypt = false;
                template.decrypt = false;
            }
        }
        template
    }

    /// Generates new material inside the HSM.
    pub fn generate(
        &self,
        usage: MaterialUse,
        size_bytes: usize,
        label: &str,
    ) -> Result<ObjectHandle, KmsError> {
        Ok(self
            .session
            .generate_key(&Self::template(usage, size_bytes, label))?)
    }

    /// Stores caller-supplied material in the HSM.
    pub fn import(
        &self,
        usage: MaterialUse,
        material: Zeroizing<Vec<u8>>,
        label: &str,
    ) -> Result<ObjectHandle, KmsError> {
        let template = Self::template(usage, material.len(), label);
        Ok(self.session.create_secret_key(&template, material)?)
    }

    /// Reads a standard key's payload.
    pub fn payload(&self, handle: ObjectHandle) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        match self
            .session
            .get_attribute(handle, sim_hsm::AttributeType::Value)?
        {
            sim_hsm::AttributeValue::Value(bytes) => Ok(bytes),
            _ => Err(KmsError::Hsm(HsmError::AttributeSensitive)),
        }
    }

    /// Encrypts `plaintext` with AES-GCM under `handle` (IV chosen by the HSM).
    pub fn seal(
        &self,
        handle: ObjectHandle,
        aad: Vec<u8>,
        plaintext: &[u8],
    ) -> Result<GcmOutput, KmsError> {
        let mechanism = Mechanism::AesGcm { iv: None, aad };
        Ok(self.session.encrypt(&mechanism, handle, plaintext)?)
    }

    /// Decrypts with AES-GCM; a failed authentication is `UNPROCESSABLE_CIPHERTEXT_ERR`.
    pub fn open_sealed(
        &self,
        handle: ObjectHandle,
        iv: [u8; 12],
        aad: Vec<u8>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let mechanism = Mechanism::AesGcm { iv: Some(iv), aad };
        match self.session.decrypt(&mechanism, handle, sealed) {
            Ok(plaintext) => Ok(plaintext),
            Err(HsmError::EncryptedDataInvalid | HsmError::EncryptedDataLenRange) => {
                Err(KmsError::UnprocessableCiphertext)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Destroys material (shredding). An object that is already gone counts as destroyed, so
    /// an interrupted purge can be repeated.
    pub fn destroy(&self, handle: ObjectHandle) -> Result<(), KmsError> {
        match self.session.destroy_object(handle) {
            Ok(()) | Err(HsmError::ObjectHandleInvalid | HsmError::KeyHandleInvalid) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Random bytes from the HSM's generator.
    pub fn random(&self, len: usize) -> Result<Vec<u8>, KmsError> {
        Ok(self.session.generate_random(len)?)
    }

    /// Generates an import token's P-256 key pair.
    pub fn new_import_key_pair(&self, label: &str) -> Result<ImportKeyPair, KmsError> {
        let mut public = KeyTemplate::ec_public();
        public.label = label.to_owned();
        public.token = true;
        let mut private = KeyTemplate::ec_private();
        private.label = label.to_owned();
        private.token = true;
        private.private = true;
        private.derive = true;
        private.sign = false;
        let (public, private) = self.session.generate_key_pair(&public, &private)?;
        let public_key = self.session.public_key_sec1(public)?;
        Ok(ImportKeyPair {
            private,
            public,
            public_key,
        })
    }

    /// Runs the secure-import protocol (see `SecureImport` in `key.proto`) inside the HSM and
    /// returns the new material's object.
    pub fn secure_import(
        &self,
        token_private: ObjectHandle,
        nonce: &[u8],
        input: &SecureImportInput,
        usage: MaterialUse,
        label: &str,
    ) -> Result<ObjectHandle, KmsError> {
        // 1. Z = ECDH(token private key, client ephemeral key), as a session object.
        let mut secret = KeyTemplate::generic_secret(32);
        secret.token = false;
        secret.derive = true;
        let ecdh = Mechanism::Ecdh1Derive {
            kdf: sim_hsm::EcKdf::Null,
            shared_data: Vec::new(),
            public_data: input.ephemeral_public_key.clone(),
        };
        let shared = match self.session.derive_key(&ecdh, token_private, &secret) {
            Ok(handle) => handle,
            Err(HsmError::MechanismParamInvalid | HsmError::ArgumentsBad) => {
                return Err(KmsError::field(
                    "secure_import.ephemeral_public_key",
                    crate::error::FieldProblem::NotAPoint,
                ));
            }
            Err(error) => return Err(error.into()),
        };
        // 2. KEK = HKDF-SHA256(Z, salt = nonce, info = label || token id).
        let mut info = IMPORT_INFO_PREFIX.to_vec();
        info.extend_from_slice(input.token.to_string().as_bytes());
        let mut kek_template = KeyTemplate::aes(32);
        kek_template.token = false;
        kek_template.unwrap = true;
        let hkdf = Mechanism::HkdfDerive {
            salt: nonce.to_vec(),
            info,
        };
        let kek = self.session.derive_key(&hkdf, shared, &kek_template);
        let _ = self.destroy(shared);
        let kek = kek?;
        // 3. Unwrap the material into a new key object.
        let mut template = Self::template(usage, 0, label);
        template.value_len = None;
        let material = self.session.unwrap_key(
            &Mechanism::AesKeyWrapKwp,
            kek,
            &input.encrypted_material,
            &template,
        );
        let _ = self.destroy(kek);
        let material = match material {
            Ok(handle) => handle,
            Err(
                HsmError::WrappedKeyInvalid
                | HsmError::WrappedKeyLenRange
                | HsmError::KeySizeRange
                | HsmError::TemplateInconsistent
                | HsmError::AttributeValueInvalid,
            ) => return Err(KmsError::ImportMaterialInvalid),
            Err(error) => return Err(error.into()),
        };
        // 4. Proof of possession: the nonce, encrypted under the material.
        let proof = Mechanism::AesGcm {
            iv: Some(input.iv),
            aad: Vec::new(),
        };
        let checked = match self
            .session
            .decrypt(&proof, material, &input.encrypted_nonce)
        {
            Ok(decrypted) if decrypted.as_slice() == nonce => Ok(material),
            Ok(_) => Err(KmsError::IncorrectNonce),
            Err(HsmError::EncryptedDataInvalid | HsmError::EncryptedDataLenRange) => {
                Err(KmsError::IncorrectNonceIv)
            }
            Err(error) => Err(error.into()),
        };
        if checked.is_err() {
            let _ = self.destroy(material);
        }
        checked
    }

    /// The material length in bytes of an object.
    pub fn material_len(&self, handle: ObjectHandle) -> Result<usize, KmsError> {
        match self
            .session
            .get_attribute(handle, sim_hsm::AttributeType::ValueLen)?
        {
            sim_hsm::AttributeValue::ValueLen(len) => Ok(len),
            _ => Err(KmsError::Hsm(HsmError::AttributeTypeInvalid)),
        }
    }
}

fn empty_slot(hsm: &Hsm) -> Result<SlotId, KmsError> {
    hsm.slots()
        .into_iter()
        .find(|slot| !slot.initialized)
        .map(|slot| slot.slot)
        .ok_or(KmsError::Hsm(HsmError::SlotIdInvalid))
}

/// Shared handle to the HSM.
pub type SharedHsm = Arc<Hsm>;
