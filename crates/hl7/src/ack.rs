//! Acknowledgments (HL7 v2.5.1 §2.9 original and enhanced modes; MSA §2.15.8, ERR §2.15.5).

use crate::{message, Hl7Error, Message};
use std::fmt;

/// MSA-1, table 0008.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// AA: application accept.
    ApplicationAccept,
    /// AE: application error (the receiver read it and refused its content).
    ApplicationError,
    /// AR: application reject (the receiver could not take it: structure, type, version).
    ApplicationReject,
    /// CA: commit accept (enhanced mode).
    CommitAccept,
    /// CE: commit error.
    CommitError,
    /// CR: commit reject.
    CommitReject,
}

impl AckCode {
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "AA" => AckCode::ApplicationAccept,
            "AE" => AckCode::ApplicationError,
            "AR" => AckCode::ApplicationReject,
            "CA" => AckCode::CommitAccept,
            "CE" => AckCode::CommitError,
            "CR" => AckCode::CommitReject,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::ApplicationAccept => "AA",
            AckCode::ApplicationError => "AE",
            AckCode::ApplicationReject => "AR",
            AckCode::CommitAccept => "CA",
            AckCode::CommitError => "CE",
            AckCode::CommitReject => "CR",
        }
    }

    /// AA or CA: the receiver took the message.
    pub fn is_accept(self) -> bool {
        matches!(self, AckCode::ApplicationAccept | AckCode::CommitAccept)
    }
}

/// A parsed acknowledgment. Debug shows the code and the control id only (the text may
/// quote the message).
#[derive(Clone, PartialEq, Eq)]
pub struct Ack {
    pub code: AckCode,
    /// MSA-2: the control id (MSH-10) of the message acknowledged.
    pub control_id: String,
    /// MSA-3: the text message (deprecated in 2.5.1 in favour of ERR, still widely sent).
    pub text: Option<String>,
    /// One entry per ERR segment: ERR-8 (user message), else ERR-3's text or code, else
    /// ERR-1's (2.4-style) code text.
    pub errors: Vec<String>,
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack")
            .field("code", &self.code)
            .field("control_id", &self.control_id)
            .field("errors", &self.errors.len())
            .finish()
    }
}

/// Parses an ACK: an MSH whose MSH-9 message code is `ACK`, then MSA with a known MSA-1 and
/// a control id, then any ERR segments.
pub fn parse_ack(text: &str) -> Result<Ack, Hl7Error> {
    let msg = message::parse(text)?;
    ack_of(&msg)
}

/// [`parse_ack`] of a parsed message.
pub fn ack_of(msg: &Message) -> Result<Ack, Hl7Error> {
    let kind = msg.at("MSH-9-1").unwrap_or_default();
    if kind != "ACK" {
        // The code is named only when it looks like one (a reply is not trusted to hold
        // no patient data).
        return Err(Hl7Error::NotAck(if kind.is_empty() {
            "MSH-9 is empty".to_string()
        } else if kind.len() == 3 && kind.bytes().all(|c| c.is_ascii_uppercase()) {
            format!("MSH-9 is {kind}, not ACK")
        } else {
            "MSH-9 is not ACK".to_string()
        }));
    }
    let msa = msg
        .segment("MSA")
        .ok_or_else(|| Hl7Error::MissingSegment("MSA".into()))?;
    let code = msa.get(1).unwrap_or_default();
    let code = AckCode::parse(code).ok_or_else(|| {
        Hl7Error::field(
            "MSA",
            1,
            if code.is_empty() {
                "empty (AA, AE, AR, CA, CE or CR expected)".to_string()
            } else if code.len() <= 4 && code.chars().all(|c| c.is_ascii_alphanumeric()) {
                format!("{code} is not an acknowledgment code")
            } else {
                "not an acknowledgment code".to_string()
            },
        )
    })?;
    let control_id = msa
        .get(2)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Hl7Error::field("MSA", 2, "no control id"))?
        .to_string();
    let text = msa.get(3).filter(|t| !t.is_empty()).map(str::to_string);
    let errors = msg
        .segments_named("ERR")
        .map(|err| {
            let pick = |n: usize, c: usize| {
                err.field(n)
                    .and_then(|f| f.get(1, c, 1))
                    .filter(|s| !s.is_empty())
            };
            pick(8, 1)
                .or_else(|| pick(3, 2))
                .or_else(|| pick(3, 1))
                .or_else(|| {
                    err.field(1)
                        .and_then(|f| f.get(1, 4, 2))
                        .filter(|s| !s.is_empty())
                })
                .or_else(|| {
                    err.field(1)
                        .and_then(|f| f.get(1, 4, 1))
                        .filter(|s| !s.is_empty())
                })
                .unwrap_or("unspecified error")
                .to_string()
        })
        .collect();
    Ok(Ack {
        code,
        control_id,
        text,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "MSH|^~\\&|BILL|PAYER|HEARTH|CLINIC|20261202101500||ACK^P03^ACK|A1|P|2.5.1\r";

    #[test]
    fn accept_error_and_reject() {
        let aa = parse_ack(&format!("{HEAD}MSA|AA|C-1\r")).expect("AA");
        assert_eq!(
            (aa.code, aa.control_id.as_str(), aa.text.as_deref()),
            (AckCode::ApplicationAccept, "C-1", None)
        );
        assert!(aa.errors.is_empty() && aa.code.is_accept());

        let ae = parse_ack(&format!(
            "{HEAD}MSA|AE|C-2|Modifier 95 not covered\rERR||FT1^1^26|207^Application internal error^HL70357|E||||Modifier 95 not covered \\T\\ plan\r"
        ))
        .expect("AE");
        assert_eq!(ae.code, AckCode::ApplicationError);
        assert_eq!(ae.text.as_deref(), Some("Modifier 95 not covered"));
        assert_eq!(
            ae.errors,
            vec!["Modifier 95 not covered & plan".to_string()]
        );

        let ar = parse_ack(&format!(
            "{HEAD}MSA|AR|C-3\rERR|||100^Segment sequence error^HL70357|E\rERR|PID^1^5^101&Required field missing\r"
        ))
        .expect("AR");
        assert_eq!(ar.code, AckCode::ApplicationReject);
        assert_eq!(
            ar.errors,
            vec![
                "Segment sequence error".to_string(),
                "Required field missing".to_string()
            ]
        );
        assert!(!ar.code.is_accept());

        for (code, expected) in [
            ("CA", AckCode::CommitAccept),
            ("CE", AckCode::CommitError),
            ("CR", AckCode::CommitReject),
        ] {
            let a = parse_ack(&format!("{HEAD}MSA|{code}|C-4\r")).expect(code);
            assert_eq!(a.code, expected);
            assert_eq!(a.code.as_str(), code);
        }
    }

    #[test]
    fn garbage_and_naks_name_the_problem() {
        let e = parse_ack("NAK\r").expect_err("garbage");
        assert_eq!(e.code(), "hl7.no_msh");
        let e = parse_ack(&HEAD.replace("ACK^P03^ACK", "ADT^A01")).expect_err("not ack");
        assert_eq!(
            e.to_string(),
            "not an acknowledgment: MSH-9 is ADT, not ACK"
        );
        let e = parse_ack(HEAD).expect_err("no MSA");
        assert_eq!(e.to_string(), "the message has no MSA segment");
        let e = parse_ack(&format!("{HEAD}MSA|XX|C-1\r")).expect_err("bad code");
        assert_eq!(e.to_string(), "MSA-1: XX is not an acknowledgment code");
        let e = parse_ack(&format!("{HEAD}MSA|AA\r")).expect_err("no id");
        assert_eq!(e.to_string(), "MSA-2: no control id");
    }
}
