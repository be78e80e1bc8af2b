//! Sending the audit log to the EHR: each entry once, as a FHIR R4 AuditEvent in the manner
//! of IHE Basic Audit Log Patterns (BALP) and DICOM audit codes: who (the practitioner, as
//! `agent.who`, the requestor), what was done (`type`/`subtype`/`action`), to whom (the
//! patient, as `entity.what` in the patient role), when (`recorded`), from where (`source`:
//! this workstation). The create is conditional on `_source` = `urn:hearth:audit:<the
//! entry's chain link>` (also the resource's `meta.source`): a send whose answer was lost is
//! recognised by the EHR, not made twice; a sent entry is remembered in the store.

use super::*;
use hearth_store::AuditEntry;
use serde_json::{json, Value};

/// Entries sent per round at most (the rest go next round).
const AUDIT_PER_ROUND: u32 = 200;

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";

/// `meta.source` (and the conditional create's `_source`) of an entry's AuditEvent.
fn audit_source(entry: &AuditEntry) -> String {
    format!("urn:hearth:audit:{}", entry.hash)
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

/// The AuditEvent for one entry of Hearth's audit log.
fn audit_event(entry: &AuditEntry) -> Value {
    let action = entry.action.as_str();
    // type, subtype, action (C R U D E), outcome (0 success, 4 minor failure).
    let (kind, subtype, verb, outcome) = match action {
        "view-chart" => (
            coding(DCM, "110110", "Patient Record"),
            coding(RESTFUL, "read", "read"),
            "R",
            "0",
        ),
        "view-schedule" => (
            coding(EVENT_TYPE, "rest", "RESTful Operation"),
            coding(RESTFUL, "search-type", "search type"),
            "E",
            "0",
        ),
        "sign-in" | "unlock" => (
            coding(DCM, "110114", "User Authentication"),
            coding(DCM, "110122", "Login"),
            "E",
            "0",
        ),
        "sign-in-failed" => (
            coding(DCM, "110114", "User Authentication"),
            coding(DCM, "110122", "Login"),
            "E",
            "4",
        ),
        "sign-out" | "lock" => (
            coding(DCM, "110114", "User Authentication"),
            coding(DCM, "110123", "Logout"),
            "E",
            "0",
        ),
        a if a.starts_with("queue-create") => (
            coding(EVENT_TYPE, "rest", "RESTful Operation"),
            coding(RESTFUL, "create", "create"),
            "C",
            "0",
        ),
        a if a.starts_with("queue-delete") => (
            coding(EVENT_TYPE, "rest", "RESTful Operation"),
            coding(RESTFUL, "delete", "delete"),
            "D",
            "0",
        ),
        _ => (
            coding(EVENT_TYPE, "rest", "RESTful Operation"),
            coding(RESTFUL, "update", "update"),
            "U",
            "0",
        ),
    };
    let reference = |text: &str| {
        text.split_once('/')
            .filter(|(ty, id)| {
                ty.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && hearth_fhir::is_id(id)
            })
            .map(|_| text.to_string())
    };
    let who = match reference(&entry.actor) {
        Some(r) => json!({ "reference": r }),
        None => json!({ "display": entry.actor }),
    };
    let mut event = json!({
        "resourceType": "AuditEvent",
        "meta": { "source": audit_source(entry) },
        "type": kind,
        "subtype": [subtype],
        "action": verb,
        "recorded": entry.at,
        "outcome": outcome,
        "agent": [{
            "type": { "coding": [coding(
                "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP",
                "information recipient")] },
            "who": who,
            "requestor": true
        }],
        "source": {
            "site": "Hearth workstation",
            "observer": { "display": "Hearth" },
            "type": [coding(
                "http://terminology.hl7.org/CodeSystem/security-source-type", "1",
                "User Device")]
        }
    });
    let entity = match reference(&entry.entity) {
        Some(r) if r.starts_with("Patient/") => Some(json!({
            "what": { "reference": r },
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient")
        })),
        Some(r) => Some(json!({
            "what": { "reference": r },
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object")
        })),
        None if !entry.entity.is_empty() => Some(json!({
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
            "description": entry.entity
        })),
        None => None,
    };
    if let (Some(entity), Some(map)) = (entity, event.as_object_mut()) {
        map.insert("entity".into(), json!([entity]));
    }
    event
}

impl Engine {
    /// Sends the audit entries not sent yet, oldest first, each once. Stops at the first sign
    /// the EHR is unreachable or the sign-in lapsed (the round stops: they go next round), or
    /// at a server error (the round goes on: the audit log never holds up the records); an
    /// entry the EHR refuses for good (4xx) is remembered as refused and not sent again.
    pub async fn send_audit(&self, round: &mut Round) -> Result<()> {
        let store = self.handle.store.clone();
        let entries = blocking(move || store.audit_unsent(AUDIT_PER_ROUND)).await?;
        for entry in entries {
            let body = audit_event(&entry).to_string();
            let condition = format!("_source={}", audit_source(&entry));
            match self
                .client()
                .create("AuditEvent", &body, Some(&condition))
                .await
            {
                Ok(written) => {
                    let resource = format!("AuditEvent/{}", written.resource.id);
                    self.store()
                        .mark_audit_sent(entry.seq, Some(&resource), None)?;
                    round.audit_sent += 1;
                }
                Err(
                    e @ (FhirError::Unreachable { .. }
                    | FhirError::Unauthorized(_)
                    | FhirError::Auth(_)),
                ) => return Err(e.into()),
                Err(FhirError::Server { .. }) => break,
                Err(e) => {
                    self.store()
                        .mark_audit_sent(entry.seq, None, Some(&e.to_string()))?;
                }
            }
        }
        Ok(())
    }
}
