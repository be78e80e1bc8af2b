//! Writes survive killed processes and reach the EHR exactly once. The syncing process is the
//! real `hearth-sync` binary (its EHR from a machine configuration file, its store key under
//! the `--keychain-account` given) in a real Secret Service (GNOME Keyring on a private
//! session bus), killed with SIGKILL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

// The sync tests' kit: a FHIR server with the clinic, an engine between it and a store.
#[path = "../../sync/tests/common/mod.rs"]
mod common;

use common::*;
use hearth_model::settings::PatientScope;
use hearth_store::{Keychain, Store};
use hearth_testkit::{wait_until, FhirServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const CHILD: &str = "HEARTH_SYNC_CRASH_TEST_CHILD";
const NO_POLL: Duration = Duration::from_secs(3600);

struct Profile {
    /// The profile folder (`--data-dir`); the database is `hearth.db` in it.
    dir: PathBuf,
    db: PathBuf,
    account: String,
    /// Every run's stdout (one line per round), appended.
    log: PathBuf,
}

impl Profile {
    fn new(home: &Path) -> Self {
        Self {
            dir: home.to_path_buf(),
            db: home.join("hearth.db"),
            account: format!("test-{}", home.display()),
            log: home.join("rounds.log"),
        }
    }

    fn store(&self) -> Arc<Store> {
        let keychain = Keychain::new(hearth_model::KEYCHAIN_SERVICE, &self.account);
        Arc::new(Store::open_with_keychain(&self.db, &keychain).unwrap())
    }

    fn worker(&self, server: &FhirServer, extra: &[&str]) -> Child {
        // The machine configuration: this EHR (on loopback, no sign-on).
        let config = self.dir.join("config.toml");
        std::fs::write(
            &config,
            format!("[ehr]\nfhir_base_url = \"{}\"\n", server.base_url),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_hearth-sync"))
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(&config)
            .args(["--keychain-account", &self.account])
            .args(["--poll-seconds", "1"])
            .args(extra)
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs the sync process until its outbox is empty; panics if it fails.
    fn sync_until_idle(&self, server: &FhirServer, extra: &[&str]) {
        let mut args = vec!["--until-idle"];
        args.extend_from_slice(extra);
        let out = finish_within(
            self.worker(server, &args),
            Duration::from_secs(120),
            "hearth-sync --until-idle",
        );
        assert!(
            out.status.success(),
            "hearth-sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Waits for `child` to end and collects its output; past `limit` it is killed and the test
/// fails naming `what` (a hung process must not hang the suite).
fn finish_within(child: Child, limit: Duration, what: &str) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// How many versions of a resource carry the `meta.source` of write `key`.
fn versions_from_write(server: &FhirServer, ty: &str, id: &str, key: &str) -> usize {
    let history: Value =
        serde_json::from_str(&server.get_json(&format!("/fhir/{ty}/{id}/_history?_count=1000")))
            .unwrap();
    let source = format!("urn:uuid:{key}");
    history["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["resource"]["meta"]["source"] == source.as_str())
        .count()
}

/// How many resources of a type the write `key` created.
fn created_by_write(server: &FhirServer, ty: &str, key: &str) -> u64 {
    let found: Value = serde_json::from_str(&server.get_json(&format!(
        "/fhir/{ty}?identifier=urn:hearth:write%7C{key}&_count=10"
    )))
    .unwrap();
    found["total"].as_u64().unwrap()
}

#[test]
fn an_offline_change_survives_a_killed_process_and_lands_exactly_once() {
    let name = "an_offline_change_survives_a_killed_process_and_lands_exactly_once";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return;
    };
    let Some((mut server, clinic)) = server_with_clinic(name) else {
        return;
    };
    let profile = Profile::new(&home);
    profile.sync_until_idle(&server, &[]);

    // The EHR is down; the nurse marks a patient arrived: saved and queued on this machine.
    server.stop();
    let appt = &clinic.appointments[0];
    let key = {
        let store = profile.store();
        let engine = engine(&server.base_url, &store, PatientScope::Schedule, NO_POLL);
        engine
            .handle()
            .set_appointment_status(appt, "arrived", "Practitioner/nurse")
            .unwrap()
            .key
    };
    // The syncing process tries, fails, and is killed.
    let mut worker = profile.worker(&server, &["--until-idle"]);
    let store = profile.store();
    wait_until(Duration::from_secs(30), "a failed attempt to send", || {
        store.pending().unwrap()[0].attempts >= 1
    });
    kill9(&mut worker);
    assert_eq!(
        store.pending().unwrap().len(),
        1,
        "the queued change was lost"
    );

    // The EHR is back; the process starts again: the change lands, once.
    server.resume();
    profile.sync_until_idle(&server, &[]);
    assert!(store.pending().unwrap().is_empty());
    assert_eq!(
        server_resource(&server, "Appointment", appt)["status"],
        "arrived"
    );
    assert_eq!(versions_from_write(&server, "Appointment", appt, &key), 1);
}

#[test]
fn killing_the_sync_process_at_random_points_loses_and_duplicates_nothing() {
    let name = "killing_the_sync_process_at_random_points_loses_and_duplicates_nothing";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return;
    };
    let Some((server, clinic)) = server_with_clinic(name) else {
        return;
    };
    let profile = Profile::new(&home);
    profile.sync_until_idle(&server, &[]);
    let store = profile.store();
    let engine = engine(&server.base_url, &store, PatientScope::Schedule, NO_POLL);
    let handle = engine.handle();

    // Seeded, so a failure can be replayed: HEARTH_CRASH_SEED=<n>.
    let seed = std::env::var("HEARTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_126_u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut creates, mut updates) = (Vec::new(), Vec::new());
    // How long one run takes to send one write here and now (a loaded machine is slower):
    // the kill points spread over that, so they land at every stage of it.
    let life_ms = {
        let note = json!({"resourceType": "Communication", "status": "completed",
            "subject": {"reference": format!("Patient/{}", clinic.patients[0])},
            "payload": [{"contentString": "crash-test timing message"}]});
        creates.push(handle.queue_create(note, "Practitioner/nurse").unwrap().key);
        let t = std::time::Instant::now();
        profile.sync_until_idle(&server, &["--push-only"]);
        u64::try_from(t.elapsed().as_millis())
            .unwrap()
            .clamp(120, 2_000)
    };
    let (mut kills, mut runs) = (0, 0);
    while kills < 200 {
        // Each round queues new work, so every kill can land mid-sync.
        let note = json!({"resourceType": "Communication", "status": "completed",
            "subject": {"reference": format!("Patient/{}", clinic.patients[runs % 6])},
            "payload": [{"contentString": format!("crash-test message {runs}")}]});
        creates.push(handle.queue_create(note, "Practitioner/nurse").unwrap().key);
        if runs % 4 == 0 {
            let appt = &clinic.appointments[runs % clinic.appointments.len()];
            let status = ["arrived", "checked-in", "booked"][runs % 3];
            let key = handle
                .set_appointment_status(appt, status, "Practitioner/nurse")
                .unwrap()
                .key;
            updates.push((appt.clone(), key));
        }
        runs += 1;
        let mut worker = profile.worker(&server, &["--until-idle", "--push-only"]);
        // A random point in the process's life: starting, opening the store, mid-request,
        // between the server's answer and the local record of it.
        std::thread::sleep(Duration::from_millis(rng.u64(0..life_ms)));
        if let Ok(None) = worker.try_wait() {
            kills += 1;
        }
        kill9(&mut worker);
    }
    profile.sync_until_idle(&server, &["--push-only"]);
    // Writes whose answer a kill lost, found applied when sent again.
    let replayed: usize = std::fs::read_to_string(&profile.log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split(" replayed ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    eprintln!(
        "crash test (seed {seed}, a run lives ~{life_ms} ms): {runs} runs, {kills} killed mid-run, {} creates, {} updates, \
         {replayed} replays of writes already applied",
        creates.len(),
        updates.len()
    );
    assert!(
        replayed > 0,
        "no kill landed between a write and its local record"
    );

    assert!(store.pending().unwrap().is_empty(), "writes left unsent");
    assert!(
        store.conflicts().unwrap().is_empty(),
        "a replay was taken for a conflict"
    );
    let lost_or_duplicated: Vec<_> = creates
        .iter()
        .map(|k| (k, created_by_write(&server, "Communication", k)))
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(
        lost_or_duplicated.is_empty(),
        "creates not made exactly once: {lost_or_duplicated:?}"
    );
    let bad_updates: Vec<_> = updates
        .iter()
        .map(|(id, k)| (k, versions_from_write(&server, "Appointment", id, k)))
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(
        bad_updates.is_empty(),
        "updates not applied exactly once: {bad_updates:?}"
    );
    store.verify_audit().unwrap();
}

/// Every record a profile's store holds, with its version, by `Type/id`.
fn held(store: &Store) -> std::collections::BTreeMap<String, Option<String>> {
    let mut all = std::collections::BTreeMap::new();
    for ty in store.resource_types().unwrap() {
        for (id, version) in store.versions_of_type(&ty, None, usize::MAX).unwrap() {
            all.insert(format!("{ty}/{id}"), version);
        }
    }
    all
}

/// Runs the sync process and SIGKILLs it at a random point (or lets it finish, if it does
/// first); returns whether the kill landed while it ran.
fn run_and_kill(
    profile: &Profile,
    server: &FhirServer,
    rng: &mut fastrand::Rng,
    max_ms: u64,
) -> bool {
    let mut worker = profile.worker(server, &["--until-idle"]);
    let kill_at = std::time::Instant::now() + Duration::from_millis(rng.u64(20..max_ms));
    // The random point in the process's life is the test's input, not a wait for a result.
    while std::time::Instant::now() < kill_at {
        if let Ok(Some(_)) = worker.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let landed = matches!(worker.try_wait(), Ok(None));
    kill9(&mut worker);
    landed
}

#[test]
fn killing_the_sync_process_during_initial_sync_and_pulls_loses_nothing() {
    let name = "killing_the_sync_process_during_initial_sync_and_pulls_loses_nothing";
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return;
    };
    let Some((server, clinic)) = server_with_clinic(name) else {
        return;
    };
    let seed = std::env::var("HEARTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_201_u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    for dir in ["killed", "reference"] {
        std::fs::create_dir_all(home.join(dir)).unwrap();
    }
    let killed = Profile::new(&home.join("killed"));
    let reference = Profile::new(&home.join("reference"));

    // A profile never killed syncs first; how long it takes bounds the kill points.
    let timed = |profile: &Profile| {
        let t = std::time::Instant::now();
        profile.sync_until_idle(&server, &[]);
        u64::try_from(t.elapsed().as_millis()).unwrap().max(50)
    };
    let initial_ms = timed(&reference);
    // The initial sync, killed again and again at random points; then left to finish.
    let mut initial_kills = 0;
    for _ in 0..12 {
        initial_kills += usize::from(run_and_kill(&killed, &server, &mut rng, initial_ms));
    }
    killed.sync_until_idle(&server, &[]);

    // Changes at the EHR, pulled by runs killed at random points; then left to finish.
    let mut changed = Vec::new();
    for (i, appt) in clinic.appointments.iter().enumerate().take(6) {
        let v = update_at_server(&server, "Appointment", appt, |a| {
            a["comment"] = Value::String(format!("moved {i}"));
        });
        changed.push((format!("Appointment/{appt}"), v));
    }
    for p in clinic.patients.iter().take(3) {
        let v = update_at_server(&server, "Patient", p, |r| {
            r["language"] = Value::String("en-US".into());
        });
        changed.push((format!("Patient/{p}"), v));
    }
    let pull_ms = timed(&reference);
    let mut pull_kills = 0;
    for _ in 0..8 {
        pull_kills += usize::from(run_and_kill(&killed, &server, &mut rng, pull_ms));
    }
    killed.sync_until_idle(&server, &[]);
    eprintln!(
        "crash test (seed {seed}): {initial_kills} kills during the initial sync, {pull_kills} during pulls"
    );
    assert!(initial_kills > 0, "no kill landed during the initial sync");
    assert!(pull_kills > 0, "no kill landed during a pull");

    // Every change at the EHR arrived, at the version the EHR holds.
    let store = killed.store();
    let mine = held(&store);
    for (record, version) in &changed {
        assert_eq!(
            mine.get(record),
            Some(&Some(version.clone())),
            "{record} is not at the EHR's version"
        );
    }
    // And the killed profile holds exactly what a profile never killed holds.
    let theirs = held(&reference.store());
    assert_eq!(mine.len(), theirs.len());
    let differ: Vec<_> = theirs
        .iter()
        .filter(|(k, v)| mine.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .take(10)
        .collect();
    assert!(
        differ.is_empty(),
        "the killed profile differs at {differ:?}"
    );
    store.verify_audit().unwrap();
}

const MAKER: &str = "HEARTH_SYNC_CRASH_TEST_MAKER";

/// The process that makes changes (the app, in life): it queues a nurse's status changes and
/// new notes one after another and, after each call has returned, appends its key to
/// `acked.log`: what the user was told is saved. It makes eight and stops.
fn make_changes_until_killed(home: &Path, patient: &str, appt: &str) {
    let profile = Profile::new(home);
    let store = profile.store();
    let engine = engine(
        "http://127.0.0.1:9/fhir",
        &store,
        PatientScope::Schedule,
        NO_POLL,
    );
    let handle = engine.handle();
    let mut acked = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("acked.log"))
        .unwrap();
    for i in 0..8_usize {
        let key = if i % 2 == 0 {
            let status = ["arrived", "checked-in", "booked"][(i / 2) % 3];
            handle
                .set_appointment_status(appt, status, "Practitioner/nurse")
                .unwrap()
                .key
        } else {
            let note = json!({"resourceType": "Communication", "status": "completed",
                "subject": {"reference": format!("Patient/{patient}")},
                "payload": [{"contentString": format!("maker message {i}")}]});
            handle.queue_create(note, "Practitioner/nurse").unwrap().key
        };
        std::io::Write::write_all(&mut acked, format!("{key}\n").as_bytes()).unwrap();
    }
}

#[test]
fn killing_the_process_that_queues_changes_leaves_each_change_whole_and_sent_once() {
    let name = "killing_the_process_that_queues_changes_leaves_each_change_whole_and_sent_once";
    if let Some(home) = std::env::var_os(MAKER) {
        let home = PathBuf::from(home);
        let ids = std::fs::read_to_string(home.join("maker.ids")).unwrap();
        let (patient, appt) = ids.trim().split_once(' ').unwrap();
        make_changes_until_killed(&home, patient, appt);
        return;
    }
    let Some(home) = hearth_testkit::isolated(CHILD, name, true) else {
        return;
    };
    let Some((server, clinic)) = server_with_clinic(name) else {
        return;
    };
    let profile = Profile::new(&home);
    profile.sync_until_idle(&server, &[]);
    let appt = clinic.appointments[0].clone();
    std::fs::write(
        home.join("maker.ids"),
        format!("{} {appt}", clinic.patients[0]),
    )
    .unwrap();
    let seed = std::env::var("HEARTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_202_u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    let maker = || {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads", "1"])
            .env(MAKER, &home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // One maker's whole life, here and now, bounds the kill points.
    let t = std::time::Instant::now();
    assert!(
        finish_within(maker(), Duration::from_secs(120), "a maker's whole life")
            .status
            .success()
    );
    let life_ms = u64::try_from(t.elapsed().as_millis()).unwrap().max(20);
    let mut kills = 0;
    for _ in 0..30 {
        let mut maker = maker();
        // A random point in the maker's life: starting, opening the store, mid-transaction.
        std::thread::sleep(Duration::from_millis(rng.u64(0..life_ms)));
        kills += usize::from(matches!(maker.try_wait(), Ok(None)));
        kill9(&mut maker);
    }
    let acked: Vec<String> = std::fs::read_to_string(home.join("acked.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let store = profile.store();
    let pending = store.pending().unwrap();
    let queued: std::collections::HashSet<&str> = pending
        .iter()
        .map(|e| e.write.idempotency_key.as_str())
        .collect();
    eprintln!(
        "crash test (seed {seed}, a maker lives ~{life_ms} ms): {kills} makers killed, {} changes acknowledged, {} queued",
        acked.len(),
        queued.len()
    );
    assert!(kills > 10, "few kills landed while a maker ran ({kills})");
    // Every change the user was told is saved is queued; nothing is half-written: the local
    // copy shows the newest queued status, and the audit chain is whole.
    let lost: Vec<_> = acked
        .iter()
        .filter(|k| !queued.contains(k.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged changes lost: {lost:?}");
    let newest: Value = serde_json::from_str(
        pending
            .iter()
            .rev()
            .find(|e| e.write.resource_id.as_deref() == Some(appt.as_str()))
            .unwrap()
            .write
            .body
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        local(&store, "Appointment", &appt).unwrap()["status"],
        newest["status"]
    );
    store.verify_audit().unwrap();
    // Sent: each exactly once.
    profile.sync_until_idle(&server, &["--push-only"]);
    for e in &pending {
        let key = &e.write.idempotency_key;
        let n = match &e.write.resource_id {
            Some(id) => versions_from_write(&server, "Appointment", id, key) as u64,
            None => created_by_write(&server, "Communication", key),
        };
        assert_eq!(n, 1, "write {key} landed {n} times");
    }
}
