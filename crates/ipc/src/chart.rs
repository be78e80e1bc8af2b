use serde::{Deserialize, Serialize};
use std::fmt;

/// Request to open a patient's chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartRequest {
    pub patient_id: String,
}

/// The banner every chart view starts with. PHI: its `Debug` shows only the patient id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientBanner {
    pub patient_id: String,
    pub name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    pub age_years: Option<u32>,
    /// Administrative gender as recorded (`female`, `male`, `other`, `unknown`).
    pub sex: Option<String>,
    pub mrn: Option<String>,
    /// Substances of the active allergies, for the banner; empty means none recorded.
    pub allergy_summary: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub display: String,
    pub code: Option<String>,
    pub clinical_status: String,
    pub onset: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Medication {
    pub display: String,
    pub dosage: Option<String>,
    pub status: String,
    pub authored_on: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allergy {
    pub substance: String,
    pub criticality: Option<String>,
    pub reaction: Option<String>,
}

/// One measurement of a vital sign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitalPoint {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub value: f64,
}

/// A vital sign over time (oldest first), for trend plots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitalSeries {
    /// LOINC code of the measurement (components of a panel have their own code).
    pub code: String,
    pub label: String,
    pub unit: String,
    pub points: Vec<VitalPoint>,
}

/// How a lab value compares with its reference range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabFlag {
    Low,
    Normal,
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabResult {
    pub date: String,
    pub name: String,
    pub value: f64,
    /// `<`, `<=`, `>=` or `>` when the value is a bound, not an exact result.
    pub comparator: Option<String>,
    pub unit: String,
    pub range_low: Option<f64>,
    pub range_high: Option<f64>,
    pub flag: Option<LabFlag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncounterRow {
    pub date: String,
    pub kind: String,
    pub reason: Option<String>,
    pub modality: super::Modality,
}

/// A clinical note in the chart (a DocumentReference, or a note signed here on its way).
/// PHI: its `Debug` shows the document id and status only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteRow {
    /// RFC 3339 (or a date) the note was written.
    pub date: String,
    /// Its kind (the DocumentReference's type), e.g. "Progress note".
    pub title: String,
    pub author: Option<String>,
    /// The readable text (text/plain content), when the note carries one.
    pub text: Option<String>,
    /// "final", "amended", "superseded", or "signed, waiting to reach the EHR".
    pub status: String,
    /// The DocumentReference id at the EHR, when there is one.
    pub document_id: Option<String>,
}

/// A patient's chart as the centre region shows it. PHI: its `Debug` shows only the patient
/// id and how many entries each section has.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    pub banner: PatientBanner,
    pub problems: Vec<Problem>,
    pub medications: Vec<Medication>,
    pub allergies: Vec<Allergy>,
    pub vitals: Vec<VitalSeries>,
    /// Most recent first.
    pub labs: Vec<LabResult>,
    /// Most recent first.
    pub encounters: Vec<EncounterRow>,
    /// Clinical notes, most recent first.
    #[serde(default)]
    pub notes: Vec<NoteRow>,
    /// Records that could not be shown, each naming the resource and field at fault.
    pub data_issues: Vec<String>,
}

impl fmt::Debug for PatientBanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientBanner")
            .field("patient_id", &self.patient_id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for NoteRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteRow")
            .field("document_id", &self.document_id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Chart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chart")
            .field("patient_id", &self.banner.patient_id)
            .field("problems", &self.problems.len())
            .field("medications", &self.medications.len())
            .field("allergies", &self.allergies.len())
            .field("vitals", &self.vitals.len())
            .field("labs", &self.labs.len())
            .field("encounters", &self.encounters.len())
            .field("notes", &self.notes.len())
            .field("data_issues", &self.data_issues)
            .finish()
    }
}
