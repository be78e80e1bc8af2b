//! The visit note: a SOAP note per visit (appointment), its diagnoses and service lines,
//! signing and amending it, and the charge that goes to billing from it.
//!
//! PHI: a note's text, diagnoses and the chart excerpts are clinical content. Every type
//! here that carries them has a `Debug` that shows ids, states and counts only.

use crate::Modality;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which visit's note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteRequest {
    pub appointment_id: String,
}

/// The four parts of a SOAP note, as typed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteSections {
    pub subjective: String,
    pub objective: String,
    pub assessment: String,
    pub plan: String,
}

impl fmt::Debug for NoteSections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len =
            self.subjective.len() + self.objective.len() + self.assessment.len() + self.plan.len();
        write!(f, "NoteSections({len} bytes)")
    }
}

/// A diagnosis on the note: an ICD-10-CM code (with its dot, `J06.9`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteDiagnosis {
    pub code: String,
    pub description: Option<String>,
}

impl fmt::Debug for NoteDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoteDiagnosis(..)")
    }
}

/// The code system of a service line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceCodeSystem {
    /// CPT (AMA): codes ship with Hearth, descriptions are the site's to load.
    Cpt,
    /// HCPCS Level II (CMS, public domain).
    Hcpcs,
}

/// A billed service: one FT1 in the DFT, one ChargeItem at the EHR.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLine {
    pub code: String,
    pub system: ServiceCodeSystem,
    pub description: Option<String>,
    /// Modifiers (`95` for a synchronous telehealth service, set from the visit's modality).
    pub modifiers: Vec<String>,
    /// Units (at least 1).
    pub units: u32,
}

impl fmt::Debug for ServiceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceLine")
            .field("system", &self.system)
            .field("units", &self.units)
            .finish_non_exhaustive()
    }
}

/// What the clinician is writing: saved on every pause, sent when signed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteDraft {
    pub appointment_id: String,
    pub sections: NoteSections,
    pub diagnoses: Vec<NoteDiagnosis>,
    pub lines: Vec<ServiceLine>,
    /// Virtual visits: the patient was at home (place of service 10), else elsewhere (02).
    #[serde(default = "yes")]
    pub patient_at_home: bool,
    /// Counts the editor's saves: a save older than the one stored is ignored (two
    /// autosaves crossing never put back older text).
    #[serde(default)]
    pub revision: u64,
}

fn yes() -> bool {
    true
}

/// Where the note stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteState {
    /// Being written (never signed).
    Draft,
    /// Signed: read-only.
    Signed,
    /// An amendment of a signed note being written.
    Amending,
}

/// Where one signed version of the note is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum NoteDelivery {
    /// Signed here, waiting to reach the EHR (offline, or being sent).
    Queued,
    /// In the EHR's chart, as this DocumentReference.
    InChart { document_id: String },
    /// The EHR refused it; the reason, from its answer.
    Refused { reason: String },
}

/// A signed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteVersion {
    /// 1 for the note as first signed, 2 for its first amendment, ...
    pub version: u32,
    /// RFC 3339.
    pub signed_at: String,
    /// Display name of who signed.
    pub signed_by: String,
    pub delivery: NoteDelivery,
}

/// A charge's journey to billing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeState {
    /// Waiting to be sent (or to be sent again after a failed attempt).
    Queued,
    /// Billing accepted it (AA).
    Accepted,
    /// Billing refused it (AE or AR): kept for correction and resend.
    Refused,
    /// Replaced by a corrected charge.
    Corrected,
    /// No billing interface is configured: the charge is kept, nothing is sent.
    NotSent,
}

/// One charge: the visit's service lines and diagnoses as sent to billing in one DFT^P03.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeView {
    /// Stable id of the charge in Hearth.
    pub charge_id: String,
    /// The message control id (MSH-10), the same on every retry.
    pub control_id: String,
    pub lines: Vec<ServiceLine>,
    pub diagnoses: Vec<NoteDiagnosis>,
    pub place_of_service: String,
    pub state: ChargeState,
    /// Billing's reason for a refusal, or the last failure to reach it.
    pub reason: Option<String>,
    pub attempts: u32,
    /// RFC 3339.
    pub acknowledged_at: Option<String>,
}

impl fmt::Debug for ChargeView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChargeView")
            .field("charge_id", &self.charge_id)
            .field("control_id", &self.control_id)
            .field("lines", &self.lines.len())
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Lines of the chart a clinician can put into the note with one click.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteInserts {
    pub vitals: Vec<String>,
    pub problems: Vec<String>,
    pub medications: Vec<String>,
}

impl fmt::Debug for NoteInserts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NoteInserts({} vitals, {} problems, {} medications)",
            self.vitals.len(),
            self.problems.len(),
            self.medications.len()
        )
    }
}

/// The visit's note as the editor shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteView {
    pub appointment_id: String,
    pub patient_id: String,
    pub modality: Modality,
    /// The template the draft started from (by visit type).
    pub template: String,
    pub state: NoteState,
    /// The text being written, or the signed version's (read-only when signed).
    pub draft: NoteDraft,
    /// Set from the visit's modality (and where the patient was): `95` for virtual.
    pub visit_modifiers: Vec<String>,
    /// CMS place of service: 02 or 10 virtual, 11 in person.
    pub place_of_service: String,
    /// Signed versions, oldest first.
    pub versions: Vec<NoteVersion>,
    pub charges: Vec<ChargeView>,
    pub inserts: NoteInserts,
    /// RFC 3339: when the draft was last saved here.
    pub saved_at: Option<String>,
    /// Whether a billing interface (MLLP) is configured.
    pub billing_configured: bool,
}

/// An autosave (or an explicit save).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveNoteRequest {
    pub draft: NoteDraft,
}

/// What a save did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteSaved {
    /// RFC 3339.
    pub saved_at: String,
    /// The revision stored (a newer one than the request's means this save was stale).
    pub revision: u64,
}

/// Sign the draft (or the amendment being written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignNoteRequest {
    pub draft: NoteDraft,
    /// The author attests that the note is accurate and complete. Signing is refused without.
    pub attest: bool,
}

/// Start an amendment of the signed note (a draft from its text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmendNoteRequest {
    pub appointment_id: String,
}

/// A refused charge, corrected, to be sent again (a new message, a new control id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectChargeRequest {
    pub appointment_id: String,
    pub charge_id: String,
    pub lines: Vec<ServiceLine>,
    pub diagnoses: Vec<NoteDiagnosis>,
}

/// Which table a code search looks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeKind {
    /// ICD-10-CM.
    Diagnosis,
    /// CPT and HCPCS service codes.
    Service,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSearchRequest {
    pub kind: CodeKind,
    pub query: String,
    pub limit: u32,
}

/// One code a picker offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeOption {
    pub code: String,
    pub description: Option<String>,
    /// Service codes: CPT or HCPCS; diagnoses: none.
    pub system: Option<ServiceCodeSystem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_clinical_text() {
        let draft = NoteDraft {
            appointment_id: "a1".into(),
            sections: NoteSections {
                subjective: "cough since Tuesday".into(),
                ..Default::default()
            },
            diagnoses: vec![NoteDiagnosis {
                code: "J06.9".into(),
                description: Some("Acute upper respiratory infection".into()),
            }],
            lines: vec![ServiceLine {
                code: "99213".into(),
                system: ServiceCodeSystem::Cpt,
                description: None,
                modifiers: vec!["95".into()],
                units: 1,
            }],
            patient_at_home: true,
            revision: 3,
        };
        let shown = format!("{draft:?}");
        assert!(shown.contains("a1"));
        for secret in ["cough", "J06.9", "respiratory", "99213"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_draft_without_the_newer_fields_reads_with_their_defaults() {
        let draft: NoteDraft = serde_json::from_str(
            r#"{"appointment_id":"a","sections":{"subjective":"","objective":"","assessment":"","plan":""},"diagnoses":[],"lines":[]}"#,
        )
        .unwrap();
        assert!(draft.patient_at_home);
        assert_eq!(draft.revision, 0);
    }
}
