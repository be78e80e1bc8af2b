//! Keeps Hearth's encrypted store in step with the EHR over FHIR R4.
//!
//! One [`Engine`] per workstation, driven by [`Engine::run`]:
//! 1. **Initial sync** of the working set (the schedule window, its patients' records — or
//!    every patient), with progress the top bar shows.
//! 2. **Push** the outbox, oldest first, one resource's writes in order. Creates are
//!    conditional (`If-None-Exist` on a client identifier) and updates carry `If-Match` and
//!    `meta.source = urn:uuid:<idempotency key>`, so a write replayed after a crash is
//!    recognised and lands exactly once. A 412 from someone else's change becomes a conflict
//!    keeping both versions; nothing is overwritten.
//! 3. **Pull** changes since the last cursor: the server's history (deletions included) when
//!    it offers `history-system`, else a `_lastUpdated` search per type ([`PULL_TYPES`]). The cursor is the
//!    server's time, read back with an overlap, so a missed or failed poll is caught up on the
//!    next one. Local records with writes still waiting are never replaced by a pull.
//!
//! Real time comes from polling every `poll_interval`, and at once when the user queues a
//! write. (Topic subscriptions over websocket are detected in the CapabilityStatement but not
//! used yet: no test peer here offers them; rest-hook cannot reach a desktop.)

mod change;
mod engine;
mod panel;

pub use change::QueuedWrite;
pub use engine::{
    rows_of, Engine, EngineConfig, PullMode, Round, SyncHandle, HEARTH_WRITE_SYSTEM, PULL_TYPES,
};

use hearth_fhir::FhirError;
use hearth_model::ModelError;
use hearth_store::StoreError;

/// What stops a sync round.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Fhir(#[from] FhirError),
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Data(#[from] ModelError),
}

impl SyncError {
    /// The EHR cannot be reached (the workstation is offline as far as sync goes).
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            Self::Fhir(FhirError::Unreachable { .. } | FhirError::Server { .. })
        )
    }

    /// In words a clinician understands.
    pub fn for_people(&self) -> String {
        match self {
            Self::Fhir(FhirError::Unreachable { .. }) => {
                "The EHR cannot be reached. Your work is saved on this computer and will be sent when the connection is back.".into()
            }
            Self::Fhir(FhirError::Server { .. }) => {
                "The EHR is busy or having problems. Hearth will keep trying; your work is saved on this computer.".into()
            }
            Self::Fhir(FhirError::Unauthorized(_) | FhirError::Auth(_)) => {
                "Your sign-in to the EHR has expired. Sign in again to send and receive updates.".into()
            }
            Self::Fhir(FhirError::Forbidden(_)) => {
                "The EHR does not allow this account to read these records. Contact IT.".into()
            }
            Self::Store(_) => {
                "Hearth could not use its local data file. Contact IT; nothing has been sent or lost.".into()
            }
            other => format!("Synchronisation stopped: {other}"),
        }
    }
}

impl From<SyncError> for ModelError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Data(c) => c,
            SyncError::Store(s) => ModelError::Store(s.to_string()),
            SyncError::Fhir(f) => ModelError::Unavailable(format!("the EHR ({})", f.code())),
        }
    }
}

pub type Result<T> = std::result::Result<T, SyncError>;
