//! Ties a clinician to a visit: before a join link is made, a roster is read or a clinician
//! hosts, the service reads the visit's `Appointment/{id}` from the EHR and requires the
//! clinician's `fhirUser` among its participants (`participant.actor.reference`, a declined
//! participant not counting). It reads as itself: SMART Backend Services (client_credentials
//! with a private_key_jwt assertion, RFC 7523; scope `system/Appointment.rs`), the token
//! endpoint discovered from `<fhir base>/.well-known/smart-configuration`. A yes is kept for a
//! minute per (visit, clinician); when the EHR cannot be asked, the answer is no
//! (`ehr_unavailable`: fail closed).

use crate::error::Refusal;
use crate::settings::Ehr;
use hearth_visit_protocol::{ErrorCode, Secret};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a yes is believed.
const KEEP_YES: Duration = Duration::from_secs(60);
/// The scope the service asks for.
pub const SCOPE: &str = "system/Appointment.rs";
/// Yeses kept at most (older ones are dropped first when full).
const MAX_KEPT: usize = 10_000;

pub struct AppointmentCheck {
    ehr: Option<Ehr>,
    http: reqwest::Client,
    token: Mutex<Option<(Secret, Instant)>>,
    token_endpoint: Mutex<Option<String>>,
    yes: std::sync::Mutex<HashMap<(String, String), Instant>>,
}

fn unavailable(why: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        ErrorCode::EhrUnavailable,
        format!(
            "the visit service cannot ask the EHR whether you are on this appointment ({why}); \
             try again"
        ),
    )
}

fn not_on_appointment(why: &str) -> Refusal {
    Refusal::new(
        ErrorCode::NotOnAppointment,
        format!("only a clinician on the visit's appointment may do this: {why}"),
    )
}

/// A reference as the service compares it: relative to `base` when it is under it, without a
/// `/_history/...` version.
fn normalize<'a>(reference: &'a str, base: &str) -> &'a str {
    let r = reference.trim();
    let r = r
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(r);
    match r.find("/_history/") {
        Some(i) => &r[..i],
        None => r,
    }
}

/// Why a clinician is refused a visit, whether the EHR has no such appointment, it is not
/// going ahead, or it does not list them: one answer, so that a refusal does not tell which
/// appointment ids exist.
const NOT_YOURS: &str =
    "the EHR has no appointment with the visit's id that is going ahead and lists you as a participant";

/// Whether `appointment` is the Appointment `id` and may still take place: not `cancelled`
/// nor `entered-in-error` (FHIR R4 Appointment.status, AppointmentStatus value set).
pub fn is_open_appointment(appointment: &serde_json::Value, id: &str) -> bool {
    appointment.get("resourceType").and_then(|t| t.as_str()) == Some("Appointment")
        && appointment.get("id").and_then(|i| i.as_str()) == Some(id)
        && !matches!(
            appointment.get("status").and_then(|s| s.as_str()),
            Some("cancelled" | "entered-in-error")
        )
}

/// Whether `appointment` (an Appointment resource) has `fhir_user` among its participants.
pub fn has_participant(appointment: &serde_json::Value, fhir_user: &str, base: &str) -> bool {
    let who = normalize(fhir_user, base);
    appointment
        .get("participant")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter(|p| p.get("status").and_then(|s| s.as_str()) != Some("declined"))
        .filter_map(|p| p.pointer("/actor/reference").and_then(|r| r.as_str()))
        .any(|r| normalize(r, base) == who)
}

#[derive(serde::Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    jti: String,
}

impl AppointmentCheck {
    pub fn new(ehr: Option<Ehr>) -> Self {
        let http = crate::outbound_http();
        Self {
            ehr,
            http,
            token: Mutex::new(None),
            token_endpoint: Mutex::new(None),
            yes: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn yes(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Instant>> {
        self.yes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses unless `fhir_user` is a participant of `Appointment/{visit}` in the EHR.
    pub async fn require(&self, visit: &str, fhir_user: Option<&str>) -> Result<(), Refusal> {
        let Some(ehr) = &self.ehr else {
            return Err(unavailable("no [ehr] is configured"));
        };
        if !hearth_fhir::is_id(visit) {
            return Err(Refusal::new(
                ErrorCode::BadMessage,
                "a visit is an Appointment's FHIR logical id",
            ));
        }
        let Some(fhir_user) = fhir_user else {
            return Err(not_on_appointment("the sign-in names no fhirUser"));
        };
        let key = (visit.to_owned(), fhir_user.to_owned());
        if self
            .yes()
            .get(&key)
            .is_some_and(|at| at.elapsed() < KEEP_YES)
        {
            return Ok(());
        }
        let appointment = self.read_appointment(ehr, visit).await?;
        if !is_open_appointment(&appointment, visit)
            || !has_participant(&appointment, fhir_user, &ehr.fhir_base_url)
        {
            return Err(not_on_appointment(NOT_YOURS));
        }
        let mut yes = self.yes();
        if yes.len() >= MAX_KEPT {
            yes.retain(|_, at| at.elapsed() < KEEP_YES);
            if yes.len() >= MAX_KEPT {
                yes.clear();
            }
        }
        yes.insert(key, Instant::now());
        Ok(())
    }

    /// `Appointment/{visit}`, with a fresh token once if the cached one is refused.
    async fn read_appointment(&self, ehr: &Ehr, visit: &str) -> Result<serde_json::Value, Refusal> {
        let url = format!("{}/Appointment/{visit}", ehr.fhir_base_url);
        for attempt in 0..2 {
            let token = self.token(ehr).await?;
            let response = self
                .http
                .get(&url)
                .bearer_auth(token.expose())
                .header("accept", "application/fhir+json")
                .send()
                .await
                .map_err(|e| unavailable(format!("the EHR at {}: {e}", ehr.fhir_base_url)))?;
            let status = response.status().as_u16();
            match status {
                200 => {
                    let bytes = response
                        .bytes()
                        .await
                        .map_err(|e| unavailable(format!("reading the appointment: {e}")))?;
                    return serde_json::from_slice(&bytes)
                        .map_err(|_| unavailable("the EHR's appointment is not JSON"));
                }
                404 | 410 => return Err(not_on_appointment(NOT_YOURS)),
                401 if attempt == 0 => {
                    *self.token.lock().await = None;
                }
                _ => {
                    return Err(unavailable(format!(
                        "the EHR answered {status} reading the appointment"
                    )))
                }
            }
        }
        Err(unavailable("the EHR refused the service's token"))
    }

    /// The service's access token at the EHR (kept until a minute before it expires).
    async fn token(&self, ehr: &Ehr) -> Result<Secret, Refusal> {
        let mut token = self.token.lock().await;
        if let Some((t, until)) = token.as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let endpoint = self.token_endpoint(ehr).await?;
        let now = crate::now_ms() / 1000;
        let mut header = jsonwebtoken::Header::new(ehr.algorithm);
        header.kid = ehr.key_id.clone();
        header.typ = Some("JWT".into());
        let assertion = jsonwebtoken::encode(
            &header,
            &Assertion {
                iss: &ehr.client_id,
                sub: &ehr.client_id,
                aud: &endpoint,
                exp: now + 300,
                iat: now,
                jti: crate::tokens::random_id(),
            },
            &ehr.signing_key().map_err(unavailable)?,
        )
        .map_err(|e| unavailable(format!("signing the client assertion: {e}")))?;
        let response = self
            .http
            .post(&endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ]))
            .send()
            .await
            .map_err(|e| unavailable(format!("the EHR's token endpoint: {e}")))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("the EHR's token endpoint: {e}")))?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            let error = json["error"].as_str().unwrap_or("?");
            return Err(unavailable(format!(
                "the EHR's token endpoint refused the service ({status}, {error})"
            )));
        }
        let access = json["access_token"]
            .as_str()
            .ok_or_else(|| unavailable("the EHR's token answer has no access_token"))?;
        let life = json["expires_in"].as_u64().unwrap_or(300);
        let secret = Secret::new(access);
        *token = Some((
            secret.clone(),
            Instant::now() + Duration::from_secs(life.saturating_sub(60).max(life / 2)),
        ));
        Ok(secret)
    }

    async fn token_endpoint(&self, ehr: &Ehr) -> Result<String, Refusal> {
        let mut endpoint = self.token_endpoint.lock().await;
        if let Some(e) = endpoint.as_ref() {
            return Ok(e.clone());
        }
        let url = format!("{}/.well-known/smart-configuration", ehr.fhir_base_url);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unavailable(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("{url} answered {}", response.status())));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("{url}: {e}")))?;
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| unavailable(format!("{url}: not JSON")))?;
        let found = doc["token_endpoint"]
            .as_str()
            .ok_or_else(|| unavailable(format!("{url} names no token_endpoint")))?
            .to_owned();
        *endpoint = Some(found.clone());
        Ok(found)
    }
}

/// An `application/x-www-form-urlencoded` body, as hearth-auth writes its token requests.
fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::{has_participant, is_open_appointment};

    #[test]
    fn only_the_asked_appointment_going_ahead_counts() {
        let appt = |status: &str| serde_json::json!({"resourceType": "Appointment", "id": "a1", "status": status});
        for going in [
            "proposed",
            "pending",
            "booked",
            "arrived",
            "checked-in",
            "fulfilled",
        ] {
            assert!(is_open_appointment(&appt(going), "a1"), "{going}");
        }
        for over in ["cancelled", "entered-in-error"] {
            assert!(!is_open_appointment(&appt(over), "a1"), "{over}");
        }
        assert!(!is_open_appointment(&appt("booked"), "a2"), "another id");
        let mut not_appt = appt("booked");
        not_appt["resourceType"] = "Encounter".into();
        assert!(!is_open_appointment(&not_appt, "a1"), "another type");
    }

    #[test]
    fn participants_are_compared_in_relative_and_absolute_forms() {
        let base = "https://ehr.example/fhir";
        let appt = serde_json::json!({"participant": [
            {"actor": {"reference": "Patient/9"}, "status": "accepted"},
            {"actor": {"reference": "https://ehr.example/fhir/Practitioner/a"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/b/_history/3"}, "status": "tentative"},
            {"actor": {"reference": "Practitioner/c"}, "status": "declined"},
        ]});
        for yes in [
            "Practitioner/a",
            "https://ehr.example/fhir/Practitioner/a",
            "Practitioner/b",
            "https://ehr.example/fhir/Practitioner/b",
        ] {
            assert!(has_participant(&appt, yes, base), "{yes}");
        }
        for no in [
            "Practitioner/c",
            "Practitioner/d",
            "Practitioner/ab",
            "https://other.example/fhir/Practitioner/a",
            "Practitioner",
        ] {
            assert!(!has_participant(&appt, no, base), "{no}");
        }
        assert!(!has_participant(
            &serde_json::json!({}),
            "Practitioner/a",
            base
        ));
    }
}
