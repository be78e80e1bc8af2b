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

/// What someone holding only the database key can do to the audit log: open the file, change
/// an entry, and make the chain consistent again with plain SHA-256 links, computed here as
/// such a person would (the chain's input: previous link, seq, then each field's length and
/// text). `from` is the first entry rewritten; `entity` its new entity (unchanged if `None`).
fn rewrite_chain_with_plain_hashes(
    db: &std::path::Path,
    key: &hearth_store::DbKey,
    from: i64,
    entity: Option<&str>,
) {
    use sha2::{Digest, Sha256};
    let conn = hearth_store::open_connection(db).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{}'\"; PRAGMA cipher_page_size = {};",
        secrecy::ExposeSecret::expose_secret(&key.hex()),
        hearth_store::PAGE_SIZE
    ))
    .unwrap();
    if let Some(entity) = entity {
        conn.execute(
            "UPDATE audit_log SET entity = ?1 WHERE seq = ?2",
            rusqlite::params![entity, from],
        )
        .unwrap();
    }
    let rows: Vec<(i64, [String; 4])> = conn
        .prepare("SELECT seq, at, actor, action, entity FROM audit_log ORDER BY seq")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?]))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev = "0".repeat(64);
    for (seq, fields) in rows {
        if seq >= from {
            let mut h = Sha256::new();
            h.update(prev.as_bytes());
            h.update(seq.to_be_bytes());
            for f in &fields {
                h.update((f.len() as u64).to_be_bytes());
                h.update(f.as_bytes());
            }
            let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            conn.execute(
                "UPDATE audit_log SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                rusqlite::params![prev, hash, seq],
            )
            .unwrap();
        }
        prev = conn
            .query_row("SELECT hash FROM audit_log WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .unwrap();
    }
}

#[test]
fn the_audit_chain_is_keyed_apart_from_the_database_key() {
    let Some(Profile { db, keychain, .. }) =
        isolated("the_audit_chain_is_keyed_apart_from_the_database_key", true)
    else {
        return;
    };
    {
        let store = Store::open_with_keychain(&db, &keychain).unwrap();
        for patient in ["Patient/p1", "Patient/p2", "Patient/p3"] {
            store
                .audit("Practitioner/d1", "view-chart", patient)
                .unwrap();
        }
        assert_eq!(store.verify_audit().unwrap(), 3);
    }
    // The database key alone: who viewed p2 is rewritten, the chain recomputed.
    let key = keychain.load().unwrap().unwrap();
    rewrite_chain_with_plain_hashes(&db, &key, 2, Some("Patient/p9"));
    let store = Store::open_with_keychain(&db, &keychain).unwrap();
    assert!(
        matches!(
            store.verify_audit(),
            Err(StoreError::AuditTampered { seq: 2 })
        ),
        "{:?}",
        store.verify_audit()
    );
}

#[test]
fn a_chain_made_before_the_audit_key_is_carried_over_when_intact() {
    let Some(Profile { db, keychain, .. }) = isolated(
        "a_chain_made_before_the_audit_key_is_carried_over_when_intact",
        true,
    ) else {
        return;
    };
    // A database of an earlier Hearth: its key in the keychain, a plain SHA-256 chain.
    let key = keychain.create().unwrap();
    {
        let store = Store::open(&db, &key).unwrap();
        store.audit("Practitioner/d1", "sign-in", "").unwrap();
        store
            .audit("Practitioner/d1", "view-chart", "Patient/p1")
            .unwrap();
    }
    rewrite_chain_with_plain_hashes(&db, &key, 1, None);
    assert!(keychain.load_audit_key().unwrap().is_none());
    // Opened now: the audit key is made, the intact chain keyed, new entries follow.
    let store = Store::open_with_keychain(&db, &keychain).unwrap();
    assert!(keychain.load_audit_key().unwrap().is_some());
    store
        .audit("Practitioner/d1", "view-chart", "Patient/p2")
        .unwrap();
    assert_eq!(store.verify_audit().unwrap(), 3);
    drop(store);
    // ...and is keyed: the same plain rewrite of it is found.
    rewrite_chain_with_plain_hashes(&db, &key, 1, None);
    let store = Store::open_with_keychain(&db, &keychain).unwrap();
    assert!(matches!(
        store.verify_audit(),
        Err(StoreError::AuditTampered { seq: 1 })
    ));
}

#[test]
fn a_keyed_chain_whose_audit_key_is_gone_is_refused_not_carried_over() {
    let Some(Profile { db, keychain, data }) = isolated(
        "a_keyed_chain_whose_audit_key_is_gone_is_refused_not_carried_over",
        true,
    ) else {
        return;
    };
    {
        let store = Store::open_with_keychain(&db, &keychain).unwrap();
        for patient in ["Patient/p1", "Patient/p2"] {
            store
                .audit("Practitioner/d1", "view-chart", patient)
                .unwrap();
        }
    }
    let key = keychain.load().unwrap().expect("the database key");
    // Someone holding the database key rewrites the log with plain hashes, as an earlier
    // version's chain would be, and removes the audit key's keychain entry (any process of
    // the user can).
    rewrite_chain_with_plain_hashes(&db, &key, 2, Some("Patient/p9"));
    let account = format!("audit-key:test-{}", data.parent().unwrap().display());
    hearth_keychain::Keychain::new("org.hearth.workstation.test", &account)
        .forget()
        .unwrap();
    assert!(keychain.load_audit_key().unwrap().is_none());
    // The chain is not re-keyed under a new key: the profile is refused, saying why.
    match Store::open_with_keychain(&db, &keychain) {
        Err(e @ StoreError::AuditKeyMissing { .. }) => {
            assert!(e.to_string().contains("audit key"), "{e}")
        }
        other => panic!("expected AuditKeyMissing, got {other:?}"),
    }
    assert!(
        keychain.load_audit_key().unwrap().is_none(),
        "a new audit key was made for the rewritten chain"
    );
}
