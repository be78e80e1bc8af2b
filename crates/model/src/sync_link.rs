//! The seam between the workstation (`hearth-core`) and the sync engine (`hearth-sync`): the
//! top bar and the sync panel read through it, conflicts are resolved through it. Both crates
//! sit on this one; the shell connects them.

use crate::clock::{Clock, Zone};
use crate::settings::SyncConfig;
use crate::ModelError;
use hearth_ipc::{
    Connectivity, ResolveConflictRequest, SettleFailedWriteRequest, SyncPanel, SyncSummary,
};

/// Counters that only go up: a listener learns that something changed without asking the
/// engine every few seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncPulse {
    /// Bumped whenever what [`SyncLink::summary`] or the sync panel shows may have changed
    /// (progress, a round's end, a problem, the queue, a conflict).
    pub status: u64,
    /// Bumped when the local records may have changed (a round stored, deleted or sent
    /// something; the user changed a record or settled a conflict). Every bump of `records`
    /// also bumps `status`.
    pub records: u64,
}

/// What the sync engine shows and accepts.
pub trait SyncLink: Send + Sync {
    /// Follows the engine's changes (see [`SyncPulse`]).
    fn subscribe(&self) -> tokio::sync::watch::Receiver<SyncPulse>;
    /// For the top bar.
    fn summary(&self) -> (Connectivity, SyncSummary);
    /// For the sync panel.
    fn panel(&self) -> Result<SyncPanel, ModelError>;
    /// Applies the user's choice for a conflict.
    fn resolve(&self, request: &ResolveConflictRequest) -> Result<(), ModelError>;
    /// Applies the user's choice for a change the EHR refused.
    fn settle_failed(&self, request: &SettleFailedWriteRequest) -> Result<(), ModelError>;
    /// Puts a virtual visit's join link into its Appointment (queued like any change).
    fn set_join_link(&self, appointment_id: &str, url: &str, actor: &str)
        -> Result<(), ModelError>;
    /// Queues `resource` for the EHR under `key`, an idempotency key (a UUID) the caller
    /// derives from what the write records, so that asking twice is one write: nothing is
    /// queued when a write with that key is already in the outbox, whatever its state. With
    /// an `id` it is an update (`If-Match` on its `meta.versionId`, the local copy changed at
    /// once), without one a create conditional on the identifier `urn:hearth:write|<key>`.
    fn queue_once(
        &self,
        key: &str,
        resource: serde_json::Value,
        actor: &str,
    ) -> Result<QueuedOnce, ModelError>;
    /// The caller queued writes or charges straight into the store (several in one
    /// transaction, see `Store::sign_note`): listeners learn the records changed, and the
    /// engine runs a round now instead of at its next poll.
    fn nudge(&self);
}

/// What [`SyncLink::queue_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuedOnce {
    /// Queued now, as this outbox entry.
    Queued { seq: i64 },
    /// A write with that key was queued before (this entry): nothing new.
    AlreadyQueued { seq: i64 },
}

/// What the sync engine needs from a workstation connected to an EHR.
#[derive(Debug, Clone)]
pub struct EhrLink {
    pub fhir_base_url: String,
    pub store: std::sync::Arc<hearth_store::Store>,
    pub sync: SyncConfig,
    /// The workstation's clock and the clinic's time zone (the schedule window's days).
    pub clock: std::sync::Arc<dyn Clock>,
    pub zone: Zone,
    /// `[billing]`: where charges go.
    pub billing: Option<crate::settings::BillingTarget>,
}
