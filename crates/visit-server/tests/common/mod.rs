//! The visit service's test harness: the service itself (in process, or as `hearth-visit`
//! processes), a real identity provider for the clinician's token, and a protocol client.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness"
)]

pub mod browser;

use futures_util::{SinkExt, StreamExt};
use hearth_testkit::smart::{SmartEhr, USER_FHIR, VISIT_CLIENT_ID, VISIT_CLIENT_KID};
use hearth_visit_protocol::{
    ClientMsg, ErrorBody, ErrorCode, LinkRequest, LinkResponse, Role, Secret, ServerMsg,
};
use hearth_visit_server::settings::{Algorithm, Ehr, Settings};
use hearth_visit_server::Running;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const LINK_SECRET: &str = "test-link-secret-0123456789abcdef0123456789";
/// The audience the services under test accept (as a deployment's public URL behind its load
/// balancer): tokens are asked for it (RFC 8707 `resource`) before a service starts, and two
/// instances on Redis accept the same ones.
pub const AUDIENCE: &str = "https://visit.hearth.test/";

/// Whether a message is the service's `error` with `code`.
pub fn is_error(code: ErrorCode) -> impl Fn(&ServerMsg) -> bool {
    move |m| matches!(m, ServerMsg::Error(ErrorBody { code: c, .. }) if *c == code)
}

/// The stable code of an HTTP error body; panics on another body.
pub fn code_of(body: &str) -> ErrorCode {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("{body}: {e}"))
        .code
}

/// The clinician's token for the service under test ([`AUDIENCE`]), as Hearth asks for it.
pub fn clinician_token(idp: &SmartEhr) -> String {
    idp.clinician_access_token_for(AUDIENCE)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The service's credential at `idp`'s EHR (SMART Backend Services, its registered key).
pub fn ehr_settings(idp: &SmartEhr) -> Ehr {
    Ehr {
        fhir_base_url: idp.fhir_base.clone(),
        client_id: VISIT_CLIENT_ID.to_owned(),
        private_key_pem: std::fs::read(idp.visit_client_key.path()).unwrap(),
        algorithm: Algorithm::ES384,
        key_id: Some(VISIT_CLIENT_KID.to_owned()),
    }
}

/// An EHR (identity provider and FHIR server) whose `visits` are Appointments with the test
/// clinician ([`USER_FHIR`]) as a participant, written to its FHIR server directly.
pub fn ehr_with(visits: &[&str]) -> SmartEhr {
    let idp = SmartEhr::start();
    for visit in visits {
        idp.put_appointment(visit, &[USER_FHIR]);
    }
    idp
}

/// Settings for a service at `port`, trusting `idp`'s tokens for [`AUDIENCE`] and asking its
/// EHR about appointments.
pub fn settings(idp: &SmartEhr, port: u16) -> Settings {
    let mut s = Settings::loopback(port, &idp.issuer, LINK_SECRET.as_bytes());
    s.identity.audiences = vec![AUDIENCE.to_owned()];
    s.ehr = Some(ehr_settings(idp));
    s
}

/// Starts the service in this process with `settings` (its port is chosen here).
pub async fn serve(idp: &SmartEhr, tweak: impl FnOnce(&mut Settings)) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut s = settings(idp, port);
    tweak(&mut s);
    hearth_visit_server::start(s, listener).await.unwrap()
}

pub fn now_ms() -> u64 {
    hearth_visit_server::now_ms()
}

/// Asks the service for a link, as Hearth does.
pub async fn link(base: &str, token: &str, appointment: &str, role: Role) -> LinkResponse {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/links"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(
            serde_json::to_string(&LinkRequest {
                appointment: appointment.into(),
                role,
                start_ms: now_ms(),
                end_ms: now_ms() + 30 * 60 * 1000,
            })
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "link: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// The token in a join link (`.../join#<token>`).
pub fn token_of(link: &LinkResponse) -> Secret {
    Secret::new(link.url.expose().split_once('#').unwrap().1)
}

/// Waits until `check` yields a value, polling every 20 ms; panics naming `what` on timeout.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A protocol client: one participant's socket.
pub struct Ws {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub participant: String,
    pub resume: Option<Secret>,
    pub visit: String,
}

impl Ws {
    pub async fn connect(base: &str) -> Self {
        let url = format!("{}/v1/ws", base.replacen("http", "ws", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            socket,
            participant: String::new(),
            resume: None,
            visit: String::new(),
        }
    }

    /// A socket opened through a trusted proxy for the client `forwarded`
    /// (`X-Forwarded-For`); the HTTP status when the service refuses it, with its body.
    pub async fn connect_from(base: &str, forwarded: &str) -> Result<Self, (u16, String)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/v1/ws", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-forwarded-for", forwarded.parse().unwrap());
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .expect("the service answers within 10 s")
        {
            Ok((socket, _)) => Ok(Self {
                socket,
                participant: String::new(),
                resume: None,
                visit: String::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err((
                r.status().as_u16(),
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
            )),
            Err(e) => panic!("connect: {e}"),
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        let text = serde_json::to_string(msg).unwrap();
        self.socket.send(Message::Text(text.into())).await.unwrap();
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.to_owned().into()))
            .await
            .unwrap();
    }

    /// The next message (within 10 s), or `None` if the socket closed.
    pub async fn next(&mut self) -> Option<ServerMsg> {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a message within 10 s");
            match next {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Skips messages until one matches; panics if the socket closes first.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            match self.next().await {
                Some(m) if pred(&m) => return m,
                Some(_) => continue,
                None => panic!("the socket closed while waiting for {what}"),
            }
        }
    }

    /// Reads `welcome` and remembers who we are.
    pub async fn welcome(&mut self) -> ServerMsg {
        let m = self.next().await.expect("welcome");
        match &m {
            ServerMsg::Welcome {
                participant,
                resume,
                visit,
                ..
            } => {
                self.participant = participant.clone();
                self.resume = Some(resume.clone());
                self.visit = visit.clone();
            }
            other => panic!("expected welcome, got {other:?}"),
        }
        m
    }

    /// Joins with a link token and reads `welcome`.
    pub async fn join(base: &str, token: &Secret, name: &str) -> Self {
        let mut ws = Self::connect(base).await;
        ws.send(&ClientMsg::Join {
            token: token.clone(),
            name: name.into(),
            visit: None,
        })
        .await;
        ws.welcome().await;
        ws
    }

    /// Hosts `visit` as the clinician with `access_token`, and reads `welcome`.
    pub async fn host(base: &str, access_token: &str, visit: &str, media: bool) -> Self {
        let mut ws = Self::connect(base).await;
        ws.send(&ClientMsg::Host {
            access_token: Secret::new(access_token),
            visit: visit.into(),
            media,
            name: None,
        })
        .await;
        ws.welcome().await;
        ws
    }

    /// Picks up where `self` left off on a new connection to `base`.
    pub async fn resume(&self, base: &str) -> Self {
        let mut ws = Self::connect(base).await;
        ws.send(&ClientMsg::Resume {
            visit: self.visit.clone(),
            participant: self.participant.clone(),
            resume: self.resume.clone().unwrap(),
        })
        .await;
        ws.welcome().await;
        ws
    }

    pub async fn close(&mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// The roster entry for `id` in a roster message.
pub fn roster_entry<'a>(
    msg: &'a ServerMsg,
    id: &str,
) -> Option<&'a hearth_visit_protocol::Participant> {
    match msg {
        ServerMsg::Roster { participants, .. } => participants.iter().find(|p| p.id == id),
        _ => None,
    }
}

/// `hearth-visit` as a process of its own (so it can be killed), logging to a file.
pub struct Instance {
    pub base: String,
    pub child: hearth_testkit::KillOnDrop,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Instance {
    /// Starts `hearth-visit` with a config file trusting `idp`, sharing state through
    /// `redis_url` if given; `extra` is appended to the config.
    pub fn spawn(idp: &SmartEhr, redis_url: Option<&str>, extra: &str) -> Self {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let port = hearth_testkit::free_port();
        let mut toml = format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}/\"\n\
             grace_seconds = 60\n"
        );
        for limit in [
            "joins_per_minute",
            "total_joins_per_minute",
            "visit_joins_per_minute",
        ] {
            if !extra.lines().any(|l| l.starts_with(&format!("{limit} ="))) {
                toml.push_str(&format!("{limit} = 100000\n"));
            }
        }
        if let Some(url) = redis_url {
            toml.push_str(&format!("redis_url = \"{url}\"\n"));
        }
        toml.push_str(extra);
        toml.push_str(&format!(
            "[identity]\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\nclient_id = \"hearth\"\n",
            idp.issuer
        ));
        toml.push_str(&format!(
            "[ehr]\nfhir_base_url = \"{}\"\nclient_id = \"{VISIT_CLIENT_ID}\"\n\
             private_key_file = \"{}\"\nkey_id = \"{VISIT_CLIENT_KID}\"\n",
            idp.fhir_base,
            idp.visit_client_key.path().display()
        ));
        let config = dir.path().join("hearth-visit.toml");
        std::fs::write(&config, toml).unwrap();
        let log = dir.path().join("hearth-visit.log");
        #[allow(
            clippy::option_env_unwrap,
            reason = "absent only where this file is borrowed (the media engine's tests and bench), which never start it"
        )]
        let mut child = std::process::Command::new(
            // Defined for the visit service's own tests (the media engine's borrow this file).
            option_env!("CARGO_BIN_EXE_hearth-visit")
                .expect("only the visit service's tests start it"),
        )
        .arg("--config")
        .arg(&config)
        .env("HEARTH_VISIT_LINK_SECRET", LINK_SECRET)
        .env("HEARTH_VISIT_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout);
        let mut ready = String::new();
        lines.read_line(&mut ready).unwrap();
        assert!(
            ready.contains("listening on"),
            "hearth-visit did not start: {ready}{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let log_copy = log.clone();
        // Everything it prints after the ready line goes to the log file too.
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new()
                .append(true)
                .open(log_copy)
                .unwrap();
            let _ = std::io::copy(&mut lines, &mut out);
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            child: hearth_testkit::KillOnDrop(child),
            log,
            _dir: dir,
        }
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
