//! Helpers shared by the store's test binaries.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "each test binary uses part of this; a failed unwrap is the test failing"
)]

use hearth_store::DbKey;
use std::path::{Path, PathBuf};

/// A fresh folder, the path of a database in it (not yet created) and a new key.
pub fn fresh_db() -> (tempfile::TempDir, PathBuf, DbKey) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.db");
    (dir, path, DbKey::generate().unwrap())
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}
