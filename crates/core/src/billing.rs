//! Charges for billing: the note's codes checked, the control id, the HL7 v2.5.1 DFT^P03
//! built from the visit (hearth-hl7), and the code tables the pickers search.

use crate::codes::{CodeSystem, DiagnosisCodes, ServiceCodes};
use crate::config::BillingConfig;
use crate::fhir::human_name;
use crate::note::{Author, BillingPatient, Visit};
use crate::CoreError;
use chrono::{DateTime, FixedOffset, NaiveDate};
use hearth_ipc::{CodeKind, CodeOption, NoteDiagnosis, NoteDraft, ServiceCodeSystem, ServiceLine};
use hearth_model::clock::Zone;
use serde_json::Value;

pub use crate::codes::visit_billing;

/// The message control id (MSH-10, at most 20 characters in v2.5.1) of a charge: 20
/// characters of RFC 4648 base32 from the charge id's SHA-256, so a charge keeps it on every
/// retry and after a restart.
pub fn control_id(charge_id: &str) -> String {
    use sha2::Digest as _;
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = sha2::Sha256::digest(charge_id.as_bytes());
    let mut bits: u64 = 0;
    let mut n = 0;
    let mut out = String::with_capacity(20);
    for b in d.iter() {
        bits = (bits << 8) | u64::from(*b);
        n += 8;
        while n >= 5 && out.len() < 20 {
            n -= 5;
            out.push(char::from(ALPHABET[((bits >> n) & 31) as usize]));
        }
        if out.len() == 20 {
            break;
        }
    }
    out
}

/// ICD-10-CM code shape: a letter, a digit, a letter or digit, then optionally a dot and one
/// to four letters or digits.
fn icd10cm_shape(code: &str) -> bool {
    let (head, tail) = code.split_once('.').unwrap_or((code, ""));
    let h = head.as_bytes();
    h.len() == 3
        && h[0].is_ascii_uppercase()
        && h[1].is_ascii_digit()
        && h[2].is_ascii_alphanumeric()
        && tail.len() <= 4
        && tail.is_empty() != code.contains('.')
        && tail
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// CPT: five characters, four digits then a digit or F/T/U (Category II, III, PLA);
/// HCPCS Level II: a letter A–V then four digits.
fn service_shape(code: &str, system: ServiceCodeSystem) -> bool {
    let b = code.as_bytes();
    b.len() == 5
        && match system {
            ServiceCodeSystem::Cpt => {
                b[..4].iter().all(u8::is_ascii_digit)
                    && (b[4].is_ascii_digit() || matches!(b[4], b'F' | b'T' | b'U'))
            }
            ServiceCodeSystem::Hcpcs => {
                (b'A'..=b'V').contains(&b[0]) && b[1..].iter().all(u8::is_ascii_digit)
            }
        }
}

/// Checks and completes the note's codes before signing: diagnoses are ICD-10-CM codes
/// (upper-cased; at most 12, HL7 DG1 and the 837P's limit), service lines CPT/HCPCS codes
/// with 1–99 units and two-character modifiers (at most 4), each line given the visit's
/// modifiers (`95` for a virtual visit) and, in person, never `95`. Errors name the line.
pub fn check_note(draft: &mut NoteDraft, visit_modifiers: &[&str]) -> Result<(), CoreError> {
    if draft.diagnoses.len() > 12 {
        return Err(CoreError::InvalidInput(
            "at most 12 diagnoses go on one claim".into(),
        ));
    }
    if !draft.lines.is_empty() && draft.diagnoses.is_empty() {
        return Err(CoreError::InvalidInput(
            "a billed service needs at least one diagnosis".into(),
        ));
    }
    for d in &mut draft.diagnoses {
        d.code = d.code.trim().to_ascii_uppercase();
        if !icd10cm_shape(&d.code) {
            return Err(CoreError::InvalidInput(format!(
                "{:?} is not an ICD-10-CM code",
                d.code
            )));
        }
    }
    if draft.lines.len() > 20 {
        return Err(CoreError::InvalidInput(
            "at most 20 services on one visit".into(),
        ));
    }
    for (i, l) in draft.lines.iter_mut().enumerate() {
        l.code = l.code.trim().to_ascii_uppercase();
        if !service_shape(&l.code, l.system) {
            return Err(CoreError::InvalidInput(format!(
                "service line {}: {:?} is not a {} code",
                i + 1,
                l.code,
                match l.system {
                    ServiceCodeSystem::Cpt => "CPT",
                    ServiceCodeSystem::Hcpcs => "HCPCS",
                }
            )));
        }
        if !(1..=99).contains(&l.units) {
            return Err(CoreError::InvalidInput(format!(
                "service line {}: units must be 1 to 99",
                i + 1
            )));
        }
        // Normalised first, so that " 95" is 95 for the rules below.
        let mut modifiers: Vec<String> = Vec::new();
        let given = l.modifiers.iter().map(|m| m.trim().to_ascii_uppercase());
        for m in given.chain(visit_modifiers.iter().map(|m| (*m).to_string())) {
            // In person, never the telehealth modifier; each modifier once.
            if m.is_empty() || (visit_modifiers.is_empty() && m == "95") || modifiers.contains(&m) {
                continue;
            }
            modifiers.push(m);
        }
        l.modifiers = modifiers;
        if l.modifiers.len() > 4
            || l.modifiers
                .iter()
                .any(|m| m.len() != 2 || !m.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(CoreError::InvalidInput(format!(
                "service line {}: modifiers are two letters or digits, at most four",
                i + 1
            )));
        }
    }
    Ok(())
}

/// What a DFT^P03 is built from.
pub struct DftContext<'a> {
    pub config: &'a BillingConfig,
    pub control_id: &'a str,
    pub at: DateTime<chrono::Utc>,
    pub zone: Zone,
    pub patient: &'a BillingPatient,
    pub visit: &'a Visit,
    pub author: &'a Author,
    /// The author's Practitioner resource, when stored.
    pub practitioner: Option<&'a Value>,
    pub lines: &'a [ServiceLine],
    pub diagnoses: &'a [NoteDiagnosis],
    pub place_of_service: &'a str,
}

fn local(zone: Zone, t: DateTime<chrono::Utc>) -> DateTime<FixedOffset> {
    zone.local(&t).fixed_offset()
}

/// The visit's charge as an HL7 v2.5.1 DFT^P03 (see hearth-hl7's `dft` for the segments):
/// PID from the Patient (MRN, name, birth date, sex), PV1 outpatient with the Encounter's id
/// as the visit number and the signing clinician attending, one FT1 per service line (its
/// code, modifiers, units, place of service, the visit's diagnoses), one DG1 per diagnosis
/// in the note's order (the first is primary).
pub fn dft_message(c: &DftContext<'_>) -> Result<String, CoreError> {
    let invalid = |e: hearth_hl7::Hl7Error| {
        CoreError::InvalidInput(format!("the charge cannot be written as HL7: {e}"))
    };
    let (family, given) = practitioner_names(c.practitioner, &c.author.display);
    let provider = hearth_hl7::Provider {
        id: c
            .author
            .reference
            .as_deref()
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or_default()
            .to_string(),
        family,
        given: given.join(" "),
    };
    let start = c
        .visit
        .start
        .as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| local(c.zone, t.with_timezone(&chrono::Utc)));
    let service_date = start.unwrap_or_else(|| local(c.zone, c.at));
    let mut identifiers = vec![];
    if let Some(mrn) = &c.patient.mrn {
        identifiers.push(hearth_hl7::PatientIdentifier {
            id: mrn.clone(),
            assigning_authority: c.config.mrn_authority.clone(),
            type_code: "MR".into(),
        });
    }
    identifiers.push(hearth_hl7::PatientIdentifier {
        id: c.patient.id.clone(),
        assigning_authority: "FHIR".into(),
        type_code: "PI".into(),
    });
    let codes: Vec<String> = c.diagnoses.iter().map(|d| d.code.clone()).collect();
    let dft = hearth_hl7::DftP03 {
        sending_application: c.config.sending_application.clone(),
        sending_facility: c.config.sending_facility.clone(),
        receiving_application: c.config.receiving_application.clone(),
        receiving_facility: c.config.receiving_facility.clone(),
        control_id: c.control_id.to_string(),
        processing_id: c.config.processing_id.clone(),
        message_time: local(c.zone, c.at),
        patient: hearth_hl7::Patient {
            identifiers,
            family: c.patient.family.clone(),
            given: c.patient.given.clone(),
            birth_date: c
                .patient
                .birth_date
                .as_deref()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
            sex: c.patient.sex.clone(),
        },
        visit: hearth_hl7::Visit {
            patient_class: "O".into(),
            visit_number: c
                .visit
                .encounter
                .as_deref()
                .and_then(|r| r.strip_prefix("Encounter/"))
                .map(str::to_string),
            attending: Some(provider.clone()),
            start,
        },
        lines: c
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| hearth_hl7::ChargeLine {
                transaction_id: format!("{}", i + 1),
                service_date,
                code: l.code.clone(),
                system: match l.system {
                    ServiceCodeSystem::Cpt => hearth_hl7::CodeSystem::Cpt,
                    ServiceCodeSystem::Hcpcs => hearth_hl7::CodeSystem::Hcpcs,
                },
                description: l.description.clone(),
                modifiers: l.modifiers.clone(),
                quantity: l.units,
                place_of_service: Some(c.place_of_service.to_string()),
                diagnosis_codes: codes.clone(),
                performer: Some(provider.clone()),
            })
            .collect(),
        diagnoses: c
            .diagnoses
            .iter()
            .enumerate()
            .map(|(i, d)| hearth_hl7::Diagnosis {
                code: d.code.clone(),
                description: d.description.clone(),
                priority: u32::try_from(i + 1).unwrap_or(99),
            })
            .collect(),
    };
    dft.encode().map_err(invalid)
}

/// The code tables: the configured ICD-10-CM table (loaded on the first search), else the
/// built-in list; the service codes with the site's descriptions when configured.
pub struct CodeTables {
    /// Shared with the thread that loads a full table when the first note is opened (0.5 s
    /// for CMS's 75k codes in a release build): the first search or signature does not wait.
    diagnoses: std::sync::Arc<std::sync::OnceLock<Result<DiagnosisCodes, CoreError>>>,
    preloading: std::sync::atomic::AtomicBool,
    services: std::sync::OnceLock<Result<ServiceCodes, CoreError>>,
    diagnosis_file: Option<std::path::PathBuf>,
    service_file: Option<std::path::PathBuf>,
}

fn load_diagnoses(path: Option<&std::path::Path>) -> Result<DiagnosisCodes, CoreError> {
    match path {
        Some(path) => DiagnosisCodes::load(path).map_err(|e| CoreError::Configuration {
            source_name: "notes.diagnosis_codes_file".into(),
            problem: e.to_string(),
        }),
        None => Ok(DiagnosisCodes::builtin()),
    }
}

impl CodeTables {
    pub fn new(config: &crate::config::NotesConfig) -> Self {
        // IT's table, else the one `scripts/codes` made for this checkout (demo, tests),
        // else the built-in short list.
        let diagnosis_file = config.diagnosis_codes_file.clone().or_else(|| {
            std::env::var_os("HEARTH_ICD10CM_FILE")
                .map(std::path::PathBuf::from)
                .filter(|p| p.is_file())
        });
        Self {
            diagnoses: std::sync::Arc::new(std::sync::OnceLock::new()),
            preloading: std::sync::atomic::AtomicBool::new(false),
            services: std::sync::OnceLock::new(),
            diagnosis_file,
            service_file: config.service_descriptions_file.clone(),
        }
    }

    /// Starts loading the diagnosis table on a thread of its own, once (a note was opened:
    /// searches and a signature will follow).
    pub fn preload(&self) {
        if self
            .preloading
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let table = self.diagnoses.clone();
        let path = self.diagnosis_file.clone();
        // Without the thread the table loads on first use instead.
        let _ = std::thread::Builder::new()
            .name("hearth-codes".into())
            .spawn(move || {
                table.get_or_init(|| load_diagnoses(path.as_deref()));
            });
    }

    fn diagnoses(&self) -> Result<&DiagnosisCodes, CoreError> {
        self.diagnoses
            .get_or_init(|| load_diagnoses(self.diagnosis_file.as_deref()))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn services(&self) -> Result<&ServiceCodes, CoreError> {
        self.services
            .get_or_init(|| match &self.service_file {
                Some(path) => ServiceCodes::with_site_descriptions(path).map_err(|e| {
                    CoreError::Configuration {
                        source_name: "notes.service_descriptions_file".into(),
                        problem: e.to_string(),
                    }
                }),
                None => Ok(ServiceCodes::builtin()),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// With a full ICD-10-CM table, each diagnosis must be one of its billable codes (a
    /// header such as `E11`, or a code that does not exist, is refused, naming it). Every
    /// description sent on comes from the tables, never from the window: the ICD-10-CM
    /// table's (or the built-in list's), the service codes' (none for a CPT code whose
    /// description the site has not loaded).
    pub fn check_codes(
        &self,
        diagnoses: &mut [NoteDiagnosis],
        lines: &mut [ServiceLine],
    ) -> Result<(), CoreError> {
        let full = self.diagnosis_file.is_some();
        let table = self.diagnoses()?;
        for d in diagnoses {
            match table.get(&d.code) {
                Some(entry) => d.description = entry.description.clone(),
                None if full => {
                    return Err(CoreError::InvalidInput(format!(
                        "{:?} is not a billable ICD-10-CM code",
                        d.code
                    )))
                }
                None => d.description = None,
            }
        }
        let services = self.services()?;
        for l in lines {
            l.description = services.get(&l.code).and_then(|e| e.description.clone());
        }
        Ok(())
    }

    pub fn search(
        &self,
        kind: CodeKind,
        query: &str,
        limit: usize,
    ) -> Result<Vec<CodeOption>, CoreError> {
        let found = match kind {
            CodeKind::Diagnosis => self.diagnoses()?.search(query, limit),
            CodeKind::Service => self.services()?.search(query, limit),
        };
        Ok(found
            .into_iter()
            .map(|e| CodeOption {
                code: e.code,
                description: e.description,
                system: match e.system {
                    CodeSystem::Icd10Cm => None,
                    CodeSystem::Cpt => Some(ServiceCodeSystem::Cpt),
                    CodeSystem::Hcpcs => Some(ServiceCodeSystem::Hcpcs),
                },
            })
            .collect())
    }
}

/// The practitioner's family and given names (for FT1-20 / PV1-7).
fn practitioner_names(practitioner: Option<&Value>, fallback: &str) -> (String, Vec<String>) {
    let name = practitioner
        .and_then(|p| p.get("name"))
        .and_then(Value::as_array)
        .and_then(|n| n.first());
    match name.and_then(|n| n.get("family")).and_then(Value::as_str) {
        Some(family) => (
            family.to_string(),
            name.and_then(|n| n.get("given"))
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        ),
        None => (
            human_name(practitioner.and_then(|p| p.get("name")), false)
                .unwrap_or_else(|| fallback.to_string()),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_are_20_base32_characters_stable_per_charge() {
        let a = control_id("c1");
        assert_eq!(a.len(), 20);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(a, control_id("c1"));
        assert_ne!(a, control_id("c2"));
    }

    #[test]
    fn code_shapes() {
        for ok in ["J06.9", "E11.9", "I10", "Z00.00", "S72.001A"] {
            assert!(icd10cm_shape(ok), "{ok}");
        }
        for bad in ["J06.", "j06.9", "J0", "106.9", "J06.99999", "J06-9"] {
            assert!(!icd10cm_shape(bad), "{bad}");
        }
        assert!(service_shape("99213", ServiceCodeSystem::Cpt));
        assert!(service_shape("0001U", ServiceCodeSystem::Cpt));
        assert!(!service_shape("9921", ServiceCodeSystem::Cpt));
        assert!(service_shape("G2012", ServiceCodeSystem::Hcpcs));
        assert!(!service_shape("W2012", ServiceCodeSystem::Hcpcs));
    }

    #[test]
    fn the_visit_modifier_is_added_once_and_removed_in_person() {
        let line = ServiceLine {
            code: "99213".into(),
            system: ServiceCodeSystem::Cpt,
            description: None,
            modifiers: vec!["25".into()],
            units: 1,
        };
        let mut draft = NoteDraft {
            diagnoses: vec![NoteDiagnosis {
                code: "j06.9".into(),
                description: None,
            }],
            lines: vec![line],
            ..NoteDraft::default()
        };
        check_note(&mut draft, &["95"]).unwrap();
        check_note(&mut draft, &["95"]).unwrap();
        assert_eq!(draft.lines[0].modifiers, ["25", "95"]);
        assert_eq!(draft.diagnoses[0].code, "J06.9");
        check_note(&mut draft, &[]).unwrap();
        assert_eq!(draft.lines[0].modifiers, ["25"]);
        // Spaces and case do not get past the rules, and no modifier comes twice.
        draft.lines[0].modifiers = vec![" 95".into(), "25".into(), "gt".into(), "25 ".into()];
        check_note(&mut draft, &[]).unwrap();
        assert_eq!(draft.lines[0].modifiers, ["25", "GT"]);
        draft.lines[0].modifiers = vec!["95 ".into(), "25".into()];
        check_note(&mut draft, &["95"]).unwrap();
        assert_eq!(draft.lines[0].modifiers, ["95", "25"]);
        draft.diagnoses.clear();
        assert!(check_note(&mut draft, &[]).is_err());
    }
}
