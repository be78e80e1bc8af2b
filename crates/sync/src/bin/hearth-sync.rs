//! Headless sync of one Hearth profile with its EHR: for IT diagnostics, and the process the
//! crash tests kill. It opens the profile's encrypted store (key from the OS keychain), runs
//! sync rounds, and prints one line per round (counts only, never clinical content), then the
//! records kept as unreadable by name.
//!
//! usage: hearth-sync --db FILE --fhir-base URL --keychain-account NAME [--until-idle]
//!        [--push-only] [--poll-seconds N]

use hearth_fhir::{Client, NoToken, RetryPolicy};
use hearth_model::settings::SyncConfig;
use hearth_store::{Keychain, Store};
use hearth_sync::{Engine, EngineConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: hearth-sync --db FILE --fhir-base URL --keychain-account NAME [--until-idle] [--push-only] [--poll-seconds N]";

struct Args {
    db: PathBuf,
    fhir_base: String,
    account: String,
    until_idle: bool,
    push_only: bool,
    poll_seconds: u32,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut db, mut fhir_base, mut account) = (None, None, None);
    let (mut until_idle, mut push_only, mut poll_seconds) = (false, false, 15);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value; {USAGE}"));
        match a.as_str() {
            "--db" => db = Some(PathBuf::from(value()?)),
            "--fhir-base" => fhir_base = Some(value()?),
            "--keychain-account" => account = Some(value()?),
            "--poll-seconds" => {
                poll_seconds = value()?
                    .parse()
                    .map_err(|_| format!("--poll-seconds needs a number; {USAGE}"))?
            }
            "--until-idle" => until_idle = true,
            "--push-only" => push_only = true,
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(Args {
        db: db.ok_or(format!("--db is required; {USAGE}"))?,
        fhir_base: fhir_base.ok_or(format!("--fhir-base is required; {USAGE}"))?,
        account: account.ok_or(format!("--keychain-account is required; {USAGE}"))?,
        until_idle,
        push_only,
        poll_seconds,
    })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hearth-sync: {e}");
            return ExitCode::from(2);
        }
    };
    let keychain = Keychain::new(hearth_model::KEYCHAIN_SERVICE, &args.account);
    let store = match Store::open_with_keychain(&args.db, &keychain) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("hearth-sync: {e}");
            return ExitCode::from(3);
        }
    };
    let retry = RetryPolicy {
        attempts: 2,
        ..RetryPolicy::default()
    };
    let client = match Client::new(&args.fhir_base, Arc::new(NoToken), retry) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hearth-sync: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = SyncConfig {
        poll_interval_seconds: args.poll_seconds,
        ..SyncConfig::default()
    };
    let engine = Engine::new(
        client,
        store.clone(),
        EngineConfig::from_settings(&settings),
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hearth-sync: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        loop {
            let result = if args.push_only {
                let mut round = hearth_sync::Round::default();
                engine.push(&mut round).await.map(|()| round)
            } else {
                engine.round().await
            };
            match &result {
                Ok(r) => println!(
                    "round: stored {} deleted {} sent {} replayed {} conflicts {} failed {} unreadable {}",
                    r.stored, r.deleted, r.sent, r.replayed, r.conflicts, r.failed, r.unreadable
                ),
                Err(e) => println!("round failed: {}", e.for_people()),
            }
            // The records kept as unreadable, by name (type and id, or where the EHR served
            // them) and problem: what IT needs to raise with the EHR's vendor.
            match store.rejected() {
                Ok(rejected) => {
                    for r in &rejected {
                        println!(
                            "unreadable: {} ({}; served so {} times since {})",
                            r.record, r.message, r.fetches, r.first_seen
                        );
                    }
                }
                Err(e) => println!("unreadable records cannot be listed: {e}"),
            }
            let idle = store.pending().map(|p| p.is_empty()).unwrap_or(false);
            if args.until_idle && idle && result.is_ok() {
                return ExitCode::SUCCESS;
            }
            tokio::time::sleep(std::time::Duration::from_secs(u64::from(args.poll_seconds))).await;
        }
    })
}
