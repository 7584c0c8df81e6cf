//! The database-encryption component, the part a database deployment links: a
//! [`DeploymentKey`] provisions the deployment's data key under a customer root key (or a local
//! one), registers the deployment with that key, encrypts and decrypts records with AES-256-GCM
//! bound to each record's id, and follows the key through its lifecycle events
//! ([`DeploymentKey::follow`], in `follow.rs`): rotate, disable, enable, delete, restore.
//! Its durable state goes to a [`StateStore`] the database supplies (`state.rs`); the
//! plaintext data key is only ever in zeroizing memory.

mod follow;
mod state;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tonic::Code;
use zeroize::Zeroizing;

pub use self::follow::FollowObserver;
pub use self::state::{AccessState, DeploymentState, KeyProtection, MemoryStateStore, StateStore};
use crate::datakey::{self, DataKeyError, Dek, WrappedDataKey};
use crate::error::ClientError;
use crate::refs::{Crn, KeyRef};
use crate::{KmsClient, Reason};

/// How long a deprovisioned deployment's registration is kept (soft-deleted) by default: the
/// database services' 9-day soft-deletion period, during which the key's deletion needs
/// `force`.
pub const DEFAULT_REGISTRATION_RETENTION: Duration = Duration::from_secs(9 * 24 * 3600);

/// Why a [`DeploymentKey`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    /// The key was not given as a full key CRN (a bare key id or a path is refused, as the
    /// database services refuse it).
    #[error("a full root key CRN is required, not {0:?}")]
    KeyCrnRequired(String),
    /// The database service is not authorized to use the key's instance (no
    /// service-to-service authorization).
    #[error("the service is not authorized to use the key: {0}")]
    ServiceNotAuthorized(#[source] ClientError),
    /// A KMS call failed.
    #[error("KMS call failed: {0}")]
    Kms(#[from] ClientError),
    /// Data access is refused in this state.
    #[error("data access refused: the data key is {0:?}")]
    AccessRefused(AccessState),
    /// The state store holds no deployment (provision first).
    #[error("no deployment state in the store")]
    NotProvisioned,
    /// A deployment with a local key cannot be reopened (its key lived only in memory).
    #[error("a deployment with a local data key cannot be reopened")]
    LocalKeyNotPersisted,
    /// The state store failed.
    #[error("the state store failed: {0}")]
    Store(String),
    /// Encryption, decryption or the data key itself failed.
    #[error(transparent)]
    Crypto(#[from] DataKeyError),
}

/// The deployment's data key, its durable state and its access state.
///
/// Share it in an `Arc`: the tasks that read and write records call
/// [`encrypt`](Self::encrypt) / [`decrypt`](Self::decrypt) while one task runs
/// [`follow`](Self::follow). `Debug` never shows the key.
pub struct DeploymentKey {
    client: KmsClient,
    store: Arc<dyn StateStore>,
    /// The durable state as last saved.
    state: Mutex<DeploymentState>,
    /// The unlocked data key; `None` unless the access state is `Open`.
    dek: RwLock<Option<Dek>>,
    /// One lifecycle event (or deprovisioning) at a time.
    applying: tokio::sync::Mutex<()>,
    applied: AtomicU64,
}

impl fmt::Debug for DeploymentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeploymentKey")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// The AAD of a deployment's wrapped data key: its CRN.
fn aad(deployment_crn: &str) -> [&str; 1] {
    [deployment_crn]
}

/// A full key CRN, or the refusal.
fn key_crn(text: &str) -> Result<KeyRef, ComponentError> {
    let refused = || ComponentError::KeyCrnRequired(text.to_owned());
    let crn = Crn::parse(text).map_err(|_| refused())?;
    if !crn.is_key() {
        return Err(refused());
    }
    KeyRef::from_crn(crn).map_err(|_| refused())
}

/// The access state a KMS refusal of the data key implies: shredded when the key's material
/// is gone, suspended when the key's state forbids its use; `None` for any other failure.
pub(crate) fn refused_access(error: &ClientError) -> Option<AccessState> {
    match error.reason() {
        Some(Reason::KeyMaterialDestroyed | Reason::KeyDeleted | Reason::KeyNotFound) => {
            Some(AccessState::Shredded)
        }
        _ if error.code() == Code::FailedPrecondition => Some(AccessState::Suspended),
        _ => None,
    }
}

fn not_authorized(error: ClientError) -> ComponentError {
    if error.code() == Code::PermissionDenied {
        ComponentError::ServiceNotAuthorized(error)
    } else {
        ComponentError::Kms(error)
    }
}

impl DeploymentKey {
    /// Provisions `deployment_crn`'s data key. With `key_crn` (a full root key CRN): wraps a
    /// fresh 256-bit data key under it (bound to the deployment's CRN), registers the
    /// deployment with the key at the version that wrapped it, and saves the state. Without:
    /// a data key generated locally, kept in memory only.
    ///
    /// `client` acts as the database service (a service identity, authorized on the key's
    /// instance).
    ///
    /// # Errors
    /// [`ComponentError::KeyCrnRequired`], [`ComponentError::ServiceNotAuthorized`],
    /// [`ComponentError::Kms`], [`ComponentError::Store`].
    pub async fn provision(
        client: KmsClient,
        deployment_crn: &str,
        key_crn_text: Option<&str>,
        store: Arc<dyn StateStore>,
    ) -> Result<Self, ComponentError> {
        let Some(text) = key_crn_text else {
            let state = DeploymentState {
                deployment_crn: deployment_crn.to_owned(),
                protection: KeyProtection::Local,
                access: AccessState::Open,
                last_sequence: 0,
            };
            store.save(&state).map_err(ComponentError::Store)?;
            return Ok(Self::assemble(client, store, state, Some(Dek::random()?)));
        };
        let key = key_crn(text)?;
        let generated = client
            .generate_data_key(&key, &aad(deployment_crn))
            .await
            .map_err(not_authorized)?;
        let dek = Dek::from_slice(&generated.plaintext)?;
        let wrapped = WrappedDataKey {
            ciphertext: generated.ciphertext,
            key_version_id: datakey::non_empty_version(generated.key_version.id)?,
        };
        let registration = client
            .create_registration(&key, deployment_crn, false, "database deployment data key")
            .await
            .map_err(not_authorized)?;
        if registration.key_version_id != wrapped.key_version_id {
            client
                .set_registration_key_version(&key, deployment_crn, &wrapped.key_version_id)
                .await?;
        }
        let state = DeploymentState {
            deployment_crn: deployment_crn.to_owned(),
            protection: KeyProtection::RootKey {
                key_crn: text.to_owned(),
                wrapped,
            },
            access: AccessState::Open,
            last_sequence: 0,
        };
        store.save(&state).map_err(ComponentError::Store)?;
        Ok(Self::assemble(client, store, state, Some(dek)))
    }

    /// Opens a provisioned deployment from its saved state: unwraps the data key once (saving
    /// the rewrapped form when the key was rotated meanwhile). A deployment saved as shredded
    /// stays locked until its key is restored; one whose key refuses to unwrap (disabled) opens
    /// suspended. Either way [`follow`](Self::follow) brings it up to date.
    ///
    /// # Errors
    /// [`ComponentError::NotProvisioned`], [`ComponentError::LocalKeyNotPersisted`],
    /// [`ComponentError::Kms`] for a failure other than the key's state,
    /// [`ComponentError::Store`].
    pub async fn open(
        client: KmsClient,
        store: Arc<dyn StateStore>,
    ) -> Result<Self, ComponentError> {
        let state = store
            .load()
            .map_err(ComponentError::Store)?
            .ok_or(ComponentError::NotProvisioned)?;
        if state.protection == KeyProtection::Local {
            return Err(ComponentError::LocalKeyNotPersisted);
        }
        let shredded = state.access == AccessState::Shredded;
        let component = Self::assemble(client, store, state, None);
        if !shredded {
            component.verify().await?;
        }
        Ok(component)
    }

    /// Checks the data key against the KMS now (an unwrap): opens the deployment when the key
    /// allows it, locks it as suspended when the key refuses for its state (disabled), and as
    /// shredded when the key's material is gone (deleted, purged, or the HSM zeroized), which
    /// no lifecycle event may announce. Returns the access state it leaves.
    ///
    /// # Errors
    /// [`ComponentError::Kms`] for a failure that says nothing of the key (the state is kept),
    /// [`ComponentError::Store`].
    pub async fn verify(&self) -> Result<AccessState, ComponentError> {
        match self.unlock().await {
            Ok(()) => Ok(self.access()),
            Err(ComponentError::Kms(e)) => match refused_access(&e) {
                Some(access) => {
                    self.zeroize();
                    self.set_access(access)?;
                    Ok(access)
                }
                None => Err(ComponentError::Kms(e)),
            },
            Err(other) => Err(other),
        }
    }

    fn assemble(
        client: KmsClient,
        store: Arc<dyn StateStore>,
        state: DeploymentState,
        dek: Option<Dek>,
    ) -> Self {
        Self {
            client,
            store,
            state: Mutex::new(state),
            dek: RwLock::new(dek),
            applying: tokio::sync::Mutex::new(()),
            applied: AtomicU64::new(0),
        }
    }

    /// The durable state as last saved.
    pub fn state(&self) -> DeploymentState {
        // A poisoned lock still holds a whole state (it is only ever replaced whole).
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether records may be read and written now.
    pub fn access(&self) -> AccessState {
        self.state().access
    }

    /// The root key version the data key is wrapped under (`None` for a local key).
    pub fn key_version(&self) -> Option<String> {
        match self.state().protection {
            KeyProtection::RootKey { wrapped, .. } => Some(wrapped.key_version_id),
            KeyProtection::Local => None,
        }
    }

    /// How many lifecycle events this process applied (each once).
    pub fn events_applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Encrypts one record, bound to its id (AES-256-GCM; see [`datakey`] for the format).
    ///
    /// # Errors
    /// [`ComponentError::AccessRefused`] unless open; [`ComponentError::Crypto`].
    pub fn encrypt(&self, record_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, ComponentError> {
        let guard = self.dek.read().unwrap_or_else(PoisonError::into_inner);
        let dek = guard
            .as_ref()
            .ok_or_else(|| ComponentError::AccessRefused(self.access()))?;
        Ok(datakey::seal(dek, plaintext, record_id.as_bytes())?)
    }

    /// Decrypts one record encrypted under `record_id`.
    ///
    /// # Errors
    /// [`ComponentError::AccessRefused`] unless open; [`ComponentError::Crypto`] for a wrong
    /// id or a tampered record.
    pub fn decrypt(
        &self,
        record_id: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ComponentError> {
        let guard = self.dek.read().unwrap_or_else(PoisonError::into_inner);
        let dek = guard
            .as_ref()
            .ok_or_else(|| ComponentError::AccessRefused(self.access()))?;
        Ok(datakey::open(dek, ciphertext, record_id.as_bytes())?)
    }

    /// Deprovisions: zeroizes the data key (the deployment stays locked as shredded) and
    /// deletes the deployment's registration, keeping it soft-deleted for `retention`
    /// (default [`DEFAULT_REGISTRATION_RETENTION`]).
    /// Returns the soft-deleted registration (`None` for a local key).
    ///
    /// # Errors
    /// [`ComponentError::Kms`].
    pub async fn deprovision(
        &self,
        retention: Option<Duration>,
    ) -> Result<Option<crate::proto::Registration>, ComponentError> {
        let _one_at_a_time = self.applying.lock().await;
        self.zeroize();
        self.set_access(AccessState::Shredded)?;
        let state = self.state();
        match state.protection {
            KeyProtection::RootKey { key_crn: text, .. } => {
                let key = key_crn(&text)?;
                let retention = retention.unwrap_or(DEFAULT_REGISTRATION_RETENTION);
                Ok(self
                    .client
                    .delete_registration(&key, &state.deployment_crn, retention)
                    .await?)
            }
            KeyProtection::Local => Ok(None),
        }
    }

    /// The root key and the wrapped data key (`None` for a local key).
    fn root(&self) -> Result<Option<(KeyRef, WrappedDataKey)>, ComponentError> {
        match self.state().protection {
            KeyProtection::RootKey {
                key_crn: text,
                wrapped,
            } => Ok(Some((key_crn(&text)?, wrapped))),
            KeyProtection::Local => Ok(None),
        }
    }

    /// Replaces the saved state through `change`, saving it first.
    fn update(&self, change: impl FnOnce(&mut DeploymentState)) -> Result<(), ComponentError> {
        let mut next = self.state();
        change(&mut next);
        self.store.save(&next).map_err(ComponentError::Store)?;
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    fn set_access(&self, access: AccessState) -> Result<(), ComponentError> {
        self.update(|s| s.access = access)
    }

    /// Forgets the data key (zeroizing it).
    fn zeroize(&self) {
        self.dek
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Unwraps the data key, keeps it, and saves the state as open (with the rewrapped form
    /// when the key was rotated since).
    async fn unlock(&self) -> Result<(), ComponentError> {
        let Some((key, wrapped)) = self.root()? else {
            return Ok(());
        };
        let deployment_crn = self.state().deployment_crn;
        let unwrapped = self
            .client
            .unwrap(&key, &wrapped.ciphertext, &aad(&deployment_crn))
            .await?;
        let dek = Dek::from_slice(&unwrapped.plaintext)?;
        let rewrapped = match unwrapped.rewrapped {
            Some(w) => Some(WrappedDataKey {
                ciphertext: w.ciphertext,
                key_version_id: datakey::non_empty_version(w.key_version.id)?,
            }),
            None => None,
        };
        self.update(|s| {
            s.access = AccessState::Open;
            if let (Some(new), KeyProtection::RootKey { wrapped, .. }) =
                (rewrapped, &mut s.protection)
            {
                *wrapped = new;
            }
        })?;
        *self.dek.write().unwrap_or_else(PoisonError::into_inner) = Some(dek);
        Ok(())
    }
}
