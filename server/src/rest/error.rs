//! Every way a REST call can fail ([`RestError`]): the domain's [`KmsError`] plus the failures
//! only HTTP has (body, media type, query, headers), each with its HTTP status and Key
//! Protect reason code, and the one rendering of Key Protect's error body
//! (`application/vnd.ibm.kms.error+json`) with `Retry-After` where a wait is known.

use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{ERROR_DOMAIN, KmsError};

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestError {
    /// The domain refused or failed the call (its own status and reason).
    #[error("{0}")]
    Kms(#[from] KmsError),
    /// The call needs a body and has none.
    #[error("the request needs a JSON body")]
    NoBody,
    /// The body is not the JSON the call expects.
    #[error("the body is malformed: {0}")]
    BadBody(String),
    /// `metadata.collectionTotal` differs from the number of resources.
    #[error("metadata.collectionTotal must equal the number of resources")]
    CollectionTotalMismatch,
    /// A query parameter is malformed.
    #[error("the query_param '{name}' must be: {must}")]
    InvalidQueryParam {
        /// The parameter.
        name: &'static str,
        /// What it must be.
        must: &'static str,
    },
    /// A required header is missing or malformed.
    #[error("the header '{name}' must be: {must}")]
    InvalidHeader {
        /// The header.
        name: &'static str,
        /// What it must be.
        must: &'static str,
    },
    /// The key ring named by `X-Kms-Key-Ring` does not exist (kmsim has `default` only).
    #[error("key ring not found (kmsim serves the 'default' key ring only)")]
    KeyRingNotFound,
    /// A `Content-Type` other than JSON or a Key Protect vendor JSON type.
    #[error("the Content-Type must be application/json or application/vnd.ibm.kms.*+json")]
    UnsupportedMediaType,
    /// A body larger than the facade reads.
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The worker running the domain call stopped unexpectedly.
    #[error("the request's worker stopped unexpectedly")]
    WorkerStopped,
    /// A feature of Key Protect's API this facade does not serve.
    #[error("{0} is not supported by kmsim's REST facade")]
    Unsupported(&'static str),
}

/// The status, reason, HTTP status and message of a failure, as both the REST answer and
/// the audit event use them.
#[derive(Debug, Clone)]
pub struct Classified {
    /// The gRPC code the same failure has over gRPC.
    pub code: Code,
    /// The Key Protect reason code.
    pub reason: &'static str,
    /// The HTTP status.
    pub http: u16,
    /// The message.
    pub message: String,
    /// How long to wait before retrying, when known.
    pub retry_after: Option<Duration>,
}

impl RestError {
    /// A malformed field of the body.
    pub fn field(field: &str, must: &str) -> Self {
        Self::BadBody(format!("the field '{field}' must be: {must}"))
    }

    /// The failure's classification.
    pub fn classify(&self) -> Classified {
        let (code, reason, http) = match self {
            Self::Kms(error) => error.classify(),
            Self::NoBody => (Code::InvalidArgument, "NO_BODY_ERR", 400),
            Self::BadBody(_) => (Code::InvalidArgument, "BAD_BODY_ERR", 400),
            Self::CollectionTotalMismatch => {
                (Code::InvalidArgument, "COLLECTION_TOTAL_MISMATCH_ERR", 400)
            }
            Self::InvalidQueryParam { .. } => {
                (Code::InvalidArgument, "INVALID_QUERY_PARAM_ERR", 400)
            }
            Self::InvalidHeader { .. } => (Code::InvalidArgument, "INVALID_HEADER_ERR", 400),
            Self::KeyRingNotFound => (Code::NotFound, "KEY_RING_NOT_FOUND_ERR", 404),
            Self::UnsupportedMediaType => {
                (Code::InvalidArgument, "UNSUPPORTED_MEDIA_TYPE_ERR", 415)
            }
            Self::BodyTooLarge(_) => (Code::InvalidArgument, "BODY_TOO_LARGE_ERR", 413),
            Self::WorkerStopped => (Code::Internal, "INTERNAL_SERVER_ERR", 500),
            Self::Unsupported(_) => (Code::Unimplemented, "FEATURE_RESTRICTED_ERR", 501),
        };
        let retry_after = match self {
            Self::Kms(KmsError::RotationTooSoon { retry_after })
            | Self::Kms(KmsError::TooEarly { retry_after }) => Some(*retry_after),
            Self::Kms(KmsError::Injected(crate::faults::InjectedFailure::ResourceExhausted(
                delay,
            ))) => Some(*delay),
            Self::Kms(KmsError::Injected(_)) => Some(Duration::from_secs(1)),
            _ => None,
        };
        Classified {
            code,
            reason,
            http,
            message: self.to_string(),
            retry_after,
        }
    }
}

impl Classified {
    /// The same failure as a gRPC status (for the audit event, which reads it the way it
    /// reads a gRPC answer).
    pub fn to_status(&self) -> tonic::Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(
            self.reason,
            ERROR_DOMAIN,
            HashMap::from([("http_status".to_owned(), self.http.to_string())]),
        );
        tonic::Status::with_error_details(self.code, self.message.clone(), details)
    }

    /// The HTTP status (500 for a value outside HTTP's range, which the table never holds).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Key Protect's error body: `errorMsg` is `<reason phrase>: <what> could not be
    /// <done>: Please see 'reasons' for more details (<CODE>)`.
    pub fn body(&self, failed: &str) -> serde_json::Value {
        let phrase = self.status_code().canonical_reason().unwrap_or("Error");
        json!({
            "metadata": {
                "collectionType": "application/vnd.ibm.kms.error+json",
                "collectionTotal": 1
            },
            "resources": [{
                "errorMsg": format!(
                    "{phrase}: {failed}: Please see 'reasons' for more details ({})",
                    self.reason
                ),
                "reasons": [{
                    "code": self.reason,
                    "message": self.message,
                    "status": self.http,
                    "moreInfo": "https://cloud.ibm.com/apidocs/key-protect"
                }]
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_errors_keep_their_reason_and_http_status() {
        let c = RestError::Kms(KmsError::KeyNotFound).classify();
        assert_eq!((c.reason, c.http), ("KEY_NOT_FOUND_ERR", 404));
        let c = RestError::Kms(KmsError::TooEarly {
            retry_after: Duration::from_secs(90),
        })
        .classify();
        assert_eq!((c.reason, c.http), ("REQ_TOO_EARLY_ERR", 409));
        assert_eq!(c.retry_after, Some(Duration::from_secs(90)));
        let body = c.body("Key could not be purged");
        assert_eq!(
            body["resources"][0]["errorMsg"],
            "Conflict: Key could not be purged: Please see 'reasons' for more details (REQ_TOO_EARLY_ERR)"
        );
        assert_eq!(body["resources"][0]["reasons"][0]["status"], 409);
    }

    #[test]
    fn http_only_failures_have_their_own_codes() {
        let c = RestError::CollectionTotalMismatch.classify();
        assert_eq!((c.reason, c.http), ("COLLECTION_TOTAL_MISMATCH_ERR", 400));
        assert_eq!(RestError::UnsupportedMediaType.classify().http, 415);
        assert_eq!(RestError::BodyTooLarge(10).classify().http, 413);
        let status = RestError::NoBody.classify().to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .map(|i| i.reason.clone()),
            Some("NO_BODY_ERR".to_owned())
        );
    }
}
