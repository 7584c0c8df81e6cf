//! Instances: create (with a fresh HSM token as keystore), get, list, delete.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::auth::Identity;
use crate::error::KmsError;
use crate::kms::iam::Action as Permission;
use crate::kms::ids::{AccountId, InstanceId, InstanceRef, Region};
use crate::kms::keystore::Keystore;
use crate::kms::records::{Flavor, InstanceRecord, Lifecycle};
use crate::kms::{InstanceEntry, Kms, Page, encode, lock};
use crate::store::{Change, Tree};

/// A validated `CreateInstance` request.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// Display name (1..=90 characters).
    pub name: String,
    /// Key Protect or HPCS.
    pub flavor: Flavor,
    /// Region; the default when `None`.
    pub region: Option<Region>,
    /// Account; the default when `None`.
    pub account: Option<AccountId>,
}

impl Kms {
    /// Creates an instance and its keystore token.
    pub fn create_instance(
        &self,
        who: &Identity,
        new: NewInstance,
    ) -> Result<InstanceRecord, KmsError> {
        self.authorize(who, None, Permission::CreateInstance)?;
        // An HSM in its error state (failed self-tests) offers no slot: say why.
        if self.hsm.status().state != sim_hsm::ModuleState::Operational {
            return Err(KmsError::Hsm(sim_hsm::HsmError::FipsSelfTestFailed));
        }
        let _admin = lock(&self.instance_admin);
        let record = InstanceRecord {
            id: InstanceId::from_uuid(self.new_id()),
            name: new.name,
            flavor: new.flavor,
            region: new.region.unwrap_or_else(|| self.defaults.region.clone()),
            account: new.account.unwrap_or_else(|| self.defaults.account.clone()),
            create_time: self.now(),
            policies: Default::default(),
        };
        let keystore = Keystore::create(&self.hsm, record.id, &self.credentials)?;
        self.store
            .put(Tree::Instances, record.id.as_bytes(), encode(&record))?;
        self.instances.insert(
            record.id,
            Arc::new(InstanceEntry {
                record: record.clone(),
                keystore: RwLock::new(Some(keystore)),
                aliases: RwLock::new(HashMap::new()),
                import_token: Mutex::new(None),
                mutation: Mutex::new(()),
                policies: RwLock::new(Default::default()),
                awaiting_hsm: std::sync::atomic::AtomicBool::new(false),
            }),
        );
        Ok(record)
    }

    /// Returns an instance. A CRN must match the instance's service, region and account.
    pub fn get_instance(
        &self,
        who: &Identity,
        reference: &InstanceRef,
    ) -> Result<InstanceRecord, KmsError> {
        self.authorize(who, Some(reference.id()), Permission::GetInstance)?;
        self.instance_record(reference)
    }

    fn instance_record(&self, reference: &InstanceRef) -> Result<InstanceRecord, KmsError> {
        let entry = self.instance(reference.id())?;
        if let InstanceRef::Crn(crn) = reference {
            if *crn != entry.record.crn() {
                return Err(KmsError::InstanceNotFound(reference.id()));
            }
        }
        Ok(entry.record.clone())
    }

    /// Lists instances by creation time then id; `after` is the last item of the previous page.
    pub fn list_instances(
        &self,
        who: &Identity,
        page_size: usize,
        after: Option<(i64, InstanceId)>,
    ) -> Result<Page<InstanceRecord>, KmsError> {
        self.authorize(who, None, Permission::ListInstances)?;
        let mut all: Vec<InstanceRecord> = self
            .instances
            .values()
            .iter()
            .map(|e| e.record.clone())
            .collect();
        all.sort_by_key(|r| (r.create_time, r.id));
        let total = all.len();
        let items: Vec<InstanceRecord> = all
            .into_iter()
            .filter(|r| after.is_none_or(|(t, id)| (r.create_time.as_millis(), r.id) > (t, id)))
            .take(page_size + 1)
            .collect();
        Ok(Page::from_overfetch(items, page_size, total))
    }

    /// Deletes an instance: refused while it holds keys unless `force`, which shreds them.
    pub fn delete_instance(
        &self,
        who: &Identity,
        reference: &InstanceRef,
        force: bool,
    ) -> Result<(), KmsError> {
        self.authorize(who, Some(reference.id()), Permission::DeleteInstance)?;
        let _admin = lock(&self.instance_admin);
        let record = self.instance_record(reference)?;
        let entry = self.instance(record.id)?;
        let _instance_guard = lock(&entry.mutation);
        let now = self.now();
        let keys: Vec<_> = self
            .keys
            .values()
            .into_iter()
            .filter(|k| k.snapshot().instance == record.id)
            .collect();
        let live = keys
            .iter()
            .any(|k| matches!(k.snapshot().state_at(now), Lifecycle::Live(_)));
        if live && !force {
            return Err(KmsError::InstanceNotEmpty(record.id));
        }
        for key in &keys {
            let _guard = lock(&key.mutation);
            self.shred(&entry, &key.snapshot())?;
        }
        if let Some(token) = lock(&entry.import_token).take() {
            // A destroyed keystore already lost the token's key pair.
            if let Some(keystore) = entry.keystore_if_intact() {
                keystore.destroy(sim_hsm::ObjectHandle(token.private_handle))?;
                keystore.destroy(sim_hsm::ObjectHandle(token.public_handle))?;
            }
        }
        self.store.apply(vec![
            Change::Delete {
                tree: Tree::Instances,
                key: record.id.as_bytes().to_vec(),
            },
            Change::Delete {
                tree: Tree::ImportTokens,
                key: record.id.as_bytes().to_vec(),
            },
        ])?;
        self.instances.remove(&record.id);
        Ok(())
    }
}
