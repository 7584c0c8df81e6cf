//! The cross-service test harness: starts the real kmsim server in-process on `127.0.0.1:0`
//! with a simulated clock ([`TestServer`]), and offers the small assertions every scenario
//! needs (the gRPC code and Key Protect reason of a failure). Its clients authenticate with
//! the development token (the bootstrap admin) unless a test asks for another token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod deployment;

use std::sync::Arc;
use std::time::Duration;

use kmsim_client::{AuthenticatedChannel, BearerAuth};
use kmsim_proto::v1 as pb;
use kmsim_server::Config;
use kmsim_server::clock::{SimulatedClock, Timestamp};
use kmsim_server::kms::Kms;
use pb::event_service_client::EventServiceClient;
use pb::hsm_service_client::HsmServiceClient;
use pb::iam_service_client::IamServiceClient;
use pb::instance_service_client::InstanceServiceClient;
use pb::key_service_client::KeyServiceClient;
use pb::registration_service_client::RegistrationServiceClient;
use pb::simulator_service_client::SimulatorServiceClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A running in-process server with a simulated clock.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The server's clock: advance it to drive every timer.
    pub clock: Arc<SimulatedClock>,
    /// The domain, for white-box checks.
    pub kms: Arc<Kms>,
    channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server over temporary storage, its clock frozen at a fixed date.
    pub async fn start() -> Self {
        let clock = Arc::new(SimulatedClock::new(Timestamp::from_millis(
            1_767_225_600_000,
        )));
        let config = Config::ephemeral(clock.clone());
        Self::start_with(config, clock).await
    }

    /// Starts a server over temporary storage on the system clock (`--clock system`). Its
    /// `clock` field is a detached simulated clock: do not use [`TestServer::advance`].
    pub async fn start_with_system_clock() -> Self {
        let config = Config::ephemeral(Arc::new(kmsim_server::clock::SystemClock));
        Self::start_with(config, Arc::new(SimulatedClock::starting_now())).await
    }

    /// Starts a server with `config`, whose clock must be `clock` (except for
    /// [`TestServer::start_with_system_clock`]).
    pub async fn start_with(config: Config, clock: Arc<SimulatedClock>) -> Self {
        Self::start_at(config, clock, "127.0.0.1:0").await
    }

    /// As [`TestServer::start_with`], listening on `address` (for example the address of a
    /// server that was stopped, so its clients reconnect to the restarted one).
    pub async fn start_at(config: Config, clock: Arc<SimulatedClock>, address: &str) -> Self {
        let kms = tokio::task::spawn_blocking(move || kmsim_server::open(&config))
            .await
            .unwrap()
            .expect("server state opens");
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let serving = Arc::clone(&kms);
        let task = tokio::spawn(async move {
            kmsim_server::serve_kms(listener, serving, async {
                let _ = stop.await;
            })
            .await
            .expect("server runs until shutdown");
        });
        let endpoint = format!("http://{address}");
        let channel = Channel::from_shared(endpoint.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("server accepts connections");
        Self {
            endpoint,
            clock,
            kms,
            channel,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// A channel to the server.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A KeyService client acting as the admin (development token).
    pub fn keys(&self) -> KeyServiceClient<AuthenticatedChannel> {
        self.keys_as(Some(DEV_TOKEN))
    }

    /// An InstanceService client acting as the admin (development token).
    pub fn instances(&self) -> InstanceServiceClient<AuthenticatedChannel> {
        self.instances_as(Some(DEV_TOKEN))
    }

    /// An IamService client acting as the admin (development token).
    pub fn iam(&self) -> IamServiceClient<AuthenticatedChannel> {
        self.iam_as(Some(DEV_TOKEN))
    }

    /// An interceptor sending `token` (none when `None`).
    pub fn auth(token: Option<&str>) -> BearerAuth {
        token.map_or_else(BearerAuth::default, |t| {
            BearerAuth::new(t).expect("test tokens are visible ASCII")
        })
    }

    /// A KeyService client sending `token`.
    pub fn keys_as(&self, token: Option<&str>) -> KeyServiceClient<AuthenticatedChannel> {
        KeyServiceClient::with_interceptor(self.channel(), Self::auth(token))
    }

    /// An InstanceService client sending `token`.
    pub fn instances_as(&self, token: Option<&str>) -> InstanceServiceClient<AuthenticatedChannel> {
        InstanceServiceClient::with_interceptor(self.channel(), Self::auth(token))
    }

    /// An IamService client sending `token`.
    pub fn iam_as(&self, token: Option<&str>) -> IamServiceClient<AuthenticatedChannel> {
        IamServiceClient::with_interceptor(self.channel(), Self::auth(token))
    }

    /// A RegistrationService client acting as the admin (development token).
    pub fn registrations(&self) -> RegistrationServiceClient<AuthenticatedChannel> {
        self.registrations_as(Some(DEV_TOKEN))
    }

    /// A RegistrationService client sending `token`.
    pub fn registrations_as(
        &self,
        token: Option<&str>,
    ) -> RegistrationServiceClient<AuthenticatedChannel> {
        RegistrationServiceClient::with_interceptor(self.channel(), Self::auth(token))
    }

    /// An EventService client acting as the admin (development token).
    pub fn events(&self) -> EventServiceClient<AuthenticatedChannel> {
        self.events_as(Some(DEV_TOKEN))
    }

    /// An EventService client sending `token`.
    pub fn events_as(&self, token: Option<&str>) -> EventServiceClient<AuthenticatedChannel> {
        EventServiceClient::with_interceptor(self.channel(), Self::auth(token))
    }

    /// A SimulatorService client.
    pub fn simulator(&self) -> SimulatorServiceClient<AuthenticatedChannel> {
        SimulatorServiceClient::with_interceptor(self.channel(), Self::auth(Some(DEV_TOKEN)))
    }

    /// An HsmService client.
    pub fn hsm(&self) -> HsmServiceClient<AuthenticatedChannel> {
        HsmServiceClient::with_interceptor(self.channel(), Self::auth(Some(DEV_TOKEN)))
    }

    /// Advances the clock through `SimulatorService.AdvanceClock` (which fires every timer
    /// that falls due before returning).
    pub async fn advance_rpc(&self, by: Duration) -> pb::AdvanceClockResponse {
        self.simulator()
            .advance_clock(pb::AdvanceClockRequest {
                duration: Some(prost_types::Duration::try_from(by).unwrap()),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Advances the simulated clock and fires every timer that falls due.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.kms.fire_due_timers().expect("timers fire");
    }

    /// Creates a Key Protect instance and returns its id.
    pub async fn instance(&self) -> String {
        self.instance_of(pb::InstanceFlavor::KeyProtect).await
    }

    /// Creates an instance of `flavor` and returns its id.
    pub async fn instance_of(&self, flavor: pb::InstanceFlavor) -> String {
        self.instances()
            .create_instance(pb::CreateInstanceRequest {
                name: "test instance".into(),
                flavor: flavor as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .instance
            .unwrap()
            .id
    }

    /// Exchanges `api_key` for a bearer token valid for a day of the server's clock (the
    /// longest allowed, so tests that move a simulated clock by hours keep it).
    pub async fn token(&self, api_key: &str) -> String {
        self.iam_as(None)
            .create_token(pb::CreateTokenRequest {
                api_key: api_key.to_owned(),
                expires_in_seconds: 86_400,
            })
            .await
            .expect("the API key exchanges for a token")
            .into_inner()
            .access_token
    }

    /// Creates a generated 256-bit root key in `instance` and returns it.
    pub async fn root_key(&self, instance: &str) -> pb::Key {
        self.keys()
            .create_key(pb::CreateKeyRequest {
                instance: instance.to_owned(),
                name: "root key".into(),
                r#type: pb::KeyType::Root as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap()
    }

    /// A typed client of the server, acting as the admin (development token).
    pub fn client(&self) -> kmsim_client::KmsClient {
        kmsim_client::KmsClient::from_channel(self.channel())
            .with_bearer_token(DEV_TOKEN)
            .expect("the development token is visible ASCII")
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown_now().await;
    }

    async fn shutdown_now(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A configuration over `dir` (persistent sled storage) with the master key `master`, the
/// given HSM PINs and `clock`, accepting the development token: for restart scenarios.
pub fn persistent_config(
    dir: &std::path::Path,
    master: [u8; 32],
    credentials: &kmsim_server::kms::keystore::HsmCredentials,
    clock: Arc<SimulatedClock>,
) -> Config {
    let mut config = Config::persistent(
        dir.to_path_buf(),
        sim_hsm::DevMasterKey::from_bytes(master),
        credentials.clone(),
    );
    config.clock = clock;
    config.dev_token = true;
    config
}

/// The development token every harness client sends by default.
pub const DEV_TOKEN: &str = kmsim_server::auth::DEV_TOKEN;

/// `instances/{instance}/keys/{key}`.
pub fn key_path(instance: &str, key: &str) -> String {
    format!("instances/{instance}/keys/{key}")
}

/// The `ErrorInfo` reason of a status, if any.
pub fn reason(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

/// Asserts that `result` failed with `code` and Key Protect `reason`, and returns the status.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    expected_reason: &str,
) -> Status {
    let status = match result {
        Ok(value) => panic!("expected {code:?}/{expected_reason}, got Ok({value:?})"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "wrong code for {status:?}");
    assert_eq!(
        reason(&status).as_deref(),
        Some(expected_reason),
        "wrong reason for {status:?}"
    );
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.domain, "kmsim");
    assert!(info.metadata.contains_key("http_status"));
    status
}

/// The field names of a status's `BadRequest` violations.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}
