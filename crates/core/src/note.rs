//! The visit note as FHIR: what signing sends (pure functions; the workflow is in
//! `workstation/notes.rs`).
//!
//! - The note: a US Core 6.1 clinical-note **DocumentReference** (`status` current,
//!   `docStatus` final, `type` LOINC 11506-3 Progress note, `category` `clinical-note` of
//!   us-core-documentreference-category, `subject`, `author`, `authenticator` = who attested,
//!   `date`, `context.encounter`, `context.period`, and the readable text as a `text/plain`
//!   attachment, inline). An amendment is a new DocumentReference with `relatesTo` code
//!   `replaces` (R4 DocumentRelationshipType) targeting the earlier one, whose `status` becomes
//!   `superseded` (R4 DocumentReferenceStatus: "This reference has been superseded by another
//!   reference").
//! - The Encounter: finished (R4 EncounterStatus `finished`); made when the EHR has none for
//!   the appointment (class v3-ActCode `VR` virtual, `AMB` in person).
//! - One **ChargeItem** per service line (R4 ChargeItem: `status` billable, `code`,
//!   `subject`, `context` = the Encounter, `occurrence[x]`, `performer`, `quantity`,
//!   `enteredDate`, `enterer`, `reason` = the diagnoses). R4 ChargeItem has no element for
//!   procedure modifiers or the place of service: they ride on two extensions of Hearth's
//!   ([`MODIFIER_EXTENSION`], [`PLACE_OF_SERVICE_EXTENSION`]), coded in the CPT/HCPCS and CMS
//!   place-of-service systems.

use crate::fhir::{human_name, Resource};
use crate::CoreError;
use base64::Engine as _;
use hearth_ipc::{
    Modality, NoteDiagnosis, NoteDraft, NoteSections, ServiceCodeSystem, ServiceLine,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const LOINC: &str = "http://loinc.org";
pub const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
pub const CPT: &str = "http://www.ama-assn.org/go/cpt";
pub const HCPCS: &str = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets";
pub const PLACE_OF_SERVICE: &str =
    "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set";
pub const MODIFIER_EXTENSION: &str =
    "https://hearth.dev/fhir/StructureDefinition/charge-item-modifier";
pub const PLACE_OF_SERVICE_EXTENSION: &str =
    "https://hearth.dev/fhir/StructureDefinition/charge-item-place-of-service";
const US_CORE_DOCREF: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference";
const US_CORE_DOC_CATEGORY: &str =
    "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// What the store keeps as a draft's (and a signed version's) body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteBody {
    pub draft: NoteDraft,
    pub template: String,
    /// Amending: the signed version this draft replaces.
    #[serde(default)]
    pub amends: Option<u32>,
}

/// A template: the text each section starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteTemplate {
    #[serde(default)]
    pub subjective: String,
    #[serde(default)]
    pub objective: String,
    #[serde(default)]
    pub assessment: String,
    #[serde(default)]
    pub plan: String,
}

impl NoteTemplate {
    pub fn sections(&self) -> NoteSections {
        NoteSections {
            subjective: self.subjective.clone(),
            objective: self.objective.clone(),
            assessment: self.assessment.clone(),
            plan: self.plan.clone(),
        }
    }
}

/// The note's readable text: each section under its heading, then the diagnoses and the
/// services. Sections left empty are left out. This is the text the EHR's chart shows.
pub fn render_text(draft: &NoteDraft) -> String {
    let mut out = String::new();
    let mut part = |heading: &str, body: &str| {
        let body = body.trim_end();
        if body.trim().is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(heading);
        out.push('\n');
        out.push_str(body);
    };
    let s = &draft.sections;
    part("Subjective", &s.subjective);
    part("Objective", &s.objective);
    part("Assessment", &s.assessment);
    part("Plan", &s.plan);
    let diagnoses: Vec<String> = draft
        .diagnoses
        .iter()
        .map(|d| match &d.description {
            Some(text) => format!("{} {}", d.code, text),
            None => d.code.clone(),
        })
        .collect();
    part("Diagnoses (ICD-10-CM)", &diagnoses.join("\n"));
    let services: Vec<String> = draft
        .lines
        .iter()
        .map(|l| {
            let mut line = l.code.clone();
            for m in &l.modifiers {
                line.push('-');
                line.push_str(m);
            }
            if l.units != 1 {
                line.push_str(&format!(" x{}", l.units));
            }
            if let Some(text) = &l.description {
                line.push(' ');
                line.push_str(text);
            }
            line
        })
        .collect();
    part("Services", &services.join("\n"));
    out
}

/// Who signs.
#[derive(Debug, Clone)]
pub struct Author {
    /// `Practitioner/<id>` (the signed-in user's fhirUser), when known.
    pub reference: Option<String>,
    pub display: String,
}

impl Author {
    fn reference_json(&self) -> Value {
        let mut v = json!({"display": self.display});
        if let Some(r) = &self.reference {
            v["reference"] = json!(r);
        }
        v
    }
}

/// The visit a note is about.
#[derive(Debug, Clone)]
pub struct Visit {
    pub appointment_id: String,
    pub patient_id: String,
    pub modality: Modality,
    pub start: Option<String>,
    pub end: Option<String>,
    /// `Encounter/<id>` when the EHR's Encounter is known here.
    pub encounter: Option<String>,
    /// Identifier (system `urn:hearth:write`, value) of the Encounter Hearth creates for the
    /// visit, for a logical reference before its id is known.
    pub encounter_key: String,
}

impl Visit {
    fn encounter_reference(&self) -> Value {
        match &self.encounter {
            Some(r) => json!({"reference": r}),
            None => json!({"identifier": {
                "system": hearth_model::fhir::HEARTH_WRITE_SYSTEM,
                "value": self.encounter_key}}),
        }
    }

    fn period(&self) -> Value {
        let mut p = json!({});
        if let Some(s) = &self.start {
            p["start"] = json!(s);
        }
        if let Some(e) = &self.end {
            p["end"] = json!(e);
        }
        p
    }
}

/// The signed note as a DocumentReference (see the module's notes). `replaces`: the
/// DocumentReference id and the write key of the version this one amends.
pub fn document_reference(
    draft: &NoteDraft,
    visit: &Visit,
    author: &Author,
    signed_at: &str,
    replaces: Option<(Option<&str>, &str)>,
) -> Value {
    let text = render_text(draft);
    let mut doc = json!({
        "resourceType": "DocumentReference",
        "meta": {"profile": [US_CORE_DOCREF]},
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}],
                 "text": "Progress note"},
        "category": [{"coding": [{"system": US_CORE_DOC_CATEGORY, "code": "clinical-note",
                                  "display": "Clinical Note"}]}],
        "subject": {"reference": format!("Patient/{}", visit.patient_id)},
        "date": signed_at,
        "author": [author.reference_json()],
        "authenticator": author.reference_json(),
        "description": match visit.modality {
            Modality::Virtual => "Telehealth visit note",
            Modality::InPerson => "Office visit note",
        },
        "content": [{"attachment": {
            "contentType": "text/plain; charset=utf-8",
            "data": base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            "title": "Visit note",
            "creation": signed_at,
        }}],
        "context": {
            "encounter": [visit.encounter_reference()],
            "period": visit.period(),
            "related": [{"reference": format!("Appointment/{}", visit.appointment_id)}],
        },
    });
    if let Some((id, key)) = replaces {
        let mut target = json!({"identifier": {
            "system": hearth_model::fhir::HEARTH_WRITE_SYSTEM, "value": key}});
        if let Some(id) = id {
            target["reference"] = json!(format!("DocumentReference/{id}"));
        }
        doc["relatesTo"] = json!([{"code": "replaces", "target": target}]);
    }
    doc
}

/// The visit's Encounter, finished: the stored one with `status` finished (every other
/// element kept), or, when the EHR holds none, a new one.
pub fn finished_encounter(stored: Option<&Value>, visit: &Visit, author: &Author) -> Value {
    if let Some(e) = stored {
        let mut e = e.clone();
        e["status"] = json!("finished");
        if let (Some(end), Some(period)) = (&visit.end, e.get_mut("period")) {
            if period.get("end").is_none() {
                period["end"] = json!(end);
            }
        }
        return e;
    }
    let (code, display) = match visit.modality {
        Modality::Virtual => ("VR", "virtual"),
        Modality::InPerson => ("AMB", "ambulatory"),
    };
    let mut participant = json!({"individual": author.reference_json()});
    if author.reference.is_none() {
        participant = json!({"individual": {"display": author.display}});
    }
    json!({
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": ACT_CODE, "code": code, "display": display},
        "subject": {"reference": format!("Patient/{}", visit.patient_id)},
        "appointment": [{"reference": format!("Appointment/{}", visit.appointment_id)}],
        "period": visit.period(),
        "participant": [participant],
    })
}

/// A ChargeItem for one service line.
pub fn charge_item(
    line: &ServiceLine,
    diagnoses: &[NoteDiagnosis],
    place_of_service: &str,
    visit: &Visit,
    author: &Author,
    signed_at: &str,
) -> Value {
    let system = match line.system {
        ServiceCodeSystem::Cpt => CPT,
        ServiceCodeSystem::Hcpcs => HCPCS,
    };
    let mut coding = json!({"system": system, "code": line.code});
    if let Some(d) = &line.description {
        coding["display"] = json!(d);
    }
    let mut extension: Vec<Value> = line
        .modifiers
        .iter()
        .map(|m| {
            json!({"url": MODIFIER_EXTENSION,
            "valueCodeableConcept": {"coding": [{"system": system, "code": m}]}})
        })
        .collect();
    extension.push(json!({"url": PLACE_OF_SERVICE_EXTENSION,
        "valueCodeableConcept": {"coding": [{"system": PLACE_OF_SERVICE, "code": place_of_service}]}}));
    let mut item = json!({
        "resourceType": "ChargeItem",
        "extension": extension,
        "status": "billable",
        "code": {"coding": [coding]},
        "subject": {"reference": format!("Patient/{}", visit.patient_id)},
        "context": visit.encounter_reference(),
        "quantity": {"value": line.units},
        "enteredDate": signed_at,
        "enterer": author.reference_json(),
        "performer": [{"actor": author.reference_json()}],
        "reason": diagnoses.iter().map(|d| json!({"coding": [{"system": ICD10CM, "code": d.code}]}))
            .collect::<Vec<_>>(),
    });
    if let Some(start) = &visit.start {
        item["occurrenceDateTime"] = json!(start);
    }
    item
}

/// The patient as billing needs them, from the Patient resource.
#[derive(Clone)]
pub struct BillingPatient {
    pub id: String,
    pub mrn: Option<String>,
    pub family: String,
    pub given: Vec<String>,
    pub birth_date: Option<String>,
    /// HL7 v2 table 0001: F, M, O, U.
    pub sex: Option<String>,
}

impl std::fmt::Debug for BillingPatient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BillingPatient({})", self.id)
    }
}

/// Reads a Patient for billing: the official (else first) name's family and given names,
/// the MRN, birth date, and sex mapped to HL7 v2 table 0001. The MRN is the identifier of
/// `mrn_system` when IT names the organisation's MRN system (another facility's MR is not
/// ours), else the first of type v2-0203 `MR`.
pub fn billing_patient(
    patient: &Value,
    mrn_system: Option<&str>,
) -> Result<BillingPatient, CoreError> {
    let r = Resource::new(patient)?;
    let id = r.str("id").unwrap_or_default().to_string();
    let names = r.get("name").and_then(Value::as_array);
    let name = names.and_then(|n| {
        n.iter()
            .find(|x| x["use"] == "official")
            .or_else(|| n.first())
    });
    let family = name
        .and_then(|n| n["family"].as_str())
        .map(str::to_string)
        .or_else(|| human_name(r.get("name"), false))
        .ok_or_else(|| r.error("name", "has no family name (billing needs one)"))?;
    let given = name
        .and_then(|n| n["given"].as_array())
        .map(|g| {
            g.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mrn = r
        .get("identifier")
        .and_then(Value::as_array)
        .and_then(|ids| {
            ids.iter().find(|i| match mrn_system {
                Some(system) => i["system"] == system,
                None => i
                    .pointer("/type/coding")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.iter().any(|c| c["code"] == "MR")),
            })
        })
        .and_then(|i| i["value"].as_str())
        .map(str::to_string);
    let sex = r.str("gender").map(|g| {
        match g {
            "female" => "F",
            "male" => "M",
            "other" => "O",
            _ => "U",
        }
        .to_string()
    });
    Ok(BillingPatient {
        id,
        mrn,
        family,
        given,
        birth_date: r.str("birthDate").map(str::to_string),
        sex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> NoteDraft {
        NoteDraft {
            appointment_id: "a1".into(),
            sections: NoteSections {
                subjective: "Cough for 3 days.\n".into(),
                objective: String::new(),
                assessment: "Viral URI.".into(),
                plan: "Fluids, rest.".into(),
            },
            diagnoses: vec![NoteDiagnosis {
                code: "J06.9".into(),
                description: Some("Acute upper respiratory infection, unspecified".into()),
            }],
            lines: vec![ServiceLine {
                code: "99213".into(),
                system: ServiceCodeSystem::Cpt,
                description: None,
                modifiers: vec!["95".into()],
                units: 1,
            }],
            patient_at_home: true,
            revision: 1,
        }
    }

    fn visit() -> Visit {
        Visit {
            appointment_id: "a1".into(),
            patient_id: "p1".into(),
            modality: Modality::Virtual,
            start: Some("2026-03-10T15:00:00Z".into()),
            end: Some("2026-03-10T15:20:00Z".into()),
            encounter: None,
            encounter_key: "k-enc".into(),
        }
    }

    fn author() -> Author {
        Author {
            reference: Some("Practitioner/d1".into()),
            display: "Dr Ada Lovelace".into(),
        }
    }

    #[test]
    fn the_text_has_each_filled_section_under_its_heading() {
        assert_eq!(
            render_text(&draft()),
            "Subjective\nCough for 3 days.\n\nAssessment\nViral URI.\n\nPlan\nFluids, rest.\n\n\
             Diagnoses (ICD-10-CM)\nJ06.9 Acute upper respiratory infection, unspecified\n\n\
             Services\n99213-95"
        );
    }

    #[test]
    fn the_document_is_a_final_clinical_note_whose_attachment_is_the_text() {
        let doc = document_reference(&draft(), &visit(), &author(), "2026-03-10T15:25:00Z", None);
        assert_eq!(doc["status"], "current");
        assert_eq!(doc["docStatus"], "final");
        assert_eq!(doc["category"][0]["coding"][0]["code"], "clinical-note");
        assert_eq!(doc["subject"]["reference"], "Patient/p1");
        assert_eq!(doc["author"][0]["reference"], "Practitioner/d1");
        assert_eq!(
            doc["context"]["encounter"][0]["identifier"]["value"],
            "k-enc"
        );
        let data = doc["content"][0]["attachment"]["data"].as_str().unwrap();
        let text = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), render_text(&draft()));
        assert!(doc.get("relatesTo").is_none());
        let amended = document_reference(
            &draft(),
            &visit(),
            &author(),
            "2026-03-10T16:00:00Z",
            Some((Some("doc9"), "k-v1")),
        );
        assert_eq!(amended["relatesTo"][0]["code"], "replaces");
        assert_eq!(
            amended["relatesTo"][0]["target"]["reference"],
            "DocumentReference/doc9"
        );
    }

    #[test]
    fn a_stored_encounter_is_finished_keeping_the_rest_and_a_missing_one_is_made() {
        let stored = json!({"resourceType": "Encounter", "id": "e1", "status": "in-progress",
            "period": {"start": "2026-03-10T15:01:00Z"}, "x-unknown": 1});
        let e = finished_encounter(Some(&stored), &visit(), &author());
        assert_eq!(e["status"], "finished");
        assert_eq!(e["x-unknown"], 1);
        assert_eq!(e["period"]["end"], "2026-03-10T15:20:00Z");
        let made = finished_encounter(None, &visit(), &author());
        assert_eq!(made["class"]["code"], "VR");
        assert_eq!(made["appointment"][0]["reference"], "Appointment/a1");
    }

    #[test]
    fn a_charge_item_carries_code_modifier_place_and_diagnoses() {
        let d = draft();
        let item = charge_item(&d.lines[0], &d.diagnoses, "10", &visit(), &author(), "t");
        assert_eq!(item["code"]["coding"][0]["system"], CPT);
        assert_eq!(item["code"]["coding"][0]["code"], "99213");
        assert_eq!(
            item["extension"][0]["valueCodeableConcept"]["coding"][0]["code"],
            "95"
        );
        assert_eq!(
            item["extension"][1]["valueCodeableConcept"]["coding"][0]["code"],
            "10"
        );
        assert_eq!(item["reason"][0]["coding"][0]["code"], "J06.9");
        assert_eq!(item["occurrenceDateTime"], "2026-03-10T15:00:00Z");
    }

    #[test]
    fn billing_reads_family_given_mrn_and_sex() {
        let p = json!({"resourceType": "Patient", "id": "p1", "gender": "female",
            "birthDate": "1980-02-29",
            "name": [{"use": "nickname", "given": ["Jo"]},
                     {"use": "official", "family": "O'Brien|Smith", "given": ["Mary", "Ann"]}],
            "identifier": [{"value": "x"},
                {"type": {"coding": [{"code": "MR"}]}, "value": "MRN-7"}]});
        let b = billing_patient(&p, None).unwrap();
        assert_eq!(b.family, "O'Brien|Smith");
        assert_eq!(b.given, ["Mary", "Ann"]);
        assert_eq!(b.mrn.as_deref(), Some("MRN-7"));
        assert_eq!(b.sex.as_deref(), Some("F"));
        assert!(!format!("{b:?}").contains("Brien"));
        // IT's MRN system picks its own identifier, not another facility's MR.
        let mut p = p;
        p["identifier"][0] = json!({"system": "urn:oid:1.2.3", "value": "OURS-1",
            "type": {"coding": [{"code": "XX"}]}});
        p["identifier"][1]["system"] = json!("urn:other-facility");
        assert_eq!(
            billing_patient(&p, Some("urn:oid:1.2.3"))
                .unwrap()
                .mrn
                .as_deref(),
            Some("OURS-1")
        );
    }
}
