//! The user's changes: applied to the local copy at once and queued for the EHR in one
//! durable transaction.

use crate::engine::{SyncHandle, HEARTH_WRITE_SYSTEM};
use crate::Result;
use hearth_model::row::resource_row;
use hearth_model::ModelError;
use hearth_store::{Method, OutboxWrite};
use serde_json::{json, Value};

/// A write saved in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedWrite {
    pub seq: i64,
    /// The idempotency key; also `meta.source` (`urn:uuid:<key>`) of what is sent.
    pub key: String,
}

/// The R5 `Appointment.virtualService` as an R4 cross-version extension.
const VIRTUAL_SERVICE: &str = hearth_model::fhir::VIRTUAL_SERVICE_EXTENSION;

/// Appointment statuses a user may set (FHIR R4 AppointmentStatus).
const APPOINTMENT_STATUSES: &[&str] = &[
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
];

pub(crate) fn new_key() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| ModelError::Unavailable(format!("the system random source ({e})")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn stamp_source(resource: &mut Value, key: &str) {
    if let Some(obj) = resource.as_object_mut() {
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("source".into(), Value::String(format!("urn:uuid:{key}")));
        }
    }
}

impl SyncHandle {
    /// Sets an appointment's status (arrived, no-show, ...): the local copy changes at once
    /// and the update is queued with `If-Match` on the version it was made from. Every other
    /// element, known or not, is sent back as it was.
    pub fn set_appointment_status(
        &self,
        appointment_id: &str,
        status: &str,
        actor: &str,
    ) -> Result<QueuedWrite> {
        if !APPOINTMENT_STATUSES.contains(&status) {
            return Err(ModelError::InvalidInput(format!(
                "{status:?} is not an appointment status"
            ))
            .into());
        }
        self.update_appointment(appointment_id, actor, |value| {
            value["status"] = Value::String(status.to_string());
            Ok(())
        })
    }

    /// Puts the visit's join link into the appointment, for the EHR's reminders: the R5
    /// `virtualService` (as the R4 cross-version extension) gets `addressUrl`, and a
    /// `channelType` of `hearth-visit` if it had none. Queued like any change.
    pub fn set_appointment_join_link(
        &self,
        appointment_id: &str,
        url: &str,
        actor: &str,
    ) -> Result<QueuedWrite> {
        self.update_appointment(appointment_id, actor, |value| {
            let what = format!("Appointment/{appointment_id}");
            let obj = value
                .as_object_mut()
                .ok_or_else(|| ModelError::invalid_data(&what, "(document)", "is not an object"))?;
            let exts = obj.entry("extension").or_insert_with(|| json!([]));
            let exts = exts
                .as_array_mut()
                .ok_or_else(|| ModelError::invalid_data(&what, "extension", "is not a list"))?;
            let service = match exts
                .iter()
                .position(|e| e.get("url").and_then(Value::as_str) == Some(VIRTUAL_SERVICE))
            {
                Some(i) => &mut exts[i],
                None => {
                    exts.push(json!({"url": VIRTUAL_SERVICE, "extension": [
                        {"url": "channelType", "valueCoding": {
                            "system": "http://hl7.org/fhir/virtual-service-type",
                            "code": "hearth-visit", "display": "Hearth virtual visit"}}
                    ]}));
                    let last = exts.len() - 1;
                    &mut exts[last]
                }
            };
            let parts = service
                .as_object_mut()
                .map(|o| o.entry("extension").or_insert_with(|| json!([])))
                .and_then(Value::as_array_mut)
                .ok_or_else(|| {
                    ModelError::invalid_data(&what, "extension.virtualService", "is not a list")
                })?;
            parts.retain(|p| p.get("url").and_then(Value::as_str) != Some("addressUrl"));
            parts.push(json!({"url": "addressUrl", "valueUrl": url}));
            Ok(())
        })
    }

    /// Changes an appointment with `edit`: the local copy at once, the update queued with
    /// `If-Match` on the version it was made from. Every element `edit` leaves alone, known
    /// or not, is sent back as it was.
    fn update_appointment(
        &self,
        appointment_id: &str,
        actor: &str,
        edit: impl FnOnce(&mut Value) -> std::result::Result<(), ModelError>,
    ) -> Result<QueuedWrite> {
        let what = format!("Appointment/{appointment_id}");
        let json = self
            .store
            .resource("Appointment", appointment_id)?
            .ok_or_else(|| ModelError::NotFound { what: what.clone() })?;
        let mut value: Value = serde_json::from_str(&json)
            .map_err(|e| ModelError::invalid_data(&what, "(document)", e.to_string()))?;
        let version = value
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .map(str::to_string);
        edit(&mut value)?;
        let key = new_key()?;
        stamp_source(&mut value, &key);
        let local = resource_row(&value)?;
        let write = OutboxWrite {
            idempotency_key: key.clone(),
            resource_type: "Appointment".into(),
            resource_id: Some(appointment_id.to_string()),
            method: Method::Update,
            if_match: version.map(|v| format!("W/\"{v}\"")),
            body: Some(value.to_string()),
        };
        let seq = self
            .store
            .record_local_change(Some(&local), &write, actor)?;
        self.changed_locally();
        Ok(QueuedWrite { seq, key })
    }

    /// Queues the creation of a resource. It gets a client identifier
    /// (`urn:hearth:write|<key>`) so that the create is conditional: sent twice, it is made
    /// once.
    pub fn queue_create(&self, mut resource: Value, actor: &str) -> Result<QueuedWrite> {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| ModelError::invalid_data("resource", "resourceType", "is missing"))?
            .to_string();
        let key = new_key()?;
        stamp_source(&mut resource, &key);
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
                    )
                    .into())
                }
            }
        }
        let write = OutboxWrite {
            idempotency_key: key.clone(),
            resource_type,
            resource_id: None,
            method: Method::Create,
            if_match: None,
            body: Some(resource.to_string()),
        };
        let seq = self.store.record_local_change(None, &write, actor)?;
        self.changed_locally();
        Ok(QueuedWrite { seq, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_version_4_uuids_and_differ() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn the_source_stamp_keeps_the_rest_of_meta() {
        let mut r = json!({"resourceType": "Appointment", "meta": {"versionId": "3", "tag": [{"code": "x"}]}});
        stamp_source(&mut r, "k");
        assert_eq!(r["meta"]["source"], "urn:uuid:k");
        assert_eq!(r["meta"]["tag"][0]["code"], "x");
    }
}
