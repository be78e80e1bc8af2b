//! Clinicians authenticate with the access token their identity provider issued to Hearth. It
//! must be a JWT access token (RFC 9068: header `typ` `at+jwt`) signed by a key in the
//! provider's JWKS, from the configured issuer, for one of the configured audiences, not expired,
//! not before its `nbf`, issued (`iat`) no later than now; and it must be a clinician's token
//! for Hearth: issued to Hearth's client (`client_id`, or `azp`, is the configured one) for a
//! user whose SMART `fhirUser` is a `Practitioner` or `PractitionerRole`. A patient-facing app's
//! token for the same FHIR base is refused (`not_clinician`). Keys are fetched once and again
//! when a token names a key id the service has not seen (key rotation), at most once a minute.

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
    /// When the access token expires (Unix ms): the clinician's authority in a visit ends
    /// with it (a resume after it is refused; hosting again shows a fresh token).
    pub expires_ms: u64,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
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
/// Clock skew tolerated on `exp`, `nbf` and `iat` (seconds).
const LEEWAY: u64 = 30;

fn not_clinician(why: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        ErrorCode::NotClinician,
        format!("only a clinician signed in to Hearth may do this: {why}"),
    )
}

/// Whether `fhir_user` (a relative or absolute FHIR reference) names a Practitioner or a
/// PractitionerRole.
pub fn is_practitioner(fhir_user: &str) -> bool {
    let mut parts = fhir_user.trim_end_matches('/').rsplit('/');
    let (Some(id), Some(kind)) = (parts.next(), parts.next()) else {
        return false;
    };
    matches!(kind, "Practitioner" | "PractitionerRole") && hearth_fhir::is_id(id)
}

fn unauthorized(why: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        ErrorCode::Unauthorized,
        format!("the clinician's sign-in was not accepted: {why}"),
    )
}

impl Verifier {
    pub fn new(identity: Identity) -> Self {
        let http = crate::outbound_http();
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
        // RFC 9068 §2.1, §4: a JWT access token says so in its header, so that an ID token or
        // another JWT the provider signed cannot stand in for one.
        let typ = header
            .typ
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if typ != "at+jwt" && typ != "application/at+jwt" {
            return Err(unauthorized(
                "the token is not an access token (typ at+jwt)",
            ));
        }
        // Asymmetric signatures only: a shared-secret (HS*) token could be made by anyone who
        // holds the secret, and the provider's JWKS publishes public keys.
        if !matches!(
            header.alg,
            jsonwebtoken::Algorithm::RS256
                | jsonwebtoken::Algorithm::RS384
                | jsonwebtoken::Algorithm::RS512
                | jsonwebtoken::Algorithm::PS256
                | jsonwebtoken::Algorithm::PS384
                | jsonwebtoken::Algorithm::PS512
                | jsonwebtoken::Algorithm::ES256
                | jsonwebtoken::Algorithm::ES384
                | jsonwebtoken::Algorithm::EdDSA
        ) {
            return Err(unauthorized(
                "the access token is signed with an algorithm the service does not accept",
            ));
        }
        let kid = header.kid.clone();
        let key = self.key_for(kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.identity.issuer]);
        validation.set_audience(&self.identity.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY;
        let data = decode::<Claims>(token.expose(), &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => unauthorized("the access token has expired"),
                ErrorKind::ImmatureSignature => unauthorized("the access token is not valid yet"),
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
        let claims = data.claims;
        let now = crate::now_ms() / 1000;
        match claims.iat {
            Some(iat) if iat <= now + LEEWAY => {}
            Some(_) => return Err(unauthorized("the access token is issued in the future")),
            None => return Err(unauthorized("the access token has no issue time")),
        }
        // Hearth's own token: `client_id` (RFC 9068) or, from providers that use it, `azp`.
        let client = claims.client_id.as_deref().or(claims.azp.as_deref());
        if client != Some(self.identity.client_id.as_str()) {
            return Err(not_clinician("the token was issued to another application"));
        }
        if !claims.fhir_user.as_deref().is_some_and(is_practitioner) {
            return Err(not_clinician(
                "the signed-in user is not a practitioner (fhirUser)",
            ));
        }
        Ok(Clinician {
            subject: claims.sub,
            fhir_user: claims.fhir_user,
            name: claims.name,
            expires_ms: claims.exp.saturating_mul(1000),
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

#[cfg(test)]
mod tests {
    use super::is_practitioner;

    #[test]
    fn practitioners_are_told_from_patients() {
        for yes in [
            "Practitioner/abc",
            "PractitionerRole/r-1",
            "https://ehr.example/fhir/Practitioner/abc",
        ] {
            assert!(is_practitioner(yes), "{yes}");
        }
        for no in [
            "Patient/9",
            "RelatedPerson/1",
            "Practitioner",
            "Practitioner/",
            "https://ehr.example/fhir/Patient/Practitioner",
            "XPractitioner/1",
            "Practitioner/a b",
        ] {
            assert!(!is_practitioner(no), "{no}");
        }
    }
}
