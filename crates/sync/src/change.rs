//! The user's changes: applied to the local copy at once and queued for the EHR in one
//! durable transaction.

use crate::engine::SyncHandle;
use crate::Result;
use hearth_model::ModelError;
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
        edit(&mut value)?;
        self.queue_update(&new_key()?, value, actor)
    }

    /// Queues `value` (a resource with an id, as stored and then edited) as an update under
    /// `key`: the local copy at once, `If-Match` on the `meta.versionId` it was made from.
    fn queue_update(&self, key: &str, value: Value, actor: &str) -> Result<QueuedWrite> {
        let (local, write) = hearth_model::writes::update_write(key, value)?;
        let seq = self
            .store
            .record_local_change(Some(&local), &write, actor)?;
        self.changed_locally();
        Ok(QueuedWrite {
            seq,
            key: key.to_string(),
        })
    }

    /// Queues the creation of a resource. It gets a client identifier
    /// (`urn:hearth:write|<key>`) so that the create is conditional: sent twice, it is made
    /// once.
    pub fn queue_create(&self, resource: Value, actor: &str) -> Result<QueuedWrite> {
        self.queue_create_keyed(&new_key()?, resource, actor)
    }

    fn queue_create_keyed(&self, key: &str, resource: Value, actor: &str) -> Result<QueuedWrite> {
        let write = hearth_model::writes::create_write(key, resource)?;
        let seq = self.store.record_local_change(None, &write, actor)?;
        self.changed_locally();
        Ok(QueuedWrite {
            seq,
            key: key.to_string(),
        })
    }

    /// Queues `resource` under `key`, a key the caller derives from what the write records
    /// (a UUID: it becomes `meta.source` `urn:uuid:<key>`), so that the same record asked
    /// twice, or again after a crash, is one write: when a write with `key` is already in the
    /// outbox, whatever its state, nothing is queued and that entry is returned with `false`.
    /// With an `id` the resource is an update (see [`SyncHandle::set_appointment_status`]),
    /// without one a conditional create (see [`SyncHandle::queue_create`]).
    pub fn queue_once(
        &self,
        key: &str,
        resource: Value,
        actor: &str,
    ) -> Result<(QueuedWrite, bool)> {
        if !is_uuid(key) {
            return Err(ModelError::InvalidInput(format!("{key:?} is not a UUID")).into());
        }
        if let Some(entry) = self.store.outbox_entry_by_key(key)? {
            return Ok((
                QueuedWrite {
                    seq: entry.seq,
                    key: key.to_string(),
                },
                false,
            ));
        }
        let queued = if resource.get("id").is_some() {
            self.queue_update(key, resource, actor)?
        } else {
            self.queue_create_keyed(key, resource, actor)?
        };
        Ok((queued, true))
    }
}

/// `8-4-4-4-12` hexadecimal digits (RFC 9562 §4).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_model::row::resource_row;
    use hearth_store::Method;

    #[test]
    fn keys_are_version_4_uuids_and_differ() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    /// A handle over a fresh store (its EHR is never asked: queueing is local).
    fn handle() -> (tempfile::TempDir, SyncHandle) {
        let dir = tempfile::tempdir().unwrap();
        let key = hearth_store::DbKey::generate().unwrap();
        let store =
            std::sync::Arc::new(hearth_store::Store::open(&dir.path().join("h.db"), &key).unwrap());
        let client = hearth_fhir::Client::new(
            "http://127.0.0.1:9/fhir",
            std::sync::Arc::new(hearth_fhir::NoToken),
            hearth_fhir::RetryPolicy::default(),
        )
        .unwrap();
        let config = crate::EngineConfig::from_settings(&Default::default());
        let handle = crate::Engine::new(client, store, config).handle();
        (dir, handle)
    }

    #[test]
    fn a_keyed_write_is_queued_once_whatever_became_of_it() {
        let (_dir, h) = handle();
        let key = "0f0e0d0c-0b0a-8908-8706-050403020100";
        let encounter = json!({"resourceType": "Encounter",
            "status": "finished", "subject": {"reference": "Patient/p1"}});
        let (first, new) = h
            .queue_once(key, encounter.clone(), "Practitioner/d1")
            .unwrap();
        assert!(new);
        // Without an id: a create, conditional on the key.
        let entry = h.store.outbox_entry(first.seq).unwrap();
        assert_eq!(entry.write.method, Method::Create);
        let body: Value = serde_json::from_str(entry.write.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["identifier"][0]["value"], key);
        assert_eq!(body["meta"]["source"], format!("urn:uuid:{key}"));
        // Asked again, and again once sent: nothing new.
        let (again, new) = h
            .queue_once(key, encounter.clone(), "Practitioner/d1")
            .unwrap();
        assert_eq!((again.seq, new), (first.seq, false));
        h.store.mark_sent(first.seq, Some("1"), None).unwrap();
        let (again, new) = h.queue_once(key, encounter, "Practitioner/d1").unwrap();
        assert_eq!((again.seq, new), (first.seq, false));
        assert_eq!(h.store.outbox_summary().unwrap().sent, 1);
        assert_eq!(h.store.pending().unwrap().len(), 0);
        // A stored resource with an id is an update on its version, shown at once.
        let stored = json!({"resourceType": "Encounter", "id": "e1", "meta": {"versionId": "3"},
            "status": "planned", "subject": {"reference": "Patient/p1"}});
        h.store
            .put_resources(&[resource_row(&stored).unwrap()])
            .unwrap();
        let mut edited = stored.clone();
        edited["status"] = json!("finished");
        let other = "1f0e0d0c-0b0a-8908-8706-050403020100";
        let (update, new) = h.queue_once(other, edited, "Practitioner/d1").unwrap();
        assert!(new);
        let entry = h.store.outbox_entry(update.seq).unwrap();
        assert_eq!(entry.write.method, Method::Update);
        assert_eq!(entry.write.if_match.as_deref(), Some("W/\"3\""));
        let local: Value =
            serde_json::from_str(&h.store.resource("Encounter", "e1").unwrap().unwrap()).unwrap();
        assert_eq!(local["status"], "finished");
        assert!(h
            .queue_once("not-a-uuid", json!({"resourceType": "Encounter"}), "x")
            .is_err());
    }

    #[test]
    fn the_source_stamp_keeps_the_rest_of_meta() {
        let mut r = json!({"resourceType": "Appointment", "meta": {"versionId": "3", "tag": [{"code": "x"}]}});
        hearth_model::writes::stamp_source(&mut r, "k");
        assert_eq!(r["meta"]["source"], "urn:uuid:k");
        assert_eq!(r["meta"]["tag"][0]["code"], "x");
    }
}
