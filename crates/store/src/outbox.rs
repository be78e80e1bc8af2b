//! The outbox: writes waiting for the EHR, their states and attempts.

use super::*;

/// A write waiting to reach the EHR.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxWrite {
    /// Client-chosen key; the same key twice is one write.
    pub idempotency_key: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub method: Method,
    /// `W/"<versionId>"` the update is based on.
    pub if_match: Option<String>,
    pub body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Create,
    Update,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "create" => Self::Create,
            "update" => Self::Update,
            _ => Self::Delete,
        }
    }
}

/// Where a write stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Waiting to be sent (again).
    Pending,
    /// The EHR applied it.
    Sent,
    /// The EHR had changed the record: both versions wait for the user.
    Conflict,
    /// The EHR refused it (shown; the user retries or drops it).
    Failed,
    /// The user dropped it in favour of the EHR's version.
    Discarded,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Conflict => "conflict",
            Self::Failed => "failed",
            Self::Discarded => "discarded",
        }
    }

    /// The state a stored text names (the column's CHECK constraint allows no other).
    pub(crate) fn parse(s: &str) -> rusqlite::Result<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "conflict" => Self::Conflict,
            "failed" => Self::Failed,
            "discarded" => Self::Discarded,
            other => {
                return Err(rusqlite::Error::FromSqlConversionFailure(
                    7,
                    rusqlite::types::Type::Text,
                    format!("unknown outbox state {other:?}").into(),
                ))
            }
        })
    }
}

/// An outbox entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub seq: i64,
    pub write: OutboxWrite,
    pub state: OutboxState,
    /// Every send attempt.
    pub attempts: u32,
    /// Attempts the EHR answered with a server error (5xx, 429): these alone give a write up.
    pub server_errors: u32,
    pub last_error: Option<String>,
    /// The earlier queued write to the same resource this one builds on: it is sent with
    /// `If-Match` on the version that write produced.
    pub after_seq: Option<i64>,
    /// The version the server gave this write once sent.
    pub result_version: Option<String>,
}

/// How many writes wait, and how many need the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxSummary {
    pub pending: usize,
    pub conflicts: usize,
    pub failed: usize,
    pub sent: usize,
    /// Writes the user dropped in favour of the EHR's version.
    pub discarded: usize,
}

impl std::fmt::Debug for OutboxWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxWrite")
            .field("idempotency_key", &self.idempotency_key)
            .field("resource_type", &self.resource_type)
            .field("resource_id", &self.resource_id)
            .field("method", &self.method)
            .field("if_match", &self.if_match)
            .field(
                "body",
                &format_args!(
                    "<{} bytes redacted>",
                    self.body.as_ref().map_or(0, String::len)
                ),
            )
            .finish()
    }
}

impl Store {
    /// Queues a user's write, durably (`synchronous = FULL`), with its audit entry, in one
    /// transaction. Queuing the same idempotency key again returns the first entry's number.
    pub fn enqueue(&self, write: &OutboxWrite, actor: &str) -> Result<i64> {
        self.record_local_change(None, write, actor)
    }

    /// A user's change: the local copy of the resource (shown at once) and the write that
    /// carries it to the EHR, in one durable transaction (`synchronous = FULL`) with its audit
    /// entry. A write to a resource that already has queued writes builds on the last of them.
    pub fn record_local_change(
        &self,
        local: Option<&ResourceRow>,
        write: &OutboxWrite,
        actor: &str,
    ) -> Result<i64> {
        self.durably(|tx| queue_in(tx, &self.audit_key, local, write, actor))
    }

    /// Writes still to send, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxEntry>> {
        self.outbox_where("state = 'pending'", [])
    }

    /// Writes the EHR refused (not conflicts), oldest first.
    pub fn outbox_failed(&self) -> Result<Vec<OutboxEntry>> {
        self.outbox_where("state = 'failed'", [])
    }

    /// The write queued under `idempotency_key`, whatever its state (sent ones included).
    pub fn outbox_entry_by_key(&self, idempotency_key: &str) -> Result<Option<OutboxEntry>> {
        Ok(self
            .outbox_where("idempotency_key = ?1", [idempotency_key])?
            .pop())
    }

    /// One outbox entry, whatever its state.
    pub fn outbox_entry(&self, seq: i64) -> Result<OutboxEntry> {
        self.outbox_where("seq = ?1", [seq])?
            .pop()
            .ok_or(StoreError::NoSuchOutboxEntry { seq })
    }

    fn outbox_where(&self, cond: &str, args: impl rusqlite::Params) -> Result<Vec<OutboxEntry>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT seq, idempotency_key, resource_type, resource_id, method, if_match, body, state,
                    attempts, last_error, after_seq, result_version, server_errors
             FROM outbox WHERE {cond} ORDER BY seq"
        ))?;
        let rows = stmt.query_map(args, |r| {
            Ok(OutboxEntry {
                seq: r.get(0)?,
                write: OutboxWrite {
                    idempotency_key: r.get(1)?,
                    resource_type: r.get(2)?,
                    resource_id: r.get(3)?,
                    method: Method::parse(&r.get::<_, String>(4)?),
                    if_match: r.get(5)?,
                    body: r.get(6)?,
                },
                state: OutboxState::parse(&r.get::<_, String>(7)?)?,
                attempts: r.get(8)?,
                last_error: r.get(9)?,
                after_seq: r.get(10)?,
                result_version: r.get(11)?,
                server_errors: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Counts of the outbox by state.
    pub fn outbox_summary(&self) -> Result<OutboxSummary> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM outbox GROUP BY state")?;
        let mut rows = stmt.query([])?;
        let mut sum = OutboxSummary::default();
        while let Some(r) = rows.next()? {
            let n = usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
            match r.get::<_, String>(0)?.as_str() {
                "pending" => sum.pending = n,
                "conflict" => sum.conflicts = n,
                "failed" => sum.failed = n,
                "sent" => sum.sent = n,
                _ => sum.discarded = n,
            }
        }
        Ok(sum)
    }

    /// A write reached the EHR: marks it sent with the version the server gave it and keeps
    /// the server's representation of the resource, in one transaction.
    pub fn mark_sent(
        &self,
        seq: i64,
        result_version: Option<&str>,
        server_copy: Option<&ResourceRow>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE outbox SET state = 'sent', attempts = attempts + 1, last_error = NULL,
                    result_version = ?2, sent_at = ?3 WHERE seq = ?1",
            params![seq, result_version, now()],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchOutboxEntry { seq });
        }
        if let Some(row) = server_copy {
            // Only when no later local change to the resource waits: that one stays shown.
            let later: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE resource_type = ?1 AND resource_id = ?2
                 AND seq > ?3 AND state IN ('pending', 'conflict'))",
                params![row.resource_type, row.id, seq],
                |r| r.get(0),
            )?;
            if !later {
                put_rows(&tx, std::iter::once(row))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The EHR refused a write because the resource changed there: the write stops (it is
    /// not retried) and both versions are kept for the user.
    pub fn mark_conflict(
        &self,
        seq: i64,
        server_json: Option<&str>,
        server_version: Option<&str>,
    ) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (ty, id, body): (String, Option<String>, Option<String>) = tx
            .query_row(
                "SELECT resource_type, resource_id, body FROM outbox WHERE seq = ?1",
                params![seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or(StoreError::NoSuchOutboxEntry { seq })?;
        tx.execute(
            "UPDATE outbox SET state = 'conflict', attempts = attempts + 1,
                    last_error = 'changed at the EHR by someone else' WHERE seq = ?1",
            params![seq],
        )?;
        tx.execute(
            "INSERT INTO conflict (outbox_seq, resource_type, resource_id, local_json, server_json, server_version, detected_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (outbox_seq) DO UPDATE SET server_json = excluded.server_json,
                server_version = excluded.server_version, detected_at = excluded.detected_at,
                resolution = NULL, resolved_at = NULL",
            params![seq, ty, id.unwrap_or_default(), body.unwrap_or_default(), server_json, server_version, now()],
        )?;
        let conflict_id = tx.query_row(
            "SELECT id FROM conflict WHERE outbox_seq = ?1",
            params![seq],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(conflict_id)
    }

    /// A refused write, as the user decides: sent again (`retry`), or dropped, its record to
    /// be fetched again from the EHR. Durable and audited.
    pub fn settle_failed(&self, seq: i64, retry: bool, actor: &str) -> Result<()> {
        self.durably(|tx| {
            let (ty, id): (String, Option<String>) = tx
                .query_row(
                    "SELECT resource_type, resource_id FROM outbox WHERE seq = ?1 AND state = 'failed'",
                    params![seq],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or(StoreError::NoSuchOutboxEntry { seq })?;
            let state = if retry { "pending" } else { "discarded" };
            tx.execute(
                "UPDATE outbox SET state = ?2, last_error = NULL, attempts = 0, server_errors = 0
                 WHERE seq = ?1",
                params![seq, state],
            )?;
            if let (false, Some(id)) = (retry, &id) {
                tx.execute(
                    "INSERT OR IGNORE INTO refetch (type, id) VALUES (?1, ?2)",
                    params![ty, id],
                )?;
            }
            let entity = match &id {
                Some(id) => format!("{ty}/{id}"),
                None => ty.clone(),
            };
            let action = if retry {
                "retry-refused"
            } else {
                "discard-refused"
            };
            append_audit(tx, &self.audit_key, actor, action, &entity)?;
            Ok(())
        })
    }

    /// Records the outcome of a send attempt: `failed`, or back to `pending` with the error
    /// (to retry; an offline or sign-in failure, which never gives a write up).
    pub fn record_attempt(&self, seq: i64, state: OutboxState, error: Option<&str>) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_error = ?3 WHERE seq = ?1",
            params![seq, state.as_str(), error],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchOutboxEntry { seq });
        }
        Ok(())
    }

    /// Records a send the EHR answered with a server error: the write waits for the next
    /// round, and is given up (`failed`, shown) once `limit` server errors are reached.
    /// Returns its state after this one.
    pub fn record_server_error(&self, seq: i64, error: &str, limit: u32) -> Result<OutboxState> {
        let state: Option<String> = self
            .conn()
            .query_row(
                "UPDATE outbox SET attempts = attempts + 1, server_errors = server_errors + 1,
                        last_error = ?2,
                        state = CASE WHEN server_errors + 1 >= ?3 THEN 'failed' ELSE 'pending' END
                 WHERE seq = ?1 RETURNING state",
                params![seq, error, limit],
                |r| r.get(0),
            )
            .optional()?;
        let state = state.ok_or(StoreError::NoSuchOutboxEntry { seq })?;
        Ok(OutboxState::parse(&state)?)
    }
}

/// Queues `write` (and puts `local`) inside the caller's transaction, with its audit entry:
/// the same idempotency key again returns the first entry's number.
pub(crate) fn queue_in(
    tx: &rusqlite::Transaction<'_>,
    audit_key: &AuditKey,
    local: Option<&ResourceRow>,
    write: &OutboxWrite,
    actor: &str,
) -> Result<i64> {
    let existing: Option<i64> = tx
        .query_row(
            "SELECT seq FROM outbox WHERE idempotency_key = ?1",
            params![write.idempotency_key],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(seq) = existing {
        return Ok(seq);
    }
    let after_seq: Option<i64> = match &write.resource_id {
        None => None,
        Some(id) => tx
            .query_row(
                "SELECT max(seq) FROM outbox WHERE resource_type = ?1 AND resource_id = ?2
                     AND state IN ('pending', 'conflict')",
                params![write.resource_type, id],
                |r| r.get(0),
            )
            .optional()?
            .flatten(),
    };
    tx.execute(
            "INSERT INTO outbox (idempotency_key, resource_type, resource_id, method, if_match, body, created_at, after_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                write.idempotency_key,
                write.resource_type,
                write.resource_id,
                write.method.as_str(),
                write.if_match,
                write.body,
                now(),
                after_seq
            ],
        )?;
    let seq = tx.last_insert_rowid();
    if let Some(row) = local {
        put_rows(tx, std::iter::once(row))?;
    }
    let entity = match &write.resource_id {
        Some(id) => format!("{}/{id}", write.resource_type),
        None => write.resource_type.clone(),
    };
    append_audit(
        tx,
        audit_key,
        actor,
        &format!("queue-{}", write.method.as_str()),
        &entity,
    )?;
    Ok(seq)
}
