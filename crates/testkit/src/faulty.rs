//! A faulty EHR: an HTTP proxy in front of the real FHIR server that behaves as other FHIR
//! server implementations and deployments were seen to behave, so that a test can reproduce
//! what sekmet alone never does:
//! - search and history Bundles with no `meta.lastUpdated` or `timestamp` (several servers
//!   omit them; FHIR does not require them);
//! - a slow search: requests matching a pattern wait until the test releases them;
//! - a late commit: a resource missing from every search and history answer until the test
//!   shows it (a transaction committed, and visible, well after its `lastUpdated`);
//! - the network gone: connections refused (dropped) until the test restores it;
//! - a server answering an error status (503, 409, ...) to the next requests of a kind;
//! - a serializer bug: one resource served with an element spoiled (or removed) wherever it
//!   is served, until the test repairs the server; its stored data and `lastUpdated` stay.
//! - a wrong clock in front of the server: every answer's `Date` header, or every Bundle's
//!   `timestamp`, replaced by what the test sets (far future, far past, garbage).
//!
//! Everything else passes through: status, `Date`, `ETag`, `Location`, bodies. Connections are
//! kept alive as HTTP/1.1 clients expect; each forwarded request is bounded in time.

use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a held request waits for its release before it goes on by itself (so a failing
/// test never hangs).
const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// A proxy on a loopback port of its own, forwarding to a FHIR server.
pub struct FaultyEhr {
    pub port: u16,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Faults>,
    changed: Condvar,
}

#[derive(Default)]
struct Faults {
    target: u16,
    strip_bundle_times: bool,
    hidden: HashSet<String>,
    /// `Type/id` -> (element, what it is served as; `None`: left out).
    spoiled: std::collections::HashMap<String, (String, Option<Value>)>,
    hold: Option<String>,
    held: usize,
    cut: bool,
    /// (method and path pattern, status, how many more times).
    failing: Vec<(String, u16, usize)>,
    released: u64,
    /// Every answer's `Date` header is this (set or replaced).
    date: Option<String>,
    /// Every Bundle's `timestamp` is this (set or replaced).
    bundle_time: Option<String>,
}

impl FaultyEhr {
    /// Binds the proxy's port now (so the server can be told its public address, for the
    /// links it writes); it forwards once [`FaultyEhr::forward_to`] names the server's port.
    pub fn reserve() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("faulty EHR port");
        let port = listener.local_addr().expect("faulty EHR address").port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(client, &s));
            }
        });
        Self { port, shared }
    }

    pub fn forward_to(&self, target_port: u16) {
        self.faults().target = target_port;
    }

    /// The FHIR base URL through the proxy.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/fhir", self.port)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bundles lose `meta.lastUpdated` and `timestamp` (`true`), or keep them.
    pub fn strip_bundle_times(&self, on: bool) {
        self.faults().strip_bundle_times = on;
    }

    /// `Type/id` is left out of every Bundle (search and history) until shown again.
    pub fn hide(&self, reference: &str) {
        self.faults().hidden.insert(reference.to_string());
    }

    pub fn show(&self, reference: &str) {
        self.faults().hidden.remove(reference);
    }

    /// `Type/id` is served with top-level `element` set to `value` (or, `None`, left out), in
    /// Bundles and on direct reads, until [`FaultyEhr::repair`].
    pub fn spoil(&self, reference: &str, element: &str, value: Option<Value>) {
        self.faults()
            .spoiled
            .insert(reference.to_string(), (element.to_string(), value));
    }

    /// The server serves `Type/id` as stored again (no new version: its data never changed).
    pub fn repair(&self, reference: &str) {
        self.faults().spoiled.remove(reference);
    }

    /// Every answer carries `Date: <date>` (any text, e.g. a far-future HTTP date or
    /// garbage) instead of the server's; `None`: the server's own again.
    pub fn set_date(&self, date: Option<&str>) {
        self.faults().date = date.map(str::to_string);
    }

    /// Every Bundle carries `timestamp: <time>` (any text); `None`: as the server sends it.
    pub fn set_bundle_time(&self, time: Option<&str>) {
        self.faults().bundle_time = time.map(str::to_string);
    }

    /// Drops every connection (`true`): the EHR cannot be reached; or forwards again.
    pub fn set_cut(&self, cut: bool) {
        self.faults().cut = cut;
    }

    /// The next `times` requests whose `METHOD path?query` contains `pattern` (e.g.
    /// `"PUT /fhir/Appointment/"`) are answered `status` with an OperationOutcome, without
    /// reaching the server.
    pub fn fail_next(&self, pattern: &str, status: u16, times: usize) {
        self.faults()
            .failing
            .push((pattern.to_string(), status, times));
    }

    /// Requests whose path and query contain `pattern` wait (before reaching the server)
    /// until [`FaultyEhr::release`].
    pub fn hold(&self, pattern: &str) {
        self.faults().hold = Some(pattern.to_string());
    }

    /// How many requests wait now.
    pub fn held(&self) -> usize {
        self.faults().held
    }

    /// Lets every waiting request go on, and holds no more.
    pub fn release(&self) {
        let mut f = self.faults();
        f.hold = None;
        f.released += 1;
        drop(f);
        self.shared.changed.notify_all();
    }
}

impl Drop for FaultyEhr {
    fn drop(&mut self) {
        self.release();
    }
}

/// One client connection: requests one after another (keep-alive) until it closes.
fn serve(client: TcpStream, shared: &Shared) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(write_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(client);
    let mut writer = write_half;
    while let Some(request) = read_request(&mut reader) {
        if shared.state.lock().unwrap_or_else(|p| p.into_inner()).cut {
            return;
        }
        wait_if_held(shared, &request.target);
        if let Some(status) = planned_failure(shared, &request) {
            let body = format!(
                r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"error","code":"transient","diagnostics":"faulty EHR: answered {status}"}}]}}"#
            );
            let answer = Answer {
                status_line: format!("HTTP/1.1 {status} Planned"),
                headers: vec![("Content-Type".into(), "application/fhir+json".into())],
                body: body.into_bytes(),
            };
            if write_answer(&mut writer, &answer).is_err() {
                return;
            }
            continue;
        }
        let (target, rewrite, date) = {
            let f = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            (
                f.target,
                Rewrite {
                    strip: f.strip_bundle_times,
                    hidden: f.hidden.clone(),
                    spoiled: f.spoiled.clone(),
                    bundle_time: f.bundle_time.clone(),
                },
                f.date.clone(),
            )
        };
        let Some(mut answer) = forward(target, &request) else {
            return;
        };
        if rewrite.strip
            || !rewrite.hidden.is_empty()
            || !rewrite.spoiled.is_empty()
            || rewrite.bundle_time.is_some()
        {
            answer.body = rewrite.apply(&answer.body);
        }
        if let Some(date) = date {
            answer
                .headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("date"));
            answer.headers.push(("Date".into(), date));
        }
        if write_answer(&mut writer, &answer).is_err() {
            return;
        }
    }
}

fn planned_failure(shared: &Shared, request: &Request) -> Option<u16> {
    let mut f = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let line = format!("{} {}", request.method, request.target);
    let plan = f
        .failing
        .iter_mut()
        .find(|(pattern, _, left)| *left > 0 && line.contains(pattern.as_str()))?;
    plan.2 -= 1;
    Some(plan.1)
}

fn wait_if_held(shared: &Shared, target: &str) {
    let mut f = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    if !f.hold.as_ref().is_some_and(|h| target.contains(h.as_str())) {
        return;
    }
    f.held += 1;
    let released = f.released;
    let deadline = Instant::now() + HOLD_LIMIT;
    while f.released == released && Instant::now() < deadline {
        f = shared
            .changed
            .wait_timeout(f, Duration::from_millis(200))
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
    f.held -= 1;
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Answer {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let headers = read_headers(reader)?;
    let len = content_length(&headers);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

fn read_headers(reader: &mut impl BufRead) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Some(headers);
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

fn content_length(headers: &[(String, String)]) -> usize {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Sends the request to the server on a connection of its own and reads the whole answer.
fn forward(target_port: u16, request: &Request) -> Option<Answer> {
    let mut up = TcpStream::connect(("127.0.0.1", target_port)).ok()?;
    up.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (k, v) in &request.headers {
        let skip = [
            "connection",
            "content-length",
            "keep-alive",
            "accept-encoding",
        ];
        if !skip.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n",
        request.body.len()
    ));
    up.write_all(head.as_bytes()).ok()?;
    up.write_all(&request.body).ok()?;
    let mut reader = BufReader::new(up);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    let headers = read_headers(&mut reader)?;
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).ok()?;
    let body = if chunked { dechunk(&raw) } else { raw };
    Some(Answer {
        status_line: status_line.trim_end().to_string(),
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
}

fn write_answer(w: &mut TcpStream, answer: &Answer) -> std::io::Result<()> {
    let mut head = format!("{}\r\n", answer.status_line);
    for (k, v) in &answer.headers {
        let skip = [
            "connection",
            "content-length",
            "transfer-encoding",
            "keep-alive",
        ];
        if !skip.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", answer.body.len()));
    w.write_all(head.as_bytes())?;
    w.write_all(&answer.body)?;
    w.flush()
}

struct Rewrite {
    strip: bool,
    hidden: HashSet<String>,
    spoiled: std::collections::HashMap<String, (String, Option<Value>)>,
    bundle_time: Option<String>,
}

impl Rewrite {
    /// A Bundle without its times, without the hidden resources and with the spoiled ones
    /// spoiled; a single resource spoiled; anything else unchanged.
    fn apply(&self, body: &[u8]) -> Vec<u8> {
        let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
            return body.to_vec();
        };
        if v["resourceType"] != "Bundle" {
            let reference = format!(
                "{}/{}",
                v["resourceType"].as_str().unwrap_or(""),
                v["id"].as_str().unwrap_or("")
            );
            return match self.spoiled.get(&reference) {
                Some(how) => {
                    spoil(&mut v, how);
                    serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
                }
                None => body.to_vec(),
            };
        }
        if self.strip {
            if let Some(o) = v.as_object_mut() {
                o.remove("timestamp");
                if let Some(meta) = o.get_mut("meta").and_then(Value::as_object_mut) {
                    meta.remove("lastUpdated");
                }
            }
        }
        if let (Some(time), Some(o)) = (&self.bundle_time, v.as_object_mut()) {
            o.insert("timestamp".into(), Value::String(time.clone()));
        }
        if let Some(entries) = v.get_mut("entry").and_then(Value::as_array_mut) {
            entries.retain(|e| !self.hidden.contains(&reference_of(e)));
            for e in entries {
                if let Some(how) = self.spoiled.get(&reference_of(e)) {
                    spoil(&mut e["resource"], how);
                }
            }
        }
        serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
    }
}

fn spoil(resource: &mut Value, (element, value): &(String, Option<Value>)) {
    if let Some(o) = resource.as_object_mut() {
        match value {
            Some(v) => {
                o.insert(element.clone(), v.clone());
            }
            None => {
                o.remove(element);
            }
        }
    }
}

/// `Type/id` of a Bundle entry (its resource, else its request URL for a deletion).
fn reference_of(entry: &Value) -> String {
    if let (Some(t), Some(id)) = (
        entry["resource"]["resourceType"].as_str(),
        entry["resource"]["id"].as_str(),
    ) {
        return format!("{t}/{id}");
    }
    let url = entry["request"]["url"].as_str().unwrap_or("");
    let parts: Vec<&str> = url.split('/').filter(|p| !p.is_empty()).collect();
    match parts.iter().position(|p| *p == "_history") {
        Some(h) if h >= 2 => format!("{}/{}", parts[h - 2], parts[h - 1]),
        _ if parts.len() >= 2 => format!("{}/{}", parts[parts.len() - 2], parts[parts.len() - 1]),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_lose_their_times_and_hidden_entries() {
        let body = br#"{"resourceType":"Bundle","meta":{"lastUpdated":"2026-01-01T00:00:00Z"},"timestamp":"2026-01-01T00:00:00Z","entry":[
            {"resource":{"resourceType":"Patient","id":"a"}},
            {"resource":{"resourceType":"Patient","id":"b"}},
            {"request":{"method":"DELETE","url":"Patient/c/_history/2"}}]}"#;
        let rewrite = Rewrite {
            strip: true,
            hidden: ["Patient/b".to_string(), "Patient/c".to_string()].into(),
            spoiled: [(
                "Patient/a".to_string(),
                ("gender".to_string(), Some(Value::from(7))),
            )]
            .into(),
            bundle_time: None,
        };
        let v: Value = serde_json::from_slice(&rewrite.apply(body)).unwrap();
        assert_eq!(v["entry"][0]["resource"]["gender"], 7);
        assert!(v.get("timestamp").is_none() && v["meta"].get("lastUpdated").is_none());
        let ids: Vec<&str> = v["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a"]);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
