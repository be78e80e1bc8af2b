//! Ingest rate of the 615-patient Synthea set (190,560 resources) into the encrypted store,
//! through the path a sync takes (Bundle → resources as served → projections → SQLCipher),
//! and the time to read a patient's observations back.
//!
//! Run: `cargo bench -p hearth-sync --bench ingest` (reports, asserts nothing).
//! Needs `../shared/data/synthea-r4-615-patients.tar.zst` (or `$HEARTH_SAMPLE_DATA`) and the
//! `zstd` and `tar` commands; unpacks once into `~/.cache/hearth/sample/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench binary: a failure is the run failing, with its message"
)]

use hearth_store::{DbKey, Store};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Rows per transaction in the pipelined run.
const BATCH: usize = 10_000;
const SET: &str = "synthea-r4-615-patients.tar.zst";

fn unpacked() -> Option<PathBuf> {
    let archive = hearth_testkit::sample_data("bench ingest", SET)?;
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let dir = home.join(".cache/hearth/sample/synthea-615");
    if !dir.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("zstd -d --long=27 -c \"$1\" | tar -x -C \"$2\"")
            .arg("sh")
            .arg(&archive)
            .arg(&dir)
            .status()
            .expect("sh");
        assert!(
            status.success(),
            "unpacking {SET} failed (zstd and tar needed)"
        );
        std::fs::write(dir.join(".complete"), "").unwrap();
    }
    Some(dir)
}

fn pct(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

fn main() {
    let Some(dir) = unpacked() else { return };
    let mut bundles: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    // Synthea's transaction bundles point at their patient by `urn:uuid:`; a server serves
    // `Patient/<id>`. Rewrite them as served, before the clock starts.
    for b in &mut bundles {
        let pid = b
            .split("\"resourceType\": \"Patient\",")
            .nth(1)
            .and_then(|rest| rest.split("\"id\": \"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string);
        if let Some(pid) = pid {
            *b = b.replace(&format!("urn:uuid:{pid}\""), &format!("Patient/{pid}\""));
        }
    }
    let bytes: usize = bundles.iter().map(String::len).sum();

    let limit: usize = std::env::var("HEARTH_BENCH_BUNDLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let bundles: Vec<String> = bundles.into_iter().take(limit).collect();

    // Sequential: one thread reads and writes.
    let (seq_took, resources, problems, distinct) = {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("bench.db"), &DbKey::generate().unwrap()).unwrap();
        let t0 = Instant::now();
        let (mut n, mut bad) = (0, 0);
        for b in &bundles {
            let (rows, problems) =
                hearth_sync::rows_of(hearth_fhir::parse_bundle(b).unwrap().entries);
            bad += problems.len();
            n += store.ingest(&rows).unwrap().0;
        }
        let took = t0.elapsed();
        (took, n, bad, store.resource_count().unwrap())
    };
    // Pipelined, as a sync can: pages are parsed on one core while the other writes.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("bench.db"), &DbKey::generate().unwrap()).unwrap();
    let t0 = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<hearth_store::ResourceRow>>(4);
    let mut in_store = Duration::ZERO;
    std::thread::scope(|s| {
        s.spawn(|| {
            for b in &bundles {
                let (rows, _) = hearth_sync::rows_of(hearth_fhir::parse_bundle(b).unwrap().entries);
                tx.send(rows).unwrap();
            }
            drop(tx);
        });
        // Larger transactions: each commit rewrites the index pages it touched.
        let mut pending = Vec::new();
        for rows in rx {
            pending.extend(rows);
            if pending.len() >= BATCH {
                let t = Instant::now();
                store.ingest(&pending).unwrap();
                in_store += t.elapsed();
                pending.clear();
            }
        }
        let t = Instant::now();
        store.ingest(&pending).unwrap();
        in_store += t.elapsed();
    });
    let took = t0.elapsed();
    assert_eq!(store.resource_count().unwrap(), distinct);
    let rate = resources as f64 / took.as_secs_f64();
    println!(
        "ingest, sequential: {resources} resources ({distinct} distinct; {:.0} MB of JSON, {problems} unreadable) in {:.2} s = {:.0} resources/s",
        bytes as f64 / 1e6 * bundles.len() as f64 / 617.0,
        seq_took.as_secs_f64(),
        resources as f64 / seq_took.as_secs_f64()
    );
    let db_size: u64 = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "ingest, pipelined: {resources} resources in {:.2} s = {rate:.0} resources/s (target >= 20000; writer busy {:.2} s); store {:.0} MB on disk",
        took.as_secs_f64(),
        in_store.as_secs_f64(),
        db_size as f64 / 1e6
    );

    // A patient's observations: one code (a vital-sign trend) and all of them (the chart).
    let patients: Vec<String> = store
        .resources_of_type("Patient")
        .unwrap()
        .iter()
        .map(|j| {
            serde_json::from_str::<serde_json::Value>(j).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut by_code = Vec::new();
    let mut all = Vec::new();
    let mut n_all = 0;
    for p in patients.iter().cycle().take(2_000) {
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
