//! A SMART on FHIR EHR for sign-on tests: the real FHIR server (sekmet) behind a gateway that
//! accepts only access tokens the real OpenID Connect provider (npm `oidc-provider`) says are
//! active (RFC 7662 introspection). Both come from `tests/peers/smart/server.mjs`, installed
//! with its pinned packages by `scripts/setup` under `$HEARTH_PEERS/smart`.
//!
//! [`browser_login`] plays the user's browser: follows the provider's redirects, fills its
//! login form, and delivers the final redirect to Hearth's loopback port.

use crate::{
    clinic, free_port, peers_dir, reserve_port, workspace_root, FhirServer, KillOnDrop, Proxy,
};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};

/// The clinician who can sign in at the test provider.
pub const USER_NAME: &str = "mokafor";
pub const USER_PASSWORD: &str = "hearth-test-password";
pub const USER_DISPLAY: &str = "Dr. Mara Okafor";
pub const USER_FHIR: &str = "Practitioner/hearth-dr-okafor";
/// How long the SMART peer (Node.js) may take to start and print its ready line.
const PEER_START: std::time::Duration = std::time::Duration::from_secs(60);
/// The patient who can sign in at the test provider (through the `patient-app` client).
pub const PATIENT_USER: &str = "apatient";
pub const PATIENT_PASSWORD: &str = "hearth-patient-password";
pub const PATIENT_FHIR: &str = "Patient/9";
/// The visit service's own client at the provider (SMART Backend Services, private_key_jwt).
pub const VISIT_CLIENT_ID: &str = "hearth-visit";
/// The key id of the visit service's key registered at the provider.
pub const VISIT_CLIENT_KID: &str = "hearth-visit-test-1";

pub struct SmartEhr {
    /// The FHIR server behind the gateway (none for [`SmartEhr::identity_only`]).
    pub fhir: Option<FhirServer>,
    /// The OpenID Connect issuer.
    pub issuer: String,
    /// The FHIR base URL the gateway serves (what Hearth is configured with).
    pub fhir_base: String,
    /// The private key (PKCS#8 PEM, P-384 for ES384) of [`VISIT_CLIENT_ID`], whose public
    /// half the provider knows: the visit service's `[ehr] private_key_file`.
    pub visit_client_key: tempfile::NamedTempFile,
    _process: KillOnDrop,
    log: tempfile::NamedTempFile,
}

impl SmartEhr {
    /// Hearth's machine configuration for this EHR and its provider, with a "browser" that
    /// is a command writing the sign-in URL to `url_file` (the test then plays the browser);
    /// `extra` is appended (more sections).
    pub fn machine_config(&self, url_file: &std::path::Path, extra: &str) -> String {
        format!(
            "[ehr]\nfhir_base_url = \"{}\"\n[identity]\nissuer = \"{}\"\nclient_id = \"hearth\"\n\
             browser = [\"sh\", \"-c\", \"printf '%s' \\\"$0\\\" > {f}.tmp && mv {f}.tmp {f}\", \"{{url}}\"]\n\
             {extra}",
            self.fhir_base,
            self.issuer,
            f = url_file.display(),
        )
    }

    /// An EHR with an empty FHIR server.
    pub fn start() -> Self {
        let gateway = reserve_port();
        Self::around(
            FhirServer::start_with_public_port(Some(port_of(&gateway))),
            gateway,
        )
    }

    /// [`SmartEhr::start`] whose access tokens live `seconds` (the default is an hour): a
    /// test sees renewals, and tokens running out, within seconds.
    pub fn start_with_access_ttl(seconds: u32) -> Self {
        let gateway = reserve_port();
        let fhir = FhirServer::start_with_public_port(Some(port_of(&gateway)));
        let port = fhir.port;
        Self::with_settings(Some(fhir), gateway, port, Some(seconds))
    }

    /// An EHR with the Synthea clinic and today's schedule; `None` (after reporting the skip)
    /// when the sample data is absent.
    pub fn with_clinic(test: &str) -> Option<(Self, clinic::Clinic)> {
        let gateway = reserve_port();
        let (fhir, clinic) = clinic::server_with_clinic_at(test, Some(port_of(&gateway)))?;
        Some((Self::around(fhir, gateway), clinic))
    }

    /// [`SmartEhr::with_clinic`] whose gateway reaches the FHIR server through a cuttable link:
    /// cut, the EHR is out of Hearth's reach (the gateway answers 502) while another client
    /// still changes records at the FHIR server directly.
    pub fn with_clinic_behind_link(test: &str) -> Option<(Self, clinic::Clinic, Proxy)> {
        let gateway = reserve_port();
        let (fhir, clinic) = clinic::server_with_clinic_at(test, Some(port_of(&gateway)))?;
        let link = Proxy::start(fhir.port);
        let ehr = Self::with_upstream(Some(fhir), gateway, link.port);
        Some((ehr, clinic, link))
    }

    /// Only the identity provider (the gateway's FHIR server is absent): for services that
    /// check the clinician's token themselves, such as the visit service.
    pub fn identity_only() -> Self {
        Self::with_upstream(None, reserve_port(), free_port())
    }

    fn around(fhir: FhirServer, gateway: TcpListener) -> Self {
        let port = fhir.port;
        Self::with_upstream(Some(fhir), gateway, port)
    }

    fn with_upstream(fhir: Option<FhirServer>, gateway: TcpListener, upstream: u16) -> Self {
        Self::with_settings(fhir, gateway, upstream, None)
    }

    fn with_settings(
        fhir: Option<FhirServer>,
        gateway: TcpListener,
        upstream: u16,
        access_ttl: Option<u32>,
    ) -> Self {
        let dir = peers_dir().join("smart");
        let script = dir.join("server.mjs");
        let ours = workspace_root().join("tests/peers/smart/server.mjs");
        assert!(
            dir.join("node_modules/oidc-provider").exists()
                && std::fs::read(&script).ok() == std::fs::read(&ours).ok(),
            "the SMART test peer in {} is missing or older than {} (run scripts/setup)",
            dir.display(),
            ours.display()
        );
        let log = tempfile::NamedTempFile::new().expect("peer log");
        let (visit_client_key, visit_client_jwk) = visit_client_key();
        let mut command = Command::new("node");
        if let Some(ttl) = access_ttl {
            command.env("ACCESS_TOKEN_TTL", ttl.to_string());
        }
        let mut child = command
            .arg(&script)
            .current_dir(&dir)
            .env("OIDC_PORT", "0")
            // The gateway's socket, bound here and held since its port was chosen, handed over
            // as the peer's standard input (fd 0).
            .env("GATEWAY_FD", "0")
            .env("UPSTREAM", format!("http://127.0.0.1:{upstream}"))
            .env("USER_NAME", USER_NAME)
            .env("USER_PASSWORD", USER_PASSWORD)
            .env("USER_DISPLAY", USER_DISPLAY)
            .env("USER_FHIR", USER_FHIR)
            .env("PATIENT_NAME", PATIENT_USER)
            .env("PATIENT_PASSWORD", PATIENT_PASSWORD)
            .env("PATIENT_FHIR", PATIENT_FHIR)
            .env("VISIT_CLIENT_JWK", visit_client_jwk.to_string())
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(gateway)))
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("peer log"))
            .spawn()
            .expect("node (Debian package nodejs) must be installed: run scripts/setup");
        let stdout = child.stdout.take().expect("peer stdout");
        let process = KillOnDrop(child);
        // Its ready line, read by a thread of its own so that the wait is bounded; then its
        // stdout is kept open and drained there: a closed pipe would kill the peer at its
        // next console line (EPIPE).
        let (ready_line, read) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut line);
            let _ = ready_line.send(line);
            std::io::copy(&mut reader, &mut std::io::sink())
        });
        let line = read.recv_timeout(PEER_START).unwrap_or_else(|_| {
            panic!(
                "the SMART peer did not say it was ready within {PEER_START:?}\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            )
        });
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "the SMART peer did not start: {line}\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            )
        });
        Self {
            issuer: ready["issuer"].as_str().expect("issuer").to_string(),
            fhir_base: ready["fhir_base"].as_str().expect("fhir_base").to_string(),
            fhir,
            visit_client_key,
            _process: process,
            log,
        }
    }

    /// Adds `reference` (e.g. [`USER_FHIR`]) as an accepted participant of the FHIR server's
    /// `Appointment/{id}`, directly (no token). Panics without a FHIR server.
    pub fn add_participant(&self, id: &str, reference: &str) {
        let fhir = self
            .fhir
            .as_ref()
            .expect("add_participant needs a FHIR server");
        let path = format!("/fhir/Appointment/{id}");
        let mut appt: serde_json::Value =
            serde_json::from_str(&fhir.get_json(&path)).expect("an Appointment");
        let participant =
            serde_json::json!({"actor": {"reference": reference}, "status": "accepted"});
        match appt["participant"].as_array_mut() {
            Some(list) => list.push(participant),
            None => appt["participant"] = serde_json::json!([participant]),
        }
        let (status, text) = fhir
            .request("PUT", &path, Some(&appt.to_string()))
            .expect("FHIR server request");
        assert_eq!(status, 200, "PUT {path}: {text}");
    }

    /// Puts `Appointment/{id}` (booked, now to an hour from now) into the FHIR server behind
    /// the gateway, directly (no token), with `practitioners` (references such as
    /// [`USER_FHIR`]) as its participants beside a patient. Panics without a FHIR server.
    pub fn put_appointment(&self, id: &str, practitioners: &[&str]) {
        self.put_appointment_with_status(id, practitioners, "booked");
    }

    /// [`SmartEhr::put_appointment`] with another `status` (e.g. `cancelled`).
    pub fn put_appointment_with_status(&self, id: &str, practitioners: &[&str], status: &str) {
        let fhir = self
            .fhir
            .as_ref()
            .expect("put_appointment needs SmartEhr::start (a FHIR server)");
        let now = chrono::Utc::now();
        let mut participant: Vec<serde_json::Value> = practitioners
            .iter()
            .map(|r| serde_json::json!({"actor": {"reference": r}, "status": "accepted"}))
            .collect();
        participant
            .push(serde_json::json!({"actor": {"reference": PATIENT_FHIR}, "status": "accepted"}));
        let body = serde_json::json!({
            "resourceType": "Appointment",
            "id": id,
            "status": status,
            "start": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "end": (now + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "participant": participant,
        });
        let (status, text) = fhir
            .request(
                "PUT",
                &format!("/fhir/Appointment/{id}"),
                Some(&body.to_string()),
            )
            .expect("FHIR server request");
        assert!(
            status == 200 || status == 201,
            "PUT Appointment/{id} refused ({status}): {text}"
        );
    }

    /// What the peer printed on stderr.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        off_runtime(|| self.control_now(path, body))
    }

    fn control_now(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let response = http()
            .post(format!("{}{path}", self.issuer))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("the SMART peer's control endpoint");
        serde_json::from_str(&response.text().expect("control answer"))
            .expect("control answer is JSON")
    }

    /// Registers an EHR launch with this context; returns the `launch` value.
    /// A clinician's access token (a JWT signed by the provider), got the way a native app
    /// gets one: authorization code with PKCE S256, the scripted browser signing in.
    pub fn clinician_access_token(&self) -> String {
        off_runtime(|| {
            self.access_token_now(
                "hearth",
                (USER_NAME, USER_PASSWORD),
                "openid fhirUser profile user/*.rs",
                None,
            )
        })
    }

    /// [`SmartEhr::clinician_access_token`] for another resource server than the FHIR base
    /// (RFC 8707 `resource`, e.g. the visit service's public URL): its `aud` is `resource`.
    pub fn clinician_access_token_for(&self, resource: &str) -> String {
        off_runtime(|| {
            self.access_token_now(
                "hearth",
                (USER_NAME, USER_PASSWORD),
                "openid fhirUser",
                Some(resource),
            )
        })
    }

    /// An access token a patient-facing app of the same organisation holds: client
    /// `patient-app`, the patient signed in (`fhirUser` is [`PATIENT_FHIR`]), patient scopes,
    /// for the same FHIR base as Hearth's.
    pub fn patient_app_access_token(&self) -> String {
        self.patient_app_access_token_for(None)
    }

    /// [`SmartEhr::patient_app_access_token`], for `resource` when given (RFC 8707).
    pub fn patient_app_access_token_for(&self, resource: Option<&str>) -> String {
        let scope = if resource.is_some() {
            "openid fhirUser"
        } else {
            "openid fhirUser profile patient/*.rs"
        };
        off_runtime(|| {
            self.access_token_now(
                "patient-app",
                (PATIENT_USER, PATIENT_PASSWORD),
                scope,
                resource,
            )
        })
    }

    /// An access token of `client` for `user`: the clinician signing in at another app of the
    /// organisation (e.g. `patient-app` with user scopes); for `resource` when given.
    pub fn access_token_for(
        &self,
        client: &str,
        clinician: bool,
        scope: &str,
        resource: Option<&str>,
    ) -> String {
        let user = if clinician {
            (USER_NAME, USER_PASSWORD)
        } else {
            (PATIENT_USER, PATIENT_PASSWORD)
        };
        off_runtime(|| self.access_token_now(client, user, scope, resource))
    }

    /// Makes the provider spoil the next access token it issues, re-signed with its real key:
    /// `typ` (a plain `JWT`, not `at+jwt`), `not-yet` (`nbf` an hour ahead) or `future-iat`
    /// (issued an hour from now).
    pub fn spoil_next_access_token(&self, how: &str) {
        self.control(
            "/_test/spoil-next-access-token",
            serde_json::json!({"how": how}),
        );
    }

    fn access_token_now(
        &self,
        client: &str,
        (user, password): (&str, &str),
        scope: &str,
        resource: Option<&str>,
    ) -> String {
        use base64::Engine;
        use sha2::Digest;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let verifier = b64.encode(rand::random::<[u8; 32]>());
        let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
        let state = b64.encode(rand::random::<[u8; 16]>());
        let redirect = "http://127.0.0.1:9/callback";
        let mut authorize = format!(
            "{}/auth?response_type=code&client_id={client}&redirect_uri={}&scope={}&state={state}\
             &code_challenge={challenge}&code_challenge_method=S256&aud={}",
            self.issuer,
            form_encode(redirect),
            form_encode(scope),
            form_encode(&self.fhir_base)
        );
        if let Some(resource) = resource {
            authorize.push_str(&format!("&resource={}", form_encode(resource)));
        }
        let back = browse(&authorize, redirect, user, password, false)
            .unwrap_or_else(|e| panic!("signing in at the test provider: {e}"));
        let code = back
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("code="))
            .unwrap_or_else(|| panic!("no code in {back}"))
            .to_owned();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("client_id", client),
            ("code_verifier", verifier.as_str()),
        ];
        if let Some(resource) = resource {
            form.push(("resource", resource));
        }
        let answer = http()
            .post(format!("{}/token", self.issuer))
            .form(&form)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("token request: {e}"));
        let json: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("token answer {answer}: {e}"));
        json["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token in {answer}"))
            .to_owned()
    }

    pub fn register_launch(&self, patient: &str, encounter: Option<&str>) -> String {
        let answer = self.control(
            "/_test/launch",
            serde_json::json!({"patient": patient, "encounter": encounter}),
        );
        answer["launch"].as_str().expect("launch").to_string()
    }

    /// Makes the provider spoil the next ID token it issues: `signature`, `audience`,
    /// `expired` or `issuer` (the last three re-signed with its real key).
    pub fn spoil_next_id_token(&self, how: &str) {
        self.control(
            "/_test/spoil-next-id-token",
            serde_json::json!({"how": how}),
        );
    }

    /// Redeems a refresh token directly at the token endpoint, as an attacker holding an old
    /// one would; returns the OAuth error (`invalid_grant`) or `ok`.
    pub fn try_refresh(&self, refresh_token: &str) -> String {
        off_runtime(|| self.try_refresh_now(refresh_token))
    }

    fn try_refresh_now(&self, refresh_token: &str) -> String {
        let body = format!(
            "grant_type=refresh_token&client_id=hearth&refresh_token={}",
            form_encode(refresh_token)
        );
        let response = http()
            .post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .expect("token endpoint");
        let ok = response.status().is_success();
        let json: serde_json::Value =
            serde_json::from_str(&response.text().unwrap_or_default()).unwrap_or_default();
        if ok {
            "ok".into()
        } else {
            json["error"].as_str().unwrap_or("?").to_string()
        }
    }

    /// Revokes `token` (a refresh token) at the provider's revocation endpoint (RFC 7009), as
    /// IT would when a user leaves or a device is lost.
    pub fn revoke_refresh_token(&self, token: &str) {
        off_runtime(|| {
            let status = http()
                .post(format!("{}/token/revocation", self.issuer))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "client_id=hearth&token_type_hint=refresh_token&token={}",
                    form_encode(token)
                ))
                .send()
                .expect("revocation endpoint")
                .status();
            assert!(status.is_success(), "revocation answered {status}");
        })
    }

    /// A FHIR read through the gateway with `token`; the HTTP status.
    pub fn fhir_status_with(&self, path: &str, token: &str) -> u16 {
        off_runtime(|| {
            http()
                .get(format!("{}{path}", self.fhir_base))
                .header("authorization", format!("Bearer {token}"))
                .send()
                .expect("gateway")
                .status()
                .as_u16()
        })
    }
}

/// A fresh P-384 key for the visit service's client: its PKCS#8 PEM in a file, and its public
/// JWK (for the provider's client registration).
pub fn visit_client_key() -> (tempfile::NamedTempFile, serde_json::Value) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
    use base64::Engine;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng)
        .expect("P-384 key generation");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der.as_ref())
        .expect("the generated key");
    // Uncompressed point: 0x04 || x (48 bytes) || y (48 bytes).
    let point = pair.public_key().as_ref();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-384", "alg": "ES384", "use": "sig", "kid": VISIT_CLIENT_KID,
        "x": b64.encode(&point[1..49]), "y": b64.encode(&point[49..97]),
    });
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let file = tempfile::NamedTempFile::new().expect("key file");
    std::fs::write(file.path(), pem).expect("key file");
    (file, jwk)
}

/// Runs `f` on a thread of its own: the blocking HTTP client must not run (or be dropped) on
/// an async runtime's thread, and tests call these helpers from async code.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("helper thread"))
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .expect("HTTP client")
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Plays the user's browser through a sign-in at `authorize_url`: follows redirects, posts the
/// login form with `user`/`password`, and delivers the final redirect to the loopback
/// `redirect_prefix` (Hearth). Returns that final URL, or the error page's text.
/// Blocking: call it from a thread, not from an async task.
pub fn browser_login(
    authorize_url: &str,
    redirect_prefix: &str,
    user: &str,
    password: &str,
) -> Result<String, String> {
    browse(authorize_url, redirect_prefix, user, password, true)
}

fn browse(
    authorize_url: &str,
    redirect_prefix: &str,
    user: &str,
    password: &str,
    deliver: bool,
) -> Result<String, String> {
    let client = http();
    let mut url = authorize_url.to_string();
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        if url.starts_with(redirect_prefix) {
            if !deliver {
                return Ok(url);
            }
            // The browser arrives at Hearth's loopback port.
            client
                .get(&url)
                .send()
                .map_err(|e| format!("delivering the redirect: {e}"))?;
            return Ok(url);
        }
        let response = match form.take() {
            Some(fields) => client.post(&url).form(&fields).send(),
            None => client.get(&url).send(),
        }
        .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let base = response.url().clone();
        let body = response.text().unwrap_or_default();
        if let Some(loc) = location {
            url = base.join(&loc).map_err(|e| e.to_string())?.to_string();
            continue;
        }
        if status.is_success() && body.contains("name=\"password\"") {
            let action = body
                .split("action=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .ok_or("login form without action")?;
            url = base.join(action).map_err(|e| e.to_string())?.to_string();
            form = Some(vec![
                ("username".into(), user.into()),
                ("password".into(), password.into()),
            ]);
            continue;
        }
        return Err(format!("HTTP {status} at {url}: {body}"));
    }
    Err("too many redirects".into())
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().expect("a bound listener").port()
}
