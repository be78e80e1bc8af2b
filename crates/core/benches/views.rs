//! Speed of the views on demo data, printed as figures (run: `cargo bench -p hearth-core`).
//!
//! Targets from the product brief: the schedule opens well under a second from the local
//! store; a chart opens in under 100 ms. Figures are wall-clock on this machine, p50/p95 over
//! repeated runs.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a bench binary")]

use hearth_core::clock::SystemClock;
use hearth_core::launch::LaunchOptions;
use hearth_core::Workstation;
use hearth_ipc::{ChartRequest, ScheduleRequest};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95), samples[samples.len() - 1])
}

fn report(what: &str, samples: Vec<Duration>) {
    let n = samples.len();
    let (p50, p95, max) = percentiles(samples);
    println!("{what:<44} n={n:<5} p50={p50:>10.3?} p95={p95:>10.3?} max={max:>10.3?}");
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let options = LaunchOptions {
        config_path: dir.path().join("absent.toml"),
        ..LaunchOptions::default()
    };

    let mut starts = Vec::new();
    let mut ws = None;
    for _ in 0..5 {
        let t = Instant::now();
        let w = Workstation::start(&options, Arc::new(SystemClock));
        w.status().expect("demo workstation starts");
        starts.push(t.elapsed());
        ws = Some(w);
    }
    let ws = ws.unwrap();
    report("start (generate + load demo clinic)", starts);

    let mut schedule = Vec::new();
    let mut day = None;
    for _ in 0..200 {
        let t = Instant::now();
        let d = ws.schedule(&ScheduleRequest::default()).unwrap();
        schedule.push(t.elapsed());
        day = Some(d);
    }
    let day = day.unwrap();
    report(
        &format!("schedule_day (today, {} visits)", day.appointments.len()),
        schedule,
    );

    let mut charts = Vec::new();
    let mut observations = 0;
    for _ in 0..10 {
        for a in &day.appointments {
            let t = Instant::now();
            let chart = ws
                .chart(&ChartRequest {
                    patient_id: a.patient_id.clone(),
                })
                .unwrap();
            charts.push(t.elapsed());
            observations = observations
                .max(chart.labs.len() + chart.vitals.iter().map(|v| v.points.len()).sum::<usize>());
        }
    }
    report(
        &format!("open_chart (largest: {observations} observations)"),
        charts,
    );
}
