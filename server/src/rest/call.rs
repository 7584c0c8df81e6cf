//! One REST call from request to answer: the caller's identity (the same bearer-token
//! verification as the gRPC auth layer), the instance (`Bluemix-Instance`), the key ring
//! (`X-Kms-Key-Ring`, `default` only), the correlation id (`Correlation-Id`, else
//! `X-Correlation-Id`, else a fresh one; echoed), the body (media type, size, JSON), the
//! query, and the audit event, named through the same action table as gRPC
//! ([`crate::audit::action_for`]) and recorded through `kms.audit()`.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use crate::audit::context::{CallContext, Subject};
use crate::audit::layer::{build_event, outcome_of};
use crate::audit::{ActionSpec, Durability, Outcome, action_for};
use crate::auth::Identity;
use crate::kms::Kms;
use crate::kms::ids::{InstanceRef, KeyRef};
use crate::rest::error::{Classified, RestError};

/// Largest request body the facade reads (a wrap of the largest plaintext with the most
/// AAD is well under 16 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// A REST route as the audit trail and the error body name it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The gRPC method that does the same (`Service/Method`), whose audit name the call takes.
    pub grpc: &'static str,
    /// The REST method and path template, recorded as the event's `method`.
    pub rest: &'static str,
    /// What failed, for `errorMsg` (e.g. `Key could not be wrapped`).
    pub failed: &'static str,
}

/// What a successful call answers.
#[derive(Debug)]
pub enum Reply {
    /// A JSON body with this status.
    Json(StatusCode, Value),
    /// No body.
    Empty(StatusCode),
    /// `HEAD keys`: the total in `Key-Total`, no body.
    KeyTotal(usize),
}

/// One call in progress.
#[derive(Debug)]
pub struct Call {
    kms: Arc<Kms>,
    route: Route,
    spec: ActionSpec,
    headers: HeaderMap,
    context: CallContext,
    correlation_id: String,
}

/// The client's correlation id, else a fresh UUID.
fn correlation_id(kms: &Kms, headers: &HeaderMap) -> String {
    ["correlation-id", "x-correlation-id"]
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .find(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| kms.randomness().uuid().to_string(), str::to_owned)
}

impl Call {
    /// Starts a call to `route`.
    pub fn start(kms: &Arc<Kms>, route: Route, headers: HeaderMap) -> Self {
        let path = format!("/kmsim.v1.{}", route.grpc);
        // Every route names a method of the table; an unknown one is audited as such.
        let spec = action_for(&path).unwrap_or(crate::audit::UNKNOWN_METHOD);
        Self {
            correlation_id: correlation_id(kms, &headers),
            kms: Arc::clone(kms),
            route,
            spec,
            headers,
            context: CallContext::new(spec, route.rest.to_owned()),
        }
    }

    /// The domain.
    pub fn kms(&self) -> &Arc<Kms> {
        &self.kms
    }

    /// The call's context, for what the handler learns (key state, versions).
    pub fn note(&self) -> &CallContext {
        &self.context
    }

    /// A request header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Authenticates the caller from `Authorization`, exactly as the gRPC auth layer does.
    pub fn who(&self) -> Result<Identity, RestError> {
        let header = self
            .headers
            .get(http::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let identity = self.kms.authenticate(header)?;
        self.context.set_initiator(identity);
        Ok(identity)
    }

    /// The instance `Bluemix-Instance` names (and checks `X-Kms-Key-Ring`).
    pub fn instance(&self) -> Result<InstanceRef, RestError> {
        const MUST: &str = "the id or CRN of a kmsim instance";
        let value = self
            .header("bluemix-instance")
            .ok_or(RestError::InvalidHeader {
                name: "Bluemix-Instance",
                must: MUST,
            })?;
        let instance: InstanceRef = value.trim().parse().map_err(|_| RestError::InvalidHeader {
            name: "Bluemix-Instance",
            must: MUST,
        })?;
        self.context.name_subject(Subject::Instance(instance.id()));
        if let Some(ring) = self.header("x-kms-key-ring") {
            if !ring.is_empty() && ring != "default" {
                return Err(RestError::KeyRingNotFound);
            }
        }
        Ok(instance)
    }

    /// The key `{id}` (a UUID or an alias) names in the call's instance.
    pub fn key(&self, id: &str) -> Result<KeyRef, RestError> {
        let instance = self.instance()?;
        let path = format!("instances/{}/keys/{id}", instance.id());
        let key = crate::grpc::parse::<KeyRef>("id", &path)?;
        self.context.name_subject(Subject::Key(key.clone()));
        Ok(key)
    }

    /// Whether the client asked for `Prefer: return=representation`.
    pub fn wants_representation(&self) -> bool {
        self.header("prefer")
            .is_some_and(|p| p.to_ascii_lowercase().contains("return=representation"))
    }

    /// Whether the client asked for `Prefer: return=minimal`.
    pub fn wants_minimal(&self) -> bool {
        self.header("prefer")
            .is_some_and(|p| p.to_ascii_lowercase().contains("return=minimal"))
    }

    /// Reads the body: at most [`MAX_BODY`] bytes, of a JSON media type when one is named.
    pub async fn body(&self, body: Body) -> Result<Bytes, RestError> {
        if let Some(value) = self.headers.get(http::header::CONTENT_TYPE) {
            let text = value
                .to_str()
                .map_err(|_| RestError::UnsupportedMediaType)?;
            if !is_json_media_type(text) {
                return Err(RestError::UnsupportedMediaType);
            }
        }
        let limited = http_body_util::Limited::new(body, MAX_BODY);
        match limited.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(RestError::BodyTooLarge(MAX_BODY))
            }
            Err(_) => Err(RestError::BadBody("the body could not be read".to_owned())),
        }
    }

    /// Reads the body as a JSON object; absent, empty, `null` or `{}` is an empty object.
    pub async fn json(&self, body: Body) -> Result<Map<String, Value>, RestError> {
        let bytes = self.body(body).await?;
        parse_object(&bytes)
    }

    /// Reads a Key Protect collection body and returns its resources, checking that
    /// `metadata.collectionTotal` equals their number.
    pub async fn collection(&self, body: Body) -> Result<Vec<Map<String, Value>>, RestError> {
        let bytes = self.body(body).await?;
        let object = parse_object(&bytes)?;
        if object.is_empty() {
            return Err(RestError::NoBody);
        }
        parse_collection(&object)
    }

    /// Records the call's audit event (a failure as `failure` classifies it), as the gRPC
    /// audit layer would. Fails when an event that must be on disk before the reply could not
    /// be written (the trail fails closed).
    pub async fn record(
        &self,
        failure: Option<&Classified>,
    ) -> Result<(), crate::store::StoreError> {
        let mut headers = HeaderMap::new();
        if let Some(classified) = failure {
            // A status with details always fits headers; on the impossible failure the
            // event reads as a success without a reason, which the response still contradicts.
            let _ = classified.to_status().add_header(&mut headers);
        }
        let event = build_event(
            &self.kms,
            &self.context.fields(),
            self.correlation_id.clone(),
            outcome_of(&headers, &self.context),
        );
        let durable = (self.spec.durability == Durability::BeforeReply
            && event.outcome == Outcome::Success)
            || self.kms.audit().data_events_are_durable();
        if durable {
            self.kms.audit().record_durable(event).await
        } else {
            self.kms.audit().record(event);
            Ok(())
        }
    }

    /// The correlation id (the client's, or the one made for the call).
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// Answers the call and records its audit event.
    pub async fn finish(self, result: Result<Reply, RestError>) -> Response {
        // The trail fails closed: while events cannot be written, no call is served.
        let result = match self.kms.audit().accepting() {
            Ok(()) => result,
            Err(error) => Err(RestError::from(crate::error::KmsError::Store(error))),
        };
        let failure = result.as_ref().err().map(RestError::classify);
        let (result, failure) = match self.record(failure.as_ref()).await {
            Ok(()) => (result, failure),
            Err(error) => {
                let error = RestError::from(crate::error::KmsError::Store(error));
                let failure = Some(error.classify());
                (Err(error), failure)
            }
        };
        let mut response = match (result, failure) {
            (Ok(Reply::Json(status, value)), _) => json_response(status, &value),
            (Ok(Reply::Empty(status)), _) => status.into_response(),
            (Ok(Reply::KeyTotal(total)), _) => {
                let mut response = StatusCode::OK.into_response();
                response
                    .headers_mut()
                    .insert("key-total", HeaderValue::from(total));
                response
            }
            (Err(_), Some(classified)) => {
                let mut response = json_response(
                    classified.status_code(),
                    &classified.body(self.route.failed),
                );
                if let Some(wait) = classified.retry_after {
                    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    response
                        .headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
                }
                response
            }
            (Err(_), None) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
        if let Ok(value) = HeaderValue::from_str(&self.correlation_id) {
            response.headers_mut().insert("correlation-id", value);
        }
        response
    }
}

/// A JSON response (`application/json`: the Python SDK parses only that type into a dict).
pub fn json_response(status: StatusCode, value: &Value) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    (
        status,
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// `application/json` or a Key Protect vendor JSON type, with any parameters.
pub fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/vnd.ibm.kms.") && essence.ends_with("+json"))
}

/// Parses a body as a JSON object; empty, whitespace or `null` is an empty object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, RestError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(RestError::BadBody(
            "the body must be a JSON object".to_owned(),
        )),
        Err(error) => Err(RestError::BadBody(format!("invalid JSON: {error}"))),
    }
}

/// The resources of a collection, checking `collectionTotal`.
pub fn parse_collection(object: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, RestError> {
    let resources = match field(object, "resources") {
        Some(Value::Array(items)) => items,
        _ => return Err(RestError::field("resources", "an array")),
    };
    let total = field(object, "metadata")
        .and_then(Value::as_object)
        .and_then(|m| field(m, "collectionTotal"))
        .ok_or_else(|| RestError::field("metadata.collectionTotal", "a number"))?;
    if total.as_u64() != Some(resources.len() as u64) {
        return Err(RestError::CollectionTotalMismatch);
    }
    resources
        .iter()
        .map(|r| match r {
            Value::Object(map) => Ok(map.clone()),
            _ => Err(RestError::field("resources", "an array of objects")),
        })
        .collect()
}

/// A field of `object`, its name compared case-insensitively (Go sends `KeyRingID`, Python
/// `keyRingID`).
pub fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A string field (absent or `null`: `None`).
pub fn string_field(object: &Map<String, Value>, name: &str) -> Result<Option<String>, RestError> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RestError::field(name, "a string")),
    }
}

/// A boolean field (absent or `null`: `None`).
pub fn bool_field(object: &Map<String, Value>, name: &str) -> Result<Option<bool>, RestError> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RestError::field(name, "a boolean")),
    }
}

/// An integer field (absent or `null`: `None`).
pub fn int_field(object: &Map<String, Value>, name: &str) -> Result<Option<i64>, RestError> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| RestError::field(name, "an integer")),
        Some(_) => Err(RestError::field(name, "an integer")),
    }
}

/// A field holding base64 (standard alphabet, padded).
pub fn base64_field(
    object: &Map<String, Value>,
    name: &str,
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, RestError> {
    use base64::Engine;
    match string_field(object, name)? {
        None => Ok(None),
        Some(text) => {
            let text = zeroize::Zeroizing::new(text);
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(|bytes| Some(zeroize::Zeroizing::new(bytes)))
                .map_err(|_| RestError::field(name, "base64"))
        }
    }
}

/// An array-of-strings field (absent or `null`: empty).
pub fn strings_field(object: &Map<String, Value>, name: &str) -> Result<Vec<String>, RestError> {
    match field(object, name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| RestError::field(name, "an array of strings"))
            })
            .collect(),
        Some(_) => Err(RestError::field(name, "an array of strings")),
    }
}

/// The query's parameters (later duplicates win).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Result<Self, RestError> {
        match raw {
            None => Ok(Self::default()),
            Some(raw) => serde_urlencoded::from_str(raw).map(Self).map_err(|_| {
                RestError::InvalidQueryParam {
                    name: "query",
                    must: "form-urlencoded",
                }
            }),
        }
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-negative integer parameter in `min..=max`, else `default` when absent or empty.
    pub fn int(
        &self,
        name: &'static str,
        min: usize,
        max: usize,
        default: usize,
        must: &'static str,
    ) -> Result<usize, RestError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or(RestError::InvalidQueryParam { name, must }),
        }
    }

    /// A boolean parameter (`true`/`false`), `None` when absent or empty.
    pub fn bool(&self, name: &'static str) -> Result<Option<bool>, RestError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(RestError::InvalidQueryParam {
                name,
                must: "true or false",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type(
            "application/vnd.ibm.kms.key_action_wrap+json"
        ));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
    }

    #[test]
    fn bodies_and_collections() {
        assert!(parse_object(b"").unwrap().is_empty());
        assert!(parse_object(b"null").unwrap().is_empty());
        assert!(matches!(parse_object(b"{"), Err(RestError::BadBody(_))));
        assert!(matches!(parse_object(b"[]"), Err(RestError::BadBody(_))));
        let ok = parse_object(br#"{"metadata":{"collectionTotal":1},"Resources":[{"Name":"x"}]}"#)
            .unwrap();
        let resources = parse_collection(&ok).unwrap();
        assert_eq!(
            string_field(&resources[0], "name").unwrap().as_deref(),
            Some("x")
        );
        let wrong =
            parse_object(br#"{"metadata":{"collectionTotal":2},"resources":[{}]}"#).unwrap();
        assert!(matches!(
            parse_collection(&wrong),
            Err(RestError::CollectionTotalMismatch)
        ));
    }

    #[test]
    fn queries() {
        let q = Query::parse(Some("state=&limit=10&extractable=true")).unwrap();
        assert_eq!(q.get("state"), Some(""));
        assert_eq!(q.int("limit", 1, 5000, 200, "x").unwrap(), 10);
        assert_eq!(q.int("offset", 0, 10, 0, "x").unwrap(), 0);
        assert_eq!(q.bool("extractable").unwrap(), Some(true));
        assert!(q.int("limit", 1, 5, 200, "x").is_err());
    }
}
