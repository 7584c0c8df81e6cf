//! Typed async client for kmsim, the IBM Key Protect / Hyper Protect Crypto Services
//! simulator served over gRPC (package `kmsim.v1`).
//!
//! - [`KmsClient`]: typed methods for the kmsim RPCs, cheap to clone and share across tasks,
//!   configured by [`KmsClient::builder`] ([`KmsClientBuilder`]): TLS (rustls; a CA file or
//!   the system's roots; a client certificate for mutual TLS), credentials (a static bearer
//!   token, or an API key exchanged for tokens refreshed before they expire), connect and
//!   per-call timeouts, and retries of idempotent calls ([`RetryPolicy`]).
//! - [`ClientError`]: keeps the `tonic::Status` and reads its `google.rpc` details: the typed
//!   Key Protect reason ([`ClientError::reason`], a [`Reason`]), field violations, retry delay,
//!   HTTP status.
//! - [`Crn`] and [`KeyRef`]: parsed resource names.
//! - [`secure_import`]: sealing key material for an instance's import token.
//! - [`datakey`]: envelope encryption with one data key ([`DataKeyManager`]).
//! - [`component`]: the database-encryption component a deployment links
//!   ([`component::DeploymentKey`]): provisioning with a full key CRN and registration,
//!   record encryption, following the key's lifecycle events, deprovisioning.
//! - `cli` (cargo feature `cli`, off by default): the `kmsimctl` command-line tool (the binary
//!   only calls `cli::main`); library users link neither clap nor the simulated HSM.
//!
//! # Example
//!
//! Connect, create an instance and a root key, get a data key from the service, and unwrap
//! it again as a deployment does at start-up:
//!
//! ```no_run
//! use kmsim_client::{KeyRef, KmsClient, Reason};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = KmsClient::connect("http://127.0.0.1:7070")
//!     .await?
//!     .with_bearer_token("my-token")?;
//!
//! let instance = client.create_instance("orders-db").await?;
//! let root = client.create_root_key(&instance.id, "orders-db-root").await?;
//! let root = KeyRef::from_key(&root)?;
//!
//! let aad = ["crn:v1:bluemix:public:databases-for-postgresql:us-south:a/acct:db1::"];
//! let data_key = client.generate_data_key(&root, &aad).await?;
//! // Persist `data_key.ciphertext`; use `data_key.plaintext` (zeroized on drop) in memory.
//!
//! let unwrapped = client.unwrap(&root, &data_key.ciphertext, &aad).await?;
//! assert_eq!(unwrapped.plaintext, data_key.plaintext);
//! if let Some(newer) = unwrapped.rewrapped {
//!     // The root key was rotated: persist `newer.ciphertext` instead.
//!     let _ = newer;
//! }
//!
//! // Errors carry the Key Protect reason code.
//! let missing = KeyRef::in_instance(&instance.id, "no-such-alias")?;
//! match client.get_key(&missing).await {
//!     Err(e) if e.reason() == Some(Reason::KeyNotFound) => {}
//!     other => panic!("unexpected: {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod audit;
mod builder;
pub mod ceremony;
#[cfg(feature = "cli")]
pub mod cli;
mod client;
pub mod component;
mod credentials;
pub mod datakey;
mod error;
mod iam;
mod policies;
mod refs;
mod registrations;
mod retry;
pub mod secure_import;

#[cfg(test)]
mod testing;

pub use builder::KmsClientBuilder;
pub use client::{
    AuthenticatedChannel, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT, DEFAULT_KEEP_ALIVE,
    DEFAULT_REQUEST_TIMEOUT, GeneratedDataKey, KmsClient, RewrappedKey, UnwrappedKey, WrappedKey,
};
pub use credentials::{
    BearerAuth, DEFAULT_REFRESH_FRACTION, DEFAULT_TOKEN_LIFETIME, ServerClock, SystemServerClock,
};
pub use datakey::{DataKeyError, DataKeyManager, WrappedDataKey};
pub use error::{ClientError, ERROR_DOMAIN, RpcError};
pub use kmsim_proto::Reason;
pub use refs::{Crn, CrnService, KeyRef, ParseError};
pub use retry::RetryPolicy;

/// The generated `kmsim.v1` messages and clients, re-exported so callers need not depend on
/// `kmsim-proto` directly.
pub use kmsim_proto::v1 as proto;
/// The error-detail types returned by [`ClientError`] accessors.
pub use tonic_types::{ErrorInfo, FieldViolation};
