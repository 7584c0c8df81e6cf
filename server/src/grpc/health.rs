//! `grpc.health.v1.Health`, kept truthful: SERVING only while the HSM is operational and the
//! store is healthy, for the whole server ("") and each kmsim service. The handlers that
//! change the HSM's state (`RunSelfTests`, `Tamper`, `Zeroize`, `Reset`, `ImportSnapshot`)
//! publish the new status before they return, so health changes in the same call; a
//! background watch catches what no call announces (a store that fails).

use std::sync::Arc;

use sim_hsm::ModuleState;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::kms::Kms;

/// Every service whose status is published.
const SERVICES: [&str; 8] = [
    "",
    "kmsim.v1.InstanceService",
    "kmsim.v1.KeyService",
    "kmsim.v1.SimulatorService",
    "kmsim.v1.HsmService",
    "kmsim.v1.IamService",
    "kmsim.v1.RegistrationService",
    "kmsim.v1.EventService",
];

/// Publishes the server's health.
#[derive(Debug)]
pub struct Health {
    kms: Arc<Kms>,
    reporter: HealthReporter,
    /// The status last published (`None` before the first); held across publishing, so two
    /// refreshes never publish out of order.
    last: tokio::sync::Mutex<Option<bool>>,
}

impl Health {
    /// A publisher for `kms` through `reporter`.
    pub fn new(kms: Arc<Kms>, reporter: HealthReporter) -> Self {
        Self {
            kms,
            reporter,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Publishes the current status if it changed; returns whether the server is serving.
    pub async fn refresh(&self) -> bool {
        let mut last = self.last.lock().await;
        // After a failed write the store tries a small write, so that health recovers once
        // the cause (a full disk) is gone.
        let probing = Arc::clone(&self.kms);
        let store = tokio::task::spawn_blocking(move || probing.store_health())
            .await
            .unwrap_or(crate::store::StoreHealth::Failed);
        let audit = self.kms.audit().accepting();
        let serving = self.kms.hsm().status().state == ModuleState::Operational
            && store == crate::store::StoreHealth::Healthy
            && audit.is_ok();
        if *last != Some(serving) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in SERVICES {
                self.reporter.set_service_status(service, status).await;
            }
            if !serving {
                tracing::error!(
                    hsm = ?self.kms.hsm().status().state,
                    store = ?store,
                    audit_trail = audit.err().map(|e| e.to_string()),
                    "health: NOT_SERVING"
                );
            }
            *last = Some(serving);
        }
        serving
    }
}
