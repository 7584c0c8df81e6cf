//! `kmsim.v1.IamService`.

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use pb::iam_service_server::IamService;
use tonic::{Request, Response, Status};

use crate::auth::IdentityKind;
use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::grpc::{blocking, caller, page_size, page_token, parse, text};
use crate::kms::iam::{
    ApiKeyOwner, AuthorizationRecord, DEFAULT_TOKEN_LIFETIME, IdentityRecord, PolicyRecord, Role,
};
use crate::kms::ids::{InstanceId, InstanceRef, ResourceCrn, SourceService};
use crate::kms::{Kms, Page};

/// The IamService adapter.
#[derive(Debug, Clone)]
pub struct Iam {
    kms: Arc<Kms>,
}

impl Iam {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Reader => pb::Role::Reader,
        Role::ReaderPlus => pb::Role::ReaderPlus,
        Role::Writer => pb::Role::Writer,
        Role::Manager => pb::Role::Manager,
        Role::KeyPurge => pb::Role::KeyPurge,
        Role::Administrator => pb::Role::Administrator,
    }
}

fn role(field: &'static str, value: i32) -> Result<Role, KmsError> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Reader) => Ok(Role::Reader),
        Ok(pb::Role::ReaderPlus) => Ok(Role::ReaderPlus),
        Ok(pb::Role::Writer) => Ok(Role::Writer),
        Ok(pb::Role::Manager) => Ok(Role::Manager),
        Ok(pb::Role::KeyPurge) => Ok(Role::KeyPurge),
        Ok(pb::Role::Administrator) => Ok(Role::Administrator),
        Ok(pb::Role::Unspecified) => Err(KmsError::field(field, FieldProblem::Missing)),
        Err(_) => Err(KmsError::field(field, FieldProblem::UnknownEnumValue)),
    }
}

fn identity_to_proto(record: &IdentityRecord) -> pb::Identity {
    pb::Identity {
        id: record.id.to_string(),
        kind: match record.kind {
            IdentityKind::User => pb::IdentityKind::User,
            IdentityKind::Service => pb::IdentityKind::Service,
        } as i32,
        name: record.name.clone(),
        source_instance_crn: record
            .source_instance
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        create_time: Some(record.create_time.to_proto()),
    }
}

fn policy_to_proto(record: &PolicyRecord) -> pb::AccessPolicy {
    pb::AccessPolicy {
        id: record.id.to_string(),
        identity_id: record.identity.to_string(),
        instance: record.instance.map(|i| i.to_string()).unwrap_or_default(),
        roles: record
            .roles
            .iter()
            .map(|r| role_to_proto(*r) as i32)
            .collect(),
        create_time: Some(record.create_time.to_proto()),
        created_by: record.created_by.to_string(),
    }
}

fn authorization_to_proto(record: &AuthorizationRecord) -> pb::Authorization {
    pb::Authorization {
        id: record.id.to_string(),
        source_service_name: record.source.to_string(),
        source_instance_crn: record
            .source_instance
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        target_instance: record.target.to_string(),
        role: role_to_proto(record.role) as i32,
        create_time: Some(record.create_time.to_proto()),
        created_by: record.created_by.to_string(),
    }
}

fn optional<T: std::str::FromStr<Err = crate::kms::ids::ParseError>>(
    field: &'static str,
    value: &str,
) -> Result<Option<T>, KmsError> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(field, value).map(Some)
    }
}

fn optional_instance(field: &'static str, value: &str) -> Result<Option<InstanceId>, KmsError> {
    Ok(optional::<InstanceRef>(field, value)?.map(|r| r.id()))
}

/// One page of `items` (ordered by creation time then id, as the domain lists them): those
/// after the cursor `after`, at most `size`, and the token of the next page (empty on the last).
fn paginate<T>(
    items: Vec<T>,
    size: usize,
    after: Option<(i64, uuid::Uuid)>,
    cursor: impl Fn(&T) -> (Timestamp, [u8; 16]),
) -> (Vec<T>, String) {
    let total = items.len();
    let fetched: Vec<T> = items
        .into_iter()
        .filter(|item| {
            after.is_none_or(|(time, id)| {
                let (t, i) = cursor(item);
                (t.as_millis(), i) > (time, *id.as_bytes())
            })
        })
        .take(size + 1)
        .collect();
    let page = Page::from_overfetch(fetched, size, total);
    let next = match page.items.last() {
        Some(last) if page.more => {
            let (time, id) = cursor(last);
            page_token::encode(time.as_millis(), &id)
        }
        _ => String::new(),
    };
    (page.items, next)
}

#[tonic::async_trait]
impl IamService for Iam {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let who = caller(&request)?;
        let request = request.into_inner();
        let description = text("description", &request.description, 0, 240)?;
        let owner = if request.identity_id.is_empty() {
            match pb::IdentityKind::try_from(request.kind) {
                Ok(pb::IdentityKind::User) => ApiKeyOwner::NewUser {
                    name: text("name", &request.name, 1, 128)?,
                },
                Ok(pb::IdentityKind::Service) => ApiKeyOwner::NewService {
                    service: parse::<SourceService>("name", &request.name)?,
                    source_instance: optional::<ResourceCrn>(
                        "source_instance_crn",
                        &request.source_instance_crn,
                    )?,
                },
                Ok(pb::IdentityKind::Unspecified) => {
                    return Err(KmsError::field("kind", FieldProblem::Missing).into());
                }
                Err(_) => {
                    return Err(KmsError::field("kind", FieldProblem::UnknownEnumValue).into());
                }
            }
        } else {
            for (field, set) in [
                ("kind", request.kind != 0),
                ("name", !request.name.is_empty()),
                (
                    "source_instance_crn",
                    !request.source_instance_crn.is_empty(),
                ),
            ] {
                if set {
                    return Err(KmsError::field(field, FieldProblem::NotAllowed).into());
                }
            }
            ApiKeyOwner::Existing(parse("identity_id", &request.identity_id)?)
        };
        let created = blocking(&self.kms, move |kms| {
            kms.create_api_key(&who, owner, description)
        })
        .await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(pb::ApiKey {
                id: created.record.id.to_string(),
                identity: Some(identity_to_proto(&created.identity)),
                description: created.record.description.clone(),
                create_time: Some(created.record.create_time.to_proto()),
            }),
            secret: created.secret.to_string(),
        }))
    }

    async fn delete_api_key(
        &self,
        request: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let who = caller(&request)?;
        let id = parse("id", &request.get_ref().id)?;
        blocking(&self.kms, move |kms| kms.delete_api_key(&who, id)).await?;
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn delete_identity(
        &self,
        request: Request<pb::DeleteIdentityRequest>,
    ) -> Result<Response<pb::DeleteIdentityResponse>, Status> {
        let who = caller(&request)?;
        let id = parse("id", &request.get_ref().id)?;
        blocking(&self.kms, move |kms| kms.delete_identity(&who, id)).await?;
        Ok(Response::new(pb::DeleteIdentityResponse {}))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let request = request.into_inner();
        let secret = zeroize::Zeroizing::new(request.api_key);
        if secret.is_empty() {
            return Err(KmsError::field("api_key", FieldProblem::Missing).into());
        }
        let lifetime = match request.expires_in_seconds {
            0 => DEFAULT_TOKEN_LIFETIME,
            s @ 60..=86_400 => Duration::from_secs(u64::try_from(s).unwrap_or(3600)),
            _ => {
                return Err(KmsError::field("expires_in_seconds", FieldProblem::OutOfRange).into());
            }
        };
        let issued = blocking(&self.kms, move |kms| kms.create_token(&secret, lifetime)).await?;
        Ok(Response::new(pb::CreateTokenResponse {
            access_token: issued.token.to_string(),
            token_type: "Bearer".to_owned(),
            expiration_time: Some(Timestamp::to_proto(issued.expires)),
            identity: Some(identity_to_proto(&issued.identity)),
        }))
    }

    async fn create_access_policy(
        &self,
        request: Request<pb::CreateAccessPolicyRequest>,
    ) -> Result<Response<pb::CreateAccessPolicyResponse>, Status> {
        let who = caller(&request)?;
        let request = request.into_inner();
        let identity = parse("identity_id", &request.identity_id)?;
        let instance = optional_instance("instance", &request.instance)?;
        if request.roles.is_empty() {
            return Err(KmsError::field("roles", FieldProblem::Missing).into());
        }
        let mut roles = Vec::new();
        for value in &request.roles {
            let role = role("roles", *value)?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let record = blocking(&self.kms, move |kms| {
            kms.create_access_policy(&who, identity, instance, roles)
        })
        .await?;
        Ok(Response::new(pb::CreateAccessPolicyResponse {
            policy: Some(policy_to_proto(&record)),
        }))
    }

    async fn list_access_policies(
        &self,
        request: Request<pb::ListAccessPoliciesRequest>,
    ) -> Result<Response<pb::ListAccessPoliciesResponse>, Status> {
        let who = caller(&request)?;
        let request = request.into_inner();
        let identity = optional("identity_id", &request.identity_id)?;
        let instance = optional_instance("instance", &request.instance)?;
        let size = page_size("page_size", request.page_size, 100, 1000)?;
        let after = page_token::decode(&request.page_token)?;
        let policies = self.kms.list_access_policies(&who, identity, instance)?;
        let (page, next_page_token) =
            paginate(policies, size, after, |p| (p.create_time, *p.id.as_bytes()));
        Ok(Response::new(pb::ListAccessPoliciesResponse {
            policies: page.iter().map(policy_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn delete_access_policy(
        &self,
        request: Request<pb::DeleteAccessPolicyRequest>,
    ) -> Result<Response<pb::DeleteAccessPolicyResponse>, Status> {
        let who = caller(&request)?;
        let id = parse("id", &request.get_ref().id)?;
        blocking(&self.kms, move |kms| kms.delete_access_policy(&who, id)).await?;
        Ok(Response::new(pb::DeleteAccessPolicyResponse {}))
    }

    async fn create_authorization(
        &self,
        request: Request<pb::CreateAuthorizationRequest>,
    ) -> Result<Response<pb::CreateAuthorizationResponse>, Status> {
        let who = caller(&request)?;
        let request = request.into_inner();
        let source: SourceService = parse("source_service_name", &request.source_service_name)?;
        let source_instance = optional("source_instance_crn", &request.source_instance_crn)?;
        let target = parse::<InstanceRef>("target_instance", &request.target_instance)?.id();
        match pb::Role::try_from(request.role) {
            Ok(pb::Role::Unspecified | pb::Role::Reader) => {}
            Ok(_) => return Err(KmsError::field("role", FieldProblem::RoleNotAllowed).into()),
            Err(_) => return Err(KmsError::field("role", FieldProblem::UnknownEnumValue).into()),
        }
        let record = blocking(&self.kms, move |kms| {
            kms.create_authorization(&who, source, source_instance, target)
        })
        .await?;
        Ok(Response::new(pb::CreateAuthorizationResponse {
            authorization: Some(authorization_to_proto(&record)),
        }))
    }

    async fn list_authorizations(
        &self,
        request: Request<pb::ListAuthorizationsRequest>,
    ) -> Result<Response<pb::ListAuthorizationsResponse>, Status> {
        let who = caller(&request)?;
        let call = crate::grpc::context(&request);
        let request = request.into_inner();
        let target = optional_instance("target_instance", &request.target_instance)?;
        if let Some(target) = target {
            crate::grpc::name_instance(call.as_ref(), target).await?;
        }
        let source = optional("source_service_name", &request.source_service_name)?;
        let size = page_size("page_size", request.page_size, 100, 1000)?;
        let after = page_token::decode(&request.page_token)?;
        let all = self.kms.list_authorizations(&who, target, source)?;
        let (page, next_page_token) =
            paginate(all, size, after, |a| (a.create_time, *a.id.as_bytes()));
        Ok(Response::new(pb::ListAuthorizationsResponse {
            authorizations: page.iter().map(authorization_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn delete_authorization(
        &self,
        request: Request<pb::DeleteAuthorizationRequest>,
    ) -> Result<Response<pb::DeleteAuthorizationResponse>, Status> {
        let who = caller(&request)?;
        let id = parse("id", &request.get_ref().id)?;
        blocking(&self.kms, move |kms| kms.delete_authorization(&who, id)).await?;
        Ok(Response::new(pb::DeleteAuthorizationResponse {}))
    }
}
