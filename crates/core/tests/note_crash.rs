//! Signing visit notes survives a killed app: the process that signs (the real Workstation
//! over its encrypted profile, in a real Secret Service: GNOME Keyring on a private session
//! bus) and syncs (a sync engine attached, its rounds pushing the outbox to the FHIR server
//! and sending the charges over MLLP to the strict billing peer) is SIGKILLed at random
//! points, hundreds of times, across sign → push → send → ACK, then left to finish. Each
//! visit then has, at the EHR, one note, one finished Encounter and one ChargeItem per service
//! line, and at billing one accepted control id whose every delivery is the same bytes.
//!
//! The killed process is this test binary run again as a child (`HEARTH_NOTE_CRASH_CHILD`);
//! it prints its progress, one line a step, which the parent reads to aim some kills and to
//! tell where each landed. Seeded: `HEARTH_CRASH_SEED=<n>` replays a run's kill points.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

use hearth_core::clock::SystemClock;
use hearth_core::launch::LaunchOptions;
use hearth_core::Workstation;
use hearth_ipc::{
    ChargeState, NoteDelivery, NoteDiagnosis, NoteDraft, NoteRequest, NoteSections, NoteState,
    SaveNoteRequest, ServiceCodeSystem, ServiceLine, SignNoteRequest,
};
use hearth_sync::Engine;
use hearth_testkit::billing::{BillingPeer, Received};
use hearth_testkit::FhirServer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAME: &str = "signed_notes_reach_the_ehr_and_billing_exactly_once_through_random_sigkills";
const ISOLATED: &str = "HEARTH_NOTE_CRASH_HOME";
/// Set in the child: what it does (`prepare` or `work`).
const CHILD: &str = "HEARTH_NOTE_CRASH_CHILD";
/// The prefix of the child's progress lines (libtest prints its own lines too).
const TAG: &str = "note-crash:";
/// Kills that must land while work remained.
const KILLS: usize = 200;
/// How long the child may take to finish the work left, unkilled.
const FINISH: Duration = Duration::from_secs(180);
/// Days of visits: 20 patients a day, 100 visits. The app, killed this way, signs and sends
/// about one visit in two runs: fewer visits and they would all be done before 200 kills.
const DAYS: u64 = 5;

/// A small seeded generator (SplitMix64): the kill points, the slow acknowledgements.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        hearth_testkit::impair::splitmix64(&mut self.0)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One visit the child signs: the test's own input, and what the peers are held against.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Planned {
    appointment: String,
    patient: String,
    /// RFC 3339.
    start: String,
    virtual_visit: bool,
    draft: NoteDraft,
}

fn options(home: &Path) -> LaunchOptions {
    LaunchOptions {
        data_dir: Some(home.join("profile")),
        config_path: home.join("config.toml"),
        ..LaunchOptions::default()
    }
}

fn plan_of(home: &Path) -> Vec<Planned> {
    serde_json::from_str(&std::fs::read_to_string(home.join("plan.json")).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------
// The child: the app signing notes, with its sync engine.

fn say(line: &str) {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t0 = *T0.get_or_init(Instant::now);
    println!("{TAG} {line} @{}", t0.elapsed().as_millis());
}

fn run_child(home: &Path, mode: &str) {
    let plan = plan_of(home);
    say("start");
    let ws = Workstation::start(&options(home), Arc::new(SystemClock));
    let link = ws.ehr_link().expect("the configuration names an EHR");
    let store = link.store.clone();
    let engine = Engine::for_workstation(&link, ws.token_source()).unwrap();
    ws.attach_sync(Arc::new(engine.handle()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    say("opened");
    if mode == "prepare" {
        // The initial sync and a first full comparison with the EHR, so that the killed
        // runs' rounds are the short ones of a day's work.
        rt.block_on(engine.round()).unwrap();
        rt.block_on(engine.reconcile(&mut hearth_sync::Round::default()))
            .unwrap();
        rt.block_on(engine.round()).unwrap();
        for v in &plan {
            let view = ws
                .note_open(&NoteRequest {
                    appointment_id: v.appointment.clone(),
                })
                .unwrap();
            assert_eq!(view.state, NoteState::Draft, "{}", v.appointment);
            assert!(view.billing_configured);
            assert_eq!(view.patient_id, v.patient);
        }
        say("prepared");
        return;
    }
    let deadline = Instant::now() + FINISH;
    // Rounds until nothing is queued: no write for the EHR, no charge for billing.
    let drain = |visit: usize| {
        let mut n = 0;
        loop {
            let pending = store.pending().unwrap().len();
            let (charges, _) = store.charges_waiting().unwrap();
            if pending == 0 && charges == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still {pending} writes and {charges} charges queued after {FINISH:?}"
            );
            say(&format!("round {visit}.{n} begin"));
            let did = match rt.block_on(engine.round()) {
                Ok(r) => {
                    say(&format!(
                        "round {visit}.{n} end sent={} replayed={} billed={} refused={} \
                         retries={} failed={} conflicts={}",
                        r.sent,
                        r.replayed,
                        r.billed,
                        r.billing_refused,
                        r.billing_retries,
                        r.failed,
                        r.conflicts
                    ));
                    r.sent + r.billed + r.billing_refused + r.failed + r.conflicts > 0
                }
                Err(e) => {
                    say(&format!("round {visit}.{n} error {}", e.for_people()));
                    false
                }
            };
            if !did {
                // A charge waits for its next attempt (billing did not answer): polled.
                std::thread::sleep(Duration::from_millis(50));
            }
            n += 1;
        }
        say(&format!("idle {visit}"));
    };
    // What an earlier, killed run left queued goes first; then the notes not signed yet.
    drain(usize::MAX);
    let todo: Vec<(usize, &Planned)> = plan
        .iter()
        .enumerate()
        .filter(|(_, v)| store.note_versions(&v.appointment).unwrap().is_empty())
        .collect();
    say(&format!("todo {}", todo.len()));
    for (i, v) in todo {
        let request = NoteRequest {
            appointment_id: v.appointment.clone(),
        };
        match ws.note_open(&request).unwrap().state {
            NoteState::Draft => {
                say(&format!("saving {i}"));
                ws.note_save(&SaveNoteRequest {
                    draft: v.draft.clone(),
                })
                .unwrap();
                say(&format!("signing {i}"));
                ws.note_sign(&SignNoteRequest {
                    draft: v.draft.clone(),
                    attest: true,
                })
                .unwrap();
                say(&format!("signed {i}"));
            }
            state => panic!("visit {i}: {state:?}, not a draft"),
        }
        drain(i);
    }
    let failed = store.outbox_failed().unwrap();
    assert!(
        failed.is_empty(),
        "writes the EHR refused: {:?}",
        failed
            .iter()
            .map(|e| (&e.write.resource_type, &e.last_error))
            .collect::<Vec<_>>()
    );
    assert!(store.conflicts().unwrap().is_empty(), "conflicts");
    // Everything closed before the process exits (its threads, then the store).
    drop(rt);
    drop(engine);
    drop(ws);
    drop(store);
    say("all-done");
}

// ---------------------------------------------------------------------------------------
// The parent: the peers, the kills, the checks.

/// An MLLP hop in front of the billing peer that holds the peer's answers back on two
/// connections in three (20–270 ms, seeded): a slow billing system, whose acknowledgement is
/// still on its way when the kill lands. Answers `host:port`.
fn slow_acks(peer: String, seed: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut rng = Rng(seed);
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let delay = match rng.below(3) {
                0 => Duration::ZERO,
                _ => Duration::from_millis(20 + rng.below(250)),
            };
            // The peer unreachable: the client's connection closes unanswered.
            let Ok(upstream) = TcpStream::connect(&peer) else {
                continue;
            };
            let (Ok(mut client_in), Ok(mut upstream_out)) =
                (client.try_clone(), upstream.try_clone())
            else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_in, &mut upstream_out);
                let _ = upstream_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut upstream_in, mut client_out) = (upstream, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match upstream_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            // The slow billing system's answer: held back, not waited for.
                            std::thread::sleep(delay);
                            if client_out.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = client_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// The clinic's next days: every one of the 20 patients seen once a day, today and the next
/// four days (the seeded clinic has six of today's), half of the visits virtual. The sync
/// engine's schedule window (a week ahead) holds them all.
fn add_visits(server: &FhirServer, patients: &[String], practitioner: &str) {
    let today = chrono::Utc::now().date_naive();
    let mut entries = Vec::new();
    for day in 0..DAYS {
        let date = today + chrono::Days::new(day);
        for (p, patient) in patients.iter().enumerate() {
            if day == 0 && p < 6 {
                continue;
            }
            let kind = if (p + day as usize) % 2 == 1 {
                "448337001"
            } else {
                "185389009"
            };
            let hour = 7 + p % 12;
            let minute = if p < 12 { "00" } else { "30" };
            entries.push(json!({
                "resource": {"resourceType": "Appointment", "status": "booked",
                    "appointmentType": {"coding": [{"system": "http://snomed.info/sct", "code": kind}]},
                    "start": format!("{date}T{hour:02}:{minute}:00Z"),
                    "end": format!("{date}T{hour:02}:{minute}:00Z").replace(":00:00Z", ":20:00Z").replace(":30:00Z", ":50:00Z"),
                    "participant": [
                        {"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"},
                        {"actor": {"reference": format!("Practitioner/{practitioner}")}, "status": "accepted"}
                    ]},
                "request": {"method": "POST", "url": "Appointment"}
            }));
        }
    }
    server.post_bundle(
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}).to_string(),
    );
}

/// Every resource a search finds, its pages followed.
fn search(server: &FhirServer, query: &str) -> Vec<Value> {
    let mut found = Vec::new();
    let mut next = Some(query.to_string());
    while let Some(path) = next.take() {
        let bundle: Value = serde_json::from_str(&server.get_json(&path)).unwrap();
        found.extend(
            bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"] != "include")
                .map(|e| e["resource"].clone()),
        );
        next = bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(|u| {
                let at = u.find("/fhir").expect("a next link under /fhir");
                u[at..].to_string()
            });
    }
    found
}

fn refers_to(v: &Value, target: &str) -> bool {
    v["reference"]
        .as_str()
        .is_some_and(|r| r == target || r.ends_with(&format!("/{target}")))
}

/// The visits, as the EHR holds them (by start), each with the note the child writes: 1–3
/// service lines, 1–2 diagnoses, deterministic text.
fn plan(server: &FhirServer) -> Vec<Planned> {
    let mut appointments = search(server, "/fhir/Appointment?_count=500");
    appointments.sort_by(|a, b| a["start"].as_str().cmp(&b["start"].as_str()));
    let diagnoses = [
        ("J06.9", "Acute upper respiratory infection, unspecified"),
        ("I10", "Essential (primary) hypertension"),
        ("E11.9", "Type 2 diabetes mellitus without complications"),
        ("M54.50", "Low back pain, unspecified"),
        ("R05.9", "Cough, unspecified"),
        ("E78.5", "Hyperlipidemia, unspecified"),
        ("F41.1", "Generalized anxiety disorder"),
    ];
    let in_person = [
        ("99213", ServiceCodeSystem::Cpt),
        ("36415", ServiceCodeSystem::Cpt),
        ("93000", ServiceCodeSystem::Cpt),
        ("99214", ServiceCodeSystem::Cpt),
        ("90471", ServiceCodeSystem::Cpt),
    ];
    let virtual_lines = [
        ("99213", ServiceCodeSystem::Cpt),
        ("G2012", ServiceCodeSystem::Hcpcs),
        ("99214", ServiceCodeSystem::Cpt),
        ("99442", ServiceCodeSystem::Cpt),
    ];
    appointments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let patient = a["participant"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["actor"]["reference"].as_str())
                .find_map(|r| r.strip_prefix("Patient/"))
                .unwrap()
                .to_string();
            let virtual_visit = a["appointmentType"]["coding"][0]["code"] == "448337001";
            let pool: &[(&str, ServiceCodeSystem)] = if virtual_visit {
                &virtual_lines
            } else {
                &in_person
            };
            let lines = (0..1 + i % 3)
                .map(|k| {
                    let (code, system) = pool[(i + k) % pool.len()];
                    ServiceLine {
                        code: code.into(),
                        system,
                        description: (k == 0).then(|| format!("Service {code}")),
                        modifiers: Vec::new(),
                        units: u32::try_from(1 + (i + k) % 2).unwrap(),
                    }
                })
                .collect();
            let diagnoses = (0..1 + (i / 2) % 2)
                .map(|k| {
                    let (code, description) = diagnoses[(i + 3 * k) % diagnoses.len()];
                    NoteDiagnosis {
                        code: code.into(),
                        description: Some(description.into()),
                    }
                })
                .collect();
            Planned {
                appointment: a["id"].as_str().unwrap().to_string(),
                patient,
                start: a["start"].as_str().unwrap().to_string(),
                virtual_visit,
                draft: NoteDraft {
                    appointment_id: a["id"].as_str().unwrap().to_string(),
                    sections: NoteSections {
                        subjective: format!(
                            "Visit {i}: follow-up; feels better since the last visit."
                        ),
                        objective: format!("Visit {i}: afebrile, lungs clear, BP 12{i}/8{i}."),
                        assessment: format!("Visit {i}: improving."),
                        plan: format!("Visit {i}: continue; return in {} weeks.", 2 + i),
                    },
                    diagnoses,
                    lines,
                    patient_at_home: i % 4 != 1,
                    revision: 1,
                },
            }
        })
        .collect()
}

/// One run of the child: the process, and its progress lines as they come (each with the
/// moment it was read), also appended to `child.log`.
struct Run {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    started: Instant,
}

fn spawn(home: &Path, mode: &str, run: usize) -> Run {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("child.err"))
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD, mode)
        // The built-in diagnosis list, not CMS's 75k-code table: loading that (about 1.4 s in
        // a debug build) would be where most kills land, and this test is about what follows.
        .env_remove("HEARTH_ICD10CM_FILE")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let log = home.join("child.log");
    std::thread::spawn(move || {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The first is on the line libtest began with its test's name.
            let Some((_, progress)) = line.split_once(TAG) else {
                continue;
            };
            let progress = progress.trim();
            let _ = writeln!(log, "run {run}: {progress}");
            // The child's clock (` @<ms since it started>`) is for the log only.
            let text = progress.rsplit_once(" @").map_or(progress, |(t, _)| t);
            let _ = tx.send((Instant::now(), text.to_string()));
        }
    });
    Run {
        child,
        lines,
        started,
    }
}

impl Run {
    /// Every line the run printed until its stdout closed (it ended or was killed).
    fn rest(&self, mut seen: Vec<String>) -> Vec<String> {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok((_, l)) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => return seen,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the child's stdout stayed open 10 s after it ended")
                }
            }
        }
    }

    /// Waits for the run to end (bounded: past `limit` it is killed and the test fails with
    /// the child's log); its progress lines.
    fn finish(mut self, limit: Duration, home: &Path, what: &str) -> Vec<String> {
        let deadline = self.started + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, l)) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "{what} did not finish within {limit:?}:\n{}",
                        tail(home, &seen)
                    );
                }
            }
        }
        // Its stdout closed: it ended (or is ending); the exit is bounded by the same limit.
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline + Duration::from_secs(10),
                "{what} closed its stdout but did not exit"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            status.success(),
            "{what} failed ({status}):\n{}",
            tail(home, &seen)
        );
        seen
    }
}

/// The last lines of a run and of the children's stderr, for a failure's message.
fn tail(home: &Path, lines: &[String]) -> String {
    let err = std::fs::read_to_string(home.join("child.err")).unwrap_or_default();
    let err: Vec<&str> = err.lines().rev().take(40).collect();
    format!(
        "progress: {:?}\nstderr (last lines, newest first):\n{}",
        &lines[lines.len().saturating_sub(20)..],
        err.join("\n")
    )
}

/// Where a kill landed: after the last progress line the run printed before it died (and,
/// inside a round, how far into it; `None`: the line was read only after the kill).
fn stage(last: Option<&String>, into: Option<Duration>) -> &'static str {
    let Some(l) = last else {
        return "starting (before the workstation opened)";
    };
    let word = |w: &str| l.split(' ').nth(2) == Some(w);
    match l.split(' ').next().unwrap_or_default() {
        "start" => "opening the profile (store, keychain, engine)",
        "opened" | "idle" | "todo" => "between steps (checking the queue, opening a note)",
        "saving" => "saving the draft",
        "signing" => "signing (the sign transaction)",
        "signed" => "just signed, before the round",
        "round" if word("begin") => match into.map(|d| d.as_millis()) {
            None | Some(0..50) => "round, first 50 ms (first writes to the EHR, charge sent)",
            Some(50..150) => "round, 50-150 ms (writes to the EHR, waiting for billing's ACK)",
            Some(150..400) => "round, 150-400 ms (the rest of the push, the slowest ACKs)",
            Some(_) => "round, after 400 ms (pull, audit)",
        },
        "round" => "just after a round",
        _ => "other",
    }
}

/// Whether a message's PID-3 names the patient (the peer's reading of it).
fn names_patient(r: &Received, patient: &str) -> bool {
    (1..=4).any(|rep| r.value("PID", 1, 3, rep, 1, 1).as_deref() == Some(patient))
}

/// A message's visit start (PV1-44, as the peer read it).
fn visit_start(r: &Received) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let ts = r.value("PV1", 1, 44, 1, 1, 1)?;
    chrono::DateTime::parse_from_str(&ts, "%Y%m%d%H%M%S%z").ok()
}

/// The `urn:hearth:write` identifier a resource was created under.
fn hearth_identifier(resource: &Value) -> Option<&str> {
    resource["identifier"]
        .as_array()?
        .iter()
        .find(|x| x["system"] == "urn:hearth:write")?["value"]
        .as_str()
}

#[test]
fn signed_notes_reach_the_ehr_and_billing_exactly_once_through_random_sigkills() {
    if let Some(mode) = std::env::var_os(CHILD) {
        let home = PathBuf::from(std::env::var_os(ISOLATED).expect("the child runs isolated"));
        run_child(&home, &mode.to_string_lossy());
        return;
    }
    let Some(home) = hearth_testkit::isolated(ISOLATED, NAME, true) else {
        return;
    };
    let t0 = Instant::now();
    let Some((server, clinic)) = hearth_testkit::clinic::server_with_clinic(NAME) else {
        return;
    };
    add_visits(&server, &clinic.patients, &clinic.practitioner);
    let seed = std::env::var("HEARTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_215_u64);
    let mut rng = Rng(seed);
    let billing = BillingPeer::start(&[]);
    let mllp = slow_acks(billing.addr(), seed ^ 0x5EED);
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[ehr]\nfhir_base_url = \"{}\"\n\n[billing]\nmllp_address = \"{mllp}\"\n\
             receiving_application = \"BILLING\"\n",
            server.base_url
        ),
    )
    .unwrap();
    let plan = plan(&server);
    assert_eq!(plan.len(), 20 * DAYS as usize);
    let virtual_visits = plan.iter().filter(|v| v.virtual_visit).count();
    assert!(
        (40..=60).contains(&virtual_visits),
        "{virtual_visits} virtual visits"
    );
    std::fs::write(
        home.join("plan.json"),
        serde_json::to_string(&plan).unwrap(),
    )
    .unwrap();
    let peers_ms = t0.elapsed().as_millis();

    // The profile made and synced once, unkilled; how long a run takes to open it.
    spawn(&home, "prepare", 0).finish(Duration::from_secs(120), &home, "the first sync");
    let open_ms = {
        let mut run = spawn(&home, "prepare", 0);
        let opened = loop {
            match run.lines.recv_timeout(Duration::from_secs(60)) {
                Ok((t, l)) if l == "opened" => break t,
                Ok(_) => {}
                Err(e) => panic!("no 'opened' from a run: {e}"),
            }
        };
        let ms = u64::try_from((opened - run.started).as_millis()).unwrap();
        let _ = run.child.kill();
        let _ = run.child.wait();
        ms
    };
    let prepared_ms = t0.elapsed().as_millis();

    // The kills. A random point of the run's life (spread over opening the profile and the
    // sign → push → send → ACK of a visit or two), or just after a progress line: inside the
    // sign transaction, inside a round, between rounds.
    let span_ms = open_ms + 400;
    let (mut kills, mut runs, mut done) = (0, 0, false);
    let mut unsigned_left = plan.len();
    let mut landed: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut aims: BTreeMap<&'static str, usize> = BTreeMap::new();
    while kills < KILLS && !done {
        runs += 1;
        assert!(
            runs < 20 * KILLS,
            "{runs} runs and only {kills} kills landed"
        );
        let run = spawn(&home, "work", runs);
        // One run in twenty lives up to 3 s: a slow step (a large write-ahead log copied
        // into the database on a commit took 1.4 s here) is not killed every time.
        let (aim, after, jitter) = match rng.below(20) {
            0 => ("long (0-3 s)", None, rng.below(3_000)),
            1..=6 => ("time", None, rng.below(span_ms)),
            7..=10 => ("after 'signing'", Some("signing"), rng.below(8)),
            11..=15 => ("after 'signed'", Some("signed"), rng.below(40)),
            _ => ("after 'round begin'", Some("begin"), rng.below(300)),
        };
        *aims.entry(aim).or_default() += 1;
        let fallback = run.started + Duration::from_millis(span_ms.max(jitter));
        let mut kill_at = after
            .is_none()
            .then(|| run.started + Duration::from_millis(jitter));
        let mut seen = Vec::new();
        let mut last_read = None;
        loop {
            let until = kill_at.unwrap_or(fallback);
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match run.lines.recv_timeout(left) {
                Ok((t, l)) => {
                    if kill_at.is_none() && after.is_some_and(|w| l.split(' ').any(|x| x == w)) {
                        kill_at = Some(t + Duration::from_millis(jitter));
                    }
                    seen.push(l);
                    last_read = Some(t);
                }
                Err(_) => break,
            }
        }
        let mut run = run;
        let running = matches!(run.child.try_wait(), Ok(None));
        let killed_at = Instant::now();
        let _ = run.child.kill(); // SIGKILL
        let _ = run.child.wait();
        let read_before = seen.len();
        let seen = run.rest(seen);
        done = seen.iter().any(|l| l == "all-done");
        if running && !done {
            kills += 1;
            // How far into its step the run was (when its last line came before the kill).
            let into = (seen.len() == read_before)
                .then(|| last_read.map(|t| killed_at - t))
                .flatten();
            *landed.entry(stage(seen.last(), into)).or_default() += 1;
            if let Some(left) = seen
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix("todo ")?.parse::<usize>().ok())
            {
                unsigned_left = left;
            }
        }
    }
    let killed_ms = t0.elapsed().as_millis();
    assert!(
        kills >= KILLS,
        "the work was done after {runs} runs and only {kills} kills: too little work for the kills"
    );

    // Then the app runs to the end, unkilled.
    let last = spawn(&home, "work", runs + 1).finish(FINISH, &home, "the last run");
    assert_eq!(last.last().map(String::as_str), Some("all-done"));
    let final_ms = t0.elapsed().as_millis();
    // From the children's log: rounds begun, and finished (most were killed); what the
    // finished ones found applied already (a kill between a write and its local record).
    let log = std::fs::read_to_string(home.join("child.log")).unwrap();
    let rounds = |word: &str| {
        log.lines()
            .filter(|l| l.contains(" round ") && l.contains(&format!(" {word} ")))
            .count()
    };
    let (begun, ended) = (rounds("begin"), rounds("end"));
    let replayed: usize = log
        .lines()
        .filter_map(|l| {
            l.split(" replayed=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();

    // At the EHR: per visit one note, one Encounter (finished), one ChargeItem per line.
    let mut charge_items: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for item in search(&server, "/fhir/ChargeItem?_count=500") {
        let patient = item["subject"]["reference"].as_str().unwrap().to_string();
        charge_items.entry(patient).or_default().push(item);
    }
    for (i, v) in plan.iter().enumerate() {
        let appointment = format!("Appointment/{}", v.appointment);
        let docs: Vec<Value> = search(
            &server,
            &format!(
                "/fhir/DocumentReference?subject=Patient/{}&related={appointment}&_count=100",
                v.patient
            ),
        )
        .into_iter()
        .filter(|d| {
            d["context"]["related"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| refers_to(r, &appointment))
        })
        .collect();
        assert_eq!(docs.len(), 1, "visit {i}: {} notes at the EHR", docs.len());
        let key = hearth_identifier(&docs[0])
            .unwrap_or_else(|| panic!("visit {i}: the note has no urn:hearth:write identifier"));
        let same_key = search(
            &server,
            &format!("/fhir/DocumentReference?identifier=urn:hearth:write%7C{key}"),
        );
        assert_eq!(same_key.len(), 1, "visit {i}: the note's identifier twice");
        let encounters: Vec<Value> = search(
            &server,
            &format!(
                "/fhir/Encounter?subject=Patient/{}&appointment={appointment}&_count=100",
                v.patient
            ),
        )
        .into_iter()
        .filter(|e| {
            e["appointment"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| refers_to(r, &appointment))
        })
        .collect();
        assert_eq!(
            encounters.len(),
            1,
            "visit {i}: {} Encounters",
            encounters.len()
        );
        let encounter = &encounters[0];
        assert_eq!(encounter["status"], "finished", "visit {i}");
        // The visit's ChargeItems: those whose context is its Encounter (by id, or by the
        // identifier it was created under).
        let encounter_id = format!("Encounter/{}", encounter["id"].as_str().unwrap());
        let encounter_key = hearth_identifier(encounter);
        let mut codes: Vec<String> = charge_items
            .get(&format!("Patient/{}", v.patient))
            .into_iter()
            .flatten()
            .filter(|c| {
                refers_to(&c["context"], &encounter_id)
                    || (encounter_key.is_some()
                        && c["context"]["identifier"]["value"].as_str() == encounter_key)
            })
            .map(|c| c["code"]["coding"][0]["code"].as_str().unwrap().to_string())
            .collect();
        let mut planned: Vec<String> = v.draft.lines.iter().map(|l| l.code.clone()).collect();
        codes.sort();
        planned.sort();
        assert_eq!(codes, planned, "visit {i}: the ChargeItems at the EHR");
    }
    let items_total: usize = charge_items.values().map(Vec::len).sum();
    let lines_total: usize = plan.iter().map(|v| v.draft.lines.len()).sum();
    assert_eq!(items_total, lines_total, "ChargeItems at the EHR");

    // At billing: one accepted control id per visit, every delivery of it the same bytes.
    let received = billing.received();
    let mut by_id: BTreeMap<&str, Vec<&Received>> = BTreeMap::new();
    for r in &received {
        by_id.entry(r.control_id.as_str()).or_default().push(r);
    }
    let mut control_ids = BTreeMap::new();
    for (i, v) in plan.iter().enumerate() {
        let start = chrono::DateTime::parse_from_rfc3339(&v.start).unwrap();
        let ids: BTreeSet<&str> = received
            .iter()
            .filter(|r| names_patient(r, &v.patient) && visit_start(r) == Some(start))
            .map(|r| r.control_id.as_str())
            .collect();
        assert_eq!(ids.len(), 1, "visit {i}: control ids at billing {ids:?}");
        let id = *ids.iter().next().unwrap();
        let deliveries = &by_id[id];
        assert!(
            deliveries.iter().all(|d| d.ack == "AA"),
            "visit {i}: billing refused it: {:?}",
            deliveries.iter().map(|d| &d.reason).collect::<Vec<_>>()
        );
        assert_eq!(
            deliveries.iter().filter(|d| !d.duplicate).count(),
            1,
            "visit {i}: accepted as new more than once"
        );
        assert!(
            deliveries
                .iter()
                .all(|d| d.message == deliveries[0].message),
            "visit {i}: deliveries of control id {id} differ"
        );
        let ft1 = deliveries[0]
            .segments
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["id"] == "FT1")
            .count();
        assert_eq!(ft1, v.draft.lines.len(), "visit {i}: FT1 segments");
        control_ids.insert(v.appointment.clone(), id.to_string());
    }
    assert_eq!(
        by_id.len(),
        plan.len(),
        "control ids at billing naming no planned visit"
    );
    let redelivered = received.len() - by_id.len();
    let flagged = received.iter().filter(|r| r.duplicate).count();

    // And the profile, opened again, shows each note signed, in the chart, its charge accepted.
    let ws = Workstation::start(&options(&home), Arc::new(SystemClock));
    for (i, v) in plan.iter().enumerate() {
        let view = ws
            .note_open(&NoteRequest {
                appointment_id: v.appointment.clone(),
            })
            .unwrap();
        assert_eq!(view.state, NoteState::Signed, "visit {i}");
        assert_eq!(view.versions.len(), 1, "visit {i}");
        assert!(
            matches!(view.versions[0].delivery, NoteDelivery::InChart { .. }),
            "visit {i}: {:?}",
            view.versions[0].delivery
        );
        assert_eq!(view.charges.len(), 1, "visit {i}");
        assert_eq!(view.charges[0].state, ChargeState::Accepted, "visit {i}");
        assert_eq!(
            view.charges[0].control_id, control_ids[&v.appointment],
            "visit {i}: the profile's control id is not the one billing accepted"
        );
    }
    drop(ws);

    eprintln!(
        "note crash test (seed {seed}, {} visits): {runs} runs killed, {kills} of them while \
         work remained ({unsigned_left} notes still unsigned at the last kill), then one run to \
         the end; a run opens the profile in ~{open_ms} ms; kills aimed: {aims:?};\n  where the \
         kills landed: {landed:#?}\n  billing: {} deliveries of {} control ids: {redelivered} \
         redeliveries of the same MSH-10 ({flagged} flagged duplicate by billing);\n  rounds: \
         {begun} begun, {ended} finished, {replayed} EHR writes found applied when sent again \
         (in finished rounds);\n  wall time {:.1} s (peers {:.1} s, first sync {:.1} s, kills \
         {:.1} s, last run {:.1} s, checks {:.1} s)",
        plan.len(),
        received.len(),
        by_id.len(),
        t0.elapsed().as_secs_f64(),
        secs(peers_ms),
        secs(prepared_ms - peers_ms),
        secs(killed_ms - prepared_ms),
        secs(final_ms - killed_ms),
        secs(t0.elapsed().as_millis() - final_ms),
    );
}

fn secs(ms: u128) -> f64 {
    Duration::from_millis(u64::try_from(ms).unwrap()).as_secs_f64()
}
