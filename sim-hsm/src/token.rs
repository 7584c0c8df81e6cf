//! Tokens: identity (slot, serial, label), SO/User PIN blobs wrapping the token key (PBKDF2-HMAC-SHA256 KEKs),
//! persisted wrong-PIN counters and lock flags, login state, the session table, the in-memory object map and the
//! per-token GCM IV generator. Also the stored-record layout of a token and loading tokens from the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::HsmError;
use crate::object::{self, Fault, KeyMaterial, KeyObject};
use crate::primitives;
use crate::seal::{self, MasterKey};
use crate::store::ObjectStore;

/// PKCS#11 `CK_TOKEN_INFO.flags` bits used by the module.
pub mod flags {
    /// `CKF_RNG`.
    pub const RNG: u64 = 0x1;
    /// `CKF_LOGIN_REQUIRED`.
    pub const LOGIN_REQUIRED: u64 = 0x4;
    /// `CKF_USER_PIN_INITIALIZED`.
    pub const USER_PIN_INITIALIZED: u64 = 0x8;
    /// `CKF_RESTORE_KEY_NOT_NEEDED`.
    pub const RESTORE_KEY_NOT_NEEDED: u64 = 0x20;
    /// `CKF_TOKEN_INITIALIZED`.
    pub const TOKEN_INITIALIZED: u64 = 0x400;
    /// `CKF_USER_PIN_COUNT_LOW`.
    pub const USER_PIN_COUNT_LOW: u64 = 1 << 16;
    /// `CKF_USER_PIN_FINAL_TRY`.
    pub const USER_PIN_FINAL_TRY: u64 = 1 << 17;
    /// `CKF_USER_PIN_LOCKED`.
    pub const USER_PIN_LOCKED: u64 = 1 << 18;
    /// `CKF_USER_PIN_TO_BE_CHANGED`.
    pub const USER_PIN_TO_BE_CHANGED: u64 = 1 << 19;
    /// `CKF_SO_PIN_COUNT_LOW`.
    pub const SO_PIN_COUNT_LOW: u64 = 1 << 20;
    /// `CKF_SO_PIN_FINAL_TRY`.
    pub const SO_PIN_FINAL_TRY: u64 = 1 << 21;
    /// `CKF_SO_PIN_LOCKED`.
    pub const SO_PIN_LOCKED: u64 = 1 << 22;
    /// `CKF_SO_PIN_TO_BE_CHANGED`.
    pub const SO_PIN_TO_BE_CHANGED: u64 = 1 << 23;
}

/// A slot ID: the last 8 hex digits of the token serial, masked to 31 bits (SoftHSM-compatible). Not a small
/// stable integer: find tokens by label or serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u64);

/// What `Hsm::slots` reports for one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Slot ID.
    pub slot: SlotId,
    /// Whether the slot holds an initialised token.
    pub initialized: bool,
    /// Token label (empty for an uninitialised slot).
    pub label: String,
    /// Token serial (16 hex digits), also for the empty slot.
    pub serial: String,
}

/// What `Hsm::token_info` reports (the useful part of `CK_TOKEN_INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Slot ID.
    pub slot: SlotId,
    /// Token label.
    pub label: String,
    /// Serial number (16 hex digits).
    pub serial: String,
    /// `CKF_*` flags (see [`flags`]).
    pub flags: u64,
    /// Manufacturer ID.
    pub manufacturer: &'static str,
    /// Model.
    pub model: &'static str,
    /// Open sessions.
    pub session_count: usize,
    /// Open read/write sessions.
    pub rw_session_count: usize,
    /// Minimum PIN length.
    pub min_pin_len: usize,
    /// Maximum PIN length.
    pub max_pin_len: usize,
}

/// Login state of a token (shared by all its sessions).
pub(crate) const LOGGED_OUT: u8 = 0;
pub(crate) const LOGGED_SO: u8 = 1;
pub(crate) const LOGGED_USER: u8 = 2;

/// Which PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    So,
    User,
}

impl Role {
    fn tag(self) -> &'static str {
        match self {
            Self::So => "so",
            Self::User => "user",
        }
    }
}

/// The token key wrapped under a PIN-derived KEK.
#[derive(Clone)]
pub(crate) struct PinBlob {
    salt: [u8; 16],
    iterations: u32,
    sealed: Vec<u8>,
}

impl PinBlob {
    fn aad(serial: &str, role: Role) -> Vec<u8> {
        format!("sim-hsm/pin-blob/v1/{serial}/{}", role.tag()).into_bytes()
    }

    /// Wraps `token_key` under PBKDF2(pin).
    pub(crate) fn create(
        serial: &str,
        role: Role,
        pin: &[u8],
        token_key: &[u8; 32],
        salt: [u8; 16],
        nonce: [u8; 12],
        iterations: u32,
    ) -> Result<Self, HsmError> {
        let kek = primitives::pin_kek(pin, &salt, iterations);
        let sealed = primitives::seal256(&kek, &nonce, &Self::aad(serial, role), &token_key[..])?;
        Ok(Self {
            salt,
            iterations,
            sealed,
        })
    }

    /// The token key if `pin` is right; `PinIncorrect` otherwise.
    pub(crate) fn open(
        &self,
        serial: &str,
        role: Role,
        pin: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, HsmError> {
        let kek = primitives::pin_kek(pin, &self.salt, self.iterations);
        let key = primitives::open256(&kek, &Self::aad(serial, role), &self.sealed, || {
            HsmError::PinIncorrect
        })?;
        let mut out = Zeroizing::new([0u8; 32]);
        if key.len() != 32 {
            return Err(HsmError::DeviceError);
        }
        out.copy_from_slice(&key);
        Ok(out)
    }

    #[cfg(test)]
    pub(crate) fn iterations_for_test(&self) -> u32 {
        self.iterations
    }

    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.salt).u32(self.iterations).bytes(&self.sealed);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, HsmError> {
        let salt = <[u8; 16]>::try_from(r.bytes()?).map_err(|_| HsmError::DeviceError)?;
        let iterations = r.u32()?;
        let sealed = r.bytes()?.to_vec();
        Ok(Self {
            salt,
            iterations,
            sealed,
        })
    }
}

/// Mutable token state; its mutex also serialises every store write of the token.
pub(crate) struct TokenMeta {
    pub initialized: bool,
    pub fault: Option<Fault>,
    pub label: String,
    pub so_blob: Option<PinBlob>,
    pub user_blob: Option<PinBlob>,
    pub so_failures: u32,
    pub user_failures: u32,
    pub so_locked: bool,
    pub user_locked: bool,
    pub next_handle: u32,
    /// Handles of session objects live in the upper half of the 32-bit space (never persisted, never colliding
    /// with token-object handles).
    pub next_session_handle: u32,
}

/// First handle number used for session objects.
pub(crate) const SESSION_HANDLE_BASE: u32 = 0x8000_0000;

impl TokenMeta {
    pub(crate) fn empty() -> Self {
        Self {
            initialized: false,
            fault: None,
            label: String::new(),
            so_blob: None,
            user_blob: None,
            so_failures: 0,
            user_failures: 0,
            so_locked: false,
            user_locked: false,
            next_handle: 1,
            next_session_handle: SESSION_HANDLE_BASE,
        }
    }

    pub(crate) fn encode_info(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.u8(1).str(&self.label);
        for b in [&self.so_blob, &self.user_blob] {
            match b {
                Some(b) => {
                    w.u8(1);
                    b.encode(&mut w);
                }
                None => {
                    w.u8(0);
                }
            }
        }
        w.finish()
    }

    fn decode_info(&mut self, body: &[u8]) -> Result<(), HsmError> {
        let mut r = Reader::new(body);
        if r.u8()? != 1 {
            return Err(HsmError::DeviceError);
        }
        self.label = r.string()?;
        self.so_blob = if r.bool()? {
            Some(PinBlob::decode(&mut r)?)
        } else {
            None
        };
        self.user_blob = if r.bool()? {
            Some(PinBlob::decode(&mut r)?)
        } else {
            None
        };
        r.finish()
    }

    pub(crate) fn encode_state(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.u8(1)
            .u32(self.so_failures)
            .u32(self.user_failures)
            .bool(self.so_locked)
            .bool(self.user_locked)
            .u32(self.next_handle);
        w.finish()
    }

    fn decode_state(&mut self, body: &[u8]) -> Result<(), HsmError> {
        let mut r = Reader::new(body);
        if r.u8()? != 1 {
            return Err(HsmError::DeviceError);
        }
        self.so_failures = r.u32()?;
        self.user_failures = r.u32()?;
        self.so_locked = r.bool()?;
        self.user_locked = r.bool()?;
        self.next_handle = r.u32()?;
        r.finish()
    }

    /// `CKF_*` flags for this state with a retry limit of `limit`.
    pub(crate) fn flags(&self, limit: u32) -> u64 {
        use flags::*;
        if !self.initialized {
            return RNG
                | LOGIN_REQUIRED
                | RESTORE_KEY_NOT_NEEDED
                | SO_PIN_LOCKED
                | SO_PIN_TO_BE_CHANGED;
        }
        let mut f = RNG | LOGIN_REQUIRED | RESTORE_KEY_NOT_NEEDED | TOKEN_INITIALIZED;
        if self.user_blob.is_some() {
            f |= USER_PIN_INITIALIZED;
        }
        f |= counter_flags(
            self.user_failures,
            self.user_locked,
            limit,
            USER_PIN_COUNT_LOW,
        );
        f |= counter_flags(self.so_failures, self.so_locked, limit, SO_PIN_COUNT_LOW);
        f
    }
}

/// COUNT_LOW / FINAL_TRY / LOCKED bits (consecutive, starting at `count_low`).
fn counter_flags(failures: u32, locked: bool, limit: u32, count_low: u64) -> u64 {
    if locked {
        count_low << 2
    } else if failures > 0 && failures + 1 >= limit {
        count_low << 1
    } else if failures > 0 {
        count_low
    } else {
        0
    }
}

/// Per-token GCM IV generator (SP 800-38D §8.2.1 deterministic construction): a random 32-bit fixed field and a
/// 64-bit invocation counter that starts at a random value; lock-free.
pub(crate) struct IvGen {
    fixed: [u8; 4],
    counter: AtomicU64,
}

impl IvGen {
    pub(crate) fn new(seed: [u8; 12]) -> Self {
        let mut fixed = [0u8; 4];
        fixed.copy_from_slice(&seed[..4]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&seed[4..]);
        Self {
            fixed,
            counter: AtomicU64::new(u64::from_be_bytes(c)),
        }
    }

    pub(crate) fn next(&self) -> [u8; 12] {
        let c = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut iv = [0u8; 12];
        iv[..4].copy_from_slice(&self.fixed);
        iv[4..].copy_from_slice(&c.to_be_bytes());
        iv
    }
}

/// An open session as the token sees it.
pub(crate) struct SessionEntry {
    pub rw: bool,
    /// Shared with the `Session` handle; set when the session is closed by anyone.
    pub closed: Arc<AtomicBool>,
}

/// One token (and its slot).
pub(crate) struct Token {
    pub slot: SlotId,
    pub serial: String,
    meta: Mutex<TokenMeta>,
    pub login: AtomicU8,
    sessions: Mutex<BTreeMap<u64, SessionEntry>>,
    objects: RwLock<HashMap<u64, Arc<KeyObject>>>,
    token_key: RwLock<Option<Zeroizing<[u8; 32]>>>,
    pub iv: IvGen,
}

/// Slot ID from a serial (last 8 hex digits, masked to 31 bits).
pub(crate) fn slot_from_serial(serial: &str) -> SlotId {
    let tail = serial.get(serial.len().saturating_sub(8)..).unwrap_or("0");
    SlotId(u64::from_str_radix(tail, 16).unwrap_or(0) & 0x7FFF_FFFF)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; token state is updated field by field and stays consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Store key of a token's info record.
pub(crate) fn info_key(serial: &str) -> String {
    format!("tok/{serial}/info")
}

/// Store key of a token's state record (PIN counters, lock flags, handle counter).
pub(crate) fn state_key(serial: &str) -> String {
    format!("tok/{serial}/state")
}

/// Store key of an object record.
pub(crate) fn object_key(serial: &str, handle: u64) -> String {
    format!("tok/{serial}/obj/{handle:016x}")
}

impl Token {
    pub(crate) fn new(serial: String, meta: TokenMeta, iv_seed: [u8; 12]) -> Self {
        Self {
            slot: slot_from_serial(&serial),
            serial,
            meta: Mutex::new(meta),
            login: AtomicU8::new(LOGGED_OUT),
            sessions: Mutex::new(BTreeMap::new()),
            objects: RwLock::new(HashMap::new()),
            token_key: RwLock::new(None),
            iv: IvGen::new(iv_seed),
        }
    }

    pub(crate) fn meta(&self) -> MutexGuard<'_, TokenMeta> {
        lock(&self.meta)
    }

    pub(crate) fn sessions(&self) -> MutexGuard<'_, BTreeMap<u64, SessionEntry>> {
        lock(&self.sessions)
    }

    pub(crate) fn objects(&self) -> RwLockReadGuard<'_, HashMap<u64, Arc<KeyObject>>> {
        read(&self.objects)
    }

    pub(crate) fn objects_mut(&self) -> RwLockWriteGuard<'_, HashMap<u64, Arc<KeyObject>>> {
        write(&self.objects)
    }

    /// A copy of the token key, if the key store has been unlocked.
    pub(crate) fn token_key(&self) -> Option<Zeroizing<[u8; 32]>> {
        read(&self.token_key).clone()
    }

    pub(crate) fn set_token_key(&self, key: Option<Zeroizing<[u8; 32]>>) {
        *write(&self.token_key) = key;
    }

    pub(crate) fn object(&self, handle: u64) -> Option<Arc<KeyObject>> {
        self.objects().get(&handle).cloned()
    }

    /// Handle for a new object (slot ID in the upper 32 bits).
    pub(crate) fn handle_for(&self, n: u32) -> u64 {
        (self.slot.0 << 32) | u64::from(n)
    }

    /// Installs the token key and decrypts every object value that is still sealed (first login after start-up).
    pub(crate) fn unlock(&self, key: Zeroizing<[u8; 32]>) {
        {
            let mut objects = self.objects_mut();
            let updated: Vec<(u64, Arc<KeyObject>)> = objects
                .iter()
                .filter(|(_, o)| o.material.is_none() && o.fault.is_none())
                .filter_map(|(h, o)| {
                    let sealed = o.sealed_value.as_ref()?;
                    let mut n = KeyObject::clone(o);
                    match object::open_value(&key, &self.serial, o.handle, &o.attrs, sealed)
                        .and_then(|bytes| KeyMaterial::from_secret_bytes(&o.attrs, bytes))
                    {
                        Ok(m) => n.material = Some(Arc::new(m)),
                        Err(_) => n.fault = Some(Fault::Corrupt),
                    }
                    Some((*h, Arc::new(n)))
                })
                .collect();
            for (h, o) in updated {
                objects.insert(h, o);
            }
        }
        self.set_token_key(Some(key));
    }

    /// Drops every object, the token key and the login state (zeroize / re-initialise). In-memory key material is
    /// zeroized when the last reference to it drops.
    pub(crate) fn wipe_memory(&self) {
        self.objects_mut().clear();
        self.set_token_key(None);
        self.login.store(LOGGED_OUT, Ordering::SeqCst);
    }
}

/// Parses `tok/<serial>/...` into (serial, rest).
fn split_key(key: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(key).ok()?;
    let rest = s.strip_prefix("tok/")?;
    let (serial, tail) = rest.split_once('/')?;
    Some((serial.to_owned(), tail.to_owned()))
}

/// Checks that the store belongs to `mk`: refuses (WrongMasterKey) when records exist and none is sealed under it.
pub(crate) fn check_store_owner(store: &dyn ObjectStore, mk: &MasterKey) -> Result<(), HsmError> {
    let records = store.scan_prefix(b"tok/")?;
    if records.is_empty() {
        return Ok(());
    }
    let ours = records
        .iter()
        .any(|(_, v)| seal::record_fingerprint(v) == Some(mk.fingerprint()));
    if ours {
        Ok(())
    } else {
        Err(HsmError::WrongMasterKey)
    }
}

/// Loads every token from the store. Damaged records do not abort loading: the token (or object) is marked
/// faulty and reports `TokenNotRecognized` / `DeviceError` / `WrongMasterKey` when used.
pub(crate) fn load_tokens(
    store: &dyn ObjectStore,
    mk: &MasterKey,
    mut iv_seed: impl FnMut() -> Result<[u8; 12], HsmError>,
) -> Result<Vec<Arc<Token>>, HsmError> {
    let records = store.scan_prefix(b"tok/")?;
    type Entry = (String, Vec<u8>, Vec<u8>);
    let mut by_serial: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for (k, v) in records {
        if let Some((serial, tail)) = split_key(&k) {
            by_serial.entry(serial).or_default().push((tail, k, v));
        }
    }
    let mut tokens = Vec::new();
    for (serial, recs) in by_serial {
        let mut meta = TokenMeta::empty();
        meta.initialized = true;
        let mut objects = HashMap::new();
        let fault_of = |e: &HsmError| match e {
            HsmError::WrongMasterKey => Fault::ForeignMasterKey,
            _ => Fault::Corrupt,
        };
        let mut have_info = false;
        let mut have_state = false;
        for (tail, key, value) in &recs {
            let opened = mk.open(key, value);
            match tail.as_str() {
                "info" => {
                    have_info = true;
                    if let Err(e) = opened.and_then(|b| meta.decode_info(&b)) {
                        meta.fault = Some(fault_of(&e));
                    }
                }
                "state" => {
                    have_state = true;
                    if let Err(e) = opened.and_then(|b| meta.decode_state(&b)) {
                        meta.fault = Some(fault_of(&e));
                    }
                }
                t if t.starts_with("obj/") => {
                    let Ok(handle) = u64::from_str_radix(&t[4..], 16) else {
                        continue;
                    };
                    let obj = match opened.and_then(|b| object::decode_record(&b)) {
                        Ok((h, attrs, sealed)) if h == handle => {
                            let material =
                                if attrs.class == crate::attributes::ObjectClass::PublicKey {
                                    object::public_material(&attrs).ok().map(Arc::new)
                                } else {
                                    None
                                };
                            let fault = if material.is_none() && sealed.is_none() {
                                Some(Fault::Corrupt)
                            } else {
                                None
                            };
                            KeyObject {
                                handle,
                                attrs,
                                material,
                                sealed_value: sealed,
                                session: None,
                                fault,
                            }
                        }
                        Ok(_) => faulty(handle, Fault::Corrupt),
                        Err(e) => faulty(handle, fault_of(&e)),
                    };
                    objects.insert(handle, Arc::new(obj));
                }
                _ => {}
            }
        }
        if !have_info || !have_state {
            meta.fault = Some(Fault::Corrupt);
        }
        let token = Token::new(serial, meta, iv_seed()?);
        *token.objects_mut() = objects;
        tokens.push(Arc::new(token));
    }
    Ok(tokens)
}

fn faulty(handle: u64, fault: Fault) -> KeyObject {
    KeyObject {
        handle,
        attrs: placeholder_attrs(),
        material: None,
        sealed_value: None,
        session: None,
        fault: Some(fault),
    }
}

/// Attributes of an object whose record could not be read (private, so only the user sees it, and unusable).
fn placeholder_attrs() -> crate::attributes::Attrs {
    crate::attributes::Attrs {
        class: crate::attributes::ObjectClass::SecretKey,
        key_type: crate::attributes::KeyType::GenericSecret,
        label: String::new(),
        id: Vec::new(),
        token: true,
        private: true,
        modifiable: false,
        sensitive: true,
        extractable: false,
        always_sensitive: true,
        never_extractable: true,
        local: false,
        encrypt: false,
        decrypt: false,
        wrap: false,
        unwrap: false,
        sign: false,
        verify: false,
        derive: false,
        trusted: false,
        wrap_with_trusted: false,
        value_len: 0,
        check_value: None,
        ec_point: None,
        key_gen_mechanism: None,
        allowed_mechanisms: None,
        wrap_template: None,
        unwrap_template: None,
    }
}
