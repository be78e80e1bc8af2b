//! Served resources to store rows, and unreadable records kept by name.

use super::*;

/// The store rows for a page's resources, and the problems of those that cannot be stored
/// (each naming the record and the field). Deletions are skipped.
pub fn rows_of(
    entries: Vec<std::result::Result<Entry, FhirError>>,
) -> (Vec<ResourceRow>, Vec<ProblemView>) {
    let mut rows = Vec::with_capacity(entries.len());
    let mut problems = Vec::new();
    for entry in entries {
        match entry {
            Ok(Entry::Resource(r)) => match row_of_owned(r) {
                Ok(row) => rows.push(row),
                Err(p) => problems.push(p),
            },
            Ok(Entry::Deleted { .. }) => {}
            Err(e) => problems.push(fhir_problem(&e)),
        }
    }
    (rows, problems)
}

pub(super) fn row_of(r: &RawResource) -> std::result::Result<ResourceRow, ProblemView> {
    resource_row_raw(&r.json).map_err(|e| data_problem(r.reference(), e))
}

pub(super) fn row_of_owned(r: RawResource) -> std::result::Result<ResourceRow, ProblemView> {
    let reference = r.reference();
    resource_row_projected(r.json, r.projected).map_err(|e| data_problem(reference, e))
}

pub(super) fn data_problem(record: String, e: ModelError) -> ProblemView {
    ProblemView {
        record,
        message: match e {
            ModelError::InvalidData { field, problem, .. } => format!("field `{field}` {problem}"),
            other => other.to_string(),
        },
    }
}

pub(super) fn fhir_problem(e: &FhirError) -> ProblemView {
    match e {
        FhirError::Malformed {
            what,
            field,
            problem,
        } => ProblemView {
            record: what.clone(),
            message: format!("field `{field}` {problem}"),
        },
        other => ProblemView {
            record: String::new(),
            message: other.to_string(),
        },
    }
}

/// Longest name or message of an unreadable record kept (characters).
pub(super) const PROBLEM_TEXT_LIMIT: usize = 300;

/// The server's text (a fullUrl, a problem) as it may be kept, shown and printed: control
/// characters (terminal escapes, line breaks that would forge lines of hearth-sync's output)
/// replaced, and cut to [`PROBLEM_TEXT_LIMIT`] characters.
pub(super) fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(PROBLEM_TEXT_LIMIT)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if text.chars().nth(PROBLEM_TEXT_LIMIT).is_some() {
        out.push('…');
    }
    out
}

impl Engine {
    /// The store's row for a served resource; a resource the views cannot index is kept as
    /// unreadable (naming it and the field) and left out.
    pub(super) fn row(&self, r: &RawResource) -> Result<Option<ResourceRow>> {
        match row_of(r) {
            Ok(row) => Ok(Some(row)),
            Err(p) => {
                self.record_problem(&p.record, &p.message)?;
                Ok(None)
            }
        }
    }

    pub(super) fn problem(&self, e: &FhirError) -> Result<()> {
        let p = fhir_problem(e);
        self.record_problem(&p.record, &p.message)
    }

    /// Keeps an unreadable record by name in the store: shown in the sync panel and the
    /// hearth-sync tool, and fetched again on later rounds when its type and id are known.
    pub(super) fn record_problem(&self, record: &str, message: &str) -> Result<()> {
        // Fetched again by what the server named; kept and shown only as printable text.
        let resource = reference_in(record);
        let record = if record.is_empty() {
            "(unnamed record)".to_string()
        } else {
            printable(record)
        };
        self.store().reject(
            &record,
            resource.as_ref().map(|(t, i)| (t.as_str(), i.as_str())),
            &printable(message),
        )?;
        self.handle.status_changed();
        Ok(())
    }
}
