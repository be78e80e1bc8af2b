//! Hearth's sign-on: a SMART App Launch 2.2 client for a native app, on OpenID Connect.
//!
//! - [`Provider::discover`] reads `<fhir-base>/.well-known/smart-configuration`, then the
//!   issuer's OpenID Connect discovery document and keys (with the `openidconnect` crate).
//! - [`PendingLogin`] is one authorization-code flow with PKCE S256 (RFC 7636), run in the
//!   system browser with a redirect to `http://127.0.0.1:<ephemeral port>/callback` (RFC 8252):
//!   `state` (128 random bits) and `nonce` are checked, `aud` names the FHIR server, an EHR
//!   launch echoes `launch` and brings back the patient and encounter in context.
//! - [`Session`] holds the access token in memory only; the refresh token lives only in the OS
//!   keychain ([`Vault`]) and a rotated one replaces it there. Sign-out revokes and deletes.
//! - [`Tokens`] is what the FHIR client asks for its bearer token ([`hearth_fhir::TokenSource`]).
//! - [`IdleLock`] locks after minutes without input, on an injectable [`Clock`].
//!
//! No token is ever written to a log, a panic message or a file: they are [`Secret`]s.

mod browser;
mod error;
mod lock;
mod login;
mod provider;
mod secret;
mod session;
mod vault;

pub use browser::Browser;
pub use error::AuthError;
pub use lock::{Clock, IdleLock, LockState, ManualClock, SystemClock};
pub use login::{LoginRequest, PendingLogin, Redirect};
pub use provider::{AuthSettings, Provider, DEFAULT_SCOPES};
pub use secret::Secret;
pub use session::{LaunchContext, Session, Tokens, User};
pub use vault::Vault;

pub type Result<T> = std::result::Result<T, AuthError>;
