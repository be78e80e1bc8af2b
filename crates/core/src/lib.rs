//! Hearth's application core. Everything the workstation does lives here (or in the crates
//! below it), testable without a window: the shell only converts IPC types and calls in.
//!
//! - [`Workstation`] is the application: it opens the configured data source and answers the
//!   views' questions (status, schedule, chart) from the local store.
//! - [`store::ClinicalStore`] is the seam where the encrypted store plugs in; until then
//!   [`store::MemoryStore`] holds the resources.
//! - [`clock::Clock`] injects time, so schedules and ages are testable without waiting.

pub mod billing;
pub mod call;
pub mod chart;
pub mod codes;
pub mod config;
pub mod encounter;
pub mod error;
pub mod launch;
pub mod note;
#[cfg(target_os = "linux")]
pub mod os_lock;
pub mod profile;
pub mod schedule;
pub mod signon;
pub mod store;
pub mod visits;
mod workstation;

/// Shared with the sync engine, from the crate both sit on.
pub use hearth_model::{clock, fhir, sync_link, KEYCHAIN_SERVICE};

pub use error::CoreError;
pub use workstation::{ArrivalFeed, CallFeed, EncounterRecord, RoomFeed, StatusFeed, Workstation};
