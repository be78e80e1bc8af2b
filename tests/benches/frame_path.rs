//! The frame path from the media engine to the pane, measured in the real window (release
//! build of the app under Xvfb, WebKitGTK, driven by WebDriver): JPEG over the IPC channel
//! decoded by the webview (`createImageBitmap`), against raw RGBA painted with
//! `putImageData`. The call is demo mode's simulated visit (640×480 at 30 fps from the
//! simulated patient's engine). Each tile's canvas records what it painted; this reads
//! delivered fps and the added latency (paint time − the engine's decode time), and the app's
//! CPU (all its threads, from /proc) over a steady window for each path.
//!
//! `cargo build --release -p hearth && cargo bench -p hearth-e2e --bench frame_path`
//! (`scripts/build-ui` first if ui/dist is stale; `HEARTH_FRAME_BENCH_SECONDS` sets the window).

use anyhow::{Context, Result};
use hearth_e2e::{wait_until, Desktop};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// utime + stime of every process whose command line names `needle` (the app's profile).
fn cpu_ticks(needle: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .map(|stat| {
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            // Fields 14 and 15 of /proc/pid/stat (utime, stime): 12 and 13 after the name.
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum()
}

struct Reading {
    fps: Vec<f64>,
    latency: Vec<f64>,
    painted: f64,
    cpu_percent: f64,
}

async fn measure(app: &Desktop, seconds: u64, needle: &str) -> Result<Reading> {
    // Settle, then sample each second.
    wait_until(WAIT, "frames painted on the patient's tile", || async {
        Ok((app.number_attr("#tile-1", "data-fps").await? > 0.0).then_some(()))
    })
    .await?;
    let start_frames = app.number_attr("#tile-1", "data-frames").await?;
    let ticks0 = cpu_ticks(needle);
    let t0 = Instant::now();
    let (mut fps, mut latency) = (Vec::new(), Vec::new());
    let mut next = t0;
    for _ in 0..seconds {
        next += Duration::from_secs(1);
        tokio::time::sleep_until(next.into()).await;
        fps.push(app.number_attr("#tile-1", "data-fps").await?);
        latency.push(app.number_attr("#tile-1", "data-latency-ms").await?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let ticks = cpu_ticks(needle).saturating_sub(ticks0) as f64;
    let painted = app.number_attr("#tile-1", "data-frames").await? - start_frames;
    Ok(Reading {
        fps,
        latency,
        painted: painted / elapsed,
        cpu_percent: ticks / 100.0 / elapsed * 100.0,
    })
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

async fn run() -> Result<()> {
    let seconds: u64 = std::env::var("HEARTH_FRAME_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let app = Desktop::launch("frame-path-bench").await?;
    let needle = app.profile_dir().display().to_string();
    let outcome = async {
        app.open_a_virtual_visit().await?;
        app.click_in_view("#call-start").await?;
        wait_until(WAIT, "the simulated patient waiting", || async {
            app.client
                .find_optional(fantoccini::Locator::Css(".call-admit-button"))
                .await
        })
        .await?;
        app.click_in_view(".call-admit-button").await?;
        let jpeg = measure(&app, seconds, &needle).await.context("JPEG path")?;
        // The alternative: raw RGBA. The call goes on in the core; the page reloads and
        // subscribes to frames again in the other encoding.
        app.client
            .execute(
                "localStorage.setItem('hearth.frame-encoding', 'rgba'); location.reload(); return true;",
                vec![],
            )
            .await?;
        app.open_a_virtual_visit().await?;
        let rgba = measure(&app, seconds, &needle).await.context("RGBA path")?;
        println!("\nFrame path to the pane (640×480 at 30 fps from the engine; {seconds} s each; release app under Xvfb)");
        println!("{:<34} {:>10} {:>10} {:>12} {:>12} {:>10}", "path", "fps p50", "fps min", "latency p50", "latency p95", "app CPU");
        for (name, r) in [("JPEG + createImageBitmap (chosen)", &jpeg), ("raw RGBA + putImageData", &rgba)] {
            println!(
                "{:<34} {:>10.1} {:>10.1} {:>9.1} ms {:>9.1} ms {:>9.0} %",
                name,
                pct(&r.fps, 0.5),
                pct(&r.fps, 0.0),
                pct(&r.latency, 0.5),
                pct(&r.latency, 0.95),
                r.cpu_percent
            );
            println!("{:<34} painted {:.1} frames/s over the window", "", r.painted);
        }
        println!("goal: frame path ≥ 30 fps (the stream's rate); latency is what the path adds after decoding");
        Ok(())
    }
    .await;
    app.finish(outcome).await
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
