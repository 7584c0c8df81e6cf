//! `kmsim.v1.HsmService`: status, self-tests, tamper and zeroize of the simulated HSM.
//!
//! Administration RPCs: each calls exactly one domain method (`hsm_status`,
//! `run_self_tests`, `wipe_hsm`), where the admin permission check will go.

use std::sync::Arc;

use kmsim_proto::v1 as pb;
use pb::hsm_service_server::HsmService;
use sim_hsm::{MasterKeyRegister, ModuleState, RegisterState, SelfTestResult};
use tonic::{Request, Response, Status};

use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::grpc::blocking;
use crate::kms::{Kms, WipeKind};

/// The HsmService adapter.
#[derive(Debug, Clone)]
pub struct HsmAdmin {
    kms: Arc<Kms>,
}

impl HsmAdmin {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

fn state(state: ModuleState) -> pb::HsmState {
    match state {
        ModuleState::SelfTesting => pb::HsmState::SelfTesting,
        ModuleState::Operational => pb::HsmState::Operational,
        ModuleState::Error => pb::HsmState::Error,
    }
}

fn register(register: &MasterKeyRegister) -> pb::MasterKeyRegister {
    let state = match register.state {
        RegisterState::Empty => pb::MasterKeyRegisterState::Empty,
        RegisterState::PartiallyLoaded => pb::MasterKeyRegisterState::PartiallyLoaded,
        RegisterState::FullUncommitted => pb::MasterKeyRegisterState::FullUncommitted,
        RegisterState::FullCommitted => pb::MasterKeyRegisterState::FullCommitted,
        RegisterState::Valid => pb::MasterKeyRegisterState::Valid,
    };
    pb::MasterKeyRegister {
        state: state as i32,
        verification_pattern: register
            .verification_pattern
            .map(hex::encode)
            .unwrap_or_default(),
        parts_loaded: i32::from(register.parts_loaded),
    }
}

fn self_tests(results: &[SelfTestResult]) -> Vec<pb::SelfTestResult> {
    results
        .iter()
        .map(|r| pb::SelfTestResult {
            name: r.name.to_owned(),
            passed: r.passed,
        })
        .collect()
}

/// Parses `RunSelfTestsRequest.fail_test`: empty, or a known self-test name.
fn fail_test(name: &str) -> Result<Option<&'static str>, KmsError> {
    if name.is_empty() {
        return Ok(None);
    }
    sim_hsm::selftest::canonical_name(name)
        .map(Some)
        .ok_or(KmsError::field("fail_test", FieldProblem::UnknownSelfTest))
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl HsmService for HsmAdmin {
    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let report = self.kms.hsm_status();
        let status = report.status;
        Ok(Response::new(pb::GetStatusResponse {
            state: state(status.state) as i32,
            self_tests: self_tests(&status.self_tests),
            last_failure: status.last_failure.map(|failure| pb::HsmFailure {
                test: failure.test.to_owned(),
                time: Some(Timestamp::from_system_time(failure.time).to_proto()),
            }),
            current_master_key: Some(register(&status.current_master_key)),
            new_master_key: Some(register(&status.new_master_key)),
            rotation_in_progress: status.rotation_in_progress,
            slots: report
                .slots
                .into_iter()
                .map(|slot| pb::HsmSlot {
                    slot: slot.slot.0,
                    initialized: slot.initialized,
                    label: slot.label,
                    serial: slot.serial,
                })
                .collect(),
            initialized_tokens: count(status.initialized_tokens),
            imprint_mode: status.imprint_mode,
            signature_threshold: i32::from(status.signature_threshold),
            revocation_threshold: i32::from(status.revocation_threshold),
            administrators: status.administrators,
            tamper_events: status.tamper_events,
        }))
    }

    async fn run_self_tests(
        &self,
        request: Request<pb::RunSelfTestsRequest>,
    ) -> Result<Response<pb::RunSelfTestsResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let fail = fail_test(&request.get_ref().fail_test)?;
        let after = blocking(&self.kms, move |kms| kms.run_self_tests(fail)).await?;
        Ok(Response::new(pb::RunSelfTestsResponse {
            state: state(after.status.state) as i32,
            self_tests: self_tests(&after.status.self_tests),
        }))
    }

    async fn tamper(
        &self,
        request: Request<pb::TamperRequest>,
    ) -> Result<Response<pb::TamperResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let destroyed = blocking(&self.kms, |kms| kms.wipe_hsm(WipeKind::Tamper)).await?;
        Ok(Response::new(pb::TamperResponse {
            keystores_destroyed: count(destroyed),
        }))
    }

    async fn zeroize(
        &self,
        request: Request<pb::ZeroizeRequest>,
    ) -> Result<Response<pb::ZeroizeResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let destroyed = blocking(&self.kms, |kms| kms.wipe_hsm(WipeKind::Zeroize)).await?;
        Ok(Response::new(pb::ZeroizeResponse {
            keystores_destroyed: count(destroyed),
        }))
    }
}
