//! Reading what a FHIR server sends, keeping each resource's JSON text exactly as served.
//!
//! A Bundle is parsed only as far as Hearth needs it (entries, links, deletions); each
//! entry's resource stays the server's own bytes (`RawValue`), so unknown elements and
//! extensions reach the store untouched. A malformed entry is reported (naming the resource
//! and field) without spoiling the entries around it.

use crate::FhirError;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A resource as served: its identity, version, and its JSON text byte for byte.
#[derive(Clone, PartialEq, Eq)]
pub struct RawResource {
    pub resource_type: String,
    pub id: String,
    pub version_id: Option<String>,
    pub last_updated: Option<String>,
    /// The JSON text as the server sent it.
    pub json: String,
    /// The top-level elements in [`PROJECTED`] that the resource has, read in the same pass
    /// as its identity: the store's projections need not read the text again.
    pub projected: serde_json::Map<String, serde_json::Value>,
}

/// The top-level elements the local store's projections read (hearth-model's rows: owning
/// patient, appointment start and practitioner, observation code and time).
pub const PROJECTED: [&str; 10] = [
    "resourceType",
    "id",
    "meta",
    "subject",
    "patient",
    "participant",
    "start",
    "code",
    "effectiveDateTime",
    "effectivePeriod",
];

impl RawResource {
    /// `Type/id`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.resource_type, self.id)
    }

    /// Reads a single resource (a response body, or one bundle entry's text).
    pub fn parse(json: &str) -> Result<Self, FhirError> {
        Self::parse_at(json, "resource")
    }

    fn parse_at(json: &str, place: &str) -> Result<Self, FhirError> {
        #[derive(Deserialize)]
        struct Meta {
            #[serde(rename = "versionId")]
            version_id: Option<serde_json::Value>,
            #[serde(rename = "lastUpdated")]
            last_updated: Option<serde_json::Value>,
        }
        #[derive(Deserialize)]
        struct Head {
            #[serde(rename = "resourceType")]
            resource_type: Option<serde_json::Value>,
            id: Option<serde_json::Value>,
            meta: Option<serde_json::Value>,
            subject: Option<serde_json::Value>,
            patient: Option<serde_json::Value>,
            participant: Option<serde_json::Value>,
            start: Option<serde_json::Value>,
            code: Option<serde_json::Value>,
            #[serde(rename = "effectiveDateTime")]
            effective_date_time: Option<serde_json::Value>,
            #[serde(rename = "effectivePeriod")]
            effective_period: Option<serde_json::Value>,
        }
        let head: Head = serde_json::from_str(json)
            .map_err(|e| FhirError::malformed(place, "(document)", json_problem(&e)))?;
        let resource_type = match head.resource_type {
            Some(serde_json::Value::String(t)) if is_type_name(&t) => t,
            Some(_) => {
                return Err(FhirError::malformed(
                    place,
                    "resourceType",
                    "is not a resource type name",
                ))
            }
            None => return Err(FhirError::malformed(place, "resourceType", "is missing")),
        };
        // Without a usable id the resource is named by type and where it was found.
        let unnamed = || match place {
            "resource" => resource_type.clone(),
            _ => format!("{resource_type} at {place}"),
        };
        let id = match head.id {
            Some(serde_json::Value::String(id)) if is_id(&id) => id,
            Some(_) => {
                return Err(FhirError::malformed(
                    unnamed(),
                    "id",
                    "is not a FHIR id (1-64 of A-Z a-z 0-9 - .)",
                ))
            }
            None => return Err(FhirError::malformed(unnamed(), "id", "is missing")),
        };
        let what = format!("{resource_type}/{id}");
        let mut projected = serde_json::Map::new();
        projected.insert("resourceType".into(), resource_type.clone().into());
        projected.insert("id".into(), id.clone().into());
        if let Some(meta) = &head.meta {
            projected.insert("meta".into(), meta.clone());
        }
        for (name, value) in [
            ("subject", head.subject),
            ("patient", head.patient),
            ("participant", head.participant),
            ("start", head.start),
            ("code", head.code),
            ("effectiveDateTime", head.effective_date_time),
            ("effectivePeriod", head.effective_period),
        ] {
            if let Some(v) = value {
                projected.insert(name.into(), v);
            }
        }
        let (version_id, last_updated) = match head.meta {
            None => (None, None),
            Some(m @ serde_json::Value::Object(_)) => {
                let meta: Meta = serde_json::from_value(m)
                    .map_err(|e| FhirError::malformed(&what, "meta", json_problem(&e)))?;
                let version_id = match meta.version_id {
                    None => None,
                    Some(serde_json::Value::String(v)) if !v.is_empty() => Some(v),
                    Some(_) => {
                        return Err(FhirError::malformed(
                            &what,
                            "meta.versionId",
                            "is not a non-empty string",
                        ))
                    }
                };
                let last_updated = match meta.last_updated {
                    None => None,
                    Some(serde_json::Value::String(v))
                        if chrono::DateTime::parse_from_rfc3339(&v).is_ok() =>
                    {
                        Some(v)
                    }
                    Some(_) => {
                        return Err(FhirError::malformed(
                            &what,
                            "meta.lastUpdated",
                            "is not an instant (RFC 3339 with time zone)",
                        ))
                    }
                };
                (version_id, last_updated)
            }
            Some(_) => return Err(FhirError::malformed(&what, "meta", "is not an object")),
        };
        Ok(Self {
            resource_type,
            id,
            version_id,
            last_updated,
            json: json.to_string(),
            projected,
        })
    }
}

impl std::fmt::Debug for RawResource {
    /// Identity only: the JSON is clinical content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawResource")
            .field("resource_type", &self.resource_type)
            .field("id", &self.id)
            .field("version_id", &self.version_id)
            .field(
                "json",
                &format_args!("<{} bytes redacted>", self.json.len()),
            )
            .finish()
    }
}

fn is_type_name(t: &str) -> bool {
    let mut chars = t.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
        && t.len() <= 64
}

/// Whether `id` is a FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// One entry of a searchset or history Bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A resource (in a history Bundle, its newest-listed version).
    Resource(RawResource),
    /// A history entry recording a deletion.
    Deleted {
        resource_type: String,
        id: String,
        last_updated: Option<String>,
    },
}

/// A page of a Bundle: its entries (each read on its own), and the `next` link.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<Result<Entry, FhirError>>,
    pub next: Option<String>,
    pub total: Option<u64>,
    /// `Bundle.meta.lastUpdated` or `Bundle.timestamp`, when the server gave one.
    pub timestamp: Option<String>,
    /// The HTTP `Date` of the answer (the server's clock), when it came over HTTP.
    pub server_date: Option<String>,
    /// The URLs of this search's pages so far, this one last: a `next` link back to one of
    /// them would page for ever.
    pub(crate) chain: Vec<String>,
}

impl Page {
    /// The server's clock when it made this page: the Bundle's own time, else the answer's
    /// `Date` header. `None` only when the server gave neither.
    pub fn server_time(&self) -> Option<&str> {
        self.timestamp.as_deref().or(self.server_date.as_deref())
    }
}

#[derive(Deserialize)]
struct BundleWire<'a> {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(rename = "type")]
    bundle_type: Option<String>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    meta: Option<BundleMeta>,
    #[serde(default)]
    link: Vec<Link>,
    #[serde(default, borrow)]
    entry: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct BundleMeta {
    #[serde(rename = "lastUpdated")]
    last_updated: Option<String>,
}

#[derive(Deserialize)]
struct Link {
    relation: String,
    url: String,
}

#[derive(Deserialize)]
struct EntryWire<'a> {
    #[serde(rename = "fullUrl")]
    full_url: Option<String>,
    #[serde(default, borrow)]
    resource: Option<&'a RawValue>,
    #[serde(default)]
    request: Option<RequestWire>,
    #[serde(default)]
    response: Option<ResponseWire>,
    #[serde(default)]
    search: Option<SearchWire>,
}

#[derive(Deserialize)]
struct RequestWire {
    method: String,
    url: String,
}

#[derive(Deserialize)]
struct ResponseWire {
    status: String,
    #[serde(rename = "lastModified")]
    last_modified: Option<String>,
}

#[derive(Deserialize)]
struct SearchWire {
    mode: Option<String>,
}

/// Reads a Bundle of resources (searchset, history; also collection, transaction, batch and
/// document, whose entries are read the same way). Errors only when the Bundle itself is unusable; a bad
/// entry becomes an `Err` in [`Page::entries`] and the rest are still read. OperationOutcome
/// entries (`search.mode = outcome`) are left out.
pub fn parse_bundle(body: &str) -> Result<Page, FhirError> {
    let wire: BundleWire<'_> = serde_json::from_str(body)
        .map_err(|e| FhirError::malformed("Bundle", "(document)", json_problem(&e)))?;
    if wire.resource_type != "Bundle" {
        return Err(FhirError::malformed(
            "Bundle",
            "resourceType",
            format!("is {:?}, not Bundle", wire.resource_type),
        ));
    }
    if let Some(t) = wire.bundle_type.as_deref() {
        if !matches!(
            t,
            "searchset" | "history" | "collection" | "transaction" | "batch" | "document"
        ) {
            return Err(FhirError::malformed(
                "Bundle",
                "type",
                format!("is {t:?}; a Bundle of resources was expected"),
            ));
        }
    }
    let next = wire
        .link
        .iter()
        .find(|l| l.relation == "next")
        .map(|l| l.url.clone());
    let entries = wire
        .entry
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| parse_entry(i, raw).transpose())
        .collect();
    Ok(Page {
        entries,
        next,
        total: wire.total,
        timestamp: wire.meta.and_then(|m| m.last_updated).or(wire.timestamp),
        server_date: None,
        chain: Vec::new(),
    })
}

fn parse_entry(i: usize, raw: &RawValue) -> Result<Option<Entry>, FhirError> {
    let e: EntryWire<'_> = serde_json::from_str(raw.get()).map_err(|err| {
        FhirError::malformed(format!("Bundle entry {i}"), "(entry)", json_problem(&err))
    })?;
    // An entry is named by what identifies it to people and to a later fetch: its fullUrl,
    // else the resource's own id; the position only when it carries neither.
    // (The resource is read for its id only when there is no fullUrl: one scan less.)
    let place = match &e.full_url {
        Some(url) => url.clone(),
        None => match e.resource.and_then(|r| id_of(r.get())) {
            Some(id) => format!("Bundle entry {i} (id {id})"),
            None => format!("Bundle entry {i}"),
        },
    };
    if e.search.and_then(|s| s.mode).as_deref() == Some("outcome") {
        return Ok(None);
    }
    let deleted = e.request.as_ref().is_some_and(|r| r.method == "DELETE")
        || (e.resource.is_none()
            && e.response
                .as_ref()
                .is_some_and(|r| r.status.starts_with("410") || r.status.starts_with("204")));
    if deleted {
        let (resource_type, id) = e
            .request
            .as_ref()
            .and_then(|r| split_reference(&r.url))
            .or_else(|| e.full_url.as_deref().and_then(split_reference))
            .ok_or_else(|| {
                FhirError::malformed(&place, "request.url", "does not name the deleted resource")
            })?;
        return Ok(Some(Entry::Deleted {
            resource_type,
            id,
            last_updated: e.response.and_then(|r| r.last_modified),
        }));
    }
    match e.resource {
        Some(r) => {
            let res = RawResource::parse_at(r.get(), &place)?;
            Ok(Some(Entry::Resource(res)))
        }
        None => Err(FhirError::malformed(&place, "resource", "is missing")),
    }
}

/// What is wrong with a JSON text, by kind and place only: serde's own message quotes the
/// offending value (`invalid type: string "Ada Quokka"`), which may be a patient's data and
/// is the server's text, so it must not reach the store, the sync panel or a log line.
fn json_problem(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Syntax => "is not valid JSON",
        serde_json::error::Category::Eof => "is cut short",
        serde_json::error::Category::Data => "has an element of the wrong JSON type",
        serde_json::error::Category::Io => "could not be read",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// The `id` of a resource's JSON, when it is a string (for naming an unreadable entry).
fn id_of(json: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<serde_json::Value>,
    }
    match serde_json::from_str::<IdOnly>(json).ok()?.id? {
        serde_json::Value::String(id) if is_id(&id) => Some(id),
        _ => None,
    }
}

/// The `(Type, id)` a name or URL points to: `Type/id`, or a full URL ending in one
/// (`[base/]Type/id[/_history/v]`); `None` for anything else (`Bundle entry 4`, `urn:uuid:..`).
pub fn reference_in(name: &str) -> Option<(String, String)> {
    split_reference(name)
}

/// `[base/]Type/id[/_history/v]` → `(Type, id)`. (An id may itself look like a type name,
/// `Patient/P123`: position decides, not spelling.)
fn split_reference(url: &str) -> Option<(String, String)> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let end = match parts.iter().rposition(|p| *p == "_history") {
        Some(h) => h,
        None => parts.len(),
    };
    let (ty, id) = (parts.get(end.checked_sub(2)?)?, parts.get(end - 1)?);
    (is_type_name(ty) && is_id(id)).then(|| (ty.to_string(), id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_the_servers_bytes_and_bad_ones_do_not_spoil_the_rest() {
        let body = r#"{"resourceType":"Bundle","type":"searchset","total":3,
          "link":[{"relation":"self","url":"x"},{"relation":"next","url":"http://h/fhir/Patient?page=2"}],
          "entry":[
            {"resource":{"resourceType":"Patient","id":"p1","meta":{"versionId":"3","lastUpdated":"2026-01-01T00:00:00Z"},"extension":[{"url":"urn:x","valueString":"k"}],  "zz":1}},
            {"resource":{"resourceType":"Patient","id":"bad id!"}},
            {"resource":{"resourceType":"Patient","id":"p3","meta":{"lastUpdated":"yesterday"}}},
            {"resource":{"resourceType":"OperationOutcome","id":"oo"},"search":{"mode":"outcome"}}
          ]}"#;
        let page = parse_bundle(body).unwrap();
        assert_eq!(page.next.as_deref(), Some("http://h/fhir/Patient?page=2"));
        assert_eq!(page.entries.len(), 3);
        let Ok(Entry::Resource(p1)) = &page.entries[0] else {
            panic!("first entry unreadable: {:?}", page.entries[0])
        };
        assert_eq!(p1.version_id.as_deref(), Some("3"));
        assert!(p1.json.ends_with(r#""valueString":"k"}],  "zz":1}"#));
        assert_eq!(
            page.entries[1].as_ref().unwrap_err().to_string(),
            "Patient at Bundle entry 1: field `id` is not a FHIR id (1-64 of A-Z a-z 0-9 - .)"
        );
        assert_eq!(
            page.entries[2].as_ref().unwrap_err().to_string(),
            "Patient/p3: field `meta.lastUpdated` is not an instant (RFC 3339 with time zone)"
        );
    }

    #[test]
    fn an_entry_without_a_type_is_named_by_its_full_url_or_id_not_its_position() {
        let body = r#"{"resourceType":"Bundle","type":"searchset","entry":[
            {"fullUrl":"http://h/fhir/Observation/o7","resource":{"id":"o7","status":"final"}},
            {"resource":{"id":"c9"}},
            {"resource":{"resourceType":7}}]}"#;
        let page = parse_bundle(body).unwrap();
        let named: Vec<String> = page
            .entries
            .iter()
            .map(|e| e.as_ref().unwrap_err().to_string())
            .collect();
        assert_eq!(
            named,
            [
                "http://h/fhir/Observation/o7: field `resourceType` is missing",
                "Bundle entry 1 (id c9): field `resourceType` is missing",
                "Bundle entry 2: field `resourceType` is not a resource type name",
            ]
        );
        // The full URL names a record that can be fetched again; a position cannot.
        assert_eq!(
            reference_in("http://h/fhir/Observation/o7"),
            Some(("Observation".into(), "o7".into()))
        );
        assert_eq!(
            reference_in("Patient/p1"),
            Some(("Patient".into(), "p1".into()))
        );
        assert_eq!(reference_in("Bundle entry 1 (id c9)"), None);
    }

    #[test]
    fn a_malformed_entry_is_described_without_quoting_the_servers_text() {
        let body = r#"{"resourceType":"Bundle","type":"searchset","entry":[
            {"resource":"Ada Quokka, born 1970-01-01"},
            {"fullUrl":["Ada Quokka"],"resource":{"resourceType":"Patient","id":"p1"}}]}"#;
        let page = parse_bundle(body).unwrap();
        for e in &page.entries {
            let shown = e.as_ref().unwrap_err().to_string();
            assert!(!shown.contains("Quokka"), "{shown}");
            assert!(shown.contains("wrong JSON type"), "{shown}");
        }
    }

    #[test]
    fn history_deletions_are_entries_too() {
        let body = r#"{"resourceType":"Bundle","type":"history","entry":[
            {"fullUrl":"http://h/fhir/Observation/o1","request":{"method":"DELETE","url":"Observation/o1"},
             "response":{"status":"204 No Content","lastModified":"2026-01-01T00:00:00Z"}}]}"#;
        let page = parse_bundle(body).unwrap();
        assert_eq!(
            page.entries[0].as_ref().unwrap(),
            &Entry::Deleted {
                resource_type: "Observation".into(),
                id: "o1".into(),
                last_updated: Some("2026-01-01T00:00:00Z".into())
            }
        );
    }

    #[test]
    fn deleted_references_are_read_by_position() {
        for (url, want) in [
            ("Patient/P123", ("Patient", "P123")),
            (
                "http://h/fhir/Observation/o1/_history/4",
                ("Observation", "o1"),
            ),
            ("http://h/fhir/Encounter/E9", ("Encounter", "E9")),
        ] {
            assert_eq!(
                split_reference(url),
                Some((want.0.to_string(), want.1.to_string())),
                "{url}"
            );
        }
        assert_eq!(split_reference("Patient"), None);
        assert_eq!(split_reference("_history/1"), None);
    }

    #[test]
    fn a_document_that_is_not_a_bundle_is_refused_by_name() {
        assert_eq!(
            parse_bundle(r#"{"resourceType":"Patient","id":"x"}"#)
                .unwrap_err()
                .to_string(),
            "Bundle: field `resourceType` is \"Patient\", not Bundle"
        );
        assert!(parse_bundle("[1,2]").is_err());
        assert!(parse_bundle(r#"{"resourceType":"Bundle","entry":[7]}"#)
            .unwrap()
            .entries[0]
            .is_err());
    }

    #[test]
    fn the_debug_form_of_a_resource_shows_no_content() {
        let r = RawResource::parse(
            r#"{"resourceType":"Patient","id":"p","name":[{"family":"Quokka"}]}"#,
        )
        .unwrap();
        assert!(!format!("{r:?}").contains("Quokka"));
    }
}
