//! The keychain helper against a real Secret Service: each test runs itself again inside its
//! own session bus (dbus-run-session) with its own unlocked GNOME Keyring and home folder.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

use hearth_keychain::{ExposeSecret, Keychain, SecretString};

const CHILD: &str = "HEARTH_KEYCHAIN_HELPER_TEST_CHILD";

/// Inside the isolated run: a keychain entry unique to it (the kernel keyutils cache outlives
/// one process). Outside: runs the test isolated and returns `None`.
fn isolated(name: &str, keyring: bool) -> Option<Keychain> {
    let home = hearth_testkit::isolated(CHILD, name, keyring)?;
    Some(Keychain::new(
        "org.hearth.keychain.test",
        &format!("test-{}", home.display()),
    ))
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_string())
}

#[test]
fn a_secret_is_kept_replaced_and_forgotten() {
    let Some(keychain) = isolated("a_secret_is_kept_replaced_and_forgotten", true) else {
        return;
    };
    assert!(keychain.load().unwrap().is_none());
    keychain.store(&secret("first-refresh-token")).unwrap();
    let kept = keychain.load().unwrap().expect("kept");
    assert_eq!(kept.expose_secret(), "first-refresh-token");
    assert!(!format!("{kept:?}").contains("first"), "{kept:?}");
    // Replaced in place: one entry, the new secret.
    keychain.store(&secret("second-refresh-token")).unwrap();
    assert_eq!(
        keychain.load().unwrap().unwrap().expose_secret(),
        "second-refresh-token"
    );
    keychain.forget().unwrap();
    assert!(keychain.load().unwrap().is_none());
    keychain.forget().unwrap();
}

#[test]
fn without_a_secret_service_the_error_names_the_entry_and_no_secret() {
    let Some(keychain) = isolated(
        "without_a_secret_service_the_error_names_the_entry_and_no_secret",
        false,
    ) else {
        return;
    };
    let e = keychain.store(&secret("never-kept-token")).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&keychain.name()), "{text}");
    assert!(!text.contains("never-kept"), "{text}");
}
