//! The audit trail: one event per call to a kmsim.v1 service, allowed or refused, named as
//! IBM Activity Tracker names Key Protect's events (reference section 1.12).
//!
//! - this file: the event record ([`AuditRecord`]), the one table of action names
//!   ([`action_for`]), severities ([`severity`]), filters, and the domain's read side
//!   ([`Kms::list_audit_events`]);
//! - [`context`]: the typed context of a call ([`CallContext`]) that the layers, the edge and
//!   the error mapping fill in;
//! - [`codec`]: the compact binary form events are stored in;
//! - [`trail`]: sequence numbers, batched durable storage (tree `audit`) and the live feed;
//! - [`layer`]: the outermost tower layer that records every call.
//!
//! An event never holds payloads, plaintexts, ciphertexts, AAD, nonces, tokens or API keys:
//! the layer never reads the request body; it learns the target from the call's context
//! (what the edge parsed) and the outcome from the context and the response headers.

pub mod codec;
pub mod context;
pub mod layer;
pub mod trail;

use serde::{Deserialize, Serialize};

use crate::auth::{Identity, IdentityKind};
use crate::clock::Timestamp;
use crate::error::KmsError;
use crate::kms::Kms;
use crate::kms::iam::Action;
use crate::kms::ids::{IdentityId, InstanceId, KeyId, ServiceName};
use crate::kms::records::Lifecycle;
use crate::kms::state::KeyState;

pub use context::{CallContext, Subject};
pub use trail::AuditTrail;

/// Whether a call succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// gRPC OK.
    Success,
    /// Any other status.
    Failure,
}

/// How serious an event is (Activity Tracker's grading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// An ordinary call.
    Normal,
    /// A state change worth attention.
    Warning,
    /// A destructive call, or one refused with 401, 403, 503 or 507.
    Critical,
}

/// One recorded call, as stored (by [`codec`]) in [`crate::store::Tree::Audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the trail (assigned when the event is written; 0 before).
    pub sequence: u64,
    /// When the call was answered.
    pub time: Timestamp,
    /// The action name, e.g. `kms.secrets.wrap`.
    pub action: String,
    /// Success or failure.
    pub outcome: Outcome,
    /// The severity.
    pub severity: Severity,
    /// The gRPC status code.
    pub grpc_code: i32,
    /// The Key Protect reason code of a failure.
    #[serde(default)]
    pub reason: String,
    /// The HTTP status Key Protect would have answered.
    pub http_status: u16,
    /// The authenticated caller's id, if any.
    #[serde(default)]
    pub initiator_id: Option<IdentityId>,
    /// The authenticated caller's kind, if any.
    #[serde(default)]
    pub initiator_kind: Option<IdentityKind>,
    /// The target's CRN, when known.
    #[serde(default)]
    pub target_crn: String,
    /// The target instance, when known.
    #[serde(default)]
    pub instance: Option<InstanceId>,
    /// The gRPC method path.
    pub method: String,
    /// The key's state after the call, when the target is a key.
    #[serde(default)]
    pub key_state: Option<KeyState>,
    /// The key version the call used.
    #[serde(default)]
    pub key_version_id: String,
    /// The version a rewrap (or a rewrapping unwrap) wrapped under.
    #[serde(default)]
    pub rewrapped_key_version_id: String,
    /// Whether a fault rule failed or delayed the call.
    #[serde(default)]
    pub injected: bool,
    /// Latency a fault rule added, in milliseconds.
    #[serde(default)]
    pub injected_latency_ms: u32,
    /// An id unique to the call (the client's `x-correlation-id` when it sent one).
    #[serde(default)]
    pub correlation_id: String,
}

/// Which family an action name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A Key Protect event: prefixed `kms.` or, for an HPCS instance, `hs-crypto.`.
    KeyProtect,
    /// kmsim's own call: the name is complete (`kmsim.`...).
    Kmsim,
}

/// How an action's event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A successful mutation: its event is on disk before the reply.
    BeforeReply,
    /// A read or data call: its event is written in the next batch (within 50 ms).
    Batched,
}

/// What the trail knows about a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    /// The name: without prefix for [`Family::KeyProtect`], complete for [`Family::Kmsim`].
    pub name: &'static str,
    /// The family.
    pub family: Family,
    /// How the event of a successful call is written.
    pub durability: Durability,
}

const fn kp(name: &'static str, durability: Durability) -> ActionSpec {
    ActionSpec {
        name,
        family: Family::KeyProtect,
        durability,
    }
}

const fn own(name: &'static str, durability: Durability) -> ActionSpec {
    ActionSpec {
        name,
        family: Family::Kmsim,
        durability,
    }
}

/// The spec of a method kmsim does not serve (answered `UNIMPLEMENTED`).
pub const UNKNOWN_METHOD: ActionSpec = own("kmsim.unknown.request", Durability::Batched);

/// The one table of action names: the spec of a kmsim.v1 method path
/// (`/kmsim.v1.Service/Method`); `None` for paths outside kmsim.v1 (health, reflection),
/// which are not audited. An unknown kmsim.v1 method is [`UNKNOWN_METHOD`].
pub fn action_for(path: &str) -> Option<ActionSpec> {
    use Durability::{Batched, BeforeReply};
    let method = path.strip_prefix("/kmsim.v1.")?;
    let spec = match method {
        "KeyService/CreateKey" => kp("secrets.create", BeforeReply),
        "KeyService/GetKey" => kp("secrets.read", Batched),
        "KeyService/ListKeys" => kp("secrets.list", Batched),
        "KeyService/WrapKey" => kp("secrets.wrap", Batched),
        "KeyService/UnwrapKey" => kp("secrets.unwrap", Batched),
        "KeyService/RewrapKey" => kp("secrets.rewrap", Batched),
        "KeyService/RotateKey" => kp("secrets.rotate", BeforeReply),
        "KeyService/ListKeyVersions" => kp("secrets-key-versions.list", Batched),
        "KeyService/DisableKey" => kp("secrets.disable", BeforeReply),
        "KeyService/EnableKey" => kp("secrets.enable", BeforeReply),
        "KeyService/DeleteKey" => kp("secrets.delete", BeforeReply),
        "KeyService/RestoreKey" => kp("secrets.restore", BeforeReply),
        "KeyService/PurgeKey" => kp("secrets.purge", BeforeReply),
        "KeyService/CreateKeyAlias" => kp("secrets-alias.create", BeforeReply),
        "KeyService/DeleteKeyAlias" => kp("secrets-alias.delete", BeforeReply),
        "KeyService/CreateImportToken" => kp("import-token.create", BeforeReply),
        "KeyService/GetImportToken" => kp("import-token.read", BeforeReply),
        "KeyService/SyncKey" => kp("secrets.sync", BeforeReply),
        "KeyService/SetKeyPolicies" => kp("policies.write", BeforeReply),
        "KeyService/GetKeyPolicies" => kp("policies.read", Batched),
        "KeyService/SetKeyForDeletion" => kp("secrets.setkeyfordeletion", BeforeReply),
        "KeyService/UnsetKeyForDeletion" => kp("secrets.unsetkeyfordeletion", BeforeReply),
        "InstanceService/CreateInstance" => own("kmsim.instances.create", BeforeReply),
        "InstanceService/GetInstance" => own("kmsim.instances.read", Batched),
        "InstanceService/ListInstances" => own("kmsim.instances.list", Batched),
        "InstanceService/DeleteInstance" => own("kmsim.instances.delete", BeforeReply),
        "InstanceService/SetInstancePolicies" => kp("instance-policies.write", BeforeReply),
        "InstanceService/GetInstancePolicies" => kp("instance-policies.read", Batched),
        "RegistrationService/CreateRegistration" => kp("registrations.create", BeforeReply),
        "RegistrationService/ListRegistrations" => kp("registrations.list", Batched),
        "RegistrationService/UpdateRegistration" => kp("registrations.write", BeforeReply),
        "RegistrationService/DeleteRegistration" => kp("registrations.delete", BeforeReply),
        "EventService/ListAuditEvents" => own("kmsim.audit-events.list", Batched),
        "EventService/WatchAuditEvents" => own("kmsim.audit-events.watch", Batched),
        "EventService/WatchLifecycleEvents" => own("kmsim.lifecycle-events.watch", Batched),
        "EventService/AckLifecycleEvent" => kp("secrets-event.ack", BeforeReply),
        "IamService/CreateApiKey" => own("kmsim.iam.api-key.create", BeforeReply),
        "IamService/DeleteApiKey" => own("kmsim.iam.api-key.delete", BeforeReply),
        "IamService/DeleteIdentity" => own("kmsim.iam.identity.delete", BeforeReply),
        "IamService/CreateToken" => own("kmsim.iam.token.create", Batched),
        "IamService/CreateAccessPolicy" => own("kmsim.iam.access-policy.create", BeforeReply),
        "IamService/ListAccessPolicies" => own("kmsim.iam.access-policy.list", Batched),
        "IamService/DeleteAccessPolicy" => own("kmsim.iam.access-policy.delete", BeforeReply),
        "IamService/CreateAuthorization" => own("kmsim.iam.authorization.create", BeforeReply),
        "IamService/ListAuthorizations" => own("kmsim.iam.authorization.list", Batched),
        "IamService/DeleteAuthorization" => own("kmsim.iam.authorization.delete", BeforeReply),
        "SimulatorService/GetTime" => own("kmsim.simulator.get-time", Batched),
        "SimulatorService/AdvanceClock" => own("kmsim.simulator.advance-clock", BeforeReply),
        "SimulatorService/SetTime" => own("kmsim.simulator.set-time", BeforeReply),
        "SimulatorService/Reset" => own("kmsim.simulator.reset", BeforeReply),
        "SimulatorService/InjectFault" => own("kmsim.simulator.inject-fault", BeforeReply),
        "SimulatorService/ListFaults" => own("kmsim.simulator.list-faults", Batched),
        "SimulatorService/ClearFaults" => own("kmsim.simulator.clear-faults", BeforeReply),
        "SimulatorService/ExportSnapshot" => own("kmsim.simulator.export-snapshot", BeforeReply),
        "SimulatorService/ImportSnapshot" => own("kmsim.simulator.import-snapshot", BeforeReply),
        "HsmService/GetStatus" => own("kmsim.hsm.get-status", Batched),
        "HsmService/RunSelfTests" => own("kmsim.hsm.run-self-tests", BeforeReply),
        "HsmService/Tamper" => own("kmsim.hsm.tamper", BeforeReply),
        "HsmService/Zeroize" => own("kmsim.hsm.zeroize", BeforeReply),
        "HsmService/GetAdminCommandContext" => own("kmsim.hsm.get-admin-context", Batched),
        "HsmService/AddAdministrator" => own("kmsim.hsm.add-administrator", BeforeReply),
        "HsmService/SetThresholds" => own("kmsim.hsm.set-thresholds", BeforeReply),
        "HsmService/LoadMasterKeyPart" => own("kmsim.hsm.load-master-key-part", BeforeReply),
        "HsmService/CommitMasterKey" => own("kmsim.hsm.commit-master-key", BeforeReply),
        "HsmService/ActivateMasterKey" => own("kmsim.hsm.activate-master-key", BeforeReply),
        "HsmService/RotateMasterKey" => own("kmsim.hsm.rotate-master-key", BeforeReply),
        "HsmService/FinishMasterKeyRotation" => {
            own("kmsim.hsm.finish-master-key-rotation", BeforeReply)
        }
        _ => UNKNOWN_METHOD,
    };
    Some(spec)
}

/// The full action name of `spec` for a target served as `service` (Key Protect when
/// unknown).
pub fn action_name(spec: ActionSpec, service: Option<ServiceName>) -> String {
    match spec.family {
        Family::Kmsim => spec.name.to_owned(),
        Family::KeyProtect => {
            let prefix = match service {
                Some(ServiceName::HsCrypto) => "hs-crypto",
                _ => "kms",
            };
            format!("{prefix}.{}", spec.name)
        }
    }
}

/// The severity of a call to `spec` answered with `http_status`.
pub fn severity(spec: ActionSpec, http_status: u16) -> Severity {
    if matches!(http_status, 401 | 403 | 503 | 507) {
        return Severity::Critical;
    }
    match spec.name {
        "secrets.delete"
        | "registrations.delete"
        | "kmsim.instances.delete"
        | "kmsim.hsm.tamper"
        | "kmsim.hsm.zeroize"
        // The master key ceremony changes what protects every key.
        | "kmsim.hsm.add-administrator"
        | "kmsim.hsm.set-thresholds"
        | "kmsim.hsm.load-master-key-part"
        | "kmsim.hsm.commit-master-key"
        | "kmsim.hsm.activate-master-key"
        | "kmsim.hsm.rotate-master-key"
        | "kmsim.hsm.finish-master-key-rotation"
        // The whole state (every key, sealed) leaves, or is replaced.
        | "kmsim.simulator.export-snapshot"
        | "kmsim.simulator.import-snapshot" => Severity::Critical,
        "secrets.rotate"
        | "secrets.restore"
        | "secrets.enable"
        | "secrets.disable"
        | "secrets.setkeyfordeletion"
        | "secrets.unsetkeyfordeletion"
        | "policies.write"
        | "instance-policies.write" => Severity::Warning,
        _ => Severity::Normal,
    }
}

/// Which events a listing or a watch returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this instance's events.
    pub instance: Option<InstanceId>,
    /// Only actions starting with this.
    pub action_prefix: String,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only events at or after this time.
    pub start: Option<Timestamp>,
    /// Only events before this time.
    pub end: Option<Timestamp>,
}

impl AuditFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &AuditRecord) -> bool {
        self.instance.is_none_or(|i| event.instance == Some(i))
            && event.action.starts_with(&self.action_prefix)
            && self.outcome.is_none_or(|o| event.outcome == o)
            && self.start.is_none_or(|t| event.time >= t)
            && self.end.is_none_or(|t| event.time < t)
    }
}

/// One page of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// The events, oldest first.
    pub events: Vec<AuditRecord>,
    /// Whether more events match after the last one.
    pub more: bool,
}

impl Kms {
    /// Checks that `who` may read the audit events `filter` selects: an Administrator reads
    /// every event; a Manager of an instance reads that instance's (the filter must name it).
    pub fn authorize_audit(&self, who: &Identity, filter: &AuditFilter) -> Result<(), KmsError> {
        self.authorize(who, filter.instance, Action::ReadAuditEvents)
    }

    /// `ListAuditEvents`: up to `limit` events after sequence `after` that pass `filter`,
    /// oldest first. Every call answered before this one is included.
    pub async fn list_audit_events(
        &self,
        who: &Identity,
        filter: &AuditFilter,
        after: u64,
        limit: usize,
    ) -> Result<AuditPage, KmsError> {
        self.authorize_audit(who, filter)?;
        self.audit().sync().await?;
        self.audit().read(after, filter, limit)
    }

    /// The target of a call whose request named `subject`: the key when it exists, else
    /// its instance when that exists.
    pub fn audit_target(&self, subject: &Subject) -> Option<AuditTarget> {
        if let Subject::Key(key) = subject {
            if let Ok((instance, entry)) = self.resolve(key) {
                let record = entry.snapshot();
                let crn = instance.record.crn();
                return Some(AuditTarget {
                    crn: crn.key(record.id).to_string(),
                    instance: instance.record.id,
                    service: crn.service,
                    key: Some(record.id),
                    key_state: self.audit_key_state(record.id),
                });
            }
        }
        let instance = self.instance(subject.instance()).ok()?;
        let crn = instance.record.crn();
        Some(AuditTarget {
            crn: crn.to_string(),
            instance: instance.record.id,
            service: crn.service,
            key: None,
            key_state: None,
        })
    }

    /// A key's effective state now, if it exists.
    pub(crate) fn audit_key_state(&self, key: KeyId) -> Option<KeyState> {
        let entry = self.key_entry(key)?;
        match entry.snapshot().state_at(self.now()) {
            Lifecycle::Live(state) => Some(state),
            Lifecycle::Purged => None,
        }
    }
}

/// What the audit layer learns about a call's target from the subject its request named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTarget {
    /// The key's or the instance's CRN.
    pub crn: String,
    /// The instance.
    pub instance: InstanceId,
    /// The service the instance is served as.
    pub service: ServiceName,
    /// The key, when the target is one.
    pub key: Option<KeyId>,
    /// The key's state before the call.
    pub key_state: Option<KeyState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_key_protect_and_the_instance_flavor() {
        let wrap = action_for("/kmsim.v1.KeyService/WrapKey").unwrap();
        assert_eq!(action_name(wrap, None), "kms.secrets.wrap");
        assert_eq!(
            action_name(wrap, Some(ServiceName::HsCrypto)),
            "hs-crypto.secrets.wrap"
        );
        let clock = action_for("/kmsim.v1.SimulatorService/AdvanceClock").unwrap();
        assert_eq!(
            action_name(clock, Some(ServiceName::HsCrypto)),
            "kmsim.simulator.advance-clock"
        );
        assert_eq!(
            action_for("/kmsim.v1.KeyService/Nope"),
            Some(UNKNOWN_METHOD)
        );
        assert_eq!(action_for("/grpc.health.v1.Health/Check"), None);
    }

    #[test]
    fn every_rpc_has_its_own_action() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(kmsim_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut seen = 0;
        for file in set.file.iter().filter(|f| f.package() == "kmsim.v1") {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/kmsim.v1.{}/{}", service.name(), method.name());
                    assert_ne!(action_for(&path), Some(UNKNOWN_METHOD), "{path}");
                    seen += 1;
                }
            }
        }
        assert!(
            seen > 50,
            "the descriptor set lists the services ({seen} methods)"
        );
        let export = action_for("/kmsim.v1.SimulatorService/ExportSnapshot").unwrap();
        assert_eq!(severity(export, 200), Severity::Critical);
        let import = action_for("/kmsim.v1.SimulatorService/ImportSnapshot").unwrap();
        assert_eq!(severity(import, 200), Severity::Critical);
    }

    #[test]
    fn severities_follow_activity_tracker() {
        let spec = |p: &str| action_for(p).unwrap();
        assert_eq!(
            severity(spec("/kmsim.v1.KeyService/DeleteKey"), 200),
            Severity::Critical
        );
        assert_eq!(
            severity(
                spec("/kmsim.v1.RegistrationService/DeleteRegistration"),
                200
            ),
            Severity::Critical
        );
        assert_eq!(
            severity(spec("/kmsim.v1.KeyService/RotateKey"), 200),
            Severity::Warning
        );
        assert_eq!(
            severity(spec("/kmsim.v1.KeyService/WrapKey"), 200),
            Severity::Normal
        );
        assert_eq!(
            severity(spec("/kmsim.v1.KeyService/WrapKey"), 404),
            Severity::Normal
        );
        for status in [401, 403, 503, 507] {
            assert_eq!(
                severity(spec("/kmsim.v1.KeyService/WrapKey"), status),
                Severity::Critical
            );
        }
    }
}
