//! Sessions ([`Session`]): login state (per token, shared by its sessions), PIN services, the PKCS#11 access
//! matrix, object lookup and search, attribute reads and writes with the sticky-attribute rules (R-18,
//! R-19), and object destruction. Key creation lives in `keymgmt`, cryptographic services in `crypto_ops`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::attributes::{self, AttributeQuery, AttributeType, AttributeValue, Attrs, ObjectClass};
use crate::error::HsmError;
use crate::hsm::{HsmInner, Pending, SecurityLevel};
use crate::object::{self, KeyMaterial, KeyObject, ObjectHandle};
use crate::token::{self, LOGGED_OUT, LOGGED_SO, LOGGED_USER, PinBlob, Role, Token};

/// PKCS#11 user types for [`Session::login`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserType {
    /// `CKU_SO`: the security officer (administers the token; cannot use private keys).
    So,
    /// `CKU_USER`: the normal user (uses keys).
    User,
}

/// PKCS#11 session states (`CKS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// `CKS_RO_PUBLIC_SESSION`.
    ReadOnlyPublic,
    /// `CKS_RW_PUBLIC_SESSION`.
    ReadWritePublic,
    /// `CKS_RO_USER_FUNCTIONS`.
    ReadOnlyUser,
    /// `CKS_RW_USER_FUNCTIONS`.
    ReadWriteUser,
    /// `CKS_RW_SO_FUNCTIONS`.
    ReadWriteSo,
}

pub(crate) struct SessionInner {
    pub hsm: Arc<HsmInner>,
    pub token: Arc<Token>,
    pub id: u64,
    pub rw: bool,
    closed: Arc<AtomicBool>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            close_session(&self.token, self.id);
        }
    }
}

/// A session on one token. Cheap to clone (an `Arc` inside); `Send + Sync`. The session closes when
/// [`Session::close`] is called, when [`crate::Hsm::close_all_sessions`] runs, or when the last clone is dropped.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("slot", &self.inner.token.slot)
            .field("rw", &self.inner.rw)
            .finish()
    }
}

/// Closes session `id` of `token`: destroys its session objects and, when it was the last session, logs the
/// token out.
pub(crate) fn close_session(token: &Token, id: u64) {
    let mut sessions = token.sessions();
    if let Some(e) = sessions.remove(&id) {
        e.closed.store(true, Ordering::Release);
    }
    let last = sessions.is_empty();
    if last {
        token.login.store(LOGGED_OUT, Ordering::Release);
    }
    drop(sessions);
    token.objects_mut().retain(|_, o| o.session != Some(id));
}

impl Session {
    pub(crate) fn new(
        hsm: Arc<HsmInner>,
        token: Arc<Token>,
        id: u64,
        rw: bool,
        closed: Arc<AtomicBool>,
    ) -> Self {
        Self {
            inner: Arc::new(SessionInner {
                hsm,
                token,
                id,
                rw,
                closed,
            }),
        }
    }

    /// The slot this session belongs to.
    #[must_use]
    pub fn slot(&self) -> token::SlotId {
        self.inner.token.slot
    }

    /// Whether this is a read/write session.
    #[must_use]
    pub fn is_read_write(&self) -> bool {
        self.inner.rw
    }

    /// The PKCS#11 session state.
    #[must_use]
    pub fn state(&self) -> SessionState {
        match (self.login_state(), self.inner.rw) {
            (LOGGED_SO, _) => SessionState::ReadWriteSo,
            (LOGGED_USER, true) => SessionState::ReadWriteUser,
            (LOGGED_USER, false) => SessionState::ReadOnlyUser,
            (_, true) => SessionState::ReadWritePublic,
            (_, false) => SessionState::ReadOnlyPublic,
        }
    }

    /// Session open and module operational (two atomic loads).
    #[inline]
    pub(crate) fn check(&self) -> Result<(), HsmError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(HsmError::SessionHandleInvalid);
        }
        self.inner.hsm.ensure_operational()
    }

    #[inline]
    pub(crate) fn login_state(&self) -> u8 {
        self.inner.token.login.load(Ordering::Acquire)
    }

    /// The object behind `handle` if this session may read/use it: `invalid` when unknown,
    /// `UserNotLoggedIn` for a private object outside a user session, the fault's error for a damaged record.
    #[inline]
    pub(crate) fn lookup(
        &self,
        handle: ObjectHandle,
        invalid: HsmError,
    ) -> Result<Arc<KeyObject>, HsmError> {
        let obj = self.inner.token.object(handle.0).ok_or(invalid)?;
        if obj.attrs.private && self.login_state() != LOGGED_USER {
            return Err(HsmError::UserNotLoggedIn);
        }
        if let Some(f) = obj.fault {
            return Err(f.error());
        }
        Ok(obj)
    }

    /// The access matrix for writes (create/modify/destroy), R-16.
    pub(crate) fn check_write(&self, token_object: bool, private: bool) -> Result<(), HsmError> {
        if token_object && !self.inner.rw {
            return Err(HsmError::SessionReadOnly);
        }
        if private && self.login_state() != LOGGED_USER {
            return Err(HsmError::UserNotLoggedIn);
        }
        Ok(())
    }

    /// `C_Login`. Wrong PINs count towards the lockout; the first successful login after start-up
    /// unlocks the token's key store (object values are unsealed into memory).
    pub fn login(&self, user: UserType, pin: &[u8]) -> Result<(), HsmError> {
        self.check()?;
        let hsm = &self.inner.hsm;
        let token = &self.inner.token;
        let mut meta = token.meta();
        if !meta.initialized {
            return Err(match user {
                UserType::User => HsmError::UserPinNotInitialized,
                UserType::So => HsmError::TokenNotRecognized,
            });
        }
        if meta.fault.is_some() {
            return Err(HsmError::TokenNotRecognized);
        }
        let current = self.login_state();
        let role = match user {
            UserType::So => {
                if token.sessions().values().any(|e| !e.rw) {
                    return Err(HsmError::SessionReadOnlyExists);
                }
                match current {
                    LOGGED_USER => return Err(HsmError::UserAnotherAlreadyLoggedIn),
                    LOGGED_SO => return Err(HsmError::UserAlreadyLoggedIn),
                    _ => {}
                }
                if meta.so_locked {
                    return Err(HsmError::PinLocked);
                }
                Role::So
            }
            UserType::User => {
                match current {
                    LOGGED_SO => return Err(HsmError::UserAnotherAlreadyLoggedIn),
                    LOGGED_USER => return Err(HsmError::UserAlreadyLoggedIn),
                    _ => {}
                }
                if meta.user_blob.is_none() {
                    return Err(HsmError::UserPinNotInitialized);
                }
                if meta.user_locked {
                    return Err(HsmError::PinLocked);
                }
                Role::User
            }
        };
        let blob = match role {
            Role::So => meta.so_blob.clone(),
            Role::User => meta.user_blob.clone(),
        }
        .ok_or(HsmError::TokenNotRecognized)?;
        let key = if hsm.pin_len_ok(pin) {
            blob.open(&token.serial, role, pin)
        } else {
            Err(HsmError::PinIncorrect)
        };
        let key = match key {
            Ok(k) => k,
            Err(HsmError::PinIncorrect) => return Err(hsm.pin_failure(token, &mut meta, role)),
            Err(e) => return Err(e),
        };
        let counter = match role {
            Role::So => &mut meta.so_failures,
            Role::User => &mut meta.user_failures,
        };
        if *counter != 0 {
            *counter = 0;
            hsm.save_state(token, &meta)?;
        }
        if token.token_key().is_none() {
            token.unlock(key);
        }
        token.login.store(
            match role {
                Role::So => LOGGED_SO,
                Role::User => LOGGED_USER,
            },
            Ordering::Release,
        );
        Ok(())
    }

    /// `C_Logout`: private session objects of the token are destroyed; private token objects become
    /// inaccessible (`UserNotLoggedIn`) until the next user login. Loaded key material stays in module memory.
    pub fn logout(&self) -> Result<(), HsmError> {
        self.check()?;
        let token = &self.inner.token;
        if token.login.swap(LOGGED_OUT, Ordering::AcqRel) == LOGGED_OUT {
            return Err(HsmError::UserNotLoggedIn);
        }
        token
            .objects_mut()
            .retain(|_, o| !(o.session.is_some() && o.attrs.private));
        Ok(())
    }

    /// `C_InitPIN` (R/W SO session only, else `UserNotLoggedIn`): sets the user PIN and clears a user lockout.
    pub fn init_pin(&self, pin: &[u8]) -> Result<(), HsmError> {
        self.check()?;
        if self.state() != SessionState::ReadWriteSo {
            return Err(HsmError::UserNotLoggedIn);
        }
        let hsm = &self.inner.hsm;
        if !hsm.pin_len_ok(pin) {
            return Err(HsmError::PinLenRange);
        }
        let token = &self.inner.token;
        let token_key = token.token_key().ok_or(HsmError::UserNotLoggedIn)?;
        let blob = PinBlob::create(
            &token.serial,
            Role::User,
            pin,
            &token_key,
            hsm.random_array()?,
            hsm.random_array()?,
            hsm.config.pin_kdf_iterations,
        )?;
        let mut meta = token.meta();
        let old = (meta.user_blob.take(), meta.user_failures, meta.user_locked);
        meta.user_blob = Some(blob);
        meta.user_failures = 0;
        meta.user_locked = false;
        let r = hsm.persist(&[
            Pending::Put(token::info_key(&token.serial), meta.encode_info()),
            Pending::Put(token::state_key(&token.serial), meta.encode_state()),
        ]);
        if r.is_err() {
            (meta.user_blob, meta.user_failures, meta.user_locked) = old;
        }
        r
    }

    /// `C_SetPIN`: changes the SO PIN in an SO session, else the user PIN. Only the PIN blob (the token key
    /// wrapped under the PIN) is re-written. R/O session: `SessionReadOnly`; bad new length: `PinLenRange`.
    pub fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<(), HsmError> {
        self.check()?;
        if !self.inner.rw {
            return Err(HsmError::SessionReadOnly);
        }
        let hsm = &self.inner.hsm;
        if !hsm.pin_len_ok(new) {
            return Err(HsmError::PinLenRange);
        }
        let token = &self.inner.token;
        let role = if self.login_state() == LOGGED_SO {
            Role::So
        } else {
            Role::User
        };
        let mut meta = token.meta();
        let (locked, blob) = match role {
            Role::So => (meta.so_locked, meta.so_blob.clone()),
            Role::User => (meta.user_locked, meta.user_blob.clone()),
        };
        if locked {
            return Err(HsmError::PinLocked);
        }
        let blob = blob.ok_or(HsmError::UserPinNotInitialized)?;
        let opened = if hsm.pin_len_ok(old) {
            blob.open(&token.serial, role, old)
        } else {
            Err(HsmError::PinIncorrect)
        };
        let token_key = match opened {
            Ok(k) => k,
            Err(HsmError::PinIncorrect) => return Err(hsm.pin_failure(token, &mut meta, role)),
            Err(e) => return Err(e),
        };
        let new_blob = PinBlob::create(
            &token.serial,
            role,
            new,
            &token_key,
            hsm.random_array()?,
            hsm.random_array()?,
            hsm.config.pin_kdf_iterations,
        )?;
        let mut ops = Vec::new();
        match role {
            Role::So => {
                meta.so_blob = Some(new_blob);
                if meta.so_failures != 0 {
                    meta.so_failures = 0;
                    ops.push(Pending::Put(
                        token::state_key(&token.serial),
                        meta.encode_state(),
                    ));
                }
            }
            Role::User => {
                meta.user_blob = Some(new_blob);
                if meta.user_failures != 0 {
                    meta.user_failures = 0;
                    ops.push(Pending::Put(
                        token::state_key(&token.serial),
                        meta.encode_state(),
                    ));
                }
            }
        }
        ops.push(Pending::Put(
            token::info_key(&token.serial),
            meta.encode_info(),
        ));
        hsm.persist(&ops)
    }

    /// `C_CloseSession`. Session objects created by this session are destroyed.
    pub fn close(self) {
        if !self.inner.closed.load(Ordering::Acquire) {
            close_session(&self.inner.token, self.inner.id);
        }
    }

    /// `C_FindObjects`: handles of the visible objects matching `query` (private objects only in a user
    /// session), in handle order.
    pub fn find_objects(&self, query: &AttributeQuery) -> Result<Vec<ObjectHandle>, HsmError> {
        self.check()?;
        let user = self.login_state() == LOGGED_USER;
        let mut out: Vec<ObjectHandle> = self
            .inner
            .token
            .objects()
            .values()
            .filter(|o| user || !o.attrs.private)
            .filter(|o| query.matches(&o.attrs))
            .map(|o| ObjectHandle(o.handle))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// `C_GetAttributeValue` for one attribute. `VALUE` of a secret key is returned only when the key is
    /// non-sensitive and extractable and the module runs below level 3; otherwise `AttributeSensitive`
    /// (`ulValueLen = CK_UNAVAILABLE_INFORMATION`). Private-key `VALUE` is always sensitive. Unknown or absent
    /// attributes: `AttributeTypeInvalid`.
    pub fn get_attribute(
        &self,
        handle: ObjectHandle,
        attr: AttributeType,
    ) -> Result<AttributeValue, HsmError> {
        self.check()?;
        let obj = self.lookup(handle, HsmError::ObjectHandleInvalid)?;
        if attr != AttributeType::Value {
            return obj.attrs.get(attr).ok_or(HsmError::AttributeTypeInvalid);
        }
        match obj.attrs.class {
            ObjectClass::PublicKey => Err(HsmError::AttributeTypeInvalid),
            ObjectClass::PrivateKey => Err(HsmError::AttributeSensitive),
            ObjectClass::SecretKey => {
                let level3 = self.inner.hsm.config.security_level >= SecurityLevel::Level3;
                if level3 || obj.attrs.sensitive || !obj.attrs.extractable {
                    return Err(HsmError::AttributeSensitive);
                }
                match obj.material.as_deref() {
                    Some(KeyMaterial::Secret { value, .. }) => {
                        Ok(AttributeValue::Value(value.clone()))
                    }
                    Some(_) => Err(HsmError::GeneralError),
                    None => Err(HsmError::UserNotLoggedIn),
                }
            }
        }
    }

    /// `C_SetAttributeValue` for one attribute, with the sticky rules of R-18: SENSITIVE cannot go true->false,
    /// EXTRACTABLE false->true, WRAP_WITH_TRUSTED true->false; LOCAL, ALWAYS_SENSITIVE, NEVER_EXTRACTABLE,
    /// CLASS, KEY_TYPE, VALUE, VALUE_LEN, TOKEN, PRIVATE, CHECK_VALUE and the EC attributes are read-only; only
    /// the SO may set TRUSTED=true (so trusted keys are public objects). All give `AttributeReadOnly`.
    pub fn set_attribute(
        &self,
        handle: ObjectHandle,
        value: AttributeValue,
    ) -> Result<(), HsmError> {
        self.check()?;
        let obj = self.lookup(handle, HsmError::ObjectHandleInvalid)?;
        self.check_write(obj.attrs.token, obj.attrs.private)?;
        if !obj.attrs.modifiable {
            return Err(HsmError::AttributeReadOnly);
        }
        let mut a: Attrs = obj.attrs.clone();
        let secret_or_private = a.class != ObjectClass::PublicKey;
        use AttributeType as T;
        match value {
            AttributeValue::Label(l) => {
                if l.len() > 255 {
                    return Err(HsmError::AttributeValueInvalid);
                }
                a.label = l;
            }
            AttributeValue::Id(i) => a.id = i,
            AttributeValue::AllowedMechanisms(m) => a.allowed_mechanisms = Some(m),
            AttributeValue::WrapTemplate(t) => {
                attributes::validate_template(&t)?;
                a.wrap_template = Some(t);
            }
            AttributeValue::UnwrapTemplate(t) => {
                attributes::validate_template(&t)?;
                a.unwrap_template = Some(t);
            }
            AttributeValue::Bool(t, v) => match t {
                T::Encrypt => a.encrypt = v,
                T::Decrypt => a.decrypt = v,
                T::Wrap => a.wrap = v,
                T::Unwrap => a.unwrap = v,
                T::Sign => a.sign = v,
                T::Verify => a.verify = v,
                T::Derive => a.derive = v,
                T::Sensitive if secret_or_private => {
                    if a.sensitive && !v {
                        return Err(HsmError::AttributeReadOnly);
                    }
                    a.sensitive = v;
                }
                T::Extractable if secret_or_private => {
                    if !a.extractable && v {
                        return Err(HsmError::AttributeReadOnly);
                    }
                    a.extractable = v;
                }
                T::WrapWithTrusted if secret_or_private => {
                    if a.wrap_with_trusted && !v {
                        return Err(HsmError::AttributeReadOnly);
                    }
                    a.wrap_with_trusted = v;
                }
                T::Trusted => {
                    if v && self.login_state() != LOGGED_SO {
                        return Err(HsmError::AttributeReadOnly);
                    }
                    a.trusted = v;
                }
                _ if !t.is_bool() => return Err(HsmError::AttributeTypeInvalid),
                _ => return Err(HsmError::AttributeReadOnly),
            },
            _ => return Err(HsmError::AttributeReadOnly),
        }
        self.replace_object(&obj, a)
    }

    /// Stores `obj` with new attributes (re-sealing its value, whose associated data covers the attributes).
    fn replace_object(&self, obj: &KeyObject, attrs: Attrs) -> Result<(), HsmError> {
        let token = &self.inner.token;
        let hsm = &self.inner.hsm;
        let mut new = obj.clone();
        new.attrs = attrs;
        if obj.attrs.token {
            if hsm.rotating.load(Ordering::Acquire) {
                return Err(HsmError::MasterKeyRotationInProgress);
            }
            let sealed = match obj.material.as_deref().and_then(KeyMaterial::secret_bytes) {
                Some(bytes) => {
                    let tk = token.token_key().ok_or(HsmError::UserNotLoggedIn)?;
                    Some(object::seal_value(
                        &tk,
                        &hsm.random_array()?,
                        &token.serial,
                        obj.handle,
                        &new.attrs,
                        &bytes,
                    )?)
                }
                None if obj.attrs.class == ObjectClass::PublicKey => None,
                None => return Err(HsmError::UserNotLoggedIn),
            };
            let body = object::encode_record(obj.handle, &new.attrs, sealed.as_deref());
            let _meta = token.meta();
            hsm.persist(&[Pending::Put(
                token::object_key(&token.serial, obj.handle),
                body,
            )])?;
            new.sealed_value = sealed;
        }
        token.objects_mut().insert(obj.handle, Arc::new(new));
        Ok(())
    }

    /// The 65-byte uncompressed SEC1 point of an EC public or private key.
    pub fn public_key_sec1(&self, handle: ObjectHandle) -> Result<Vec<u8>, HsmError> {
        self.check()?;
        let obj = self.lookup(handle, HsmError::KeyHandleInvalid)?;
        obj.attrs
            .ec_point
            .clone()
            .ok_or(HsmError::KeyTypeInconsistent)
    }

    /// `CKA_CHECK_VALUE` (AES: first 3 bytes of AES-ECB(0^128); generic secret: first 3 bytes of SHA-256).
    pub fn check_value(&self, handle: ObjectHandle) -> Result<[u8; 3], HsmError> {
        self.check()?;
        let obj = self.lookup(handle, HsmError::KeyHandleInvalid)?;
        obj.attrs.check_value.ok_or(HsmError::AttributeTypeInvalid)
    }

    /// `C_DestroyObject`: removes the record from the store (token objects) and drops the in-memory key, whose
    /// material is zeroized when the last in-flight user releases it.
    pub fn destroy_object(&self, handle: ObjectHandle) -> Result<(), HsmError> {
        self.check()?;
        let token = &self.inner.token;
        let obj = token
            .object(handle.0)
            .ok_or(HsmError::ObjectHandleInvalid)?;
        if obj.attrs.private && self.login_state() != LOGGED_USER {
            return Err(HsmError::UserNotLoggedIn);
        }
        self.check_write(obj.attrs.token, obj.attrs.private)?;
        if obj.attrs.token {
            let _meta = token.meta();
            self.inner.hsm.persist(&[Pending::Delete(token::object_key(
                &token.serial,
                obj.handle,
            ))])?;
        }
        token.objects_mut().remove(&handle.0);
        Ok(())
    }

    /// Inserts a new object: allocates its (persistent) handle, seals and stores token objects. The caller has
    /// already checked the write access and built the attributes.
    pub(crate) fn insert_object(
        &self,
        attrs: Attrs,
        material: KeyMaterial,
    ) -> Result<ObjectHandle, HsmError> {
        let token = &self.inner.token;
        let hsm = &self.inner.hsm;
        if hsm.rotating.load(Ordering::Acquire) {
            return Err(HsmError::MasterKeyRotationInProgress);
        }
        let mut meta = token.meta();
        if !meta.initialized {
            return Err(HsmError::TokenNotRecognized);
        }
        let mut sealed_value = None;
        let handle;
        if attrs.token {
            let n = meta.next_handle;
            if n >= token::SESSION_HANDLE_BASE {
                return Err(HsmError::GeneralError);
            }
            handle = token.handle_for(n);
            let sealed = match material.secret_bytes() {
                Some(bytes) => {
                    let tk = token.token_key().ok_or(HsmError::UserNotLoggedIn)?;
                    Some(object::seal_value(
                        &tk,
                        &hsm.random_array()?,
                        &token.serial,
                        handle,
                        &attrs,
                        &bytes,
                    )?)
                }
                None => None,
            };
            let body = object::encode_record(handle, &attrs, sealed.as_deref());
            meta.next_handle = n + 1;
            let r = hsm.persist(&[
                Pending::Put(token::object_key(&token.serial, handle), body),
                Pending::Put(token::state_key(&token.serial), meta.encode_state()),
            ]);
            if let Err(e) = r {
                meta.next_handle = n;
                return Err(e);
            }
            sealed_value = sealed;
        } else {
            let n = meta.next_session_handle;
            meta.next_session_handle = n.checked_add(1).ok_or(HsmError::GeneralError)?;
            handle = token.handle_for(n);
        }
        let session = if attrs.token {
            None
        } else {
            Some(self.inner.id)
        };
        let obj = KeyObject {
            handle,
            attrs,
            material: Some(Arc::new(material)),
            sealed_value,
            session,
            fault: None,
        };
        token.objects_mut().insert(handle, Arc::new(obj));
        Ok(ObjectHandle(handle))
    }

    /// Removes an object just created by this call chain (used to undo half of a failed key-pair creation).
    pub(crate) fn remove_new_object(&self, handle: ObjectHandle) {
        let token = &self.inner.token;
        if let Some(obj) = token.objects_mut().remove(&handle.0)
            && obj.attrs.token
        {
            let _ = self.inner.hsm.persist(&[Pending::Delete(token::object_key(
                &token.serial,
                obj.handle,
            ))]);
        }
    }

    /// True when the session's login state is SO (only the SO may create trusted keys).
    pub(crate) fn is_so(&self) -> bool {
        self.login_state() == LOGGED_SO
    }
}
