//! The user's documents keep their promises: the README's program is the crate documentation's
//! first example (which the Windows doctests compile and run under Wine), and no link in the
//! README or `docs/` points outside the repository or to a file that does not exist.
//!
//! Native only: it reads the repository's files by their Linux paths.
#![cfg(not(windows))]

use std::fs;
use std::path::{Path, PathBuf};

/// Names of documents outside the repository (spelled in pieces, so this file does not cite them).
const OUTSIDE: [&str; 3] = [
    concat!("../", "shared"),
    concat!("DESIGN", "-NOTES"),
    concat!("WRL", "-001 §"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of the first code block after the heading `heading` (a line equal to it).
fn code_block_after(lines: &[String], heading: &str) -> Vec<String> {
    let at = lines
        .iter()
        .position(|l| l == heading)
        .unwrap_or_else(|| panic!("no heading {heading:?}"));
    let open = (at..lines.len())
        .find(|&i| lines[i].starts_with("```"))
        .unwrap_or_else(|| panic!("no code block after {heading:?}"));
    let close = (open + 1..lines.len())
        .find(|&i| lines[i] == "```")
        .unwrap_or_else(|| panic!("unclosed code block after {heading:?}"));
    lines[open + 1..close].to_vec()
}

#[test]
fn the_readme_program_is_the_crate_docs_program() {
    let lib = read(&repo().join("afd-reactor/src/lib.rs"));
    let crate_docs: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l).to_string())
        .collect();
    // What rustdoc shows: the lines it hides (`# ...`) left out.
    let shown: Vec<String> = code_block_after(&crate_docs, "## A complete program")
        .into_iter()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("# ") || t == "#")
        })
        .collect();
    let readme: Vec<String> = read(&repo().join("README.md"))
        .lines()
        .map(str::to_string)
        .collect();
    let in_readme = code_block_after(&readme, "## A complete program");
    assert!(shown.len() > 40, "the program is there: {shown:?}");
    for (i, (a, b)) in in_readme.iter().zip(&shown).enumerate() {
        assert_eq!(a, b, "line {} of the README's program differs", i + 1);
    }
    assert_eq!(
        in_readme.len(),
        shown.len(),
        "the programs differ in length"
    );
}

/// Every Markdown link target in `text` (`[label](target)`), without its `#fragment`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            let target = rest[..end].split('#').next().unwrap_or_default();
            targets.push(target.to_string());
        }
    }
    targets
}

#[test]
fn links_stay_in_the_repository_and_resolve() {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    for entry in fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let root = root.canonicalize().expect("repository root");
    let mut checked = 0;
    for file in &files {
        let text = read(file);
        for outside in OUTSIDE {
            assert!(
                !text.contains(outside),
                "{} mentions {outside:?}, which is outside the repository",
                file.display()
            );
        }
        for target in link_targets(&text) {
            if target.is_empty() || target.starts_with("http://") || target.starts_with("https://")
            {
                continue;
            }
            let dir = file.parent().expect("a file has a directory");
            let resolved = dir.join(&target).canonicalize().unwrap_or_else(|e| {
                panic!("{}: link {target:?} does not resolve: {e}", file.display())
            });
            assert!(
                resolved.starts_with(&root),
                "{}: link {target:?} leaves the repository",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "the documents link each other ({checked} links)"
    );
}

#[test]
fn the_source_cites_only_the_repository() {
    let mut stack = vec![repo().join("afd-reactor")];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = read(&path);
                seen += 1;
                for outside in OUTSIDE {
                    assert!(
                        !text.contains(outside),
                        "{} cites {outside:?}, which is outside the repository",
                        path.display()
                    );
                }
            }
        }
    }
    assert!(seen > 20, "walked the crate ({seen} files)");
}
