//! Notes, charges and milestones in the encrypted store: a signature is all or nothing and
//! made once, drafts never go back to an older revision, a charge moves only forward.

#![allow(
    clippy::unwrap_used,
    reason = "a test file: a failed unwrap is the test failing"
)]

use hearth_store::{
    ChargeRow, ChargeRowState, DbKey, Method, NoteVersionRow, OutboxState, OutboxWrite, Signed,
    Signing, Store,
};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hearth.db"), &DbKey::generate().unwrap()).unwrap();
    (dir, store)
}

fn create(key: &str) -> OutboxWrite {
    OutboxWrite {
        idempotency_key: key.into(),
        resource_type: "DocumentReference".into(),
        resource_id: None,
        method: Method::Create,
        if_match: None,
        body: Some("{\"resourceType\":\"DocumentReference\"}".into()),
    }
}

fn charge(id: &str, control: &str, replaces: Option<&str>) -> ChargeRow {
    ChargeRow {
        charge_id: id.into(),
        appointment_id: "a1".into(),
        control_id: control.into(),
        body: "{}".into(),
        message: "MSH|^~\\&|".into(),
        state: ChargeRowState::Queued,
        attempts: 0,
        next_attempt_ms: 0,
        reason: None,
        created_at: "2026-03-10T15:00:00Z".into(),
        acked_at: None,
        replaces: replaces.map(str::to_string),
    }
}

fn version(v: u32, key: &str) -> NoteVersionRow {
    NoteVersionRow {
        appointment_id: "a1".into(),
        version: v,
        patient_id: "p1".into(),
        body: "{\"text\":\"signed\"}".into(),
        signed_at: format!("2026-03-10T15:2{v}:00Z"),
        signed_by: "Dr A".into(),
        write_key: key.into(),
    }
}

#[test]
fn a_draft_never_goes_back_to_an_older_revision() {
    let (_dir, s) = store();
    assert!(s.note_draft("a1").unwrap().is_none());
    s.save_note_draft("a1", 2, "two", None).unwrap();
    let kept = s.save_note_draft("a1", 1, "one", None).unwrap();
    assert_eq!((kept.revision, kept.body.as_str()), (2, "two"));
    s.save_note_draft("a1", 3, "three", None).unwrap();
    assert_eq!(s.note_draft("a1").unwrap().unwrap().body, "three");
}

#[test]
fn signing_is_whole_and_once() {
    let (_dir, s) = store();
    s.save_note_draft("a1", 4, "draft", None).unwrap();
    let v1 = version(1, "k-doc-1");
    let writes = vec![(None, create("k-doc-1")), (None, create("k-item-0"))];
    let c = charge("c1", "CTRL1", None);
    let signing = Signing {
        version: &v1,
        writes: &writes,
        charge: Some(&c),
        actor: "Practitioner/d1",
    };
    assert_eq!(s.sign_note(&signing).unwrap(), Signed::Now);
    // Asked again (a second click, a retry after a crash): nothing more.
    assert_eq!(s.sign_note(&signing).unwrap(), Signed::Already);
    assert_eq!(s.pending().unwrap().len(), 2);
    assert_eq!(s.charges_for("a1").unwrap().len(), 1);
    assert!(s.note_draft("a1").unwrap().is_none());
    assert_eq!(s.note_versions("a1").unwrap(), vec![v1.clone()]);
    assert_eq!(s.patient_note_versions("p1").unwrap().len(), 1);
    // A save that raced the signature brings no draft back; an amendment of v1 may be saved.
    assert!(matches!(
        s.save_note_draft("a1", 5, "late", None),
        Err(hearth_store::StoreError::NoteSigned)
    ));
    assert!(s.note_draft("a1").unwrap().is_none());
    s.save_note_draft("a1", 0, "amending", Some(1)).unwrap();
    assert!(s.save_note_draft("a1", 1, "amending v0?", Some(0)).is_err());
    s.save_note_draft("a1", 1, "amending more", Some(1))
        .unwrap();
    let m = s.visit_milestones("a1").unwrap();
    assert_eq!(m.note_signed_at.as_deref(), Some(v1.signed_at.as_str()));
    // A signature whose charge collides (same control id) leaves nothing behind.
    let v2 = version(2, "k-doc-2");
    let writes2 = vec![(None, create("k-doc-2"))];
    let clash = charge("c2", "CTRL1", None);
    assert!(s
        .sign_note(&Signing {
            version: &v2,
            writes: &writes2,
            charge: Some(&clash),
            actor: "Practitioner/d1",
        })
        .is_err());
    assert_eq!(s.note_versions("a1").unwrap().len(), 1);
    assert!(s.outbox_entry_by_key("k-doc-2").unwrap().is_none());
}

#[test]
fn a_charge_moves_forward_only_and_a_correction_replaces_a_refused_one() {
    let (_dir, s) = store();
    let v1 = version(1, "k-doc-1");
    let c = charge("c1", "CTRL1", None);
    s.sign_note(&Signing {
        version: &v1,
        writes: &[],
        charge: Some(&c),
        actor: "x",
    })
    .unwrap();
    assert_eq!(s.due_charges(0, 10).unwrap().len(), 1);
    s.charge_sending("c1", 5_000).unwrap();
    s.charge_attempt_failed("c1", "unreachable", 5_000).unwrap();
    assert!(s.due_charges(4_999, 10).unwrap().is_empty());
    assert_eq!(s.due_charges(5_000, 10).unwrap()[0].attempts, 1);
    assert_eq!(s.charges_waiting().unwrap(), (1, Some(5_000)));
    // A correction of a charge billing has not refused is refused.
    let fix = charge("c1-fix", "CTRL2", Some("c1"));
    assert!(s.correct_charge(&fix, &[], "x").is_err());
    s.charge_acknowledged("c1", false, Some("AE: bad code"), "t1")
        .unwrap();
    // A late answer for a charge already settled changes nothing.
    s.charge_acknowledged("c1", true, None, "t2").unwrap();
    let refused = s.charge("c1").unwrap().unwrap();
    assert_eq!(refused.state, ChargeRowState::Refused);
    assert_eq!(refused.reason.as_deref(), Some("AE: bad code"));
    assert!(s.visit_milestones("a1").unwrap().charge_acked_at.is_none());
    let writes = vec![(None, create("k-item-fix"))];
    s.correct_charge(&fix, &writes, "x").unwrap();
    assert_eq!(
        s.charge("c1").unwrap().unwrap().state,
        ChargeRowState::Corrected
    );
    assert!(s
        .correct_charge(&charge("c1-fix2", "CTRL3", Some("c1")), &[], "x")
        .is_err());
    assert_eq!(
        s.outbox_entry_by_key("k-item-fix").unwrap().unwrap().state,
        OutboxState::Pending
    );
    s.charge_acknowledged("c1-fix", true, None, "t3").unwrap();
    assert_eq!(
        s.visit_milestones("a1").unwrap().charge_acked_at.as_deref(),
        Some("t3")
    );
    assert!(s.due_charges(i64::MAX, 10).unwrap().is_empty());
}
