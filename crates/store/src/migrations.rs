//! Versioned schema migrations, applied in order, each in its own transaction, recorded in
//! SQLite's `user_version`. A migration is never edited once released: add the next one.

use crate::{Result, StoreError};
use rusqlite::Connection;

/// `(version, SQL)`, in order. The version a database has after the migration runs.
pub const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_sync.sql")),
    (3, include_str!("../migrations/0003_resource_rowid.sql")),
    (4, include_str!("../migrations/0004_rejected.sql")),
    (5, include_str!("../migrations/0005_audit_sent.sql")),
    (6, include_str!("../migrations/0006_profile_binding.sql")),
    (7, include_str!("../migrations/0007_audit_keyed.sql")),
    (8, include_str!("../migrations/0008_notes_charges.sql")),
];

/// The newest schema this build knows.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Brings the database from its version to the latest; refuses a newer one.
pub fn migrate(conn: &mut Connection, path: &str) -> Result<()> {
    migrate_to(conn, path, latest())
}

/// Brings the database up to `target` (for tests of each step).
pub fn migrate_to(conn: &mut Connection, path: &str, target: u32) -> Result<()> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > latest() {
        return Err(StoreError::TooNew {
            path: path.to_string(),
            found,
            known: latest(),
        });
    }
    for (version, sql) in MIGRATIONS
        .iter()
        .filter(|(v, _)| *v > found && *v <= target)
    {
        let step = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()
        };
        step(conn).map_err(|source| StoreError::Migration {
            version: *version,
            source,
        })?;
    }
    Ok(())
}
