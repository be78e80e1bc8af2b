use crate::{AuthError, Secret};

/// Where the refresh token is kept: one OS keychain entry per profile, through Hearth's one
/// keychain helper ([`hearth_keychain::Keychain`]). Writing a new token replaces the entry in
/// one step and reads it back; there is no other copy, in memory or on disk, and no fallback
/// to a file.
#[derive(Debug, Clone)]
pub struct Vault(hearth_keychain::Keychain);

fn keychain_error(e: hearth_keychain::KeychainError) -> AuthError {
    AuthError::Keychain(e.to_string())
}

impl Vault {
    pub fn new(service: &str, account: &str) -> Self {
        Self(hearth_keychain::Keychain::new(service, account))
    }

    pub fn load(&self) -> Result<Option<Secret>, AuthError> {
        Ok(self.0.load().map_err(keychain_error)?.map(Secret::from))
    }

    /// Stores `token`, replacing the one before; a token that did not really reach the
    /// keychain is reported, not assumed.
    pub fn store(&self, token: &Secret) -> Result<(), AuthError> {
        self.0
            .store(token.as_secret_string())
            .map_err(keychain_error)
    }

    /// Runs a keychain call on a blocking thread: the OS keychain answers synchronously (over
    /// D-Bus on Linux), which must not hold up the async runtime's workers.
    pub async fn off_runtime<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Vault) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let vault = self.clone();
        tokio::task::spawn_blocking(move || call(&vault))
            .await
            .map_err(|e| AuthError::Keychain(format!("the keychain call did not finish: {e}")))?
    }

    pub fn delete(&self) -> Result<(), AuthError> {
        self.0.forget().map_err(keychain_error)
    }
}
