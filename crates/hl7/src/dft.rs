//! DFT^P03 (post detail financial transaction), HL7 v2.5.1 chapter 6 (§6.4.3), built from
//! plain structs and read back from a message.
//!
//! Message: `MSH EVN PID PV1 {FT1} {DG1}` — the DFT_P03 structure with its optional parts
//! (SFT, PD1, ROL, PV2, DB1, the order groups, PR1, DRG, GT1, insurance, ACC) left out.
//!
//! Where each value goes:
//! - MSH-3..6 sending/receiving application and facility (HD.1), MSH-7 message time, MSH-9
//!   `DFT^P03^DFT_P03`, MSH-10 control id, MSH-11 processing id, MSH-12 `2.5.1`.
//! - EVN-1 `P03`, EVN-2 the message time.
//! - PID-1 `1`, PID-3 identifiers (CX: id^^^authority^type), PID-5 name (XPN: family^first
//!   given^further given names separated by spaces^^^^`L`), PID-7 birth date, PID-8 sex.
//! - PV1-1 `1`, PV1-2 patient class, PV1-7 attending (XCN: id^family^given), PV1-19 visit
//!   number (CX.1), PV1-44 visit start.
//! - FT1 per charge line (§6.5.1): FT1-1 set id, FT1-2 transaction id, FT1-4 service date
//!   (DR.1), FT1-6 `CG` (charge, table 0017), FT1-7 transaction code (CE: code^description^
//!   `C4` for CPT or `HCPCS`), FT1-10 quantity, FT1-16 place of service (PL.1, see below),
//!   FT1-19 diagnoses (CE: code^^`I10`, repeated), FT1-20 performed by (XCN), FT1-25
//!   procedure code (as FT1-7), FT1-26 modifiers (CE: modifier^^`C4` for a two-digit CPT
//!   modifier such as 95, `HCPCS` for a level II one such as GT; repeated).
//! - DG1 per diagnosis (§6.5.2): DG1-1 set id, DG1-3 code^description^`I10`, DG1-6 `F`
//!   (final, table 0052), DG1-15 priority.
//!
//! Place of service: HL7 v2.5.1 has no field for the CMS place-of-service code. It goes in
//! FT1-16 "assigned patient location" (PL), component 1 "point of care" (§6.5.1.16: the
//! location of the patient when the charge was incurred). It is per charge line, which is
//! what a claim needs (CMS-1500 box 24B is per line), and PL.1 is a site-defined (IS,
//! user table 0302) code, so the two sides agree that it holds the POS code. PV1-3 (the
//! visit's location) was the alternative; it is per visit, and a visit's lines can differ.
//!
//! Times are written to the second with their UTC offset (`YYYYMMDDHHMMSS+ZZZZ`, TS/DTM
//! §2.A.75); sub-second parts are dropped.

use crate::{Delimiters, Field, Hl7Error, Message, Repetition, Segment};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use std::fmt;

/// The procedure code system of a charge line (HL7 table 0396).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSystem {
    /// CPT-4: `C4`.
    Cpt,
    /// HCPCS level II: `HCPCS`.
    Hcpcs,
}

impl CodeSystem {
    pub fn hl7(self) -> &'static str {
        match self {
            CodeSystem::Cpt => "C4",
            CodeSystem::Hcpcs => "HCPCS",
        }
    }
    pub fn from_hl7(code: &str) -> Option<Self> {
        match code {
            "C4" => Some(CodeSystem::Cpt),
            "HCPCS" => Some(CodeSystem::Hcpcs),
            _ => None,
        }
    }
}

/// A clinician (XCN: id^family^given).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Provider {
    pub id: String,
    pub family: String,
    pub given: String,
}

/// A patient identifier (CX: id^^^assigning authority^type, e.g. `MR`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PatientIdentifier {
    pub id: String,
    pub assigning_authority: String,
    pub type_code: String,
}

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Patient {
    pub identifiers: Vec<PatientIdentifier>,
    pub family: String,
    /// The first given name, then further given names. They travel as XPN.2 and XPN.3
    /// (further names joined by spaces), so a further name holding a space reads back as
    /// two names.
    pub given: Vec<String>,
    pub birth_date: Option<NaiveDate>,
    /// Administrative sex, table 0001: F M O U A N.
    pub sex: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Visit {
    /// PV1-2, table 0004 (`O` outpatient, ...).
    pub patient_class: String,
    /// PV1-19, e.g. the FHIR Encounter id.
    pub visit_number: Option<String>,
    pub attending: Option<Provider>,
    pub start: Option<DateTime<FixedOffset>>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct ChargeLine {
    /// FT1-2, at most 12 characters (its 2.5.1 length).
    pub transaction_id: String,
    pub service_date: DateTime<FixedOffset>,
    pub code: String,
    pub system: CodeSystem,
    pub description: Option<String>,
    /// Two characters each: `95` (CPT), `GT` (HCPCS level II), ...
    pub modifiers: Vec<String>,
    /// 1 to 999,999 (FT1-10 is NM of length 6).
    pub quantity: u32,
    /// CMS place of service, two digits: `02`, `10` (telehealth), `11` (office).
    pub place_of_service: Option<String>,
    /// ICD-10-CM codes this line is for.
    pub diagnosis_codes: Vec<String>,
    pub performer: Option<Provider>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// ICD-10-CM, e.g. `J06.9`.
    pub code: String,
    pub description: Option<String>,
    /// DG1-15, 1 (primary) to 99.
    pub priority: u32,
}

/// A DFT^P03 to send: one visit's charges.
#[derive(Clone, PartialEq, Eq)]
pub struct DftP03 {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// MSH-10: 1 to 20 characters of `A-Z a-z 0-9 -`.
    pub control_id: String,
    /// MSH-11: `P` (production) or `T` (training).
    pub processing_id: String,
    /// MSH-7 and EVN-2.
    pub message_time: DateTime<FixedOffset>,
    pub patient: Patient,
    pub visit: Visit,
    pub lines: Vec<ChargeLine>,
    pub diagnoses: Vec<Diagnosis>,
}

// Debug of the patient-bearing structs shows ids only.
impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
impl fmt::Debug for PatientIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientIdentifier")
            .field("type_code", &self.type_code)
            .finish_non_exhaustive()
    }
}
impl fmt::Debug for Patient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patient")
            .field("identifiers", &self.identifiers.len())
            .finish_non_exhaustive()
    }
}
impl fmt::Debug for Visit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Visit")
            .field("visit_number", &self.visit_number)
            .finish_non_exhaustive()
    }
}
impl fmt::Debug for ChargeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChargeLine")
            .field("transaction_id", &self.transaction_id)
            .finish_non_exhaustive()
    }
}
impl fmt::Debug for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Diagnosis")
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}
impl fmt::Debug for DftP03 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DftP03")
            .field("control_id", &self.control_id)
            .field("visit", &self.visit)
            .field("lines", &self.lines)
            .field("diagnoses", &self.diagnoses.len())
            .finish_non_exhaustive()
    }
}

/// HL7 v2.5.1 maximum lengths of the fields written here (chapters 2, 3 and 6), checked per
/// repetition on the encoded text (escape sequences count).
const LENGTHS: &[(&str, &[(usize, usize)])] = &[
    (
        "MSH",
        &[
            (3, 227),
            (4, 227),
            (5, 227),
            (6, 227),
            (7, 26),
            (9, 15),
            (10, 20),
            (11, 3),
            (12, 60),
        ],
    ),
    ("EVN", &[(1, 3), (2, 26)]),
    ("PID", &[(1, 4), (3, 250), (5, 250), (7, 26), (8, 1)]),
    ("PV1", &[(1, 4), (2, 1), (7, 250), (19, 250), (44, 26)]),
    (
        "FT1",
        &[
            (1, 4),
            (2, 12),
            (4, 53),
            (6, 8),
            (7, 250),
            (10, 6),
            (16, 80),
            (19, 250),
            (20, 250),
            (25, 250),
            (26, 250),
        ],
    ),
    ("DG1", &[(1, 4), (3, 250), (6, 2), (15, 2)]),
];

/// Table 0001 administrative sex.
const SEX: &[&str] = &["F", "M", "O", "U", "A", "N"];
/// Table 0004 patient class.
const PATIENT_CLASS: &[&str] = &["E", "I", "O", "P", "R", "B", "C", "N", "U"];

fn ts(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y%m%d%H%M%S%z").to_string()
}

fn check_time(what: &str, t: &DateTime<FixedOffset>) -> Result<(), Hl7Error> {
    if !(0..=9999).contains(&t.year()) {
        return Err(Hl7Error::invalid(what, "the year is outside 0000-9999"));
    }
    if t.offset().local_minus_utc() % 60 != 0 {
        return Err(Hl7Error::invalid(
            what,
            "the UTC offset is not whole minutes",
        ));
    }
    Ok(())
}

/// Reads `YYYYMMDDHHMMSS+ZZZZ` (what [`DftP03::to_message`] writes).
pub fn parse_ts(s: &str) -> Option<DateTime<FixedOffset>> {
    let b = s.as_bytes();
    if b.len() != 19 || !(b[14] == b'+' || b[14] == b'-') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(4..6)?, num(6..8)?)?;
    let naive: NaiveDateTime = date.and_hms_opt(num(8..10)?, num(10..12)?, num(12..14)?)?;
    let secs = (num(15..17)? * 3600 + num(17..19)? * 60) as i32;
    let offset = FixedOffset::east_opt(if b[14] == b'-' { -secs } else { secs })?;
    offset.from_local_datetime(&naive).single()
}

fn xcn(p: &Provider) -> Repetition {
    Repetition::components([p.id.as_str(), p.family.as_str(), p.given.as_str()])
}

fn ce(code: &str, text: Option<&str>, system: &str) -> Repetition {
    Repetition::components([code, text.unwrap_or_default(), system])
}

fn modifier_system(m: &str) -> &'static str {
    if m.bytes().all(|c| c.is_ascii_digit()) {
        CodeSystem::Cpt.hl7()
    } else {
        CodeSystem::Hcpcs.hl7()
    }
}

impl DftP03 {
    /// Checks the charge and builds the message (see the module's notes for the mapping).
    pub fn to_message(&self) -> Result<Message, Hl7Error> {
        self.check()?;
        let mut m = Message::new(Delimiters::default());
        m.push(
            Segment::new("MSH")
                .with(3, Field::text(&self.sending_application))
                .with(4, Field::text(&self.sending_facility))
                .with(5, Field::text(&self.receiving_application))
                .with(6, Field::text(&self.receiving_facility))
                .with(7, Field::text(ts(&self.message_time)))
                .with(9, Field::components(["DFT", "P03", "DFT_P03"]))
                .with(10, Field::text(&self.control_id))
                .with(11, Field::text(&self.processing_id))
                .with(12, Field::text("2.5.1"))
                // MSH-18: the character set (table 0211). Without it a message is ASCII
                // (§2.15.9.18); names and ICD-10-CM descriptions are not.
                .with(18, Field::text("UNICODE UTF-8")),
        );
        m.push(
            Segment::new("EVN")
                .with(1, Field::text("P03"))
                .with(2, Field::text(ts(&self.message_time))),
        );
        let p = &self.patient;
        let further = p
            .given
            .iter()
            .skip(1)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        let mut pid = Segment::new("PID")
            .with(1, Field::text("1"))
            .with(
                3,
                Field::repeated(p.identifiers.iter().map(|i| {
                    Repetition::components([
                        i.id.as_str(),
                        "",
                        "",
                        i.assigning_authority.as_str(),
                        i.type_code.as_str(),
                    ])
                })),
            )
            .with(
                5,
                Field::components([
                    p.family.as_str(),
                    p.given.first().map(String::as_str).unwrap_or_default(),
                    further.as_str(),
                    "",
                    "",
                    "",
                    "L",
                ]),
            );
        if let Some(b) = p.birth_date {
            pid.set(7, Field::text(b.format("%Y%m%d").to_string()));
        }
        if let Some(s) = &p.sex {
            pid.set(8, Field::text(s));
        }
        m.push(pid);
        let v = &self.visit;
        let mut pv1 = Segment::new("PV1")
            .with(1, Field::text("1"))
            .with(2, Field::text(&v.patient_class));
        if let Some(a) = &v.attending {
            pv1.set(7, Field::repeated([xcn(a)]));
        }
        if let Some(n) = &v.visit_number {
            pv1.set(19, Field::text(n));
        }
        if let Some(t) = &v.start {
            pv1.set(44, Field::text(ts(t)));
        }
        m.push(pv1);
        for (i, line) in self.lines.iter().enumerate() {
            let code = ce(&line.code, line.description.as_deref(), line.system.hl7());
            let mut ft1 = Segment::new("FT1")
                .with(1, Field::text((i + 1).to_string()))
                .with(2, Field::text(&line.transaction_id))
                .with(4, Field::text(ts(&line.service_date)))
                .with(6, Field::text("CG"))
                .with(7, Field::repeated([code.clone()]))
                .with(10, Field::text(line.quantity.to_string()))
                .with(
                    19,
                    Field::repeated(line.diagnosis_codes.iter().map(|d| ce(d, None, "I10"))),
                )
                .with(25, Field::repeated([code]))
                .with(
                    26,
                    Field::repeated(
                        line.modifiers
                            .iter()
                            .map(|m| ce(m, None, modifier_system(m))),
                    ),
                );
            if let Some(pos) = &line.place_of_service {
                ft1.set(16, Field::text(pos));
            }
            if let Some(p) = &line.performer {
                ft1.set(20, Field::repeated([xcn(p)]));
            }
            m.push(ft1);
        }
        for (i, d) in self.diagnoses.iter().enumerate() {
            m.push(
                Segment::new("DG1")
                    .with(1, Field::text((i + 1).to_string()))
                    .with(
                        3,
                        Field::repeated([ce(&d.code, d.description.as_deref(), "I10")]),
                    )
                    .with(6, Field::text("F"))
                    .with(15, Field::text(d.priority.to_string())),
            );
        }
        check_lengths(&m)?;
        Ok(m)
    }

    /// [`DftP03::to_message`], encoded.
    pub fn encode(&self) -> Result<String, Hl7Error> {
        Ok(self.to_message()?.encode())
    }

    fn check(&self) -> Result<(), Hl7Error> {
        let id = &self.control_id;
        if id.is_empty()
            || id.len() > 20
            || !id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return Err(Hl7Error::invalid(
                "control_id (MSH-10)",
                "must be 1 to 20 characters of A-Z, a-z, 0-9 and -",
            ));
        }
        if !matches!(self.processing_id.as_str(), "P" | "T") {
            return Err(Hl7Error::invalid(
                "processing_id (MSH-11)",
                "must be P or T",
            ));
        }
        check_time("message_time (MSH-7)", &self.message_time)?;
        let p = &self.patient;
        if p.identifiers.is_empty() || p.identifiers.iter().any(|i| i.id.is_empty()) {
            return Err(Hl7Error::invalid(
                "patient.identifiers (PID-3)",
                "at least one identifier, none empty",
            ));
        }
        if p.family.is_empty() && p.given.iter().all(String::is_empty) {
            return Err(Hl7Error::invalid("patient name (PID-5)", "is empty"));
        }
        if let Some(b) = p.birth_date {
            if !(0..=9999).contains(&b.year()) {
                return Err(Hl7Error::invalid(
                    "patient.birth_date (PID-7)",
                    "the year is outside 0000-9999",
                ));
            }
        }
        if let Some(s) = &p.sex {
            if !SEX.contains(&s.as_str()) {
                return Err(Hl7Error::invalid(
                    "patient.sex (PID-8)",
                    "must be one of F M O U A N",
                ));
            }
        }
        if !PATIENT_CLASS.contains(&self.visit.patient_class.as_str()) {
            return Err(Hl7Error::invalid(
                "visit.patient_class (PV1-2)",
                "must be one of table 0004: E I O P R B C N U",
            ));
        }
        if let Some(t) = &self.visit.start {
            check_time("visit.start (PV1-44)", t)?;
        }
        if self.lines.is_empty() {
            return Err(Hl7Error::invalid(
                "lines",
                "a DFT^P03 carries at least one FT1",
            ));
        }
        for (i, l) in self.lines.iter().enumerate() {
            let what = |f: &str| format!("lines[{i}].{f}");
            if l.transaction_id.is_empty() || l.transaction_id.chars().count() > 12 {
                return Err(Hl7Error::invalid(
                    what("transaction_id (FT1-2)"),
                    "must be 1 to 12 characters",
                ));
            }
            check_time(&what("service_date (FT1-4)"), &l.service_date)?;
            if l.code.is_empty() {
                return Err(Hl7Error::invalid(what("code (FT1-7)"), "is empty"));
            }
            if !(1..=999_999).contains(&l.quantity) {
                return Err(Hl7Error::invalid(
                    what("quantity (FT1-10)"),
                    "must be 1 to 999999",
                ));
            }
            if l.modifiers
                .iter()
                .any(|m| m.len() != 2 || !m.bytes().all(|c| c.is_ascii_alphanumeric()))
            {
                return Err(Hl7Error::invalid(
                    what("modifiers (FT1-26)"),
                    "each is two letters or digits",
                ));
            }
            if let Some(pos) = &l.place_of_service {
                if pos.len() != 2 || !pos.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(Hl7Error::invalid(
                        what("place_of_service (FT1-16)"),
                        "must be two digits (CMS POS)",
                    ));
                }
            }
            if l.diagnosis_codes.iter().any(String::is_empty) {
                return Err(Hl7Error::invalid(
                    what("diagnosis_codes (FT1-19)"),
                    "a code is empty",
                ));
            }
        }
        for (i, d) in self.diagnoses.iter().enumerate() {
            if d.code.is_empty() {
                return Err(Hl7Error::invalid(
                    format!("diagnoses[{i}].code (DG1-3)"),
                    "is empty",
                ));
            }
            if !(1..=99).contains(&d.priority) {
                return Err(Hl7Error::invalid(
                    format!("diagnoses[{i}].priority (DG1-15)"),
                    "must be 1 to 99",
                ));
            }
        }
        Ok(())
    }

    /// Reads a DFT^P03 laid out as [`DftP03::to_message`] writes it.
    pub fn from_message(m: &Message) -> Result<DftP03, Hl7Error> {
        let s = |p: &str| m.at(p).unwrap_or_default().to_string();
        let opt = |p: &str| m.at(p).filter(|v| !v.is_empty()).map(str::to_string);
        let time = |p: &str, seg: &str, field: usize| {
            parse_ts(m.at(p).unwrap_or_default())
                .ok_or_else(|| Hl7Error::field(seg, field, "not a time YYYYMMDDHHMMSS+ZZZZ"))
        };
        if m.at("MSH-9-1") != Some("DFT") || m.at("MSH-9-2") != Some("P03") {
            return Err(Hl7Error::field("MSH", 9, "not DFT^P03"));
        }
        let provider = |f: &Field| -> Option<Provider> {
            let r = f.0.first()?;
            Some(Provider {
                id: r.get(1, 1).unwrap_or_default().to_string(),
                family: r.get(2, 1).unwrap_or_default().to_string(),
                given: r.get(3, 1).unwrap_or_default().to_string(),
            })
        };
        let pid = m
            .segment("PID")
            .ok_or_else(|| Hl7Error::MissingSegment("PID".into()))?;
        let pv1 = m
            .segment("PV1")
            .ok_or_else(|| Hl7Error::MissingSegment("PV1".into()))?;
        let empty = Field::default();
        let identifiers = pid
            .field(3)
            .unwrap_or(&empty)
            .0
            .iter()
            .map(|r| PatientIdentifier {
                id: r.get(1, 1).unwrap_or_default().to_string(),
                assigning_authority: r.get(4, 1).unwrap_or_default().to_string(),
                type_code: r.get(5, 1).unwrap_or_default().to_string(),
            })
            .collect();
        let mut given = vec![s("PID-5-2")];
        given.extend(
            s("PID-5-3")
                .split(' ')
                .filter(|g| !g.is_empty())
                .map(str::to_string),
        );
        if given.len() == 1 && given[0].is_empty() {
            given.clear();
        }
        let birth_date = match opt("PID-7") {
            None => None,
            Some(b) => Some(
                NaiveDate::parse_from_str(&b, "%Y%m%d")
                    .map_err(|_| Hl7Error::field("PID", 7, "not a date YYYYMMDD"))?,
            ),
        };
        let mut lines = Vec::new();
        for (i, ft1) in m.segments_named("FT1").enumerate() {
            let seg = format!("FT1[{}]", i + 1);
            let at = |f: usize, r: usize, c: usize| {
                ft1.field(f)
                    .and_then(|x| x.get(r, c, 1))
                    .unwrap_or_default()
                    .to_string()
            };
            let reps = |f: usize| ft1.field(f).map(|x| x.0.len()).unwrap_or(0);
            lines.push(ChargeLine {
                transaction_id: at(2, 1, 1),
                service_date: parse_ts(&at(4, 1, 1)).ok_or_else(|| {
                    Hl7Error::field(seg.clone(), 4, "not a time YYYYMMDDHHMMSS+ZZZZ")
                })?,
                code: at(7, 1, 1),
                system: CodeSystem::from_hl7(&at(7, 1, 3)).ok_or_else(|| {
                    Hl7Error::field(seg.clone(), 7, "coding system is not C4 or HCPCS")
                })?,
                description: Some(at(7, 1, 2)).filter(|d| !d.is_empty()),
                modifiers: (1..=reps(26)).map(|r| at(26, r, 1)).collect(),
                quantity: at(10, 1, 1)
                    .parse()
                    .map_err(|_| Hl7Error::field(seg.clone(), 10, "not a whole quantity"))?,
                place_of_service: Some(at(16, 1, 1)).filter(|p| !p.is_empty()),
                diagnosis_codes: (1..=reps(19)).map(|r| at(19, r, 1)).collect(),
                performer: ft1.field(20).and_then(provider),
            });
        }
        let mut diagnoses = Vec::new();
        for (i, dg1) in m.segments_named("DG1").enumerate() {
            let at = |f: usize, c: usize| {
                dg1.field(f)
                    .and_then(|x| x.get(1, c, 1))
                    .unwrap_or_default()
                    .to_string()
            };
            diagnoses.push(Diagnosis {
                code: at(3, 1),
                description: Some(at(3, 2)).filter(|d| !d.is_empty()),
                priority: at(15, 1)
                    .parse()
                    .map_err(|_| Hl7Error::field(format!("DG1[{}]", i + 1), 15, "not a number"))?,
            });
        }
        Ok(DftP03 {
            sending_application: s("MSH-3"),
            sending_facility: s("MSH-4"),
            receiving_application: s("MSH-5"),
            receiving_facility: s("MSH-6"),
            control_id: s("MSH-10"),
            processing_id: s("MSH-11"),
            message_time: time("MSH-7", "MSH", 7)?,
            patient: Patient {
                identifiers,
                family: s("PID-5-1"),
                given,
                birth_date,
                sex: opt("PID-8"),
            },
            visit: Visit {
                patient_class: s("PV1-2"),
                visit_number: opt("PV1-19"),
                attending: pv1.field(7).and_then(provider),
                start: match opt("PV1-44") {
                    None => None,
                    Some(_) => Some(time("PV1-44", "PV1", 44)?),
                },
            },
            lines,
            diagnoses,
        })
    }
}

/// Refuses a message whose fields exceed their HL7 v2.5.1 lengths (see [`LENGTHS`]).
fn check_lengths(m: &Message) -> Result<(), Hl7Error> {
    let d = m.delimiters();
    for (id, limits) in LENGTHS {
        for (occurrence, seg) in m.segments_named(id).enumerate() {
            for (n, max) in limits.iter() {
                let Some(f) = seg.field(*n) else { continue };
                for r in &f.0 {
                    let one = Message::encode_repetition(r, &d);
                    if one.chars().count() > *max {
                        let name = if occurrence == 0 && !matches!(*id, "FT1" | "DG1") {
                            id.to_string()
                        } else {
                            format!("{id}[{}]", occurrence + 1)
                        };
                        return Err(Hl7Error::field(
                            name,
                            *n,
                            format!(
                                "longer than {max} characters once escaped (its HL7 v2.5.1 length)"
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn at(h: i32, offset_h: i32) -> DateTime<FixedOffset> {
        FixedOffset::east_opt(offset_h * 3600)
            .and_then(|o| o.with_ymd_and_hms(2026, 12, 2, h as u32, 30, 5).single())
            .expect("time")
    }

    fn sample() -> DftP03 {
        let okafor = Provider {
            id: "1234567893".into(),
            family: "Okafor|Mbeki".into(),
            given: "Mara^Jo".into(),
        };
        DftP03 {
            sending_application: "HEARTH".into(),
            sending_facility: "Clinic & Co".into(),
            receiving_application: "BILLING".into(),
            receiving_facility: "PAYER~1".into(),
            control_id: "HRT-20261202-0001".into(),
            processing_id: "T".into(),
            message_time: at(10, -5),
            patient: Patient {
                identifiers: vec![
                    PatientIdentifier {
                        id: "MRN-77".into(),
                        assigning_authority: "HEARTH".into(),
                        type_code: "MR".into(),
                    },
                    PatientIdentifier {
                        id: "9|9".into(),
                        assigning_authority: "EHR".into(),
                        type_code: "PI".into(),
                    },
                ],
                family: "O'Brien\\Smith".into(),
                given: vec!["Ann\rMarie".into(), "Lou".into(), "Zoe".into()],
                birth_date: NaiveDate::from_ymd_opt(1980, 2, 29),
                sex: Some("F".into()),
            },
            visit: Visit {
                patient_class: "O".into(),
                visit_number: Some("enc-42".into()),
                attending: Some(okafor.clone()),
                start: Some(at(9, -5)),
            },
            lines: vec![
                ChargeLine {
                    transaction_id: "TX-1".into(),
                    service_date: at(9, -5),
                    code: "99213".into(),
                    system: CodeSystem::Cpt,
                    description: Some("Office visit | est & low^mod\nnew line".into()),
                    modifiers: vec!["95".into(), "GT".into()],
                    quantity: 1,
                    place_of_service: Some("10".into()),
                    diagnosis_codes: vec!["J06.9".into(), "R05.9".into()],
                    performer: Some(okafor),
                },
                ChargeLine {
                    transaction_id: "TX-2".into(),
                    service_date: at(9, 0),
                    code: "G2012".into(),
                    system: CodeSystem::Hcpcs,
                    description: None,
                    modifiers: vec![],
                    quantity: 2,
                    place_of_service: None,
                    diagnosis_codes: vec![],
                    performer: None,
                },
            ],
            diagnoses: vec![
                Diagnosis {
                    code: "J06.9".into(),
                    description: Some("Acute URI, unspecified".into()),
                    priority: 1,
                },
                Diagnosis {
                    code: "R05.9".into(),
                    description: None,
                    priority: 2,
                },
            ],
        }
    }

    #[test]
    fn encodes_and_reads_back_every_field() {
        let dft = sample();
        let text = dft.encode().expect("encodes");
        assert!(!text.contains('\n'));
        assert_eq!(text.matches('\r').count(), 8, "one CR per segment");
        let m = parse(&text).expect("parses");
        let ids: Vec<&str> = m.segments().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["MSH", "EVN", "PID", "PV1", "FT1", "FT1", "DG1", "DG1"]
        );
        // Expected values written out by hand from the sample above (not from the builder).
        let expect = [
            ("MSH-3", "HEARTH"),
            ("MSH-4", "Clinic & Co"),
            ("MSH-5", "BILLING"),
            ("MSH-6", "PAYER~1"),
            ("MSH-7", "20261202103005-0500"),
            ("MSH-9-1", "DFT"),
            ("MSH-9-2", "P03"),
            ("MSH-9-3", "DFT_P03"),
            ("MSH-10", "HRT-20261202-0001"),
            ("MSH-11", "T"),
            ("MSH-12", "2.5.1"),
            ("EVN-1", "P03"),
            ("EVN-2", "20261202103005-0500"),
            ("PID-1", "1"),
            ("PID-3-1", "MRN-77"),
            ("PID-3-4", "HEARTH"),
            ("PID-3-5", "MR"),
            ("PID-3[2]-1", "9|9"),
            ("PID-3[2]-4", "EHR"),
            ("PID-3[2]-5", "PI"),
            ("PID-5-1", "O'Brien\\Smith"),
            ("PID-5-2", "Ann\rMarie"),
            ("PID-5-3", "Lou Zoe"),
            ("PID-5-7", "L"),
            ("PID-7", "19800229"),
            ("PID-8", "F"),
            ("PV1-1", "1"),
            ("PV1-2", "O"),
            ("PV1-7-1", "1234567893"),
            ("PV1-7-2", "Okafor|Mbeki"),
            ("PV1-7-3", "Mara^Jo"),
            ("PV1-19", "enc-42"),
            ("PV1-44", "20261202093005-0500"),
            ("FT1-1", "1"),
            ("FT1-2", "TX-1"),
            ("FT1-4", "20261202093005-0500"),
            ("FT1-6", "CG"),
            ("FT1-7-1", "99213"),
            ("FT1-7-2", "Office visit | est & low^mod\nnew line"),
            ("FT1-7-3", "C4"),
            ("FT1-10", "1"),
            ("FT1-16", "10"),
            ("FT1-19-1", "J06.9"),
            ("FT1-19-3", "I10"),
            ("FT1-19[2]-1", "R05.9"),
            ("FT1-20-2", "Okafor|Mbeki"),
            ("FT1-25-1", "99213"),
            ("FT1-25-3", "C4"),
            ("FT1-26-1", "95"),
            ("FT1-26-3", "C4"),
            ("FT1-26[2]-1", "GT"),
            ("FT1-26[2]-3", "HCPCS"),
            ("FT1[2]-1", "2"),
            ("FT1[2]-4", "20261202093005+0000"),
            ("FT1[2]-7-1", "G2012"),
            ("FT1[2]-7-3", "HCPCS"),
            ("FT1[2]-10", "2"),
            ("DG1-1", "1"),
            ("DG1-3-1", "J06.9"),
            ("DG1-3-2", "Acute URI, unspecified"),
            ("DG1-3-3", "I10"),
            ("DG1-6", "F"),
            ("DG1-15", "1"),
            ("DG1[2]-3-1", "R05.9"),
            ("DG1[2]-15", "2"),
        ];
        for (path, value) in expect {
            assert_eq!(m.at(path), Some(value), "{path}");
        }
        for absent in [
            "FT1[2]-16",
            "FT1[2]-19",
            "FT1[2]-20",
            "FT1[2]-26",
            "DG1[2]-3-2",
            "FT1-8",
        ] {
            assert_eq!(m.at(absent), None, "{absent}");
        }
        let mut back = DftP03::from_message(&m).expect("reads back");
        assert_eq!(back.patient.given, ["Ann\rMarie", "Lou", "Zoe"]);
        back.patient.given = dft.patient.given.clone();
        assert!(back == dft, "read back differs: {back:?}");
    }

    #[test]
    fn refuses_what_the_standard_or_the_receiver_would() {
        type Change = Box<dyn Fn(&mut DftP03)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|d| d.control_id = "X".repeat(21)),
                "control_id (MSH-10)",
            ),
            (
                Box::new(|d| d.control_id = "a b".into()),
                "control_id (MSH-10)",
            ),
            (
                Box::new(|d| d.processing_id = "D".into()),
                "processing_id (MSH-11)",
            ),
            (
                Box::new(|d| d.patient.identifiers.clear()),
                "patient.identifiers (PID-3)",
            ),
            (
                Box::new(|d| d.patient.sex = Some("X".into())),
                "patient.sex (PID-8)",
            ),
            (
                Box::new(|d| d.visit.patient_class = "Z".into()),
                "visit.patient_class (PV1-2)",
            ),
            (Box::new(|d| d.lines.clear()), "lines"),
            (
                Box::new(|d| d.lines[0].transaction_id = "T".repeat(13)),
                "lines[0].transaction_id (FT1-2)",
            ),
            (
                Box::new(|d| d.lines[1].quantity = 0),
                "lines[1].quantity (FT1-10)",
            ),
            (
                Box::new(|d| d.lines[0].modifiers.push("959".into())),
                "lines[0].modifiers (FT1-26)",
            ),
            (
                Box::new(|d| d.lines[0].place_of_service = Some("2".into())),
                "lines[0].place_of_service (FT1-16)",
            ),
            (
                Box::new(|d| d.diagnoses[1].priority = 100),
                "diagnoses[1].priority (DG1-15)",
            ),
        ];
        for (change, what) in cases {
            let mut d = sample();
            change(&mut d);
            match d.to_message() {
                Err(Hl7Error::Invalid { what: w, .. }) => assert_eq!(w, what),
                other => panic!("{what}: {other:?}"),
            }
        }
        // Lengths count the escaped text: 84 `|` are 252 characters once escaped.
        let mut d = sample();
        d.patient.family = "|".repeat(84);
        let e = d.to_message().expect_err("too long");
        assert_eq!(
            e.to_string(),
            "PID-5: longer than 250 characters once escaped (its HL7 v2.5.1 length)"
        );
        let mut d = sample();
        d.lines[1].description = Some("x".repeat(250));
        assert_eq!(
            d.to_message()
                .expect_err("long")
                .to_string()
                .split(':')
                .next(),
            Some("FT1[2]-7")
        );
    }

    #[test]
    fn debug_shows_ids_only() {
        let shown = format!("{:?}", sample());
        for secret in [
            "O'Brien", "Ann", "MRN-77", "Okafor", "99213", "J06.9", "19800229",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("HRT-20261202-0001") && shown.contains("TX-2"),
            "{shown}"
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_ts("20261202093005-0500"), Some(at(9, -5)));
        for bad in [
            "2026120209300-0500",
            "20261302093005-0500",
            "20261202093005x0500",
            "2026120209300a-0500",
        ] {
            assert_eq!(parse_ts(bad), None, "{bad}");
        }
    }
}
