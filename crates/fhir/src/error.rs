//! What can go wrong talking to a FHIR server, typed so that callers branch on kinds, not text.
//!
//! Messages name resources by type and id and fields by path; an OperationOutcome's
//! diagnostics are the server's words and are kept, since they say what it refused.

use serde::Deserialize;

/// One issue of an OperationOutcome.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct Issue {
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub diagnostics: Option<String>,
    #[serde(default)]
    pub expression: Vec<String>,
}

/// The issues a server sent with an error (empty when it sent no OperationOutcome).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub issues: Vec<Issue>,
}

impl Outcome {
    /// Reads an OperationOutcome body; anything else gives an empty outcome.
    pub fn parse(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "resourceType")]
            resource_type: String,
            #[serde(default)]
            issue: Vec<Issue>,
        }
        match serde_json::from_slice::<Wire>(body) {
            Ok(w) if w.resource_type == "OperationOutcome" => Self { issues: w.issue },
            _ => Self::default(),
        }
    }

    /// The first issue in words: `code: diagnostics (at expression)`.
    pub fn summary(&self) -> String {
        match self.issues.first() {
            None => "no details given".to_string(),
            Some(i) => {
                let mut s = i.code.clone();
                if let Some(d) = &i.diagnostics {
                    if !s.is_empty() {
                        s.push_str(": ");
                    }
                    s.push_str(d);
                }
                if let Some(e) = i.expression.first() {
                    s.push_str(&format!(" (at {e})"));
                }
                s
            }
        }
    }
}

/// An error from the FHIR client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// The server is unreachable or the connection dropped (after retries).
    #[error("the EHR at {base} cannot be reached: {reason}")]
    Unreachable { base: String, reason: String },
    /// 401: the token is missing, expired or revoked.
    #[error("the EHR refused our sign-in (401): {0}")]
    Unauthorized(String),
    /// 403: signed in but not allowed.
    #[error("the EHR does not allow this ({0})")]
    Forbidden(String),
    #[error("{what} does not exist at the EHR")]
    NotFound { what: String },
    #[error("{what} was deleted at the EHR")]
    Gone { what: String },
    /// 412: the resource changed at the server since the version the write was based on.
    #[error("{what} was changed at the EHR by someone else (version conflict)")]
    VersionConflict { what: String },
    /// 400/409/422 and other refusals: the server said why.
    #[error("the EHR refused the request ({status}): {}", .outcome.summary())]
    Rejected { status: u16, outcome: Outcome },
    /// 429 or 5xx that outlasted the retries.
    #[error("the EHR is busy or failing ({status}): {}", .outcome.summary())]
    Server { status: u16, outcome: Outcome },
    /// What the server sent is not what FHIR says it must be.
    #[error("{what}: field `{field}` {problem}")]
    Malformed {
        /// `Type/id`, or where in the response (`bundle entry 3`) when the id is unusable.
        what: String,
        field: String,
        problem: String,
    },
    /// The auth layer could not supply a token.
    #[error("no usable sign-in: {0}")]
    Auth(String),
    /// The caller asked for something the client will not do (e.g. follow a link elsewhere).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl FhirError {
    pub(crate) fn malformed(
        what: impl Into<String>,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Self::Malformed {
            what: what.into(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Whether trying again later may succeed (the server or the network, not the request).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Server { .. })
    }

    /// A stable code for logs and the UI.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound { .. } => "not-found",
            Self::Gone { .. } => "gone",
            Self::VersionConflict { .. } => "version-conflict",
            Self::Rejected { .. } => "rejected",
            Self::Server { .. } => "server",
            Self::Malformed { .. } => "malformed",
            Self::Auth(_) => "auth",
            Self::Invalid(_) => "invalid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_outcome_is_summarised_with_its_location() {
        let o = Outcome::parse(
            br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"required",
            "diagnostics":"status is required","expression":["Appointment.status"]}]}"#,
        );
        assert_eq!(
            o.summary(),
            "required: status is required (at Appointment.status)"
        );
        let e = FhirError::Rejected {
            status: 422,
            outcome: o,
        };
        assert_eq!(
            e.to_string(),
            "the EHR refused the request (422): required: status is required (at Appointment.status)"
        );
        assert!(!e.is_transient());
        assert_eq!(Outcome::parse(b"<html>").summary(), "no details given");
    }
}
