use serde::{Deserialize, Serialize};
use std::fmt;

/// Request for one day's schedule. `date` is `YYYY-MM-DD`; `None` means today.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRequest {
    pub date: Option<String>,
    /// Limit to these practitioners (their FHIR ids, without `Practitioner/`); empty means
    /// everyone (the nurses' shared view).
    #[serde(default)]
    pub practitioner_ids: Vec<String>,
}

/// How a visit takes place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    Virtual,
    InPerson,
}

/// The live status of a visit, as clinicians and nurses name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    /// Requested but not yet confirmed.
    Pending,
    Booked,
    /// In person: at the front desk.
    Arrived,
    /// Virtual: in the virtual waiting room.
    InWaitingRoom,
    /// Seen.
    Fulfilled,
    NoShow,
    Cancelled,
}

/// One appointment line in the schedule. PHI: its `Debug` leaves out the patient's name and
/// the reason for the visit.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentRow {
    pub appointment_id: String,
    /// RFC 3339 start and end.
    pub start: String,
    pub end: String,
    /// Local wall-clock start, `HH:MM`.
    pub start_label: String,
    pub duration_minutes: u32,
    pub patient_id: String,
    pub patient_name: String,
    pub practitioner_id: String,
    pub practitioner_name: String,
    pub modality: Modality,
    pub status: VisitStatus,
    pub reason: Option<String>,
    pub location: Option<String>,
}

/// A practitioner whose visits appear in the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PractitionerSummary {
    pub practitioner_id: String,
    pub display_name: String,
}

/// One day's schedule, sorted by start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleDay {
    pub date: String,
    /// The date as people read it, e.g. "Tuesday 10 March 2026".
    pub date_label: String,
    pub practitioners: Vec<PractitionerSummary>,
    pub appointments: Vec<AppointmentRow>,
    /// Records that could not be shown, each naming the resource and field at fault.
    pub data_issues: Vec<String>,
}

impl fmt::Debug for AppointmentRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppointmentRow")
            .field("appointment_id", &self.appointment_id)
            .field("start", &self.start)
            .field("patient_id", &self.patient_id)
            .field("practitioner_id", &self.practitioner_id)
            .field("modality", &self.modality)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}
