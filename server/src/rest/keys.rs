//! Keys over REST: create (and `keys_with_policy_overrides`), list and `HEAD` total, get and
//! metadata (by id or alias), delete (with `force`), purge, restore, versions and aliases.
//! Each handler parses the request once, calls the same `Kms` method as the gRPC
//! `KeyService`, and renders Key Protect's JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::clock::Timestamp;
use crate::error::KmsError;
use crate::grpc::keys::{material_bytes, validated_key_size};
use crate::grpc::{parse, text};
use crate::kms::ids::{Alias, KeyId, KeyRef};
use crate::kms::keys::KeySearch;
use crate::kms::policies::{KeyPolicyChange, RotationInterval, RotationSetting};
use crate::kms::records::KeyKind;
use crate::kms::state::KeyState;
use crate::kms::{KeyListQuery, Kms, Material, NewKey};
use crate::rest::blocking;
use crate::rest::call::{
    Call, Query, Reply, Route, base64_field, bool_field, field, int_field, string_field,
    strings_field,
};
use crate::rest::error::RestError;
use crate::rest::json;

const CREATE: Route = Route {
    grpc: "KeyService/CreateKey",
    rest: "POST /api/v2/keys",
    failed: "Key could not be created",
};
const CREATE_WITH_POLICIES: Route = Route {
    grpc: "KeyService/CreateKey",
    rest: "POST /api/v2/keys_with_policy_overrides",
    failed: "Key could not be created",
};
const LIST: Route = Route {
    grpc: "KeyService/ListKeys",
    rest: "GET /api/v2/keys",
    failed: "Keys could not be listed",
};
const TOTAL: Route = Route {
    grpc: "KeyService/ListKeys",
    rest: "HEAD /api/v2/keys",
    failed: "Keys could not be counted",
};
const GET: Route = Route {
    grpc: "KeyService/GetKey",
    rest: "GET /api/v2/keys/{id}",
    failed: "Key could not be retrieved",
};
const METADATA: Route = Route {
    grpc: "KeyService/GetKey",
    rest: "GET /api/v2/keys/{id}/metadata",
    failed: "Key metadata could not be retrieved",
};
const DELETE: Route = Route {
    grpc: "KeyService/DeleteKey",
    rest: "DELETE /api/v2/keys/{id}",
    failed: "Key could not be deleted",
};
const PURGE: Route = Route {
    grpc: "KeyService/PurgeKey",
    rest: "DELETE /api/v2/keys/{id}/purge",
    failed: "Key could not be purged",
};
/// `POST keys/{id}/restore` (also the `?action=restore` form).
pub const RESTORE: Route = Route {
    grpc: "KeyService/RestoreKey",
    rest: "POST /api/v2/keys/{id}/restore",
    failed: "Key could not be restored",
};
const VERSIONS: Route = Route {
    grpc: "KeyService/ListKeyVersions",
    rest: "GET /api/v2/keys/{id}/versions",
    failed: "Key versions could not be listed",
};
const ALIAS_CREATE: Route = Route {
    grpc: "KeyService/CreateKeyAlias",
    rest: "POST /api/v2/keys/{id}/aliases/{alias}",
    failed: "Key alias could not be created",
};
const ALIAS_DELETE: Route = Route {
    grpc: "KeyService/DeleteKeyAlias",
    rest: "DELETE /api/v2/keys/{id}/aliases/{alias}",
    failed: "Key alias could not be deleted",
};

/// Most keys one listing returns.
const MAX_LIMIT: usize = 5000;

fn one_key(view: &crate::kms::KeyView, with_payload: bool) -> Value {
    let resource = if with_payload {
        json::key(view)
    } else {
        json::key_metadata(view)
    };
    json::collection(json::KEY_TYPE, vec![resource])
}

/// The one resource of a create body, as a validated `NewKey` plus the policies of
/// `keys_with_policy_overrides`.
fn new_key(
    call: &Call,
    resource: &Map<String, Value>,
    with_policies: bool,
) -> Result<(NewKey, Option<KeyPolicyChange>), RestError> {
    let instance = call.instance()?;
    let name = string_field(resource, "name")?.unwrap_or_default();
    let description = string_field(resource, "description")?.unwrap_or_default();
    let kind = if bool_field(resource, "extractable")?.unwrap_or(false) {
        KeyKind::Standard
    } else {
        KeyKind::Root
    };
    for secure in ["encryptedNonce", "iv", "encryptionAlgorithm"] {
        if field(resource, secure).is_some_and(|v| !v.is_null()) {
            return Err(RestError::Unsupported(
                "secure import (encryptedNonce, iv, encryptionAlgorithm) over REST",
            ));
        }
    }
    let material = match base64_field(resource, "payload")? {
        None => Material::Generate(validated_key_size(0)?),
        Some(bytes) => Material::Plain(material_bytes("payload", bytes.to_vec())?),
    };
    let expiration_time = match string_field(resource, "expirationDate")? {
        None => None,
        Some(text) => Some(
            Timestamp::parse_rfc3339(&text)
                .ok_or_else(|| RestError::field("expirationDate", "an RFC 3339 date"))?,
        ),
    };
    let aliases = strings_field(resource, "aliases")?;
    if aliases.len() > crate::kms::keys::MAX_ALIASES {
        return Err(KmsError::AliasQuotaExceeded.into());
    }
    let aliases = aliases
        .iter()
        .map(|a| parse::<Alias>("aliases", a))
        .collect::<Result<Vec<_>, _>>()?;
    let policies = if with_policies {
        let rotation = match field(resource, "rotation").and_then(Value::as_object) {
            None => None,
            Some(r) => {
                let months = int_field(r, "interval_month")?
                    .ok_or_else(|| RestError::field("rotation.interval_month", "1 to 12"))?;
                let interval = RotationInterval::from_months(months)
                    .ok_or_else(|| RestError::field("rotation.interval_month", "1 to 12"))?;
                Some(RotationSetting {
                    enabled: bool_field(r, "enabled")?.unwrap_or(true),
                    interval,
                })
            }
        };
        let dual_auth_delete = match field(resource, "dualAuthDelete").and_then(Value::as_object) {
            None => None,
            Some(d) => Some(bool_field(d, "enabled")?.unwrap_or(false)),
        };
        if rotation.is_some() {
            if kind != KeyKind::Root {
                return Err(KmsError::RootKeyRequired.into());
            }
            if !matches!(material, Material::Generate(_)) {
                return Err(KmsError::ImportedKeyRotationPolicy.into());
            }
        }
        (rotation.is_some() || dual_auth_delete.is_some()).then_some(KeyPolicyChange {
            rotation,
            dual_auth_delete,
        })
    } else {
        None
    };
    let new = NewKey {
        instance,
        name: text("name", &name, 2, 90)?,
        description: text("description", &description, 0, 240)?,
        kind,
        expiration_time,
        aliases,
        material,
    };
    Ok((new, policies))
}

async fn create_inner(
    kms: Arc<Kms>,
    headers: HeaderMap,
    body: Body,
    route: Route,
    with_policies: bool,
) -> Response {
    let call = Call::start(&kms, route, headers);
    let result = async {
        let who = call.who()?;
        let resources = call.collection(body).await?;
        let [resource] = resources.as_slice() else {
            return Err(RestError::field("resources", "exactly one key"));
        };
        let (new, policies) = new_key(&call, resource, with_policies)?;
        let minimal = call.wants_minimal();
        let view = blocking(call.kms(), move |kms| {
            let view = kms.create_key(&who, new)?;
            match policies {
                None => Ok(view),
                Some(change) => {
                    let key = KeyRef::Path {
                        instance: view.record.instance,
                        key: crate::kms::ids::KeyName::Id(view.record.id),
                    };
                    kms.set_key_policies(&who, &key, change)?;
                    kms.get_key(&who, &key)
                }
            }
        })
        .await?;
        call.note().set_key(&view);
        let resource = if minimal {
            json!({"id": view.record.id.to_string()})
        } else {
            json::key(&view)
        };
        Ok(Reply::Json(
            StatusCode::CREATED,
            json::collection(json::KEY_TYPE, vec![resource]),
        ))
    }
    .await;
    call.finish(result).await
}

/// `POST /api/v2/keys`.
pub async fn create(State(kms): State<Arc<Kms>>, headers: HeaderMap, body: Body) -> Response {
    create_inner(kms, headers, body, CREATE, false).await
}

/// `POST /api/v2/keys_with_policy_overrides`.
pub async fn create_with_policies(
    State(kms): State<Arc<Kms>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    create_inner(kms, headers, body, CREATE_WITH_POLICIES, true).await
}

/// The listing a `GET`/`HEAD keys` query asks for: the page to skip (`offset`) and the query.
fn list_query(call: &Call, query: &Query) -> Result<(usize, KeyListQuery), RestError> {
    let instance = call.instance()?;
    let limit = query.int(
        "limit",
        1,
        MAX_LIMIT,
        200,
        "an integer between 1 and 5000 (inclusive)",
    )?;
    let offset = query.int("offset", 0, usize::MAX, 0, "a non-negative integer")?;
    let mut states = Vec::new();
    // The Python SDK sends `state=` (empty) on every plain listing: that is the default.
    for part in query.get("state").unwrap_or_default().split(',') {
        let state = match part.trim() {
            "" => continue,
            "1" => KeyState::Active,
            "2" => KeyState::Suspended,
            "3" => KeyState::Deactivated,
            "5" => KeyState::Destroyed,
            _ => {
                return Err(RestError::InvalidQueryParam {
                    name: "state",
                    must: "a comma-separated list of 1, 2, 3 and 5",
                });
            }
        };
        if !states.contains(&state) {
            states.push(state);
        }
    }
    let search = match query.get("search").unwrap_or_default() {
        "" => None,
        s => Some(if let Some(name) = s.strip_prefix("name:") {
            KeySearch::Name(name.to_owned())
        } else if let Some(alias) = s.strip_prefix("alias:") {
            KeySearch::Alias(alias.to_owned())
        } else {
            KeySearch::Any(s.to_owned())
        }),
    };
    Ok((
        offset,
        KeyListQuery {
            instance,
            page_size: offset.saturating_add(limit),
            after: None,
            states,
            extractable: query.bool("extractable")?,
            search,
        },
    ))
}

/// `GET /api/v2/keys`.
pub async fn list(
    State(kms): State<Arc<Kms>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, LIST, headers);
    let result = (|| {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let (offset, list) = list_query(&call, &query)?;
        let page = call.kms().list_keys(&who, &list)?;
        let keys: Vec<Value> = page
            .items
            .iter()
            .skip(offset)
            .map(json::key_metadata)
            .collect();
        let mut body = json::collection(json::KEY_TYPE, keys);
        if query.get("totalCount") == Some("true") {
            body["metadata"]["totalCount"] = json!(page.total);
        }
        Ok(Reply::Json(StatusCode::OK, body))
    })();
    call.finish(result).await
}

/// `HEAD /api/v2/keys`: the number of matching keys in `Key-Total`.
pub async fn total(
    State(kms): State<Arc<Kms>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, TOTAL, headers);
    let result = (|| {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let (_, mut list) = list_query(&call, &query)?;
        list.page_size = 1;
        let page = call.kms().list_keys(&who, &list)?;
        Ok(Reply::KeyTotal(page.total))
    })();
    let mut response = call.finish(result).await;
    if response.status() != StatusCode::OK {
        // A HEAD answer carries no body: the status and headers tell the failure.
        *response.body_mut() = Body::empty();
    }
    response
}

async fn get_inner(kms: Arc<Kms>, id: String, headers: HeaderMap, route: Route) -> Response {
    let with_payload = route.rest == GET.rest;
    let call = Call::start(&kms, route, headers);
    let result = (|| {
        let who = call.who()?;
        let key = call.key(&id)?;
        let view = call.kms().get_key(&who, &key)?;
        call.note().set_key(&view);
        Ok(Reply::Json(StatusCode::OK, one_key(&view, with_payload)))
    })();
    call.finish(result).await
}

/// `GET /api/v2/keys/{id}` (id or alias): a standard key's payload included.
pub async fn get(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    get_inner(kms, id, headers, GET).await
}

/// `GET /api/v2/keys/{id}/metadata`.
pub async fn metadata(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    get_inner(kms, id, headers, METADATA).await
}

/// `DELETE /api/v2/keys/{id}[?force=true]`: 204, or 200 with the key for
/// `Prefer: return=representation`.
pub async fn delete(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, DELETE, headers);
    let result = async {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let force = query.bool("force")?.unwrap_or(false);
        let key = call.key(&id)?;
        let view = blocking(call.kms(), move |kms| kms.delete_key(&who, &key, force)).await?;
        call.note().set_key(&view);
        Ok(if call.wants_representation() {
            Reply::Json(StatusCode::OK, one_key(&view, false))
        } else {
            Reply::Empty(StatusCode::NO_CONTENT)
        })
    }
    .await;
    call.finish(result).await
}

/// `DELETE /api/v2/keys/{id}/purge`: 200 with the key, or 204 for `Prefer: return=minimal`.
pub async fn purge(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, PURGE, headers);
    let result = async {
        let who = call.who()?;
        let key = call.key(&id)?;
        let view = blocking(call.kms(), move |kms| kms.purge_key(&who, &key)).await?;
        call.note().set_key(&view);
        Ok(if call.wants_minimal() {
            Reply::Empty(StatusCode::NO_CONTENT)
        } else {
            Reply::Json(StatusCode::OK, one_key(&view, false))
        })
    }
    .await;
    call.finish(result).await
}

/// Restores a key for `call` (the path and the `?action=restore` forms): 201 with the key.
pub async fn restore_call(call: &Call, id: &str, body: Body) -> Result<Reply, RestError> {
    let who = call.who()?;
    let key = call.key(id)?;
    let object = call.json(body).await?;
    if ["payload", "encryptedNonce", "iv"]
        .iter()
        .any(|f| field(&object, f).is_some_and(|v| !v.is_null()))
    {
        return Err(RestError::Unsupported(
            "restoring with key material (the legacy imported-key restore)",
        ));
    }
    let view = blocking(call.kms(), move |kms| kms.restore_key(&who, &key)).await?;
    call.note().set_key(&view);
    Ok(Reply::Json(StatusCode::CREATED, one_key(&view, false)))
}

/// `POST /api/v2/keys/{id}/restore`.
pub async fn restore(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call::start(&kms, RESTORE, headers);
    let result = restore_call(&call, &id, body).await;
    call.finish(result).await
}

/// `GET /api/v2/keys/{id}/versions?limit&offset&totalCount`.
pub async fn versions(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, VERSIONS, headers);
    let result = (|| {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let limit = query.int(
            "limit",
            1,
            MAX_LIMIT,
            200,
            "an integer between 1 and 5000 (inclusive)",
        )?;
        let offset = query.int("offset", 0, usize::MAX, 0, "a non-negative integer")?;
        let key = call.key(&id)?;
        let versions = call.kms().list_key_versions(&who, &key)?;
        let page: Vec<Value> = versions
            .iter()
            .skip(offset)
            .take(limit)
            .map(json::version)
            .collect();
        let mut body = json::collection(json::KEY_TYPE, page);
        if query.get("totalCount") == Some("true") {
            body["metadata"]["totalCount"] = json!(versions.len());
        }
        Ok(Reply::Json(StatusCode::OK, body))
    })();
    call.finish(result).await
}

/// `POST /api/v2/keys/{id}/aliases/{alias}`: 201 with the alias.
pub async fn create_alias(
    State(kms): State<Arc<Kms>>,
    Path((id, alias)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, ALIAS_CREATE, headers);
    let result = async {
        let who = call.who()?;
        let key = call.key(&id)?;
        let alias: Alias = parse("alias", &alias)?;
        let (key_id, record): (KeyId, _) = blocking(call.kms(), move |kms| {
            kms.create_key_alias(&who, &key, alias)
        })
        .await?;
        Ok(Reply::Json(
            StatusCode::CREATED,
            json::collection(
                json::ALIAS_TYPE,
                vec![json!({
                    "keyId": key_id.to_string(),
                    "alias": record.alias.to_string(),
                    "createdBy": who.id.to_string(),
                    "creationDate": json::date(record.create_time),
                })],
            ),
        ))
    }
    .await;
    call.finish(result).await
}

/// `DELETE /api/v2/keys/{id}/aliases/{alias}`: 204.
pub async fn delete_alias(
    State(kms): State<Arc<Kms>>,
    Path((id, alias)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, ALIAS_DELETE, headers);
    let result = async {
        let who = call.who()?;
        let key = call.key(&id)?;
        let alias: Alias = parse("alias", &alias)?;
        blocking(call.kms(), move |kms| {
            kms.delete_key_alias(&who, &key, &alias)
        })
        .await?;
        Ok(Reply::Empty(StatusCode::NO_CONTENT))
    }
    .await;
    call.finish(result).await
}
