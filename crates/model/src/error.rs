use hearth_ipc::ErrorCode;

/// Errors of what the core and the sync engine share: reading FHIR, projecting rows, acting
/// on the sync engine's records. Messages name records by type and id and fields by path,
/// never by clinical content, so they are safe to log and to show. `hearth_core::CoreError`
/// converts from it variant by variant, so the stable codes stay the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
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
    #[error("{0} is unavailable")]
    Unavailable(String),
    /// The local store failed; the message says how (never with clinical content).
    #[error("local store: {0}")]
    Store(String),
}

impl ModelError {
    pub fn invalid_data(
        resource: impl Into<String>,
        field: &str,
        problem: impl Into<String>,
    ) -> Self {
        Self::InvalidData {
            resource: resource.into(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    /// The stable code the UI branches on.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::InvalidInput(_) => ErrorCode::InvalidInput,
            Self::InvalidData { .. } => ErrorCode::InvalidData,
            Self::Unavailable(_) | Self::Store(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<hearth_store::StoreError> for ModelError {
    fn from(e: hearth_store::StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_data_names_resource_and_field() {
        let e = ModelError::invalid_data("Appointment/a1", "start", "is not an RFC 3339 instant");
        assert_eq!(e.code(), ErrorCode::InvalidData);
        assert_eq!(
            e.to_string(),
            "Appointment/a1: field `start` is not an RFC 3339 instant"
        );
    }
}
