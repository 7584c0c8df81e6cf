//! The bearer token format: a JWT in compact form (`base64url(header).base64url(claims).
//! base64url(signature)`), signed with ES256 (ECDSA P-256 over SHA-256, signature `r || s`).
//! This module only encodes, parses and verifies; the signing key lives in the HSM
//! (`kms::keystore`), and [`crate::auth`] decides what a valid token means.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sim_hsm::p256::ecdsa::signature::Verifier;
use sim_hsm::p256::ecdsa::{Signature, VerifyingKey};

use crate::auth::{AuthFailure, IdentityKind};
use crate::clock::Timestamp;
use crate::kms::ids::{ApiKeyId, IdentityId};

/// The `kid` header of every token: names the signing key (one per server).
pub const KEY_ID: &str = "kmsim-iam-1";

/// How far in the future a token's `iat` or `nbf` may lie (clocks of issuers and servers
/// differ slightly).
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(60);

/// Longest token accepted, in bytes (a kmsim token is about 400).
pub const MAX_TOKEN_LEN: usize = 4096;

/// The JOSE header.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Subject: the identity.
    pub sub: IdentityId,
    /// The identity's kind.
    pub kind: IdentityKind,
    /// The API key the token was exchanged for (deleting it revokes the token).
    pub akid: ApiKeyId,
    /// Issued at, in seconds since the epoch.
    pub iat: i64,
    /// Expires at, in seconds since the epoch.
    pub exp: i64,
    /// Not valid before, in seconds since the epoch (kmsim never issues it; honoured when
    /// present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Token id.
    pub jti: uuid::Uuid,
}

impl Claims {
    /// When the token expires.
    pub fn expiration(&self) -> Timestamp {
        Timestamp::from_millis(self.exp.saturating_mul(1000))
    }

    /// The earliest time the token is accepted: its `iat` or `nbf` (the later), less
    /// [`CLOCK_SKEW`]. A token issued in the future (by a simulated clock set ahead, or
    /// another server's) is refused until then.
    pub fn not_before(&self) -> Timestamp {
        let start = self.nbf.map_or(self.iat, |nbf| nbf.max(self.iat));
        let skew = i64::try_from(CLOCK_SKEW.as_secs()).unwrap_or(0);
        Timestamp::from_millis(start.saturating_sub(skew).saturating_mul(1000))
    }
}

/// The part of a token that is signed: `base64url(header).base64url(claims)`.
pub fn signing_input(claims: &Claims) -> String {
    let header = Header {
        alg: "ES256".to_owned(),
        typ: "JWT".to_owned(),
        kid: KEY_ID.to_owned(),
    };
    // Both values are plain strings and numbers: serialising them cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

/// A complete token from its signing input and 64-byte signature. The signature is
/// normalised to its low-S form, the only one [`parse`] accepts, so a token has exactly one
/// spelling.
pub fn assemble(signing_input: &str, signature: &[u8]) -> String {
    let encoded = match Signature::from_slice(signature) {
        Ok(signature) => URL_SAFE_NO_PAD.encode(signature.normalize_s().to_bytes()),
        // Not an ES256 signature: nothing to normalise (and no verifier will accept it).
        Err(_) => URL_SAFE_NO_PAD.encode(signature),
    };
    format!("{signing_input}.{encoded}")
}

/// A token split and decoded, not yet verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    signing_input: &'a str,
    signature: Signature,
    /// The claims (unverified until [`Parsed::verify`] succeeds).
    pub claims: Claims,
}

/// Splits and decodes a token. Anything that is not an ES256 JWT with kmsim claims is
/// [`AuthFailure::Malformed`]; a signature of the wrong shape is [`AuthFailure::BadSignature`].
pub fn parse(token: &str) -> Result<Parsed<'_>, AuthFailure> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthFailure::Malformed);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(AuthFailure::Malformed)?;
    let (header, claims) = signing_input
        .split_once('.')
        .ok_or(AuthFailure::Malformed)?;
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| AuthFailure::Malformed)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| AuthFailure::Malformed)?;
    if header.alg != "ES256" || header.kid != KEY_ID {
        return Err(AuthFailure::Malformed);
    }
    let claims: Claims =
        serde_json::from_slice(&decode(claims)?).map_err(|_| AuthFailure::Malformed)?;
    let signature =
        Signature::from_slice(&decode(signature)?).map_err(|_| AuthFailure::BadSignature)?;
    // (r, n - s) verifies as well as (r, s): accept the low-S form only, so the same token
    // cannot be spelled twice (the cache keys on the text).
    if signature.normalize_s() != signature {
        return Err(AuthFailure::BadSignature);
    }
    Ok(Parsed {
        signing_input,
        signature,
        claims,
    })
}

impl Parsed<'_> {
    /// Checks the signature with the server's public key.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), AuthFailure> {
        key.verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| AuthFailure::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sim_hsm::p256::ecdsa::SigningKey;
    use sim_hsm::p256::ecdsa::signature::Signer;

    fn claims() -> Claims {
        Claims {
            sub: IdentityId::from_uuid(uuid::Uuid::new_v4()),
            kind: IdentityKind::User,
            akid: ApiKeyId::from_uuid(uuid::Uuid::new_v4()),
            iat: 1_000,
            exp: 4_600,
            nbf: None,
            jti: uuid::Uuid::new_v4(),
        }
    }

    fn sign(key: &SigningKey, claims: &Claims) -> String {
        let input = signing_input(claims);
        let signature: Signature = key.sign(input.as_bytes());
        assemble(&input, &signature.to_bytes())
    }

    #[test]
    fn round_trip_and_tampering() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let verifying = VerifyingKey::from(&key);
        let claims = claims();
        let token = sign(&key, &claims);
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.claims, claims);
        parsed.verify(&verifying).unwrap();

        // Another key's signature.
        let other = SigningKey::from_slice(&[8u8; 32]).unwrap();
        let forged = sign(&other, &claims);
        assert_eq!(
            parse(&forged).unwrap().verify(&verifying),
            Err(AuthFailure::BadSignature)
        );

        // A tampered payload with the original signature.
        let mut changed = claims.clone();
        changed.exp += 1;
        let (_, signature) = token.rsplit_once('.').unwrap();
        let tampered = format!("{}.{signature}", signing_input(&changed));
        assert_eq!(
            parse(&tampered).unwrap().verify(&verifying),
            Err(AuthFailure::BadSignature)
        );
    }

    #[test]
    fn only_low_s_signatures_are_accepted() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let verifying = VerifyingKey::from(&key);
        // Sign until one raw signature is high-S (about half are), then check that
        // `assemble` normalises it and that its high-S twin is refused.
        let (input, high) = (0..64)
            .find_map(|_| {
                let input = signing_input(&claims());
                let signature: Signature = key.sign(input.as_bytes());
                (signature.normalize_s() != signature).then_some((input, signature))
            })
            .expect("some signature is high-S");
        let token = assemble(&input, &high.to_bytes());
        parse(&token).unwrap().verify(&verifying).unwrap();
        let twin = format!("{input}.{}", URL_SAFE_NO_PAD.encode(high.to_bytes()));
        assert!(
            verifying.verify(input.as_bytes(), &high).is_ok(),
            "the high-S form is mathematically valid"
        );
        assert_eq!(parse(&twin).err(), Some(AuthFailure::BadSignature));
    }

    #[test]
    fn not_before_is_the_later_of_iat_and_nbf_less_the_skew() {
        let mut claims = claims();
        assert_eq!(
            claims.not_before(),
            Timestamp::from_millis((1_000 - 60) * 1000)
        );
        claims.nbf = Some(2_000);
        assert_eq!(
            claims.not_before(),
            Timestamp::from_millis((2_000 - 60) * 1000)
        );
        claims.nbf = Some(10);
        assert_eq!(
            claims.not_before(),
            Timestamp::from_millis((1_000 - 60) * 1000)
        );
    }

    #[test]
    fn malformed_tokens() {
        for token in ["", "abc", "a.b", "a.b.c", "kmsim-dev-token"] {
            assert_eq!(parse(token).err(), Some(AuthFailure::Malformed), "{token}");
        }
    }
}
