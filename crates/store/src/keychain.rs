//! The database key in the operating system's keychain (macOS Keychain, Windows Credential
//! Manager, Linux Secret Service). There is no fallback: a missing or locked keychain is an
//! error that says so, never a key in a file.

use crate::{DbKey, StoreError};

/// Where the key is kept: one keychain entry per profile.
#[derive(Debug, Clone)]
pub struct Keychain {
    service: String,
    account: String,
}

fn keychain_error(e: keyring::Error) -> StoreError {
    StoreError::Keychain(e.to_string())
}

impl Keychain {
    /// An entry named by service (the application) and account (the profile).
    pub fn new(service: &str, account: &str) -> Self {
        Self {
            service: service.to_string(),
            account: account.to_string(),
        }
    }

    fn entry(&self) -> Result<keyring::Entry, StoreError> {
        keyring::Entry::new(&self.service, &self.account).map_err(keychain_error)
    }

    /// The stored key, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<DbKey>, StoreError> {
        match self.entry()?.get_password() {
            Ok(hex) => DbKey::from_hex(&hex).map(Some).ok_or_else(|| {
                StoreError::Keychain(format!(
                    "the entry {}/{} does not hold a Hearth database key",
                    self.service, self.account
                ))
            }),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(keychain_error(e)),
        }
    }

    /// Makes a new random key and stores it. Reads it back, so a key that did not really
    /// reach the keychain is never used to encrypt anything.
    pub fn create(&self) -> Result<DbKey, StoreError> {
        let key = DbKey::generate()?;
        self.entry()?
            .set_password(&key.hex())
            .map_err(keychain_error)?;
        match self.load()? {
            Some(stored) => Ok(stored),
            None => Err(StoreError::Keychain(
                "the key was not kept after it was stored".into(),
            )),
        }
    }

    /// Removes the key (the database becomes unreadable).
    pub fn forget(&self) -> Result<(), StoreError> {
        match self.entry()?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(keychain_error(e)),
        }
    }
}
