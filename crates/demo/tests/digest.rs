//! The demo generator's promise: the same seed and the same clock give the same clinic on
//! every platform and with every build. Held by a digest recorded once: a change to the
//! generator, its random streams, its float arithmetic or its catalogue that alters the clinic
//! fails here, and must be a deliberate change of the constant below.

use chrono::DateTime;
use hearth_demo::{generate, DemoOptions, DEFAULT_SEED};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 of the canonical JSON (below) of the default demo clinic at [`CLOCK`]. Recorded
/// on Linux x86_64; the same as Python's `json.dumps(clinic, sort_keys=True,
/// separators=(",", ":"), ensure_ascii=False)` of the generated resources gives.
const DIGEST: &str = "5c9c1c4ff2aa9e5e31ba342cad46d0027ddcfd9b6a8fde6d33ae15b439c03e47";
/// A fixed clock with a non-UTC offset, in the middle of a working day.
const CLOCK: &str = "2026-03-10T11:10:00-05:00";

/// JSON with object keys sorted at every level and no spaces: the digest does not depend on
/// serde_json's key-order feature (`preserve_order`) or its pretty-printer. Numbers and
/// strings are written by serde_json (shortest round-trip floats, escaped strings).
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn digest_of(resources: &[Value]) -> String {
    let mut text = String::new();
    canonical(&Value::Array(resources.to_vec()), &mut text);
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn canonical_json_sorts_keys_at_every_level() {
    let v: Value =
        serde_json::from_str(r#"{"b":[{"y":1,"x":2.5}],"a":"é\"","c":null}"#).expect("json");
    let mut text = String::new();
    canonical(&v, &mut text);
    assert_eq!(text, r#"{"a":"é\"","b":[{"x":2.5,"y":1}],"c":null}"#);
}

#[test]
fn the_seeded_clinic_at_a_fixed_clock_has_the_recorded_digest() {
    let now = DateTime::parse_from_rfc3339(CLOCK).expect("clock");
    let clinic = generate(&DemoOptions::new(DEFAULT_SEED, now));
    assert!(clinic.len() > 1000, "only {} resources", clinic.len());
    assert_eq!(
        digest_of(&clinic),
        DIGEST,
        "the demo clinic for seed {DEFAULT_SEED} at {CLOCK} is not the recorded one: the same \
         seed and date must give the same clinic everywhere. If the generator changed on \
         purpose, record the new digest."
    );
}
