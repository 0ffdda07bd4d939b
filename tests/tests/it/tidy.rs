//! Repository tidiness: every Rust module starts with a `//!` doc (or includes its README).

use std::path::Path;

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_has_a_doc_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for crate_dir in [
        "shared/src",
        "http/src",
        "engage/src",
        "functions/src",
        "worker/src",
        "tests/src",
        "tests/tests",
        "tests/fuzz/src",
        "tests/fuzz/fuzz_targets",
    ] {
        walk(&root.join(crate_dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !(first.starts_with("//!") || first.starts_with("#![doc"))
        })
        .collect();
    assert!(missing.is_empty(), "modules without a //! doc: {missing:?}");
}

/// Text files of the repository that code, docs and configuration live in.
fn text_files(root: &Path) -> Vec<std::path::PathBuf> {
    fn walk_text(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | ".local" | "node_modules") {
                    walk_text(&p, out);
                }
            } else if [
                "rs", "md", "sh", "sql", "toml", "yaml", "yml", "json", "lua",
            ]
            .iter()
            .any(|x| p.extension().is_some_and(|e| e == *x))
                || name == "justfile"
            {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk_text(root, &mut files);
    files
}

/// The applied migrations that still cite the old design document: their text is checksummed
/// by refinery, so they cannot change (docs/decisions.md#old-citations-in-migrations).
const FROZEN: [&str; 2] = ["V2__hours_capacity.sql", "V4__throttle_numbers_cors.sql"];

#[test]
fn no_file_cites_documents_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let files = text_files(root);
    assert!(files.len() > 50, "found only {} files", files.len());
    // Spelled in pieces so that this file does not match itself.
    let outside = [
        concat!("DESIGN", " §"),
        concat!("ges-behavior", " §"),
        concat!("reference", "/"),
        concat!("limits", ".md"),
        concat!("DESIGN", ".md"),
    ];
    let mut found = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        if FROZEN.contains(&name.as_ref()) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if outside.iter().any(|o| line.contains(o)) {
                found.push(format!("{}:{}: {line}", f.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "cite docs/ instead of documents outside the repository:\n{}",
        found.join("\n")
    );
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every `<name>.md#<anchor>` of `text` (the file name as written, without its folder).
fn anchored_links(text: &str) -> Vec<(String, String)> {
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_');
    let mut links = Vec::new();
    for (at, _) in text.match_indices(".md#") {
        let name_start = text[..at].rfind(|c: char| !word(c)).map_or(0, |i| i + 1);
        let rest = &text[at + 4..];
        let anchor_len = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
        if name_start < at && anchor_len > 0 {
            links.push((
                format!("{}.md", &text[name_start..at]),
                rest[..anchor_len].to_string(),
            ));
        }
    }
    links
}

#[test]
fn links_into_docs_name_existing_headings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let docs = root.join("docs");
    let mut anchors = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(&docs).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        let heads: std::collections::BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .map(|l| anchor(l.trim_start_matches('#')))
            .collect();
        anchors.insert(e.file_name().to_string_lossy().into_owned(), heads);
    }
    assert!(anchors.contains_key("decisions.md") && anchors.contains_key("ges-behavior.md"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for f in text_files(root) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (file, anchor) in anchored_links(&text) {
            let Some(heads) = anchors.get(&file) else {
                continue; // not a page of docs/ (e.g. a crate README)
            };
            checked += 1;
            if !heads.contains(&anchor) {
                broken.push(format!("{}: {file}#{anchor}", f.display()));
            }
        }
    }
    assert!(checked > 30, "only {checked} links into docs/ found");
    assert!(
        broken.is_empty(),
        "links to missing headings:\n{}",
        broken.join("\n")
    );
}

/// A `cargo build` with `--bin` filters builds, of every package it names, only the binaries
/// named: `-p ors-sim` without `--bin ors-sim` beside `--bin engage` silently builds nothing
/// of ors-sim (`just up` then ran without its simulator). Every `-p` of such a line needs a
/// `--bin` before the next `-p`.
#[test]
fn cargo_builds_with_bin_filters_name_a_bin_for_every_package() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = text_files(&root);
    files.push(root.join(".ci/run"));
    for file in files
        .into_iter()
        .filter(|f| f.extension().is_none_or(|e| e != "rs"))
    {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains("cargo build")) {
            if !line.split_whitespace().any(|w| w == "--bin") {
                continue;
            }
            // Each `-p NAME` segment (up to the next `-p`) must hold a `--bin`.
            for segment in line.split(" -p ").skip(1) {
                assert!(
                    segment.split_whitespace().any(|w| w == "--bin"),
                    "{}: `-p {segment}` needs its own `--bin`: {line}",
                    file.display()
                );
            }
        }
    }
}
