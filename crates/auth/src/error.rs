/// Why signing in, refreshing or signing out failed. Messages never contain a token, a code or
/// a password; they say what was wrong in words IT can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The EHR's SMART configuration or the provider's discovery document is missing or wrong.
    #[error("sign-on discovery failed: {0}")]
    Discovery(String),
    /// The provider (or the network to it) could not be reached.
    #[error("the sign-in service cannot be reached: {0}")]
    Unreachable(String),
    /// The redirect came back with a `state` this login did not send.
    #[error(
        "the sign-in answer does not belong to this sign-in (state mismatch); nothing was accepted"
    )]
    StateMismatch,
    /// The redirect names another issuer than the one asked (RFC 9207).
    #[error("the sign-in answer came from {found}, not from {expected}")]
    IssuerMismatch { expected: String, found: String },
    /// The provider refused at the authorization step (e.g. the user cancelled).
    #[error("the sign-in service refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        error: String,
        description: Option<String>,
    },
    /// The token endpoint refused the code or refresh token.
    #[error("the sign-in service refused the token request: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenRefused {
        error: String,
        description: Option<String>,
    },
    /// The ID token failed verification: signature, issuer, audience, expiry or nonce.
    #[error("the identity token was rejected: {0}")]
    InvalidIdToken(String),
    /// The token response is not what the standards require.
    #[error("the sign-in service answered something unusable: {0}")]
    BadResponse(String),
    /// The OS keychain is missing, locked or refused: tokens are never kept anywhere else.
    #[error("the system keychain is unavailable ({0}); Hearth keeps sign-in tokens only there")]
    Keychain(String),
    /// Waiting for the browser took too long, or the sign-in was abandoned.
    #[error("the sign-in was not completed in the browser within {0} seconds")]
    TimedOut(u64),
    /// An unlock's sign-in does not prove an authentication after the lock (`auth_time`
    /// missing or earlier): the provider reused an older login.
    #[error("the sign-in service did not show a new sign-in after the lock ({0}); the window stays locked")]
    StaleAuthentication(String),
    /// A re-authentication (to unlock) signed in as someone else.
    #[error("the session belongs to another user; sign out to change user")]
    WrongUser,
    /// The system browser could not be started.
    #[error("the browser could not be opened: {0}")]
    Browser(String),
    /// No session: sign in first.
    #[error("not signed in")]
    SignedOut,
    /// A request this crate was given is wrong (bad URL, launch from another EHR, ...).
    #[error("{0}")]
    Invalid(String),
}

impl AuthError {
    /// A stable code for logs and IPC.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Discovery(_) => "discovery",
            Self::Unreachable(_) => "unreachable",
            Self::StateMismatch => "state-mismatch",
            Self::IssuerMismatch { .. } => "issuer-mismatch",
            Self::Refused { .. } => "refused",
            Self::TokenRefused { .. } => "token-refused",
            Self::InvalidIdToken(_) => "invalid-id-token",
            Self::BadResponse(_) => "bad-response",
            Self::Keychain(_) => "keychain",
            Self::TimedOut(_) => "timed-out",
            Self::StaleAuthentication(_) => "stale-authentication",
            Self::WrongUser => "wrong-user",
            Self::Browser(_) => "browser",
            Self::SignedOut => "signed-out",
            Self::Invalid(_) => "invalid",
        }
    }

    /// The refresh token (or grant) is no longer good: the user must sign in again.
    pub fn needs_sign_in(&self) -> bool {
        matches!(self, Self::TokenRefused { error, .. } if error == "invalid_grant")
            || matches!(self, Self::SignedOut)
    }
}
