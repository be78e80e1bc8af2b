//! The media engine's figures (issue 12, acceptance point 6), on loopback with the peers the
//! call tests use: the real visit service in this process, the SMART identity provider and EHR
//! (`SmartEhr`) for the clinician's token and the appointments, headless Debian Chromium on the
//! join page with the self-stamping pattern (640×480@30 Y4M) as its fake camera.
//!
//! `cargo bench -p hearth-media --bench call` (HEARTH_MEDIA_BENCH_CALLS=N set-ups per pairing,
//! default 10; HEARTH_MEDIA_BENCH_SECONDS of the CPU window, default 20;
//! HEARTH_MEDIA_BENCH_FRAMES per direction for glass-to-glass, default 450).
//!
//! 1. Offer → connected: `PeerMedia::connected_ms` of Hearth's engine, N fresh calls with a
//!    patient in Chromium (Chromium offers, Hearth answers) and N with a second engine joining
//!    by link (`Entry::Join`; both ends' figures).
//! 2. Glass-to-glass: two engines in this process (one clock); each frame's send time is read
//!    from its pixels (`pattern::read_i420`) on the receiver's `frames()` and taken from now.
//! 3. CPU and memory: Hearth hosting, the patient in Chromium, both ways at 640×480@30: this
//!    process's CPU time over a steady window (/proc/self/stat) as % of one core, by thread
//!    name; RSS (VmHWM reset at the window's start, VmRSS sampled); frames per second both ways.
//!
//! Prints a table with the goals beside the figures; a missed goal does not fail the bench,
//! a call that cannot be made does (panic naming what it waited for).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench harness")]

#[path = "../../visit-server/tests/common/mod.rs"]
mod common;
#[path = "../tests/support/fake_devices.rs"]
mod fake_devices;

use common::browser::{Browser, WAIT};
use common::*;
use fake_devices::FakeDevices;
use hearth_media::{pattern, Call, CallEvent, CallOptions, Entry};
use hearth_testkit::smart::SmartEhr;
use hearth_testkit::visit::ChromeDriver;
use hearth_visit_client::{ServiceTokens, TokenFuture, VisitClient};
use hearth_visit_protocol::{Role, Secret, Standing};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

const GOAL_CONNECTED_MS: f64 = 300.0;
const GOAL_G2G_MS: f64 = 150.0;
const GOAL_CPU_PCT: f64 = 25.0;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The clinician's token for the service, as Hearth's sign-in would give it.
struct Fixed(String);

impl ServiceTokens for Fixed {
    fn token<'a>(&'a self, _resource: &'a str) -> TokenFuture<'a> {
        let token = Secret::new(self.0.clone());
        Box::pin(async move { Ok(token) })
    }
}

// ------------------------------------------------------------------ the machine, the process

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{model}, {cores} cores; load average {} at the start",
        load.join(" ")
    )
}

/// A `kB` line of `/proc/self/status` (`VmHWM`, `VmRSS`), in MB.
fn status_mb(key: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Clock ticks a second in `/proc/*/stat` (Linux's USER_HZ: 100 on every architecture the
/// workstation runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime (clock ticks) and the command name of a `stat` file.
fn stat_ticks(path: &std::path::Path) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s[open + 1..close].to_owned();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = s[close + 2..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name, ticks))
}

/// The whole process's CPU time in seconds (every thread, the exited ones included).
fn process_cpu_s() -> f64 {
    stat_ticks(std::path::Path::new("/proc/self/stat")).map_or(f64::NAN, |(_, t)| t as f64)
        / TICKS_PER_SECOND
}

/// CPU ticks of each live thread, by thread id, with its name.
fn thread_ticks() -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            if let Some(t) = stat_ticks(&entry.path().join("stat")) {
                out.insert(entry.file_name().to_string_lossy().into_owned(), t);
            }
        }
    }
    out
}

// ------------------------------------------------------------------ statistics

struct Summary {
    n: usize,
    p50: f64,
    p95: f64,
    max: f64,
}

fn summary(mut v: Vec<f64>) -> Summary {
    v.sort_by(|a, b| a.total_cmp(b));
    // Nearest rank.
    let at = |p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
        }
    };
    Summary {
        n: v.len(),
        p50: at(0.5),
        p95: at(0.95),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

// ------------------------------------------------------------------ peers and calls

struct Peers {
    _idp: SmartEhr,
    access: String,
    driver: ChromeDriver,
    devices: FakeDevices,
    base: String,
}

fn loopback() -> CallOptions {
    CallOptions {
        bind: [127, 0, 0, 1].into(),
        ..CallOptions::default()
    }
}

async fn next_event(
    events: &mut broadcast::Receiver<CallEvent>,
    what: &str,
    want: impl Fn(&CallEvent) -> bool,
) -> CallEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) if want(&e) => return e,
                Ok(CallEvent::Trouble {
                    message,
                    fatal: true,
                    ..
                }) => panic!("waiting for {what}: the call failed: {message}"),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// Hearth's engine hosting `visit`.
async fn host(p: &Peers, visit: &str) -> (Call, broadcast::Receiver<CallEvent>) {
    let client = VisitClient::new(&p.base, Arc::new(Fixed(p.access.clone()))).unwrap();
    let call = Call::start(
        Entry::Host {
            client,
            visit: visit.to_owned(),
            name: Some("Dr Rivera".into()),
        },
        loopback(),
    )
    .await
    .unwrap();
    let mut events = call.events();
    next_event(&mut events, "welcome", |e| {
        matches!(e, CallEvent::Welcome { .. })
    })
    .await;
    (call, events)
}

/// Admits `name` from the waiting room; returns their participant id.
async fn admit(call: &Call, events: &mut broadcast::Receiver<CallEvent>, name: &str) -> String {
    let e = next_event(events, &format!("{name} in the waiting room"), |e| {
        matches!(e, CallEvent::Roster(people) if people.iter().any(|p| p.name == name && p.standing == Standing::Waiting))
    })
    .await;
    let CallEvent::Roster(people) = e else {
        unreachable!()
    };
    let id = people.iter().find(|p| p.name == name).unwrap().id.clone();
    call.admit(&id);
    id
}

/// The patient in Chromium on the join page, in the waiting room.
async fn browser_patient(p: &Peers, visit: &str, who: &'static str) -> Browser {
    let l = link(&p.base, &p.access, visit, Role::Patient).await;
    let b = Browser::open_with(&p.driver, who, l.url.expose(), &p.devices.flags()).await;
    b.join_as("Ana Lopez").await;
    b
}

/// A second engine joining `visit` with a patient's link.
async fn engine_patient(p: &Peers, visit: &str) -> (Call, broadcast::Receiver<CallEvent>) {
    let l = link(&p.base, &p.access, visit, Role::Patient).await;
    let call = Call::start(
        Entry::Join {
            ws_url: format!("{}/v1/ws", p.base.replacen("http", "ws", 1)),
            token: token_of(&l),
            name: "Ana Lopez".into(),
        },
        loopback(),
    )
    .await
    .unwrap();
    // Its welcome may come before a subscriber could: the host's roster shows it arrive.
    let events = call.events();
    (call, events)
}

/// Waits for the engine's set-up time of its connection to `peer`.
async fn connected_ms(call: &Call, peer: &str, what: &str) -> f64 {
    wait_for(WAIT, what, || async {
        call.received()
            .get(peer)
            .and_then(|m| m.connected_ms)
            .map(|ms| ms as f64)
    })
    .await
}

/// The participant id of the only peer an engine has (the joiner knows the host this way).
async fn only_peer(call: &Call) -> String {
    wait_for(WAIT, "the joining engine to know its peer", || async {
        call.received().keys().next().cloned()
    })
    .await
}

async fn end(call: Call, mut events: broadcast::Receiver<CallEvent>) {
    call.end();
    next_event(&mut events, "the end of the visit", |e| {
        *e == CallEvent::Ended
    })
    .await;
}

// ------------------------------------------------------------------ 1. offer -> connected

async fn connect_with_chromium(p: &Peers, calls: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..calls {
        let visit = format!("bench-c{i}");
        let (call, mut events) = host(p, &visit).await;
        let who: &'static str = Box::leak(format!("patient-c{i}").into_boxed_str());
        let page = browser_patient(p, &visit, who).await;
        let ana = admit(&call, &mut events, "Ana Lopez").await;
        let ms = connected_ms(&call, &ana, "Hearth's connection to Chromium").await;
        eprintln!("  Hearth<->Chromium call {}: {ms:.0} ms", i + 1);
        out.push(ms);
        end(call, events).await;
        page.close().await;
    }
    out
}

async fn connect_engines(p: &Peers, calls: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut answerer, mut offerer) = (Vec::new(), Vec::new());
    for i in 0..calls {
        let visit = format!("bench-h{i}");
        let (call, mut events) = host(p, &visit).await;
        let (joiner, _joiner_events) = engine_patient(p, &visit).await;
        let ana = admit(&call, &mut events, "Ana Lopez").await;
        let a = connected_ms(&call, &ana, "the host's connection to the joining engine").await;
        let host_id = only_peer(&joiner).await;
        let o = connected_ms(&joiner, &host_id, "the joining engine's connection").await;
        eprintln!(
            "  Hearth<->Hearth call {}: answerer {a:.0} ms, offerer {o:.0} ms",
            i + 1
        );
        answerer.push(a);
        offerer.push(o);
        end(call, events).await;
        drop(joiner);
    }
    (answerer, offerer)
}

// ------------------------------------------------------------------ 2. glass-to-glass

struct G2g {
    latencies: Vec<f64>,
    unreadable: u64,
    lagged: u64,
    size: (u32, u32),
}

/// Reads `want` frames of the peer on `frames`: now − the send time in the pixels.
async fn glass_to_glass(
    mut frames: broadcast::Receiver<hearth_media::VideoFrame>,
    want: usize,
) -> G2g {
    let mut g = G2g {
        latencies: Vec::new(),
        unreadable: 0,
        lagged: 0,
        size: (0, 0),
    };
    let deadline = Instant::now() + WAIT;
    while g.latencies.len() + (g.unreadable as usize) < want {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {want} frames (got {})",
            g.latencies.len()
        );
        match tokio::time::timeout(Duration::from_secs(5), frames.recv()).await {
            Ok(Ok(f)) if f.peer != "self" => {
                let now = now_ms() & ((1 << 40) - 1);
                g.size = (f.frame.width, f.frame.height);
                match pattern::read_i420(&f.frame) {
                    Some(s) if s.sent_ms > 0 && s.sent_ms <= now && now - s.sent_ms < 60_000 => {
                        g.latencies.push((now - s.sent_ms) as f64);
                    }
                    _ => g.unreadable += 1,
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => g.lagged += n,
            Ok(Err(e)) => panic!("the frames stopped: {e}"),
            Err(_) => panic!("no frame for 5 s"),
        }
    }
    g
}

async fn engines_glass_to_glass(p: &Peers, frames: usize) -> (G2g, G2g) {
    let (call, mut events) = host(p, "bench-g2g").await;
    let (joiner, _joiner_events) = engine_patient(p, "bench-g2g").await;
    let ana = admit(&call, &mut events, "Ana Lopez").await;
    let host_id = only_peer(&joiner).await;
    // Past the start: both ends decoding steadily.
    wait_for(WAIT, "both engines to decode 60 frames", || async {
        let a = call.received().get(&ana).map_or(0, |m| m.frames_decoded);
        let b = joiner
            .received()
            .get(&host_id)
            .map_or(0, |m| m.frames_decoded);
        (a >= 60 && b >= 60).then_some(())
    })
    .await;
    let (to_host, to_joiner) = tokio::join!(
        glass_to_glass(call.frames(), frames),
        glass_to_glass(joiner.frames(), frames)
    );
    end(call, events).await;
    drop(joiner);
    (to_host, to_joiner)
}

// ------------------------------------------------------------------ 3. CPU and memory

struct Load {
    seconds: f64,
    cpu_pct: f64,
    threads: Vec<(String, f64)>,
    rss_before_mb: f64,
    rss_steady_mb: f64,
    rss_peak_mb: f64,
    peak_since_start_mb: f64,
    encoded_fps: f64,
    decoded_fps: f64,
    chromium_decoded_fps: f64,
    received_size: (u32, u32),
    rung: usize,
}

async fn chromium_frames_decoded(page: &Browser) -> u64 {
    page.decoding().await["framesDecoded"].as_u64().unwrap_or(0)
}

async fn cpu_and_memory(p: &Peers, seconds: u64) -> Load {
    let rss_before_mb = status_mb("VmRSS");
    let (call, mut events) = host(p, "bench-cpu").await;
    let page = browser_patient(p, "bench-cpu", "patient-cpu").await;
    let ana = admit(&call, &mut events, "Ana Lopez").await;
    wait_for(
        WAIT,
        "Hearth to decode 90 of the patient's frames",
        || async {
            call.received()
                .get(&ana)
                .filter(|m| m.frames_decoded >= 90)
                .map(|_| ())
        },
    )
    .await;
    chromium_frames_decoded(&page).await;
    // Settle: the first key frames and the bandwidth estimate ramp-up are not steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let peak_since_start_mb = status_mb("VmHWM");
    // Writing 5 resets VmHWM to the current RSS: the peak from here on is the window's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let browser0 = chromium_frames_decoded(&page).await;
    let (enc0, dec0) = (
        call.sent().frames_encoded,
        call.received()[&ana].frames_decoded,
    );
    let threads0 = thread_ticks();
    let cpu0 = process_cpu_s();
    let t0 = Instant::now();
    let mut rss = Vec::new();
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(status_mb("VmRSS"));
    }
    let cpu1 = process_cpu_s();
    let elapsed = t0.elapsed().as_secs_f64();
    let threads1 = thread_ticks();
    let (enc1, m) = (call.sent().frames_encoded, call.received()[&ana].clone());
    let browser1 = chromium_frames_decoded(&page).await;
    let rss_peak_mb = status_mb("VmHWM");

    // CPU by thread name (tokio's workers summed), over the window.
    let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
    for (tid, (name, t1)) in &threads1 {
        let t0 = threads0.get(tid).map_or(0, |(_, t)| *t);
        *by_name.entry(name.clone()).or_default() +=
            t1.saturating_sub(t0) as f64 / TICKS_PER_SECOND / elapsed * 100.0;
    }
    let mut threads: Vec<(String, f64)> = by_name.into_iter().filter(|(_, p)| *p >= 0.05).collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));

    let load = Load {
        seconds: elapsed,
        cpu_pct: (cpu1 - cpu0) / elapsed * 100.0,
        threads,
        rss_before_mb,
        rss_steady_mb: rss.iter().sum::<f64>() / rss.len().max(1) as f64,
        rss_peak_mb,
        peak_since_start_mb,
        encoded_fps: (enc1 - enc0) as f64 / elapsed,
        decoded_fps: (m.frames_decoded - dec0) as f64 / elapsed,
        chromium_decoded_fps: browser1.saturating_sub(browser0) as f64 / elapsed,
        received_size: (m.width, m.height),
        rung: call.sent().rung,
    };
    end(call, events).await;
    page.close().await;
    load
}

// ------------------------------------------------------------------ the report

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let calls = env_or("HEARTH_MEDIA_BENCH_CALLS", 10) as usize;
    let seconds = env_or("HEARTH_MEDIA_BENCH_SECONDS", 20);
    let frames = env_or("HEARTH_MEDIA_BENCH_FRAMES", 450) as usize;
    let started = Instant::now();
    println!("Hearth media engine on loopback");
    println!("machine: {}", machine());

    let mut visits = vec!["bench-cpu".to_owned(), "bench-g2g".to_owned()];
    for i in 0..calls {
        visits.push(format!("bench-c{i}"));
        visits.push(format!("bench-h{i}"));
    }
    let idp = ehr_with(&visits.iter().map(String::as_str).collect::<Vec<_>>());
    let access = clinician_token(&idp);
    let driver = ChromeDriver::start();
    let devices = FakeDevices::new();
    let rt = runtime();
    let (load, chromium, (answerer, offerer), (to_host, to_joiner)) = rt.block_on(async {
        let svc = serve(&idp, |_| {}).await;
        let p = Peers {
            _idp: idp,
            access,
            driver,
            devices,
            base: format!("http://{}", svc.addr),
        };
        // The CPU and memory window first, before the other calls have grown the heap.
        eprintln!("CPU and memory, Hearth hosting a patient in Chromium ({seconds} s)...");
        let load = cpu_and_memory(&p, seconds).await;
        eprintln!(
            "  {:.1} % of one core; {:.1} frames/s encoded, {:.1} decoded",
            load.cpu_pct, load.encoded_fps, load.decoded_fps
        );
        eprintln!("offer -> connected, Hearth <-> Chromium ({calls} calls)...");
        let chromium = connect_with_chromium(&p, calls).await;
        eprintln!("offer -> connected, Hearth <-> Hearth ({calls} calls)...");
        let engines = connect_engines(&p, calls).await;
        eprintln!("glass-to-glass, Hearth <-> Hearth ({frames} frames each way)...");
        let g2g = engines_glass_to_glass(&p, frames).await;
        drop(svc);
        (load, chromium, engines, g2g)
    });

    println!();
    println!("1. Offer -> connected (PeerMedia::connected_ms: first SDP offer sent/received -> Connected)");
    println!(
        "   {:<40} {:>4} {:>8} {:>8} {:>8}   goal",
        "", "n", "p50", "p95", "max"
    );
    for (label, v) in [
        ("Hearth answering Chromium's offer", chromium),
        ("Hearth host answering Hearth's offer", answerer),
        ("Hearth joiner offering to Hearth", offerer),
    ] {
        let s = summary(v);
        println!(
            "   {label:<40} {:>4} {:>5.0} ms {:>5.0} ms {:>5.0} ms   <= {GOAL_CONNECTED_MS:.0} ms: {}",
            s.n,
            s.p50,
            s.p95,
            s.max,
            verdict(s.p95 <= GOAL_CONNECTED_MS)
        );
    }

    println!();
    println!("2. Glass-to-glass, Hearth <-> Hearth (send time in the pixels -> decoded frame on frames())");
    println!(
        "   {:<40} {:>4} {:>8} {:>8} {:>8}   goal",
        "", "n", "p50", "p95", "max"
    );
    for (label, g) in [("joiner -> host", to_host), ("host -> joiner", to_joiner)] {
        let extra = format!(
            "{}x{}, {} unreadable stamps, {} frames skipped by a lagging reader",
            g.size.0, g.size.1, g.unreadable, g.lagged
        );
        let s = summary(g.latencies);
        println!(
            "   {label:<40} {:>4} {:>5.0} ms {:>5.0} ms {:>5.0} ms   <= {GOAL_G2G_MS:.0} ms: {}",
            s.n,
            s.p50,
            s.p95,
            s.max,
            verdict(s.p95 <= GOAL_G2G_MS)
        );
        println!("   {:<40} {extra}", "");
    }

    println!();
    println!(
        "3. CPU and memory of this process, Hearth hosting, the patient in Chromium, 640x480@30 both ways ({:.1} s window)",
        load.seconds
    );
    println!(
        "   CPU: {:.1} % of one core (goal <= {GOAL_CPU_PCT:.0} %: {})",
        load.cpu_pct,
        verdict(load.cpu_pct <= GOAL_CPU_PCT)
    );
    let threads: Vec<String> = load
        .threads
        .iter()
        .take(6)
        .map(|(n, p)| format!("{n} {p:.1} %"))
        .collect();
    println!("        by thread: {}", threads.join(", "));
    println!(
        "   frames: Hearth encoded {:.1}/s (rung {}), decoded {:.1}/s at {}x{}; Chromium decoded Hearth's {:.1}/s",
        load.encoded_fps,
        load.rung,
        load.decoded_fps,
        load.received_size.0,
        load.received_size.1,
        load.chromium_decoded_fps
    );
    println!(
        "   RSS: {:.0} MB before the call, {:.0} MB steady (mean VmRSS), {:.0} MB peak in the window (VmHWM); {:.0} MB peak before it",
        load.rss_before_mb, load.rss_steady_mb, load.rss_peak_mb, load.peak_since_start_mb
    );
    println!(
        "   (this process also holds the visit service, idle but for pings, and the WebDriver client)"
    );
    println!();
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
}
