//! Demo mode's simulated visit: a new user sees a live call in Hearth's window with no server
//! set up. A small in-process stand-in for the visit service (loopback WebSocket, the subset
//! of protocol v1 a two-party call uses: host, join, waiting room, admit, signaling relay,
//! end) and a simulated patient — a second engine with the synthetic camera and a tone — who
//! joins its waiting room. Demo only: it checks no one (there is no one to check on a
//! loopback socket of a demo), and it is never used with an EHR.

use crate::call::{Call, CallOptions, Entry};
use crate::MediaError;
use futures_util::{SinkExt, StreamExt};
use hearth_visit_protocol::{
    ClientMsg, IceConfig, IcePolicy, Participant, Peer, Role, Secret, ServerMsg, Standing,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

struct Member {
    name: String,
    role: Role,
    standing: Standing,
    media: bool,
    joined_ms: u64,
    admitted_ms: Option<u64>,
    left_ms: Option<u64>,
    tx: mpsc::UnboundedSender<ServerMsg>,
}

#[derive(Default)]
struct Room {
    members: HashMap<String, Member>,
    next: u32,
    ended: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Room {
    fn roster(&self) -> Vec<Participant> {
        let mut people: Vec<Participant> = self
            .members
            .iter()
            .map(|(id, m)| Participant {
                id: id.clone(),
                name: m.name.clone(),
                role: m.role,
                standing: m.standing,
                connected: m.left_ms.is_none(),
                media: m.media,
                joined_ms: m.joined_ms,
                admitted_ms: m.admitted_ms,
                left_ms: m.left_ms,
            })
            .collect();
        people.sort_by(|a, b| a.id.cmp(&b.id));
        people
    }

    fn tell_clinicians(&self, visit: &str) {
        let roster = ServerMsg::Roster {
            visit: visit.to_owned(),
            participants: self.roster(),
        };
        for m in self.members.values().filter(|m| m.role == Role::Clinician) {
            let _ = m.tx.send(roster.clone());
        }
    }

    fn peer(&self, id: &str) -> Option<Peer> {
        self.members.get(id).map(|m| Peer {
            id: id.to_owned(),
            name: m.name.clone(),
            role: m.role,
        })
    }

    fn admitted_media(&self, but: &str) -> Vec<Peer> {
        self.members
            .iter()
            .filter(|(id, m)| id.as_str() != but && m.standing == Standing::Admitted && m.media)
            .filter_map(|(id, _)| self.peer(id))
            .collect()
    }
}

/// The simulated visit: the stand-in service and the simulated patient.
pub struct DemoVisit {
    /// Where the clinician's engine connects (`ws://127.0.0.1:<port>/v1/ws`).
    pub ws_url: String,
    pub visit: String,
    server: tokio::task::JoinHandle<()>,
    patient: Option<Call>,
}

impl DemoVisit {
    /// Starts the stand-in service on loopback and the simulated patient, who waits in the
    /// waiting room of `visit` under `patient_name`.
    pub async fn start(visit: &str, patient_name: &str) -> Result<Self, MediaError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| MediaError::Signaling(format!("demo visit service: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| MediaError::Signaling(format!("demo visit service: {e}")))?
            .port();
        let room = Arc::new(Mutex::new(Room::default()));
        let visit_id = visit.to_owned();
        // Only this process's engines know the path: another local program cannot join.
        let secret = format!("{:032x}", rand::random::<u128>());
        let path = format!("/v1/ws/{secret}");
        let wanted = path.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let room = room.clone();
                let visit = visit_id.clone();
                let wanted = wanted.clone();
                tokio::spawn(async move {
                    // The callback's type is tungstenite's (a whole HTTP response as its error).
                    #[allow(clippy::result_large_err, reason = "tungstenite's callback signature")]
                    let check =
                        |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                            if req.uri().path() == wanted {
                                Ok(resp)
                            } else {
                                let mut refused = tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(None);
                                *refused.status_mut() =
                                    tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
                                Err(refused)
                            }
                        };
                    let config =
                        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                            .max_message_size(Some(64 * 1024))
                            .max_frame_size(Some(64 * 1024));
                    if let Ok(socket) =
                        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config))
                            .await
                    {
                        serve(socket, room, visit).await;
                    }
                });
            }
        });
        let ws_url = format!("ws://127.0.0.1:{port}{path}");
        let patient = Call::start(
            Entry::Join {
                ws_url: ws_url.clone(),
                token: Secret::new("demo"),
                name: patient_name.to_owned(),
            },
            CallOptions {
                bind: [127, 0, 0, 1].into(),
                audio: crate::call::AudioInput::Tone { hz: 330.0 },
                ..CallOptions::default()
            },
        )
        .await?;
        Ok(Self {
            ws_url,
            visit: visit.to_owned(),
            server,
            patient: Some(patient),
        })
    }

    /// The clinician's way in.
    pub fn entry(&self) -> Entry {
        Entry::HostDemo {
            ws_url: self.ws_url.clone(),
            visit: self.visit.clone(),
        }
    }
}

impl Drop for DemoVisit {
    fn drop(&mut self) {
        self.patient.take();
        self.server.abort();
    }
}

fn lock(room: &Mutex<Room>) -> std::sync::MutexGuard<'_, Room> {
    room.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    room: Arc<Mutex<Room>>,
    visit: String,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerMsg>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let Ok(text) = serde_json::to_string(&msg) else {
                continue;
            };
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    let mut me: Option<String> = None;
    let ice = IceConfig {
        servers: Vec::new(),
        transport_policy: IcePolicy::All,
    };
    while let Some(Ok(Message::Text(text))) = stream.next().await {
        let Ok(msg) = serde_json::from_str::<ClientMsg>(&text) else {
            continue;
        };
        let mut r = lock(&room);
        match (msg, me.clone()) {
            (ClientMsg::Host { media, name, .. }, None) => {
                r.next += 1;
                let id = format!("c{}", r.next);
                r.members.insert(
                    id.clone(),
                    Member {
                        name: name.unwrap_or_else(|| "Clinician".into()),
                        role: Role::Clinician,
                        standing: Standing::Admitted,
                        media,
                        joined_ms: now_ms(),
                        admitted_ms: Some(now_ms()),
                        left_ms: None,
                        tx: tx.clone(),
                    },
                );
                let _ = tx.send(welcome(
                    &visit,
                    &id,
                    Role::Clinician,
                    Standing::Admitted,
                    &ice,
                ));
                let _ = tx.send(ServerMsg::Admitted {
                    peers: r.admitted_media(&id),
                    ice: None,
                });
                for p in r.admitted_media(&id) {
                    if let (Some(m), Some(peer)) = (r.members.get(&p.id), r.peer(&id)) {
                        let _ = m.tx.send(ServerMsg::PeerJoined { peer });
                    }
                }
                r.tell_clinicians(&visit);
                me = Some(id);
            }
            (ClientMsg::Join { name, .. }, None) => {
                r.next += 1;
                let id = format!("p{}", r.next);
                r.members.insert(
                    id.clone(),
                    Member {
                        name,
                        role: Role::Patient,
                        standing: Standing::Waiting,
                        media: true,
                        joined_ms: now_ms(),
                        admitted_ms: None,
                        left_ms: None,
                        tx: tx.clone(),
                    },
                );
                let _ = tx.send(welcome(&visit, &id, Role::Patient, Standing::Waiting, &ice));
                let _ = tx.send(ServerMsg::Waiting);
                r.tell_clinicians(&visit);
                me = Some(id);
            }
            (ClientMsg::Admit { participant }, Some(id)) if is_clinician(&r, &id) => {
                let peers = r.admitted_media(&participant);
                let Some(m) = r.members.get_mut(&participant) else {
                    continue;
                };
                if m.standing != Standing::Waiting {
                    continue;
                }
                m.standing = Standing::Admitted;
                m.admitted_ms = Some(now_ms());
                let _ = m.tx.send(ServerMsg::Admitted { peers, ice: None });
                if let Some(peer) = r.peer(&participant) {
                    for other in r.admitted_media(&participant) {
                        if let Some(o) = r.members.get(&other.id) {
                            let _ = o.tx.send(ServerMsg::PeerJoined { peer: peer.clone() });
                        }
                    }
                }
                r.tell_clinicians(&visit);
            }
            (ClientMsg::Signal { to, data }, Some(id)) => {
                let both_in = [&id, &to].iter().all(|p| {
                    r.members
                        .get(p.as_str())
                        .is_some_and(|m| m.standing == Standing::Admitted)
                });
                if let (true, Some(m)) = (both_in, r.members.get(&to)) {
                    let _ = m.tx.send(ServerMsg::Signal { from: id, data });
                }
            }
            (ClientMsg::End, Some(id)) if is_clinician(&r, &id) => {
                r.ended = true;
                for m in r.members.values() {
                    let _ = m.tx.send(ServerMsg::Ended);
                }
            }
            (ClientMsg::Leave, Some(_)) => break,
            (ClientMsg::Ping { id }, _) => {
                let _ = tx.send(ServerMsg::Pong { id });
            }
            _ => {}
        }
    }
    if let Some(id) = me {
        let mut r = lock(&room);
        if let Some(m) = r.members.get_mut(&id) {
            m.standing = Standing::Left;
            m.left_ms = Some(now_ms());
        }
        for m in r
            .members
            .values()
            .filter(|m| m.standing == Standing::Admitted)
        {
            let _ = m.tx.send(ServerMsg::PeerLeft { peer: id.clone() });
        }
        r.tell_clinicians(&visit);
    }
    writer.abort();
}

fn is_clinician(r: &Room, id: &str) -> bool {
    r.members.get(id).is_some_and(|m| m.role == Role::Clinician)
}

fn welcome(visit: &str, id: &str, role: Role, standing: Standing, ice: &IceConfig) -> ServerMsg {
    ServerMsg::Welcome {
        protocol: hearth_visit_protocol::PROTOCOL_VERSION,
        visit: visit.to_owned(),
        participant: id.to_owned(),
        resume: Secret::new("demo"),
        role,
        standing,
        ice: ice.clone(),
    }
}
