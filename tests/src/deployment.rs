//! A simulated database deployment, as a BYOK database service runs one: it keeps its data key
//! only wrapped at rest (under a customer root key in kmsim), unlocks it at start-up, encrypts
//! its "disk" with it, follows root-key rotation by persisting the rewrapped form, and loses
//! access to its data when the root key is disabled or shredded. When its database service
//! registers it ([`Deployment::register`]), it answers the key's lifecycle events
//! ([`Deployment::handle_lifecycle_event`]) and keeps its registration through its
//! soft-deletion period when deprovisioned ([`Deployment::deprovision`]).

use std::collections::BTreeMap;
use std::time::Duration;

use kmsim_client::datakey::{DataKeyError, DataKeyManager, WrappedDataKey};
use kmsim_client::proto::{KeyState, LifecycleEvent, LifecycleEventKind, Registration};
use kmsim_client::{ClientError, KeyRef, KmsClient};

/// The deployment's registration with its root key, made by its database service.
struct Registered {
    /// The database service's client (a service identity authorized on the key's instance).
    service: KmsClient,
    /// The deployment's CRN.
    resource_crn: String,
}

/// A deployment: its name, its encrypted disk and its wrapped data key.
pub struct Deployment {
    name: String,
    manager: DataKeyManager,
    /// What the deployment keeps at rest: the wrapped data key...
    wrapped: WrappedDataKey,
    /// ...and records encrypted under the data key.
    disk: BTreeMap<String, Vec<u8>>,
    /// Set once the database service registered the deployment with its root key.
    registered: Option<Registered>,
}

impl Deployment {
    /// Provisions a deployment whose data key is wrapped by `root` (database services require
    /// the key's full CRN).
    pub async fn provision(
        client: KmsClient,
        name: &str,
        root: KeyRef,
    ) -> Result<Self, DataKeyError> {
        let manager = DataKeyManager::new(client, root, vec![format!("deployment:{name}")]);
        let wrapped = manager.provision().await?;
        Ok(Self {
            name: name.to_owned(),
            manager,
            wrapped,
            disk: BTreeMap::new(),
            registered: None,
        })
    }

    /// The database service registers the deployment (`resource_crn`) with its root key, at
    /// the key version its data key is wrapped under, as the provisioning step does.
    pub async fn register(
        &mut self,
        service: KmsClient,
        resource_crn: &str,
    ) -> Result<Registration, ClientError> {
        let root = self.manager.root_key().clone();
        let created = service
            .create_registration(&root, resource_crn, false, &format!("{} disk", self.name))
            .await?;
        let registration = if created.key_version_id == self.wrapped.key_version_id {
            created
        } else {
            service
                .set_registration_key_version(&root, resource_crn, &self.wrapped.key_version_id)
                .await?
        };
        self.registered = Some(Registered {
            service,
            resource_crn: resource_crn.to_owned(),
        });
        Ok(registration)
    }

    /// Answers a lifecycle event of the root key, as the database service does: after a
    /// rotation it rewraps the data key under the new version and moves its registration
    /// forward; then it acknowledges with the state and version it now applies. `None` when
    /// the deployment is not registered (nobody would have told it).
    pub async fn handle_lifecycle_event(
        &mut self,
        event: &LifecycleEvent,
    ) -> Result<Option<LifecycleEvent>, DataKeyError> {
        let Some(registered) = &self.registered else {
            return Ok(None);
        };
        let service = registered.service.clone();
        let resource_crn = registered.resource_crn.clone();
        if event.kind == LifecycleEventKind::Rotate as i32 {
            self.sync_kms_state().await?;
            let root = self.manager.root_key().clone();
            service
                .set_registration_key_version(&root, &resource_crn, &self.wrapped.key_version_id)
                .await?;
        }
        let state = KeyState::try_from(event.key_state).unwrap_or(KeyState::Unspecified);
        Ok(Some(
            service
                .ack_lifecycle_event(&event.event_id, state, Some(&self.wrapped.key_version_id))
                .await?,
        ))
    }

    /// Deprovisions the deployment: the database service deletes its registration, keeping
    /// it soft-deleted for `retain_for` (the deployment's soft-deletion period). Returns the
    /// soft-deleted registration, if any.
    pub async fn deprovision(
        self,
        retain_for: Duration,
    ) -> Result<Option<Registration>, ClientError> {
        match self.registered {
            Some(registered) => {
                registered
                    .service
                    .delete_registration(
                        self.manager.root_key(),
                        &registered.resource_crn,
                        retain_for,
                    )
                    .await
            }
            None => Ok(None),
        }
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key version the data key is currently wrapped under.
    pub fn key_version(&self) -> &str {
        &self.wrapped.key_version_id
    }

    /// Writes a record, encrypted.
    pub fn write(&mut self, id: &str, value: &[u8]) -> Result<(), DataKeyError> {
        let sealed = self.manager.encrypt(value, id.as_bytes())?;
        self.disk.insert(id.to_owned(), sealed);
        Ok(())
    }

    /// Reads a record.
    pub fn read(&self, id: &str) -> Result<Option<Vec<u8>>, DataKeyError> {
        match self.disk.get(id) {
            Some(sealed) => Ok(Some(self.manager.decrypt(sealed, id.as_bytes())?.to_vec())),
            None => Ok(None),
        }
    }

    /// A restart: forgets the data key, then unlocks it again from the wrapped form at rest.
    /// When the root key was rotated meanwhile, persists the rewrapped form.
    pub async fn restart(&mut self) -> Result<(), DataKeyError> {
        self.manager.lock();
        if let Some(rewrapped) = self.manager.unlock(&self.wrapped).await? {
            self.wrapped = rewrapped;
        }
        Ok(())
    }

    /// The "syncing KMS state" task after a rotation event: rewraps the data key under the
    /// root key's current version without unlocking it again.
    pub async fn sync_kms_state(&mut self) -> Result<(), DataKeyError> {
        self.wrapped = self.manager.rewrap(&self.wrapped).await?;
        Ok(())
    }

    /// Whether the data key is in memory.
    pub fn is_unlocked(&self) -> bool {
        self.manager.is_unlocked()
    }
}
