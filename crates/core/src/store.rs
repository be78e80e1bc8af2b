//! The seam between the application and its local store of clinical data.
//!
//! Every view reads through [`ClinicalStore`]; nothing on a read path touches the network.
//! [`MemoryStore`] serves demo mode and tests today; the encrypted SQLite store that the sync
//! engine fills implements the same trait.

use crate::fhir::{reference_id, Resource};
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
