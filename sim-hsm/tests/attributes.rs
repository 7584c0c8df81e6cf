//! Key objects and attributes: R-17 .. R-20.
#![allow(clippy::unwrap_used)]
mod common;

use common::*;
use sim_hsm::attributes::CK_UNAVAILABLE_INFORMATION;
use sim_hsm::*;

#[test]
fn r17_generated_key_attributes_and_defaults() {
    let f = fixture();
    let s = f.user();
    for len in [16, 24, 32] {
        let k = s.generate_key(&KeyTemplate::aes(len)).unwrap();
        assert!(boolean(&s, k, AttributeType::Local));
        assert!(
            boolean(&s, k, AttributeType::Sensitive),
            "default SENSITIVE=true"
        );
        assert!(
            !boolean(&s, k, AttributeType::Extractable),
            "default EXTRACTABLE=false"
        );
        assert!(boolean(&s, k, AttributeType::AlwaysSensitive));
        assert!(boolean(&s, k, AttributeType::NeverExtractable));
        assert_eq!(
            s.get_attribute(k, AttributeType::ValueLen).unwrap(),
            AttributeValue::ValueLen(len)
        );
        assert_eq!(
            s.get_attribute(k, AttributeType::KeyGenMechanism).unwrap(),
            AttributeValue::KeyGenMechanism(0x1080)
        );
    }
    let k = s
        .generate_key(
            &KeyTemplate::aes(32)
                .with_sensitive(false)
                .with_extractable(true),
        )
        .unwrap();
    assert!(!boolean(&s, k, AttributeType::AlwaysSensitive));
    assert!(!boolean(&s, k, AttributeType::NeverExtractable));
    let before = count(&s);
    for bad in [0, 8, 20, 33, 64] {
        assert!(
            matches!(
                s.generate_key(&KeyTemplate::aes(bad)),
                Err(HsmError::KeySizeRange)
            ),
            "{bad}"
        );
    }
    assert_eq!(count(&s), before);
}

#[test]
fn r18_sticky_attributes() {
    let f = fixture();
    let s = f.user();
    let k = s
        .generate_key(&KeyTemplate {
            wrap_with_trusted: true,
            ..KeyTemplate::aes(32).with_token(true)
        })
        .unwrap();
    let ro =
        |r: Result<(), HsmError>| assert!(matches!(r, Err(HsmError::AttributeReadOnly)), "{r:?}");
    ro(s.set_attribute(k, AttributeValue::Bool(AttributeType::Sensitive, false)));
    ro(s.set_attribute(k, AttributeValue::Bool(AttributeType::Extractable, true)));
    ro(s.set_attribute(
        k,
        AttributeValue::Bool(AttributeType::WrapWithTrusted, false),
    ));
    ro(s.set_attribute(
        k,
        AttributeValue::Bool(AttributeType::AlwaysSensitive, false),
    ));
    ro(s.set_attribute(
        k,
        AttributeValue::Bool(AttributeType::NeverExtractable, false),
    ));
    ro(s.set_attribute(k, AttributeValue::Bool(AttributeType::Local, false)));
    ro(s.set_attribute(k, AttributeValue::Bool(AttributeType::Trusted, true)));
    ro(s.set_attribute(k, AttributeValue::Value(Zeroizing::new(vec![0; 32]))));
    ro(s.set_attribute(k, AttributeValue::Class(ObjectClass::PublicKey)));
    // Allowed one-way changes and ordinary attributes.
    let e = s
        .generate_key(
            &KeyTemplate::aes(32)
                .with_sensitive(false)
                .with_extractable(true),
        )
        .unwrap();
    s.set_attribute(e, AttributeValue::Bool(AttributeType::Sensitive, true))
        .unwrap();
    s.set_attribute(e, AttributeValue::Bool(AttributeType::Extractable, false))
        .unwrap();
    assert!(!boolean(&s, e, AttributeType::AlwaysSensitive));
    assert!(!boolean(&s, e, AttributeType::NeverExtractable));
    s.set_attribute(k, AttributeValue::Label("renamed".into()))
        .unwrap();
    // Trusted templates need the SO: creating one as the user fails too.
    assert!(matches!(
        s.generate_key(&KeyTemplate {
            trusted: true,
            ..KeyTemplate::aes_kek(32)
        }),
        Err(HsmError::AttributeReadOnly)
    ));
    s.close();
    // The SO may set TRUSTED on a public object.
    let so = f.so();
    let pk = so
        .generate_key(
            &KeyTemplate::aes_kek(32)
                .with_token(true)
                .with_private(false),
        )
        .unwrap();
    so.set_attribute(pk, AttributeValue::Bool(AttributeType::Trusted, true))
        .unwrap();
    assert!(boolean(&so, pk, AttributeType::Trusted));
    so.close();
    // The change persisted (label and trusted) across a restart.
    let h2 = f.restart();
    let s2 = h2.open_session(f.slot, true).unwrap();
    s2.login(UserType::User, USER_PIN).unwrap();
    assert_eq!(
        s2.get_attribute(k, AttributeType::Label).unwrap(),
        AttributeValue::Label("renamed".into())
    );
    assert!(boolean(&s2, pk, AttributeType::Trusted));
    s2.encrypt(&gcm(None), k, b"still usable").unwrap();
}

#[test]
fn r19_no_plaintext_read_back_and_kcvs() {
    let f = fixture();
    let s = f.user();
    let sensitive = s
        .create_secret_key(
            &KeyTemplate::aes(16).with_extractable(true),
            Zeroizing::new(vec![0; 16]),
        )
        .unwrap();
    let unextractable = s
        .create_secret_key(
            &KeyTemplate::aes(32).with_sensitive(false),
            Zeroizing::new(vec![0; 32]),
        )
        .unwrap();
    let e = s
        .get_attribute(sensitive, AttributeType::Value)
        .unwrap_err();
    assert!(matches!(e, HsmError::AttributeSensitive));
    assert_eq!(e.ckr(), 0x11);
    assert!(matches!(
        s.get_attribute(unextractable, AttributeType::Value),
        Err(HsmError::AttributeSensitive)
    ));
    assert_eq!(CK_UNAVAILABLE_INFORMATION, u64::MAX);
    // CHECK_VALUE stays readable.
    assert_eq!(s.check_value(sensitive).unwrap(), [0x66, 0xE9, 0x4B]);
    assert_eq!(s.check_value(unextractable).unwrap(), [0xDC, 0x95, 0xC0]);
    assert_eq!(
        s.get_attribute(sensitive, AttributeType::CheckValue)
            .unwrap(),
        AttributeValue::CheckValue([0x66, 0xE9, 0x4B])
    );
    let k = kek(
        &s,
        &hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"),
    );
    assert_eq!(s.check_value(k).unwrap(), [0xF2, 0x90, 0x00]);
    // Non-sensitive and extractable: VALUE is readable (standard keys).
    let readable = target(&s, &[9u8; 32]);
    assert_eq!(value(&s, readable), vec![9u8; 32]);
    // Private keys never reveal VALUE.
    let (_, p) = s
        .generate_key_pair(
            &KeyTemplate::ec_public(),
            &KeyTemplate::ec_private()
                .with_sensitive(false)
                .with_extractable(true),
        )
        .unwrap();
    assert!(matches!(
        s.get_attribute(p, AttributeType::Value),
        Err(HsmError::AttributeSensitive)
    ));
}

#[test]
fn r20_level3_never_reveals_secret_values() {
    let f = fixture_with(HsmConfig {
        security_level: SecurityLevel::Level3,
        ..config()
    });
    let s = f.user();
    let readable = target(&s, &[9u8; 32]);
    assert!(matches!(
        s.get_attribute(readable, AttributeType::Value),
        Err(HsmError::AttributeSensitive)
    ));
    let g = s
        .generate_key(
            &KeyTemplate::generic_secret(48)
                .with_sensitive(false)
                .with_extractable(true),
        )
        .unwrap();
    assert!(matches!(
        s.get_attribute(g, AttributeType::Value),
        Err(HsmError::AttributeSensitive)
    ));
    // Keys still leave the module wrapped.
    let k = s.generate_key(&KeyTemplate::aes_kek(32)).unwrap();
    assert_eq!(
        s.wrap_key(&Mechanism::AesKeyWrap, k, readable)
            .unwrap()
            .len(),
        40
    );
}

#[test]
fn r20_public_keys_export_as_sec1_and_ec_point() {
    let f = fixture();
    let s = f.user();
    let (pubk, privk) = s
        .generate_key_pair(&KeyTemplate::ec_public(), &KeyTemplate::ec_private())
        .unwrap();
    let p = s.public_key_sec1(pubk).unwrap();
    assert_eq!(p.len(), 65);
    assert_eq!(p[0], 0x04);
    assert_eq!(s.public_key_sec1(privk).unwrap(), p);
    match s.get_attribute(pubk, AttributeType::EcPoint).unwrap() {
        AttributeValue::EcPoint(der) => {
            assert_eq!(&der[..2], &[0x04, 65]);
            assert_eq!(&der[2..], &p[..]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.get_attribute(pubk, AttributeType::Value),
        Err(HsmError::AttributeTypeInvalid)
    ));
}

#[test]
fn attribute_debug_never_prints_values() {
    let v = AttributeValue::Value(Zeroizing::new(vec![0xAB; 4]));
    let d = format!("{v:?}");
    assert!(
        !d.contains("171") && !d.to_lowercase().contains("ab, "),
        "{d}"
    );
}
