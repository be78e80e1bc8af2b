//! A strict HL7 v2.5.1 billing receiver on loopback (`tests/peers/billing/server.py`, with
//! hl7apy and python-hl7 installed by `scripts/setup` in `$HEARTH_PEERS/billing`): it answers
//! each DFT^P03 with AA, AE (a refused procedure code) or AR (not a valid DFT^P03), dedupes
//! on MSH-10 and logs what it received.

use crate::{peers_dir, workspace_root, KillOnDrop};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long the peer (Python, importing hl7apy) may take to listen.
const PEER_START: Duration = Duration::from_secs(30);

/// One message as the peer received and judged it.
#[derive(Debug, Clone)]
pub struct Received {
    pub control_id: String,
    /// `AA`, `AE` or `AR`.
    pub ack: String,
    pub reason: String,
    pub duplicate: bool,
    /// The message as received.
    pub message: String,
    /// The message as the peer read it (python-hl7's unescaping), `null` when it could not.
    pub segments: serde_json::Value,
}

impl Received {
    /// A value as the peer read it: the `occurrence`th `segment`, field, repetition,
    /// component, subcomponent (all 1-based). `None` when absent.
    pub fn value(
        &self,
        segment: &str,
        occurrence: usize,
        field: usize,
        repetition: usize,
        component: usize,
        subcomponent: usize,
    ) -> Option<String> {
        let seg = self
            .segments
            .as_array()?
            .iter()
            .filter(|s| s["id"] == segment)
            .nth(occurrence.checked_sub(1)?)?;
        seg["fields"]
            .get(field.checked_sub(1)?)?
            .get(repetition.checked_sub(1)?)?
            .get(component.checked_sub(1)?)?
            .get(subcomponent.checked_sub(1)?)?
            .as_str()
            .map(str::to_string)
    }
}

pub struct BillingPeer {
    port: u16,
    refuse: Vec<(String, String)>,
    log: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
    process: Option<KillOnDrop>,
}

impl BillingPeer {
    /// Starts the peer on a free loopback port; `refuse` lists procedure codes answered AE
    /// with their reason.
    pub fn start(refuse: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut peer = BillingPeer {
            port: 0,
            refuse: refuse
                .iter()
                .map(|(c, r)| (c.to_string(), r.to_string()))
                .collect(),
            log: dir.path().join("received.jsonl"),
            stderr: dir.path().join("stderr.txt"),
            _dir: dir,
            process: None,
        };
        peer.resume();
        peer
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the peer (the listener is down; its log stays).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// Starts the peer again on the same port, with the same log: the control ids it accepted
    /// before are still known (read back from the log), as a receiver's dedupe store would be.
    pub fn resume(&mut self) {
        assert!(
            self.process.is_none(),
            "the billing peer is already running"
        );
        let python = peers_dir().join("billing/bin/python");
        assert!(
            python.exists(),
            "the billing test peer is not installed at {} (run scripts/setup)",
            python.display()
        );
        let script = workspace_root().join("tests/peers/billing/server.py");
        let stderr = std::fs::File::create(&self.stderr).expect("peer stderr");
        let mut command = Command::new(&python);
        command
            .arg(&script)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--log")
            .arg(&self.log);
        for (code, reason) in &self.refuse {
            command.arg("--refuse-code").arg(format!("{code}={reason}"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("peer stdout");
        self.process = Some(KillOnDrop(child));
        // The ready line is read by a thread of its own so that the wait is bounded; the
        // pipe is then drained there (a closed pipe would fail the peer's next print).
        let (ready_line, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut line);
            let _ = ready_line.send(line);
            std::io::copy(&mut reader, &mut std::io::sink())
        });
        let line = ready.recv_timeout(PEER_START).unwrap_or_default();
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the billing peer did not say it was ready within {PEER_START:?} ({line:?}):\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                )
            });
        assert!(
            self.port == 0 || self.port == port,
            "the billing peer came back on port {port}, not {}",
            self.port
        );
        self.port = port;
    }

    /// Every message received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("peer log line");
                Received {
                    control_id: v["control_id"].as_str().unwrap_or_default().to_string(),
                    ack: v["ack"].as_str().unwrap_or_default().to_string(),
                    reason: v["reason"].as_str().unwrap_or_default().to_string(),
                    duplicate: v["duplicate"].as_bool().unwrap_or_default(),
                    message: v["message"].as_str().unwrap_or_default().to_string(),
                    segments: v["segments"].clone(),
                }
            })
            .collect()
    }

    /// The control ids the peer accepted (AA), first receipt only.
    pub fn accepted_control_ids(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| r.ack == "AA" && !r.duplicate)
            .map(|r| r.control_id)
            .collect()
    }

    /// What the peer printed on stderr.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}
