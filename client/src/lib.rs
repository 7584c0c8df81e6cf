//! Typed async client for kmsim, the IBM Key Protect / Hyper Protect Crypto Services
//! simulator served over gRPC (package `kmsim.v1`).
//!
//! - [`KmsClient`]: one method per InstanceService and KeyService RPC, over a tonic channel
//!   with timeouts, and an optional bearer token sent as `authorization: Bearer <token>`.
//! - [`ClientError`]: keeps the `tonic::Status` and reads its `google.rpc` details: the Key
//!   Protect reason code ([`ClientError::reason`]), field violations, retry delay.
//! - [`Crn`] and [`KeyRef`]: parsed resource names.
//! - [`secure_import`]: sealing key material for an instance's import token.
//! - [`datakey`]: the envelope-encryption component of a database deployment
//!   ([`DataKeyManager`]).
//! - [`cli`]: the `kmsimctl` command-line tool (the binary only calls [`cli::main`]).
//!
//! # Example
//!
//! Connect, create an instance and a root key, get a data key from the service, and unwrap
//! it again as a deployment does at start-up:
//!
//! ```no_run
//! use kmsim_client::{KeyRef, KmsClient};
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
//!     Err(e) if e.reason() == Some("KEY_NOT_FOUND_ERR") => {}
//!     other => panic!("unexpected: {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod audit;
pub mod ceremony;
pub mod cli;
mod client;
pub mod datakey;
mod error;
mod policies;
mod refs;
mod registrations;
pub mod secure_import;

#[cfg(test)]
mod testing;

pub use client::{
    AuthenticatedChannel, BearerAuth, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT,
    DEFAULT_KEEP_ALIVE, DEFAULT_REQUEST_TIMEOUT, GeneratedDataKey, KmsClient, RewrappedKey,
    UnwrappedKey, WrappedKey,
};
pub use datakey::{DataKeyError, DataKeyManager, WrappedDataKey};
pub use error::{ClientError, ERROR_DOMAIN, RpcError};
pub use refs::{Crn, CrnService, KeyRef, ParseError};

/// The generated `kmsim.v1` messages and clients, re-exported so callers need not depend on
/// `kmsim-proto` directly.
pub use kmsim_proto::v1 as proto;
/// The error-detail types returned by [`ClientError`] accessors.
pub use tonic_types::{ErrorInfo, FieldViolation};
