//! Registrations over REST, as the SDKs list them: `GET keys/{id}/registrations` and
//! `GET keys/registrations?urlEncodedResourceCRNQuery=<crn>` (within the `Bluemix-Instance`
//! instance), with `limit`, `offset`, `preventKeyDeletion` and `totalCount`, through the same
//! `Kms::list_registrations` as gRPC; the service-to-service writes (`POST`, `PATCH`, `PUT`,
//! `DELETE keys/{id}/registrations/{urlEncodedResourceCRN}`, `SERVICE_ONLY_ERR` for users).
//! Also the key rings kmsim has: `default` only.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::grpc::parse;
use crate::kms::Kms;
use crate::kms::ids::{KeyVersionId, ResourceCrn};
use crate::kms::registrations::{
    NewRegistration, RegistrationQuery, RegistrationUpdate, RegistrationView,
};
use crate::rest::call::{Call, Query, Reply, Route, bool_field, string_field};
use crate::rest::error::RestError;
use crate::rest::{blocking, json};

const FOR_KEY: Route = Route {
    grpc: "RegistrationService/ListRegistrations",
    rest: "GET /api/v2/keys/{id}/registrations",
    failed: "Registrations could not be listed",
};
const FOR_RESOURCE: Route = Route {
    grpc: "RegistrationService/ListRegistrations",
    rest: "GET /api/v2/keys/registrations",
    failed: "Registrations could not be listed",
};
const KEY_RINGS: Route = Route {
    grpc: "InstanceService/GetInstance",
    rest: "GET /api/v2/key_rings",
    failed: "Key rings could not be listed",
};

fn resource_filter(query: &Query) -> Result<Option<ResourceCrn>, RestError> {
    match query.get("urlEncodedResourceCRNQuery") {
        None | Some("") => Ok(None),
        Some(crn) => parse::<ResourceCrn>("urlEncodedResourceCRNQuery", crn)
            .map(Some)
            .map_err(RestError::from),
    }
}

fn page(query: &Query, found: Vec<RegistrationView>) -> Result<Reply, RestError> {
    let limit = query.int(
        "limit",
        1,
        5000,
        200,
        "an integer between 1 and 5000 (inclusive)",
    )?;
    let offset = query.int("offset", 0, usize::MAX, 0, "a non-negative integer")?;
    let prevent = query.bool("preventKeyDeletion")?;
    let matching: Vec<&RegistrationView> = found
        .iter()
        .filter(|r| prevent.is_none_or(|p| r.record.prevent_key_deletion == p))
        .collect();
    let resources: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| json::registration(r))
        .collect();
    let mut body = json::collection(json::REGISTRATION_TYPE, resources);
    if query.get("totalCount") == Some("true") {
        body["metadata"]["totalCount"] = json!(matching.len());
    }
    Ok(Reply::Json(StatusCode::OK, body))
}

/// `GET /api/v2/keys/{id}/registrations`.
pub async fn for_key(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, FOR_KEY, headers);
    let result = (|| {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let key = call.key(&id)?;
        let found = call
            .kms()
            .list_registrations(&who, &RegistrationQuery::Key(key, resource_filter(&query)?))?;
        page(&query, found)
    })();
    call.finish(result).await
}

/// `GET /api/v2/keys/registrations?urlEncodedResourceCRNQuery=<crn>`.
pub async fn for_resource(
    State(kms): State<Arc<Kms>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, FOR_RESOURCE, headers);
    let result = (|| {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let instance = call.instance()?.id();
        let resource = resource_filter(&query)?.ok_or(RestError::InvalidQueryParam {
            name: "urlEncodedResourceCRNQuery",
            must: "the CRN of a registered resource",
        })?;
        let found: Vec<RegistrationView> = call
            .kms()
            .list_registrations(&who, &RegistrationQuery::Resource(resource))?
            .into_iter()
            .filter(|r| r.record.instance == instance)
            .collect();
        page(&query, found)
    })();
    call.finish(result).await
}

/// `GET /api/v2/key_rings`: kmsim's one key ring, `default` (after checking that the caller
/// may read the instance).
pub async fn key_rings(State(kms): State<Arc<Kms>>, headers: HeaderMap) -> Response {
    let call = Call::start(&kms, KEY_RINGS, headers);
    let result = (|| {
        let who = call.who()?;
        let instance = call.instance()?;
        call.kms().get_instance(&who, &instance)?;
        Ok(Reply::Json(
            StatusCode::OK,
            json::collection(json::KEY_RING_TYPE, vec![json!({"id": "default"})]),
        ))
    })();
    call.finish(result).await
}

const CREATE: Route = Route {
    grpc: "RegistrationService/CreateRegistration",
    rest: "POST /api/v2/keys/{id}/registrations/{urlEncodedResourceCRN}",
    failed: "Registration could not be created",
};
const UPDATE: Route = Route {
    grpc: "RegistrationService/UpdateRegistration",
    rest: "PATCH /api/v2/keys/{id}/registrations/{urlEncodedResourceCRN}",
    failed: "Registration could not be updated",
};
const REPLACE: Route = Route {
    grpc: "RegistrationService/UpdateRegistration",
    rest: "PUT /api/v2/keys/{id}/registrations/{urlEncodedResourceCRN}",
    failed: "Registration could not be replaced",
};
const DELETE: Route = Route {
    grpc: "RegistrationService/DeleteRegistration",
    rest: "DELETE /api/v2/keys/{id}/registrations/{urlEncodedResourceCRN}",
    failed: "Registration could not be deleted",
};

/// The body fields of a registration write.
struct WriteFields {
    prevent: Option<bool>,
    description: Option<String>,
    version: Option<KeyVersionId>,
}

/// Reads a registration write's body (`registrationMetadata` is not kept by kmsim).
fn write_fields(object: &serde_json::Map<String, Value>) -> Result<WriteFields, RestError> {
    if string_field(object, "registrationMetadata")?.is_some_and(|m| !m.is_empty()) {
        return Err(RestError::Unsupported("registrationMetadata"));
    }
    let version = string_field(object, "keyVersionId")?
        .map(|v| parse::<KeyVersionId>("keyVersionId", &v))
        .transpose()?;
    Ok(WriteFields {
        prevent: bool_field(object, "preventKeyDeletion")?,
        description: string_field(object, "description")?,
        version,
    })
}

fn one(view: &RegistrationView, status: StatusCode) -> Reply {
    Reply::Json(
        status,
        json::collection(json::REGISTRATION_TYPE, vec![json::registration(view)]),
    )
}

async fn write(
    kms: Arc<Kms>,
    route: Route,
    id: String,
    crn: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call::start(&kms, route, headers);
    let result = async {
        let who = call.who()?;
        let key = call.key(&id)?;
        let resource: ResourceCrn = parse("urlEncodedResourceCRN", crn.trim_start_matches('/'))?;
        let object = call.json(body).await?;
        let WriteFields {
            prevent,
            description,
            version,
        } = write_fields(&object)?;
        if route.rest == CREATE.rest {
            let new = NewRegistration {
                key,
                resource_crn: resource,
                prevent_key_deletion: prevent
                    .ok_or_else(|| RestError::field("preventKeyDeletion", "a boolean"))?,
                description: description.unwrap_or_default(),
                key_version: version,
            };
            let view = blocking(call.kms(), move |kms| kms.create_registration(&who, new)).await?;
            Ok(one(&view, StatusCode::CREATED))
        } else {
            let update = RegistrationUpdate {
                key,
                resource_crn: resource,
                description,
                prevent_key_deletion: prevent,
                key_version: version,
            };
            let view =
                blocking(call.kms(), move |kms| kms.update_registration(&who, update)).await?;
            Ok(one(&view, StatusCode::OK))
        }
    }
    .await;
    call.finish(result).await
}

/// `POST /api/v2/keys/{id}/registrations/{urlEncodedResourceCRN}` (service identities): 201.
pub async fn create(
    State(kms): State<Arc<Kms>>,
    Path((id, crn)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    write(kms, CREATE, id, crn, headers, body).await
}

/// `PATCH /api/v2/keys/{id}/registrations/{urlEncodedResourceCRN}` (merge): 200.
pub async fn update(
    State(kms): State<Arc<Kms>>,
    Path((id, crn)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    write(kms, UPDATE, id, crn, headers, body).await
}

/// `PUT /api/v2/keys/{id}/registrations/{urlEncodedResourceCRN}`: as `PATCH`, 200.
pub async fn replace(
    State(kms): State<Arc<Kms>>,
    Path((id, crn)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    write(kms, REPLACE, id, crn, headers, body).await
}

/// `DELETE /api/v2/keys/{id}/registrations/{urlEncodedResourceCRN}`: 204, or 200 with the
/// registration for `Prefer: return=representation`.
pub async fn delete(
    State(kms): State<Arc<Kms>>,
    Path((id, crn)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, DELETE, headers);
    let result = async {
        let who = call.who()?;
        let key = call.key(&id)?;
        let resource: ResourceCrn = parse("urlEncodedResourceCRN", crn.trim_start_matches('/'))?;
        let view = blocking(call.kms(), move |kms| {
            kms.delete_registration(&who, &key, &resource, std::time::Duration::ZERO)
        })
        .await?;
        Ok(match view {
            Some(view) if call.wants_representation() => one(&view, StatusCode::OK),
            _ => Reply::Empty(StatusCode::NO_CONTENT),
        })
    }
    .await;
    call.finish(result).await
}
