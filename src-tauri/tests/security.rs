//! Security checks on the shell's configuration: the Content-Security-Policy and the resolved
//! access-control list (which window may call which command).

#![allow(
    clippy::unwrap_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use tauri_utils::acl::build::parse_capabilities;
use tauri_utils::acl::manifest::Manifest;
use tauri_utils::acl::resolved::Resolved;
use tauri_utils::acl::ExecutionContext;
use tauri_utils::platform::Target;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn tauri_conf() -> Value {
    let text = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("tauri.conf.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The sources each directive may name. Anything else (a host, a scheme such as `https:`,
/// `*`, `'unsafe-inline'`, `'unsafe-eval'`, `data:` for scripts) is remote or unsafe content.
fn allowed_sources(directive: &str) -> &'static [&'static str] {
    match directive {
        "script-src" => &["'self'", "'wasm-unsafe-eval'"],
        "img-src" => &["'self'", "data:"],
        // Tauri's IPC transport: a custom scheme on Linux/macOS, a local host name on Windows.
        "connect-src" => &["'self'", "ipc:", "http://ipc.localhost"],
        "object-src" | "base-uri" | "form-action" | "frame-src" | "frame-ancestors" => &["'none'"],
        _ => &["'self'"],
    }
}

/// Everything wrong with the CSP of a Tauri configuration; empty when it is strict.
fn csp_violations(conf: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let security = &conf["app"]["security"];
    for key in ["csp", "devCsp"] {
        let csp = match &security[key] {
            Value::String(s) => s.clone(),
            Value::Null if key == "devCsp" => continue,
            Value::Null => {
                problems.push("app.security.csp is missing".to_string());
                continue;
            }
            other => {
                problems.push(format!(
                    "app.security.{key} is not a policy string: {other}"
                ));
                continue;
            }
        };
        let directives: BTreeMap<&str, Vec<&str>> = csp
            .split(';')
            .filter_map(|d| {
                let mut words = d.split_whitespace();
                Some((words.next()?, words.collect()))
            })
            .collect();
        if csp
            .replace("'wasm-unsafe-eval'", "")
            .contains("unsafe-eval")
        {
            problems.push(format!("{key} allows 'unsafe-eval'"));
        }
        if directives.get("default-src") != Some(&vec!["'self'"]) {
            problems.push(format!("{key}: default-src must be exactly 'self'"));
        }
        match directives.get("script-src") {
            Some(s) if s.contains(&"'wasm-unsafe-eval'") => {}
            _ => problems.push(format!(
                "{key}: script-src must allow 'wasm-unsafe-eval' only"
            )),
        }
        if directives.get("object-src") != Some(&vec!["'none'"]) {
            problems.push(format!("{key}: object-src must be 'none'"));
        }
        for (name, sources) in &directives {
            for s in sources {
                if !allowed_sources(name).contains(s) {
                    problems.push(format!("{key}: {name} allows {s}"));
                }
            }
        }
    }
    if security["dangerousDisableAssetCspModification"] != Value::Null {
        problems.push("dangerousDisableAssetCspModification is set".into());
    }
    if conf["build"]["devUrl"] != Value::Null {
        problems.push("build.devUrl points the window at a server".into());
    }
    for w in conf["app"]["windows"].as_array().into_iter().flatten() {
        if w["url"].as_str().is_some_and(|u| u.contains("://")) {
            problems.push(format!("window {} loads remote content", w["label"]));
        }
    }
    problems
}

#[test]
fn the_csp_is_strict() {
    assert_eq!(csp_violations(&tauri_conf()), Vec::<String>::new());
}

#[test]
fn the_csp_check_catches_a_missing_or_weak_policy() {
    let mut conf = tauri_conf();
    conf["app"]["security"]["csp"] = Value::Null;
    assert_eq!(csp_violations(&conf), ["app.security.csp is missing"]);

    let mut conf = tauri_conf();
    let csp = conf["app"]["security"]["csp"].as_str().unwrap().to_string();
    conf["app"]["security"]["csp"] = csp
        .replace("'wasm-unsafe-eval'", "'wasm-unsafe-eval' 'unsafe-eval'")
        .into();
    let problems = csp_violations(&conf);
    assert!(
        problems.contains(&"csp allows 'unsafe-eval'".to_string()),
        "{problems:?}"
    );

    let mut conf = tauri_conf();
    conf["app"]["security"]["csp"] = csp
        .replace("img-src 'self'", "img-src 'self' https://cdn.example.com")
        .into();
    assert_eq!(
        csp_violations(&conf),
        ["csp: img-src allows https://cdn.example.com"]
    );

    let mut conf = tauri_conf();
    conf["app"]["security"]["csp"] = csp
        .replace("script-src 'self'", "script-src 'self' data:")
        .into();
    assert_eq!(csp_violations(&conf), ["csp: script-src allows data:"]);
}

/// The resolved ACL as stable text: one line per allowed or denied command.
fn resolved_acl_snapshot() -> String {
    let manifests_path = Path::new(MANIFEST_DIR).join("gen/schemas/acl-manifests.json");
    let manifests: BTreeMap<String, Manifest> =
        serde_json::from_str(&std::fs::read_to_string(&manifests_path).unwrap()).unwrap();
    let capabilities = parse_capabilities(&format!("{MANIFEST_DIR}/capabilities/*.json")).unwrap();
    let resolved = Resolved::resolve(&manifests, capabilities, Target::Linux).unwrap();
    let mut out = format!("has_app_acl: {}\n", resolved.has_app_acl);
    for (verdict, commands) in [
        ("allow", &resolved.allowed_commands),
        ("deny", &resolved.denied_commands),
    ] {
        for (command, grants) in commands {
            for g in grants {
                let context = match &g.context {
                    ExecutionContext::Local => "local".to_string(),
                    ExecutionContext::Remote { url } => format!("remote {}", url.as_str()),
                };
                let windows: Vec<String> = g.windows.iter().map(|p| p.to_string()).collect();
                let webviews: Vec<String> = g.webviews.iter().map(|p| p.to_string()).collect();
                out.push_str(&format!(
                    "{verdict} {command} context={context} windows={windows:?} webviews={webviews:?} scoped={}\n",
                    g.scope_id.is_some()
                ));
            }
        }
    }
    out.push_str(&format!(
        "scopes: {} command, {} global\n",
        resolved.command_scope.len(),
        resolved.global_scope.len()
    ));
    out
}

/// Snapshot of who may call what. A change to capabilities or permissions changes this file;
/// review it, then regenerate with `HEARTH_UPDATE_SNAPSHOTS=1 cargo test -p hearth --test security`.
#[test]
fn the_resolved_capabilities_match_the_snapshot() {
    let actual = resolved_acl_snapshot();
    let path = Path::new(MANIFEST_DIR).join("tests/snapshots/resolved-acl.txt");
    if std::env::var_os("HEARTH_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "the resolved ACL changed; review and update {}",
        path.display()
    );
}

#[test]
fn every_command_is_registered_and_granted_to_the_main_window_only() {
    let snapshot = resolved_acl_snapshot();
    let allowed: Vec<&str> = snapshot
        .lines()
        .filter(|l| l.starts_with("allow "))
        .collect();
    assert_eq!(allowed.len(), hearth_ipc::command::ALL.len(), "{snapshot}");
    for command in hearth_ipc::command::ALL {
        assert!(
            allowed.iter().any(
                |l| l.starts_with(&format!("allow {command} context=local windows=[\"main\"]"))
            ),
            "{command} is not granted to the main window: {snapshot}"
        );
    }
    assert!(
        snapshot.starts_with("has_app_acl: true"),
        "app commands bypass the ACL"
    );

    let main_rs = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("src/main.rs")).unwrap();
    let registered = main_rs.matches("commands::").count();
    for command in hearth_ipc::command::ALL {
        assert!(
            main_rs.contains(&format!("commands::{command},")),
            "{command} is not registered"
        );
    }
    assert_eq!(
        registered,
        hearth_ipc::command::ALL.len(),
        "a command is registered but not declared"
    );
}
