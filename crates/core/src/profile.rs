//! A profile's place on this machine: its database in the profile folder and the OS keychain
//! accounts of its secrets. The app and the `hearth-sync` tool both take them from here, so
//! the tool opens the database the app made (and the app the one the tool made).

use std::path::{Path, PathBuf};

/// The encrypted store's file in a profile folder (`--data-dir`).
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("hearth.db")
}

/// The keychain account (under [`crate::KEYCHAIN_SERVICE`]) of the key of the database at `db`:
/// one key per database file.
pub fn database_key_account(db: &Path) -> String {
    format!("database-key:{}", db.display())
}

/// The keychain account of the refresh token of whoever signs in on the profile whose
/// database is at `db`.
pub fn refresh_token_account(db: &Path) -> String {
    format!("refresh-token:{}", db.display())
}
