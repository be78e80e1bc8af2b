use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable, machine-readable error code. The UI branches on these; their serialized names
/// never change once released (add new ones, never rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The requested record does not exist in the local store.
    NotFound,
    /// The request itself was malformed (bad date, empty id, ...).
    InvalidInput,
    /// The session is locked; PHI is withheld until the user authenticates again.
    Locked,
    /// Clinical data received or stored is malformed; the message names the resource and field.
    InvalidData,
    /// A configuration file is missing a value or holds a wrong one.
    Configuration,
    /// A dependency (store, network, keychain) is unavailable right now; retrying may help.
    Unavailable,
    /// A bug in Hearth; the message says what failed without PHI.
    Internal,
    /// Signing in failed or was refused; the message says why (never a token).
    SignIn,
    /// The visit service refused or could not be reached; the message says which.
    VisitService,
    /// The virtual visit is still going on: its Encounter is recorded once it has ended.
    VisitNotEnded,
    /// Nobody but clinicians was admitted to the virtual visit: there is no encounter to record.
    VisitNotHeld,
    /// The call's media could not start or failed (camera, codec, network); the message says
    /// what.
    Media,
}

impl ErrorCode {
    /// The code's stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::InvalidInput => "invalid_input",
            Self::Locked => "locked",
            Self::InvalidData => "invalid_data",
            Self::Configuration => "configuration",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::SignIn => "sign_in",
            Self::VisitService => "visit_service",
            Self::VisitNotEnded => "visit_not_ended",
            Self::VisitNotHeld => "visit_not_held",
            Self::Media => "media",
        }
    }
}

/// The error every command returns: a stable code plus a message for people. Messages never
/// contain PHI or secrets (the core builds them from identifiers and field names only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcError {
    pub code: ErrorCode,
    pub message: String,
}

impl IpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for IpcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_to_their_stable_names() {
        for code in [
            ErrorCode::NotFound,
            ErrorCode::InvalidInput,
            ErrorCode::Locked,
            ErrorCode::InvalidData,
            ErrorCode::Configuration,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::SignIn,
            ErrorCode::VisitService,
            ErrorCode::VisitNotEnded,
            ErrorCode::VisitNotHeld,
            ErrorCode::Media,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn debug_of_phi_views_shows_ids_not_people() {
        use crate::*;
        let banner = PatientBanner {
            patient_id: "p1".into(),
            name: "Ada Lovelace".into(),
            birth_date: Some("1815-12-10".into()),
            age_years: Some(36),
            sex: Some("female".into()),
            mrn: Some("4100123".into()),
            allergy_summary: vec!["Peanut".into()],
        };
        let row = AppointmentRow {
            appointment_id: "a1".into(),
            start: "2026-03-10T09:00:00-05:00".into(),
            end: "2026-03-10T09:30:00-05:00".into(),
            start_label: "09:00".into(),
            duration_minutes: 30,
            patient_id: "p1".into(),
            patient_name: "Ada Lovelace".into(),
            practitioner_id: "d1".into(),
            practitioner_name: "Dr. Okafor".into(),
            modality: Modality::Virtual,
            status: VisitStatus::Booked,
            reason: Some("Chest pain".into()),
            location: None,
        };
        let chart = Chart {
            banner: banner.clone(),
            problems: vec![],
            medications: vec![],
            allergies: vec![],
            vitals: vec![],
            labs: vec![],
            encounters: vec![],
            notes: vec![crate::NoteRow {
                date: "2026-03-10".into(),
                title: "Progress note".into(),
                author: Some("Dr. Okafor".into()),
                text: Some("Chest pain since Ada's birthday".into()),
                status: "final".into(),
                document_id: Some("doc1".into()),
            }],
            data_issues: vec![],
        };
        for text in [
            format!("{banner:?}"),
            format!("{row:?}"),
            format!("{chart:?}"),
        ] {
            for phi in ["Ada", "Lovelace", "1815", "4100123", "Peanut", "Chest pain"] {
                assert!(!text.contains(phi), "{text} shows {phi}");
            }
            assert!(text.contains("p1"), "{text}");
        }
    }

    #[test]
    fn ipc_error_round_trips() {
        let e = IpcError::new(ErrorCode::NotFound, "no patient with id p-1");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"code":"not_found","message":"no patient with id p-1"}"#
        );
        assert_eq!(serde_json::from_str::<IpcError>(&json).unwrap(), e);
    }
}
