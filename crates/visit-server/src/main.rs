//! `hearth-visit --config /etc/hearth-visit/hearth-visit.toml`: the visit service.
//! `--check-config` reads the settings and exits (for installers and IT).

use hearth_visit_server::settings::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: hearth-visit --config <file.toml> [--check-config]";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEARTH_VISIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let mut args = std::env::args().skip(1);
    let mut config: Option<PathBuf> = None;
    let mut check_only = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = args.next().map(PathBuf::from),
            "--check-config" => check_only = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("hearth-visit: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(config) = config else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let settings = match Settings::load(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hearth-visit: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("hearth-visit: {} is valid", config.display());
        return ExitCode::SUCCESS;
    }
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hearth-visit: cannot listen on {}: {e}", settings.listen);
            return ExitCode::from(1);
        }
    };
    let running = match hearth_visit_server::start(settings, listener).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hearth-visit: {e}");
            return ExitCode::from(1);
        }
    };
    // One line a supervisor (or a test) can wait for.
    println!("hearth-visit listening on {}", running.addr);
    let _ = tokio::signal::ctrl_c().await;
    running.stop();
    ExitCode::SUCCESS
}
