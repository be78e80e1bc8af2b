//! Arbitrary charges (names, descriptions and ids drawn towards delimiters, escapes, CR and
//! LF) built into a DFT^P03: either refused with an error, or encoded text that parses back
//! to the same message and reads back to the same charge. Also: escape/unescape round trip
//! any string under any legal delimiter set.
#![no_main]

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use hearth_hl7::{
    escape, parse, unescape, ChargeLine, CodeSystem, Delimiters, DftP03, Diagnosis, Patient,
    PatientIdentifier, Provider, Visit,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const TRICKY: &[char] = &[
    '|', '^', '~', '\\', '&', '\r', '\n', 'X', '0', 'D', 'A', 'F', 'S', 'T', 'R', 'E', '.', ' ',
    '#', 'é', '\u{0}',
];

fn text(u: &mut Unstructured, max: usize) -> Result<String> {
    text_from(u, 0, max)
}

fn text_from(u: &mut Unstructured, min: usize, max: usize) -> Result<String> {
    let len = u.int_in_range(min..=max)?;
    (0..len)
        .map(|_| {
            if u.ratio(1, 2)? {
                u.choose(TRICKY).copied()
            } else {
                u.arbitrary::<char>()
            }
        })
        .collect()
}

fn from(u: &mut Unstructured, alphabet: &[u8], min: usize, max: usize) -> Result<String> {
    let len = u.int_in_range(min..=max)?;
    (0..len)
        .map(|_| u.choose(alphabet).map(|b| *b as char))
        .collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-";

fn time(u: &mut Unstructured) -> Result<DateTime<FixedOffset>> {
    let offset = FixedOffset::east_opt(u.int_in_range(-720i32..=840)? * 60)
        .unwrap_or(FixedOffset::east_opt(0).unwrap());
    let t = offset
        .with_ymd_and_hms(
            u.int_in_range(1900..=2100)?,
            u.int_in_range(1..=12)?,
            u.int_in_range(1..=28)?,
            u.int_in_range(0..=23)?,
            u.int_in_range(0..=59)?,
            u.int_in_range(0..=59)?,
        )
        .single();
    Ok(t.unwrap_or_else(|| offset.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()))
}

fn provider(u: &mut Unstructured) -> Result<Option<Provider>> {
    if !u.arbitrary::<bool>()? {
        return Ok(None);
    }
    Ok(Some(Provider {
        id: text(u, 12)?,
        family: text(u, 20)?,
        given: text(u, 12)?,
    }))
}

fn many<T>(
    u: &mut Unstructured,
    max: usize,
    f: impl FnMut(&mut Unstructured) -> Result<T>,
) -> Result<Vec<T>> {
    many_from(u, 0, max, f)
}

fn many_from<T>(
    u: &mut Unstructured,
    min: usize,
    max: usize,
    mut f: impl FnMut(&mut Unstructured) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(min..=max)?;
    (0..n).map(|_| f(u)).collect()
}

fn charge(u: &mut Unstructured) -> Result<DftP03> {
    Ok(DftP03 {
        sending_application: text(u, 10)?,
        sending_facility: text(u, 10)?,
        receiving_application: text(u, 10)?,
        receiving_facility: text(u, 10)?,
        control_id: from(u, ID, 1, 20)?,
        processing_id: u.choose(&["P", "T"])?.to_string(),
        message_time: time(u)?,
        patient: Patient {
            identifiers: many_from(u, 1, 3, |u| {
                Ok(PatientIdentifier {
                    id: text_from(u, 1, 12)?,
                    assigning_authority: text(u, 8)?,
                    type_code: u.choose(&["MR", "PI", ""])?.to_string(),
                })
            })?,
            family: text_from(u, 1, 24)?,
            given: many(u, 3, |u| text(u, 12))?,
            birth_date: if u.arbitrary()? {
                NaiveDate::from_ymd_opt(
                    u.int_in_range(1900..=2026)?,
                    u.int_in_range(1..=12)?,
                    u.int_in_range(1..=28)?,
                )
            } else {
                None
            },
            sex: if u.arbitrary()? {
                Some(u.choose(&["F", "M", "O", "U", "A", "N"])?.to_string())
            } else {
                None
            },
        },
        visit: Visit {
            patient_class: u.choose(&["O", "E", "I"])?.to_string(),
            visit_number: if u.arbitrary()? {
                Some(text(u, 16)?)
            } else {
                None
            },
            attending: provider(u)?,
            start: if u.arbitrary()? { Some(time(u)?) } else { None },
        },
        lines: many_from(u, 1, 4, |u| {
            Ok(ChargeLine {
                // FT1-2 is 12 characters once escaped: mostly plain ids, some tricky ones.
                transaction_id: if u.ratio(3, 4)? {
                    from(u, ID, 1, 12)?
                } else {
                    text_from(u, 1, 2)?
                },
                service_date: time(u)?,
                code: text_from(u, 1, 8)?,
                system: if u.arbitrary()? {
                    CodeSystem::Cpt
                } else {
                    CodeSystem::Hcpcs
                },
                description: if u.arbitrary()? {
                    Some(text(u, 40)?)
                } else {
                    None
                },
                modifiers: many(u, 4, |u| from(u, ALNUM, 2, 2))?,
                quantity: u.int_in_range(1..=999_999)?,
                place_of_service: if u.arbitrary()? {
                    Some(from(u, b"0123456789", 2, 2)?)
                } else {
                    None
                },
                diagnosis_codes: many(u, 4, |u| text_from(u, 1, 8))?,
                performer: provider(u)?,
            })
        })?,
        diagnoses: many(u, 4, |u| {
            Ok(Diagnosis {
                code: text_from(u, 1, 8)?,
                description: if u.arbitrary()? {
                    Some(text(u, 30)?)
                } else {
                    None
                },
                priority: u.int_in_range(1..=99)?,
            })
        })?,
    })
}

/// What the charge reads back as: HL7 has no "present but empty" for these, and further
/// given names travel joined by spaces (see hearth_hl7::dft).
fn as_read_back(mut d: DftP03) -> DftP03 {
    let empty = |p: &Option<Provider>| {
        p.as_ref()
            .is_some_and(|p| p.id.is_empty() && p.family.is_empty() && p.given.is_empty())
    };
    let mut given: Vec<String> = d.patient.given.first().cloned().into_iter().collect();
    let further = d
        .patient
        .given
        .iter()
        .skip(1)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    given.extend(
        further
            .split(' ')
            .filter(|g| !g.is_empty())
            .map(str::to_string),
    );
    if given.len() == 1 && given[0].is_empty() {
        given.clear();
    }
    d.patient.given = given;
    d.visit.visit_number = d.visit.visit_number.filter(|v| !v.is_empty());
    if empty(&d.visit.attending) {
        d.visit.attending = None;
    }
    for l in &mut d.lines {
        l.description = l.description.take().filter(|v| !v.is_empty());
        if empty(&l.performer) {
            l.performer = None;
        }
    }
    for dx in &mut d.diagnoses {
        dx.description = dx.description.take().filter(|v| !v.is_empty());
    }
    d
}

fn run(u: &mut Unstructured) -> Result<()> {
    // Escaping under an arbitrary delimiter set.
    let set: [char; 5] = [
        u.arbitrary()?,
        u.arbitrary()?,
        u.arbitrary()?,
        u.arbitrary()?,
        u.arbitrary()?,
    ];
    let d = Delimiters::new(set[0], set[1], set[2], set[3], set[4]).unwrap_or_default();
    let s = text(u, 64)?;
    assert_eq!(
        unescape(&escape(&s, &d), &d),
        s,
        "escape round trip under {d:?}"
    );

    let dft = charge(u)?;
    match dft.to_message() {
        Err(e) => assert!(
            matches!(e.code(), "hl7.invalid" | "hl7.field"),
            "unexpected error {}",
            e.code()
        ),
        Ok(m) => {
            let encoded = m.encode();
            let parsed = parse(&encoded).expect("a built DFT parses");
            assert_eq!(parsed, m, "parse(encode(m)) != m");
            let back = DftP03::from_message(&parsed).expect("a built DFT reads back");
            assert!(back == as_read_back(dft), "the charge read back differs");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
