//! ECDH and ECDSA: R-26, R-27 (CAVS ECC CDH and RFC 6979 KATs), plus HKDF derivation.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use sim_hsm::p256::ecdsa::VerifyingKey;
use sim_hsm::*;

const D_IUT: &str = "7d7dc5f71eb29ddaf80d6214632eeae03d9058af1fb6d22ed80badb62bc1a534";
const Q_CAVS: &str = "04700c48f77f56584c5cc632ca65640db91b6bacce3a4df6b42ce7cc838833d287db71e509e3fd9b060ddb20ba5c51dcc5948d46fbf640dfe0441782cab85fa4ac";
const Q_IUT: &str = "04ead218590119e8876b29146ff89ca61770c4edbbf97d38ce385ed281d8a6b23028af61281fd35e2fa7002523acc85a429cb06ee6648325389f59edfce1405141";
const Z: &str = "46fc62106420ff012e54a434fbdd2d25ccc5852060561e68040dd7778997bd7b";

fn ecdh(public_data: Vec<u8>) -> Mechanism {
    Mechanism::Ecdh1Derive {
        kdf: EcKdf::Null,
        shared_data: vec![],
        public_data,
    }
}

#[test]
fn r26_ecdh_cavs_kat_in_every_point_encoding() {
    let f = fixture();
    let s = f.user();
    let d = s
        .import_ec_private_key(&KeyTemplate::ec_private(), Zeroizing::new(hex(D_IUT)))
        .unwrap();
    assert_eq!(s.public_key_sec1(d).unwrap(), hex(Q_IUT));
    let raw = hex(Q_CAVS);
    let compressed = VerifyingKey::from_sec1_bytes(&raw)
        .unwrap()
        .to_sec1_point(true)
        .as_bytes()
        .to_vec();
    assert_eq!(compressed.len(), 33);
    let mut der = vec![0x04, 65];
    der.extend_from_slice(&raw);
    for public in [raw.clone(), compressed, der] {
        let k = s
            .derive_key(&ecdh(public), d, &readable_template(32))
            .unwrap();
        assert_eq!(hex::encode(value(&s, k)), Z);
    }
    // VALUE_LEN=16 keeps the trailing 16 bytes of Z (SoftHSM-compatible).
    let k = s
        .derive_key(&ecdh(raw.clone()), d, &readable_template(16))
        .unwrap();
    assert_eq!(hex::encode(value(&s, k)), &Z[32..]);
    assert!(Z.ends_with("040dd7778997bd7b"));
    // An AES key of 16 bytes likewise; the derived key is not LOCAL.
    let aes = s.derive_key(&ecdh(raw), d, &KeyTemplate::aes(16)).unwrap();
    assert!(!boolean(&s, aes, AttributeType::Local));
}

#[test]
fn r26_ecdh_parameter_and_key_errors() {
    let f = fixture();
    let s = f.user();
    let d = s
        .import_ec_private_key(&KeyTemplate::ec_private(), Zeroizing::new(hex(D_IUT)))
        .unwrap();
    let before = count(&s);
    let t = KeyTemplate::generic_secret(32);
    let bad_kdf = Mechanism::Ecdh1Derive {
        kdf: EcKdf::Other(6),
        shared_data: vec![],
        public_data: hex(Q_CAVS),
    };
    assert!(matches!(
        s.derive_key(&bad_kdf, d, &t),
        Err(HsmError::MechanismParamInvalid)
    ));
    let shared = Mechanism::Ecdh1Derive {
        kdf: EcKdf::Null,
        shared_data: vec![1],
        public_data: hex(Q_CAVS),
    };
    assert!(matches!(
        s.derive_key(&shared, d, &t),
        Err(HsmError::MechanismParamInvalid)
    ));
    let mut off_curve = hex(Q_CAVS);
    off_curve[64] ^= 1;
    assert!(matches!(
        s.derive_key(&ecdh(off_curve), d, &t),
        Err(HsmError::MechanismParamInvalid)
    ));
    assert!(matches!(
        s.derive_key(&ecdh(vec![0x00]), d, &t),
        Err(HsmError::MechanismParamInvalid)
    ));
    assert!(matches!(
        s.derive_key(&ecdh(vec![]), d, &t),
        Err(HsmError::MechanismParamInvalid)
    ));
    let no_derive = s
        .import_ec_private_key(
            &KeyTemplate {
                derive: false,
                ..KeyTemplate::ec_private()
            },
            Zeroizing::new(hex(D_IUT)),
        )
        .unwrap();
    assert!(matches!(
        s.derive_key(&ecdh(hex(Q_CAVS)), no_derive, &t),
        Err(HsmError::KeyFunctionNotPermitted)
    ));
    let aes = s
        .generate_key(&KeyTemplate {
            derive: true,
            ..KeyTemplate::aes(32)
        })
        .unwrap();
    assert!(matches!(
        s.derive_key(&ecdh(hex(Q_CAVS)), aes, &t),
        Err(HsmError::KeyTypeInconsistent)
    ));
    assert_eq!(count(&s), before + 2);
}

#[test]
fn r27_ecdsa_rfc6979_kat_and_errors() {
    let f = fixture();
    let s = f.user();
    let x = "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721";
    let k = s
        .import_ec_private_key(&KeyTemplate::ec_private(), Zeroizing::new(hex(x)))
        .unwrap();
    let sig = s.sign(k, &Mechanism::EcdsaSha256, b"sample").unwrap();
    assert_eq!(
        hex::encode_upper(&sig),
        "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716\
         F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
    );
    let point = s.public_key_sec1(k).unwrap();
    assert!(hex::encode_upper(&point).starts_with("0460FED4BA"));
    // CKM_ECDSA over the SHA-256 hash gives the same signature.
    let h = s.digest_sha256(b"sample").unwrap();
    assert_eq!(s.sign(k, &Mechanism::Ecdsa, &h).unwrap(), sig);
    let pubk = s
        .create_ec_public_key(&KeyTemplate::ec_public(), &point)
        .unwrap();
    s.verify(pubk, &Mechanism::EcdsaSha256, b"sample", &sig)
        .unwrap();
    s.verify(pubk, &Mechanism::Ecdsa, &h, &sig).unwrap();
    let e = s
        .verify(pubk, &Mechanism::EcdsaSha256, b"samplf", &sig)
        .unwrap_err();
    assert!(matches!(e, HsmError::SignatureInvalid));
    assert_eq!(e.ckr(), 0xC0);
    let mut bad = sig.clone();
    bad[10] ^= 0x40;
    assert!(matches!(
        s.verify(pubk, &Mechanism::EcdsaSha256, b"sample", &bad),
        Err(HsmError::SignatureInvalid)
    ));
    assert!(matches!(
        s.verify(pubk, &Mechanism::EcdsaSha256, b"sample", &sig[..63]),
        Err(HsmError::SignatureLenRange)
    ));
    let no_sign = s
        .import_ec_private_key(
            &KeyTemplate {
                sign: false,
                ..KeyTemplate::ec_private()
            },
            Zeroizing::new(hex(x)),
        )
        .unwrap();
    assert!(matches!(
        s.sign(no_sign, &Mechanism::EcdsaSha256, b"m"),
        Err(HsmError::KeyFunctionNotPermitted)
    ));
    assert!(matches!(
        s.sign(k, &Mechanism::Ecdsa, b"short"),
        Err(HsmError::DataLenRange)
    ));
    assert!(matches!(
        s.sign(pubk, &Mechanism::EcdsaSha256, b"m"),
        Err(HsmError::KeyTypeInconsistent)
    ));
}

#[test]
fn hkdf_derive_into_aes_key() {
    let f = fixture();
    let s = f.user();
    // RFC 5869 test case 1 as a generic secret.
    let ikm = s
        .create_secret_key(
            &KeyTemplate::generic_secret(22),
            Zeroizing::new(vec![0x0b; 22]),
        )
        .unwrap();
    let m = Mechanism::HkdfDerive {
        salt: hex("000102030405060708090a0b0c"),
        info: hex("f0f1f2f3f4f5f6f7f8f9"),
    };
    let okm = s.derive_key(&m, ikm, &readable_template(42)).unwrap();
    assert_eq!(
        hex::encode(value(&s, okm)),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
    let aes = s.derive_key(&m, ikm, &KeyTemplate::aes(32)).unwrap();
    let out = s.encrypt(&gcm(None), aes, b"hello").unwrap();
    assert_eq!(
        &s.decrypt(&gcm(Some(out.iv)), aes, &out.ciphertext_and_tag)
            .unwrap()[..],
        b"hello"
    );
    assert!(matches!(
        s.derive_key(&m, ikm, &KeyTemplate::aes(20)),
        Err(HsmError::KeySizeRange)
    ));
    let no_derive = s
        .create_secret_key(&KeyTemplate::aes(32), Zeroizing::new(vec![1; 32]))
        .unwrap();
    assert!(matches!(
        s.derive_key(&m, no_derive, &KeyTemplate::aes(32)),
        Err(HsmError::KeyFunctionNotPermitted)
    ));
}

#[test]
fn gcm_encrypt_decrypt_and_tamper() {
    let f = fixture();
    let s = f.user();
    let k = s.generate_key(&KeyTemplate::aes(32)).unwrap();
    let a = s.encrypt(&gcm(None), k, b"data key bytes").unwrap();
    let b = s.encrypt(&gcm(None), k, b"data key bytes").unwrap();
    assert_ne!(a.iv, b.iv);
    assert_ne!(a.ciphertext_and_tag, b.ciphertext_and_tag);
    assert_eq!(
        &s.decrypt(&gcm(Some(a.iv)), k, &a.ciphertext_and_tag)
            .unwrap()[..],
        b"data key bytes"
    );
    let mut bad = a.ciphertext_and_tag.clone();
    bad[0] ^= 1;
    let e = s.decrypt(&gcm(Some(a.iv)), k, &bad).unwrap_err();
    assert!(matches!(e, HsmError::EncryptedDataInvalid));
    assert_eq!(e.ckr(), 0x40);
    let wrong_aad = Mechanism::AesGcm {
        iv: Some(a.iv),
        aad: b"other".to_vec(),
    };
    assert!(matches!(
        s.decrypt(&wrong_aad, k, &a.ciphertext_and_tag),
        Err(HsmError::EncryptedDataInvalid)
    ));
    assert!(matches!(
        s.decrypt(&gcm(None), k, &a.ciphertext_and_tag),
        Err(HsmError::MechanismParamInvalid)
    ));
    assert!(matches!(
        s.decrypt(&gcm(Some(a.iv)), k, &[0; 5]),
        Err(HsmError::EncryptedDataLenRange)
    ));
    let other = s.generate_key(&KeyTemplate::aes(32)).unwrap();
    assert!(matches!(
        s.decrypt(&gcm(Some(a.iv)), other, &a.ciphertext_and_tag),
        Err(HsmError::EncryptedDataInvalid)
    ));
    let no_enc = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    assert!(matches!(
        s.encrypt(&gcm(None), no_enc, b"x"),
        Err(HsmError::KeyFunctionNotPermitted)
    ));
    // A caller-supplied IV is used as given.
    let fixed = s.encrypt(&gcm(Some([7; 12])), k, b"x").unwrap();
    assert_eq!(fixed.iv, [7; 12]);
}
