//! The stored form of an audit event: a compact protobuf message (prost), about a fifth of
//! the JSON it replaces, so that the writer thread spends its time writing rather than
//! formatting. [`encode`] and [`decode`] are the only conversions between an
//! [`AuditRecord`] and its bytes in [`crate::store::Tree::Audit`].
//!
//! Optional values are protobuf `optional` fields; enumerations are stored as their
//! protobuf-style integers and refused on decode when unknown, so a corrupt record is an
//! error rather than a silently different event.

use prost::Message;

use super::{AuditRecord, Outcome, Severity};
use crate::auth::IdentityKind;
use crate::clock::Timestamp;
use crate::kms::ids::{IdentityId, InstanceId};
use crate::kms::state::KeyState;

/// Why stored bytes are not an audit event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not the protobuf message.
    #[error("an audit event is not a valid protobuf message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A field holds a value no event has.
    #[error("an audit event's {0} is out of range")]
    Field(&'static str),
}

/// The protobuf message of one event (field numbers are the storage format: never reuse).
#[derive(Clone, PartialEq, Message)]
struct StoredEvent {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(int64, tag = "2")]
    time_millis: i64,
    #[prost(string, tag = "3")]
    action: String,
    /// 1 success, 2 failure.
    #[prost(uint32, tag = "4")]
    outcome: u32,
    /// 1 normal, 2 warning, 3 critical.
    #[prost(uint32, tag = "5")]
    severity: u32,
    #[prost(int32, tag = "6")]
    grpc_code: i32,
    #[prost(string, tag = "7")]
    reason: String,
    #[prost(uint32, tag = "8")]
    http_status: u32,
    /// The initiator's 16 UUID bytes.
    #[prost(bytes = "vec", optional, tag = "9")]
    initiator_id: Option<Vec<u8>>,
    /// 1 user, 2 service.
    #[prost(uint32, optional, tag = "10")]
    initiator_kind: Option<u32>,
    #[prost(string, tag = "11")]
    target_crn: String,
    /// The instance's 16 UUID bytes.
    #[prost(bytes = "vec", optional, tag = "12")]
    instance: Option<Vec<u8>>,
    #[prost(string, tag = "13")]
    method: String,
    /// Key Protect's integer state.
    #[prost(int32, optional, tag = "14")]
    key_state: Option<i32>,
    #[prost(string, tag = "15")]
    key_version_id: String,
    #[prost(string, tag = "16")]
    rewrapped_key_version_id: String,
    #[prost(bool, tag = "17")]
    injected: bool,
    #[prost(uint32, tag = "18")]
    injected_latency_ms: u32,
    #[prost(string, tag = "19")]
    correlation_id: String,
}

/// The stored bytes of `event`.
pub fn encode(event: &AuditRecord) -> Vec<u8> {
    StoredEvent {
        sequence: event.sequence,
        time_millis: event.time.as_millis(),
        action: event.action.clone(),
        outcome: match event.outcome {
            Outcome::Success => 1,
            Outcome::Failure => 2,
        },
        severity: match event.severity {
            Severity::Normal => 1,
            Severity::Warning => 2,
            Severity::Critical => 3,
        },
        grpc_code: event.grpc_code,
        reason: event.reason.clone(),
        http_status: u32::from(event.http_status),
        initiator_id: event.initiator_id.map(|id| id.as_bytes().to_vec()),
        initiator_kind: event.initiator_kind.map(|kind| match kind {
            IdentityKind::User => 1,
            IdentityKind::Service => 2,
        }),
        target_crn: event.target_crn.clone(),
        instance: event.instance.map(|id| id.as_bytes().to_vec()),
        method: event.method.clone(),
        key_state: event.key_state.map(|state| state as i32),
        key_version_id: event.key_version_id.clone(),
        rewrapped_key_version_id: event.rewrapped_key_version_id.clone(),
        injected: event.injected,
        injected_latency_ms: event.injected_latency_ms,
        correlation_id: event.correlation_id.clone(),
    }
    .encode_to_vec()
}

fn uuid_bytes(bytes: Vec<u8>, field: &'static str) -> Result<[u8; 16], CodecError> {
    bytes.try_into().map_err(|_| CodecError::Field(field))
}

/// The event stored as `bytes`.
pub fn decode(bytes: &[u8]) -> Result<AuditRecord, CodecError> {
    let stored = StoredEvent::decode(bytes)?;
    Ok(AuditRecord {
        sequence: stored.sequence,
        time: Timestamp::from_millis(stored.time_millis),
        action: stored.action,
        outcome: match stored.outcome {
            1 => Outcome::Success,
            2 => Outcome::Failure,
            _ => return Err(CodecError::Field("outcome")),
        },
        severity: match stored.severity {
            1 => Severity::Normal,
            2 => Severity::Warning,
            3 => Severity::Critical,
            _ => return Err(CodecError::Field("severity")),
        },
        grpc_code: stored.grpc_code,
        reason: stored.reason,
        http_status: u16::try_from(stored.http_status)
            .map_err(|_| CodecError::Field("http_status"))?,
        initiator_id: stored
            .initiator_id
            .map(|bytes| uuid_bytes(bytes, "initiator_id").map(IdentityId::from_bytes))
            .transpose()?,
        initiator_kind: stored
            .initiator_kind
            .map(|kind| match kind {
                1 => Ok(IdentityKind::User),
                2 => Ok(IdentityKind::Service),
                _ => Err(CodecError::Field("initiator_kind")),
            })
            .transpose()?,
        target_crn: stored.target_crn,
        instance: stored
            .instance
            .map(|bytes| uuid_bytes(bytes, "instance").map(InstanceId::from_bytes))
            .transpose()?,
        method: stored.method,
        key_state: stored
            .key_state
            .map(|state| {
                KeyState::ALL
                    .into_iter()
                    .find(|s| *s as i32 == state)
                    .ok_or(CodecError::Field("key_state"))
            })
            .transpose()?,
        key_version_id: stored.key_version_id,
        rewrapped_key_version_id: stored.rewrapped_key_version_id,
        injected: stored.injected,
        injected_latency_ms: stored.injected_latency_ms,
        correlation_id: stored.correlation_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> AuditRecord {
        AuditRecord {
            sequence: 42,
            time: Timestamp::from_millis(1_700_000_000_123),
            action: "hs-crypto.secrets.unwrap".to_owned(),
            outcome: Outcome::Failure,
            severity: Severity::Critical,
            grpc_code: 14,
            reason: "INJECTED_UNAVAILABLE_ERR".to_owned(),
            http_status: 503,
            initiator_id: Some(IdentityId::from_bytes([7; 16])),
            initiator_kind: Some(IdentityKind::Service),
            target_crn: "crn:v1:bluemix:public:hs-crypto:us-south:a/1:x:key:y".to_owned(),
            instance: Some(InstanceId::from_bytes([9; 16])),
            method: "/kmsim.v1.KeyService/UnwrapKey".to_owned(),
            key_state: Some(KeyState::Destroyed),
            key_version_id: "v1".to_owned(),
            rewrapped_key_version_id: "v2".to_owned(),
            injected: true,
            injected_latency_ms: 250,
            correlation_id: "corr-1".to_owned(),
        }
    }

    #[test]
    fn every_field_round_trips() {
        let event = full();
        assert_eq!(decode(&encode(&event)).unwrap(), event);
        let bare = AuditRecord {
            outcome: Outcome::Success,
            severity: Severity::Warning,
            initiator_id: None,
            initiator_kind: Some(IdentityKind::User),
            instance: None,
            key_state: None,
            reason: String::new(),
            ..full()
        };
        assert_eq!(decode(&encode(&bare)).unwrap(), bare);
        for state in KeyState::ALL {
            let event = AuditRecord {
                key_state: Some(state),
                ..full()
            };
            assert_eq!(decode(&encode(&event)).unwrap().key_state, Some(state));
        }
    }

    #[test]
    fn is_far_smaller_than_json() {
        let event = full();
        let json = serde_json::to_vec(&event).unwrap();
        assert!(encode(&event).len() * 10 < json.len() * 7, "{}", json.len());
    }

    #[test]
    fn corrupt_bytes_are_errors_not_events() {
        assert!(matches!(decode(&[0xFF]), Err(CodecError::Protobuf(_))));
        let mut stored = StoredEvent::decode(encode(&full()).as_slice()).unwrap();
        stored.outcome = 9;
        assert!(matches!(
            decode(&stored.encode_to_vec()),
            Err(CodecError::Field("outcome"))
        ));
        let mut stored = StoredEvent::decode(encode(&full()).as_slice()).unwrap();
        stored.instance = Some(vec![1, 2, 3]);
        assert!(matches!(
            decode(&stored.encode_to_vec()),
            Err(CodecError::Field("instance"))
        ));
        let mut stored = StoredEvent::decode(encode(&full()).as_slice()).unwrap();
        stored.key_state = Some(4);
        assert!(matches!(
            decode(&stored.encode_to_vec()),
            Err(CodecError::Field("key_state"))
        ));
    }
}
