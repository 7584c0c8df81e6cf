//! Key actions over REST, in both forms Key Protect serves: `POST keys/{id}/actions/{action}`
//! and the legacy `POST keys/{id}?action={action}`: wrap, unwrap, rewrap (200 with a flat
//! JSON body), rotate, disable, enable, setKeyForDeletion, unsetKeyForDeletion and sync
//! (204), and restore (201, legacy form). Each calls the same `Kms` method as gRPC.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::error::{FieldProblem, KmsError};
use crate::grpc::keys::{MAX_WRAP_PLAINTEXT, material_bytes, validated_aad};
use crate::kms::{Kms, Material};
use crate::rest::call::{Call, Query, Reply, Route, base64_field, field, strings_field};
use crate::rest::error::RestError;
use crate::rest::{blocking, json, keys};

/// The route of `action`, `None` for an action Key Protect does not define.
fn route(action: &str) -> Option<Route> {
    let (grpc, rest, failed) = match action {
        "wrap" => (
            "KeyService/WrapKey",
            "POST /api/v2/keys/{id}/actions/wrap",
            "Key could not be used to wrap",
        ),
        "unwrap" => (
            "KeyService/UnwrapKey",
            "POST /api/v2/keys/{id}/actions/unwrap",
            "Key could not be used to unwrap",
        ),
        "rewrap" => (
            "KeyService/RewrapKey",
            "POST /api/v2/keys/{id}/actions/rewrap",
            "Key could not be used to rewrap",
        ),
        "rotate" => (
            "KeyService/RotateKey",
            "POST /api/v2/keys/{id}/actions/rotate",
            "Key could not be rotated",
        ),
        "disable" => (
            "KeyService/DisableKey",
            "POST /api/v2/keys/{id}/actions/disable",
            "Key could not be disabled",
        ),
        "enable" => (
            "KeyService/EnableKey",
            "POST /api/v2/keys/{id}/actions/enable",
            "Key could not be enabled",
        ),
        "setKeyForDeletion" => (
            "KeyService/SetKeyForDeletion",
            "POST /api/v2/keys/{id}/actions/setKeyForDeletion",
            "Key could not be set for deletion",
        ),
        "unsetKeyForDeletion" => (
            "KeyService/UnsetKeyForDeletion",
            "POST /api/v2/keys/{id}/actions/unsetKeyForDeletion",
            "Key could not be unset for deletion",
        ),
        "sync" => (
            "KeyService/SyncKey",
            "POST /api/v2/keys/{id}/actions/sync",
            "Key could not be synced",
        ),
        "restore" => return Some(keys::RESTORE),
        _ => return None,
    };
    Some(Route { grpc, rest, failed })
}

const UNKNOWN: Route = Route {
    grpc: "KeyService/UnknownAction",
    rest: "POST /api/v2/keys/{id}/actions/{action}",
    failed: "Key action could not be performed",
};

fn ciphertext(object: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<u8>, RestError> {
    match base64_field(object, "ciphertext")? {
        Some(bytes) if !bytes.is_empty() => Ok(bytes.to_vec()),
        _ => Err(KmsError::field("ciphertext", FieldProblem::Missing).into()),
    }
}

async fn perform(call: &Call, action: &str, id: &str, body: Body) -> Result<Reply, RestError> {
    if action == "restore" {
        return keys::restore_call(call, id, body).await;
    }
    let who = call.who()?;
    let key = call.key(id)?;
    let object = call.json(body).await?;
    let note = call.note();
    match action {
        "wrap" => {
            let plaintext = base64_field(&object, "plaintext")?.filter(|p| !p.is_empty());
            if plaintext
                .as_ref()
                .is_some_and(|p| p.len() > MAX_WRAP_PLAINTEXT)
            {
                return Err(KmsError::field("plaintext", FieldProblem::TooLong).into());
            }
            let aad = validated_aad(strings_field(&object, "aad")?)?;
            let result = call.kms().wrap(&who, &key, plaintext, &aad)?;
            note.set_key_version(result.version.id);
            let mut body = json!({
                "ciphertext": STANDARD.encode(&result.ciphertext),
                "keyVersion": json::version(&result.version),
            });
            if let Some(generated) = &result.generated {
                body["plaintext"] = json!(STANDARD.encode(generated.as_slice()));
            }
            Ok(Reply::Json(StatusCode::OK, body))
        }
        "unwrap" => {
            let aad = validated_aad(strings_field(&object, "aad")?)?;
            let result = call.kms().unwrap(&who, &key, &ciphertext(&object)?, &aad)?;
            note.set_key_version(result.version.id);
            let mut body = json!({
                "plaintext": STANDARD.encode(result.plaintext.as_slice()),
                "keyVersion": json::version(&result.version),
            });
            if let Some((bytes, version)) = &result.rewrapped {
                note.set_rewrapped_key_version(version.id);
                body["ciphertext"] = json!(STANDARD.encode(bytes));
                body["rewrappedKeyVersion"] = json::version(version);
            }
            Ok(Reply::Json(StatusCode::OK, body))
        }
        "rewrap" => {
            let aad = validated_aad(strings_field(&object, "aad")?)?;
            let result = call.kms().rewrap(&who, &key, &ciphertext(&object)?, &aad)?;
            note.set_key_version(result.version.id);
            note.set_rewrapped_key_version(result.rewrapped_version.id);
            Ok(Reply::Json(
                StatusCode::OK,
                json!({
                    "ciphertext": STANDARD.encode(&result.ciphertext),
                    "keyVersion": json::version(&result.version),
                    "rewrappedKeyVersion": json::version(&result.rewrapped_version),
                }),
            ))
        }
        "rotate" => {
            if ["encryptedNonce", "iv", "encryptionAlgorithm"]
                .iter()
                .any(|f| field(&object, f).is_some_and(|v| !v.is_null()))
            {
                return Err(RestError::Unsupported(
                    "secure import (encryptedNonce, iv, encryptionAlgorithm) over REST",
                ));
            }
            let material = match base64_field(&object, "payload")? {
                None => None,
                Some(bytes) => Some(Material::Plain(material_bytes("payload", bytes.to_vec())?)),
            };
            let view =
                blocking(call.kms(), move |kms| kms.rotate_key(&who, &key, material)).await?;
            note.set_key(&view);
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        "disable" => {
            let view = blocking(call.kms(), move |kms| kms.disable_key(&who, &key)).await?;
            note.set_key(&view);
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        "enable" => {
            let view = blocking(call.kms(), move |kms| kms.enable_key(&who, &key)).await?;
            note.set_key(&view);
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        "setKeyForDeletion" => {
            let view =
                blocking(call.kms(), move |kms| kms.set_key_for_deletion(&who, &key)).await?;
            note.set_key(&view);
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        "unsetKeyForDeletion" => {
            let view = blocking(call.kms(), move |kms| {
                kms.unset_key_for_deletion(&who, &key)
            })
            .await?;
            note.set_key(&view);
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        "sync" => {
            blocking(call.kms(), move |kms| kms.sync_key(&who, &key)).await?;
            Ok(Reply::Empty(StatusCode::NO_CONTENT))
        }
        _ => Err(RestError::InvalidQueryParam {
            name: "action",
            must: "one of wrap, unwrap, rewrap, rotate, disable, enable, setKeyForDeletion, unsetKeyForDeletion, sync, restore",
        }),
    }
}

async fn run(kms: Arc<Kms>, action: &str, id: &str, headers: HeaderMap, body: Body) -> Response {
    let call = Call::start(&kms, route(action).unwrap_or(UNKNOWN), headers);
    let result = perform(&call, action, id, body).await;
    call.finish(result).await
}

/// `POST /api/v2/keys/{id}/actions/{action}`.
pub async fn action(
    State(kms): State<Arc<Kms>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(kms, &action, &id, headers, body).await
}

/// `POST /api/v2/keys/{id}?action={action}` (the legacy form).
pub async fn legacy_action(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let action = Query::parse(raw.as_deref())
        .ok()
        .and_then(|q| q.get("action").map(str::to_owned))
        .unwrap_or_default();
    run(kms, &action, &id, headers, body).await
}
