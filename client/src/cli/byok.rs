//! The `kmsimctl` commands of the BYOK flow between a KMS and a database service: API keys for
//! users and service identities, access policies, service-to-service authorizations,
//! registrations, and lifecycle events (watch, with or without following, and acknowledge).

use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use kmsim_proto::v1::{
    ApiKey, Authorization, CreateAccessPolicyRequest, CreateApiKeyRequest,
    CreateAuthorizationRequest, IdentityKind, KeyState, LifecycleEvent, Registration, Role,
};
use serde_json::{Value, json};

use super::timestamp_json;
use crate::client::KmsClient;
use crate::error::ClientError;
use crate::refs::KeyRef;

/// Roles on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Reader.
    Reader,
    /// ReaderPlus.
    ReaderPlus,
    /// Writer.
    Writer,
    /// Manager.
    Manager,
    /// KeyPurge.
    KeyPurge,
    /// Administrator (server-wide; give no instance).
    Administrator,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Reader => Role::Reader,
            RoleArg::ReaderPlus => Role::ReaderPlus,
            RoleArg::Writer => Role::Writer,
            RoleArg::Manager => Role::Manager,
            RoleArg::KeyPurge => Role::KeyPurge,
            RoleArg::Administrator => Role::Administrator,
        }
    }
}

/// Adopter key states on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdopterState {
    /// Active (1).
    Active,
    /// Suspended (2).
    Suspended,
    /// Destroyed (5).
    Destroyed,
}

/// `kmsimctl iam ...`
#[derive(Debug, Subcommand)]
pub enum IamCommand {
    /// Create an API key for a new user (`--user`) or service identity (`--service`); prints
    /// its secret once.
    CreateApiKey {
        /// A new user with this name.
        #[arg(long, conflicts_with = "service", required_unless_present = "service")]
        user: Option<String>,
        /// A new service identity of this service (e.g. `databases-for-postgresql`).
        #[arg(long)]
        service: Option<String>,
        /// For a service identity: the CRN of the source instance it acts for.
        #[arg(long, requires = "service")]
        source_crn: Option<String>,
    },
    /// Grant a user roles on an instance (or Administrator server-wide, without --instance).
    Grant {
        /// The user's identity id.
        #[arg(long)]
        identity: String,
        /// The instance.
        #[arg(long, env = "KMSIM_INSTANCE")]
        instance: Option<String>,
        /// The roles.
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<RoleArg>,
    },
    /// Authorize a source service to use an instance (as Reader).
    Authorize {
        /// The source service name.
        #[arg(long)]
        service: String,
        /// The target KMS instance.
        #[arg(long, env = "KMSIM_INSTANCE")]
        instance: String,
        /// Only this source instance of the service.
        #[arg(long)]
        source_crn: Option<String>,
    },
}

/// `kmsimctl registration ...`
#[derive(Debug, Subcommand)]
pub enum RegistrationCommand {
    /// Register a resource with a root key (service identities only).
    Create {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
        /// The resource's CRN.
        #[arg(long)]
        resource: String,
        /// Forbid deleting the key, even with force, while registered.
        #[arg(long)]
        prevent_key_deletion: bool,
    },
    /// A key's registrations.
    List {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
    },
    /// Delete a registration, keeping it soft-deleted for the retention period.
    Delete {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
        /// The resource's CRN.
        #[arg(long)]
        resource: String,
        /// Days it stays soft-deleted (0: removed at once).
        #[arg(long, default_value_t = 9)]
        retention_days: u64,
    },
}

/// `kmsimctl event ...`
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Print a resource's lifecycle events after a sequence number, one JSON object a line;
    /// with --follow, keep printing new ones until interrupted.
    Watch {
        /// The resource's CRN.
        #[arg(long)]
        resource: String,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep the stream open for new events.
        #[arg(long)]
        follow: bool,
    },
    /// Acknowledge a lifecycle event (service identities only).
    Ack {
        /// The event id.
        event: String,
        /// The key state the resource now applies.
        #[arg(long, value_enum)]
        state: AdopterState,
        /// The key version the resource now uses.
        #[arg(long)]
        version: Option<String>,
    },
}

fn api_key_json(key: &ApiKey) -> Value {
    let identity = key.identity.clone().unwrap_or_default();
    json!({
        "id": key.id,
        "identity": {
            "id": identity.id,
            "name": identity.name,
            "kind": IdentityKind::try_from(identity.kind).map_or("UNKNOWN", |k| k.as_str_name()),
            "source_instance_crn": identity.source_instance_crn,
        },
        "create_time": timestamp_json(key.create_time.as_ref()),
    })
}

fn authorization_json(a: &Authorization) -> Value {
    json!({
        "id": a.id,
        "source_service_name": a.source_service_name,
        "source_instance_crn": a.source_instance_crn,
        "target_instance": a.target_instance,
        "create_time": timestamp_json(a.create_time.as_ref()),
    })
}

fn registration_json(r: &Registration) -> Value {
    json!({
        "key_id": r.key_id,
        "key_crn": r.key_crn,
        "resource_crn": r.resource_crn,
        "key_version_id": r.key_version_id,
        "prevent_key_deletion": r.prevent_key_deletion,
        "deleted": r.deleted,
        "remove_time": timestamp_json(r.remove_time.as_ref()),
    })
}

fn event_json(e: &LifecycleEvent) -> Value {
    json!({
        "sequence": e.sequence,
        "event_id": e.event_id,
        "kind": kmsim_proto::v1::LifecycleEventKind::try_from(e.kind)
            .map_or("UNKNOWN", |k| k.as_str_name()),
        "key_crn": e.key_crn,
        "resource_crn": e.resource_crn,
        "key_state": e.key_state,
        "new_key_version_id": e.new_key_version_id,
        "status": kmsim_proto::v1::LifecycleDeliveryStatus::try_from(e.status)
            .map_or("UNKNOWN", |s| s.as_str_name()),
    })
}

/// Runs an `iam` command.
pub(super) async fn run_iam(client: &KmsClient, command: IamCommand) -> Result<Value, ClientError> {
    Ok(match command {
        IamCommand::CreateApiKey {
            user,
            service,
            source_crn,
        } => {
            let (kind, name) = match (user, service) {
                (Some(user), _) => (IdentityKind::User, user),
                (None, Some(service)) => (IdentityKind::Service, service),
                (None, None) => return Err(ClientError::MalformedResponse("no identity")),
            };
            let created = client
                .create_api_key(CreateApiKeyRequest {
                    kind: kind as i32,
                    name,
                    source_instance_crn: source_crn.unwrap_or_default(),
                    ..CreateApiKeyRequest::default()
                })
                .await?;
            json!({
                "api_key": created.api_key.as_ref().map(api_key_json),
                "secret": created.secret,
            })
        }
        IamCommand::Grant {
            identity,
            instance,
            roles,
        } => {
            let policy = client
                .iam_service()
                .create_access_policy(CreateAccessPolicyRequest {
                    identity_id: identity,
                    instance: instance.unwrap_or_default(),
                    roles: roles.into_iter().map(|r| Role::from(r) as i32).collect(),
                })
                .await?
                .into_inner()
                .policy
                .unwrap_or_default();
            json!({ "id": policy.id, "identity_id": policy.identity_id, "instance": policy.instance })
        }
        IamCommand::Authorize {
            service,
            instance,
            source_crn,
        } => {
            let created = client
                .iam_service()
                .create_authorization(CreateAuthorizationRequest {
                    source_service_name: service,
                    source_instance_crn: source_crn.unwrap_or_default(),
                    target_instance: instance,
                    role: Role::Reader as i32,
                })
                .await?
                .into_inner()
                .authorization
                .unwrap_or_default();
            authorization_json(&created)
        }
    })
}

/// Runs a `registration` command.
pub(super) async fn run_registration(
    client: &KmsClient,
    command: RegistrationCommand,
) -> Result<Value, ClientError> {
    Ok(match command {
        RegistrationCommand::Create {
            key,
            resource,
            prevent_key_deletion,
        } => registration_json(
            &client
                .create_registration(&key, &resource, prevent_key_deletion, "")
                .await?,
        ),
        RegistrationCommand::List { key } => {
            let all = client.list_key_registrations(&key).await?;
            json!({ "registrations": all.iter().map(registration_json).collect::<Vec<_>>() })
        }
        RegistrationCommand::Delete {
            key,
            resource,
            retention_days,
        } => {
            let retain = Duration::from_secs(retention_days.saturating_mul(24 * 3600));
            let deleted = client.delete_registration(&key, &resource, retain).await?;
            deleted.as_ref().map_or(json!({}), registration_json)
        }
    })
}

/// How long `event watch` without --follow waits for more stored events.
const IDLE: Duration = Duration::from_millis(500);

/// Runs an `event` command; `watch` prints each event as it comes and returns `Null`.
pub(super) async fn run_event(
    client: &KmsClient,
    command: EventCommand,
) -> Result<Value, ClientError> {
    match command {
        EventCommand::Watch {
            resource,
            after,
            follow,
        } => {
            let mut stream = client.watch_lifecycle_events(&resource, after).await?;
            loop {
                let next = if follow {
                    stream.message().await
                } else {
                    match tokio::time::timeout(IDLE, stream.message()).await {
                        Ok(next) => next,
                        Err(_) => return Ok(Value::Null),
                    }
                };
                match next.map_err(ClientError::from)? {
                    Some(event) => println!("{}", event_json(&event)),
                    None => return Ok(Value::Null),
                }
            }
        }
        EventCommand::Ack {
            event,
            state,
            version,
        } => {
            let state = match state {
                AdopterState::Active => KeyState::Active,
                AdopterState::Suspended => KeyState::Suspended,
                AdopterState::Destroyed => KeyState::Destroyed,
            };
            let acked = client
                .ack_lifecycle_event(&event, state, version.as_deref())
                .await?;
            Ok(event_json(&acked))
        }
    }
}
