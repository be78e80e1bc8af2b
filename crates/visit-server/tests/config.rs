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

/// The shipped coturn configuration denies relaying to every special-purpose range. The list
/// is written here from the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890
/// and the RFCs that added to them), not read from the file; each range must be covered by
/// the file's `denied-peer-ip` lines (an address or `first-last`), and nothing is allowed back.
#[test]
fn the_coturn_example_denies_every_special_purpose_range() {
    use std::net::IpAddr;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../installers/visit-service/turnserver.conf");
    let text = std::fs::read_to_string(path).unwrap();
    let number = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => (4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (6, u128::from(v6)),
    };
    let mut denied: Vec<(u8, u128, u128)> = Vec::new();
    for line in text.lines().map(str::trim) {
        assert!(
            !line.starts_with("allowed-peer-ip"),
            "{line}: an allowed range overrides the denied ones"
        );
        let Some(value) = line.strip_prefix("denied-peer-ip=") else {
            continue;
        };
        let (first, last) = value.split_once('-').unwrap_or((value, value));
        let (first, last) = (
            number(first.trim().parse().unwrap_or_else(|_| panic!("{line}"))),
            number(last.trim().parse().unwrap_or_else(|_| panic!("{line}"))),
        );
        assert_eq!(first.0, last.0, "{line}: one family");
        assert!(first.1 <= last.1, "{line}: first after last");
        denied.push((first.0, first.1, last.1));
    }
    let expected = [
        // IPv4 (RFC 6890 and updates)
        "0.0.0.0/8",          // this network
        "10.0.0.0/8",         // private
        "100.64.0.0/10",      // shared address space (CGN)
        "127.0.0.0/8",        // loopback
        "169.254.0.0/16",     // link-local
        "172.16.0.0/12",      // private
        "192.0.0.0/24",       // IETF protocol assignments
        "192.0.2.0/24",       // TEST-NET-1
        "192.31.196.0/24",    // AS112-v4
        "192.52.193.0/24",    // AMT
        "192.88.99.0/24",     // 6to4 relay anycast
        "192.168.0.0/16",     // private
        "192.175.48.0/24",    // direct delegation AS112
        "198.18.0.0/15",      // benchmarking
        "198.51.100.0/24",    // TEST-NET-2
        "203.0.113.0/24",     // TEST-NET-3
        "224.0.0.0/4",        // multicast
        "240.0.0.0/4",        // reserved
        "255.255.255.255/32", // limited broadcast
        // IPv6
        "::/128",            // unspecified
        "::1/128",           // loopback
        "::/96",             // IPv4-compatible (deprecated)
        "::ffff:0:0/96",     // IPv4-mapped
        "64:ff9b::/96",      // NAT64 well-known prefix
        "64:ff9b:1::/48",    // local-use IPv4/IPv6 translation
        "100::/64",          // discard-only
        "2001::/23",         // IETF protocol assignments
        "2001::/32",         // Teredo
        "2001:10::/28",      // ORCHID (deprecated)
        "2001:20::/28",      // ORCHIDv2
        "2001:db8::/32",     // documentation
        "2002::/16",         // 6to4
        "2620:4f:8000::/48", // direct delegation AS112
        "3fff::/20",         // documentation
        "5f00::/16",         // SRv6 SIDs
        "fc00::/7",          // unique local
        "fe80::/10",         // link-local
        "fec0::/10",         // site-local (deprecated)
        "ff00::/8",          // multicast
    ];
    for net in expected {
        let net: ipnet::IpNet = net.parse().unwrap();
        let (family, first) = number(net.network());
        let (_, last) = number(net.broadcast());
        // Walk from the first address through the ranges that contain the next one.
        let mut next = first;
        while let Some(&(_, _, end)) = denied
            .iter()
            .find(|(f, a, b)| *f == family && *a <= next && next <= *b)
        {
            if end >= last {
                next = last;
                break;
            }
            next = end + 1;
        }
        assert_eq!(next, last, "{net} is not denied (from {next:#x} on)");
        assert!(
            denied
                .iter()
                .any(|(f, a, b)| *f == family && *a <= last && last <= *b),
            "{net}: its last address is not denied"
        );
    }
}
