use crate::AuthError;
use openidconnect::core::{CoreJsonWebKeySet, CoreProviderMetadata};
use openidconnect::IssuerUrl;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The scopes Hearth asks for (SMART v2 syntax): who the user is, a refresh token, read access
/// to what the user may see and the writes Hearth makes (appointments' status, notes).
pub const DEFAULT_SCOPES: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "offline_access",
    "user/*.rs",
    "user/*.cud",
];

/// What the machine configuration says about sign-on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The EHR's FHIR base URL: discovery starts there and tokens are asked for it (`aud`).
    pub fhir_base: String,
    /// The identity provider IT configured; discovery must name the same one.
    pub issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// Other resource servers Hearth asks tokens for besides the FHIR base (RFC 8707
    /// resource indicators, named in the authorization request), e.g. the visit service: their
    /// tokens come from [`crate::Session::token_for`].
    pub resources: Vec<String>,
}

/// `<fhir-base>/.well-known/smart-configuration`, the fields Hearth uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SmartConfiguration {
    pub issuer: Option<String>,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// The discovered authorization server: endpoints, keys, and the HTTP client to reach it.
pub struct Provider {
    pub(crate) settings: AuthSettings,
    pub(crate) smart: SmartConfiguration,
    pub(crate) issuer: IssuerUrl,
    pub(crate) keys: CoreJsonWebKeySet,
    pub(crate) http: reqwest::Client,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer.as_str())
            .field("fhir_base", &self.settings.fhir_base)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HttpError(String);

impl Provider {
    /// Reads the SMART configuration of the FHIR server, checks it names the configured issuer
    /// and offers PKCE S256, then reads the issuer's OpenID Connect discovery and keys.
    pub async fn discover(settings: AuthSettings) -> Result<Arc<Self>, AuthError> {
        let http = reqwest::Client::builder()
            // Redirects are not followed: a discovery or token answer comes from where it was
            // asked, or not at all.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            // A fresh connection per call: sign-on traffic is rare, and a pooled connection
            // the provider has closed would fail a request that must not be retried (a code).
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| AuthError::Discovery(format!("HTTP client: {e}")))?;
        let base = Url::parse(settings.fhir_base.trim_end_matches('/'))
            .map_err(|e| AuthError::Invalid(format!("FHIR base URL: {e}")))?;
        // Everything sign-on reads or sends goes over TLS, but for a test server on this
        // computer: the SMART configuration from the FHIR base, and the configured issuer.
        secure(
            "the FHIR base URL (where the SMART configuration is read)",
            &base,
        )?;
        secure(
            "the configured identity provider ([identity] issuer)",
            &parse_url("[identity] issuer", &settings.issuer)?,
        )?;
        let well_known = format!("{}/.well-known/smart-configuration", base.as_str());
        let response = http
            .get(&well_known)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| AuthError::Unreachable(format!("{well_known}: {e}")))?;
        if !response.status().is_success() {
            return Err(AuthError::Discovery(format!(
                "{well_known} answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let text = response
            .text()
            .await
            .map_err(|e| AuthError::Unreachable(format!("{well_known}: {e}")))?;
        let smart: SmartConfiguration = serde_json::from_str(&text)
            .map_err(|e| AuthError::Discovery(format!("{well_known}: {e}")))?;
        if !smart
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
        {
            return Err(AuthError::Discovery(format!(
                "{well_known} does not offer PKCE S256 (code_challenge_methods_supported); Hearth signs in only with it"
            )));
        }
        let issuer_text = smart
            .issuer
            .clone()
            .unwrap_or_else(|| settings.issuer.clone());
        if issuer_text.trim_end_matches('/') != settings.issuer.trim_end_matches('/') {
            return Err(AuthError::Discovery(format!(
                "the EHR names the identity provider {issuer_text}, but this workstation is configured for {}",
                settings.issuer
            )));
        }
        // The endpoints the SMART configuration names: https (RFC 8414 §2; loopback http
        // only for a test server on this computer).
        let endpoint = |name: &str, value: &str| -> Result<Url, AuthError> {
            let url = parse_url(&format!("{well_known} {name}"), value)?;
            secure(&format!("the SMART configuration's {name}"), &url)?;
            Ok(url)
        };
        let authorization = endpoint("authorization_endpoint", &smart.authorization_endpoint)?;
        let token = endpoint("token_endpoint", &smart.token_endpoint)?;
        let revocation = smart
            .revocation_endpoint
            .as_deref()
            .map(|r| endpoint("revocation_endpoint", r))
            .transpose()?;
        let issuer = IssuerUrl::new(issuer_text)
            .map_err(|e| AuthError::Discovery(format!("issuer: {e}")))?;
        let client = http.clone();
        let call = move |request: openidconnect::HttpRequest| send(client.clone(), request);
        let metadata = CoreProviderMetadata::discover_async(issuer.clone(), &call)
            .await
            .map_err(|e| {
                AuthError::Discovery(format!(
                    "OpenID Connect discovery of {}: {}",
                    issuer.as_str(),
                    chain(&e)
                ))
            })?;
        // The issuer's own discovery document (whose `issuer` openidconnect has checked is
        // the one asked, OIDC Discovery §4.3) is the authority on its endpoints: the SMART
        // configuration, served by the FHIR server, must name the same ones, or a code and
        // its PKCE verifier could be sent elsewhere.
        let jwks = metadata.jwks_uri().url();
        secure("the identity provider's jwks_uri", jwks)?;
        same_endpoint(
            "authorization_endpoint",
            &authorization,
            Some(metadata.authorization_endpoint().url()),
            &issuer,
        )?;
        same_endpoint(
            "token_endpoint",
            &token,
            metadata.token_endpoint().map(|t| t.url()),
            &issuer,
        )?;
        if let Some(revocation) = &revocation {
            // OpenID Connect discovery has no revocation endpoint: it must be the token
            // endpoint's server.
            if revocation.origin() != token.origin() {
                return Err(AuthError::Discovery(format!(
                    "the SMART configuration's revocation_endpoint {revocation} is not on the \
                     server of its token_endpoint {token}; Hearth sends tokens only to the \
                     identity provider"
                )));
            }
        }
        Ok(Arc::new(Self {
            settings,
            smart,
            issuer,
            keys: metadata.jwks().clone(),
            http,
        }))
    }

    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Whether the EHR says it supports `capability` (e.g. `launch-ehr`).
    pub fn has_capability(&self, capability: &str) -> bool {
        self.smart.capabilities.iter().any(|c| c == capability)
    }

    /// Revokes `token` at the provider's revocation endpoint (RFC 7009), `hint` being
    /// `refresh_token` or `access_token`. `Ok(false)`: the provider offers no revocation.
    pub async fn revoke(&self, token: &crate::Secret, hint: &str) -> Result<bool, AuthError> {
        let Some(endpoint) = self.smart.revocation_endpoint.as_deref() else {
            return Ok(false);
        };
        self.post_form(
            endpoint,
            &[
                ("token", token.expose()),
                ("token_type_hint", hint),
                ("client_id", self.settings.client_id.as_str()),
            ],
        )
        .await?;
        Ok(true)
    }

    /// POSTs a form to `url` and reads the JSON answer; an OAuth error answer becomes
    /// [`AuthError::TokenRefused`].
    pub(crate) async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<serde_json::Value, AuthError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .http
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| AuthError::Unreachable(format!("{url}: {}", chain(&e))))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| AuthError::Unreachable(format!("{url}: {}", chain(&e))))?;
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            // Revocation answers 200 with an empty body (RFC 7009).
            if text.trim().is_empty() {
                return Ok(serde_json::Value::Null);
            }
            return json.ok_or_else(|| {
                AuthError::BadResponse(format!("{url} answered HTTP {status} without JSON"))
            });
        }
        if status.is_server_error() {
            return Err(AuthError::Unreachable(format!(
                "{url} answered HTTP {status}"
            )));
        }
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Err(AuthError::TokenRefused {
            error: field("error").unwrap_or_else(|| format!("HTTP {}", status.as_u16())),
            description: field("error_description"),
        })
    }
}

fn parse_url(what: &str, text: &str) -> Result<Url, AuthError> {
    Url::parse(text).map_err(|e| AuthError::Discovery(format!("{what} {text:?} is not a URL: {e}")))
}

/// Whether `url` is on this computer's loopback interface, by address (a name such as
/// `localhost` could resolve elsewhere).
fn on_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// `what` at `url` may be used for sign-on: https, or http on the loopback interface (a test
/// server; RFC 8414 §2, RFC 8252 §8.3).
fn secure(what: &str, url: &Url) -> Result<(), AuthError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if on_loopback(url) => Ok(()),
        _ => Err(AuthError::Discovery(format!(
            "{what} is {url}: sign-on endpoints must use https (http only on this computer's \
             loopback address, for testing)"
        ))),
    }
}

/// The SMART configuration's endpoint `name` must be the identity provider's own: the one its
/// OpenID Connect discovery names, or (when that names none) one on the issuer's server.
fn same_endpoint(
    name: &str,
    smart: &Url,
    provider: Option<&Url>,
    issuer: &IssuerUrl,
) -> Result<(), AuthError> {
    let consistent = match provider {
        Some(theirs) => theirs == smart,
        None => issuer.url().origin() == smart.origin(),
    };
    if consistent {
        return Ok(());
    }
    let named = provider.map_or_else(
        || format!("its issuer is {}", issuer.as_str()),
        |u| format!("its discovery names {u}"),
    );
    Err(AuthError::Discovery(format!(
        "the SMART configuration's {name} {smart} is not the identity provider's ({named}); \
         Hearth uses only the provider's own endpoints"
    )))
}

/// An error and its sources, one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The `openidconnect` crate's HTTP calls, made with Hearth's reqwest client.
async fn send(
    client: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError(chain(&e)))?;
    let mut builder = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let bytes = response.bytes().await.map_err(|e| HttpError(chain(&e)))?;
    builder
        .body(bytes.to_vec())
        .map_err(|e| HttpError(e.to_string()))
}
