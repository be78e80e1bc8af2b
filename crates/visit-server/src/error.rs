//! Errors: [`SetupError`] when the service cannot start; [`Refusal`] for a request or message
//! it turns down, carrying the protocol's stable code.

use hearth_visit_protocol::{ErrorBody, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("configuration {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot reach Redis: {0}")]
    Redis(String),
}

/// A refusal with its stable code and a sentence for a person (never a token).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(&self) -> u16 {
        match self.code {
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotClinician | ErrorCode::WrongVisit | ErrorCode::NotOnAppointment => 403,
            ErrorCode::LinkInvalid | ErrorCode::BadMessage | ErrorCode::NotJoined => 400,
            ErrorCode::LinkExpired | ErrorCode::VisitOver => 410,
            ErrorCode::LinkNotYet | ErrorCode::NotAdmitted | ErrorCode::VisitFull => 409,
            ErrorCode::ResumeRefused => 409,
            ErrorCode::UnknownParticipant => 404,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable | ErrorCode::EhrUnavailable => 503,
        }
    }

    pub(crate) fn rate_limited() -> Self {
        Self::new(
            ErrorCode::RateLimited,
            "too many attempts (from this address, or to the service); wait a minute and try again",
        )
    }

    /// Too many link checks or joins for one visit (a link passed around too widely).
    pub(crate) fn visit_busy() -> Self {
        Self::new(
            ErrorCode::RateLimited,
            "too many attempts to open this visit; wait a minute and try again",
        )
    }

    pub(crate) fn unavailable(what: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::Unavailable,
            format!("the visit service cannot reach its shared state ({what}); try again"),
        )
    }
}
