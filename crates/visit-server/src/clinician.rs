//! Clinicians authenticate with the access token their identity provider issued to Hearth. It
//! must be a JWT signed by a key in the provider's JWKS, from the configured issuer, for one of
//! the configured audiences, and not expired. Keys are fetched once and again when a token
//! names a key id the service has not seen (key rotation), at most once a minute.

use crate::error::Refusal;
use crate::settings::Identity;
use hearth_visit_protocol::{ErrorCode, Secret};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Who a valid access token says the clinician is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clinician {
    pub subject: String,
    /// `Practitioner/...` when the provider says (SMART `fhirUser`).
    pub fhir_user: Option<String>,
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, rename = "fhirUser")]
    fhir_user: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

pub struct Verifier {
    identity: Identity,
    http: reqwest::Client,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    set: Option<JwkSet>,
    fetched: Option<Instant>,
}

const REFETCH_AFTER: Duration = Duration::from_secs(60);

fn unauthorized(why: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        ErrorCode::Unauthorized,
        format!("the clinician's sign-in was not accepted: {why}"),
    )
}

impl Verifier {
    pub fn new(identity: Identity) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            identity,
            http,
            keys: Mutex::new(Keys::default()),
        }
    }

    /// Verifies `token` and returns the clinician it names.
    pub async fn verify(&self, token: &Secret) -> Result<Clinician, Refusal> {
        let header = decode_header(token.expose())
            .map_err(|_| unauthorized("the access token is not a signed JWT"))?;
        let kid = header.kid.clone();
        let key = self.key_for(kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.identity.issuer]);
        validation.set_audience(&self.identity.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let data = decode::<Claims>(token.expose(), &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => unauthorized("the access token has expired"),
                ErrorKind::InvalidIssuer => unauthorized("the access token is from another issuer"),
                ErrorKind::InvalidAudience => {
                    unauthorized("the access token is for another audience")
                }
                ErrorKind::InvalidSignature => {
                    unauthorized("the access token's signature does not verify")
                }
                _ => unauthorized("the access token could not be checked"),
            }
        })?;
        Ok(Clinician {
            subject: data.claims.sub,
            fhir_user: data.claims.fhir_user,
            name: data.claims.name,
        })
    }

    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: jsonwebtoken::Algorithm,
    ) -> Result<DecodingKey, Refusal> {
        let mut keys = self.keys.lock().await;
        for attempt in 0..2 {
            let stale = keys.fetched.is_none_or(|at| at.elapsed() >= REFETCH_AFTER);
            if keys.set.is_none() || (attempt == 1 && stale) {
                keys.set = Some(self.fetch().await?);
                keys.fetched = Some(Instant::now());
            }
            let found = keys.set.as_ref().and_then(|set| match kid {
                Some(kid) => set.find(kid).cloned(),
                // Without a key id, the one key for the algorithm, if there is exactly one.
                None => {
                    let alg = format!("{alg:?}");
                    let mut usable = set.keys.iter().filter(|k| {
                        k.common
                            .key_algorithm
                            .is_none_or(|a| format!("{a:?}") == alg)
                    });
                    match (usable.next(), usable.next()) {
                        (Some(k), None) => Some(k.clone()),
                        _ => None,
                    }
                }
            });
            if let Some(jwk) = found {
                return DecodingKey::from_jwk(&jwk)
                    .map_err(|_| unauthorized("the provider's signing key is unusable"));
            }
            if attempt == 1 || !stale {
                break;
            }
        }
        Err(unauthorized(
            "the access token is signed with a key the provider does not publish",
        ))
    }

    async fn fetch(&self) -> Result<JwkSet, Refusal> {
        let jwks_uri = match &self.identity.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.identity.issuer.trim_end_matches('/')
                );
                let doc: serde_json::Value = self.get_json(&url).await?;
                doc.get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Refusal::unavailable("the identity provider's discovery names no jwks_uri")
                    })?
            }
        };
        self.get_json(&jwks_uri).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Refusal> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| Refusal::unavailable(format!("identity provider at {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(Refusal::unavailable(format!(
                "identity provider at {url} answered {}",
                response.status()
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Refusal::unavailable(format!("identity provider at {url}: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Refusal::unavailable(format!("identity provider at {url}: {e}")))
    }
}
