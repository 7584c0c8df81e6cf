//! [`ClientError`], the error of every [`KmsClient`](crate::KmsClient) call. A server-side
//! failure keeps the whole `tonic::Status` and its decoded `google.rpc` details
//! (`ErrorInfo`, `BadRequest`, `RetryInfo`; see `proto/kmsim/v1/errors.proto`), so callers can
//! match on the typed Key Protect reason ([`Reason`], such as [`Reason::KeyNotFound`]).

use std::time::Duration;

use kmsim_proto::Reason;
use tonic::Code;
use tonic_types::{ErrorDetails, ErrorInfo, FieldViolation, StatusExt};

use crate::secure_import::SecureImportError;

/// The `ErrorInfo.domain` of every kmsim error.
pub const ERROR_DOMAIN: &str = "kmsim";

/// A failed gRPC call: the status and its decoded error details.
#[derive(Debug)]
pub struct RpcError {
    status: tonic::Status,
    details: ErrorDetails,
}

impl RpcError {
    /// Decodes the `google.rpc` details carried by `status`. Undecodable details are ignored
    /// (the status itself is kept).
    pub fn new(status: tonic::Status) -> Self {
        let details = status.get_error_details();
        Self { status, details }
    }

    /// The status as received.
    pub fn status(&self) -> &tonic::Status {
        &self.status
    }

    /// The decoded error details.
    pub fn details(&self) -> &ErrorDetails {
        &self.details
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.status.code())?;
        if let Some(info) = self.details.error_info() {
            write!(f, " ({})", info.reason)?;
        }
        write!(f, ": {}", self.status.message())
    }
}

/// The error of a [`KmsClient`](crate::KmsClient) call.
///
/// Whatever the variant, [`code`](Self::code) gives a gRPC code, so callers can treat local
/// and remote failures alike; [`reason`](Self::reason), [`field_violations`](Self::field_violations)
/// and [`retry_delay`](Self::retry_delay) read the server's error details.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint URI is malformed.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(#[source] tonic::transport::Error),
    /// The connection could not be established.
    #[error("cannot connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// The bearer token cannot be sent as a gRPC metadata value (it must be visible ASCII).
    #[error("the bearer token is not valid ASCII metadata")]
    InvalidBearerToken,
    /// The server answered with a non-OK status.
    #[error("{0}")]
    Rpc(Box<RpcError>),
    /// The server's answer lacks a field the contract promises, or is otherwise unusable.
    #[error("malformed response from the server: {0}")]
    MalformedResponse(&'static str),
    /// The endpoint's scheme is neither `http` nor `https`.
    #[error("unsupported endpoint scheme (use http:// or https://): {0}")]
    UnsupportedScheme(String),
    /// TLS options were given for a plaintext `http` endpoint: use `https` to get TLS.
    #[error("TLS options were given for an http:// endpoint; use https://")]
    TlsOptionsWithoutHttps,
    /// The TLS configuration was refused (for example an unparsable certificate or key).
    #[error("invalid TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// A certificate, key or other input file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Material could not be sealed for an import token.
    #[error("secure import: {0}")]
    SecureImport(#[from] SecureImportError),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Rpc(Box::new(RpcError::new(status)))
    }
}

impl ClientError {
    /// The gRPC status code: the server's for [`ClientError::Rpc`], otherwise the code that
    /// best describes the local failure (`Unavailable` for a connection failure,
    /// `InvalidArgument` for bad input, `Internal` for a malformed response).
    pub fn code(&self) -> Code {
        match self {
            Self::Rpc(e) => e.status.code(),
            Self::Connect(_) => Code::Unavailable,
            Self::InvalidEndpoint(_)
            | Self::InvalidBearerToken
            | Self::SecureImport(_)
            | Self::UnsupportedScheme(_)
            | Self::TlsOptionsWithoutHttps
            | Self::Tls(_)
            | Self::ReadFile { .. } => Code::InvalidArgument,
            Self::MalformedResponse(_) => Code::Internal,
        }
    }

    /// The server's status, for [`ClientError::Rpc`].
    pub fn status(&self) -> Option<&tonic::Status> {
        self.rpc().map(RpcError::status)
    }

    /// The status message, or for a local failure this error's description followed by its
    /// chain of causes (`cannot connect: transport error: tcp connect error: ...`).
    pub fn message(&self) -> String {
        match self {
            Self::Rpc(e) => e.status.message().to_owned(),
            other => {
                let mut message = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(cause) = source {
                    let cause_text = cause.to_string();
                    // Some errors repeat their source in their own message.
                    if !message.ends_with(&cause_text) {
                        message.push_str(": ");
                        message.push_str(&cause_text);
                    }
                    source = cause.source();
                }
                message
            }
        }
    }

    /// The `google.rpc.ErrorInfo` of a server error.
    pub fn error_info(&self) -> Option<&ErrorInfo> {
        self.rpc().and_then(|e| e.details.error_info())
    }

    /// The Key Protect reason (`ErrorInfo.reason`), e.g. [`Reason::KeyNotFound`]; `None`
    /// for a local failure, a status without `ErrorInfo`, or a code this version does not know
    /// (see [`reason_code`](Self::reason_code)).
    pub fn reason(&self) -> Option<Reason> {
        self.reason_code().and_then(Reason::parse)
    }

    /// The reason code as sent, e.g. `KEY_NOT_FOUND_ERR`.
    pub fn reason_code(&self) -> Option<&str> {
        self.error_info().map(|info| info.reason.as_str())
    }

    /// One entry of `ErrorInfo.metadata` (`http_status`, `key_id`, `instance_id`,
    /// `key_state`).
    pub fn metadata(&self, name: &str) -> Option<&str> {
        self.error_info()
            .and_then(|info| info.metadata.get(name))
            .map(String::as_str)
    }

    /// The HTTP status Key Protect would have answered with (`ErrorInfo.metadata.http_status`).
    pub fn http_status(&self) -> Option<u16> {
        self.metadata("http_status").and_then(|s| s.parse().ok())
    }

    /// The `google.rpc.BadRequest` field violations (empty if there are none).
    pub fn field_violations(&self) -> &[FieldViolation] {
        self.rpc()
            .and_then(|e| e.details.bad_request())
            .map_or(&[], |br| br.field_violations.as_slice())
    }

    /// How long to wait before the call can succeed (`google.rpc.RetryInfo`).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.rpc()
            .and_then(|e| e.details.retry_info())
            .and_then(|ri| ri.retry_delay)
    }

    fn rpc(&self) -> Option<&RpcError> {
        match self {
            Self::Rpc(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn details_are_decoded_from_the_status() {
        let mut details = ErrorDetails::with_error_info(
            "KEY_ROTATION_NOT_PERMITTED",
            ERROR_DOMAIN,
            HashMap::from([
                ("http_status".to_owned(), "409".to_owned()),
                ("key_id".to_owned(), "k1".to_owned()),
            ]),
        );
        details.set_retry_info(Some(Duration::from_secs(1800)));
        details.add_bad_request_violation("key", "rotated too recently");
        let status = tonic::Status::with_error_details(
            Code::FailedPrecondition,
            "key was rotated less than an hour ago",
            details,
        );
        let err = ClientError::from(status);
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(err.reason(), Some(Reason::KeyRotationNotPermitted));
        assert_eq!(err.reason_code(), Some("KEY_ROTATION_NOT_PERMITTED"));
        assert_eq!(err.http_status(), Some(409));
        assert_eq!(err.metadata("key_id"), Some("k1"));
        assert_eq!(err.retry_delay(), Some(Duration::from_secs(1800)));
        assert_eq!(err.field_violations().len(), 1);
        assert_eq!(err.field_violations()[0].field, "key");
        assert_eq!(err.message(), "key was rotated less than an hour ago");
        assert_eq!(
            err.to_string(),
            "FailedPrecondition (KEY_ROTATION_NOT_PERMITTED): key was rotated less than an hour ago"
        );
    }

    #[test]
    fn plain_status_has_no_details() {
        let err = ClientError::from(tonic::Status::unavailable("down"));
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(err.reason(), None);
        assert_eq!(err.http_status(), None);
        assert!(err.field_violations().is_empty());
        assert_eq!(err.retry_delay(), None);
        assert!(err.status().is_some());
    }

    #[test]
    fn local_errors_map_to_codes() {
        let err = ClientError::MalformedResponse("key");
        assert_eq!(err.code(), Code::Internal);
        assert!(err.status().is_none());
        assert_eq!(err.message(), "malformed response from the server: key");
        assert_eq!(
            ClientError::InvalidBearerToken.code(),
            Code::InvalidArgument
        );
    }
}
