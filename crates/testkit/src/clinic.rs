//! A FHIR server loaded with the 20 Synthea patients and a schedule for today (Synthea has no
//! schedules), for the tests that need a clinic.

use crate::FhirServer;
use serde_json::{json, Value};

pub const BUNDLES: &str = "synthea-r4-bundles";

/// A FHIR server loaded with the 20 Synthea patients and today's schedule; `None` (after
/// reporting the skip) when the sample data is absent.
pub fn server_with_clinic(test: &str) -> Option<(FhirServer, Clinic)> {
    server_with_clinic_at(test, None)
}

/// [`server_with_clinic`], reached through a proxy at `public_port`.
pub fn server_with_clinic_at(test: &str, public_port: Option<u16>) -> Option<(FhirServer, Clinic)> {
    let bundles = crate::sample_data(test, BUNDLES)?;
    let server = FhirServer::start_with_public_port(public_port);
    assert_eq!(server.load_bundles(&bundles), 20);
    let clinic = seed_schedule(&server);
    Some((server, clinic))
}

/// What [`seed_schedule`] made.
pub struct Clinic {
    pub patients: Vec<String>,
    pub practitioner: String,
    pub appointments: Vec<String>,
}

fn ids(server: &FhirServer, query: &str) -> Vec<String> {
    let bundle: Value = serde_json::from_str(&server.get_json(query)).unwrap();
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// Synthea has no schedules: one clinician's Schedule, eight Slots today and an Appointment
/// in each of the first six, for six of the patients; the second and fourth are virtual
/// (appointmentType SNOMED 448337001, telemedicine). Each Appointment carries an extension
/// and an element FHIR does not define, which must survive every round trip.
pub fn seed_schedule(server: &FhirServer) -> Clinic {
    let patients = ids(server, "/fhir/Patient?_count=100");
    let practitioner = ids(server, "/fhir/Practitioner?_count=1").remove(0);
    let today = chrono::Utc::now().date_naive();
    let mut entries = vec![json!({
        "fullUrl": "urn:uuid:schedule-1",
        "resource": {"resourceType": "Schedule", "active": true,
            "actor": [{"reference": format!("Practitioner/{practitioner}")}]},
        "request": {"method": "POST", "url": "Schedule"}
    })];
    for i in 0..8u32 {
        let start = format!("{today}T{:02}:00:00Z", 9 + i);
        let end = format!("{today}T{:02}:30:00Z", 9 + i);
        entries.push(json!({
            "fullUrl": format!("urn:uuid:slot-{i}"),
            "resource": {"resourceType": "Slot", "schedule": {"reference": "urn:uuid:schedule-1"},
                "status": if i < 6 { "busy" } else { "free" }, "start": start, "end": end},
            "request": {"method": "POST", "url": "Slot"}
        }));
        if i < 6 {
            let kind = if i % 2 == 1 { "448337001" } else { "185389009" };
            entries.push(json!({
                "resource": {"resourceType": "Appointment", "status": "booked",
                    "extension": [{"url": "https://example.org/fhir/StructureDefinition/visit-room", "valueString": format!("Room {i}")}],
                    "hearthTestUnknownElement": {"kept": true, "n": i},
                    "appointmentType": {"coding": [{"system": "http://snomed.info/sct", "code": kind}]},
                    "start": start, "end": end, "slot": [{"reference": format!("urn:uuid:slot-{i}")}],
                    "participant": [
                        {"actor": {"reference": format!("Patient/{}", patients[i as usize])}, "status": "accepted"},
                        {"actor": {"reference": format!("Practitioner/{practitioner}")}, "status": "accepted"}
                    ]},
                "request": {"method": "POST", "url": "Appointment"}
            }));
        }
    }
    server.post_bundle(
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}).to_string(),
    );
    let appointments = ids(server, "/fhir/Appointment?_count=100");
    assert_eq!(appointments.len(), 6);
    Clinic {
        patients,
        practitioner,
        appointments,
    }
}
