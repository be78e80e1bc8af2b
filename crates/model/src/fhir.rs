//! Reading FHIR R4 JSON leniently: unknown elements are ignored (and kept in the raw resource
//! by the store); a required element that is missing or malformed yields
//! [`ModelError::InvalidData`] naming the resource and the field.

use crate::ModelError;
use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::Value;

/// The URL of the extension that marks an Appointment as a virtual visit (FHIR R5's
/// `Appointment.virtualService`, carried in R4 as a cross-version extension).
pub const VIRTUAL_SERVICE_EXTENSION: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService";

/// The identifier system of resources Hearth creates: the value is the write's idempotency
/// key, and the create is conditional on it (the sync engine's push). The core reads it too,
/// to know a record it wrote.
pub const HEARTH_WRITE_SYSTEM: &str = "urn:hearth:write";

/// A borrowed FHIR resource with helpers that produce precise errors.
#[derive(Clone, Copy)]
pub struct Resource<'a> {
    json: &'a Value,
}

impl<'a> Resource<'a> {
    /// Wraps a resource after checking it has a `resourceType` and an `id`.
    pub fn new(json: &'a Value) -> Result<Self, ModelError> {
        let r = Self { json };
        let ty = json
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| ModelError::invalid_data("resource", "resourceType", "is missing"))?;
        match json.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(r),
            _ => Err(ModelError::invalid_data(ty, "id", "is missing")),
        }
    }

    pub fn json(&self) -> &'a Value {
        self.json
    }

    pub fn resource_type(&self) -> &'a str {
        self.json["resourceType"].as_str().unwrap_or_default()
    }

    pub fn id(&self) -> &'a str {
        self.json["id"].as_str().unwrap_or_default()
    }

    /// `Type/id`, for error messages and references.
    pub fn label(&self) -> String {
        format!("{}/{}", self.resource_type(), self.id())
    }

    pub fn get(&self, path: &str) -> Option<&'a Value> {
        path.split('.')
            .try_fold(self.json, |v, key| match key.parse::<usize>() {
                Ok(i) => v.get(i),
                Err(_) => v.get(key),
            })
    }

    pub fn str(&self, path: &str) -> Option<&'a str> {
        self.get(path).and_then(Value::as_str)
    }

    pub fn required_str(&self, path: &str) -> Result<&'a str, ModelError> {
        match self.get(path) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(self.error(path, "is not a non-empty string")),
            None => Err(self.error(path, "is missing")),
        }
    }

    pub fn required_instant(&self, path: &str) -> Result<DateTime<FixedOffset>, ModelError> {
        let s = self.required_str(path)?;
        DateTime::parse_from_rfc3339(s).map_err(|_| self.error(path, "is not an RFC 3339 instant"))
    }

    /// A FHIR `date` or `dateTime` reduced to its date; partial dates (`2020`, `2020-04`) take
    /// the first day.
    pub fn date(&self, path: &str) -> Result<Option<NaiveDate>, ModelError> {
        let Some(s) = self.str(path) else {
            return Ok(None);
        };
        parse_fhir_date(s)
            .map(Some)
            .ok_or_else(|| self.error(path, "is not a FHIR date"))
    }

    pub fn error(&self, field: &str, problem: &str) -> ModelError {
        ModelError::invalid_data(self.label(), field, problem)
    }
}

/// Parses FHIR `date` / `dateTime` strings to a calendar date.
pub fn parse_fhir_date(s: &str) -> Option<NaiveDate> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.date_naive());
    }
    let padded = match s.len() {
        4 => format!("{s}-01-01"),
        7 => format!("{s}-01"),
        _ => s.get(..10)?.to_string(),
    };
    NaiveDate::parse_from_str(&padded, "%Y-%m-%d").ok()
}

/// The text to show for a CodeableConcept: its `text`, else the first coding's display or code.
pub fn concept_text(concept: Option<&Value>) -> Option<String> {
    let c = concept?;
    if let Some(t) = c.get("text").and_then(Value::as_str) {
        return Some(t.to_string());
    }
    let coding = c.get("coding")?.as_array()?.first()?;
    coding
        .get("display")
        .or_else(|| coding.get("code"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Whether a CodeableConcept carries `code` (in any system, or in `system` when given).
pub fn concept_has(concept: Option<&Value>, system: Option<&str>, code: &str) -> bool {
    codings(concept).any(|c| {
        c.get("code").and_then(Value::as_str) == Some(code)
            && system.is_none_or(|s| c.get("system").and_then(Value::as_str) == Some(s))
    })
}

/// The code of the first coding in `system`.
pub fn concept_code<'a>(concept: Option<&'a Value>, system: &str) -> Option<&'a str> {
    codings(concept)
        .find(|c| c.get("system").and_then(Value::as_str) == Some(system))
        .and_then(|c| c.get("code").and_then(Value::as_str))
}

/// The code of a concept's first coding that has one (status concepts: `active`, ...).
pub fn first_code(concept: Option<&Value>) -> Option<&str> {
    codings(concept).find_map(|c| c.get("code")?.as_str())
}

fn codings(concept: Option<&Value>) -> impl Iterator<Item = &Value> {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A HumanName as people read it: `prefix given family suffix`, preferring the `official` name.
pub fn human_name(names: Option<&Value>, with_titles: bool) -> Option<String> {
    let names = names?.as_array()?;
    let name = names
        .iter()
        .find(|n| n.get("use").and_then(Value::as_str) == Some("official"))
        .or_else(|| names.first())?;
    if let Some(text) = name.get("text").and_then(Value::as_str) {
        return Some(text.to_string());
    }
    let list = |key: &str| -> Vec<&str> {
        name.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let mut parts = Vec::new();
    if with_titles {
        parts.extend(list("prefix"));
    }
    parts.extend(list("given"));
    if let Some(f) = name.get("family").and_then(Value::as_str) {
        parts.push(f);
    }
    let mut text = parts.join(" ");
    let suffix = list("suffix");
    if with_titles && !suffix.is_empty() {
        text = format!("{text}, {}", suffix.join(", "));
    }
    (!text.trim().is_empty()).then_some(text)
}

/// The id out of a relative reference `Type/id`, when it is of `resource_type`.
pub fn reference_id<'a>(reference: Option<&'a Value>, resource_type: &str) -> Option<&'a str> {
    let r = reference?.get("reference")?.as_str()?;
    // A version-specific reference (`Type/id/_history/n`) names the same resource.
    let r = match r.split_once("/_history/") {
        Some((resource, _version)) => resource,
        None => r,
    };
    let (ty, id) = r.rsplit_once('/')?;
    let ty = ty.rsplit('/').next()?;
    (ty == resource_type && !id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_requires_type_and_id() {
        let e = Resource::new(&json!({"id": "x"})).err().unwrap();
        assert_eq!(e.to_string(), "resource: field `resourceType` is missing");
        let e = Resource::new(&json!({"resourceType": "Patient"}))
            .err()
            .unwrap();
        assert_eq!(e.to_string(), "Patient: field `id` is missing");
    }

    #[test]
    fn errors_name_the_field() {
        let v = json!({"resourceType": "Appointment", "id": "a1", "start": "tomorrow"});
        let r = Resource::new(&v).unwrap();
        assert_eq!(
            r.required_instant("start").unwrap_err().to_string(),
            "Appointment/a1: field `start` is not an RFC 3339 instant"
        );
        assert_eq!(
            r.required_str("end").unwrap_err().to_string(),
            "Appointment/a1: field `end` is missing"
        );
    }

    #[test]
    fn partial_dates_parse() {
        assert_eq!(parse_fhir_date("2020"), NaiveDate::from_ymd_opt(2020, 1, 1));
        assert_eq!(
            parse_fhir_date("2020-04"),
            NaiveDate::from_ymd_opt(2020, 4, 1)
        );
        assert_eq!(
            parse_fhir_date("2020-04-05T10:00:00+02:00"),
            NaiveDate::from_ymd_opt(2020, 4, 5)
        );
        assert_eq!(parse_fhir_date("April"), None);
    }

    #[test]
    fn names_prefer_official_and_add_titles() {
        let names = json!([
            {"use": "nickname", "given": ["Al"]},
            {"use": "official", "prefix": ["Dr."], "given": ["Amara"], "family": "Okafor", "suffix": ["MD"]}
        ]);
        assert_eq!(
            human_name(Some(&names), true).unwrap(),
            "Dr. Amara Okafor, MD"
        );
        assert_eq!(human_name(Some(&names), false).unwrap(), "Amara Okafor");
    }

    #[test]
    fn references_resolve_by_type() {
        let r = json!({"reference": "Patient/p1"});
        assert_eq!(reference_id(Some(&r), "Patient"), Some("p1"));
        assert_eq!(reference_id(Some(&r), "Practitioner"), None);
        let versioned = json!({"reference": "Patient/p1/_history/3"});
        assert_eq!(reference_id(Some(&versioned), "Patient"), Some("p1"));
        let abs = json!({"reference": "https://ehr.example/fhir/Patient/p2"});
        assert_eq!(reference_id(Some(&abs), "Patient"), Some("p2"));
    }
}
