//! A simulated database deployment, built only on the public client API
//! (`kmsim_client::component`): it keeps its rows on its own "disk" (an embedded map),
//! encrypted by the component with a data key wrapped by a customer root key (or a random one);
//! shows a task list (a "Syncing KMS state" task while a rotation is re-encrypted, done once
//! the event is acknowledged) and a nodes view with the key's status; takes backups encrypted
//! under a separate key; can be deleted (soft deletion: its registration stays 9 days) and
//! restored from a backup into a new deployment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use kmsim_client::KmsClient;
use kmsim_client::component::{
    AccessState, ComponentError, DeploymentKey, FollowObserver, MemoryStateStore,
};
use kmsim_client::proto::{LifecycleEvent, LifecycleEventKind, Registration};
use tokio::sync::oneshot;

/// The task a deployment shows while it re-encrypts after a rotation.
pub const SYNC_TASK: &str = "Syncing KMS state";

/// The CRN of deployment `name` of `databases-for-postgresql`.
pub fn deployment_crn(name: &str) -> String {
    format!("crn:v1:bluemix:public:databases-for-postgresql:us-south:a/kmsim:{name}::")
}

/// One entry of the task list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// What it does.
    pub name: String,
    /// Finished.
    pub done: bool,
}

/// One node of the nodes view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's name.
    pub name: String,
    /// The status of the key that protects its disk.
    pub key_status: AccessState,
}

/// Keeps the task list as the component applies events.
#[derive(Clone, Default)]
struct TaskList(Arc<Mutex<Vec<Task>>>);

impl TaskList {
    fn all(&self) -> Vec<Task> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl FollowObserver for TaskList {
    fn started(&self, event: &LifecycleEvent) {
        if event.kind == LifecycleEventKind::Rotate as i32 {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Task {
                    name: SYNC_TASK.to_owned(),
                    done: false,
                });
        }
    }

    fn finished(&self, event: &LifecycleEvent, _: AccessState) {
        if event.kind == LifecycleEventKind::Rotate as i32 {
            let mut tasks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(task) = tasks.iter_mut().rev().find(|t| t.name == SYNC_TASK) {
                task.done = true;
            }
        }
    }
}

/// A backup: every row, encrypted under the backup key.
#[derive(Debug, Clone)]
pub struct Backup {
    rows: BTreeMap<String, Vec<u8>>,
}

/// A running deployment.
pub struct Deployment {
    name: String,
    key: Arc<DeploymentKey>,
    disk: BTreeMap<String, Vec<u8>>,
    tasks: TaskList,
    stop_following: Option<oneshot::Sender<()>>,
}

impl Deployment {
    /// Creates deployment `name`: provisions its data key under `key_crn` (a full root key CRN;
    /// `None` for a random key) as the database service `service`, and starts following the
    /// key.
    ///
    /// # Errors
    /// The component's provisioning errors.
    pub async fn create(
        service: KmsClient,
        name: &str,
        key_crn: Option<&str>,
    ) -> Result<Self, ComponentError> {
        let store = Arc::new(MemoryStateStore::new());
        let key = Arc::new(
            DeploymentKey::provision(service, &deployment_crn(name), key_crn, store).await?,
        );
        let tasks = TaskList::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let follower = Arc::clone(&key);
        let observer = tasks.clone();
        tokio::spawn(async move {
            follower
                .follow_observed(
                    async {
                        let _ = stopped.await;
                    },
                    &observer,
                )
                .await;
        });
        Ok(Self {
            name: name.to_owned(),
            key,
            disk: BTreeMap::new(),
            tasks,
            stop_following: Some(stop),
        })
    }

    /// Creates deployment `name` from `backup`, whose rows were encrypted under `backup_key`.
    ///
    /// # Errors
    /// As [`Deployment::create`]; decrypting the backup.
    pub async fn restore(
        service: KmsClient,
        name: &str,
        key_crn: Option<&str>,
        backup: &Backup,
        backup_key: &DeploymentKey,
    ) -> Result<Self, ComponentError> {
        let mut deployment = Self::create(service, name, key_crn).await?;
        for (id, sealed) in &backup.rows {
            let row = backup_key.decrypt(id, sealed)?;
            deployment.write(id, &row)?;
        }
        Ok(deployment)
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The deployment's data key component.
    pub fn key(&self) -> &DeploymentKey {
        &self.key
    }

    /// Writes a row, encrypted.
    ///
    /// # Errors
    /// [`ComponentError::AccessRefused`] while the key is disabled or shredded.
    pub fn write(&mut self, id: &str, value: &[u8]) -> Result<(), ComponentError> {
        let sealed = self.key.encrypt(id, value)?;
        self.disk.insert(id.to_owned(), sealed);
        Ok(())
    }

    /// Reads a row.
    ///
    /// # Errors
    /// [`ComponentError::AccessRefused`] while the key is disabled or shredded.
    pub fn read(&self, id: &str) -> Result<Option<Vec<u8>>, ComponentError> {
        self.disk
            .get(id)
            .map(|sealed| self.key.decrypt(id, sealed).map(|row| row.to_vec()))
            .transpose()
    }

    /// The ids of the rows on disk: metadata, readable whatever the key's state.
    pub fn row_ids(&self) -> Vec<String> {
        self.disk.keys().cloned().collect()
    }

    /// The task list.
    pub fn tasks(&self) -> Vec<Task> {
        self.tasks.all()
    }

    /// The nodes view: each member with the status of the key that protects its disk.
    pub fn nodes(&self) -> Vec<Node> {
        ["member-1", "member-2"]
            .map(|name| Node {
                name: name.to_owned(),
                key_status: self.key.access(),
            })
            .to_vec()
    }

    /// The nodes' periodic check of the key against the KMS (catches what no lifecycle event
    /// announces, such as an HSM zeroization).
    ///
    /// # Errors
    /// A KMS failure that says nothing of the key.
    pub async fn check_key(&self) -> Result<AccessState, ComponentError> {
        self.key.verify().await
    }

    /// A backup of every row, encrypted under `backup_key`.
    ///
    /// # Errors
    /// [`ComponentError::AccessRefused`] while either key refuses.
    pub fn backup(&self, backup_key: &DeploymentKey) -> Result<Backup, ComponentError> {
        let mut rows = BTreeMap::new();
        for (id, sealed) in &self.disk {
            let row = self.key.decrypt(id, sealed)?;
            rows.insert(id.clone(), backup_key.encrypt(id, &row)?);
        }
        Ok(Backup { rows })
    }

    /// Deletes the deployment (soft deletion): stops following the key and deletes its
    /// registration, which stays soft-deleted for 9 days.
    ///
    /// # Errors
    /// The KMS call's failure.
    pub async fn delete(mut self) -> Result<Option<Registration>, ComponentError> {
        if let Some(stop) = self.stop_following.take() {
            let _ = stop.send(());
        }
        self.key.deprovision(None).await
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_following.take() {
            let _ = stop.send(());
        }
    }
}
