//! The patient chart: banner, problems, medications, allergies, vital-sign trends, labs with
//! reference ranges, and encounters, projected from the FHIR resources in the store.

use crate::fhir::{concept_code, concept_has, concept_text, first_code, human_name, Resource};
use crate::store::ClinicalStore;
use crate::CoreError;
use chrono::{Datelike, NaiveDate};
use hearth_ipc::{
    Allergy, Chart, EncounterRow, LabFlag, LabResult, Medication, Modality, NoteRow, PatientBanner,
    Problem, VitalPoint, VitalSeries,
};
use serde_json::Value;
use std::collections::BTreeMap;

const LOINC: &str = "http://loinc.org";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const BP_PANEL: &str = "85354-9";

/// Vital signs in the order the chart shows them, with short labels.
const VITALS: &[(&str, &str)] = &[
    ("8480-6", "Systolic BP"),
    ("8462-4", "Diastolic BP"),
    ("8867-4", "Heart rate"),
    ("9279-1", "Respiratory rate"),
    ("59408-5", "SpO₂"),
    ("2708-6", "SpO₂"),
    ("8310-5", "Temperature"),
    ("29463-7", "Weight"),
    ("8302-2", "Height"),
    ("39156-5", "BMI"),
];

/// Builds the chart of `patient_id` as of `today` (for the age).
pub fn chart(
    store: &dyn ClinicalStore,
    patient_id: &str,
    today: NaiveDate,
) -> Result<Chart, CoreError> {
    let patient_json = store
        .get("Patient", patient_id)?
        .ok_or_else(|| CoreError::NotFound {
            what: format!("Patient/{patient_id}"),
        })?;
    let patient = Resource::new(&patient_json)?;
    let mut issues = Vec::new();
    let mut problems = gather(store, patient_id, "Condition", &mut issues, &mut problem)?;
    problems.sort_by(|a, b| b.onset.cmp(&a.onset));
    let mut medications = gather(
        store,
        patient_id,
        "MedicationRequest",
        &mut issues,
        &mut medication,
    )?;
    medications.sort_by(|a, b| a.display.cmp(&b.display));
    let allergies = gather(
        store,
        patient_id,
        "AllergyIntolerance",
        &mut issues,
        &mut allergy,
    )?;

    let mut vitals: BTreeMap<String, VitalSeries> = BTreeMap::new();
    let mut labs = gather(store, patient_id, "Observation", &mut issues, &mut |r| {
        observation(r, &mut vitals)
    })?;
    labs.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| a.name.cmp(&b.name)));
    let mut vitals: Vec<VitalSeries> = vitals.into_values().collect();
    for series in &mut vitals {
        series.points.sort_by(|a, b| a.date.cmp(&b.date));
    }
    let rank = |code: &str| {
        VITALS
            .iter()
            .position(|(c, _)| *c == code)
            .unwrap_or(usize::MAX)
    };
    vitals.sort_by_key(|s| rank(&s.code));

    let mut encounters = gather(store, patient_id, "Encounter", &mut issues, &mut encounter)?;
    encounters.sort_by(|a, b| b.date.cmp(&a.date));

    let mut notes = gather(
        store,
        patient_id,
        "DocumentReference",
        &mut issues,
        &mut document,
    )?;
    notes.sort_by(|a, b| b.date.cmp(&a.date));

    let banner = banner(&patient, &allergies, today, &mut issues)?;
    Ok(Chart {
        banner,
        problems,
        medications,
        allergies,
        vitals,
        labs,
        encounters,
        notes,
        data_issues: issues,
    })
}

/// Projects the patient's resources of one type with `f`; a resource that cannot be read is
/// left out and named in `issues`, and the others still show.
fn gather<T>(
    store: &dyn ClinicalStore,
    patient_id: &str,
    resource_type: &str,
    issues: &mut Vec<String>,
    f: &mut dyn FnMut(&Resource<'_>) -> Result<Option<T>, CoreError>,
) -> Result<Vec<T>, CoreError> {
    let mut out = Vec::new();
    for json in store.for_patient(resource_type, patient_id)? {
        match Resource::new(&json)
            .map_err(CoreError::from)
            .and_then(|r| f(&r))
        {
            Ok(Some(v)) => out.push(v),
            Ok(None) => {}
            Err(e) => issues.push(e.to_string()),
        }
    }
    Ok(out)
}

/// The banner. A birth date is shown as recorded (a partial date stays partial) and the age
/// is computed only from a full date; a malformed one is a data issue, not a failed chart.
fn banner(
    p: &Resource<'_>,
    allergies: &[Allergy],
    today: NaiveDate,
    issues: &mut Vec<String>,
) -> Result<PatientBanner, CoreError> {
    let birth = p.date("birthDate").unwrap_or_else(|e| {
        issues.push(e.to_string());
        None
    });
    let recorded = p.str("birthDate").filter(|_| birth.is_some());
    let full_date = recorded.is_some_and(|s| s.len() == 10);
    let mrn = p
        .get("identifier")
        .and_then(Value::as_array)
        .and_then(|ids| ids.iter().find(|i| concept_has(i.get("type"), None, "MR")))
        .and_then(|i| i.get("value"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(PatientBanner {
        patient_id: p.id().to_string(),
        name: human_name(p.get("name"), false).unwrap_or_else(|| "(no name recorded)".into()),
        birth_date: recorded.map(str::to_string),
        age_years: birth.filter(|_| full_date).and_then(|b| age(b, today)),
        sex: p.str("gender").map(str::to_string),
        mrn,
        allergy_summary: allergies.iter().map(|a| a.substance.clone()).collect(),
    })
}

/// Whole years from `birth` to `today`.
pub fn age(birth: NaiveDate, today: NaiveDate) -> Option<u32> {
    let mut years = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).ok()
}

/// The code of a status CodeableConcept (its first coding), as FHIR defines it.
fn status_code<'a>(r: &Resource<'a>, field: &str) -> Option<&'a str> {
    first_code(r.get(field))
}

/// Entries voided or disproved by the EHR are not shown (FHIR con-5 / ait-2: such entries
/// carry no clinical status at all).
fn voided(r: &Resource<'_>) -> bool {
    matches!(
        status_code(r, "verificationStatus"),
        Some("entered-in-error" | "refuted")
    )
}

fn problem(r: &Resource<'_>) -> Result<Option<Problem>, CoreError> {
    if voided(r) {
        return Ok(None);
    }
    let status = status_code(r, "clinicalStatus").unwrap_or("unknown");
    if !matches!(status, "active" | "recurrence" | "relapse" | "unknown") {
        return Ok(None);
    }
    let code = r.get("code");
    let display = concept_text(code).ok_or_else(|| r.error("code", "is missing"))?;
    Ok(Some(Problem {
        display,
        code: concept_code(code, ICD10).map(str::to_string),
        clinical_status: status.to_string(),
        onset: r.date("onsetDateTime")?.map(|d| d.to_string()),
    }))
}

fn medication(r: &Resource<'_>) -> Result<Option<Medication>, CoreError> {
    let status = r.required_str("status")?;
    if !matches!(status, "active" | "on-hold") {
        return Ok(None);
    }
    let display = concept_text(r.get("medicationCodeableConcept"))
        .or_else(|| {
            r.get("medicationReference.display")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .ok_or_else(|| r.error("medication[x]", "is missing"))?;
    Ok(Some(Medication {
        display,
        dosage: r.str("dosageInstruction.0.text").map(str::to_string),
        status: status.to_string(),
        authored_on: r.date("authoredOn")?.map(|d| d.to_string()),
    }))
}

fn allergy(r: &Resource<'_>) -> Result<Option<Allergy>, CoreError> {
    if voided(r) || status_code(r, "clinicalStatus").is_some_and(|s| s != "active") {
        return Ok(None);
    }
    Ok(Some(Allergy {
        substance: concept_text(r.get("code")).ok_or_else(|| r.error("code", "is missing"))?,
        criticality: r.str("criticality").map(str::to_string),
        reaction: concept_text(r.get("reaction.0.manifestation.0")),
    }))
}

fn quantity(q: Option<&Value>) -> Option<(f64, String)> {
    let q = q?;
    let value = q.get("value")?.as_f64()?;
    let unit = q
        .get("unit")
        .or_else(|| q.get("code"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some((value, unit.to_string()))
}

/// Adds a vital sign to its series in `vitals`, or returns a numeric lab result.
fn observation(
    r: &Resource<'_>,
    vitals: &mut BTreeMap<String, VitalSeries>,
) -> Result<Option<LabResult>, CoreError> {
    if matches!(r.str("status"), Some("entered-in-error" | "cancelled")) {
        return Ok(None);
    }
    let categories = r.get("category").and_then(Value::as_array);
    let in_category = |code: &str| {
        categories.is_some_and(|cs| {
            cs.iter()
                .any(|c| concept_has(Some(c), Some(OBSERVATION_CATEGORY), code))
        })
    };
    let is_vital = in_category("vital-signs");
    let is_lab = in_category("laboratory");
    if !is_vital && !is_lab {
        return Ok(None);
    }
    let code = r.get("code");
    let loinc = concept_code(code, LOINC).ok_or_else(|| r.error("code", "has no LOINC coding"))?;
    let date = r
        .date("effectiveDateTime")?
        .or(r.date("effectivePeriod.start")?)
        .ok_or_else(|| r.error("effective[x]", "is missing"))?
        .to_string();

    if is_vital {
        // A trend is drawn in one unit: a measurement in another unit is named, not mixed in.
        let mut add = |code: &str, q: Option<&Value>| -> Result<(), CoreError> {
            let Some((label, (value, unit))) = VITALS
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, l)| *l)
                .zip(quantity(q))
            else {
                return Ok(());
            };
            let series = vitals
                .entry(code.to_string())
                .or_insert_with(|| VitalSeries {
                    code: code.to_string(),
                    label: label.to_string(),
                    unit: unit.clone(),
                    points: Vec::new(),
                });
            if series.unit != unit {
                return Err(CoreError::from(r.error(
                    "valueQuantity.unit",
                    &format!(
                        "is {unit:?}, unlike the {:?} of earlier measurements",
                        series.unit
                    ),
                )));
            }
            series.points.push(VitalPoint {
                date: date.clone(),
                value,
            });
            Ok(())
        };
        if loinc == BP_PANEL {
            for c in r
                .get("component")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(cc) = concept_code(c.get("code"), LOINC) {
                    add(cc, c.get("valueQuantity"))?;
                }
            }
        } else {
            add(loinc, r.get("valueQuantity"))?;
        }
        return Ok(None);
    }

    // Laboratory: only numeric results are charted; others stay in the raw store.
    let Some((value, unit)) = quantity(r.get("valueQuantity")) else {
        return Ok(None);
    };
    let comparator = r.str("valueQuantity.comparator").map(str::to_string);
    let range_low = r.get("referenceRange.0.low.value").and_then(Value::as_f64);
    let range_high = r.get("referenceRange.0.high.value").and_then(Value::as_f64);
    let interpretation = r.get("interpretation.0");
    let flag = if concept_has(interpretation, None, "H") || concept_has(interpretation, None, "HH")
    {
        Some(LabFlag::High)
    } else if concept_has(interpretation, None, "L") || concept_has(interpretation, None, "LL") {
        Some(LabFlag::Low)
    } else if concept_has(interpretation, None, "N") {
        Some(LabFlag::Normal)
    } else if comparator.is_none() && (range_low.is_some() || range_high.is_some()) {
        // A bound ("<0.01") is not compared with the range: the true value is unknown.
        Some(if range_high.is_some_and(|h| value > h) {
            LabFlag::High
        } else if range_low.is_some_and(|l| value < l) {
            LabFlag::Low
        } else {
            LabFlag::Normal
        })
    } else {
        None
    };
    Ok(Some(LabResult {
        date,
        name: concept_text(code).unwrap_or_else(|| loinc.to_string()),
        value,
        comparator,
        unit,
        range_low,
        range_high,
        flag,
    }))
}

fn encounter(r: &Resource<'_>) -> Result<Option<EncounterRow>, CoreError> {
    // Only encounters that took or are taking place belong in the history.
    if matches!(
        r.str("status"),
        Some("planned" | "cancelled" | "entered-in-error")
    ) {
        return Ok(None);
    }
    let date = r
        .date("period.start")?
        .ok_or_else(|| r.error("period.start", "is missing"))?;
    let class = r.str("class.code");
    Ok(Some(EncounterRow {
        date: date.to_string(),
        kind: concept_text(r.get("type.0"))
            .or_else(|| r.str("class.display").map(str::to_string))
            .unwrap_or_else(|| "Encounter".into()),
        reason: concept_text(r.get("reasonCode.0")),
        modality: if class == Some("VR") {
            Modality::Virtual
        } else {
            Modality::InPerson
        },
    }))
}

/// A DocumentReference as a note in the chart: its text when it carries a `text/plain`
/// attachment (inline `data`, base64), else only its title. Superseded and voided documents
/// are left out (their replacement shows); drafts are not the chart's.
fn document(r: &Resource<'_>) -> Result<Option<NoteRow>, CoreError> {
    let status = r.str("status").unwrap_or("current");
    if matches!(status, "superseded" | "entered-in-error")
        || matches!(r.str("docStatus"), Some("preliminary" | "entered-in-error"))
    {
        return Ok(None);
    }
    let date = r
        .str("date")
        .or_else(|| r.str("context.period.start"))
        .map(str::to_string)
        .unwrap_or_default();
    let mut text = None;
    if let Some(content) = r.get("content").and_then(Value::as_array) {
        for c in content {
            let attachment = &c["attachment"];
            let plain = attachment["contentType"]
                .as_str()
                .is_some_and(|t| t.trim_start().starts_with("text/plain"));
            if let (true, Some(data)) = (plain, attachment["data"].as_str()) {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|_| r.error("content.attachment.data", "is not base64"))?;
                text = Some(String::from_utf8_lossy(&bytes).into_owned());
                break;
            }
        }
    }
    let amended = r
        .get("relatesTo")
        .and_then(Value::as_array)
        .is_some_and(|rel| rel.iter().any(|x| x["code"] == "replaces"));
    Ok(Some(NoteRow {
        date,
        title: concept_text(r.get("type"))
            .or_else(|| r.str("description").map(str::to_string))
            .unwrap_or_else(|| "Note".into()),
        author: r.str("author.0.display").map(str::to_string),
        text,
        status: if amended { "amended" } else { "final" }.into(),
        document_id: r.str("id").map(str::to_string),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use serde_json::json;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 10).unwrap()
    }

    fn store() -> MemoryStore {
        let s = MemoryStore::new();
        s.upsert(json!({
            "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-03-11",
            "name": [{"use": "official", "given": ["Ada"], "family": "Lovelace"}],
            "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "4100123"}]
        }))
        .unwrap();
        s
    }

    fn subject() -> Value {
        json!({"reference": "Patient/p1"})
    }

    #[test]
    fn banner_has_name_age_sex_mrn_and_allergies() {
        let s = store();
        s.upsert(
            json!({"resourceType": "AllergyIntolerance", "id": "a1", "patient": subject(),
            "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "Peanut"}}),
        )
        .unwrap();
        let c = chart(&s, "p1", today()).unwrap();
        assert_eq!(c.banner.name, "Ada Lovelace");
        assert_eq!(c.banner.age_years, Some(65), "birthday is tomorrow");
        assert_eq!(c.banner.mrn.as_deref(), Some("4100123"));
        assert_eq!(c.banner.allergy_summary, ["Peanut"]);
    }

    #[test]
    fn a_partial_or_bad_birth_date_is_never_invented() {
        let s = MemoryStore::new();
        s.upsert(json!({"resourceType": "Patient", "id": "p1", "birthDate": "1960-04"}))
            .unwrap();
        s.upsert(json!({"resourceType": "Patient", "id": "p2", "birthDate": "sixties"}))
            .unwrap();
        let b = chart(&s, "p1", today()).unwrap().banner;
        assert_eq!(
            (b.birth_date.as_deref(), b.age_years),
            (Some("1960-04"), None)
        );
        let c = chart(&s, "p2", today()).unwrap();
        assert_eq!((c.banner.birth_date, c.banner.age_years), (None, None));
        assert_eq!(
            c.data_issues,
            ["Patient/p2: field `birthDate` is not a FHIR date"]
        );
    }

    #[test]
    fn unknown_patient_is_not_found() {
        let e = chart(&store(), "nobody", today()).unwrap_err();
        assert_eq!(e.code(), hearth_ipc::ErrorCode::NotFound);
        assert_eq!(e.to_string(), "Patient/nobody was not found");
    }

    #[test]
    fn blood_pressure_panels_become_two_trends_in_date_order() {
        let s = store();
        for (i, (date, sys)) in [("2025-01-01", 150.0), ("2024-01-01", 140.0)]
            .iter()
            .enumerate()
        {
            s.upsert(json!({
                "resourceType": "Observation", "id": format!("bp{i}"), "status": "final", "subject": subject(),
                "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs"}]}],
                "code": {"coding": [{"system": LOINC, "code": BP_PANEL}]},
                "effectiveDateTime": date,
                "component": [
                    {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": sys, "unit": "mm[Hg]"}},
                    {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": {"value": 80, "unit": "mm[Hg]"}}
                ]
            })).unwrap();
        }
        let c = chart(&s, "p1", today()).unwrap();
        assert_eq!(c.vitals.len(), 2);
        assert_eq!(c.vitals[0].label, "Systolic BP");
        let values: Vec<f64> = c.vitals[0].points.iter().map(|p| p.value).collect();
        assert_eq!(values, [140.0, 150.0]);
    }

    #[test]
    fn a_vital_sign_in_another_unit_is_named_not_mixed_into_the_trend() {
        let s = store();
        for (id, value, unit) in [
            ("w1", 80.0, "kg"),
            ("w2", 81.0, "kg"),
            ("w3", 180.0, "[lb_av]"),
        ] {
            s.upsert(json!({
                "resourceType": "Observation", "id": id, "status": "final", "subject": subject(),
                "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs"}]}],
                "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
                "effectiveDateTime": format!("2025-01-0{}", &id[1..]),
                "valueQuantity": {"value": value, "unit": unit}
            }))
            .unwrap();
        }
        let c = chart(&s, "p1", today()).unwrap();
        assert_eq!(c.vitals[0].points.len(), 2);
        assert_eq!(c.data_issues.len(), 1);
        assert!(
            c.data_issues[0].starts_with("Observation/w3: field `valueQuantity.unit`"),
            "{:?}",
            c.data_issues
        );
    }

    #[test]
    fn labs_are_flagged_against_their_reference_range() {
        let s = store();
        s.upsert(json!({
            "resourceType": "Observation", "id": "l1", "status": "final", "subject": subject(),
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": "2823-3"}], "text": "Potassium"},
            "effectiveDateTime": "2026-01-05T10:00:00Z",
            "valueQuantity": {"value": 5.9, "unit": "mmol/L"},
            "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.1}}]
        }))
        .unwrap();
        let c = chart(&s, "p1", today()).unwrap();
        assert_eq!(c.labs.len(), 1);
        assert_eq!(c.labs[0].flag, Some(LabFlag::High));
        assert_eq!(c.labs[0].range_high, Some(5.1));
    }

    #[test]
    fn a_malformed_record_is_named_and_the_rest_of_the_chart_shows() {
        let s = store();
        s.upsert(json!({"resourceType": "Condition", "id": "c-bad", "subject": subject()}))
            .unwrap();
        s.upsert(
            json!({"resourceType": "Condition", "id": "c-ok", "subject": subject(),
            "code": {"text": "Asthma"}, "clinicalStatus": {"coding": [{"code": "active"}]}}),
        )
        .unwrap();
        let c = chart(&s, "p1", today()).unwrap();
        assert_eq!(c.problems.len(), 1);
        assert_eq!(c.data_issues, ["Condition/c-bad: field `code` is missing"]);
    }

    #[test]
    fn voided_refuted_and_inactive_entries_are_not_shown() {
        let s = store();
        let cond = |id: &str, clinical: Option<&str>, verification: &str| {
            let mut c = json!({"resourceType": "Condition", "id": id, "subject": subject(),
                "code": {"text": id}, "verificationStatus": {"coding": [{"code": verification}]}});
            if let Some(code) = clinical {
                c["clinicalStatus"] =
                    json!({"coding": [{"code": code, "display": "Whatever the EHR says"}]});
            }
            c
        };
        s.upsert(cond("shown", Some("active"), "confirmed"))
            .unwrap();
        s.upsert(cond("voided", None, "entered-in-error")).unwrap();
        s.upsert(cond("refuted", Some("inactive"), "refuted"))
            .unwrap();
        s.upsert(cond("resolved", Some("resolved"), "confirmed"))
            .unwrap();
        s.upsert(json!({"resourceType": "AllergyIntolerance", "id": "a-void", "patient": subject(),
            "verificationStatus": {"coding": [{"code": "entered-in-error"}]}, "code": {"text": "Latex"}})).unwrap();
        s.upsert(
            json!({"resourceType": "Encounter", "id": "e-cancelled", "status": "cancelled",
            "subject": subject(), "period": {"start": "2025-01-01"}}),
        )
        .unwrap();
        s.upsert(
            json!({"resourceType": "Encounter", "id": "e-planned", "status": "planned",
            "subject": subject()}),
        )
        .unwrap();
        let c = chart(&s, "p1", today()).unwrap();
        let shown: Vec<_> = c.problems.iter().map(|p| p.display.as_str()).collect();
        assert_eq!(shown, ["shown"]);
        assert!(c.allergies.is_empty() && c.banner.allergy_summary.is_empty());
        assert!(c.encounters.is_empty());
        assert!(c.data_issues.is_empty(), "{:?}", c.data_issues);
    }

    #[test]
    fn age_counts_whole_years() {
        let b = NaiveDate::from_ymd_opt(2000, 2, 29).unwrap();
        assert_eq!(
            age(b, NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()),
            Some(25)
        );
        assert_eq!(
            age(b, NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()),
            Some(26)
        );
    }
}
