//! Domain values as Key Protect's REST API shows them: keys (`application/vnd.ibm.kms.key+json`,
//! `state` as its number, RFC 3339 dates), key versions, collections, key policies and
//! registrations. Rendering only; nothing here decides a rule.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::clock::Timestamp;
use crate::kms::KeyView;
use crate::kms::ids::Crn;
use crate::kms::policies::{DualAuthPolicy, PolicyMeta, RotationPolicy};
use crate::kms::records::{KeyKind, VersionRecord};
use crate::kms::registrations::RegistrationView;
use crate::kms::state::KeyState;

/// The key media type.
pub const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
/// The policy media type.
pub const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";
/// The registration media type.
pub const REGISTRATION_TYPE: &str = "application/vnd.ibm.kms.registration+json";
/// The alias media type.
pub const ALIAS_TYPE: &str = "application/vnd.ibm.kms.alias+json";
/// The key ring media type.
pub const KEY_RING_TYPE: &str = "application/vnd.ibm.kms.key_ring+json";

/// `{metadata:{collectionType, collectionTotal}, resources}`.
pub fn collection(kind: &str, resources: Vec<Value>) -> Value {
    json!({
        "metadata": {"collectionType": kind, "collectionTotal": resources.len()},
        "resources": resources,
    })
}

/// An RFC 3339 date.
pub fn date(time: Timestamp) -> Value {
    Value::String(time.to_string())
}

/// `{id, creationDate}` of a key version.
pub fn version(version: &VersionRecord) -> Value {
    json!({"id": version.id.to_string(), "creationDate": date(version.create_time)})
}

/// A key; with its payload when the view carries one (a standard key's `GET`).
pub fn key(view: &KeyView) -> Value {
    let record = &view.record;
    let deletion = record.deletion.as_ref();
    let destroyed = view.state == KeyState::Destroyed;
    let mut map = Map::new();
    let mut put = |name: &str, value: Value| {
        map.insert(name.to_owned(), value);
    };
    put("type", json!(KEY_TYPE));
    put("id", json!(record.id.to_string()));
    put("name", json!(record.name));
    if !record.description.is_empty() {
        put("description", json!(record.description));
    }
    put("state", json!(view.state as i32));
    put("crn", json!(view.crn.to_string()));
    put("extractable", json!(record.kind == KeyKind::Standard));
    put("imported", json!(record.imported));
    put("algorithmType", json!("AES"));
    put("algorithmBitSize", json!(record.size_bytes * 8));
    put("algorithmMode", json!("CBC_PAD"));
    put(
        "algorithmMetadata",
        json!({"bitLength": (record.size_bytes * 8).to_string(), "mode": "CBC_PAD"}),
    );
    put("createdBy", json!(record.created_by));
    put("creationDate", date(record.create_time));
    put("lastUpdateDate", date(record.update_time));
    if let Some(time) = record.last_rotate_time {
        put("lastRotateDate", date(time));
    }
    if let Some(current) = record.current_version() {
        put("keyVersion", version(current));
    }
    put("keyRingID", json!("default"));
    put(
        "aliases",
        json!(
            record
                .aliases
                .iter()
                .map(|a| a.alias.to_string())
                .collect::<Vec<_>>()
        ),
    );
    if let Some(time) = record.expiration_time {
        put("expirationDate", date(time));
    }
    put("deleted", json!(destroyed));
    if let Some(d) = deletion {
        put("deletedBy", json!(d.by));
        put("deletionDate", date(d.time));
        put(
            "purgeAllowed",
            json!(destroyed && view.now >= d.purge_allowed_time()),
        );
        put("purgeAllowedFrom", date(d.purge_allowed_time()));
        put("purgeScheduledOn", date(d.purge_scheduled_time()));
        put(
            "restoreAllowed",
            json!(destroyed && view.now < d.restore_expire_time()),
        );
        put("restoreExpirationDate", date(d.restore_expire_time()));
    }
    let pending = record.pending_deletion_authorization(view.now);
    let mut dual = json!({
        "enabled": record.dual_auth_enabled(),
        "keySetForDeletion": pending.is_some(),
    });
    if let Some(p) = pending {
        dual["authExpiration"] = date(p.expire_time());
    }
    put("dualAuthDelete", dual);
    if let Some(rotation) = &record.policies.rotation {
        put(
            "rotation",
            json!({"enabled": rotation.enabled, "interval_month": rotation.interval.months()}),
        );
    }
    if let Some(payload) = &view.payload {
        put("payload", json!(STANDARD.encode(payload.as_slice())));
    }
    Value::Object(map)
}

/// A key without its payload (`metadata`, lists).
pub fn key_metadata(view: &KeyView) -> Value {
    let mut value = key(view);
    if let Value::Object(map) = &mut value {
        map.remove("payload");
    }
    value
}

fn policy_meta(meta: &PolicyMeta, instance: &Crn) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("id".to_owned(), json!(meta.id.to_string()));
    map.insert("crn".to_owned(), json!(meta.crn(instance)));
    map.insert("type".to_owned(), json!(POLICY_TYPE));
    map.insert("createdBy".to_owned(), json!(meta.created_by));
    map.insert("creationDate".to_owned(), date(meta.create_time));
    map.insert("updatedBy".to_owned(), json!(meta.updated_by));
    map.insert("lastUpdateDate".to_owned(), date(meta.update_time));
    map
}

/// A key's rotation policy resource.
pub fn rotation_policy(policy: &RotationPolicy, instance: &Crn) -> Value {
    let mut map = policy_meta(&policy.meta, instance);
    map.insert(
        "rotation".to_owned(),
        json!({"enabled": policy.enabled, "interval_month": policy.interval.months()}),
    );
    Value::Object(map)
}

/// A key's dual-authorization delete policy resource.
pub fn dual_auth_policy(policy: &DualAuthPolicy, instance: &Crn) -> Value {
    let mut map = policy_meta(&policy.meta, instance);
    map.insert(
        "dualAuthDelete".to_owned(),
        json!({"enabled": policy.enabled}),
    );
    Value::Object(map)
}

/// An instance policy resource: `{policy_type, policy_data:{enabled, attributes?}, ...}`.
pub fn instance_policy(
    policy_type: &str,
    enabled: bool,
    attributes: Option<Value>,
    meta: &PolicyMeta,
) -> Value {
    let mut data = json!({"enabled": enabled});
    if let Some(attributes) = attributes {
        data["attributes"] = attributes;
    }
    json!({
        "policy_type": policy_type,
        "policy_data": data,
        "createdBy": meta.created_by,
        "creationDate": date(meta.create_time),
        "updatedBy": meta.updated_by,
        "lastUpdated": date(meta.update_time),
    })
}

/// A registration.
pub fn registration(view: &RegistrationView) -> Value {
    let r = &view.record;
    let mut key_version = json!({"id": r.key_version.to_string()});
    if let Some(time) = view.key_version_create_time {
        key_version["creationDate"] = date(time);
    }
    json!({
        "keyId": r.key.to_string(),
        "resourceCrn": r.resource_crn.as_str(),
        "createdBy": r.created_by,
        "creationDate": date(r.create_time),
        "updatedBy": r.updated_by,
        "lastUpdated": date(r.update_time),
        "description": r.description,
        "registrationMetadata": "",
        "preventKeyDeletion": r.prevent_key_deletion,
        "keyVersion": key_version,
    })
}
