//! The shared sample data sets, checked against the manifest kept in the repository
//! (`crates/testkit/sample-data.manifest`: per file its SHA-256, size and path) before a test
//! gets them: a set with a file missing, changed, or one the manifest does not list is never
//! handed out as if it were whole.
//!
//! A missing file is a reported skip on a user's clone and a failure when `CI` is set (a run
//! that could not test what it should must not pass); a changed or unlisted file always fails.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The manifest of the sample data the project uses.
pub const MANIFEST: &str = include_str!("../sample-data.manifest");

/// Where the shared sample data lives: `$HEARTH_SAMPLE_DATA`, else `../shared/data` beside
/// the checkout.
pub fn sample_root() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_SAMPLE_DATA") {
        return p.into();
    }
    crate::workspace_root().join("../shared/data")
}

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`): there, a
/// missing data set fails the test instead of skipping it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// One file of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sha256: String,
    pub size: u64,
    /// Below the sample root, `/`-separated; its first component is the set's name.
    pub path: String,
}

impl Entry {
    /// The data set the file belongs to.
    pub fn set(&self) -> &str {
        self.path.split('/').next().unwrap_or(&self.path)
    }
}

/// The entries of a manifest text (comments and blank lines skipped); panics on a malformed
/// line, naming it.
pub fn parse_manifest(text: &str) -> Vec<Entry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (Some(sha256), Some(size), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("sample data manifest: malformed line {line:?}");
            };
            assert!(
                sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "sample data manifest: bad SHA-256 in {line:?}"
            );
            Entry {
                sha256: sha256.to_ascii_lowercase(),
                size: size
                    .parse()
                    .unwrap_or_else(|_| panic!("sample data manifest: bad size in {line:?}")),
                path: path.to_string(),
            }
        })
        .collect()
}

/// The data sets a manifest lists, in order of first appearance.
pub fn manifest_sets(text: &str) -> Vec<String> {
    let mut sets: Vec<String> = Vec::new();
    for e in parse_manifest(text) {
        if !sets.iter().any(|s| s == e.set()) {
            sets.push(e.set().to_string());
        }
    }
    sets
}

/// What is wrong with a data set on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// These files (paths below the sample root) are not there.
    Missing(Vec<String>),
    /// These files are there but are not what the manifest says (each with the reason).
    Differs(Vec<String>),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (list, what) = match self {
            Problem::Missing(l) => (l, "missing"),
            Problem::Differs(l) => (l, "not as the manifest says"),
        };
        const SHOWN: usize = 5;
        let mut names = list
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if list.len() > SHOWN {
            names.push_str(&format!(" and {} more", list.len() - SHOWN));
        }
        write!(f, "{what}: {names}")
    }
}

/// Checks the set `name` under `root` against `manifest`: every file listed is there with its
/// size and SHA-256, and a folder holds no file the manifest does not list (hidden files
/// aside). Returns the set's path. Panics if the manifest does not list the set at all.
pub fn check_set(root: &Path, manifest: &str, name: &str) -> Result<PathBuf, Problem> {
    let entries: Vec<Entry> = parse_manifest(manifest)
        .into_iter()
        .filter(|e| e.set() == name)
        .collect();
    assert!(
        !entries.is_empty(),
        "sample data set `{name}` is not in the manifest (crates/testkit/sample-data.manifest): \
         add its files there"
    );
    let set = root.join(name);
    let mut missing = Vec::new();
    let mut differs = Vec::new();
    for e in &entries {
        let path = root.join(&e.path);
        match std::fs::metadata(&path) {
            Err(_) => missing.push(e.path.clone()),
            Ok(m) if !m.is_file() => differs.push(format!("{} (not a file)", e.path)),
            Ok(m) if m.len() != e.size => differs.push(format!(
                "{} ({} bytes, the manifest says {})",
                e.path,
                m.len(),
                e.size
            )),
            Ok(_) => match sha256_of(&path) {
                Ok(h) if h == e.sha256 => {}
                Ok(h) => differs.push(format!(
                    "{} (SHA-256 {h}, the manifest says {})",
                    e.path, e.sha256
                )),
                Err(err) => differs.push(format!("{} (unreadable: {err})", e.path)),
            },
        }
    }
    if set.is_dir() {
        let listed: BTreeSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        for extra in files_below(&set, name) {
            if !listed.contains(extra.as_str()) {
                differs.push(format!("{extra} (not in the manifest)"));
            }
        }
    }
    if !differs.is_empty() {
        Err(Problem::Differs(differs))
    } else if !missing.is_empty() {
        Err(Problem::Missing(missing))
    } else {
        Ok(set)
    }
}

/// The files below `dir` (recursively, hidden ones skipped) as `/`-separated paths starting
/// with `prefix`.
fn files_below(dir: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}/{name}");
        if entry.path().is_dir() {
            out.extend(files_below(&entry.path(), &rel));
        } else {
            out.push(rel);
        }
    }
    out.sort();
    out
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// What a test does about a data set that is not whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Report this line and return (a user's clone without the data).
    Skip(String),
    /// Fail with this message.
    Fail(String),
}

/// The policy: a missing file skips, unless `ci`; a changed or unlisted file fails.
pub fn verdict(test: &str, name: &str, root: &Path, problem: &Problem, ci: bool) -> Verdict {
    let looked = format!("looked in {}; set HEARTH_SAMPLE_DATA", root.display());
    match problem {
        Problem::Missing(_) if !ci => Verdict::Skip(format!(
            "SKIP {test}: sample data set `{name}` is {problem} ({looked})"
        )),
        Problem::Missing(_) => Verdict::Fail(format!(
            "{test}: sample data set `{name}` is {problem} ({looked}). CI is set: a run \
             without its sample data fails instead of skipping"
        )),
        Problem::Differs(_) => Verdict::Fail(format!(
            "{test}: sample data set `{name}` is {problem} ({looked}; if the data changed on \
             purpose, regenerate crates/testkit/sample-data.manifest)"
        )),
    }
}

/// The sample data set `name` (a file or folder under [`sample_root`]), checked against the
/// manifest, or `None` after reporting the skip: on stderr, and as a line in
/// `$HEARTH_SKIP_LOG` (which the test script counts). A test that gets `None` returns at once.
/// With `CI` set a missing set panics instead, naming the missing files and where it looked; a
/// set whose files differ from the manifest always panics.
pub fn sample_data(test: &str, name: &str) -> Option<PathBuf> {
    // Sets already found whole in this process (hashing them again per test is waste).
    static WHOLE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let root = sample_root();
    let set = root.join(name);
    let mut whole = WHOLE.lock().unwrap_or_else(|p| p.into_inner());
    if whole.contains(&set) {
        return Some(set);
    }
    let problem = match check_set(&root, MANIFEST, name) {
        Ok(set) => {
            whole.insert(set.clone());
            return Some(set);
        }
        Err(problem) => problem,
    };
    drop(whole);
    match verdict(test, name, &root, &problem, ci()) {
        Verdict::Fail(message) => panic!("{message}"),
        Verdict::Skip(line) => {
            report_skip(&line);
            None
        }
    }
}

fn report_skip(line: &str) {
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("HEARTH_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            // One write per line: tests running in parallel append to the same file.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample root with two sets: a folder of two files and a single file.
    fn sample() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bundles")).unwrap();
        std::fs::write(dir.path().join("bundles/a.json"), "{\"a\":1}").unwrap();
        std::fs::write(dir.path().join("bundles/b.json"), "{\"b\":2}").unwrap();
        std::fs::write(dir.path().join("archive.tar.zst"), "not really").unwrap();
        dir
    }

    /// The manifest of [`sample`]'s files, digests by `sha256sum` (coreutils), so the check is
    /// not graded by its own hashing.
    fn real_manifest(dir: &Path) -> String {
        let mut out = String::new();
        for rel in ["bundles/a.json", "bundles/b.json", "archive.tar.zst"] {
            let path = dir.join(rel);
            let sum = std::process::Command::new("sha256sum")
                .arg(&path)
                .output()
                .expect("sha256sum (coreutils)");
            let hex = String::from_utf8_lossy(&sum.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            let size = std::fs::metadata(&path).unwrap().len();
            out.push_str(&format!("{hex} {size} {rel}\n"));
        }
        out
    }

    #[test]
    fn a_whole_set_is_handed_out() {
        let dir = sample();
        let manifest = real_manifest(dir.path());
        assert_eq!(
            check_set(dir.path(), &manifest, "bundles"),
            Ok(dir.path().join("bundles"))
        );
        assert_eq!(
            check_set(dir.path(), &manifest, "archive.tar.zst"),
            Ok(dir.path().join("archive.tar.zst"))
        );
    }

    #[test]
    fn one_file_deleted_from_a_folder_set_is_named() {
        let dir = sample();
        let manifest = real_manifest(dir.path());
        std::fs::remove_file(dir.path().join("bundles/b.json")).unwrap();
        let problem = check_set(dir.path(), &manifest, "bundles").unwrap_err();
        assert_eq!(problem, Problem::Missing(vec!["bundles/b.json".into()]));
        // On CI that fails the test, naming the file and where it looked; elsewhere a skip.
        match verdict("t", "bundles", dir.path(), &problem, true) {
            Verdict::Fail(m) => {
                assert!(m.contains("bundles/b.json"), "{m}");
                assert!(m.contains(&dir.path().display().to_string()), "{m}");
            }
            other => panic!("{other:?}"),
        }
        match verdict("t", "bundles", dir.path(), &problem, false) {
            Verdict::Skip(line) => assert!(line.starts_with("SKIP t:") && line.contains("b.json")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_set_is_named() {
        let dir = sample();
        let manifest = real_manifest(dir.path());
        std::fs::remove_file(dir.path().join("archive.tar.zst")).unwrap();
        let problem = check_set(dir.path(), &manifest, "archive.tar.zst").unwrap_err();
        assert_eq!(problem, Problem::Missing(vec!["archive.tar.zst".into()]));
        std::fs::remove_dir_all(dir.path().join("bundles")).unwrap();
        let problem = check_set(dir.path(), &manifest, "bundles").unwrap_err();
        assert_eq!(
            problem,
            Problem::Missing(vec!["bundles/a.json".into(), "bundles/b.json".into()])
        );
    }

    #[test]
    fn a_changed_or_unlisted_file_fails_even_outside_ci() {
        let dir = sample();
        let manifest = real_manifest(dir.path());
        // Same size, other bytes: only the digest tells.
        std::fs::write(dir.path().join("bundles/a.json"), "{\"a\":9}").unwrap();
        std::fs::write(dir.path().join("bundles/c.json"), "{}").unwrap();
        std::fs::write(dir.path().join("bundles/.hidden"), "").unwrap();
        let problem = check_set(dir.path(), &manifest, "bundles").unwrap_err();
        let Problem::Differs(files) = &problem else {
            panic!("{problem:?}")
        };
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files[0].starts_with("bundles/a.json (SHA-256"), "{files:?}");
        assert!(
            files[1].starts_with("bundles/c.json (not in the manifest"),
            "{files:?}"
        );
        assert!(matches!(
            verdict("t", "bundles", dir.path(), &problem, false),
            Verdict::Fail(_)
        ));
        std::fs::write(dir.path().join("archive.tar.zst"), "short").unwrap();
        assert!(matches!(
            check_set(dir.path(), &manifest, "archive.tar.zst"),
            Err(Problem::Differs(_))
        ));
    }

    #[test]
    fn the_manifest_lists_every_set_the_project_uses() {
        let sets = manifest_sets(MANIFEST);
        // The clinic's 20 patients (and the set's licence) and the benchmark's archive.
        assert_eq!(
            sets,
            [crate::clinic::BUNDLES, "synthea-r4-615-patients.tar.zst"]
        );
        let bundles = parse_manifest(MANIFEST)
            .into_iter()
            .filter(|e| e.set() == crate::clinic::BUNDLES && e.path.ends_with(".json"))
            .count();
        assert_eq!(bundles, 20);
    }

    /// Every set in the manifest, checked as a test would get it: a skip on a clone without
    /// the data, a failure naming the missing file with `CI` set, a failure if a file changed.
    #[test]
    fn every_sample_data_set_is_present_and_whole() {
        for set in manifest_sets(MANIFEST) {
            let _ = sample_data("every_sample_data_set_is_present_and_whole", &set);
        }
    }
}
