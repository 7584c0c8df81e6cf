//! What a [`DeploymentKey`](super::DeploymentKey) keeps durable between runs
//! ([`DeploymentState`]: the key it is protected by, the wrapped data key, its access state and
//! the last lifecycle event it applied), and the [`StateStore`] the embedding database gives it
//! to keep that in. The plaintext data key is never part of it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::datakey::WrappedDataKey;

/// How the deployment's data key is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProtection {
    /// Wrapped by a customer root key (BYOK/KYOK): the key's CRN and the wrapped data key.
    RootKey {
        /// The root key's full CRN.
        key_crn: String,
        /// The data key wrapped by it, with the version that wrapped it.
        wrapped: WrappedDataKey,
    },
    /// A data key the deployment generated itself (no key CRN given at provisioning). It lives
    /// only in memory: the database service's own key management is outside the simulator, so
    /// such a deployment cannot be reopened after it is dropped.
    Local,
}

/// Whether the deployment's data may be read and written, by what the key last did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessState {
    /// The data key is unlocked.
    Open,
    /// The root key is disabled (or its data key could not be unwrapped): access is refused
    /// until the key is enabled.
    Suspended,
    /// The root key was deleted (cryptoshredding): the data key is zeroized and the deployment
    /// locked until the key is restored.
    Shredded,
}

/// The durable state of one deployment's data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentState {
    /// The deployment's CRN (the registered resource, and the AAD of its wrapped data key).
    pub deployment_crn: String,
    /// How its data key is protected.
    pub protection: KeyProtection,
    /// The access state when last saved.
    pub access: AccessState,
    /// The sequence number of the last lifecycle event applied and acknowledged (0: none);
    /// the event stream resumes after it.
    pub last_sequence: u64,
}

impl DeploymentState {
    /// The root key version the data key is wrapped under (`None` for a local key).
    pub fn key_version_id(&self) -> Option<&str> {
        match &self.protection {
            KeyProtection::RootKey { wrapped, .. } => Some(&wrapped.key_version_id),
            KeyProtection::Local => None,
        }
    }
}

/// The durable store a [`DeploymentKey`](super::DeploymentKey) writes its state to (for
/// example a row of the database's own catalog). `save` must be durable when it returns: the
/// component acknowledges a lifecycle event only after saving what the event changed.
pub trait StateStore: Send + Sync + fmt::Debug {
    /// The saved state, if any.
    ///
    /// # Errors
    /// A description of the storage failure.
    fn load(&self) -> Result<Option<DeploymentState>, String>;

    /// Replaces the saved state.
    ///
    /// # Errors
    /// A description of the storage failure.
    fn save(&self, state: &DeploymentState) -> Result<(), String>;
}

/// A [`StateStore`] in memory, shared by its clones (tests, and deployments whose "disk" is
/// memory too).
#[derive(Debug, Clone, Default)]
pub struct MemoryStateStore {
    state: Arc<Mutex<Option<DeploymentState>>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateStore for MemoryStateStore {
    fn load(&self) -> Result<Option<DeploymentState>, String> {
        // A poisoned lock still holds a whole state (it is only ever replaced whole).
        Ok(self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn save(&self, state: &DeploymentState) -> Result<(), String> {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(state.clone());
        Ok(())
    }
}
