use crate::AuthError;
use std::process::{Command, Stdio};

/// How the sign-in page is opened: the system browser (RFC 8252: never an embedded webview),
/// or a command IT or a test configures, given the URL in place of `{url}` (or last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Browser {
    System,
    Command(Vec<String>),
}

impl Browser {
    pub fn open(&self, url: &str) -> Result<(), AuthError> {
        let (program, args): (String, Vec<String>) = match self {
            Self::System => system_opener(url),
            Self::Command(cmd) => {
                let Some((first, rest)) = cmd.split_first() else {
                    return Err(AuthError::Browser("the browser command is empty".into()));
                };
                let mut args: Vec<String> = rest.iter().map(|a| a.replace("{url}", url)).collect();
                if !rest.iter().any(|a| a.contains("{url}")) {
                    args.push(url.to_string());
                }
                (first.clone(), args)
            }
        };
        Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| AuthError::Browser(format!("{program}: {e}")))
    }
}

fn system_opener(url: &str) -> (String, Vec<String>) {
    if cfg!(target_os = "macos") {
        ("open".into(), vec![url.into()])
    } else if cfg!(target_os = "windows") {
        // Hands the URL to the default browser without a shell re-parsing its `&`s.
        (
            "rundll32".into(),
            vec!["url.dll,FileProtocolHandler".into(), url.into()],
        )
    } else {
        ("xdg-open".into(), vec![url.into()])
    }
}
