//! Initial sync of the 615-patient Synthea set on the engine's real path: `Engine::initial_sync`
//! over HTTP (reqwest, searchset pages with `next` links, `Patient/{id}/$everything` per
//! patient) into the encrypted store, against [`hearth_testkit::bulk::SyntheaEhr`], a small
//! loopback server that sends prepared files (it measures the engine, not a FHIR server).
//!
//! Prints, in the same run:
//! 1. the parse-only rate: read each body the sync fetches from disk and
//!    `serde_json::from_str::<serde_json::Value>` it whole (resources/s and MB/s), the fastest
//!    of three passes;
//! 2. the engine's rate end to end (first request to the last commit), the fastest of two
//!    runs into new stores, and its share of (1);
//! 3. the process's peak RSS during the sync (`VmHWM`, reset just before it) against a bound;
//! 4. reading a patient's observations back from the filled store.
//!
//! Run: `cargo bench -p hearth-sync --bench ingest` (reports, asserts nothing).
//! Needs `../shared/data/synthea-r4-615-patients.tar.zst` (or `$HEARTH_SAMPLE_DATA`) and the
//! `zstd` and `tar` commands; unpacks and prepares once below `~/.cache/hearth/sample/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench binary: a failure is the run failing, with its message"
)]

use hearth_fhir::{Client, NoToken, RetryPolicy};
use hearth_model::settings::{PatientScope, SyncConfig};
use hearth_store::{DbKey, Store};
use hearth_sync::{Engine, EngineConfig, Round};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The peak resident memory the initial sync may reach (the whole process: runtime, HTTP
/// client, pages in flight, SQLite caches of the writer and readers).
const RSS_BOUND_MB: f64 = 300.0;
/// Targets of issue 10 (acceptance 7).
const TARGET_RATE: f64 = 20_000.0;
const TARGET_SHARE: f64 = 0.5;

fn pct(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

/// A `kB` line of `/proc/self/status` (`VmHWM`, `VmRSS`), in MB.
fn status_mb(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time of the whole process so far (user + system, all threads), from `/proc/self/stat`.
fn cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// Passes of the parse-only loop and runs of the engine; the fastest of each is compared.
const PARSE_PASSES: usize = 3;
const ENGINE_RUNS: usize = 2;

/// Durations as "1.23 s, 1.10 s".
fn seconds(d: impl Iterator<Item = Duration>) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One initial sync into a new store.
struct Run {
    took: Duration,
    cpu: Duration,
    stored: usize,
    unreadable: usize,
    peak: f64,
    rss_before: f64,
    db_bytes: u64,
    distinct: usize,
}

/// One initial sync into a new store: its figures, the store and the folder that holds it.
fn sync_once(
    ehr: &hearth_testkit::bulk::SyntheaEhr,
    rt: &tokio::runtime::Runtime,
) -> (Run, Arc<Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(&dir.path().join("h.db"), &DbKey::generate().unwrap()).unwrap());
    let client = Client::new(ehr.base_url(), Arc::new(NoToken), RetryPolicy::default()).unwrap();
    let mut config = EngineConfig::from_settings(&SyncConfig::default());
    config.scope = PatientScope::All;
    let engine = Engine::new(client, store.clone(), config);
    // Memory the allocator still holds from before (the parse-only passes, an earlier run)
    // goes back to the system first, so that the peak is the sync's, not a leftover's.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code, reason = "glibc's malloc_trim, in the bench only")]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps and arenas;
    // it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
    // The peak from here on is the sync's (writing 5 resets VmHWM to the current RSS).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_mb("VmRSS");
    let (t0, c0) = (Instant::now(), cpu());
    let mut round = Round::default();
    rt.block_on(engine.initial_sync(&mut round)).unwrap();
    let took = t0.elapsed();
    let cpu = cpu() - c0;
    let peak = status_mb("VmHWM");
    let db_bytes = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let distinct = store.resource_count().unwrap();
    assert_eq!(distinct, ehr.distinct, "every served resource is stored");
    let run = Run {
        took,
        cpu,
        stored: round.stored,
        unreadable: round.unreadable,
        peak,
        rss_before,
        db_bytes,
        distinct,
    };
    (run, store, dir)
}

fn main() {
    let Some(ehr) = hearth_testkit::bulk::SyntheaEhr::start("bench ingest") else {
        return;
    };

    // 1. Parse only: the same bodies, read and parsed whole (a DOM), nothing kept. The
    //    fastest of three passes (the first also warms the page cache), so that the share
    //    below is never flattered by a slow pass.
    let mut passes = Vec::new();
    let (mut parsed, mut bytes) = (0usize, 0usize);
    for _ in 0..PARSE_PASSES {
        let (t0, c0) = (Instant::now(), cpu());
        (parsed, bytes) = (0, 0);
        for path in &ehr.bodies {
            let body = std::fs::read_to_string(path).unwrap();
            bytes += body.len();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            parsed += v["entry"].as_array().map_or(0, Vec::len);
            std::hint::black_box(v);
        }
        passes.push((t0.elapsed(), cpu() - c0));
    }
    assert_eq!(parsed, ehr.resources);
    let (parse_took, parse_cpu) = passes.iter().min().copied().unwrap();
    let parse_rate = parsed as f64 / parse_took.as_secs_f64();
    println!(
        "parse only (read file + serde_json::from_str::<Value>), fastest of {PARSE_PASSES} passes ({}): {parsed} resources, {:.0} MB in {} bodies, {:.2} s = {parse_rate:.0} resources/s ({:.0} MB/s; CPU {:.2} s)",
        seconds(passes.iter().map(|p| p.0)),
        bytes as f64 / 1e6,
        ehr.bodies.len(),
        parse_took.as_secs_f64(),
        bytes as f64 / 1e6 / parse_took.as_secs_f64(),
        parse_cpu.as_secs_f64()
    );

    // 2. The engine's initial sync, end to end, into a new store each time; the fastest of
    //    two runs.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runs = Vec::new();
    let mut last = None;
    for _ in 0..ENGINE_RUNS {
        // The previous run's store is closed first: each run's peak is its own.
        drop(last.take());
        let (run, store, dir) = sync_once(&ehr, &rt);
        runs.push(run);
        last = Some((store, dir));
    }
    let (store, _dir) = last.unwrap();
    let best = runs.iter().min_by_key(|r| r.took).unwrap();
    let rate = best.stored as f64 / best.took.as_secs_f64();
    println!(
        "engine initial sync over HTTP, fastest of {ENGINE_RUNS} runs ({}): {} resources stored ({} distinct, {} unreadable) in {:.2} s = {rate:.0} resources/s = {:.0} % of parse only (targets >= 20000/s: {}, >= 50 %: {}); CPU {:.2} s (all threads, the loopback server's included); store {:.0} MB on disk",
        seconds(runs.iter().map(|r| r.took)),
        best.stored,
        best.distinct,
        best.unreadable,
        best.took.as_secs_f64(),
        100.0 * rate / parse_rate,
        if rate >= TARGET_RATE { "met" } else { "MISSED" },
        if rate >= TARGET_SHARE * parse_rate { "met" } else { "MISSED" },
        best.cpu.as_secs_f64(),
        best.db_bytes as f64 / 1e6
    );
    let peak = runs.iter().map(|r| r.peak).fold(0.0, f64::max);
    println!(
        "peak RSS during a sync (VmHWM, the higher of the runs): {peak:.0} MB (RSS {:.0} MB before it; bound {RSS_BOUND_MB:.0} MB: {})",
        best.rss_before,
        if peak <= RSS_BOUND_MB { "within" } else { "EXCEEDED" }
    );

    // 3. A patient's observations: one code (a vital-sign trend) and all of them (the chart).
    let mut by_code = Vec::new();
    let mut all = Vec::new();
    let mut n_all = 0;
    for p in ehr.patients.iter().cycle().take(2_000) {
        let t = Instant::now();
        let rows = store.observations(p, "29463-7").unwrap();
        by_code.push(t.elapsed());
        std::hint::black_box(rows);
        let t = Instant::now();
        let rows = store.resources_for_patient("Observation", p).unwrap();
        all.push(t.elapsed());
        n_all += rows.len();
    }
    println!(
        "observations by patient+code (body weight): p50 {:?} p95 {:?} over {} queries",
        pct(by_code.clone(), 0.5),
        pct(by_code, 0.95),
        all.len()
    );
    println!(
        "all observations of a patient (avg {} rows): p50 {:?} p95 {:?}",
        n_all / all.len(),
        pct(all.clone(), 0.5),
        pct(all, 0.95)
    );
}
