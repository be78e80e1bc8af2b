//! The encrypted store against real SQLCipher files on disk.

#![allow(
    clippy::unwrap_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

mod common;

use hearth_store::{
    migrations, DbKey, Method, OutboxState, OutboxWrite, Projection, ResourceRow, Store, StoreError,
};
use rusqlite::Connection;
use std::path::Path;

const SENTINEL_NAME: &str = "Zebulon Quixotic-Sentinel";
const SENTINEL_MRN: &str = "MRN-SENTINEL-90210";

fn observation_row(id: &str, patient: &str, code: &str, when: &str) -> ResourceRow {
    ResourceRow {
        resource_type: "Observation".into(),
        id: id.into(),
        version_id: None,
        last_updated: None,
        patient_id: Some(patient.into()),
        json: format!(
            r#"{{"resourceType":"Observation","id":"{id}","effectiveDateTime":"{when}"}}"#
        ),
        index: Projection::Observation {
            code: Some(code.into()),
            effective: Some(when.into()),
        },
        packed: None,
    }
}

fn appointment_row(id: &str, start_utc: &str) -> ResourceRow {
    ResourceRow {
        resource_type: "Appointment".into(),
        id: id.into(),
        version_id: None,
        last_updated: None,
        patient_id: Some("p1".into()),
        json: format!(r#"{{"resourceType":"Appointment","id":"{id}","start":"{start_utc}"}}"#),
        index: Projection::Appointment {
            start_utc: start_utc.into(),
            practitioner_id: Some("d1".into()),
        },
        packed: None,
    }
}

#[test]
fn resources_come_back_byte_for_byte_and_by_projection() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hearth.db"), &DbKey::generate().unwrap()).unwrap();
    let patient = common::patient_row("p1", "Ada Lovelace", "4100123");
    let rows = [
        patient.clone(),
        observation_row("o2", "p1", "8867-4", "2025-02-01"),
        observation_row("o1", "p1", "8867-4", "2024-02-01"),
        observation_row("o3", "p1", "29463-7", "2024-02-01"),
        appointment_row("a-late", "2026-03-10T20:00:00Z"),
        appointment_row("a-early", "2026-03-10T13:00:00Z"),
        appointment_row("a-next-day", "2026-03-11T13:00:00Z"),
    ];
    assert_eq!(store.put_resources(&rows).unwrap(), rows.len());
    assert_eq!(
        store.resource("Patient", "p1").unwrap().unwrap(),
        patient.json
    );
    assert_eq!(store.resource("Patient", "nobody").unwrap(), None);
    assert_eq!(
        store
            .resources_for_patient("Observation", "p1")
            .unwrap()
            .len(),
        3
    );
    let hr = store.observations("p1", "8867-4").unwrap();
    assert!(
        hr[0].contains("\"o1\"") && hr[1].contains("\"o2\""),
        "{hr:?}"
    );
    let day = store
        .appointments_starting("2026-03-10T05:00:00Z", "2026-03-11T05:00:00Z")
        .unwrap();
    assert_eq!(day.len(), 2);
    assert!(day[0].contains("a-early"));
    assert_eq!(store.resource_count().unwrap(), rows.len());
}

#[test]
fn nothing_readable_reaches_the_disk_and_the_key_is_required() {
    let (dir, path, key) = common::fresh_db();
    {
        let store = Store::open(&path, &key).unwrap();
        store
            .put_resources(&[common::patient_row(
                "p-sentinel",
                SENTINEL_NAME,
                SENTINEL_MRN,
            )])
            .unwrap();
        store
            .enqueue(
                &OutboxWrite {
                    idempotency_key: "k1".into(),
                    resource_type: "Patient".into(),
                    resource_id: Some("p-sentinel".into()),
                    method: Method::Update,
                    if_match: Some("W/\"3\"".into()),
                    body: Some(format!(
                        "{{\"name\":\"{SENTINEL_NAME}\",\"mrn\":\"{SENTINEL_MRN}\"}}"
                    )),
                },
                "Practitioner/d1",
            )
            .unwrap();
        // Checked while open, so the WAL still holds the latest pages.
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            files.iter().any(|f| f.to_string_lossy().ends_with("-wal")),
            "{files:?}"
        );
        for needle in [SENTINEL_NAME, SENTINEL_MRN, "Patient", "resourceType"] {
            let hits = common::files_containing(dir.path(), needle.as_bytes());
            assert!(hits.is_empty(), "{hits:?} hold {needle:?}");
        }
    }

    // Without the key (plain SQLite), the file is not a database.
    let plain = hearth_store::open_connection(&path).unwrap();
    let err = plain
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase)
    );

    // With the wrong key, a clear error naming the file.
    match Store::open(&path, &DbKey::generate().unwrap()) {
        Err(StoreError::WrongKey { path: p }) => assert!(p.ends_with("hearth.db")),
        other => panic!("expected WrongKey, got {other:?}"),
    }
    // With the right key, everything is there.
    let store = Store::open(&path, &key).unwrap();
    assert!(store
        .resource("Patient", "p-sentinel")
        .unwrap()
        .unwrap()
        .contains(SENTINEL_MRN));
    assert_eq!(store.pending().unwrap().len(), 1);
}

/// A connection of our own to a store's file, keyed for the page size stores are made with.
fn keyed(path: &Path, key: &DbKey) -> Connection {
    keyed_at(path, key, hearth_store::PAGE_SIZE)
}

fn keyed_at(path: &Path, key: &DbKey, page_size: u32) -> Connection {
    let conn = hearth_store::open_connection(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{}'\"; PRAGMA cipher_page_size = {page_size};",
        secrecy::ExposeSecret::expose_secret(&key.hex())
    ))
    .unwrap();
    conn
}

#[test]
fn every_earlier_schema_migrates_to_the_latest() {
    for from in 0..migrations::latest() {
        let (_dir, path, key) = common::fresh_db();
        let mut conn = keyed(&path, &key);
        migrations::migrate_to(&mut conn, "test", from).unwrap();
        if from >= 1 {
            // A write queued under the old schema must survive the upgrade and still be sent.
            conn.execute_batch(
                "INSERT INTO outbox (idempotency_key, resource_type, resource_id, method, if_match, body, created_at)
                 VALUES ('k-old', 'Appointment', 'a1', 'update', 'W/\"1\"', '{}', '2026-01-01T00:00:00Z');",
            )
            .unwrap();
            // Schema 3 keeps resources as (codec, body); earlier ones as JSON text.
            let resource = if from >= 3 {
                "INSERT INTO resource (type, id, version_id, codec, body)
                 VALUES ('Patient', 'old', '1', 0, CAST('{\"resourceType\":\"Patient\",\"id\":\"old\"}' AS BLOB));"
            } else {
                "INSERT INTO resource (type, id, version_id, json)
                 VALUES ('Patient', 'old', '1', '{\"resourceType\":\"Patient\",\"id\":\"old\"}');"
            };
            conn.execute_batch(resource).unwrap();
        }
        drop(conn);
        let store = Store::open(&path, &key).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            migrations::latest(),
            "from {from}"
        );
        if from >= 1 {
            // A resource stored before compression reads back as it was.
            assert_eq!(
                store.resource("Patient", "old").unwrap().as_deref(),
                Some(r#"{"resourceType":"Patient","id":"old"}"#),
                "from {from}"
            );
        }
        let pending = store.pending().unwrap();
        assert_eq!(pending.len(), usize::from(from >= 1), "from {from}");
        if let Some(old) = pending.first() {
            assert_eq!(old.write.if_match.as_deref(), Some("W/\"1\""));
            store.mark_sent(old.seq, Some("2"), None).unwrap();
            assert_eq!(store.outbox_summary().unwrap().sent, 1);
        }
        store
            .put_resources(&[common::patient_row("p1", "A", "1")])
            .unwrap();
    }
}

#[test]
fn a_database_from_a_newer_hearth_is_refused() {
    let (_dir, path, key) = common::fresh_db();
    drop(Store::open(&path, &key).unwrap());
    keyed(&path, &key)
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match Store::open(&path, &key) {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        other => panic!("expected TooNew, got {other:?}"),
    }
}

fn write(key: &str) -> OutboxWrite {
    OutboxWrite {
        idempotency_key: key.into(),
        resource_type: "DocumentReference".into(),
        resource_id: None,
        method: Method::Create,
        if_match: None,
        body: Some("{}".into()),
    }
}

#[test]
fn the_outbox_is_durable_ordered_and_idempotent() {
    let (_dir, path, key) = common::fresh_db();
    {
        let store = Store::open(&path, &key).unwrap();
        let a = store.enqueue(&write("note-1"), "Practitioner/d1").unwrap();
        let b = store.enqueue(&write("note-2"), "Practitioner/d1").unwrap();
        assert_eq!(
            store.enqueue(&write("note-1"), "Practitioner/d1").unwrap(),
            a
        );
        assert!(b > a);
    }
    let store = Store::open(&path, &key).unwrap();
    let pending = store.pending().unwrap();
    let keys: Vec<_> = pending
        .iter()
        .map(|e| e.write.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["note-1", "note-2"]);
    store
        .record_attempt(pending[0].seq, OutboxState::Failed, None)
        .unwrap();
    store
        .record_attempt(
            pending[1].seq,
            OutboxState::Pending,
            Some("connection refused"),
        )
        .unwrap();
    let left = store.pending().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].attempts, 1);
    // Found by its key whatever its state; an unknown key is none.
    let failed = store.outbox_entry_by_key("note-1").unwrap().unwrap();
    assert_eq!(
        (failed.seq, failed.state),
        (pending[0].seq, OutboxState::Failed)
    );
    assert_eq!(store.outbox_entry_by_key("note-9").unwrap(), None);
    assert_eq!(left[0].last_error.as_deref(), Some("connection refused"));
    assert!(matches!(
        store.record_attempt(999, OutboxState::Failed, None),
        Err(StoreError::NoSuchOutboxEntry { seq: 999 })
    ));
    store
        .set_cursor("Observation", "2026-01-01T00:00:00Z")
        .unwrap();
    store
        .set_cursor("Observation", "2026-01-02T00:00:00Z")
        .unwrap();
    assert_eq!(
        store.cursor("Observation").unwrap().as_deref(),
        Some("2026-01-02T00:00:00Z")
    );
}

#[test]
fn the_audit_log_is_a_chain_that_shows_tampering() {
    let (_dir, path, key) = common::fresh_db();
    let store = Store::open(&path, &key).unwrap();
    store
        .audit("Practitioner/d1", "read", "Patient/p1")
        .unwrap();
    store.enqueue(&write("n1"), "Practitioner/d1").unwrap();
    store
        .audit("Practitioner/d1", "read", "Patient/p2")
        .unwrap();
    assert_eq!(store.verify_audit().unwrap(), 3);
    drop(store);
    keyed(&path, &key)
        .execute(
            "UPDATE audit_log SET entity = 'Patient/p9' WHERE seq = 2",
            [],
        )
        .unwrap();
    let store = Store::open(&path, &key).unwrap();
    assert!(matches!(
        store.verify_audit(),
        Err(StoreError::AuditTampered { seq: 2 })
    ));
}

#[test]
fn only_server_errors_give_a_write_up_and_unreadable_records_are_kept_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hearth.db"), &DbKey::generate().unwrap()).unwrap();
    let write = OutboxWrite {
        idempotency_key: "k-1".into(),
        resource_type: "Appointment".into(),
        resource_id: Some("a1".into()),
        method: Method::Update,
        if_match: Some("W/\"1\"".into()),
        body: Some("{}".into()),
    };
    let seq = store.enqueue(&write, "tester").unwrap();
    // Offline and sign-in failures, however many, never give it up.
    for _ in 0..10 {
        store
            .record_attempt(seq, OutboxState::Pending, Some("offline"))
            .unwrap();
    }
    assert_eq!(
        store.record_server_error(seq, "503", 3).unwrap(),
        OutboxState::Pending
    );
    assert_eq!(
        store.record_server_error(seq, "503", 3).unwrap(),
        OutboxState::Pending
    );
    assert_eq!(
        store.record_server_error(seq, "503", 3).unwrap(),
        OutboxState::Failed
    );
    let e = store.outbox_entry(seq).unwrap();
    assert_eq!((e.attempts, e.server_errors), (13, 3));
    assert!(matches!(
        store.record_server_error(999, "503", 3),
        Err(StoreError::NoSuchOutboxEntry { seq: 999 })
    ));

    // Unreadable records: named once each, whichever name came first, until read at last.
    store
        .reject(
            "http://ehr/fhir/Observation/o1",
            Some(("Observation", "o1")),
            "field `resourceType` is missing",
        )
        .unwrap();
    store
        .reject(
            "Observation/o1",
            Some(("Observation", "o1")),
            "field `code` is not an object",
        )
        .unwrap();
    store
        .reject("Bundle entry 4", None, "field `resource` is missing")
        .unwrap();
    let kept = store.rejected().unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let obs = kept.iter().find(|r| r.resource.is_some()).unwrap();
    assert_eq!(obs.record, "http://ehr/fhir/Observation/o1");
    assert_eq!(obs.message, "field `code` is not an object");
    assert_eq!(obs.fetches, 2);
    assert_eq!(store.rejected_count().unwrap(), 2);
    let row = ResourceRow {
        resource_type: "Observation".into(),
        id: "o1".into(),
        version_id: Some("2".into()),
        last_updated: None,
        patient_id: None,
        json: r#"{"resourceType":"Observation","id":"o1"}"#.into(),
        index: Projection::None,
        packed: None,
    };
    store.ingest([&row]).unwrap();
    let kept = store.rejected().unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].record, "Bundle entry 4");

    // A server naming ever-new unreadable entries (names no fetch can settle) fills the table
    // only up to its limit; the ones served most recently stay.
    let flood = hearth_store::REJECTED_LIMIT + 20;
    for i in 0..flood {
        store
            .reject(
                &format!("urn:uuid:flood-{i:05}"),
                None,
                "field `id` is missing",
            )
            .unwrap();
    }
    assert_eq!(
        store.rejected_count().unwrap(),
        hearth_store::REJECTED_LIMIT
    );
    let kept = store.rejected().unwrap();
    let last = format!("urn:uuid:flood-{:05}", flood - 1);
    assert!(
        kept.iter().any(|r| r.record == last),
        "the newest was dropped"
    );
}

/// Whether the file at `path` decrypts with `key` at `page_size` (SQLCipher read directly,
/// not through the store).
fn opens_at(path: &Path, key: &DbKey, page_size: u32) -> bool {
    keyed_at(path, key, page_size)
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .is_ok()
}

#[test]
fn a_new_store_has_16_kib_pages_and_a_store_of_an_earlier_version_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let key = DbKey::generate().unwrap();

    // A new store.
    let path = dir.path().join("new.db");
    let store = Store::open(&path, &key).unwrap();
    store
        .put_resources([&observation_row("o1", "p1", "8867-4", "2026-01-01")])
        .unwrap();
    drop(store);
    assert!(opens_at(&path, &key, 16_384));
    assert!(!opens_at(&path, &key, 4_096));

    // A database made by an earlier version: SQLCipher 4's default page size, 4 KiB.
    let path = dir.path().join("old.db");
    {
        use secrecy::ExposeSecret;
        let conn = hearth_store::open_connection(&path).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA key = \"x'{}'\"; PRAGMA journal_mode = WAL; CREATE TABLE earlier (x);",
            key.hex().expose_secret()
        ))
        .unwrap();
    }
    assert!(opens_at(&path, &key, 4_096));
    let store = Store::open(&path, &key).unwrap();
    store
        .put_resources([&observation_row("o1", "p1", "8867-4", "2026-01-01")])
        .unwrap();
    drop(store);
    let store = Store::open(&path, &key).unwrap();
    assert!(store.resource("Observation", "o1").unwrap().is_some());
    drop(store);
    // It kept its page size.
    assert!(opens_at(&path, &key, 4_096));
    assert!(!opens_at(&path, &key, 16_384));
    // A wrong key fits neither size.
    assert!(matches!(
        Store::open(&path, &DbKey::generate().unwrap()),
        Err(StoreError::WrongKey { .. })
    ));
}

#[test]
fn a_profile_is_bound_once_and_the_binding_survives_a_reopen() {
    let (_dir, path, key) = common::fresh_db();
    let made = hearth_store::ProfileBinding {
        fhir_base_url: "https://ehr.example.org/fhir".into(),
        issuer: Some("https://login.example.org".into()),
        client_id: Some("hearth".into()),
    };
    {
        let store = Store::open(&path, &key).unwrap();
        assert_eq!(store.profile_binding().unwrap(), None);
        assert_eq!(store.bind_profile(&made).unwrap(), made);
        // A second binding never replaces the first: it is what the profile was made with.
        let weaker = hearth_store::ProfileBinding {
            issuer: None,
            client_id: None,
            ..made.clone()
        };
        assert_eq!(store.bind_profile(&weaker).unwrap(), made);
    }
    let store = Store::open(&path, &key).unwrap();
    assert_eq!(store.profile_binding().unwrap(), Some(made));
}
