//! Writes the EHR refused because the record changed there: both versions, the user's choice.

use super::*;

/// A write the EHR refused because the resource had changed there: both versions.
#[derive(Clone, PartialEq, Eq)]
pub struct Conflict {
    pub id: i64,
    pub outbox_seq: i64,
    pub resource_type: String,
    pub resource_id: String,
    /// What the user wrote (the body Hearth tried to send).
    pub local_json: String,
    /// The server's current version, when it could be read.
    pub server_json: Option<String>,
    pub server_version: Option<String>,
    pub detected_at: String,
}

impl std::fmt::Debug for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conflict")
            .field("id", &self.id)
            .field("outbox_seq", &self.outbox_seq)
            .field(
                "resource",
                &format_args!("{}/{}", self.resource_type, self.resource_id),
            )
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

/// The user's choice for a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Send my version again, over the server's current one.
    KeepMine,
    /// Drop my change; keep the server's version.
    TakeTheirs,
}

impl Store {
    /// Conflicts the user has not resolved yet, oldest first.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, outbox_seq, resource_type, resource_id, local_json, server_json, server_version, detected_at
             FROM conflict WHERE resolution IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Conflict {
                id: r.get(0)?,
                outbox_seq: r.get(1)?,
                resource_type: r.get(2)?,
                resource_id: r.get(3)?,
                local_json: r.get(4)?,
                server_json: r.get(5)?,
                server_version: r.get(6)?,
                detected_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Applies the user's choice, durably and audited. Keep mine: the write is queued again
    /// with `If-Match` on the server's version. Take theirs: the write is discarded and
    /// `theirs` (the server's version, as a row) becomes the local copy; later writes that
    /// built on mine are sent against the old version, so they come back as conflicts too.
    pub fn resolve_conflict(
        &self,
        conflict_id: i64,
        choice: Resolution,
        theirs: Option<&ResourceRow>,
        actor: &str,
    ) -> Result<()> {
        self.durably(|tx| {
            let (seq, ty, id, server_version): (i64, String, String, Option<String>) = tx
                .query_row(
                    "SELECT outbox_seq, resource_type, resource_id, server_version FROM conflict
                     WHERE id = ?1 AND resolution IS NULL",
                    params![conflict_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?
                .ok_or(StoreError::NoSuchConflict { id: conflict_id })?;
            let label = match choice {
                Resolution::KeepMine => "keep-mine",
                Resolution::TakeTheirs => "take-theirs",
            };
            tx.execute(
                "UPDATE conflict SET resolution = ?2, resolved_at = ?3 WHERE id = ?1",
                params![conflict_id, label, now()],
            )?;
            match choice {
                Resolution::KeepMine => {
                    tx.execute(
                        "UPDATE outbox SET state = 'pending', after_seq = NULL, last_error = NULL,
                                if_match = ?2 WHERE seq = ?1",
                        params![seq, server_version.map(|v| format!("W/\"{v}\""))],
                    )?;
                }
                Resolution::TakeTheirs => {
                    let stale: Option<String> = tx.query_row(
                        "SELECT coalesce(if_match, (SELECT 'W/\"' || p.result_version || '\"' FROM outbox p WHERE p.seq = o.after_seq))
                         FROM outbox o WHERE seq = ?1",
                        params![seq],
                        |r| r.get(0),
                    )?;
                    tx.execute(
                        "UPDATE outbox SET after_seq = NULL, if_match = ?2 WHERE after_seq = ?1",
                        params![seq, stale],
                    )?;
                    tx.execute(
                        "UPDATE outbox SET state = 'discarded', last_error = NULL WHERE seq = ?1",
                        params![seq],
                    )?;
                    if let Some(row) = theirs {
                        put_rows(tx, std::iter::once(row))?;
                    }
                }
            }
            append_audit(
                tx,
                &self.audit_key,
                actor,
                &format!("resolve-{label}"),
                &format!("{ty}/{id}"),
            )?;
            Ok(())
        })
    }
}
