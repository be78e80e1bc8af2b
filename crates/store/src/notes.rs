//! Visit notes (drafts and signed versions), the charges that go to billing from them, and
//! each visit's milestones. Bodies are the core's JSON; this module keeps them, in the
//! encrypted database, with the states the workflow needs.

use super::*;
use outbox::queue_in;

/// A saved draft.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteDraftRow {
    pub revision: i64,
    pub body: String,
    pub saved_at: String,
}

impl std::fmt::Debug for NoteDraftRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteDraftRow(revision {})", self.revision)
    }
}

/// A signed version of a visit's note.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVersionRow {
    pub appointment_id: String,
    pub version: u32,
    pub patient_id: String,
    pub body: String,
    pub signed_at: String,
    pub signed_by: String,
    /// The outbox key of its DocumentReference's create.
    pub write_key: String,
}

impl std::fmt::Debug for NoteVersionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NoteVersionRow({} v{})",
            self.appointment_id, self.version
        )
    }
}

/// Where a charge stands (see `hearth_ipc::ChargeState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeRowState {
    Queued,
    Accepted,
    Refused,
    Corrected,
    NotSent,
}

impl ChargeRowState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Accepted => "accepted",
            Self::Refused => "refused",
            Self::Corrected => "corrected",
            Self::NotSent => "not_sent",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Self> {
        Ok(match s {
            "queued" => Self::Queued,
            "accepted" => Self::Accepted,
            "refused" => Self::Refused,
            "corrected" => Self::Corrected,
            "not_sent" => Self::NotSent,
            other => {
                return Err(rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    format!("unknown charge state {other:?}").into(),
                ))
            }
        })
    }
}

/// A charge for billing: one HL7 message, sent as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ChargeRow {
    pub charge_id: String,
    pub appointment_id: String,
    /// MSH-10, the same on every retry.
    pub control_id: String,
    /// The core's JSON of the charge (lines, diagnoses) for the view.
    pub body: String,
    /// The HL7 message, byte for byte as sent.
    pub message: String,
    pub state: ChargeRowState,
    pub attempts: u32,
    /// Unix milliseconds: not sent again before.
    pub next_attempt_ms: i64,
    pub reason: Option<String>,
    pub created_at: String,
    pub acked_at: Option<String>,
    /// The refused charge this one corrects.
    pub replaces: Option<String>,
}

impl std::fmt::Debug for ChargeRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargeRow")
            .field("charge_id", &self.charge_id)
            .field("control_id", &self.control_id)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A visit's milestones, RFC 3339, each the first time it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VisitMilestones {
    pub visit_ended_at: Option<String>,
    pub note_signed_at: Option<String>,
    pub charge_acked_at: Option<String>,
}

/// Everything signing a note changes, applied in one durable transaction.
pub struct Signing<'a> {
    pub version: &'a NoteVersionRow,
    /// Outbox writes (the DocumentReference, the Encounter, ChargeItems, a superseded
    /// earlier version), each with the local copy that goes with it, in order.
    pub writes: &'a [(Option<ResourceRow>, OutboxWrite)],
    /// The charge for billing, when this signature bills.
    pub charge: Option<&'a ChargeRow>,
    pub actor: &'a str,
}

/// What [`Store::sign_note`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    Now,
    /// That version was signed before (a second click, a retry after a crash): nothing new.
    Already,
}

const CHARGE_COLUMNS: &str =
    "charge_id, appointment_id, control_id, body, message, state, attempts,
     next_attempt_ms, reason, created_at, acked_at, replaces";

fn charge_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChargeRow> {
    Ok(ChargeRow {
        charge_id: r.get(0)?,
        appointment_id: r.get(1)?,
        control_id: r.get(2)?,
        body: r.get(3)?,
        message: r.get(4)?,
        state: ChargeRowState::parse(&r.get::<_, String>(5)?)?,
        attempts: r.get(6)?,
        next_attempt_ms: r.get(7)?,
        reason: r.get(8)?,
        created_at: r.get(9)?,
        acked_at: r.get(10)?,
        replaces: r.get(11)?,
    })
}

fn insert_charge(tx: &rusqlite::Transaction<'_>, c: &ChargeRow) -> Result<()> {
    tx.execute(
        &format!("INSERT INTO charge ({CHARGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        params![
            c.charge_id,
            c.appointment_id,
            c.control_id,
            c.body,
            c.message,
            c.state.as_str(),
            c.attempts,
            c.next_attempt_ms,
            c.reason,
            c.created_at,
            c.acked_at,
            c.replaces
        ],
    )?;
    Ok(())
}

fn milestone(
    tx: &rusqlite::Transaction<'_>,
    appointment_id: &str,
    column: &str,
    at: &str,
) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO visit_milestone (appointment_id) VALUES (?1)",
        params![appointment_id],
    )?;
    tx.execute(
        &format!(
            "UPDATE visit_milestone SET {column} = ?2 WHERE appointment_id = ?1 AND {column} IS NULL"
        ),
        params![appointment_id, at],
    )?;
    Ok(())
}

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NoteVersionRow> {
    Ok(NoteVersionRow {
        appointment_id: r.get(0)?,
        version: r.get(1)?,
        patient_id: r.get(2)?,
        body: r.get(3)?,
        signed_at: r.get(4)?,
        signed_by: r.get(5)?,
        write_key: r.get(6)?,
    })
}

fn draft_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NoteDraftRow> {
    Ok(NoteDraftRow {
        revision: r.get(0)?,
        body: r.get(1)?,
        saved_at: r.get(2)?,
    })
}

const VERSION_COLUMNS: &str =
    "appointment_id, version, patient_id, body, signed_at, signed_by, write_key";

impl Store {
    /// Every row `sql` selects, read by `f`, on a read connection.
    fn all<T>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        f: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let conn = self.reader();
        let mut q = conn.prepare_cached(sql)?;
        let rows = q.query_map(args, f)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Saves a draft durably, unless a newer revision is stored. Answers what is stored. Once
    /// a version is signed, only an amendment of the latest (`amends`) is a draft: anything
    /// else is refused ([`StoreError::NoteSigned`]), so a save that raced the signature never
    /// brings back a draft beside it.
    pub fn save_note_draft(
        &self,
        appointment_id: &str,
        revision: i64,
        body: &str,
        amends: Option<u32>,
    ) -> Result<NoteDraftRow> {
        self.durably(|tx| {
            let latest: Option<u32> = tx.query_row(
                "SELECT max(version) FROM note_version WHERE appointment_id = ?1",
                params![appointment_id],
                |r| r.get(0),
            )?;
            if latest.is_some() && latest != amends {
                return Err(StoreError::NoteSigned);
            }
            tx.execute(
                "INSERT INTO note_draft (appointment_id, revision, body, saved_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (appointment_id) DO UPDATE SET revision = excluded.revision,
                   body = excluded.body, saved_at = excluded.saved_at
                 WHERE excluded.revision >= note_draft.revision",
                params![appointment_id, revision, body, now()],
            )?;
            Ok(tx.query_row(
                "SELECT revision, body, saved_at FROM note_draft WHERE appointment_id = ?1",
                params![appointment_id],
                draft_row,
            )?)
        })
    }

    /// The draft of a visit's note, if one is being written.
    pub fn note_draft(&self, appointment_id: &str) -> Result<Option<NoteDraftRow>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT revision, body, saved_at FROM note_draft WHERE appointment_id = ?1",
                params![appointment_id],
                draft_row,
            )
            .optional()?)
    }

    /// A visit's signed versions, oldest first.
    pub fn note_versions(&self, appointment_id: &str) -> Result<Vec<NoteVersionRow>> {
        self.all(
            &format!("SELECT {VERSION_COLUMNS} FROM note_version WHERE appointment_id = ?1 ORDER BY version"),
            params![appointment_id],
            version_row,
        )
    }

    /// Every signed version of every note about a patient, newest first.
    pub fn patient_note_versions(&self, patient_id: &str) -> Result<Vec<NoteVersionRow>> {
        self.all(
            &format!("SELECT {VERSION_COLUMNS} FROM note_version WHERE patient_id = ?1 ORDER BY signed_at DESC"),
            params![patient_id],
            version_row,
        )
    }

    /// Signs a note: the signed version, its outbox writes with their local copies, the
    /// charge, the draft removed, the visit's `note_signed_at` milestone and an audit entry,
    /// all in one durable transaction: a crash leaves either all of it or none. A version
    /// signed before is left as it was ([`Signed::Already`]).
    pub fn sign_note(&self, s: &Signing<'_>) -> Result<Signed> {
        self.durably(|tx| {
            let v = s.version;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM note_version WHERE appointment_id = ?1 AND version = ?2",
                    params![v.appointment_id, v.version],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Ok(Signed::Already);
            }
            tx.execute(
                &format!("INSERT INTO note_version ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    v.appointment_id,
                    v.version,
                    v.patient_id,
                    v.body,
                    v.signed_at,
                    v.signed_by,
                    v.write_key
                ],
            )?;
            for (local, write) in s.writes {
                queue_in(tx, &self.audit_key, local.as_ref(), write, s.actor)?;
            }
            if let Some(charge) = s.charge {
                insert_charge(tx, charge)?;
            }
            tx.execute(
                "DELETE FROM note_draft WHERE appointment_id = ?1",
                params![v.appointment_id],
            )?;
            milestone(tx, &v.appointment_id, "note_signed_at", &v.signed_at)?;
            append_audit(
                tx,
                &self.audit_key,
                s.actor,
                "sign-note",
                &format!("Appointment/{}", v.appointment_id),
            )?;
            Ok(Signed::Now)
        })
    }

    /// A visit's charges, oldest first.
    pub fn charges_for(&self, appointment_id: &str) -> Result<Vec<ChargeRow>> {
        self.all(
            &format!("SELECT {CHARGE_COLUMNS} FROM charge WHERE appointment_id = ?1 ORDER BY created_at, rowid"),
            params![appointment_id],
            charge_row,
        )
    }

    /// One charge.
    pub fn charge(&self, charge_id: &str) -> Result<Option<ChargeRow>> {
        Ok(self
            .reader()
            .query_row(
                &format!("SELECT {CHARGE_COLUMNS} FROM charge WHERE charge_id = ?1"),
                params![charge_id],
                charge_row,
            )
            .optional()?)
    }

    /// Charges waiting to be sent whose next attempt is due at `now_ms`, oldest first.
    pub fn due_charges(&self, now_ms: i64, limit: u32) -> Result<Vec<ChargeRow>> {
        self.all(
            &format!("SELECT {CHARGE_COLUMNS} FROM charge WHERE state = 'queued' AND next_attempt_ms <= ?1
             ORDER BY created_at, rowid LIMIT ?2"),
            params![now_ms, limit],
            charge_row,
        )
    }

    /// How many charges wait to be sent, and the earliest next attempt (unix ms).
    pub fn charges_waiting(&self) -> Result<(u32, Option<i64>)> {
        Ok(self.reader().query_row(
            "SELECT count(*), min(next_attempt_ms) FROM charge WHERE state = 'queued'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// A send is about to start: counted before a byte goes out (so that a crash between the
    /// send and its answer still shows the message may have reached billing), and not due
    /// again before `next_attempt_ms` unless it is answered.
    pub fn charge_sending(&self, charge_id: &str, next_attempt_ms: i64) -> Result<()> {
        self.durably(|tx| {
            tx.execute(
                "UPDATE charge SET attempts = attempts + 1, next_attempt_ms = ?2
                 WHERE charge_id = ?1 AND state = 'queued'",
                params![charge_id, next_attempt_ms],
            )?;
            Ok(())
        })
    }

    /// A send that did not get an answer (billing unreachable, no reply in time, a reply
    /// that is no acknowledgement): why, and when it is tried again.
    pub fn charge_attempt_failed(
        &self,
        charge_id: &str,
        reason: &str,
        next_attempt_ms: i64,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE charge SET reason = ?2, next_attempt_ms = ?3
             WHERE charge_id = ?1 AND state = 'queued'",
            params![charge_id, reason, next_attempt_ms],
        )?;
        Ok(())
    }

    /// Billing's acknowledgement: accepted (AA) sets the visit's `charge_acked_at`; refused
    /// (AE/AR) keeps the charge with the reason for correction. Durable.
    pub fn charge_acknowledged(
        &self,
        charge_id: &str,
        accepted: bool,
        reason: Option<&str>,
        at: &str,
    ) -> Result<()> {
        self.durably(|tx| {
            let state = if accepted {
                ChargeRowState::Accepted
            } else {
                ChargeRowState::Refused
            };
            let appointment: Option<String> = tx
                .query_row(
                    "UPDATE charge SET state = ?2, reason = ?3, acked_at = ?4
                     WHERE charge_id = ?1 AND state = 'queued' RETURNING appointment_id",
                    params![charge_id, state.as_str(), reason, at],
                    |r| r.get(0),
                )
                .optional()?;
            if let (true, Some(appointment)) = (accepted, appointment) {
                milestone(tx, &appointment, "charge_acked_at", at)?;
            }
            Ok(())
        })
    }

    /// A refused charge, corrected: `corrected` (a new message, a new control id) is queued
    /// and the refused one marked `corrected`, with `writes` (the EHR's ChargeItems made to
    /// agree), in one durable transaction, with its audit entry. Refused unless the charge it
    /// replaces is `refused`.
    pub fn correct_charge(
        &self,
        corrected: &ChargeRow,
        writes: &[(Option<ResourceRow>, OutboxWrite)],
        actor: &str,
    ) -> Result<()> {
        self.durably(|tx| {
            let old = corrected.replaces.as_deref().ok_or_else(|| {
                StoreError::InvalidCharge("a correction names the charge it replaces".into())
            })?;
            let n = tx.execute(
                "UPDATE charge SET state = 'corrected' WHERE charge_id = ?1 AND state = 'refused'",
                params![old],
            )?;
            if n != 1 {
                return Err(StoreError::InvalidCharge(format!(
                    "charge {old} is not a refused charge"
                )));
            }
            insert_charge(tx, corrected)?;
            for (local, write) in writes {
                queue_in(tx, &self.audit_key, local.as_ref(), write, actor)?;
            }
            append_audit(
                tx,
                &self.audit_key,
                actor,
                "correct-charge",
                &format!("Appointment/{}", corrected.appointment_id),
            )?;
            Ok(())
        })
    }

    /// Records that a visit ended (the first time only).
    pub fn visit_ended(&self, appointment_id: &str, at: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        milestone(&tx, appointment_id, "visit_ended_at", at)?;
        tx.commit()?;
        Ok(())
    }

    /// A visit's milestones.
    pub fn visit_milestones(&self, appointment_id: &str) -> Result<VisitMilestones> {
        Ok(self
            .reader()
            .query_row(
                "SELECT visit_ended_at, note_signed_at, charge_acked_at FROM visit_milestone
                 WHERE appointment_id = ?1",
                params![appointment_id],
                |r| {
                    Ok(VisitMilestones {
                        visit_ended_at: r.get(0)?,
                        note_signed_at: r.get(1)?,
                        charge_acked_at: r.get(2)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }
}
