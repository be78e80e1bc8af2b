//! Load test (bounded, loopback only): N concurrent visits' presence and signaling across two
//! `hearth-visit` processes sharing a real Redis, then one process SIGKILLed and its
//! participants recovering on the other.
//!
//! `cargo bench -p hearth-visit-server --bench load` (HEARTH_VISIT_LOAD_VISITS=N, default 200;
//! HEARTH_VISIT_LOAD_SECONDS of steady signaling, default 10). Prints its figures.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench harness")]

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use hearth_testkit::visit::Redis;
use hearth_visit_protocol::{ClientMsg, Role, ServerMsg};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{label}: n={} p50={:.2} ms p95={:.2} ms p99={:.2} ms max={:.2} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.95),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

struct Pair {
    doc: Ws,
    pat: Ws,
    /// Which instance the patient is on (0 = A, which is killed).
    pat_on: usize,
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let visits = env_or("HEARTH_VISIT_LOAD_VISITS", 200) as usize;
    let seconds = env_or("HEARTH_VISIT_LOAD_SECONDS", 10);
    let names: Vec<String> = (0..visits).map(|i| format!("load-{i}")).collect();
    let idp = ehr_with(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let access = clinician_token(&idp);
    let redis = Redis::start();
    let mut a = Instance::spawn(&idp, Some(&redis.url), "");
    let b = Instance::spawn(&idp, Some(&redis.url), "");
    let bases = [a.base.clone(), b.base.clone()];
    let rt = runtime();
    let pairs: Vec<Arc<Mutex<Pair>>> = rt.block_on(async {
        // Set-up: each visit's clinician on one instance, its patient on the other; admit.
        let started = Instant::now();
        let mut admit_ms = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..visits {
            let (access, bases) = (access.clone(), bases.clone());
            tasks.push(tokio::spawn(async move {
                let visit = format!("load-{i}");
                let (doc_on, pat_on) = if i % 2 == 0 { (1, 0) } else { (0, 1) };
                let mut doc = Ws::host(&bases[doc_on], &access, &visit, true).await;
                let l = link(&bases[doc_on], &access, &visit, Role::Patient).await;
                let mut pat = Ws::join(&bases[pat_on], &token_of(&l), "Load Patient").await;
                doc.until("waiting", |m| roster_entry(m, &pat.participant).is_some())
                    .await;
                let t = Instant::now();
                doc.send(&ClientMsg::Admit {
                    participant: pat.participant.clone(),
                })
                .await;
                pat.until("admitted", |m| matches!(m, ServerMsg::Admitted { .. }))
                    .await;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                (Pair { doc, pat, pat_on }, ms)
            }));
        }
        let mut pairs = Vec::new();
        for t in tasks {
            let (pair, ms) = t.await.unwrap();
            admit_ms.push(ms);
            pairs.push(Arc::new(Mutex::new(pair)));
        }
        println!(
            "set-up: {visits} visits ({} sockets) on 2 instances in {:.1} s",
            visits * 2,
            started.elapsed().as_secs_f64()
        );
        summary("admit -> admitted (presence across instances)", admit_ms);
        pairs
    });

    // Steady state: every visit relays one signaling message each way every 200 ms.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for pair in &pairs {
            let pair = pair.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut p = pair.lock().await;
                let (doc_id, pat_id) = (p.doc.participant.clone(), p.pat.participant.clone());
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                while Instant::now() < deadline {
                    tick.tick().await;
                    let t = Instant::now();
                    let data = serde_json::json!({"candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}});
                    p.pat.send(&ClientMsg::Signal { to: doc_id.clone(), data: data.clone() }).await;
                    p.doc.until("signal", |m| matches!(m, ServerMsg::Signal { .. })).await;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    let t = Instant::now();
                    p.doc.send(&ClientMsg::Signal { to: pat_id.clone(), data }).await;
                    p.pat.until("signal", |m| matches!(m, ServerMsg::Signal { .. })).await;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let rate = all.len() as f64 / seconds as f64;
        println!("steady signaling: {rate:.0} relayed messages/s over {seconds} s");
        summary("signal send -> receive (across instances, through Redis)", all);
    });

    // Instance A is SIGKILLed: its participants resume on B; time until back in the call.
    a.kill();
    let killed = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for pair in &pairs {
            let pair = pair.clone();
            let base_b = bases[1].clone();
            tasks.push(tokio::spawn(async move {
                let mut p = pair.lock().await;
                let mut recovered = Vec::new();
                // Whoever was on A reconnects to B (as a browser behind a load balancer would).
                if p.pat_on == 0 {
                    let mut back = p.pat.resume(&base_b).await;
                    back.until("admitted again", |m| {
                        matches!(m, ServerMsg::Admitted { .. })
                    })
                    .await;
                    p.pat = back;
                } else {
                    let mut back = p.doc.resume(&base_b).await;
                    back.until("admitted again", |m| {
                        matches!(m, ServerMsg::Admitted { .. })
                    })
                    .await;
                    p.doc = back;
                }
                // Signaling works again both ways.
                let (doc_id, pat_id) = (p.doc.participant.clone(), p.pat.participant.clone());
                let data = serde_json::json!({"sdp": {"type": "offer", "sdp": "v=0"}});
                p.pat
                    .send(&ClientMsg::Signal {
                        to: doc_id,
                        data: data.clone(),
                    })
                    .await;
                p.doc
                    .until("signal", |m| matches!(m, ServerMsg::Signal { .. }))
                    .await;
                p.doc.send(&ClientMsg::Signal { to: pat_id, data }).await;
                p.pat
                    .until("signal", |m| matches!(m, ServerMsg::Signal { .. }))
                    .await;
                recovered.push(killed.elapsed().as_secs_f64() * 1000.0);
                recovered
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.extend(t.await.unwrap());
        }
        println!(
            "after SIGKILL of instance A: {}/{} visits recovered on B",
            times.len(),
            visits
        );
        summary("kill -> visit signaling again on B", times);
    });
    drop(b);
    drop(redis);
}
