//! [`KmsClientBuilder`]: how a [`KmsClient`] is configured before it connects: transport
//! security (rustls: a CA file or the system's roots, a client certificate for mutual TLS; an
//! `https` endpoint is never spoken to in plaintext), credentials (a static bearer token or an
//! API key exchanged for refreshed tokens), connect and per-call timeouts, and the retry
//! policy.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use zeroize::Zeroizing;

use crate::client::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_REQUEST_TIMEOUT, KmsClient,
};
use crate::credentials::{
    ApiKeyTokens, BearerAuth, DEFAULT_REFRESH_FRACTION, DEFAULT_TOKEN_LIFETIME, ServerClock,
    SystemServerClock,
};
use crate::error::ClientError;
use crate::retry::RetryPolicy;

enum Credentials {
    None,
    Bearer(Zeroizing<String>),
    ApiKey(Zeroizing<String>),
}

/// Configures and connects a [`KmsClient`]; from [`KmsClient::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use kmsim_client::KmsClient;
///
/// # async fn example() -> Result<(), kmsim_client::ClientError> {
/// let client = KmsClient::builder("https://kms.example:7070")
///     .ca_certificate_file("ca.pem")?
///     .client_identity_files("client.pem", "client.key")?
///     .api_key(std::env::var("KMSIM_API_KEY").unwrap_or_default())
///     .request_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct KmsClientBuilder {
    uri: String,
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    tls_domain: Option<String>,
    credentials: Credentials,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry: RetryPolicy,
    token_lifetime: Duration,
    refresh_fraction: f64,
    server_clock: Arc<dyn ServerClock>,
}

impl fmt::Debug for KmsClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsClientBuilder")
            .field("uri", &self.uri)
            .field("custom_ca", &self.ca.is_some())
            .field("client_identity", &self.identity.is_some())
            .field("tls_domain", &self.tls_domain)
            .field(
                "credentials",
                &match self.credentials {
                    Credentials::None => "none",
                    Credentials::Bearer(_) => "bearer <redacted>",
                    Credentials::ApiKey(_) => "API key <redacted>",
                },
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

impl KmsClientBuilder {
    pub(crate) fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            ca: None,
            identity: None,
            tls_domain: None,
            credentials: Credentials::None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry: RetryPolicy::default(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            refresh_fraction: DEFAULT_REFRESH_FRACTION,
            server_clock: Arc::new(SystemServerClock),
        }
    }

    /// Trusts only this CA (PEM) for the server's certificate, instead of the system's roots.
    #[must_use]
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// Trusts only the CA in this PEM file.
    ///
    /// # Errors
    /// [`ClientError::ReadFile`].
    pub fn ca_certificate_file(self, path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let pem = read_file(path.as_ref())?;
        Ok(self.ca_certificate_pem(pem))
    }

    /// Presents this certificate chain and private key (PEM) to the server (mutual TLS).
    #[must_use]
    pub fn client_identity_pem(
        mut self,
        certificate: impl Into<Vec<u8>>,
        private_key: Zeroizing<Vec<u8>>,
    ) -> Self {
        self.identity = Some((certificate.into(), private_key));
        self
    }

    /// Presents the certificate chain and private key in these PEM files (mutual TLS).
    ///
    /// # Errors
    /// [`ClientError::ReadFile`].
    pub fn client_identity_files(
        self,
        certificate: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<Self, ClientError> {
        let certificate = read_file(certificate.as_ref())?;
        let private_key = Zeroizing::new(read_file(private_key.as_ref())?);
        Ok(self.client_identity_pem(certificate, private_key))
    }

    /// Checks the server's certificate for this name instead of the endpoint's host.
    #[must_use]
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.tls_domain = Some(name.into());
        self
    }

    /// Sends this static bearer token with every call.
    #[must_use]
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Credentials::Bearer(Zeroizing::new(token.into()));
        self
    }

    /// Exchanges this API key for bearer tokens (`IamService/CreateToken`), and again once a
    /// token has lived [`token_refresh_fraction`](Self::token_refresh_fraction) of the
    /// lifetime the server stated, or when the server refuses it as expired.
    #[must_use]
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.credentials = Credentials::ApiKey(Zeroizing::new(api_key.into()));
        self
    }

    /// The token lifetime asked for when exchanging the API key (60 s ..= 1 day; default 1 h).
    #[must_use]
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// The fraction of a token's lifetime after which it is refreshed (default 0.8).
    #[must_use]
    pub fn token_refresh_fraction(mut self, fraction: f64) -> Self {
        self.refresh_fraction = fraction;
        self
    }

    /// Reads the server's time from `clock` when judging a token's age (default: this
    /// machine's clock; a simulated server's tests pass its simulated clock).
    #[must_use]
    pub fn server_clock(mut self, clock: Arc<dyn ServerClock>) -> Self {
        self.server_clock = clock;
        self
    }

    /// Time allowed to establish the connection (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for each attempt of a call (default 30 s); the retry policy's budget
    /// bounds all attempts together.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How failed idempotent calls are retried (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The tonic endpoint: URI, timeouts, keep-alives and, for `https`, TLS.
    fn endpoint(&self) -> Result<Endpoint, ClientError> {
        let endpoint = Endpoint::from_shared(self.uri.clone())
            .map_err(ClientError::InvalidEndpoint)?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(DEFAULT_KEEP_ALIVE))
            .http2_keep_alive_interval(DEFAULT_KEEP_ALIVE)
            .keep_alive_timeout(Duration::from_secs(10));
        let tls_options = self.ca.is_some() || self.identity.is_some() || self.tls_domain.is_some();
        match endpoint.uri().scheme_str() {
            Some("https") => {
                let mut tls = ClientTlsConfig::new();
                tls = match &self.ca {
                    Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                    None => tls.with_native_roots(),
                };
                if let Some((certificate, key)) = &self.identity {
                    tls = tls.identity(Identity::from_pem(certificate, key.as_slice()));
                }
                if let Some(domain) = &self.tls_domain {
                    tls = tls.domain_name(domain.clone());
                }
                endpoint.tls_config(tls).map_err(ClientError::Tls)
            }
            Some("http") if tls_options => Err(ClientError::TlsOptionsWithoutHttps),
            Some("http") => Ok(endpoint),
            _ => Err(ClientError::UnsupportedScheme(self.uri.clone())),
        }
    }

    fn finish(self, channel: Channel) -> Result<KmsClient, ClientError> {
        let auth = match self.credentials {
            Credentials::None => BearerAuth::default(),
            Credentials::Bearer(token) => BearerAuth::new(&token)?,
            Credentials::ApiKey(api_key) => BearerAuth::api_key(ApiKeyTokens::new(
                api_key,
                channel.clone(),
                self.token_lifetime,
                self.refresh_fraction,
                self.server_clock,
            )),
        };
        Ok(KmsClient::assemble(channel, auth, Arc::new(self.retry)))
    }

    /// Connects now; with an API key, also exchanges it for a first token, so a wrong key
    /// fails here.
    ///
    /// # Errors
    /// [`ClientError::InvalidEndpoint`], [`ClientError::UnsupportedScheme`],
    /// [`ClientError::TlsOptionsWithoutHttps`], [`ClientError::Tls`], [`ClientError::Connect`]
    /// (including a failed TLS handshake), or the token exchange's error.
    pub async fn connect(self) -> Result<KmsClient, ClientError> {
        let channel = self
            .endpoint()?
            .connect()
            .await
            .map_err(ClientError::Connect)?;
        let client = self.finish(channel)?;
        client.interceptor().ensure_fresh().await?;
        Ok(client)
    }

    /// A client that connects on first use (and reconnects as needed); connection failures
    /// then surface as `UNAVAILABLE` call errors.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), except connection and token failures.
    pub fn connect_lazy(self) -> Result<KmsClient, ClientError> {
        let channel = self.endpoint()?.connect_lazy();
        self.finish(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schemes_and_tls_options_are_checked() {
        assert!(matches!(
            KmsClientBuilder::new("ftp://host:1").connect_lazy(),
            Err(ClientError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            KmsClientBuilder::new("http://host:1")
                .tls_domain("kms")
                .connect_lazy(),
            Err(ClientError::TlsOptionsWithoutHttps)
        ));
        assert!(matches!(
            KmsClientBuilder::new("not a uri").connect_lazy(),
            Err(ClientError::InvalidEndpoint(_))
        ));
        assert!(
            KmsClientBuilder::new("http://host:1")
                .connect_lazy()
                .is_ok()
        );
        assert!(
            KmsClientBuilder::new("https://host:1")
                .connect_lazy()
                .is_ok()
        );
    }

    #[test]
    fn missing_files_are_named() {
        let err = KmsClientBuilder::new("https://host:1")
            .ca_certificate_file("/no/such/ca.pem")
            .unwrap_err();
        assert!(err.to_string().contains("/no/such/ca.pem"), "{err}");
    }

    #[test]
    fn debug_hides_credentials() {
        let b = KmsClientBuilder::new("http://host:1").api_key("secret-api-key");
        assert!(!format!("{b:?}").contains("secret-api-key"));
    }
}
