//! hearth-visit, the telehealth visit service: join links, the virtual waiting room, presence
//! and WebRTC signaling between admitted participants, the patient join page, and scale-out
//! over Redis. It never carries media. The protocol is `hearth-visit-protocol` (PROTOCOL.md).

pub mod clinician;
pub mod ehr;
pub mod error;
pub mod limit;
pub mod settings;
pub mod shared;
pub mod tokens;
pub mod visit;
mod web;
mod ws;

use crate::clinician::Verifier;
use crate::error::SetupError;
use crate::limit::{Attempts, RateLimiter};
use crate::settings::Settings;
use crate::shared::{Hub, Shared};
use crate::tokens::LinkSigner;
use hearth_visit_protocol::{IceConfig, IceServer};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// The running service's shared parts.
pub struct App {
    pub settings: Settings,
    pub signer: LinkSigner,
    pub verifier: Verifier,
    /// Whether a clinician is on a visit's appointment, asked of the EHR.
    pub appointments: ehr::AppointmentCheck,
    pub shared: Shared,
    pub hub: Arc<Hub>,
    /// Attempts per client address, and from all addresses together.
    pub limiter: Attempts,
    /// Link checks and joins per visit (counted once the link is known to be for it).
    pub visit_limiter: RateLimiter<String>,
    /// This instance's id: connections are `<instance>:<n>`.
    pub instance: String,
    next_conn: AtomicU64,
    /// WebSocket connections open now (at most `settings.max_connections`).
    pub open_connections: AtomicUsize,
    /// WebSocket connections open now per client address (IPv6 by /64), at most
    /// `settings.max_connections_per_address` each.
    pub connections_by_address: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    /// The join page's Content-Security-Policy (made once from `public_url`).
    pub csp: String,
    /// Set when the service stops: every open socket closes.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

/// The client for the service's own calls out (the identity provider's discovery and keys,
/// the EHR's token endpoint and Appointments): no redirects followed, 10 s per request.
pub(crate) fn outbound_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// Epoch milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl App {
    pub async fn new(settings: Settings) -> Result<Arc<Self>, SetupError> {
        let hub = Arc::new(Hub::default());
        let instance = tokens::random_id()[..12].to_owned();
        let shared = match &settings.redis_url {
            Some(url) => {
                Shared::redis(
                    url,
                    &settings.redis,
                    hub.clone(),
                    &instance,
                    settings.forget_visits_after,
                )
                .await?
            }
            None => Shared::memory(hub.clone(), settings.forget_visits_after),
        };
        let public = &settings.public_url;
        let ws_origin = format!(
            "{}://{}",
            if public.scheme() == "https" {
                "wss"
            } else {
                "ws"
            },
            public
                .host_str()
                .map_or_else(String::new, |h| match public.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                })
        );
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             media-src 'self' blob: mediastream:; connect-src 'self' {ws_origin}; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        );
        Ok(Arc::new(Self {
            csp,
            signer: LinkSigner::new(&settings.link_secret),
            verifier: Verifier::new(settings.identity.clone()),
            appointments: ehr::AppointmentCheck::new(settings.ehr.clone()),
            limiter: Attempts::new(settings.joins_per_minute, settings.total_joins_per_minute),
            visit_limiter: RateLimiter::new(settings.visit_joins_per_minute),
            settings,
            shared,
            hub,
            instance,
            next_conn: AtomicU64::new(1),
            open_connections: AtomicUsize::new(0),
            connections_by_address: std::sync::Mutex::new(std::collections::HashMap::new()),
            stopping: tokio::sync::watch::Sender::new(false),
        }))
    }

    fn new_conn(&self) -> String {
        format!(
            "{}:{}",
            self.instance,
            self.next_conn.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The ICE servers and policy for one participant; TURN credentials last as long as
    /// `until_ms` (the link) or the configured TTL, whichever is shorter.
    pub fn ice_for(&self, participant: &str, until_ms: Option<u64>) -> IceConfig {
        let mut servers = Vec::new();
        if !self.settings.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.settings.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(turn) = &self.settings.turn {
            let ttl_end = now_ms() + turn.ttl.as_millis() as u64;
            let expires_ms = until_ms.map_or(ttl_end, |u| u.min(ttl_end));
            let (username, credential) =
                tokens::turn_credentials(&turn.secret, participant, expires_ms / 1000);
            servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        IceConfig {
            servers,
            transport_policy: self.settings.ice_transport_policy,
        }
    }

    /// Housekeeping every two seconds: connections of vanished instances count as dropped,
    /// participants gone longer than the grace period have left.
    async fn sweep_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            self.sweep().await;
        }
    }

    pub async fn sweep(&self) {
        let grace = self.settings.grace.as_millis() as u64;
        for id in self.shared.visit_ids().await {
            let visit = match self.shared.get(&id).await {
                Ok(Some(visit)) => visit,
                // Expired from Redis: forget its id.
                Ok(None) => {
                    self.shared.forget(&id).await;
                    continue;
                }
                Err(_) => continue,
            };
            let alive = self.shared.alive(&visit.instances(), &self.instance).await;
            let is_alive = |i: &str| alive.iter().any(|a| a == i);
            if !visit.needs_sweep(now_ms(), grace, &is_alive) {
                continue;
            }
            let outs = self
                .shared
                .update(&id, |v| Ok(v.sweep(now_ms(), grace, &is_alive)))
                .await;
            if let Ok(outs) = outs {
                self.shared.publish(outs).await;
            }
        }
    }
}

/// A started service.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    task: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops serving and closes every open socket.
    pub fn stop(&self) {
        self.task.abort();
        self.sweeper.abort();
        let _ = self.app.stopping.send(true);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the service on `listener` (use `settings.listen` in production).
pub async fn start(settings: Settings, listener: TcpListener) -> Result<Running, SetupError> {
    let addr = listener.local_addr().map_err(|e| SetupError::Listen {
        addr: settings.listen.to_string(),
        reason: e.to_string(),
    })?;
    let app = App::new(settings).await?;
    let router = web::router(app.clone());
    let sweeper = tokio::spawn(app.clone().sweep_forever());
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the server stopped");
        }
    });
    Ok(Running {
        addr,
        app,
        task,
        sweeper,
    })
}
