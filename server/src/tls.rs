//! TLS and mutual TLS of the gRPC listener (rustls through tonic): loading the server's
//! certificate chain and key and the client CA from PEM files (every error names its file),
//! and the self-signed development certificate that `--dev-tls` creates in the data directory.
//!
//! mTLS authenticates the *channel* only: with a client CA configured, a client must present a
//! certificate that CA signed, or the handshake fails; the caller's identity (and so every
//! permission) still comes from its bearer token. A certificate's subject is not mapped to an
//! identity.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use zeroize::Zeroizing;

/// Why the TLS settings could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The files are not a usable certificate chain, private key or CA certificate.
    #[error("TLS files {files} are not usable PEM certificates and key: {reason}")]
    Unusable {
        /// The files involved.
        files: String,
        /// What rustls said.
        reason: String,
    },
    /// The development certificate could not be generated.
    #[error("cannot generate the development certificate: {0}")]
    Generate(String),
}

/// The default time a client has to finish its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A loaded, validated TLS configuration for the listener.
#[derive(Clone)]
pub struct TlsSettings {
    cert_pem: Vec<u8>,
    key_pem: Zeroizing<Vec<u8>>,
    client_ca_pem: Option<Vec<u8>>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("TlsSettings")
            .field("mutual", &self.client_ca_pem.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads the server certificate chain, its private key and (for mTLS) the CA that signs
    /// client certificates, and checks that rustls accepts them.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = Zeroizing::new(read(key)?);
        let client_ca_pem = client_ca.map(read).transpose()?;
        let mut files = format!("{} and {}", cert.display(), key.display());
        if let Some(ca) = client_ca {
            files = format!("{files} (client CA {})", ca.display());
        }
        Self::from_pem(cert_pem, key_pem, client_ca_pem).map_err(|reason| match reason {
            TlsError::Unusable { reason, .. } => TlsError::Unusable { files, reason },
            other => other,
        })
    }

    /// Builds the settings from PEM text, checking that rustls accepts them.
    pub fn from_pem(
        cert_pem: Vec<u8>,
        key_pem: Zeroizing<Vec<u8>>,
        client_ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, TlsError> {
        let settings = Self {
            cert_pem,
            key_pem,
            client_ca_pem,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        };
        // tonic parses the PEM only when the acceptor is built: build one now, so a bad file
        // fails at start-up with its name rather than when serving.
        tonic::transport::Server::builder()
            .tls_config(settings.server_config())
            .map_err(|error| TlsError::Unusable {
                files: "given as PEM".to_owned(),
                reason: describe(&error),
            })?;
        Ok(settings)
    }

    /// Sets how long a client has to finish its TLS handshake before the connection is closed.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Whether clients must present a certificate signed by the client CA.
    pub fn is_mutual(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    /// tonic's server TLS configuration.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, self.key_pem.as_slice()))
            .timeout(self.handshake_timeout);
        match &self.client_ca_pem {
            // A client certificate is required (tonic's default with a CA root).
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}

/// The source chain of an error, on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The development certificate's file in the data directory (`--dev-tls`).
pub const DEV_CERT_FILE: &str = "dev-tls-cert.pem";
/// The development certificate's private key in the data directory (mode 0600).
pub const DEV_KEY_FILE: &str = "dev-tls-key.pem";

/// Reuses, or creates, a self-signed certificate for `localhost`, `127.0.0.1` and `::1` in
/// `dir` (`dev-tls-cert.pem`, and `dev-tls-key.pem` readable by its owner only). Clients trust
/// it by using the certificate file as their CA (`grpcurl -cacert`). Returns both paths.
pub fn dev_certificate(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join(DEV_CERT_FILE);
    let key = dir.join(DEV_KEY_FILE);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let generated = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(|error| TlsError::Generate(error.to_string()))?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    for stale in [&cert, &key] {
        match std::fs::remove_file(stale) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(stale)(error)),
        }
    }
    let key_pem = Zeroizing::new(generated.signing_key.serialize_pem());
    crate::config::write_private(&key, key_pem.as_bytes()).map_err(io(&key))?;
    std::fs::write(&cert, generated.cert.pem()).map_err(io(&cert))?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn dev_certificate_is_created_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = dev_certificate(dir.path()).unwrap();
        let first = std::fs::read(&cert).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the key is private");
        }
        let (again, _) = dev_certificate(dir.path()).unwrap();
        assert_eq!(std::fs::read(again).unwrap(), first, "reused, not replaced");
        let settings = TlsSettings::load(&cert, &key, Some(&cert)).unwrap();
        assert!(settings.is_mutual());
        assert!(!format!("{settings:?}").contains("PRIVATE"));
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let error = TlsSettings::load(&cert, &key, None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cert.pem") && error.contains("key.pem"),
            "{error}"
        );
        let missing = dir.path().join("missing.pem");
        let error = TlsSettings::load(&missing, &key, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }
}
