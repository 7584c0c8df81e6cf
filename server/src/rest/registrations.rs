//! Registrations over REST, as the SDKs list them: `GET keys/{id}/registrations` and
//! `GET keys/registrations?urlEncodedResourceCRNQuery=<crn>` (within the `Bluemix-Instance`
//! instance), with `limit`, `offset`, `preventKeyDeletion` and `totalCount`, through the same
//! `Kms::list_registrations` as gRPC. Also the key rings kmsim has: `default` only.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::grpc::parse;
use crate::kms::Kms;
use crate::kms::ids::ResourceCrn;
use crate::kms::registrations::{RegistrationQuery, RegistrationView};
use crate::rest::call::{Call, Query, Reply, Route};
use crate::rest::error::RestError;
use crate::rest::json;

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
