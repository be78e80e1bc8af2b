//! The service's settings: a TOML file (`--config`), with the link and TURN secrets read from
//! files or the environment so that the file itself can be world-readable.

use crate::error::SetupError;
use hearth_visit_protocol::IcePolicy;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// The assertion's signing algorithm (`[ehr] algorithm`).
pub use jsonwebtoken::Algorithm;

/// Everything `hearth-visit` is configured with.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The address patients reach (behind the TLS terminator): join links start with it.
    pub public_url: Url,
    /// HMAC key for link tokens; identical on every instance.
    pub link_secret: Vec<u8>,
    pub identity: Identity,
    /// The EHR the service asks whether a clinician is on a visit's Appointment (`None`: no
    /// clinician is let in: the service fails closed).
    pub ehr: Option<Ehr>,
    pub turn: Option<Turn>,
    pub stun_urls: Vec<String>,
    pub ice_transport_policy: IcePolicy,
    /// `redis://`, `rediss://` (TLS) or `redis+unix://`; a user and password may be in it.
    pub redis_url: Option<String>,
    /// How Redis is reached besides its URL (password, TLS roots, time limit).
    pub redis: RedisOptions,
    /// How long before the appointment's start a link opens the waiting room.
    pub early: Duration,
    /// How long after the appointment's end a link keeps working.
    pub late: Duration,
    /// How long a dropped participant keeps their place.
    pub grace: Duration,
    /// A visit (its roster, names and resume hashes) is forgotten this long after its last
    /// change (in memory: once nobody is connected to it either).
    pub forget_visits_after: Duration,
    /// Link checks, joins and resumes (and failed clinician sign-ins) per client address per
    /// minute.
    pub joins_per_minute: u32,
    /// The same attempts from all addresses together per minute (per instance).
    pub total_joins_per_minute: u32,
    /// Link checks and joins with a valid link, per visit per minute (per instance).
    pub visit_joins_per_minute: u32,
    /// Messages a connection may send a second (four seconds' worth at once).
    pub messages_per_second: u32,
    /// Bytes a connection may send a second (four seconds' worth, at least one largest
    /// message, at once).
    pub bytes_per_second: u32,
    /// The reverse proxies and load balancers in front of the service (addresses or CIDR
    /// ranges). A request from one of them is the client's rightmost `X-Forwarded-For` hop
    /// that is not one of them; hops a client wrote itself (further left) are never used.
    pub trusted_proxies: Vec<IpNet>,
    /// Participants (present or gone) a visit may hold.
    pub max_members_per_visit: usize,
    /// Open WebSocket connections this instance accepts; more are answered 503.
    pub max_connections: usize,
    /// Open WebSocket connections one client address may hold on this instance (an IPv6
    /// address counts with its /64); more are answered 503. A clinic behind one NAT address
    /// shares it.
    pub max_connections_per_address: usize,
    /// A connection must say who it is (join, host or resume) this soon after opening, or it
    /// is closed: a socket that only pings holds no place.
    pub join_within: Duration,
    /// Origins (besides the service's own) that may call the API from a browser.
    pub allowed_origins: Vec<String>,
}

/// The organisation's identity provider, whose access tokens clinicians present.
#[derive(Clone)]
pub struct Identity {
    pub issuer: String,
    /// Accepted `aud` values: the service's own address (its `public_url`, with and without
    /// the trailing `/`) unless configured. Hearth asks the provider for a token for the
    /// service (RFC 8707 `resource`); the EHR's own token (for the FHIR base) is refused.
    pub audiences: Vec<String>,
    /// Hearth's OAuth client id at the provider: only tokens issued to it (`client_id` or
    /// `azp`) are a clinician's; another app's token for the same FHIR base is refused.
    pub client_id: String,
    /// Where the signing keys are; discovered from the issuer when absent.
    pub jwks_uri: Option<String>,
}

/// Redis connection options beside `redis_url`.
#[derive(Clone)]
pub struct RedisOptions {
    /// ACL user (else the URL's, else `default`).
    pub username: Option<String>,
    /// AUTH password (from `redis_password_file` or the environment; else the URL's).
    pub password: Option<String>,
    /// PEM roots that sign the server's certificate for `rediss://` (else the system's).
    pub ca_pem: Option<Vec<u8>>,
    /// Every Redis call answers within this or the request is refused `unavailable` (503).
    pub timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            username: None,
            password: None,
            ca_pem: None,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The service's own credential at the EHR: SMART Backend Services (client_credentials with a
/// private_key_jwt assertion, RFC 7523), to read `Appointment`s (`system/Appointment.rs`).
#[derive(Clone)]
pub struct Ehr {
    /// The FHIR base URL (no trailing `/`); its `.well-known/smart-configuration` names the
    /// token endpoint.
    pub fhir_base_url: String,
    /// The service's client id at the EHR's authorization server.
    pub client_id: String,
    /// The private key (PEM) whose public half is registered for `client_id`: PKCS#8
    /// (`BEGIN PRIVATE KEY`) P-384 for ES384, PKCS#1 (`BEGIN RSA PRIVATE KEY`) for RS384.
    pub private_key_pem: Vec<u8>,
    /// `ES384` (an EC P-384 key) or `RS384` (an RSA key).
    pub algorithm: jsonwebtoken::Algorithm,
    /// The `kid` of the registered public key, sent in the assertion's header.
    pub key_id: Option<String>,
}

impl Ehr {
    /// The signing key, checked by signing with it.
    pub fn signing_key(&self) -> Result<jsonwebtoken::EncodingKey, KeyError> {
        let (label, key): (_, fn(&[u8]) -> jsonwebtoken::EncodingKey) = match self.algorithm {
            jsonwebtoken::Algorithm::ES384 => {
                ("PRIVATE KEY", jsonwebtoken::EncodingKey::from_ec_der)
            }
            _ => ("RSA PRIVATE KEY", jsonwebtoken::EncodingKey::from_rsa_der),
        };
        let der = pem_body(&self.private_key_pem, label)?;
        let key = key(&der);
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(self.algorithm),
            &serde_json::json!({}),
            &key,
        )
        .map_err(|e| KeyError::Unusable {
            algorithm: self.algorithm,
            reason: e.to_string(),
        })?;
        Ok(key)
    }
}

/// Why the service's private key for the EHR cannot be used (names the problem, never the key).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM file")]
    NotPem,
    #[error("no -----BEGIN {label}----- block")]
    NoBlock { label: String },
    #[error("the {label} block is not base64")]
    NotBase64 { label: String },
    #[error("not a usable {algorithm:?} key: {reason}")]
    Unusable {
        algorithm: jsonwebtoken::Algorithm,
        reason: String,
    },
}

/// The DER inside a PEM block labelled `label`.
fn pem_body(pem: &[u8], label: &str) -> Result<Vec<u8>, KeyError> {
    use base64::Engine;
    let text = std::str::from_utf8(pem).map_err(|_| KeyError::NotPem)?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| KeyError::NoBlock {
            label: label.to_owned(),
        })?;
    let b64: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| KeyError::NotBase64 {
            label: label.to_owned(),
        })
}

/// coturn with `use-auth-secret`: credentials are made from the shared secret (TURN REST API).
#[derive(Clone)]
pub struct Turn {
    pub urls: Vec<String>,
    pub secret: Vec<u8>,
    pub ttl: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<SocketAddr>,
    public_url: Url,
    link_secret_file: Option<PathBuf>,
    identity: IdentityFile,
    ehr: EhrFile,
    turn: Option<TurnFile>,
    #[serde(default)]
    stun_urls: Vec<String>,
    ice_transport_policy: Option<IcePolicy>,
    redis_url: Option<String>,
    redis_username: Option<String>,
    redis_password_file: Option<PathBuf>,
    redis_ca_file: Option<PathBuf>,
    redis_timeout_ms: Option<u64>,
    early_minutes: Option<u64>,
    late_minutes: Option<u64>,
    grace_seconds: Option<u64>,
    forget_visits_after_hours: Option<u64>,
    joins_per_minute: Option<u32>,
    total_joins_per_minute: Option<u32>,
    visit_joins_per_minute: Option<u32>,
    messages_per_second: Option<u32>,
    bytes_per_second: Option<u32>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    max_members_per_visit: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    join_within_seconds: Option<u64>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    issuer: String,
    audiences: Option<Vec<String>>,
    client_id: String,
    jwks_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EhrFile {
    fhir_base_url: Url,
    client_id: String,
    private_key_file: PathBuf,
    /// `ES384` (default) or `RS384`.
    algorithm: Option<String>,
    key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnFile {
    urls: Vec<String>,
    secret_file: Option<PathBuf>,
    ttl_minutes: Option<u64>,
}

/// The service's own address as an audience, with and without the trailing `/`.
fn own_audiences(public_url: &Url) -> Vec<String> {
    let with = public_url.as_str().to_owned();
    let without = with.trim_end_matches('/').to_owned();
    if with == without {
        vec![with]
    } else {
        vec![with, without]
    }
}

/// Environment variables that override the secret files (for containers).
pub const LINK_SECRET_ENV: &str = "HEARTH_VISIT_LINK_SECRET";
pub const TURN_SECRET_ENV: &str = "HEARTH_VISIT_TURN_SECRET";
pub const REDIS_URL_ENV: &str = "HEARTH_VISIT_REDIS_URL";
pub const REDIS_PASSWORD_ENV: &str = "HEARTH_VISIT_REDIS_PASSWORD";
/// The EHR private key's PEM text (instead of `[ehr] private_key_file`).
pub const EHR_KEY_ENV: &str = "HEARTH_VISIT_EHR_KEY";

impl Settings {
    /// Reads the TOML file at `path`; secrets from their files or the environment.
    pub fn load(path: &Path) -> Result<Self, SetupError> {
        let text = std::fs::read_to_string(path).map_err(|e| SetupError::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses settings text; `origin` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, SetupError> {
        let bad = |reason: String| SetupError::Config {
            path: origin.display().to_string(),
            reason,
        };
        let file: File = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let dir = origin.parent().unwrap_or(Path::new("."));
        let secret =
            |env: &str, file: &Option<PathBuf>, what: &str| -> Result<Vec<u8>, SetupError> {
                let raw = match (std::env::var(env).ok(), file) {
                    (Some(v), _) => v,
                    (None, Some(p)) => std::fs::read_to_string(dir.join(p))
                        .map_err(|e| bad(format!("{what}: cannot read {}: {e}", p.display())))?,
                    (None, None) => {
                        return Err(bad(format!("{what}: set {env} or give a secret file")));
                    }
                };
                let raw = raw.trim().as_bytes().to_vec();
                if raw.len() < 32 {
                    return Err(bad(format!("{what} must be at least 32 characters")));
                }
                Ok(raw)
            };
        let link_secret = secret(LINK_SECRET_ENV, &file.link_secret_file, "link secret")?;
        let turn = match file.turn {
            Some(t) => {
                if t.urls.is_empty() {
                    return Err(bad("turn.urls is empty".into()));
                }
                Some(Turn {
                    secret: secret(TURN_SECRET_ENV, &t.secret_file, "TURN secret")?,
                    urls: t.urls,
                    ttl: Duration::from_secs(t.ttl_minutes.unwrap_or(12 * 60) * 60),
                })
            }
            None => None,
        };
        let policy = file.ice_transport_policy.unwrap_or(IcePolicy::All);
        if policy == IcePolicy::Relay && turn.is_none() {
            return Err(bad(
                "ice_transport_policy = \"relay\" needs a [turn] section".into(),
            ));
        }
        let audiences = file
            .identity
            .audiences
            .unwrap_or_else(|| own_audiences(&file.public_url));
        if audiences.is_empty() {
            return Err(bad(
                "identity.audiences is empty (leave it out for the public_url)".into(),
            ));
        }
        if file.identity.client_id.trim().is_empty() {
            return Err(bad(
                "identity.client_id is empty (Hearth's client id at the identity provider)".into(),
            ));
        }
        let ehr = {
            let e = file.ehr;
            if e.client_id.trim().is_empty() {
                return Err(bad(
                    "ehr.client_id is empty (the service's own client at the EHR)".into(),
                ));
            }
            let algorithm = match e.algorithm.as_deref().unwrap_or("ES384") {
                "ES384" => jsonwebtoken::Algorithm::ES384,
                "RS384" => jsonwebtoken::Algorithm::RS384,
                other => {
                    return Err(bad(format!(
                    "ehr.algorithm {other:?}: use \"ES384\" or \"RS384\" (SMART Backend Services)"
                )))
                }
            };
            let pem = match std::env::var(EHR_KEY_ENV) {
                Ok(pem) => pem.into_bytes(),
                Err(_) => std::fs::read(dir.join(&e.private_key_file)).map_err(|err| {
                    bad(format!(
                        "ehr.private_key_file: cannot read {} (or set {EHR_KEY_ENV}): {err}",
                        e.private_key_file.display()
                    ))
                })?,
            };
            let ehr = Ehr {
                fhir_base_url: e.fhir_base_url.as_str().trim_end_matches('/').to_owned(),
                client_id: e.client_id,
                private_key_pem: pem,
                algorithm,
                key_id: e.key_id,
            };
            ehr.signing_key()
                .map_err(|why| bad(format!("ehr.private_key_file: {why}")))?;
            // The EHR's own tokens are not the service's: accepting them would let Hearth's
            // EHR token (which can change the chart) be sent here.
            if audiences
                .iter()
                .any(|a| a.trim_end_matches('/') == ehr.fhir_base_url)
            {
                return Err(bad(
                    "identity.audiences names the EHR's FHIR base: the service accepts only \
                     tokens for itself (leave audiences out for its public_url)"
                        .into(),
                ));
            }
            ehr
        };
        let mut trusted_proxies = Vec::new();
        for proxy in &file.trusted_proxies {
            let net = proxy
                .parse::<IpNet>()
                .or_else(|_| proxy.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    bad(format!(
                        "trusted_proxies: {proxy:?} is not an address or CIDR range"
                    ))
                })?;
            trusted_proxies.push(net);
        }
        let redis_password = match (
            std::env::var(REDIS_PASSWORD_ENV).ok(),
            &file.redis_password_file,
        ) {
            (Some(v), _) => Some(v),
            (None, Some(p)) => Some(
                std::fs::read_to_string(dir.join(p))
                    .map_err(|e| bad(format!("Redis password: cannot read {}: {e}", p.display())))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let ca_pem = match &file.redis_ca_file {
            Some(p) => Some(
                std::fs::read(dir.join(p))
                    .map_err(|e| bad(format!("redis_ca_file: cannot read {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let redis = RedisOptions {
            username: file.redis_username,
            password: redis_password,
            ca_pem,
            timeout: Duration::from_millis(file.redis_timeout_ms.unwrap_or(2000).max(1)),
        };
        Ok(Self {
            listen: file
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443))),
            public_url: file.public_url,
            link_secret,
            identity: Identity {
                issuer: file.identity.issuer,
                audiences,
                client_id: file.identity.client_id,
                jwks_uri: file.identity.jwks_uri,
            },
            ehr: Some(ehr),
            turn,
            stun_urls: file.stun_urls,
            ice_transport_policy: policy,
            redis_url: std::env::var(REDIS_URL_ENV).ok().or(file.redis_url),
            redis,
            early: Duration::from_secs(file.early_minutes.unwrap_or(30) * 60),
            late: Duration::from_secs(file.late_minutes.unwrap_or(60) * 60),
            grace: Duration::from_secs(file.grace_seconds.unwrap_or(60)),
            forget_visits_after: Duration::from_secs(
                file.forget_visits_after_hours.unwrap_or(24).max(1) * 3600,
            ),
            joins_per_minute: file.joins_per_minute.unwrap_or(20),
            total_joins_per_minute: file.total_joins_per_minute.unwrap_or(1200),
            visit_joins_per_minute: file.visit_joins_per_minute.unwrap_or(30),
            messages_per_second: file.messages_per_second.unwrap_or(20),
            bytes_per_second: file.bytes_per_second.unwrap_or(64 * 1024),
            trusted_proxies,
            max_members_per_visit: file.max_members_per_visit.unwrap_or(50).max(2),
            max_connections: file.max_connections.unwrap_or(5000).max(1),
            max_connections_per_address: file.max_connections_per_address.unwrap_or(200).max(1),
            join_within: Duration::from_secs(file.join_within_seconds.unwrap_or(10).max(1)),
            allowed_origins: file.allowed_origins,
        })
    }

    /// A service on loopback `port` with the defaults (in memory, no TURN, 60 s grace),
    /// trusting `issuer`'s tokens for itself (`http://127.0.0.1:{port}/`) issued to the client
    /// `hearth`: for tests and local trials. Set `ehr` before starting it: without one no
    /// clinician is let in.
    pub fn loopback(port: u16, issuer: &str, link_secret: &[u8]) -> Self {
        let public_url = Url::parse(&format!("http://127.0.0.1:{port}/"))
            .unwrap_or_else(|_| unreachable!("a loopback URL parses"));
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            link_secret: link_secret.to_vec(),
            identity: Identity {
                issuer: issuer.to_owned(),
                audiences: own_audiences(&public_url),
                client_id: "hearth".to_owned(),
                jwks_uri: None,
            },
            ehr: None,
            turn: None,
            stun_urls: Vec::new(),
            ice_transport_policy: IcePolicy::All,
            redis_url: None,
            redis: RedisOptions::default(),
            early: Duration::from_secs(30 * 60),
            late: Duration::from_secs(60 * 60),
            grace: Duration::from_secs(60),
            forget_visits_after: Duration::from_secs(24 * 3600),
            joins_per_minute: 1000,
            total_joins_per_minute: 100_000,
            visit_joins_per_minute: 1000,
            messages_per_second: 20,
            bytes_per_second: 64 * 1024,
            trusted_proxies: Vec::new(),
            max_members_per_visit: 50,
            max_connections: 5000,
            max_connections_per_address: 200,
            join_within: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            public_url,
        }
    }

    /// The origin of `public_url` (`https://visit.example.org`), for Origin checks.
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }
}
