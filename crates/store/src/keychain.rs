//! The database key in the operating system's keychain, through Hearth's one keychain helper
//! ([`hearth_keychain::Keychain`]), as 64 hex digits. There is no fallback: a missing or
//! locked keychain is an error that says so, never a key in a file.

use crate::{AuditKey, DbKey, StoreError};
use hearth_keychain::ExposeSecret;

/// Where a profile's database key is kept: one keychain entry per profile; beside it, the
/// entry of the profile's audit key (account `audit-key:<the database key's account>`).
#[derive(Debug, Clone)]
pub struct Keychain(hearth_keychain::Keychain, hearth_keychain::Keychain);

fn keychain_error(e: hearth_keychain::KeychainError) -> StoreError {
    StoreError::Keychain(e.to_string())
}

impl Keychain {
    /// An entry named by service (the application) and account (the profile).
    pub fn new(service: &str, account: &str) -> Self {
        Self(
            hearth_keychain::Keychain::new(service, account),
            hearth_keychain::Keychain::new(service, &format!("audit-key:{account}")),
        )
    }

    /// The stored key, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<DbKey>, StoreError> {
        match self.0.load().map_err(keychain_error)? {
            Some(hex) => DbKey::from_hex(hex.expose_secret())
                .map(Some)
                .ok_or_else(|| keychain_error(self.0.error("does not hold a Hearth database key"))),
            None => Ok(None),
        }
    }

    /// Makes a new random key and stores it. The keychain reads it back, so a key that did
    /// not really reach it is never used to encrypt anything.
    pub fn create(&self) -> Result<DbKey, StoreError> {
        let key = DbKey::generate()?;
        self.0.store(&key.hex()).map_err(keychain_error)?;
        Ok(key)
    }

    /// Removes the key (the database becomes unreadable), and the audit key.
    pub fn forget(&self) -> Result<(), StoreError> {
        self.0.forget().map_err(keychain_error)?;
        self.1.forget().map_err(keychain_error)
    }

    /// The stored audit key, or `None` if there is none yet.
    pub fn load_audit_key(&self) -> Result<Option<AuditKey>, StoreError> {
        match self.1.load().map_err(keychain_error)? {
            Some(hex) => AuditKey::from_hex(hex.expose_secret())
                .map(Some)
                .ok_or_else(|| keychain_error(self.1.error("does not hold a Hearth audit key"))),
            None => Ok(None),
        }
    }

    /// Makes a new random audit key and stores it (read back, as the database key is).
    pub fn create_audit_key(&self) -> Result<AuditKey, StoreError> {
        let key = AuditKey::generate()?;
        self.1.store(&key.hex()).map_err(keychain_error)?;
        Ok(key)
    }
}
