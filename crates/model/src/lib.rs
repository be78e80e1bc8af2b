//! What Hearth's application core (`hearth-core`) and its sync engine (`hearth-sync`) share,
//! so that neither depends on the other:
//!
//! - [`fhir`]: lenient FHIR R4 reading whose errors name the resource and the field;
//! - [`row`]: the encrypted store's row for a resource (its projection fields);
//! - [`settings`]: the `[sync]` settings;
//! - [`clock`]: the injected clock (tests never sleep);
//! - [`sync_link`]: what the sync engine shows the workstation and accepts from it;
//! - [`ModelError`]: the error of all of the above, with stable codes.

pub mod clock;
mod error;
pub mod fhir;
pub mod row;
pub mod settings;
pub mod sync_link;
pub mod writes;

pub use error::ModelError;

/// The keychain service under which Hearth keeps its secrets (database keys, refresh tokens).
pub const KEYCHAIN_SERVICE: &str = "org.hearth.workstation";
