//! `kmsim.v1.HsmService`: status, self-tests, tamper and zeroize of the simulated HSM, and
//! the master-key ceremony (administrators' signed commands are passed to the HSM as they are).
//!
//! Administration RPCs: each calls exactly one domain method (`hsm_status`,
//! `run_self_tests`, `wipe_hsm`), where the admin permission check will go.

use std::sync::Arc;

use kmsim_proto::v1 as pb;
use pb::hsm_service_server::HsmService;
use sim_hsm::{AdminSignature, MasterKeyRegister, ModuleState, RegisterState, SelfTestResult};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::error::{FieldProblem, KmsError};
use crate::grpc::blocking;
use crate::kms::{Kms, WipeKind};

/// The HsmService adapter.
#[derive(Debug, Clone)]
pub struct HsmAdmin {
    kms: Arc<Kms>,
    health: Arc<crate::grpc::health::Health>,
}

impl HsmAdmin {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>, health: Arc<crate::grpc::health::Health>) -> Self {
        Self { kms, health }
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
        let after = blocking(&self.kms, move |kms| kms.run_self_tests(fail)).await;
        self.health.refresh().await;
        let after = after?;
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
        let destroyed = blocking(&self.kms, |kms| kms.wipe_hsm(WipeKind::Tamper)).await;
        self.health.refresh().await;
        let destroyed = destroyed?;
        Ok(Response::new(pb::TamperResponse {
            keystores_destroyed: count(destroyed),
        }))
    }

    async fn zeroize(
        &self,
        request: Request<pb::ZeroizeRequest>,
    ) -> Result<Response<pb::ZeroizeResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let destroyed = blocking(&self.kms, |kms| kms.wipe_hsm(WipeKind::Zeroize)).await;
        self.health.refresh().await;
        let destroyed = destroyed?;
        Ok(Response::new(pb::ZeroizeResponse {
            keystores_destroyed: count(destroyed),
        }))
    }

    async fn get_admin_command_context(
        &self,
        request: Request<pb::GetAdminCommandContextRequest>,
    ) -> Result<Response<pb::GetAdminCommandContextResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let context = self.kms.admin_command_context();
        Ok(Response::new(pb::GetAdminCommandContextResponse {
            instance: context.instance.to_vec(),
            counter: context.counter,
        }))
    }

    async fn add_administrator(
        &self,
        request: Request<pb::AddAdministratorRequest>,
    ) -> Result<Response<pb::AddAdministratorResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let request = request.into_inner();
        let name = administrator_name(&request.name)?;
        if sim_hsm::p256::ecdsa::VerifyingKey::from_sec1_bytes(&request.public_key).is_err() {
            return Err(KmsError::field("public_key", FieldProblem::NotAPoint).into());
        }
        let signatures = signatures(request.signatures)?;
        blocking(&self.kms, move |kms| {
            kms.add_administrator(&name, &request.public_key, &signatures)
        })
        .await?;
        Ok(Response::new(pb::AddAdministratorResponse {}))
    }

    async fn set_thresholds(
        &self,
        request: Request<pb::SetThresholdsRequest>,
    ) -> Result<Response<pb::SetThresholdsResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let request = request.into_inner();
        let signature = threshold("signature_threshold", request.signature_threshold)?;
        let revocation = threshold("revocation_threshold", request.revocation_threshold)?;
        let signatures = signatures(request.signatures)?;
        blocking(&self.kms, move |kms| {
            kms.set_thresholds(signature, revocation, &signatures)
        })
        .await?;
        Ok(Response::new(pb::SetThresholdsResponse {}))
    }

    async fn load_master_key_part(
        &self,
        request: Request<pb::LoadMasterKeyPartRequest>,
    ) -> Result<Response<pb::LoadMasterKeyPartResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let request = request.into_inner();
        let part = Zeroizing::new(request.part);
        let part: [u8; 32] = part
            .as_slice()
            .try_into()
            .map_err(|_| KmsError::field("part", FieldProblem::Length))?;
        let part = Zeroizing::new(part);
        let signatures = signatures(request.signatures)?;
        let register = blocking(&self.kms, move |kms| {
            kms.load_master_key_part(part, &signatures)
        })
        .await?;
        Ok(Response::new(pb::LoadMasterKeyPartResponse {
            new_master_key: Some(self::register(&register)),
        }))
    }

    async fn commit_master_key(
        &self,
        request: Request<pb::CommitMasterKeyRequest>,
    ) -> Result<Response<pb::CommitMasterKeyResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let signatures = signatures(request.into_inner().signatures)?;
        let register = blocking(&self.kms, move |kms| kms.commit_master_key(&signatures)).await?;
        Ok(Response::new(pb::CommitMasterKeyResponse {
            new_master_key: Some(self::register(&register)),
        }))
    }

    async fn activate_master_key(
        &self,
        request: Request<pb::ActivateMasterKeyRequest>,
    ) -> Result<Response<pb::ActivateMasterKeyResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let signatures = signatures(request.into_inner().signatures)?;
        let register = blocking(&self.kms, move |kms| kms.activate_master_key(&signatures)).await?;
        Ok(Response::new(pb::ActivateMasterKeyResponse {
            current_master_key: Some(self::register(&register)),
        }))
    }

    async fn rotate_master_key(
        &self,
        request: Request<pb::RotateMasterKeyRequest>,
    ) -> Result<Response<pb::RotateMasterKeyResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let request = request.into_inner();
        let pause = request.pause_before_finish;
        let signatures = signatures(request.signatures)?;
        let outcome = blocking(&self.kms, move |kms| {
            kms.rotate_master_key(&signatures, pause)
        })
        .await?;
        Ok(Response::new(pb::RotateMasterKeyResponse {
            current_master_key: Some(self::register(&outcome.current)),
            rotation_in_progress: outcome.in_progress,
        }))
    }

    async fn finish_master_key_rotation(
        &self,
        request: Request<pb::FinishMasterKeyRotationRequest>,
    ) -> Result<Response<pb::FinishMasterKeyRotationResponse>, Status> {
        crate::grpc::administrator(&self.kms, &request)?;
        let register = blocking(&self.kms, |kms| kms.finish_master_key_rotation()).await?;
        Ok(Response::new(pb::FinishMasterKeyRotationResponse {
            current_master_key: Some(self::register(&register)),
        }))
    }
}

/// The longest administrator name.
const MAX_ADMIN_NAME: usize = 64;

/// Parses an administrator name: 1..=64 characters.
fn administrator_name(name: &str) -> Result<String, KmsError> {
    const FIELD: &str = "name";
    if name.is_empty() {
        return Err(KmsError::field(FIELD, FieldProblem::Missing));
    }
    if name.chars().count() > MAX_ADMIN_NAME {
        return Err(KmsError::field(FIELD, FieldProblem::TooLong));
    }
    Ok(name.to_owned())
}

/// Parses a threshold: 1..=8.
fn threshold(field: &'static str, value: i32) -> Result<u8, KmsError> {
    u8::try_from(value)
        .ok()
        .filter(|v| (1..=8).contains(v))
        .ok_or(KmsError::field(field, FieldProblem::OutOfRange))
}

/// Parses the signatures of a command: at most 8, each naming an administrator.
fn signatures(signatures: Vec<pb::AdminSignature>) -> Result<Vec<AdminSignature>, KmsError> {
    const FIELD: &str = "signatures";
    if signatures.len() > sim_hsm::ceremony::MAX_ADMINISTRATORS {
        return Err(KmsError::field(FIELD, FieldProblem::TooMany));
    }
    signatures
        .into_iter()
        .map(|s| {
            if s.administrator.is_empty() {
                return Err(KmsError::field(
                    "signatures.administrator",
                    FieldProblem::Missing,
                ));
            }
            Ok(AdminSignature {
                admin: s.administrator,
                signature: s.signature,
            })
        })
        .collect()
}
