//! The verified-token cache: ES256 verification costs tens of microseconds, far more than a
//! wrap, so a token whose signature verified once is remembered, keyed by the SHA-256 of the
//! token (never the token itself), for at most its lifetime. Expiry and revocation are still
//! checked on every hit by the [`Authenticator`](super::Authenticator), so the cache only
//! saves the signature check. Bounded: when full, expired entries go first, then everything.

use std::collections::HashMap;
use std::sync::RwLock;

use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::kms::ids::{ApiKeyId, IdentityId};

/// Default number of cached tokens.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The SHA-256 of a token: the cache key.
pub type TokenDigest = [u8; 32];

/// What a verified token asserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedToken {
    /// The identity.
    pub subject: IdentityId,
    /// The API key it was issued from.
    pub api_key: ApiKeyId,
    /// When it expires.
    pub expires: Timestamp,
    /// The earliest time it is accepted (`iat`/`nbf` less the allowed skew).
    pub not_before: Timestamp,
}

/// A bounded map from token digest to verified claims.
#[derive(Debug)]
pub struct TokenCache {
    entries: RwLock<HashMap<TokenDigest, CachedToken>>,
    capacity: usize,
}

/// The cache key of `token`.
pub fn digest(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(token.as_bytes()));
    out
}

impl TokenCache {
    /// An empty cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The verified claims of a token, if cached.
    pub fn get(&self, digest: &TokenDigest) -> Option<CachedToken> {
        crate::kms::read(&self.entries).get(digest).copied()
    }

    /// Remembers a verified token, making room first if the cache is full.
    pub fn insert(&self, digest: TokenDigest, entry: CachedToken, now: Timestamp) {
        let mut entries = crate::kms::write(&self.entries);
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest, entry);
    }

    /// Forgets every token of an API key (after it is deleted).
    pub fn forget_api_key(&self, api_key: ApiKeyId) {
        crate::kms::write(&self.entries).retain(|_, e| e.api_key != api_key);
    }

    /// Forgets every token of an identity (after it is deleted).
    pub fn forget_identity(&self, identity: IdentityId) {
        crate::kms::write(&self.entries).retain(|_, e| e.subject != identity);
    }

    /// Forgets every token (after the signing key changed).
    pub fn clear(&self) {
        crate::kms::write(&self.entries).clear();
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        crate::kms::read(&self.entries).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expires: i64) -> CachedToken {
        CachedToken {
            subject: IdentityId::from_uuid(uuid::Uuid::new_v4()),
            api_key: ApiKeyId::from_uuid(uuid::Uuid::new_v4()),
            expires: Timestamp::from_millis(expires),
            not_before: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn bounded_and_expired_first() {
        let cache = TokenCache::new(2);
        let now = Timestamp::from_millis(100);
        cache.insert(digest("a"), entry(50), now);
        cache.insert(digest("b"), entry(500), now);
        cache.insert(digest("c"), entry(500), now);
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(&digest("a")).is_none(),
            "the expired entry went first"
        );
        assert!(cache.get(&digest("b")).is_some());
        cache.insert(digest("d"), entry(500), now);
        assert!(cache.len() <= 2);
        assert!(cache.get(&digest("d")).is_some());
    }

    #[test]
    fn forgets_revoked_keys() {
        let cache = TokenCache::new(10);
        let e = entry(500);
        cache.insert(digest("a"), e, Timestamp::from_millis(0));
        cache.forget_api_key(e.api_key);
        assert!(cache.is_empty());
    }
}
