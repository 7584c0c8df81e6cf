//! IBM Cloud IAM's token endpoint, as the SDKs call it: `POST /identity/token` and
//! `POST /oidc/token`, form-encoded, `grant_type=urn:ibm:params:oauth:grant-type:apikey` with
//! `apikey=<kmsim API key>`. It answers `{access_token, refresh_token, token_type, expires_in,
//! expiration, scope}`, where `access_token` is the same HSM-signed JWT (with `iat` and `exp`)
//! that `IamService/CreateToken` issues, and IAM-shaped errors
//! (`{errorCode, errorMessage, context:{requestId}}`). Audited as `CreateToken`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::json;
use zeroize::Zeroizing;

use crate::auth::AuthFailure;
use crate::error::KmsError;
use crate::kms::Kms;
use crate::rest::blocking;
use crate::rest::call::{Call, Route, json_response};
use crate::rest::error::RestError;

/// How long an IAM token lives (IBM Cloud IAM's default).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The API-key grant type.
pub const API_KEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

const IDENTITY: Route = Route {
    grpc: "IamService/CreateToken",
    rest: "POST /identity/token",
    failed: "Token could not be created",
};
const OIDC: Route = Route {
    grpc: "IamService/CreateToken",
    rest: "POST /oidc/token",
    failed: "Token could not be created",
};

/// A refusal in IAM's shape.
struct IamError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The same failure for the audit trail.
    audit: RestError,
}

impl IamError {
    fn bad_request(code: &'static str, message: &str, audit: RestError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.to_owned(),
            audit,
        }
    }
}

async fn exchange(
    call: &Call,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Value, IamError> {
    let form_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(IamError::bad_request(
            "BXNIM0109E",
            "Content-Type must be application/x-www-form-urlencoded",
            RestError::UnsupportedMediaType,
        ));
    }
    let limited = http_body_util::Limited::new(body, crate::rest::call::MAX_BODY);
    let bytes = http_body_util::BodyExt::collect(limited)
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| {
            IamError::bad_request(
                "BXNIM0109E",
                "The request body could not be read",
                RestError::BodyTooLarge(crate::rest::call::MAX_BODY),
            )
        })?;
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
        IamError::bad_request(
            "BXNIM0109E",
            "The request body is not form-encoded",
            RestError::BadBody("not form-encoded".to_owned()),
        )
    })?;
    let form: Vec<(String, Zeroizing<String>)> = form
        .into_iter()
        .map(|(k, v)| (k, Zeroizing::new(v)))
        .collect();
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match get("grant_type").as_deref().map(String::as_str) {
        Some(API_KEY_GRANT) => {}
        Some(_) => {
            return Err(IamError::bad_request(
                "BXNIM0103E",
                "Unsupported grant type: kmsim's IAM serves urn:ibm:params:oauth:grant-type:apikey only",
                RestError::field("grant_type", API_KEY_GRANT),
            ));
        }
        None => {
            return Err(IamError::bad_request(
                "BXNIM0109E",
                "Property missing or empty. Property name: grant_type",
                RestError::field("grant_type", API_KEY_GRANT),
            ));
        }
    }
    let secret = get("apikey").filter(|s| !s.is_empty()).ok_or_else(|| {
        IamError::bad_request(
            "BXNIM0109E",
            "Property missing or empty. Property name: apikey",
            RestError::field("apikey", "an API key"),
        )
    })?;
    let issued = blocking(call.kms(), move |kms| {
        kms.create_token(&secret, TOKEN_LIFETIME)
    })
    .await
    .map_err(|error| match error {
        RestError::Kms(KmsError::Unauthenticated(AuthFailure::BadApiKey)) => {
            IamError::bad_request("BXNIM0415E", "Provided API key could not be found", error)
        }
        other => IamError {
            status: other.classify().status_code(),
            code: "BXNIM0400E",
            message: other.to_string(),
            audit: other,
        },
    })?;
    call.note().set_initiator(crate::auth::Identity {
        id: issued.identity.id,
        kind: issued.identity.kind,
    });
    let now_secs = call.kms().now().as_millis().div_euclid(1000);
    let expiration = issued.expires.as_millis().div_euclid(1000);
    Ok(json!({
        "access_token": issued.token.as_str(),
        // kmsim's IAM serves the API-key grant only (every SDK re-exchanges its API key):
        // this value is not a usable refresh token.
        "refresh_token": "not_supported",
        "token_type": "Bearer",
        "expires_in": expiration - now_secs,
        "expiration": expiration,
        "scope": "ibm openid",
    }))
}

async fn token(kms: Arc<Kms>, route: Route, headers: HeaderMap, body: Body) -> Response {
    let call = Call::start(&kms, route, headers.clone());
    match exchange(&call, &headers, body).await {
        Ok(value) => match call.record(None).await {
            Ok(()) => json_response(StatusCode::OK, &value),
            // The trail fails closed: a token whose event cannot be written is not issued.
            Err(_) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({
                    "errorCode": "STORAGE_ERR",
                    "errorMessage": "the audit trail cannot be written",
                    "context": {"requestId": call.correlation_id()},
                }),
            ),
        },
        Err(error) => {
            // A refusal's event is batched: `record` fails only for events written before
            // the reply, which a refusal's is not.
            let _ = call.record(Some(&error.audit.classify())).await;
            json_response(
                error.status,
                &json!({
                    "errorCode": error.code,
                    "errorMessage": error.message,
                    "context": {"requestId": call.correlation_id()},
                }),
            )
        }
    }
}

/// `POST /identity/token`.
pub async fn identity_token(
    State(kms): State<Arc<Kms>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    token(kms, IDENTITY, headers, body).await
}

/// `POST /oidc/token`.
pub async fn oidc_token(State(kms): State<Arc<Kms>>, headers: HeaderMap, body: Body) -> Response {
    token(kms, OIDC, headers, body).await
}
