//! Tidy: the repository keeps the shape ARCHITECTURE.md describes. Every
//! source file opens with a `//!` doc; only the runtime depends on rdkafka;
//! every stage is named in ARCHITECTURE.md and the README; no source file
//! grows past ~600 lines except the data tables the map names.

use consentry_core::stage::StageName;
use std::path::{Path, PathBuf};

/// Files allowed past the line limit: data tables, each named in
/// ARCHITECTURE.md.
const DATA_TABLES: &[&str] = &["crates/consentry-stages/src/normalize/fhir/model/elements.rs"];
const MAX_LINES: usize = 650;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under the project's source folders, relative to the root.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if p.is_dir() {
                if name != "target" && name != "golden" && !name.to_string_lossy().starts_with('.')
                {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for dir in [
        "crates",
        "src",
        "tests",
        "benches",
        "examples",
        "fuzz/fuzz_targets",
    ] {
        walk(&root().join(dir), &mut out);
    }
    out.sort();
    assert!(out.len() > 50, "found only {} source files", out.len());
    out.into_iter()
        .map(|p| p.strip_prefix(root()).map(Path::to_path_buf).unwrap_or(p))
        .collect()
}

/// Whether a file's first line of substance (after inner attributes such
/// as `#![no_main]`) is something other than a `//!` module doc.
fn lacks_module_doc(text: &str) -> bool {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("#!["));
    !first.is_some_and(|l| l.starts_with("//!"))
}

/// Whether `word` stands in `text` as a word of its own (not inside a
/// longer name such as `consent-gate-x` or `reroute`).
fn names_word(text: &str, word: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

#[test]
fn the_checks_catch_what_they_look_for() {
    assert!(lacks_module_doc("use std::fmt;\n//! late\n"));
    assert!(lacks_module_doc("// a comment\n"));
    assert!(!lacks_module_doc("#![no_main]\n//! A fuzz target.\n"));
    assert!(names_word("| consent-gate | internal |", "consent-gate"));
    assert!(!names_word("the consent-gates", "consent-gate"));
    assert!(!names_word("reroute", "route"));
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|p| lacks_module_doc(&read(&root().join(p))))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc: {missing:#?}"
    );
}

#[test]
fn only_the_runtime_depends_on_rdkafka() {
    let mut manifests = vec![root().join("Cargo.toml"), root().join("fuzz/Cargo.toml")];
    for e in std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .flatten()
    {
        manifests.push(e.path().join("Cargo.toml"));
    }
    let runtime = root().join("crates/consentry-runtime/Cargo.toml");
    let mut offenders = Vec::new();
    for m in manifests.iter().filter(|m| m.exists()) {
        let text = read(m);
        // A dependency line, in any dependency table (the workspace's own
        // version pin in the root's [workspace.dependencies] aside).
        let mut table = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                table = line.to_string();
            } else if line.starts_with("rdkafka")
                && table.contains("dependencies")
                && table != "[workspace.dependencies]"
                && *m != runtime
            {
                offenders.push(format!("{} {table}", m.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "rdkafka outside the runtime: {offenders:?}"
    );
    assert!(
        read(&runtime)
            .lines()
            .any(|l| l.trim_start().starts_with("rdkafka")),
        "the runtime no longer lists rdkafka: update this test"
    );
}

#[test]
fn every_stage_is_named_in_the_map_and_the_readme() {
    for doc in ["ARCHITECTURE.md", "README.md"] {
        let text = read(&root().join(doc));
        let missing: Vec<&str> = StageName::ALL
            .iter()
            .map(|s| s.as_str())
            .filter(|s| !names_word(&text, s))
            .collect();
        assert!(missing.is_empty(), "{doc} does not name stages {missing:?}");
    }
}

#[test]
fn no_source_file_grows_past_the_limit_except_named_data_tables() {
    let map = read(&root().join("ARCHITECTURE.md"));
    for table in DATA_TABLES {
        assert!(
            map.contains(table),
            "ARCHITECTURE.md does not name the data table {table}"
        );
    }
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|p| !DATA_TABLES.iter().any(|t| p.ends_with(t)))
        .filter_map(|p| {
            let n = read(&root().join(&p)).lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "files past {MAX_LINES} lines: {long:#?}");
}
