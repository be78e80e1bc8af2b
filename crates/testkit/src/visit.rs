//! Peers for the visit service's tests, from Debian's packages (installed by `scripts/setup`):
//! ChromeDriver driving headless Chromium with fake camera and microphone, coturn as the TURN
//! relay, and Redis for scale-out. Each test starts its own, on loopback.

use crate::{free_port, wait_until, KillOnDrop};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn need(binary: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(binary);
    assert!(
        path.exists(),
        "{binary} is missing: install Debian's {package} (scripts/setup does)"
    );
    path
}

/// A ChromeDriver (Debian `chromium-driver`) on its own port; one browser per session.
pub struct ChromeDriver {
    pub url: String,
    _process: KillOnDrop,
    /// Profiles of the browsers it starts (fresh per browser).
    pub profiles: tempfile::TempDir,
}

impl ChromeDriver {
    pub fn start() -> Self {
        let driver = need("/usr/bin/chromedriver", "chromium-driver");
        need("/usr/bin/chromium", "chromium");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromedriver: {e}"));
        let process = KillOnDrop(child);
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        wait_until(Duration::from_secs(30), "chromedriver to answer", || {
            reqwest::blocking::get(&status)
                .ok()
                .and_then(|r| r.text().ok())
                .is_some_and(|t| t.contains("\"ready\":true"))
        });
        Self {
            url,
            _process: process,
            profiles: tempfile::tempdir().unwrap_or_else(|e| panic!("profile dir: {e}")),
        }
    }

    /// W3C capabilities for a headless Chromium with fake media devices and a fresh profile
    /// named `who`.
    pub fn capabilities(&self, who: &str) -> serde_json::Map<String, serde_json::Value> {
        self.capabilities_with(who, &[])
    }

    /// As [`ChromeDriver::capabilities`], with `extra` Chromium flags.
    pub fn capabilities_with(
        &self,
        who: &str,
        extra: &[String],
    ) -> serde_json::Map<String, serde_json::Value> {
        let profile = self.profiles.path().join(who);
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            "--window-size=1024,768",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .chain(extra.iter().cloned())
        .collect::<Vec<_>>();
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        });
        match caps {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("a JSON object literal"),
        }
    }
}

impl Drop for ChromeDriver {
    /// Browsers outlive ChromeDriver when a test fails before closing its session: end every
    /// process started with one of this driver's profiles.
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(format!("user-data-dir={}", self.profiles.path().display()))
            .status();
    }
}

/// coturn (Debian `coturn`) with the TURN REST API shared secret, relaying on loopback only.
pub struct Coturn {
    pub port: u16,
    pub secret: String,
    _process: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl Coturn {
    pub fn start() -> Self {
        let turnserver = need("/usr/bin/turnserver", "coturn");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("coturn dir: {e}"));
        let port = free_udp_port();
        let secret = format!("turn-secret-{}", rand::random::<u64>());
        // A relay port range of its own, away from the ephemeral ports, so parallel tests
        // do not collide: 100 ports picked by the listening port.
        let min = 20_000 + (port % 300) * 100;
        let conf = dir.path().join("turnserver.conf");
        std::fs::write(
            &conf,
            format!(
                "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\n\
                 min-port={min}\nmax-port={}\nuse-auth-secret\nstatic-auth-secret={secret}\n\
                 realm=hearth.test\nfingerprint\nno-tls\nno-dtls\nno-cli\nno-tcp-relay\n\
                 allow-loopback-peers\nno-multicast-peers\nsimple-log\nno-stdout-log\nlog-file={}\n\
                 pidfile={}\nuserdb={}\n",
                min + 99,
                dir.path().join("turnserver.log").display(),
                dir.path().join("turnserver.pid").display(),
                dir.path().join("turndb").display(),
            ),
        )
        .unwrap_or_else(|e| panic!("writing coturn config: {e}"));
        let child = Command::new(turnserver)
            .args(["-c", &conf.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting turnserver: {e}"));
        let process = KillOnDrop(child);
        wait_until(Duration::from_secs(20), "coturn to answer STUN", || {
            stun_answers(port)
        });
        Self {
            port,
            secret,
            _process: process,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free UDP port: {e}"))
}

/// Sends a STUN Binding request (RFC 5389) and waits briefly for a success answer.
fn stun_answers(port: u16) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    request.extend(rand::random::<[u8; 12]>());
    if socket.send_to(&request, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut answer = [0u8; 512];
    match socket.recv(&mut answer) {
        Ok(n) => {
            n >= 20 && answer[0] == 0x01 && answer[1] == 0x01 && answer[8..20] == request[8..20]
        }
        Err(_) => false,
    }
}

/// A Redis server (Debian `redis-server`) on a Unix socket of its own, nothing persisted.
pub struct Redis {
    pub url: String,
    process: KillOnDrop,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with `extra` arguments (e.g. `--requirepass`, TLS ports); still reached on its
    /// Unix socket (`url`), which is ready when it answers PING (or asks for AUTH).
    pub fn start_with(extra: &[&str]) -> Self {
        let server = need("/usr/bin/redis-server", "redis-server");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("redis dir: {e}"));
        let socket = dir.path().join("redis.sock");
        let child = Command::new(server)
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting redis-server: {e}"));
        let process = KillOnDrop(child);
        wait_until(Duration::from_secs(20), "redis to answer PING", || {
            use std::io::{Read, Write};
            let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 16];
            s.write_all(b"PING\r\n").is_ok()
                && s.read(&mut buf).is_ok_and(|n| {
                    buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH")
                })
        });
        Self {
            url: format!("redis+unix://{}", socket.display()),
            process,
            dir,
        }
    }

    /// The path of its Unix socket.
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }
}
