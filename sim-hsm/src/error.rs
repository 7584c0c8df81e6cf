//! The module's single error type, [`HsmError`], and its mapping to PKCS#11 return codes.
//!
//! Every public operation returns `Result<_, HsmError>`. Variants carry no free-form strings: callers match on the
//! variant or on [`HsmError::ckr`]. Vendor-defined codes (`0x8001_xxxx`) follow the IBM EP11 convention where an
//! equivalent exists (`CKR_IBM_WKID_MISMATCH`, `CKR_IBM_WK_NOT_INITIALIZED`).

use crate::store::StoreError;

/// `CKR_VENDOR_DEFINED`.
const VENDOR: u64 = 0x8000_0000;

/// An error returned by the simulated HSM. Each variant maps to one PKCS#11 `CK_RV` via [`HsmError::ckr`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// `CKR_GENERAL_ERROR` (0x5): an internal invariant failed.
    #[error("general error")]
    GeneralError,
    /// `CKR_SLOT_ID_INVALID` (0x3): no slot with that ID.
    #[error("slot ID invalid")]
    SlotIdInvalid,
    /// `CKR_ARGUMENTS_BAD` (0x7): an argument is malformed or out of range.
    #[error("arguments bad")]
    ArgumentsBad,
    /// `CKR_ATTRIBUTE_READ_ONLY` (0x10): the attribute cannot be set (or not to that value, or not by this role).
    #[error("attribute read-only")]
    AttributeReadOnly,
    /// `CKR_ATTRIBUTE_SENSITIVE` (0x11): the value may not be revealed (`ulValueLen = CK_UNAVAILABLE_INFORMATION`).
    #[error("attribute sensitive")]
    AttributeSensitive,
    /// `CKR_ATTRIBUTE_TYPE_INVALID` (0x12): the object has no such attribute.
    #[error("attribute type invalid")]
    AttributeTypeInvalid,
    /// `CKR_ATTRIBUTE_VALUE_INVALID` (0x13): an attribute value is not acceptable.
    #[error("attribute value invalid")]
    AttributeValueInvalid,
    /// `CKR_DATA_LEN_RANGE` (0x21): input data has an invalid length.
    #[error("data length out of range")]
    DataLenRange,
    /// `CKR_DEVICE_ERROR` (0x30): the store failed or a stored record failed its integrity check.
    #[error("device error")]
    DeviceError,
    /// `CKR_DEVICE_ERROR` (0x30) raised by the object store backend.
    #[error("device error: object store failed")]
    Store(#[source] StoreError),
    /// `CKR_ENCRYPTED_DATA_INVALID` (0x40): AES-GCM authentication failed.
    #[error("encrypted data invalid")]
    EncryptedDataInvalid,
    /// `CKR_ENCRYPTED_DATA_LEN_RANGE` (0x41): the ciphertext is shorter than a tag.
    #[error("encrypted data length out of range")]
    EncryptedDataLenRange,
    /// `CKR_KEY_HANDLE_INVALID` (0x60).
    #[error("key handle invalid")]
    KeyHandleInvalid,
    /// `CKR_KEY_SIZE_RANGE` (0x62): the key (or data to wrap) has an unsupported length.
    #[error("key size out of range")]
    KeySizeRange,
    /// `CKR_KEY_TYPE_INCONSISTENT` (0x63): the key type does not fit the mechanism.
    #[error("key type inconsistent")]
    KeyTypeInconsistent,
    /// `CKR_KEY_FUNCTION_NOT_PERMITTED` (0x68): the key's usage attribute (ENCRYPT, WRAP, SIGN, ...) is false.
    #[error("key function not permitted")]
    KeyFunctionNotPermitted,
    /// `CKR_KEY_NOT_WRAPPABLE` (0x69): WRAP_WITH_TRUSTED, WRAP_TEMPLATE or the object class forbids wrapping.
    #[error("key not wrappable")]
    KeyNotWrappable,
    /// `CKR_KEY_UNEXTRACTABLE` (0x6A): the target key has EXTRACTABLE=false.
    #[error("key unextractable")]
    KeyUnextractable,
    /// `CKR_MECHANISM_INVALID` (0x70): unknown mechanism, wrong mechanism for the call, or not in ALLOWED_MECHANISMS.
    #[error("mechanism invalid")]
    MechanismInvalid,
    /// `CKR_MECHANISM_PARAM_INVALID` (0x71): bad mechanism parameter (e.g. a KDF other than NULL, an invalid EC point).
    #[error("mechanism parameter invalid")]
    MechanismParamInvalid,
    /// `CKR_OBJECT_HANDLE_INVALID` (0x82).
    #[error("object handle invalid")]
    ObjectHandleInvalid,
    /// `CKR_PIN_INCORRECT` (0xA0).
    #[error("PIN incorrect")]
    PinIncorrect,
    /// `CKR_PIN_LEN_RANGE` (0xA2).
    #[error("PIN length out of range")]
    PinLenRange,
    /// `CKR_PIN_LOCKED` (0xA4): too many wrong PINs.
    #[error("PIN locked")]
    PinLocked,
    /// `CKR_SESSION_HANDLE_INVALID` (0xB3): the session was closed.
    #[error("session handle invalid")]
    SessionHandleInvalid,
    /// `CKR_SESSION_READ_ONLY` (0xB5).
    #[error("session read-only")]
    SessionReadOnly,
    /// `CKR_SESSION_EXISTS` (0xB6): a session is open on the slot.
    #[error("session exists")]
    SessionExists,
    /// `CKR_SESSION_READ_ONLY_EXISTS` (0xB7): an R/O session prevents the SO from logging in.
    #[error("read-only session exists")]
    SessionReadOnlyExists,
    /// `CKR_SESSION_READ_WRITE_SO_EXISTS` (0xB8): an R/O session cannot be opened while the SO is logged in.
    #[error("read/write SO session exists")]
    SessionReadWriteSoExists,
    /// `CKR_SIGNATURE_INVALID` (0xC0).
    #[error("signature invalid")]
    SignatureInvalid,
    /// `CKR_SIGNATURE_LEN_RANGE` (0xC1).
    #[error("signature length out of range")]
    SignatureLenRange,
    /// `CKR_TEMPLATE_INCOMPLETE` (0xD0).
    #[error("template incomplete")]
    TemplateIncomplete,
    /// `CKR_TEMPLATE_INCONSISTENT` (0xD1): e.g. a conflict with UNWRAP_TEMPLATE.
    #[error("template inconsistent")]
    TemplateInconsistent,
    /// `CKR_TOKEN_NOT_RECOGNIZED` (0xE1): the slot holds no initialised token, or its stored record is damaged.
    #[error("token not recognized")]
    TokenNotRecognized,
    /// `CKR_UNWRAPPING_KEY_HANDLE_INVALID` (0xF0).
    #[error("unwrapping key handle invalid")]
    UnwrappingKeyHandleInvalid,
    /// `CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT` (0xF2).
    #[error("unwrapping key type inconsistent")]
    UnwrappingKeyTypeInconsistent,
    /// `CKR_USER_ALREADY_LOGGED_IN` (0x100).
    #[error("user already logged in")]
    UserAlreadyLoggedIn,
    /// `CKR_USER_NOT_LOGGED_IN` (0x101): the session state does not allow the operation (see the access matrix).
    #[error("user not logged in")]
    UserNotLoggedIn,
    /// `CKR_USER_PIN_NOT_INITIALIZED` (0x102).
    #[error("user PIN not initialized")]
    UserPinNotInitialized,
    /// `CKR_USER_ANOTHER_ALREADY_LOGGED_IN` (0x104).
    #[error("another user already logged in")]
    UserAnotherAlreadyLoggedIn,
    /// `CKR_WRAPPED_KEY_INVALID` (0x110): the KW/KWP integrity check failed (tampered data or wrong KEK).
    #[error("wrapped key invalid")]
    WrappedKeyInvalid,
    /// `CKR_WRAPPED_KEY_LEN_RANGE` (0x112).
    #[error("wrapped key length out of range")]
    WrappedKeyLenRange,
    /// `CKR_WRAPPING_KEY_HANDLE_INVALID` (0x113).
    #[error("wrapping key handle invalid")]
    WrappingKeyHandleInvalid,
    /// `CKR_WRAPPING_KEY_TYPE_INCONSISTENT` (0x115).
    #[error("wrapping key type inconsistent")]
    WrappingKeyTypeInconsistent,
    /// `CKR_FIPS_SELF_TEST_FAILED` (0x1B6): the module is in its error state (or a conditional test just failed).
    #[error("FIPS self-test failed")]
    FipsSelfTestFailed,
    /// `CKR_IBM_WKID_MISMATCH`-like (0x8001_0001): a record is sealed under a different master key.
    #[error("record sealed under a different master key")]
    WrongMasterKey,
    /// `CKR_IBM_WK_NOT_INITIALIZED`-like (0x8001_0009): no master key is active yet.
    #[error("master key not loaded")]
    MasterKeyNotLoaded,
    /// Vendor 0x8001_0100: a master-key rotation is in progress; new key objects are refused until it finishes.
    #[error("master key rotation in progress")]
    MasterKeyRotationInProgress,
    /// Vendor 0x8001_0101: an administrative command lacks the required number of valid signatures from distinct
    /// administrators.
    #[error("not enough valid administrator signatures")]
    InsufficientSignatures,
    /// Vendor 0x8001_0102: the master-key register is in the wrong state for this ceremony step.
    #[error("master key register in wrong state")]
    MasterKeyRegisterState,
    /// Vendor 0x8001_0103: a different master key is already active.
    #[error("a different master key is already active")]
    MasterKeyAlreadyActive,
    /// `CKR_DEVICE_ERROR` (0x30): the crypto unit is still in imprint mode (set the thresholds first).
    #[error("device error: crypto unit is in imprint mode")]
    ImprintMode,
}

impl HsmError {
    /// The PKCS#11 return code (`CK_RV`) for this error.
    #[must_use]
    pub fn ckr(&self) -> u64 {
        match self {
            Self::GeneralError => 0x05,
            Self::SlotIdInvalid => 0x03,
            Self::ArgumentsBad => 0x07,
            Self::AttributeReadOnly => 0x10,
            Self::AttributeSensitive => 0x11,
            Self::AttributeTypeInvalid => 0x12,
            Self::AttributeValueInvalid => 0x13,
            Self::DataLenRange => 0x21,
            Self::DeviceError | Self::Store(_) | Self::ImprintMode => 0x30,
            Self::EncryptedDataInvalid => 0x40,
            Self::EncryptedDataLenRange => 0x41,
            Self::KeyHandleInvalid => 0x60,
            Self::KeySizeRange => 0x62,
            Self::KeyTypeInconsistent => 0x63,
            Self::KeyFunctionNotPermitted => 0x68,
            Self::KeyNotWrappable => 0x69,
            Self::KeyUnextractable => 0x6A,
            Self::MechanismInvalid => 0x70,
            Self::MechanismParamInvalid => 0x71,
            Self::ObjectHandleInvalid => 0x82,
            Self::PinIncorrect => 0xA0,
            Self::PinLenRange => 0xA2,
            Self::PinLocked => 0xA4,
            Self::SessionHandleInvalid => 0xB3,
            Self::SessionReadOnly => 0xB5,
            Self::SessionExists => 0xB6,
            Self::SessionReadOnlyExists => 0xB7,
            Self::SessionReadWriteSoExists => 0xB8,
            Self::SignatureInvalid => 0xC0,
            Self::SignatureLenRange => 0xC1,
            Self::TemplateIncomplete => 0xD0,
            Self::TemplateInconsistent => 0xD1,
            Self::TokenNotRecognized => 0xE1,
            Self::UnwrappingKeyHandleInvalid => 0xF0,
            Self::UnwrappingKeyTypeInconsistent => 0xF2,
            Self::UserAlreadyLoggedIn => 0x100,
            Self::UserNotLoggedIn => 0x101,
            Self::UserPinNotInitialized => 0x102,
            Self::UserAnotherAlreadyLoggedIn => 0x104,
            Self::WrappedKeyInvalid => 0x110,
            Self::WrappedKeyLenRange => 0x112,
            Self::WrappingKeyHandleInvalid => 0x113,
            Self::WrappingKeyTypeInconsistent => 0x115,
            Self::FipsSelfTestFailed => 0x1B6,
            Self::WrongMasterKey => VENDOR | 0x1_0001,
            Self::MasterKeyNotLoaded => VENDOR | 0x1_0009,
            Self::MasterKeyRotationInProgress => VENDOR | 0x1_0100,
            Self::InsufficientSignatures => VENDOR | 0x1_0101,
            Self::MasterKeyRegisterState => VENDOR | 0x1_0102,
            Self::MasterKeyAlreadyActive => VENDOR | 0x1_0103,
        }
    }

    /// True when retrying the same call later may succeed (the state that caused it is transient).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::MasterKeyRotationInProgress | Self::Store(_))
    }
}

impl From<StoreError> for HsmError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_codes() {
        assert_eq!(HsmError::WrongMasterKey.ckr(), 0x8001_0001);
        assert_eq!(HsmError::MasterKeyNotLoaded.ckr(), 0x8001_0009);
        assert_eq!(HsmError::FipsSelfTestFailed.ckr(), 0x1B6);
        assert_eq!(HsmError::PinLocked.ckr(), 0xA4);
    }
}
