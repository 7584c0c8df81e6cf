//! [`Reason`], the typed Key Protect reason code that kmsim puts in `google.rpc.ErrorInfo.reason`
//! (see `kmsim/v1/errors.proto`): one variant per code the server sends, so clients match on a
//! variant instead of comparing strings, and the server can name its codes from the same list.

use std::fmt;

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident => $code:literal, )*) => {
        /// A Key Protect (or kmsim) reason code, as carried by `ErrorInfo.reason`.
        ///
        /// New codes may be added: match with a wildcard arm. A code this version does not
        /// know parses to `None` ([`Reason::parse`]); the raw string stays available from the
        /// error that carried it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            /// Every known reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The wire code, e.g. `KEY_NOT_FOUND_ERR`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            /// The reason named by a wire code; `None` for a code this version does not know.
            pub fn parse(code: &str) -> Option<Self> {
                match code {
                    $($code => Some(Reason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// A malformed request field (HTTP 400).
    BadBody => "BAD_BODY_ERR",
    /// No such instance.
    InstanceNotFound => "INSTANCE_NOT_FOUND_ERR",
    /// The instance still holds keys.
    InstanceNotEmpty => "INSTANCE_NOT_EMPTY_ERR",
    /// No such key (or it was purged).
    KeyNotFound => "KEY_NOT_FOUND_ERR",
    /// The key is deleted.
    KeyDeleted => "KEY_DELETED_ERR",
    /// The key's state does not allow the action.
    KeyActionInvalidState => "KEY_ACTION_INVALID_STATE_ERR",
    /// The key has expired.
    KeyExpired => "KEY_EXPIRED_ERR",
    /// The ciphertext cannot be processed (corrupt, or other AAD).
    UnprocessableCiphertext => "UNPROCESSABLE_CIPHERTEXT_ERR",
    /// The action needs a root key.
    KeyRootRequired => "KEY_ROOT_REQ_ERR",
    /// An imported key needs a payload.
    KeyPayloadRequired => "KEY_PAYLOAD_REQ_ERR",
    /// The key was rotated too recently.
    KeyRotationNotPermitted => "KEY_ROTATION_NOT_PERMITTED",
    /// The action is allowed only later (see the retry delay).
    RequestTooEarly => "REQ_TOO_EARLY_ERR",
    /// The restore window has passed.
    KeyRestoreExpired => "KEY_RESTORE_EXPIRED",
    /// The alias is taken.
    KeyAliasNotUnique => "KEY_ALIAS_NOT_UNIQUE_ERR",
    /// The key has too many aliases.
    KeyAliasQuota => "KEY_ALIAS_QUOTA_ERR",
    /// No such alias.
    KeyAliasNotFound => "KEY_ALIAS_NOT_FOUND_ERR",
    /// No import token.
    ImportTokenNotFound => "IMPORT_TOKEN_NOT_FOUND_ERR",
    /// The import token expired.
    ImportTokenExpired => "IMPORT_TOKEN_EXPIRED_ERR",
    /// The import token has no retrievals left.
    ImportTokenRetrievalsExhausted => "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR",
    /// The secure-import nonce is wrong.
    IncorrectNonce => "INCORRECT_NONCE_ERR",
    /// The secure-import nonce IV is wrong.
    IncorrectNonceIv => "INCORRECT_NONCE_IV_ERR",
    /// The server's clock is not simulated.
    ClockNotSimulated => "CLOCK_NOT_SIMULATED_ERR",
    /// The simulated clock cannot move backwards.
    ClockBackwards => "CLOCK_BACKWARDS_ERR",
    /// The key's material was destroyed (purged or shredded by an HSM zeroization).
    KeyMaterialDestroyed => "KEY_MATERIAL_DESTROYED_ERR",
    /// An injected `UNAVAILABLE` fault.
    InjectedUnavailable => "INJECTED_UNAVAILABLE_ERR",
    /// An injected `RESOURCE_EXHAUSTED` fault.
    InjectedRateLimit => "INJECTED_RATE_LIMIT_ERR",
    /// An injected `INTERNAL` fault.
    InjectedInternal => "INJECTED_INTERNAL_ERR",
    /// An injected `DEADLINE_EXCEEDED` fault.
    InjectedDeadlineExceeded => "INJECTED_DEADLINE_EXCEEDED_ERR",
    /// The bearer token cannot be parsed.
    BearerSubExtraction => "BEARER_SUB_EXTRACTION_ERR",
    /// Not authenticated, or not allowed.
    Unauthorized => "UNAUTHORIZED_ERR",
    /// No such IAM identity.
    IdentityNotFound => "IDENTITY_NOT_FOUND_ERR",
    /// No such API key.
    ApiKeyNotFound => "API_KEY_NOT_FOUND_ERR",
    /// No such policy.
    PolicyNotFound => "POLICY_NOT_FOUND_ERR",
    /// No such service-to-service authorization.
    AuthorizationNotFound => "AUTHORIZATION_NOT_FOUND_ERR",
    /// Registrations need a root key.
    KeyRootRequiredForRegistration => "KEY_ROOT_REQ_REG_ERR",
    /// Only service identities may do this.
    ServiceOnly => "SERVICE_ONLY_ERR",
    /// The key version is not one of the key's, or older than the registration's.
    KeyVersionInvalid => "KEY_VERSION_INVALID",
    /// The resource is already registered.
    RegistrationExists => "REGISTRATION_EXISTS_ERR",
    /// No such registration.
    RegistrationNotFound => "REGISTRATION_NOT_FOUND_ERR",
    /// The key protects registered resources: delete with force.
    ProtectedResource => "PROTECTED_RESOURCE_ERR",
    /// A registration prevents deleting the key, even with force.
    PreventKeyDeletion => "PREV_KEY_DEL_ERR",
    /// No such lifecycle event.
    LifecycleEventNotFound => "LIFECYCLE_EVENT_NOT_FOUND_ERR",
    /// The lifecycle event was already acknowledged or failed.
    LifecycleEventSettled => "LIFECYCLE_EVENT_SETTLED_ERR",
    /// An adopter acknowledged a state that conflicts with the key's.
    LifecycleAdopterStateConflict => "LIFECYCLE_ADOPTER_STATE_CONFLICT_ERR",
    /// An adopter did not acknowledge in time.
    LifecycleAckTimeout => "LIFECYCLE_ACK_TIMEOUT_ERR",
    /// The key has no dual-authorization delete policy.
    NotDualAuth => "NOT_DUAL_AUTH_ERR",
    /// Dual authorization is required and not met.
    AuthorizationsNotMet => "AUTHORIZATIONS_NOT_MET",
    /// A dual-authorization delete policy cannot be disabled.
    DualAuthPolicyPermanent => "DUAL_AUTH_POLICY_PERMANENT_ERR",
    /// Rotation policies apply only to generated root keys.
    KeyImportedRotationPolicy => "KEY_IMPORTED_ROTATION_POLICY_ERR",
    /// The instance's create/import access policy forbids this.
    KeyCreateImportAccess => "KEY_CREATE_IMPORT_ACCESS_ERR",
    /// The snapshot is malformed.
    SnapshotMalformed => "SNAPSHOT_MALFORMED_ERR",
    /// The snapshot failed authentication.
    SnapshotAuthentication => "SNAPSHOT_AUTHENTICATION_ERR",
    /// The snapshot was sealed under another master key.
    SnapshotMasterKeyMismatch => "SNAPSHOT_MASTER_KEY_MISMATCH_ERR",
    /// The HSM refused the ceremony command's arguments.
    HsmCeremonyArgument => "HSM_CEREMONY_ARGUMENT_ERR",
    /// A master-key rotation is in progress.
    MasterKeyRotationInProgress => "MASTER_KEY_ROTATION_IN_PROGRESS_ERR",
    /// Not enough administrator signatures.
    HsmAdminSignaturesInsufficient => "HSM_ADMIN_SIGNATURES_INSUFFICIENT_ERR",
    /// The master-key registers are not in the needed state.
    MasterKeyRegisterState => "MASTER_KEY_REGISTER_STATE_ERR",
    /// The crypto unit is in imprint mode.
    HsmImprintMode => "HSM_IMPRINT_MODE_ERR",
    /// The HSM failed a self-test.
    HsmSelfTestFailed => "HSM_SELF_TEST_FAILED_ERR",
    /// The HSM reported a device error.
    HsmDevice => "HSM_DEVICE_ERR",
    /// The HSM has no usable master key (zeroized).
    HsmMasterKey => "HSM_MASTER_KEY_ERR",
    /// Another HSM failure.
    Hsm => "HSM_ERR",
    /// The durable store failed.
    Storage => "STORAGE_ERR",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn every_reason_round_trips_and_codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            assert!(seen.insert(reason.as_str()), "duplicate {reason}");
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
        }
        assert_eq!(Reason::parse("NO_SUCH_CODE"), None);
        assert_eq!(Reason::KeyNotFound.to_string(), "KEY_NOT_FOUND_ERR");
    }
}
