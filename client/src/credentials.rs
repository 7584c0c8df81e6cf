//! The credentials a [`KmsClient`](crate::KmsClient) sends: nothing, a static bearer token, or
//! an API key that is exchanged through `IamService/CreateToken` for a bearer token and
//! refreshed before it expires. [`BearerAuth`] is the tonic interceptor that puts the current
//! token in `authorization: Bearer <token>`; the refresh itself happens before a call starts
//! ([`BearerAuth::ensure_fresh`]), one refresh at a time however many callers wait for it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use kmsim_proto::v1::CreateTokenRequest;
use kmsim_proto::v1::iam_service_client::IamServiceClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::error::ClientError;

/// The lifetime the client asks for when it exchanges an API key (the server's default).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The fraction of a token's lifetime after which the client exchanges the API key again.
pub const DEFAULT_REFRESH_FRACTION: f64 = 0.8;

/// The time as the server's clock tells it, against which the expiry the server stated is
/// compared. The default is this machine's clock; a test against a server with a simulated
/// clock gives one that reads that clock.
pub trait ServerClock: Send + Sync + fmt::Debug {
    /// The server's current time.
    fn now(&self) -> SystemTime;
}

/// This machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemServerClock;

impl ServerClock for SystemServerClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

fn bearer_header(token: &str) -> Result<AsciiMetadataValue, ClientError> {
    let mut header: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| ClientError::InvalidBearerToken)?;
    header.set_sensitive(true);
    Ok(header)
}

/// A bearer token obtained from an API key, with the server-clock time to refresh it at.
struct IssuedToken {
    header: AsciiMetadataValue,
    refresh_at: SystemTime,
}

/// Exchanges an API key for tokens and keeps the current one.
pub(crate) struct ApiKeyTokens {
    api_key: Zeroizing<String>,
    iam: IamServiceClient<Channel>,
    lifetime: Duration,
    refresh_fraction: f64,
    clock: Arc<dyn ServerClock>,
    current: RwLock<Option<IssuedToken>>,
    refreshing: tokio::sync::Mutex<()>,
    refreshes: AtomicU64,
}

impl ApiKeyTokens {
    pub(crate) fn new(
        api_key: Zeroizing<String>,
        channel: Channel,
        lifetime: Duration,
        refresh_fraction: f64,
        clock: Arc<dyn ServerClock>,
    ) -> Self {
        Self {
            api_key,
            iam: IamServiceClient::new(channel),
            lifetime,
            refresh_fraction: refresh_fraction.clamp(0.0, 1.0),
            clock,
            current: RwLock::new(None),
            refreshes: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn header(&self) -> Option<AsciiMetadataValue> {
        // A poisoned lock still holds a whole `Option` (it is only ever replaced whole).
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|t| t.header.clone())
    }

    fn is_fresh(&self) -> bool {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .is_some_and(|t| self.clock.now() < t.refresh_at)
    }

    /// Makes sure a token that is not due for refresh is held: exchanges the API key when
    /// none is, or when the held one has passed its refresh point. Concurrent callers wait
    /// for one exchange.
    async fn ensure_fresh(&self) -> Result<(), ClientError> {
        if self.is_fresh() {
            return Ok(());
        }
        let _one_at_a_time = self.refreshing.lock().await;
        if self.is_fresh() {
            return Ok(());
        }
        self.exchange().await
    }

    /// Forgets the held token if it is still `rejected` (the server refused it), so the next
    /// call exchanges the API key again.
    fn invalidate(&self, rejected: &AsciiMetadataValue) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|t| t.header == *rejected) {
            *current = None;
        }
    }

    async fn exchange(&self) -> Result<(), ClientError> {
        let seconds = i32::try_from(self.lifetime.as_secs()).unwrap_or(i32::MAX);
        let request = CreateTokenRequest {
            api_key: self.api_key.as_str().to_owned(),
            expires_in_seconds: seconds,
        };
        let requested_at = self.clock.now();
        let response = self.iam.clone().create_token(request).await?.into_inner();
        let token = Zeroizing::new(response.access_token);
        let header = bearer_header(&token)?;
        let expires_at = response
            .expiration_time
            .and_then(|t| SystemTime::try_from(t).ok())
            .ok_or(ClientError::MalformedResponse("expiration_time"))?;
        // The lifetime by the server's statement: from our reading of its clock when we
        // asked to the expiry it stated. A clock that disagrees with the server (a negative
        // or longer-than-asked span) falls back to the lifetime asked for.
        let stated = expires_at
            .duration_since(requested_at)
            .ok()
            .filter(|d| !d.is_zero() && *d <= self.lifetime)
            .unwrap_or(self.lifetime);
        let refresh_at = requested_at + stated.mul_f64(self.refresh_fraction);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
            Some(IssuedToken { header, refresh_at });
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Clone)]
enum Source {
    None,
    Static(AsciiMetadataValue),
    ApiKey(Arc<ApiKeyTokens>),
}

/// A tonic interceptor that adds `authorization: Bearer <token>` to every request when
/// credentials are set. Tokens are marked sensitive and never printed by `Debug`.
#[derive(Clone)]
pub struct BearerAuth {
    source: Source,
}

impl Default for BearerAuth {
    fn default() -> Self {
        Self {
            source: Source::None,
        }
    }
}

impl BearerAuth {
    /// An interceptor that sends the static `token`.
    ///
    /// # Errors
    /// [`ClientError::InvalidBearerToken`] if the header value would not be visible ASCII.
    pub fn new(token: &str) -> Result<Self, ClientError> {
        Ok(Self {
            source: Source::Static(bearer_header(token)?),
        })
    }

    pub(crate) fn api_key(tokens: ApiKeyTokens) -> Self {
        Self {
            source: Source::ApiKey(Arc::new(tokens)),
        }
    }

    /// True when credentials are set.
    pub fn is_set(&self) -> bool {
        !matches!(self.source, Source::None)
    }

    /// How many times the API key was exchanged for a token (0 for other credentials).
    pub fn token_exchanges(&self) -> u64 {
        match &self.source {
            Source::ApiKey(tokens) => tokens.refreshes.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Before a call: for API-key credentials, exchanges the key for a token when none is
    /// held or the held one has passed its refresh point (one exchange for all waiting
    /// callers). Nothing to do for other credentials.
    ///
    /// # Errors
    /// The exchange's failure, with the code the server gave it.
    pub async fn ensure_fresh(&self) -> Result<(), ClientError> {
        match &self.source {
            Source::ApiKey(tokens) => tokens.ensure_fresh().await,
            _ => Ok(()),
        }
    }

    /// The header the next request will carry (for API-key credentials, the current token).
    pub(crate) fn current(&self) -> Option<AsciiMetadataValue> {
        match &self.source {
            Source::None => None,
            Source::Static(header) => Some(header.clone()),
            Source::ApiKey(tokens) => tokens.header(),
        }
    }

    /// After the server refused `sent` as unauthenticated: true when a new token can be
    /// obtained (API-key credentials), after forgetting `sent`.
    pub(crate) fn reject(&self, sent: Option<&AsciiMetadataValue>) -> bool {
        match (&self.source, sent) {
            (Source::ApiKey(tokens), Some(sent)) => {
                tokens.invalidate(sent);
                true
            }
            (Source::ApiKey(_), None) => true,
            _ => false,
        }
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.source {
            Source::None => "none",
            Source::Static(_) => "static token <redacted>",
            Source::ApiKey(_) => "API key <redacted>",
        };
        f.debug_struct("BearerAuth")
            .field("credentials", &kind)
            .finish()
    }
}

impl Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = self.current() {
            request.metadata_mut().insert("authorization", header);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interceptor_adds_the_bearer_header_only_when_set() {
        let mut none = BearerAuth::default();
        let request = none.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        assert!(!none.is_set());

        let mut auth = BearerAuth::new("abc.def-ghi").unwrap();
        let request = auth.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer abc.def-ghi"
        );
        assert!(!format!("{auth:?}").contains("abc"));
        assert!(!auth.reject(auth.current().as_ref()));
    }

    #[test]
    fn invalid_token_is_refused() {
        assert!(matches!(
            BearerAuth::new("line\nbreak"),
            Err(ClientError::InvalidBearerToken)
        ));
    }
}
