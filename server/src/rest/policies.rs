//! Key policies (`GET`/`PUT keys/{id}/policies[?policy=rotation|dualAuthDelete]`) and instance
//! policies (`GET`/`PUT instance/policies[?policy=…]`) over REST, through the same
//! `kms::policies` calls as gRPC. kmsim's instance policies are `dualAuthDelete`, `rotation`
//! and `keyCreateImportAccess`; the network and metrics policies are refused as unsupported.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use crate::kms::Kms;
use crate::kms::policies::{
    CreateImportRules, InstancePoliciesView, InstancePolicyChange, KeyPoliciesView,
    KeyPolicyChange, RotationInterval, RotationSetting,
};
use crate::rest::call::{Call, Query, Reply, Route, bool_field, field, int_field, string_field};
use crate::rest::error::RestError;
use crate::rest::{blocking, json};

const KEY_GET: Route = Route {
    grpc: "KeyService/GetKeyPolicies",
    rest: "GET /api/v2/keys/{id}/policies",
    failed: "Key policies could not be retrieved",
};
const KEY_PUT: Route = Route {
    grpc: "KeyService/SetKeyPolicies",
    rest: "PUT /api/v2/keys/{id}/policies",
    failed: "Key policies could not be updated",
};
const INSTANCE_GET: Route = Route {
    grpc: "InstanceService/GetInstancePolicies",
    rest: "GET /api/v2/instance/policies",
    failed: "Instance policies could not be retrieved",
};
const INSTANCE_PUT: Route = Route {
    grpc: "InstanceService/SetInstancePolicies",
    rest: "PUT /api/v2/instance/policies",
    failed: "Instance policies could not be updated",
};

/// The `?policy=` filter: `None` for every policy.
fn policy_filter(query: &Query, allowed: &[&'static str]) -> Result<Option<String>, RestError> {
    match query.get("policy") {
        None | Some("") => Ok(None),
        Some(p) if allowed.contains(&p) => Ok(Some(p.to_owned())),
        Some(_) => Err(RestError::InvalidQueryParam {
            name: "policy",
            must: "the name of a policy kmsim serves",
        }),
    }
}

fn rotation_setting(object: &Map<String, Value>) -> Result<RotationSetting, RestError> {
    let months = int_field(object, "interval_month")?
        .ok_or_else(|| RestError::field("rotation.interval_month", "an integer from 1 to 12"))?;
    let interval = RotationInterval::from_months(months)
        .ok_or_else(|| RestError::field("rotation.interval_month", "an integer from 1 to 12"))?;
    Ok(RotationSetting {
        enabled: bool_field(object, "enabled")?.unwrap_or(true),
        interval,
    })
}

fn key_policies_body(view: &KeyPoliciesView, only: Option<&str>) -> Value {
    let policies = &view.record.policies;
    let mut resources = Vec::new();
    if only.is_none_or(|p| p == "rotation") {
        if let Some(rotation) = &policies.rotation {
            resources.push(json::rotation_policy(rotation, &view.instance_crn));
        }
    }
    if only.is_none_or(|p| p == "dualAuthDelete") {
        if let Some(dual) = &policies.dual_auth_delete {
            resources.push(json::dual_auth_policy(dual, &view.instance_crn));
        }
    }
    json::collection(json::POLICY_TYPE, resources)
}

/// `GET /api/v2/keys/{id}/policies`: the key's policies that are set.
pub async fn get_key(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, KEY_GET, headers);
    let result = (|| {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let only = policy_filter(&query, &["rotation", "dualAuthDelete"])?;
        let key = call.key(&id)?;
        let view = call.kms().get_key_policies(&who, &key)?;
        Ok(Reply::Json(
            StatusCode::OK,
            key_policies_body(&view, only.as_deref()),
        ))
    })();
    call.finish(result).await
}

/// `PUT /api/v2/keys/{id}/policies`: sets the rotation and/or dual-authorization delete
/// policy; 200 with the policies.
pub async fn put_key(
    State(kms): State<Arc<Kms>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call::start(&kms, KEY_PUT, headers);
    let result = async {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let only = policy_filter(&query, &["rotation", "dualAuthDelete"])?;
        let key = call.key(&id)?;
        let resources = call.collection(body).await?;
        let mut change = KeyPolicyChange {
            rotation: None,
            dual_auth_delete: None,
        };
        for resource in &resources {
            if let Some(rotation) = field(resource, "rotation").and_then(Value::as_object) {
                change.rotation = Some(rotation_setting(rotation)?);
            } else if let Some(dual) = field(resource, "dualAuthDelete").and_then(Value::as_object)
            {
                change.dual_auth_delete = Some(
                    bool_field(dual, "enabled")?
                        .ok_or_else(|| RestError::field("dualAuthDelete.enabled", "a boolean"))?,
                );
            } else {
                return Err(RestError::field(
                    "resources",
                    "rotation or dualAuthDelete policies",
                ));
            }
        }
        match only.as_deref() {
            Some("rotation") if change.dual_auth_delete.is_some() || change.rotation.is_none() => {
                return Err(RestError::field(
                    "resources",
                    "a rotation policy (?policy=rotation)",
                ));
            }
            Some("dualAuthDelete")
                if change.rotation.is_some() || change.dual_auth_delete.is_none() =>
            {
                return Err(RestError::field(
                    "resources",
                    "a dualAuthDelete policy (?policy=dualAuthDelete)",
                ));
            }
            _ => {}
        }
        let view = blocking(call.kms(), move |kms| {
            kms.set_key_policies(&who, &key, change)
        })
        .await?;
        Ok(Reply::Json(StatusCode::OK, key_policies_body(&view, None)))
    }
    .await;
    call.finish(result).await
}

const INSTANCE_POLICIES: [&str; 3] = ["dualAuthDelete", "rotation", "keyCreateImportAccess"];

fn instance_policies_body(view: &InstancePoliciesView, only: Option<&str>) -> Value {
    let p = &view.policies;
    let mut resources = Vec::new();
    let wanted = |name: &str| only.is_none_or(|o| o == name);
    if let (true, Some(dual)) = (wanted("dualAuthDelete"), &p.dual_auth_delete) {
        resources.push(json::instance_policy(
            "dualAuthDelete",
            dual.enabled,
            None,
            &dual.meta,
        ));
    }
    if let (true, Some(rotation)) = (wanted("rotation"), &p.rotation) {
        resources.push(json::instance_policy(
            "rotation",
            rotation.enabled,
            Some(json!({"interval_month": rotation.interval.months()})),
            &rotation.meta,
        ));
    }
    if let (true, Some(access)) = (wanted("keyCreateImportAccess"), &p.key_create_import_access) {
        let r = &access.rules;
        resources.push(json::instance_policy(
            "keyCreateImportAccess",
            r.enabled,
            Some(json!({
                "create_root_key": r.create_root_key,
                "create_standard_key": r.create_standard_key,
                "import_root_key": r.import_root_key,
                "import_standard_key": r.import_standard_key,
                "enforce_token": r.enforce_token,
            })),
            &access.meta,
        ));
    }
    json::collection(json::POLICY_TYPE, resources)
}

/// `GET /api/v2/instance/policies`.
pub async fn get_instance(
    State(kms): State<Arc<Kms>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let call = Call::start(&kms, INSTANCE_GET, headers);
    let result = (|| {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let only = policy_filter(&query, &INSTANCE_POLICIES)?;
        let instance = call.instance()?;
        let view = call.kms().get_instance_policies(&who, &instance)?;
        Ok(Reply::Json(
            StatusCode::OK,
            instance_policies_body(&view, only.as_deref()),
        ))
    })();
    call.finish(result).await
}

fn access_rules(
    enabled: bool,
    attributes: Option<&Map<String, Value>>,
) -> Result<CreateImportRules, RestError> {
    let flag = |name: &str| -> Result<bool, RestError> {
        Ok(match attributes {
            Some(a) => bool_field(a, name)?.unwrap_or(true),
            None => true,
        })
    };
    Ok(CreateImportRules {
        enabled,
        create_root_key: flag("create_root_key")?,
        create_standard_key: flag("create_standard_key")?,
        import_root_key: flag("import_root_key")?,
        import_standard_key: flag("import_standard_key")?,
        enforce_token: match attributes {
            Some(a) => bool_field(a, "enforce_token")?.unwrap_or(false),
            None => false,
        },
    })
}

/// `PUT /api/v2/instance/policies`: 204.
pub async fn put_instance(
    State(kms): State<Arc<Kms>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call::start(&kms, INSTANCE_PUT, headers);
    let result = async {
        let who = call.who()?;
        let query = Query::parse(raw.as_deref())?;
        let only = policy_filter(&query, &INSTANCE_POLICIES)?;
        let instance = call.instance()?;
        let resources = call.collection(body).await?;
        let mut change = InstancePolicyChange {
            dual_auth_delete: None,
            rotation: None,
            key_create_import_access: None,
        };
        for resource in &resources {
            let kind = string_field(resource, "policy_type")?
                .ok_or_else(|| RestError::field("policy_type", "the policy's name"))?;
            if only.as_deref().is_some_and(|o| o != kind) {
                return Err(RestError::field(
                    "policy_type",
                    "the policy named by ?policy=",
                ));
            }
            let data = field(resource, "policy_data")
                .and_then(Value::as_object)
                .ok_or_else(|| RestError::field("policy_data", "an object"))?;
            let enabled = bool_field(data, "enabled")?
                .ok_or_else(|| RestError::field("policy_data.enabled", "a boolean"))?;
            let attributes = field(data, "attributes").and_then(Value::as_object);
            match kind.as_str() {
                "dualAuthDelete" => change.dual_auth_delete = Some(enabled),
                "rotation" => {
                    let mut setting = rotation_setting(attributes.unwrap_or(&Map::new()))?;
                    setting.enabled = enabled;
                    change.rotation = Some(setting);
                }
                "keyCreateImportAccess" => {
                    change.key_create_import_access = Some(access_rules(enabled, attributes)?);
                }
                "allowedNetwork" | "allowedIP" | "metrics" => {
                    return Err(RestError::Unsupported(
                        "the allowedNetwork, allowedIP and metrics instance policies",
                    ));
                }
                _ => {
                    return Err(RestError::field(
                        "policy_type",
                        "dualAuthDelete, rotation or keyCreateImportAccess",
                    ));
                }
            }
        }
        if resources.is_empty() {
            return Err(RestError::field("resources", "at least one policy"));
        }
        blocking(call.kms(), move |kms| {
            kms.set_instance_policies(&who, &instance, change)
        })
        .await?;
        Ok(Reply::Empty(StatusCode::NO_CONTENT))
    }
    .await;
    call.finish(result).await
}
