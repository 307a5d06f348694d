//! The shape of the code: no two source files of a crate import each other,
//! directly or through others (crates/*/src, bench/src, the facade's src).
//!
//! A file depends on another when it names a path into it: `crate::a::b`,
//! `$crate::a` (macros), `super::x`, `self::sub`, or an item the crate root
//! re-exports (`crate::Connection` is `connection.rs` when the root says
//! `pub use connection::{Connection, ..}`). A child module's use of its
//! parent (`super::Lifecycle` in `lifecycle/input.rs`) is an edge too, so a
//! parent that names items of its child and a child that names its parent
//! form a circle like any other. Comments are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One crate's source files as modules: `a::b` → the file.
struct Crate {
    root: PathBuf,
    /// Module path (`""` for the root) → file.
    modules: BTreeMap<String, PathBuf>,
    /// Item re-exported by the root → the module path it comes from.
    reexports: BTreeMap<String, String>,
}

fn module_path(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    match stem {
        "lib" | "main" if parts.is_empty() => {}
        "mod" => {}
        s => parts.push(s.to_owned()),
    }
    Some(parts.join("::"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's code without comments (line comments and block comments).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c as char);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1] as char);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
            out.push('"');
            i += 1;
            continue;
        }
        if c == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('"' or '\n'): copy it through.
            let end = b[i + 1..]
                .iter()
                .position(|&x| x == b'\'')
                .map_or(b.len(), |p| i + 1 + p + 1);
            out.push_str("' '");
            i = end.max(i + 1);
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
            continue;
        }
        out.push(c as char);
        i += 1;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts with `head::` in `code`, as its segments
/// (`use crate::{a::b, c}` gives `a::b` and `c`).
fn paths_after(code: &str, head: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let needle = format!("{head}::");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        let before = code[..start].chars().last();
        if before.is_some_and(|c| is_ident(c) || c == ':')
            && !(head == "crate" && before == Some('$'))
        {
            continue;
        }
        expand(&code[from..], &mut Vec::new(), &mut found);
    }
    found
}

/// Reads one path (with `{..}` groups) at the start of `s` after a `::`.
fn expand(s: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut item_start = 0;
        let bytes: Vec<char> = group.chars().collect();
        let mut items = Vec::new();
        for (i, &c) in bytes.iter().enumerate() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(bytes[item_start..i].iter().collect::<String>());
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(bytes[item_start..i].iter().collect::<String>());
                    item_start = i + 1;
                }
                _ => {}
            }
        }
        for item in items {
            let item = item.trim();
            if item.is_empty() || item == "self" {
                if item == "self" {
                    out.push(prefix.clone());
                }
                continue;
            }
            let mut p = prefix.clone();
            expand(item, &mut p, out);
        }
        return;
    }
    let ident: String = s.chars().take_while(|&c| is_ident(c)).collect();
    if ident.is_empty() {
        if !prefix.is_empty() {
            out.push(prefix.clone());
        }
        return;
    }
    prefix.push(ident.clone());
    let rest = &s[ident.len()..];
    if let Some(next) = rest.strip_prefix("::") {
        expand(next, prefix, out);
    } else {
        out.push(prefix.clone());
    }
}

impl Crate {
    fn load(src: &Path) -> Crate {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let mut modules = BTreeMap::new();
        for f in files {
            if let Some(m) = module_path(src, &f) {
                modules.insert(m, f);
            }
        }
        let mut krate = Crate {
            root: src.to_owned(),
            modules,
            reexports: BTreeMap::new(),
        };
        if let Some(root) = krate.modules.get("").cloned() {
            let code = code_of(&std::fs::read_to_string(root).unwrap());
            for stmt in code.split(';') {
                let stmt = stmt.trim();
                let Some(rest) = stmt
                    .strip_prefix("pub use ")
                    .or_else(|| stmt.strip_prefix("pub(crate) use "))
                else {
                    continue;
                };
                let mut paths = Vec::new();
                expand(rest, &mut Vec::new(), &mut paths);
                for p in paths {
                    let Some(name) = p.last() else { continue };
                    let name = name.clone();
                    let module = krate.deepest(&p[..p.len() - 1]);
                    if let Some(m) = module {
                        krate.reexports.insert(name, m);
                    }
                }
            }
        }
        krate
    }

    /// The deepest module of `segments` that is a file of this crate.
    fn deepest(&self, segments: &[String]) -> Option<String> {
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|m| self.modules.contains_key(m))
    }

    /// The module a crate-absolute path lands in.
    fn resolve(&self, segments: &[String]) -> Option<String> {
        if let Some(m) = self.deepest(segments) {
            return Some(m);
        }
        // `crate::Name` through the root's re-exports.
        segments
            .first()
            .and_then(|s| self.reexports.get(s))
            .cloned()
    }

    /// The import graph: module → modules it names.
    fn graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut graph = BTreeMap::new();
        for (module, file) in &self.modules {
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            let mut deps = BTreeSet::new();
            let mut add = |target: Option<String>| {
                if let Some(t) = target {
                    if &t != module && !t.is_empty() {
                        deps.insert(t);
                    }
                }
            };
            for p in paths_after(&code, "crate") {
                add(self.resolve(&p));
            }
            let here: Vec<String> = if module.is_empty() {
                Vec::new()
            } else {
                module.split("::").map(str::to_owned).collect()
            };
            // `self::x` inside a mod.rs names its child; elsewhere an item of
            // the same file.
            let is_dir_module = file.ends_with("mod.rs") || module.is_empty();
            if is_dir_module {
                for p in paths_after(&code, "self") {
                    let mut abs = here.clone();
                    abs.extend(p);
                    add(self.deepest(&abs).filter(|m| m != module));
                }
            }
            // A child module named without `self::` (`output::X` in a mod.rs).
            let prefix = if module.is_empty() {
                String::new()
            } else {
                format!("{module}::")
            };
            for child in self.modules.keys() {
                let Some(name) = child.strip_prefix(&prefix) else {
                    continue;
                };
                if name.is_empty() || name.contains("::") {
                    continue;
                }
                for p in paths_after(&code, name) {
                    let mut abs = here.clone();
                    abs.push(name.to_owned());
                    abs.extend(p);
                    add(self.deepest(&abs));
                }
            }
            for p in paths_after(&code, "super") {
                // `super` is the parent module, for a mod.rs and a file alike.
                let mut base = here[..here.len().saturating_sub(1)].to_vec();
                let mut rest = p.as_slice();
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                let mut abs = base.clone();
                abs.extend(rest.iter().cloned());
                let target = self.deepest(&abs).or_else(|| {
                    (!base.is_empty())
                        .then(|| base.join("::"))
                        .filter(|m| self.modules.contains_key(m))
                });
                add(target);
            }
            graph.insert(module.clone(), deps);
        }
        graph
    }
}

/// The strongly connected components with more than one module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm, iteratively small enough to recurse.
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn source_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("src"), root.join("bench/src")];
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    dirs.extend(crates);
    dirs
}

#[test]
fn no_source_file_imports_itself_through_others() {
    let mut report = String::new();
    for dir in source_dirs() {
        let krate = Crate::load(&dir);
        for comp in cycles(&krate.graph()) {
            report.push_str(&format!(
                "{}: {} modules import each other: {}\n",
                krate.root.display(),
                comp.len(),
                comp.join(", ")
            ));
        }
    }
    assert!(report.is_empty(), "import circles:\n{report}");
}

#[test]
fn the_checker_sees_a_circle_and_its_absence() {
    let dir = std::env::temp_dir().join(format!("lubdub-arch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src/life")).unwrap();
    let write = |p: &str, s: &str| std::fs::write(dir.join(p), s).unwrap();
    write(
        "src/lib.rs",
        "mod a;\nmod b;\nmod life;\npub use a::Alpha;\n",
    );
    // a → b through the root's re-export of `Beta`? No: b → a via `crate::Alpha`.
    write(
        "src/a.rs",
        "use crate::b::{Beta, other::X};\npub struct Alpha;\n",
    );
    write(
        "src/b.rs",
        "// use crate::a; (a comment)\npub fn f() -> crate::Alpha { todo!() }\n",
    );
    write("src/life/mod.rs", "mod input;\npub struct Life;\n");
    write("src/life/output.rs", "pub const N: u8 = 1;\n");
    write(
        "src/life/input.rs",
        "use super::Life;\nuse crate::a::Alpha;\n",
    );
    let krate = Crate::load(&dir.join("src"));
    let graph = krate.graph();
    assert_eq!(graph["a"], BTreeSet::from(["b".to_owned()]));
    assert_eq!(graph["b"], BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        graph["life::input"],
        BTreeSet::from(["a".to_owned(), "life".to_owned()])
    );
    assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "b".to_owned()]]);
    // A parent naming its child bare, and the child naming the parent.
    write(
        "src/life/mod.rs",
        "mod input;\nmod output;\npub struct Life(u8);\nfn n() -> u8 { output::N }\n",
    );
    write(
        "src/life/output.rs",
        "use super::Life;\npub const N: u8 = 1;\n",
    );
    let graph = Crate::load(&dir.join("src")).graph();
    assert_eq!(graph["life"], BTreeSet::from(["life::output".to_owned()]));
    assert!(cycles(&graph).contains(&vec!["life".to_owned(), "life::output".to_owned()]));
    write(
        "src/life/mod.rs",
        "mod input;\nmod output;\npub struct Life;\n",
    );
    write("src/b.rs", "// use crate::a;\npub struct Beta;\n");
    let graph = Crate::load(&dir.join("src")).graph();
    assert!(cycles(&graph).is_empty(), "{graph:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
