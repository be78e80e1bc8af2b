//! The audit log: who did what to which record (and who viewed which chart or schedule),
//! as a chain keyed with HMAC-SHA256: each entry's `hash` is the MAC, under the audit key, of
//! the previous entry's and this entry's fields. The audit key is not the database key (see
//! [`AuditKey`]), so a rewritten entry cannot be made to verify by whoever holds only the
//! database, even by recomputing the chain with plain hashes.
//!
//! Entries can be sent to the EHR (as FHIR AuditEvents, by the sync engine); which were sent
//! is remembered beside the chain (`audit_sent`), at most once per entry.

use super::*;
use crate::key::AuditKey;
use hmac::{Hmac, Mac};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// HMAC-SHA256 of `parts` (concatenated) under `key`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    #[allow(clippy::expect_used, reason = "HMAC takes a key of any length")]
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn chain_input(prev: &str, seq: i64, fields: &[String; 4]) -> Vec<u8> {
    let mut input = Vec::new();
    input.extend_from_slice(prev.as_bytes());
    input.extend_from_slice(&seq.to_be_bytes());
    for f in fields {
        input.extend_from_slice(&(f.len() as u64).to_be_bytes());
        input.extend_from_slice(f.as_bytes());
    }
    input
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The keyed link of entry `seq`.
fn chain_mac(key: &AuditKey, prev: &str, seq: i64, fields: &[String; 4]) -> String {
    hex(&hmac_sha256(
        key.bytes(),
        &[&chain_input(prev, seq, fields)],
    ))
}

/// The unkeyed link the chain had before it was keyed (read only to carry old entries over).
fn plain_hash(prev: &str, seq: i64, fields: &[String; 4]) -> String {
    hex(&Sha256::digest(chain_input(prev, seq, fields)))
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// Who: a FHIR reference (`Practitioner/...`), `user/<sub>`, or `hearth`.
    pub actor: String,
    pub action: String,
    /// What: a FHIR reference (`Patient/...`) or words (`schedule 2026-03-10`).
    pub entity: String,
    /// The entry's link in the chain (its MAC): unique, and reveals nothing of the key.
    pub hash: String,
}

pub(crate) fn append_audit(
    tx: &rusqlite::Transaction<'_>,
    key: &AuditKey,
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
    let hash = chain_mac(key, &prev, seq, &fields);
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
        append_audit(&tx, &self.audit_key, actor, action, entity)?;
        tx.commit()?;
        Ok(())
    }

    /// Whether any audit entry records `action` (e.g. whether anyone ever signed in here).
    pub fn audit_has_action(&self, action: &str) -> Result<bool> {
        Ok(self.reader().query_row(
            "SELECT EXISTS (SELECT 1 FROM audit_log WHERE action = ?1)",
            [action],
            |r| r.get::<_, bool>(0),
        )?)
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
            if prev_hash != prev || chain_mac(&self.audit_key, &prev, seq, &fields) != hash {
                return Err(StoreError::AuditTampered { seq });
            }
            prev = hash;
            n += 1;
        }
        Ok(n)
    }

    /// Entries not yet sent to the EHR, oldest first, at most `limit`.
    pub fn audit_unsent(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT seq, at, actor, action, entity, hash FROM audit_log
             WHERE seq NOT IN (SELECT seq FROM audit_sent) ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    entity: r.get(4)?,
                    hash: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Remembers that entry `seq` went to the EHR (as `resource`, e.g. `AuditEvent/7`), or
    /// that the EHR refused it for good (`refused`, words): it is not sent again either way.
    pub fn mark_audit_sent(
        &self,
        seq: i64,
        resource: Option<&str>,
        refused: Option<&str>,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO audit_sent (seq, sent_at, resource, refused) VALUES (?1, ?2, ?3, ?4)",
            params![seq, now(), resource, refused],
        )?;
        Ok(())
    }

    /// Whether this database's chain was ever kept with a keychain audit key.
    pub(crate) fn audit_was_keyed(&self) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT count(*) FROM audit_keyed", [], |r| {
                r.get::<_, i64>(0)
            })?
            > 0)
    }

    /// Records that the chain is kept with the keychain's audit key (once).
    pub(crate) fn mark_audit_keyed(&self) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO audit_keyed (id, keyed_at) VALUES (1, ?1)",
            [chrono::Utc::now().to_rfc3339()],
        )?;
        Ok(())
    }

    /// Carries a chain made before it was keyed (plain SHA-256 links) over to the audit key:
    /// only when every entry still verifies as the plain chain, so a chain changed before this
    /// is left as it is (and fails [`Store::verify_audit`]). Called when the audit key is new.
    pub(crate) fn key_plain_chain(&self) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(i64, [String; 4], String, String)> = {
            let mut stmt = tx.prepare(
                "SELECT seq, at, actor, action, entity, prev_hash, hash FROM audit_log ORDER BY seq",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        let mut prev = GENESIS.to_string();
        for (seq, fields, prev_hash, hash) in &rows {
            if *prev_hash != prev || plain_hash(&prev, *seq, fields) != *hash {
                return Ok(());
            }
            prev = hash.clone();
        }
        let mut prev = GENESIS.to_string();
        for (seq, fields, _, _) in &rows {
            let mac = chain_mac(&self.audit_key, &prev, *seq, fields);
            tx.execute(
                "UPDATE audit_log SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                params![prev, mac, seq],
            )?;
            prev = mac;
        }
        tx.commit()?;
        Ok(())
    }
}
