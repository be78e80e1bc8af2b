use crate::{AuthError, Secret};

/// Where the refresh token is kept: one OS keychain entry (macOS Keychain, Windows Credential
/// Manager, Linux Secret Service) per profile. Writing a new token replaces the entry in one
/// step; there is no other copy, in memory or on disk, and no fallback to a file.
#[derive(Debug, Clone)]
pub struct Vault {
    service: String,
    account: String,
}

fn keychain_error(e: keyring::Error) -> AuthError {
    AuthError::Keychain(e.to_string())
}

impl Vault {
    pub fn new(service: &str, account: &str) -> Self {
        Self {
            service: service.to_string(),
            account: account.to_string(),
        }
    }

    fn entry(&self) -> Result<keyring::Entry, AuthError> {
        keyring::Entry::new(&self.service, &self.account).map_err(keychain_error)
    }

    pub fn load(&self) -> Result<Option<Secret>, AuthError> {
        match self.entry()?.get_password() {
            Ok(token) => Ok(Some(Secret::new(token))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(keychain_error(e)),
        }
    }

    /// Stores `token`, replacing the one before; reads it back so a token that did not really
    /// reach the keychain is reported, not assumed.
    pub fn store(&self, token: &Secret) -> Result<(), AuthError> {
        self.entry()?
            .set_password(token.expose())
            .map_err(keychain_error)?;
        match self.load()? {
            Some(stored) if stored.ct_eq(token.expose()) => Ok(()),
            _ => Err(AuthError::Keychain(
                "the refresh token was not kept after it was stored".into(),
            )),
        }
    }

    pub fn delete(&self) -> Result<(), AuthError> {
        match self.entry()?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(keychain_error(e)),
        }
    }
}
