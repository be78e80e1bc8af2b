//! Resources as served, their projections, and what a pull stores or deletes.

use super::*;

/// A resource to store, with the fields the projections index.
#[derive(Clone, PartialEq)]
pub struct ResourceRow {
    pub resource_type: String,
    pub id: String,
    pub version_id: Option<String>,
    pub last_updated: Option<String>,
    /// The patient the resource belongs to (`subject`/`patient`), if any.
    pub patient_id: Option<String>,
    /// The resource as served, byte for byte.
    pub json: String,
    pub index: Projection,
    /// `json` LZ4-compressed as the store keeps it, when the caller compressed it already
    /// ([`ResourceRow::pack`]): a sync compresses while the previous batch commits, so the
    /// one writer does not.
    pub packed: Option<Vec<u8>>,
}

impl ResourceRow {
    /// Compresses the JSON now, as the store will keep it.
    pub fn pack(&mut self) {
        if self.packed.is_none() {
            self.packed = Some(lz4_flex::compress_prepend_size(self.json.as_bytes()));
        }
    }
}

/// What a resource adds to the query projections.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    None,
    Appointment {
        /// UTC start, RFC 3339 with `Z` (so text order is time order).
        start_utc: String,
        practitioner_id: Option<String>,
    },
    Observation {
        code: Option<String>,
        effective: Option<String>,
    },
}

// Rows carry clinical content: their Debug form shows identity only.
impl std::fmt::Debug for ResourceRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceRow")
            .field("resource_type", &self.resource_type)
            .field("id", &self.id)
            .field("version_id", &self.version_id)
            .field(
                "json",
                &format_args!("<{} bytes redacted>", self.json.len()),
            )
            .finish_non_exhaustive()
    }
}

pub(crate) fn put_rows<'a>(
    tx: &rusqlite::Transaction<'_>,
    rows: impl IntoIterator<Item = &'a ResourceRow>,
) -> Result<usize> {
    let mut put = tx.prepare_cached(
        "INSERT OR REPLACE INTO resource (type, id, version_id, last_updated, patient_id, codec, body)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
    )?;
    let mut appt = tx.prepare_cached(
        "INSERT OR REPLACE INTO appointment_index (id, start_utc, practitioner_id) VALUES (?1, ?2, ?3)",
    )?;
    let mut obs = tx.prepare_cached(
        "INSERT OR REPLACE INTO observation_index (id, patient_id, code, effective) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut n = 0;
    for row in rows {
        let fresh;
        let body = match &row.packed {
            Some(packed) => packed.as_slice(),
            None => {
                fresh = lz4_flex::compress_prepend_size(row.json.as_bytes());
                fresh.as_slice()
            }
        };
        put.execute(params![
            row.resource_type,
            row.id,
            row.version_id,
            row.last_updated,
            row.patient_id,
            body
        ])?;
        match &row.index {
            Projection::None => {}
            Projection::Appointment {
                start_utc,
                practitioner_id,
            } => {
                appt.execute(params![row.id, start_utc, practitioner_id])?;
            }
            Projection::Observation { code, effective } => {
                if let Some(patient) = &row.patient_id {
                    obs.execute(params![row.id, patient, code, effective])?;
                }
            }
        }
        n += 1;
    }
    Ok(n)
}

/// A stored resource's JSON from its `codec, body` columns: 0 plain UTF-8, 1 LZ4.
pub(crate) fn decode(r: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
    let codec: i64 = r.get(0)?;
    let body: Vec<u8> = r.get(1)?;
    let bytes = match codec {
        0 => body,
        _ => lz4_flex::decompress_size_prepended(&body).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(e))
        })?,
    };
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(e))
    })
}

impl Store {
    /// Inserts or replaces resources, all in one transaction.
    pub fn put_resources<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a ResourceRow>,
    ) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = put_rows(&tx, rows)?;
        tx.commit()?;
        Ok(n)
    }

    /// The raw JSON of one resource.
    pub fn resource(&self, resource_type: &str, id: &str) -> Result<Option<String>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT codec, body FROM resource WHERE type = ?1 AND id = ?2",
                params![resource_type, id],
                decode,
            )
            .optional()?)
    }

    /// The JSON of the resources a query selects (as `codec, body`).
    fn strings(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<String>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(args, decode)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every resource of a type, in id order.
    pub fn resources_of_type(&self, resource_type: &str) -> Result<Vec<String>> {
        self.strings(
            "SELECT codec, body FROM resource WHERE type = ?1 ORDER BY id",
            params![resource_type],
        )
    }

    /// The resources of a type that belong to one patient.
    pub fn resources_for_patient(
        &self,
        resource_type: &str,
        patient_id: &str,
    ) -> Result<Vec<String>> {
        self.strings(
            "SELECT codec, body FROM resource WHERE patient_id = ?1 AND type = ?2 ORDER BY id",
            params![patient_id, resource_type],
        )
    }

    /// Appointments starting in `[from_utc, to_utc)` (RFC 3339 UTC with `Z`).
    pub fn appointments_starting(&self, from_utc: &str, to_utc: &str) -> Result<Vec<String>> {
        self.strings(
            "SELECT r.codec, r.body FROM appointment_index a JOIN resource r ON r.type = 'Appointment' AND r.id = a.id
             WHERE a.start_utc >= ?1 AND a.start_utc < ?2 ORDER BY a.start_utc",
            params![from_utc, to_utc],
        )
    }

    /// A patient's observations with one code, oldest first.
    pub fn observations(&self, patient_id: &str, code: &str) -> Result<Vec<String>> {
        self.strings(
            "SELECT r.codec, r.body FROM observation_index o JOIN resource r ON r.type = 'Observation' AND r.id = o.id
             WHERE o.patient_id = ?1 AND o.code = ?2 ORDER BY o.effective",
            params![patient_id, code],
        )
    }

    pub fn resource_count(&self) -> Result<usize> {
        Ok(self
            .reader()
            .query_row("SELECT count(*) FROM resource", [], |r| r.get::<_, i64>(0))?
            .try_into()
            .unwrap_or(0))
    }

    /// Stores resources pulled from the EHR, except those with local changes still waiting
    /// (the user's version stays shown until its write is settled). Returns how many were
    /// stored and how many were held back.
    pub fn ingest<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a ResourceRow>,
    ) -> Result<(usize, usize)> {
        self.ingest_and_set(rows, &[])
    }

    /// [`Store::ingest`], and in the same transaction each `(name, value)` cursor set: what
    /// the cursors say is done is stored, or neither is.
    pub fn ingest_and_set<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a ResourceRow>,
        cursors: &[(String, String)],
    ) -> Result<(usize, usize)> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut held = 0;
        let mut fresh = Vec::new();
        {
            let mut waiting = tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE resource_type = ?1 AND resource_id = ?2
                 AND state IN ('pending', 'conflict'))",
            )?;
            let any_waiting: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE state IN ('pending', 'conflict') AND resource_id IS NOT NULL)",
                [],
                |r| r.get(0),
            )?;
            let mut refetch =
                tx.prepare_cached("INSERT OR IGNORE INTO refetch (type, id) VALUES (?1, ?2)")?;
            for row in rows {
                if any_waiting
                    && waiting
                        .query_row(params![row.resource_type, row.id], |r| r.get::<_, bool>(0))?
                {
                    refetch.execute(params![row.resource_type, row.id])?;
                    held += 1;
                } else {
                    fresh.push(row);
                }
            }
        }
        let stored = put_rows(&tx, fresh.iter().copied())?;
        // A record read at last is no longer kept as unreadable.
        let any_rejected: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM rejected)", [], |r| r.get(0))?;
        if any_rejected {
            let mut settle = tx.prepare_cached(
                "DELETE FROM rejected WHERE resource_type = ?1 AND resource_id = ?2",
            )?;
            for row in &fresh {
                settle.execute(params![row.resource_type, row.id])?;
            }
        }
        if !cursors.is_empty() {
            let at = now();
            let mut set = tx.prepare_cached(
                "INSERT INTO sync_cursor (name, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )?;
            for (name, value) in cursors {
                set.execute(params![name, value, at])?;
            }
        }
        tx.commit()?;
        Ok((stored, held))
    }

    /// Removes resources deleted at the EHR (and their projections), except those with a
    /// local change waiting: they are kept, and fetched again once it is settled.
    pub fn delete_resources(&self, keys: &[(String, String)]) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        for (ty, id) in keys {
            let waiting: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE resource_type = ?1 AND resource_id = ?2
                 AND state IN ('pending', 'conflict'))",
                params![ty, id],
                |r| r.get(0),
            )?;
            if waiting {
                tx.execute(
                    "INSERT OR IGNORE INTO refetch (type, id) VALUES (?1, ?2)",
                    params![ty, id],
                )?;
                continue;
            }
            n += tx.execute(
                "DELETE FROM resource WHERE type = ?1 AND id = ?2",
                params![ty, id],
            )?;
            match ty.as_str() {
                "Appointment" => {
                    tx.execute("DELETE FROM appointment_index WHERE id = ?1", params![id])?;
                }
                "Observation" => {
                    tx.execute("DELETE FROM observation_index WHERE id = ?1", params![id])?;
                }
                _ => {}
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Records held back from a pull whose local changes are now settled: to fetch again.
    pub fn refetch_ready(&self) -> Result<Vec<(String, String)>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT f.type, f.id FROM refetch f WHERE NOT EXISTS (
                 SELECT 1 FROM outbox o WHERE o.resource_type = f.type AND o.resource_id = f.id
                 AND o.state IN ('pending', 'conflict'))",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A held-back record was fetched again.
    pub fn refetched(&self, resource_type: &str, id: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM refetch WHERE type = ?1 AND id = ?2",
            params![resource_type, id],
        )?;
        Ok(())
    }

    /// Whether the store holds a resource (without reading it).
    pub fn contains(&self, resource_type: &str, id: &str) -> Result<bool> {
        Ok(self.reader().query_row(
            "SELECT EXISTS (SELECT 1 FROM resource WHERE type = ?1 AND id = ?2)",
            params![resource_type, id],
            |r| r.get(0),
        )?)
    }

    /// The stored version of a resource.
    pub fn version_of(&self, resource_type: &str, id: &str) -> Result<Option<String>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT version_id FROM resource WHERE type = ?1 AND id = ?2",
                params![resource_type, id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Up to `limit` ids of one type after `after_id` (in id order) with their versions: the
    /// working set, a slice at a time, for reconciling it with the EHR.
    pub fn versions_of_type(
        &self,
        resource_type: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Option<String>)>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, version_id FROM resource WHERE type = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![resource_type, after_id.unwrap_or(""), limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The resource types the store holds.
    pub fn resource_types(&self) -> Result<Vec<String>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT DISTINCT type FROM resource ORDER BY type")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
