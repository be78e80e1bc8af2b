//! Virtual visits through the visit service (`[visit]`): join links for an appointment, the
//! room's roster for the visit pane, admitting from the waiting room, arrivals for desktop
//! notifications, and the schedule's "in waiting room" status. Hearth keeps one presence
//! connection per virtual visit it has looked at (no media: video comes with the media pane).

use crate::clock::Zone;
use crate::CoreError;
use chrono::{DateTime, Utc};
use hearth_ipc::{
    InviteRole, RoomParticipant, RoomRole, RoomService, RoomStanding, VisitInvite, VisitRoom,
};
use hearth_visit_client::{
    Presence, RoomState, ServiceTokens, VisitClient, VisitError, SERVICE_SCOPE,
};
use hearth_visit_protocol::Secret;
use hearth_visit_protocol::{Role, Standing};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Someone newly in a visit's waiting room (for a notification: no name, by design: a
/// desktop notification may show on a locked or shared screen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub appointment_id: String,
    pub role: RoomRole,
    /// The visit's local start (`HH:MM`).
    pub start_label: String,
}

impl Arrival {
    /// The desktop notification's title and body.
    pub fn notification(&self) -> (String, String) {
        let who = match self.role {
            RoomRole::Guest => "A guest (interpreter or family member)",
            _ => "Your patient",
        };
        (
            "Virtual waiting room".to_owned(),
            format!(
                "{who} for the {} virtual visit is waiting to be admitted.",
                self.start_label
            ),
        )
    }
}

pub struct VisitDesk {
    client: VisitClient,
    rooms: Mutex<HashMap<String, Presence>>,
    announced: Mutex<HashSet<String>>,
    /// Bumped whenever a watched room changes (its roster, its connection): the visit pane
    /// and the arrival notifications follow it instead of asking every few seconds.
    pulse: Arc<watch::Sender<u64>>,
}

fn visit_error(e: VisitError) -> CoreError {
    CoreError::VisitService(e.to_string())
}

fn role(r: Role) -> RoomRole {
    match r {
        Role::Clinician => RoomRole::Clinician,
        Role::Patient => RoomRole::Patient,
        Role::Guest => RoomRole::Guest,
    }
}

/// The clinic's wall-clock time (`HH:MM`) of an instant in Unix milliseconds.
fn label(ms: u64, zone: Zone) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map(|t| zone.local(&t).format("%H:%M").to_string())
        .unwrap_or_default()
}

/// The visit service's tokens from the sign-in: each asked for with the service as the RFC 8707
/// resource and only [`SERVICE_SCOPE`] (never the EHR's token, which can change the chart).
struct ForVisitService(Arc<hearth_auth::Tokens>);

impl ServiceTokens for ForVisitService {
    fn token<'a>(&'a self, resource: &'a str) -> hearth_visit_client::TokenFuture<'a> {
        Box::pin(async move {
            match self.0.token_for(resource, SERVICE_SCOPE).await {
                Ok(bearer) => Ok(Secret::new(bearer.expose())),
                Err(e) if e.needs_sign_in() => Err(VisitError::NotSignedIn),
                Err(e) => Err(VisitError::NoToken(e.to_string())),
            }
        })
    }
}

impl VisitDesk {
    pub fn new(service_url: &str, tokens: Arc<hearth_auth::Tokens>) -> Result<Self, CoreError> {
        let tokens: Arc<dyn ServiceTokens> = Arc::new(ForVisitService(tokens));
        Ok(Self {
            client: VisitClient::new(service_url, tokens).map_err(visit_error)?,
            rooms: Mutex::new(HashMap::new()),
            announced: Mutex::new(HashSet::new()),
            pulse: Arc::new(watch::Sender::new(0)),
        })
    }

    /// The visit service's client (the call engine connects with it).
    pub fn client(&self) -> VisitClient {
        self.client.clone()
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Presence>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the watched rooms: the value changes whenever one of them does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.pulse.subscribe()
    }

    /// Starts watching `appointment_id`'s room if not yet. Needs a tokio runtime.
    pub fn watch(&self, appointment_id: &str) {
        let mut rooms = self.rooms();
        if !rooms.contains_key(appointment_id) {
            let presence = self.client.watch(appointment_id);
            // Each change of the room's roster is passed on; the relay ends with the presence
            // connection (its roster sender goes when it is dropped).
            let mut roster = presence.roster.clone();
            let pulse = self.pulse.clone();
            tokio::spawn(async move {
                while roster.changed().await.is_ok() {
                    pulse.send_modify(|n| *n += 1);
                }
            });
            rooms.insert(appointment_id.to_owned(), presence);
            self.pulse.send_modify(|n| *n += 1);
        }
    }

    /// The room as the visit pane shows it (watching it from now on).
    pub fn room(&self, appointment_id: &str, zone: Zone) -> VisitRoom {
        self.watch(appointment_id);
        let state = self
            .rooms()
            .get(appointment_id)
            .map(|p| p.roster.borrow().clone())
            .unwrap_or(RoomState::Connecting);
        let (service, message, people) = match state {
            RoomState::Connecting => (RoomService::Connecting, None, Vec::new()),
            RoomState::Roster(people) => (RoomService::Live, None, people),
            RoomState::Trouble(e) => (RoomService::Trouble, Some(e.to_string()), Vec::new()),
            RoomState::Ended => (RoomService::Ended, None, Vec::new()),
        };
        VisitRoom {
            service,
            message,
            participants: people
                .into_iter()
                .filter(|p| p.role != Role::Clinician)
                .map(|p| RoomParticipant {
                    id: p.id,
                    name: p.name,
                    role: role(p.role),
                    standing: match p.standing {
                        Standing::Waiting => RoomStanding::Waiting,
                        Standing::Admitted => RoomStanding::InVisit,
                        Standing::Left => RoomStanding::Left,
                    },
                    connected: p.connected,
                    joined_label: label(p.joined_ms, zone),
                    left_label: p.left_ms.map(|ms| label(ms, zone)),
                })
                .collect(),
        }
    }

    /// Closes every presence connection (the clinician signed out; the next one watches anew).
    pub fn forget_rooms(&self) {
        self.rooms().clear();
        self.announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.pulse.send_modify(|n| *n += 1);
    }

    /// Whether the appointment's patient is in the waiting room now (schedule status).
    pub fn patient_waiting(&self, appointment_id: &str) -> bool {
        self.rooms().get(appointment_id).is_some_and(|p| {
            p.roster
                .borrow()
                .waiting()
                .iter()
                .any(|x| x.role == Role::Patient && x.connected)
        })
    }

    /// A join link for the appointment (`start`..`end`), for the patient or a guest; its
    /// window is told in `zone`'s wall-clock time.
    pub async fn invite(
        &self,
        appointment_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        who: InviteRole,
        zone: Zone,
    ) -> Result<VisitInvite, CoreError> {
        let role = match who {
            InviteRole::Patient => Role::Patient,
            InviteRole::Guest => Role::Guest,
        };
        let ms = |t: DateTime<Utc>| u64::try_from(t.timestamp_millis()).unwrap_or(0);
        let link = self
            .client
            .link(appointment_id, role, ms(start), ms(end))
            .await
            .map_err(visit_error)?;
        Ok(VisitInvite {
            url: link.url.expose().to_owned(),
            opens_label: label(link.not_before_ms, zone),
            expires_label: label(link.expires_ms, zone),
            saved_to_appointment: false,
        })
    }

    /// Everyone who was in the visit, with their times, as the service keeps them (for the
    /// visit's Encounter).
    pub async fn snapshot(
        &self,
        appointment_id: &str,
    ) -> Result<hearth_visit_protocol::VisitSnapshot, CoreError> {
        self.client
            .snapshot(appointment_id)
            .await
            .map_err(visit_error)
    }

    pub async fn admit(&self, appointment_id: &str, participant: &str) -> Result<(), CoreError> {
        // The send is quick (a bounded queue); the lock is not held across it.
        let sender = {
            let rooms = self.rooms();
            let presence = rooms
                .get(appointment_id)
                .ok_or_else(|| CoreError::NotFound {
                    what: format!("the visit room of Appointment/{appointment_id}"),
                })?;
            presence.sender()
        };
        sender
            .send(hearth_visit_protocol::ClientMsg::Admit {
                participant: participant.to_owned(),
            })
            .await
            .map_err(|_| CoreError::VisitService("the presence connection has stopped".into()))
    }

    /// Participants who came into a waiting room since the last call (each once);
    /// `start_labels` gives each visit's local start by appointment id.
    pub fn arrivals(&self, start_labels: &HashMap<String, String>) -> Vec<Arrival> {
        let mut announced = self.announced.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (appointment, presence) in self.rooms().iter() {
            for p in presence.roster.borrow().waiting() {
                if p.role != Role::Clinician && announced.insert(p.id.clone()) {
                    out.push(Arrival {
                        appointment_id: appointment.clone(),
                        role: role(p.role),
                        start_label: start_labels.get(appointment).cloned().unwrap_or_default(),
                    });
                }
            }
        }
        out
    }
}
