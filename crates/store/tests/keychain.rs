//! The database key in a real Secret Service: each test runs itself again inside its own
//! session bus (dbus-run-session) with its own unlocked GNOME Keyring and home folder, so
//! nothing touches the user's keychain and tests do not see each other.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

mod common;

use hearth_store::{Keychain, Store, StoreError};

const CHILD: &str = "HEARTH_KEYCHAIN_TEST_CHILD";
const SENTINEL: &str = "Sentinel-Patient-Quokka";

/// A test's profile inside its isolated run.
struct Profile {
    data: std::path::PathBuf,
    db: std::path::PathBuf,
    keychain: Keychain,
}

/// Outside the isolated run: runs test `name` isolated and returns `None` (the test is then
/// done). Inside it: the test's profile folder, database path and keychain entry.
fn isolated(name: &str, keyring: bool) -> Option<Profile> {
    let home = hearth_testkit::isolated(CHILD, name, keyring)?;
    let data = home.join("profile");
    std::fs::create_dir_all(&data).unwrap();
    Some(Profile {
        db: data.join("hearth.db"),
        data,
        // Unique per run: the kernel keyutils cache outlives one process.
        keychain: Keychain::new(
            "org.hearth.workstation.test",
            &format!("test-{}", home.display()),
        ),
    })
}

#[test]
fn a_new_database_gets_a_key_that_lives_only_in_the_keychain() {
    let Some(Profile { data, db, keychain }) = isolated(
        "a_new_database_gets_a_key_that_lives_only_in_the_keychain",
        true,
    ) else {
        return;
    };
    assert_eq!(keychain.load().unwrap(), None);

    {
        let store = Store::open_with_keychain(&db, &keychain).unwrap();
        store
            .put_resources(&[common::patient_row("p1", SENTINEL, "4100123")])
            .unwrap();
    }
    let key = keychain
        .load()
        .unwrap()
        .expect("the key is in the keychain");

    // Reopening finds the same key and the data.
    let store = Store::open_with_keychain(&db, &keychain).unwrap();
    assert!(store
        .resource("Patient", "p1")
        .unwrap()
        .unwrap()
        .contains(SENTINEL));
    drop(store);

    // The key is nowhere on disk in the profile, as hex or as bytes; nor is the patient.
    assert_eq!(
        common::files_containing(
            &data,
            secrecy::ExposeSecret::expose_secret(&key.hex()).as_bytes()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        common::files_containing(&data, SENTINEL.as_bytes()),
        Vec::<String>::new()
    );

    // Without the key, the database is refused with a clear error, and no new key is made
    // over the old data.
    keychain.forget().unwrap();
    match Store::open_with_keychain(&db, &keychain) {
        Err(StoreError::KeyMissing { path }) => assert!(path.ends_with("hearth.db")),
        other => panic!("expected KeyMissing, got {other:?}"),
    }
    assert_eq!(keychain.load().unwrap(), None);
}

#[test]
fn without_a_secret_service_hearth_says_so_and_writes_no_key_anywhere() {
    let Some(Profile { db, keychain, .. }) = isolated(
        "without_a_secret_service_hearth_says_so_and_writes_no_key_anywhere",
        false,
    ) else {
        return;
    };
    match Store::open_with_keychain(&db, &keychain) {
        Err(e @ StoreError::Keychain(_)) => {
            assert!(e.to_string().contains("keychain"), "{e}");
        }
        other => panic!("expected a keychain error, got {other:?}"),
    }
    assert!(!db.exists(), "a database was created without a kept key");
}
