//! The seam between the application and its local store of clinical data.
//!
//! Every view reads through [`ClinicalStore`]; nothing on a read path touches the network.
//! [`MemoryStore`] serves demo mode and tests; the encrypted SQLite store
//! ([`hearth_store::Store`]) implements the same trait, with the FHIR understanding its
//! projections need (owning patient, appointment start, observation code) supplied by
//! [`hearth_model::row`], which the sync engine uses too.

use crate::fhir::Resource;
use crate::CoreError;
use hearth_model::row::owning_patient;
/// The store's row for a resource, from the crate the sync engine shares.
pub use hearth_model::row::{resource_row, resource_row_owned, resource_row_raw};
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
        let zone = crate::clock::Zone::named("America/New_York").unwrap();
        let a = Workstation::with_store(mode.clone(), memory, clock.clone(), zone);
        let b = Workstation::with_store(mode, sql, clock, zone);
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
    fn every_demo_resource_gets_the_same_row_by_either_path() {
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
