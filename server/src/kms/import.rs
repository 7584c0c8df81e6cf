//! Import tokens: one per instance, a P-256 key pair held in the instance's keystore plus a
//! nonce, with an expiry and a retrieval budget (Key Protect's `import_token`, with P-256 in
//! place of RSA; the scheme is documented at `SecureImport` in `key.proto`).

use std::time::Duration;

use sim_hsm::ObjectHandle;

use crate::auth::Identity;
use crate::error::KmsError;
use crate::kms::iam::Action as Permission;
use crate::kms::ids::{ImportTokenId, InstanceRef};
use crate::kms::records::ImportTokenRecord;
use crate::kms::{InstanceEntry, Kms, encode, lock};
use crate::store::Tree;

/// Length of an import token's nonce.
pub const NONCE_LEN: usize = 16;

/// An import token as returned to a caller.
#[derive(Debug, Clone)]
pub struct ImportTokenView {
    /// The record (public key and nonce included).
    pub record: ImportTokenRecord,
    /// Whether the caller may see the public key and nonce (retrievals only).
    pub reveal: bool,
}

impl Kms {
    /// Creates the instance's import token, replacing (and destroying) any previous one.
    pub fn create_import_token(
        &self,
        who: &Identity,
        instance: &InstanceRef,
        lifetime: Duration,
        max_retrievals: u32,
    ) -> Result<ImportTokenView, KmsError> {
        self.authorize(who, Some(instance.id()), Permission::ManageImportToken)?;
        let entry = self.instance(instance.id())?;
        let now = self.now();
        let id = ImportTokenId::from_uuid(self.new_id());
        let keystore = entry.keystore()?;
        let pair = keystore.new_import_key_pair(&format!("kmsim:import-token:{id}"))?;
        let nonce = keystore.random(NONCE_LEN)?;
        let record = ImportTokenRecord {
            id,
            create_time: now,
            expiration_time: now.plus(lifetime),
            max_retrievals,
            remaining_retrievals: max_retrievals,
            private_handle: pair.private.0,
            public_handle: pair.public.0,
            public_key: pair.public_key,
            nonce,
        };
        let mut slot = lock(&entry.import_token);
        if let Err(error) = self.store.put(
            Tree::ImportTokens,
            entry.record.id.as_bytes(),
            encode(&record),
        ) {
            let _ = keystore.destroy(pair.private);
            let _ = keystore.destroy(pair.public);
            return Err(error.into());
        }
        if let Some(old) = slot.replace(record.clone()) {
            let _ = keystore.destroy(ObjectHandle(old.private_handle));
            let _ = keystore.destroy(ObjectHandle(old.public_handle));
        }
        Ok(ImportTokenView {
            record,
            reveal: false,
        })
    }

    /// Retrieves the instance's import token with its public key and nonce, using one
    /// retrieval.
    pub fn get_import_token(
        &self,
        who: &Identity,
        instance: &InstanceRef,
    ) -> Result<ImportTokenView, KmsError> {
        self.authorize(who, Some(instance.id()), Permission::ManageImportToken)?;
        let entry = self.instance(instance.id())?;
        let now = self.now();
        let mut slot = lock(&entry.import_token);
        let token = slot.as_ref().ok_or(KmsError::ImportTokenNotFound)?;
        if now >= token.expiration_time {
            return Err(KmsError::ImportTokenExpired);
        }
        if token.remaining_retrievals == 0 {
            return Err(KmsError::ImportTokenRetrievalsExhausted);
        }
        let mut next = token.clone();
        next.remaining_retrievals -= 1;
        self.store.put(
            Tree::ImportTokens,
            entry.record.id.as_bytes(),
            encode(&next),
        )?;
        *slot = Some(next.clone());
        Ok(ImportTokenView {
            record: next,
            reveal: true,
        })
    }

    /// The instance's token if it is `id` and has not expired.
    pub(crate) fn usable_import_token(
        &self,
        instance: &InstanceEntry,
        id: ImportTokenId,
    ) -> Result<ImportTokenRecord, KmsError> {
        let slot = lock(&instance.import_token);
        let token = slot
            .as_ref()
            .filter(|t| t.id == id)
            .ok_or(KmsError::ImportTokenNotFound)?;
        if self.now() >= token.expiration_time {
            return Err(KmsError::ImportTokenExpired);
        }
        Ok(token.clone())
    }
}
