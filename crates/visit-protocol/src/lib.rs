//! The wire protocol of Hearth's visit service, version 1 (`/v1/...`). See `PROTOCOL.md`.
//!
//! Every message is one JSON object with a `type` field (snake_case). The service never carries
//! media: it relays signaling between *admitted* participants of one visit and pushes presence.
//! Times are Unix epoch milliseconds. Secrets (link tokens, access tokens, resume secrets, TURN
//! credentials) are [`Secret`]s, whose `Debug` does not show them.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks; it is also the path prefix (`/v1/`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Most participants exchanging media in one visit (a full mesh).
pub const MAX_MEDIA_PARTICIPANTS: usize = 4;

/// A secret string: serialised as itself, never shown by `Debug` (`[REDACTED]`), zeroised
/// when dropped.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(#[serde(serialize_with = "expose_secret")] SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }
    /// The secret itself, for the one place that must send or check it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

/// On the wire a secret is its text (the one place it leaves the type).
fn expose_secret<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

/// Who a participant is in the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A clinician, signed in with the organisation's identity provider; admitted at once and
    /// the only role that may admit, remove or end.
    Clinician,
    /// The patient, joining with the link made for the appointment.
    Patient,
    /// A third participant (interpreter, family member) with a link of their own.
    Guest,
}

/// Where a participant stands in the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// In the virtual waiting room: no signaling reaches or leaves them.
    Waiting,
    /// In the visit, exchanging media with the other admitted participants.
    Admitted,
    /// Gone: left, removed by the clinician, or disconnected longer than the grace period.
    Left,
}

// ---------------------------------------------------------------- HTTP

/// `POST /v1/links` (bearer: the clinician's access token): a join link for one appointment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkRequest {
    /// The FHIR Appointment's logical id; it names the visit.
    pub appointment: String,
    /// `patient` or `guest` (a clinician joins with their access token, not a link).
    pub role: Role,
    /// The appointment's start and end (epoch ms): the link opens the lobby from
    /// `start - early` and expires at `end + late` (service settings).
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The answer to [`LinkRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkResponse {
    /// The visit's id (the appointment id).
    pub visit: String,
    /// `<public url>/join#<token>`: the token is in the fragment, so it never reaches a server
    /// log or a `Referer` header.
    pub url: Secret,
    pub not_before_ms: u64,
    pub expires_ms: u64,
}

/// `POST /v1/links/check`: what the join page asks before showing the lobby.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkCheck {
    pub token: Secret,
    /// When given, the visit the link must be for (`wrong_visit` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit: Option<String>,
}

/// The answer to [`LinkCheck`] for a link that can be used now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkInfo {
    pub visit: String,
    pub role: Role,
    pub not_before_ms: u64,
    pub expires_ms: u64,
}

/// `GET /v1/visits/{id}` (bearer: a clinician's access token): the roster, for the Encounter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitSnapshot {
    pub visit: String,
    pub ended: bool,
    pub participants: Vec<Participant>,
}

/// Every error, over HTTP (with a 4xx/5xx status) and over the socket (`{"type":"error",..}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// A sentence for a person; never contains a token.
    pub message: String,
}

/// Stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The link token is malformed or its signature does not verify.
    LinkInvalid,
    /// The link's visit window has passed.
    LinkExpired,
    /// The link's visit window has not opened yet.
    LinkNotYet,
    /// The token was made for another visit.
    WrongVisit,
    /// No valid clinician access token (missing, expired, wrong issuer or audience, bad signature).
    Unauthorized,
    /// Too many attempts from this address; try again later.
    RateLimited,
    /// The message needs an admitted participant (sender or recipient is in the waiting room).
    NotAdmitted,
    /// Only a clinician may do this.
    NotClinician,
    /// No such participant in this visit.
    UnknownParticipant,
    /// The mesh already has [`MAX_MEDIA_PARTICIPANTS`] admitted participants.
    VisitFull,
    /// The clinician ended the visit.
    VisitOver,
    /// The resume secret does not match, or the participant has left.
    ResumeRefused,
    /// The message could not be read (not JSON, unknown type, missing field, too large).
    BadMessage,
    /// The first message on a socket must be `join`, `host` or `resume`.
    NotJoined,
    /// The service could not reach its shared state (Redis); try again.
    Unavailable,
    /// The clinician is not a participant of the visit's Appointment in the EHR (or there is
    /// no such Appointment).
    NotOnAppointment,
    /// The service could not ask the EHR whether the clinician is on the appointment; it
    /// refuses until it can (fail closed). Try again.
    EhrUnavailable,
}

// ---------------------------------------------------------------- WebSocket `/v1/ws`

/// From a participant to the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message of a patient or guest: the link token and the name they typed. `visit`,
    /// when given, must be the token's visit (the page sends what the link check said).
    Join {
        token: Secret,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visit: Option<String>,
    },
    /// First message of a clinician: their access token and the visit (appointment id).
    Host {
        access_token: Secret,
        visit: String,
        /// Whether this connection sends and receives media (Hearth's video pane) or only
        /// watches presence (a schedule view).
        #[serde(default)]
        media: bool,
        /// The name shown to the others; the token's `name` claim when absent.
        #[serde(default)]
        name: Option<String>,
    },
    /// First message after a dropped connection: carries on as the same participant.
    Resume {
        visit: String,
        participant: String,
        resume: Secret,
    },
    /// Clinician: let a waiting participant in.
    Admit { participant: String },
    /// Clinician: send a participant away (from the waiting room or the visit).
    Remove { participant: String },
    /// Clinician: end the visit for everyone; links stop working.
    End,
    /// WebRTC signaling for one admitted peer: `data` is `{"sdp": {..}}` or
    /// `{"candidate": {..}}`, relayed as is.
    Signal { to: String, data: serde_json::Value },
    /// Leaving for good.
    Leave,
    /// Keep-alive and latency probe; answered with `pong` carrying the same id.
    Ping { id: u64 },
}

/// From the service to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The answer to `join`, `host` or `resume`.
    Welcome {
        protocol: u32,
        visit: String,
        participant: String,
        /// Present this with `resume` after a dropped connection.
        resume: Secret,
        role: Role,
        standing: Standing,
        ice: IceConfig,
    },
    /// You are in the waiting room.
    Waiting,
    /// You are in the visit: offer a connection to each of `peers`. `ice` replaces `welcome`'s
    /// when you were let in from the waiting room (TURN credentials come only now).
    Admitted {
        peers: Vec<Peer>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ice: Option<IceConfig>,
    },
    /// Someone was admitted (or came back): expect their offer.
    PeerJoined {
        peer: Peer,
    },
    /// Someone left the visit (or dropped; a `peer_joined` follows if they come back).
    PeerLeft {
        peer: String,
    },
    /// Signaling from an admitted peer.
    Signal {
        from: String,
        data: serde_json::Value,
    },
    /// For clinicians: everyone in the visit, on every change.
    Roster {
        visit: String,
        participants: Vec<Participant>,
    },
    /// The clinician sent you away.
    Removed,
    /// The visit is over.
    Ended,
    Pong {
        id: u64,
    },
    Error(ErrorBody),
}

/// An admitted participant as other participants see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// A participant as clinicians see them (join and leave times go to the Encounter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub standing: Standing,
    /// Whether their socket is connected now (false while they reconnect).
    pub connected: bool,
    pub media: bool,
    pub joined_ms: u64,
    pub admitted_ms: Option<u64>,
    pub left_ms: Option<u64>,
}

/// ICE settings handed to each participant: `servers` has the shape of `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceConfig {
    pub servers: Vec<IceServer>,
    /// `all` or `relay` (only TURN-relayed candidates; hides participants' addresses).
    pub transport_policy: IcePolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IcePolicy {
    All,
    Relay,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_their_documented_shape() {
        let msg: ClientMsg = serde_json::from_str(r#"{"type":"join","token":"t.k","name":"Ana"}"#)
            .unwrap_or_else(|e| panic!("join: {e}"));
        assert_eq!(
            msg,
            ClientMsg::Join {
                token: Secret::new("t.k"),
                name: "Ana".into(),
                visit: None,
            }
        );
        let host: ClientMsg =
            serde_json::from_str(r#"{"type":"host","access_token":"a","visit":"v1"}"#)
                .unwrap_or_else(|e| panic!("host: {e}"));
        assert!(matches!(host, ClientMsg::Host { media: false, .. }));
        let err = serde_json::to_value(ServerMsg::Error(ErrorBody {
            code: ErrorCode::NotAdmitted,
            message: "m".into(),
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            err,
            serde_json::json!({"type":"error","code":"not_admitted","message":"m"})
        );
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"teleport"}"#).is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let msg = ClientMsg::Join {
            token: Secret::new("very-secret-token"),
            name: "Ana".into(),
            visit: None,
        };
        assert!(!format!("{msg:?}").contains("very-secret-token"));
    }
}
