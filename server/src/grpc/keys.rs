//! `kmsim.v1.KeyService`.

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use pb::key_service_server::KeyService;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::audit::CallContext;
use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::grpc::{
    blocking, caller, context, name_instance, name_key, page_size, page_token, parse, policies,
    text,
};
use crate::kms::iam::Action as Permission;
use crate::kms::ids::{Alias, InstanceRef, KeyId, KeyRef};
use crate::kms::keys::KeySearch;
use crate::kms::keystore::SecureImportInput;
use crate::kms::records::{KeyKind, VersionRecord};
use crate::kms::state::KeyState;
use crate::kms::{ImportTokenView, KeyListQuery, KeyView, Kms, Material, NewKey};

/// Longest plaintext `WrapKey` accepts.
pub const MAX_WRAP_PLAINTEXT: usize = 4096;
/// Most AAD strings per request.
pub const MAX_AAD_ITEMS: usize = 32;
/// Longest AAD string, in characters.
pub const MAX_AAD_LEN: usize = 255;

/// The KeyService adapter.
#[derive(Debug, Clone)]
pub struct Keys {
    kms: Arc<Kms>,
}

impl Keys {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

fn version_to_proto(version: &VersionRecord) -> pb::KeyVersion {
    pb::KeyVersion {
        id: version.id.to_string(),
        create_time: Some(version.create_time.to_proto()),
    }
}

/// A key view as protobuf.
pub fn key_to_proto(view: &KeyView) -> pb::Key {
    let record = &view.record;
    let deletion = record.deletion.as_ref();
    let destroyed = view.state == KeyState::Destroyed;
    pb::Key {
        id: record.id.to_string(),
        crn: view.crn.to_string(),
        instance_id: record.instance.to_string(),
        name: record.name.clone(),
        description: record.description.clone(),
        r#type: match record.kind {
            KeyKind::Root => pb::KeyType::Root,
            KeyKind::Standard => pb::KeyType::Standard,
        } as i32,
        extractable: record.kind == KeyKind::Standard,
        state: view.state as i32,
        imported: record.imported,
        aliases: record.aliases.iter().map(|a| a.alias.to_string()).collect(),
        current_version: record.current_version().map(version_to_proto),
        create_time: Some(record.create_time.to_proto()),
        update_time: Some(record.update_time.to_proto()),
        last_rotate_time: record.last_rotate_time.map(Timestamp::to_proto),
        expiration_time: record.expiration_time.map(Timestamp::to_proto),
        deletion_time: deletion.map(|d| d.time.to_proto()),
        purge_allowed_time: deletion.map(|d| d.purge_allowed_time().to_proto()),
        restore_expire_time: deletion.map(|d| d.restore_expire_time().to_proto()),
        purge_scheduled_time: deletion.map(|d| d.purge_scheduled_time().to_proto()),
        payload: view
            .payload
            .as_ref()
            .map(|p| p.to_vec())
            .unwrap_or_default(),
        algorithm_type: "AES".to_owned(),
        key_size_bits: i32::try_from(record.size_bytes * 8).unwrap_or(0),
        deleted: destroyed,
        purge_allowed: deletion.is_some_and(|d| destroyed && view.now >= d.purge_allowed_time()),
        restore_allowed: deletion.is_some_and(|d| destroyed && view.now < d.restore_expire_time()),
        version_count: i32::try_from(record.versions.len()).unwrap_or(i32::MAX),
        created_by: record.created_by.clone(),
        deleted_by: deletion.map(|d| d.by.clone()).unwrap_or_default(),
        dual_auth_delete: Some(policies::dual_auth_to_proto(record, view.now)),
        rotation: policies::key_rotation_to_proto(record, &view.crn),
    }
}

fn token_to_proto(view: &ImportTokenView) -> pb::ImportToken {
    let record = &view.record;
    pb::ImportToken {
        id: record.id.to_string(),
        create_time: Some(record.create_time.to_proto()),
        expiration_time: Some(record.expiration_time.to_proto()),
        max_allowed_retrievals: i32::try_from(record.max_retrievals).unwrap_or(i32::MAX),
        remaining_retrievals: i32::try_from(record.remaining_retrievals).unwrap_or(i32::MAX),
        public_key: if view.reveal {
            record.public_key.clone()
        } else {
            Vec::new()
        },
        nonce: if view.reveal {
            record.nonce.clone()
        } else {
            Vec::new()
        },
    }
}

/// Key material of a valid length (16, 24 or 32 bytes).
pub(crate) fn material_bytes(
    field: &'static str,
    bytes: Vec<u8>,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let bytes = Zeroizing::new(bytes);
    if matches!(bytes.len(), 16 | 24 | 32) {
        Ok(bytes)
    } else {
        Err(KmsError::field(field, FieldProblem::MaterialLength))
    }
}

fn secure_import(input: pb::SecureImport) -> Result<SecureImportInput, KmsError> {
    if input.ephemeral_public_key.is_empty() {
        return Err(KmsError::field(
            "secure_import.ephemeral_public_key",
            FieldProblem::Missing,
        ));
    }
    if input.encrypted_material.is_empty() {
        return Err(KmsError::field(
            "secure_import.encrypted_material",
            FieldProblem::Missing,
        ));
    }
    if input.encrypted_nonce.is_empty() {
        return Err(KmsError::field(
            "secure_import.encrypted_nonce",
            FieldProblem::Missing,
        ));
    }
    let iv: [u8; 12] = input
        .iv
        .as_slice()
        .try_into()
        .map_err(|_| KmsError::field("secure_import.iv", FieldProblem::Length))?;
    Ok(SecureImportInput {
        ephemeral_public_key: input.ephemeral_public_key,
        encrypted_material: input.encrypted_material,
        encrypted_nonce: input.encrypted_nonce,
        iv,
        token: parse("secure_import.import_token_id", &input.import_token_id)?,
    })
}

/// AAD within the item count and length limits.
pub(crate) fn validated_aad(items: Vec<String>) -> Result<Vec<String>, KmsError> {
    if items.len() > MAX_AAD_ITEMS {
        return Err(KmsError::field("aad", FieldProblem::TooMany));
    }
    if items.iter().any(|item| item.chars().count() > MAX_AAD_LEN) {
        return Err(KmsError::field("aad", FieldProblem::TooLong));
    }
    Ok(items)
}

/// The key size in bytes of a `key_size_bits` value (0: 256).
pub(crate) fn validated_key_size(bits: i32) -> Result<usize, KmsError> {
    match bits {
        0 | 256 => Ok(32),
        192 => Ok(24),
        128 => Ok(16),
        _ => Err(KmsError::field("key_size_bits", FieldProblem::KeySize)),
    }
}

/// Tells the call's context the key as the call left it.
fn note_key(call: Option<CallContext>, view: &KeyView) {
    if let Some(call) = call {
        call.set_key(view);
    }
}

fn key_ref(value: &str) -> Result<KeyRef, KmsError> {
    parse("key", value)
}

fn ciphertext(bytes: &[u8]) -> Result<&[u8], KmsError> {
    if bytes.is_empty() {
        Err(KmsError::field("ciphertext", FieldProblem::Missing))
    } else {
        Ok(bytes)
    }
}

#[tonic::async_trait]
impl KeyService for Keys {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        // Authorization first: a caller learns nothing of the rules of an instance it may not
        // create keys in (the domain checks again, with the rest of the request).
        let instance = parse::<InstanceRef>("instance", &request.instance)?;
        name_instance(call.as_ref(), instance.id()).await?;
        self.kms
            .authorize(&who, Some(instance.id()), Permission::CreateKey)?;
        let kind = match pb::KeyType::try_from(request.r#type) {
            Ok(pb::KeyType::Root) => KeyKind::Root,
            Ok(pb::KeyType::Standard) => KeyKind::Standard,
            Ok(pb::KeyType::Unspecified) => {
                return Err(KmsError::field("type", FieldProblem::Missing).into());
            }
            Err(_) => return Err(KmsError::field("type", FieldProblem::UnknownEnumValue).into()),
        };
        let material = match request.material {
            None => Material::Generate(validated_key_size(request.key_size_bits)?),
            Some(_) if request.key_size_bits != 0 => {
                return Err(KmsError::field("key_size_bits", FieldProblem::NotAllowed).into());
            }
            Some(pb::create_key_request::Material::Payload(bytes)) => {
                Material::Plain(material_bytes("payload", bytes)?)
            }
            Some(pb::create_key_request::Material::SecureImport(input)) => {
                Material::Secure(secure_import(input)?)
            }
        };
        if request.aliases.len() > crate::kms::keys::MAX_ALIASES {
            return Err(KmsError::AliasQuotaExceeded.into());
        }
        let aliases = request
            .aliases
            .iter()
            .map(|a| parse::<Alias>("aliases", a))
            .collect::<Result<Vec<_>, _>>()?;
        let expiration_time = match &request.expiration_time {
            Some(ts) => Some(
                Timestamp::from_proto(ts)
                    .ok_or(KmsError::field("expiration_time", FieldProblem::OutOfRange))?,
            ),
            None => None,
        };
        let new = NewKey {
            instance,
            name: text("name", &request.name, 2, 90)?,
            description: text("description", &request.description, 0, 240)?,
            kind,
            expiration_time,
            aliases,
            material,
        };
        let view = blocking(&self.kms, move |kms| kms.create_key(&who, new)).await?;
        note_key(call, &view);
        Ok(Response::new(pb::CreateKeyResponse {
            key: Some(key_to_proto(&view)),
        }))
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::GetKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let key = key_ref(&request.get_ref().key)?;
        name_key(call.as_ref(), &key).await?;
        let view = self.kms.get_key(&who, &key)?;
        note_key(call, &view);
        Ok(Response::new(pb::GetKeyResponse {
            key: Some(key_to_proto(&view)),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let instance = parse::<InstanceRef>("instance", &request.instance);
        if let Ok(instance) = &instance {
            name_instance(call.as_ref(), instance.id()).await?;
        }
        let states = request
            .states
            .iter()
            .map(|s| match pb::KeyState::try_from(*s) {
                Ok(pb::KeyState::Active) => Ok(KeyState::Active),
                Ok(pb::KeyState::Suspended) => Ok(KeyState::Suspended),
                Ok(pb::KeyState::Deactivated) => Ok(KeyState::Deactivated),
                Ok(pb::KeyState::Destroyed) => Ok(KeyState::Destroyed),
                _ => Err(KmsError::field("states", FieldProblem::UnknownEnumValue)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let search = match request.search.as_str() {
            "" => None,
            s => Some(if let Some(name) = s.strip_prefix("name:") {
                KeySearch::Name(name.to_owned())
            } else if let Some(alias) = s.strip_prefix("alias:") {
                KeySearch::Alias(alias.to_owned())
            } else {
                KeySearch::Any(s.to_owned())
            }),
        };
        let query = KeyListQuery {
            instance: instance?,
            page_size: page_size("page_size", request.page_size, 2000, 5000)?,
            after: page_token::decode(&request.page_token)?
                .map(|(t, id)| (t, KeyId::from_uuid(id))),
            states,
            extractable: request.extractable,
            search,
        };
        let page = self.kms.list_keys(&who, &query)?;
        let next_page_token = match (page.more, page.items.last()) {
            (true, Some(last)) => page_token::encode(
                last.record.create_time.as_millis(),
                last.record.id.as_bytes(),
            ),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListKeysResponse {
            keys: page.items.iter().map(key_to_proto).collect(),
            next_page_token,
            total_size: i32::try_from(page.total).unwrap_or(i32::MAX),
        }))
    }

    async fn wrap_key(
        &self,
        request: Request<pb::WrapKeyRequest>,
    ) -> Result<Response<pb::WrapKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = key_ref(&request.key)?;
        name_key(call.as_ref(), &key).await?;
        if request.plaintext.len() > MAX_WRAP_PLAINTEXT {
            return Err(KmsError::field("plaintext", FieldProblem::TooLong).into());
        }
        let plaintext = (!request.plaintext.is_empty()).then(|| Zeroizing::new(request.plaintext));
        let aad = validated_aad(request.aad)?;
        let result = self.kms.wrap(&who, &key, plaintext, &aad)?;
        if let Some(note) = &call {
            note.set_key_version(result.version.id);
        }
        Ok(Response::new(pb::WrapKeyResponse {
            ciphertext: result.ciphertext,
            plaintext: result.generated.map(|p| p.to_vec()).unwrap_or_default(),
            key_version: Some(version_to_proto(&result.version)),
        }))
    }

    async fn unwrap_key(
        &self,
        request: Request<pb::UnwrapKeyRequest>,
    ) -> Result<Response<pb::UnwrapKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = key_ref(&request.key)?;
        name_key(call.as_ref(), &key).await?;
        let aad = validated_aad(request.aad)?;
        let result = self
            .kms
            .unwrap(&who, &key, ciphertext(&request.ciphertext)?, &aad)?;
        if let Some(note) = &call {
            // The version that made the ciphertext, and the one it was rewrapped under.
            note.set_key_version(result.version.id);
            if let Some((_, version)) = &result.rewrapped {
                note.set_rewrapped_key_version(version.id);
            }
        }
        let (rewrapped_ciphertext, rewrapped_key_version) = match result.rewrapped {
            Some((bytes, version)) => (bytes, Some(version_to_proto(&version))),
            None => (Vec::new(), None),
        };
        Ok(Response::new(pb::UnwrapKeyResponse {
            plaintext: result.plaintext.to_vec(),
            key_version: Some(version_to_proto(&result.version)),
            rewrapped_ciphertext,
            rewrapped_key_version,
        }))
    }

    async fn rewrap_key(
        &self,
        request: Request<pb::RewrapKeyRequest>,
    ) -> Result<Response<pb::RewrapKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = key_ref(&request.key)?;
        name_key(call.as_ref(), &key).await?;
        let aad = validated_aad(request.aad)?;
        let result = self
            .kms
            .rewrap(&who, &key, ciphertext(&request.ciphertext)?, &aad)?;
        if let Some(note) = &call {
            note.set_key_version(result.version.id);
            note.set_rewrapped_key_version(result.rewrapped_version.id);
        }
        Ok(Response::new(pb::RewrapKeyResponse {
            ciphertext: result.ciphertext,
            key_version: Some(version_to_proto(&result.version)),
            rewrapped_key_version: Some(version_to_proto(&result.rewrapped_version)),
        }))
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = key_ref(&request.key)?;
        name_key(call.as_ref(), &key).await?;
        let material = match request.material {
            None => None,
            Some(pb::rotate_key_request::Material::Payload(bytes)) => {
                Some(Material::Plain(material_bytes("payload", bytes)?))
            }
            Some(pb::rotate_key_request::Material::SecureImport(input)) => {
                Some(Material::Secure(secure_import(input)?))
            }
        };
        let view = blocking(&self.kms, move |kms| kms.rotate_key(&who, &key, material)).await?;
        note_key(call, &view);
        Ok(Response::new(pb::RotateKeyResponse {
            key: Some(key_to_proto(&view)),
        }))
    }

    async fn list_key_versions(
        &self,
        request: Request<pb::ListKeyVersionsRequest>,
    ) -> Result<Response<pb::ListKeyVersionsResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = key_ref(&request.key)?;
        name_key(call.as_ref(), &key).await?;
        let size = page_size("page_size", request.page_size, 200, 1000)?;
        let after = page_token::decode(&request.page_token)?;
        let versions = self.kms.list_key_versions(&who, &key)?;
        let total = versions.len();
        let mut page: Vec<&VersionRecord> = versions
            .iter()
            .skip_while(|v| after.is_some_and(|(_, id)| v.id.as_bytes() != id.as_bytes()))
            .skip(usize::from(after.is_some()))
            .take(size + 1)
            .collect();
        let more = page.len() > size;
        page.truncate(size);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => {
                page_token::encode(last.create_time.as_millis(), last.id.as_bytes())
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListKeyVersionsResponse {
            versions: page.into_iter().map(version_to_proto).collect(),
            next_page_token,
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        }))
    }

    async fn disable_key(
        &self,
        request: Request<pb::DisableKeyRequest>,
    ) -> Result<Response<pb::DisableKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let key = key_ref(&request.get_ref().key)?;
        name_key(call.as_ref(), &key).await?;
        let view = blocking(&self.kms, move |kms| kms.disable_key(&who, &key)).await?;
        note_key(call, &view);
        Ok(Response::new(pb::DisableKeyResponse {
            key: Some(key_to_proto(&view)),
        }))
    }

    async fn enable_key(
        &self,
        request: Request<pb::EnableKeyRequest>,
    ) -> Result<Response<pb::EnableKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let key = key_ref(&request.get_ref().key)?;
        name_key(call.as_ref(), &key).await?;
        let view = blocking(&self.kms, move |kms| kms.enable_key(&who, &key)).await?;
        note_key(call, &view);
        Ok(Response::new(pb::EnableKeyResponse {
            key: Some(key_to_proto(&view)),
        }))
    }

    async fn delete_key(
        &self,
        request: Request<pb::DeleteKeyRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = key_ref(&request.key)?;
        name_key(call.as_ref(), &key).await?;
        let view = blocking(&self.kms, move |kms| {
            kms.delete_key(&who, &key, request.force)
        })
        .await?;
        note_key(call, &view);
        Ok(Response::new(pb::DeleteKeyResponse {
            key: Some(key_to_proto(&view)),
        }))
    }

    async fn restore_key(
        &self,
        request: Request<pb::RestoreKeyRequest>,
    ) -> Result<Response<pb::RestoreKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let key = key_ref(&request.get_ref().key)?;
        name_key(call.as_ref(), &key).await?;
        let view = blocking(&self.kms, move |kms| kms.restore_key(&who, &key)).await?;
        note_key(call, &view);
        Ok(Response::new(pb::RestoreKeyResponse {
            key: Some(key_to_proto(&view)),
        }))
    }

    async fn purge_key(
        &self,
        request: Request<pb::PurgeKeyRequest>,
    ) -> Result<Response<pb::PurgeKeyResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let key = key_ref(&request.get_ref().key)?;
        name_key(call.as_ref(), &key).await?;
        let view = blocking(&self.kms, move |kms| kms.purge_key(&who, &key)).await?;
        note_key(call, &view);
        Ok(Response::new(pb::PurgeKeyResponse {
            key: Some(key_to_proto(&view)),
        }))
    }

    async fn create_key_alias(
        &self,
        request: Request<pb::CreateKeyAliasRequest>,
    ) -> Result<Response<pb::CreateKeyAliasResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = key_ref(&request.key)?;
        name_key(call.as_ref(), &key).await?;
        let alias: Alias = parse("alias", &request.alias)?;
        let (key_id, record) = blocking(&self.kms, move |kms| {
            kms.create_key_alias(&who, &key, alias)
        })
        .await?;
        Ok(Response::new(pb::CreateKeyAliasResponse {
            alias: Some(pb::KeyAlias {
                alias: record.alias.to_string(),
                key_id: key_id.to_string(),
                create_time: Some(record.create_time.to_proto()),
            }),
        }))
    }

    async fn delete_key_alias(
        &self,
        request: Request<pb::DeleteKeyAliasRequest>,
    ) -> Result<Response<pb::DeleteKeyAliasResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let key = key_ref(&request.key)?;
        name_key(call.as_ref(), &key).await?;
        let alias: Alias = parse("alias", &request.alias)?;
        blocking(&self.kms, move |kms| {
            kms.delete_key_alias(&who, &key, &alias)
        })
        .await?;
        Ok(Response::new(pb::DeleteKeyAliasResponse {}))
    }

    async fn create_import_token(
        &self,
        request: Request<pb::CreateImportTokenRequest>,
    ) -> Result<Response<pb::CreateImportTokenResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let instance: InstanceRef = parse("instance", &request.instance)?;
        name_instance(call.as_ref(), instance.id()).await?;
        let seconds = match request.expiration_seconds {
            0 => 600,
            s @ 300..=86_400 => s,
            _ => {
                return Err(KmsError::field("expiration_seconds", FieldProblem::OutOfRange).into());
            }
        };
        let retrievals = match request.max_allowed_retrievals {
            0 => 1,
            n @ 1..=500 => n,
            _ => {
                return Err(
                    KmsError::field("max_allowed_retrievals", FieldProblem::OutOfRange).into(),
                );
            }
        };
        let lifetime = Duration::from_secs(u64::try_from(seconds).unwrap_or(600));
        let retrievals = u32::try_from(retrievals).unwrap_or(1);
        let view = blocking(&self.kms, move |kms| {
            kms.create_import_token(&who, &instance, lifetime, retrievals)
        })
        .await?;
        Ok(Response::new(pb::CreateImportTokenResponse {
            token: Some(token_to_proto(&view)),
        }))
    }

    async fn get_import_token(
        &self,
        request: Request<pb::GetImportTokenRequest>,
    ) -> Result<Response<pb::GetImportTokenResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let instance: InstanceRef = parse("instance", &request.get_ref().instance)?;
        name_instance(call.as_ref(), instance.id()).await?;
        let view = blocking(&self.kms, move |kms| kms.get_import_token(&who, &instance)).await?;
        Ok(Response::new(pb::GetImportTokenResponse {
            token: Some(token_to_proto(&view)),
        }))
    }

    async fn sync_key(
        &self,
        request: Request<pb::SyncKeyRequest>,
    ) -> Result<Response<pb::SyncKeyResponse>, Status> {
        crate::grpc::lifecycle::sync_key(&self.kms, request).await
    }

    async fn set_key_policies(
        &self,
        request: Request<pb::SetKeyPoliciesRequest>,
    ) -> Result<Response<pb::SetKeyPoliciesResponse>, Status> {
        crate::grpc::policies::set_key_policies(&self.kms, request).await
    }

    async fn get_key_policies(
        &self,
        request: Request<pb::GetKeyPoliciesRequest>,
    ) -> Result<Response<pb::GetKeyPoliciesResponse>, Status> {
        crate::grpc::policies::get_key_policies(&self.kms, request).await
    }

    async fn set_key_for_deletion(
        &self,
        request: Request<pb::SetKeyForDeletionRequest>,
    ) -> Result<Response<pb::SetKeyForDeletionResponse>, Status> {
        crate::grpc::policies::set_key_for_deletion(&self.kms, request).await
    }

    async fn unset_key_for_deletion(
        &self,
        request: Request<pb::UnsetKeyForDeletionRequest>,
    ) -> Result<Response<pb::UnsetKeyForDeletionResponse>, Status> {
        crate::grpc::policies::unset_key_for_deletion(&self.kms, request).await
    }
}
