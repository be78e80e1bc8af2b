//! The visit note against the real peers on loopback: the SMART provider and its FHIR server
//! (sekmet), the strict HL7 v2.5.1 billing receiver (hl7apy), Hearth signed in with its
//! encrypted profile in a private GNOME Keyring, its sync engine run round by round.
//!
//! What is expected comes from the peers (the FHIR server's resources read there directly,
//! the billing peer's own decoding of what it received) or is written here from what was
//! entered (the note's text in the format `note::render_text` documents), never from the
//! code under test.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;
#[path = "common/notes.rs"]
mod note_desk;

use base64::Engine as _;
use hearth_core::Workstation;
use hearth_ipc::{
    AmendNoteRequest, ChargeState, ChartRequest, CorrectChargeRequest, ErrorCode, Modality,
    NoteDelivery, NoteDraft, NoteRequest, NoteSections, NoteState, NoteView, SaveNoteRequest,
    ServiceCodeSystem, SignNoteRequest,
};
use hearth_sync::Round;
use hearth_testkit::billing::{BillingPeer, Received};
use hearth_testkit::isolated;
use hearth_testkit::smart::{SmartEhr, USER_FHIR};
use note_desk::{
    billing_to, dx, hearth, open, put, put_patient, put_visit, round, runtime, service, sign,
    written, Hearth, ROUND_LIMIT,
};
use serde_json::Value;
use std::time::Instant;

const ISOLATED: &str = "HEARTH_CORE_NOTES_HOME";
const HEARTH_WRITE: &str = "urn:hearth:write";
const CPT: &str = "http://www.ama-assn.org/go/cpt";
const HCPCS: &str = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets";
const MODIFIER_EXT: &str = "https://hearth.dev/fhir/StructureDefinition/charge-item-modifier";
const POS_EXT: &str = "https://hearth.dev/fhir/StructureDefinition/charge-item-place-of-service";
const WAITING: &str = "signed, waiting to reach the EHR";

// ---------------------------------------------------------------------------------------
// The EHR's data, read at the FHIR server directly (`note_desk` puts it there).

/// Every resource of `ty` at the FHIR server (read there directly, one page).
fn at_server(ehr: &SmartEhr, ty: &str) -> Vec<Value> {
    let fhir = ehr.fhir.as_ref().unwrap();
    let bundle: Value =
        serde_json::from_str(&fhir.get_json(&format!("/fhir/{ty}?_count=500"))).unwrap();
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
        .collect()
}

fn read_at_server(ehr: &SmartEhr, path: &str) -> Value {
    serde_json::from_str(&ehr.fhir.as_ref().unwrap().get_json(path)).unwrap()
}

/// The resources of `ty` at the server whose subject is `Patient/{patient}`.
fn of_patient(ehr: &SmartEhr, ty: &str, patient: &str) -> Vec<Value> {
    let reference = format!("Patient/{patient}");
    at_server(ehr, ty)
        .into_iter()
        .filter(|r| {
            r["subject"]["reference"]
                .as_str()
                .is_some_and(|s| s == reference || s.ends_with(&format!("/{reference}")))
        })
        .collect()
}

/// The Encounters at the server whose `appointment` is `Appointment/{visit}`.
fn encounters_of(ehr: &SmartEhr, visit: &str) -> Vec<Value> {
    at_server(ehr, "Encounter")
        .into_iter()
        .filter(|e| {
            e["appointment"].as_array().into_iter().flatten().any(|r| {
                r["reference"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&format!("Appointment/{visit}")))
            })
        })
        .collect()
}

fn carries_key(resource: &Value, key: &str) -> bool {
    resource["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["system"] == HEARTH_WRITE && i["value"] == key)
}

fn attachment_text(doc: &Value) -> String {
    let contents = doc["content"].as_array().unwrap();
    assert_eq!(contents.len(), 1, "{doc:#}");
    let a = &contents[0]["attachment"];
    assert!(
        a["contentType"].as_str().unwrap().starts_with("text/plain"),
        "{a}"
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a["data"].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

// ---------------------------------------------------------------------------------------
// Hearth (signed in and its commands: `note_desk`).

/// Rounds until one changes nothing and sends nothing (at most 8); all of them, in order.
async fn settle(h: &Hearth) -> Vec<Round> {
    let mut rounds = Vec::new();
    for _ in 0..8 {
        let r = round(&h.engine).await;
        let quiet = r.sent == 0
            && r.billed == 0
            && r.billing_refused == 0
            && r.billing_retries == 0
            && r.failed == 0
            && r.conflicts == 0;
        rounds.push(r);
        if quiet && h.store.pending().unwrap().is_empty() {
            return rounds;
        }
    }
    panic!("the sync engine did not settle in 8 rounds: {rounds:#?}");
}

// ---------------------------------------------------------------------------------------
// The billing peer's decoding.

/// The `field` of the `occurrence`th `segment` as the peer read it: each repetition's first
/// component (empty repetitions left out).
fn repetitions(r: &Received, segment: &str, occurrence: usize, field: usize) -> Vec<String> {
    (1..)
        .map_while(|rep| r.value(segment, occurrence, field, rep, 1, 1))
        .filter(|v| !v.is_empty())
        .collect()
}

fn count(r: &Received, segment: &str) -> usize {
    r.segments
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"] == segment)
        .count()
}

fn with_control_id(peer: &BillingPeer, control_id: &str) -> Vec<Received> {
    peer.received()
        .into_iter()
        .filter(|r| r.control_id == control_id)
        .collect()
}

/// A service line as billed: its code, system URI, HL7 coding system (FT1-7.3), modifiers,
/// units.
struct Billed {
    code: &'static str,
    system: &'static str,
    hl7_system: &'static str,
    modifiers: Vec<&'static str>,
    units: u32,
}

/// The peer's decoding of one accepted DFT^P03 held against the server's Patient and what
/// was billed.
fn check_dft(r: &Received, patient: &Value, lines: &[Billed], diagnoses: &[&str], pos: &str) {
    assert_eq!(r.ack, "AA", "{}: {}", r.reason, r.message);
    assert!(!r.duplicate);
    // PID-5: family ^ first given ^ further given names (space-separated), as at the EHR.
    let name = &patient["name"][0];
    let given: Vec<&str> = name["given"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(
        r.value("PID", 1, 5, 1, 1, 1).as_deref(),
        name["family"].as_str()
    );
    assert_eq!(r.value("PID", 1, 5, 1, 2, 1).as_deref(), Some(given[0]));
    let further = given[1..].join(" ");
    assert_eq!(
        r.value("PID", 1, 5, 1, 3, 1).unwrap_or_default(),
        further,
        "PID-5.3"
    );
    // PID-3: the MRN first.
    let mrn = patient["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"]["coding"][0]["code"] == "MR")
        .unwrap();
    assert_eq!(
        r.value("PID", 1, 3, 1, 1, 1).as_deref(),
        mrn["value"].as_str()
    );
    assert_eq!(r.value("PID", 1, 3, 1, 5, 1).as_deref(), Some("MR"));
    // One FT1 per line.
    assert_eq!(count(r, "FT1"), lines.len(), "{}", r.message);
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        assert_eq!(r.value("FT1", n, 7, 1, 1, 1).as_deref(), Some(line.code));
        assert_eq!(
            r.value("FT1", n, 7, 1, 3, 1).as_deref(),
            Some(line.hl7_system)
        );
        assert_eq!(r.value("FT1", n, 25, 1, 1, 1).as_deref(), Some(line.code));
        assert_eq!(repetitions(r, "FT1", n, 26), line.modifiers, "FT1[{n}]-26");
        assert_eq!(r.value("FT1", n, 10, 1, 1, 1), Some(line.units.to_string()));
        assert_eq!(r.value("FT1", n, 16, 1, 1, 1).as_deref(), Some(pos));
        assert_eq!(repetitions(r, "FT1", n, 19), diagnoses, "FT1[{n}]-19");
    }
    // One DG1 per diagnosis, in the note's order, the first primary.
    assert_eq!(count(r, "DG1"), diagnoses.len());
    for (i, code) in diagnoses.iter().enumerate() {
        assert_eq!(r.value("DG1", i + 1, 3, 1, 1, 1).as_deref(), Some(*code));
        assert_eq!(r.value("DG1", i + 1, 3, 1, 3, 1).as_deref(), Some("I10"));
        assert_eq!(
            r.value("DG1", i + 1, 15, 1, 1, 1),
            Some((i + 1).to_string())
        );
    }
}

// ---------------------------------------------------------------------------------------
// What the FHIR server holds for a signed visit.

struct Expected<'a> {
    visit: &'a str,
    patient: &'a str,
    modality: Modality,
    text: &'a str,
    lines: Vec<Billed>,
    diagnoses: Vec<&'a str>,
    pos: &'a str,
}

/// The note, the finished Encounter and the ChargeItems at the server, held against what was
/// signed; the DocumentReference's id.
fn check_at_server(ehr: &SmartEhr, h: &Hearth, e: &Expected<'_>) -> String {
    let versions = h.store.note_versions(e.visit).unwrap();
    assert_eq!(versions.len(), 1);
    let key = &versions[0].write_key;
    // Exactly one DocumentReference for the patient, carrying the write's identifier.
    let docs = of_patient(ehr, "DocumentReference", e.patient);
    assert_eq!(docs.len(), 1, "{docs:#?}");
    let doc = &docs[0];
    assert!(carries_key(doc, key), "{doc:#}");
    assert_eq!(doc["status"], "current");
    assert_eq!(doc["docStatus"], "final");
    assert_eq!(doc["type"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(doc["type"]["coding"][0]["code"], "11506-3");
    assert_eq!(doc["author"][0]["reference"], USER_FHIR);
    assert_eq!(doc["authenticator"]["reference"], USER_FHIR);
    assert_eq!(attachment_text(doc), e.text);

    // The Encounter for the appointment, finished.
    let encounters = encounters_of(ehr, e.visit);
    assert_eq!(encounters.len(), 1, "{encounters:#?}");
    let enc = &encounters[0];
    assert_eq!(enc["status"], "finished");
    assert_eq!(
        enc["class"]["code"],
        match e.modality {
            Modality::Virtual => "VR",
            Modality::InPerson => "AMB",
        }
    );
    assert_eq!(
        enc["subject"]["reference"],
        format!("Patient/{}", e.patient)
    );
    // The note's encounter is that one (by id, or by the identifier Hearth gave it).
    let points_at_encounter = |r: &Value| {
        r["reference"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("Encounter/{}", enc["id"].as_str().unwrap())))
            || enc["identifier"].as_array().into_iter().flatten().any(|i| {
                i["system"] == r["identifier"]["system"] && i["value"] == r["identifier"]["value"]
            })
    };
    assert!(
        points_at_encounter(&doc["context"]["encounter"][0]),
        "{doc:#}"
    );

    // One ChargeItem per line: its code, modifiers (95 only on a virtual visit), place.
    let items = of_patient(ehr, "ChargeItem", e.patient);
    assert_eq!(items.len(), e.lines.len(), "{items:#?}");
    for line in &e.lines {
        let found: Vec<&Value> = items
            .iter()
            .filter(|i| {
                i["code"]["coding"][0]["system"] == line.system
                    && i["code"]["coding"][0]["code"] == line.code
            })
            .collect();
        assert_eq!(found.len(), 1, "{} in {items:#?}", line.code);
        let item = found[0];
        assert_eq!(item["status"], "billable");
        let ext = |url: &str| -> Vec<String> {
            item["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["url"] == url)
                .map(|x| {
                    x["valueCodeableConcept"]["coding"][0]["code"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(ext(MODIFIER_EXT), line.modifiers, "{item:#}");
        assert_eq!(ext(POS_EXT), [e.pos], "{item:#}");
        assert_eq!(item["quantity"]["value"], line.units);
        let reasons: Vec<&str> = item["reason"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, e.diagnoses);
        assert!(points_at_encounter(&item["context"]), "{item:#}");
        assert_eq!(item["performer"][0]["actor"]["reference"], USER_FHIR);
    }
    doc["id"].as_str().unwrap().to_string()
}

/// Hearth's own view of a visit whose note and charge went through: signed, in the chart
/// as `document_id`, the charge accepted, the milestones set; the chart shows the text.
fn check_in_hearth(h: &Hearth, e: &Expected<'_>, document_id: &str) -> NoteView {
    let view = open(h.ws(), e.visit);
    assert_eq!(view.state, NoteState::Signed);
    assert_eq!(view.modality, e.modality);
    assert_eq!(view.versions.len(), 1);
    assert_eq!(
        view.versions[0].delivery,
        NoteDelivery::InChart {
            document_id: document_id.into()
        }
    );
    assert_eq!(view.charges.len(), 1);
    assert_eq!(view.charges[0].state, ChargeState::Accepted);
    assert!(view.charges[0].acknowledged_at.is_some());
    let chart = h
        .ws()
        .chart(&ChartRequest {
            patient_id: e.patient.into(),
        })
        .unwrap();
    assert_eq!(chart.notes.len(), 1, "{:?}", chart.notes);
    let row = &chart.notes[0];
    assert_eq!(row.document_id.as_deref(), Some(document_id));
    assert_eq!(row.text.as_deref(), Some(e.text));
    assert_eq!(row.status, "final");
    let m = h.store.visit_milestones(e.visit).unwrap();
    assert!(m.note_signed_at.is_some(), "{:?}", m.note_signed_at);
    assert!(m.charge_acked_at.is_some(), "{:?}", m.charge_acked_at);
    view
}

// ---------------------------------------------------------------------------------------
// 1 and 5: signing, then amending.

#[test]
fn signed_notes_reach_the_chart_the_encounter_the_charge_items_and_billing_once() {
    let name = "signed_notes_reach_the_chart_the_encounter_the_charge_items_and_billing_once";
    let Some(home) = isolated(ISOLATED, name, true) else {
        return;
    };
    let ehr = SmartEhr::start();
    // Names holding every HL7 delimiter, | ^ ~ \ &.
    put_patient(
        &ehr,
        "pt-virtual",
        "Quill|Pipe^Caret",
        &["Ann~Tilde", "Bea\\Back&Amp"],
        "MRN-1001",
    );
    put_patient(
        &ehr,
        "pt-office",
        "Amper&sand\\Slash",
        &["Rex^Hat|Bar~Wave"],
        "MRN-1002",
    );
    put_visit(&ehr, "appt-virtual", "pt-virtual", true);
    put_visit(&ehr, "appt-office", "pt-office", false);
    let peer = BillingPeer::start(&[]);
    runtime().block_on(async {
        // The site's service descriptions (CPT's are licensed: a site loads its own): what
        // the note and billing carry for each service.
        let site = home.join("services.tsv");
        std::fs::write(
            &site,
            "99213\tOffice visit, established, low\n99214\tOffice visit, established, moderate\n\
             G2211\tComplexity add-on (site text)\n",
        )
        .unwrap();
        let extra = format!(
            "{}[notes]\nservice_descriptions_file = \"{}\"\n",
            billing_to(&peer),
            site.display()
        );
        let h = hearth(&home, &ehr, &extra).await;
        let ws = h.ws();

        // The virtual visit: opened, a draft saved, signed.
        let view = open(ws, "appt-virtual");
        assert_eq!(view.state, NoteState::Draft);
        assert_eq!(view.modality, Modality::Virtual);
        assert_eq!(view.patient_id, "pt-virtual");
        assert_eq!(view.visit_modifiers, ["95"]);
        assert_eq!(view.place_of_service, "10");
        assert!(view.billing_configured);
        assert!(view.versions.is_empty() && view.charges.is_empty());
        let sections = NoteSections {
            subjective: "Cough for 3 days, no fever.\nSleeps poorly.".into(),
            objective: String::new(),
            assessment: "Viral upper respiratory infection; blood pressure above goal.".into(),
            plan: "Fluids, rest.\nReturn if worse.\n".into(),
        };
        let diagnoses = vec![
            dx("J06.9", "Acute upper respiratory infection, unspecified"),
            dx("I10", "Essential (primary) hypertension"),
        ];
        let lines = vec![
            service(
                "99213",
                ServiceCodeSystem::Cpt,
                &[],
                1,
                Some("Office visit, established, low"),
            ),
            service("G2211", ServiceCodeSystem::Hcpcs, &[], 1, None),
        ];
        let draft = written(&view, sections, diagnoses, lines, true, 1);
        let saved = ws
            .note_save(&SaveNoteRequest {
                draft: draft.clone(),
            })
            .unwrap();
        assert_eq!(saved.revision, 1);
        let reopened = open(ws, "appt-virtual");
        assert_eq!(reopened.state, NoteState::Draft);
        assert_eq!(reopened.draft, draft);
        assert!(reopened.saved_at.is_some());

        let virtual_text = "Subjective\nCough for 3 days, no fever.\nSleeps poorly.\n\n\
            Assessment\nViral upper respiratory infection; blood pressure above goal.\n\n\
            Plan\nFluids, rest.\nReturn if worse.\n\n\
            Diagnoses (ICD-10-CM)\nJ06.9 Acute upper respiratory infection, unspecified\n\
            I10 Essential (primary) hypertension\n\n\
            Services\n99213-95 Office visit, established, low\n\
            G2211-95 Complexity add-on (site text)";
        let signing = Instant::now();
        let signed = sign(ws, &draft);
        assert_eq!(signed.state, NoteState::Signed);
        assert_eq!(signed.versions.len(), 1);
        assert_eq!(signed.versions[0].delivery, NoteDelivery::Queued);
        assert_eq!(signed.charges.len(), 1);
        assert_eq!(signed.charges[0].state, ChargeState::Queued);
        // One round takes the note to the EHR.
        let first = round(&h.engine).await;
        let docs = of_patient(&ehr, "DocumentReference", "pt-virtual");
        let to_chart = signing.elapsed();
        assert_eq!(docs.len(), 1, "{docs:#?}");
        assert!(first.sent >= 4, "{first:?}"); // the note, the Encounter, 2 ChargeItems
        assert_eq!(first.billed, 1, "{first:?}");
        eprintln!(
            "figure: sign to DocumentReference readable at the server, one round: {to_chart:?}"
        );

        // The in-person visit: signed straight away; a stray 95 does not stay on it.
        let view = open(ws, "appt-office");
        assert_eq!(view.modality, Modality::InPerson);
        assert!(view.visit_modifiers.is_empty());
        assert_eq!(view.place_of_service, "11");
        let office_sections = NoteSections {
            subjective: "Follow-up of type 2 diabetes.".into(),
            objective: "BP 128/82. Feet: intact sensation.".into(),
            assessment: "Diabetes controlled. Palpitations.".into(),
            plan: "Continue metformin.".into(),
        };
        let office_lines = vec![
            service(
                "99214",
                ServiceCodeSystem::Cpt,
                &["25", "95"],
                1,
                Some("Office visit, established, moderate"),
            ),
            // Not among Hearth's service codes: a description from the window is not sent on.
            service("93000", ServiceCodeSystem::Cpt, &[], 1, Some("ECG")),
            service("36415", ServiceCodeSystem::Cpt, &[], 2, None),
        ];
        let office_draft = written(
            &view,
            office_sections,
            vec![
                dx("E11.9", "Type 2 diabetes mellitus without complications"),
                dx("R00.2", "Palpitations"),
            ],
            office_lines,
            true,
            1,
        );
        ws.note_save(&SaveNoteRequest {
            draft: office_draft.clone(),
        })
        .unwrap();
        sign(ws, &office_draft);
        let office_text = "Subjective\nFollow-up of type 2 diabetes.\n\n\
            Objective\nBP 128/82. Feet: intact sensation.\n\n\
            Assessment\nDiabetes controlled. Palpitations.\n\n\
            Plan\nContinue metformin.\n\n\
            Diagnoses (ICD-10-CM)\nE11.9 Type 2 diabetes mellitus without complications\n\
            R00.2 Palpitations\n\n\
            Services\n99214-25 Office visit, established, moderate\n93000\n36415 x2";
        settle(&h).await;

        let virtual_visit = Expected {
            visit: "appt-virtual",
            patient: "pt-virtual",
            modality: Modality::Virtual,
            text: virtual_text,
            lines: vec![
                Billed {
                    code: "99213",
                    system: CPT,
                    hl7_system: "C4",
                    modifiers: vec!["95"],
                    units: 1,
                },
                Billed {
                    code: "G2211",
                    system: HCPCS,
                    hl7_system: "HCPCS",
                    modifiers: vec!["95"],
                    units: 1,
                },
            ],
            diagnoses: vec!["J06.9", "I10"],
            pos: "10",
        };
        let office_visit = Expected {
            visit: "appt-office",
            patient: "pt-office",
            modality: Modality::InPerson,
            text: office_text,
            lines: vec![
                Billed {
                    code: "99214",
                    system: CPT,
                    hl7_system: "C4",
                    modifiers: vec!["25"],
                    units: 1,
                },
                Billed {
                    code: "93000",
                    system: CPT,
                    hl7_system: "C4",
                    modifiers: vec![],
                    units: 1,
                },
                Billed {
                    code: "36415",
                    system: CPT,
                    hl7_system: "C4",
                    modifiers: vec![],
                    units: 2,
                },
            ],
            diagnoses: vec!["E11.9", "R00.2"],
            pos: "11",
        };
        // Billing: one accepted DFT per visit, nothing else.
        assert_eq!(peer.received().len(), 2, "{:#?}", peer.received());
        for e in [&virtual_visit, &office_visit] {
            let document_id = check_at_server(&ehr, &h, e);
            let view = check_in_hearth(&h, e, &document_id);
            let got = with_control_id(&peer, &view.charges[0].control_id);
            assert_eq!(got.len(), 1);
            let patient = read_at_server(&ehr, &format!("/fhir/Patient/{}", e.patient));
            check_dft(&got[0], &patient, &e.lines, &e.diagnoses, e.pos);
        }

        // 5. The office note amended: version 2 replaces version 1 at the EHR.
        let office_v1 = of_patient(&ehr, "DocumentReference", "pt-office")
            .pop()
            .unwrap();
        let v1_id = office_v1["id"].as_str().unwrap().to_string();
        let amending = ws
            .note_amend(&AmendNoteRequest {
                appointment_id: "appt-office".into(),
            })
            .unwrap();
        assert_eq!(amending.state, NoteState::Amending);
        assert_eq!(amending.draft.sections, office_draft.sections);
        let mut amended = amending.draft.clone();
        amended.sections.plan = "Continue metformin. Holter monitor for palpitations.".into();
        amended.revision = 1;
        ws.note_save(&SaveNoteRequest {
            draft: amended.clone(),
        })
        .unwrap();
        let signed = sign(ws, &amended);
        assert_eq!(signed.state, NoteState::Signed);
        assert_eq!(signed.versions.len(), 2);
        settle(&h).await;
        let amended_text = office_text.replace(
            "Plan\nContinue metformin.",
            "Plan\nContinue metformin. Holter monitor for palpitations.",
        );
        let docs = of_patient(&ehr, "DocumentReference", "pt-office");
        assert_eq!(docs.len(), 2, "{docs:#?}");
        let v2_key = &h.store.note_versions("appt-office").unwrap()[1].write_key;
        let v2 = docs.iter().find(|d| carries_key(d, v2_key)).unwrap();
        let v2_id = v2["id"].as_str().unwrap().to_string();
        assert_ne!(v2_id, v1_id);
        assert_eq!(v2["status"], "current");
        assert_eq!(v2["relatesTo"][0]["code"], "replaces");
        assert_eq!(
            v2["relatesTo"][0]["target"]["reference"],
            format!("DocumentReference/{v1_id}")
        );
        assert_eq!(attachment_text(v2), amended_text);
        let v1 = read_at_server(&ehr, &format!("/fhir/DocumentReference/{v1_id}"));
        assert_eq!(v1["status"], "superseded");
        assert_eq!(attachment_text(&v1), office_text);
        // No second set of ChargeItems, no second Encounter, no second DFT.
        assert_eq!(of_patient(&ehr, "ChargeItem", "pt-office").len(), 3);
        assert_eq!(encounters_of(&ehr, "appt-office").len(), 1);
        assert_eq!(peer.received().len(), 2);
        let view = open(ws, "appt-office");
        assert_eq!(view.versions.len(), 2);
        assert_eq!(
            view.versions[1].delivery,
            NoteDelivery::InChart {
                document_id: v2_id.clone()
            }
        );
        assert_eq!(view.charges.len(), 1);
        assert_eq!(view.draft.sections, amended.sections);
        // The chart shows the amended text only.
        let chart = ws
            .chart(&ChartRequest {
                patient_id: "pt-office".into(),
            })
            .unwrap();
        assert_eq!(chart.notes.len(), 1, "{:?}", chart.notes);
        assert_eq!(chart.notes[0].document_id.as_deref(), Some(v2_id.as_str()));
        assert_eq!(chart.notes[0].text.as_deref(), Some(amended_text.as_str()));
        assert_eq!(chart.notes[0].status, "amended");
    });
}

// ---------------------------------------------------------------------------------------
// 2. Refused by billing, corrected.

#[test]
fn a_charge_billing_refuses_is_corrected_and_accepted_once() {
    let name = "a_charge_billing_refuses_is_corrected_and_accepted_once";
    let Some(home) = isolated(ISOLATED, name, true) else {
        return;
    };
    let ehr = SmartEhr::start();
    put_patient(&ehr, "pt-ae", "Refusal^Test", &["Cal|Vin"], "MRN-2001");
    put_visit(&ehr, "appt-ae", "pt-ae", true);
    let peer = BillingPeer::start(&[("99214", "99214 needs prior authorization (payer rule 7)")]);
    runtime().block_on(async {
        let h = hearth(&home, &ehr, &billing_to(&peer)).await;
        let ws = h.ws();
        let view = open(ws, "appt-ae");
        let diagnoses = vec![dx("M54.50", "Low back pain, unspecified")];
        let draft = written(
            &view,
            NoteSections {
                assessment: "Low back pain.".into(),
                ..NoteSections::default()
            },
            diagnoses.clone(),
            vec![
                service("99214", ServiceCodeSystem::Cpt, &[], 1, None),
                service("G2211", ServiceCodeSystem::Hcpcs, &[], 1, None),
            ],
            // The patient was not at home: place of service 02.
            false,
            1,
        );
        let signed = sign(ws, &draft);
        assert_eq!(signed.place_of_service, "02");
        let refused_id = signed.charges[0].control_id.clone();
        let rounds = settle(&h).await;
        assert_eq!(rounds.iter().map(|r| r.billing_refused).sum::<usize>(), 1);

        // Refused, with the peer's reason shown.
        let got = with_control_id(&peer, &refused_id);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ack, "AE");
        let peer_reason = got[0].reason.clone();
        assert!(!peer_reason.is_empty());
        let view = open(ws, "appt-ae");
        assert_eq!(view.charges.len(), 1);
        let refused = &view.charges[0];
        assert_eq!(refused.state, ChargeState::Refused);
        let reason = refused.reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&peer_reason),
            "{reason:?} / {peer_reason:?}"
        );
        assert!(h
            .store
            .visit_milestones("appt-ae")
            .unwrap()
            .charge_acked_at
            .is_none());

        // The refused charge's ChargeItems at the EHR, billable until corrected.
        let refused_items = of_patient(&ehr, "ChargeItem", "pt-ae");
        assert_eq!(refused_items.len(), 2, "{refused_items:#?}");
        assert!(refused_items.iter().all(|i| i["status"] == "billable"));
        let refused_item_ids: std::collections::BTreeSet<String> = refused_items
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();

        // Corrected: a new message, a new control id, accepted; the old one corrected.
        let corrected = ws
            .charge_correct(&CorrectChargeRequest {
                appointment_id: "appt-ae".into(),
                charge_id: refused.charge_id.clone(),
                lines: vec![
                    service("99213", ServiceCodeSystem::Cpt, &[], 1, None),
                    service("G2211", ServiceCodeSystem::Hcpcs, &[], 1, None),
                ],
                diagnoses: diagnoses.clone(),
            })
            .unwrap();
        assert_eq!(corrected.charges.len(), 2);
        let new = corrected
            .charges
            .iter()
            .find(|c| c.charge_id != refused.charge_id)
            .unwrap();
        assert_ne!(new.control_id, refused_id);
        assert_eq!(new.state, ChargeState::Queued);
        let new_id = new.control_id.clone();
        settle(&h).await;
        let view = open(ws, "appt-ae");
        let state_of = |control: &str| {
            view.charges
                .iter()
                .find(|c| c.control_id == control)
                .unwrap()
                .state
                .clone()
        };
        assert_eq!(state_of(&refused_id), ChargeState::Corrected);
        assert_eq!(state_of(&new_id), ChargeState::Accepted);

        // The EHR's ChargeItems set straight: the refused charge's (99214, G2211) entered in
        // error, the corrected lines (99213, G2211) billable once each, nothing duplicated.
        let items = of_patient(&ehr, "ChargeItem", "pt-ae");
        let with = |code: &str, status: &str| -> Vec<&Value> {
            items
                .iter()
                .filter(|i| i["code"]["coding"][0]["code"] == code && i["status"] == status)
                .collect()
        };
        assert_eq!(with("99214", "entered-in-error").len(), 1, "{items:#?}");
        assert_eq!(with("99213", "billable").len(), 1, "{items:#?}");
        assert_eq!(with("G2211", "entered-in-error").len(), 1, "{items:#?}");
        assert_eq!(with("G2211", "billable").len(), 1, "{items:#?}");
        assert!(with("99214", "billable").is_empty(), "{items:#?}");
        assert_eq!(items.len(), 4, "{items:#?}");
        let corrected_item = with("99213", "billable")[0];
        assert_eq!(corrected_item["code"]["coding"][0]["system"], CPT);
        let reasons: Vec<&str> = corrected_item["reason"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, ["M54.50"], "{corrected_item:#}");
        // The voided ones are the refused charge's own resources (updated, not copied).
        let voided_ids: std::collections::BTreeSet<String> = items
            .iter()
            .filter(|i| i["status"] == "entered-in-error")
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(voided_ids, refused_item_ids, "{items:#?}");
        // A charge that is not refused is not corrected again.
        let again = ws
            .charge_correct(&CorrectChargeRequest {
                appointment_id: "appt-ae".into(),
                charge_id: refused.charge_id.clone(),
                lines: vec![service("99213", ServiceCodeSystem::Cpt, &[], 1, None)],
                diagnoses,
            })
            .unwrap_err();
        assert_eq!(again.code(), ErrorCode::InvalidInput, "{again}");

        // The peer: the refused message once (never resent), the corrected one accepted once.
        assert_eq!(peer.accepted_control_ids(), std::slice::from_ref(&new_id));
        assert_eq!(with_control_id(&peer, &refused_id).len(), 1);
        let got = with_control_id(&peer, &new_id);
        assert_eq!(got.len(), 1);
        let patient = read_at_server(&ehr, "/fhir/Patient/pt-ae");
        check_dft(
            &got[0],
            &patient,
            &[
                Billed {
                    code: "99213",
                    system: CPT,
                    hl7_system: "C4",
                    modifiers: vec!["95"],
                    units: 1,
                },
                Billed {
                    code: "G2211",
                    system: HCPCS,
                    hl7_system: "HCPCS",
                    modifiers: vec!["95"],
                    units: 1,
                },
            ],
            &["M54.50"],
            "02",
        );
        assert!(h
            .store
            .visit_milestones("appt-ae")
            .unwrap()
            .charge_acked_at
            .is_some());
    });
}

// ---------------------------------------------------------------------------------------
// 3. Billing down.

#[test]
fn billing_down_delays_a_charge_and_never_loses_it() {
    let name = "billing_down_delays_a_charge_and_never_loses_it";
    let Some(home) = isolated(ISOLATED, name, true) else {
        return;
    };
    let ehr = SmartEhr::start();
    put_patient(&ehr, "pt-down", "Down", &["Bill"], "MRN-3001");
    put_visit(&ehr, "appt-down", "pt-down", false);
    let mut peer = BillingPeer::start(&[]);
    runtime().block_on(async {
        let h = hearth(&home, &ehr, &billing_to(&peer)).await;
        let ws = h.ws();
        peer.stop();
        let view = open(ws, "appt-down");
        let draft = written(
            &view,
            NoteSections {
                plan: "Recheck in 3 months.".into(),
                ..NoteSections::default()
            },
            vec![dx("I10", "Essential (primary) hypertension")],
            vec![service("99213", ServiceCodeSystem::Cpt, &[], 1, None)],
            true,
            1,
        );
        let signed = sign(ws, &draft);
        let control_id = signed.charges[0].control_id.clone();
        let charge = |h: &Hearth| open(h.ws(), "appt-down").charges[0].clone();

        // Down: the EHR's part goes on; the charge stays queued, tried, with a reason.
        let r = round(&h.engine).await;
        assert_eq!((r.billing_retries, r.billed), (1, 0), "{r:?}");
        assert!(r.sent >= 3, "{r:?}");
        let c = charge(&h);
        assert_eq!(c.state, ChargeState::Queued);
        assert_eq!(c.attempts, 1);
        assert!(c.reason.as_deref().is_some_and(|r| !r.is_empty()), "{c:?}");
        // Not tried again before its time (5 s at the most for the first retry).
        let r = round(&h.engine).await;
        assert_eq!(r.billing_retries, 0, "{r:?}");
        assert_eq!(charge(&h).attempts, 1);
        h.clock.advance(chrono::Duration::seconds(6));
        let r = round(&h.engine).await;
        assert_eq!(r.billing_retries, 1, "{r:?}");
        assert_eq!(charge(&h).attempts, 2);
        assert_eq!(charge(&h).state, ChargeState::Queued);

        // Back: still not before the second retry's time (5 s at the least), then sent.
        peer.resume();
        h.clock.advance(chrono::Duration::seconds(4));
        let r = round(&h.engine).await;
        assert_eq!((r.billing_retries, r.billed), (0, 0), "{r:?}");
        assert!(peer.received().is_empty());
        h.clock.advance(chrono::Duration::seconds(7));
        let r = round(&h.engine).await;
        assert_eq!(r.billed, 1, "{r:?}");
        let c = charge(&h);
        assert_eq!(c.state, ChargeState::Accepted);
        assert_eq!(c.control_id, control_id);
        settle(&h).await;
        assert_eq!(
            peer.accepted_control_ids(),
            std::slice::from_ref(&control_id)
        );
        assert_eq!(peer.received().len(), 1);
        let patient = read_at_server(&ehr, "/fhir/Patient/pt-down");
        check_dft(
            &peer.received()[0],
            &patient,
            &[Billed {
                code: "99213",
                system: CPT,
                hl7_system: "C4",
                modifiers: vec![],
                units: 1,
            }],
            &["I10"],
            "11",
        );
    });
}

// ---------------------------------------------------------------------------------------
// 4. Signing offline.

#[test]
fn a_note_signed_offline_shows_at_once_and_reaches_the_ehr_once() {
    let name = "a_note_signed_offline_shows_at_once_and_reaches_the_ehr_once";
    let Some(home) = isolated(ISOLATED, name, true) else {
        return;
    };
    let mut ehr = SmartEhr::start();
    put_patient(&ehr, "pt-offline", "Offline", &["Ida"], "MRN-4001");
    put_visit(&ehr, "appt-offline", "pt-offline", true);
    let peer = BillingPeer::start(&[]);
    let rt = runtime();
    let h = rt.block_on(hearth(&home, &ehr, &billing_to(&peer)));
    let ws = h.ws();

    // The EHR out of reach (its FHIR server down; the gateway and the provider up).
    ehr.fhir.as_mut().unwrap().stop();
    let view = open(ws, "appt-offline");
    let draft = written(
        &view,
        NoteSections {
            subjective: "Rash on both forearms.".into(),
            plan: "Hydrocortisone cream.".into(),
            ..NoteSections::default()
        },
        vec![dx("L30.9", "Dermatitis, unspecified")],
        vec![service("99212", ServiceCodeSystem::Cpt, &[], 1, None)],
        true,
        1,
    );
    let signed = sign(ws, &draft);
    let text = "Subjective\nRash on both forearms.\n\nPlan\nHydrocortisone cream.\n\n\
        Diagnoses (ICD-10-CM)\nL30.9 Dermatitis, unspecified\n\nServices\n99212-95";
    assert_eq!(signed.versions[0].delivery, NoteDelivery::Queued);
    let waiting = |ws: &Workstation| {
        let chart = ws
            .chart(&ChartRequest {
                patient_id: "pt-offline".into(),
            })
            .unwrap();
        assert_eq!(chart.notes.len(), 1, "{:?}", chart.notes);
        let row = &chart.notes[0];
        assert_eq!(row.status, WAITING);
        assert_eq!(row.text.as_deref(), Some(text));
        assert_eq!(row.document_id, None);
    };
    waiting(ws);

    // A round while the EHR is out of reach fails, and keeps the note queued; billing,
    // which does not need the EHR, takes the charge meanwhile.
    let failed = rt
        .block_on(async { tokio::time::timeout(ROUND_LIMIT, h.engine.round()).await })
        .expect("a sync round hung");
    assert!(failed.is_err(), "{failed:?}");
    let view = open(ws, "appt-offline");
    assert_eq!(view.versions[0].delivery, NoteDelivery::Queued);
    assert_eq!(view.charges[0].state, ChargeState::Accepted);
    waiting(ws);

    // Back: once at the EHR, once in the chart.
    ehr.fhir.as_mut().unwrap().resume();
    rt.block_on(settle(&h));
    let docs = of_patient(&ehr, "DocumentReference", "pt-offline");
    assert_eq!(docs.len(), 1, "{docs:#?}");
    let key = &h.store.note_versions("appt-offline").unwrap()[0].write_key;
    assert!(carries_key(&docs[0], key));
    assert_eq!(attachment_text(&docs[0]), text);
    let id = docs[0]["id"].as_str().unwrap();
    let view = open(ws, "appt-offline");
    assert_eq!(
        view.versions[0].delivery,
        NoteDelivery::InChart {
            document_id: id.into()
        }
    );
    let chart = ws
        .chart(&ChartRequest {
            patient_id: "pt-offline".into(),
        })
        .unwrap();
    assert_eq!(chart.notes.len(), 1, "{:?}", chart.notes);
    assert_eq!(chart.notes[0].document_id.as_deref(), Some(id));
    assert_eq!(chart.notes[0].status, "final");
    assert_eq!(of_patient(&ehr, "ChargeItem", "pt-offline").len(), 1);
    assert_eq!(encounters_of(&ehr, "appt-offline").len(), 1);
    assert_eq!(peer.accepted_control_ids().len(), 1);
    drop(h);
}

// ---------------------------------------------------------------------------------------
// 6. Refusals.

#[test]
fn signing_and_saving_refuse_what_they_must() {
    let name = "signing_and_saving_refuse_what_they_must";
    let Some(home) = isolated(ISOLATED, name, true) else {
        return;
    };
    let ehr = SmartEhr::start();
    put_patient(&ehr, "pt-rules", "Rules", &["Ona"], "MRN-5001");
    put_visit(&ehr, "appt-rules", "pt-rules", false);
    // A colleague's visit of the same day (in the offline copy: the schedule window holds
    // the clinic's appointments), on which the signed-in clinician is not a participant.
    put(
        &ehr,
        "/fhir/Appointment/appt-colleague",
        &serde_json::json!({"resourceType": "Appointment", "id": "appt-colleague",
            "status": "booked",
            "start": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "end": (chrono::Utc::now() + chrono::Duration::minutes(20))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "participant": [
                {"actor": {"reference": "Practitioner/a-colleague"}, "status": "accepted"},
                {"actor": {"reference": "Patient/pt-rules"}, "status": "accepted"},
                {"actor": {"reference": USER_FHIR}, "status": "declined"}]}),
    );
    runtime().block_on(async {
        // No [billing]: charges are kept, not sent.
        let h = hearth(&home, &ehr, "").await;
        let ws = h.ws();
        let view = open(ws, "appt-rules");
        assert!(!view.billing_configured);
        let invalid = |e: hearth_core::CoreError| {
            assert_eq!(e.code(), ErrorCode::InvalidInput, "{e}");
            e.to_string()
        };
        // Not on the visit (a declined participant does not count): no note, no bill.
        assert!(ws
            .ehr_link()
            .unwrap()
            .store
            .resource("Appointment", "appt-colleague")
            .unwrap()
            .is_some());
        let theirs = NoteRequest {
            appointment_id: "appt-colleague".into(),
        };
        let why = invalid(ws.note_open(&theirs).unwrap_err());
        assert!(why.contains("clinician of this visit"), "{why}");
        let mut colleague_draft = view.draft.clone();
        colleague_draft.appointment_id = "appt-colleague".into();
        colleague_draft.sections.plan = "Bill it under my name.".into();
        invalid(
            ws.note_save(&SaveNoteRequest {
                draft: colleague_draft.clone(),
            })
            .unwrap_err(),
        );
        invalid(
            ws.note_sign(&SignNoteRequest {
                draft: colleague_draft,
                attest: true,
            })
            .unwrap_err(),
        );
        // Nothing to amend yet.
        invalid(
            ws.note_amend(&AmendNoteRequest {
                appointment_id: "appt-rules".into(),
            })
            .unwrap_err(),
        );

        // An older revision saved after a newer one does not overwrite it.
        let newer = written(
            &view,
            NoteSections {
                subjective: "Newer text.".into(),
                ..NoteSections::default()
            },
            vec![dx("R51.9", "Headache, unspecified")],
            vec![service("99212", ServiceCodeSystem::Cpt, &[], 1, None)],
            true,
            2,
        );
        let older = NoteDraft {
            sections: NoteSections {
                subjective: "Older text.".into(),
                ..NoteSections::default()
            },
            revision: 1,
            ..newer.clone()
        };
        assert_eq!(
            ws.note_save(&SaveNoteRequest {
                draft: newer.clone()
            })
            .unwrap()
            .revision,
            2
        );
        let stale = ws.note_save(&SaveNoteRequest { draft: older }).unwrap();
        assert_eq!(stale.revision, 2);
        assert_eq!(open(ws, "appt-rules").draft, newer);

        // Signing without the attestation.
        let e = ws
            .note_sign(&SignNoteRequest {
                draft: newer.clone(),
                attest: false,
            })
            .unwrap_err();
        invalid(e);
        // A diagnosis that is no ICD-10-CM code, named.
        let bad = NoteDraft {
            diagnoses: vec![dx("R51.9", "Headache, unspecified"), dx("J6.9", "?")],
            ..newer.clone()
        };
        let message = invalid(
            ws.note_sign(&SignNoteRequest {
                draft: bad,
                attest: true,
            })
            .unwrap_err(),
        );
        assert!(message.contains("J6.9"), "{message}");
        assert!(h.store.note_versions("appt-rules").unwrap().is_empty());
        assert_eq!(open(ws, "appt-rules").state, NoteState::Draft);

        // Signed; a save is then refused, and so is signing other text without amending;
        // the same text signed again is the same signature.
        let signed = sign(ws, &newer);
        assert_eq!(signed.state, NoteState::Signed);
        assert_eq!(signed.charges[0].state, ChargeState::NotSent);
        let later = NoteDraft {
            sections: NoteSections {
                subjective: "Changed after signing.".into(),
                ..NoteSections::default()
            },
            revision: 3,
            ..newer.clone()
        };
        invalid(
            ws.note_save(&SaveNoteRequest {
                draft: later.clone(),
            })
            .unwrap_err(),
        );
        invalid(
            ws.note_sign(&SignNoteRequest {
                draft: later,
                attest: true,
            })
            .unwrap_err(),
        );
        let again = sign(ws, &newer);
        assert_eq!(again.versions.len(), 1);
        assert_eq!(h.store.note_versions("appt-rules").unwrap().len(), 1);
        let view = open(ws, "appt-rules");
        assert_eq!(view.state, NoteState::Signed);
        assert_eq!(view.draft.sections, newer.sections);
        // Once at the EHR: one note, no message to billing (none configured).
        settle(&h).await;
        assert_eq!(of_patient(&ehr, "DocumentReference", "pt-rules").len(), 1);
        assert_eq!(
            open(ws, "appt-rules").charges[0].state,
            ChargeState::NotSent
        );
    });
}
