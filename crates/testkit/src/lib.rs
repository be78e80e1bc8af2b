//! Test peers and helpers shared by Hearth's tests.
//!
//! - [`FhirServer`]: a real FHIR R4 server (sekmet-fhir, installed by `scripts/setup`) on a
//!   loopback port of its own, with its own data folder, so tests run in parallel.
//! - [`billing::BillingPeer`]: a strict HL7 v2.5.1 billing receiver (hl7apy) over MLLP.
//! - [`sample_data`]: the shared synthetic data sets, checked against the manifest in the
//!   repository; a reported skip naming what is missing (a failure when `CI` is set).
//! - [`wait_until`]: wait on a condition with a timeout (never a bare sleep).
//! - [`KillOnDrop`]: a child process stopped when the test ends, however it ends.
//! - [`isolated`]: run a test again inside its own session bus with an unlocked GNOME Keyring.
//!
//! Helpers panic with a message that says what to install or set: in a test, that is the
//! failure report.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers: a failed expectation is the test failing, with its message"
)]

pub mod billing;
pub mod bulk;
pub mod clinic;
pub mod faulty;
pub mod impair;
pub mod sample;
pub mod smart;
pub mod visit;

pub use sample::{sample_data, sample_root};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits until `cond` holds, checking every 20 ms; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port free at the time of asking.
/// A loopback port held open (listening) until its listener is handed to the peer that serves
/// on it: no other process can take it meanwhile, as it can a port [`free_port`] named.
pub fn reserve_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("no free loopback port")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The files under `dir` (recursively) whose bytes contain `needle`: a secret or a patient's
/// name must be found in none of them.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// A child process stopped on drop: SIGTERM first (so it can stop what it started), then
/// SIGKILL if it is still there after five seconds.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Stops the process now (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}

/// The checkout's root folder: the nearest folder holding `Cargo.lock` above the package
/// under test. Read at run time (cargo sets `CARGO_MANIFEST_DIR` for each test), not baked in
/// at compile time: a build reused from another clone must not look in that clone.
pub fn workspace_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

/// Where `scripts/setup` installs the test peers: `$HEARTH_PEERS`, else
/// `~/.cache/hearth/peers`.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("HEARTH_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hearth/peers")
        })
}

/// libfaketime's library (Debian package `faketime`, installed by `scripts/setup`).
fn faketime_library() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("libfaketime is not installed (Debian package faketime): run scripts/setup")
    })
}

/// The sekmet executable: `$HEARTH_SEKMET`, else where `scripts/setup` installs it.
fn sekmet_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_SEKMET") {
        return p.into();
    }
    peers_dir().join("sekmet/bin/sekmet")
}

/// A real FHIR R4 server (sekmet-fhir) on loopback, with its own port and data folder.
/// Stopped when dropped.
pub struct FhirServer {
    pub base_url: String,
    pub port: u16,
    process: Option<KillOnDrop>,
    settings: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
    /// Seconds the server's clock runs ahead (+) or behind (-) the machine's.
    clock_offset: Option<i64>,
}

impl FhirServer {
    /// Starts an empty server and waits until it answers.
    pub fn start() -> Self {
        Self::start_with_public_port(None)
    }

    /// Starts a server reached through a proxy at `public_port`: the links it writes (paging,
    /// Location) name that port.
    pub fn start_with_public_port(public_port: Option<u16>) -> Self {
        Self::start_with(public_port, None)
    }

    /// [`FhirServer::start_with_public_port`], with the server's clock `clock_offset` seconds
    /// ahead of (or, negative, behind) the machine's: an EHR whose clock differs from the
    /// workstation's (libfaketime, Debian package `faketime`).
    pub fn start_with(public_port: Option<u16>, clock_offset: Option<i64>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let base_url = format!("http://127.0.0.1:{}/fhir", public_port.unwrap_or(port));
        let settings = dir.path().join("settings.yaml");
        // Validation is off so that a test can plant a malformed resource, as a faulty EHR
        // would serve it; the simulator (which reacts to writes) is off.
        std::fs::write(
            &settings,
            format!(
                "base_url: {base_url}\nhost: 127.0.0.1\nport: {port}\ndata_dir: {}\n\
                 simulator: {{enabled: false}}\nlog_inbound: false\nvalidation: {{inbound: \"off\"}}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write sekmet settings");
        let mut server = Self {
            base_url,
            port,
            process: None,
            log: dir.path().join("sekmet.log"),
            settings,
            dir,
            clock_offset,
        };
        server.resume();
        server
    }

    /// The server's data folder (its SQLite database).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the server (the data stays): the EHR is down.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn resume(&mut self) {
        assert!(self.process.is_none(), "the FHIR server is already running");
        let bin = sekmet_binary();
        assert!(
            bin.exists(),
            "the FHIR test server is not installed at {} (run scripts/setup)",
            bin.display()
        );
        let log = std::fs::File::create(&self.log).expect("sekmet log");
        let mut command = Command::new(&bin);
        if let Some(offset) = self.clock_offset {
            command
                .env("LD_PRELOAD", faketime_library())
                .env("FAKETIME", format!("{offset:+}"));
        }
        let child = command
            .arg("serve")
            .arg("-c")
            .arg(&self.settings)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.process = Some(KillOnDrop(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = self.request("GET", "/fhir/metadata", None) {
                return;
            }
            if let Some(Ok(Some(status))) = self.process.as_mut().map(|p| p.0.try_wait()) {
                panic!("the FHIR server exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the FHIR server did not answer within 60 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One HTTP/1.1 request to the server; returns the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        self.request_with(method, path, &[], body)
    }

    /// [`FhirServer::request`] with extra headers.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.unwrap_or("");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Accept: application/fhir+json\r\nContent-Type: application/fhir+json\r\n\
             Content-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Ok((
            status,
            if chunked {
                dechunk(rest)
            } else {
                rest.to_string()
            },
        ))
    }

    /// `GET` of a JSON document; panics unless the server answers 200.
    pub fn get_json(&self, path: &str) -> String {
        let (status, body) = self
            .request("GET", path, None)
            .expect("FHIR server request");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Posts a transaction Bundle; panics unless the server accepts it.
    pub fn post_bundle(&self, bundle: &str) {
        let (status, body) = self
            .request("POST", "/fhir", Some(bundle))
            .expect("FHIR server request");
        assert!(status == 200, "transaction refused ({status}): {body}");
    }

    /// Loads every transaction Bundle in `folder` (the Synthea sample set); returns how many.
    pub fn load_bundles(&self, folder: &Path) -> usize {
        let mut files: Vec<_> = std::fs::read_dir(folder)
            .expect("sample data folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in &files {
            self.post_bundle(&std::fs::read_to_string(f).expect("bundle"));
        }
        files.len()
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Runs test `name` of the current test binary again inside its own session bus with an
/// unlocked GNOME Keyring (a real Secret Service) and its own HOME, and returns `None`; inside
/// that run, returns the run's private folder. `env` names the variable marking the inner run.
/// Fails unless the inner run ran exactly one test, `name`, and it passed: a `name` left behind
/// by a rename matches nothing, and a run of nothing must not pass.
pub fn isolated(env: &str, name: &str, keyring: bool) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(env) {
        return Some(dir.into());
    }
    let home = tempfile::tempdir().expect("temp dir");
    let start_keyring = if keyring {
        "printf hearth-test | gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 90;"
    } else {
        ""
    };
    let script = format!("{start_keyring} exec \"$0\" --exact \"$1\" --nocapture --test-threads 1");
    let out = in_own_session(&script, env, home.path())
        .arg(name)
        .output()
        .expect(
            "dbus-run-session (Debian package dbus-daemon) must be installed: run scripts/setup",
        );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the isolated run of {name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if let Err(why) = ran_exactly_one(&stdout) {
        panic!(
            "the isolated run of {name} {why}: `{name}` must be the test's own name as libtest \
             knows it (the function's path in its test binary), kept in step when the test is \
             renamed\n{stdout}"
        );
    }
    // What the inner run reported (figures), shown with --nocapture.
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    None
}

/// The current executable run again by `script` (`sh -c`, the executable as `$0`) in a session
/// bus of its own, with `env` and HOME set to `home` ([`isolated`], [`isolated_bench`]).
fn in_own_session(script: &str, env: &str, home: &Path) -> Command {
    let mut command = Command::new("dbus-run-session");
    command
        .args(["--", "sh", "-c", script])
        .arg(std::env::current_exe().expect("the running executable"))
        .env(env, home)
        // Found before HOME moves.
        .env("HEARTH_SEKMET", sekmet_binary())
        .env("HEARTH_PEERS", peers_dir())
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_RUNTIME_DIR", home);
    command
}

/// For a `harness = false` binary (a bench): runs the current executable again, with the same
/// arguments, inside its own session bus with an unlocked GNOME Keyring (a real Secret
/// Service) and its own temporary HOME, as [`isolated`] does for a test, and returns `None`
/// once that run has passed (its output goes straight to this process's); inside that run,
/// returns the run's private folder. `env` names the variable marking the inner run. Panics
/// when the inner run fails.
pub fn isolated_bench(env: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(env) {
        return Some(dir.into());
    }
    let home = tempfile::tempdir().expect("temp dir");
    let script = "printf hearth-test | gnome-keyring-daemon --unlock --components=secrets \
                  >/dev/null || exit 90; exec \"$0\" \"$@\"";
    let status = in_own_session(script, env, home.path())
        .args(std::env::args_os().skip(1))
        .status()
        .expect(
            "dbus-run-session (Debian package dbus-daemon) must be installed: run scripts/setup",
        );
    assert!(status.success(), "the isolated run failed ({status})");
    None
}

/// Checks libtest's report of a run (its stdout) says exactly one test ran and passed:
/// `running 1 test` and a `test result: ok. 1 passed; ...` line. An `--exact` filter naming
/// no test runs nothing and succeeds, which must not pass for the test it was meant to run.
fn ran_exactly_one(stdout: &str) -> Result<(), String> {
    let running: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("running ") && (l.ends_with(" test") || l.ends_with(" tests")))
        .collect();
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("test result: "))
        .collect();
    match (running.as_slice(), results.as_slice()) {
        (["running 1 test"], [result]) if result.starts_with("test result: ok. 1 passed;") => {
            Ok(())
        }
        ([], _) | (_, []) => Err("printed no libtest report (`running N tests`)".to_string()),
        _ => Err(format!(
            "did not run exactly one test ({} / {})",
            running.join(", "),
            results.join(", ")
        )),
    }
}

/// A TCP proxy on loopback in front of a peer, which a test can cut and restore: the network
/// between Hearth and the EHR failing, while the EHR itself goes on.
pub struct Proxy {
    pub port: u16,
    shared: std::sync::Arc<ProxyShared>,
}

#[derive(Default)]
struct ProxyShared {
    target: std::sync::atomic::AtomicU16,
    cut: std::sync::atomic::AtomicBool,
    open: std::sync::Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// Starts forwarding a new loopback port to `target_port`.
    pub fn start(target_port: u16) -> Self {
        let proxy = Self::reserve();
        proxy.forward_to(target_port);
        proxy
    }

    /// Binds the proxy's port now (so a server can be told its public address); it forwards
    /// once [`Proxy::forward_to`] names the target.
    pub fn reserve() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = std::sync::Arc::new(ProxyShared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if s.cut.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target_port = s.target.load(std::sync::atomic::Ordering::SeqCst);
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let mut open = s.open.lock().unwrap_or_else(|p| p.into_inner());
                for stream in [&client, &upstream] {
                    if let Ok(c) = stream.try_clone() {
                        open.push(c);
                    }
                }
                drop(open);
                pipe(&client, &upstream);
                pipe(&upstream, &client);
            }
        });
        Self { port, shared }
    }

    pub fn forward_to(&self, target_port: u16) {
        self.shared
            .target
            .store(target_port, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops every open connection and refuses new ones (`true`), or forwards again.
    pub fn set_cut(&self, cut: bool) {
        self.shared
            .cut
            .store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            let mut open = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
            for s in open.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "HEARTH_TESTKIT_ISOLATED_CHILD";

    #[test]
    fn an_isolated_test_runs_again_on_its_own_session_bus() {
        let Some(home) = isolated(
            CHILD,
            "tests::an_isolated_test_runs_again_on_its_own_session_bus",
            false,
        ) else {
            return;
        };
        // Inside: the run's own HOME and a session bus of its own.
        assert_eq!(std::env::var_os("HOME").map(PathBuf::from), Some(home));
        assert!(std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some());
    }

    #[test]
    #[should_panic(expected = "did not run exactly one test (running 0 tests")]
    fn an_isolated_run_of_a_name_no_test_has_fails() {
        // As after renaming a test without its name string: the filter matches nothing.
        let _ = isolated(CHILD, "tests::a_test_renamed_since", false);
    }

    #[test]
    fn libtest_reports_are_read_for_exactly_one_passed_test() {
        let one = "\nrunning 1 test\nsome output\ntest a::b ... ok\n\n\
                   test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 7 filtered out; \
                   finished in 0.01s\n\n";
        assert_eq!(ran_exactly_one(one), Ok(()));
        let none = "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; \
                    0 measured; 8 filtered out; finished in 0.00s\n\n";
        assert!(ran_exactly_one(none).is_err());
        let ignored = "\nrunning 1 test\ntest a::b ... ignored\n\ntest result: ok. 0 passed; \
                       0 failed; 1 ignored; 0 measured; 7 filtered out\n";
        assert!(ran_exactly_one(ignored).is_err());
        let two = "\nrunning 2 tests\n\ntest result: ok. 2 passed; 0 failed; 0 ignored\n";
        assert!(ran_exactly_one(two).is_err());
        assert!(ran_exactly_one("").is_err());
    }
}
