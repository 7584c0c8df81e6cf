//! The `kmsimctl` command-line tool: argument parsing (clap, with `KMSIM_*` environment
//! variables), execution through [`KmsClient`], JSON rendering of the results, and error
//! reporting. The binary `src/bin/kmsimctl.rs` only calls [`main`].
//!
//! Binary values (payloads, plaintexts, ciphertexts) are standard base64 both on the command
//! line and in the output. Results are printed as pretty JSON on stdout, with the proto field
//! names, enums by name, timestamps in RFC 3339 and unset timestamps as `null`. Failures print
//! the gRPC code, the Key Protect reason and the message on stderr. Exit status: 0 success,
//! 1 the server refused the call, 2 a usage error (bad arguments, unreadable TLS files, TLS
//! options on an `http://` endpoint), 3 the server could not be reached (including a failed
//! TLS handshake).
//!
//! `kmsimctl login` exchanges an API key (from `KMSIM_API_KEY`, `--api-key-file` or stdin;
//! never from the command line) for a token cached in a 0600 file, which later commands send
//! when no `--token` is given.

mod byok;

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kmsim_proto::v1::{
    CreateInstanceRequest, CreateKeyRequest, ImportToken, Instance, InstanceFlavor, Key, KeyAlias,
    KeyState, KeyType, KeyVersion, ListKeysRequest, RotateKeyRequest, create_key_request,
    rotate_key_request,
};
use serde_json::{Value, json};

use crate::client::{DEFAULT_ENDPOINT, GeneratedDataKey, KmsClient, UnwrappedKey};
use crate::error::ClientError;
use crate::refs::KeyRef;
use crate::secure_import;

/// Manage instances and keys of a kmsim server (the kmsim gRPC API).
#[derive(Debug, Parser)]
#[command(name = "kmsimctl", version)]
pub struct Cli {
    /// gRPC endpoint of the kmsim server.
    #[arg(long, env = "KMSIM_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    pub endpoint: String,
    /// Bearer token sent as `authorization: Bearer <token>` (default: the token cached by
    /// `kmsimctl login`).
    #[arg(long, env = "KMSIM_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Where `login` caches the token (default `$HOME/.kmsimctl/token`).
    #[arg(long, env = "KMSIM_TOKEN_FILE", global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// For an `https://` endpoint: trust only this CA (PEM) instead of the system's roots.
    #[arg(long, env = "KMSIM_CA_FILE", global = true, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// For mutual TLS: the client certificate chain (PEM).
    #[arg(
        long,
        env = "KMSIM_CLIENT_CERT",
        global = true,
        value_name = "PATH",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// For mutual TLS: the client private key (PEM).
    #[arg(
        long,
        env = "KMSIM_CLIENT_KEY",
        global = true,
        value_name = "PATH",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Check the server certificate for this name instead of the endpoint's host.
    #[arg(long, env = "KMSIM_TLS_DOMAIN", global = true, value_name = "NAME")]
    pub tls_domain: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage KMS instances.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Manage keys and use root keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage an instance's import token.
    #[command(subcommand)]
    ImportToken(ImportTokenCommand),
    /// Identities, API keys, access policies and service authorizations.
    #[command(subcommand)]
    Iam(byok::IamCommand),
    /// Registrations of resources (such as database deployments) with root keys.
    #[command(subcommand)]
    Registration(byok::RegistrationCommand),
    /// Lifecycle events sent to registered resources.
    #[command(subcommand)]
    Event(byok::EventCommand),
    /// Print a shell completion script (for example `kmsimctl completions bash >
    /// /etc/bash_completion.d/kmsimctl`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Exchange an API key for a token and cache it (mode 0600) for later commands. The key
    /// comes from `KMSIM_API_KEY`, `--api-key-file`, or the first line of stdin.
    Login {
        /// Read the API key from this file.
        #[arg(long, value_name = "PATH")]
        api_key_file: Option<PathBuf>,
        /// Token lifetime in seconds (60 to 86400).
        #[arg(long, default_value_t = 3600)]
        lifetime_seconds: u64,
    },
}

/// Instance flavors on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Flavor {
    /// IBM Key Protect (CRN service `kms`).
    KeyProtect,
    /// IBM Hyper Protect Crypto Services (CRN service `hs-crypto`).
    Hpcs,
}

/// Key states on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum State {
    /// Active (1).
    Active,
    /// Suspended (2).
    Suspended,
    /// Deactivated (3).
    Deactivated,
    /// Destroyed (5).
    Destroyed,
}

impl From<State> for KeyState {
    fn from(state: State) -> Self {
        match state {
            State::Active => KeyState::Active,
            State::Suspended => KeyState::Suspended,
            State::Deactivated => KeyState::Deactivated,
            State::Destroyed => KeyState::Destroyed,
        }
    }
}

/// `kmsimctl instance ...`
#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Create an instance.
    Create {
        /// Instance name (1 to 90 characters).
        name: String,
        /// Key Protect or HPCS.
        #[arg(long, value_enum, default_value_t = Flavor::KeyProtect)]
        flavor: Flavor,
        /// Region (server default: us-south).
        #[arg(long)]
        region: Option<String>,
        /// Account id (server default: its configured account).
        #[arg(long)]
        account: Option<String>,
    },
    /// Show an instance.
    Get {
        /// Instance id, `instances/{id}` or instance CRN.
        instance: String,
    },
    /// List every instance.
    List,
    /// Delete an instance.
    Delete {
        /// Instance id, `instances/{id}` or instance CRN.
        instance: String,
        /// Delete even if it still holds keys (they are shredded).
        #[arg(long)]
        force: bool,
    },
}

/// Where new key material comes from (at most one; none means generated in the HSM).
#[derive(Debug, Clone, Args)]
#[group(multiple = false)]
pub struct MaterialArgs {
    /// Import this material (base64 of 16, 24 or 32 bytes) in plaintext.
    #[arg(long, value_name = "BASE64", value_parser = parse_base64)]
    pub payload: Option<Base64>,
    /// Import this material (base64 of 16, 24 or 32 bytes) sealed for the instance's import
    /// token, which is retrieved first (using one retrieval).
    #[arg(long, value_name = "BASE64", value_parser = parse_base64)]
    pub secure_import: Option<Base64>,
}

/// `kmsimctl key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a root key (or, with --standard, a standard key).
    Create {
        /// Instance id, `instances/{id}` or instance CRN.
        #[arg(long, env = "KMSIM_INSTANCE")]
        instance: String,
        /// Key name (2 to 90 characters).
        name: String,
        /// Create a standard (extractable) key instead of a root key.
        #[arg(long)]
        standard: bool,
        /// Description (at most 240 characters).
        #[arg(long)]
        description: Option<String>,
        /// Alias to create with the key (repeatable, at most 5).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Expiration time, RFC 3339 (for example 2030-01-01T00:00:00Z).
        #[arg(long, value_parser = parse_timestamp)]
        expiration: Option<prost_types::Timestamp>,
        /// Generated material length in bits: 128, 192 or 256 (server default 256).
        #[arg(long)]
        size_bits: Option<i32>,
        /// Imported material.
        #[command(flatten)]
        material: MaterialArgs,
    },
    /// Show a key (and the payload of a standard key).
    Get {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
    },
    /// List one page of an instance's keys.
    List {
        /// Instance id, `instances/{id}` or instance CRN.
        #[arg(long, env = "KMSIM_INSTANCE")]
        instance: String,
        /// Only keys in this state (repeatable; default Active, Suspended and Deactivated).
        #[arg(long = "state", value_enum)]
        states: Vec<State>,
        /// Only standard keys (true) or only root keys (false).
        #[arg(long)]
        extractable: Option<bool>,
        /// Substring of the name or exact alias; `name:x` or `alias:x` to restrict.
        #[arg(long)]
        search: Option<String>,
        /// Page size (1 to 5000).
        #[arg(long)]
        page_size: Option<i32>,
        /// Page token from a previous `next_page_token`.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Wrap a data key with a root key; without --plaintext, generate one.
    Wrap {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
        /// Data key to wrap (base64); omit to have the service generate a 32-byte key.
        #[arg(long, value_name = "BASE64", value_parser = parse_base64)]
        plaintext: Option<Base64>,
        /// Additional authenticated data (repeatable, order matters).
        #[arg(long)]
        aad: Vec<String>,
    },
    /// Unwrap a ciphertext.
    Unwrap {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
        /// Ciphertext (base64).
        #[arg(long, value_name = "BASE64", value_parser = parse_base64)]
        ciphertext: Base64,
        /// The AAD given at wrap time.
        #[arg(long)]
        aad: Vec<String>,
    },
    /// Rewrap a ciphertext under the key's current version.
    Rewrap {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
        /// Ciphertext (base64).
        #[arg(long, value_name = "BASE64", value_parser = parse_base64)]
        ciphertext: Base64,
        /// The AAD given at wrap time.
        #[arg(long)]
        aad: Vec<String>,
    },
    /// Rotate a root key (imported keys need new material).
    Rotate {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
        /// New material for an imported key.
        #[command(flatten)]
        material: MaterialArgs,
    },
    /// List a key's versions, newest first.
    Versions {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
    },
    /// Disable (suspend) a key.
    Disable {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
    },
    /// Enable a suspended key.
    Enable {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
    },
    /// Delete a key (restorable for 30 days).
    Delete {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
        /// Delete even while resources are registered (cryptoshredding).
        #[arg(long)]
        force: bool,
    },
    /// Restore a deleted key.
    Restore {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
    },
    /// Purge a deleted key (4 hours after deletion at the earliest).
    Purge {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
    },
    /// Add an alias to a key.
    AliasAdd {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
        /// The alias.
        alias: String,
    },
    /// Remove an alias from a key.
    AliasRm {
        /// Key CRN or `instances/{instance}/keys/{id-or-alias}`.
        key: KeyRef,
        /// The alias.
        alias: String,
    },
}

/// `kmsimctl import-token ...`
#[derive(Debug, Subcommand)]
pub enum ImportTokenCommand {
    /// Create the instance's import token (replacing any previous one).
    Create {
        /// Instance id, `instances/{id}` or instance CRN.
        #[arg(long, env = "KMSIM_INSTANCE")]
        instance: String,
        /// Lifetime in seconds, 300 to 86400 (server default 600).
        #[arg(long)]
        expiration_seconds: Option<i32>,
        /// Allowed retrievals, 1 to 500 (server default 1).
        #[arg(long)]
        max_retrievals: Option<i32>,
    },
    /// Retrieve the token with its public key and nonce (uses one retrieval).
    Get {
        /// Instance id, `instances/{id}` or instance CRN.
        #[arg(long, env = "KMSIM_INSTANCE")]
        instance: String,
    },
}

/// Bytes given on the command line as standard base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64(pub Vec<u8>);

fn parse_base64(s: &str) -> Result<Base64, String> {
    B64.decode(s.trim())
        .map(Base64)
        .map_err(|e| format!("invalid base64: {e}"))
}

fn parse_timestamp(s: &str) -> Result<prost_types::Timestamp, String> {
    s.parse()
        .map_err(|_| "expected an RFC 3339 timestamp such as 2030-01-01T00:00:00Z".to_owned())
}

/// Exit status when the server refused the call.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status of a usage error (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the server could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// The exit status for `error`.
pub fn exit_status(error: &ClientError) -> u8 {
    match error {
        ClientError::Connect(_) => EXIT_UNREACHABLE,
        ClientError::Rpc(_)
            if error.code() == tonic::Code::Unavailable && error.reason().is_none() =>
        {
            EXIT_UNREACHABLE
        }
        ClientError::Rpc(_) | ClientError::MalformedResponse(_) => EXIT_REFUSED,
        _ => EXIT_USAGE,
    }
}

/// Parses the process arguments, runs the command and prints its result or error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory as _;
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "kmsimctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kmsimctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Value::Null) => ExitCode::SUCCESS,
        Ok(value) => {
            println!("{value:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}", report(&e));
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The error report `kmsimctl` prints: the code, reason and message on the first line, then
/// one line per field violation and the retry delay, if any.
pub fn report(error: &ClientError) -> String {
    let mut out = format!(
        "error: code={:?} reason={} message={:?}\n",
        error.code(),
        error.reason_code().unwrap_or("-"),
        error.message()
    );
    for violation in error.field_violations() {
        out.push_str(&format!(
            "  field {}: {}\n",
            violation.field, violation.description
        ));
    }
    if let Some(delay) = error.retry_delay() {
        out.push_str(&format!("  retry after {}s\n", delay.as_secs()));
    }
    out
}

/// The token cache file: `--token-file`, else `$HOME/.kmsimctl/token`.
fn token_file(cli: &Cli) -> Option<PathBuf> {
    cli.token_file.clone().or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kmsimctl").join("token"))
    })
}

/// Writes `token` to `path`, readable by the owner only.
fn cache_token(path: &Path, token: &str) -> Result<(), ClientError> {
    let failed = |source| ClientError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        // An older file keeps its mode on open: tighten it first.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(failed)?;
        }
    }
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(token.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)
}

/// The API key for `login`: `KMSIM_API_KEY`, the file, or stdin's first line.
fn read_api_key(file: Option<&Path>) -> Result<zeroize::Zeroizing<String>, ClientError> {
    if let Ok(key) = std::env::var("KMSIM_API_KEY") {
        return Ok(zeroize::Zeroizing::new(key.trim().to_owned()));
    }
    let mut key = zeroize::Zeroizing::new(String::new());
    match file {
        Some(path) => {
            *key = std::fs::read_to_string(path).map_err(|source| ClientError::ReadFile {
                path: path.to_path_buf(),
                source,
            })?;
        }
        None => {
            std::io::stdin()
                .lock()
                .read_line(&mut key)
                .map_err(|source| ClientError::ReadFile {
                    path: PathBuf::from("<stdin>"),
                    source,
                })?;
        }
    }
    Ok(zeroize::Zeroizing::new(key.trim().to_owned()))
}

/// Connects as `cli` says, runs its command, and returns the JSON to print.
///
/// # Errors
/// The [`ClientError`] of the connection or the call.
pub async fn run(cli: Cli) -> Result<Value, ClientError> {
    let mut builder = KmsClient::builder(cli.endpoint.clone());
    if let Some(ca) = &cli.ca_file {
        builder = builder.ca_certificate_file(ca)?;
    }
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        builder = builder.client_identity_files(cert, key)?;
    }
    if let Some(domain) = &cli.tls_domain {
        builder = builder.tls_domain(domain.clone());
    }
    let cache = token_file(&cli);
    let token = match cli.token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => Some(token.to_owned()),
        None => cache
            .as_deref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
    };
    if let (Some(token), false) = (token, matches!(cli.command, Command::Login { .. })) {
        builder = builder.bearer_token(token);
    }
    let client = builder.connect().await?;
    match cli.command {
        Command::Instance(command) => run_instance(&client, command).await,
        Command::Key(command) => run_key(&client, command).await,
        Command::ImportToken(command) => run_import_token(&client, command).await,
        Command::Iam(command) => byok::run_iam(&client, command).await,
        Command::Registration(command) => byok::run_registration(&client, command).await,
        Command::Event(command) => byok::run_event(&client, command).await,
        // Handled by `main` before connecting.
        Command::Completions { .. } => Ok(Value::Null),
        Command::Login {
            api_key_file,
            lifetime_seconds,
        } => {
            let api_key = read_api_key(api_key_file.as_deref())?;
            let issued = client
                .create_token(&api_key, Duration::from_secs(lifetime_seconds))
                .await?;
            let token = zeroize::Zeroizing::new(issued.access_token);
            let path = cache.ok_or_else(|| ClientError::ReadFile {
                path: PathBuf::from("<token file>"),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no token file: set --token-file or HOME",
                ),
            })?;
            cache_token(&path, &token)?;
            let identity = issued.identity.unwrap_or_default();
            Ok(json!({
                "identity": { "id": identity.id, "name": identity.name },
                "expiration_time": timestamp_json(issued.expiration_time.as_ref()),
                "token_file": path.display().to_string(),
            }))
        }
    }
}

async fn run_instance(client: &KmsClient, command: InstanceCommand) -> Result<Value, ClientError> {
    Ok(match command {
        InstanceCommand::Create {
            name,
            flavor,
            region,
            account,
        } => {
            let flavor = match flavor {
                Flavor::KeyProtect => InstanceFlavor::KeyProtect,
                Flavor::Hpcs => InstanceFlavor::Hpcs,
            };
            let request = CreateInstanceRequest {
                name,
                flavor: flavor as i32,
                region: region.unwrap_or_default(),
                account_id: account.unwrap_or_default(),
            };
            instance_json(&client.create_instance_with(request).await?)
        }
        InstanceCommand::Get { instance } => instance_json(&client.get_instance(&instance).await?),
        InstanceCommand::List => {
            let instances = client.list_instances().await?;
            json!({ "instances": instances.iter().map(instance_json).collect::<Vec<_>>() })
        }
        InstanceCommand::Delete { instance, force } => {
            client.delete_instance(&instance, force).await?;
            json!({})
        }
    })
}

async fn run_key(client: &KmsClient, command: KeyCommand) -> Result<Value, ClientError> {
    Ok(match command {
        KeyCommand::Create {
            instance,
            name,
            standard,
            description,
            aliases,
            expiration,
            size_bits,
            material,
        } => {
            let material = match (material.payload, material.secure_import) {
                (Some(payload), _) => Some(create_key_request::Material::Payload(payload.0)),
                (None, Some(secret)) => {
                    let token = client.get_import_token(&instance).await?;
                    let sealed =
                        secure_import::seal_for_token(&token, &zeroize::Zeroizing::new(secret.0))?;
                    Some(create_key_request::Material::SecureImport(sealed))
                }
                (None, None) => None,
            };
            let key_type = if standard {
                KeyType::Standard
            } else {
                KeyType::Root
            };
            let request = CreateKeyRequest {
                instance,
                name,
                description: description.unwrap_or_default(),
                r#type: key_type as i32,
                expiration_time: expiration,
                aliases,
                material,
                key_size_bits: size_bits.unwrap_or_default(),
            };
            key_json(&client.create_key(request).await?)
        }
        KeyCommand::Get { key } => key_json(&client.get_key(&key).await?),
        KeyCommand::List {
            instance,
            states,
            extractable,
            search,
            page_size,
            page_token,
        } => {
            let request = ListKeysRequest {
                instance,
                page_size: page_size.unwrap_or_default(),
                page_token: page_token.unwrap_or_default(),
                states: states
                    .into_iter()
                    .map(|s| KeyState::from(s) as i32)
                    .collect(),
                extractable,
                search: search.unwrap_or_default(),
            };
            let page = client.list_keys(request).await?;
            json!({
                "keys": page.keys.iter().map(key_json).collect::<Vec<_>>(),
                "next_page_token": page.next_page_token,
                "total_size": page.total_size,
            })
        }
        KeyCommand::Wrap {
            key,
            plaintext,
            aad,
        } => {
            let aad = str_refs(&aad);
            match plaintext {
                Some(plaintext) => {
                    let wrapped = client.wrap(&key, &plaintext.0, &aad).await?;
                    json!({
                        "ciphertext": B64.encode(&wrapped.ciphertext),
                        "key_version": version_json(&wrapped.key_version),
                    })
                }
                None => generated_json(&client.generate_data_key(&key, &aad).await?),
            }
        }
        KeyCommand::Unwrap {
            key,
            ciphertext,
            aad,
        } => unwrapped_json(&client.unwrap(&key, &ciphertext.0, &str_refs(&aad)).await?),
        KeyCommand::Rewrap {
            key,
            ciphertext,
            aad,
        } => {
            let rewrapped = client.rewrap(&key, &ciphertext.0, &str_refs(&aad)).await?;
            json!({
                "ciphertext": B64.encode(&rewrapped.ciphertext),
                "key_version": version_json(&rewrapped.original_version),
                "rewrapped_key_version": version_json(&rewrapped.current_version),
            })
        }
        KeyCommand::Rotate { key, material } => {
            let material = match (material.payload, material.secure_import) {
                (Some(payload), _) => Some(rotate_key_request::Material::Payload(payload.0)),
                (None, Some(secret)) => {
                    let token = client.get_import_token(key.instance_id()).await?;
                    let sealed =
                        secure_import::seal_for_token(&token, &zeroize::Zeroizing::new(secret.0))?;
                    Some(rotate_key_request::Material::SecureImport(sealed))
                }
                (None, None) => None,
            };
            let request = RotateKeyRequest {
                key: key.to_string(),
                material,
            };
            key_json(&client.rotate_with(request).await?)
        }
        KeyCommand::Versions { key } => {
            let versions = client.list_key_versions(&key).await?;
            json!({ "versions": versions.iter().map(version_json).collect::<Vec<_>>() })
        }
        KeyCommand::Disable { key } => key_json(&client.disable(&key).await?),
        KeyCommand::Enable { key } => key_json(&client.enable(&key).await?),
        KeyCommand::Delete { key, force } => key_json(&client.delete(&key, force).await?),
        KeyCommand::Restore { key } => key_json(&client.restore(&key).await?),
        KeyCommand::Purge { key } => key_json(&client.purge(&key).await?),
        KeyCommand::AliasAdd { key, alias } => {
            alias_json(&client.create_key_alias(&key, &alias).await?)
        }
        KeyCommand::AliasRm { key, alias } => {
            client.delete_key_alias(&key, &alias).await?;
            json!({})
        }
    })
}

async fn run_import_token(
    client: &KmsClient,
    command: ImportTokenCommand,
) -> Result<Value, ClientError> {
    Ok(match command {
        ImportTokenCommand::Create {
            instance,
            expiration_seconds,
            max_retrievals,
        } => token_json(
            &client
                .create_import_token(
                    &instance,
                    expiration_seconds.unwrap_or_default(),
                    max_retrievals.unwrap_or_default(),
                )
                .await?,
        ),
        ImportTokenCommand::Get { instance } => {
            token_json(&client.get_import_token(&instance).await?)
        }
    })
}

fn str_refs(strings: &[String]) -> Vec<&str> {
    strings.iter().map(String::as_str).collect()
}

pub(crate) fn timestamp_json(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.map_or(Value::Null, |ts| Value::String(ts.to_string()))
}

fn version_json(version: &KeyVersion) -> Value {
    json!({
        "id": version.id,
        "create_time": timestamp_json(version.create_time.as_ref()),
    })
}

fn enum_json(name: Option<&str>, value: i32) -> Value {
    name.map_or_else(|| Value::from(value), Value::from)
}

/// The JSON form of an instance.
pub fn instance_json(instance: &Instance) -> Value {
    json!({
        "id": instance.id,
        "name": instance.name,
        "flavor": enum_json(
            InstanceFlavor::try_from(instance.flavor).ok().map(|f| f.as_str_name()),
            instance.flavor,
        ),
        "region": instance.region,
        "account_id": instance.account_id,
        "crn": instance.crn,
        "create_time": timestamp_json(instance.create_time.as_ref()),
    })
}

/// The JSON form of a key; the payload, if any, in base64.
pub fn key_json(key: &Key) -> Value {
    let mut value = json!({
        "id": key.id,
        "crn": key.crn,
        "instance_id": key.instance_id,
        "name": key.name,
        "description": key.description,
        "type": enum_json(KeyType::try_from(key.r#type).ok().map(|t| t.as_str_name()), key.r#type),
        "extractable": key.extractable,
        "state": enum_json(KeyState::try_from(key.state).ok().map(|s| s.as_str_name()), key.state),
        "imported": key.imported,
        "aliases": key.aliases,
        "current_version": key.current_version.as_ref().map_or(Value::Null, version_json),
        "create_time": timestamp_json(key.create_time.as_ref()),
        "update_time": timestamp_json(key.update_time.as_ref()),
        "last_rotate_time": timestamp_json(key.last_rotate_time.as_ref()),
        "expiration_time": timestamp_json(key.expiration_time.as_ref()),
        "deletion_time": timestamp_json(key.deletion_time.as_ref()),
        "purge_allowed_time": timestamp_json(key.purge_allowed_time.as_ref()),
        "restore_expire_time": timestamp_json(key.restore_expire_time.as_ref()),
        "purge_scheduled_time": timestamp_json(key.purge_scheduled_time.as_ref()),
        "algorithm_type": key.algorithm_type,
        "key_size_bits": key.key_size_bits,
        "deleted": key.deleted,
        "purge_allowed": key.purge_allowed,
        "restore_allowed": key.restore_allowed,
        "version_count": key.version_count,
        "created_by": key.created_by,
        "deleted_by": key.deleted_by,
    });
    if !key.payload.is_empty() {
        value["payload"] = Value::String(B64.encode(&key.payload));
    }
    value
}

fn alias_json(alias: &KeyAlias) -> Value {
    json!({
        "alias": alias.alias,
        "key_id": alias.key_id,
        "create_time": timestamp_json(alias.create_time.as_ref()),
    })
}

fn token_json(token: &ImportToken) -> Value {
    let mut value = json!({
        "id": token.id,
        "create_time": timestamp_json(token.create_time.as_ref()),
        "expiration_time": timestamp_json(token.expiration_time.as_ref()),
        "max_allowed_retrievals": token.max_allowed_retrievals,
        "remaining_retrievals": token.remaining_retrievals,
    });
    if !token.public_key.is_empty() {
        value["public_key"] = Value::String(B64.encode(&token.public_key));
        value["nonce"] = Value::String(B64.encode(&token.nonce));
    }
    value
}

fn generated_json(key: &GeneratedDataKey) -> Value {
    json!({
        "ciphertext": B64.encode(&key.ciphertext),
        "plaintext": B64.encode(key.plaintext.as_slice()),
        "key_version": version_json(&key.key_version),
    })
}

fn unwrapped_json(key: &UnwrappedKey) -> Value {
    let mut value = json!({
        "plaintext": B64.encode(key.plaintext.as_slice()),
        "key_version": version_json(&key.key_version),
    });
    if let Some(rewrapped) = &key.rewrapped {
        value["rewrapped_ciphertext"] = Value::String(B64.encode(&rewrapped.ciphertext));
        value["rewrapped_key_version"] = version_json(&rewrapped.key_version);
    }
    value
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_key_commands_with_base64_and_refs() {
        let cli = Cli::try_parse_from([
            "kmsimctl",
            "--endpoint",
            "http://kms:9000",
            "key",
            "unwrap",
            "instances/i-1/keys/db-root",
            "--ciphertext",
            "AAEC",
            "--aad",
            "a",
            "--aad",
            "b",
        ])
        .unwrap();
        assert_eq!(cli.endpoint, "http://kms:9000");
        match cli.command {
            Command::Key(KeyCommand::Unwrap {
                key,
                ciphertext,
                aad,
            }) => {
                assert_eq!(key.to_string(), "instances/i-1/keys/db-root");
                assert_eq!(ciphertext.0, [0, 1, 2]);
                assert_eq!(aad, ["a", "b"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn refuses_bad_base64_bad_refs_and_two_materials() {
        for args in [
            &[
                "kmsimctl",
                "key",
                "unwrap",
                "instances/i/keys/k",
                "--ciphertext",
                "!!",
            ][..],
            &["kmsimctl", "key", "get", "not-a-ref"],
            &[
                "kmsimctl",
                "key",
                "rotate",
                "instances/i/keys/k",
                "--payload",
                "AAAA",
                "--secure-import",
                "AAAA",
            ],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn subcommand_names_match_the_spec() {
        let cli = Cli::try_parse_from([
            "kmsimctl",
            "key",
            "alias-add",
            "instances/i/keys/k",
            "my-alias",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Key(KeyCommand::AliasAdd { .. })
        ));
        let cli =
            Cli::try_parse_from(["kmsimctl", "import-token", "get", "--instance", "i"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::ImportToken(ImportTokenCommand::Get { .. })
        ));
        let cli = Cli::try_parse_from(["kmsimctl", "instance", "create", "db", "--flavor", "hpcs"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::Instance(InstanceCommand::Create {
                flavor: Flavor::Hpcs,
                ..
            })
        ));
    }

    #[test]
    fn key_json_uses_names_base64_and_rfc3339() {
        let key = Key {
            id: "k".to_owned(),
            r#type: KeyType::Standard as i32,
            state: KeyState::Suspended as i32,
            payload: vec![0xFF, 0x00],
            create_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Key::default()
        };
        let value = key_json(&key);
        assert_eq!(value["type"], "KEY_TYPE_STANDARD");
        assert_eq!(value["state"], "KEY_STATE_SUSPENDED");
        assert_eq!(value["payload"], "/wA=");
        assert_eq!(value["create_time"], "1970-01-01T00:00:00Z");
        assert_eq!(value["deletion_time"], Value::Null);
        let unknown = key_json(&Key {
            state: 42,
            ..Key::default()
        });
        assert_eq!(unknown["state"], 42);
        assert!(unknown.get("payload").is_none());
    }

    #[test]
    fn report_shows_code_reason_message_and_details() {
        let status = tonic::Status::not_found("no key \"x\"");
        let text = report(&ClientError::from(status));
        assert_eq!(
            text,
            "error: code=NotFound reason=- message=\"no key \\\"x\\\"\"\n"
        );

        let mut details = tonic_types::ErrorDetails::with_error_info(
            "KEY_ROTATION_NOT_PERMITTED",
            crate::ERROR_DOMAIN,
            std::collections::HashMap::new(),
        );
        details.set_retry_info(Some(std::time::Duration::from_secs(60)));
        details.add_bad_request_violation("key", "rotated too recently");
        let status =
            tonic::Status::with_error_details(Code::FailedPrecondition, "too soon", details);
        assert_eq!(
            report(&ClientError::from(status)),
            "error: code=FailedPrecondition reason=KEY_ROTATION_NOT_PERMITTED message=\"too soon\"\n  field key: rotated too recently\n  retry after 60s\n"
        );
    }
}
