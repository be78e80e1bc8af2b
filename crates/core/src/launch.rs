//! How Hearth was started: the command line, read into [`LaunchOptions`].

use crate::config;
use crate::CoreError;
use std::ffi::OsString;
use std::path::PathBuf;

/// Options from the command line (and `HEARTH_CONFIG`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchOptions {
    /// Where this profile keeps its local data. `None`: the platform's app-data folder.
    pub data_dir: Option<PathBuf>,
    /// The configuration file to read: the machine-wide one, or the user's (`--config`,
    /// `HEARTH_CONFIG`).
    pub config_path: PathBuf,
    /// The machine-wide configuration a user's file may not weaken
    /// ([`config::MachineConfig::load_layered`]); `None`: none to respect (tests, tools).
    pub machine_config_path: Option<PathBuf>,
    /// Overrides the configured demo seed.
    pub demo_seed: Option<u64>,
    /// SMART EHR launch: the EHR started Hearth with `iss` and `launch`.
    pub ehr_launch: Option<EhrLaunch>,
}

/// A SMART EHR launch request (`--iss URL --launch VALUE`, or the deep link
/// `hearth://launch?iss=URL&launch=VALUE`). The `launch` value is opaque and echoed to the
/// authorization server; its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct EhrLaunch {
    pub iss: String,
    pub launch: String,
}

impl std::fmt::Debug for EhrLaunch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EhrLaunch")
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

impl EhrLaunch {
    /// Reads a `hearth://launch?iss=...&launch=...` deep link.
    pub fn from_deep_link(link: &str) -> Result<Self, CoreError> {
        let bad = |why: &str| {
            CoreError::InvalidInput(format!(
                "the launch link {why}; expected hearth://launch?iss=URL&launch=VALUE"
            ))
        };
        let url = url::Url::parse(link).map_err(|_| bad("is not a URL"))?;
        if url.scheme() != "hearth" || url.host_str() != Some("launch") {
            return Err(bad("is not a hearth://launch link"));
        }
        let mut iss = None;
        let mut launch = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "iss" => iss = Some(v.into_owned()),
                "launch" => launch = Some(v.into_owned()),
                _ => {}
            }
        }
        match (iss, launch) {
            (Some(iss), Some(launch)) if !iss.is_empty() && !launch.is_empty() => {
                Ok(Self { iss, launch })
            }
            _ => Err(bad("lacks iss or launch")),
        }
    }
}

pub const USAGE: &str = "usage: hearth [--data-dir DIR] [--config FILE] [--demo-seed N] [--iss URL --launch VALUE | hearth://launch?iss=URL&launch=VALUE]";

impl LaunchOptions {
    /// Parses the arguments after the program name. `env_config` is `HEARTH_CONFIG`.
    pub fn parse<I>(args: I, env_config: Option<OsString>) -> Result<Self, CoreError>
    where
        I: IntoIterator<Item = OsString>,
    {
        let mut opts = Self {
            config_path: env_config.map_or_else(config::machine_path, PathBuf::from),
            machine_config_path: Some(config::machine_path()),
            ..Self::default()
        };
        let mut args = args.into_iter();
        let (mut iss, mut launch) = (None, None);
        while let Some(arg) = args.next() {
            let arg = arg.to_string_lossy().into_owned();
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(OsString::from(v))),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline.clone().or_else(|| args.next()).ok_or_else(|| {
                    CoreError::InvalidInput(format!("{name} needs a value; {USAGE}"))
                })
            };
            match flag.as_str() {
                "--data-dir" => opts.data_dir = Some(PathBuf::from(value("--data-dir")?)),
                "--config" => opts.config_path = PathBuf::from(value("--config")?),
                "--demo-seed" => {
                    let v = value("--demo-seed")?;
                    let seed = v.to_string_lossy().parse::<u64>().map_err(|_| {
                        CoreError::InvalidInput(format!(
                            "--demo-seed needs a whole number, not {:?}",
                            v.to_string_lossy()
                        ))
                    })?;
                    opts.demo_seed = Some(seed);
                }
                "--iss" => iss = Some(value("--iss")?.to_string_lossy().into_owned()),
                "--launch" => launch = Some(value("--launch")?.to_string_lossy().into_owned()),
                link if link.starts_with("hearth://") => {
                    opts.ehr_launch = Some(EhrLaunch::from_deep_link(link)?);
                }
                // macOS Finder adds a process serial number; nothing to do with it.
                f if f.starts_with("-psn_") => {}
                other => {
                    return Err(CoreError::InvalidInput(format!(
                        "unknown argument {other:?}; {USAGE}"
                    )))
                }
            }
        }
        match (iss, launch) {
            (Some(iss), Some(launch)) => opts.ehr_launch = Some(EhrLaunch { iss, launch }),
            (None, None) => {}
            _ => {
                return Err(CoreError::InvalidInput(format!(
                    "an EHR launch needs both --iss and --launch; {USAGE}"
                )))
            }
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<LaunchOptions, CoreError> {
        LaunchOptions::parse(args.iter().map(OsString::from), None)
    }

    #[test]
    fn an_ehr_launch_comes_by_arguments_or_deep_link() {
        let o = parse(&["--iss", "https://ehr.example.org/fhir", "--launch", "xyz"]).unwrap();
        assert_eq!(
            o.ehr_launch,
            Some(EhrLaunch {
                iss: "https://ehr.example.org/fhir".into(),
                launch: "xyz".into()
            })
        );
        let o = parse(&["hearth://launch?iss=https%3A%2F%2Fehr.example.org%2Ffhir&launch=a%2Bb"])
            .unwrap();
        let l = o.ehr_launch.unwrap();
        assert_eq!(
            (l.iss.as_str(), l.launch.as_str()),
            ("https://ehr.example.org/fhir", "a+b")
        );
        assert!(
            !format!("{l:?}").contains("a+b"),
            "the launch value is not logged"
        );
        assert!(parse(&["--iss", "https://x"])
            .unwrap_err()
            .to_string()
            .contains("both"));
        assert!(parse(&["hearth://launch?iss=https://x"])
            .unwrap_err()
            .to_string()
            .contains("lacks"));
        assert!(parse(&["hearth://other?iss=a&launch=b"]).is_err());
    }

    #[test]
    fn defaults_to_the_platform_config() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.config_path, config::machine_path());
        assert_eq!(o.machine_config_path, Some(config::machine_path()));
        assert_eq!(o.data_dir, None);
        let o = LaunchOptions::parse([], Some("/tmp/h.toml".into())).unwrap();
        assert_eq!(o.config_path, PathBuf::from("/tmp/h.toml"));
        assert_eq!(
            o.machine_config_path,
            Some(config::machine_path()),
            "a user's file is read over the machine's, which it may not weaken"
        );
    }

    #[test]
    fn reads_flags_in_both_spellings() {
        let o = parse(&["--data-dir", "/d", "--config=/c.toml", "--demo-seed", "9"]).unwrap();
        assert_eq!(o.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(o.config_path, PathBuf::from("/c.toml"));
        assert_eq!(o.demo_seed, Some(9));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        assert!(parse(&["--demo-seed", "x"])
            .unwrap_err()
            .to_string()
            .contains("whole number"));
        assert!(parse(&["--data-dir"])
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
        assert!(parse(&["--frobnicate"])
            .unwrap_err()
            .to_string()
            .contains("--frobnicate"));
    }
}
