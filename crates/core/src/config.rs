//! The machine-wide configuration IT deploys (EHR endpoint, identity provider, idle lock).
//!
//! It is a TOML file at a fixed per-platform path (see [`default_path`]), overridable with
//! `--config` or `HEARTH_CONFIG`. No file, or a file without `[ehr]`, means demo mode. A file
//! that cannot be read or has a wrong or unknown key is an error naming the file and the key;
//! Hearth never guesses past a broken configuration.

use crate::clock::Zone;
use crate::CoreError;
pub use hearth_model::settings::{PatientScope, SyncConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// The EHR. Absent: Hearth runs on its built-in demo data.
    pub ehr: Option<EhrConfig>,
    /// The organisation's OpenID Connect provider (SMART authorization server).
    pub identity: Option<IdentityConfig>,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub demo: DemoConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub clinic: ClinicConfig,
    /// The telehealth visit service (hearth-visit). Absent: no video visits from Hearth.
    pub visit: Option<VisitConfig>,
    /// The visit note: templates and code tables.
    #[serde(default)]
    pub notes: NotesConfig,
    /// The billing system's HL7 v2 interface (DFT^P03 over MLLP). Absent: charges are kept
    /// (and go to the EHR as ChargeItems) but no message is sent.
    pub billing: Option<BillingConfig>,
}

/// `[notes]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotesConfig {
    /// Templates by visit type: the key is the Appointment's `appointmentType` code or text
    /// (else `virtual` / `in_person` for every visit of that modality).
    #[serde(default)]
    pub templates: std::collections::BTreeMap<String, crate::note::NoteTemplate>,
    /// The ICD-10-CM table (TSV: code, description) the diagnosis picker searches. Absent:
    /// a short built-in list of common codes.
    pub diagnosis_codes_file: Option<PathBuf>,
    /// The site's descriptions of service codes (TSV: code, description), e.g. CPT's, which
    /// are licensed and do not ship with Hearth.
    pub service_descriptions_file: Option<PathBuf>,
}

/// `[billing]`: where charges go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// The MLLP listener, `host:port`.
    pub mllp_address: String,
    /// MSH-3 / MSH-4 (this system) and MSH-5 / MSH-6 (the billing system).
    #[serde(default = "default_sending_application")]
    pub sending_application: String,
    #[serde(default)]
    pub sending_facility: String,
    #[serde(default)]
    pub receiving_application: String,
    #[serde(default)]
    pub receiving_facility: String,
    /// MSH-11: `P` production, `T` training, `D` debugging.
    #[serde(default = "default_processing_id")]
    pub processing_id: String,
    /// The assigning authority of the MRN (PID-3.4).
    #[serde(default)]
    pub mrn_authority: String,
    /// The FHIR identifier system of the organisation's MRN (the Patient identifier sent as
    /// the MRN). Absent: the first identifier of type MR.
    pub mrn_system: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u32,
    /// How long to wait for billing's acknowledgement.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_seconds: u32,
}

impl BillingConfig {
    /// What the sync engine needs to send charges.
    pub fn target(&self) -> hearth_model::settings::BillingTarget {
        hearth_model::settings::BillingTarget {
            address: self.mllp_address.clone(),
            connect_timeout: std::time::Duration::from_secs(u64::from(
                self.connect_timeout_seconds,
            )),
            ack_timeout: std::time::Duration::from_secs(u64::from(self.ack_timeout_seconds)),
        }
    }
}

fn default_sending_application() -> String {
    "HEARTH".into()
}
fn default_processing_id() -> String {
    "P".into()
}
fn default_connect_timeout() -> u32 {
    5
}
fn default_ack_timeout() -> u32 {
    30
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitConfig {
    /// Where hearth-visit answers, e.g. `https://visit.example.org/`.
    pub service_url: String,
    /// Also put the patient's join link into the Appointment (R5 `virtualService.addressUrl`
    /// as the R4 cross-version extension), for the EHR's reminders. Default: no.
    #[serde(default)]
    pub link_to_appointment: bool,
    /// The address the video call's media sockets bind to. Default: every interface
    /// (`0.0.0.0`); `127.0.0.1` keeps calls on this machine (tests, demo).
    #[serde(default)]
    pub media_bind: Option<std::net::IpAddr>,
    /// What the call sends: `"devices"` (default: this computer's first camera and
    /// microphone, and its first speaker for the others' sound; the test pattern and a tone
    /// where it has none) or `"synthetic"` (always the test pattern and a tone: training
    /// rooms, tests).
    #[serde(default)]
    pub media_source: MediaSource,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    #[default]
    Devices,
    Synthetic,
}

/// Where the clinic is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClinicConfig {
    /// The IANA time zone the schedule's days and times are in, e.g. `"America/New_York"`.
    /// Absent: the operating system's zone.
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EhrConfig {
    /// FHIR R4 base URL, e.g. `https://ehr.example.org/fhir/r4`.
    pub fhir_base_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The OpenID Connect issuer; the EHR's SMART configuration must name the same one.
    pub issuer: String,
    /// Hearth's client id at the provider (a public native client).
    pub client_id: String,
    /// SMART v2 scopes to ask for; absent: Hearth's defaults.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The command that opens the sign-in page, the URL in place of `{url}` (or appended);
    /// absent: the system browser. Never an embedded webview (RFC 8252).
    #[serde(default)]
    pub browser: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Minutes without input before the window locks (ONC 170.315(d)(5)).
    pub idle_lock_minutes: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_lock_minutes: 15,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Seed of the demo data generator; the same seed always gives the same clinic.
    pub seed: Option<u64>,
}

/// What is wrong with a configuration text, naming the key (or line) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn contains(&self, text: &str) -> bool {
        self.0.contains(text)
    }
}

/// Where IT puts the machine-wide configuration on this platform.
pub fn default_path() -> PathBuf {
    if cfg!(target_os = "windows") {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        PathBuf::from(base).join("Hearth").join("config.toml")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/Hearth/config.toml")
    } else {
        PathBuf::from("/etc/hearth/config.toml")
    }
}

/// Where the machine-wide configuration is read from. Release builds: always the platform's
/// path ([`default_path`]), which only IT can write. Debug builds (tests, development) read
/// `HEARTH_MACHINE_CONFIG` first, so that tests run the same layering rule against a file of
/// their own; a release build ignores that variable.
pub fn machine_path() -> PathBuf {
    #[cfg(debug_assertions)]
    if let Some(path) = std::env::var_os("HEARTH_MACHINE_CONFIG") {
        return PathBuf::from(path);
    }
    default_path()
}

impl MachineConfig {
    /// The configuration to run with: the file at `path` (the machine's, or one the user
    /// named with `--config` / `HEARTH_CONFIG`). When `path` is not the machine-wide file
    /// `machine` and that file exists, the user's file may not weaken it (see
    /// [`MachineConfig::weakenings`]): a configuration that would is refused, naming each key.
    pub fn load_layered(path: &Path, machine: Option<&Path>) -> Result<Self, CoreError> {
        let config = Self::load(path)?;
        let Some(machine) = machine.filter(|m| *m != path) else {
            return Ok(config);
        };
        if !machine.exists() {
            // No machine-wide configuration: nothing IT set to keep.
            return Ok(config);
        }
        let wanted = Self::load(machine)?;
        let weaker = config.weakenings(&wanted);
        if weaker.is_empty() {
            return Ok(config);
        }
        Err(config_error(
            path,
            format!(
                "this configuration would weaken the machine-wide one ({}), which a user's \
                 configuration may not: {}",
                machine.display(),
                weaker.join("; ")
            ),
        ))
    }

    /// How this configuration (a user's) is weaker than `machine` (IT's), key by key; empty
    /// when it may be used. It may leave the EHR out (demo data), tune `[sync]`, `[clinic]`,
    /// `[demo]` and the browser command, and shorten the idle lock; it may not point at
    /// another EHR or identity provider, drop sign-in, lengthen the idle lock, or add or
    /// change a visit service (which would be sent the clinician's token).
    pub fn weakenings(&self, machine: &MachineConfig) -> Vec<String> {
        let mut out = Vec::new();
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        if let (Some(mine), Some(theirs)) = (&self.ehr, &machine.ehr) {
            if !same(&mine.fhir_base_url, &theirs.fhir_base_url) {
                out.push(format!(
                    "`ehr.fhir_base_url` must be the machine's ({})",
                    theirs.fhir_base_url
                ));
            }
        }
        if let (Some(_), Some(theirs)) = (&self.ehr, &machine.identity) {
            match &self.identity {
                None => out.push(format!(
                    "`[identity]` is required: the machine signs in at {}",
                    theirs.issuer
                )),
                Some(mine) => {
                    if !same(&mine.issuer, &theirs.issuer) {
                        out.push(format!(
                            "`identity.issuer` must be the machine's ({})",
                            theirs.issuer
                        ));
                    }
                    if mine.client_id != theirs.client_id {
                        out.push(format!(
                            "`identity.client_id` must be the machine's ({})",
                            theirs.client_id
                        ));
                    }
                }
            }
        }
        // The idle lock guards a signed-in session (demo data has none).
        if self.identity.is_some()
            && self.session.idle_lock_minutes > machine.session.idle_lock_minutes
        {
            out.push(format!(
                "`session.idle_lock_minutes` may not be longer than the machine's {}",
                machine.session.idle_lock_minutes
            ));
        }
        // A user's file may not send charges elsewhere, nor stop sending them.
        if self.billing != machine.billing
            && (self.billing.is_some() || (self.ehr.is_some() && machine.billing.is_some()))
        {
            out.push(
                "`[billing]` must be the machine's (charges carry patients' names to it)".into(),
            );
        }
        match (&self.visit, &machine.visit) {
            (None, _) => {}
            (Some(_), None) => out.push(
                "`[visit]` is not in the machine's configuration (a visit service is sent the \
                 clinician's sign-in)"
                    .into(),
            ),
            (Some(mine), Some(theirs)) => {
                if !same(&mine.service_url, &theirs.service_url) {
                    out.push(format!(
                        "`visit.service_url` must be the machine's ({})",
                        theirs.service_url
                    ));
                }
                if mine.link_to_appointment && !theirs.link_to_appointment {
                    out.push("`visit.link_to_appointment` is off on this machine".into());
                }
            }
        }
        out
    }

    /// Reads the file at `path`; a missing file is the empty (demo) configuration.
    pub fn load(path: &Path) -> Result<Self, CoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(config_error(path, format!("cannot be read: {e}"))),
        };
        Self::parse(&text).map_err(|problem| config_error(path, problem.0))
    }

    /// Parses and validates configuration text; the error names the key that is wrong.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self =
            toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim().to_string()))?;
        config.validate().map_err(ConfigError)?;
        Ok(config)
    }

    /// The clinic's time zone: `[clinic] time_zone`, else the operating system's.
    pub fn zone(&self) -> Zone {
        self.clinic
            .time_zone
            .as_deref()
            .and_then(Zone::named)
            .unwrap_or_else(Zone::system)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(b) = &self.billing {
            let port = b
                .mllp_address
                .rsplit_once(':')
                .and_then(|(host, port)| (!host.is_empty()).then_some(port))
                .and_then(|p| p.parse::<u16>().ok());
            if port.is_none_or(|p| p == 0) {
                return Err(format!(
                    "key `billing.mllp_address` must be host:port, not {:?}",
                    b.mllp_address
                ));
            }
            if !matches!(b.processing_id.as_str(), "P" | "T") {
                return Err("key `billing.processing_id` must be \"P\" or \"T\"".into());
            }
            if b.connect_timeout_seconds == 0 || b.ack_timeout_seconds == 0 {
                return Err("keys `billing.*_timeout_seconds` must be at least 1".into());
            }
        }
        if let Some(name) = &self.clinic.time_zone {
            if Zone::named(name).is_none() {
                return Err(format!(
                    "key `clinic.time_zone` must be an IANA time zone name such as \
                     \"America/New_York\", not {name:?}"
                ));
            }
        }
        if let Some(ehr) = &self.ehr {
            check_url("ehr.fhir_base_url", &ehr.fhir_base_url)?;
            // Without a sign-on there is no user, no lock and no audit of who looked: only
            // an EHR on this machine (a test server) may be used so.
            if self.identity.is_none() && !is_loopback_url(&ehr.fhir_base_url) {
                return Err(
                    "section `[ehr]` needs an `[identity]` section: an EHR that is not on this machine is \
                     used only with sign-in"
                        .into(),
                );
            }
        }
        if let Some(id) = &self.identity {
            check_url("identity.issuer", &id.issuer)?;
            if id.client_id.trim().is_empty() {
                return Err("key `identity.client_id` must not be empty".into());
            }
            if id.browser.as_ref().is_some_and(|b| b.is_empty()) {
                return Err("key `identity.browser` must name a command".into());
            }
            if self.ehr.is_none() {
                return Err(
                    "section `[identity]` needs an `[ehr]` section: sign-on is to the EHR".into(),
                );
            }
        }
        if let Some(visit) = &self.visit {
            check_url("visit.service_url", &visit.service_url)?;
            if self.identity.is_none() {
                return Err(
                    "section `[visit]` needs an `[identity]` section: the visit service \
                     knows clinicians by their sign-in"
                        .into(),
                );
            }
        }
        if !(1..=3600).contains(&self.sync.poll_interval_seconds) {
            return Err(format!(
                "key `sync.poll_interval_seconds` must be between 1 and 3600, not {}",
                self.sync.poll_interval_seconds
            ));
        }
        if !(1..=3600).contains(&self.sync.overlap_seconds) {
            return Err(format!(
                "key `sync.overlap_seconds` must be between 1 and 3600, not {}",
                self.sync.overlap_seconds
            ));
        }
        if !(1..=1440).contains(&self.sync.reconcile_minutes) {
            return Err(format!(
                "key `sync.reconcile_minutes` must be between 1 and 1440, not {}",
                self.sync.reconcile_minutes
            ));
        }
        if self.sync.schedule_days_back > 366 || self.sync.schedule_days_ahead > 366 {
            return Err(
                "keys `sync.schedule_days_back` and `sync.schedule_days_ahead` must be at most 366"
                    .into(),
            );
        }
        if !(1..=240).contains(&self.session.idle_lock_minutes) {
            return Err(format!(
                "key `session.idle_lock_minutes` must be between 1 and 240, not {}",
                self.session.idle_lock_minutes
            ));
        }
        Ok(())
    }
}

fn config_error(path: &Path, problem: String) -> CoreError {
    CoreError::Configuration {
        source_name: path.display().to_string(),
        problem,
    }
}

/// HTTPS is required except to a loopback address (test peers, local proxies).
/// Whether a URL's host is this machine (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    })
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("key `{key}` must be an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "key `{key}` must not carry a user name or password"
        ));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(format!("key `{key}` has no host"));
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !secure && !loopback {
        return Err(format!(
            "key `{key}` must use https:// (plain http is only allowed to a loopback address)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_missing_mean_demo() {
        assert_eq!(MachineConfig::parse("").unwrap(), MachineConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let cfg = MachineConfig::load(&dir.path().join("absent.toml")).unwrap();
        assert!(cfg.ehr.is_none());
        assert_eq!(cfg.session.idle_lock_minutes, 15);
    }

    #[test]
    fn full_configuration_parses() {
        let cfg = MachineConfig::parse(
            r#"
            [ehr]
            fhir_base_url = "https://ehr.example.org/fhir/r4"
            [identity]
            issuer = "https://login.example.org"
            client_id = "hearth"
            [session]
            idle_lock_minutes = 10
            [demo]
            seed = 7
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.ehr.unwrap().fhir_base_url,
            "https://ehr.example.org/fhir/r4"
        );
        assert_eq!(cfg.session.idle_lock_minutes, 10);
        assert_eq!(cfg.demo.seed, Some(7));
    }

    #[test]
    fn mistakes_name_the_key() {
        let e = MachineConfig::parse("[ehr]\nfhir_base_ur = \"https://x\"\n").unwrap_err();
        assert!(e.contains("unknown field `fhir_base_ur`"), "{e}");
        let e = MachineConfig::parse("[ehr]\nfhir_base_url = \"http://ehr.example.org\"\n")
            .unwrap_err();
        assert!(
            e.contains("ehr.fhir_base_url") && e.contains("https"),
            "{e}"
        );
        let e = MachineConfig::parse("[session]\nidle_lock_minutes = 0\n").unwrap_err();
        assert!(e.contains("session.idle_lock_minutes"), "{e}");
        assert!(
            MachineConfig::parse("[ehr]\nfhir_base_url = \"http://127.0.0.1:8080/fhir\"\n").is_ok()
        );
        // The visit service: an https URL, and only with sign-on (it knows clinicians by it).
        let ehr = "[ehr]\nfhir_base_url = \"http://127.0.0.1:8080/fhir\"\n";
        let id = "[identity]\nissuer = \"https://login.example.org\"\nclient_id = \"hearth\"\n";
        let e = MachineConfig::parse(&format!(
            "{ehr}[visit]\nservice_url = \"https://v.example.org/\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("[visit]") && e.contains("[identity]"), "{e}");
        let e = MachineConfig::parse(&format!(
            "{ehr}{id}[visit]\nservice_url = \"http://v.example.org/\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("visit.service_url"), "{e}");
        assert!(MachineConfig::parse(&format!(
            "{ehr}{id}[visit]\nservice_url = \"https://v.example.org/\"\n"
        ))
        .is_ok());
    }

    #[test]
    fn notes_and_billing_are_read_and_checked_and_a_user_may_not_change_billing() {
        let ehr = "[ehr]\nfhir_base_url = \"http://127.0.0.1:8080/fhir\"\n";
        let billing = "[billing]\nmllp_address = \"127.0.0.1:2575\"\nsending_facility = \"C\"\n";
        let notes = "[notes.templates.virtual]\nobjective = \"Video visit.\"\n";
        let cfg = MachineConfig::parse(&format!("{ehr}{billing}{notes}")).unwrap();
        let b = cfg.billing.clone().unwrap();
        assert_eq!((b.processing_id.as_str(), b.ack_timeout_seconds), ("P", 30));
        assert_eq!(cfg.notes.templates["virtual"].objective, "Video visit.");
        for bad in [
            "[billing]\nmllp_address = \"billing\"\n",
            "[billing]\nmllp_address = \":2575\"\n",
            "[billing]\nmllp_address = \"h:2575\"\nprocessing_id = \"D\"\n",
            "[billing]\nmllp_address = \"h:2575\"\nfoo = 1\n",
        ] {
            assert!(
                MachineConfig::parse(&format!("{ehr}{bad}")).is_err(),
                "{bad}"
            );
        }
        // A user's file: the machine's billing, or none with no EHR; not another, not dropped.
        let machine = cfg;
        let moved = MachineConfig::parse(&format!(
            "{ehr}[billing]\nmllp_address = \"10.0.0.9:2575\"\n"
        ))
        .unwrap();
        assert!(!moved.weakenings(&machine).is_empty());
        let dropped = MachineConfig::parse(ehr).unwrap();
        assert!(!dropped.weakenings(&machine).is_empty());
        assert!(MachineConfig::parse("")
            .unwrap()
            .weakenings(&machine)
            .is_empty());
        assert!(machine.weakenings(&machine).is_empty());
    }

    #[test]
    fn the_example_configuration_parses() {
        let text = include_str!("../../../installers/config.example.toml");
        let cfg = MachineConfig::parse(text).unwrap();
        assert!(cfg.ehr.is_some() && cfg.identity.is_some());
        // Its [billing] and [notes] examples, uncommented, are valid keys and values.
        let mut on = text.to_string();
        for key in [
            "[billing]",
            "mllp_address =",
            "sending_application =",
            "sending_facility =",
            "receiving_application =",
            "receiving_facility =",
            "processing_id =",
            "mrn_authority =",
            "connect_timeout_seconds =",
            "ack_timeout_seconds =",
            "[notes]",
            "service_descriptions_file =",
            "diagnosis_codes_file =",
            "[notes.templates.virtual]",
            "subjective =",
            "objective =",
        ] {
            on = on.replace(&format!("# {key}"), key);
        }
        let cfg = MachineConfig::parse(&on).unwrap();
        assert!(cfg.billing.is_some() && cfg.notes.templates.contains_key("virtual"));
        let zone = text.replace("# time_zone =", "time_zone =");
        assert_eq!(
            MachineConfig::parse(&zone).unwrap().zone().name(),
            "America/New_York"
        );
    }

    #[test]
    fn the_clinic_time_zone_is_an_iana_name() {
        let cfg = MachineConfig::parse("[clinic]\ntime_zone = \"America/New_York\"\n").unwrap();
        assert_eq!(cfg.zone().name(), "America/New_York");
        assert_eq!(
            MachineConfig::parse("").unwrap().zone(),
            Zone::system(),
            "absent: the operating system's zone"
        );
        for bad in ["EST5EDT-ish", "New York", "america/new_york", ""] {
            let e = MachineConfig::parse(&format!("[clinic]\ntime_zone = {bad:?}\n")).unwrap_err();
            assert!(e.contains("clinic.time_zone") && e.contains(bad), "{e}");
        }
        let e = MachineConfig::parse("[clinic]\ntimezone = \"UTC\"\n").unwrap_err();
        assert!(e.contains("unknown field `timezone`"), "{e}");
    }

    #[test]
    fn an_ehr_off_this_machine_is_refused_without_sign_on() {
        let refused =
            MachineConfig::parse("[ehr]\nfhir_base_url = \"https://ehr.example.org/fhir\"\n")
                .unwrap_err()
                .0;
        assert!(
            refused.contains("section `[ehr]` needs an `[identity]` section"),
            "{refused}"
        );
        for local in [
            "http://127.0.0.1:8080/fhir",
            "http://localhost/fhir",
            "http://[::1]:9/fhir",
        ] {
            let toml = format!("[ehr]\nfhir_base_url = \"{local}\"\n");
            assert!(MachineConfig::parse(&toml).is_ok(), "{local}");
        }
        assert!(!is_loopback_url("http://127.0.0.1.example.org/fhir"));
    }

    #[test]
    fn plain_http_only_to_a_loopback_address() {
        let id = "[identity]\nissuer = \"https://login.example.org\"\nclient_id = \"hearth\"\n";
        let url = |u: &str| MachineConfig::parse(&format!("[ehr]\nfhir_base_url = \"{u}\"\n{id}"));
        for ok in [
            "https://ehr.example.org/fhir",
            "http://127.0.0.1:8080/fhir",
            "http://[::1]:8080/fhir",
            "http://localhost/fhir",
        ] {
            assert!(url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://[2001:db8::1]/fhir",
            "http://127.0.0.1@evil.example/fhir",
            "http://127.0.0.1.nip.io/fhir",
            "https://user:pw@ehr.example.org/fhir",
            "https:///fhir",
            "ftp://ehr.example.org",
        ] {
            assert!(url(bad).is_err(), "{bad} was accepted");
        }
    }

    const SIGNED_IN: &str = "[ehr]\nfhir_base_url = \"http://127.0.0.1:8080/fhir\"\n\
        [identity]\nissuer = \"https://login.example.org\"\nclient_id = \"hearth\"\n\
        [session]\nidle_lock_minutes = 10\n";

    /// A machine file and a user's file in a folder; the user's loaded over the machine's.
    fn layered(machine: Option<&str>, user: &str) -> Result<MachineConfig, CoreError> {
        let dir = tempfile::tempdir().unwrap();
        let machine_path = dir.path().join("machine.toml");
        if let Some(text) = machine {
            std::fs::write(&machine_path, text).unwrap();
        }
        let user_path = dir.path().join("user.toml");
        std::fs::write(&user_path, user).unwrap();
        MachineConfig::load_layered(&user_path, Some(&machine_path))
    }

    #[test]
    fn a_users_configuration_cannot_weaken_the_machines() {
        // The attack: the same EHR (on loopback, which needs no sign-on by itself) and no
        // [identity], over a machine that signs in.
        let e = layered(
            Some(SIGNED_IN),
            "[ehr]\nfhir_base_url = \"http://127.0.0.1:8080/fhir\"\n",
        )
        .unwrap_err();
        assert_eq!(e.code(), hearth_ipc::ErrorCode::Configuration);
        let text = e.to_string();
        assert!(
            text.contains("user.toml")
                && text.contains("machine.toml")
                && text.contains("`[identity]` is required"),
            "{text}"
        );
        let other_idp = SIGNED_IN.replace("login.example.org", "evil.example.org");
        let longer = SIGNED_IN.replace("= 10", "= 240");
        let other_ehr = SIGNED_IN.replace("127.0.0.1:8080", "127.0.0.1:9999");
        let visit = format!("{SIGNED_IN}[visit]\nservice_url = \"https://v.example.org/\"\n");
        for (user, key) in [
            (other_idp.as_str(), "identity.issuer"),
            (longer.as_str(), "session.idle_lock_minutes"),
            (other_ehr.as_str(), "ehr.fhir_base_url"),
            (visit.as_str(), "[visit]"),
        ] {
            let e = layered(Some(SIGNED_IN), user).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        // What it may do: tune the rest, shorten the lock, show demo data.
        let tuned = format!(
            "{}[sync]\npoll_interval_seconds = 5\n",
            SIGNED_IN.replace("= 10", "= 5")
        );
        assert_eq!(
            layered(Some(SIGNED_IN), &tuned)
                .unwrap()
                .session
                .idle_lock_minutes,
            5
        );
        assert!(layered(Some(SIGNED_IN), "[demo]\nseed = 3\n")
            .unwrap()
            .ehr
            .is_none());
        // No machine-wide file: nothing to keep.
        assert!(layered(
            None,
            "[ehr]\nfhir_base_url = \"http://127.0.0.1:8080/fhir\"\n"
        )
        .is_ok());
        // The machine's own file, read as such.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine.toml");
        std::fs::write(&path, SIGNED_IN).unwrap();
        assert!(MachineConfig::load_layered(&path, Some(&path)).is_ok());
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[session]\nidle_lock_minutes = \"soon\"\n").unwrap();
        let e = MachineConfig::load(&path).unwrap_err();
        assert_eq!(e.code(), hearth_ipc::ErrorCode::Configuration);
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
}
