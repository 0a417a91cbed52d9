//! The conformance suite: scenario files (`scenarios/**/*.toml`, format in
//! `scenarios/README.md`), played against a router under test, checked, and
//! reported.

pub mod compare;
pub mod early;
pub mod expect;
pub mod family;
pub mod format;
pub mod ladder;
pub mod observed;
pub mod play;
pub mod preflight;
pub mod report;
pub mod suite;

use std::path::{Path, PathBuf};

pub use format::{Family, Mode, Scenario, Target};
pub use play::{Outcome, Status, play};

/// The directory of shipped scenarios.
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Every scenario file under `paths` (files or directories, searched
/// recursively; `topologies/` holds lab topologies, not scenarios), sorted.
pub fn find(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out).map_err(|e| format!("{}: {e}", p.display()))?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such scenario file or directory", p.display()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "topologies") {
                walk(&path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads one scenario file, checked against what its family can do.
pub fn load_file(path: &Path) -> Result<Scenario, String> {
    let s = Scenario::load(path)?;
    family::check(&s)?;
    Ok(s)
}

/// Loads every scenario under `paths`; all broken files are reported at
/// once.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Scenario>, String> {
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for file in find(paths)? {
        match load_file(&file) {
            Ok(s) => scenarios.push(s),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    let mut ids: Vec<&str> = scenarios.iter().map(|s| s.id.as_str()).collect();
    ids.sort();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("two scenario files are both {}: give one a different `case`", w[0]));
    }
    Ok(scenarios)
}
