//! The crate's shape: no module imports a module that imports it back
//! (through `crate::` or `super::` paths, outside test modules; a module
//! and its own ancestors or descendants do not count).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src/` (but the binaries) by its path, `nat::alg::pptp`,
/// with its source.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("src is readable").flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let path = e.path();
            let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if path.is_dir() {
                if name != "bin" {
                    walk(&path, &[prefix, std::slice::from_ref(&name)].concat(), out);
                }
            } else if path.extension().is_some_and(|x| x == "rs") {
                let module = if matches!(name.as_str(), "mod" | "lib" | "main") {
                    prefix.to_vec()
                } else {
                    [prefix, std::slice::from_ref(&name)].concat()
                };
                if prefix.is_empty() && name == "main" {
                    continue;
                }
                out.insert(module.join("::"), std::fs::read_to_string(&path).expect("a source file is readable"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut out);
    out
}

/// The module a `crate::…` or `super::…` path inside `from` names: its
/// longest prefix that is a module.
fn resolve(from: &str, path: &str, known: &BTreeMap<String, String>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = match segs.first() {
        Some(&"crate") => Vec::new(),
        Some(&"super") => from.split("::").filter(|s| !s.is_empty()).collect(),
        _ => return None,
    };
    if segs[0] == "crate" {
        segs.remove(0);
    }
    while segs.first() == Some(&"super") {
        base.pop();
        segs.remove(0);
    }
    let full: Vec<&str> = base.into_iter().chain(segs).collect();
    (1..=full.len()).rev().map(|k| full[..k].join("::")).find(|m| known.contains_key(m))
}

/// The paths a source names: `crate::a::b` and `super::super::c`, outside
/// comments and the test module at its end.
fn paths(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let bytes = line.as_bytes();
        for start in [line.match_indices("crate::"), line.match_indices("super::")].into_iter().flatten() {
            let at = start.0;
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let end = line[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(line.len(), |e| at + e);
            out.push(line[at..end].trim_end_matches(':').to_string());
        }
    }
    out
}

fn related(a: &str, b: &str) -> bool {
    a == b || b.starts_with(&format!("{a}::")) || a.starts_with(&format!("{b}::")) || a.is_empty() || b.is_empty()
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let known = modules();
    assert!(known.contains_key("nat::engine") && known.contains_key("scenario::play"), "{:?}", known.keys());
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, source) in &known {
        for p in paths(source) {
            if let Some(to) = resolve(module, &p, &known).filter(|to| !related(module, to)) {
                edges.entry(module.clone()).or_default().insert(to);
            }
        }
    }
    // A cycle is an edge whose target reaches its source.
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                todo.extend(edges.get(&m).into_iter().flatten().cloned());
            }
        }
        false
    };
    let cycles: Vec<String> = edges
        .iter()
        .flat_map(|(a, tos)| tos.iter().filter(|b| reaches(b, a)).map(move |b| format!("{a} -> {b}")))
        .collect();
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 100, "the imports were read: {edges:?}");
    assert!(cycles.is_empty(), "modules that import each other back: {cycles:#?}");
}
