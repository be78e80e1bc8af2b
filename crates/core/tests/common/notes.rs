//! The visit note's harness against the real peers, shared by the note tests
//! (`tests/notes.rs`) and the note bench (`benches/notes.rs`), each including it by `#[path]`
//! beside `common/mod.rs` (as `mod common`): the EHR's data put at the SMART peer's FHIR
//! server, Hearth signed in over it with billing to the strict billing peer and its sync
//! engine attached, and the note's commands as the window sends them.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness; each binary uses part of it"
)]

use crate::common::{sign_in, Desk};
use hearth_core::clock::{Clock, ManualClock};
use hearth_core::Workstation;
use hearth_ipc::{
    NoteDiagnosis, NoteDraft, NoteRequest, NoteSections, NoteView, ServiceCodeSystem, ServiceLine,
    SignNoteRequest,
};
use hearth_store::Store;
use hearth_sync::{Engine, Round};
use hearth_testkit::billing::BillingPeer;
use hearth_testkit::smart::{SmartEhr, USER_FHIR};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long one sync round may take before the caller calls it hung.
pub const ROUND_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// The EHR's data, put at the FHIR server directly.

pub fn put(ehr: &SmartEhr, path: &str, body: &Value) {
    let (status, text) = ehr
        .fhir
        .as_ref()
        .unwrap()
        .request("PUT", path, Some(&body.to_string()))
        .unwrap();
    assert!(
        status == 200 || status == 201,
        "PUT {path}: {status} {text}"
    );
}

/// A patient with an MRN (identifier of type v2-0203 MR) and an official name.
pub fn put_patient(ehr: &SmartEhr, id: &str, family: &str, given: &[&str], mrn: &str) {
    put(
        ehr,
        &format!("/fhir/Patient/{id}"),
        &json!({"resourceType": "Patient", "id": id,
            "identifier": [
                {"system": "urn:example:other", "value": format!("X-{mrn}")},
                {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                      "code": "MR"}]},
                 "system": "urn:oid:2.16.840.1.113883.19.5", "value": mrn}],
            "name": [{"use": "official", "family": family, "given": given}],
            "gender": "female", "birthDate": "1970-06-15"}),
    );
}

/// A booked visit from now for half an hour, the signed-in clinician and `patient` on it;
/// virtual ones typed as such (serviceType v3-ActCode VR).
pub fn put_visit(ehr: &SmartEhr, id: &str, patient: &str, virtual_visit: bool) {
    let now = chrono::Utc::now();
    let mut appt = json!({"resourceType": "Appointment", "id": id, "status": "booked",
        "start": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "end": (now + chrono::Duration::minutes(30))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "participant": [
            {"actor": {"reference": USER_FHIR}, "status": "accepted"},
            {"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"}]});
    if virtual_visit {
        appt["serviceType"] = json!([{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"}]}]);
    }
    put(ehr, &format!("/fhir/Appointment/{id}"), &appt);
}

// ---------------------------------------------------------------------------------------
// Hearth.

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Hearth signed in over the SMART peer's EHR, its sync engine attached.
pub struct Hearth<C: ?Sized = ManualClock> {
    pub desk: Desk,
    /// The workstation's clock (the sync engine's too): a [`ManualClock`] moved by hand in
    /// the tests, the system's in the bench.
    pub clock: Arc<C>,
    pub engine: Engine,
    pub store: Arc<Store>,
}

impl<C: ?Sized> Hearth<C> {
    pub fn ws(&self) -> &Workstation {
        &self.desk.ws
    }
}

/// `common::desk_with` on `clock` (billing retries are timed on it).
pub fn desk_on(home: &Path, ehr: &SmartEhr, extra: &str, clock: Arc<dyn Clock>) -> Desk {
    crate::common::desk_clocked(home, ehr, None, extra, clock)
}

/// [`desk_on`] a [`ManualClock`] kept at hand.
pub fn desk_and_clock(home: &Path, ehr: &SmartEhr, extra: &str) -> (Desk, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(chrono::Local::now().fixed_offset()));
    (desk_on(home, ehr, extra, clock.clone()), clock)
}

/// `[billing]` sending to `peer`, timeouts short (loopback).
pub fn billing_to(peer: &BillingPeer) -> String {
    format!(
        "[billing]\nmllp_address = \"{}\"\nsending_facility = \"HEARTH-CLINIC\"\n\
         receiving_application = \"BILLING\"\nmrn_authority = \"HOSP\"\n\
         connect_timeout_seconds = 3\nack_timeout_seconds = 15\n",
        peer.addr()
    )
}

/// Hearth signed in on a [`ManualClock`], its sync engine attached and a first round run (the
/// schedule and its patients' records are in its store).
pub async fn hearth(home: &Path, ehr: &SmartEhr, extra: &str) -> Hearth {
    let clock = Arc::new(ManualClock::new(chrono::Local::now().fixed_offset()));
    hearth_on(home, ehr, extra, clock).await
}

/// [`hearth`] on `clock`.
pub async fn hearth_on<C: Clock + 'static>(
    home: &Path,
    ehr: &SmartEhr,
    extra: &str,
    clock: Arc<C>,
) -> Hearth<C> {
    let desk = desk_on(home, ehr, extra, clock.clone());
    let user = sign_in(&desk).await.unwrap();
    assert_eq!(user.fhir_user.as_deref(), Some(USER_FHIR));
    let link = desk.ws.ehr_link().unwrap();
    let engine = Engine::for_workstation(&link, desk.ws.token_source()).unwrap();
    desk.ws.attach_sync(Arc::new(engine.handle()));
    round(&engine).await;
    Hearth {
        desk,
        clock,
        engine,
        store: link.store,
    }
}

/// One sync round, bounded, that must succeed.
pub async fn round(engine: &Engine) -> Round {
    tokio::time::timeout(ROUND_LIMIT, engine.round())
        .await
        .expect("a sync round hung")
        .expect("a sync round failed")
}

// ---------------------------------------------------------------------------------------
// The note's commands.

pub fn open(ws: &Workstation, visit: &str) -> NoteView {
    ws.note_open(&NoteRequest {
        appointment_id: visit.into(),
    })
    .unwrap()
}

pub fn dx(code: &str, description: &str) -> NoteDiagnosis {
    NoteDiagnosis {
        code: code.into(),
        description: Some(description.into()),
    }
}

pub fn service(
    code: &str,
    system: ServiceCodeSystem,
    modifiers: &[&str],
    units: u32,
    description: Option<&str>,
) -> ServiceLine {
    ServiceLine {
        code: code.into(),
        system,
        description: description.map(str::to_string),
        modifiers: modifiers.iter().map(|m| (*m).to_string()).collect(),
        units,
    }
}

/// A draft from the view's, with what the clinician wrote.
pub fn written(
    view: &NoteView,
    sections: NoteSections,
    diagnoses: Vec<NoteDiagnosis>,
    lines: Vec<ServiceLine>,
    patient_at_home: bool,
    revision: u64,
) -> NoteDraft {
    NoteDraft {
        sections,
        diagnoses,
        lines,
        patient_at_home,
        revision,
        ..view.draft.clone()
    }
}

pub fn sign(ws: &Workstation, draft: &NoteDraft) -> NoteView {
    ws.note_sign(&SignNoteRequest {
        draft: draft.clone(),
        attest: true,
    })
    .unwrap()
}
