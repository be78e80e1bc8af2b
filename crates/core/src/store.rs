//! The seam between the application and its local store of clinical data.
//!
//! Every view reads through [`ClinicalStore`]; nothing on a read path touches the network.
//! [`MemoryStore`] serves demo mode and tests; the encrypted SQLite store
//! ([`hearth_store::Store`]) implements the same trait, with the FHIR understanding its
//! projections need (owning patient, appointment start, observation code) supplied from here.

use crate::fhir::{concept_code, reference_id, Resource};
use crate::CoreError;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

/// A local store of FHIR resources, kept whole (every element as received).
pub trait ClinicalStore: Send + Sync {
    /// Inserts or replaces a resource. Fails, naming the field, if it has no type or id.
    fn upsert(&self, resource: Value) -> Result<(), CoreError>;
    /// One resource by type and id.
    fn get(&self, resource_type: &str, id: &str) -> Result<Option<Value>, CoreError>;
    /// Every resource of a type, in id order.
    fn all_of_type(&self, resource_type: &str) -> Result<Vec<Value>, CoreError>;
    /// The resources of a type that belong to one patient (by `subject` or `patient`).
    fn for_patient(&self, resource_type: &str, patient_id: &str) -> Result<Vec<Value>, CoreError>;
    /// How many resources the store holds.
    fn len(&self) -> Result<usize, CoreError>;
    /// Whether the store holds no resources (e.g. before the first sync).
    fn is_empty(&self) -> Result<bool, CoreError> {
        Ok(self.len()? == 0)
    }
}

type Key = (String, String);

/// An in-memory [`ClinicalStore`]. Holds PHI only in process memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    resources: BTreeMap<Key, Value>,
    /// patient id → keys of the resources that point at that patient.
    by_patient: HashMap<String, Vec<Key>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The patient a resource belongs to, if any.
fn owning_patient(r: &Resource<'_>) -> Option<String> {
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

impl ClinicalStore for MemoryStore {
    fn upsert(&self, resource: Value) -> Result<(), CoreError> {
        let r = Resource::new(&resource)?;
        let key = (r.resource_type().to_string(), r.id().to_string());
        let patient = owning_patient(&r);
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let previous = inner.resources.insert(key.clone(), resource);
        let previous_patient = previous
            .as_ref()
            .and_then(|v| Resource::new(v).ok())
            .and_then(|r| owning_patient(&r));
        if previous_patient != patient {
            if let Some(old) = previous_patient {
                if let Some(keys) = inner.by_patient.get_mut(&old) {
                    keys.retain(|k| k != &key);
                }
            }
            if let Some(p) = patient {
                inner.by_patient.entry(p).or_default().push(key);
            }
        }
        Ok(())
    }

    fn get(&self, resource_type: &str, id: &str) -> Result<Option<Value>, CoreError> {
        let key = (resource_type.to_string(), id.to_string());
        Ok(self.read().resources.get(&key).cloned())
    }

    fn all_of_type(&self, resource_type: &str) -> Result<Vec<Value>, CoreError> {
        let inner = self.read();
        let start = (resource_type.to_string(), String::new());
        Ok(inner
            .resources
            .range(start..)
            .take_while(|((ty, _), _)| ty == resource_type)
            .map(|(_, v)| v.clone())
            .collect())
    }

    fn for_patient(&self, resource_type: &str, patient_id: &str) -> Result<Vec<Value>, CoreError> {
        let inner = self.read();
        Ok(inner
            .by_patient
            .get(patient_id)
            .into_iter()
            .flatten()
            .filter(|(ty, _)| ty == resource_type)
            .filter_map(|k| inner.resources.get(k).cloned())
            .collect())
    }

    fn len(&self) -> Result<usize, CoreError> {
        Ok(self.read().resources.len())
    }
}

/// The row the encrypted store keeps for a resource: its JSON and projection fields.
pub fn resource_row(resource: &Value) -> Result<hearth_store::ResourceRow, CoreError> {
    row_with_text(resource, resource.to_string())
}

/// The row for a resource as the server sent it: `json` is kept byte for byte.
pub fn resource_row_raw(json: &str) -> Result<hearth_store::ResourceRow, CoreError> {
    resource_row_owned(json.to_string())
}

/// [`resource_row_raw`] taking the text by value (no copy).
///
/// Only the elements the projections read are materialised (the rest is skipped while
/// parsing), which keeps a 190k-resource sync fast; anything unusual takes the full parse,
/// so the errors are the same either way.
pub fn resource_row_owned(json: String) -> Result<hearth_store::ResourceRow, CoreError> {
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
        CoreError::invalid_data("resource", "(document)", format!("is not JSON: {e}"))
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
fn check_shapes(r: &Resource<'_>) -> Result<(), CoreError> {
    let wrong =
        |field: &str, problem: &str| Err(CoreError::invalid_data(r.label(), field, problem));
    let reference = |field: &str, v: Option<&Value>| -> Result<(), CoreError> {
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

fn row_with_text(resource: &Value, json: String) -> Result<hearth_store::ResourceRow, CoreError> {
    use hearth_store::Projection;
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
    Ok(hearth_store::ResourceRow {
        resource_type: r.resource_type().to_string(),
        id: r.id().to_string(),
        version_id: r.str("meta.versionId").map(str::to_string),
        last_updated: r.str("meta.lastUpdated").map(str::to_string),
        patient_id: owning_patient(&r),
        json,
        index,
    })
}

fn parse_stored(json: &str, what: &str) -> Result<Value, CoreError> {
    serde_json::from_str(json)
        .map_err(|e| CoreError::invalid_data(what, "(document)", format!("is not JSON: {e}")))
}

fn parse_all(rows: Vec<String>, what: &str) -> Result<Vec<Value>, CoreError> {
    rows.iter().map(|j| parse_stored(j, what)).collect()
}

impl ClinicalStore for hearth_store::Store {
    fn upsert(&self, resource: Value) -> Result<(), CoreError> {
        self.put_resources(&[resource_row(&resource)?])?;
        Ok(())
    }

    fn get(&self, resource_type: &str, id: &str) -> Result<Option<Value>, CoreError> {
        self.resource(resource_type, id)?
            .map(|j| parse_stored(&j, &format!("{resource_type}/{id}")))
            .transpose()
    }

    fn all_of_type(&self, resource_type: &str) -> Result<Vec<Value>, CoreError> {
        parse_all(self.resources_of_type(resource_type)?, resource_type)
    }

    fn for_patient(&self, resource_type: &str, patient_id: &str) -> Result<Vec<Value>, CoreError> {
        parse_all(
            self.resources_for_patient(resource_type, patient_id)?,
            resource_type,
        )
    }

    fn len(&self) -> Result<usize, CoreError> {
        Ok(self.resource_count()?)
    }
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
    fn upsert_rejects_resources_without_identity() {
        let store = MemoryStore::new();
        let err = store
            .upsert(json!({"resourceType": "Patient"}))
            .unwrap_err();
        assert_eq!(err.to_string(), "Patient: field `id` is missing");
        assert_eq!(store.len().unwrap(), 0);
    }

    #[test]
    fn resources_are_kept_whole_and_indexed_by_patient() {
        let store = MemoryStore::new();
        let obs = json!({
            "resourceType": "Observation", "id": "o1",
            "subject": {"reference": "Patient/p1"},
            "extension": [{"url": "urn:x", "valueString": "kept"}],
            "unknownElement": 7
        });
        store.upsert(obs.clone()).unwrap();
        store
            .upsert(json!({"resourceType": "Patient", "id": "p1"}))
            .unwrap();
        assert_eq!(store.get("Observation", "o1").unwrap().unwrap(), obs);
        assert_eq!(store.for_patient("Observation", "p1").unwrap(), vec![obs]);
        assert!(store.for_patient("Observation", "p2").unwrap().is_empty());
        assert_eq!(store.all_of_type("Patient").unwrap().len(), 1);
    }

    #[test]
    fn the_encrypted_store_answers_the_views_exactly_as_memory_does() {
        use crate::clock::ManualClock;
        use crate::Workstation;
        use hearth_ipc::{ChartRequest, DataMode, ScheduleRequest};
        use std::sync::Arc;

        let now = chrono::DateTime::parse_from_rfc3339("2026-03-10T11:10:00-05:00").unwrap();
        let demo = hearth_demo::generate(&hearth_demo::DemoOptions::new(3, now));
        let memory = Arc::new(MemoryStore::new());
        let dir = tempfile::tempdir().unwrap();
        let key = hearth_store::DbKey::generate().unwrap();
        let sql = Arc::new(hearth_store::Store::open(&dir.path().join("h.db"), &key).unwrap());
        let rows: Vec<_> = demo.iter().map(|r| resource_row(r).unwrap()).collect();
        sql.put_resources(&rows).unwrap();
        for r in demo {
            memory.upsert(r).unwrap();
        }
        assert_eq!(sql.len().unwrap(), memory.len().unwrap());

        let mode = DataMode::Demo { seed: 3 };
        let clock = Arc::new(ManualClock::new(now));
        let a = Workstation::with_store(mode.clone(), memory, clock.clone());
        let b = Workstation::with_store(mode, sql, clock);
        let day = a.schedule(&ScheduleRequest::default()).unwrap();
        assert!(!day.appointments.is_empty());
        assert_eq!(day, b.schedule(&ScheduleRequest::default()).unwrap());
        for appt in &day.appointments {
            let req = ChartRequest {
                patient_id: appt.patient_id.clone(),
            };
            assert_eq!(a.chart(&req).unwrap(), b.chart(&req).unwrap());
        }
    }

    #[test]
    fn resource_rows_carry_the_projection_fields() {
        let appt = json!({"resourceType": "Appointment", "id": "a1", "meta": {"versionId": "2"},
            "start": "2026-03-10T09:00:00-05:00",
            "participant": [{"actor": {"reference": "Patient/p1"}}, {"actor": {"reference": "Practitioner/d1"}}]});
        let row = resource_row(&appt).unwrap();
        assert_eq!(resource_row_raw(&appt.to_string()).unwrap(), row);
        assert_eq!(row.version_id.as_deref(), Some("2"));
        assert_eq!(
            row.index,
            hearth_store::Projection::Appointment {
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
        // The row of every demo resource is the same by either path.
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-10T11:10:00-05:00").unwrap();
        for r in hearth_demo::generate(&hearth_demo::DemoOptions::new(5, now)) {
            assert_eq!(
                resource_row_raw(&r.to_string()).unwrap(),
                resource_row(&r).unwrap()
            );
        }
    }

    #[test]
    fn moving_a_resource_to_another_patient_reindexes_it() {
        let store = MemoryStore::new();
        let mk = |p: &str| json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": format!("Patient/{p}")}});
        store.upsert(mk("p1")).unwrap();
        store.upsert(mk("p2")).unwrap();
        assert!(store.for_patient("Condition", "p1").unwrap().is_empty());
        assert_eq!(store.for_patient("Condition", "p2").unwrap().len(), 1);
        store.upsert(mk("p2")).unwrap();
        assert_eq!(store.for_patient("Condition", "p2").unwrap().len(), 1);
    }
}
