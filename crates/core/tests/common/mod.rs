//! What the core's tests against the real peers share: a workstation over the SMART peer's EHR
//! (its profile, configuration and "browser" in the test's folder), its sign-in played through
//! the scripted browser, and the real visit service.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness; each test binary uses part of it"
)]

use futures_util::{SinkExt, StreamExt};
use hearth_core::clock::ManualClock;
use hearth_core::launch::{EhrLaunch, LaunchOptions};
use hearth_core::Workstation;
use hearth_testkit::smart::{
    browser_login, SmartEhr, USER_NAME, USER_PASSWORD, VISIT_CLIENT_ID, VISIT_CLIENT_KID,
};
use hearth_testkit::wait_until;
use hearth_visit_protocol::{ClientMsg, Secret, ServerMsg};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub struct Desk {
    pub ws: Arc<Workstation>,
    pub idle: Arc<hearth_auth::ManualClock>,
    pub url_file: PathBuf,
    pub data_dir: PathBuf,
}

pub fn desk(home: &Path, ehr: &SmartEhr, launch: Option<EhrLaunch>) -> Desk {
    desk_with(home, ehr, launch, "")
}

/// [`desk`] with `extra` configuration sections.
pub fn desk_with(home: &Path, ehr: &SmartEhr, launch: Option<EhrLaunch>, extra: &str) -> Desk {
    let clock = Arc::new(ManualClock::new(chrono::Local::now().fixed_offset()));
    desk_clocked(home, ehr, launch, extra, clock)
}

/// [`desk_with`] on `clock` (the workstation's and its sync engine's present time).
pub fn desk_clocked(
    home: &Path,
    ehr: &SmartEhr,
    launch: Option<EhrLaunch>,
    extra: &str,
    clock: Arc<dyn hearth_core::clock::Clock>,
) -> Desk {
    std::fs::create_dir_all(home).unwrap();
    let url_file = home.join("sign-in-url.txt");
    let config = home.join("config.toml");
    // The "browser" is a command that writes the URL down; the test plays the browser.
    std::fs::write(
        &config,
        ehr.machine_config(
            &url_file,
            &format!("[session]\nidle_lock_minutes = 10\n{extra}"),
        ),
    )
    .unwrap();
    let data_dir = home.join("profile");
    let options = LaunchOptions {
        data_dir: Some(data_dir.clone()),
        config_path: config,
        ehr_launch: launch,
        ..LaunchOptions::default()
    };
    // The idle lock's wall clock starts an hour back: the tests move it by up to an hour
    // and the provider's auth_time is the real time, which an unlock must show is after
    // the lock.
    let idle = Arc::new(hearth_auth::ManualClock::starting_at(
        std::time::SystemTime::now() - Duration::from_secs(3600),
    ));
    let ws = Arc::new(Workstation::start_with_idle_clock(
        &options,
        clock,
        idle.clone(),
    ));
    Desk {
        ws,
        idle,
        url_file,
        data_dir,
    }
}

/// Runs the workstation's sign-in while playing the browser it opened.
pub async fn sign_in(desk: &Desk) -> Result<hearth_ipc::UserSummary, hearth_core::CoreError> {
    let _ = std::fs::remove_file(&desk.url_file);
    let ws = desk.ws.clone();
    let signing_in = tokio::spawn(async move { ws.sign_in().await });
    let url_file = desk.url_file.clone();
    let (done, browser) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        wait_until(
            Duration::from_secs(30),
            "the browser command to run",
            || url_file.exists(),
        );
        let url = std::fs::read_to_string(&url_file).unwrap();
        let redirect = url::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .unwrap()
            .1
            .into_owned();
        let _ = done.send(browser_login(&url, &redirect, USER_NAME, USER_PASSWORD));
    });
    browser.await.unwrap().unwrap();
    signing_in.await.unwrap()
}

/// The real visit service on loopback, trusting the provider's tokens for its own address
/// (the default) and asking `ehr` about appointments with its own credential; its address
/// (with a trailing `/`, the form of its `public_url`).
pub async fn visit_service(ehr: &SmartEhr) -> (hearth_visit_server::Running, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut settings = hearth_visit_server::settings::Settings::loopback(
        port,
        &ehr.issuer,
        b"core-visit-link-secret-0123456789abcdef",
    );
    settings.ehr = Some(hearth_visit_server::settings::Ehr {
        fhir_base_url: ehr.fhir_base.clone(),
        client_id: VISIT_CLIENT_ID.to_owned(),
        private_key_pem: std::fs::read(ehr.visit_client_key.path()).unwrap(),
        algorithm: hearth_visit_server::settings::Algorithm::ES384,
        key_id: Some(VISIT_CLIENT_KID.to_owned()),
    });
    let service = hearth_visit_server::start(settings, listener)
        .await
        .unwrap();
    (service, format!("http://127.0.0.1:{port}/"))
}

/// A participant's socket to the visit service (a protocol client: the patient's or a
/// guest's join page, or a clinician's call).
pub struct Ws {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// The participant id the service gave in `welcome`.
    pub participant: String,
}

impl Ws {
    async fn open(service_url: &str, first: ClientMsg) -> Self {
        let url = format!("{}v1/ws", service_url.replacen("http", "ws", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut ws = Self {
            socket,
            participant: String::new(),
        };
        ws.send(&first).await;
        match ws
            .until("welcome", |m| matches!(m, ServerMsg::Welcome { .. }))
            .await
        {
            ServerMsg::Welcome { participant, .. } => ws.participant = participant,
            _ => unreachable!("matched above"),
        }
        ws
    }

    /// Joins with the link `url` (`.../join#<token>`) under `name`.
    pub async fn join(service_url: &str, link: &Secret, name: &str) -> Self {
        let token = link.expose().split_once('#').unwrap().1;
        let first = ClientMsg::Join {
            token: Secret::new(token),
            name: name.into(),
            visit: None,
        };
        Self::open(service_url, first).await
    }

    /// Hosts `visit` as the clinician whose token is `access_token`.
    pub async fn host(service_url: &str, access_token: &str, visit: &str, media: bool) -> Self {
        let first = ClientMsg::Host {
            access_token: Secret::new(access_token),
            visit: visit.into(),
            media,
            name: None,
        };
        Self::open(service_url, first).await
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        let text = serde_json::to_string(msg).unwrap();
        self.socket.send(Message::Text(text.into())).await.unwrap();
    }

    /// Skips messages until one matches (each within 10 s); panics naming `what` if the
    /// socket closes or goes quiet first.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no message within 10 s while waiting for {what}"));
            match next {
                Some(Ok(Message::Text(t))) => {
                    let msg: ServerMsg = serde_json::from_str(&t).unwrap();
                    if let ServerMsg::Error(e) = &msg {
                        panic!("the service refused while waiting for {what}: {e:?}");
                    }
                    if pred(&msg) {
                        return msg;
                    }
                }
                Some(Ok(_)) => {}
                _ => panic!("the socket closed while waiting for {what}"),
            }
        }
    }
}
