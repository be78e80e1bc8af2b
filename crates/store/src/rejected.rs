//! Records the EHR served unreadable, kept by name until a readable version is stored.

use super::*;

/// At most this many unreadable records are kept: a server that serves thousands of
/// unreadable entries under ever-new names (which no later fetch can settle) must not grow the
/// table, the sync panel and every hearth-sync listing without bound. Those not served
/// unreadable for longest are dropped first.
pub const REJECTED_LIMIT: usize = 1_000;

/// A record the EHR served that Hearth could not read: kept, named and fetched again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `Type/id`, or where it was served (fullUrl) when its type is unreadable.
    pub record: String,
    /// Type and id when known: then it is fetched again on later rounds.
    pub resource: Option<(String, String)>,
    /// What is wrong (field and problem; never clinical content).
    pub message: String,
    pub first_seen: String,
    pub last_seen: String,
    /// How many times it was served unreadable.
    pub fetches: u32,
}

impl Store {
    /// Keeps a record the EHR served unreadable (or names it again, with today's problem).
    /// `resource` is its type and id when known: then it is fetched again later.
    pub fn reject(
        &self,
        record: &str,
        resource: Option<(&str, &str)>,
        message: &str,
    ) -> Result<()> {
        let conn = self.conn();
        // Named once: a record first named by where it was served keeps that name.
        if let Some((ty, id)) = resource {
            let n = conn.execute(
                "UPDATE rejected SET message = ?3, last_seen = ?4, fetches = fetches + 1
                 WHERE resource_type = ?1 AND resource_id = ?2",
                params![ty, id, message, now()],
            )?;
            if n > 0 {
                return Ok(());
            }
        }
        let (ty, id) = resource.unzip();
        conn.execute(
            "INSERT INTO rejected (record, resource_type, resource_id, message, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (record) DO UPDATE SET message = excluded.message,
                 last_seen = excluded.last_seen, fetches = fetches + 1",
            params![record, ty, id, message, now()],
        )?;
        let limit = i64::try_from(REJECTED_LIMIT).unwrap_or(i64::MAX);
        conn.execute(
            "DELETE FROM rejected WHERE record IN (
                 SELECT record FROM rejected ORDER BY last_seen DESC, record LIMIT -1 OFFSET ?1)",
            params![limit],
        )?;
        Ok(())
    }

    /// How many records are kept as unreadable.
    pub fn rejected_count(&self) -> Result<usize> {
        let n: i64 = self
            .reader()
            .query_row("SELECT count(*) FROM rejected", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The records kept as unreadable, by name.
    pub fn rejected(&self) -> Result<Vec<Rejected>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT record, resource_type, resource_id, message, first_seen, last_seen, fetches
             FROM rejected ORDER BY record",
        )?;
        let rows = stmt.query_map([], |r| {
            let ty: Option<String> = r.get(1)?;
            let id: Option<String> = r.get(2)?;
            Ok(Rejected {
                record: r.get(0)?,
                resource: ty.zip(id),
                message: r.get(3)?,
                first_seen: r.get(4)?,
                last_seen: r.get(5)?,
                fetches: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A record kept as unreadable is settled (read at last, gone at the EHR, or dropped).
    pub fn unreject(&self, record: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM rejected WHERE record = ?1", params![record])?;
        Ok(())
    }

    /// [`Store::unreject`] by type and id, however the record was named.
    pub fn unreject_resource(&self, resource_type: &str, id: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM rejected WHERE resource_type = ?1 AND resource_id = ?2",
            params![resource_type, id],
        )?;
        Ok(())
    }
}
