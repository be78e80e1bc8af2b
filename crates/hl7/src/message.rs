//! The HL7 v2 message model, its encoder and its parser (HL7 v2.5.1 chapter 2).
//!
//! A [`Message`] is a list of [`Segment`]s (§2.5.2); a segment's fields (§2.5.3) hold
//! repetitions (§2.5.5), a repetition holds components and a component subcomponents (§2.5.6).
//! Values are held unescaped (the data itself): the encoder escapes them (§2.7) and the parser
//! unescapes them, so a value is never hand-joined into the wire format.
//!
//! The model is normalised the way the parser reads it: trailing empty subcomponents,
//! components, repetitions and fields are dropped (§2.5.3 lets a sender omit them), so
//! `parse(&m.encode())` gives back `m` for every message the parser returns.

use crate::escape::{escape, unescape};
use crate::Hl7Error;
use std::fmt;
use std::str::FromStr;

/// The delimiters of a message: MSH-1 (field separator) and MSH-2 (component, repetition,
/// escape, subcomponent), HL7 v2.5.1 §2.5.4. Any set of five distinct printable ASCII
/// characters that are not letters, digits or space is accepted; `|^~\&` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
        }
    }
}

impl Delimiters {
    /// A checked set (see the type's notes).
    pub fn new(
        field: char,
        component: char,
        repetition: char,
        escape: char,
        subcomponent: char,
    ) -> Result<Self, Hl7Error> {
        Self::checked(field, component, repetition, escape, subcomponent, 1)
    }

    fn checked(
        field: char,
        component: char,
        repetition: char,
        escape: char,
        subcomponent: char,
        index: usize,
    ) -> Result<Self, Hl7Error> {
        let all = [field, component, repetition, escape, subcomponent];
        if !all.iter().all(|c| c.is_ascii_punctuation()) {
            return Err(Hl7Error::Delimiters {
                index,
                problem: "a delimiter is not printable ASCII punctuation",
            });
        }
        for (i, a) in all.iter().enumerate() {
            if all[i + 1..].contains(a) {
                return Err(Hl7Error::Delimiters {
                    index,
                    problem: "the five delimiters are not distinct",
                });
            }
        }
        Ok(Delimiters {
            field,
            component,
            repetition,
            escape,
            subcomponent,
        })
    }

    /// MSH-2: component, repetition, escape and subcomponent characters, in that order.
    pub fn encoding_characters(&self) -> String {
        [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .iter()
        .collect()
    }
}

/// A component's subcomponents (§2.5.6). Empty when the component is empty.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Component(pub Vec<String>);

/// A repetition's components.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Repetition(pub Vec<Component>);

/// A field's repetitions (§2.5.5). Empty when the field is empty.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Field(pub Vec<Repetition>);

/// One segment: its id (`PID`) and its fields; `fields[0]` is field 1. For MSH, field 1 is
/// the field separator and field 2 the encoding characters, as written (§2.14.9.1-2).
#[derive(Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: String,
    pub fields: Vec<Field>,
}

/// A whole message: its delimiters and its segments, MSH first.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    delimiters: Delimiters,
    segments: Vec<Segment>,
}

// Debug shows the structure, never the values (which may be a patient's).
impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Component({} subcomponents)", self.0.len())
    }
}
impl fmt::Debug for Repetition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Repetition({} components)", self.0.len())
    }
}
impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field({} repetitions)", self.0.len())
    }
}
impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Segment({}, {} fields)", self.id, self.fields.len())
    }
}
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.segments.iter().map(|s| s.id.as_str()).collect();
        f.debug_struct("Message")
            .field("control_id", &self.control_id())
            .field("segments", &ids)
            .finish()
    }
}

impl Component {
    pub fn text(value: impl Into<String>) -> Self {
        Component(vec![value.into()])
    }
    fn trimmed(mut self) -> Self {
        while self.0.last().is_some_and(|s| s.is_empty()) {
            self.0.pop();
        }
        self
    }
}

impl Repetition {
    /// A repetition of simple components (one subcomponent each).
    pub fn components<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Self {
        Repetition(values.into_iter().map(Component::text).collect())
    }
    fn trimmed(self) -> Self {
        let mut c: Vec<Component> = self.0.into_iter().map(Component::trimmed).collect();
        while c.last().is_some_and(|c| c.0.is_empty()) {
            c.pop();
        }
        Repetition(c)
    }
    /// Component `c`, subcomponent `s` (1-based); `None` when absent.
    pub fn get(&self, c: usize, s: usize) -> Option<&str> {
        self.0
            .get(c.checked_sub(1)?)?
            .0
            .get(s.checked_sub(1)?)
            .map(String::as_str)
    }
}

impl Field {
    /// A field of one value.
    pub fn text(value: impl Into<String>) -> Self {
        Field(vec![Repetition(vec![Component::text(value)])])
    }
    /// A field of one repetition of simple components.
    pub fn components<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Self {
        Field(vec![Repetition::components(values)])
    }
    /// A repeated field.
    pub fn repeated(repetitions: impl IntoIterator<Item = Repetition>) -> Self {
        Field(repetitions.into_iter().collect())
    }
    pub fn is_empty(&self) -> bool {
        self.0
            .iter()
            .all(|r| r.0.iter().all(|c| c.0.iter().all(String::is_empty)))
    }
    fn trimmed(self) -> Self {
        let mut r: Vec<Repetition> = self.0.into_iter().map(Repetition::trimmed).collect();
        while r.last().is_some_and(|r| r.0.is_empty()) {
            r.pop();
        }
        Field(r)
    }
    /// Repetition `r`, component `c`, subcomponent `s` (1-based); `None` when absent.
    pub fn get(&self, r: usize, c: usize, s: usize) -> Option<&str> {
        self.0.get(r.checked_sub(1)?)?.get(c, s)
    }
    /// The first value (repetition 1, component 1, subcomponent 1).
    pub fn value(&self) -> Option<&str> {
        self.get(1, 1, 1)
    }
}

impl Segment {
    pub fn new(id: impl Into<String>) -> Self {
        Segment {
            id: id.into(),
            fields: Vec::new(),
        }
    }
    /// Sets field `n` (1-based), adding empty fields before it as needed.
    pub fn set(&mut self, n: usize, field: Field) -> &mut Self {
        if n == 0 {
            return self;
        }
        if self.fields.len() < n {
            self.fields.resize_with(n, Field::default);
        }
        self.fields[n - 1] = field;
        self
    }
    /// [`Segment::set`] for chaining.
    pub fn with(mut self, n: usize, field: Field) -> Self {
        self.set(n, field);
        self
    }
    /// Field `n` (1-based).
    pub fn field(&self, n: usize) -> Option<&Field> {
        self.fields.get(n.checked_sub(1)?)
    }
    /// Field `n`'s first value.
    pub fn get(&self, n: usize) -> Option<&str> {
        self.field(n)?.value()
    }
}

/// Limits of the parser: input beyond them is refused, never read further.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_segments: usize,
    pub max_fields: usize,
}

impl Default for Limits {
    /// 1 MiB, 10,000 segments, 1,000 fields a segment.
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 20,
            max_segments: 10_000,
            max_fields: 1_000,
        }
    }
}

impl Message {
    /// An empty message with these delimiters; push an MSH first.
    pub fn new(delimiters: Delimiters) -> Self {
        Message {
            delimiters,
            segments: Vec::new(),
        }
    }

    /// Appends a segment (normalised: trailing empty parts dropped). For MSH, fields 1 and 2
    /// are set from the message's delimiters.
    pub fn push(&mut self, mut segment: Segment) {
        if segment.id == "MSH" {
            segment.set(1, Field::text(self.delimiters.field.to_string()));
            segment.set(2, Field::text(self.delimiters.encoding_characters()));
        }
        self.segments.push(normalise(segment));
    }

    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segments with this id, in order.
    pub fn segments_named<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.id == id)
    }

    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// The first value of field `field` of the first `segment`: `msg.get("MSH", 10)`.
    pub fn get(&self, segment: &str, field: usize) -> Option<&str> {
        self.segment(segment)?.get(field)
    }

    /// The value at a [`Path`].
    pub fn value(&self, path: &Path) -> Option<&str> {
        self.segments
            .iter()
            .filter(|s| s.id == path.segment)
            .nth(path.occurrence.checked_sub(1)?)?
            .field(path.field)?
            .get(path.repetition, path.component, path.subcomponent)
    }

    /// The value at a path written as text (see [`Path`]); `None` for an invalid path too.
    pub fn at(&self, path: &str) -> Option<&str> {
        self.value(&path.parse().ok()?)
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> Option<&str> {
        self.get("MSH", 10)
    }

    /// The message in HL7's encoding rules (§2.6): each segment ended by CR.
    pub fn encode(&self) -> String {
        let d = &self.delimiters;
        let mut out = String::new();
        for seg in &self.segments {
            let mut line = seg.id.clone();
            let skip = if seg.id == "MSH" {
                line.push(d.field);
                line.push_str(&d.encoding_characters());
                2
            } else {
                0
            };
            for f in seg.fields.iter().skip(skip) {
                line.push(d.field);
                line.push_str(&encode_field(f, d));
            }
            let keep = line
                .trim_end_matches(d.field)
                .len()
                .max(if skip == 2 { 8 } else { 3 });
            line.truncate(keep);
            out.push_str(&line);
            out.push('\r');
        }
        out
    }
}

fn encode_field(f: &Field, d: &Delimiters) -> String {
    let reps: Vec<String> =
        f.0.iter()
            .map(|r| Message::encode_repetition(r, d))
            .collect();
    join_trimmed(&reps, d.repetition)
}

impl Message {
    /// One repetition as written in a field.
    pub(crate) fn encode_repetition(r: &Repetition, d: &Delimiters) -> String {
        let comps: Vec<String> =
            r.0.iter()
                .map(|c| {
                    let subs: Vec<String> = c.0.iter().map(|s| escape(s, d)).collect();
                    join_trimmed(&subs, d.subcomponent)
                })
                .collect();
        join_trimmed(&comps, d.component)
    }
}

/// Joined with `sep`, trailing separators dropped (escaped data never holds a raw delimiter,
/// so trailing ones are structure).
fn join_trimmed(parts: &[String], sep: char) -> String {
    let mut s = parts.join(&sep.to_string());
    s.truncate(s.trim_end_matches(sep).len());
    s
}

fn normalise(mut segment: Segment) -> Segment {
    let msh = segment.id == "MSH";
    segment.fields = segment
        .fields
        .into_iter()
        .enumerate()
        .map(|(i, f)| if msh && i < 2 { f } else { f.trimmed() })
        .collect();
    while segment.fields.len() > if msh { 2 } else { 0 }
        && segment.fields.last().is_some_and(|f| f.0.is_empty())
    {
        segment.fields.pop();
    }
    segment
}

/// Parses a message with the default [`Limits`].
pub fn parse(text: &str) -> Result<Message, Hl7Error> {
    parse_with(text, &Limits::default())
}

/// Parses a message: segments separated by CR, LF or CRLF (empty lines skipped), delimiters
/// from the first MSH (every MSH must repeat them), values unescaped.
pub fn parse_with(text: &str, limits: &Limits) -> Result<Message, Hl7Error> {
    if text.len() > limits.max_bytes {
        return Err(Hl7Error::TooLarge {
            size: text.len(),
            max: limits.max_bytes,
        });
    }
    let mut lines = text.split(['\r', '\n']).filter(|l| !l.is_empty());
    let first = lines.next().ok_or(Hl7Error::Empty)?;
    let d = header_delimiters(first, 1)?;
    let mut msg = Message::new(d);
    for (i, line) in std::iter::once(first).chain(lines).enumerate() {
        let index = i + 1;
        if index > limits.max_segments {
            return Err(Hl7Error::TooManySegments {
                max: limits.max_segments,
            });
        }
        // A header's id ends where its own field separator is (checked below).
        let id_end = if line.starts_with("MSH") {
            3
        } else {
            line.find(d.field).unwrap_or(line.len())
        };
        let id = &line[..id_end];
        let b = id.as_bytes();
        if !(b.len() == 3
            && b[0].is_ascii_uppercase()
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
        {
            return Err(Hl7Error::SegmentId { index });
        }
        let mut rest = &line[id_end..];
        let mut segment = Segment::new(id);
        if id == "MSH" {
            if header_delimiters(line, index)? != d {
                return Err(Hl7Error::Delimiters {
                    index,
                    problem: "differ from the first MSH's",
                });
            }
            segment.fields.push(Field::text(d.field.to_string()));
            segment.fields.push(Field::text(d.encoding_characters()));
            rest = &line[8..];
        }
        if !rest.is_empty() {
            // `rest` starts with the separator before the next field.
            for raw in rest[d.field.len_utf8()..].split(d.field) {
                if segment.fields.len() >= limits.max_fields {
                    return Err(Hl7Error::TooManyFields {
                        index,
                        segment: id.to_string(),
                        max: limits.max_fields,
                    });
                }
                segment.fields.push(parse_field(raw, &d));
            }
        }
        msg.segments.push(normalise(segment));
    }
    if msg.segments.first().is_none_or(|s| s.id != "MSH") {
        return Err(Hl7Error::NoMsh);
    }
    Ok(msg)
}

/// MSH-1 and MSH-2 of a header line: `MSH`, the field separator, four encoding characters,
/// then the end of the line or the field separator.
fn header_delimiters(line: &str, index: usize) -> Result<Delimiters, Hl7Error> {
    if !line.starts_with("MSH") {
        return Err(Hl7Error::NoMsh);
    }
    let chars: Vec<char> = line.chars().skip(3).take(6).collect();
    if chars.len() < 5 {
        return Err(Hl7Error::Delimiters {
            index,
            problem: "MSH-1 and the four MSH-2 characters are incomplete",
        });
    }
    if chars.get(5).is_some_and(|c| *c != chars[0]) {
        return Err(Hl7Error::Delimiters {
            index,
            problem: "MSH-2 is not four characters",
        });
    }
    Delimiters::checked(chars[0], chars[1], chars[2], chars[3], chars[4], index)
}

fn parse_field(raw: &str, d: &Delimiters) -> Field {
    Field(
        raw.split(d.repetition)
            .map(|r| {
                Repetition(
                    r.split(d.component)
                        .map(|c| {
                            Component(c.split(d.subcomponent).map(|s| unescape(s, d)).collect())
                        })
                        .collect(),
                )
            })
            .collect(),
    )
    .trimmed()
}

/// Where a value is: `SEG[occurrence]-field[repetition]-component-subcomponent`, all
/// 1-based, occurrence and repetition optional (1), component and subcomponent optional (1).
/// E.g. `PID-5-2` (first given name), `FT1[2]-26[2]-1` (second line's second modifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub segment: String,
    pub occurrence: usize,
    pub field: usize,
    pub repetition: usize,
    pub component: usize,
    pub subcomponent: usize,
}

impl FromStr for Path {
    type Err = Hl7Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem| Hl7Error::Path {
            path: s.to_string(),
            problem,
        };
        let with_index = |part: &str| -> Result<(String, usize), Hl7Error> {
            match part.split_once('[') {
                None => Ok((part.to_string(), 1)),
                Some((name, idx)) => {
                    let n = idx
                        .strip_suffix(']')
                        .and_then(|i| i.parse::<usize>().ok())
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("an index is not [n], n from 1"))?;
                    Ok((name.to_string(), n))
                }
            }
        };
        let mut parts = s.split('-');
        let (segment, occurrence) = with_index(parts.next().unwrap_or_default())?;
        if segment.len() != 3 {
            return Err(bad("the segment id is not three characters"));
        }
        let (field, repetition) = with_index(parts.next().ok_or_else(|| bad("no field"))?)?;
        let number = |p: Option<&str>| -> Result<usize, Hl7Error> {
            match p {
                None => Ok(1),
                Some(p) => p
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("a position is not a number from 1")),
            }
        };
        let field = number(Some(&field))?;
        let component = number(parts.next())?;
        let subcomponent = number(parts.next())?;
        if parts.next().is_some() {
            return Err(bad("more than four levels"));
        }
        Ok(Path {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_components_repetitions_and_escapes() {
        let text = "MSH|^~\\&|APP|FAC|||20261202||DFT^P03^DFT_P03|C1|P|2.5.1\r\
                    PID|1||A1^^^H^MR~B2^^^H^PI||O\\F\\B\\S\\r\\X0D\\x^Ann&Bee\r";
        let m = parse(text).expect("parses");
        assert_eq!(m.get("MSH", 1), Some("|"));
        assert_eq!(m.get("MSH", 2), Some("^~\\&"));
        assert_eq!(m.get("MSH", 3), Some("APP"));
        assert_eq!(m.control_id(), Some("C1"));
        assert_eq!(m.at("MSH-9-2"), Some("P03"));
        assert_eq!(m.at("PID-3[2]-1"), Some("B2"));
        assert_eq!(m.at("PID-3[2]-5"), Some("PI"));
        assert_eq!(m.at("PID-5-1"), Some("O|B^r\rx"));
        assert_eq!(m.at("PID-5-2-2"), Some("Bee"));
        assert_eq!(m.at("PID-5-3"), None);
        assert_eq!(parse(&m.encode()).expect("re-parses"), m);
    }

    #[test]
    fn any_legal_delimiters_and_line_endings() {
        let text = "MSH#!$%*#APP#FAC\nEVN#P03#20261202\r\nPID#1##A!B*C$D%F%##\n\n";
        let m = parse(text).expect("parses");
        assert_eq!(
            m.delimiters(),
            Delimiters::new('#', '!', '$', '%', '*').expect("legal")
        );
        assert_eq!(m.segments().len(), 3);
        assert_eq!(m.at("PID-3-1"), Some("A"));
        assert_eq!(m.at("PID-3-2-2"), Some("C"));
        assert_eq!(m.at("PID-3[2]-1"), Some("D#"));
        assert_eq!(m.segment("PID").map(|s| s.fields.len()), Some(3));
        let again = m.encode();
        assert!(again.starts_with("MSH#!$%*#APP#FAC\rEVN#P03#20261202\r"));
        assert_eq!(parse(&again).expect("re-parses"), m);
    }

    #[test]
    fn refuses_with_the_place_named() {
        let cases: &[(&str, &str)] = &[
            ("", "hl7.empty"),
            ("\r\n", "hl7.empty"),
            ("PID|1\r", "hl7.no_msh"),
            ("MSH|^~\\\r", "hl7.delimiters"),
            ("MSH|^~\\&&|A\r", "hl7.delimiters"),
            ("MSH|^^\\&|A\r", "hl7.delimiters"),
            ("MSHa^~\\&aA\r", "hl7.delimiters"),
            ("MSH|^~\\&|A\rpid|1\r", "hl7.segment_id"),
            ("MSH|^~\\&|A\rPIDX|1\r", "hl7.segment_id"),
            ("MSH|^~\\&|A\rMSH#^~\\&#A\r", "hl7.delimiters"),
            ("MSH|^~\\&|A\rMSH\r", "hl7.delimiters"),
        ];
        for (text, code) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.code(), *code, "{text:?}: {e}");
        }
        let e = parse("MSH|^~\\&|A\rEVN|1\rPI|1\r").expect_err("bad id");
        assert_eq!(
            e.to_string(),
            "segment 3: not a segment id (three characters, A-Z then A-Z or 0-9)"
        );
        let limits = Limits {
            max_bytes: 100,
            max_segments: 2,
            max_fields: 3,
        };
        let e = parse_with("MSH|^~\\&|A\rEVN|1\rPID|1\r", &limits).expect_err("segments");
        assert_eq!(e.code(), "hl7.too_many_segments");
        let e = parse_with("MSH|^~\\&|A\rEVN|1|2|3|4\r", &limits).expect_err("fields");
        assert_eq!(e.to_string(), "segment 2 (EVN): more than 3 fields");
        let e = parse_with(&"x".repeat(101), &limits).expect_err("size");
        assert_eq!(e.code(), "hl7.too_large");
    }

    #[test]
    fn trailing_empties_are_dropped_and_middle_ones_kept() {
        let m = parse("MSH|^~\\&|A\rPID|1||a^^b&&~~c~||||\r").expect("parses");
        let f = m.segment("PID").and_then(|s| s.field(3)).expect("PID-3");
        assert_eq!(f.0.len(), 3);
        assert_eq!(f.get(1, 3, 1), Some("b"));
        assert_eq!(f.get(1, 3, 2), None);
        assert_eq!(f.get(3, 1, 1), Some("c"));
        assert_eq!(m.encode(), "MSH|^~\\&|A\rPID|1||a^^b~~c\r");
        assert_eq!(m.segment("PID").map(|s| s.fields.len()), Some(3));
    }

    #[test]
    fn debug_shows_structure_not_values() {
        let m = parse("MSH|^~\\&|A|||||||C9\rPID|1||X||Secretname\r").expect("parses");
        let shown = format!("{m:?} {:?}", m.segments()[1]);
        assert!(!shown.contains("Secretname"), "{shown}");
        assert!(shown.contains("C9") && shown.contains("PID"), "{shown}");
    }

    #[test]
    fn paths() {
        let p: Path = "FT1[2]-26[3]-1-2".parse().expect("path");
        assert_eq!(
            (
                p.occurrence,
                p.field,
                p.repetition,
                p.component,
                p.subcomponent
            ),
            (2, 26, 3, 1, 2)
        );
        for bad in [
            "",
            "PI-1",
            "PID",
            "PID-0",
            "PID-x",
            "PID[0]-1",
            "PID-1-1-1-1",
            "PID-1[2",
        ] {
            assert!(bad.parse::<Path>().is_err(), "{bad}");
        }
    }
}
