//! Power-on self-tests (known-answer tests for every approved algorithm, R-1) and the conditional pairwise
//! consistency tests, with their names as used by fault injection (`HsmConfig::fail_self_test`,
//! `SIM_HSM_FAIL_CAST`).

use p256::PublicKey;
use p256::ecdsa::SigningKey;

use crate::primitives::{self, KwMode};
use crate::rng;

/// AES-KW wrap KAT (RFC 3394 §4.6).
pub const AES_KW_WRAP: &str = "AES-KW-WRAP";
/// AES-KW unwrap KAT (RFC 3394 §4.6).
pub const AES_KW_UNWRAP: &str = "AES-KW-UNWRAP";
/// AES-KWP wrap KAT (RFC 5649 §6, second vector).
pub const AES_KWP_WRAP: &str = "AES-KWP-WRAP";
/// AES-KWP unwrap KAT (RFC 5649 §6, second vector).
pub const AES_KWP_UNWRAP: &str = "AES-KWP-UNWRAP";
/// AES-GCM encrypt KAT (NIST CAVS gcmEncryptExtIV256).
pub const AES_GCM_ENC: &str = "AES-GCM-ENC";
/// AES-GCM decrypt KAT.
pub const AES_GCM_DEC: &str = "AES-GCM-DEC";
/// AES-ECB KAT through the key check value (all-zero AES-128 key).
pub const AES_ECB: &str = "AES-ECB";
/// ECDH P-256 KAT (CAVS 14.1 KAS ECC CDH, COUNT 0).
pub const ECDH_P256: &str = "ECDH-P256";
/// ECDSA P-256 sign KAT (RFC 6979 §A.2.5).
pub const ECDSA_P256_SIGN: &str = "ECDSA-P256-SIGN";
/// ECDSA P-256 verify KAT (RFC 6979 §A.2.5).
pub const ECDSA_P256_VERIFY: &str = "ECDSA-P256-VERIFY";
/// SHA-256 KAT ("abc").
pub const SHA_256: &str = "SHA-256";
/// HMAC-SHA256 KAT (RFC 4231 test case 1).
pub const HMAC_SHA256: &str = "HMAC-SHA256";
/// HKDF-SHA256 KAT (RFC 5869 test case 1).
pub const HKDF_SHA256: &str = "HKDF-SHA256";
/// PBKDF2-HMAC-SHA256 KAT (P="password", S="salt", c=2).
pub const PBKDF2_SHA256: &str = "PBKDF2-SHA256";
/// DRBG KAT (ChaCha20 keystream, RFC 8439 §A.1 #1).
pub const DRBG: &str = "DRBG";

/// Conditional test: ECDSA pairwise consistency on every generated/imported key pair.
pub const PCT_ECDSA: &str = "PCT-ECDSA-P256";
/// Conditional test: ECDH pairwise consistency on every generated/imported key pair.
pub const PCT_ECDH: &str = "PCT-ECDH-P256";
/// Conditional test: the continuous RNG test.
pub const CRNGT: &str = "CRNGT";
/// Name recorded in the error log when `Hsm::tamper` is called.
pub const TAMPER: &str = "TAMPER";

/// Every power-on test, in execution order.
pub const POST_TESTS: [&str; 15] = [
    SHA_256,
    HMAC_SHA256,
    HKDF_SHA256,
    PBKDF2_SHA256,
    DRBG,
    AES_ECB,
    AES_KW_WRAP,
    AES_KW_UNWRAP,
    AES_KWP_WRAP,
    AES_KWP_UNWRAP,
    AES_GCM_ENC,
    AES_GCM_DEC,
    ECDH_P256,
    ECDSA_P256_SIGN,
    ECDSA_P256_VERIFY,
];

/// Every name accepted by fault injection.
pub const ALL_TEST_NAMES: [&str; 18] = [
    SHA_256,
    HMAC_SHA256,
    HKDF_SHA256,
    PBKDF2_SHA256,
    DRBG,
    AES_ECB,
    AES_KW_WRAP,
    AES_KW_UNWRAP,
    AES_KWP_WRAP,
    AES_KWP_UNWRAP,
    AES_GCM_ENC,
    AES_GCM_DEC,
    ECDH_P256,
    ECDSA_P256_SIGN,
    ECDSA_P256_VERIFY,
    PCT_ECDSA,
    PCT_ECDH,
    CRNGT,
];

/// The outcome of one self-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfTestResult {
    /// Test name (one of the constants in this module).
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
}

/// Maps a user-supplied name to the canonical static name (case-insensitive), if it is a known test.
#[must_use]
pub fn canonical_name(name: &str) -> Option<&'static str> {
    ALL_TEST_NAMES
        .iter()
        .copied()
        .find(|n| n.eq_ignore_ascii_case(name.trim()))
}

fn h(s: &str) -> Vec<u8> {
    // Constant test data; a malformed literal makes the KAT fail rather than panic.
    (0..s.len() / 2)
        .filter_map(|i| s.get(2 * i..2 * i + 2))
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect()
}

const RFC3394_KEK: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
const RFC3394_DATA: &str = "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F";
const RFC3394_WRAPPED: &str =
    "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21";
const RFC5649_KEK: &str = "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8";
const RFC5649_DATA: &str = "466f7250617369";
const RFC5649_WRAPPED: &str = "afbeb0f07dfbf5419200f2ccb50bb24f";
const GCM_KEY: &str = "31bdadd96698c204aa9ce1448ea94ae1fb4a9a0b3c9d773b51bb1822666b8f22";
const GCM_IV: &str = "0d18e06c7c725ac9e362e1ce";
const GCM_PT: &str = "2db5168e932556f8089a0622981d017d";
const GCM_CT_TAG: &str = "fa4362189661d163fcd6a56d8bf0405ad636ac1bbedd5cc3ee727dc2ab4a9489";
const CDH_D: &str = "7d7dc5f71eb29ddaf80d6214632eeae03d9058af1fb6d22ed80badb62bc1a534";
const CDH_Q: &str = "04700c48f77f56584c5cc632ca65640db91b6bacce3a4df6b42ce7cc838833d287db71e509e3fd9b060ddb20ba5c51dcc5948d46fbf640dfe0441782cab85fa4ac";
const CDH_Z: &str = "46fc62106420ff012e54a434fbdd2d25ccc5852060561e68040dd7778997bd7b";
const RFC6979_X: &str = "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721";
const RFC6979_SIG: &str = "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8";

/// Runs one power-on test by name; true when it passed.
pub(crate) fn run(name: &str) -> bool {
    match name {
        SHA_256 => {
            primitives::sha256(b"abc").to_vec()
                == h("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        }
        HMAC_SHA256 => {
            primitives::hmac_sha256(&[0x0b; 20], b"Hi There").to_vec()
                == h("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        }
        HKDF_SHA256 => {
            let mut okm = [0u8; 42];
            primitives::hkdf_sha256(
                &h("000102030405060708090a0b0c"),
                &[0x0b; 22],
                &h("f0f1f2f3f4f5f6f7f8f9"),
                &mut okm,
            )
            .is_ok()
                && okm.to_vec()
                    == h(
                        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
                    )
        }
        PBKDF2_SHA256 => {
            primitives::pin_kek(b"password", b"salt", 2).to_vec()
                == h("ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43")
        }
        DRBG => rng::drbg_known_answer(),
        AES_ECB => primitives::aes_kcv(&[0u8; 16]).is_ok_and(|k| k == [0x66, 0xe9, 0x4b]),
        AES_KW_WRAP => primitives::kw_wrap(&h(RFC3394_KEK), &h(RFC3394_DATA), KwMode::Kw)
            .is_ok_and(|w| w == h(RFC3394_WRAPPED)),
        AES_KW_UNWRAP => primitives::kw_unwrap(&h(RFC3394_KEK), &h(RFC3394_WRAPPED), KwMode::Kw)
            .is_ok_and(|p| *p == h(RFC3394_DATA)),
        AES_KWP_WRAP => primitives::kw_wrap(&h(RFC5649_KEK), &h(RFC5649_DATA), KwMode::Kwp)
            .is_ok_and(|w| w == h(RFC5649_WRAPPED)),
        AES_KWP_UNWRAP => primitives::kw_unwrap(&h(RFC5649_KEK), &h(RFC5649_WRAPPED), KwMode::Kwp)
            .is_ok_and(|p| *p == h(RFC5649_DATA)),
        AES_GCM_ENC | AES_GCM_DEC => {
            let Ok(k) = primitives::GcmKey::new(&h(GCM_KEY)) else {
                return false;
            };
            let Ok(iv) = <[u8; 12]>::try_from(h(GCM_IV).as_slice()) else {
                return false;
            };
            if name == AES_GCM_ENC {
                k.encrypt(&iv, b"", &h(GCM_PT))
                    .is_ok_and(|c| c == h(GCM_CT_TAG))
            } else {
                k.decrypt(&iv, b"", &h(GCM_CT_TAG))
                    .is_ok_and(|p| *p == h(GCM_PT))
            }
        }
        ECDH_P256 => {
            let Ok(sk) = SigningKey::from_slice(&h(CDH_D)) else {
                return false;
            };
            let Ok(q) = PublicKey::from_sec1_bytes(&h(CDH_Q)) else {
                return false;
            };
            primitives::ecdh(&sk, &q).to_vec() == h(CDH_Z)
        }
        ECDSA_P256_SIGN => {
            let Ok(sk) = SigningKey::from_slice(&h(RFC6979_X)) else {
                return false;
            };
            primitives::ecdsa_sign_sha256(&sk, b"sample") == h(RFC6979_SIG)
        }
        ECDSA_P256_VERIFY => {
            let Ok(sk) = SigningKey::from_slice(&h(RFC6979_X)) else {
                return false;
            };
            let sig = h(RFC6979_SIG);
            let mut bad = sig.clone();
            if let Some(b) = bad.last_mut() {
                *b ^= 1;
            }
            primitives::ecdsa_verify(sk.verifying_key(), b"sample", &sig, false).is_ok()
                && primitives::ecdsa_verify(sk.verifying_key(), b"sample", &bad, false).is_err()
        }
        _ => false,
    }
}

/// ECDSA pairwise consistency test: sign a fixed message and verify it with the public half.
pub(crate) fn pct_ecdsa(sk: &SigningKey) -> bool {
    let msg = b"sim-hsm pairwise consistency test";
    let sig = primitives::ecdsa_sign_sha256(sk, msg);
    primitives::ecdsa_verify(sk.verifying_key(), msg, &sig, false).is_ok()
}

/// ECDH pairwise consistency test: agree with a fixed peer both ways and compare.
pub(crate) fn pct_ecdh(sk: &SigningKey) -> bool {
    let Ok(peer) = SigningKey::from_slice(&h(CDH_D)) else {
        return false;
    };
    let Ok(own_pub) =
        PublicKey::from_sec1_bytes(&primitives::sec1_uncompressed(sk.verifying_key()))
    else {
        return false;
    };
    let Ok(peer_pub) =
        PublicKey::from_sec1_bytes(&primitives::sec1_uncompressed(peer.verifying_key()))
    else {
        return false;
    };
    *primitives::ecdh(sk, &peer_pub) == *primitives::ecdh(&peer, &own_pub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_post_test_passes() {
        for t in POST_TESTS {
            assert!(run(t), "{t}");
        }
    }

    #[test]
    fn names_are_canonicalised() {
        assert_eq!(canonical_name("aes-kw-unwrap"), Some(AES_KW_UNWRAP));
        assert_eq!(canonical_name("nope"), None);
    }
}
