use serde::{Deserialize, Serialize};

/// Where the clinical data on screen comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataMode {
    /// Built-in synthetic data, generated deterministically from `seed`. No real patients.
    Demo { seed: u64 },
    /// A configured EHR's FHIR R4 endpoint.
    Ehr { fhir_base_url: String },
}

/// Whether Hearth can reach the EHR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    Online,
    Offline,
    /// Demo mode: there is no EHR to reach.
    NotApplicable,
}

/// The state of synchronisation with the EHR, as the top bar shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSummary {
    /// Writes saved locally and waiting to be sent.
    pub queued_writes: u32,
    /// RFC 3339 time of the last successful exchange with the EHR, if any.
    pub last_success: Option<String>,
    /// A sentence for people, e.g. "Demo data — nothing to synchronise".
    pub description: String,
    /// Writes the EHR refused because the record changed there: the user must choose.
    #[serde(default)]
    pub conflicts: u32,
    /// Writes the EHR refused for another reason (shown with the reason).
    #[serde(default)]
    pub failed_writes: u32,
    /// Records from the EHR that could not be read (kept out of the store, named in the panel).
    #[serde(default)]
    pub unreadable_records: u32,
    /// The first download, while it runs.
    #[serde(default)]
    pub progress: Option<SyncProgress>,
}

impl SyncSummary {
    /// Nothing queued, nothing synced yet: only a sentence for people.
    pub fn idle(description: impl Into<String>) -> Self {
        Self {
            queued_writes: 0,
            last_success: None,
            description: description.into(),
            conflicts: 0,
            failed_writes: 0,
            unreadable_records: 0,
            progress: None,
        }
    }
}

/// How far the first download has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProgress {
    pub done: u32,
    pub total: u32,
    /// What is being fetched, e.g. "Patient records".
    pub label: String,
}

/// The signed-in user as shown in the top bar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    pub display_name: String,
    /// The FHIR reference of the user (`Practitioner/...`), if known.
    pub fhir_user: Option<String>,
}

/// Whether someone is signed in, as the window must show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// No sign-on configured (demo data, or an EHR on loopback that asks for no token).
    #[default]
    NotRequired,
    /// Nobody is signed in: the sign-in screen, no PHI.
    SignedOut,
    SignedIn,
    /// Locked after inactivity: no PHI until the same user authenticates again.
    Locked,
    /// The sign-in could not be renewed (the provider refused the refresh token or its answer
    /// was rejected, or the access token ran out with no renewal): nothing reaches the EHR,
    /// so the window says so, shows no PHI and offers to sign in again (the same user).
    Expired,
}

/// An EHR launch's context: the chart to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSummary {
    pub patient_id: Option<String>,
    pub encounter_id: Option<String>,
}

/// Everything the top bar needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    pub mode: DataMode,
    pub user: Option<UserSummary>,
    pub connectivity: Connectivity,
    pub sync: SyncSummary,
    /// Today's date at the workstation, `YYYY-MM-DD`.
    pub today: String,
    /// Hearth's version.
    pub version: String,
    #[serde(default)]
    pub session: SessionState,
    /// Minutes without input before the window locks (when sign-on is configured).
    #[serde(default)]
    pub idle_lock_minutes: Option<u32>,
    /// Set after an EHR launch: the patient (and encounter) the EHR had open.
    #[serde(default)]
    pub launch: Option<LaunchSummary>,
    /// Changes whenever what the views (schedule, chart, sync panel) show may have changed: a
    /// sync round stored, deleted or sent something, the user changed a record or settled a
    /// conflict, someone came into or left a waiting room. The views reload when it changes;
    /// a round that brought nothing new leaves it as it was. A number, no PHI.
    #[serde(default)]
    pub data_version: u64,
}
