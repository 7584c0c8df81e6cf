//! Configuration: the `kmsim` command line (clap, every flag also a `KMSIM_*` environment
//! variable) and the library-level [`Config`] that [`crate::serve`] takes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Address to listen on.
    #[arg(long, env = "KMSIM_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
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
    #[arg(long, env = "KMSIM_DEV")]
    pub dev: bool,
    /// File holding the HSM master key as 64 hex digits ("keep your own key"). Required
    /// unless --dev.
    #[arg(long, env = "KMSIM_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The HSM security-officer PIN the service uses. Required unless --dev.
    #[arg(long, env = "KMSIM_HSM_SO_PIN", hide_env_values = true)]
    pub hsm_so_pin: Option<String>,
    /// The HSM user PIN the service uses. Required unless --dev.
    #[arg(long, env = "KMSIM_HSM_USER_PIN", hide_env_values = true)]
    pub hsm_user_pin: Option<String>,
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
    /// A sled database under this directory (`<dir>/db`).
    Directory(PathBuf),
    /// A temporary sled database, removed when the server stops (tests).
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
    #[error("no HSM PINs: set KMSIM_HSM_SO_PIN and KMSIM_HSM_USER_PIN, or pass --dev")]
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

    /// Builds the server configuration. Under --dev, reads or creates the development secrets
    /// file in the data directory.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| ConfigError::Io { path, source }
        };
        std::fs::create_dir_all(&self.data_dir).map_err(io(&self.data_dir))?;
        let (master_key, credentials) = if self.dev {
            load_or_create_dev_secrets(&self.dev_secrets_path())?
        } else {
            let path = self
                .master_key_file
                .as_ref()
                .ok_or(ConfigError::NoMasterKey)?;
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
            let key = parse_master_key(text.trim()).ok_or(ConfigError::BadMasterKey)?;
            let (Some(so), Some(user)) = (&self.hsm_so_pin, &self.hsm_user_pin) else {
                return Err(ConfigError::NoPins);
            };
            let credentials = HsmCredentials {
                so_pin: Zeroizing::new(so.as_bytes().to_vec()),
                user_pin: Zeroizing::new(user.as_bytes().to_vec()),
            };
            (key, credentials)
        };
        let mut config = Config::persistent(self.data_dir.clone(), master_key, credentials);
        config.dev_token = self.dev;
        config.seed_file = self.seed_file.clone();
        config.deterministic = self.deterministic;
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
}
