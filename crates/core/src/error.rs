use hearth_ipc::ErrorCode;

/// Errors of the application core. Messages name records by type and id and fields by path,
/// never by clinical content, so they are safe to log and to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("{what} was not found")]
    NotFound { what: String },
    #[error("invalid request: {0}")]
    InvalidInput(String),
    #[error("{resource}: field `{field}` {problem}")]
    InvalidData {
        /// `Type/id` of the resource, or `Type` when the id itself is unusable.
        resource: String,
        field: String,
        problem: String,
    },
    #[error("configuration {source_name}: {problem}")]
    Configuration {
        source_name: String,
        problem: String,
    },
    #[error("the session is locked")]
    Locked,
    /// Signing in failed; `code` is hearth-auth's stable code.
    #[error("{message}")]
    SignIn { code: String, message: String },
    #[error("{0} is unavailable")]
    Unavailable(String),
    /// The local store failed; the message says how (never with clinical content).
    #[error("local store: {0}")]
    Store(String),
    /// The visit service refused or could not be reached.
    #[error("{0}")]
    VisitService(String),
    /// The visit service says the visit is still going on (`appointment`: `Appointment/<id>`).
    #[error(
        "the virtual visit of {appointment} has not ended: its Encounter is recorded once it has"
    )]
    VisitNotEnded { appointment: String },
    /// Nobody but clinicians was admitted to the visit (`appointment`: `Appointment/<id>`).
    #[error("nobody but clinicians was admitted to the virtual visit of {appointment}: there is no encounter to record")]
    VisitNotHeld { appointment: String },
    /// The call's media failed (camera, codec, network); the message says what.
    #[error("video call: {0}")]
    Media(String),
}

impl CoreError {
    /// [`hearth_model::ModelError::invalid_data`], as the core's error.
    pub fn invalid_data(
        resource: impl Into<String>,
        field: &str,
        problem: impl Into<String>,
    ) -> Self {
        hearth_model::ModelError::invalid_data(resource, field, problem).into()
    }

    /// The stable code the UI branches on.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::InvalidInput(_) => ErrorCode::InvalidInput,
            Self::InvalidData { .. } => ErrorCode::InvalidData,
            Self::Configuration { .. } => ErrorCode::Configuration,
            Self::Locked => ErrorCode::Locked,
            Self::SignIn { .. } => ErrorCode::SignIn,
            Self::Unavailable(_) | Self::Store(_) => ErrorCode::Unavailable,
            Self::VisitService(_) => ErrorCode::VisitService,
            Self::VisitNotEnded { .. } => ErrorCode::VisitNotEnded,
            Self::VisitNotHeld { .. } => ErrorCode::VisitNotHeld,
            Self::Media(_) => ErrorCode::Media,
        }
    }
}

impl From<hearth_model::ModelError> for CoreError {
    /// Variant by variant: the message and the stable code stay what they were.
    fn from(e: hearth_model::ModelError) -> Self {
        use hearth_model::ModelError as M;
        match e {
            M::NotFound { what } => Self::NotFound { what },
            M::InvalidInput(m) => Self::InvalidInput(m),
            M::InvalidData {
                resource,
                field,
                problem,
            } => Self::InvalidData {
                resource,
                field,
                problem,
            },
            M::Unavailable(m) => Self::Unavailable(m),
            M::Store(m) => Self::Store(m),
        }
    }
}

impl From<hearth_store::StoreError> for CoreError {
    fn from(e: hearth_store::StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<hearth_auth::AuthError> for CoreError {
    fn from(e: hearth_auth::AuthError) -> Self {
        Self::SignIn {
            code: e.code().to_string(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_data_names_resource_and_field() {
        let e = CoreError::invalid_data("Appointment/a1", "start", "is not an RFC 3339 instant");
        assert_eq!(e.code(), ErrorCode::InvalidData);
        assert_eq!(
            e.to_string(),
            "Appointment/a1: field `start` is not an RFC 3339 instant"
        );
    }

    #[test]
    fn model_errors_keep_their_message_and_code() {
        use hearth_model::ModelError as M;
        for e in [
            M::NotFound {
                what: "conflict 3".into(),
            },
            M::InvalidInput("\"x\" is not an appointment status".into()),
            M::invalid_data("Appointment/a1", "start", "is missing"),
            M::Unavailable("the EHR (unreachable)".into()),
            M::Store("disk full".into()),
        ] {
            let core = CoreError::from(e.clone());
            assert_eq!(core.to_string(), e.to_string());
            assert_eq!(core.code(), e.code());
        }
    }
}
