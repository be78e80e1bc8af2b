//! Sync settings, read from the `[sync]` section of the machine configuration (loaded and
//! validated by `hearth_core::config`) and used by the sync engine.

use serde::Deserialize;

/// How Hearth keeps its local copy in step with the EHR.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Seconds between pulls of changes when the EHR offers no websocket subscription.
    pub poll_interval_seconds: u32,
    /// Whose records are kept offline: `"schedule"` (the patients on the schedule window) or
    /// `"all"` (every patient the EHR lets this user see; small practices).
    pub patients: PatientScope,
    /// The schedule window kept offline, in days before and after today.
    pub schedule_days_back: u32,
    pub schedule_days_ahead: u32,
    /// How far before the server's time of the last pull the next one reaches again: a change
    /// committed (or stamped by an EHR node whose clock lags) up to this long before it became
    /// visible is still pulled. Versions already held are skipped, so the overlap costs little.
    pub overlap_seconds: u32,
    /// How often the whole working set is compared with the EHR (ids and versions): finds
    /// deletions, which `_lastUpdated` searches never show, and anything a pull missed.
    pub reconcile_minutes: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            poll_interval_seconds: 15,
            patients: PatientScope::Schedule,
            schedule_days_back: 1,
            schedule_days_ahead: 7,
            overlap_seconds: 30,
            reconcile_minutes: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatientScope {
    Schedule,
    All,
}

/// Where the sync engine sends charges: the billing system's HL7 v2 MLLP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingTarget {
    /// `host:port`.
    pub address: String,
    pub connect_timeout: std::time::Duration,
    /// How long to wait for the acknowledgement.
    pub ack_timeout: std::time::Duration,
}
