//! The row the encrypted store keeps for a resource: its JSON and the projection fields the
//! views query (owning patient, appointment start and practitioner, observation code and
//! time). `hearth-store` knows no FHIR; this is the FHIR understanding its projections need.

use crate::fhir::{concept_code, reference_id, Resource};
use crate::ModelError;
use hearth_store::{Projection, ResourceRow};
use serde_json::Value;

/// The patient a resource belongs to, if any: its `subject` or `patient`, or an
/// Appointment's patient participant.
pub fn owning_patient(r: &Resource<'_>) -> Option<String> {
    if r.resource_type() == "Patient" {
        return None;
    }
    reference_id(r.get("subject"), "Patient")
        .or_else(|| reference_id(r.get("patient"), "Patient"))
        .or_else(|| {
            // Appointment: the patient among the participants.
            r.get("participant")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|p| reference_id(p.get("actor"), "Patient"))
        })
        .map(str::to_string)
}

/// The row the encrypted store keeps for a resource: its JSON and projection fields.
pub fn resource_row(resource: &Value) -> Result<ResourceRow, ModelError> {
    row_with_text(resource, resource.to_string())
}

/// The row for a resource as the server sent it: `json` is kept byte for byte.
pub fn resource_row_raw(json: &str) -> Result<ResourceRow, ModelError> {
    resource_row_owned(json.to_string())
}

/// The row for a resource whose projected elements were already read (hearth-fhir reads
/// them with its identity: `RawResource::projected`), so the text is not scanned again.
pub fn resource_row_projected(
    json: String,
    projected: serde_json::Map<String, Value>,
) -> Result<ResourceRow, ModelError> {
    row_with_text(&Value::Object(projected), json)
}

/// [`resource_row_raw`] taking the text by value (no copy).
///
/// Only the elements the projections read are materialised (the rest is skipped while
/// parsing), which keeps a 190k-resource sync fast; anything unusual takes the full parse,
/// so the errors are the same either way.
pub fn resource_row_owned(json: String) -> Result<ResourceRow, ModelError> {
    #[derive(serde::Deserialize)]
    struct Projected {
        #[serde(rename = "resourceType")]
        resource_type: Option<Value>,
        id: Option<Value>,
        meta: Option<Value>,
        subject: Option<Value>,
        patient: Option<Value>,
        participant: Option<Value>,
        start: Option<Value>,
        code: Option<Value>,
        #[serde(rename = "effectiveDateTime")]
        effective_date_time: Option<Value>,
        #[serde(rename = "effectivePeriod")]
        effective_period: Option<Value>,
    }
    if let Ok(p) = serde_json::from_str::<Projected>(&json) {
        let fields = [
            ("resourceType", p.resource_type),
            ("id", p.id),
            ("meta", p.meta),
            ("subject", p.subject),
            ("patient", p.patient),
            ("participant", p.participant),
            ("start", p.start),
            ("code", p.code),
            ("effectiveDateTime", p.effective_date_time),
            ("effectivePeriod", p.effective_period),
        ];
        let small: serde_json::Map<String, Value> = fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect();
        return row_with_text(&Value::Object(small), json);
    }
    let value: Value = serde_json::from_str(&json).map_err(|e| {
        ModelError::invalid_data("resource", "(document)", format!("is not JSON: {e}"))
    })?;
    row_with_text(&value, json)
}

/// Types whose top-level `code` is a CodeableConcept the chart reads.
const CODED: &[&str] = &[
    "Observation",
    "Condition",
    "Procedure",
    "AllergyIntolerance",
    "DiagnosticReport",
];

/// The elements the projections read must have their FHIR R4 datatype's JSON shape
/// (a Reference or a CodeableConcept is an object, a dateTime a string): a record whose
/// `subject` is a bare string would otherwise be stored with no owning patient, and one whose
/// `code` is a string with no code, and no word to anyone.
fn check_shapes(r: &Resource<'_>) -> Result<(), ModelError> {
    let wrong =
        |field: &str, problem: &str| Err(ModelError::invalid_data(r.label(), field, problem));
    let reference = |field: &str, v: Option<&Value>| -> Result<(), ModelError> {
        match v {
            None | Some(Value::Object(_)) => {}
            Some(_) => return wrong(field, "is not a Reference (a JSON object)"),
        }
        match v.and_then(|v| v.get("reference")) {
            None | Some(Value::String(_)) => Ok(()),
            Some(_) => wrong(&format!("{field}.reference"), "is not a string"),
        }
    };
    reference("subject", r.get("subject"))?;
    reference("patient", r.get("patient"))?;
    if let Some(participants) = r.get("participant") {
        let Some(list) = participants.as_array() else {
            return wrong("participant", "is not a list");
        };
        for (i, p) in list.iter().enumerate() {
            if !p.is_object() {
                return wrong(&format!("participant[{i}]"), "is not an object");
            }
            if r.resource_type() == "Appointment" {
                reference(&format!("participant[{i}].actor"), p.get("actor"))?;
            }
        }
    }
    if CODED.contains(&r.resource_type()) {
        match r.get("code") {
            None | Some(Value::Object(_)) => {}
            Some(_) => return wrong("code", "is not a CodeableConcept (a JSON object)"),
        }
        match r.get("code").and_then(|c| c.get("coding")) {
            None => {}
            Some(Value::Array(codings)) if codings.iter().all(Value::is_object) => {}
            Some(_) => return wrong("code.coding", "is not a list of Codings"),
        }
    }
    for field in ["effectiveDateTime", "start"] {
        if r.get(field).is_some_and(|v| !v.is_string()) {
            return wrong(field, "is not a string");
        }
    }
    if r.get("effectivePeriod").is_some_and(|v| !v.is_object()) {
        return wrong("effectivePeriod", "is not a Period (a JSON object)");
    }
    Ok(())
}

fn row_with_text(resource: &Value, json: String) -> Result<ResourceRow, ModelError> {
    let r = Resource::new(resource)?;
    check_shapes(&r)?;
    let index = match r.resource_type() {
        "Appointment" if r.get("start").is_some() => Projection::Appointment {
            start_utc: r
                .required_instant("start")?
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            practitioner_id: r
                .get("participant")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|p| reference_id(p.get("actor"), "Practitioner"))
                .map(str::to_string),
        },
        "Observation" => Projection::Observation {
            code: concept_code(r.get("code"), "http://loinc.org").map(str::to_string),
            effective: r
                .str("effectiveDateTime")
                .or_else(|| r.str("effectivePeriod.start"))
                .map(str::to_string),
        },
        _ => Projection::None,
    };
    Ok(ResourceRow {
        resource_type: r.resource_type().to_string(),
        id: r.id().to_string(),
        version_id: r.str("meta.versionId").map(str::to_string),
        last_updated: r.str("meta.lastUpdated").map(str::to_string),
        patient_id: owning_patient(&r),
        json,
        index,
        packed: None,
    })
}

#[cfg(test)]
mod shape_tests {
    use super::*;
    use serde_json::json;

    fn problem(v: Value) -> String {
        resource_row_raw(&v.to_string()).err().unwrap().to_string()
    }

    #[test]
    fn elements_of_the_wrong_json_type_are_named_not_stored_partly() {
        assert_eq!(
            problem(json!({"resourceType": "Encounter", "id": "e1", "subject": "Patient/p1"})),
            "Encounter/e1: field `subject` is not a Reference (a JSON object)"
        );
        assert_eq!(
            problem(
                json!({"resourceType": "Observation", "id": "o1", "code": "8867-4",
                           "subject": {"reference": "Patient/p1"}})
            ),
            "Observation/o1: field `code` is not a CodeableConcept (a JSON object)"
        );
        assert_eq!(
            problem(json!({"resourceType": "Condition", "id": "c1",
                           "subject": {"reference": 7}})),
            "Condition/c1: field `subject.reference` is not a string"
        );
        assert_eq!(
            problem(json!({"resourceType": "Appointment", "id": "a1",
                           "start": "2026-01-01T10:00:00Z",
                           "participant": [{"actor": "Patient/p1"}]})),
            "Appointment/a1: field `participant[0].actor` is not a Reference (a JSON object)"
        );
        // Well-formed records still give their owning patient and codes.
        let row = resource_row_raw(
            &json!({"resourceType": "Observation", "id": "o1",
                    "subject": {"reference": "Patient/p1"},
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}})
            .to_string(),
        )
        .unwrap();
        assert_eq!(row.patient_id.as_deref(), Some("p1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_rows_carry_the_projection_fields() {
        let appt = json!({"resourceType": "Appointment", "id": "a1", "meta": {"versionId": "2"},
            "start": "2026-03-10T09:00:00-05:00",
            "participant": [{"actor": {"reference": "Patient/p1"}}, {"actor": {"reference": "Practitioner/d1"}}]});
        let row = resource_row(&appt).unwrap();
        assert_eq!(resource_row_raw(&appt.to_string()).unwrap(), row);
        assert_eq!(row.version_id.as_deref(), Some("2"));
        assert_eq!(row.patient_id.as_deref(), Some("p1"));
        assert_eq!(
            row.index,
            Projection::Appointment {
                start_utc: "2026-03-10T14:00:00Z".into(),
                practitioner_id: Some("d1".into()),
            }
        );
        assert_eq!(row.json, appt.to_string());
        let bad = json!({"resourceType": "Appointment", "id": "a2", "start": "soon"});
        assert_eq!(
            resource_row(&bad).unwrap_err().to_string(),
            "Appointment/a2: field `start` is not an RFC 3339 instant"
        );
        assert_eq!(
            resource_row_raw(&bad.to_string()).unwrap_err(),
            resource_row(&bad).unwrap_err()
        );
        let obs = json!({"resourceType": "Observation", "id": "o1",
            "subject": {"reference": "Patient/p2"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "effectivePeriod": {"start": "2025-01-01T10:00:00Z"}});
        let row = resource_row_raw(&obs.to_string()).unwrap();
        assert_eq!(row.patient_id.as_deref(), Some("p2"));
        assert_eq!(
            row.index,
            Projection::Observation {
                code: Some("8480-6".into()),
                effective: Some("2025-01-01T10:00:00Z".into()),
            }
        );
        assert_eq!(
            resource_row_raw("{\"resourceType\": 3").unwrap_err().code(),
            hearth_ipc::ErrorCode::InvalidData
        );
    }
}
