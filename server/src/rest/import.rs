//! Import tokens over REST: `POST /api/v2/import_token` (`{expiration, maxAllowedRetrievals}`)
//! and `GET /api/v2/import_token`, flat JSON bodies, through the same `Kms` calls as gRPC.
//! The token's public key is kmsim's P-256 key (SEC1, base64); Key Protect's RSA-OAEP
//! import tokens are not served (see the README).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::kms::{ImportTokenView, Kms};
use crate::rest::call::{Call, Reply, Route, int_field};
use crate::rest::error::RestError;
use crate::rest::{blocking, json};

const CREATE: Route = Route {
    grpc: "KeyService/CreateImportToken",
    rest: "POST /api/v2/import_token",
    failed: "Import token could not be created",
};
const GET: Route = Route {
    grpc: "KeyService/GetImportToken",
    rest: "GET /api/v2/import_token",
    failed: "Import token could not be retrieved",
};

fn token(view: &ImportTokenView) -> Value {
    let r = &view.record;
    let lifetime = r.create_time.until(r.expiration_time).as_secs();
    let mut body = json!({
        "id": r.id.to_string(),
        "creationDate": json::date(r.create_time),
        "expirationDate": json::date(r.expiration_time),
        "expiration": lifetime,
        "maxAllowedRetrievals": r.max_retrievals,
        "remainingRetrievals": r.remaining_retrievals,
    });
    if view.reveal {
        body["payload"] = json!(STANDARD.encode(&r.public_key));
        body["nonce"] = json!(STANDARD.encode(&r.nonce));
    }
    body
}

/// `POST /api/v2/import_token`: 200 with the token's metadata.
pub async fn create(State(kms): State<Arc<Kms>>, headers: HeaderMap, body: Body) -> Response {
    let call = Call::start(&kms, CREATE, headers);
    let result = async {
        let who = call.who()?;
        let instance = call.instance()?;
        let object = call.json(body).await?;
        let seconds = match int_field(&object, "expiration")? {
            None => 600,
            Some(s @ 300..=86_400) => s.unsigned_abs(),
            Some(_) => return Err(RestError::field("expiration", "300 to 86400 seconds")),
        };
        let retrievals = match int_field(&object, "maxAllowedRetrievals")? {
            None => 1,
            Some(n @ 1..=500) => u32::try_from(n).unwrap_or(1),
            Some(_) => return Err(RestError::field("maxAllowedRetrievals", "1 to 500")),
        };
        let lifetime = Duration::from_secs(seconds);
        let view = blocking(call.kms(), move |kms| {
            kms.create_import_token(&who, &instance, lifetime, retrievals)
        })
        .await?;
        Ok(Reply::Json(StatusCode::OK, token(&view)))
    }
    .await;
    call.finish(result).await
}

/// `GET /api/v2/import_token`: the token with its public key and nonce (one retrieval).
pub async fn get(State(kms): State<Arc<Kms>>, headers: HeaderMap) -> Response {
    let call = Call::start(&kms, GET, headers);
    let result = async {
        let who = call.who()?;
        let instance = call.instance()?;
        let view = blocking(call.kms(), move |kms| kms.get_import_token(&who, &instance)).await?;
        Ok(Reply::Json(StatusCode::OK, token(&view)))
    }
    .await;
    call.finish(result).await
}
