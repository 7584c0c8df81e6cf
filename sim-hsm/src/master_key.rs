//! Master-key values and registers: the developer master key ([`DevMasterKey`]), register states and
//! verification patterns as reported by `Hsm::status`.

use std::fmt;

use zeroize::Zeroizing;

use crate::error::HsmError;
use crate::seal;

/// A 256-bit master key supplied directly (developer mode; no ceremony). Zeroized on drop, never printed.
pub struct DevMasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for DevMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevMasterKey(vp={:02x?})", self.verification_pattern())
    }
}

impl DevMasterKey {
    /// A fresh random key from the operating system's RNG.
    ///
    /// # Panics
    /// Only when the OS random source is unavailable, which leaves no safe way to create key material (use
    /// [`DevMasterKey::try_generate`] to handle that case).
    #[must_use]
    pub fn generate() -> Self {
        // Invariant: the OS RNG is available on every supported platform; without it no key can be made.
        #[allow(clippy::expect_used)]
        Self::try_generate().expect("operating-system RNG unavailable")
    }

    /// A fresh random key from the operating system's RNG, or `DeviceError` when the RNG fails.
    pub fn try_generate() -> Result<Self, HsmError> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut k[..]).map_err(|_| HsmError::DeviceError)?;
        Ok(Self(k))
    }

    /// A key from its 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes (for the server's `--dev` key file only).
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.0.clone()
    }

    /// The verification pattern (fingerprint) the module reports for this key.
    #[must_use]
    pub fn verification_pattern(&self) -> [u8; 8] {
        seal::verification_pattern(&self.0)
    }
}

/// State of a master-key register (HPCS terminology).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterState {
    /// Nothing loaded.
    Empty,
    /// Some, but fewer than two, key parts are loaded (new register only).
    PartiallyLoaded,
    /// Two or three parts loaded, not yet committed (new register only).
    FullUncommitted,
    /// Committed; ready to be activated or to be the target of a rotation (new register only).
    FullCommitted,
    /// The active master key (current register only).
    Valid,
}

/// A master-key register as reported by `Hsm::status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterKeyRegister {
    /// Register state.
    pub state: RegisterState,
    /// Verification pattern of the value (when the register holds a full key).
    pub verification_pattern: Option<[u8; 8]>,
    /// Key parts loaded (new register only).
    pub parts_loaded: u8,
}
