//! Helpers shared by the store's test binaries.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "each test binary uses part of this; a failed unwrap is the test failing"
)]

use hearth_store::{DbKey, Projection, ResourceRow};
use std::path::PathBuf;

/// A fresh folder, the path of a database in it (not yet created) and a new key.
pub fn fresh_db() -> (tempfile::TempDir, PathBuf, DbKey) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.db");
    (dir, path, DbKey::generate().unwrap())
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
pub use hearth_testkit::files_containing;

/// A Patient with a name and MRN, unknown elements and an extension, as a server might send it.
pub fn patient_row(id: &str, name: &str, mrn: &str) -> ResourceRow {
    let json = format!(
        r#"{{"resourceType":"Patient","id":"{id}","meta":{{"versionId":"3","lastUpdated":"2026-01-02T03:04:05.678Z"}},"name":[{{"text":"{name}"}}],"identifier":[{{"value":"{mrn}"}}],"extension":[{{"url":"urn:x-unknown","valueString":"kept – ✓"}}],"unknownElement":{{"nested":[1,2.50,true]}}}}"#
    );
    ResourceRow {
        resource_type: "Patient".into(),
        id: id.into(),
        version_id: Some("3".into()),
        last_updated: Some("2026-01-02T03:04:05.678Z".into()),
        patient_id: None,
        json,
        index: Projection::None,
        packed: None,
    }
}
