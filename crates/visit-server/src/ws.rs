//! The WebSocket `/v1/ws`: one participant per connection. The first message says who
//! (`join`, `host`, `resume`); then admit/remove/end (clinicians), signaling, leave, ping.

use crate::error::Refusal;
use crate::limit::Bucket;
use crate::shared::Link;
use crate::visit::{clean_name, host_name, Delivery, Newcomer};
use crate::web::client_ip;
use crate::{now_ms, tokens, App};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hearth_visit_protocol::{
    ClientMsg, ErrorCode, IceConfig, Role, Secret, ServerMsg, Standing, PROTOCOL_VERSION,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Largest message accepted (an SDP with many candidates fits easily).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// A connection silent this long is closed (clients ping every 20 s).
const IDLE: Duration = Duration::from_secs(60);

pub async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // A browser names the page that opened the socket: only our own page (or a configured
    // origin) may. Native clients (Hearth) send no Origin.
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let ours = app.settings.public_origin();
        if origin != ours && !app.settings.allowed_origins.iter().any(|o| o == origin) {
            return (
                StatusCode::FORBIDDEN,
                "this page may not connect to the visit service",
            )
                .into_response();
        }
    }
    let ip = client_ip(&app, peer, &headers);
    let slot = match Slot::take(&app, ip) {
        Ok(slot) => slot,
        Err(why) => return (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    };
    // Frames as well as messages are capped: a declared 16 MiB frame would otherwise be
    // buffered whole before the message limit applies.
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            let mut slot = slot;
            serve(socket, app, ip, &mut slot).await;
            drop(slot);
        })
}

/// One of the instance's `max_connections` places, and until the connection says who it is
/// one of its address's `max_connections_per_address`; given back when dropped. Only sockets
/// that have not joined count against their address: a clinic behind one NAT address holds as
/// many joined ones (each a valid link or clinician token) as it needs.
struct Slot {
    app: Arc<App>,
    address: Option<IpAddr>,
}

/// The address a connection counts against: an IPv6 client usually holds a whole /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
        v4 => v4,
    }
}

impl Slot {
    fn take(app: &Arc<App>, ip: IpAddr) -> Result<Self, &'static str> {
        let address = address_key(ip);
        let mut by_address = app
            .connections_by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let held = by_address.get(&address).copied().unwrap_or(0);
        if held >= app.settings.max_connections_per_address {
            return Err(
                "too many connections from this address that have not joined a visit; try again",
            );
        }
        let max = app.settings.max_connections;
        app.open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| "the visit service is at its connection limit; try again")?;
        by_address.insert(address, held + 1);
        Ok(Self {
            app: app.clone(),
            address: Some(address),
        })
    }

    /// The connection said who it is: its address's place is free for another.
    fn release_address(&mut self) {
        let Some(address) = self.address.take() else {
            return;
        };
        let mut by_address = self
            .app
            .connections_by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                by_address.remove(&address);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release_address();
        self.app.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who this connection is, once it said so.
struct Joined {
    visit: String,
    participant: String,
    conn: String,
}

async fn serve(socket: WebSocket, app: Arc<App>, ip: IpAddr, slot: &mut Slot) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Delivery>(crate::shared::CONNECTION_QUEUE);
    let tx = Link {
        tx,
        abort: Arc::new(Notify::new()),
    };
    let abort = tx.abort.clone();
    let mut messages = Bucket::new(
        app.settings.messages_per_second,
        4 * u64::from(app.settings.messages_per_second),
    );
    let mut bytes = Bucket::new(
        app.settings.bytes_per_second,
        (4 * u64::from(app.settings.bytes_per_second)).max(MAX_MESSAGE as u64),
    );
    let mut aborted = false;
    let writer = tokio::spawn(async move {
        let mut held = None;
        while let Some(delivery) = rx.recv().await {
            let mut msg = match delivery {
                Delivery::Msg(msg) => msg,
                Delivery::Close => break,
            };
            turn_after_admission(&mut msg, &mut held);
            let last = matches!(msg, ServerMsg::Removed | ServerMsg::Ended);
            let Ok(text) = serde_json::to_string(&msg) else {
                continue;
            };
            if sink.send(Message::Text(text.into())).await.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut joined: Option<Joined> = None;
    let mut stopping = app.stopping.subscribe();
    // Until it says who it is, a connection has `join_within`, however much it pings.
    let join_by = tokio::time::Instant::now() + app.settings.join_within;
    loop {
        let wait = if joined.is_some() {
            IDLE
        } else {
            join_by
                .saturating_duration_since(tokio::time::Instant::now())
                .min(IDLE)
        };
        let next = tokio::select! {
            next = tokio::time::timeout(wait, stream.next()) => next,
            _ = stopping.wait_for(|stop| *stop) => break,
            // Its queue overflowed (a reader too slow for its messages): the socket is
            // dropped at once, not closed politely behind the queue.
            () = abort.notified() => {
                aborted = true;
                break;
            }
        };
        if let Ok(Some(Ok(message))) = &next {
            let size = match message {
                Message::Text(t) => t.len(),
                Message::Binary(b) => b.len(),
                Message::Ping(b) | Message::Pong(b) => b.len(),
                Message::Close(_) => 0,
            };
            let now = std::time::Instant::now();
            if !messages.take(1, now) || !bytes.take(size as u64, now) {
                send(
                    &tx,
                    error(
                        ErrorCode::RateLimited,
                        "too many messages on this connection; reconnect and slow down",
                    ),
                )
                .await;
                break;
            }
        }
        let text = match next {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Binary(_)))) => {
                send(&tx, error(ErrorCode::BadMessage, "messages are JSON text")).await;
                continue;
            }
            Err(_) if joined.is_none() => {
                send(
                    &tx,
                    error(
                        ErrorCode::NotJoined,
                        "this connection did not say who it is (join, host or resume) in time",
                    ),
                )
                .await;
                break;
            }
            // Closed, broken, or idle too long.
            _ => break,
        };
        if writer.is_finished() {
            break;
        }
        let msg: ClientMsg = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                send(
                    &tx,
                    error(ErrorCode::BadMessage, format!("unreadable message: {e}")),
                )
                .await;
                continue;
            }
        };
        let result = match (&joined, msg) {
            (Some(j), msg) => act(&app, j, msg, &tx).await,
            (None, ClientMsg::Ping { id }) => {
                send(&tx, ServerMsg::Pong { id }).await;
                Ok(false)
            }
            (
                None,
                first
                @ (ClientMsg::Join { .. } | ClientMsg::Host { .. } | ClientMsg::Resume { .. }),
            ) => hello(&app, ip, first, &tx).await.map(|j| {
                joined = Some(j);
                slot.release_address();
                false
            }),
            (None, _) => Err(Refusal::new(
                ErrorCode::NotJoined,
                "say who you are first (join, host or resume)",
            )),
        };
        match result {
            Ok(true) => break,
            Ok(false) => {}
            Err(refusal) => {
                let fatal = matches!(
                    refusal.code,
                    ErrorCode::VisitOver | ErrorCode::ResumeRefused
                );
                send(&tx, ServerMsg::Error(refusal.body())).await;
                if fatal {
                    break;
                }
            }
        }
    }
    if let Some(j) = joined {
        app.hub.unregister(&j.participant, &j.conn);
        let (participant, conn) = (j.participant.clone(), j.conn.clone());
        let outs = app
            .shared
            .update(&j.visit, |v| {
                Ok(v.disconnect(&participant, &conn, now_ms()))
            })
            .await;
        if let Ok(outs) = outs {
            app.shared.publish(outs).await;
        }
    }
    drop(tx);
    if aborted {
        writer.abort();
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    // The closing handshake: what the client still sends is read (and ignored) until its
    // close, so that our last messages are not lost to a reset of a socket with unread data.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// TURN credentials only for admitted participants: a `welcome` to the waiting room loses its
/// TURN servers (kept in `held`), and the `admitted` that lets the participant in brings them.
fn turn_after_admission(msg: &mut ServerMsg, held: &mut Option<IceConfig>) {
    match msg {
        ServerMsg::Welcome {
            standing: Standing::Waiting,
            ice,
            ..
        } => {
            *held = Some(ice.clone());
            ice.servers
                .retain(|s| s.username.is_none() && s.credential.is_none());
        }
        ServerMsg::Admitted { ice, .. } if ice.is_none() => ice.clone_from(held),
        _ => {}
    }
}

/// Queues `msg` for this connection without waiting: a full queue aborts the connection.
async fn send(tx: &Link, msg: ServerMsg) {
    tx.push(Delivery::Msg(msg));
}

fn error(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
    ServerMsg::Error(Refusal::new(code, message).body())
}

fn limited(app: &App, ip: IpAddr) -> Result<(), Refusal> {
    if app.limiter.allow(ip) {
        Ok(())
    } else {
        Err(Refusal::rate_limited())
    }
}

/// The first message: join (link), host (clinician) or resume. Sends `welcome` and what
/// follows it, and registers the connection.
async fn hello(app: &App, ip: IpAddr, first: ClientMsg, tx: &Link) -> Result<Joined, Refusal> {
    let conn = app.new_conn();
    let now = now_ms();
    let (visit, participant, resume, role, standing, until, outs) = match first {
        ClientMsg::Join { token, name, visit } => {
            limited(app, ip)?;
            let claims = app.signer.verify(&token, now)?;
            same_visit(&claims, visit.as_deref())?;
            if !app.visit_limiter.allow(claims.visit.clone()) {
                return Err(Refusal::visit_busy());
            }
            let name = clean_name(&name)?;
            let (participant, secret, outs) = enter(
                app,
                &claims.visit,
                (name, claims.role, true, None),
                &conn,
                tx,
                now,
            )
            .await?;
            tracing::info!(role = ?claims.role, "participant joined the waiting room");
            (
                claims.visit,
                participant,
                secret,
                claims.role,
                Standing::Waiting,
                Some(claims.exp),
                outs,
            )
        }
        ClientMsg::Host {
            access_token,
            visit,
            media,
            name,
        } => {
            let clinician = match app.verifier.verify(&access_token).await {
                Ok(c) => c,
                Err(e) => {
                    limited(app, ip)?;
                    return Err(e);
                }
            };
            if !hearth_fhir::is_id(&visit) {
                return Err(Refusal::new(
                    ErrorCode::BadMessage,
                    "visit must be an appointment id",
                ));
            }
            // Only a clinician on the appointment hosts it (asked of the EHR).
            app.appointments
                .require(&visit, clinician.fhir_user.as_deref())
                .await?;
            let display = host_name(name.as_deref(), clinician.name.as_deref());
            let (participant, secret, outs) = enter(
                app,
                &visit,
                (display, Role::Clinician, media, Some(clinician.expires_ms)),
                &conn,
                tx,
                now,
            )
            .await?;
            tracing::info!(by = %clinician.subject, "clinician joined a visit");
            (
                visit,
                participant,
                secret,
                Role::Clinician,
                Standing::Admitted,
                None,
                outs,
            )
        }
        ClientMsg::Resume {
            visit,
            participant,
            resume,
        } => {
            limited(app, ip)?;
            // The secret is checked before this connection is registered as the participant:
            // a wrong one must neither close their connection nor see their messages.
            let (member, outs) = app
                .shared
                .update(&visit, |v| {
                    v.resume(
                        &participant,
                        |hash| tokens::resume_matches(&resume, hash),
                        &conn,
                        now,
                    )
                })
                .await?;
            app.hub.register(&participant, &conn, tx.clone());
            (
                visit,
                participant,
                resume,
                member.role,
                member.standing,
                None,
                outs,
            )
        }
        _ => return Err(Refusal::new(ErrorCode::NotJoined, "say who you are first")),
    };
    // `welcome` first, then what the change said to this participant, then everyone else's.
    send(
        tx,
        ServerMsg::Welcome {
            protocol: PROTOCOL_VERSION,
            visit: visit.clone(),
            participant: participant.clone(),
            resume,
            role,
            standing,
            ice: app.ice_for(&participant, until),
        },
    )
    .await;
    let (mine, others): (Vec<_>, Vec<_>) = outs
        .into_iter()
        .partition(|o| o.to == participant && o.conn.is_none());
    for out in mine {
        tx.push(out.msg);
    }
    app.shared.publish(others).await;
    Ok(Joined {
        visit,
        participant,
        conn,
    })
}

/// A new participant (`name`, `role`, `media`) enters `visit` on connection `conn`: a fresh id
/// and resume secret, the connection registered, the visit changed (patients and guests wait,
/// clinicians are admitted). Returns the id, the secret and the messages the change caused.
async fn enter(
    app: &App,
    visit: &str,
    (name, role, media, authorized_until_ms): (String, Role, bool, Option<u64>),
    conn: &str,
    tx: &Link,
    now: u64,
) -> Result<(String, Secret, Vec<crate::visit::Out>), Refusal> {
    let participant = tokens::random_id();
    let (secret, hash) = tokens::resume_secret();
    app.hub.register(&participant, conn, tx.clone());
    let outs = app
        .shared
        .update(visit, |v| {
            v.add(
                Newcomer {
                    id: participant.clone(),
                    name: name.clone(),
                    role,
                    media,
                    resume_hash: hash.clone(),
                    conn: conn.to_owned(),
                    authorized_until_ms,
                },
                now,
                app.settings.max_members_per_visit,
            )
        })
        .await;
    let outs = unregister_on_error(app, &participant, conn, outs)?;
    Ok((participant, secret, outs))
}

/// A link opens its own visit only.
pub fn same_visit(claims: &tokens::LinkClaims, asked: Option<&str>) -> Result<(), Refusal> {
    match asked {
        Some(v) if v != claims.visit => Err(Refusal::new(
            ErrorCode::WrongVisit,
            "this link is for another visit",
        )),
        _ => Ok(()),
    }
}

fn unregister_on_error<T>(
    app: &App,
    participant: &str,
    conn: &str,
    result: Result<T, Refusal>,
) -> Result<T, Refusal> {
    if result.is_err() {
        app.hub.unregister(participant, conn);
    }
    result
}

/// Everything after the first message. `Ok(true)` ends the connection.
async fn act(app: &App, j: &Joined, msg: ClientMsg, tx: &Link) -> Result<bool, Refusal> {
    let now = now_ms();
    let me = j.participant.as_str();
    let (outs, done) = match msg {
        ClientMsg::Admit { participant } => (
            app.shared
                .update(&j.visit, |v| v.admit(me, &participant, now))
                .await?,
            false,
        ),
        ClientMsg::Remove { participant } => (
            app.shared
                .update(&j.visit, |v| v.remove(me, &participant, now))
                .await?,
            false,
        ),
        ClientMsg::End => (
            app.shared.update(&j.visit, |v| v.end(me, now)).await?,
            false,
        ),
        ClientMsg::Leave => (
            app.shared
                .update(&j.visit, |v| v.remove(me, me, now))
                .await?,
            true,
        ),
        ClientMsg::Signal { to, data } => {
            let visit = app
                .shared
                .get(&j.visit)
                .await?
                .ok_or_else(|| Refusal::new(ErrorCode::VisitOver, "this visit is over"))?;
            visit.check_signal(me, &to)?;
            let out = crate::visit::Out {
                visit: j.visit.clone(),
                to,
                conn: None,
                msg: Delivery::Msg(ServerMsg::Signal {
                    from: me.to_owned(),
                    data,
                }),
            };
            (vec![out], false)
        }
        ClientMsg::Ping { id } => {
            send(tx, ServerMsg::Pong { id }).await;
            return Ok(false);
        }
        ClientMsg::Join { .. } | ClientMsg::Host { .. } | ClientMsg::Resume { .. } => {
            return Err(Refusal::new(
                ErrorCode::BadMessage,
                "this connection has already joined",
            ));
        }
    };
    app.shared.publish(outs).await;
    Ok(done)
}
