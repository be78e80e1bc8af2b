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

/// Everything `hearth-visit` is configured with.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The address patients reach (behind the TLS terminator): join links start with it.
    pub public_url: Url,
    /// HMAC key for link tokens; identical on every instance.
    pub link_secret: Vec<u8>,
    pub identity: Identity,
    pub turn: Option<Turn>,
    pub stun_urls: Vec<String>,
    pub ice_transport_policy: IcePolicy,
    pub redis_url: Option<String>,
    /// How long before the appointment's start a link opens the waiting room.
    pub early: Duration,
    /// How long after the appointment's end a link keeps working.
    pub late: Duration,
    /// How long a dropped participant keeps their place.
    pub grace: Duration,
    /// Link checks, joins and resumes per client address per minute.
    pub joins_per_minute: u32,
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
    turn: Option<TurnFile>,
    #[serde(default)]
    stun_urls: Vec<String>,
    ice_transport_policy: Option<IcePolicy>,
    redis_url: Option<String>,
    early_minutes: Option<u64>,
    late_minutes: Option<u64>,
    grace_seconds: Option<u64>,
    joins_per_minute: Option<u32>,
    messages_per_second: Option<u32>,
    bytes_per_second: Option<u32>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    max_members_per_visit: Option<usize>,
    max_connections: Option<usize>,
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
            turn,
            stun_urls: file.stun_urls,
            ice_transport_policy: policy,
            redis_url: std::env::var(REDIS_URL_ENV).ok().or(file.redis_url),
            early: Duration::from_secs(file.early_minutes.unwrap_or(30) * 60),
            late: Duration::from_secs(file.late_minutes.unwrap_or(60) * 60),
            grace: Duration::from_secs(file.grace_seconds.unwrap_or(60)),
            joins_per_minute: file.joins_per_minute.unwrap_or(20),
            messages_per_second: file.messages_per_second.unwrap_or(20),
            bytes_per_second: file.bytes_per_second.unwrap_or(64 * 1024),
            trusted_proxies,
            max_members_per_visit: file.max_members_per_visit.unwrap_or(50).max(2),
            max_connections: file.max_connections.unwrap_or(5000).max(1),
            allowed_origins: file.allowed_origins,
        })
    }

    /// A service on loopback `port` with the defaults (in memory, no TURN, 60 s grace),
    /// trusting `issuer`'s tokens for itself (`http://127.0.0.1:{port}/`) issued to the client
    /// `hearth`: for tests and local trials.
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
            turn: None,
            stun_urls: Vec::new(),
            ice_transport_policy: IcePolicy::All,
            redis_url: None,
            early: Duration::from_secs(30 * 60),
            late: Duration::from_secs(60 * 60),
            grace: Duration::from_secs(60),
            joins_per_minute: 1000,
            messages_per_second: 20,
            bytes_per_second: 64 * 1024,
            trusted_proxies: Vec::new(),
            max_members_per_visit: 50,
            max_connections: 5000,
            allowed_origins: Vec::new(),
            public_url,
        }
    }

    /// The origin of `public_url` (`https://visit.example.org`), for Origin checks.
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }
}
