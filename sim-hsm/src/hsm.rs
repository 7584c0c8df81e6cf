//! The module itself ([`Hsm`]): configuration, life cycle (power-on self-tests, error state, reset), status and
//! error log, slots and token initialisation, opening sessions, zeroization and tamper response.
//!
//! State machine: `SelfTesting -> Operational | Error`. `Error` is left only by [`Hsm::reset`] /
//! [`Hsm::run_self_tests`] when every power-on test passes. In `Error`, every cryptographic service and every
//! session service returns `FipsSelfTestFailed`; `status`, `last_error`, `slots`, `token_info`, `zeroize`,
//! `tamper` and `reset` keep working.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use zeroize::Zeroizing;

use crate::ceremony::Ceremony;
use crate::error::HsmError;
use crate::master_key::{DevMasterKey, MasterKeyRegister, RegisterState};
use crate::mechanism;
use crate::rng::{Generators, RandomSource, SeededDrbg};
use crate::seal::MasterKey;
use crate::selftest::{self, SelfTestResult};
use crate::session::Session;
use crate::store::{ObjectStore, StoreOp};
use crate::token::{
    self, PinBlob, Role, SessionEntry, SlotId, SlotInfo, Token, TokenInfo, TokenMeta, read, write,
};

/// Environment variable naming a self-test to fail at start-up (like Go's `GODEBUG=#failfipscast`).
pub const FAIL_CAST_ENV: &str = "SIM_HSM_FAIL_CAST";

/// FIPS 140 security level the module imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum SecurityLevel {
    /// Level 1: an SO PIN never locks (wrong SO PINs are still counted and flagged).
    Level1,
    /// Level 2 (default): role-based authentication, PIN lockout.
    #[default]
    Level2,
    /// Level 3: as level 2, and no secret key VALUE is ever readable.
    Level3,
    /// Level 4: as level 3, and an SO PIN lockout zeroizes the token.
    Level4,
}

/// Module configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmConfig {
    /// Wrong PINs before a PIN locks (default 3).
    pub pin_retry_limit: u32,
    /// Minimum PIN length in bytes (default 4).
    pub min_pin_len: usize,
    /// Maximum PIN length in bytes (default 255).
    pub max_pin_len: usize,
    /// PBKDF2-HMAC-SHA256 iterations for new PIN blobs (default 100 000). Existing blobs keep their own count.
    pub pin_kdf_iterations: u32,
    /// Name of a self-test to fail (fault injection; R-3). When `None`, the `SIM_HSM_FAIL_CAST` environment
    /// variable is consulted at start-up.
    pub fail_self_test: Option<String>,
    /// Security level (default [`SecurityLevel::Level2`]).
    pub security_level: SecurityLevel,
    /// `None`: a ChaCha20 DRBG seeded from the OS. `Some(seed)`: a deterministic ChaCha20 generator for
    /// reproducible runs (never for real keys).
    pub rng_seed: Option<[u8; 32]>,
}

impl Default for HsmConfig {
    fn default() -> Self {
        Self {
            pin_retry_limit: 3,
            min_pin_len: 4,
            max_pin_len: 255,
            pin_kdf_iterations: 100_000,
            fail_self_test: None,
            security_level: SecurityLevel::Level2,
            rng_seed: None,
        }
    }
}

/// Operational state of the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleState {
    /// The power-on self-tests are running; all output is inhibited.
    SelfTesting,
    /// Every self-test passed; services are available.
    Operational,
    /// A self-test or conditional test failed; only status, reset and zeroize work.
    Error,
}

const ST_SELF_TESTING: u8 = 0;
const ST_OPERATIONAL: u8 = 1;
const ST_ERROR: u8 = 2;

/// An entry of the error log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRecord {
    /// The failed test (a name from [`crate::selftest`]) or [`selftest::TAMPER`].
    pub test: &'static str,
    /// When it happened.
    pub time: SystemTime,
}

/// What [`Hsm::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleStatus {
    /// Operational state.
    pub state: ModuleState,
    /// Results of the last power-on self-test run.
    pub self_tests: Vec<SelfTestResult>,
    /// The most recent failure (self-test, conditional test or tamper event).
    pub last_failure: Option<FailureRecord>,
    /// Current master-key register.
    pub current_master_key: MasterKeyRegister,
    /// New master-key register.
    pub new_master_key: MasterKeyRegister,
    /// A master-key rotation has begun and not finished.
    pub rotation_in_progress: bool,
    /// Number of initialised tokens.
    pub initialized_tokens: usize,
    /// The crypto unit is in imprint mode (thresholds not set).
    pub imprint_mode: bool,
    /// Signature threshold (0 in imprint mode).
    pub signature_threshold: u8,
    /// Revocation signature threshold (0 in imprint mode).
    pub revocation_threshold: u8,
    /// Names of the installed administrators.
    pub administrators: Vec<String>,
    /// Number of tamper events since start-up.
    pub tamper_events: u64,
    /// Configured security level.
    pub security_level: SecurityLevel,
}

/// A callback run before each power-on test (tests use it to pause the self-test and observe that output is
/// inhibited, R-2).
pub type SelfTestHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// A store write to be sealed under the master key.
pub(crate) enum Pending {
    Put(String, Zeroizing<Vec<u8>>),
    Delete(String),
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere while holding the lock; every guarded value stays consistent
    // because updates are single assignments.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shared module state (sessions hold an `Arc` to it).
pub(crate) struct HsmInner {
    pub config: HsmConfig,
    pub store: Arc<dyn ObjectStore>,
    state: AtomicU8,
    self_tests: Mutex<Vec<SelfTestResult>>,
    last_error: Mutex<Option<FailureRecord>>,
    injected: RwLock<Option<&'static str>>,
    /// Whether the injected failure is the continuous RNG test (read on every draw without a lock).
    crngt_injected: AtomicBool,
    rng: Generators,
    pub master: RwLock<Option<MasterKey>>,
    pub rotating: AtomicBool,
    pub ceremony: Mutex<Ceremony>,
    pub tokens: RwLock<Vec<Arc<Token>>>,
    pub next_session: AtomicU64,
    hook: RwLock<Option<SelfTestHook>>,
    tamper_events: AtomicU64,
}

impl HsmInner {
    /// `FipsSelfTestFailed` unless the module is operational (one atomic load).
    #[inline]
    pub(crate) fn ensure_operational(&self) -> Result<(), HsmError> {
        if self.state.load(Ordering::Acquire) == ST_OPERATIONAL {
            Ok(())
        } else {
            Err(HsmError::FipsSelfTestFailed)
        }
    }

    pub(crate) fn state(&self) -> ModuleState {
        match self.state.load(Ordering::Acquire) {
            ST_SELF_TESTING => ModuleState::SelfTesting,
            ST_OPERATIONAL => ModuleState::Operational,
            _ => ModuleState::Error,
        }
    }

    /// Enters the error state and logs `test`.
    pub(crate) fn enter_error(&self, test: &'static str) {
        self.state.store(ST_ERROR, Ordering::Release);
        *lock(&self.last_error) = Some(FailureRecord {
            test,
            time: SystemTime::now(),
        });
    }

    pub(crate) fn is_injected(&self, name: &'static str) -> bool {
        *read(&self.injected) == Some(name)
    }

    /// Random bytes through the continuous RNG test; a failure puts the module in the error state.
    pub(crate) fn random(&self, buf: &mut [u8]) -> Result<(), HsmError> {
        let force = self.crngt_injected.load(Ordering::Relaxed);
        let r = self.rng.fill(buf, force);
        if let Err(HsmError::FipsSelfTestFailed) = r {
            self.enter_error(selftest::CRNGT);
        }
        r
    }

    pub(crate) fn random_array<const N: usize>(&self) -> Result<[u8; N], HsmError> {
        let mut a = [0u8; N];
        self.random(&mut a)?;
        Ok(a)
    }

    pub(crate) fn random_key(&self) -> Result<Zeroizing<[u8; 32]>, HsmError> {
        let mut k = Zeroizing::new([0u8; 32]);
        self.random(&mut k[..])?;
        Ok(k)
    }

    /// Seals and writes a batch atomically under the current master key.
    pub(crate) fn persist(&self, ops: &[Pending]) -> Result<(), HsmError> {
        let guard = read(&self.master);
        let mk = guard.as_ref().ok_or(HsmError::MasterKeyNotLoaded)?;
        let mut batch = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Pending::Put(key, body) => {
                    let nonce = self.random_array::<12>()?;
                    batch.push(StoreOp::Put {
                        key: key.clone().into_bytes(),
                        value: mk.seal(key.as_bytes(), &nonce, body)?,
                    });
                }
                Pending::Delete(key) => batch.push(StoreOp::Delete {
                    key: key.clone().into_bytes(),
                }),
            }
        }
        self.store.apply(&batch)?;
        Ok(())
    }

    pub(crate) fn master_loaded(&self) -> Result<(), HsmError> {
        if read(&self.master).is_some() {
            Ok(())
        } else {
            Err(HsmError::MasterKeyNotLoaded)
        }
    }

    pub(crate) fn token(&self, slot: SlotId) -> Result<Arc<Token>, HsmError> {
        read(&self.tokens)
            .iter()
            .find(|t| t.slot == slot)
            .cloned()
            .ok_or(HsmError::SlotIdInvalid)
    }

    pub(crate) fn pin_len_ok(&self, pin: &[u8]) -> bool {
        (self.config.min_pin_len..=self.config.max_pin_len).contains(&pin.len())
    }

    /// A new uninitialised token with a fresh serial whose slot ID is not in use.
    pub(crate) fn new_empty_token(&self, existing: &[Arc<Token>]) -> Result<Arc<Token>, HsmError> {
        loop {
            let raw = self.random_array::<8>()?;
            let serial: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let slot = token::slot_from_serial(&serial);
            if existing.iter().all(|t| t.slot != slot) {
                return Ok(Arc::new(Token::new(
                    serial,
                    TokenMeta::empty(),
                    self.random_array()?,
                )));
            }
        }
    }

    /// Counts a wrong PIN: persists the counter, locks at the limit (never the SO PIN at level 1) and, at level 4,
    /// zeroizes the token when the SO PIN locks. Returns the error to report.
    pub(crate) fn pin_failure(&self, token: &Token, meta: &mut TokenMeta, role: Role) -> HsmError {
        let limit = self.config.pin_retry_limit.max(1);
        let level = self.config.security_level;
        let (failures, locked) = match role {
            Role::So => (&mut meta.so_failures, &mut meta.so_locked),
            Role::User => (&mut meta.user_failures, &mut meta.user_locked),
        };
        *failures = failures.saturating_add(1);
        if *failures >= limit && !(role == Role::So && level == SecurityLevel::Level1) {
            *locked = true;
        }
        let so_locked_now = role == Role::So && meta.so_locked;
        if so_locked_now && level == SecurityLevel::Level4 {
            if let Err(e) = self.wipe_token(token, meta) {
                return e;
            }
            return HsmError::PinIncorrect;
        }
        let body = meta.encode_state();
        if let Err(e) = self.persist(&[Pending::Put(token::state_key(&token.serial), body)]) {
            return e;
        }
        HsmError::PinIncorrect
    }

    /// Persists the token state record (after a successful login cleared a counter).
    pub(crate) fn save_state(&self, token: &Token, meta: &TokenMeta) -> Result<(), HsmError> {
        self.persist(&[Pending::Put(
            token::state_key(&token.serial),
            meta.encode_state(),
        )])
    }

    /// Deletes every record of a token, wipes it from memory and leaves it uninitialised (the slot stays).
    pub(crate) fn wipe_token(&self, token: &Token, meta: &mut TokenMeta) -> Result<(), HsmError> {
        token.wipe_memory();
        let next_handle = meta.next_handle;
        *meta = TokenMeta::empty();
        meta.next_handle = next_handle;
        let prefix = format!("tok/{}/", token.serial);
        let records = self.store.scan_prefix(prefix.as_bytes())?;
        let batch: Vec<StoreOp> = records
            .into_iter()
            .map(|(key, _)| StoreOp::Delete { key })
            .collect();
        self.store.apply(&batch)?;
        Ok(())
    }

    fn run_post(&self) -> ModuleState {
        self.state.store(ST_SELF_TESTING, Ordering::Release);
        let hook = read(&self.hook).clone();
        let mut results = Vec::with_capacity(selftest::POST_TESTS.len());
        let mut failed = None;
        for name in selftest::POST_TESTS {
            if let Some(h) = &hook {
                h(name);
            }
            let passed = !self.is_injected(name) && selftest::run(name);
            if !passed && failed.is_none() {
                failed = Some(name);
            }
            results.push(SelfTestResult { name, passed });
        }
        self.rng.reset();
        *lock(&self.self_tests) = results;
        match failed {
            Some(name) => {
                self.enter_error(name);
                ModuleState::Error
            }
            None => {
                self.state.store(ST_OPERATIONAL, Ordering::Release);
                ModuleState::Operational
            }
        }
    }

    /// Installs `mk` as the current master key after loading every token sealed under it.
    pub(crate) fn install_master_key(&self, mk: MasterKey) -> Result<(), HsmError> {
        if read(&self.master).is_some() {
            return Err(HsmError::MasterKeyAlreadyActive);
        }
        token::check_store_owner(self.store.as_ref(), &mk)?;
        let loaded = token::load_tokens(self.store.as_ref(), &mk, || self.random_array())?;
        {
            let mut master = write(&self.master);
            if master.is_some() {
                return Err(HsmError::MasterKeyAlreadyActive);
            }
            *master = Some(mk);
        }
        let mut tokens = write(&self.tokens);
        let mut list: Vec<Arc<Token>> = loaded;
        for t in tokens.iter() {
            if list.iter().all(|l| l.slot != t.slot) {
                list.push(t.clone());
            }
        }
        if list.iter().all(|t| t.meta().initialized) {
            let empty = self.new_empty_token(&list)?;
            list.push(empty);
        }
        *tokens = list;
        Ok(())
    }
}

/// The simulated HSM. `Send + Sync`; share it in an `Arc`.
#[derive(Clone)]
pub struct Hsm {
    pub(crate) inner: Arc<HsmInner>,
}

impl fmt::Debug for Hsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hsm")
            .field("state", &self.inner.state())
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Creates the module over `store` and runs the power-on self-tests. The module ends `Operational` or,
    /// if a test failed, `Error` (still `Ok`: inspect [`Hsm::status`]). No master key is needed yet.
    pub fn new(config: HsmConfig, store: Arc<dyn ObjectStore>) -> Result<Self, HsmError> {
        let generators = match config.rng_seed {
            Some(seed) => Generators::shared(Box::new(SeededDrbg::new(seed))),
            None => Generators::striped()?,
        };
        Self::with_generators(config, store, generators)
    }

    /// Like [`Hsm::new`] with an explicit random source (tests use a broken source to exercise the continuous
    /// RNG test, R-8).
    pub fn with_random_source(
        config: HsmConfig,
        store: Arc<dyn ObjectStore>,
        source: Box<dyn RandomSource>,
    ) -> Result<Self, HsmError> {
        Self::with_generators(config, store, Generators::shared(source))
    }

    fn with_generators(
        config: HsmConfig,
        store: Arc<dyn ObjectStore>,
        rng: Generators,
    ) -> Result<Self, HsmError> {
        let injected = match &config.fail_self_test {
            Some(n) => selftest::canonical_name(n),
            None => std::env::var(FAIL_CAST_ENV)
                .ok()
                .and_then(|n| selftest::canonical_name(&n)),
        };
        let inner = Arc::new(HsmInner {
            config,
            store,
            state: AtomicU8::new(ST_SELF_TESTING),
            self_tests: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            crngt_injected: AtomicBool::new(injected == Some(selftest::CRNGT)),
            injected: RwLock::new(injected),
            rng,
            master: RwLock::new(None),
            rotating: AtomicBool::new(false),
            ceremony: Mutex::new(Ceremony::new()),
            tokens: RwLock::new(Vec::new()),
            next_session: AtomicU64::new(1),
            hook: RwLock::new(None),
            tamper_events: AtomicU64::new(0),
        });
        let hsm = Self { inner };
        hsm.inner.run_post();
        // The first empty slot and the ceremony instance nonce need the DRBG; in the error state the slot list
        // stays empty until a reset succeeds.
        if hsm.inner.state() == ModuleState::Operational {
            hsm.prepare_after_post()?;
        }
        Ok(hsm)
    }

    fn prepare_after_post(&self) -> Result<(), HsmError> {
        let needs_slot = read(&self.inner.tokens).is_empty();
        if needs_slot {
            let t = self.inner.new_empty_token(&[])?;
            write(&self.inner.tokens).push(t);
        }
        let mut c = lock(&self.inner.ceremony);
        if c.instance_is_unset() {
            c.set_instance(self.inner.random_array()?);
        }
        Ok(())
    }

    /// Module status: state, self-test results, last failure, master-key registers, token count, ceremony.
    #[must_use]
    pub fn status(&self) -> ModuleStatus {
        let inner = &self.inner;
        let current = match read(&inner.master).as_ref() {
            Some(mk) => MasterKeyRegister {
                state: RegisterState::Valid,
                verification_pattern: Some(mk.fingerprint()),
                parts_loaded: 0,
            },
            None => MasterKeyRegister {
                state: RegisterState::Empty,
                verification_pattern: None,
                parts_loaded: 0,
            },
        };
        let c = lock(&inner.ceremony);
        ModuleStatus {
            state: inner.state(),
            self_tests: lock(&inner.self_tests).clone(),
            last_failure: *lock(&inner.last_error),
            current_master_key: current,
            new_master_key: c.new_register(),
            rotation_in_progress: inner.rotating.load(Ordering::Acquire),
            initialized_tokens: read(&inner.tokens)
                .iter()
                .filter(|t| t.meta().initialized)
                .count(),
            imprint_mode: c.imprint_mode(),
            signature_threshold: c.signature_threshold(),
            revocation_threshold: c.revocation_threshold(),
            administrators: c.admin_names(),
            tamper_events: inner.tamper_events.load(Ordering::Relaxed),
            security_level: inner.config.security_level,
        }
    }

    /// The most recent failure.
    #[must_use]
    pub fn last_error(&self) -> Option<FailureRecord> {
        *lock(&self.inner.last_error)
    }

    /// Re-runs the power-on self-tests (same as [`Hsm::reset`]).
    pub fn run_self_tests(&self) -> ModuleState {
        self.reset()
    }

    /// Re-runs the power-on self-tests; the module leaves `Error` only when all pass.
    pub fn reset(&self) -> ModuleState {
        let s = self.inner.run_post();
        if s == ModuleState::Operational && self.prepare_after_post().is_err() {
            return self.inner.state();
        }
        s
    }

    /// Sets (or clears) the self-test to fail, at run time. Unknown names are ignored.
    pub fn set_self_test_failure(&self, name: Option<&str>) {
        let name = name.and_then(selftest::canonical_name);
        let mut injected = write(&self.inner.injected);
        *injected = name;
        self.inner
            .crngt_injected
            .store(name == Some(selftest::CRNGT), Ordering::Relaxed);
    }

    /// Installs a callback run before each power-on test (R-2 tests).
    pub fn set_self_test_hook(&self, hook: Option<SelfTestHook>) {
        *write(&self.inner.hook) = hook;
    }

    /// Every supported `CKM_*` code (0x210A and 0x210B both listed).
    #[must_use]
    pub fn mechanism_list(&self) -> Vec<u64> {
        mechanism::supported_mechanisms()
    }

    /// Developer helper: makes `key` the current master key in one call (no ceremony) and loads every token
    /// from the store. Idempotent for the same key; `MasterKeyAlreadyActive` for a different one;
    /// `WrongMasterKey` when the store's records are sealed under another key.
    pub fn activate_dev_master_key(&self, key: &DevMasterKey) -> Result<(), HsmError> {
        self.inner.ensure_operational()?;
        let mk = MasterKey::new(key.to_bytes());
        if let Some(cur) = read(&self.inner.master).as_ref() {
            return if cur.fingerprint() == mk.fingerprint() {
                Ok(())
            } else {
                Err(HsmError::MasterKeyAlreadyActive)
            };
        }
        self.inner.install_master_key(mk)
    }

    /// Every initialised token plus the empty slot(s).
    #[must_use]
    pub fn slots(&self) -> Vec<SlotInfo> {
        read(&self.inner.tokens)
            .iter()
            .map(|t| {
                let m = t.meta();
                SlotInfo {
                    slot: t.slot,
                    initialized: m.initialized,
                    label: m.label.clone(),
                    serial: t.serial.clone(),
                }
            })
            .collect()
    }

    /// The slot of the initialised token with this label.
    #[must_use]
    pub fn find_slot_by_label(&self, label: &str) -> Option<SlotId> {
        read(&self.inner.tokens)
            .iter()
            .find(|t| {
                let m = t.meta();
                m.initialized && m.fault.is_none() && m.label == label
            })
            .map(|t| t.slot)
    }

    /// The first slot without an initialised token.
    #[must_use]
    pub fn empty_slot(&self) -> Option<SlotId> {
        read(&self.inner.tokens)
            .iter()
            .find(|t| !t.meta().initialized)
            .map(|t| t.slot)
    }

    /// Token information (label, serial, `CKF_*` flags).
    pub fn token_info(&self, slot: SlotId) -> Result<TokenInfo, HsmError> {
        let t = self.inner.token(slot)?;
        let m = t.meta();
        if m.fault.is_some() {
            return Err(HsmError::TokenNotRecognized);
        }
        let (count, rw) = {
            let s = t.sessions();
            (s.len(), s.values().filter(|e| e.rw).count())
        };
        Ok(TokenInfo {
            slot,
            label: m.label.clone(),
            serial: t.serial.clone(),
            flags: m.flags(self.inner.config.pin_retry_limit),
            manufacturer: "kmsim",
            model: "sim-hsm",
            session_count: count,
            rw_session_count: rw,
            min_pin_len: self.inner.config.min_pin_len,
            max_pin_len: self.inner.config.max_pin_len,
        })
    }

    /// `C_InitToken`. A PIN of bad length gives `PinIncorrect` (SoftHSM-compatible). Re-initialising needs the
    /// current SO PIN and destroys every object of the token; a locked SO PIN gives `PinLocked`.
    pub fn init_token(&self, slot: SlotId, so_pin: &[u8], label: &str) -> Result<(), HsmError> {
        let inner = &self.inner;
        inner.ensure_operational()?;
        let token = inner.token(slot)?;
        inner.master_loaded()?;
        if inner.rotating.load(Ordering::Acquire) {
            return Err(HsmError::MasterKeyRotationInProgress);
        }
        if label.len() > 32 {
            return Err(HsmError::ArgumentsBad);
        }
        if !token.sessions().is_empty() {
            return Err(HsmError::SessionExists);
        }
        let mut meta = token.meta();
        if meta.fault.is_some() {
            return Err(HsmError::TokenNotRecognized);
        }
        let was_initialized = meta.initialized;
        if was_initialized {
            if meta.so_locked {
                return Err(HsmError::PinLocked);
            }
            let blob = meta.so_blob.clone().ok_or(HsmError::TokenNotRecognized)?;
            if !inner.pin_len_ok(so_pin) || blob.open(&token.serial, Role::So, so_pin).is_err() {
                return Err(inner.pin_failure(&token, &mut meta, Role::So));
            }
        } else if !inner.pin_len_ok(so_pin) {
            return Err(HsmError::PinIncorrect);
        }
        let token_key = inner.random_key()?;
        let so_blob = PinBlob::create(
            &token.serial,
            Role::So,
            so_pin,
            &token_key,
            inner.random_array()?,
            inner.random_array()?,
            inner.config.pin_kdf_iterations,
        )?;
        let mut new_meta = TokenMeta::empty();
        new_meta.initialized = true;
        new_meta.label = label.to_owned();
        new_meta.so_blob = Some(so_blob);
        new_meta.next_handle = meta.next_handle;
        let mut ops: Vec<Pending> = inner
            .store
            .scan_prefix(format!("tok/{}/obj/", token.serial).as_bytes())?
            .into_iter()
            .map(|(k, _)| Pending::Delete(String::from_utf8_lossy(&k).into_owned()))
            .collect();
        ops.push(Pending::Put(
            token::info_key(&token.serial),
            new_meta.encode_info(),
        ));
        ops.push(Pending::Put(
            token::state_key(&token.serial),
            new_meta.encode_state(),
        ));
        inner.persist(&ops)?;
        token.wipe_memory();
        *meta = new_meta;
        drop(meta);
        if !was_initialized {
            let mut tokens = write(&inner.tokens);
            if tokens.iter().all(|t| t.meta().initialized) {
                let empty = inner.new_empty_token(&tokens)?;
                tokens.push(empty);
            }
        }
        Ok(())
    }

    /// `C_OpenSession`. An R/O session cannot be opened while the SO is logged in (`SessionReadWriteSoExists`).
    pub fn open_session(&self, slot: SlotId, read_write: bool) -> Result<Session, HsmError> {
        let inner = &self.inner;
        inner.ensure_operational()?;
        let token = inner.token(slot)?;
        {
            let m = token.meta();
            if !m.initialized || m.fault.is_some() {
                return Err(HsmError::TokenNotRecognized);
            }
        }
        let mut sessions = token.sessions();
        if !read_write && token.login.load(Ordering::Acquire) == token::LOGGED_SO {
            return Err(HsmError::SessionReadWriteSoExists);
        }
        let id = inner.next_session.fetch_add(1, Ordering::Relaxed);
        let closed = Arc::new(AtomicBool::new(false));
        sessions.insert(
            id,
            SessionEntry {
                rw: read_write,
                closed: closed.clone(),
            },
        );
        drop(sessions);
        Ok(Session::new(inner.clone(), token, id, read_write, closed))
    }

    /// `C_CloseAllSessions`: closes every session of the slot (their handles become invalid) and logs out.
    pub fn close_all_sessions(&self, slot: SlotId) -> Result<(), HsmError> {
        let token = self.inner.token(slot)?;
        let ids: Vec<u64> = token.sessions().keys().copied().collect();
        for id in ids {
            crate::session::close_session(&token, id);
        }
        Ok(())
    }

    /// Zeroizes one token (the way out of an SO lockout, R-14): every object, the token key, the PIN blobs and the
    /// token's store records are destroyed and the slot is left uninitialised.
    pub fn zeroize_token(&self, slot: SlotId) -> Result<(), HsmError> {
        let token = self.inner.token(slot)?;
        let mut meta = token.meta();
        self.inner.wipe_token(&token, &mut meta)
    }

    /// Zeroizes the module: every plaintext key, token key and PIN blob in memory, every token record in
    /// the store (keys under `tok/`), and the master key. Tokens are left uninitialised (their slots stay), the
    /// ceremony returns to imprint mode with thresholds 0 and no administrators. Works in the error state.
    pub fn zeroize(&self) -> Result<(), HsmError> {
        let inner = &self.inner;
        let tokens: Vec<Arc<Token>> = read(&inner.tokens).clone();
        let mut result = Ok(());
        for t in &tokens {
            let mut meta = t.meta();
            if let Err(e) = inner.wipe_token(t, &mut meta) {
                result = Err(e);
            }
        }
        // Records of tokens not in memory (e.g. left by another master key).
        match inner.store.scan_prefix(b"tok/") {
            Ok(rest) => {
                let batch: Vec<StoreOp> = rest
                    .into_iter()
                    .map(|(key, _)| StoreOp::Delete { key })
                    .collect();
                if let Err(e) = inner.store.apply(&batch) {
                    result = Err(e.into());
                }
            }
            Err(e) => result = Err(e.into()),
        }
        *write(&inner.master) = None;
        inner.rotating.store(false, Ordering::Release);
        lock(&inner.ceremony).zeroize();
        result
    }

    /// Tamper response: the same wipe as [`Hsm::zeroize`], plus a tamper event in the error log and status.
    pub fn tamper(&self) -> Result<(), HsmError> {
        let r = self.zeroize();
        self.inner.tamper_events.fetch_add(1, Ordering::Relaxed);
        *lock(&self.inner.last_error) = Some(FailureRecord {
            test: selftest::TAMPER,
            time: SystemTime::now(),
        });
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::UserType;
    use crate::store::MemoryObjectStore;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// the default configuration seals PIN blobs with 100 000 PBKDF2 iterations, and no stored record
    /// contains the token key, the PINs or the master key.
    #[test]
    fn r28_default_iterations_used_and_token_key_never_stored() {
        let store = Arc::new(MemoryObjectStore::new());
        let hsm = Hsm::new(HsmConfig::default(), store.clone()).unwrap();
        hsm.activate_dev_master_key(&DevMasterKey::from_bytes([5; 32]))
            .unwrap();
        let slot = hsm.empty_slot().unwrap();
        hsm.init_token(slot, b"so-pin-0000", "t").unwrap();
        let token = hsm.inner.token(slot).unwrap();
        assert_eq!(
            token.meta().so_blob.as_ref().unwrap().iterations_for_test(),
            100_000
        );
        let s = hsm.open_session(slot, true).unwrap();
        s.login(UserType::So, b"so-pin-0000").unwrap();
        s.init_pin(b"user-pin-0000").unwrap();
        let tk = token.token_key().unwrap();
        for (k, v) in store.records() {
            assert!(!contains(&v, &tk[..16]), "{}", String::from_utf8_lossy(&k));
            assert!(!contains(&v, b"so-pin-0000"));
            assert!(!contains(&v, b"user-pin-0000"));
            assert!(!contains(&v, &[5u8; 16]));
        }
    }
}
