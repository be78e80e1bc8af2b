//! Hearth's side of the visit service (`hearth-visit`, protocol in hearth-visit-protocol):
//! join links for an appointment, and a clinician's presence connection per visit that keeps
//! the waiting room's roster current, admits, and survives dropped connections (resume, then a
//! fresh `host` if the place lapsed).
//!
//! The service is shown a token meant for it alone ([`ServiceTokens`]: in Hearth, one asked
//! for with the service as the RFC 8707 `resource`), never the EHR's access token.

use futures_util::{SinkExt, StreamExt};
use hearth_visit_protocol::{
    ClientMsg, ErrorBody, ErrorCode, LinkRequest, LinkResponse, Participant, Role, Secret,
    ServerMsg, VisitSnapshot,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use url::Url;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VisitError {
    /// The visit service could not be reached.
    #[error("the visit service at {base} cannot be reached: {reason}")]
    Unreachable { base: String, reason: String },
    /// Nobody is signed in (no access token to show the service).
    #[error("sign in first: the visit service needs the clinician's sign-in")]
    NotSignedIn,
    /// The sign-in could not give a token for the visit service.
    #[error("no token for the visit service: {0}")]
    NoToken(String),
    /// The service refused, with its stable code and sentence.
    #[error("the visit service refused: {}", .0.message)]
    Refused(ErrorBody),
    /// The service answered something that is not the protocol.
    #[error("the visit service answered something unreadable: {0}")]
    Protocol(String),
}

impl VisitError {
    /// The service's code, when it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused(body) => Some(body.code),
            _ => None,
        }
    }
}

/// Where the client gets the clinician's token for the visit service: a token whose audience
/// is the service ([`resource_indicator`] of its address), asked for each call (the source
/// keeps it while it is fresh).
pub trait ServiceTokens: Send + Sync {
    /// The token to show the service `resource`.
    fn token<'a>(&'a self, resource: &'a str) -> TokenFuture<'a>;
}

/// What [`ServiceTokens::token`] returns.
pub type TokenFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Secret, VisitError>> + Send + 'a>>;

/// The scope Hearth asks for in a visit service token: who the user is, nothing of the chart.
pub const SERVICE_SCOPE: &str = "openid fhirUser";

fn base_url(base: &str) -> Result<Url, VisitError> {
    let mut url = Url::parse(base).map_err(|e| VisitError::Unreachable {
        base: base.to_owned(),
        reason: format!("not a URL: {e}"),
    })?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// The service's RFC 8707 resource indicator, from its address as configured: the URL with a
/// trailing `/` (`https://visit.example.org/`), the form the service's `public_url` takes.
pub fn resource_indicator(service_url: &str) -> Result<String, VisitError> {
    base_url(service_url).map(String::from)
}

/// A connection to one visit service.
#[derive(Clone)]
pub struct VisitClient {
    base: Url,
    http: reqwest::Client,
    tokens: Arc<dyn ServiceTokens>,
}

impl VisitClient {
    /// `base` is the service's address (`https://visit.example.org/`); the clinician's token
    /// for it comes from `tokens` at each call.
    pub fn new(base: &str, tokens: Arc<dyn ServiceTokens>) -> Result<Self, VisitError> {
        let base = base_url(base)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| VisitError::Unreachable {
                base: base.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self { base, http, tokens })
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    async fn token(&self) -> Result<Secret, VisitError> {
        self.tokens.token(self.base.as_str()).await
    }

    /// The clinician's token for this service (for a `host` sent on a connection of the
    /// caller's own, such as the media engine's).
    pub async fn service_token(&self) -> Result<Secret, VisitError> {
        self.token().await
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> VisitError {
        VisitError::Unreachable {
            base: self.base.to_string(),
            reason: e.to_string(),
        }
    }

    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, VisitError> {
        let ok = response.status().is_success();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if ok {
            serde_json::from_slice(&bytes).map_err(|e| VisitError::Protocol(e.to_string()))
        } else {
            Err(serde_json::from_slice::<ErrorBody>(&bytes)
                .map(VisitError::Refused)
                .unwrap_or_else(|e| VisitError::Protocol(e.to_string())))
        }
    }

    /// A join link for `appointment` (its FHIR id) and its window (epoch ms).
    pub async fn link(
        &self,
        appointment: &str,
        role: Role,
        start_ms: u64,
        end_ms: u64,
    ) -> Result<LinkResponse, VisitError> {
        let body = serde_json::to_vec(&LinkRequest {
            appointment: appointment.to_owned(),
            role,
            start_ms,
            end_ms,
        })
        .map_err(|e| VisitError::Protocol(e.to_string()))?;
        let response = self
            .http
            .post(self.url("v1/links"))
            .bearer_auth(self.token().await?.expose())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.answer(response).await
    }

    /// Everyone who joined `visit`, with their times (for the Encounter).
    pub async fn snapshot(&self, visit: &str) -> Result<VisitSnapshot, VisitError> {
        let response = self
            .http
            .get(self.url(&format!("v1/visits/{visit}")))
            .bearer_auth(self.token().await?.expose())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.answer(response).await
    }

    /// Starts watching `visit` as its clinician (no media): the roster follows every change;
    /// [`Presence::admit`] lets someone in. Reconnects by itself until dropped.
    pub fn watch(&self, visit: &str) -> Presence {
        let (roster_tx, roster) = watch::channel(RoomState::Connecting);
        let (commands, rx) = mpsc::channel(16);
        let task = tokio::spawn(run(self.clone(), visit.to_owned(), roster_tx, rx));
        Presence {
            roster,
            commands,
            task,
        }
    }

    /// The service's WebSocket address (`wss://…/v1/ws`).
    pub fn ws_url(&self) -> Url {
        let mut url = self.url("v1/ws");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        let _ = url.set_scheme(scheme);
        url
    }
}

/// What Hearth knows of a visit's room.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomState {
    Connecting,
    /// Everyone in the visit now.
    Roster(Vec<Participant>),
    /// The service cannot be reached (retrying) or refused (not retrying).
    Trouble(VisitError),
    Ended,
}

impl RoomState {
    /// Who is in the waiting room now.
    pub fn waiting(&self) -> Vec<&Participant> {
        match self {
            Self::Roster(people) => people
                .iter()
                .filter(|p| p.standing == hearth_visit_protocol::Standing::Waiting)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A clinician's presence connection to one visit.
pub struct Presence {
    pub roster: watch::Receiver<RoomState>,
    commands: mpsc::Sender<ClientMsg>,
    task: tokio::task::JoinHandle<()>,
}

impl Presence {
    pub async fn admit(&self, participant: &str) -> Result<(), VisitError> {
        self.command(ClientMsg::Admit {
            participant: participant.to_owned(),
        })
        .await
    }

    pub async fn remove(&self, participant: &str) -> Result<(), VisitError> {
        self.command(ClientMsg::Remove {
            participant: participant.to_owned(),
        })
        .await
    }

    pub async fn end(&self) -> Result<(), VisitError> {
        self.command(ClientMsg::End).await
    }

    /// A sender of commands for this visit (to send without holding a borrow of `self`).
    pub fn sender(&self) -> mpsc::Sender<ClientMsg> {
        self.commands.clone()
    }

    async fn command(&self, msg: ClientMsg) -> Result<(), VisitError> {
        self.commands
            .send(msg)
            .await
            .map_err(|_| VisitError::Unreachable {
                base: String::new(),
                reason: "the presence connection has stopped".into(),
            })
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The presence connection: host, then follow; on a drop, resume (or host again).
async fn run(
    client: VisitClient,
    visit: String,
    roster: watch::Sender<RoomState>,
    mut commands: mpsc::Receiver<ClientMsg>,
) {
    let mut me: Option<(String, Secret)> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        let first = match &me {
            Some((participant, resume)) => ClientMsg::Resume {
                visit: visit.clone(),
                participant: participant.clone(),
                resume: resume.clone(),
            },
            None => match client.token().await {
                Ok(access_token) => ClientMsg::Host {
                    access_token,
                    visit: visit.clone(),
                    media: false,
                    name: None,
                },
                Err(e) => {
                    let _ = roster.send(RoomState::Trouble(e));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        match session(&client, first, &roster, &mut commands, &mut me).await {
            Ok(Ended::Visit) => {
                let _ = roster.send(RoomState::Ended);
                return;
            }
            Ok(Ended::Dropped) => backoff = Duration::from_millis(250),
            Err(e) => {
                if e.code() == Some(ErrorCode::ResumeRefused) {
                    me = None;
                    continue;
                }
                let fatal = matches!(
                    e.code(),
                    Some(
                        ErrorCode::VisitOver
                            | ErrorCode::NotClinician
                            | ErrorCode::NotOnAppointment
                    )
                );
                let _ = roster.send(RoomState::Trouble(e));
                if fatal {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

enum Ended {
    Visit,
    Dropped,
}

async fn session(
    client: &VisitClient,
    first: ClientMsg,
    roster: &watch::Sender<RoomState>,
    commands: &mut mpsc::Receiver<ClientMsg>,
    me: &mut Option<(String, Secret)>,
) -> Result<Ended, VisitError> {
    let (mut socket, _) = tokio_tungstenite::connect_async(client.ws_url().as_str())
        .await
        .map_err(|e| client.unreachable(e))?;
    send(&mut socket, &first)
        .await
        .map_err(|e| client.unreachable(e))?;
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    let mut ping_id = 0;
    loop {
        tokio::select! {
            incoming = socket.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(Ended::Dropped),
                    Some(Ok(_)) => continue,
                };
                // A message this version does not know is skipped (PROTOCOL.md: the service may
                // add messages within v1).
                let Ok(msg) = serde_json::from_str::<ServerMsg>(&text) else { continue };
                match msg {
                    ServerMsg::Welcome { participant, resume, .. } => *me = Some((participant, resume)),
                    ServerMsg::Roster { participants, .. } => {
                        let _ = roster.send(RoomState::Roster(participants));
                    }
                    ServerMsg::Ended => return Ok(Ended::Visit),
                    ServerMsg::Error(body) => {
                        // Refusals of a command are shown; refusals of the connection end it.
                        match body.code {
                            ErrorCode::ResumeRefused | ErrorCode::VisitOver | ErrorCode::Unauthorized
                            | ErrorCode::NotClinician | ErrorCode::RateLimited | ErrorCode::NotJoined
                            | ErrorCode::NotOnAppointment | ErrorCode::EhrUnavailable => {
                                return Err(VisitError::Refused(body));
                            }
                            _ => {
                                let _ = roster.send(RoomState::Trouble(VisitError::Refused(body)));
                            }
                        }
                    }
                    _ => {}
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return Ok(Ended::Dropped) };
                if send(&mut socket, &command).await.is_err() {
                    return Ok(Ended::Dropped);
                }
            }
            _ = ping.tick() => {
                ping_id += 1;
                if send(&mut socket, &ClientMsg::Ping { id: ping_id }).await.is_err() {
                    return Ok(Ended::Dropped);
                }
            }
        }
    }
}

async fn send(
    socket: &mut Socket,
    msg: &ClientMsg,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let text = serde_json::to_string(msg).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}
