//! One secret in one entry of the operating system's keychain (macOS Keychain, Windows
//! Credential Manager, Linux Secret Service behind the kernel keyutils cache). The database
//! key (`hearth_store::Keychain`) and the refresh token (`hearth_auth::Vault`) are both kept
//! through [`Keychain`]. There is no fallback: a missing or locked keychain is an error that
//! says so, never a secret in a file.
//!
//! Secrets travel as [`SecretString`] (crate `secrecy`): `Debug` shows `[REDACTED]`, and the
//! text is zeroised when dropped.

pub use secrecy::{ExposeSecret, SecretString};

/// The keychain refused or failed; the message names the entry, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeychainError(String);

/// Where one secret is kept: an entry named by service (the application) and account (what
/// the secret is for, and whose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keychain {
    service: String,
    account: String,
}

impl Keychain {
    pub fn new(service: &str, account: &str) -> Self {
        Self {
            service: service.to_string(),
            account: account.to_string(),
        }
    }

    /// `service/account`, for messages.
    pub fn name(&self) -> String {
        format!("{}/{}", self.service, self.account)
    }

    /// An error about this entry.
    pub fn error(&self, problem: impl std::fmt::Display) -> KeychainError {
        KeychainError(format!("keychain entry {}: {problem}", self.name()))
    }

    fn entry(&self) -> Result<keyring::Entry, KeychainError> {
        keyring::Entry::new(&self.service, &self.account).map_err(|e| self.error(e))
    }

    /// The secret kept, or `None` if there is none yet.
    pub fn load(&self) -> Result<Option<SecretString>, KeychainError> {
        match self.entry()?.get_password() {
            Ok(text) => Ok(Some(SecretString::from(text))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Keeps `secret`, replacing the one before in one step, and reads it back: a secret that
    /// did not really reach the keychain is reported, never assumed kept.
    pub fn store(&self, secret: &SecretString) -> Result<(), KeychainError> {
        self.entry()?
            .set_password(secret.expose_secret())
            .map_err(|e| self.error(e))?;
        match self.load()? {
            Some(kept) if same(kept.expose_secret(), secret.expose_secret()) => Ok(()),
            _ => Err(self.error("the secret was not kept after it was stored")),
        }
    }

    /// Removes the entry (nothing to remove is fine).
    pub fn forget(&self) -> Result<(), KeychainError> {
        match self.entry()?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// Equal texts, compared in time that depends only on the lengths.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_and_errors_name_the_entry_only() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        let k = Keychain::new("org.hearth.test", "refresh-token:/p/hearth.db");
        let e = k.error("locked");
        assert_eq!(
            e.to_string(),
            "keychain entry org.hearth.test/refresh-token:/p/hearth.db: locked"
        );
        let s = SecretString::from("s3cret-value".to_string());
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
