//! How a user's change becomes an outbox write: one place for the rules the sync engine's
//! push relies on, used by the sync engine's own changes and by the core's (a signed note's
//! several writes go into the store in one transaction).

use crate::fhir::HEARTH_WRITE_SYSTEM;
use crate::row::resource_row;
use crate::ModelError;
use hearth_store::{Method, OutboxWrite, ResourceRow};
use serde_json::{json, Value};

/// `meta.source = urn:uuid:<key>`: the mark by which a version made by this write is found
/// in the resource's history (a lost answer is not a second write).
pub fn stamp_source(resource: &mut Value, key: &str) {
    if let Some(obj) = resource.as_object_mut() {
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("source".into(), Value::String(format!("urn:uuid:{key}")));
        }
    }
}

fn resource_type(resource: &Value) -> Result<String, ModelError> {
    resource
        .get("resourceType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ModelError::invalid_data("resource", "resourceType", "is missing"))
}

/// A create under `key`: the resource gets the client identifier `urn:hearth:write|<key>`
/// (the push makes it conditional on it, `If-None-Exist`, so sent twice it is made once)
/// and no id.
pub fn create_write(key: &str, mut resource: Value) -> Result<OutboxWrite, ModelError> {
    let resource_type = resource_type(&resource)?;
    stamp_source(&mut resource, key);
    if let Some(obj) = resource.as_object_mut() {
        obj.remove("id");
        let ids = obj.entry("identifier").or_insert_with(|| json!([]));
        match ids.as_array_mut() {
            Some(ids) => ids.push(json!({"system": HEARTH_WRITE_SYSTEM, "value": key})),
            None => {
                return Err(ModelError::invalid_data(
                    &resource_type,
                    "identifier",
                    "is not a list",
                ))
            }
        }
    }
    Ok(OutboxWrite {
        idempotency_key: key.to_string(),
        resource_type,
        resource_id: None,
        method: Method::Create,
        if_match: None,
        body: Some(resource.to_string()),
    })
}

/// An update under `key` of a resource as stored and then edited: `If-Match` on the
/// `meta.versionId` it was made from, and the local copy (shown at once) that goes with it.
pub fn update_write(key: &str, mut value: Value) -> Result<(ResourceRow, OutboxWrite), ModelError> {
    let resource_type = resource_type(&value)?;
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ModelError::invalid_data(&resource_type, "id", "is missing"))?
        .to_string();
    let version = value
        .pointer("/meta/versionId")
        .and_then(Value::as_str)
        .map(str::to_string);
    stamp_source(&mut value, key);
    let local = resource_row(&value)?;
    Ok((
        local,
        OutboxWrite {
            idempotency_key: key.to_string(),
            resource_type,
            resource_id: Some(id),
            method: Method::Update,
            if_match: version.map(|v| format!("W/\"{v}\"")),
            body: Some(value.to_string()),
        },
    ))
}

/// A name-based key (a UUID laid out as RFC 9562 §5.8, from SHA-256 of `name`) for a write
/// that records one thing: the same record asked twice, or again after a crash, gets the
/// same key and is one write. `name` is a URN naming the record
/// (`urn:hearth:visit-note:Appointment/<id>/1`).
pub fn name_key(name: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_carries_its_key_as_identifier_and_source_and_no_id() {
        let w = create_write(
            "k1",
            json!({"resourceType": "DocumentReference", "id": "x", "identifier": [{"value": "a"}]}),
        )
        .unwrap();
        let body: Value = serde_json::from_str(w.body.as_deref().unwrap()).unwrap();
        assert!(body.get("id").is_none());
        assert_eq!(body["identifier"][1]["system"], HEARTH_WRITE_SYSTEM);
        assert_eq!(body["identifier"][1]["value"], "k1");
        assert_eq!(body["meta"]["source"], "urn:uuid:k1");
        assert_eq!(
            (w.method, w.resource_type.as_str()),
            (Method::Create, "DocumentReference")
        );
    }

    #[test]
    fn name_keys_are_stable_uuids() {
        let a = name_key("urn:hearth:visit-note:Appointment/a1/1");
        assert_eq!(a, name_key("urn:hearth:visit-note:Appointment/a1/1"));
        assert_ne!(a, name_key("urn:hearth:visit-note:Appointment/a1/2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
