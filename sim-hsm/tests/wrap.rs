//! Wrap and unwrap: R-21 .. R-25, RFC 3394 / RFC 5649 / CAVP vectors and property tests.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sim_hsm::*;

fn wrap_vector(kek_hex: &str, data_hex: &str, expected_hex: &str, mech: Mechanism) {
    let f = fixture();
    let s = f.user();
    let k = kek(&s, &hex(kek_hex));
    let t = target(&s, &hex(data_hex));
    let w = s.wrap_key(&mech, k, t).unwrap();
    assert_eq!(hex::encode_upper(&w), hex::encode_upper(hex(expected_hex)));
    // And back.
    let len = hex(data_hex).len();
    let u = s.unwrap_key(&mech, k, &w, &readable_template(len)).unwrap();
    assert_eq!(value(&s, u), hex(data_hex));
}

const K128: &str = "000102030405060708090A0B0C0D0E0F";
const K192: &str = "000102030405060708090A0B0C0D0E0F1011121314151617";
const K256: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
const D128: &str = "00112233445566778899AABBCCDDEEFF";
const D192: &str = "00112233445566778899AABBCCDDEEFF0001020304050607";
const D256: &str = "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F";

#[test]
fn r21_rfc3394_4_1_to_4_6() {
    let kw = || Mechanism::AesKeyWrap;
    wrap_vector(
        K128,
        D128,
        "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
        kw(),
    );
    wrap_vector(
        K192,
        D128,
        "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D",
        kw(),
    );
    wrap_vector(
        K256,
        D128,
        "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7",
        kw(),
    );
    wrap_vector(
        K192,
        D192,
        "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2",
        kw(),
    );
    wrap_vector(
        K256,
        D192,
        "A8F9BC1612C68B3FF6E6F4FBE30E71E4769C8B80A32CB8958CD5D17D6B254DA1",
        kw(),
    );
    wrap_vector(
        K256,
        D256,
        "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
        kw(),
    );
}

#[test]
fn r21_rfc5649_both_vectors_and_alias() {
    let kek = "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8";
    wrap_vector(
        kek,
        "c37b7e6492584340bed12207808941155068f738",
        "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
        Mechanism::AesKeyWrapKwp,
    );
    wrap_vector(
        kek,
        "466f7250617369",
        "afbeb0f07dfbf5419200f2ccb50bb24f",
        Mechanism::AesKeyWrapKwp,
    );
    // 0x210A is an alias of 0x210B.
    let alias = Mechanism::from_code(0x210A).unwrap();
    assert_eq!(alias, Mechanism::AesKeyWrapKwp);
    wrap_vector(
        kek,
        "466f7250617369",
        "afbeb0f07dfbf5419200f2ccb50bb24f",
        alias,
    );
    let f = fixture();
    let list = f.hsm.mechanism_list();
    for m in [
        0x2109, 0x210A, 0x210B, 0x1087, 0x1050, 0x402A, 0x1040, 0x1041, 0x1044, 0x1080,
    ] {
        assert!(list.contains(&m), "{m:#x}");
    }
}

#[test]
fn r21_cavp_samples() {
    wrap_vector(
        "7575da3a93607cc2bfd8cec7aadfd9a6",
        "42136d3c384a3eeac95a066fd28fed3f",
        "031f6bd7e61e643df68594816f64caa3f56fabea2548f5fb",
        Mechanism::AesKeyWrap,
    );
    let f = fixture();
    let s = f.user();
    let unwrap = |k: &str, c: &str, len: usize, mech: Mechanism| {
        let kh = kek(&s, &hex(k));
        let before = count(&s);
        let r = s.unwrap_key(&mech, kh, &hex(c), &readable_template(len));
        if r.is_err() {
            assert_eq!(count(&s), before);
        }
        r.map(|h| value(&s, h))
    };
    assert_eq!(
        unwrap(
            "80aa997327a4806b6a7a41a52b86c3710386f932786ef79676fafb90b8263c5f",
            "423c960d8a2ac4c1d33d3d977bf0a91559f99c8acd293d43",
            16,
            Mechanism::AesKeyWrap
        )
        .unwrap(),
        hex("0a256ba75cfa03aaa02ba94203f15baa")
    );
    let e = unwrap(
        "08c936b25b567a0aa679c29f201bf8b190327df0c2563e39cee061f149f4d91b",
        "e227eb8ae9d239ccd8928adec39c28810ca9b3dc1f366444",
        16,
        Mechanism::AesKeyWrap,
    )
    .unwrap_err();
    assert!(matches!(e, HsmError::WrappedKeyInvalid));
    assert_eq!(e.ckr(), 0x110);
    assert_eq!(
        unwrap(
            "20e4ff6a88ffa9a2818b81702793d8a016722c2fa1ff445f24b9db293cb12069",
            "85011dc927b167f411b0b8e21b11d819",
            1,
            Mechanism::AesKeyWrapKwp
        )
        .unwrap(),
        hex("d2")
    );
    assert!(matches!(
        unwrap(
            "c32cb3e1e41a4b9f4de79989957866f5dd48dba38c22a6ebb80e14c84bdd9534",
            "c29b05c2619a58ecc1d239e7a34273cd",
            1,
            Mechanism::AesKeyWrapKwp
        ),
        Err(HsmError::WrappedKeyInvalid)
    ));
}

#[test]
fn r22_wrapping_key_checks_in_order() {
    let f = fixture();
    let s = f.user();
    let t = target(&s, &[1u8; 32]);
    let kw = Mechanism::AesKeyWrap;
    assert!(matches!(
        s.wrap_key(&kw, ObjectHandle(12345), t),
        Err(HsmError::WrappingKeyHandleInvalid)
    ));
    let generic = s
        .create_secret_key(
            &KeyTemplate {
                wrap: true,
                ..KeyTemplate::generic_secret(32)
            },
            Zeroizing::new(vec![2; 32]),
        )
        .unwrap();
    assert!(matches!(
        s.wrap_key(&kw, generic, t),
        Err(HsmError::WrappingKeyTypeInconsistent)
    ));
    let no_wrap = s.generate_key(&KeyTemplate::aes(32)).unwrap();
    let e = s.wrap_key(&kw, no_wrap, t).unwrap_err();
    assert!(matches!(e, HsmError::KeyFunctionNotPermitted));
    assert_eq!(e.ckr(), 0x68);
    let kw_only = s
        .generate_key(&KeyTemplate::aes_kek(32).with_allowed_mechanisms(vec![0x2109]))
        .unwrap();
    assert!(s.wrap_key(&kw, kw_only, t).is_ok());
    assert!(matches!(
        s.wrap_key(&Mechanism::AesKeyWrapKwp, kw_only, t),
        Err(HsmError::MechanismInvalid)
    ));
    assert!(matches!(
        s.wrap_key(&gcm(None), kw_only, t),
        Err(HsmError::MechanismInvalid)
    ));
    // Wrapping-key checks come before target checks.
    assert!(matches!(
        s.wrap_key(&kw, no_wrap, ObjectHandle(999)),
        Err(HsmError::KeyFunctionNotPermitted)
    ));
    let good = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    assert!(matches!(
        s.wrap_key(&kw, good, ObjectHandle(999)),
        Err(HsmError::KeyHandleInvalid)
    ));
}

#[test]
fn r23_target_checks() {
    let f = fixture();
    let s = f.user();
    let k = s
        .generate_key(&KeyTemplate::aes_kek(32).with_token(true))
        .unwrap();
    let kw = Mechanism::AesKeyWrap;
    let unextractable = s.generate_key(&KeyTemplate::aes(32)).unwrap();
    let e = s.wrap_key(&kw, k, unextractable).unwrap_err();
    assert!(matches!(e, HsmError::KeyUnextractable));
    assert_eq!(e.ckr(), 0x6A);
    // A sensitive but extractable key can be wrapped.
    let sensitive = s
        .generate_key(&KeyTemplate::aes(32).with_extractable(true).with_token(true))
        .unwrap();
    assert!(s.wrap_key(&kw, k, sensitive).is_ok());
    // WRAP_WITH_TRUSTED.
    let wwt = s
        .generate_key(&KeyTemplate {
            wrap_with_trusted: true,
            ..KeyTemplate::aes(32).with_extractable(true).with_token(true)
        })
        .unwrap();
    assert!(matches!(
        s.wrap_key(&kw, k, wwt),
        Err(HsmError::KeyNotWrappable)
    ));
    s.logout().unwrap();
    s.login(UserType::So, SO_PIN).unwrap();
    let trusted = s
        .generate_key(&KeyTemplate {
            trusted: true,
            ..KeyTemplate::aes_kek(32)
                .with_private(false)
                .with_token(true)
        })
        .unwrap();
    s.logout().unwrap();
    s.login(UserType::User, USER_PIN).unwrap();
    assert!(s.wrap_key(&kw, trusted, wwt).is_ok());
    // WRAP_TEMPLATE.
    let templ = s
        .generate_key(&KeyTemplate {
            wrap_template: Some(vec![
                AttributeValue::KeyType(KeyType::Aes),
                AttributeValue::ValueLen(16),
            ]),
            ..KeyTemplate::aes_kek(32)
        })
        .unwrap();
    assert!(matches!(
        s.wrap_key(&kw, templ, sensitive),
        Err(HsmError::KeyNotWrappable)
    ));
    let small = target(&s, &[5u8; 16]);
    assert!(s.wrap_key(&kw, templ, small).is_ok());
    // KW is strict SP 800-38F; KWP handles other lengths.
    let odd = target(&s, &[3u8; 20]);
    assert!(matches!(
        s.wrap_key(&kw, k, odd),
        Err(HsmError::KeySizeRange)
    ));
    let eight = target(&s, &[3u8; 8]);
    assert!(matches!(
        s.wrap_key(&kw, k, eight),
        Err(HsmError::KeySizeRange)
    ));
    assert_eq!(
        s.wrap_key(&Mechanism::AesKeyWrapKwp, k, odd).unwrap().len(),
        32
    );
    assert_eq!(
        s.wrap_key(&Mechanism::AesKeyWrapKwp, k, eight)
            .unwrap()
            .len(),
        16
    );
    // A zero-length key cannot exist, so a KWP target is never empty.
    assert!(matches!(
        s.create_secret_key(&KeyTemplate::generic_secret(0), Zeroizing::new(vec![])),
        Err(HsmError::KeySizeRange)
    ));
    // Public keys are not wrappable.
    let (pubk, _) = s
        .generate_key_pair(&KeyTemplate::ec_public(), &KeyTemplate::ec_private())
        .unwrap();
    assert!(matches!(
        s.wrap_key(&Mechanism::AesKeyWrapKwp, k, pubk),
        Err(HsmError::KeyNotWrappable)
    ));
}

#[test]
fn r24_unwrap_checks_and_no_object_on_failure() {
    let f = fixture();
    let s = f.user();
    let k = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    let other = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    let t = s
        .generate_key(&KeyTemplate::aes(32).with_extractable(true))
        .unwrap();
    let kcv = s.check_value(t).unwrap();
    let w = s.wrap_key(&Mechanism::AesKeyWrap, k, t).unwrap();
    let wp = s.wrap_key(&Mechanism::AesKeyWrapKwp, k, t).unwrap();
    let before = count(&s);
    let tmpl = KeyTemplate::aes(32).with_token(true);
    let err = |m: Mechanism, key: ObjectHandle, data: &[u8]| {
        s.unwrap_key(&m, key, data, &tmpl).unwrap_err()
    };
    assert!(matches!(
        err(Mechanism::AesKeyWrap, k, &w[..16]),
        HsmError::WrappedKeyLenRange
    ));
    assert!(matches!(
        err(Mechanism::AesKeyWrap, k, &[0u8; 25]),
        HsmError::WrappedKeyLenRange
    ));
    assert!(matches!(
        err(Mechanism::AesKeyWrapKwp, k, &[0u8; 8]),
        HsmError::WrappedKeyLenRange
    ));
    assert!(matches!(
        err(Mechanism::AesKeyWrapKwp, k, &[0u8; 17]),
        HsmError::WrappedKeyLenRange
    ));
    for i in 0..w.len() * 8 {
        let mut bad = w.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            matches!(
                err(Mechanism::AesKeyWrap, k, &bad),
                HsmError::WrappedKeyInvalid
            ),
            "bit {i}"
        );
    }
    assert!(matches!(
        err(Mechanism::AesKeyWrap, other, &w),
        HsmError::WrappedKeyInvalid
    ));
    assert!(matches!(
        err(Mechanism::AesKeyWrapKwp, other, &wp),
        HsmError::WrappedKeyInvalid
    ));
    let no_unwrap = s
        .generate_key(&KeyTemplate {
            wrap: true,
            ..KeyTemplate::aes(32)
        })
        .unwrap();
    let before2 = count(&s);
    assert!(matches!(
        err(Mechanism::AesKeyWrap, no_unwrap, &w),
        HsmError::KeyFunctionNotPermitted
    ));
    let ut = s
        .generate_key(&KeyTemplate {
            unwrap_template: Some(vec![AttributeValue::Bool(
                AttributeType::Extractable,
                false,
            )]),
            ..KeyTemplate::aes_kek(32)
        })
        .unwrap();
    let wu = s.wrap_key(&Mechanism::AesKeyWrap, ut, t).unwrap();
    let before3 = count(&s);
    assert!(matches!(
        s.unwrap_key(
            &Mechanism::AesKeyWrap,
            ut,
            &wu,
            &KeyTemplate::aes(32).with_extractable(true)
        ),
        Err(HsmError::TemplateInconsistent)
    ));
    assert_eq!(count(&s), before3);
    let merged = s
        .unwrap_key(&Mechanism::AesKeyWrap, ut, &wu, &KeyTemplate::aes(32))
        .unwrap();
    assert!(!boolean(&s, merged, AttributeType::Extractable));
    assert!(matches!(
        s.unwrap_key(&Mechanism::AesKeyWrap, k, &w, &KeyTemplate::ec_public()),
        Err(HsmError::AttributeValueInvalid)
    ));
    assert_eq!(before2, before + 1);
    // No record reached the store for any failed unwrap.
    let objs = f
        .store
        .records()
        .iter()
        .filter(|(k, _)| k.windows(4).any(|w| w == b"obj/"))
        .count();
    assert_eq!(objs, 0);
    // Success: attributes and KCV.
    let u = s.unwrap_key(&Mechanism::AesKeyWrap, k, &w, &tmpl).unwrap();
    assert!(!boolean(&s, u, AttributeType::Local));
    assert!(!boolean(&s, u, AttributeType::AlwaysSensitive));
    assert!(!boolean(&s, u, AttributeType::NeverExtractable));
    assert_eq!(s.check_value(u).unwrap(), kcv);
    let u2 = s
        .unwrap_key(&Mechanism::AesKeyWrapKwp, k, &wp, &tmpl)
        .unwrap();
    assert_eq!(s.check_value(u2).unwrap(), kcv);
}

#[test]
fn r25_private_key_wrap_round_trip_pkcs8() {
    let f = fixture();
    let s = f.user();
    let k = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    let (pubk, privk) = s
        .generate_key_pair(
            &KeyTemplate::ec_public(),
            &KeyTemplate::ec_private().with_extractable(true),
        )
        .unwrap();
    let w = s.wrap_key(&Mechanism::AesKeyWrapKwp, k, privk).unwrap();
    let u = s
        .unwrap_key(
            &Mechanism::AesKeyWrapKwp,
            k,
            &w,
            &KeyTemplate::ec_private().with_token(true),
        )
        .unwrap();
    assert_eq!(
        s.public_key_sec1(u).unwrap(),
        s.public_key_sec1(pubk).unwrap()
    );
    let sig = s.sign(u, &Mechanism::EcdsaSha256, b"message").unwrap();
    s.verify(pubk, &Mechanism::EcdsaSha256, b"message", &sig)
        .unwrap();
    // The wrapped form is PKCS#8 DER (SEQUENCE).
    let der_len = w.len() - 8;
    assert!(der_len > 32);
}

fn round_trip(s: &Session, k: ObjectHandle, mech: Mechanism, data: &[u8]) {
    let t = target(s, data);
    let w = s.wrap_key(&mech, k, t).unwrap();
    let u = s
        .unwrap_key(&mech, k, &w, &readable_template(data.len()))
        .unwrap();
    assert_eq!(value(s, u), data);
    s.destroy_object(t).unwrap();
    s.destroy_object(u).unwrap();
}

#[test]
fn proptest_kw_and_kwp_round_trip_every_allowed_length() {
    let f = fixture();
    let s = f.user();
    let k = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    let mut runner = TestRunner::new(Config::with_cases(48));
    let kw_data = (2usize..=64).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 8));
    runner
        .run(&kw_data, |d| {
            round_trip(&s, k, Mechanism::AesKeyWrap, &d);
            Ok(())
        })
        .unwrap();
    let kwp_data = proptest::collection::vec(any::<u8>(), 1..=512);
    runner
        .run(&kwp_data, |d| {
            round_trip(&s, k, Mechanism::AesKeyWrapKwp, &d);
            Ok(())
        })
        .unwrap();
    // Exhaustive over small lengths.
    for n in 1..=40 {
        round_trip(&s, k, Mechanism::AesKeyWrapKwp, &vec![n as u8; n]);
        if n % 8 == 0 && n >= 16 {
            round_trip(&s, k, Mechanism::AesKeyWrap, &vec![n as u8; n]);
        }
    }
}

#[test]
fn proptest_any_single_bit_flip_fails_integrity() {
    let f = fixture();
    let s = f.user();
    let k = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    let t = target(&s, &[0x5Au8; 24]);
    let t2 = target(&s, &[0x5Au8; 13]);
    let w = s.wrap_key(&Mechanism::AesKeyWrap, k, t).unwrap();
    let wp = s.wrap_key(&Mechanism::AesKeyWrapKwp, k, t2).unwrap();
    let before = count(&s);
    let mut runner = TestRunner::new(Config::with_cases(64));
    runner
        .run(&(0..w.len() * 8, 0..wp.len() * 8), |(i, j)| {
            let mut bad = w.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let r = s.unwrap_key(&Mechanism::AesKeyWrap, k, &bad, &readable_template(24));
            prop_assert!(matches!(r, Err(HsmError::WrappedKeyInvalid)));
            let mut badp = wp.clone();
            badp[j / 8] ^= 1 << (j % 8);
            let r = s.unwrap_key(&Mechanism::AesKeyWrapKwp, k, &badp, &readable_template(13));
            prop_assert!(matches!(r, Err(HsmError::WrappedKeyInvalid)));
            Ok(())
        })
        .unwrap();
    assert_eq!(count(&s), before);
}
