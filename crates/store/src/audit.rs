//! The audit log: a SHA-256 hash chain of who did what to which record.

use super::*;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn chain_hash(prev: &str, seq: i64, fields: &[String; 4]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(seq.to_be_bytes());
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn append_audit(
    tx: &rusqlite::Transaction<'_>,
    actor: &str,
    action: &str,
    entity: &str,
) -> Result<()> {
    let (last_seq, prev): (i64, String) = tx
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, GENESIS.to_string()));
    let seq = last_seq + 1;
    let fields = [
        now(),
        actor.to_string(),
        action.to_string(),
        entity.to_string(),
    ];
    let hash = chain_hash(&prev, seq, &fields);
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, entity, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![seq, fields[0], fields[1], fields[2], fields[3], prev, hash],
    )?;
    Ok(())
}

impl Store {
    /// Appends an entry to the audit log (who did what to which record).
    pub fn audit(&self, actor: &str, action: &str, entity: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        append_audit(&tx, actor, action, entity)?;
        tx.commit()?;
        Ok(())
    }

    /// The last `limit` audit entries, oldest first: (actor, action, entity).
    pub fn audit_entries(&self, limit: u32) -> Result<Vec<(String, String, String)>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT actor, action, entity FROM
               (SELECT seq, actor, action, entity FROM audit_log ORDER BY seq DESC LIMIT ?1)
             ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Recomputes the audit chain; returns its length, or where it was altered.
    pub fn verify_audit(&self) -> Result<usize> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT seq, at, actor, action, entity, prev_hash, hash FROM audit_log ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut prev = GENESIS.to_string();
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let fields: [String; 4] = [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?];
            let (prev_hash, hash): (String, String) = (r.get(5)?, r.get(6)?);
            if prev_hash != prev || chain_hash(&prev, seq, &fields) != hash {
                return Err(StoreError::AuditTampered { seq });
            }
            prev = hash;
            n += 1;
        }
        Ok(n)
    }
}
