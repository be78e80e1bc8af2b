//! The audit log reaches the EHR as FHIR AuditEvents, against the real FHIR server (sekmet):
//! who (the practitioner), what (a chart view: DICOM 110110 Patient Record, read), whose
//! (the patient), when; each entry once, even when the answer to a send was lost.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{engine, runtime};
use hearth_model::settings::PatientScope;
use hearth_store::{DbKey, Store};
use hearth_testkit::FhirServer;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const DOCTOR: &str = "Practitioner/dr-ana-audit";
const PATIENT: &str = "Patient/p-31";

fn search(server: &FhirServer, query: &str) -> Vec<Value> {
    let bundle: Value =
        serde_json::from_str(&server.get_json(&format!("/fhir/AuditEvent?{query}"))).unwrap();
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|e| e["resource"].clone()).collect())
        .unwrap_or_default()
}

#[test]
fn audit_entries_reach_the_ehr_as_audit_events_each_once() {
    let server = FhirServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.db");
    let key = DbKey::generate().unwrap();
    let store = Arc::new(Store::open(&path, &key).unwrap());
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    store.audit(DOCTOR, "view-chart", PATIENT).unwrap();
    store
        .audit(DOCTOR, "view-schedule", "schedule 2026-12-02")
        .unwrap();
    store.audit(DOCTOR, "sign-out", "").unwrap();
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);

    let rt = runtime();
    let engine = engine(
        &server.base_url,
        &store,
        PatientScope::Schedule,
        Duration::from_secs(60),
    );
    let round = rt.block_on(engine.round()).unwrap();
    assert_eq!(round.audit_sent, 3);

    // The chart view, found by its patient: who, what, when.
    let views = search(&server, &format!("patient={PATIENT}"));
    assert_eq!(views.len(), 1, "{views:?}");
    let view = &views[0];
    assert_eq!(view["type"]["system"], DCM);
    assert_eq!(view["type"]["code"], "110110");
    assert_eq!(view["action"], "R");
    assert_eq!(view["outcome"], "0");
    assert_eq!(view["agent"][0]["who"]["reference"], DOCTOR);
    assert_eq!(view["agent"][0]["requestor"], true);
    assert_eq!(view["entity"][0]["what"]["reference"], PATIENT);
    assert_eq!(view["entity"][0]["role"]["code"], "1");
    let recorded = chrono::DateTime::parse_from_rfc3339(view["recorded"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert!(before <= recorded && recorded <= after, "{recorded}");
    // The sign-out: a logout by the same practitioner, with no patient.
    let all = search(&server, &format!("agent={DOCTOR}"));
    assert_eq!(all.len(), 3, "{all:?}");
    let logout = all
        .iter()
        .find(|e| e["subtype"][0]["code"] == "110123")
        .expect("the sign-out as a Logout");
    assert_eq!(logout["type"]["code"], "110114");
    assert!(logout.get("entity").is_none(), "{logout}");

    // Nothing is sent twice: not by the next round...
    let round = rt.block_on(engine.round()).unwrap();
    assert_eq!(round.audit_sent, 0);
    // ...nor when the store lost the memory of the sends (a crash between the EHR's answer
    // and the store's note): the EHR recognises each entry's event.
    let conn = hearth_store::open_connection(&path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{}'\"; PRAGMA cipher_page_size = {};",
        secrecy::ExposeSecret::expose_secret(&key.hex()),
        hearth_store::PAGE_SIZE
    ))
    .unwrap();
    assert_eq!(conn.execute("DELETE FROM audit_sent", []).unwrap(), 3);
    drop(conn);
    let pulse = engine.handle().subscribe();
    let records = pulse.borrow().records;
    let round = rt.block_on(engine.round()).unwrap();
    assert_eq!(round.audit_sent, 3);
    // Sending the audit log is not a change of the records (the window's views, each one
    // audited, would otherwise reload after every round).
    assert_eq!(pulse.borrow().records, records);
    assert_eq!(search(&server, &format!("agent={DOCTOR}")).len(), 3);
    assert_eq!(store.audit_unsent(10).unwrap(), Vec::new());
    // The rounds' pulls did not bring the events into the local records.
    let id = view["id"].as_str().unwrap();
    assert!(!store.contains("AuditEvent", id).unwrap());
}

#[test]
fn an_ehr_failing_audit_events_holds_up_neither_the_sync_nor_later_sends() {
    let proxy = hearth_testkit::faulty::FaultyEhr::reserve();
    let server = FhirServer::start_with_public_port(Some(proxy.port));
    proxy.forward_to(server.port);
    let (_dir, store) = common::fresh_store();
    store.audit(DOCTOR, "view-chart", PATIENT).unwrap();
    let rt = runtime();
    let engine = engine(
        &proxy.base_url(),
        &store,
        PatientScope::Schedule,
        Duration::from_secs(60),
    );
    // A server error on the events (every try of this round): the round still succeeds (the
    // records were pulled), the entry waits for the next one.
    proxy.fail_next("POST /fhir/AuditEvent", 500, 2);
    let round = rt.block_on(engine.round()).unwrap();
    assert_eq!(round.audit_sent, 0);
    assert_eq!(store.audit_unsent(10).unwrap().len(), 1);
    let round = rt.block_on(engine.round()).unwrap();
    assert_eq!(round.audit_sent, 1);
    assert_eq!(search(&server, &format!("patient={PATIENT}")).len(), 1);

    // Refused for good (422): remembered, never sent again.
    store
        .audit(DOCTOR, "view-chart", "Patient/p-refused")
        .unwrap();
    proxy.fail_next("POST /fhir/AuditEvent", 422, 1);
    let round = rt.block_on(engine.round()).unwrap();
    assert_eq!(round.audit_sent, 0);
    assert!(store.audit_unsent(10).unwrap().is_empty());
    rt.block_on(engine.round()).unwrap();
    assert!(search(&server, "patient=Patient/p-refused").is_empty());
}
