//! What the window asks while an initial sync runs: the status command (`Workstation::status`,
//! the top bar and its progress) and a chart open (`Workstation::chart`), timed while the sync
//! engine downloads the 615-patient Synthea set into the encrypted store over HTTP (against
//! [`hearth_testkit::bulk::SyntheaEhr`], a loopback server of prepared files: it measures the
//! engine and the views, not a FHIR server).
//!
//! The views are asked as a window asks them: one status and one chart of a patient whose
//! records are already stored, every 20 ms, from a thread of their own, from the first page
//! to the last commit. Prints p50/p95/max and the count of each, the sync's duration, and the
//! process's peak RSS (`VmHWM`) against a bound.
//!
//! Run: `cargo bench -p hearth-core --bench sync_views` (reports, asserts nothing).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench binary")]

use hearth_core::clock::{SystemClock, Zone};
use hearth_core::store::ClinicalStore;
use hearth_core::Workstation;
use hearth_fhir::{Client, NoToken, RetryPolicy};
use hearth_ipc::{ChartRequest, DataMode};
use hearth_model::settings::{PatientScope, SyncConfig};
use hearth_store::{DbKey, Store};
use hearth_sync::{Engine, EngineConfig, Round};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Issue 10, acceptance 2.
const TARGET_P95: Duration = Duration::from_millis(50);
/// The peak resident memory of the whole process during the sync (engine, store, views).
const RSS_BOUND_MB: f64 = 300.0;
/// How often the window asks (a bench's pacing, not a wait on a condition).
const PACE: Duration = Duration::from_millis(20);

fn status_mb(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len();
    if n == 0 {
        println!("{what:<36} n=0");
        return;
    }
    let at = |q: f64| samples[((n - 1) as f64 * q).round() as usize];
    let p95 = at(0.95);
    println!(
        "{what:<36} n={n:<5} p50={:>10.3?} p95={p95:>10.3?} max={:>10.3?} (target p95 < {TARGET_P95:?}: {})",
        at(0.5),
        samples[n - 1],
        if p95 < TARGET_P95 { "met" } else { "MISSED" }
    );
}

fn main() {
    let Some(ehr) = hearth_testkit::bulk::SyntheaEhr::start("bench sync_views") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(&tmp.path().join("h.db"), &DbKey::generate().unwrap()).unwrap());
    let client = Client::new(ehr.base_url(), Arc::new(NoToken), RetryPolicy::default()).unwrap();
    let mut config = EngineConfig::from_settings(&SyncConfig::default());
    config.scope = PatientScope::All;
    let engine = Engine::new(client, store.clone(), config);
    let ws = Workstation::with_store(
        DataMode::Ehr {
            fhir_base_url: ehr.base_url().to_string(),
        },
        store.clone() as Arc<dyn ClinicalStore>,
        Arc::new(SystemClock),
        Zone::system(),
    );
    ws.attach_sync(Arc::new(engine.handle()));

    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let done = AtomicBool::new(false);
    let (mut status, mut chart) = (Vec::new(), Vec::new());
    let mut progress_seen = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    let sync_took = std::thread::scope(|s| {
        let sync = s.spawn(|| {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let mut round = Round::default();
            rt.block_on(engine.initial_sync(&mut round)).unwrap();
            let took = t0.elapsed();
            done.store(true, Ordering::SeqCst);
            (took, round.stored)
        });
        // The newest patient whose records are all stored (its cursor is set with them).
        let mut charted: Option<&String> = None;
        let mut next = 0;
        while !done.load(Ordering::SeqCst) {
            while next < ehr.patients.len()
                && store
                    .cursor(&format!("initial.patient.{}", ehr.patients[next]))
                    .unwrap()
                    .is_some()
            {
                charted = Some(&ehr.patients[next]);
                next += 1;
            }
            let t = Instant::now();
            let st = ws.status().unwrap();
            status.push(t.elapsed());
            if let Some(p) = &st.sync.progress {
                progress_seen.insert(p.done);
            }
            if let Some(p) = charted {
                let t = Instant::now();
                let c = ws
                    .chart(&ChartRequest {
                        patient_id: p.clone(),
                    })
                    .unwrap();
                chart.push(t.elapsed());
                std::hint::black_box(c);
            }
            std::thread::sleep(PACE);
        }
        sync.join().unwrap()
    });
    let peak = status_mb("VmHWM");
    let (took, stored) = sync_took;
    println!(
        "initial sync of the 615-patient set: {stored} resources in {:.2} s while the views were asked; the status showed {} distinct progress values",
        took.as_secs_f64(),
        progress_seen.len()
    );
    report("status (Workstation::status)", status);
    report("chart open (Workstation::chart)", chart);
    println!(
        "peak RSS during the sync (VmHWM): {peak:.0} MB (bound {RSS_BOUND_MB:.0} MB: {})",
        if peak <= RSS_BOUND_MB {
            "within"
        } else {
            "EXCEEDED"
        }
    );
}
