//! Hearth's local clinical store: one SQLite database encrypted at rest with SQLCipher.
//!
//! It keeps every FHIR resource exactly as served (raw JSON text with its `versionId` and
//! `lastUpdated`), the projections the views query, the outbox of writes waiting for the EHR,
//! sync cursors, and a hash-chained audit log. It stores what it is given: the FHIR
//! understanding (which patient a resource belongs to, when an appointment starts) is the
//! caller's, passed in a [`ResourceRow`].
//!
//! The key is 32 random bytes ([`DbKey`]) kept by the caller in the OS keychain; it never
//! touches the disk. Temporary tables and indices stay in memory (`temp_store = MEMORY`), so
//! nothing decrypted is spilled to temp files.

mod key;
mod keychain;
pub mod migrations;

pub use key::DbKey;
pub use keychain::Keychain;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} cannot be opened with this key: the key is wrong or the file is not a Hearth database")]
    WrongKey { path: String },
    #[error(
        "{path} was written by a newer Hearth (schema {found}; this version knows up to {known})"
    )]
    TooNew {
        path: String,
        found: u32,
        known: u32,
    },
    #[error("database migration to schema {version} failed: {source}")]
    Migration {
        version: u32,
        source: rusqlite::Error,
    },
    #[error("the audit log was altered at entry {seq}")]
    AuditTampered { seq: i64 },
    #[error("no outbox entry {seq}")]
    NoSuchOutboxEntry { seq: i64 },
    #[error("no open conflict {id}")]
    NoSuchConflict { id: i64 },
    #[error("cannot generate a database key: {0}")]
    Random(String),
    #[error("the OS keychain cannot be used ({0}); Hearth keeps its database key only there. Unlock or set up the keychain (on Linux, a Secret Service such as GNOME Keyring) and start Hearth again")]
    Keychain(String),
    #[error("the key of {path} is missing from the OS keychain; the local data cannot be read without it (sign in again to re-sync from the EHR after IT removes the old file)")]
    KeyMissing { path: String },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

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

    fn parse(s: &str) -> Self {
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
    fn parse(s: &str) -> rusqlite::Result<Self> {
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

/// The encrypted store. One connection, shared behind a mutex.
/// Read connections beside the one writer: views, the status line and the engine's look-ups
/// read from a snapshot (WAL) while a large write transaction runs, never waiting for it.
const READERS: usize = 3;

pub struct Store {
    /// The one connection that writes (SQLite allows one writer at a time anyway).
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Opens a connection to the file at `path` (not yet keyed).
///
/// SQLCipher finishes its own set-up (`sqlcipher_extra_init`) after SQLite marks itself
/// initialised, so a second thread opening its first connection at that moment sees
/// "sqlcipher not initialized" and its `PRAGMA key` fails. The first connection of the process is
/// therefore opened under a `Once`: every other opener waits until SQLCipher is ready.
pub fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    static SQLCIPHER_READY: std::sync::Once = std::sync::Once::new();
    SQLCIPHER_READY.call_once(|| {
        // Opening any connection runs SQLite's and SQLCipher's initialisation on this thread to
        // the end; a failure here shows up again, with its reason, in the open below.
        drop(Connection::open_in_memory());
    });
    Connection::open(path)
}

/// A read-only connection to an open, migrated database.
fn open_reader(path: &Path, key: &DbKey) -> Result<Connection> {
    let conn = open_connection(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(&key.pragma())?;
    conn.execute_batch(
        "PRAGMA query_only = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;",
    )?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if absent) the database at `path` with `key`, and migrates it.
    pub fn open(path: &Path, key: &DbKey) -> Result<Self> {
        let conn = open_connection(path)?;
        // Another process of the same profile (the sync tool) may hold the write lock briefly.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(&key.pragma())?;
        let display = path.display().to_string();
        // The first read tells whether the key fits.
        if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            return Err(match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase) => StoreError::WrongKey { path: display },
                _ => e.into(),
            });
        }
        conn.execute_batch(
            "PRAGMA temp_store = MEMORY;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -65536;
             PRAGMA wal_autocheckpoint = 16384;
             PRAGMA foreign_keys = ON;",
        )?;
        let mut conn = conn;
        migrations::migrate(&mut conn, &display)?;
        let readers = (0..READERS)
            .map(|_| open_reader(path, key).map(Mutex::new))
            .collect::<Result<_>>()?;
        Ok(Self {
            conn: Mutex::new(conn),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            path: path.to_path_buf(),
        })
    }

    /// The writer.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free read connection (or, all busy, the next one's turn).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the database at `path` with its key from the OS keychain. A new database gets a
    /// new random key, saved to the keychain before the file exists; an existing database
    /// whose key is gone is an error, never a fresh key over old data.
    pub fn open_with_keychain(path: &Path, keychain: &Keychain) -> Result<Self> {
        let key = match keychain.load()? {
            Some(key) => key,
            None if path.exists() => {
                return Err(StoreError::KeyMissing {
                    path: path.display().to_string(),
                })
            }
            None => keychain.create()?,
        };
        Self::open(path, &key)
    }

    /// Runs `f` in one immediate transaction committed with `synchronous = FULL`: what the
    /// user did must survive a crash or power loss the moment Hearth says it is saved.
    fn durably<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        conn.execute_batch("PRAGMA synchronous = FULL")?;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        result
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .reader()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

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
        self.durably(|tx| {
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
                actor,
                &format!("queue-{}", write.method.as_str()),
                &entity,
            )?;
            Ok(seq)
        })
    }

    /// Writes still to send, oldest first.
    pub fn pending(&self) -> Result<Vec<OutboxEntry>> {
        self.outbox_where("state = 'pending'", [])
    }

    /// Writes the EHR refused (not conflicts), oldest first.
    pub fn outbox_failed(&self) -> Result<Vec<OutboxEntry>> {
        self.outbox_where("state = 'failed'", [])
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
                actor,
                &format!("resolve-{label}"),
                &format!("{ty}/{id}"),
            )?;
            Ok(())
        })
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
            append_audit(tx, actor, action, &entity)?;
            Ok(())
        })
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

    pub fn cursor(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT value FROM sync_cursor WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_cursor(&self, name: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO sync_cursor (name, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![name, value, now()],
        )?;
        Ok(())
    }

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

fn put_rows<'a>(
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
        put.execute(params![
            row.resource_type,
            row.id,
            row.version_id,
            row.last_updated,
            row.patient_id,
            lz4_flex::compress_prepend_size(row.json.as_bytes())
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
fn decode(r: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
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

fn append_audit(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_writes_do_not_show_their_content_in_debug() {
        let json = r#"{"resourceType":"Patient","id":"p","name":[{"family":"Quokka"}]}"#;
        let row = ResourceRow {
            resource_type: "Patient".into(),
            id: "p".into(),
            version_id: None,
            last_updated: None,
            patient_id: None,
            json: json.into(),
            index: Projection::None,
        };
        let write = OutboxWrite {
            idempotency_key: "k".into(),
            resource_type: "Patient".into(),
            resource_id: Some("p".into()),
            method: Method::Update,
            if_match: None,
            body: Some(json.into()),
        };
        for text in [format!("{row:?}"), format!("{write:?}")] {
            assert!(!text.contains("Quokka"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }
}
