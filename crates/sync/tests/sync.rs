//! The sync engine against a real FHIR server (sekmet-fhir on loopback) loaded with the 20
//! Synthea patients and a schedule for today.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

mod common;

use common::*;
use hearth_ipc::{ConflictChoice, ResolveConflictRequest};
use hearth_model::settings::PatientScope;
use hearth_model::sync_link::SyncLink;
use hearth_sync::Round;
use hearth_testkit::wait_until;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NO_POLL: Duration = Duration::from_secs(3600);

/// Every resource the server holds, newest version, by `Type/id`, as the server serves it.
fn everything_on(server: &hearth_testkit::FhirServer) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut path = "/fhir/_history?_count=500".to_string();
    loop {
        let page: Value = serde_json::from_str(&server.get_json(&path)).unwrap();
        for e in page["entry"].as_array().into_iter().flatten() {
            if let Some(r) = e.get("resource") {
                let key = format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                );
                out.entry(key).or_insert_with(|| r.clone());
            }
        }
        let next = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
        match next {
            Some(url) => path = url[url.find("/fhir").unwrap()..].to_string(),
            None => return out,
        }
    }
}

#[test]
fn initial_sync_keeps_every_resource_byte_for_byte_and_encrypted() {
    let Some((server, clinic)) =
        server_with_clinic("initial_sync_keeps_every_resource_byte_for_byte_and_encrypted")
    else {
        return;
    };
    let (dir, store) = fresh_store();
    let engine = engine(&server.base_url, &store, PatientScope::All, NO_POLL);
    let rt = runtime();
    let round = rt.block_on(engine.round()).unwrap();
    assert_eq!(round.unreadable, 0, "{round:?}");

    let on_server = everything_on(&server);
    assert!(
        on_server.len() > 1600,
        "the server holds {}",
        on_server.len()
    );
    let mut missing = Vec::new();
    for (key, served) in &on_server {
        let (ty, id) = key.split_once('/').unwrap();
        match local(&store, ty, id) {
            Some(mine) => assert_eq!(&mine, served, "{key} differs"),
            None => missing.push(key.clone()),
        }
    }
    assert!(missing.is_empty(), "not synced: {missing:?}");
    assert_eq!(store.resource_count().unwrap(), on_server.len());

    // Byte for byte: the stored text is exactly what a direct read serves; field by field on
    // a patient with its US Core extensions, and an appointment with an unknown element.
    let patient = &clinic.patients[0];
    let (_, direct) = server
        .request("GET", &format!("/fhir/Patient/{patient}"), None)
        .unwrap();
    assert_eq!(store.resource("Patient", patient).unwrap().unwrap(), direct);
    let mine = local(&store, "Patient", patient).unwrap();
    let served: Value = serde_json::from_str(&direct).unwrap();
    assert!(mine["extension"].as_array().unwrap().len() >= 2);
    for field in [
        "extension",
        "identifier",
        "name",
        "address",
        "telecom",
        "birthDate",
        "meta",
    ] {
        assert_eq!(mine[field], served[field], "Patient.{field}");
    }
    let appt = local(&store, "Appointment", &clinic.appointments[0]).unwrap();
    assert_eq!(appt["hearthTestUnknownElement"]["kept"], true);
    assert!(appt["extension"][0]["valueString"]
        .as_str()
        .unwrap()
        .starts_with("Room"));

    // Encrypted at rest: no patient's name or MRN anywhere in the profile folder's files.
    let family = served["name"][0]["family"].as_str().unwrap().to_string();
    let mrn = served["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"]["coding"][0]["code"] == "MR")
        .map(|i| i["value"].as_str().unwrap().to_string())
        .unwrap();
    for needle in [family.as_str(), mrn.as_str()] {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds a patient identifier in the clear",
                path.display()
            );
        }
    }
    // Opened as plain SQLite (our own connection, no key), the file is not a database.
    let plain = hearth_store::open_connection(&dir.path().join("hearth.db")).unwrap();
    let err = plain
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .expect_err("the database opened without its key");
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase),
        "{err}"
    );
}

#[test]
fn the_schedule_window_and_the_last_success_follow_the_engines_clock() {
    let Some((server, clinic)) =
        server_with_clinic("the_schedule_window_and_the_last_success_follow_the_engines_clock")
    else {
        return;
    };
    // The seeded schedule's day, as the server holds it.
    let start = server_resource(&server, "Appointment", &clinic.appointments[0])["start"]
        .as_str()
        .unwrap()
        .to_string();
    let visit = chrono::DateTime::parse_from_rfc3339(&start)
        .unwrap()
        .to_utc();
    let rt = runtime();
    // (Appointments kept by the initial sync, the last success the top bar shows after a
    // round) with an engine whose clock reads `at`; the clinic's zone is UTC, the schedule
    // window one day back and seven ahead.
    let sync_at = |at: chrono::DateTime<chrono::Utc>| {
        let (_dir, store) = fresh_store();
        let engine = engine_with(&server.base_url, &store, |config| {
            config.scope = PatientScope::Schedule;
            config.poll_interval = NO_POLL;
            config.clock = std::sync::Arc::new(hearth_model::clock::ManualClock::new(at));
            config.zone = hearth_model::clock::Zone::UTC;
        });
        rt.block_on(engine.initial_sync(&mut Round::default()))
            .unwrap();
        let kept = clinic
            .appointments
            .iter()
            .filter(|id| store.contains("Appointment", id).unwrap())
            .count();
        rt.block_on(engine.round()).unwrap();
        let (_, summary) = engine.handle().summary();
        let stamp = chrono::DateTime::parse_from_rfc3339(&summary.last_success.unwrap())
            .unwrap()
            .to_utc();
        (kept, stamp)
    };
    let month_ago = visit - chrono::Duration::days(30);
    assert_eq!(
        sync_at(month_ago),
        (0, month_ago),
        "a month before the visits, they are outside the window"
    );
    assert_eq!(sync_at(visit), (clinic.appointments.len(), visit));
}

#[test]
fn changes_and_deletions_at_the_server_arrive_by_polling_and_a_missed_poll_is_caught_up() {
    // The engine reaches the EHR through a link the test can cut.
    let link = hearth_testkit::Proxy::reserve();
    let Some((server, clinic)) = server_with_clinic_at(
        "changes_and_deletions_at_the_server_arrive_by_polling_and_a_missed_poll_is_caught_up",
        Some(link.port),
    ) else {
        return;
    };
    link.forward_to(server.port);
    let (_dir, store) = fresh_store();
    let poll = Duration::from_millis(300);
    let engine = engine(&server.base_url, &store, PatientScope::Schedule, poll);
    let handle = engine.handle();
    let rt = runtime();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(engine.run(async {
        let _ = stopped.await;
    }));
    wait_until(Duration::from_secs(60), "the initial sync", || {
        handle.summary().1.last_success.is_some()
    });
    // The schedule scope: the six booked patients, not the other fourteen.
    let booked = &clinic.patients[0];
    assert!(local(&store, "Patient", booked).is_some());
    assert!(local(&store, "Patient", &clinic.patients[19]).is_none());

    // Another client's updates arrive within a few poll intervals.
    let mut latencies = Vec::new();
    for i in 0..5 {
        let t0 = Instant::now();
        let v = update_at_server(&server, "Patient", booked, |p| {
            p["active"] = Value::Bool(i % 2 == 0);
        });
        wait_until(
            Duration::from_secs(10),
            "the server's change to reach the store",
            || store.version_of("Patient", booked).unwrap().as_deref() == Some(v.as_str()),
        );
        latencies.push(t0.elapsed());
    }
    eprintln!("server change → local store, poll {poll:?}: {latencies:?}");

    // A deletion at the server removes the local copy.
    let obs = store.resources_for_patient("Observation", booked).unwrap();
    let obs_id = serde_json::from_str::<Value>(&obs[0]).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = server
        .request("DELETE", &format!("/fhir/Observation/{obs_id}"), None)
        .unwrap();
    assert_eq!(status, 200);
    wait_until(
        Duration::from_secs(10),
        "the deletion to reach the store",
        || store.resource("Observation", &obs_id).unwrap().is_none(),
    );

    // The link drops: the top bar says offline; polls fail, so the change another client
    // makes meanwhile is missed, and caught up when the link is back.
    link.set_cut(true);
    wait_until(
        Duration::from_secs(20),
        "the top bar to say offline",
        || handle.summary().0 == hearth_ipc::Connectivity::Offline,
    );
    let v = update_at_server(&server, "Patient", booked, |p| {
        p["gender"] = Value::String("unknown".into());
    });
    link.set_cut(false);
    wait_until(
        Duration::from_secs(20),
        "the catch-up after the outage",
        || store.version_of("Patient", booked).unwrap().as_deref() == Some(v.as_str()),
    );
    assert_eq!(
        local(&store, "Patient", booked).unwrap()["gender"],
        "unknown"
    );
    let _ = stop.send(());
    rt.block_on(task).unwrap();
}

#[test]
fn a_stale_write_becomes_a_conflict_with_both_versions_and_nothing_is_overwritten() {
    let Some(Synced {
        server,
        clinic,
        store,
        engine,
        handle,
        rt,
        ..
    }) = synced(
        "a_stale_write_becomes_a_conflict_with_both_versions_and_nothing_is_overwritten",
        PatientScope::Schedule,
    )
    else {
        return;
    };
    let appt = &clinic.appointments[1];

    // The nurse marks the patient arrived; before it is sent, the front desk cancels at the EHR.
    handle
        .set_appointment_status(appt, "arrived", "Practitioner/nurse")
        .unwrap();
    assert_eq!(
        local(&store, "Appointment", appt).unwrap()["status"],
        "arrived"
    );
    let theirs = update_at_server(&server, "Appointment", appt, |a| {
        a["status"] = Value::String("cancelled".into());
    });
    let mut round = Round::default();
    rt.block_on(engine.push(&mut round)).unwrap();
    assert_eq!(round.conflicts, 1, "{round:?}");
    // Nothing overwritten: the EHR keeps its version, the workstation keeps the nurse's.
    let at_server = server_resource(&server, "Appointment", appt);
    assert_eq!(at_server["status"], "cancelled");
    assert_eq!(at_server["meta"]["versionId"], theirs.as_str());
    rt.block_on(engine.pull(&mut Round::default())).unwrap();
    assert_eq!(
        local(&store, "Appointment", appt).unwrap()["status"],
        "arrived"
    );

    // The panel shows both versions side by side.
    let panel = handle.panel().unwrap();
    assert_eq!(panel.summary.conflicts, 1);
    let c = &panel.conflicts[0];
    let status = c.fields.iter().find(|f| f.field == "status").unwrap();
    assert_eq!(
        (status.mine.as_str(), status.theirs.as_str()),
        ("arrived", "cancelled")
    );
    assert!(c.fields.iter().all(|f| !f.field.starts_with("meta")));

    // Keep mine: sent again over their version, with every unknown element intact.
    handle
        .resolve(&ResolveConflictRequest {
            conflict_id: c.id,
            choice: ConflictChoice::KeepMine,
        })
        .unwrap();
    let mut round = Round::default();
    rt.block_on(engine.push(&mut round)).unwrap();
    assert_eq!(round.sent, 1, "{round:?}");
    let at_server = server_resource(&server, "Appointment", appt);
    assert_eq!(at_server["status"], "arrived");
    assert_eq!(at_server["hearthTestUnknownElement"]["kept"], true);
    assert!(at_server["extension"][0]["valueString"].is_string());
    assert_eq!(handle.panel().unwrap().conflicts.len(), 0);

    // Take theirs: the local copy becomes the EHR's.
    handle
        .set_appointment_status(appt, "fulfilled", "Practitioner/nurse")
        .unwrap();
    update_at_server(&server, "Appointment", appt, |a| {
        a["status"] = Value::String("noshow".into());
    });
    rt.block_on(engine.push(&mut Round::default())).unwrap();
    let c = handle.panel().unwrap().conflicts.remove(0);
    // While the user decides, the EHR moves on again: the pull holds that version back.
    update_at_server(&server, "Appointment", appt, |a| {
        a["status"] = Value::String("checked-in".into());
    });
    rt.block_on(engine.pull(&mut Round::default())).unwrap();
    assert_eq!(
        local(&store, "Appointment", appt).unwrap()["status"],
        "fulfilled"
    );
    handle
        .resolve(&ResolveConflictRequest {
            conflict_id: c.id,
            choice: ConflictChoice::TakeTheirs,
        })
        .unwrap();
    assert_eq!(
        local(&store, "Appointment", appt).unwrap()["status"],
        "noshow"
    );
    // The next round fetches what was held back: the EHR's newest version, not the one the
    // conflict was found with.
    rt.block_on(engine.round()).unwrap();
    assert_eq!(
        local(&store, "Appointment", appt).unwrap()["status"],
        "checked-in"
    );
    assert_eq!(
        server_resource(&server, "Appointment", appt)["status"],
        "checked-in"
    );
    let outbox = store.outbox_summary().unwrap();
    assert_eq!(
        (outbox.pending, outbox.conflicts, outbox.discarded),
        (0, 0, 1)
    );
    // Settled: the EHR's later changes reach the local copy again.
    update_at_server(&server, "Appointment", appt, |a| {
        a["status"] = Value::String("booked".into());
    });
    rt.block_on(engine.pull(&mut Round::default())).unwrap();
    assert_eq!(
        local(&store, "Appointment", appt).unwrap()["status"],
        "booked"
    );
    store.verify_audit().unwrap();
}

#[test]
fn two_queued_changes_to_one_record_go_in_order_without_a_false_conflict() {
    let Some((server, clinic)) =
        server_with_clinic("two_queued_changes_to_one_record_go_in_order_without_a_false_conflict")
    else {
        return;
    };
    let (_dir, store) = fresh_store();
    let engine = engine(&server.base_url, &store, PatientScope::Schedule, NO_POLL);
    let handle = engine.handle();
    let rt = runtime();
    rt.block_on(engine.round()).unwrap();
    let appt = &clinic.appointments[2];
    handle
        .set_appointment_status(appt, "arrived", "Practitioner/nurse")
        .unwrap();
    handle
        .set_appointment_status(appt, "fulfilled", "Practitioner/nurse")
        .unwrap();
    let mut round = Round::default();
    rt.block_on(engine.push(&mut round)).unwrap();
    assert_eq!((round.sent, round.conflicts), (2, 0), "{round:?}");
    assert_eq!(
        server_resource(&server, "Appointment", appt)["status"],
        "fulfilled"
    );
    assert_eq!(
        server_resource(&server, "Appointment", appt)["meta"]["versionId"],
        "3"
    );
}

#[test]
fn a_malformed_record_is_named_and_the_rest_still_syncs() {
    let Some((server, clinic)) =
        server_with_clinic("a_malformed_record_is_named_and_the_rest_still_syncs")
    else {
        return;
    };
    // A faulty EHR serves an appointment whose start is not a time.
    let bad = &clinic.appointments[3];
    update_at_server(&server, "Appointment", bad, |a| {
        a["start"] = Value::String("after lunch".into());
    });
    let (_dir, store) = fresh_store();
    let engine = engine(&server.base_url, &store, PatientScope::All, NO_POLL);
    let handle = engine.handle();
    let rt = runtime();
    let round = rt.block_on(engine.round()).unwrap();
    assert!(round.unreadable >= 1, "{round:?}");
    assert!(store.resource("Appointment", bad).unwrap().is_none());
    for good in clinic.appointments.iter().filter(|a| *a != bad) {
        assert!(
            store.resource("Appointment", good).unwrap().is_some(),
            "{good}"
        );
    }
    assert!(store.resource_count().unwrap() > 1600);
    let panel = handle.panel().unwrap();
    let problem = panel
        .unreadable
        .iter()
        .find(|p| p.record == format!("Appointment/{bad}"))
        .unwrap_or_else(|| panic!("{:?}", panel.unreadable));
    assert_eq!(problem.message, "field `start` is not an RFC 3339 instant");
    // One record planted: one named, however many times it was served in the round.
    assert_eq!(panel.unreadable.len(), 1, "{:?}", panel.unreadable);
    assert_eq!(panel.summary.unreadable_records, 1);
}

#[test]
fn without_system_history_changes_arrive_by_last_updated_searches() {
    let Some((server, clinic)) =
        server_with_clinic("without_system_history_changes_arrive_by_last_updated_searches")
    else {
        return;
    };
    let (_dir, store) = fresh_store();
    let client = hearth_fhir::Client::new(
        &server.base_url,
        std::sync::Arc::new(hearth_fhir::NoToken),
        hearth_fhir::RetryPolicy::none(),
    )
    .unwrap();
    let mut config = hearth_sync::EngineConfig::from_settings(&Default::default());
    config.pull = hearth_sync::PullMode::LastUpdated;
    let engine = hearth_sync::Engine::new(client, store.clone(), config);
    let rt = runtime();
    rt.block_on(engine.round()).unwrap();
    let patient = &clinic.patients[1];
    let appt = &clinic.appointments[1];
    let v_patient = update_at_server(&server, "Patient", patient, |p| {
        p["active"] = Value::Bool(false);
    });
    let v_appt = update_at_server(&server, "Appointment", appt, |a| {
        a["status"] = Value::String("arrived".into());
    });
    let mut round = Round::default();
    rt.block_on(engine.pull(&mut round)).unwrap();
    assert_eq!(
        store.version_of("Patient", patient).unwrap(),
        Some(v_patient)
    );
    assert_eq!(store.version_of("Appointment", appt).unwrap(), Some(v_appt));
    assert_eq!(
        local(&store, "Appointment", appt).unwrap()["status"],
        "arrived"
    );
}

#[test]
fn a_refused_change_is_shown_with_the_reason_and_can_be_dropped_or_tried_again() {
    let Some(Synced {
        server,
        clinic,
        store,
        engine,
        handle,
        rt,
        ..
    }) = synced(
        "a_refused_change_is_shown_with_the_reason_and_can_be_dropped_or_tried_again",
        PatientScope::Schedule,
    )
    else {
        return;
    };
    let appt = &clinic.appointments[4];
    // A change the EHR cannot accept (its body is not an Appointment).
    let bad = |key: &str| hearth_store::OutboxWrite {
        idempotency_key: key.into(),
        resource_type: "Appointment".into(),
        resource_id: Some(appt.clone()),
        method: hearth_store::Method::Update,
        if_match: None,
        body: Some(format!(r#"{{"resourceType":"Observation","id":"{appt}"}}"#)),
    };
    store
        .enqueue(&bad("refused-1"), "Practitioner/nurse")
        .unwrap();
    let mut round = Round::default();
    rt.block_on(engine.push(&mut round)).unwrap();
    assert_eq!(round.failed, 1, "{round:?}");
    let panel = handle.panel().unwrap();
    assert_eq!(panel.summary.failed_writes, 1);
    let failed = &panel.failed[0];
    assert_eq!(failed.record, format!("Appointment/{appt}"));
    assert!(failed.message.contains("400"), "{}", failed.message);

    // Tried again: queued again (and refused again, still shown).
    handle
        .settle_failed(&hearth_ipc::SettleFailedWriteRequest {
            seq: failed.seq,
            choice: hearth_ipc::FailedWriteChoice::Retry,
        })
        .unwrap();
    assert_eq!(store.outbox_summary().unwrap().pending, 1);
    rt.block_on(engine.push(&mut Round::default())).unwrap();
    // Dropped: gone from the panel, and the record follows the EHR.
    handle
        .settle_failed(&hearth_ipc::SettleFailedWriteRequest {
            seq: failed.seq,
            choice: hearth_ipc::FailedWriteChoice::Discard,
        })
        .unwrap();
    let v = update_at_server(&server, "Appointment", appt, |a| {
        a["status"] = Value::String("fulfilled".into());
    });
    rt.block_on(engine.round()).unwrap();
    assert!(handle.panel().unwrap().failed.is_empty());
    assert_eq!(store.version_of("Appointment", appt).unwrap(), Some(v));
    assert!(handle
        .settle_failed(&hearth_ipc::SettleFailedWriteRequest {
            seq: failed.seq,
            choice: hearth_ipc::FailedWriteChoice::Retry,
        })
        .is_err());
    store.verify_audit().unwrap();
}
