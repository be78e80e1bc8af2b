//! How soon a change made at the EHR (another client's update) is in the local store, with
//! polling: p50/p95 over 40 updates at random moments, poll interval 1 s. Against a real FHIR
//! server (sekmet-fhir on loopback) with the 20 Synthea patients.
//!
//! Run: `cargo bench -p hearth-sync --bench latency` (reports, asserts nothing).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench binary: a failure is the run failing, with its message"
)]

use hearth_fhir::{Client, NoToken, RetryPolicy};
use hearth_model::settings::{PatientScope, SyncConfig};
use hearth_model::sync_link::SyncLink;
use hearth_store::{DbKey, Store};
use hearth_sync::{Engine, EngineConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_secs(1);
const CHANGES: usize = 40;

fn main() {
    let Some((server, clinic)) = hearth_testkit::clinic::server_with_clinic("bench latency") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(&tmp.path().join("h.db"), &DbKey::generate().unwrap()).unwrap());
    let client = Client::new(&server.base_url, Arc::new(NoToken), RetryPolicy::default()).unwrap();
    let mut config = EngineConfig::from_settings(&SyncConfig::default());
    config.poll_interval = POLL;
    config.scope = PatientScope::Schedule;
    let engine = Engine::new(client, store.clone(), config);
    let handle = engine.handle();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _task = rt.spawn(engine.run(std::future::pending()));
    hearth_testkit::wait_until(Duration::from_secs(60), "the initial sync", || {
        handle.summary().1.last_success.is_some()
    });
    let patient = &clinic.patients[0];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut took = Vec::new();
    for i in 0..CHANGES {
        // A random moment relative to the poll ticks.
        std::thread::sleep(Duration::from_millis(rng.u64(0..1000)));
        let mut p: serde_json::Value =
            serde_json::from_str(&server.get_json(&format!("/fhir/Patient/{patient}"))).unwrap();
        p["active"] = serde_json::Value::Bool(i % 2 == 0);
        let t0 = Instant::now();
        let (status, body) = server
            .request(
                "PUT",
                &format!("/fhir/Patient/{patient}"),
                Some(&p.to_string()),
            )
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let version = v["meta"]["versionId"].as_str().unwrap().to_string();
        hearth_testkit::wait_until(Duration::from_secs(30), "the change locally", || {
            store.version_of("Patient", patient).unwrap().as_deref() == Some(version.as_str())
        });
        took.push(t0.elapsed());
    }
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    println!(
        "server change -> local store, poll interval {POLL:?}: p50 {:?} p95 {:?} max {:?} over {CHANGES} changes",
        at(0.5),
        at(0.95),
        took[took.len() - 1]
    );
}
