//! Key-management services of a [`Session`]: generate (AES, generic secret, P-256 pairs with pairwise
//! consistency tests), create/import, wrap and unwrap (KW/KWP in SoftHSM's check order, §1.4/§1.5), and derive
//! (ECDH1 with CKD_NULL, HKDF-SHA256).

use p256::ecdsa::SigningKey;
use zeroize::Zeroizing;

use crate::attributes::{self, Attrs, KeyTemplate, KeyType, ObjectClass};
use crate::error::HsmError;
use crate::mechanism::{self, EcKdf, Mechanism};
use crate::object::{KeyMaterial, KeyObject, ObjectHandle};
use crate::primitives::{self, KwMode};
use crate::selftest;
use crate::session::Session;

/// `CKM_GENERIC_SECRET_KEY_GEN`.
const CKM_GENERIC_SECRET_KEY_GEN: u64 = 0x350;
/// Largest generic secret the module creates.
const MAX_GENERIC_LEN: usize = 512;

/// Where a new key's value came from (decides LOCAL / ALWAYS_SENSITIVE / NEVER_EXTRACTABLE).
enum Origin<'a> {
    Generated,
    Imported,
    Derived(&'a Attrs),
}

fn resolve_secret_type(t: &KeyTemplate) -> Result<KeyType, HsmError> {
    match t.class {
        None | Some(ObjectClass::SecretKey) => {}
        Some(_) => return Err(HsmError::TemplateInconsistent),
    }
    match t.key_type {
        Some(k @ (KeyType::Aes | KeyType::GenericSecret)) => Ok(k),
        Some(KeyType::Ec) => Err(HsmError::TemplateInconsistent),
        None => Err(HsmError::TemplateIncomplete),
    }
}

fn check_secret_len(kt: KeyType, len: usize) -> Result<(), HsmError> {
    let ok = match kt {
        KeyType::Aes => matches!(len, 16 | 24 | 32),
        _ => (1..=MAX_GENERIC_LEN).contains(&len),
    };
    if ok {
        Ok(())
    } else {
        Err(HsmError::KeySizeRange)
    }
}

fn check_ec_template(t: &KeyTemplate, class: ObjectClass) -> Result<(), HsmError> {
    if t.class.is_some_and(|c| c != class) || t.key_type.is_some_and(|k| k != KeyType::Ec) {
        return Err(HsmError::TemplateInconsistent);
    }
    Ok(())
}

fn apply_origin(a: &mut Attrs, origin: &Origin<'_>) {
    match origin {
        Origin::Generated => {
            a.local = true;
            a.always_sensitive = a.sensitive;
            a.never_extractable = !a.extractable;
        }
        Origin::Imported => {
            a.local = false;
            a.always_sensitive = false;
            a.never_extractable = false;
        }
        Origin::Derived(base) => {
            a.local = false;
            a.always_sensitive = base.always_sensitive && a.sensitive;
            a.never_extractable = base.never_extractable && !a.extractable;
        }
    }
}

/// The mechanism must be allowed by the key's `ALLOWED_MECHANISMS` (if set).
pub(crate) fn check_allowed(obj: &KeyObject, mech: &Mechanism) -> Result<(), HsmError> {
    match &obj.attrs.allowed_mechanisms {
        Some(list) if !mech.permitted_by(list) => Err(HsmError::MechanismInvalid),
        _ => Ok(()),
    }
}

impl Session {
    fn secret_attrs(
        &self,
        t: &KeyTemplate,
        kt: KeyType,
        value: &[u8],
        origin: &Origin<'_>,
    ) -> Result<Attrs, HsmError> {
        if t.trusted && !self.is_so() {
            return Err(HsmError::AttributeReadOnly);
        }
        if t.value_len.is_some_and(|n| n != value.len()) {
            return Err(HsmError::TemplateInconsistent);
        }
        let mut a = Attrs::from_template(t, ObjectClass::SecretKey, kt, value.len())?;
        a.check_value = Some(match kt {
            KeyType::Aes => primitives::aes_kcv(value)?,
            _ => primitives::generic_kcv(value),
        });
        apply_origin(&mut a, origin);
        Ok(a)
    }

    fn ec_attrs(
        &self,
        t: &KeyTemplate,
        class: ObjectClass,
        sk_point: &[u8],
        origin: &Origin<'_>,
    ) -> Result<Attrs, HsmError> {
        if t.trusted && !self.is_so() {
            return Err(HsmError::AttributeReadOnly);
        }
        let mut a = Attrs::from_template(t, class, KeyType::Ec, 32)?;
        a.ec_point = Some(sk_point.to_vec());
        if class == ObjectClass::PublicKey {
            a.local = matches!(origin, Origin::Generated);
        } else {
            apply_origin(&mut a, origin);
        }
        Ok(a)
    }

    /// Runs both pairwise consistency tests; a failure (or an injected one) is fatal: the module enters its
    /// error state and `FipsSelfTestFailed` is returned (decision 6).
    fn pairwise_consistency(&self, sk: &SigningKey) -> Result<(), HsmError> {
        let hsm = &self.inner.hsm;
        for (name, test) in [
            (
                selftest::PCT_ECDSA,
                selftest::pct_ecdsa as fn(&SigningKey) -> bool,
            ),
            (selftest::PCT_ECDH, selftest::pct_ecdh),
        ] {
            if hsm.is_injected(name) || !test(sk) {
                hsm.enter_error(name);
                return Err(HsmError::FipsSelfTestFailed);
            }
        }
        Ok(())
    }

    fn random_ec_key(&self) -> Result<SigningKey, HsmError> {
        // FIPS 186-4 B.4.2 (testing candidates): retry the rare out-of-range candidate.
        for _ in 0..16 {
            let mut d = Zeroizing::new([0u8; 32]);
            self.inner.hsm.random(&mut d[..])?;
            if let Ok(sk) = SigningKey::from_slice(&d[..]) {
                return Ok(sk);
            }
        }
        Err(HsmError::GeneralError)
    }

    /// `C_GenerateKey` (`CKM_AES_KEY_GEN` for AES keys of 16, 24 or 32 bytes, R-17; `CKM_GENERIC_SECRET_KEY_GEN`
    /// for generic secrets of 1..=512 bytes). Sets `LOCAL=true`, `ALWAYS_SENSITIVE=SENSITIVE`,
    /// `NEVER_EXTRACTABLE=!EXTRACTABLE`. Another AES length gives `KeySizeRange`.
    pub fn generate_key(&self, template: &KeyTemplate) -> Result<ObjectHandle, HsmError> {
        self.check()?;
        self.check_write(template.token, template.private)?;
        let kt = resolve_secret_type(template)?;
        let len = template.value_len.ok_or(HsmError::TemplateIncomplete)?;
        check_secret_len(kt, len)?;
        let mut value = Zeroizing::new(vec![0u8; len]);
        self.inner.hsm.random(&mut value)?;
        let mut attrs = self.secret_attrs(template, kt, &value, &Origin::Generated)?;
        attrs.key_gen_mechanism = Some(match kt {
            KeyType::Aes => mechanism::CKM_AES_KEY_GEN,
            _ => CKM_GENERIC_SECRET_KEY_GEN,
        });
        let material = KeyMaterial::secret(kt, value)?;
        self.insert_object(attrs, material)
    }

    /// `C_GenerateKeyPair` (`CKM_EC_KEY_PAIR_GEN`, P-256), with the pairwise consistency tests: on failure no
    /// object is created and the module enters its error state. Returns (public, private).
    pub fn generate_key_pair(
        &self,
        public: &KeyTemplate,
        private: &KeyTemplate,
    ) -> Result<(ObjectHandle, ObjectHandle), HsmError> {
        self.check()?;
        self.check_write(public.token, public.private)?;
        self.check_write(private.token, private.private)?;
        check_ec_template(public, ObjectClass::PublicKey)?;
        check_ec_template(private, ObjectClass::PrivateKey)?;
        let sk = self.random_ec_key()?;
        self.pairwise_consistency(&sk)?;
        let point = primitives::sec1_uncompressed(sk.verifying_key());
        let mut pub_attrs =
            self.ec_attrs(public, ObjectClass::PublicKey, &point, &Origin::Generated)?;
        let mut priv_attrs =
            self.ec_attrs(private, ObjectClass::PrivateKey, &point, &Origin::Generated)?;
        pub_attrs.key_gen_mechanism = Some(mechanism::CKM_EC_KEY_PAIR_GEN);
        priv_attrs.key_gen_mechanism = Some(mechanism::CKM_EC_KEY_PAIR_GEN);
        let vk = *sk.verifying_key();
        let pub_handle = self.insert_object(pub_attrs, KeyMaterial::EcPublic { vk })?;
        match self.insert_object(priv_attrs, KeyMaterial::EcPrivate { sk }) {
            Ok(priv_handle) => Ok((pub_handle, priv_handle)),
            Err(e) => {
                self.remove_new_object(pub_handle);
                Err(e)
            }
        }
    }

    /// `C_CreateObject` for a secret key with `CKA_VALUE` (imported material: `LOCAL=false`,
    /// `ALWAYS_SENSITIVE=false`, `NEVER_EXTRACTABLE=false`). AES values must be 16, 24 or 32 bytes
    /// (`KeySizeRange`); a `value_len` that disagrees gives `TemplateInconsistent`.
    pub fn create_secret_key(
        &self,
        template: &KeyTemplate,
        value: Zeroizing<Vec<u8>>,
    ) -> Result<ObjectHandle, HsmError> {
        self.check()?;
        self.check_write(template.token, template.private)?;
        let kt = resolve_secret_type(template)?;
        check_secret_len(kt, value.len())?;
        let attrs = self.secret_attrs(template, kt, &value, &Origin::Imported)?;
        let material = KeyMaterial::secret(kt, value)?;
        self.insert_object(attrs, material)
    }

    /// Imports a P-256 private key from its 32-byte scalar (for KATs), with the pairwise consistency tests.
    /// Zero or out-of-range scalars give `AttributeValueInvalid`.
    pub fn import_ec_private_key(
        &self,
        template: &KeyTemplate,
        scalar: Zeroizing<Vec<u8>>,
    ) -> Result<ObjectHandle, HsmError> {
        self.check()?;
        self.check_write(template.token, template.private)?;
        check_ec_template(template, ObjectClass::PrivateKey)?;
        let sk = primitives::ec_key_from_scalar(&scalar, HsmError::AttributeValueInvalid)?;
        drop(scalar);
        self.pairwise_consistency(&sk)?;
        let point = primitives::sec1_uncompressed(sk.verifying_key());
        let attrs = self.ec_attrs(template, ObjectClass::PrivateKey, &point, &Origin::Imported)?;
        self.insert_object(attrs, KeyMaterial::EcPrivate { sk })
    }

    /// `C_CreateObject` for a P-256 public key from its SEC1 encoding (uncompressed or compressed); an invalid
    /// point gives `AttributeValueInvalid`.
    pub fn create_ec_public_key(
        &self,
        template: &KeyTemplate,
        sec1: &[u8],
    ) -> Result<ObjectHandle, HsmError> {
        self.check()?;
        self.check_write(template.token, template.private)?;
        check_ec_template(template, ObjectClass::PublicKey)?;
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
            .map_err(|_| HsmError::AttributeValueInvalid)?;
        let point = primitives::sec1_uncompressed(&vk);
        let attrs = self.ec_attrs(template, ObjectClass::PublicKey, &point, &Origin::Imported)?;
        self.insert_object(attrs, KeyMaterial::EcPublic { vk })
    }

    /// `C_WrapKey` with KW or KWP, checks in SoftHSM order (§1.4): mechanism, wrapping handle, login, wrapping
    /// key type, `WRAP`, `ALLOWED_MECHANISMS`, target handle, `EXTRACTABLE`, `WRAP_WITH_TRUSTED`, class,
    /// `WRAP_TEMPLATE`, then lengths. Secret keys are wrapped as their raw value, EC private keys as PKCS#8 DER
    /// (use KWP). KW needs a multiple of 8 and at least 16 bytes (`KeySizeRange`; strict SP 800-38F).
    pub fn wrap_key(
        &self,
        mechanism: &Mechanism,
        wrapping_key: ObjectHandle,
        target: ObjectHandle,
    ) -> Result<Vec<u8>, HsmError> {
        self.check()?;
        let mode = match mechanism {
            Mechanism::AesKeyWrap => KwMode::Kw,
            Mechanism::AesKeyWrapKwp => KwMode::Kwp,
            _ => return Err(HsmError::MechanismInvalid),
        };
        let wk = self.lookup(wrapping_key, HsmError::WrappingKeyHandleInvalid)?;
        if wk.attrs.class != ObjectClass::SecretKey || wk.attrs.key_type != KeyType::Aes {
            return Err(HsmError::WrappingKeyTypeInconsistent);
        }
        if !wk.attrs.wrap {
            return Err(HsmError::KeyFunctionNotPermitted);
        }
        check_allowed(&wk, mechanism)?;
        let tk = self.lookup(target, HsmError::KeyHandleInvalid)?;
        if !tk.attrs.extractable {
            return Err(HsmError::KeyUnextractable);
        }
        if tk.attrs.wrap_with_trusted && !wk.attrs.trusted {
            return Err(HsmError::KeyNotWrappable);
        }
        if tk.attrs.class == ObjectClass::PublicKey {
            return Err(HsmError::KeyNotWrappable);
        }
        if let Some(t) = &wk.attrs.wrap_template
            && !tk.attrs.matches_template(t)
        {
            return Err(HsmError::KeyNotWrappable);
        }
        let kek = secret_value(&wk)?;
        let data = match tk.material.as_deref() {
            Some(KeyMaterial::Secret { value, .. }) => value.clone(),
            Some(KeyMaterial::EcPrivate { sk }) => primitives::pkcs8_encode(sk)?,
            Some(KeyMaterial::EcPublic { .. }) => return Err(HsmError::KeyNotWrappable),
            None => return Err(HsmError::UserNotLoggedIn),
        };
        primitives::kw_wrap(kek, &data, mode)
    }

    /// `C_UnwrapKey` with KW or KWP. Lengths are checked before any cryptography
    /// (`WrappedKeyLenRange`); a failed integrity check gives `WrappedKeyInvalid` and creates nothing. The
    /// template must name a secret or private key class; `UNWRAP_TEMPLATE` conflicts give
    /// `TemplateInconsistent`. Unwrapped keys get `LOCAL=false`, `ALWAYS_SENSITIVE=false`,
    /// `NEVER_EXTRACTABLE=false`. Private keys are PKCS#8 DER (with a pairwise consistency test).
    pub fn unwrap_key(
        &self,
        mechanism: &Mechanism,
        unwrapping_key: ObjectHandle,
        wrapped: &[u8],
        template: &KeyTemplate,
    ) -> Result<ObjectHandle, HsmError> {
        self.check()?;
        let mode = match mechanism {
            Mechanism::AesKeyWrap => KwMode::Kw,
            Mechanism::AesKeyWrapKwp => KwMode::Kwp,
            _ => return Err(HsmError::MechanismInvalid),
        };
        let min = if mode == KwMode::Kw { 24 } else { 16 };
        if wrapped.len() < min || wrapped.len() % 8 != 0 {
            return Err(HsmError::WrappedKeyLenRange);
        }
        let uk = self.lookup(unwrapping_key, HsmError::UnwrappingKeyHandleInvalid)?;
        if uk.attrs.class != ObjectClass::SecretKey || uk.attrs.key_type != KeyType::Aes {
            return Err(HsmError::UnwrappingKeyTypeInconsistent);
        }
        if !uk.attrs.unwrap {
            return Err(HsmError::KeyFunctionNotPermitted);
        }
        check_allowed(&uk, mechanism)?;
        let t = match &uk.attrs.unwrap_template {
            Some(u) => attributes::merge_unwrap_template(template, u)?,
            None => template.clone(),
        };
        let class = t.class.ok_or(HsmError::TemplateIncomplete)?;
        if class == ObjectClass::PublicKey {
            return Err(HsmError::AttributeValueInvalid);
        }
        self.check_write(t.token, t.private)?;
        if self
            .inner
            .hsm
            .rotating
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(HsmError::MasterKeyRotationInProgress);
        }
        if t.trusted && !self.is_so() {
            return Err(HsmError::AttributeReadOnly);
        }
        let kek = secret_value(&uk)?;
        match class {
            ObjectClass::SecretKey => {
                let kt = resolve_secret_type(&t)?;
                let value = primitives::kw_unwrap(kek, wrapped, mode)?;
                if check_secret_len(kt, value.len()).is_err() {
                    return Err(HsmError::WrappedKeyInvalid);
                }
                let attrs = self.secret_attrs(&t, kt, &value, &Origin::Imported)?;
                let material = KeyMaterial::secret(kt, value)?;
                self.insert_object(attrs, material)
            }
            _ => {
                check_ec_template(&t, ObjectClass::PrivateKey)?;
                let der = primitives::kw_unwrap(kek, wrapped, mode)?;
                let sk = primitives::pkcs8_decode(&der)?;
                drop(der);
                self.pairwise_consistency(&sk)?;
                let point = primitives::sec1_uncompressed(sk.verifying_key());
                let attrs =
                    self.ec_attrs(&t, ObjectClass::PrivateKey, &point, &Origin::Imported)?;
                self.insert_object(attrs, KeyMaterial::EcPrivate { sk })
            }
        }
    }

    /// `C_DeriveKey`.
    ///
    /// * `Ecdh1Derive`: base must be an EC private key (`KeyTypeInconsistent`) with `DERIVE` (`KeyFunctionNotPermitted`);
    ///   only `kdf = Null` and empty shared data (`MechanismParamInvalid`); the peer point may be raw (65),
    ///   compressed (33) or a DER OCTET STRING; an invalid point gives `MechanismParamInvalid`. A shorter
    ///   `value_len` keeps the **trailing** bytes of Z (SoftHSM-compatible); the default length is 32.
    /// * `HkdfDerive`: HKDF-SHA256 from a generic-secret or AES base into a key of `value_len` bytes (default 32).
    ///
    /// The template may not carry `CKA_VALUE` (the type has no such field).
    pub fn derive_key(
        &self,
        mechanism: &Mechanism,
        base: ObjectHandle,
        template: &KeyTemplate,
    ) -> Result<ObjectHandle, HsmError> {
        self.check()?;
        if let Mechanism::Ecdh1Derive {
            kdf,
            shared_data,
            public_data,
        } = mechanism
            && (*kdf != EcKdf::Null || !shared_data.is_empty() || public_data.is_empty())
        {
            return Err(HsmError::MechanismParamInvalid);
        }
        if !matches!(
            mechanism,
            Mechanism::Ecdh1Derive { .. } | Mechanism::HkdfDerive { .. }
        ) {
            return Err(HsmError::MechanismInvalid);
        }
        let bk = self.lookup(base, HsmError::KeyHandleInvalid)?;
        let mut t = template.clone();
        if t.key_type.is_none() {
            t.key_type = Some(KeyType::GenericSecret);
        }
        let kt = resolve_secret_type(&t)?;
        let len = t.value_len.unwrap_or(32);
        check_secret_len(kt, len)?;
        t.value_len = Some(len);
        self.check_write(t.token, t.private)?;
        let value = match mechanism {
            Mechanism::Ecdh1Derive { public_data, .. } => {
                if bk.attrs.class != ObjectClass::PrivateKey || bk.attrs.key_type != KeyType::Ec {
                    return Err(HsmError::KeyTypeInconsistent);
                }
                if !bk.attrs.derive {
                    return Err(HsmError::KeyFunctionNotPermitted);
                }
                check_allowed(&bk, mechanism)?;
                if len > 32 {
                    return Err(HsmError::KeySizeRange);
                }
                let peer = primitives::parse_ec_public(public_data)?;
                let Some(KeyMaterial::EcPrivate { sk }) = bk.material.as_deref() else {
                    return Err(HsmError::UserNotLoggedIn);
                };
                let z = primitives::ecdh(sk, &peer);
                Zeroizing::new(z[32 - len..].to_vec())
            }
            Mechanism::HkdfDerive { salt, info } => {
                if bk.attrs.class != ObjectClass::SecretKey {
                    return Err(HsmError::KeyTypeInconsistent);
                }
                if !bk.attrs.derive {
                    return Err(HsmError::KeyFunctionNotPermitted);
                }
                check_allowed(&bk, mechanism)?;
                let ikm = secret_value(&bk)?;
                let mut okm = Zeroizing::new(vec![0u8; len]);
                primitives::hkdf_sha256(salt, ikm, info, &mut okm)?;
                okm
            }
            _ => return Err(HsmError::MechanismInvalid),
        };
        let attrs = self.secret_attrs(&t, kt, &value, &Origin::Derived(&bk.attrs))?;
        let material = KeyMaterial::secret(kt, value)?;
        self.insert_object(attrs, material)
    }
}

/// The value of a secret-key object (`UserNotLoggedIn` while the key store is locked).
fn secret_value(obj: &KeyObject) -> Result<&[u8], HsmError> {
    match obj.material.as_deref() {
        Some(KeyMaterial::Secret { value, .. }) => Ok(value),
        Some(_) => Err(HsmError::KeyTypeInconsistent),
        None => Err(HsmError::UserNotLoggedIn),
    }
}
