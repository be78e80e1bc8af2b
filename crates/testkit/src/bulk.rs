//! The 615-patient Synthea set served as an EHR serves it to an initial sync, for benches.
//!
//! [`SyntheaEhr`] answers exactly the searches the sync engine's initial sync makes: the
//! Schedule, Appointment and Slot searches (empty: Synthea has none), the Patient list in
//! searchset pages of 200 with `next` links, and `Patient/{id}/$everything` in pages of 500.
//! Each resource is served as a FHIR server serves it: compact JSON, a `meta.versionId` and
//! `meta.lastUpdated`, references as `Type/id` (Synthea's `urn:uuid:` rewritten).
//!
//! It is a small std-thread HTTP/1.1 server with keep-alive that sends files prepared once
//! (below `~/.cache/hearth/sample/`): it measures the engine, not a FHIR server. The bodies
//! are read from disk per request, so the serving process holds no copy of the data set and
//! its memory is the engine's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

const SET: &str = "synthea-r4-615-patients.tar.zst";
/// Patients per page of the Patient list.
const LIST_PAGE: usize = 200;
/// Resources per page of `$everything`.
const EVERYTHING_PAGE: usize = 500;
/// Bumped when the served form changes (the prepared files are rebuilt).
const FORM: &str = "served-v2";
/// The `meta.lastUpdated` of every served resource.
const LAST_UPDATED: &str = "2026-01-05T08:00:00.000Z";

/// The 615-patient set served on a loopback port.
pub struct SyntheaEhr {
    base_url: String,
    dir: PathBuf,
    /// Every body a complete initial sync fetches once (list pages, `$everything` pages).
    pub bodies: Vec<PathBuf>,
    /// Resources in those bodies (each Patient twice: in the list and in its `$everything`).
    pub resources: usize,
    /// Distinct resources served (Synthea repeats some ids across patients).
    pub distinct: usize,
    pub patients: Vec<String>,
}

impl SyntheaEhr {
    /// Prepares (once) and serves the set; `None` (a reported skip, a failure under `CI`)
    /// when the data set is not on this machine.
    pub fn start(test: &str) -> Option<Self> {
        let unpacked = unpacked(test)?;
        let dir = unpacked.with_file_name(format!("synthea-615-{FORM}"));
        if !dir.join(".complete").exists() {
            prepare(&unpacked, &dir);
        }
        let index = std::fs::read_to_string(dir.join("index.json")).unwrap();
        let index: serde_json::Value = serde_json::from_str(&index).unwrap();
        let patients: Vec<String> = index["patients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        let bodies = index["bodies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| dir.join(b.as_str().unwrap()))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let serve_dir = dir.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let dir = serve_dir.clone();
                std::thread::spawn(move || serve(stream, &dir));
            }
        });
        Some(Self {
            base_url: format!("http://127.0.0.1:{port}/fhir"),
            dir,
            bodies,
            resources: index["resources"].as_u64().unwrap() as usize,
            distinct: index["distinct"].as_u64().unwrap() as usize,
            patients,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Where the served files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The set unpacked below `~/.cache/hearth/sample/` (once).
fn unpacked(test: &str) -> Option<PathBuf> {
    let archive = crate::sample_data(test, SET)?;
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

/// Writes the served bodies: `list-<k>.json`, `ev-<patient>-<k>.json`, and `index.json`.
fn prepare(unpacked: &Path, dir: &Path) {
    use serde_json::{json, Value};
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(unpacked)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    // Pass 1: every `urn:uuid:` full URL of the set, as the `Type/id` a server names it by.
    let mut names: HashMap<String, String> = HashMap::new();
    for f in &files {
        let b: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        for e in b["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            if let (Some(url), Some(t), Some(id)) = (
                e["fullUrl"].as_str(),
                r["resourceType"].as_str(),
                r["id"].as_str(),
            ) {
                names.insert(url.to_string(), format!("{t}/{id}"));
            }
        }
    }
    fn rewrite(v: &mut Value, names: &HashMap<String, String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "reference" {
                        if let Value::String(s) = x {
                            if let Some(n) = names.get(s.as_str()) {
                                *s = n.clone();
                            }
                        }
                    } else {
                        rewrite(x, names);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, names)),
            _ => {}
        }
    }
    let searchset = |entries: Vec<Value>, next: Option<String>| -> String {
        let mut b = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "meta": {"lastUpdated": LAST_UPDATED},
            "entry": entries,
        });
        if let Some(next) = next {
            b["link"] = json!([{"relation": "next", "url": next}]);
        }
        b.to_string()
    };
    let served = |mut r: Value| -> Value {
        rewrite(&mut r, &names);
        r["meta"] = json!({"versionId": "1", "lastUpdated": LAST_UPDATED});
        let full_url = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap_or(""),
            r["id"].as_str().unwrap_or("")
        );
        json!({"fullUrl": full_url, "resource": r, "search": {"mode": "match"}})
    };
    // Pass 2: each patient's bundle as its `$everything` pages (the two shared bundles of
    // hospitals and practitioners are no patient's compartment: not served).
    let mut patients = Vec::new();
    let mut patient_entries = Vec::new();
    let mut bodies = Vec::new();
    let mut resources = 0usize;
    let mut distinct = std::collections::HashSet::new();
    for f in &files {
        let b: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let entries: Vec<Value> = b["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e["resource"].clone())
            .collect();
        let Some(patient) = entries
            .iter()
            .find(|r| r["resourceType"] == "Patient")
            .and_then(|r| r["id"].as_str())
            .map(str::to_string)
        else {
            continue;
        };
        let entries: Vec<Value> = entries.into_iter().map(&served).collect();
        distinct.extend(
            entries
                .iter()
                .filter_map(|e| e["fullUrl"].as_str().map(str::to_string)),
        );
        patient_entries.push(
            entries
                .iter()
                .find(|e| e["resource"]["resourceType"] == "Patient")
                .unwrap()
                .clone(),
        );
        let pages: Vec<&[Value]> = entries.chunks(EVERYTHING_PAGE).collect();
        for (k, page) in pages.iter().enumerate() {
            let next = (k + 1 < pages.len())
                .then(|| format!("Patient/{patient}/$everything?_page={}", k + 1));
            let name = format!("ev-{patient}-{k}.json");
            std::fs::write(dir.join(&name), searchset(page.to_vec(), next)).unwrap();
            bodies.push(name);
        }
        resources += entries.len();
        patients.push(patient);
    }
    let distinct = distinct.len();
    let pages: Vec<&[Value]> = patient_entries.chunks(LIST_PAGE).collect();
    for (k, page) in pages.iter().enumerate() {
        let next = (k + 1 < pages.len()).then(|| format!("Patient?_page={}", k + 1));
        let name = format!("list-{k}.json");
        std::fs::write(dir.join(&name), searchset(page.to_vec(), next)).unwrap();
        bodies.push(name);
        resources += page.len();
    }
    let index = json!({
        "patients": patients,
        "bodies": bodies,
        "resources": resources,
        "distinct": distinct,
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join(".complete"), "").unwrap();
}

/// Answers one connection's requests (keep-alive) until it closes.
fn serve(stream: TcpStream, dir: &Path) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        // Headers, to the blank line (GET requests carry no body).
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        let target = line.split_whitespace().nth(1).unwrap_or("");
        let (status, body) = match route(target, dir) {
            Some(body) => ("200 OK", body),
            None => ("404 Not Found", Vec::new()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&body).is_err() {
            return;
        }
    }
}

fn route(target: &str, dir: &Path) -> Option<Vec<u8>> {
    let target = target.replace("%24", "$");
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let page: usize = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("_page="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let rest = path.strip_prefix("/fhir/")?;
    let file = match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["Schedule" | "Appointment" | "Slot"] => {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            return Some(
                format!(
                    r#"{{"resourceType":"Bundle","type":"searchset","meta":{{"lastUpdated":"{now}"}},"total":0}}"#
                )
                .into_bytes(),
            );
        }
        ["Patient"] => format!("list-{page}.json"),
        ["Patient", id, "$everything"] if is_id(id) => {
            format!("ev-{id}-{page}.json")
        }
        _ => return None,
    };
    std::fs::read(dir.join(file)).ok()
}

/// A FHIR id (nothing that could leave the folder).
fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !s.starts_with('.')
}
