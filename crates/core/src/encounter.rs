//! The Encounter of a virtual visit, built from the visit service's record of who was in the
//! call and when (its [`VisitSnapshot`]). Pure: the workstation fetches, this builds, the sync
//! engine's outbox carries it to the EHR exactly once (under [`encounter_key`]).
//!
//! FHIR R4 (4.0.1) Encounter:
//! - `status` `finished`, `class` v3-ActCode `VR` ("virtual": "a patient encounter where the
//!   patient and the practitioner(s) are not in the same physical location"; in
//!   v3-ActEncounterCode, the value set R4 binds `Encounter.class` to);
//! - `subject` = the Appointment's patient, `appointment` = the Appointment;
//! - `period` = the call: from the first admission of the patient or a guest to the last
//!   leave of the patient or a guest. A clinician is "admitted" as soon as they open the room
//!   (Hearth's presence connection hosts every virtual visit of the day without media), so a
//!   clinician's admission does not start the encounter, nor does a clinician who stays on
//!   after everyone else has gone make it longer;
//! - `participant[]`, one per person and stretch of presence (times a person was in the call
//!   more than once stay apart; overlapping connections of one person are one), each with its
//!   `period` inside the Encounter's, which R4 allows ("can overlap or be sub-sets of the
//!   overall encounter's period", Encounter.participant.period). Never-admitted participants
//!   (left in the waiting room) are not in it.
//!
//! Who is who:
//! - Clinicians: the signed-in clinician's connections (the service names a host by their
//!   token's `name` claim, the name Hearth's sign-in knows too) get `individual.reference` =
//!   their `fhirUser` (a Practitioner or PractitionerRole) and type PPRF (primary performer);
//!   another clinician is known to the service by name only: `individual.display`, type SPRF
//!   (secondary performer). Both codes are v3-ParticipationType, in R4's
//!   encounter-participant-type value set.
//! - Guests (an interpreter or a family member: the link does not say which): type PART
//!   ("involved in some manner in the act, but does not qualify how": the code v3 keeps for
//!   when no more specific type is known), `individual.display` = the name they typed (no
//!   resource exists to reference).
//! - The patient: R4 `Encounter.participant.individual` is Reference(Practitioner |
//!   PractitionerRole | RelatedPerson), "persons involved in the encounter other than the
//!   patient", so it cannot name a Patient. Their own times are kept all the same: a
//!   participant with their `period` whose `individual` carries the R5 element
//!   `Encounter.participant.actor` (which may reference the Patient: "the patient ... is also
//!   included here to indicate that the patient was actually participating in the
//!   encounter") as its cross-version extension, whose context is
//!   `Encounter.participant.individual`. A reader that ignores the extension sees a
//!   participant without an individual, which R4 allows (0..1).

use crate::fhir::Resource;
use crate::CoreError;
use hearth_model::fhir::{reference_id, HEARTH_WRITE_SYSTEM};
use hearth_model::row::owning_patient;
use hearth_visit_protocol::{Role, VisitSnapshot};
use serde_json::{json, Map, Value};

/// `Encounter.class`: v3-ActCode.
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// `Encounter.participant.type`: v3-ParticipationType.
pub const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
/// R5's `Encounter.participant.actor` as an R4 cross-version extension (on `individual`).
pub const R5_PARTICIPANT_ACTOR: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.participant.actor";

/// The clinician recording the Encounter: their `fhirUser` and the name their sign-in gives.
#[derive(Debug, Clone, Copy)]
pub struct Clinician<'a> {
    pub reference: &'a str,
    pub name: Option<&'a str>,
}

/// The idempotency key of the Encounter write of `appointment_id`'s visit: the same for
/// every ask, on every workstation, so that the outbox holds it once and the EHR makes it
/// once (the create is conditional on `urn:hearth:write|<key>`). A name-based UUIDv8 (RFC
/// 9562 §5.8 and Appendix B.2: SHA-256 of the name, version and variant bits set).
pub fn encounter_key(appointment_id: &str) -> String {
    hearth_model::writes::name_key(&format!(
        "urn:hearth:visit-encounter:Appointment/{appointment_id}"
    ))
}

/// Whether `encounter` names `Appointment/<appointment_id>` in its `appointment` list.
fn is_for(encounter: &Value, appointment_id: &str) -> bool {
    encounter
        .get("appointment")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| reference_id(Some(r), "Appointment") == Some(appointment_id))
}

/// Whether this workstation's write under `key` made (`identifier`) or last changed
/// (`meta.source`) `encounter`.
pub fn written_with(encounter: &Value, key: &str) -> bool {
    let source = format!("urn:uuid:{key}");
    encounter.pointer("/meta/source").and_then(Value::as_str) == Some(source.as_str())
        || encounter
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|i| {
                i.get("system").and_then(Value::as_str) == Some(HEARTH_WRITE_SYSTEM)
                    && i.get("value").and_then(Value::as_str) == Some(key)
            })
}

/// The stored Encounter of the appointment's visit among `encounters` (the patient's): one
/// Hearth wrote under `key` first, else the first whose `appointment` names it.
pub fn stored_for_appointment<'a>(
    encounters: &'a [Value],
    appointment_id: &str,
    key: &str,
) -> Option<&'a Value> {
    let mine = encounters.iter().filter(|e| is_for(e, appointment_id));
    mine.clone()
        .find(|e| written_with(e, key))
        .or_else(|| mine.into_iter().next())
}

/// The patient's id in an Appointment (the participant whose actor is a Patient).
pub fn patient_of(appointment: &Value) -> Result<String, CoreError> {
    let r = Resource::new(appointment)?;
    owning_patient(&r)
        .ok_or_else(|| CoreError::invalid_data(r.label(), "participant.actor", "names no Patient"))
}

/// An epoch-millisecond time as a FHIR `instant` in UTC (`2026-03-10T15:04:05.123Z`).
pub fn instant(ms: u64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)?;
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn period(from: u64, to: u64, what: &str) -> Result<Value, CoreError> {
    let at = |ms| {
        instant(ms).ok_or_else(|| {
            CoreError::invalid_data(
                what,
                "participants",
                format!("has a time out of range ({ms})"),
            )
        })
    };
    Ok(json!({"start": at(from)?, "end": at(to)?}))
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn participation(code: &str, display: &str) -> Value {
    json!([{"coding": [coding(PARTICIPATION_TYPE, code, display)]}])
}

/// The call: from the first admission of the patient or a guest to the last leave of either.
/// A member still in the visit has left when it ended (the service sets their leave then),
/// so a missing leave is the visit's last one.
fn call_window(snapshot: &VisitSnapshot, what: &str) -> Result<(u64, u64), CoreError> {
    let last_leave = snapshot.participants.iter().filter_map(|p| p.left_ms).max();
    let mut window: Option<(u64, u64)> = None;
    for p in snapshot
        .participants
        .iter()
        .filter(|p| p.role != Role::Clinician)
    {
        let Some(admitted) = p.admitted_ms else {
            continue;
        };
        let left = p.left_ms.or(last_leave).unwrap_or(admitted).max(admitted);
        window = Some(match window {
            None => (admitted, left),
            Some((a, l)) => (a.min(admitted), l.max(left)),
        });
    }
    window.ok_or_else(|| CoreError::VisitNotHeld {
        appointment: what.to_owned(),
    })
}

/// One person's stretches of presence in the call, merged where their connections overlap.
struct Presence<'a> {
    role: Role,
    /// The name the service knows them by (display only; never logged).
    name: &'a str,
    stretches: Vec<(u64, u64)>,
}

fn presences<'a>(snapshot: &'a VisitSnapshot, (start, end): (u64, u64)) -> Vec<Presence<'a>> {
    let last_leave = snapshot.participants.iter().filter_map(|p| p.left_ms).max();
    let mut people: Vec<Presence<'a>> = Vec::new();
    for p in &snapshot.participants {
        let Some(admitted) = p.admitted_ms else {
            // Never let in from the waiting room: not in the encounter.
            continue;
        };
        let left = p.left_ms.or(last_leave).unwrap_or(end);
        if left < start || admitted > end {
            continue;
        }
        let stretch = (admitted.max(start), left.min(end));
        // The patient is one person whatever name they typed; others are told apart by name.
        let same = |q: &Presence<'_>| {
            q.role == p.role && (p.role == Role::Patient || q.name == p.name.as_str())
        };
        match people.iter_mut().find(|q| same(q)) {
            Some(q) => q.stretches.push(stretch),
            None => people.push(Presence {
                role: p.role,
                name: &p.name,
                stretches: vec![stretch],
            }),
        }
    }
    for person in &mut people {
        person.stretches.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, l) in person.stretches.drain(..) {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(l),
                _ => merged.push((a, l)),
            }
        }
        person.stretches = merged;
    }
    let rank = |r: Role| match r {
        Role::Clinician => 0,
        Role::Patient => 1,
        Role::Guest => 2,
    };
    people.sort_by_key(|p| (rank(p.role), p.stretches.first().copied()));
    people
}

/// The Encounter of the appointment's ended visit: `existing` (the one stored for the
/// appointment, if any) updated with every other element kept, else a new one. See the
/// module's documentation for what goes where.
pub fn visit_encounter(
    appointment: &Value,
    existing: Option<&Value>,
    snapshot: &VisitSnapshot,
    clinician: Option<Clinician<'_>>,
) -> Result<Value, CoreError> {
    let appt = Resource::new(appointment)?;
    let what = appt.label();
    if !snapshot.ended {
        return Err(CoreError::VisitNotEnded {
            appointment: what.clone(),
        });
    }
    let patient = format!("Patient/{}", patient_of(appointment)?);
    let window = call_window(snapshot, &what)?;
    let me = clinician.filter(|c| !c.reference.is_empty());

    let mut ours: Vec<Value> = Vec::new();
    for person in presences(snapshot, window) {
        let is_me =
            person.role == Role::Clinician && me.is_some_and(|c| c.name == Some(person.name));
        for &(from, to) in &person.stretches {
            let mut entry = Map::new();
            match person.role {
                Role::Clinician if is_me => {
                    entry.insert("type".into(), participation("PPRF", "primary performer"));
                }
                Role::Clinician => {
                    entry.insert("type".into(), participation("SPRF", "secondary performer"));
                }
                Role::Guest => {
                    entry.insert("type".into(), participation("PART", "Participation"));
                }
                Role::Patient => {}
            }
            entry.insert("period".into(), period(from, to, &what)?);
            let individual = match (person.role, me) {
                (Role::Clinician, Some(c)) if is_me => {
                    json!({"reference": c.reference, "display": person.name})
                }
                (Role::Patient, _) => json!({"extension": [
                    {"url": R5_PARTICIPANT_ACTOR, "valueReference": {"reference": patient}}
                ]}),
                _ => json!({"display": person.name}),
            };
            entry.insert("individual".into(), individual);
            ours.push(Value::Object(entry));
        }
    }

    let mut encounter = match existing {
        Some(e) => e.clone(),
        None => json!({"resourceType": "Encounter"}),
    };
    let obj = encounter
        .as_object_mut()
        .ok_or_else(|| CoreError::invalid_data("Encounter", "(document)", "is not an object"))?;
    obj.insert("status".into(), json!("finished"));
    obj.insert("class".into(), coding(ACT_CODE, "VR", "virtual"));
    if !obj.contains_key("subject") {
        obj.insert("subject".into(), json!({"reference": patient}));
    }
    let appointment_ref = json!({"reference": what});
    let list = obj.entry("appointment").or_insert_with(|| json!([]));
    match list.as_array_mut() {
        Some(list) => {
            if !list
                .iter()
                .any(|r| reference_id(Some(r), "Appointment") == Some(appt.id()))
            {
                list.push(appointment_ref);
            }
        }
        None => *list = json!([appointment_ref]),
    }
    obj.insert("period".into(), period(window.0, window.1, &what)?);
    // The EHR's own entries are kept; one naming the recording clinician gives way to ours
    // (with the period), its role coding carried over: the EHR knows it better.
    let mut kept: Vec<Value> = Vec::new();
    let mut their_type: Option<Value> = None;
    if let Some(list) = obj.get("participant").and_then(Value::as_array) {
        for p in list {
            let names_me = me.is_some_and(|c| {
                p.pointer("/individual/reference").and_then(Value::as_str) == Some(c.reference)
            }) && ours
                .iter()
                .any(|o| o.pointer("/individual/reference").is_some());
            if names_me {
                their_type = their_type.or_else(|| p.get("type").cloned());
            } else {
                kept.push(p.clone());
            }
        }
    }
    if let Some(t) = their_type {
        for o in ours
            .iter_mut()
            .filter(|o| o.pointer("/individual/reference").is_some())
        {
            o["type"] = t.clone();
        }
    }
    kept.extend(ours);
    obj.insert("participant".into(), Value::Array(kept));
    Ok(encounter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_visit_protocol::{Participant, Standing};

    const ME: Clinician<'static> = Clinician {
        reference: "Practitioner/dr1",
        name: Some("Dr. Okafor"),
    };

    fn appointment() -> Value {
        json!({"resourceType": "Appointment", "id": "a1", "status": "booked",
            "participant": [
                {"actor": {"reference": "Practitioner/dr1"}, "status": "accepted"},
                {"actor": {"reference": "Patient/p9"}, "status": "accepted"}]})
    }

    fn member(
        id: &str,
        name: &str,
        role: Role,
        times: (u64, Option<u64>, Option<u64>),
    ) -> Participant {
        Participant {
            id: id.into(),
            name: name.into(),
            role,
            standing: Standing::Left,
            connected: false,
            media: role != Role::Clinician || id.starts_with("media"),
            joined_ms: times.0,
            admitted_ms: times.1,
            left_ms: times.2,
        }
    }

    const T: u64 = 1_773_154_800_000; // 2026-03-10T15:00:00Z

    /// The presence connection from the morning, the clinician's call, the patient twice (a
    /// dropped phone: a new join), an interpreter, and someone never let in.
    fn snapshot() -> VisitSnapshot {
        let s = 1000;
        VisitSnapshot {
            visit: "a1".into(),
            ended: true,
            participants: vec![
                member(
                    "presence",
                    "Dr. Okafor",
                    Role::Clinician,
                    (T - 3600 * s, Some(T - 3600 * s), Some(T + 900 * s)),
                ),
                member(
                    "media-1",
                    "Dr. Okafor",
                    Role::Clinician,
                    (T - 60 * s, Some(T - 60 * s), Some(T + 900 * s)),
                ),
                member(
                    "pat-1",
                    "Ana",
                    Role::Patient,
                    (T - 120 * s, Some(T), Some(T + 300 * s)),
                ),
                member(
                    "pat-2",
                    "Ana (phone)",
                    Role::Patient,
                    (T + 310 * s, Some(T + 320 * s), Some(T + 600 * s)),
                ),
                member(
                    "int",
                    "Ino the interpreter",
                    Role::Guest,
                    (T + 10 * s, Some(T + 15 * s), Some(T + 650 * s)),
                ),
                member(
                    "lurker",
                    "Nobody",
                    Role::Guest,
                    (T + 20 * s, None, Some(T + 900 * s)),
                ),
                member(
                    "colleague",
                    "Dr. Second",
                    Role::Clinician,
                    (T + 100 * s, Some(T + 100 * s), Some(T + 200 * s)),
                ),
            ],
        }
    }

    fn at(ms: u64) -> String {
        instant(ms).unwrap()
    }

    #[test]
    fn a_new_encounter_carries_the_call_and_everyone_in_it_with_their_periods() {
        let e = visit_encounter(&appointment(), None, &snapshot(), Some(ME)).unwrap();
        assert_eq!(e["resourceType"], "Encounter");
        assert_eq!(e["status"], "finished");
        assert_eq!(e["class"]["system"], ACT_CODE);
        assert_eq!(e["class"]["code"], "VR");
        assert_eq!(e["subject"]["reference"], "Patient/p9");
        assert_eq!(e["appointment"], json!([{"reference": "Appointment/a1"}]));
        assert!(e.get("id").is_none());
        // The first admission of the patient to the last leave of the interpreter.
        assert_eq!(e["period"], json!({"start": at(T), "end": at(T + 650_000)}));
        assert_eq!(at(T), "2026-03-10T15:00:00.000Z");
        let p = e["participant"].as_array().unwrap();
        let periods: Vec<(String, String, String)> = p
            .iter()
            .map(|x| {
                (
                    x.pointer("/type/0/coding/0/code")
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_owned(),
                    x["period"]["start"].as_str().unwrap().to_owned(),
                    x["period"]["end"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let s = |ms: u64| at(T + ms * 1000);
        assert_eq!(
            periods,
            [
                // The clinician's presence and call connections are one stretch, inside the call.
                ("PPRF".into(), s(0), s(650)),
                ("SPRF".into(), s(100), s(200)),
                ("-".into(), s(0), s(300)),
                ("-".into(), s(320), s(600)),
                ("PART".into(), s(15), s(650)),
            ]
        );
        assert_eq!(
            p[0]["individual"],
            json!({"reference": "Practitioner/dr1", "display": "Dr. Okafor"})
        );
        assert_eq!(p[0]["type"][0]["coding"][0]["system"], PARTICIPATION_TYPE);
        assert_eq!(p[1]["individual"], json!({"display": "Dr. Second"}));
        for patient in &p[2..4] {
            assert_eq!(
                patient["individual"],
                json!({"extension": [{"url": R5_PARTICIPANT_ACTOR,
                    "valueReference": {"reference": "Patient/p9"}}]})
            );
        }
        assert_eq!(
            p[4]["individual"],
            json!({"display": "Ino the interpreter"})
        );
        // Nobody left in the waiting room is in it.
        assert!(!e.to_string().contains("Nobody"));
    }

    #[test]
    fn an_existing_encounter_is_updated_with_its_other_elements_kept() {
        let existing = json!({
            "resourceType": "Encounter", "id": "e7",
            "meta": {"versionId": "4", "tag": [{"code": "x"}]},
            "extension": [{"url": "urn:ehr:kept", "valueString": "kept"}],
            "unknownElement": 7,
            "status": "planned",
            "class": {"system": ACT_CODE, "code": "AMB"},
            "type": [{"text": "Follow-up"}],
            "subject": {"reference": "Patient/p9"},
            "appointment": [{"reference": "https://ehr.example/fhir/Appointment/a1"}],
            "participant": [
                {"type": [{"coding": [{"system": PARTICIPATION_TYPE, "code": "ATND"}]}],
                 "individual": {"reference": "Practitioner/dr1"}},
                {"individual": {"reference": "Practitioner/resident"}}
            ]
        });
        let e = visit_encounter(&appointment(), Some(&existing), &snapshot(), Some(ME)).unwrap();
        for kept in [
            "id",
            "meta",
            "extension",
            "unknownElement",
            "type",
            "subject",
        ] {
            assert_eq!(e[kept], existing[kept], "{kept}");
        }
        assert_eq!(
            (e["status"].as_str(), e["class"]["code"].as_str()),
            (Some("finished"), Some("VR"))
        );
        // The absolute reference already names the appointment: not added twice.
        assert_eq!(e["appointment"], existing["appointment"]);
        let p = e["participant"].as_array().unwrap();
        // The resident stays; the EHR's entry for the recording clinician gives way to ours,
        // with the EHR's role coding.
        assert_eq!(p[0], existing["participant"][1]);
        assert_eq!(p[1]["individual"]["reference"], "Practitioner/dr1");
        assert_eq!(p[1]["type"], existing["participant"][0]["type"]);
        assert!(p[1]["period"]["start"].is_string());
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn a_visit_not_ended_or_without_the_patient_or_a_guest_is_refused_without_names() {
        let mut open = snapshot();
        open.ended = false;
        let e = visit_encounter(&appointment(), None, &open, Some(ME)).unwrap_err();
        assert_eq!(e.code(), hearth_ipc::ErrorCode::VisitNotEnded);
        assert!(e.to_string().contains("Appointment/a1"), "{e}");
        let mut empty = snapshot();
        empty
            .participants
            .retain(|p| p.role == Role::Clinician || p.admitted_ms.is_none());
        let e = visit_encounter(&appointment(), None, &empty, Some(ME)).unwrap_err();
        assert_eq!(e.code(), hearth_ipc::ErrorCode::VisitNotHeld);
        for name in ["Okafor", "Ana", "Ino", "Nobody"] {
            assert!(!e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn without_a_known_clinician_every_clinician_is_named_only() {
        let e = visit_encounter(&appointment(), None, &snapshot(), None).unwrap();
        assert!(e["participant"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.pointer("/individual/reference").is_none()));
    }

    #[test]
    fn the_key_is_a_stable_uuid_v8_per_appointment() {
        let a = encounter_key("a1");
        assert_eq!(a, encounter_key("a1"));
        assert_ne!(a, encounter_key("a2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn the_stored_encounter_is_found_by_its_appointment_and_ours_first() {
        let key = encounter_key("a1");
        let other = json!({"resourceType": "Encounter", "id": "e1",
            "appointment": [{"reference": "Appointment/a2"}]});
        let theirs = json!({"resourceType": "Encounter", "id": "e2",
            "appointment": [{"reference": "Appointment/a1"}]});
        let ours = json!({"resourceType": "Encounter", "id": "e3",
            "appointment": [{"reference": "Appointment/a1"}],
            "identifier": [{"system": HEARTH_WRITE_SYSTEM, "value": key}]});
        let list = [other.clone(), theirs.clone()];
        assert_eq!(stored_for_appointment(&list, "a1", &key), Some(&theirs));
        assert!(!written_with(&theirs, &key));
        let list = [other, theirs, ours.clone()];
        assert_eq!(stored_for_appointment(&list, "a1", &key), Some(&ours));
        assert!(written_with(&ours, &key));
        let updated = json!({"resourceType": "Encounter", "id": "e2",
            "meta": {"source": format!("urn:uuid:{key}")}});
        assert!(written_with(&updated, &key));
    }
}
