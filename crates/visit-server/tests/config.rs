//! The settings IT deploys: the shipped example is valid, and bad settings are named.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::Command;

fn check(config: &std::path::Path, envs: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth-visit"))
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .env_remove("HEARTH_VISIT_LINK_SECRET")
        .env_remove("HEARTH_VISIT_TURN_SECRET")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_shipped_example_is_valid_and_mistakes_are_named() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../installers/visit-service/hearth-visit.toml");
    let (key, _) = hearth_testkit::smart::visit_client_key();
    let key = std::fs::read_to_string(key.path()).unwrap();
    let secrets = [
        ("HEARTH_VISIT_EHR_KEY", key.as_str()),
        (
            "HEARTH_VISIT_LINK_SECRET",
            "an-example-link-secret-of-enough-length-0123",
        ),
        (
            "HEARTH_VISIT_TURN_SECRET",
            "an-example-turn-secret-of-enough-length-0123",
        ),
    ];
    let (ok, text) = check(&example, &secrets);
    assert!(ok, "{text}");
    assert!(text.contains("is valid"));

    // Without its secret, the error says which secret and where it looked.
    let (ok, text) = check(&example, &[secrets[0], secrets[2]]);
    assert!(!ok);
    assert!(
        text.contains("link secret") && text.contains("/etc/hearth-visit/link-secret"),
        "{text}"
    );

    // A short secret, no client id for Hearth, an unknown key, relay without TURN: each named.
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(&example).unwrap();
    let cases = [
        (
            base.clone(),
            vec![
                ("HEARTH_VISIT_LINK_SECRET", "short"),
                secrets[0],
                secrets[2],
            ],
            "at least 32",
        ),
        // No EHR to ask about appointments; the EHR's key missing; the FHIR base as an
        // audience (the EHR's own tokens would be taken).
        (
            base.split("[ehr]").next().unwrap().to_owned()
                + "[turn]"
                + base.split("[turn]").nth(1).unwrap(),
            secrets.to_vec(),
            "missing field `ehr`",
        ),
        (
            base.clone(),
            secrets[1..].to_vec(),
            "/etc/hearth-visit/ehr-key.pem",
        ),
        (
            base.replace(
                "client_id = \"hearth\"\n",
                "client_id = \"hearth\"\naudiences = [\"https://ehr.example.org/fhir/\"]\n",
            ),
            secrets.to_vec(),
            "names the EHR's FHIR base",
        ),
        (
            base.replacen("client_id = \"hearth\"\n", "", 1),
            secrets.to_vec(),
            "client_id",
        ),
        (
            base.replace("\"::1\"", "\"10.0.0.0/33\""),
            secrets.to_vec(),
            "10.0.0.0/33",
        ),
        (
            base.replace("early_minutes", "erly_minutes"),
            secrets.to_vec(),
            "erly_minutes",
        ),
        (
            base.replace(
                "ice_transport_policy = \"all\"",
                "ice_transport_policy = \"relay\"",
            )
            .split("[turn]")
            .next()
            .unwrap()
            .to_owned(),
            secrets.to_vec(),
            "needs a [turn] section",
        ),
    ];
    for (i, (text, envs, expect)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (ok, out) = check(&path, &envs);
        assert!(!ok && out.contains(expect), "case {i}: {out}");
        assert!(
            out.contains(&path.display().to_string()),
            "names the file: {out}"
        );
    }
}
