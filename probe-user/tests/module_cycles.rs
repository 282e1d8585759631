//! Data flows one way through probe-user: no two modules import each other, directly or
//! around a loop. Checked on the source text (no root, no build of the BPF side):
//!
//! - between top-level modules (`tracker`, `report`, `export` ...): an edge A → B for every
//!   `crate::B` path in A's files (in `use` trees and in code);
//! - between the files of one directory module (`tracker/observe.rs` → `tracker/facts.rs`): an
//!   edge for every `super::sibling` or `crate::dir::sibling` path. Uses of the parent
//!   (`super::Item` defined or re-exported in `mod.rs`) are not edges: a module may always use
//!   what its parent declares.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// `src/a/b.rs` → ["a", "b"]; `src/a/mod.rs` → ["a"]; `src/lib.rs` → [].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and string literals (their text is not code).
fn code_only(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('"', '\n'); lifetimes ('a) are left alone.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Every path that starts with `root::` in the code, as segments after the root: plain paths
/// (`crate::a::b`) and `use` trees (`crate::{a, b::{c, d}}` gives [a], [b, c], [b, d]).
fn paths_after(code: &str, root: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let needle = format!("{root}::");
    let mut from = 0;
    while let Some(pos) = code[from..].find(&needle) {
        let start = from + pos;
        from = start + needle.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // part of another path (`foo::crate::`) or identifier
        }
        tree(&code[from..], Vec::new(), &mut out);
    }
    out
}

/// Parse one use tree at the start of `s`, prefixed by `prefix`.
fn tree(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('{') {
        // Split the group at depth-0 commas.
        let mut depth = 0;
        let mut part_start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    tree(&inner[part_start..i], prefix.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    tree(&inner[part_start..i], prefix.clone(), out);
                    part_start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let ident: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        if !prefix.is_empty() {
            out.push(prefix);
        }
        return;
    }
    let mut p = prefix;
    p.push(ident.clone());
    let rest = &s[ident.len()..];
    match rest.strip_prefix("::") {
        Some(more) => tree(more, p, out),
        None => out.push(p),
    }
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let pos = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[pos..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str())
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let top_modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(&src, f).first().cloned())
        .collect();
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Per directory module: edges between its files.
    let mut inner: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let m = module_path(&src, f);
        let Some(first) = m.first() else { continue };
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for p in paths_after(&code, "crate") {
            if top_modules.contains(&p[0]) && p[0] != *first {
                top.entry(first.clone()).or_default().insert(p[0].clone());
            }
        }
        // Sibling edges inside a directory module (files one level below it).
        if m.len() == 2 {
            let (dir, me) = (&m[0], &m[1]);
            let siblings: BTreeSet<String> = files
                .iter()
                .map(|g| module_path(&src, g))
                .filter(|g| g.len() == 2 && g[0] == *dir)
                .map(|g| g[1].clone())
                .collect();
            let mut targets: Vec<String> = paths_after(&code, "super")
                .into_iter()
                .map(|p| p[0].clone())
                .collect();
            targets.extend(
                paths_after(&code, "crate")
                    .into_iter()
                    .filter(|p| p.len() > 1 && p[0] == *dir)
                    .map(|p| p[1].clone()),
            );
            for t in targets {
                if siblings.contains(&t) && t != *me {
                    inner
                        .entry(dir.clone())
                        .or_default()
                        .entry(me.clone())
                        .or_default()
                        .insert(t);
                }
            }
        }
    }
    assert!(
        top.values().map(BTreeSet::len).sum::<usize>() > 20,
        "the checker found too few imports to be reading the code: {top:?}"
    );
    if let Some(c) = find_cycle(&top) {
        panic!("modules import each other in a loop: {}", c.join(" → "));
    }
    for (dir, graph) in &inner {
        if let Some(c) = find_cycle(graph) {
            panic!(
                "files of {dir}/ import each other in a loop: {}",
                c.join(" → ")
            );
        }
    }
}

#[test]
fn the_checker_sees_use_trees_and_cycles() {
    let code = code_only(
        "use crate::{a, b::{c, d::E}, f::G};\nfn x() { crate::h::i(); let s = \"crate::z\"; }\n// crate::y",
    );
    let heads: Vec<String> = paths_after(&code, "crate")
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(heads, ["a", "b::c", "b::d::E", "f::G", "h::i"]);
    let g: BTreeMap<String, BTreeSet<String>> = BTreeMap::from([
        ("a".into(), BTreeSet::from(["b".into()])),
        ("b".into(), BTreeSet::from(["c".into()])),
        ("c".into(), BTreeSet::from(["a".into()])),
    ]);
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}
