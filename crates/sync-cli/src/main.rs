//! Headless sync of one Hearth profile with its EHR: for IT diagnostics, and the process the
//! crash tests kill. It reads the machine configuration the app reads (`[ehr]`, `[identity]`,
//! `[sync]`, `[clinic]`), opens the profile's encrypted store with the key the app uses (the
//! keychain account derived from the profile's database exactly as the app derives it), signs
//! in with the organisation's identity provider when `[identity]` is configured (the app's
//! SMART sign-on: the browser, a loopback redirect), then runs sync rounds with that user's
//! token. It prints one line per round (counts only, never clinical content), then the
//! records kept as unreadable by name.
//!
//! Without `[identity]` no token is sent; that is accepted only for an EHR on loopback (a test
//! server), never for one across the network.

use hearth_core::config::MachineConfig;
use hearth_core::{profile, KEYCHAIN_SERVICE};
use hearth_fhir::{Client, NoToken, RetryPolicy, TokenSource};
use hearth_store::{Keychain, Store};
use hearth_sync::{Engine, EngineConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: hearth-sync --data-dir DIR [--config FILE] [--keychain-account NAME] [--until-idle] [--push-only] [--poll-seconds N]";

struct Args {
    data_dir: PathBuf,
    config: PathBuf,
    /// Overrides the database key's keychain account the app would use.
    account: Option<String>,
    until_idle: bool,
    push_only: bool,
    poll_seconds: Option<u32>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args_os().skip(1);
    let (mut data_dir, mut config, mut account) = (None, None, None);
    let (mut until_idle, mut push_only, mut poll_seconds) = (false, false, None);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy().into_owned();
        let mut value = || it.next().ok_or(format!("{a} needs a value; {USAGE}"));
        match a.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--config" => config = Some(PathBuf::from(value()?)),
            "--keychain-account" => account = Some(value()?.to_string_lossy().into_owned()),
            "--poll-seconds" => {
                poll_seconds = Some(
                    value()?
                        .to_string_lossy()
                        .parse()
                        .map_err(|_| format!("--poll-seconds needs a number; {USAGE}"))?,
                )
            }
            "--until-idle" => until_idle = true,
            "--push-only" => push_only = true,
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(Args {
        data_dir: data_dir.ok_or(format!(
            "--data-dir is required (the profile folder the app uses); {USAGE}"
        ))?,
        // The app's rule: --config, else HEARTH_CONFIG, else the machine's file (which a
        // user's may not weaken).
        config: config
            .or_else(|| std::env::var_os("HEARTH_CONFIG").map(PathBuf::from))
            .unwrap_or_else(hearth_core::config::machine_path),
        account,
        until_idle,
        push_only,
        poll_seconds,
    })
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("hearth-sync: {message}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => return fail(2, e),
    };
    let machine = hearth_core::config::machine_path();
    let config = match MachineConfig::load_layered(&args.config, Some(&machine)) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    let Some(ehr) = config.ehr.clone() else {
        return fail(
            2,
            format!(
                "{} has no [ehr] section: there is no EHR to sync with",
                args.config.display()
            ),
        );
    };
    // An EHR off this machine without [identity] was refused by the configuration itself.
    let db = profile::database_path(&args.data_dir);
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        return fail(3, format!("cannot create {}: {e}", args.data_dir.display()));
    }
    let account = args
        .account
        .clone()
        .unwrap_or_else(|| profile::database_key_account(&db));
    let store = match Store::open_with_keychain(&db, &Keychain::new(KEYCHAIN_SERVICE, &account)) {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(3, e),
    };
    // The app's rule: a profile opens only under the EHR and sign-on it was made with.
    if let Err(e) = profile::check_binding(&store, &db, &config, &args.config.display().to_string())
    {
        return fail(2, e);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start: {e}")),
    };
    rt.block_on(run(args, config, ehr.fhir_base_url, db, store))
}

async fn run(
    args: Args,
    config: MachineConfig,
    fhir_base: String,
    db: PathBuf,
    store: Arc<Store>,
) -> ExitCode {
    // Sign in as the app does; the rounds then go with this user's token.
    let tokens: Arc<dyn TokenSource> = match hearth_core::signon::SignOn::for_profile(
        &config,
        &db,
        &store,
        Arc::new(hearth_auth::SystemClock),
        None,
    ) {
        Some(signon) => {
            println!("sign in with your organisation's account in the browser");
            match signon.sign_in().await {
                Ok(user) => println!("signed in as {}", user.display_name),
                Err(e) => return fail(4, format!("sign-in failed: {e}")),
            }
            let tokens = signon.tokens();
            // Renewed before it ends, for as long as this runs.
            tokio::spawn(
                tokens
                    .clone()
                    .keep_fresh(std::time::Duration::from_secs(15), |e| {
                        eprintln!(
                            "hearth-sync: the sign-in could not be renewed ({}); run again",
                            e.code()
                        )
                    }),
            );
            tokens
        }
        None => Arc::new(NoToken),
    };
    let retry = RetryPolicy {
        attempts: 2,
        ..RetryPolicy::default()
    };
    let client = match Client::new(&fhir_base, tokens, retry) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    let mut settings = config.sync.clone();
    if let Some(s) = args.poll_seconds {
        settings.poll_interval_seconds = s;
    }
    let engine = Engine::new(
        client,
        store.clone(),
        EngineConfig {
            zone: config.zone(),
            billing: config
                .billing
                .as_ref()
                .map(hearth_core::config::BillingConfig::target),
            ..EngineConfig::from_settings(&settings)
        },
    );
    loop {
        let result = if args.push_only {
            let mut round = hearth_sync::Round::default();
            engine.push(&mut round).await.map(|()| round)
        } else {
            engine.round().await
        };
        match &result {
            Ok(r) => println!(
                "round: stored {} deleted {} sent {} replayed {} conflicts {} failed {} unreadable {} billed {} billing_refused {} billing_retries {}",
                r.stored, r.deleted, r.sent, r.replayed, r.conflicts, r.failed, r.unreadable,
                r.billed, r.billing_refused, r.billing_retries
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
        tokio::time::sleep(std::time::Duration::from_secs(u64::from(
            settings.poll_interval_seconds,
        )))
        .await;
    }
}
