//! Errors of reading, building and acknowledging HL7 v2 messages.
//!
//! Messages never carry field values: a field may hold a patient's name. They name the
//! segment (and its position) and the field instead.

/// What was wrong with a message, an ACK or a charge to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    #[error("the message is {size} bytes, over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("the message is empty")]
    Empty,
    #[error("segment 1 is not MSH: a message starts with its header (HL7 v2.5.1 §2.14.9)")]
    NoMsh,
    #[error("segment {index} (MSH): {problem} (HL7 v2.5.1 §2.5.4, MSH-1/MSH-2)")]
    Delimiters { index: usize, problem: &'static str },
    #[error("segment {index}: not a segment id (three characters, A-Z then A-Z or 0-9)")]
    SegmentId { index: usize },
    #[error("more than {max} segments")]
    TooManySegments { max: usize },
    #[error("segment {index} ({segment}): more than {max} fields")]
    TooManyFields {
        index: usize,
        segment: String,
        max: usize,
    },
    /// A field that is missing, malformed or over its length. `segment` is the segment id,
    /// with its occurrence when there are several (`FT1[2]`).
    #[error("{segment}-{field}: {problem}")]
    Field {
        segment: String,
        field: usize,
        problem: String,
    },
    #[error("the message has no {0} segment")]
    MissingSegment(String),
    #[error("not an acknowledgment: {0}")]
    NotAck(String),
    #[error("invalid path {path:?}: {problem}")]
    Path { path: String, problem: &'static str },
    /// A charge (or its message header) that cannot be sent as it is.
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
}

impl Hl7Error {
    /// A stable code for logs and the UI.
    pub fn code(&self) -> &'static str {
        match self {
            Hl7Error::TooLarge { .. } => "hl7.too_large",
            Hl7Error::Empty => "hl7.empty",
            Hl7Error::NoMsh => "hl7.no_msh",
            Hl7Error::Delimiters { .. } => "hl7.delimiters",
            Hl7Error::SegmentId { .. } => "hl7.segment_id",
            Hl7Error::TooManySegments { .. } => "hl7.too_many_segments",
            Hl7Error::TooManyFields { .. } => "hl7.too_many_fields",
            Hl7Error::Field { .. } => "hl7.field",
            Hl7Error::MissingSegment(_) => "hl7.missing_segment",
            Hl7Error::NotAck(_) => "hl7.not_ack",
            Hl7Error::Path { .. } => "hl7.path",
            Hl7Error::Invalid { .. } => "hl7.invalid",
        }
    }

    pub(crate) fn field(
        segment: impl Into<String>,
        field: usize,
        problem: impl Into<String>,
    ) -> Self {
        Hl7Error::Field {
            segment: segment.into(),
            field,
            problem: problem.into(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, problem: impl Into<String>) -> Self {
        Hl7Error::Invalid {
            what: what.into(),
            problem: problem.into(),
        }
    }
}
