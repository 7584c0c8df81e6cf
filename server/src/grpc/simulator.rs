//! `kmsim.v1.SimulatorService`: the simulated clock and reset.
//!
//! Administration RPCs: each calls exactly one domain method (`advance_clock`, `set_time`,
//! `reset`), where the admin permission check will go.

use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1 as pb;
use pb::simulator_service_server::SimulatorService;
use tonic::{Request, Response, Status};

use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::grpc::blocking;
use crate::kms::{ClockMove, Kms};

/// The longest single clock move: 100 years.
const MAX_ADVANCE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The SimulatorService adapter.
#[derive(Debug, Clone)]
pub struct Simulator {
    kms: Arc<Kms>,
}

impl Simulator {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

/// Parses `AdvanceClockRequest.duration`: required, well-formed, > 0, at most 100 years.
fn advance_by(duration: Option<&prost_types::Duration>) -> Result<Duration, KmsError> {
    const FIELD: &str = "duration";
    let duration = duration.ok_or(KmsError::field(FIELD, FieldProblem::Missing))?;
    let (seconds, nanos) = (duration.seconds, duration.nanos);
    if !(-999_999_999..=999_999_999).contains(&nanos)
        || (seconds > 0 && nanos < 0)
        || (seconds < 0 && nanos > 0)
    {
        return Err(KmsError::field(FIELD, FieldProblem::OutOfRange));
    }
    if seconds < 0 || nanos < 0 || (seconds == 0 && nanos == 0) {
        return Err(KmsError::field(FIELD, FieldProblem::NotPositive));
    }
    // Both are non-negative here.
    let by = Duration::new(seconds.unsigned_abs(), nanos.unsigned_abs());
    if by > MAX_ADVANCE {
        return Err(KmsError::field(FIELD, FieldProblem::OutOfRange));
    }
    Ok(by)
}

/// Parses `SetTimeRequest.time`: required and representable.
fn set_to(time: Option<&prost_types::Timestamp>) -> Result<Timestamp, KmsError> {
    const FIELD: &str = "time";
    let time = time.ok_or(KmsError::field(FIELD, FieldProblem::Missing))?;
    Timestamp::from_proto(time).ok_or(KmsError::field(FIELD, FieldProblem::OutOfRange))
}

fn fired(moved: &ClockMove) -> i32 {
    i32::try_from(moved.timers_fired).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl SimulatorService for Simulator {
    async fn get_time(
        &self,
        _request: Request<pb::GetTimeRequest>,
    ) -> Result<Response<pb::GetTimeResponse>, Status> {
        let clock = if self.kms.clock_is_simulated() {
            pb::ClockKind::Simulated
        } else {
            pb::ClockKind::System
        };
        Ok(Response::new(pb::GetTimeResponse {
            time: Some(self.kms.now().to_proto()),
            clock: clock as i32,
        }))
    }

    async fn advance_clock(
        &self,
        request: Request<pb::AdvanceClockRequest>,
    ) -> Result<Response<pb::AdvanceClockResponse>, Status> {
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
        let to = set_to(request.get_ref().time.as_ref())?;
        let moved = blocking(&self.kms, move |kms| kms.set_time(to)).await?;
        Ok(Response::new(pb::SetTimeResponse {
            time: Some(moved.now.to_proto()),
            timers_fired: fired(&moved),
        }))
    }

    async fn reset(
        &self,
        _request: Request<pb::ResetRequest>,
    ) -> Result<Response<pb::ResetResponse>, Status> {
        let summary = blocking(&self.kms, Kms::reset).await?;
        Ok(Response::new(pb::ResetResponse {
            instances_removed: i32::try_from(summary.instances).unwrap_or(i32::MAX),
            keys_removed: i32::try_from(summary.keys).unwrap_or(i32::MAX),
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
