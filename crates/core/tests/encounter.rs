//! The Encounter of a virtual visit, against the real peers on loopback: the SMART provider
//! and its FHIR server (sekmet), the real visit service, Hearth signed in with its encrypted
//! profile in a private GNOME Keyring. The clinician's call, the patient, an interpreter and
//! someone never let in are protocol clients of the service. After the call Hearth records the
//! Encounter, a sync round pushes it, and the test reads it back from the FHIR server and
//! holds it against the service's own record of the visit, asked for by the test.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use chrono::{DateTime, Utc};
use common::{desk_with, sign_in, visit_service, Desk, Ws};
use hearth_core::{EncounterRecord, Workstation};
use hearth_ipc::{ErrorCode, RoomService, VisitRoomRequest};
use hearth_sync::Engine;
use hearth_testkit::isolated;
use hearth_testkit::smart::{SmartEhr, PATIENT_FHIR, USER_FHIR};
use hearth_visit_protocol::{
    ClientMsg, LinkRequest, LinkResponse, Participant, Role, ServerMsg, Standing, VisitSnapshot,
};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const ISOLATED: &str = "HEARTH_CORE_ENCOUNTER_HOME";

/// A join link for `role`, asked for as Hearth asks (the clinician's token for the service).
async fn link(service_url: &str, token: &str, visit: &str, role: Role) -> LinkResponse {
    let now = u64::try_from(Utc::now().timestamp_millis()).unwrap();
    let response = reqwest::Client::new()
        .post(format!("{service_url}v1/links"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(
            serde_json::to_string(&LinkRequest {
                appointment: visit.into(),
                role,
                start_ms: now,
                end_ms: now + 3_600_000,
            })
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "link: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// The Encounters at the FHIR server (read there directly) whose `appointment` is `visit`.
fn encounters_at_server(ehr: &SmartEhr, visit: &str) -> Vec<Value> {
    let fhir = ehr.fhir.as_ref().unwrap();
    let bundle: Value = serde_json::from_str(&fhir.get_json("/fhir/Encounter?_count=100")).unwrap();
    assert!(bundle["link"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|l| l["relation"] != "next"));
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].clone())
        .filter(|e| {
            e["appointment"].as_array().into_iter().flatten().any(|r| {
                r["reference"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&format!("Appointment/{visit}")))
            })
        })
        .collect()
}

/// A FHIR instant as epoch milliseconds.
fn ms(instant: &Value) -> u64 {
    let t = DateTime::parse_from_rfc3339(instant.as_str().unwrap()).unwrap();
    u64::try_from(t.timestamp_millis()).unwrap()
}

fn period_ms(p: &Value) -> (u64, u64) {
    (ms(&p["period"]["start"]), ms(&p["period"]["end"]))
}

fn stretch(p: &Participant) -> (u64, u64) {
    (p.admitted_ms.unwrap(), p.left_ms.unwrap())
}

/// The EHR: the appointment's patient and the `visits` (now, the clinician on them).
fn ehr_with(visits: &[&str]) -> SmartEhr {
    let ehr = SmartEhr::start();
    let (status, body) = ehr
        .fhir
        .as_ref()
        .unwrap()
        .request(
            "PUT",
            &format!("/fhir/{PATIENT_FHIR}"),
            Some(
                &json!({"resourceType": "Patient",
                    "id": PATIENT_FHIR.trim_start_matches("Patient/"),
                    "name": [{"family": "Patient", "given": ["Ana"]}]})
                .to_string(),
            ),
        )
        .unwrap();
    assert!(status == 200 || status == 201, "{status} {body}");
    for visit in visits {
        ehr.put_appointment(visit, &[USER_FHIR]);
    }
    ehr
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Hearth with the visit service, signed in, its sync engine attached and a first round run
/// (the schedule and its patient's records are in its store).
async fn hearth(home: &std::path::Path, ehr: &SmartEhr, service_url: &str) -> (Desk, Engine) {
    let desk = desk_with(
        home,
        ehr,
        None,
        &format!("[visit]\nservice_url = \"{service_url}\"\n"),
    );
    sign_in(&desk).await.unwrap();
    let ws = &desk.ws;
    let engine = Engine::for_workstation(&ws.ehr_link().unwrap(), ws.token_source()).unwrap();
    ws.attach_sync(Arc::new(engine.handle()));
    engine.round().await.unwrap();
    (desk, engine)
}

/// The visit, held: Hearth watches the room as its schedule does (a presence connection, no
/// media); the clinician's call (the same user, with media) lets in a patient and an
/// interpreter from the waiting room, and not a third person; Hearth is refused the
/// Encounter meanwhile; the patient leaves, then the interpreter, and the clinician ends it.
async fn hold_the_visit(ws: &Workstation, service_url: &str, token: &str, visit: &str) {
    let room = VisitRoomRequest {
        appointment_id: visit.into(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ws.visit_room(&room).unwrap().service != RoomService::Live {
        assert!(
            std::time::Instant::now() < deadline,
            "the room never went live"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut clinician = Ws::host(service_url, token, visit, true).await;
    let patient_link = link(service_url, token, visit, Role::Patient).await;
    let guest_link = link(service_url, token, visit, Role::Guest).await;
    let mut patient = Ws::join(service_url, &patient_link.url, "Ana Patient").await;
    let mut guest = Ws::join(service_url, &guest_link.url, "Ino Interpreter").await;
    let _lurker = Ws::join(service_url, &guest_link.url, "Never Admitted").await;
    for who in [&mut patient, &mut guest] {
        clinician
            .send(&ClientMsg::Admit {
                participant: who.participant.clone(),
            })
            .await;
        who.until("admitted", |m| matches!(m, ServerMsg::Admitted { .. }))
            .await;
    }

    // While the visit goes on there is nothing to record.
    let e = ws.record_visit_encounter(visit).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::VisitNotEnded, "{e}");
    assert!(!e.to_string().contains("Ana"), "{e}");

    for who in [&mut patient, &mut guest] {
        who.send(&ClientMsg::Leave).await;
        let id = who.participant.clone();
        clinician
            .until("the roster with them gone", |m| match m {
                ServerMsg::Roster { participants, .. } => participants
                    .iter()
                    .any(|p| p.id == id && p.standing == Standing::Left),
                _ => false,
            })
            .await;
    }
    clinician.send(&ClientMsg::End).await;
    clinician
        .until("ended", |m| matches!(m, ServerMsg::Ended))
        .await;
}

/// The service's own record of the visit, asked for by the test.
async fn service_snapshot(service_url: &str, token: &str, visit: &str) -> VisitSnapshot {
    let text = reqwest::Client::new()
        .get(format!("{service_url}v1/visits/{visit}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Holds the Encounter at the EHR against the service's record: class VR, finished, the
/// call's period, and a period for the clinician (by their Practitioner), the patient and the
/// interpreter each, and nobody who was never let in. Returns the clinician's entry.
fn check_against_the_service<'a>(enc: &'a Value, snapshot: &VisitSnapshot) -> &'a Value {
    assert!(snapshot.ended);
    let named = |n: &str| snapshot.participants.iter().find(|p| p.name == n).unwrap();
    let (pat, int) = (named("Ana Patient"), named("Ino Interpreter"));
    assert_eq!(named("Never Admitted").admitted_ms, None);
    let (pat_stretch, int_stretch) = (stretch(pat), stretch(int));
    // The call: the patient's or a guest's first admission to their last leave.
    let call = (
        pat_stretch.0.min(int_stretch.0),
        pat_stretch.1.max(int_stretch.1),
    );
    assert_eq!(enc["status"], "finished");
    assert_eq!(
        enc["class"]["system"],
        "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    );
    assert_eq!(enc["class"]["code"], "VR");
    assert_eq!(enc["subject"]["reference"], PATIENT_FHIR);
    assert_eq!(
        (ms(&enc["period"]["start"]), ms(&enc["period"]["end"])),
        call
    );
    assert!(enc["period"]["start"].as_str().unwrap().ends_with('Z'));
    let parts = enc["participant"].as_array().unwrap();
    // The clinician, by their Practitioner: the presence and the call are one stretch,
    // inside the call.
    let mine: Vec<&Value> = parts
        .iter()
        .filter(|p| p["individual"]["reference"] == USER_FHIR)
        .collect();
    assert_eq!(mine.len(), 1, "{parts:#?}");
    assert_eq!(period_ms(mine[0]), call);
    // The patient, through R5's participant.actor (R4's individual cannot be a Patient).
    let patients: Vec<&Value> = parts
        .iter()
        .filter(|p| p["individual"]["extension"][0]["valueReference"]["reference"] == PATIENT_FHIR)
        .collect();
    assert_eq!(patients.len(), 1, "{parts:#?}");
    assert_eq!(period_ms(patients[0]), pat_stretch);
    // The interpreter, by name, as a participant of unqualified type (v3 PART).
    let guests: Vec<&Value> = parts
        .iter()
        .filter(|p| p["individual"]["display"] == "Ino Interpreter")
        .collect();
    assert_eq!(guests.len(), 1, "{parts:#?}");
    assert_eq!(guests[0]["type"][0]["coding"][0]["code"], "PART");
    assert_eq!(period_ms(guests[0]), int_stretch);
    assert!(!enc.to_string().contains("Never Admitted"));
    mine[0]
}

#[test]
fn after_the_call_the_encounter_at_the_ehr_carries_everyones_periods_once() {
    let name = "after_the_call_the_encounter_at_the_ehr_carries_everyones_periods_once";
    let Some(home) = isolated(ISOLATED, name, true) else {
        return;
    };
    let visit = "appt-enc";
    let ehr = ehr_with(&[visit]);
    runtime().block_on(async {
        let (_service, service_url) = visit_service(&ehr).await;
        let (desk, engine) = hearth(&home, &ehr, &service_url).await;
        let ws = &desk.ws;
        let token = ehr.clinician_access_token_for(&service_url);
        hold_the_visit(ws, &service_url, &token, visit).await;

        // Hearth records the Encounter: queued once, however often it is asked.
        let store = ws.ehr_link().unwrap().store;
        let EncounterRecord::Queued { seq } = ws.record_visit_encounter(visit).await.unwrap()
        else {
            panic!("the Encounter was not queued");
        };
        assert_eq!(
            ws.record_visit_encounter(visit).await.unwrap(),
            EncounterRecord::AlreadyQueued { seq }
        );
        assert_eq!(store.pending().unwrap().len(), 1);
        let round = engine.round().await.unwrap();
        assert_eq!((round.sent, round.failed, round.conflicts), (1, 0, 0));

        // At the FHIR server: one Encounter, as the service saw the visit.
        let found = encounters_at_server(&ehr, visit);
        assert_eq!(found.len(), 1, "{found:#?}");
        let snapshot = service_snapshot(&service_url, &token, visit).await;
        check_against_the_service(&found[0], &snapshot);
        assert_eq!(found[0]["participant"].as_array().unwrap().len(), 3);

        // Asked again once it is at the EHR, and another round: nothing new, still one.
        let again = ws.record_visit_encounter(visit).await.unwrap();
        assert_eq!(again, EncounterRecord::AlreadyQueued { seq });
        assert_eq!(store.pending().unwrap().len(), 0);
        let round = engine.round().await.unwrap();
        assert_eq!(round.sent, 0);
        assert_eq!(encounters_at_server(&ehr, visit).len(), 1);
        // The stored copy (the server's) is known as Hearth's own write.
        let key = hearth_core::encounter::encounter_key(visit);
        let stored = store.resources_of_type("Encounter").unwrap();
        assert_eq!(stored.len(), 1);
        let stored: Value = serde_json::from_str(&stored[0]).unwrap();
        assert!(hearth_core::encounter::written_with(&stored, &key));
    });
}

#[test]
fn an_encounter_the_ehr_made_for_the_appointment_is_updated_with_its_other_elements_kept() {
    let name =
        "an_encounter_the_ehr_made_for_the_appointment_is_updated_with_its_other_elements_kept";
    let Some(home) = isolated(ISOLATED, name, true) else {
        return;
    };
    let visit = "appt-planned";
    let ehr = ehr_with(&[visit]);
    // The EHR planned the visit's Encounter: ambulatory, the clinician as attender, a
    // resident beside them, an extension of its own.
    let planned = json!({"resourceType": "Encounter", "id": "enc-planned",
        "extension": [{"url": "urn:ehr:kept", "valueString": "kept"}],
        "status": "planned",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"text": "Follow-up"}],
        "subject": {"reference": PATIENT_FHIR},
        "appointment": [{"reference": format!("Appointment/{visit}")}],
        "participant": [
            {"type": [{"coding": [{"system":
                "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND"}]}],
             "individual": {"reference": USER_FHIR}},
            {"individual": {"reference": "Practitioner/resident", "display": "Resident"}}]});
    let fhir = ehr.fhir.as_ref().unwrap();
    let (status, body) = fhir
        .request(
            "PUT",
            "/fhir/Encounter/enc-planned",
            Some(&planned.to_string()),
        )
        .unwrap();
    assert!(status == 200 || status == 201, "{status} {body}");
    runtime().block_on(async {
        let (_service, service_url) = visit_service(&ehr).await;
        let (desk, engine) = hearth(&home, &ehr, &service_url).await;
        let ws = &desk.ws;
        let store = ws.ehr_link().unwrap().store;
        assert!(store
            .resource("Encounter", "enc-planned")
            .unwrap()
            .is_some());
        let token = ehr.clinician_access_token_for(&service_url);
        hold_the_visit(ws, &service_url, &token, visit).await;

        let EncounterRecord::Queued { seq } = ws.record_visit_encounter(visit).await.unwrap()
        else {
            panic!("the Encounter was not queued");
        };
        // An update of the EHR's Encounter, on the version Hearth holds.
        let write = store.outbox_entry(seq).unwrap().write;
        assert_eq!(write.method, hearth_store::Method::Update);
        assert_eq!(write.resource_id.as_deref(), Some("enc-planned"));
        assert_eq!(write.if_match.as_deref(), Some("W/\"1\""));
        let round = engine.round().await.unwrap();
        assert_eq!((round.sent, round.failed, round.conflicts), (1, 0, 0));

        let found = encounters_at_server(&ehr, visit);
        assert_eq!(found.len(), 1, "{found:#?}");
        let enc = &found[0];
        assert_eq!(enc["id"], "enc-planned");
        assert_eq!(enc["meta"]["versionId"], "2");
        for kept in ["extension", "type", "subject", "appointment"] {
            assert_eq!(enc[kept], planned[kept], "{kept}");
        }
        let snapshot = service_snapshot(&service_url, &token, visit).await;
        let mine = check_against_the_service(enc, &snapshot);
        // The EHR's role for the clinician stays; the resident too.
        assert_eq!(mine["type"], planned["participant"][0]["type"]);
        let parts = enc["participant"].as_array().unwrap();
        assert!(parts.contains(&planned["participant"][1]), "{parts:#?}");
        assert_eq!(parts.len(), 4, "{parts:#?}");
        assert_eq!(
            ws.record_visit_encounter(visit).await.unwrap(),
            EncounterRecord::AlreadyQueued { seq }
        );
    });
}
