//! The pull never silently loses a change: each fault another FHIR server implementation or
//! deployment showed, reproduced against the real FHIR server (sekmet) behind a faulty proxy
//! (`hearth_testkit::faulty`) or with its clock set apart (libfaketime):
//! - search Bundles without a time, and a slow search of a later type;
//! - a commit that becomes visible well after its `lastUpdated`;
//! - a server clock behind the workstation's;
//! - a deletion at an EHR without system history;
//! - a record served unreadable, then served readable again without a new version;
//! - a write that meets offline rounds, refused sign-ins and a server error;
//! - a version conflict answered 409 instead of 412;
//! - a server clock far ahead, or garbage, in the `Date` header or the Bundle's time.
//!
//! Each test's data is a handful of resources it writes itself (no sample data needed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

mod common;

use common::*;
use hearth_fhir::{Client, NoToken, RetryPolicy};
use hearth_model::settings::PatientScope;
use hearth_model::sync_link::SyncLink;
use hearth_store::Store;
use hearth_sync::{Engine, PullMode};
use hearth_testkit::faulty::FaultyEhr;
use hearth_testkit::{wait_until, FhirServer};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A small clinic on a real FHIR server behind a faulty proxy, a fresh store, and an engine
/// that has done its initial sync through the proxy.
struct Rig {
    ehr: FaultyEhr,
    server: FhirServer,
    store: Arc<Store>,
    engine: Arc<Engine>,
    rt: tokio::runtime::Runtime,
    patient: String,
    observation: String,
    encounter: String,
    appointment: String,
    _dir: tempfile::TempDir,
}

struct Setup {
    pull: PullMode,
    overlap: i64,
    clock_offset: Option<i64>,
    reconcile_every: Duration,
    /// The `Date` header every answer carries during the initial sync (then the server's).
    initial_date: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            pull: PullMode::LastUpdated,
            overlap: 10,
            clock_offset: None,
            reconcile_every: Duration::from_secs(3600),
            initial_date: None,
        }
    }
}

fn create(server: &FhirServer, resource: Value) -> String {
    let ty = resource["resourceType"].as_str().unwrap().to_string();
    let (status, body) = server
        .request("POST", &format!("/fhir/{ty}"), Some(&resource.to_string()))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn rig(setup: Setup) -> Rig {
    let ehr = FaultyEhr::reserve();
    let server = FhirServer::start_with(Some(ehr.port), setup.clock_offset);
    ehr.forward_to(server.port);
    // Several servers send Bundles with no time: the engine must not need one.
    ehr.strip_bundle_times(true);
    let patient = create(
        &server,
        json!({"resourceType": "Patient", "name": [{"family": "Quokka", "given": ["Ada"]}],
               "birthDate": "1970-01-01"}),
    );
    let subject = json!({"reference": format!("Patient/{patient}")});
    let observation = create(
        &server,
        json!({"resourceType": "Observation", "status": "final", "subject": subject,
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "effectiveDateTime": "2026-01-01T10:00:00Z",
               "valueQuantity": {"value": 70, "unit": "/min"}}),
    );
    let encounter = create(
        &server,
        json!({"resourceType": "Encounter", "status": "finished", "subject": subject,
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}),
    );
    // Today's, so that it is in the schedule window the initial sync keeps.
    let today = chrono::Utc::now().date_naive();
    let appointment = create(
        &server,
        json!({"resourceType": "Appointment", "status": "booked",
               "start": format!("{today}T10:00:00Z"), "end": format!("{today}T10:20:00Z"),
               "participant": [{"actor": subject, "status": "accepted"}]}),
    );
    let (dir, store) = fresh_store();
    let retry = RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let client = Client::new(&ehr.base_url(), Arc::new(NoToken), retry).unwrap();
    let mut config =
        hearth_sync::EngineConfig::from_settings(&hearth_model::settings::SyncConfig::default());
    config.scope = PatientScope::All;
    config.poll_interval = Duration::from_secs(3600);
    config.pull = setup.pull;
    config.overlap = chrono::Duration::seconds(setup.overlap);
    config.reconcile_every = setup.reconcile_every;
    let engine = Arc::new(Engine::new(client, store.clone(), config));
    let rt = runtime();
    ehr.set_date(setup.initial_date);
    let first = rt.block_on(engine.round()).unwrap();
    ehr.set_date(None);
    assert_eq!(first.unreadable, 0, "{first:?}");
    for (ty, id) in [
        ("Patient", &patient),
        ("Observation", &observation),
        ("Encounter", &encounter),
        ("Appointment", &appointment),
    ] {
        assert!(store.resource(ty, id).unwrap().is_some(), "{ty}/{id}");
    }
    Rig {
        ehr,
        server,
        store,
        engine,
        rt,
        patient,
        observation,
        encounter,
        appointment,
        _dir: dir,
    }
}

impl Rig {
    fn round(&self) -> hearth_sync::Round {
        self.rt.block_on(self.engine.round()).unwrap()
    }

    /// The version the server holds now, and its `lastUpdated`.
    fn at_server(&self, ty: &str, id: &str) -> (String, chrono::DateTime<chrono::Utc>) {
        let r = server_resource(&self.server, ty, id);
        (
            r["meta"]["versionId"].as_str().unwrap().to_string(),
            r["meta"]["lastUpdated"].as_str().unwrap().parse().unwrap(),
        )
    }

    fn local_version(&self, ty: &str, id: &str) -> Option<String> {
        self.store.version_of(ty, id).unwrap()
    }

    /// Another client changes the patient at the EHR: its new version and `lastUpdated`.
    fn touch(&self, ty: &str, id: &str, note: &str) -> (String, chrono::DateTime<chrono::Utc>) {
        update_at_server(&self.server, ty, id, |r| {
            r["language"] = Value::String(format!("en-{note}"));
        });
        self.at_server(ty, id)
    }
}

/// Waits until the machine's clock (the server's, shifted by `offset` seconds) is past `t`.
fn wait_past(t: chrono::DateTime<chrono::Utc>, offset: i64) {
    wait_until(
        Duration::from_secs(10),
        "the clock to pass the mark",
        || chrono::Utc::now() + chrono::Duration::seconds(offset) > t,
    );
}

#[test]
fn a_slow_search_of_a_later_type_does_not_let_the_cursor_skip_an_earlier_types_change() {
    // A small overlap: the cursor itself must be right, not saved by a wide overlap.
    let rig = rig(Setup {
        overlap: 1,
        ..Setup::default()
    });
    // Types are searched in order (Patient first, Encounter later); the Encounter search is
    // slow. While it runs, the patient changes, and 2.6 s later an observation does.
    rig.ehr.hold("/fhir/Encounter?");
    let engine = rig.engine.clone();
    let round = rig.rt.spawn(async move { engine.round().await });
    wait_until(Duration::from_secs(30), "the slow search to start", || {
        rig.ehr.held() == 1
    });
    let (patient_version, changed_at) = rig.touch("Patient", &rig.patient, "slow");
    wait_past(changed_at + chrono::Duration::milliseconds(2600), 0);
    let (obs_version, _) = rig.touch("Observation", &rig.observation, "later");
    rig.ehr.release();
    rig.rt.block_on(round).unwrap().unwrap();
    assert_eq!(
        rig.local_version("Observation", &rig.observation),
        Some(obs_version),
        "the later type's change is pulled in the same round"
    );
    // The patient's change happened after the Patient search of that round: the next round
    // must still find it.
    rig.round();
    assert_eq!(
        rig.local_version("Patient", &rig.patient),
        Some(patient_version),
        "the patient's change was skipped by the cursor"
    );
}

fn late_commit(pull: PullMode) {
    let rig = rig(Setup {
        pull,
        overlap: 10,
        ..Setup::default()
    });
    // The patient's change is stamped now but becomes visible only later (a slow commit);
    // meanwhile another change, 2.6 s newer, is visible at once.
    let reference = format!("Patient/{}", rig.patient);
    rig.ehr.hide(&reference);
    let (patient_version, changed_at) = rig.touch("Patient", &rig.patient, "late");
    wait_past(changed_at + chrono::Duration::milliseconds(2600), 0);
    let (enc_version, _) = rig.touch("Encounter", &rig.encounter, "visible");
    rig.round();
    assert_eq!(
        rig.local_version("Encounter", &rig.encounter),
        Some(enc_version)
    );
    assert_ne!(
        rig.local_version("Patient", &rig.patient).as_ref(),
        Some(&patient_version),
        "the hidden change cannot have been pulled yet"
    );
    rig.ehr.show(&reference);
    rig.round();
    assert_eq!(
        rig.local_version("Patient", &rig.patient),
        Some(patient_version),
        "a change committed late was lost behind the cursor"
    );
}

#[test]
fn a_change_committed_late_is_pulled_by_last_updated_searches() {
    late_commit(PullMode::LastUpdated);
}

#[test]
fn a_change_committed_late_is_pulled_from_system_history() {
    late_commit(PullMode::History);
}

#[test]
fn a_server_clock_an_hour_behind_the_workstations_loses_no_change() {
    for pull in [PullMode::History, PullMode::LastUpdated] {
        let rig = rig(Setup {
            pull,
            clock_offset: Some(-3600),
            ..Setup::default()
        });
        // The server stamps its clock, an hour behind: the cursor must be the server's time.
        let (version, _) = rig.touch("Patient", &rig.patient, "skewed");
        rig.round();
        assert_eq!(
            rig.local_version("Patient", &rig.patient),
            Some(version),
            "{pull:?}: a change stamped by a server clock behind ours was never pulled"
        );
    }
}

#[test]
fn a_deletion_at_an_ehr_without_history_is_found_by_reconciliation() {
    let rig = rig(Setup {
        reconcile_every: Duration::ZERO,
        ..Setup::default()
    });
    let (status, body) = rig
        .server
        .request(
            "DELETE",
            &format!("/fhir/Observation/{}", rig.observation),
            None,
        )
        .unwrap();
    assert!(status == 200 || status == 204, "{status} {body}");
    let round = rig.round();
    assert!(
        rig.store
            .resource("Observation", &rig.observation)
            .unwrap()
            .is_none(),
        "the deleted observation is still kept: {round:?}"
    );
    assert_eq!(round.reconciled_gone, 1, "{round:?}");
    // Everything the EHR still has is still kept.
    for (ty, id) in [("Patient", &rig.patient), ("Encounter", &rig.encounter)] {
        assert!(rig.store.resource(ty, id).unwrap().is_some(), "{ty}/{id}");
    }
}

#[test]
fn a_record_served_unreadable_is_named_kept_and_fetched_again_once_the_ehr_is_fixed() {
    let rig = rig(Setup::default());
    let handle = rig.engine.handle();
    // A server bug spoils three records wherever they are served: an appointment's start,
    // an encounter's subject (a bare string, which would leave it with no owning patient),
    // and an observation's resourceType (so it can be named only by where it was served).
    let appt_ref = format!("Appointment/{}", rig.appointment);
    let enc_ref = format!("Encounter/{}", rig.encounter);
    let obs_ref = format!("Observation/{}", rig.observation);
    rig.ehr
        .spoil(&appt_ref, "start", Some(Value::from("after lunch")));
    let bare = Value::String(format!("Patient/{}", rig.patient));
    rig.ehr.spoil(&enc_ref, "subject", Some(bare));
    rig.ehr.spoil(&obs_ref, "resourceType", None);
    let (appt_version, _) = rig.touch("Appointment", &rig.appointment, "spoiled");
    let (enc_version, _) = rig.touch("Encounter", &rig.encounter, "spoiled");
    let (obs_version, _) = rig.touch("Observation", &rig.observation, "spoiled");
    let round = rig.round();
    assert!(round.unreadable >= 3, "{round:?}");
    assert_ne!(
        rig.local_version("Appointment", &rig.appointment),
        Some(appt_version.clone())
    );
    // Named by type and id, or by the entry's fullUrl; never by a position in a Bundle.
    let panel = handle.panel().unwrap();
    let named: Vec<(&str, &str)> = panel
        .unreadable
        .iter()
        .map(|p| (p.record.as_str(), p.message.as_str()))
        .collect();
    let obs_url = format!("{}/{obs_ref}", rig.ehr.base_url());
    for expected in [
        (
            appt_ref.as_str(),
            "field `start` is not an RFC 3339 instant",
        ),
        (
            enc_ref.as_str(),
            "field `subject` is not a Reference (a JSON object)",
        ),
        (obs_url.as_str(), "field `resourceType` is missing"),
    ] {
        assert!(named.contains(&expected), "{expected:?} in {named:?}");
    }
    assert_eq!(named.len(), 3, "{named:?}");
    assert_eq!(panel.summary.unreadable_records, 3);
    // Still unreadable on the next rounds: still named, once each.
    rig.round();
    assert_eq!(rig.store.rejected().unwrap().len(), 3);

    // The EHR is fixed: the same versions are served readable, with no new lastUpdated.
    for r in [&appt_ref, &enc_ref, &obs_ref] {
        rig.ehr.repair(r);
    }
    rig.round();
    for (ty, id, version) in [
        ("Appointment", &rig.appointment, appt_version),
        ("Encounter", &rig.encounter, enc_version),
        ("Observation", &rig.observation, obs_version),
    ] {
        assert_eq!(rig.local_version(ty, id), Some(version), "{ty}");
    }
    assert!(rig.store.rejected().unwrap().is_empty());
    let panel = handle.panel().unwrap();
    assert!(panel.unreadable.is_empty(), "{:?}", panel.unreadable);
    assert_eq!(panel.summary.unreadable_records, 0);
}

#[test]
fn offline_rounds_and_refused_sign_ins_never_give_a_write_up_only_server_errors_count() {
    let rig = rig(Setup::default());
    let handle = rig.engine.handle();
    rig.ehr.set_cut(true);
    handle
        .set_appointment_status(&rig.appointment, "arrived", "Practitioner/nurse")
        .unwrap();
    // More offline rounds, and more refused sign-ins, than the server-error limit (5).
    for _ in 0..6 {
        assert!(rig.rt.block_on(rig.engine.round()).is_err());
    }
    rig.ehr.set_cut(false);
    rig.ehr.fail_next("PUT /fhir/Appointment/", 401, 6);
    for _ in 0..6 {
        assert!(rig.rt.block_on(rig.engine.round()).is_err());
    }
    // A gateway in front of the EHR that cannot reach it is offline too (both tries of a
    // send, each round).
    rig.ehr.fail_next("PUT /fhir/Appointment/", 502, 12);
    for _ in 0..6 {
        assert!(rig.rt.block_on(rig.engine.round()).is_err());
    }
    let waiting = rig.store.pending().unwrap();
    assert_eq!(waiting.len(), 1, "the write was given up: {waiting:?}");
    assert_eq!(waiting[0].server_errors, 0);
    // Then the EHR fails once (both tries of one send): one server error, still queued.
    rig.ehr.fail_next("PUT /fhir/Appointment/", 503, 2);
    let round = rig.round();
    assert_eq!((round.sent, round.failed), (0, 0), "{round:?}");
    let waiting = rig.store.pending().unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].server_errors, 1);
    // And the next round delivers it.
    let round = rig.round();
    assert_eq!(round.sent, 1, "{round:?}");
    assert_eq!(
        server_resource(&rig.server, "Appointment", &rig.appointment)["status"],
        "arrived"
    );
}

#[test]
fn a_version_conflict_answered_409_is_a_conflict_with_both_versions_like_412() {
    let rig = rig(Setup::default());
    let handle = rig.engine.handle();
    // Someone else changes the appointment at the EHR; this EHR says 409, not 412.
    update_at_server(&rig.server, "Appointment", &rig.appointment, |a| {
        a["comment"] = Value::from("moved by the front desk");
    });
    rig.ehr.fail_next("PUT /fhir/Appointment/", 409, 1);
    handle
        .set_appointment_status(&rig.appointment, "arrived", "Practitioner/nurse")
        .unwrap();
    let round = rig.round();
    assert_eq!((round.conflicts, round.failed), (1, 0), "{round:?}");
    let panel = handle.panel().unwrap();
    assert_eq!(panel.conflicts.len(), 1, "{panel:?}");
    assert!(panel.failed.is_empty(), "{panel:?}");
    // Nothing was overwritten at the EHR.
    let there = server_resource(&rig.server, "Appointment", &rig.appointment);
    assert_eq!(there["status"], "booked");
    assert_eq!(there["comment"], "moved by the front desk");
}

/// A far-future HTTP date: a server (or something at its address) whose clock is wrong.
const FAR_FUTURE_DATE: &str = "Fri, 01 Jan 2100 00:00:00 GMT";

/// After one round in which the server's time was wrong (as `wrong` sets it on the proxy),
/// a change and a new record at the EHR, stamped by its real clock, still arrive.
fn wrong_server_time_for_one_round(pull: PullMode, what: &str, wrong: impl Fn(&FaultyEhr)) {
    let rig = rig(Setup {
        pull,
        ..Setup::default()
    });
    wrong(&rig.ehr);
    rig.round();
    rig.ehr.set_date(None);
    rig.ehr.set_bundle_time(None);
    let (version, _) = rig.touch("Patient", &rig.patient, "after");
    let added = create(
        &rig.server,
        json!({"resourceType": "Observation", "status": "final",
               "subject": {"reference": format!("Patient/{}", rig.patient)},
               "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
               "effectiveDateTime": "2026-01-02T10:00:00Z"}),
    );
    let round = rig.rt.block_on(rig.engine.round());
    assert!(round.is_ok(), "{pull:?}, {what}: {round:?}");
    assert_eq!(
        rig.local_version("Patient", &rig.patient),
        Some(version),
        "{pull:?}, {what}: a change made after it was skipped by the cursor"
    );
    assert!(
        rig.store.contains("Observation", &added).unwrap(),
        "{pull:?}, {what}: a record created after it was skipped by the cursor"
    );
}

#[test]
fn a_server_time_far_ahead_or_garbage_for_one_round_does_not_make_the_pull_skip_changes() {
    for pull in [PullMode::History, PullMode::LastUpdated] {
        wrong_server_time_for_one_round(pull, "Date far ahead", |ehr| {
            ehr.set_date(Some(FAR_FUTURE_DATE));
        });
        wrong_server_time_for_one_round(pull, "Bundle time far ahead", |ehr| {
            ehr.set_bundle_time(Some("2100-01-01T00:00:00Z"));
        });
        wrong_server_time_for_one_round(pull, "Bundle time garbage", |ehr| {
            ehr.set_bundle_time(Some("not a time"));
        });
    }
}

#[test]
fn a_server_date_far_ahead_during_the_initial_sync_does_not_make_the_pull_skip_changes() {
    for pull in [PullMode::History, PullMode::LastUpdated] {
        let rig = rig(Setup {
            pull,
            initial_date: Some(FAR_FUTURE_DATE),
            ..Setup::default()
        });
        let (version, _) = rig.touch("Patient", &rig.patient, "after");
        rig.round();
        assert_eq!(
            rig.local_version("Patient", &rig.patient),
            Some(version),
            "{pull:?}: the initial sync's cursor skipped a later change"
        );
    }
}
