//! The crate's top-level modules import each other without cycles, and
//! `model` (the shared nouns) imports nothing of the crate
//! (docs/architecture.md, "The import graph").
//!
//! A module's imports are the `crate::NAME` paths in its files, test code
//! (`*tests.rs`, a trailing `#[cfg(test)] mod tests`) and comments left
//! out. `cargo test --test import_graph -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every top-level module and the files that make it.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut mods = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("read src") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .expect("a file name")
            .to_string();
        // A module may be `X.rs` with its children in `X/`: both are X.
        if path.is_dir() {
            rust_files(&path, mods.entry(name).or_default());
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            mods.entry(name).or_default().push(path);
        }
    }
    mods
}

/// The `crate::NAME` references of one file's non-test code.
fn references(text: &str) -> BTreeSet<String> {
    paths(text)
        .into_iter()
        .filter_map(|p| p.split("::").next().map(str::to_string))
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut edges = BTreeMap::new();
    for (name, files) in &mods {
        let mut to = BTreeSet::new();
        for file in files {
            if file.to_string_lossy().ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(file).expect("read a source file");
            to.extend(
                references(&text)
                    .into_iter()
                    .filter(|m| m != name && mods.contains_key(m)),
            );
        }
        edges.insert(name.clone(), to);
    }
    edges
}

/// A cycle through `from`, if any (depth-first search).
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        at: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut c = path[i..].to_vec();
            c.push(at.to_string());
            return Some(c);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_string());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(at.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        if let Some(c) = visit(start, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let edges = graph();
    for (module, to) in &edges {
        println!(
            "{module} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    assert!(edges.len() > 10, "the modules were found: {edges:?}");
    assert!(edges["shard"].contains("smtp"), "references are read");
    assert!(
        edges["dns"].contains("model") && edges["dns"].contains("sts"),
        "a module's file and its folder are read together"
    );
    assert_eq!(cycle(&edges), None, "an import cycle");
    assert!(
        edges["model"].is_empty(),
        "model imports {:?}",
        edges["model"]
    );
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.insert("a".into(), ["b".to_string()].into());
    edges.insert("b".into(), ["c".to_string()].into());
    edges.insert("c".into(), ["a".to_string()].into());
    assert_eq!(
        cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    edges.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&edges), None);
}

/// The non-test files of top-level module `module`, each with its text
/// (comments and test modules kept out as `references` does).
fn module_paths(module: &str) -> Vec<(PathBuf, BTreeSet<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    mods[module]
        .iter()
        .filter(|f| !f.to_string_lossy().ends_with("tests.rs"))
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read a source file");
            (f.clone(), paths(&text))
        })
        .collect()
}

/// The `crate::a::b` paths (two levels where there are two) of one
/// file's non-test code (test modules and comments left out).
fn paths(text: &str) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let path: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let two: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).take(2).collect();
            // `$crate::` in a macro, or a word ending in "crate", is not a path.
            let before = rest[..i].chars().last();
            if !two.is_empty()
                && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '$' || c == '_')
            {
                found.insert(two.join("::"));
            }
            rest = after;
        }
    }
    found
}

/// Layers (docs/architecture.md, "The import graph"): the shared nouns
/// (a message, its envelope, an attempt's outcome, why storing failed)
/// live in `model`, so the spool knows nothing of SMTP (the writer hands
/// it the trace header to write) and delivery nothing of either SMTP
/// session: the attempt core reads a failure's vocabulary
/// (`smtp::failure`) and decides what it means for the route and the TLS
/// report itself.
#[test]
fn layers_lean_the_right_way() {
    let forbidden: [(&str, &[&str]); 5] = [
        ("spool", &["smtp", "delivery", "shard", "run"]),
        (
            "delivery",
            &["smtp::server", "smtp::client", "shard", "run"],
        ),
        ("probe", &["run", "shard"]),
        ("admin", &["shard", "run"]),
        ("status", &["shard", "run"]),
    ];
    for (module, never) in forbidden {
        for (file, used) in module_paths(module) {
            for path in never {
                assert!(
                    !used
                        .iter()
                        .any(|u| u == path || u.starts_with(&format!("{path}::"))),
                    "{} imports crate::{path}: {used:?}",
                    file.display()
                );
            }
        }
    }
    // The rule reads what it should.
    assert!(paths("use crate::smtp::server::Session;").contains("smtp::server"));
}
