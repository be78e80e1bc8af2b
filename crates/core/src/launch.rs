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
    /// The machine-wide configuration file to read.
    pub config_path: PathBuf,
    /// Overrides the configured demo seed.
    pub demo_seed: Option<u64>,
}

pub const USAGE: &str = "usage: hearth [--data-dir DIR] [--config FILE] [--demo-seed N]";

impl LaunchOptions {
    /// Parses the arguments after the program name. `env_config` is `HEARTH_CONFIG`.
    pub fn parse<I>(args: I, env_config: Option<OsString>) -> Result<Self, CoreError>
    where
        I: IntoIterator<Item = OsString>,
    {
        let mut opts = Self {
            config_path: env_config.map_or_else(config::default_path, PathBuf::from),
            ..Self::default()
        };
        let mut args = args.into_iter();
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
                // macOS Finder adds a process serial number; nothing to do with it.
                f if f.starts_with("-psn_") => {}
                other => {
                    return Err(CoreError::InvalidInput(format!(
                        "unknown argument {other:?}; {USAGE}"
                    )))
                }
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
    fn defaults_to_the_platform_config() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.config_path, config::default_path());
        assert_eq!(o.data_dir, None);
        let o = LaunchOptions::parse([], Some("/tmp/h.toml".into())).unwrap();
        assert_eq!(o.config_path, PathBuf::from("/tmp/h.toml"));
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
