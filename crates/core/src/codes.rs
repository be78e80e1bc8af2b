//! The code tables behind the visit note's pickers: diagnoses from ICD-10-CM, service lines by
//! code (office and telehealth E/M, HCPCS Level II), and the billing that a visit's modality
//! implies (modifier and place of service).
//!
//! - [`DiagnosisCodes`]: the billable ICD-10-CM codes. The full table (about 75,000 codes) is
//!   a file `code<TAB>description` that `scripts/codes` builds from CMS's tabular list
//!   (public domain) into `$HEARTH_ICD10CM_FILE`; [`DiagnosisCodes::builtin`] is a short
//!   compiled-in list of common primary-care and telehealth diagnoses for when no table is
//!   configured.
//! - [`ServiceCodes`]: the compiled-in service codes. CPT codes are shipped without
//!   descriptions (the AMA licenses those); a site that holds a CPT licence loads its own with
//!   [`ServiceCodes::with_site_descriptions`]. HCPCS Level II descriptions here are our own
//!   short wording of public-domain CMS codes.
//! - [`visit_billing`]: modifier 95 and place of service 02/10/11 by modality.
//!
//! Search ([`DiagnosisCodes::search`], [`ServiceCodes::search`]) takes what the clinician
//! types: a code prefix, with or without its dot, or words that must all appear in the
//! description (case- and accent-insensitive; each word may be part of a longer word, so
//! `diab` finds "diabetes"). Code-prefix hits come first, then description hits; within each,
//! shorter codes first, then by code.

use crate::CoreError;
use hearth_ipc::Modality;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

/// The largest code table [`DiagnosisCodes::load`] reads (CMS's full ICD-10-CM is ~6.4 MB).
pub const MAX_TABLE_BYTES: u64 = 64 * 1024 * 1024;
/// The longest line of a code table (CMS's longest ICD-10-CM line is under 250 bytes).
pub const MAX_LINE_BYTES: usize = 1024;
/// The most codes in one table (ICD-10-CM 2026 has 74,719 billable codes).
pub const MAX_CODES: usize = 250_000;

/// The code system an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeSystem {
    /// ICD-10-CM diagnoses (CMS/NCHS; public domain).
    Icd10Cm,
    /// CPT (AMA): codes only unless the site loads its licensed descriptions.
    Cpt,
    /// HCPCS Level II (CMS; public domain).
    Hcpcs,
}

/// One code of a table, as the pickers show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeEntry {
    /// As the code system writes it: ICD-10-CM with its dot (`J06.9`), CPT and HCPCS as five
    /// characters (`99213`, `G2012`).
    pub code: String,
    /// `None` for a CPT code whose description the site has not loaded.
    pub description: Option<String>,
    pub system: CodeSystem,
}

/// Why a code table could not be loaded. Messages name the file and line, never a patient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodesError {
    #[error("code table {path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("code table {path} is larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("code table {path} has more than {limit} codes")]
    TooMany { path: String, limit: usize },
    #[error("code table {path} has no codes")]
    Empty { path: String },
    /// `line` counts from 1.
    #[error("code table {path}, line {line}: {problem}")]
    Malformed {
        path: String,
        line: usize,
        problem: String,
    },
}

impl CodesError {
    /// The stable code the UI and logs branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreadable { .. } => "codes_unreadable",
            Self::TooLarge { .. } => "codes_too_large",
            Self::TooMany { .. } => "codes_too_many",
            Self::Empty { .. } => "codes_empty",
            Self::Malformed { .. } => "codes_malformed",
        }
    }
}

impl From<CodesError> for CoreError {
    /// A table the configuration points at is a configuration problem.
    fn from(e: CodesError) -> Self {
        CoreError::Configuration {
            source_name: "code table".to_string(),
            problem: e.to_string(),
        }
    }
}

/// The billable ICD-10-CM codes a diagnosis may be picked from.
#[derive(Debug, Clone)]
pub struct DiagnosisCodes {
    table: Table,
}

impl DiagnosisCodes {
    /// The table at `path`: UTF-8 lines `code<TAB>description`, codes with their dot
    /// (`scripts/codes` writes it to `$HEARTH_ICD10CM_FILE`). Any line that is not a
    /// well-formed, new ICD-10-CM code with a description is an error naming its line.
    pub fn load(path: &Path) -> Result<DiagnosisCodes, CodesError> {
        Self::load_with(path, Limits::DEFAULT)
    }

    fn load_with(path: &Path, limits: Limits) -> Result<DiagnosisCodes, CodesError> {
        let text = read_limited(path, limits)?;
        let rows = parse_rows(path, &text, limits, is_icd10cm_code, "an ICD-10-CM code")?;
        let entries = rows
            .into_iter()
            .map(|(code, description)| CodeEntry {
                code: code.to_string(),
                description: Some(description.to_string()),
                system: CodeSystem::Icd10Cm,
            })
            .collect();
        Ok(DiagnosisCodes {
            table: Table::new(entries),
        })
    }

    /// Common primary-care and telehealth diagnoses, with CMS's descriptions (ICD-10-CM 2026),
    /// for when no full table is configured.
    pub fn builtin() -> DiagnosisCodes {
        let entries = BUILTIN_DIAGNOSES
            .iter()
            .map(|&(code, description)| CodeEntry {
                code: code.to_string(),
                description: Some(description.to_string()),
                system: CodeSystem::Icd10Cm,
            })
            .collect();
        DiagnosisCodes {
            table: Table::new(entries),
        }
    }

    /// Up to `limit` codes for what the clinician typed (see the [module docs](self)).
    pub fn search(&self, query: &str, limit: usize) -> Vec<CodeEntry> {
        self.table.search(query, limit)
    }

    /// The entry of a typed code (`j06.9`, `J069` and ` J06.9 ` all find `J06.9`); `None`
    /// when it is not a billable code of this table.
    pub fn get(&self, code: &str) -> Option<&CodeEntry> {
        self.table.get(code)
    }

    pub fn len(&self) -> usize {
        self.table.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.entries.is_empty()
    }
}

/// The service codes a service line may be billed with.
#[derive(Debug, Clone)]
pub struct ServiceCodes {
    table: Table,
}

impl ServiceCodes {
    /// The compiled-in codes: CPT without descriptions, HCPCS Level II with ours.
    pub fn builtin() -> ServiceCodes {
        ServiceCodes {
            table: Table::new(builtin_services()),
        }
    }

    /// The compiled-in codes with descriptions from the site's file at `path` (lines
    /// `code<TAB>description`; for CPT, the descriptions the site licenses from the AMA). A
    /// description there fills in or replaces ours; codes that are not among the compiled-in
    /// ones are ignored, so a site may point this at its whole licensed file. A malformed line
    /// is an error naming it.
    pub fn with_site_descriptions(path: &Path) -> Result<ServiceCodes, CodesError> {
        Self::with_site_descriptions_limited(path, Limits::DEFAULT)
    }

    fn with_site_descriptions_limited(
        path: &Path,
        limits: Limits,
    ) -> Result<ServiceCodes, CodesError> {
        let text = read_limited(path, limits)?;
        let rows = parse_rows(path, &text, limits, is_service_code, "a CPT or HCPCS code")?;
        let site: HashMap<&str, &str> = rows.into_iter().collect();
        let mut entries = builtin_services();
        for entry in &mut entries {
            if let Some(description) = site.get(entry.code.as_str()) {
                entry.description = Some((*description).to_string());
            }
        }
        Ok(ServiceCodes {
            table: Table::new(entries),
        })
    }

    /// Up to `limit` codes for what the user typed (see the [module docs](self)); a CPT code
    /// without a description is found by its code only.
    pub fn search(&self, query: &str, limit: usize) -> Vec<CodeEntry> {
        self.table.search(query, limit)
    }

    /// The entry of a typed code (case-insensitive), `None` when it is not one of ours.
    pub fn get(&self, code: &str) -> Option<&CodeEntry> {
        self.table.get(code)
    }

    pub fn len(&self) -> usize {
        self.table.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.entries.is_empty()
    }
}

/// The modifiers and place of service (POS) of a visit's service lines.
///
/// - Virtual (real-time audio and video): modifier `95`, "Synchronous telemedicine service
///   rendered via a real-time interactive audio and video telecommunications system" (CPT
///   Appendix P; CMS lists it among the telehealth modifiers in its MLN booklet "Telehealth &
///   Remote Patient Monitoring"), and POS `10`, "Telehealth Provided in Patient's Home", when the
///   patient is at home, else POS `02`, "Telehealth Provided Other than in Patient's Home" (the
///   patient is somewhere other than home, e.g. a clinic acting as the originating site).
/// - In person: no modifier, POS `11`, "Office".
///
/// POS codes and names are CMS's Place of Service Code Set
/// (<https://www.cms.gov/medicare/coding-billing/place-of-service-codes/code-sets>; 02 and 10
/// as revised effective 2022-01-01). Payers differ on whether they want 95 along with POS 02
/// or 10: these are defaults the biller may change. Audio-only visits (modifier 93) are not a [`Modality`]
/// yet.
pub fn visit_billing(
    modality: Modality,
    patient_at_home: bool,
) -> (Vec<&'static str>, &'static str) {
    match modality {
        Modality::Virtual if patient_at_home => (vec!["95"], "10"),
        Modality::Virtual => (vec!["95"], "02"),
        Modality::InPerson => (Vec::new(), "11"),
    }
}

/// Bounds on a table file; tests use small ones.
#[derive(Debug, Clone, Copy)]
struct Limits {
    bytes: u64,
    line_bytes: usize,
    codes: usize,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        bytes: MAX_TABLE_BYTES,
        line_bytes: MAX_LINE_BYTES,
        codes: MAX_CODES,
    };
}

/// The file's text, refusing one over the size limit or not UTF-8 (naming the first bad line).
fn read_limited(path: &Path, limits: Limits) -> Result<String, CodesError> {
    let shown = path.display().to_string();
    let unreadable = |e: std::io::Error| CodesError::Unreadable {
        path: shown.clone(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file at the limit from a larger one (also one that grows
    // while read).
    file.take(limits.bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > limits.bytes {
        return Err(CodesError::TooLarge {
            path: shown,
            limit: limits.bytes,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        CodesError::Malformed {
            path: shown.clone(),
            line: good.iter().filter(|&&b| b == b'\n').count() + 1,
            problem: "is not UTF-8".to_string(),
        }
    })
}

/// The `(code, description)` rows of a table's text, each checked: exactly one tab, a code that
/// `valid` accepts and no earlier line had, a description with no control characters. A final
/// newline is optional; a CR before it (a file saved on Windows) and a UTF-8 byte order mark
/// are accepted.
fn parse_rows<'t>(
    path: &Path,
    text: &'t str,
    limits: Limits,
    valid: fn(&str) -> bool,
    what: &str,
) -> Result<Vec<(&'t str, &'t str)>, CodesError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.strip_suffix('\n').unwrap_or(text);
    let malformed = |line: usize, problem: String| CodesError::Malformed {
        path: path.display().to_string(),
        line,
        problem,
    };
    let mut rows = Vec::new();
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    if text.is_empty() {
        return Err(CodesError::Empty {
            path: path.display().to_string(),
        });
    }
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.len() > limits.line_bytes {
            return Err(malformed(
                n,
                format!("is longer than {} bytes", limits.line_bytes),
            ));
        }
        let mut fields = line.split('\t');
        let (Some(code), Some(description), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed(
                n,
                "is not `code<TAB>description` (one tab)".to_string(),
            ));
        };
        if !valid(code) {
            return Err(malformed(
                n,
                format!("`{}` is not {what}", code.escape_debug()),
            ));
        }
        let description = description.trim();
        if description.is_empty() {
            return Err(malformed(n, format!("{code} has no description")));
        }
        if description.chars().any(char::is_control) {
            return Err(malformed(
                n,
                format!("the description of {code} has a control character"),
            ));
        }
        if let Some(earlier) = first_line.insert(code, n) {
            return Err(malformed(n, format!("{code} repeats line {earlier}")));
        }
        if rows.len() == limits.codes {
            return Err(CodesError::TooMany {
                path: path.display().to_string(),
                limit: limits.codes,
            });
        }
        rows.push((code, description));
    }
    Ok(rows)
}

/// An ICD-10-CM code as CMS writes it: a letter, two letters or digits (the second is a letter
/// only in QA0, new in April 2026), then a dot and one to four letters or digits for codes
/// below the category (`I10`, `J06.9`, `S93.401A`). Uppercase.
fn is_icd10cm_code(code: &str) -> bool {
    let b = code.as_bytes();
    let alnum = |c: &u8| c.is_ascii_digit() || c.is_ascii_uppercase();
    b.len() >= 3
        && b[0].is_ascii_uppercase()
        && b[1..3].iter().all(alnum)
        && (b.len() == 3
            || (b[3] == b'.' && (5..=8).contains(&b.len()) && b[4..].iter().all(alnum)))
}

/// A CPT or HCPCS Level II code: five digits or uppercase letters (`99213`, `0001F`, `G2012`).
fn is_service_code(code: &str) -> bool {
    code.len() == 5
        && code
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// What a typed query means as a code: letters and digits with at most one dot, after the
/// third character (`j06.9`, `J069`, `992`), uppercase without the dot; `None` otherwise.
fn code_key(query: &str) -> Option<String> {
    let dot = query.find('.');
    let ok = !query.is_empty()
        && query
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.')
        && query.bytes().filter(|&c| c == b'.').count() <= 1
        && dot.is_none_or(|at| at == 3);
    ok.then(|| query.replace('.', "").to_ascii_uppercase())
        .filter(|k| !k.is_empty())
}

/// Lowercase, with the accented letters of CMS's descriptions (Sézary, Charcôt, Sjögren)
/// folded to their base letter, so typing without accents finds them.
fn fold(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à'..='å' => 'a',
            'ç' => 'c',
            'è'..='ë' => 'e',
            'ì'..='ï' => 'i',
            'ñ' => 'n',
            'ò'..='ö' | 'ø' => 'o',
            'ù'..='ü' => 'u',
            'ý' | 'ÿ' => 'y',
            c => c,
        })
        .collect()
}

/// The words of folded text: runs of letters and digits.
fn words(folded: &str) -> impl Iterator<Item = &str> {
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// A searchable table. Entries are kept in result order (shorter codes first, then by code),
/// so an entry's index is its rank and every list of indexes sorted ascending is in order.
#[derive(Debug, Clone)]
struct Table {
    entries: Vec<CodeEntry>,
    /// Per entry: its code uppercase without the dot.
    keys: Vec<Box<str>>,
    /// Per entry: its description folded ([`fold`]); empty when it has none.
    folded: Vec<Box<str>>,
    /// `by_length[n]`: the entries whose key has `n` characters, a range sorted by key.
    by_length: Vec<Range<usize>>,
    /// The distinct words of the descriptions, sorted, each followed by a newline: where a
    /// query word occurs in any of them is one pass over this text.
    vocabulary: String,
    /// Per vocabulary word: where it starts in `vocabulary` (ascending).
    word_starts: Vec<usize>,
    /// Per vocabulary word: the entries whose description has it (ascending).
    postings: Vec<Vec<u32>>,
}

impl Table {
    fn new(mut entries: Vec<CodeEntry>) -> Table {
        let key = |e: &CodeEntry| e.code.replace('.', "").to_ascii_uppercase();
        entries.sort_by_cached_key(|e| {
            let k = key(e);
            (k.len(), k)
        });
        let keys: Vec<Box<str>> = entries.iter().map(|e| key(e).into()).collect();
        let folded: Vec<Box<str>> = entries
            .iter()
            .map(|e| fold(e.description.as_deref().unwrap_or("")).into())
            .collect();
        let longest = keys.last().map_or(0, |k| k.len());
        let by_length = (0..=longest)
            .map(|n| keys.partition_point(|k| k.len() < n)..keys.partition_point(|k| k.len() <= n))
            .collect();
        let mut index: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, text) in folded.iter().enumerate() {
            for word in words(text) {
                let list = index.entry(word).or_default();
                if list.last() != Some(&(i as u32)) {
                    list.push(i as u32);
                }
            }
        }
        let mut index: Vec<(&str, Vec<u32>)> = index.into_iter().collect();
        index.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut vocabulary = String::new();
        let mut word_starts = Vec::with_capacity(index.len());
        let mut postings = Vec::with_capacity(index.len());
        for (word, ids) in index {
            word_starts.push(vocabulary.len());
            vocabulary.push_str(word);
            vocabulary.push('\n');
            postings.push(ids);
        }
        Table {
            entries,
            keys,
            folded,
            by_length,
            vocabulary,
            word_starts,
            postings,
        }
    }

    /// The entries of length `key.len()`'s group and their keys.
    fn group(&self, len: usize) -> (usize, &[Box<str>]) {
        let range = self.by_length.get(len).cloned().unwrap_or(0..0);
        (range.start, &self.keys[range])
    }

    fn get(&self, code: &str) -> Option<&CodeEntry> {
        let key = code_key(code.trim())?;
        let (start, keys) = self.group(key.len());
        let at = keys.binary_search_by(|k| (**k).cmp(key.as_str())).ok()?;
        Some(&self.entries[start + at])
    }

    fn search(&self, query: &str, limit: usize) -> Vec<CodeEntry> {
        let query = query.trim();
        if limit == 0 || query.is_empty() {
            return Vec::new();
        }
        let mut hits = code_key(query).map_or_else(Vec::new, |k| self.prefix_hits(&k, limit));
        if hits.len() < limit {
            let folded_query = fold(query);
            let tokens: Vec<&str> = words(&folded_query).collect();
            let more = self.word_hits(&tokens, limit - hits.len(), &hits);
            hits.extend(more);
        }
        hits.into_iter()
            .map(|i| self.entries[i as usize].clone())
            .collect()
    }

    /// The first `limit` entries (in rank order) whose key starts with `key`: in each group of
    /// one key length, from the shortest, the range of keys with that prefix.
    fn prefix_hits(&self, key: &str, limit: usize) -> Vec<u32> {
        let mut hits = Vec::new();
        for len in key.len()..self.by_length.len() {
            let (start, keys) = self.group(len);
            let from = keys.partition_point(|k| **k < *key);
            let count = keys[from..].partition_point(|k| k.starts_with(key));
            let take = count.min(limit - hits.len());
            hits.extend((start + from..start + from + take).map(|i| i as u32));
            if hits.len() == limit {
                break;
            }
        }
        hits
    }

    /// The entries (ascending) whose description has `token` inside one of its words.
    fn token_postings(&self, token: &str) -> Vec<&[u32]> {
        let mut lists: Vec<&[u32]> = Vec::new();
        let mut last = None;
        for (at, _) in self.vocabulary.match_indices(token) {
            let word = self.word_starts.partition_point(|&s| s <= at) - 1;
            if last != Some(word) {
                last = Some(word);
                lists.push(&self.postings[word]);
            }
        }
        lists
    }

    /// The first `limit` entries (in rank order, none of `exclude`, which is ascending) whose
    /// description has every token inside one of its words. The token with the fewest
    /// candidate entries (by the vocabulary) chooses them; the others are checked on the text.
    fn word_hits(&self, tokens: &[&str], limit: usize, exclude: &[u32]) -> Vec<u32> {
        let Some((chosen, lists)) = tokens
            .iter()
            .map(|t| (*t, self.token_postings(t)))
            .min_by_key(|(_, lists)| lists.iter().map(|l| l.len()).sum::<usize>())
        else {
            return Vec::new();
        };
        let mut marked = vec![0u64; self.entries.len().div_ceil(64)];
        for &i in lists.iter().flat_map(|l| l.iter()) {
            marked[i as usize / 64] |= 1 << (i % 64);
        }
        let mut hits = Vec::new();
        for (block, &bits) in marked.iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let i = (block * 64) as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                let text = &self.folded[i as usize];
                if exclude.binary_search(&i).is_err()
                    && tokens.iter().all(|t| *t == chosen || text.contains(t))
                {
                    hits.push(i);
                    if hits.len() == limit {
                        return hits;
                    }
                }
            }
        }
        hits
    }
}

/// Common primary-care and telehealth diagnoses, with CMS's ICD-10-CM 2026 descriptions (as in
/// the tabular list; a test checks them against the full table when it is present).
const BUILTIN_DIAGNOSES: &[(&str, &str)] = &[
    ("B34.9", "Viral infection, unspecified"),
    ("D64.9", "Anemia, unspecified"),
    ("E03.9", "Hypothyroidism, unspecified"),
    ("E11.65", "Type 2 diabetes mellitus with hyperglycemia"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("E55.9", "Vitamin D deficiency, unspecified"),
    ("E66.9", "Obesity, unspecified"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("F17.210", "Nicotine dependence, cigarettes, uncomplicated"),
    ("F32.9", "Major depressive disorder, single episode, unspecified"),
    ("F32.A", "Depression, unspecified"),
    ("F41.1", "Generalized anxiety disorder"),
    ("F41.9", "Anxiety disorder, unspecified"),
    ("F90.9", "Attention-deficit hyperactivity disorder, unspecified type"),
    ("G43.909", "Migraine, unspecified, not intractable, without status migrainosus"),
    ("G47.00", "Insomnia, unspecified"),
    ("H10.9", "Unspecified conjunctivitis"),
    ("H66.90", "Otitis media, unspecified, unspecified ear"),
    ("I10", "Essential (primary) hypertension"),
    ("I25.10", "Atherosclerotic heart disease of native coronary artery without angina pectoris"),
    ("I48.91", "Unspecified atrial fibrillation"),
    ("I50.9", "Heart failure, unspecified"),
    ("J01.90", "Acute sinusitis, unspecified"),
    ("J02.9", "Acute pharyngitis, unspecified"),
    ("J06.9", "Acute upper respiratory infection, unspecified"),
    ("J20.9", "Acute bronchitis, unspecified"),
    ("J30.9", "Allergic rhinitis, unspecified"),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    ("J45.909", "Unspecified asthma, uncomplicated"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    ("K59.00", "Constipation, unspecified"),
    ("L30.9", "Dermatitis, unspecified"),
    ("M25.561", "Pain in right knee"),
    ("M54.2", "Cervicalgia"),
    ("M54.50", "Low back pain, unspecified"),
    ("M79.10", "Myalgia, unspecified site"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("N95.1", "Menopausal and female climacteric states"),
    ("R05.9", "Cough, unspecified"),
    ("R06.02", "Shortness of breath"),
    ("R10.9", "Unspecified abdominal pain"),
    ("R11.2", "Nausea with vomiting, unspecified"),
    ("R42", "Dizziness and giddiness"),
    ("R50.9", "Fever, unspecified"),
    ("R51.9", "Headache, unspecified"),
    ("R53.83", "Other fatigue"),
    ("R73.03", "Prediabetes"),
    ("U07.1", "COVID-19"),
    ("Z00.00", "Encounter for general adult medical examination without abnormal findings"),
    ("Z00.01", "Encounter for general adult medical examination with abnormal findings"),
    ("Z00.129", "Encounter for routine child health examination without abnormal findings"),
    ("Z09", "Encounter for follow-up examination after completed treatment for conditions other than malignant neoplasm"),
    ("Z13.1", "Encounter for screening for diabetes mellitus"),
    ("Z23", "Encounter for immunization"),
    ("Z71.3", "Dietary counseling and surveillance"),
    ("Z71.89", "Other specified counseling"),
    ("Z79.4", "Long term (current) use of insulin"),
    ("Z79.899", "Other long term (current) drug therapy"),
];

/// CPT codes we ship without descriptions (the AMA licenses those): office or outpatient E/M,
/// new (99202-99205) and established (99211-99215) patients; the telemedicine E/M codes of
/// 2025, audio-video (98000-98007) and audio-only (98008-98015), and the brief virtual
/// check-in (98016); online digital E/M (99421-99423); telephone assessment and management
/// (98966-98968).
const BUILTIN_CPT: &[&str] = &[
    "99202", "99203", "99204", "99205", "99211", "99212", "99213", "99214", "99215", "98000",
    "98001", "98002", "98003", "98004", "98005", "98006", "98007", "98008", "98009", "98010",
    "98011", "98012", "98013", "98014", "98015", "98016", "99421", "99422", "99423", "98966",
    "98967", "98968",
];

/// HCPCS Level II codes (public domain, CMS) with descriptions in our own words. G2012: CMS
/// uses CPT 98016 for the brief virtual check-in from 2025; kept for the payers that still take
/// it.
const BUILTIN_HCPCS: &[(&str, &str)] = &[
    (
        "G0071",
        "Virtual communication with a patient, billed by a rural health clinic or federally qualified health center",
    ),
    (
        "G0438",
        "Annual wellness visit, first, with a personalized prevention plan",
    ),
    (
        "G0439",
        "Annual wellness visit, subsequent, with a personalized prevention plan",
    ),
    (
        "G2010",
        "Review of recorded video or images an established patient sent, with follow-up",
    ),
    (
        "G2012",
        "Brief virtual check-in with an established patient, 5-10 minutes of medical discussion",
    ),
    (
        "G2211",
        "Add-on for the continuing care relationship of an office or outpatient E/M visit",
    ),
    (
        "G2212",
        "Add-on for each further 15 minutes of a prolonged office or outpatient E/M visit",
    ),
    (
        "G2252",
        "Brief virtual check-in with an established patient, 11-20 minutes of medical discussion",
    ),
];

fn builtin_services() -> Vec<CodeEntry> {
    let cpt = BUILTIN_CPT.iter().map(|&code| CodeEntry {
        code: code.to_string(),
        description: None,
        system: CodeSystem::Cpt,
    });
    let hcpcs = BUILTIN_HCPCS.iter().map(|&(code, description)| CodeEntry {
        code: code.to_string(),
        description: Some(description.to_string()),
        system: CodeSystem::Hcpcs,
    });
    cpt.chain(hcpcs).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    fn table_file(text: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes.tsv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn codes(found: &[CodeEntry]) -> Vec<&str> {
        found.iter().map(|e| e.code.as_str()).collect()
    }

    /// The search's answer by the definition, without the index: code-prefix hits, then entries
    /// whose folded description contains every folded query word; each group by (length, code).
    fn brute_force(entries: &[&CodeEntry], query: &str, limit: usize) -> Vec<String> {
        let bare = |code: &str| code.replace('.', "").to_lowercase();
        let q = query.trim().to_lowercase();
        let as_code = !q.is_empty()
            && q.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            && q.matches('.').count() <= 1
            && q.find('.').is_none_or(|at| at == 3);
        let folded_q = fold(&q);
        let q_words: Vec<&str> = folded_q
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let order =
            |v: &mut Vec<&CodeEntry>| v.sort_by_key(|e| (bare(&e.code).len(), bare(&e.code)));
        let mut by_code: Vec<&CodeEntry> = entries
            .iter()
            .copied()
            .filter(|e| as_code && bare(&e.code).starts_with(&q.replace('.', "")))
            .collect();
        order(&mut by_code);
        let mut by_words: Vec<&CodeEntry> = entries
            .iter()
            .copied()
            .filter(|e| !by_code.iter().any(|c| c.code == e.code))
            .filter(|e| {
                let d = fold(e.description.as_deref().unwrap_or(""));
                !q_words.is_empty() && q_words.iter().all(|w| d.contains(w))
            })
            .collect();
        order(&mut by_words);
        by_code
            .into_iter()
            .chain(by_words)
            .take(limit)
            .map(|e| e.code.clone())
            .collect()
    }

    #[test]
    fn loads_a_table_with_crlf_and_bom() {
        let (_dir, path) = table_file(
            "\u{feff}I10\tEssential (primary) hypertension\r\nJ06.9\tAcute upper respiratory infection, unspecified\r\nS93.401A\tSprain of unspecified ligament of right ankle, initial encounter\n"
                .as_bytes(),
        );
        let table = DiagnosisCodes::load(&path).unwrap();
        assert_eq!(table.len(), 3);
        let j069 = table.get("J06.9").unwrap();
        assert_eq!(
            j069.description.as_deref(),
            Some("Acute upper respiratory infection, unspecified")
        );
        assert_eq!(j069.system, CodeSystem::Icd10Cm);
        assert_eq!(table.get(" j069 ").unwrap().code, "J06.9");
        assert_eq!(table.get("s93.401a").unwrap().code, "S93.401A");
        assert_eq!(table.get("I10").unwrap().code, "I10");
        assert!(table.get("J06").is_none());
        assert!(table.get("J0.69").is_none());
        assert!(table.get("").is_none());
    }

    #[test]
    fn a_malformed_line_is_named() {
        let cases: [(&str, usize, &str); 7] = [
            ("I10\tHypertension\nJ06.9 Acute URI\n", 2, "one tab"),
            (
                "I10\tHypertension\nj06.9\tAcute URI\n",
                2,
                "not an ICD-10-CM code",
            ),
            ("I10\tA\tB\n", 1, "one tab"),
            ("I10\tHypertension\nR42\t  \n", 2, "R42 has no description"),
            (
                "I10\tHypertension\nR42\tDizziness\nI10\tAgain\n",
                3,
                "I10 repeats line 1",
            ),
            ("I10\tHypertension\n\nR42\tDizziness\n", 2, "one tab"),
            ("I10\tHyper\u{7}tension\n", 1, "control character"),
        ];
        for (text, line, problem) in cases {
            let (_dir, path) = table_file(text.as_bytes());
            let e = DiagnosisCodes::load(&path).unwrap_err();
            let CodesError::Malformed { line: at, .. } = &e else {
                panic!("{text:?}: {e}");
            };
            assert_eq!(*at, line, "{text:?}: {e}");
            assert!(e.to_string().contains(problem), "{text:?}: {e}");
            assert!(e.to_string().contains(&format!("line {line}:")), "{e}");
            assert_eq!(e.code(), "codes_malformed");
        }
        // Bad UTF-8 on line 2, named.
        let (_dir, path) = table_file(b"I10\tHypertension\nR42\tDizzi\xffness\n");
        let e = DiagnosisCodes::load(&path).unwrap_err();
        assert!(matches!(e, CodesError::Malformed { line: 2, .. }), "{e}");
    }

    #[test]
    fn empty_missing_and_oversized_tables_are_refused() {
        for text in ["", "\n", "\u{feff}"] {
            let (_dir, path) = table_file(text.as_bytes());
            let e = DiagnosisCodes::load(&path).unwrap_err();
            assert!(matches!(e, CodesError::Empty { .. }), "{text:?}: {e}");
            assert_eq!(e.code(), "codes_empty");
        }
        let dir = tempfile::tempdir().unwrap();
        let e = DiagnosisCodes::load(&dir.path().join("absent.tsv")).unwrap_err();
        assert_eq!(e.code(), "codes_unreadable");
        assert!(e.to_string().contains("absent.tsv"), "{e}");

        let text = "I10\tEssential (primary) hypertension\nR42\tDizziness and giddiness\n";
        let (_dir, path) = table_file(text.as_bytes());
        let exact = Limits {
            bytes: text.len() as u64,
            ..Limits::DEFAULT
        };
        assert_eq!(DiagnosisCodes::load_with(&path, exact).unwrap().len(), 2);
        let small = Limits {
            bytes: text.len() as u64 - 1,
            ..Limits::DEFAULT
        };
        let e = DiagnosisCodes::load_with(&path, small).unwrap_err();
        assert_eq!(e.code(), "codes_too_large", "{e}");
        let one = Limits {
            codes: 1,
            ..Limits::DEFAULT
        };
        let e = DiagnosisCodes::load_with(&path, one).unwrap_err();
        assert_eq!(e.code(), "codes_too_many", "{e}");
        let short = Limits {
            line_bytes: 30,
            ..Limits::DEFAULT
        };
        let e = DiagnosisCodes::load_with(&path, short).unwrap_err();
        assert!(matches!(e, CodesError::Malformed { line: 1, .. }), "{e}");
    }

    #[test]
    fn codes_are_checked_by_shape() {
        for ok in [
            "I10", "R42", "J06.9", "E11.65", "J45.909", "S93.401A", "T14.90XA", "QA0.0101",
        ] {
            assert!(is_icd10cm_code(ok), "{ok}");
        }
        for bad in [
            "",
            "I1",
            "1I0",
            "i10",
            "I10.",
            "J069",
            "J06.12345",
            "J06-9",
            "J0.69",
            "I10 ",
        ] {
            assert!(!is_icd10cm_code(bad), "{bad}");
        }
        for ok in ["99213", "G2012", "0001F"] {
            assert!(is_service_code(ok), "{ok}");
        }
        for bad in ["9921", "992133", "g2012", "G20.2"] {
            assert!(!is_service_code(bad), "{bad}");
        }
    }

    #[test]
    fn search_by_code_prefix_with_or_without_the_dot() {
        let table = DiagnosisCodes::builtin();
        assert_eq!(codes(&table.search("J06.9", 10)), ["J06.9"]);
        assert_eq!(codes(&table.search("j069", 10)), ["J06.9"]);
        assert_eq!(codes(&table.search(" J06. ", 10)), ["J06.9"]);
        // Shorter codes first, then by code.
        assert_eq!(codes(&table.search("j0", 10)), ["J02.9", "J06.9", "J01.90"]);
        assert_eq!(
            codes(&table.search("Z00", 10)),
            ["Z00.00", "Z00.01", "Z00.129"]
        );
        assert_eq!(
            codes(&table.search("z7", 10)),
            ["Z71.3", "Z79.4", "Z71.89", "Z79.899"]
        );
    }

    #[test]
    fn search_by_all_words_of_the_description() {
        let table = DiagnosisCodes::builtin();
        assert_eq!(
            codes(&table.search("type 2 DIABETES", 10)),
            ["E11.9", "E11.65"]
        );
        // Parts of words count ("Prediabetes"); every word must be found.
        assert_eq!(
            codes(&table.search("diab", 10)),
            ["E11.9", "Z13.1", "E11.65", "R73.03"]
        );
        assert_eq!(codes(&table.search("acute pharyng", 10)), ["J02.9"]);
        assert_eq!(codes(&table.search("acute knee", 10)), Vec::<&str>::new());
        assert_eq!(codes(&table.search("xyzzy", 10)), Vec::<&str>::new());
        assert_eq!(codes(&table.search("   ", 10)), Vec::<&str>::new());
        assert!(table.search("pain", 0).is_empty());
    }

    #[test]
    fn search_stops_at_the_limit_in_order() {
        let table = DiagnosisCodes::builtin();
        let all = table.search("unspecified", 100);
        assert!(all.len() > 20, "{}", all.len());
        for limit in [1, 3, 7, 20] {
            assert_eq!(table.search("unspecified", limit), all[..limit]);
        }
        assert_eq!(codes(&table.search("Z", 3)), ["Z09", "Z23", "Z13.1"]);
    }

    #[test]
    fn code_prefix_hits_come_before_description_hits() {
        let (_dir, path) = table_file(
            "A01.1\tAlpha\nB10.1\tSee also a011 in the table\nA01\tAlpha category\nC20\tMentions A01\n"
                .as_bytes(),
        );
        let table = DiagnosisCodes::load(&path).unwrap();
        // B10.1 has "a011", which contains "a01"; C20 is shorter.
        assert_eq!(
            codes(&table.search("a01", 10)),
            ["A01", "A01.1", "C20", "B10.1"]
        );
        assert_eq!(codes(&table.search("a011", 10)), ["A01.1", "B10.1"]);
        assert_eq!(codes(&table.search("a01", 2)), ["A01", "A01.1"]);
    }

    #[test]
    fn accents_fold_in_descriptions_and_queries() {
        let (_dir, path) = table_file(
            "C84.10\tS\u{e9}zary disease, unspecified site\nA52.16\tCharc\u{f4}t's arthropathy (tabetic)\n"
                .as_bytes(),
        );
        let table = DiagnosisCodes::load(&path).unwrap();
        assert_eq!(codes(&table.search("sezary", 5)), ["C84.10"]);
        assert_eq!(codes(&table.search("S\u{c9}ZARY", 5)), ["C84.10"]);
        assert_eq!(codes(&table.search("charcot arthropathy", 5)), ["A52.16"]);
    }

    #[test]
    fn the_index_answers_as_the_definition_does() {
        let table = DiagnosisCodes::builtin();
        let entries: Vec<&CodeEntry> = table.table.entries.iter().collect();
        for query in [
            "e",
            "E1",
            "e11.",
            "unspec",
            "pain right",
            "encounter exam",
            "z00.0",
            "R",
            "r5",
            "a",
            "of",
            "1",
            "10",
            "I10",
            "disorder anxiety",
            "J06.9x",
            ".",
            "J.0",
        ] {
            for limit in [1, 5, 100] {
                assert_eq!(
                    codes(&table.search(query, limit)),
                    brute_force(&entries, query, limit),
                    "{query:?} limit {limit}"
                );
            }
        }
    }

    #[test]
    fn service_codes_ship_cpt_without_descriptions() {
        let services = ServiceCodes::builtin();
        let cpt = services.get("99213").unwrap();
        assert_eq!(cpt.system, CodeSystem::Cpt);
        assert_eq!(cpt.description, None);
        for code in [
            "99202", "99205", "99211", "99215", "98000", "98015", "99421", "99423", "98966",
            "98968",
        ] {
            assert_eq!(
                services.get(code).unwrap().system,
                CodeSystem::Cpt,
                "{code}"
            );
        }
        assert!(services.get("99201").is_none(), "deleted in 2021");
        let hcpcs = services.get("g2012").unwrap();
        assert_eq!(hcpcs.system, CodeSystem::Hcpcs);
        assert!(hcpcs.description.is_some());
        for code in ["G2252", "G2010", "G0071", "G2211"] {
            assert_eq!(
                services.get(code).unwrap().system,
                CodeSystem::Hcpcs,
                "{code}"
            );
        }
        assert!(BUILTIN_CPT.iter().all(|c| is_service_code(c)));
        assert!(BUILTIN_HCPCS.iter().all(|(c, _)| is_service_code(c)));
        assert_eq!(services.len(), BUILTIN_CPT.len() + BUILTIN_HCPCS.len());

        assert_eq!(
            codes(&services.search("9921", 10)),
            ["99211", "99212", "99213", "99214", "99215"]
        );
        assert_eq!(
            codes(&services.search("virtual check", 10)),
            ["G2012", "G2252"]
        );
        // Without descriptions, CPT codes are not found by words.
        assert!(services
            .search("office", 50)
            .iter()
            .all(|e| e.system == CodeSystem::Hcpcs));
    }

    #[test]
    fn a_site_fills_and_overrides_descriptions() {
        let (_dir, path) = table_file(
            b"99213\tSite's licensed text for an established office visit\nG2012\tSite wording\n12345\tNot one of ours\n",
        );
        let services = ServiceCodes::with_site_descriptions(&path).unwrap();
        assert_eq!(
            services.get("99213").unwrap().description.as_deref(),
            Some("Site's licensed text for an established office visit")
        );
        assert_eq!(services.get("99213").unwrap().system, CodeSystem::Cpt);
        assert_eq!(
            services.get("G2012").unwrap().description.as_deref(),
            Some("Site wording")
        );
        assert_eq!(services.get("99214").unwrap().description, None);
        assert!(services.get("12345").is_none());
        assert_eq!(services.len(), ServiceCodes::builtin().len());
        assert_eq!(codes(&services.search("established office", 10)), ["99213"]);

        let (_dir, path) = table_file(b"99213\tFine\n9921\tToo short\n");
        let e = ServiceCodes::with_site_descriptions(&path).unwrap_err();
        assert!(matches!(e, CodesError::Malformed { line: 2, .. }), "{e}");
        let (_dir, path) = table_file(b"");
        let e = ServiceCodes::with_site_descriptions(&path).unwrap_err();
        assert_eq!(e.code(), "codes_empty");
        let small = Limits {
            bytes: 4,
            ..Limits::DEFAULT
        };
        let (_dir, path) = table_file(b"99213\tFine\n");
        let e = ServiceCodes::with_site_descriptions_limited(&path, small).unwrap_err();
        assert_eq!(e.code(), "codes_too_large");
    }

    #[test]
    fn billing_by_modality() {
        assert_eq!(visit_billing(Modality::Virtual, true), (vec!["95"], "10"));
        assert_eq!(visit_billing(Modality::Virtual, false), (vec!["95"], "02"));
        assert_eq!(visit_billing(Modality::InPerson, false), (vec![], "11"));
        assert_eq!(visit_billing(Modality::InPerson, true), (vec![], "11"));
    }

    #[test]
    fn errors_become_configuration_errors() {
        let e = CodesError::Empty {
            path: "/x/codes.tsv".to_string(),
        };
        let core: CoreError = e.into();
        assert_eq!(core.code(), hearth_ipc::ErrorCode::Configuration);
        assert!(core.to_string().contains("/x/codes.tsv"), "{core}");
    }

    #[test]
    fn builtin_diagnoses_are_well_formed_and_sorted() {
        assert!((40..=60).contains(&BUILTIN_DIAGNOSES.len()));
        assert!(BUILTIN_DIAGNOSES
            .iter()
            .all(|(c, d)| is_icd10cm_code(c) && !d.is_empty()));
        assert!(BUILTIN_DIAGNOSES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    // The full table that scripts/codes builds from CMS's tabular list.

    /// The table at `$HEARTH_ICD10CM_FILE`, loaded once per test binary; missing, the test
    /// fails naming the command that makes it.
    fn full_table(test: &str) -> Option<&'static DiagnosisCodes> {
        static TABLE: OnceLock<Result<DiagnosisCodes, String>> = OnceLock::new();
        let loaded = TABLE.get_or_init(|| {
            let Some(path) = std::env::var_os("HEARTH_ICD10CM_FILE") else {
                return Err("HEARTH_ICD10CM_FILE is not set (. scripts/env.sh)".to_string());
            };
            let path = PathBuf::from(path);
            if !path.exists() {
                return Err(format!("{} is missing (run scripts/codes)", path.display()));
            }
            let start = Instant::now();
            let table = DiagnosisCodes::load(&path).unwrap();
            eprintln!("loaded {} codes in {:?}", table.len(), start.elapsed());
            Ok(table)
        });
        match loaded {
            Ok(table) => Some(table),
            // The project makes this table itself (scripts/setup runs scripts/codes): it is
            // not sample data, so its absence fails the test rather than skipping it.
            Err(why) => panic!("{test}: the ICD-10-CM table: {why}"),
        }
    }

    #[test]
    fn the_cms_table_has_billable_codes_with_cms_descriptions() {
        let Some(table) =
            full_table("codes::the_cms_table_has_billable_codes_with_cms_descriptions")
        else {
            return;
        };
        // 2026 billable codes: the same count as the leaves of the code list that
        // simple-icd-10-cm ships beside the XML (a different file of the same wheel).
        assert_eq!(table.len(), 74_719);
        // Descriptions as CMS publishes them (hand-checked against CMS's code titles).
        for (code, description) in [
            ("E11.9", "Type 2 diabetes mellitus without complications"),
            ("I10", "Essential (primary) hypertension"),
            ("J06.9", "Acute upper respiratory infection, unspecified"),
            (
                "Z00.00",
                "Encounter for general adult medical examination without abnormal findings",
            ),
            // A 7th character, and one after an X placeholder.
            (
                "S93.401A",
                "Sprain of unspecified ligament of right ankle, initial encounter",
            ),
            ("T14.90XA", "Injury, unspecified, initial encounter"),
        ] {
            let entry = table
                .get(code)
                .unwrap_or_else(|| panic!("{code} is missing"));
            assert_eq!(entry.description.as_deref(), Some(description), "{code}");
        }
        // Categories and subcategories with children, and codes that need a 7th character, are
        // not billable.
        for header in [
            "E11", "J06", "Z00.0", "S93.401", "T14.90", "S06.0X1", "A00-A09",
        ] {
            assert!(table.get(header).is_none(), "{header} is not billable");
        }
        // S06 with 6th character 7 or 8 takes only A (the note at S06).
        assert!(table.get("S06.1X7A").is_some());
        assert!(table.get("S06.1X7D").is_none());
    }

    #[test]
    fn builtin_diagnoses_match_the_cms_table() {
        let Some(table) = full_table("codes::builtin_diagnoses_match_the_cms_table") else {
            return;
        };
        for &(code, description) in BUILTIN_DIAGNOSES {
            let entry = table
                .get(code)
                .unwrap_or_else(|| panic!("{code} is not billable in 2026"));
            assert_eq!(entry.description.as_deref(), Some(description), "{code}");
        }
    }

    #[test]
    fn the_cms_table_answers_as_the_definition_does() {
        let Some(table) = full_table("codes::the_cms_table_answers_as_the_definition_does") else {
            return;
        };
        let entries: Vec<&CodeEntry> = table.table.entries.iter().collect();
        for query in [
            "S72.00",
            "e11",
            "type 2 diab hyperglyc",
            "sezary",
            "pain knee",
            "z",
            "of the",
        ] {
            assert_eq!(
                codes(&table.search(query, 25)),
                brute_force(&entries, query, 25),
                "{query:?}"
            );
        }
    }

    /// Prints search times on the full table (no assertion on them: run it in release,
    /// `cargo test --release -p hearth-core --lib codes::tests::search_timing -- --nocapture`).
    #[test]
    fn search_timing() {
        let Some(table) = full_table("codes::search_timing") else {
            return;
        };
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        println!(
            "search over {} codes ({profile} build), limit 20:",
            table.len()
        );
        for query in [
            "J06.9",
            "e11",
            "S",
            "diab",
            "type 2 diabetes",
            "pain",
            "a",
            "e",
            "fracture femur right initial",
            "unspecified",
            "xyzzy",
            // Common words that few entries share.
            "left right",
            "sequela in",
            "e a 9",
        ] {
            let mut times: Vec<Duration> = (0..30)
                .map(|_| {
                    let start = Instant::now();
                    let found = table.search(query, 20);
                    let took = start.elapsed();
                    std::hint::black_box(found);
                    took
                })
                .collect();
            times.sort();
            println!(
                "  {query:<32} p50 {:>10.3?}  max {:>10.3?}  ({} hits)",
                times[times.len() / 2],
                times[times.len() - 1],
                table.search(query, 20).len()
            );
        }
    }
}
