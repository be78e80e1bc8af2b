//! Hearth's FHIR R4 REST client.
//!
//! - Resources come back as [`RawResource`]: the server's JSON text byte for byte, so unknown
//!   elements and extensions survive a read–edit–write round trip.
//! - Searches page only by the Bundle's `next` link, and only to the server's own origin (the
//!   bearer token never goes elsewhere).
//! - Writes: conditional create (`If-None-Exist`) and update (`If-Match`); a 412 is
//!   [`FhirError::VersionConflict`].
//! - Failures are typed ([`FhirError`]), with the server's OperationOutcome kept.
//! - 429, 5xx and connection errors are retried with exponential backoff and full jitter,
//!   honouring `Retry-After`; responses may be gzip-compressed.
//! - The bearer token comes from a [`TokenSource`] the auth layer implements.

mod bundle;
mod error;

pub use bundle::{is_id, parse_bundle, reference_in, Entry, Page, RawResource, PROJECTED};
pub use error::{FhirError, Issue, Outcome};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

const FHIR_JSON: &str = "application/fhir+json";

/// A bearer token; its `Debug` form never shows it (`[REDACTED]`), and it is zeroised when
/// dropped.
#[derive(Clone, Debug)]
pub struct Bearer(SecretString);

impl Bearer {
    pub fn new(token: impl Into<String>) -> Self {
        Self(SecretString::from(token.into()))
    }
    /// The token itself (to check, in tests, that it is nowhere on disk).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    fn header(&self) -> Result<HeaderValue, FhirError> {
        let text = zeroize::Zeroizing::new(format!("Bearer {}", self.expose()));
        let mut v = HeaderValue::from_str(&text)
            .map_err(|_| FhirError::Auth("the access token has characters HTTP forbids".into()))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// Where the client gets its access token: the sign-on layer implements this.
pub trait TokenSource: Send + Sync {
    /// The token to send now, or `None` for a server that needs none.
    fn bearer(&self) -> Result<Option<Bearer>, FhirError>;
}

/// No token: for a server on loopback that asks for none (tests, demo).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoToken;

impl TokenSource for NoToken {
    fn bearer(&self) -> Result<Option<Bearer>, FhirError> {
        Ok(None)
    }
}

/// How often and how long to retry transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The backoff before the second attempt; doubled each time, with full jitter.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the error is returned.
    pub max_retry_after: Duration,
    /// Per request.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One attempt only (a caller that retries on its own schedule).
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=ms))
    }
}

/// What the server says it can do (from its CapabilityStatement).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub fhir_version: Option<String>,
    /// `GET [base]/_history` is offered.
    pub history_system: bool,
    /// Topic-based subscriptions with a websocket channel are offered.
    pub websocket_subscriptions: bool,
}

/// The outcome of a create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// 201: a new resource. A conditional create that matched answers `false`.
    pub created: bool,
    pub resource: RawResource,
}

/// A FHIR R4 server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    tokens: Arc<dyn TokenSource>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `https://ehr.example.org/fhir`).
    pub fn new(
        base_url: &str,
        tokens: Arc<dyn TokenSource>,
        retry: RetryPolicy,
    ) -> Result<Self, FhirError> {
        let mut base = Url::parse(base_url)
            .map_err(|e| FhirError::Invalid(format!("FHIR base URL {base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(FhirError::Invalid(format!(
                "FHIR base URL {base_url:?} is not http(s)"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("Hearth/", env!("CARGO_PKG_VERSION")))
            // A redirect is followed only within the origin it started from: never to another
            // server (the bearer token and PHI stay with the configured EHR), never from https
            // down to http (another scheme is another origin, RFC 6454 §4).
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if same && attempt.previous().len() < 5 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .timeout(retry.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| FhirError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            tokens,
            retry,
        })
    }

    /// The base URL, without the trailing slash.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn url(&self, path: &str) -> Result<Url, FhirError> {
        self.base
            .join(path)
            .map_err(|e| FhirError::Invalid(format!("{path}: {e}")))
    }

    /// Sends one request, retrying transient failures per the policy.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&'static str, String)],
        body: Option<&str>,
    ) -> Result<Reply, FhirError> {
        let mut attempt = 0;
        loop {
            let result = self.send_once(&method, &url, headers, body).await;
            attempt += 1;
            let retry_after = match &result {
                Ok(r)
                    if r.status == StatusCode::TOO_MANY_REQUESTS || r.status.is_server_error() =>
                {
                    retry_after(&r.headers)
                }
                Err(e) if e.is_transient() => None,
                _ => return result.and_then(|r| check_status(r, &url)),
            };
            if attempt >= self.retry.attempts {
                return result.and_then(|r| check_status(r, &url));
            }
            let wait = match retry_after {
                Some(d) if d > self.retry.max_retry_after => {
                    return result.and_then(|r| check_status(r, &url))
                }
                Some(d) => d,
                None => self.retry.backoff(attempt - 1),
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(&'static str, String)],
        body: Option<&str>,
    ) -> Result<Reply, FhirError> {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header("Accept", FHIR_JSON);
        if let Some(token) = self.tokens.bearer()? {
            req = req.header("Authorization", token.header()?);
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(body) = body {
            req = req.header("Content-Type", FHIR_JSON).body(body.to_string());
        }
        let unreachable = |e: reqwest::Error| FhirError::Unreachable {
            base: self.base().to_string(),
            reason: describe_transport(&e),
        };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        // Read at most MAX_BODY: a server that sends more (by its Content-Length, or as it
        // streams) is not read on into memory.
        let too_large = || {
            FhirError::malformed(
                url.path(),
                "(body)",
                format!("is larger than {} MiB; not read", MAX_BODY >> 20),
            )
        };
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = String::from_utf8(bytes)
            .map_err(|_| FhirError::malformed(url.path(), "(body)", "is not UTF-8 text"))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// The server's CapabilityStatement, reduced to what Hearth asks of it.
    pub async fn capabilities(&self) -> Result<Capabilities, FhirError> {
        let reply = self
            .send(Method::GET, self.url("metadata")?, &[], None)
            .await?;
        let v: serde_json::Value = serde_json::from_str(&reply.body).map_err(|e| {
            FhirError::malformed("CapabilityStatement", "(document)", e.to_string())
        })?;
        let rest = v.pointer("/rest/0");
        let history_system = rest
            .and_then(|r| r.get("interaction"))
            .and_then(|i| i.as_array())
            .is_some_and(|i| {
                i.iter()
                    .any(|x| x.get("code").and_then(|c| c.as_str()) == Some("history-system"))
            });
        let text = v.to_string();
        let websocket_subscriptions =
            text.contains("subscription-channel-type") && text.contains("websocket");
        Ok(Capabilities {
            fhir_version: v
                .get("fhirVersion")
                .and_then(|f| f.as_str())
                .map(str::to_string),
            history_system,
            websocket_subscriptions,
        })
    }

    /// Reads one resource.
    pub async fn read(&self, resource_type: &str, id: &str) -> Result<RawResource, FhirError> {
        let url = self.url(&format!("{resource_type}/{id}"))?;
        let reply = self.send(Method::GET, url, &[], None).await?;
        RawResource::parse(&reply.body)
    }

    /// The first page of a search; follow it with [`Client::next_page`].
    pub async fn search(
        &self,
        resource_type: &str,
        params: &[(&str, &str)],
    ) -> Result<Page, FhirError> {
        let mut url = self.url(resource_type)?;
        url.query_pairs_mut().extend_pairs(params);
        self.page(url).await
    }

    /// Resources of a type changed at or after `since` (an instant), oldest first.
    pub async fn changed_since(
        &self,
        resource_type: &str,
        since: &str,
        page_size: u32,
    ) -> Result<Page, FhirError> {
        let count = page_size.to_string();
        let last_updated = format!("ge{since}");
        self.search(
            resource_type,
            &[
                ("_lastUpdated", &last_updated),
                ("_sort", "_lastUpdated"),
                ("_count", &count),
            ],
        )
        .await
    }

    /// The server's history of every resource since `since` (deletions included), first page.
    pub async fn history_since(
        &self,
        since: Option<&str>,
        page_size: u32,
    ) -> Result<Page, FhirError> {
        let mut url = self.url("_history")?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(since) = since {
                q.append_pair("_since", since);
            }
            q.append_pair("_count", &page_size.to_string());
        }
        self.page(url).await
    }

    /// The versions of one resource, newest first (first page).
    pub async fn instance_history(&self, resource_type: &str, id: &str) -> Result<Page, FhirError> {
        let url = self.url(&format!("{resource_type}/{id}/_history"))?;
        self.page(url).await
    }

    /// The page after `page`, by its `next` link only; `None` at the end.
    pub async fn next_page(&self, page: &Page) -> Result<Option<Page>, FhirError> {
        let Some(next) = &page.next else {
            return Ok(None);
        };
        let url = Url::parse(next)
            .or_else(|_| self.base.join(next))
            .map_err(|e| FhirError::malformed("Bundle", "link(next)", e.to_string()))?;
        if url.origin() != self.base.origin() {
            return Err(FhirError::malformed(
                "Bundle",
                "link(next)",
                "points to another server; not followed",
            ));
        }
        // A server whose `next` leads back to a page already read, or on past any real
        // search, would keep a round paging for ever.
        if page.chain.iter().any(|seen| seen == url.as_str()) {
            return Err(FhirError::malformed(
                "Bundle",
                "link(next)",
                "leads back to a page already read; not followed",
            ));
        }
        if page.chain.len() >= MAX_PAGES {
            return Err(FhirError::malformed(
                "Bundle",
                "link(next)",
                format!("goes past {MAX_PAGES} pages; not followed"),
            ));
        }
        let mut chain = page.chain.clone();
        let mut next = self.page(url).await?;
        chain.append(&mut next.chain);
        next.chain = chain;
        Ok(Some(next))
    }

    async fn page(&self, url: Url) -> Result<Page, FhirError> {
        let chain = vec![url.as_str().to_string()];
        let reply = self.send(Method::GET, url, &[], None).await?;
        let mut page = parse_bundle(&reply.body)?;
        page.server_date = server_date(&reply.headers);
        page.chain = chain;
        Ok(page)
    }

    /// Creates a resource. With `if_none_exist` (a search query such as
    /// `identifier=urn:x|42`), a server that already has a match returns it instead: a
    /// replayed create is one resource.
    pub async fn create(
        &self,
        resource_type: &str,
        body: &str,
        if_none_exist: Option<&str>,
    ) -> Result<Written, FhirError> {
        let mut headers = vec![("Prefer", "return=representation".to_string())];
        if let Some(q) = if_none_exist {
            headers.push(("If-None-Exist", q.to_string()));
        }
        let reply = self
            .send(Method::POST, self.url(resource_type)?, &headers, Some(body))
            .await?;
        self.written(reply).await
    }

    /// Updates a resource. With `if_match` (`W/"3"`), a server whose version differs answers
    /// [`FhirError::VersionConflict`] and changes nothing.
    pub async fn update(
        &self,
        resource_type: &str,
        id: &str,
        body: &str,
        if_match: Option<&str>,
    ) -> Result<Written, FhirError> {
        let mut headers = vec![("Prefer", "return=representation".to_string())];
        if let Some(v) = if_match {
            headers.push(("If-Match", v.to_string()));
        }
        let url = self.url(&format!("{resource_type}/{id}"))?;
        let reply = self.send(Method::PUT, url, &headers, Some(body)).await?;
        self.written(reply).await
    }

    /// Deletes a resource; deleting one already gone succeeds.
    pub async fn delete(&self, resource_type: &str, id: &str) -> Result<(), FhirError> {
        let url = self.url(&format!("{resource_type}/{id}"))?;
        match self.send(Method::DELETE, url, &[], None).await {
            Ok(_) | Err(FhirError::Gone { .. }) | Err(FhirError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn written(&self, reply: Reply) -> Result<Written, FhirError> {
        let created = reply.status == StatusCode::CREATED;
        if !reply.body.trim().is_empty() {
            if let Ok(resource) = RawResource::parse(&reply.body) {
                if resource.resource_type != "OperationOutcome" {
                    return Ok(Written { created, resource });
                }
            }
        }
        // A server that ignored `Prefer: return=representation`: read what the Location names.
        let location = reply
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                FhirError::malformed("write response", "Location", "is missing (and no body)")
            })?;
        let url = Url::parse(location)
            .or_else(|_| self.base.join(location))
            .map_err(|e| FhirError::malformed("write response", "Location", e.to_string()))?;
        let path = url.path().to_string();
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let hist = parts.iter().position(|p| *p == "_history");
        let (ty, id) = match hist {
            Some(h) if h >= 2 => (parts[h - 2], parts[h - 1]),
            _ if parts.len() >= 2 => (parts[parts.len() - 2], parts[parts.len() - 1]),
            _ => {
                return Err(FhirError::malformed(
                    "write response",
                    "Location",
                    "does not name a resource",
                ))
            }
        };
        let resource = self.read(ty, id).await?;
        Ok(Written { created, resource })
    }
}

fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "connection refused or failed".into()
    } else {
        "the connection dropped".into()
    }
}

/// The largest answer read (a page of 200 resources is a few MiB; one resource far less).
const MAX_BODY: usize = 64 << 20;

/// The most pages one search is followed through (200 resources a page: 2 million).
const MAX_PAGES: usize = 10_000;

/// The server's clock when it answered: the `Date` header (RFC 9110 §6.6.1: an origin server
/// with a clock sends it on every 2xx, 3xx and 4xx answer), as RFC 3339 UTC.
fn server_date(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("date")?.to_str().ok()?.trim();
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        chrono::DateTime::<chrono::Utc>::from(when)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn check_status(reply: Reply, url: &Url) -> Result<Reply, FhirError> {
    let status = reply.status;
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(reply);
    }
    if status.is_redirection() {
        // Only a redirect to another origin (or past five) is left unfollowed.
        return Err(FhirError::Invalid(format!(
            "the EHR redirected {} elsewhere ({status}); Hearth follows redirects only within {}",
            what_of(url),
            url.origin().ascii_serialization()
        )));
    }
    let outcome = Outcome::parse(reply.body.as_bytes());
    let what = what_of(url);
    Err(match status {
        StatusCode::UNAUTHORIZED => FhirError::Unauthorized(outcome.summary()),
        StatusCode::FORBIDDEN => FhirError::Forbidden(outcome.summary()),
        StatusCode::NOT_FOUND => FhirError::NotFound { what },
        StatusCode::GONE => FhirError::Gone { what },
        // FHIR R4 http.html#concurrency: a server refuses a stale `If-Match` with 412, and
        // may answer 409 Conflict for the same contention: both are a version conflict.
        StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => {
            FhirError::VersionConflict { what }
        }
        s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => FhirError::Server {
            status: s.as_u16(),
            outcome,
        },
        s => FhirError::Rejected {
            status: s.as_u16(),
            outcome,
        },
    })
}

/// `Type/id` (or `Type`) from a request URL, for error messages.
fn what_of(url: &Url) -> String {
    let parts: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let at = parts
        .iter()
        .rposition(|p| p.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
    match at {
        Some(i) => parts[i..]
            .iter()
            .take(2)
            .copied()
            .collect::<Vec<_>>()
            .join("/"),
        None => url.path().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_its_ceiling() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        for attempt in 0..10 {
            let d = p.backoff(attempt);
            assert!(d <= Duration::from_millis(500), "{attempt}: {d:?}");
            if attempt == 0 {
                assert!(d <= Duration::from_millis(100));
            }
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn errors_name_the_resource_from_the_url() {
        let u = Url::parse("http://h/fhir/Appointment/a1/_history/2").unwrap();
        assert_eq!(what_of(&u), "Appointment/a1");
        assert_eq!(
            what_of(&Url::parse("http://h/fhir/Patient?x=1").unwrap()),
            "Patient"
        );
    }

    #[test]
    fn the_base_gets_a_trailing_slash_and_only_http() {
        let c = Client::new("http://h:1/fhir", Arc::new(NoToken), RetryPolicy::none()).unwrap();
        assert_eq!(c.base(), "http://h:1/fhir");
        assert_eq!(
            c.url("Patient/1").unwrap().as_str(),
            "http://h:1/fhir/Patient/1"
        );
        assert!(Client::new("ftp://h/fhir", Arc::new(NoToken), RetryPolicy::none()).is_err());
        let shown = format!("{:?}", Bearer::new("s3cret"));
        assert!(
            shown.contains("REDACTED") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
