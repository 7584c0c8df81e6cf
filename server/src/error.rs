//! Every way a kmsim call can fail ([`KmsError`]), the Key Protect reason code of each, and
//! the one exhaustive mapping to a `tonic::Status` with `google.rpc` error details
//! (`ErrorInfo` with domain `kmsim`, `BadRequest` field violations, `RetryInfo`).

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthFailure;
use crate::kms::iam::Role;
use crate::kms::ids::{InstanceId, KeyId, ParseError};
use crate::kms::state::KeyState;
use crate::store::{StoreError, StoreErrorKind};

/// The `ErrorInfo.domain` of every kmsim error.
pub const ERROR_DOMAIN: &str = "kmsim";

/// A rule a request field broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldProblem {
    /// The field is required.
    #[error("is required")]
    Missing,
    /// The field failed to parse.
    #[error("{0}")]
    Malformed(ParseError),
    /// Text longer than allowed.
    #[error("is too long")]
    TooLong,
    /// Text shorter than allowed.
    #[error("is too short")]
    TooShort,
    /// A number outside its range.
    #[error("is out of range")]
    OutOfRange,
    /// Key material of a length other than 16, 24 or 32 bytes.
    #[error("must be 16, 24 or 32 bytes")]
    MaterialLength,
    /// Key size other than 128, 192 or 256 bits.
    #[error("must be 128, 192 or 256")]
    KeySize,
    /// A time that must be in the future is not.
    #[error("must be in the future")]
    NotInFuture,
    /// A value the enum does not define.
    #[error("is not a known value")]
    UnknownEnumValue,
    /// A field that this request must not carry.
    #[error("is not allowed here")]
    NotAllowed,
    /// A page token that this server did not issue for this query.
    #[error("is not a page token from this query")]
    BadPageToken,
    /// Too many items.
    #[error("has too many items")]
    TooMany,
    /// Not a P-256 point in SEC1 encoding.
    #[error("must be a P-256 public key in SEC1 encoding")]
    NotAPoint,
    /// Bytes of the wrong length.
    #[error("has the wrong length")]
    Length,
    /// Text with a control character (NUL included), a bidirectional-text control (such as
    /// U+202E) or a Unicode non-character (such as U+FFFF).
    #[error("must not contain control characters, bidirectional controls or non-characters")]
    ForbiddenCharacter,
    /// Material that does not match the length of the key's current version.
    #[error("must be as long as the key's current material")]
    MaterialLengthMismatch,
    /// A duration that must be greater than zero is not.
    #[error("must be greater than zero")]
    NotPositive,
    /// Not a method pattern (`*`, `Service/*`, `Service/Method` or `Method`).
    #[error("is not a method pattern: use *, package.Service/*, package.Service/Method or Method")]
    MethodPattern,
    /// A name that is not one of the HSM's self-tests.
    #[error("is not the name of an HSM self-test")]
    UnknownSelfTest,
    /// An identity that must be a user is a service identity.
    #[error("must name a user identity (service identities act through authorizations)")]
    NotAUser,
    /// A role that does not fit the scope: `ROLE_ADMINISTRATOR` alone and without an
    /// instance, every other role with one.
    #[error(
        "ROLE_ADMINISTRATOR must be the only role and have no instance; other roles need an instance"
    )]
    RoleScope,
    /// A role other than the one allowed.
    #[error("only ROLE_READER is allowed")]
    RoleNotAllowed,
}

/// Why a kmsim operation failed. Each variant maps to exactly one gRPC code and reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// A request field is malformed: `INVALID_ARGUMENT`, with a field violation.
    #[error("invalid field {field}: {problem}")]
    InvalidField {
        /// The field's name in the request, e.g. `key` or `secure_import.iv`.
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// No such instance.
    #[error("instance {0} not found")]
    InstanceNotFound(InstanceId),
    /// The instance still holds keys.
    #[error("instance {0} still holds keys; delete them or use force")]
    InstanceNotEmpty(InstanceId),
    /// No such key (never existed, purged, or named by a CRN that does not match its instance).
    #[error("key not found")]
    KeyNotFound,
    /// The key is Destroyed and the action needs a live key.
    #[error("key {0} has been deleted")]
    KeyDeleted(KeyId),
    /// The action is not allowed in the key's state.
    #[error("the action is not allowed while the key is {state:?}")]
    ActionInvalidState {
        /// The key's state.
        state: KeyState,
    },
    /// The key has expired (e.g. enabling an expired suspended key).
    #[error("the key has expired")]
    KeyExpired,
    /// The ciphertext is corrupt, was made with another key, or the AAD differs.
    #[error("the ciphertext cannot be processed with this key and AAD")]
    UnprocessableCiphertext,
    /// A root key is required (wrap/unwrap/rotate/secure import of a standard key).
    #[error("this action requires a root key")]
    RootKeyRequired,
    /// An imported root key must be rotated with new material.
    #[error("an imported key must be rotated with new material")]
    PayloadRequired,
    /// At most one rotation per hour.
    #[error("the key was rotated less than an hour ago")]
    RotationTooSoon {
        /// When the next rotation is allowed.
        retry_after: Duration,
    },
    /// Purge before 4 h, enable within 30 s of disable, restore within 30 s of delete.
    #[error("the request is too early")]
    TooEarly {
        /// How long until the request can succeed.
        retry_after: Duration,
    },
    /// More than 30 days since deletion.
    #[error("the key can no longer be restored: 30 days have passed since it was deleted")]
    RestoreExpired,
    /// The alias is already used in this instance.
    #[error("the alias is already in use in this instance")]
    AliasNotUnique,
    /// A key may have at most 5 aliases.
    #[error("a key may have at most 5 aliases")]
    AliasQuotaExceeded,
    /// The key has no such alias.
    #[error("the key has no such alias")]
    AliasNotFound,
    /// The instance has no import token (or not the one named).
    #[error("the instance has no such import token")]
    ImportTokenNotFound,
    /// The import token has expired.
    #[error("the import token has expired")]
    ImportTokenExpired,
    /// The import token has no retrievals left.
    #[error("the import token has no retrievals left")]
    ImportTokenRetrievalsExhausted,
    /// The encrypted material could not be unwrapped with the import token's key.
    #[error("the encrypted material was not encrypted for this import token")]
    ImportMaterialInvalid,
    /// The decrypted nonce differs from the token's nonce.
    #[error("the nonce does not match the import token's nonce")]
    IncorrectNonce,
    /// The nonce was not encrypted with this material and IV.
    #[error("the nonce was not encrypted with this material and IV")]
    IncorrectNonceIv,
    /// The server runs the system clock: it cannot be advanced or set.
    #[error("the server runs the system clock; start it with --clock simulated to control time")]
    ClockNotSimulated,
    /// A simulated clock only moves forward.
    #[error("the simulated clock cannot move backwards")]
    ClockBackwards,
    /// The instance's keystore was wiped by an HSM tamper response or zeroization: its keys'
    /// material no longer exists (their metadata does).
    #[error(
        "the key material of instance {0} was destroyed by an HSM zeroization or tamper response"
    )]
    KeyMaterialDestroyed(InstanceId),
    /// A fault injected through `SimulatorService.InjectFault`.
    #[error("injected fault: {0:?}")]
    Injected(crate::faults::InjectedFailure),
    /// The caller could not be authenticated: `UNAUTHENTICATED`.
    #[error("{0}")]
    Unauthenticated(AuthFailure),
    /// The caller lacks the role the action needs: `PERMISSION_DENIED`.
    #[error("the caller lacks the {} role this action needs on this resource", required.as_str())]
    PermissionDenied {
        /// The role the action needs.
        required: Role,
    },
    /// No such IAM identity.
    #[error("identity not found")]
    IdentityNotFound,
    /// No such API key.
    #[error("API key not found")]
    ApiKeyNotFound,
    /// No such access policy.
    #[error("access policy not found")]
    PolicyNotFound,
    /// No such service-to-service authorization.
    #[error("authorization not found")]
    AuthorizationNotFound,
    /// Registrations apply to root keys only.
    #[error("registrations apply to root keys only")]
    RegistrationRootKeyRequired,
    /// Only service identities may do this (users, admins included, may not).
    #[error("only service identities (through a service-to-service authorization) may do this")]
    ServiceOnly,
    /// A key version that is not one of the key's, or older than the registration's.
    #[error("the key version is not a version of the key or is older than the registration's")]
    KeyVersionInvalid,
    /// The resource is already registered with the key.
    #[error("the resource is already registered with this key")]
    RegistrationExists,
    /// No such registration (or it is soft-deleted, for an update).
    #[error("registration not found")]
    RegistrationNotFound,
    /// The key protects registered resources: delete it with `force`.
    #[error("the key protects registered resources; use force to delete it anyway")]
    ProtectedResource,
    /// A registration prevents deleting the key, even with `force`.
    #[error("a registration prevents deleting this key, even with force")]
    PreventKeyDeletion,
    /// No such lifecycle event.
    #[error("lifecycle event not found")]
    LifecycleEventNotFound,
    /// The lifecycle event was already acknowledged or has failed.
    #[error("the lifecycle event was already acknowledged or has failed")]
    LifecycleEventSettled,
    /// `SetKeyForDeletion` or `UnsetKeyForDeletion` on a key without a dual-authorization
    /// delete policy.
    #[error("the key has no dual-authorization delete policy")]
    NotDualAuth,
    /// Deleting a key with a dual-authorization delete policy that no other identity set for
    /// deletion within the last 7 days.
    #[error(
        "deleting this key needs a second authorization: another Manager must set it for deletion first, within 7 days"
    )]
    AuthorizationsNotMet,
    /// Disabling the dual-authorization delete policy of a key that has it.
    #[error("a key's dual-authorization delete policy cannot be disabled once enabled")]
    DualAuthPolicyPermanent,
    /// A rotation policy on an imported key.
    #[error("rotation policies apply only to root keys whose material the service generated")]
    ImportedKeyRotationPolicy,
    /// The instance's key create/import access policy forbids this key.
    #[error("the instance's key create/import access policy forbids this ({})", denied.as_str())]
    KeyCreateImportAccess {
        /// The rule that forbids it.
        denied: crate::kms::policies::CreateImportRule,
    },
    /// A snapshot that is not a kmsim snapshot (bad header, truncated, undecodable contents).
    #[error("the snapshot is malformed")]
    SnapshotMalformed,
    /// A snapshot whose seal does not verify (tampered with, or damaged).
    #[error("the snapshot failed authentication: it was altered or damaged")]
    SnapshotAuthentication,
    /// A snapshot sealed under a master key other than the HSM's current one.
    #[error("the snapshot was sealed under another HSM master key")]
    SnapshotMasterKeyMismatch,
    /// A ceremony command the HSM refused for its arguments: a duplicate administrator name,
    /// a ninth administrator, a threshold outside 1..=administrators, a fourth key part, or
    /// removing an administrator a threshold needs.
    #[error("the HSM refused the ceremony command's arguments")]
    CeremonyArguments,
    /// The HSM refused or failed the operation.
    #[error("HSM failure: {0}")]
    Hsm(#[from] sim_hsm::HsmError),
    /// The durable store failed. Clients see only its kind; the detail goes to the log.
    #[error("{}", storage_message(.0))]
    Store(#[from] StoreError),
}

impl KmsError {
    /// Shorthand for a field violation.
    pub fn field(field: &'static str, problem: FieldProblem) -> Self {
        Self::InvalidField { field, problem }
    }

    /// Shorthand for a field that failed to parse.
    pub fn malformed(field: &'static str, error: ParseError) -> Self {
        Self::field(field, FieldProblem::Malformed(error))
    }

    /// The gRPC code, Key Protect reason code and HTTP status Key Protect answers with.
    pub fn classify(&self) -> (Code, &'static str, u16) {
        match self {
            Self::InvalidField { .. } => (Code::InvalidArgument, "BAD_BODY_ERR", 400),
            Self::InstanceNotFound(_) => (Code::NotFound, "INSTANCE_NOT_FOUND_ERR", 404),
            Self::InstanceNotEmpty(_) => (Code::FailedPrecondition, "INSTANCE_NOT_EMPTY_ERR", 409),
            Self::KeyNotFound => (Code::NotFound, "KEY_NOT_FOUND_ERR", 404),
            Self::KeyDeleted(_) => (Code::FailedPrecondition, "KEY_DELETED_ERR", 410),
            Self::ActionInvalidState { .. } => (
                Code::FailedPrecondition,
                "KEY_ACTION_INVALID_STATE_ERR",
                409,
            ),
            Self::KeyExpired => (Code::FailedPrecondition, "KEY_EXPIRED_ERR", 400),
            Self::UnprocessableCiphertext => {
                (Code::InvalidArgument, "UNPROCESSABLE_CIPHERTEXT_ERR", 422)
            }
            Self::RootKeyRequired => (Code::FailedPrecondition, "KEY_ROOT_REQ_ERR", 400),
            Self::PayloadRequired => (Code::InvalidArgument, "KEY_PAYLOAD_REQ_ERR", 400),
            Self::RotationTooSoon { .. } => {
                (Code::FailedPrecondition, "KEY_ROTATION_NOT_PERMITTED", 409)
            }
            Self::TooEarly { .. } => (Code::FailedPrecondition, "REQ_TOO_EARLY_ERR", 409),
            Self::RestoreExpired => (Code::FailedPrecondition, "KEY_RESTORE_EXPIRED", 400),
            Self::AliasNotUnique => (Code::AlreadyExists, "KEY_ALIAS_NOT_UNIQUE_ERR", 409),
            Self::AliasQuotaExceeded => (Code::ResourceExhausted, "KEY_ALIAS_QUOTA_ERR", 400),
            Self::AliasNotFound => (Code::NotFound, "KEY_ALIAS_NOT_FOUND_ERR", 404),
            Self::ImportTokenNotFound => (Code::NotFound, "IMPORT_TOKEN_NOT_FOUND_ERR", 404),
            Self::ImportTokenExpired => (Code::FailedPrecondition, "IMPORT_TOKEN_EXPIRED_ERR", 409),
            Self::ImportTokenRetrievalsExhausted => (
                Code::FailedPrecondition,
                "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR",
                409,
            ),
            Self::ImportMaterialInvalid => (Code::InvalidArgument, "BAD_BODY_ERR", 400),
            Self::IncorrectNonce => (Code::InvalidArgument, "INCORRECT_NONCE_ERR", 400),
            Self::IncorrectNonceIv => (Code::InvalidArgument, "INCORRECT_NONCE_IV_ERR", 400),
            Self::ClockNotSimulated => (Code::FailedPrecondition, "CLOCK_NOT_SIMULATED_ERR", 409),
            Self::ClockBackwards => (Code::FailedPrecondition, "CLOCK_BACKWARDS_ERR", 409),
            Self::KeyMaterialDestroyed(_) => {
                (Code::FailedPrecondition, "KEY_MATERIAL_DESTROYED_ERR", 410)
            }
            Self::Injected(failure) => classify_injected(*failure),
            Self::Unauthenticated(AuthFailure::Malformed) => {
                (Code::Unauthenticated, "BEARER_SUB_EXTRACTION_ERR", 400)
            }
            Self::Unauthenticated(_) => (Code::Unauthenticated, "UNAUTHORIZED_ERR", 401),
            Self::PermissionDenied { .. } => (Code::PermissionDenied, "UNAUTHORIZED_ERR", 403),
            Self::IdentityNotFound => (Code::NotFound, "IDENTITY_NOT_FOUND_ERR", 404),
            Self::ApiKeyNotFound => (Code::NotFound, "API_KEY_NOT_FOUND_ERR", 404),
            Self::PolicyNotFound => (Code::NotFound, "POLICY_NOT_FOUND_ERR", 404),
            Self::AuthorizationNotFound => (Code::NotFound, "AUTHORIZATION_NOT_FOUND_ERR", 404),
            Self::RegistrationRootKeyRequired => {
                (Code::FailedPrecondition, "KEY_ROOT_REQ_REG_ERR", 422)
            }
            Self::ServiceOnly => (Code::PermissionDenied, "SERVICE_ONLY_ERR", 403),
            Self::KeyVersionInvalid => (Code::FailedPrecondition, "KEY_VERSION_INVALID", 422),
            Self::RegistrationExists => (Code::AlreadyExists, "REGISTRATION_EXISTS_ERR", 409),
            Self::RegistrationNotFound => (Code::NotFound, "REGISTRATION_NOT_FOUND_ERR", 404),
            Self::ProtectedResource => (Code::FailedPrecondition, "PROTECTED_RESOURCE_ERR", 409),
            Self::PreventKeyDeletion => (Code::FailedPrecondition, "PREV_KEY_DEL_ERR", 409),
            Self::LifecycleEventNotFound => (Code::NotFound, "LIFECYCLE_EVENT_NOT_FOUND_ERR", 404),
            Self::LifecycleEventSettled => {
                (Code::FailedPrecondition, "LIFECYCLE_EVENT_SETTLED_ERR", 409)
            }
            Self::NotDualAuth => (Code::FailedPrecondition, "NOT_DUAL_AUTH_ERR", 409),
            Self::AuthorizationsNotMet => (Code::FailedPrecondition, "AUTHORIZATIONS_NOT_MET", 409),
            Self::DualAuthPolicyPermanent => (
                Code::FailedPrecondition,
                "DUAL_AUTH_POLICY_PERMANENT_ERR",
                409,
            ),
            Self::ImportedKeyRotationPolicy => (
                Code::FailedPrecondition,
                "KEY_IMPORTED_ROTATION_POLICY_ERR",
                400,
            ),
            Self::KeyCreateImportAccess { .. } => (
                Code::FailedPrecondition,
                "KEY_CREATE_IMPORT_ACCESS_ERR",
                409,
            ),
            Self::SnapshotMalformed => (Code::InvalidArgument, "SNAPSHOT_MALFORMED_ERR", 400),
            Self::SnapshotAuthentication => {
                (Code::InvalidArgument, "SNAPSHOT_AUTHENTICATION_ERR", 400)
            }
            Self::SnapshotMasterKeyMismatch => (
                Code::FailedPrecondition,
                "SNAPSHOT_MASTER_KEY_MISMATCH_ERR",
                409,
            ),
            Self::CeremonyArguments => (Code::InvalidArgument, "HSM_CEREMONY_ARGUMENT_ERR", 400),
            Self::Hsm(error) => match hsm_storage_cause(error) {
                Some(store) => classify_store(store),
                None => classify_hsm(error),
            },
            Self::Store(store) => classify_store(store),
        }
    }
}

fn classify_injected(failure: crate::faults::InjectedFailure) -> (Code, &'static str, u16) {
    use crate::faults::InjectedFailure;
    match failure {
        InjectedFailure::Unavailable => (Code::Unavailable, "INJECTED_UNAVAILABLE_ERR", 503),
        InjectedFailure::ResourceExhausted(_) => {
            (Code::ResourceExhausted, "INJECTED_RATE_LIMIT_ERR", 429)
        }
        InjectedFailure::Internal => (Code::Internal, "INJECTED_INTERNAL_ERR", 500),
        InjectedFailure::DeadlineExceeded => (
            Code::DeadlineExceeded,
            "INJECTED_DEADLINE_EXCEEDED_ERR",
            504,
        ),
        InjectedFailure::HsmDeviceError => (Code::Unavailable, "HSM_DEVICE_ERR", 503),
    }
}

/// The short message a client gets for a storage failure (the detail is logged).
fn storage_message(error: &StoreError) -> &'static str {
    match error.kind() {
        StoreErrorKind::Full => "the KMS storage is full",
        _ => "the KMS storage failed",
    }
}

fn classify_store(error: &StoreError) -> (Code, &'static str, u16) {
    match error.kind() {
        StoreErrorKind::Full => (Code::ResourceExhausted, "STORAGE_FULL_ERR", 507),
        _ => (Code::Unavailable, "STORAGE_ERR", 503),
    }
}

/// The store failure behind an HSM error, when the HSM failed because its object store did
/// (a full disk under the HSM's sealed objects is a storage failure, not a device error).
fn hsm_storage_cause(error: &sim_hsm::HsmError) -> Option<&StoreError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(store) = current.downcast_ref::<StoreError>() {
            return Some(store);
        }
        cause = current.source();
    }
    None
}

fn classify_hsm(error: &sim_hsm::HsmError) -> (Code, &'static str, u16) {
    use sim_hsm::HsmError;
    match error {
        HsmError::MasterKeyRotationInProgress => {
            return (
                Code::FailedPrecondition,
                "MASTER_KEY_ROTATION_IN_PROGRESS_ERR",
                409,
            );
        }
        HsmError::InsufficientSignatures => {
            return (
                Code::PermissionDenied,
                "HSM_ADMIN_SIGNATURES_INSUFFICIENT_ERR",
                403,
            );
        }
        HsmError::MasterKeyRegisterState => {
            return (
                Code::FailedPrecondition,
                "MASTER_KEY_REGISTER_STATE_ERR",
                409,
            );
        }
        HsmError::ImprintMode => return (Code::FailedPrecondition, "HSM_IMPRINT_MODE_ERR", 409),
        _ => {}
    }
    match error.ckr() {
        0x1B6 => (Code::Unavailable, "HSM_SELF_TEST_FAILED_ERR", 503),
        0x30 | 0x32 | 0xE0 | 0xE1 => (Code::Unavailable, "HSM_DEVICE_ERR", 503),
        0x8001_0001 | 0x8001_0009 => (Code::Unavailable, "HSM_MASTER_KEY_ERR", 503),
        _ => (Code::Internal, "HSM_ERR", 500),
    }
}

impl From<KmsError> for Status {
    fn from(error: KmsError) -> Self {
        let (code, reason, http_status) = error.classify();
        let storage = match &error {
            KmsError::Store(store) => Some(store),
            KmsError::Hsm(hsm) => hsm_storage_cause(hsm),
            _ => None,
        };
        if let Some(store) = storage {
            tracing::error!(detail = %store, reason, "a call failed on storage");
        }
        let message = match storage {
            Some(store) => storage_message(store).to_owned(),
            None => error.to_string(),
        };
        // The audit trail takes the outcome from the call's context, not from the encoded
        // status.
        crate::audit::context::note_failure(crate::audit::context::Failure {
            code,
            reason,
            http_status,
        });
        let mut metadata = HashMap::from([("http_status".to_owned(), http_status.to_string())]);
        let mut details = ErrorDetails::new();
        match &error {
            KmsError::InvalidField { field, problem } => {
                details.add_bad_request_violation(*field, problem.to_string());
            }
            KmsError::ImportMaterialInvalid => {
                details.add_bad_request_violation(
                    "secure_import.encrypted_material",
                    "was not encrypted for this import token",
                );
            }
            KmsError::PayloadRequired => {
                details.add_bad_request_violation("payload", "is required for an imported key");
            }
            KmsError::RotationTooSoon { retry_after } | KmsError::TooEarly { retry_after } => {
                details.set_retry_info(Some(*retry_after));
            }
            KmsError::ActionInvalidState { state } => {
                metadata.insert("key_state".to_owned(), (*state as i32).to_string());
            }
            KmsError::KeyDeleted(key) => {
                metadata.insert("key_id".to_owned(), key.to_string());
                metadata.insert("key_state".to_owned(), "5".to_owned());
            }
            KmsError::InstanceNotFound(id)
            | KmsError::InstanceNotEmpty(id)
            | KmsError::KeyMaterialDestroyed(id) => {
                metadata.insert("instance_id".to_owned(), id.to_string());
            }
            KmsError::Hsm(hsm) => {
                metadata.insert("ckr".to_owned(), format!("0x{:X}", hsm.ckr()));
            }
            KmsError::Injected(failure) => {
                metadata.insert("injected".to_owned(), "true".to_owned());
                match failure {
                    crate::faults::InjectedFailure::ResourceExhausted(delay) => {
                        details.set_retry_info(Some(*delay));
                    }
                    crate::faults::InjectedFailure::HsmDeviceError => {
                        metadata.insert("ckr".to_owned(), "0x30".to_owned());
                    }
                    _ => {}
                }
            }
            KmsError::Unauthenticated(failure) => {
                metadata.insert("auth_failure".to_owned(), failure.as_str().to_owned());
            }
            KmsError::PermissionDenied { required } => {
                metadata.insert("required_role".to_owned(), required.as_str().to_owned());
            }
            KmsError::KeyCreateImportAccess { denied } => {
                metadata.insert("denied".to_owned(), denied.as_str().to_owned());
            }
            KmsError::KeyNotFound
            | KmsError::KeyExpired
            | KmsError::UnprocessableCiphertext
            | KmsError::RootKeyRequired
            | KmsError::RestoreExpired
            | KmsError::AliasNotUnique
            | KmsError::AliasQuotaExceeded
            | KmsError::AliasNotFound
            | KmsError::ImportTokenNotFound
            | KmsError::ImportTokenExpired
            | KmsError::ImportTokenRetrievalsExhausted
            | KmsError::IncorrectNonce
            | KmsError::IncorrectNonceIv
            | KmsError::ClockNotSimulated
            | KmsError::ClockBackwards
            | KmsError::IdentityNotFound
            | KmsError::ApiKeyNotFound
            | KmsError::PolicyNotFound
            | KmsError::AuthorizationNotFound
            | KmsError::RegistrationRootKeyRequired
            | KmsError::ServiceOnly
            | KmsError::KeyVersionInvalid
            | KmsError::RegistrationExists
            | KmsError::RegistrationNotFound
            | KmsError::ProtectedResource
            | KmsError::PreventKeyDeletion
            | KmsError::LifecycleEventNotFound
            | KmsError::LifecycleEventSettled
            | KmsError::NotDualAuth
            | KmsError::AuthorizationsNotMet
            | KmsError::DualAuthPolicyPermanent
            | KmsError::ImportedKeyRotationPolicy
            | KmsError::SnapshotMalformed
            | KmsError::SnapshotAuthentication
            | KmsError::SnapshotMasterKeyMismatch
            | KmsError::CeremonyArguments
            | KmsError::Store(_) => {}
        }
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}
