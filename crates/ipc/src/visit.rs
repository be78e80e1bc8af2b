//! The virtual visit's room as the visit pane shows it, and the clinician's actions on it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `visit_room`: who is in the visit service's room for this appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitRoomRequest {
    pub appointment_id: String,
}

/// How Hearth stands with the visit service for this visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomService {
    /// No `[visit]` service configured (demo, or not deployed).
    NotConfigured,
    Connecting,
    Live,
    /// Unreachable or refused; `message` says which (retrying by itself when it can).
    Trouble,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomRole {
    Clinician,
    Patient,
    Guest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomStanding {
    Waiting,
    InVisit,
    Left,
}

/// A participant of the room. PHI (the name): `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomParticipant {
    pub id: String,
    pub name: String,
    pub role: RoomRole,
    pub standing: RoomStanding,
    pub connected: bool,
    /// Local `HH:MM` they joined and (if gone) left.
    pub joined_label: String,
    pub left_label: Option<String>,
}

impl fmt::Debug for RoomParticipant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomParticipant")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("standing", &self.standing)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitRoom {
    pub service: RoomService,
    /// Why the service is in trouble, in words (no PHI, no token).
    pub message: Option<String>,
    pub participants: Vec<RoomParticipant>,
}

/// `visit_invite`: a join link for the appointment's patient or a guest (interpreter, family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitInviteRequest {
    pub appointment_id: String,
    pub role: InviteRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteRole {
    Patient,
    Guest,
}

/// A join link. The URL is a credential for the waiting room: `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitInvite {
    pub url: String,
    /// Local times the waiting room opens and the link stops working (`HH:MM`).
    pub opens_label: String,
    pub expires_label: String,
    /// Whether the link was also put into the Appointment (for the EHR's reminders).
    pub saved_to_appointment: bool,
}

impl fmt::Debug for VisitInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VisitInvite")
            .field("opens_label", &self.opens_label)
            .field("expires_label", &self.expires_label)
            .finish_non_exhaustive()
    }
}

/// `visit_admit`: let a waiting participant into the visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitAdmitRequest {
    pub appointment_id: String,
    pub participant_id: String,
}
