//! `hearth-sync` against a SMART EHR (the real FHIR server behind a gateway that admits only
//! requests whose bearer token the real identity provider calls active), on a profile the app
//! made, in a private session bus with a real GNOME Keyring: it reads the app's machine
//! configuration, opens the app's database with the key the app stored, signs in through the
//! configured browser command (played here by a scripted browser), and syncs with that
//! user's token.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use hearth_core::clock::SystemClock;
use hearth_core::launch::LaunchOptions;
use hearth_core::Workstation;
use hearth_store::{Keychain, Store};
use hearth_testkit::smart::{browser_login, SmartEhr, USER_DISPLAY, USER_FHIR, USER_PASSWORD};
use hearth_testkit::{isolated, wait_until, KillOnDrop};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const ISOLATED: &str = "HEARTH_SYNC_CLI_SIGNON_HOME";

#[test]
fn hearth_sync_signs_in_and_syncs_the_apps_profile_with_the_users_token() {
    let name = "hearth_sync_signs_in_and_syncs_the_apps_profile_with_the_users_token";
    let Some(home) = isolated(ISOLATED, name, true) else {
        return;
    };
    let Some((ehr, clinic)) = SmartEhr::with_clinic(name) else {
        return;
    };
    let url_file = home.join("sign-in-url.txt");
    let config = home.join("config.toml");
    // The "browser" is a command that writes the URL down; the test plays the browser.
    std::fs::write(&config, ehr.machine_config(&url_file, "")).unwrap();
    let data_dir = home.join("profile");

    // The app opens the profile first: it makes the database and stores its key.
    {
        let options = LaunchOptions {
            data_dir: Some(data_dir.clone()),
            config_path: config.clone(),
            ..LaunchOptions::default()
        };
        let ws = Workstation::start(&options, Arc::new(SystemClock));
        assert!(
            ws.ehr_link().is_some(),
            "the app did not open its EHR store"
        );
    }

    // hearth-sync on the same profile and configuration, no keychain account given.
    let mut sync = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hearth-sync"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config)
            .arg("--until-idle")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // It opens the browser at the provider; the user signs in there.
    wait_until(
        Duration::from_secs(60),
        "hearth-sync to open the browser",
        || url_file.exists() || matches!(sync.0.try_wait(), Ok(Some(_))),
    );
    if !url_file.exists() {
        let mut err = String::new();
        use std::io::Read;
        let _ = sync.0.stderr.take().unwrap().read_to_string(&mut err);
        panic!("hearth-sync ended without opening the browser: {err}");
    }
    let url = std::fs::read_to_string(&url_file).unwrap();
    let redirect = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .unwrap()
        .1
        .into_owned();
    assert!(
        redirect.starts_with("http://127.0.0.1:"),
        "not a loopback redirect: {redirect}"
    );
    browser_login(
        &url,
        &redirect,
        hearth_testkit::smart::USER_NAME,
        USER_PASSWORD,
    )
    .unwrap();
    wait_until(
        Duration::from_secs(180),
        "hearth-sync to sync until idle",
        || matches!(sync.0.try_wait(), Ok(Some(_))),
    );
    let status = sync.0.wait().unwrap();
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    sync.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    sync.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "hearth-sync failed: {out}\n{err}");
    assert!(
        out.contains(&format!("signed in as {USER_DISPLAY}")),
        "{out}"
    );
    assert!(!out.contains("round failed"), "{out}");

    // The database the app made, under the account the app keeps its key at: the
    // appointments are there at the EHR's versions. The gateway admits no request without
    // an active token, so each came with the user's.
    let db = data_dir.join("hearth.db");
    let keychain = Keychain::new(
        hearth_core::KEYCHAIN_SERVICE,
        &format!("database-key:{}", db.display()),
    );
    let store = Store::open_with_keychain(&db, &keychain).unwrap();
    let held: std::collections::BTreeMap<String, Option<String>> = store
        .versions_of_type("Appointment", None, usize::MAX)
        .unwrap()
        .into_iter()
        .collect();
    let server = ehr.fhir.as_ref().unwrap();
    assert!(!clinic.appointments.is_empty());
    for id in &clinic.appointments {
        let at_server: Value =
            serde_json::from_str(&server.get_json(&format!("/fhir/Appointment/{id}"))).unwrap();
        assert_eq!(
            held.get(id),
            Some(&at_server["meta"]["versionId"].as_str().map(str::to_string)),
            "Appointment/{id} is not held at the EHR's version"
        );
    }
    // The sign-in is the app's: audited in the profile's log, the refresh token in the
    // keychain under the profile's account.
    let audit = store.audit_entries(50).unwrap();
    assert!(
        audit
            .iter()
            .any(|(actor, action, _)| actor == USER_FHIR && action == "sign-in"),
        "no sign-in by {USER_FHIR} in the audit log: {audit:?}"
    );
    let vault = hearth_auth::Vault::new(
        hearth_core::KEYCHAIN_SERVICE,
        &format!("refresh-token:{}", db.display()),
    );
    assert!(
        vault.load().unwrap().is_some(),
        "no refresh token in the keychain"
    );
}

/// Runs hearth-sync with this configuration text on a fresh profile; (exit code, stderr).
fn run_with_config(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth-sync"))
        .arg("--data-dir")
        .arg(dir.path().join("profile"))
        .arg("--config")
        .arg(&config)
        .arg("--until-idle")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hearth_sync_sends_no_token_only_to_an_ehr_on_this_machine() {
    // An EHR across the network without [identity]: refused before anything is opened (by
    // the machine configuration's own rule, as the app refuses it).
    let (code, err) = run_with_config("[ehr]\nfhir_base_url = \"https://ehr.example.org/fhir\"\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("section `[ehr]` needs an `[identity]` section"),
        "{err}"
    );
    // No EHR configured (the app would show demo data): nothing to sync.
    let (code, err) = run_with_config("[demo]\nseed = 7\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no [ehr] section"), "{err}");
}
