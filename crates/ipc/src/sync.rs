//! The sync panel: what waits, what the EHR refused, and conflicts to resolve.

use crate::SyncSummary;
use serde::{Deserialize, Serialize};

/// Everything the sync panel shows.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPanel {
    pub summary: SyncSummary,
    pub conflicts: Vec<ConflictView>,
    /// Writes the EHR refused (not conflicts), with its reason in words.
    pub failed: Vec<FailedWriteView>,
    /// Records from the EHR that could not be read, naming the record and the field.
    pub unreadable: Vec<ProblemView>,
}

/// A change the EHR refused because someone else changed the record first. Both versions are
/// kept; nothing is overwritten until the user chooses.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictView {
    pub id: i64,
    /// What kind of record, in words ("Appointment").
    pub record: String,
    /// When the conflict was found (RFC 3339).
    pub detected_at: String,
    /// The fields that differ, side by side.
    pub fields: Vec<ConflictField>,
}

/// One field of a conflict: my version and the EHR's.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictField {
    /// The field's path (`status`, `participant[0].actor.display`).
    pub field: String,
    pub mine: String,
    pub theirs: String,
}

/// A problem in words, and the record it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemView {
    pub record: String,
    pub message: String,
}

/// A change the EHR refused (not a conflict): the reason, and a choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedWriteView {
    /// The outbox entry.
    pub seq: i64,
    pub record: String,
    pub message: String,
}

/// What to do with a refused change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailedWriteChoice {
    /// Send it again (e.g. after the EHR was fixed).
    Retry,
    /// Drop it; the record shows the EHR's version again.
    Discard,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleFailedWriteRequest {
    pub seq: i64,
    pub choice: FailedWriteChoice,
}

/// The user's choice for a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictChoice {
    /// Send my version over the EHR's.
    KeepMine,
    /// Keep the EHR's version; drop my change.
    TakeTheirs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveConflictRequest {
    pub conflict_id: i64,
    pub choice: ConflictChoice,
}

impl std::fmt::Debug for SyncPanel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncPanel")
            .field("summary", &self.summary)
            .field("conflicts", &self.conflicts.len())
            .field("failed", &self.failed.len())
            .field("unreadable", &self.unreadable.len())
            .finish()
    }
}

impl std::fmt::Debug for ConflictView {
    /// Field values are clinical content: only the field names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConflictView")
            .field("id", &self.id)
            .field("record", &self.record)
            .field(
                "fields",
                &self
                    .fields
                    .iter()
                    .map(|c| c.field.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl std::fmt::Debug for ConflictField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConflictField")
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}
