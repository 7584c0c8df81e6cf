//! Configuration: the `kmsim` command line (clap, every flag also a `KMSIM_*` environment
//! variable) and the library-level [`Config`] that [`crate::serve`] takes.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;

use sim_hsm::{DevMasterKey, HsmConfig};
use zeroize::Zeroizing;

use crate::clock::{Clock, SimulatedClock, SystemClock, Timestamp};
use crate::kms::Defaults;
use crate::kms::keystore::HsmCredentials;

/// The `kmsim` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kmsim",
    version,
    about = "Key Protect / HPCS simulator with a simulated HSM, over gRPC"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `kmsim` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which clock the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClockMode {
    /// The operating system's wall clock.
    System,
    /// A clock that moves only through `SimulatorService.AdvanceClock` / `SetTime`.
    Simulated,
}

fn parse_clock_start(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text)
        .ok_or_else(|| "must be an RFC 3339 time such as 2026-01-01T00:00:00Z".to_owned())
}

/// Flags of `kmsim serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on: `IP:PORT` (IPv6 as `[::1]:7070`) or `HOST:PORT` (the host name is
    /// resolved; the first address is used).
    #[arg(long, env = "KMSIM_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Address of the Key Protect REST facade (`/api/v2/...`) and IAM token endpoint
    /// (`/identity/token`, `/oidc/token`), HTTP/1.1; off unless given (e.g. 127.0.0.1:7080).
    #[arg(long, env = "KMSIM_REST_LISTEN")]
    pub rest_listen: Option<SocketAddr>,
    /// Directory of the embedded database (created if missing).
    #[arg(long, env = "KMSIM_DATA_DIR", default_value = "kmsim-data")]
    pub data_dir: PathBuf,
    /// Development mode: creates (or reuses) a random HSM master key and HSM PINs in the data
    /// directory, in plaintext, and accepts the fixed bearer token `kmsim-dev-token` as the
    /// admin. Never use it for anything but tests.
    #[arg(long, env = "KMSIM_DEV", value_parser = BoolishValueParser::new())]
    pub dev: bool,
    /// With --dev, listening on an address other than loopback is refused (the development
    /// token would be the admin for anyone who can reach it) unless this is given.
    #[arg(long, env = "KMSIM_DEV_ALLOW_REMOTE", value_parser = BoolishValueParser::new())]
    pub dev_allow_remote: bool,
    /// PEM file of the server's TLS certificate chain (with --tls-key): the listener speaks
    /// TLS only.
    #[arg(long, env = "KMSIM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --tls-cert.
    #[arg(long, env = "KMSIM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM file of the CA certificates that sign client certificates: mutual TLS, every client
    /// must present a certificate this CA signed. It authenticates the channel only; the
    /// identity of a call still comes from its bearer token.
    #[arg(long, env = "KMSIM_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --dev: serve TLS with a self-signed certificate for localhost, 127.0.0.1 and ::1,
    /// created in the data directory (`dev-tls-cert.pem`, used by clients as their CA) on
    /// first start and reused afterwards.
    #[arg(long, env = "KMSIM_DEV_TLS", value_parser = BoolishValueParser::new(), requires = "dev", conflicts_with = "tls_cert")]
    pub dev_tls: bool,
    /// How long a client has to finish its TLS handshake.
    #[arg(long, env = "KMSIM_TLS_HANDSHAKE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub tls_handshake_timeout: Duration,
    /// File holding the HSM master key as 64 hex digits ("keep your own key"). Required
    /// unless --dev.
    #[arg(long, env = "KMSIM_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// File holding the HSM security-officer PIN the service uses (one line). Required unless
    /// --dev or the environment variable KMSIM_HSM_SO_PIN holds the PIN. PINs are never taken
    /// from the command line, where every local user could read them.
    #[arg(long, env = "KMSIM_HSM_SO_PIN_FILE")]
    pub hsm_so_pin_file: Option<PathBuf>,
    /// File holding the HSM user PIN (one line). Required unless --dev or KMSIM_HSM_USER_PIN
    /// holds the PIN.
    #[arg(long, env = "KMSIM_HSM_USER_PIN_FILE")]
    pub hsm_user_pin_file: Option<PathBuf>,
    /// The most memory the storage engine's page cache uses, in MiB.
    #[arg(long, env = "KMSIM_STORE_CACHE_MB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub store_cache_mb: u32,
    /// When a data call's audit event (wrap, unwrap, reads, refusals) reaches the disk:
    /// `batched` (within 50 ms, in a shared commit; a crash can lose the last window's events)
    /// or `sync` (before the reply, like mutations).
    #[arg(
        long,
        env = "KMSIM_AUDIT_DURABILITY",
        value_enum,
        default_value = "batched"
    )]
    pub audit_durability: crate::audit::trail::AuditDurability,
    /// The most audit events kept: older ones are pruned (0: no bound).
    #[arg(long, env = "KMSIM_AUDIT_MAX_EVENTS", default_value_t = 1_000_000)]
    pub audit_max_events: u64,
    /// The longest an audit event is kept, by the server's clock (e.g. `365d`; `0s`: no bound).
    #[arg(long, env = "KMSIM_AUDIT_MAX_AGE", default_value = "365d", value_parser = humantime::parse_duration)]
    pub audit_max_age: std::time::Duration,
    /// Region of instances created without one.
    #[arg(long, env = "KMSIM_REGION", default_value = "us-south")]
    pub region: String,
    /// Account of instances created without one.
    #[arg(long, env = "KMSIM_ACCOUNT", default_value = "kmsim")]
    pub account: String,
    /// Log format.
    #[arg(long, env = "KMSIM_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The clock of every time rule: the system clock, or a simulated clock that moves only
    /// through `SimulatorService.AdvanceClock` / `SetTime` (its time is persisted, so a
    /// restart never moves it backwards).
    #[arg(long, env = "KMSIM_CLOCK", value_enum, default_value = "system")]
    pub clock: ClockMode,
    /// Start time of a simulated clock (RFC 3339); default: the real time at start. A later
    /// time stored by a previous run wins.
    #[arg(long, env = "KMSIM_CLOCK_START", value_parser = parse_clock_start)]
    pub clock_start: Option<Timestamp>,
    /// A seed file (YAML for `.yaml`/`.yml`, JSON for `.json`) whose instances, identities
    /// with fixed API keys, access policies, authorizations and keys (fixed ids, optionally
    /// fixed material) are created at start-up, idempotently. See the README.
    #[arg(long, env = "KMSIM_SEED_FILE")]
    pub seed_file: Option<PathBuf>,
    /// Deterministic mode, FOR TESTS ONLY: every id, key, IV, nonce, data key, API-key secret
    /// and salt comes from generators seeded from this number, so two runs with the same seed,
    /// the same `--clock-start` and the same calls answer byte for byte alike.
    #[arg(long, env = "KMSIM_DETERMINISTIC")]
    pub deterministic: Option<u64>,
}

/// Where the durable state lives.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A redb database in this directory (`<dir>/kmsim.redb`).
    Directory(PathBuf),
    /// A database in memory, gone when the server stops (tests).
    Temporary,
}

/// Everything [`crate::serve`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Durable state.
    pub storage: Storage,
    /// The HSM master key to activate.
    pub master_key: Arc<DevMasterKey>,
    /// The PINs the service uses with its HSM.
    pub credentials: HsmCredentials,
    /// The HSM's own configuration.
    pub hsm: HsmConfig,
    /// The clock of every rule.
    pub clock: Arc<dyn Clock>,
    /// Defaults for requests that leave values out.
    pub defaults: Defaults,
    /// Whether the fixed development token ([`crate::auth::DEV_TOKEN`]) is accepted as the
    /// bootstrap admin (`--dev`, and every ephemeral configuration).
    pub dev_token: bool,
    /// The seed file applied at start-up (`--seed-file`).
    pub seed_file: Option<PathBuf>,
    /// The seed of deterministic mode (`--deterministic`); `None`: OS randomness.
    pub deterministic: Option<u64>,
    /// Tuning of the storage engine.
    pub store: crate::store::StoreOptions,
    /// Durability and retention of the audit trail.
    pub audit: crate::audit::trail::AuditOptions,
    /// How the listener serves (TLS, limits).
    pub serve: crate::ServeOptions,
}

impl Config {
    /// A configuration for tests: temporary storage, a random master key and PINs, the given
    /// clock, and the development token accepted.
    pub fn ephemeral(clock: Arc<dyn Clock>) -> Self {
        Self {
            storage: Storage::Temporary,
            master_key: Arc::new(DevMasterKey::generate()),
            credentials: random_credentials(),
            hsm: HsmConfig::default(),
            clock,
            defaults: default_defaults(),
            dev_token: true,
            seed_file: None,
            deterministic: None,
            store: crate::store::StoreOptions::default(),
            audit: crate::audit::trail::AuditOptions::default(),
            serve: crate::ServeOptions::default(),
        }
    }

    /// A configuration over `dir` with the given master key and PINs, using the system clock.
    pub fn persistent(dir: PathBuf, master_key: DevMasterKey, credentials: HsmCredentials) -> Self {
        Self {
            storage: Storage::Directory(dir),
            master_key: Arc::new(master_key),
            credentials,
            hsm: HsmConfig::default(),
            clock: Arc::new(SystemClock),
            defaults: default_defaults(),
            dev_token: false,
            seed_file: None,
            deterministic: None,
            store: crate::store::StoreOptions::default(),
            audit: crate::audit::trail::AuditOptions::default(),
            serve: crate::ServeOptions::default(),
        }
    }
}

fn default_defaults() -> Defaults {
    Defaults {
        // Both literals satisfy the label rules of `Region` and `AccountId`.
        region: "us-south".parse().unwrap_or_else(|_| unreachable!()),
        account: "kmsim".parse().unwrap_or_else(|_| unreachable!()),
    }
}

/// Random 32-character hex PINs.
pub fn random_credentials() -> HsmCredentials {
    HsmCredentials {
        so_pin: random_pin(),
        user_pin: random_pin(),
    }
}

fn random_pin() -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new([0u8; 16]);
    // The OS generator only fails when the platform has no entropy source at all; a server
    // cannot run securely there, so refusing to continue is the only sound answer.
    getrandom::fill(bytes.as_mut()).unwrap_or_else(|e| panic!("no OS random source: {e}"));
    Zeroizing::new(hex::encode(bytes.as_ref()).into_bytes())
}

/// Why the command line could not be turned into a [`Config`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither --dev nor --master-key-file.
    #[error(
        "no HSM master key: pass --master-key-file (or KMSIM_MASTER_KEY_FILE), or --dev for a development key"
    )]
    NoMasterKey,
    /// Neither --dev nor both PINs.
    #[error(
        "no HSM PINs: give --hsm-so-pin-file and --hsm-user-pin-file (or set KMSIM_HSM_SO_PIN and KMSIM_HSM_USER_PIN), or pass --dev"
    )]
    NoPins,
    /// The master key file is not 64 hex digits.
    #[error("the master key file must hold exactly 64 hex digits")]
    BadMasterKey,
    /// The development secrets file is unreadable or malformed.
    #[error(
        "the development secrets file {0} is malformed; remove it to create a new one (the data becomes unreadable)"
    )]
    BadDevSecrets(PathBuf),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// --region or --account is malformed.
    #[error("--{0} is malformed: lowercase letters, digits and '-' only")]
    BadDefault(&'static str),
    /// --clock-start without --clock simulated.
    #[error("--clock-start needs --clock simulated")]
    ClockStartWithoutSimulated,
    /// The TLS files are unreadable or unusable.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// --tls-client-ca without a server certificate.
    #[error("--tls-client-ca needs TLS: pass --tls-cert and --tls-key (or --dev-tls)")]
    ClientCaWithoutTls,
    /// --listen is neither `IP:PORT` nor a resolvable `HOST:PORT`.
    #[error("--listen {address}: {reason}")]
    BadListen {
        /// The value given.
        address: String,
        /// Why it is refused.
        reason: String,
    },
    /// --dev on an address other than loopback, without --dev-allow-remote.
    #[error(
        "refusing to listen on {0} with --dev: the development token `kmsim-dev-token` would be the admin for anyone who can reach it. Listen on 127.0.0.1 or [::1], or pass --dev-allow-remote"
    )]
    DevRemote(SocketAddr),
}

/// The development secrets kept in `<data-dir>/dev-secrets.json` (mode 0600).
#[derive(serde::Serialize, serde::Deserialize)]
struct DevSecrets {
    master_key: String,
    so_pin: String,
    user_pin: String,
}

impl ServeArgs {
    /// The file that holds development secrets under --dev.
    pub fn dev_secrets_path(&self) -> PathBuf {
        self.data_dir.join(DEV_SECRETS_FILE)
    }

    /// Resolves --listen: an `IP:PORT` as is, a `HOST:PORT` by name (the first address).
    pub fn listen_address(&self) -> Result<SocketAddr, ConfigError> {
        let bad = |reason: String| ConfigError::BadListen {
            address: self.listen.clone(),
            reason,
        };
        let mut addresses = self.listen.to_socket_addrs().map_err(|error| {
            bad(format!(
                "expected IP:PORT, [IPv6]:PORT or HOST:PORT ({error})"
            ))
        })?;
        addresses
            .next()
            .ok_or_else(|| bad("the host name resolves to no address".to_owned()))
    }

    /// Checks whether serving on `address` is safe: with --dev, only loopback unless
    /// --dev-allow-remote; otherwise a plaintext listener beyond loopback is allowed but
    /// returns a warning to log loudly.
    pub fn check_exposure(&self, address: SocketAddr) -> Result<Option<String>, ConfigError> {
        if address.ip().is_loopback() {
            return Ok(None);
        }
        if self.dev && !self.dev_allow_remote {
            return Err(ConfigError::DevRemote(address));
        }
        let tls = self.tls_cert.is_some() || self.dev_tls;
        Ok((!tls).then(|| {
            format!(
                "PLAINTEXT ON A NETWORK ADDRESS: {address} is reachable beyond this host and serves without TLS; bearer tokens, API keys and data keys cross the network in clear. Pass --tls-cert and --tls-key."
            )
        }))
    }

    /// Builds the server configuration. Under --dev, reads or creates the development secrets
    /// file in the data directory.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| ConfigError::Io { path, source }
        };
        create_private_dir(&self.data_dir).map_err(io(&self.data_dir))?;
        let (master_key, credentials) = if self.dev {
            load_or_create_dev_secrets(&self.dev_secrets_path())?
        } else {
            let path = self
                .master_key_file
                .as_ref()
                .ok_or(ConfigError::NoMasterKey)?;
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
            let key = parse_master_key(text.trim()).ok_or(ConfigError::BadMasterKey)?;
            let credentials = HsmCredentials {
                so_pin: read_pin(self.hsm_so_pin_file.as_deref(), "KMSIM_HSM_SO_PIN")?,
                user_pin: read_pin(self.hsm_user_pin_file.as_deref(), "KMSIM_HSM_USER_PIN")?,
            };
            (key, credentials)
        };
        let mut config = Config::persistent(self.data_dir.clone(), master_key, credentials);
        config.dev_token = self.dev;
        config.seed_file = self.seed_file.clone();
        config.deterministic = self.deterministic;
        config.store = crate::store::StoreOptions {
            cache_bytes: usize::try_from(self.store_cache_mb)
                .unwrap_or(usize::MAX)
                .saturating_mul(1024 * 1024),
        };
        config.audit = crate::audit::trail::AuditOptions {
            durability: self.audit_durability,
            max_events: self.audit_max_events,
            max_age: self.audit_max_age,
        };
        config.serve.tls = self.tls_settings()?;
        config.defaults.region = self
            .region
            .parse()
            .map_err(|_| ConfigError::BadDefault("region"))?;
        config.defaults.account = self
            .account
            .parse()
            .map_err(|_| ConfigError::BadDefault("account"))?;
        config.clock = match (self.clock, self.clock_start) {
            (ClockMode::System, None) => Arc::new(SystemClock),
            (ClockMode::System, Some(_)) => return Err(ConfigError::ClockStartWithoutSimulated),
            (ClockMode::Simulated, Some(start)) => Arc::new(SimulatedClock::new(start)),
            (ClockMode::Simulated, None) => Arc::new(SimulatedClock::starting_now()),
        };
        Ok(config)
    }
}

impl ServeArgs {
    fn tls_settings(&self) -> Result<Option<crate::tls::TlsSettings>, ConfigError> {
        use crate::tls::{TlsSettings, dev_certificate};
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ if self.dev_tls => {
                let (cert, key) = dev_certificate(&self.data_dir)?;
                tracing::info!(
                    certificate = %cert.display(),
                    "development TLS: serving with a self-signed certificate for localhost, 127.0.0.1 and ::1; clients trust this file as their CA (grpcurl -cacert)"
                );
                (cert, key)
            }
            _ if self.tls_client_ca.is_some() => return Err(ConfigError::ClientCaWithoutTls),
            _ => return Ok(None),
        };
        let settings = TlsSettings::load(&cert, &key, self.tls_client_ca.as_deref())?
            .with_handshake_timeout(self.tls_handshake_timeout);
        Ok(Some(settings))
    }
}

/// The development secrets file's name in the data directory (`--dev`).
pub const DEV_SECRETS_FILE: &str = "dev-secrets.json";

/// Replaces the master key in the development secrets file at `path` (after a master-key
/// ceremony made a new key current), keeping its PINs: writes a new file (mode 0600) beside
/// it, then renames it over the old one, so the file is always whole.
pub fn update_dev_master_key(path: &std::path::Path, key: &DevMasterKey) -> std::io::Result<()> {
    let bytes = Zeroizing::new(std::fs::read(path)?);
    let mut secrets: DevSecrets = serde_json::from_slice(&bytes)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
    secrets.master_key = hex::encode(key.to_bytes().as_ref());
    let json = Zeroizing::new(serde_json::to_vec_pretty(&secrets).unwrap_or_default());
    let tmp = path.with_extension("json.new");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    write_private(&tmp, &json)?;
    std::fs::rename(&tmp, path)
}

/// A PIN from its file, else from the environment variable `env` (never from the command line).
fn read_pin(
    file: Option<&std::path::Path>,
    env: &'static str,
) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let pin = match file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .as_bytes()
                .to_vec(),
        ),
        None => Zeroizing::new(
            std::env::var(env)
                .map_err(|_| ConfigError::NoPins)?
                .into_bytes(),
        ),
    };
    if pin.is_empty() {
        return Err(ConfigError::NoPins);
    }
    Ok(pin)
}

/// Creates the data directory if it is missing, and makes it private to its owner (mode
/// 0700), whatever mode an earlier version left it with.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        tracing::info!(path = %dir.display(), from = format!("{mode:o}"), "data directory restricted to mode 0700");
    }
    Ok(())
}

fn parse_master_key(text: &str) -> Option<DevMasterKey> {
    let bytes = Zeroizing::new(hex::decode(text).ok()?);
    let key: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(DevMasterKey::from_bytes(key))
}

fn load_or_create_dev_secrets(
    path: &std::path::Path,
) -> Result<(DevMasterKey, HsmCredentials), ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let secrets: DevSecrets = serde_json::from_slice(&bytes)
                .map_err(|_| ConfigError::BadDevSecrets(path.to_path_buf()))?;
            let key = parse_master_key(&secrets.master_key)
                .ok_or(ConfigError::BadDevSecrets(path.to_path_buf()))?;
            let credentials = HsmCredentials {
                so_pin: Zeroizing::new(secrets.so_pin.clone().into_bytes()),
                user_pin: Zeroizing::new(secrets.user_pin.clone().into_bytes()),
            };
            Ok((key, credentials))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = DevMasterKey::generate();
            let credentials = random_credentials();
            let secrets = DevSecrets {
                master_key: hex::encode(key.to_bytes().as_ref()),
                so_pin: String::from_utf8_lossy(&credentials.so_pin).into_owned(),
                user_pin: String::from_utf8_lossy(&credentials.user_pin).into_owned(),
            };
            let json = Zeroizing::new(serde_json::to_vec_pretty(&secrets).unwrap_or_default());
            write_private(path, &json).map_err(io)?;
            Ok((key, credentials))
        }
        Err(error) => Err(io(error)),
    }
}

/// Writes a file readable only by its owner, durably.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    fn config(extra: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut args = vec![
            "kmsim",
            "serve",
            "--dev",
            "--data-dir",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let Cli {
            command: Command::Serve(serve),
        } = Cli::try_parse_from(args).unwrap();
        serve.to_config()
    }

    #[test]
    fn clock_flags_choose_the_clock() {
        let system = config(&[]).unwrap();
        assert!(system.clock.simulated().is_none());
        let simulated = config(&[
            "--clock",
            "simulated",
            "--clock-start",
            "2026-01-01T00:00:00Z",
        ])
        .unwrap();
        assert_eq!(
            simulated.clock.simulated().map(|c| c.now()),
            Some(Timestamp::from_millis(1_767_225_600_000))
        );
        let now = SystemClock.now();
        let from_now = config(&["--clock", "simulated"]).unwrap();
        assert!(from_now.clock.simulated().unwrap().now() >= now);
        assert!(matches!(
            config(&["--clock-start", "2026-01-01T00:00:00Z"]),
            Err(ConfigError::ClockStartWithoutSimulated)
        ));
        let bad = Cli::try_parse_from([
            "kmsim",
            "serve",
            "--clock",
            "simulated",
            "--clock-start",
            "tomorrow",
        ]);
        assert!(bad.is_err());
    }

    #[test]
    fn seed_and_deterministic_flags_reach_the_config() {
        let plain = config(&[]).unwrap();
        assert_eq!((plain.seed_file, plain.deterministic), (None, None));
        let seeded = config(&["--seed-file", "seed.yaml", "--deterministic", "42"]).unwrap();
        assert_eq!(seeded.seed_file, Some(PathBuf::from("seed.yaml")));
        assert_eq!(seeded.deterministic, Some(42));
        let bad = Cli::try_parse_from(["kmsim", "serve", "--deterministic", "-1"]);
        assert!(bad.is_err(), "the seed is a u64");
    }

    fn serve_args(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut full = vec!["kmsim", "serve"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).map(
            |Cli {
                 command: Command::Serve(serve),
             }| serve,
        )
    }

    #[test]
    fn listen_takes_ip_ipv6_and_host_names() {
        let v4 = serve_args(&["--listen", "127.0.0.1:7070"]).unwrap();
        assert_eq!(
            v4.listen_address().unwrap(),
            "127.0.0.1:7070".parse().unwrap()
        );
        let v6 = serve_args(&["--listen", "[::1]:7070"]).unwrap();
        assert_eq!(v6.listen_address().unwrap(), "[::1]:7070".parse().unwrap());
        let named = serve_args(&["--listen", "localhost:7070"]).unwrap();
        let address = named.listen_address().unwrap();
        assert!(address.ip().is_loopback() && address.port() == 7070);
        let bad = serve_args(&["--listen", "7070"]).unwrap();
        let error = bad.listen_address().unwrap_err().to_string();
        assert!(error.starts_with("--listen 7070: "), "{error}");
    }

    #[test]
    fn dev_on_a_network_address_is_refused_unless_allowed() {
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let dev = serve_args(&["--dev"]).unwrap();
        assert!(dev.check_exposure(loopback).unwrap().is_none());
        let refused = dev.check_exposure(any).unwrap_err();
        assert!(matches!(refused, ConfigError::DevRemote(_)));
        assert!(refused.to_string().contains("--dev-allow-remote"));
        let allowed = serve_args(&["--dev", "--dev-allow-remote"]).unwrap();
        let warning = allowed
            .check_exposure(any)
            .unwrap()
            .expect("plaintext warns");
        assert!(warning.contains("PLAINTEXT"));
        let tls = serve_args(&["--dev", "--dev-allow-remote", "--dev-tls"]).unwrap();
        assert!(
            tls.check_exposure(any).unwrap().is_none(),
            "TLS: no warning"
        );
        let plain = serve_args(&[]).unwrap();
        assert!(
            plain.check_exposure(any).unwrap().is_some(),
            "plaintext warns"
        );
    }

    #[test]
    fn tls_flags_build_tls_settings() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        let dev_tls = serve_args(&["--dev", "--dev-tls", "--data-dir", data]).unwrap();
        let config = dev_tls.to_config().unwrap();
        assert!(config.serve.tls.is_some_and(|tls| !tls.is_mutual()));
        let cert = dir.path().join("data").join(crate::tls::DEV_CERT_FILE);
        let key = dir.path().join("data").join(crate::tls::DEV_KEY_FILE);
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let mutual = serve_args(&[
            "--dev",
            "--data-dir",
            data,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-client-ca",
            cert,
        ])
        .unwrap();
        assert!(
            mutual
                .to_config()
                .unwrap()
                .serve
                .tls
                .is_some_and(|tls| tls.is_mutual())
        );
        assert!(
            serve_args(&["--tls-cert", cert]).is_err(),
            "a key is required"
        );
        assert!(serve_args(&["--dev-tls"]).is_err(), "--dev-tls needs --dev");
        let ca_only = serve_args(&["--dev", "--data-dir", data, "--tls-client-ca", cert]).unwrap();
        assert!(matches!(
            ca_only.to_config(),
            Err(ConfigError::ClientCaWithoutTls)
        ));
        assert!(config_plain(data).serve.tls.is_none());
    }

    fn config_plain(data: &str) -> Config {
        serve_args(&["--dev", "--data-dir", data])
            .unwrap()
            .to_config()
            .unwrap()
    }
}
