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

mod audit;
mod binding;
mod conflicts;
mod cursors;
mod key;
mod keychain;
pub mod migrations;
mod notes;
mod outbox;
mod rejected;
mod resources;

use audit::append_audit;
pub use audit::AuditEntry;
pub use binding::ProfileBinding;
pub use conflicts::{Conflict, Resolution};
pub use key::{AuditKey, DbKey};
pub use keychain::Keychain;
pub use notes::{
    ChargeRow, ChargeRowState, NoteDraftRow, NoteVersionRow, Signed, Signing, VisitMilestones,
};
pub use outbox::{Method, OutboxEntry, OutboxState, OutboxSummary, OutboxWrite};
pub use rejected::{Rejected, REJECTED_LIMIT};
use resources::put_rows;
pub use resources::{Projection, ResourceRow};

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
    #[error("{0}")]
    InvalidCharge(String),
    #[error("the note is signed: only an amendment of its latest version is a draft")]
    NoteSigned,
    #[error("no open conflict {id}")]
    NoSuchConflict { id: i64 },
    #[error("cannot generate a database key: {0}")]
    Random(String),
    #[error("the OS keychain cannot be used ({0}); Hearth keeps its database key only there. Unlock or set up the keychain (on Linux, a Secret Service such as GNOME Keyring) and start Hearth again")]
    Keychain(String),
    #[error("the key of {path} is missing from the OS keychain; the local data cannot be read without it (sign in again to re-sync from the EHR after IT removes the old file)")]
    KeyMissing { path: String },
    #[error("the audit key of {path} is missing from the OS keychain, but its audit log was kept with that key: the log can no longer be verified, so Hearth does not open it. Ask IT: the keychain entry was removed, or the profile was copied from another computer")]
    AuditKeyMissing { path: String },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

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
    /// The audit chain's key (kept apart from the database key).
    audit_key: AuditKey,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now() -> String {
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

/// The page size of the databases this version creates (SQLCipher `cipher_page_size`).
/// SQLCipher encrypts and authenticates each page, and with OpenSSL 3 the set-up per page costs
/// about as much as the work on a 4 KiB page: 16 KiB pages took ~16 % less CPU for the initial
/// sync of the 615-patient set (`cargo bench -p hearth-sync --bench ingest`). Larger pages made
/// single-record reads slower (each read decrypts a whole page) for little more gain.
pub const PAGE_SIZE: u32 = 16_384;
/// The page size of databases made before [`PAGE_SIZE`] (SQLCipher 4's default); they still
/// open, and keep it.
pub const LEGACY_PAGE_SIZE: u32 = 4_096;
/// How much the write-ahead log may grow before SQLite copies it into the database.
const WAL_CHECKPOINT_BYTES: u32 = 64 << 20;

/// A read-only connection to an open, migrated database.
fn open_reader(path: &Path, key: &DbKey, page_size: u32) -> Result<Connection> {
    let conn = open_connection(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(&key.pragma(page_size))?;
    conn.execute_batch(
        "PRAGMA query_only = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;",
    )?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if absent) the database at `path` with `key`, and migrates it. Its
    /// audit chain is keyed with a key derived from `key` ([`AuditKey::derived_from`]): for
    /// tests and tools; the app opens with [`Store::open_with_keychain`].
    pub fn open(path: &Path, key: &DbKey) -> Result<Self> {
        Self::open_keyed(path, key, AuditKey::derived_from(key))
    }

    /// [`Store::open`] with the audit chain keyed by `audit_key`.
    pub fn open_keyed(path: &Path, key: &DbKey, audit_key: AuditKey) -> Result<Self> {
        let empty = |p: &Path| std::fs::metadata(p).map_or(true, |m| m.len() == 0);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let fresh = empty(path) && empty(Path::new(&wal));
        // A database of an earlier version has the legacy page size; the encrypted file does
        // not say which it has, so the current one is tried first. A wrong key fits neither.
        let sizes: &[u32] = if fresh {
            &[PAGE_SIZE]
        } else {
            &[PAGE_SIZE, LEGACY_PAGE_SIZE]
        };
        for &page_size in sizes {
            if let Some(conn) = Self::try_key(path, key, page_size)? {
                return Self::open_with_connection(conn, path, key, page_size, audit_key);
            }
        }
        Err(StoreError::WrongKey {
            path: path.display().to_string(),
        })
    }

    /// A writer connection to `path` keyed with `key` and `page_size`; `None` if the file does
    /// not decrypt with them.
    fn try_key(path: &Path, key: &DbKey, page_size: u32) -> Result<Option<Connection>> {
        let conn = open_connection(path)?;
        // Another process of the same profile (the sync tool) may hold the write lock briefly.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(&key.pragma(page_size))?;
        // The first read tells whether the key fits.
        match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(_) => Ok(Some(conn)),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn open_with_connection(
        conn: Connection,
        path: &Path,
        key: &DbKey,
        page_size: u32,
        audit_key: AuditKey,
    ) -> Result<Self> {
        let display = path.display().to_string();
        conn.execute_batch(&format!(
            "PRAGMA temp_store = MEMORY;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -65536;
             PRAGMA wal_autocheckpoint = {};
             PRAGMA foreign_keys = ON;",
            WAL_CHECKPOINT_BYTES / page_size
        ))?;
        let mut conn = conn;
        migrations::migrate(&mut conn, &display)?;
        let readers = (0..READERS)
            .map(|_| open_reader(path, key, page_size).map(Mutex::new))
            .collect::<Result<_>>()?;
        Ok(Self {
            conn: Mutex::new(conn),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            path: path.to_path_buf(),
            audit_key,
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
        // The audit chain's key, in its own entry. A new one for a database whose chain was
        // never keyed carries its plain chain (of an earlier version) over, if intact; a
        // database whose chain was keyed and whose key is gone is refused.
        let loaded = keychain.load_audit_key()?;
        let fresh = loaded.is_none();
        let mut store = Self::open_keyed(
            path,
            &key,
            loaded.unwrap_or_else(|| AuditKey::derived_from(&key)),
        )?;
        if fresh {
            if store.audit_was_keyed()? {
                return Err(StoreError::AuditKeyMissing {
                    path: path.display().to_string(),
                });
            }
            store.audit_key = keychain.create_audit_key()?;
            store.key_plain_chain()?;
        }
        store.mark_audit_keyed()?;
        Ok(store)
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
            packed: None,
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
