//! `kmsim.v1.SimulatorService`: the simulated clock, reset and fault injection.
//!
//! Administration RPCs: each calls exactly one domain method (`clock_reading`,
//! `advance_clock`, `set_time`, `reset`, `inject_fault`, `list_faults`, `clear_faults`),
//! where the admin permission check will go.

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use pb::simulator_service_server::SimulatorService;
use tonic::{Request, Response, Status};

use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::faults::{ActiveRule, FaultKind, FaultRule, MethodPattern, Trigger};
use crate::grpc::{blocking, parse};
use crate::kms::ids::{InstanceId, KeyId};
use crate::kms::{ClockMove, Kms};

/// The longest single clock move: 100 years.
const MAX_ADVANCE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The SimulatorService adapter.
#[derive(Debug, Clone)]
pub struct Simulator {
    kms: Arc<Kms>,
    health: Arc<crate::grpc::health::Health>,
}

impl Simulator {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>, health: Arc<crate::grpc::health::Health>) -> Self {
        Self { kms, health }
    }
}

/// Parses `AdvanceClockRequest.duration`: required, well-formed, > 0, at most 100 years.
fn advance_by(duration: Option<&prost_types::Duration>) -> Result<Duration, KmsError> {
    positive_duration("duration", duration, MAX_ADVANCE)
}

/// Parses a required duration field: well-formed, > 0, at most `max`.
fn positive_duration(
    field: &'static str,
    duration: Option<&prost_types::Duration>,
    max: Duration,
) -> Result<Duration, KmsError> {
    let duration = duration.ok_or(KmsError::field(field, FieldProblem::Missing))?;
    let (seconds, nanos) = (duration.seconds, duration.nanos);
    if !(-999_999_999..=999_999_999).contains(&nanos)
        || (seconds > 0 && nanos < 0)
        || (seconds < 0 && nanos > 0)
    {
        return Err(KmsError::field(field, FieldProblem::OutOfRange));
    }
    if seconds < 0 || nanos < 0 || (seconds == 0 && nanos == 0) {
        return Err(KmsError::field(field, FieldProblem::NotPositive));
    }
    // Both are non-negative here.
    let by = Duration::new(seconds.unsigned_abs(), nanos.unsigned_abs());
    if by > max {
        return Err(KmsError::field(field, FieldProblem::OutOfRange));
    }
    Ok(by)
}

/// Parses `SetTimeRequest.time`: required and representable.
fn set_to(time: Option<&prost_types::Timestamp>) -> Result<Timestamp, KmsError> {
    const FIELD: &str = "time";
    let time = time.ok_or(KmsError::field(FIELD, FieldProblem::Missing))?;
    Timestamp::from_proto(time).ok_or(KmsError::field(FIELD, FieldProblem::OutOfRange))
}

/// The longest injected latency: 60 s.
const MAX_LATENCY: Duration = Duration::from_secs(60);

/// Parses an `InjectFaultRequest` into a rule.
fn fault_rule(rule: Option<&pb::FaultRule>) -> Result<FaultRule, KmsError> {
    let rule = rule.ok_or(KmsError::field("rule", FieldProblem::Missing))?;
    let method = if rule.method.is_empty() {
        return Err(KmsError::field("rule.method", FieldProblem::Missing));
    } else {
        MethodPattern::parse(&rule.method)
            .ok_or(KmsError::field("rule.method", FieldProblem::MethodPattern))?
    };
    let instance = if rule.instance.is_empty() {
        None
    } else {
        Some(parse::<InstanceId>("rule.instance", &rule.instance)?)
    };
    let key = if rule.key.is_empty() {
        None
    } else {
        Some(parse::<KeyId>("rule.key", &rule.key)?)
    };
    let kind = match pb::FaultKind::try_from(rule.kind) {
        Ok(pb::FaultKind::Unspecified) => {
            return Err(KmsError::field("rule.kind", FieldProblem::Missing));
        }
        Ok(pb::FaultKind::Unavailable) => FaultKind::Unavailable,
        Ok(pb::FaultKind::ResourceExhausted) => {
            FaultKind::ResourceExhausted(match &rule.retry_delay {
                None => Duration::from_secs(1),
                Some(delay) => positive_duration("rule.retry_delay", Some(delay), MAX_ADVANCE)?,
            })
        }
        Ok(pb::FaultKind::Internal) => FaultKind::Internal,
        Ok(pb::FaultKind::DeadlineExceeded) => FaultKind::DeadlineExceeded,
        Ok(pb::FaultKind::Latency) => FaultKind::Latency(positive_duration(
            "rule.latency",
            rule.latency.as_ref(),
            MAX_LATENCY,
        )?),
        Ok(pb::FaultKind::HsmDeviceError) => FaultKind::HsmDeviceError,
        Err(_) => return Err(KmsError::field("rule.kind", FieldProblem::UnknownEnumValue)),
    };
    let trigger = match rule.trigger {
        None => Trigger::EveryNth(1),
        Some(pb::fault_rule::Trigger::EveryNth(0)) => {
            return Err(KmsError::field("rule.every_nth", FieldProblem::OutOfRange));
        }
        Some(pb::fault_rule::Trigger::EveryNth(n)) => Trigger::EveryNth(n),
        Some(pb::fault_rule::Trigger::Probability(p)) if p > 0.0 && p <= 1.0 => {
            Trigger::Probability {
                probability: p,
                seed: rule.seed,
            }
        }
        Some(pb::fault_rule::Trigger::Probability(_)) => {
            return Err(KmsError::field(
                "rule.probability",
                FieldProblem::OutOfRange,
            ));
        }
    };
    Ok(FaultRule {
        method,
        instance,
        key,
        kind,
        trigger,
        count: (rule.count > 0).then_some(rule.count),
    })
}

fn proto_duration(duration: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(duration).ok()
}

/// A rule in force as protobuf.
fn fault_to_proto(active: &ActiveRule) -> pb::FaultRule {
    let rule = &active.rule;
    let (kind, retry_delay, latency) = match rule.kind {
        FaultKind::Unavailable => (pb::FaultKind::Unavailable, None, None),
        FaultKind::ResourceExhausted(delay) => (
            pb::FaultKind::ResourceExhausted,
            proto_duration(delay),
            None,
        ),
        FaultKind::Internal => (pb::FaultKind::Internal, None, None),
        FaultKind::DeadlineExceeded => (pb::FaultKind::DeadlineExceeded, None, None),
        FaultKind::Latency(delay) => (pb::FaultKind::Latency, None, proto_duration(delay)),
        FaultKind::HsmDeviceError => (pb::FaultKind::HsmDeviceError, None, None),
    };
    let (trigger, seed) = match rule.trigger {
        Trigger::EveryNth(n) => (pb::fault_rule::Trigger::EveryNth(n), 0),
        Trigger::Probability { probability, seed } => {
            (pb::fault_rule::Trigger::Probability(probability), seed)
        }
    };
    pb::FaultRule {
        id: active.id.clone(),
        method: rule.method.to_string(),
        instance: rule.instance.map(|i| i.to_string()).unwrap_or_default(),
        key: rule.key.map(|k| k.to_string()).unwrap_or_default(),
        kind: kind as i32,
        retry_delay,
        latency,
        trigger: Some(trigger),
        seed,
        count: rule.count.unwrap_or(0),
        matched: active.matched,
        fired: active.fired,
    }
}

fn fired(moved: &ClockMove) -> i32 {
    i32::try_from(moved.timers_fired).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl SimulatorService for Simulator {
    async fn get_time(
        &self,
        request: Request<pb::GetTimeRequest>,
    ) -> Result<Response<pb::GetTimeResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let reading = self.kms.clock_reading();
        let clock = if reading.simulated {
            pb::ClockKind::Simulated
        } else {
            pb::ClockKind::System
        };
        Ok(Response::new(pb::GetTimeResponse {
            time: Some(reading.now.to_proto()),
            clock: clock as i32,
        }))
    }

    async fn advance_clock(
        &self,
        request: Request<pb::AdvanceClockRequest>,
    ) -> Result<Response<pb::AdvanceClockResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let by = advance_by(request.get_ref().duration.as_ref())?;
        let moved = blocking(&self.kms, move |kms| kms.advance_clock(by)).await?;
        Ok(Response::new(pb::AdvanceClockResponse {
            time: Some(moved.now.to_proto()),
            timers_fired: fired(&moved),
        }))
    }

    async fn set_time(
        &self,
        request: Request<pb::SetTimeRequest>,
    ) -> Result<Response<pb::SetTimeResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let to = set_to(request.get_ref().time.as_ref())?;
        let moved = blocking(&self.kms, move |kms| kms.set_time(to)).await?;
        Ok(Response::new(pb::SetTimeResponse {
            time: Some(moved.now.to_proto()),
            timers_fired: fired(&moved),
        }))
    }

    async fn reset(
        &self,
        request: Request<pb::ResetRequest>,
    ) -> Result<Response<pb::ResetResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let summary = blocking(&self.kms, Kms::reset).await;
        self.health.refresh().await;
        let summary = summary?;
        Ok(Response::new(pb::ResetResponse {
            instances_removed: i32::try_from(summary.instances).unwrap_or(i32::MAX),
            keys_removed: i32::try_from(summary.keys).unwrap_or(i32::MAX),
        }))
    }

    async fn inject_fault(
        &self,
        request: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let rule = fault_rule(request.get_ref().rule.as_ref())?;
        let active = self.kms.inject_fault(rule);
        Ok(Response::new(pb::InjectFaultResponse {
            rule: Some(fault_to_proto(&active)),
        }))
    }

    async fn list_faults(
        &self,
        request: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let rules = self.kms.list_faults();
        Ok(Response::new(pb::ListFaultsResponse {
            rules: rules.iter().map(fault_to_proto).collect(),
        }))
    }

    async fn clear_faults(
        &self,
        request: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let id = request.get_ref().id.trim();
        let cleared = self.kms.clear_faults((!id.is_empty()).then_some(id));
        Ok(Response::new(pb::ClearFaultsResponse {
            cleared: i32::try_from(cleared).unwrap_or(i32::MAX),
        }))
    }

    async fn export_snapshot(
        &self,
        request: Request<pb::ExportSnapshotRequest>,
    ) -> Result<Response<pb::ExportSnapshotResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let export = blocking(&self.kms, |kms| kms.export_snapshot()).await?;
        Ok(Response::new(pb::ExportSnapshotResponse {
            snapshot: export.blob,
            master_key_verification_pattern: hex::encode(export.verification_pattern),
            instances: i32::try_from(export.instances).unwrap_or(i32::MAX),
            keys: i32::try_from(export.keys).unwrap_or(i32::MAX),
            time: Some(export.time.to_proto()),
        }))
    }

    async fn import_snapshot(
        &self,
        request: Request<pb::ImportSnapshotRequest>,
    ) -> Result<Response<pb::ImportSnapshotResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let blob = request.into_inner().snapshot;
        if blob.is_empty() {
            return Err(KmsError::field("snapshot", FieldProblem::Missing).into());
        }
        let import = blocking(&self.kms, move |kms| kms.import_snapshot(&blob)).await;
        self.health.refresh().await;
        let import = import?;
        Ok(Response::new(pb::ImportSnapshotResponse {
            instances: i32::try_from(import.instances).unwrap_or(i32::MAX),
            keys: i32::try_from(import.keys).unwrap_or(i32::MAX),
            time: Some(import.time.to_proto()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds, nanos })
    }

    #[test]
    fn advance_duration_must_be_positive_and_well_formed() {
        assert_eq!(
            advance_by(d(3600, 5).as_ref()).ok(),
            Some(Duration::new(3600, 5))
        );
        assert_eq!(advance_by(d(0, 1).as_ref()).ok(), Some(Duration::new(0, 1)));
        for (duration, problem) in [
            (None, FieldProblem::Missing),
            (d(0, 0), FieldProblem::NotPositive),
            (d(-5, 0), FieldProblem::NotPositive),
            (d(0, -1), FieldProblem::NotPositive),
            (d(1, -1), FieldProblem::OutOfRange),
            (d(1, 1_000_000_000), FieldProblem::OutOfRange),
            (d(i64::MAX, 0), FieldProblem::OutOfRange),
        ] {
            match advance_by(duration.as_ref()) {
                Err(KmsError::InvalidField { field, problem: p }) => {
                    assert_eq!((field, p), ("duration", problem), "{duration:?}");
                }
                other => panic!("{duration:?}: {other:?}"),
            }
        }
    }
}
