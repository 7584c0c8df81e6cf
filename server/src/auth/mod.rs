//! Authentication: who is calling. Bearer tokens ([`token`]: ES256 JWTs signed by a key in
//! the HSM), the verified-token cache ([`cache`]), the [`Authenticator`] that turns an
//! `authorization` header into an [`Identity`], and the tower layer ([`layer`]) that runs it
//! for every RPC and puts the identity into the request extensions. What an identity may do
//! is decided elsewhere, in one place: `kms::iam`.

pub mod cache;
pub mod layer;
pub mod token;

use sim_hsm::p256::ecdsa::VerifyingKey;

use crate::clock::Timestamp;
use crate::kms::ids::{ApiKeyId, IdentityId};
use cache::{CachedToken, TokenCache};

/// The fixed development token, accepted only when the server runs with `--dev` (or from
/// [`crate::Config::ephemeral`]); it acts as the bootstrap admin identity.
pub const DEV_TOKEN: &str = "kmsim-dev-token";

/// What kind of identity calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// A person or tool; acts through access policies.
    User,
    /// A service; acts only through service-to-service authorizations.
    Service,
}

/// The authenticated caller, as the auth layer puts it into the request extensions and the
/// edge passes it to the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The identity's id.
    pub id: IdentityId,
    /// User or service.
    pub kind: IdentityKind,
}

/// Why a caller could not be authenticated. Each maps to `UNAUTHENTICATED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No `authorization` metadata.
    #[error("the request carries no bearer token")]
    Missing,
    /// The metadata is not `Bearer <token>`, or the token is not a kmsim JWT.
    #[error("the bearer token cannot be parsed")]
    Malformed,
    /// The signature does not verify with the server's key (forged or tampered).
    #[error("the bearer token's signature is invalid")]
    BadSignature,
    /// The token has expired.
    #[error("the bearer token has expired")]
    Expired,
    /// The token's `iat` or `nbf` lies in the future by the server's clock (beyond the
    /// allowed skew).
    #[error("the bearer token is not valid yet")]
    NotYetValid,
    /// The token's API key or identity has been deleted.
    #[error("the bearer token has been revoked")]
    Revoked,
    /// The development token was sent to a server not running with `--dev`.
    #[error("the development token is accepted only by a server started with --dev")]
    DevTokenRefused,
    /// `CreateToken` with an API key that does not exist or does not match.
    #[error("the API key is not valid")]
    BadApiKey,
}

impl AuthFailure {
    /// A short stable name, sent in the `ErrorInfo` metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
            Self::DevTokenRefused => "dev_token_refused",
            Self::BadApiKey => "bad_api_key",
        }
    }
}

/// What the authenticator needs to know about live credentials (implemented by the IAM
/// state): revocation is checked on every request, cached or not.
pub trait Credentials {
    /// The identity if it still exists and `api_key` is still one of its keys.
    fn live_identity(&self, identity: IdentityId, api_key: ApiKeyId) -> Option<Identity>;
    /// The bootstrap admin identity (what the development token acts as).
    fn bootstrap_admin(&self) -> Option<Identity>;
}

/// Turns `authorization` metadata into an [`Identity`]: verifies the token's signature once
/// (then caches it), its expiry by the server's clock, and its revocation.
#[derive(Debug)]
pub struct Authenticator {
    /// Replaced when the HSM's wipe forces a new signing key.
    verifying: std::sync::RwLock<VerifyingKey>,
    cache: TokenCache,
    dev_token: bool,
}

impl Authenticator {
    /// Verifies with `verifying` (the public half of the HSM signing key); accepts
    /// [`DEV_TOKEN`] only when `dev_token`.
    pub fn new(verifying: VerifyingKey, dev_token: bool) -> Self {
        Self {
            verifying: std::sync::RwLock::new(verifying),
            cache: TokenCache::new(cache::DEFAULT_CAPACITY),
            dev_token,
        }
    }

    fn verifying_key(&self) -> VerifyingKey {
        *self
            .verifying
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Verifies with a new key from now on: every token signed by the old one stops working
    /// (the cache is emptied too).
    pub fn rekey(&self, verifying: VerifyingKey) {
        *self
            .verifying
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = verifying;
        self.cache.clear();
    }

    /// The verified-token cache.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Authenticates the value of the `authorization` metadata (`None` when absent).
    pub fn authenticate(
        &self,
        header: Option<&[u8]>,
        now: Timestamp,
        credentials: &impl Credentials,
    ) -> Result<Identity, AuthFailure> {
        let header = header.ok_or(AuthFailure::Missing)?;
        let token = bearer(header)?;
        if token == DEV_TOKEN {
            return if self.dev_token {
                credentials.bootstrap_admin().ok_or(AuthFailure::Revoked)
            } else {
                Err(AuthFailure::DevTokenRefused)
            };
        }
        let digest = cache::digest(token);
        let entry = match self.cache.get(&digest) {
            Some(entry) => entry,
            None => {
                let parsed = token::parse(token)?;
                parsed.verify(&self.verifying_key())?;
                let entry = CachedToken {
                    subject: parsed.claims.sub,
                    api_key: parsed.claims.akid,
                    expires: parsed.claims.expiration(),
                    not_before: parsed.claims.not_before(),
                };
                self.cache.insert(digest, entry, now);
                entry
            }
        };
        if now >= entry.expires {
            return Err(AuthFailure::Expired);
        }
        if now < entry.not_before {
            return Err(AuthFailure::NotYetValid);
        }
        credentials
            .live_identity(entry.subject, entry.api_key)
            .ok_or(AuthFailure::Revoked)
    }

    /// Checks `token` without the cache (benchmarks compare both paths).
    pub fn verify_uncached(&self, token: &str) -> Result<token::Claims, AuthFailure> {
        let parsed = token::parse(token)?;
        parsed.verify(&self.verifying_key())?;
        Ok(parsed.claims)
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(header: &[u8]) -> Result<&str, AuthFailure> {
    let text = std::str::from_utf8(header).map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}
