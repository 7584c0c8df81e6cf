//! kmsim: a local, faithful stand-in for IBM Key Protect and Hyper Protect Crypto Services,
//! served over gRPC and backed by a simulated HSM (`sim-hsm`).
//!
//! The library exposes [`serve`], which runs the whole server on a listener until a shutdown
//! future completes, so tests bind `127.0.0.1:0` and run the real server in-process. The
//! `kmsim` binary is a thin wrapper around it.
//!
//! Layout: `grpc` (the edge: parse, call, map), `auth` (bearer tokens and the layer that
//! authenticates every call), `kms` (the domain, including every permission check in
//! `kms::iam`), `error` (every failure and its one mapping to a gRPC status), `store`
//! (durable state), `clock`, `config`.

pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod faults;
pub mod grpc;
pub mod kms;
pub mod random;
pub mod rest;
pub mod seed;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kmsim_proto::v1::event_service_server::EventServiceServer;
use kmsim_proto::v1::hsm_service_server::HsmServiceServer;
use kmsim_proto::v1::iam_service_server::IamServiceServer;
use kmsim_proto::v1::instance_service_server::InstanceServiceServer;
use kmsim_proto::v1::key_service_server::KeyServiceServer;
use kmsim_proto::v1::registration_service_server::RegistrationServiceServer;
use kmsim_proto::v1::simulator_service_server::SimulatorServiceServer;
use sim_hsm::{Hsm, ModuleState};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub use config::Config;
use config::Storage;
use kms::Kms;
use store::{HsmObjectStore, RedbStore, Store};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] store::StoreError),
    /// The HSM could not start, or refused the master key.
    #[error("HSM: {0}")]
    Hsm(#[from] sim_hsm::HsmError),
    /// Loading the KMS state failed.
    #[error("cannot load the KMS state: {0}")]
    Kms(#[from] error::KmsError),
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The seed file is unreadable, malformed, or conflicts with the stored state.
    #[error("{0}")]
    Seed(#[from] seed::SeedError),
    /// The data directory could not be created or made private.
    #[error("data directory {path}: {source}")]
    DataDirectory {
        /// The directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The bootstrap admin's API key could not be written (nothing was created).
    #[error("cannot write the admin API key file {path}: {source}")]
    AdminKeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The file, in the data directory, that receives the bootstrap admin's API key.
pub const ADMIN_KEY_FILE: &str = "admin-api-key";

/// How often health is re-evaluated, and the longest the scheduler sleeps.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Opens the store, starts the HSM with the configured master key, loads the KMS state and
/// returns the domain, ready to serve. On first start it creates the bootstrap admin and, for
/// a data directory, writes its API key to `<data-dir>/admin-api-key` (mode 0600); with
/// temporary storage the admin is reachable only through the development token.
pub fn open(config: &Config) -> Result<Arc<Kms>, ServeError> {
    let store: Arc<dyn Store> = match &config.storage {
        Storage::Directory(dir) => {
            config::create_private_dir(dir).map_err(|source| ServeError::DataDirectory {
                path: dir.clone(),
                source,
            })?;
            Arc::new(RedbStore::open(dir, config.store)?)
        }
        Storage::Temporary => Arc::new(RedbStore::temporary()?),
    };
    let mut hsm_config = config.hsm.clone();
    if let Some(seed) = config.deterministic {
        tracing::warn!(
            seed,
            "DETERMINISTIC MODE: every id, key, IV, nonce and secret is predictable from the seed; for tests only, never for real data"
        );
        hsm_config.rng_seed = Some(random::hsm_seed(seed));
    }
    let hsm = Arc::new(Hsm::new(
        hsm_config,
        Arc::new(HsmObjectStore::new(Arc::clone(&store))),
    )?);
    if hsm.status().state == ModuleState::Operational {
        hsm.activate_dev_master_key(&config.master_key)?;
    } else {
        // Start anyway, NOT_SERVING: key operations fail with the HSM's self-test error, and a
        // passing `HsmService.RunSelfTests` activates the master key and opens the keystores.
        // A failure forced by configuration (`HsmConfig::fail_self_test`, SIM_HSM_FAIL_CAST)
        // applies to the power-on run only, so that a later run can pass.
        hsm.set_self_test_failure(None);
        tracing::error!(
            last_failure = ?hsm.last_error().map(|f| f.test),
            "HSM self-tests failed at start-up: serving NOT_SERVING until HsmService/RunSelfTests passes"
        );
    }
    let random = random::Randomness::default();
    if let Some(seed) = config.deterministic {
        random.make_deterministic(seed);
    }
    let kms = Kms::open(
        hsm,
        Arc::clone(&config.master_key),
        store,
        Arc::clone(&config.clock),
        config.credentials.clone(),
        config.defaults.clone(),
        config.dev_token,
        random,
    )?;
    kms.audit().configure(config.audit);
    if let (true, Storage::Directory(dir)) = (config.dev_token, &config.storage) {
        let secrets = dir.join(config::DEV_SECRETS_FILE);
        if secrets.exists() {
            // `--dev`: a master key a ceremony makes current is written back to this file.
            kms.persist_master_key_to(secrets);
        }
    }
    // The whole seed file is read and checked against the stored state before anything is
    // written (the admin's key file included): a bad file stops the start-up here.
    let seed_file = match &config.seed_file {
        Some(path) => {
            let file = seed::SeedFile::load(path)?;
            seed::check(&kms, &file).map_err(|e| e.in_file(path))?;
            Some((path, file))
        }
        None => None,
    };
    let key_file = match &config.storage {
        Storage::Directory(dir) => Some(dir.join(ADMIN_KEY_FILE)),
        Storage::Temporary => None,
    };
    let created = kms
        .bootstrap_admin(|secret| match &key_file {
            Some(path) => {
                // A file left by a start that failed before committing holds a key that was
                // never stored: replace it.
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
                config::write_private(path, format!("{secret}\n").as_bytes())
            }
            None => Ok(()),
        })
        .map_err(|source| ServeError::AdminKeyFile {
            path: key_file.clone().unwrap_or_default(),
            source,
        })?;
    if created {
        match &key_file {
            Some(path) => tracing::info!(
                path = %path.display(),
                "created the bootstrap admin identity; its API key is in this file (exchange it with IamService/CreateToken)"
            ),
            None => tracing::info!(
                "created the bootstrap admin identity (temporary storage: use the development token)"
            ),
        }
    }
    if let Some((path, file)) = seed_file {
        let summary = seed::apply(&kms, &file).map_err(|e| e.in_file(path))?;
        tracing::info!(path = %path.display(), created = summary.created, unchanged = summary.unchanged, "seed file applied");
    }
    Ok(Arc::new(kms))
}

/// Runs the server on `listener` until `shutdown` completes, then drains in-flight calls and
/// returns.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let options = config.serve.clone();
    let kms = tokio::task::spawn_blocking(move || open(&config))
        .await
        .map_err(|_| {
            ServeError::Kms(error::KmsError::Store(store::StoreError::backend(
                "start-up task failed",
            )))
        })??;
    serve_kms_with(listener, kms, &options, shutdown).await
}

/// How the listener serves: TLS, and the transport's limits.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServeOptions {
    /// TLS (and mTLS when it has a client CA); `None`: plaintext HTTP/2.
    pub tls: Option<tls::TlsSettings>,
}

/// Runs the gRPC server on `listener` and, when `rest` is given, the Key Protect REST facade
/// ([`rest`]) on it, over the same domain, until `shutdown` completes.
pub async fn serve_with_rest(
    listener: TcpListener,
    rest: Option<TcpListener>,
    kms: Arc<Kms>,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let rest_task = rest.map(|rest_listener| {
        let mut stopped = stopped.clone();
        tokio::spawn(rest::serve(rest_listener, Arc::clone(&kms), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    });
    let grpc_shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let result = serve_kms_with(listener, Arc::clone(&kms), options, grpc_shutdown).await;
    if let Some(task) = rest_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the REST facade failed"),
            Err(_) => tracing::error!("the REST facade's task stopped unexpectedly"),
        }
        // The REST calls answered while gRPC drained are on disk too.
        if let Err(error) = kms.audit().sync().await {
            tracing::error!(%error, "audit events could not be written at shutdown");
        }
    }
    result
}

/// Runs the server for an already opened domain, in plaintext.
pub async fn serve_kms(
    listener: TcpListener,
    kms: Arc<Kms>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_kms_with(listener, kms, &ServeOptions::default(), shutdown).await
}

/// Runs the server for an already opened domain with `options`.
pub async fn serve_kms_with(
    listener: TcpListener,
    kms: Arc<Kms>,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kmsim_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kmsim_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let (stop_background, stopped) = tokio::sync::watch::channel(false);
    let health = Arc::new(grpc::health::Health::new(Arc::clone(&kms), health_reporter));
    health.refresh().await;
    let health_task = tokio::spawn(watch_health(Arc::clone(&health), stopped.clone()));
    let timer_task = tokio::spawn(run_timers(Arc::clone(&kms), stopped));
    kms.audit().set_closing(false);
    let closing = Arc::clone(&kms);
    let shutdown = async move {
        shutdown.await;
        // Live audit and lifecycle watches end, so draining does not wait for them.
        closing.audit().set_closing(true);
    };

    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &options.tls {
        server = server.tls_config(tls.server_config())?;
    }
    // Small unary calls must not wait for Nagle's algorithm.
    let address = listener
        .local_addr()
        .map_or_else(|error| format!("unknown ({error})"), |a| a.to_string());
    let incoming = incoming(listener);
    tracing::info!(
        %address,
        tls = options.tls.as_ref().map_or("off", |t| if t.is_mutual() { "mutual" } else { "on" }),
        "kmsim ready: the store is open and the listener serves"
    );
    let result = server
        // The audit layer outermost: it records every call, refused ones included.
        .layer(audit::layer::AuditLayer::new(Arc::clone(&kms)))
        // Authentication first: an unauthenticated call never reaches the fault rules.
        .layer(auth::layer::AuthLayer::new(Arc::clone(&kms)))
        .layer(faults::layer::FaultLayer::new(Arc::clone(kms.faults())))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InstanceServiceServer::new(grpc::instances::Instances::new(
            Arc::clone(&kms),
        )))
        .add_service(KeyServiceServer::new(grpc::keys::Keys::new(Arc::clone(
            &kms,
        ))))
        .add_service(SimulatorServiceServer::new(
            grpc::simulator::Simulator::new(Arc::clone(&kms), Arc::clone(&health)),
        ))
        .add_service(HsmServiceServer::new(grpc::hsm::HsmAdmin::new(
            Arc::clone(&kms),
            Arc::clone(&health),
        )))
        .add_service(IamServiceServer::new(grpc::iam::Iam::new(Arc::clone(&kms))))
        .add_service(RegistrationServiceServer::new(
            grpc::registrations::Registrations::new(Arc::clone(&kms)),
        ))
        .add_service(EventServiceServer::new(grpc::events::Events::new(
            Arc::clone(&kms),
        )))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = stop_background.send(true);
    // Every answered call's audit event is on disk before the server returns.
    if let Err(error) = kms.audit().sync().await {
        tracing::error!(%error, "audit events could not be written at shutdown");
    }
    let _ = health_task.await;
    let _ = timer_task.await;
    result.map_err(ServeError::from)
}

/// Re-evaluates health every [`WATCH_INTERVAL`], for what no call announces (a failing
/// store); the calls that change the HSM's state publish it themselves (`grpc::health`).
/// The connections accepted on `listener`, each with `TCP_NODELAY` set: a small unary
/// response is written at once instead of waiting (Nagle) for the client's delayed ACK of the
/// previous segment, which otherwise holds one-call-in-flight clients to ~40 ms per call.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn watch_health(
    health: Arc<grpc::health::Health>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        health.refresh().await;
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Fires due timers: on every jump of a simulated clock at once, otherwise at least every
/// [`WATCH_INTERVAL`] (sooner when a deadline falls earlier).
async fn run_timers(kms: Arc<Kms>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut jumps = kms.clock().jumps();
    loop {
        let kms_for_task = Arc::clone(&kms);
        match tokio::task::spawn_blocking(move || kms_for_task.fire_due_timers()).await {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(changed)) => tracing::debug!(changed, "timers fired"),
            Ok(Err(error)) => tracing::error!(%error, "firing timers failed"),
        }
        let wait = kms
            .next_deadline()
            .map(|at| kms.now().until(at).min(WATCH_INTERVAL))
            .unwrap_or(WATCH_INTERVAL);
        let jumped = async {
            match jumps.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = jumped => {}
            _ = stopped.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut incoming = incoming(listener);
        let client = tokio::net::TcpStream::connect(address).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "the server side sets TCP_NODELAY"
        );
        drop(client);
    }

    #[tokio::test]
    async fn a_plain_accept_does_not_set_nodelay() {
        // The control: without `incoming`, Linux leaves Nagle on, so the test above is
        // checking something the kernel does not do by itself.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap());
        drop(client);
    }
}
