//! The audit events of what the clock does: an automatic rotation by policy, an expiry to
//! Deactivated, an automatic purge, a registration's retention ending, a dual-authorization
//! window lapsing. Each is named and filled in as the manual action's event (the instance
//! flavour's prefix, the key's CRN, instance, state and version), with the system as its
//! initiator: no identity and no gRPC method (the trail shows the service itself).

use crate::audit::{ActionSpec, AuditRecord, Durability, Family, Outcome};
use crate::kms::Kms;
use crate::kms::records::KeyRecord;
use crate::kms::state::KeyState;

impl Kms {
    /// Records that a timer did `name` (a Key Protect action name without prefix, e.g.
    /// `secrets.rotate`) to `record`'s key, which it left in `key_state`.
    pub(crate) fn audit_timer(&self, name: &'static str, record: &KeyRecord, key_state: KeyState) {
        let Ok(instance) = self.instance(record.instance) else {
            return;
        };
        let spec = ActionSpec {
            name,
            family: Family::KeyProtect,
            durability: Durability::Batched,
        };
        let crn = instance.record.crn().key(record.id);
        self.audit().record(AuditRecord {
            sequence: 0,
            time: self.now(),
            action: crate::audit::action_name(spec, Some(crn.service)),
            outcome: Outcome::Success,
            severity: crate::audit::severity(spec, 200),
            // gRPC OK.
            grpc_code: 0,
            reason: String::new(),
            http_status: 200,
            initiator_id: None,
            initiator_kind: None,
            target_crn: crn.to_string(),
            instance: Some(record.instance),
            method: String::new(),
            key_state: Some(key_state),
            key_version_id: record
                .current_version()
                .map(|v| v.id.to_string())
                .unwrap_or_default(),
            rewrapped_key_version_id: String::new(),
            injected: false,
            injected_latency_ms: 0,
            correlation_id: self.random.correlation_id(),
        });
    }
}
