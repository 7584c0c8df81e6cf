//! The RPCs `kmsim-bench` drives: their names, the fixtures they need (a token, an instance,
//! root keys, a ciphertext), and one call of each over an authenticated connection.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kmsim_client::{AuthenticatedChannel, BearerAuth};

use crate::h2;
use kmsim_proto::v1 as pb;
use pb::iam_service_client::IamServiceClient;
use pb::instance_service_client::InstanceServiceClient;
use pb::key_service_client::KeyServiceClient;
use pb::simulator_service_client::SimulatorServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The longest token lifetime the server grants, in seconds (a day).
const TOKEN_LIFETIME_SECONDS: i32 = 86_400;
/// The additional authenticated data of every wrap, as a database would bind a data key to
/// its table.
const AAD: &str = "bench-table";

/// One RPC under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Rpc {
    /// `grpc.health.v1.Health/Check`: the baseline (no kmsim code beyond the layers).
    Health,
    /// `KeyService/WrapKey` of a 32-byte data key.
    Wrap,
    /// `KeyService/UnwrapKey` of a wrapped 32-byte data key.
    Unwrap,
    /// `KeyService/RewrapKey` of the same ciphertext.
    Rewrap,
    /// `KeyService/GetKey` of a root key.
    Get,
    /// `KeyService/ListKeys`, one page.
    List,
    /// `KeyService/CreateKey` of a generated root key (durable).
    Create,
    /// `KeyService/RotateKey` of a root key (durable).
    Rotate,
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Health => "Health/Check",
            Self::Wrap => "WrapKey",
            Self::Unwrap => "UnwrapKey",
            Self::Rewrap => "RewrapKey",
            Self::Get => "GetKey",
            Self::List => "ListKeys",
            Self::Create => "CreateKey",
            Self::Rotate => "RotateKey",
        })
    }
}

/// What the calls operate on, shared read-only by every stream.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The bearer-token interceptor (the token itself is never printed).
    pub auth: BearerAuth,
    /// The instance every key lives in.
    pub instance: String,
    /// The root key that wraps, unwraps, rewraps and is read.
    pub key: String,
    /// Fresh root keys for RotateKey (a key rotates at most once an hour), so rotation
    /// never changes the wrap key's version either.
    pub rotation_pool: Arc<RotationPool>,
    /// A 32-byte data key wrapped by `key` under [`AAD`].
    pub ciphertext: Vec<u8>,
    /// Page size of ListKeys.
    pub list_page_size: i32,
}

/// The loaded clients' transport: one bare HTTP/2 connection with the bearer token.
type Loaded = InterceptedService<h2::Connection, BearerAuth>;

/// The clients of one connection.
#[derive(Clone)]
pub struct Clients {
    keys: KeyServiceClient<Loaded>,
    health: HealthClient<Loaded>,
}

impl Clients {
    /// Clients over `connection` to `origin`, sending the fixture's token on every call
    /// (health included, as a real client would).
    pub fn new(connection: h2::Connection, origin: &Uri, auth: &BearerAuth) -> Self {
        let authenticated = InterceptedService::new(connection, auth.clone());
        Self {
            keys: KeyServiceClient::with_origin(authenticated.clone(), origin.clone()),
            health: HealthClient::with_origin(authenticated, origin.clone()),
        }
    }

    /// Makes one `rpc` call; `sequence` makes created key names unique.
    pub async fn call(
        &mut self,
        rpc: Rpc,
        fixture: &Fixture,
        sequence: u64,
    ) -> Result<Done, tonic::Status> {
        match rpc {
            Rpc::Health => {
                let status = self
                    .health
                    .check(HealthCheckRequest::default())
                    .await?
                    .into_inner()
                    .status;
                if status != tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return Err(tonic::Status::unavailable("health: not SERVING"));
                }
            }
            Rpc::Wrap => {
                self.keys
                    .wrap_key(pb::WrapKeyRequest {
                        key: fixture.key.clone(),
                        plaintext: vec![0x5a; 32],
                        aad: vec![AAD.into()],
                    })
                    .await?;
            }
            Rpc::Unwrap => {
                self.keys
                    .unwrap_key(pb::UnwrapKeyRequest {
                        key: fixture.key.clone(),
                        ciphertext: fixture.ciphertext.clone(),
                        aad: vec![AAD.into()],
                    })
                    .await?;
            }
            Rpc::Rewrap => {
                self.keys
                    .rewrap_key(pb::RewrapKeyRequest {
                        key: fixture.key.clone(),
                        ciphertext: fixture.ciphertext.clone(),
                        aad: vec![AAD.into()],
                    })
                    .await?;
            }
            Rpc::Get => {
                self.keys
                    .get_key(pb::GetKeyRequest {
                        key: fixture.key.clone(),
                    })
                    .await?;
            }
            Rpc::List => {
                self.keys
                    .list_keys(pb::ListKeysRequest {
                        instance: fixture.instance.clone(),
                        page_size: fixture.list_page_size,
                        ..Default::default()
                    })
                    .await?;
            }
            Rpc::Create => {
                self.keys
                    .create_key(root_key_request(
                        &fixture.instance,
                        format!("bench-{sequence}"),
                    ))
                    .await?;
            }
            Rpc::Rotate => {
                let Some(key) = fixture.rotation_pool.take() else {
                    return Ok(Done::Exhausted);
                };
                self.keys
                    .rotate_key(pb::RotateKeyRequest {
                        key: key.to_owned(),
                        material: None,
                    })
                    .await?;
            }
        }
        Ok(Done::Called)
    }
}

/// What became of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// It was made and succeeded.
    Called,
    /// Nothing left to call it on (the rotation pool is used up): the stream stops.
    Exhausted,
}

/// Root keys never rotated, each handed out once.
#[derive(Debug, Default)]
pub struct RotationPool {
    keys: Vec<String>,
    next: AtomicUsize,
}

impl RotationPool {
    /// A pool of `keys`.
    pub fn new(keys: Vec<String>) -> Self {
        Self {
            keys,
            next: AtomicUsize::new(0),
        }
    }

    /// The next unused key, if any.
    pub fn take(&self) -> Option<&str> {
        self.keys
            .get(self.next.fetch_add(1, Ordering::Relaxed))
            .map(String::as_str)
    }

    /// True once every key has been handed out.
    pub fn exhausted(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.keys.len()
    }
}

/// Creates a generated 256-bit root key named `bench-<sequence>` and returns its CRN.
pub async fn create_root_key(
    keys: &mut KeyServiceClient<AuthenticatedChannel>,
    instance: &str,
    sequence: u64,
) -> Result<String, tonic::Status> {
    create_root_key_named(keys, instance, format!("bench-{sequence}")).await
}

/// Creates a generated 256-bit root key named `name` and returns its CRN.
pub async fn create_root_key_named(
    keys: &mut KeyServiceClient<AuthenticatedChannel>,
    instance: &str,
    name: String,
) -> Result<String, tonic::Status> {
    let key = keys
        .create_key(root_key_request(instance, name))
        .await?
        .into_inner()
        .key
        .ok_or_else(|| tonic::Status::internal("CreateKey answered without a key"))?;
    Ok(key.crn)
}

/// The request for a generated 256-bit root key named `name`.
fn root_key_request(instance: &str, name: String) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        instance: instance.to_owned(),
        name,
        r#type: pb::KeyType::Root as i32,
        ..Default::default()
    }
}

/// Exchanges `api_key` for an ES256 bearer token (IamService/CreateToken) and returns its
/// interceptor.
pub async fn authenticate(channel: &Channel, api_key: &str) -> Result<BearerAuth, String> {
    let token = IamServiceClient::new(channel.clone())
        .create_token(pb::CreateTokenRequest {
            api_key: api_key.to_owned(),
            expires_in_seconds: TOKEN_LIFETIME_SECONDS,
        })
        .await
        .map_err(|status| format!("CreateToken refused the API key: {status}"))?
        .into_inner()
        .access_token;
    BearerAuth::new(&token).map_err(|error| format!("unusable token: {error}"))
}

/// Creates the bench instance, its root key, the ciphertext, and `rotation_keys` keys to
/// rotate (created by `streams` concurrent calls).
pub async fn prepare(
    channel: &Channel,
    auth: BearerAuth,
    list_page_size: i32,
    rotation_keys: usize,
    streams: usize,
) -> Result<Fixture, tonic::Status> {
    let instance = create_instance(channel, &auth).await?;
    let mut keys = KeyServiceClient::with_interceptor(channel.clone(), auth.clone());
    let key = create_root_key(&mut keys, &instance, 0).await?;
    let mut creating = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..streams.min(rotation_keys) {
        let mut keys = keys.clone();
        let instance = instance.clone();
        let next = Arc::clone(&next);
        creating.spawn(async move {
            let mut created = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= rotation_keys {
                    return Ok::<_, tonic::Status>(created);
                }
                let name = format!("bench-rotate-{index}");
                created.push(create_root_key_named(&mut keys, &instance, name).await?);
            }
        });
    }
    let mut pool = Vec::with_capacity(rotation_keys);
    while let Some(created) = creating.join_next().await {
        pool.extend(created.map_err(|_| tonic::Status::internal("a setup task failed"))??);
    }
    let ciphertext = keys
        .wrap_key(pb::WrapKeyRequest {
            key: key.clone(),
            plaintext: vec![0x5a; 32],
            aad: vec![AAD.into()],
        })
        .await?
        .into_inner()
        .ciphertext;
    Ok(Fixture {
        auth,
        instance,
        key,
        rotation_pool: Arc::new(RotationPool::new(pool)),
        ciphertext,
        list_page_size,
    })
}

/// Creates a Key Protect instance named "kmsim-bench" and returns its id.
pub async fn create_instance(
    channel: &Channel,
    auth: &BearerAuth,
) -> Result<String, tonic::Status> {
    InstanceServiceClient::with_interceptor(channel.clone(), auth.clone())
        .create_instance(pb::CreateInstanceRequest {
            name: "kmsim-bench".into(),
            flavor: pb::InstanceFlavor::KeyProtect as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .instance
        .map(|instance| instance.id)
        .ok_or_else(|| tonic::Status::internal("CreateInstance answered without an instance"))
}

/// A SimulatorService client sending `auth`.
pub fn simulator(
    channel: &Channel,
    auth: &BearerAuth,
) -> SimulatorServiceClient<AuthenticatedChannel> {
    SimulatorServiceClient::with_interceptor(channel.clone(), auth.clone())
}
