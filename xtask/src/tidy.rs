//! `cargo xtask tidy`: the checks that keep the code base a map a newcomer can read, as
//! rust-analyzer's tidy test does. Every module opens with a `//!` doc saying why it exists;
//! no comment or document points at a path outside the repository (a reader of a clone has
//! only the clone); and no two sibling modules import each other, directly or round a longer
//! circle, so each directory's modules form layers that can be read bottom-up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use syn::visit::Visit;

/// The crates whose sources tidy reads, relative to the workspace root.
const CRATES: [&str; 5] = ["app", "pipeline", "recognizer", "stages", "xtask"];

/// One thing tidy found wrong, with where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Runs every check over the workspace at `root`; prints each finding and fails if any.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let findings = check(root)?;
    for finding in &findings {
        eprintln!("{finding}");
    }
    anyhow::ensure!(
        findings.is_empty(),
        "tidy: {} finding(s); each line above names the file",
        findings.len()
    );
    eprintln!("tidy: module docs, paths and module circles are clean");
    Ok(())
}

/// Every finding of every check, file-relative to `root`, sorted.
pub fn check(root: &Path) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let files = rust_files(&src)?;
        for file in &files {
            let text = std::fs::read_to_string(file)?;
            let relative = file.strip_prefix(root).unwrap_or(file).to_path_buf();
            findings.extend(module_doc(&relative, &text));
            findings.extend(paths_leaving(&relative, Path::new(""), &comments(&text)));
        }
        findings.extend(module_circles(root, &src, &files)?);
    }
    for file in rust_files(&root.join("tests"))? {
        let text = std::fs::read_to_string(&file)?;
        let relative = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
        findings.extend(module_doc(&relative, &text));
        findings.extend(paths_leaving(&relative, Path::new(""), &comments(&text)));
    }
    for file in markdown_files(root)? {
        let text = std::fs::read_to_string(&file)?;
        let relative = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
        let lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.to_string()));
        let base = relative.parent().unwrap_or(Path::new("")).to_path_buf();
        findings.extend(paths_leaving(&relative, &base, &lines.collect::<Vec<_>>()));
    }
    findings.sort();
    Ok(findings)
}

/// A module without a `//!` first line: the reader lands in code without knowing why it exists.
fn module_doc(file: &Path, text: &str) -> Option<Finding> {
    let first = text.lines().find(|line| !line.trim().is_empty())?;
    (!first.starts_with("//!")).then(|| Finding {
        file: file.to_path_buf(),
        line: 1,
        message: "module has no `//!` doc saying why it exists".into(),
    })
}

/// The comment lines of a Rust file (`//`, `///`, `//!`), numbered from 1.
fn comments(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with("//"))
        .map(|(i, line)| (i + 1, line.to_string()))
        .collect()
}

/// Relative paths (starting `..`) in `lines` of `file` that climb out of the repository when read from
/// `base`: a Markdown file's own folder (its links are relative to it), the repository root for
/// code comments (which name files as the README does).
fn paths_leaving(file: &Path, base: &Path, lines: &[(usize, String)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (number, line) in lines {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("../") {
            let start = rest[..at]
                .rfind(|c: char| !(c.is_alphanumeric() || "._/-".contains(c)))
                .map_or(0, |i| i + 1);
            let end = rest[at..]
                .find(|c: char| !(c.is_alphanumeric() || "._/-".contains(c)))
                .map_or(rest.len(), |i| at + i);
            let candidate = &rest[start..end];
            if candidate.starts_with("../") && leaves(base, candidate) {
                findings.push(Finding {
                    file: file.to_path_buf(),
                    line: *number,
                    message: format!(
                        "`{candidate}` points outside the repository; a clone does not have it"
                    ),
                });
            }
            rest = &rest[end.max(at + 3)..];
        }
    }
    findings
}

/// Whether `relative`, read from `base` (a folder relative to the root), climbs out of the root.
fn leaves(base: &Path, relative: &str) -> bool {
    let mut depth = base.components().count() as isize;
    for component in Path::new(relative).components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if dir.is_dir() {
        walk(dir, &mut |path| {
            if path.extension().is_some_and(|e| e == "rs") {
                files.push(path.to_path_buf());
            }
        })?;
    }
    files.sort();
    Ok(files)
}

/// The Markdown files the repository documents itself with (not build outputs or vendored trees).
fn markdown_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    for dir in ["docs", "configs", ".github"] {
        if root.join(dir).is_dir() {
            walk(&root.join(dir), &mut |path| {
                if path.extension().is_some_and(|e| e == "md") {
                    files.push(path.to_path_buf());
                }
            })?;
        }
    }
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, visit)?;
        } else {
            visit(&path);
        }
    }
    Ok(())
}

/// A module's path inside its crate: `["infer", "page"]`; the crate root is `[]`.
type ModulePath = Vec<String>;

/// What one module file declares and mentions.
struct ModuleFile {
    file: PathBuf,
    /// Names its `use` items bring in (re-exported or not: a child module sees them through
    /// `super::`), and the module path each comes from.
    imports: BTreeMap<String, ModulePath>,
    /// Every path the non-test code mentions, made absolute where it names this crate, with
    /// the line it is on.
    mentions: Vec<(ModulePath, usize)>,
}

/// Module circles: for every directory (and the crate root), the graph of its direct child
/// modules, with an edge where code under one child mentions code under another. A strongly
/// connected part of more than one child is a circle. Test modules (`#[cfg(test)]`) are left
/// out: a test may reach anywhere.
fn module_circles(root: &Path, src: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<Finding>> {
    let mut modules: BTreeMap<ModulePath, ModuleFile> = BTreeMap::new();
    for file in files {
        let path = module_path(src, file);
        let text = std::fs::read_to_string(file)?;
        let syntax = syn::parse_file(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: {e}",
                file.display(),
                e.span().start().line,
                e.span().start().column + 1
            )
        })?;
        let mut collector = Collector {
            here: path.clone(),
            is_dir_module: is_dir_module(file),
            mentions: Vec::new(),
            imports: BTreeMap::new(),
        };
        collector.visit_file(&syntax);
        modules.insert(
            path,
            ModuleFile {
                file: file.strip_prefix(root).unwrap_or(file).to_path_buf(),
                imports: collector.imports,
                mentions: collector.mentions,
            },
        );
    }
    // Edges between sibling subtrees, with one example mention each.
    let mut edges: BTreeMap<(ModulePath, String, String), (PathBuf, usize, String)> =
        BTreeMap::new();
    for (from, module) in &modules {
        for (mentioned, line) in &module.mentions {
            let Some(to) = resolve(&modules, mentioned) else {
                continue;
            };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // a module and its own descendant or ancestor
            }
            let parent = from[..common].to_vec();
            let key = (parent, from[common].clone(), to[common].clone());
            edges.entry(key).or_insert_with(|| {
                (
                    module.file.clone(),
                    *line,
                    format!("crate::{}", mentioned.join("::")),
                )
            });
        }
    }
    let mut by_parent: BTreeMap<&ModulePath, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for (parent, from, to) in edges.keys() {
        by_parent
            .entry(parent)
            .or_default()
            .entry(from)
            .or_default()
            .insert(to);
    }
    let mut findings = Vec::new();
    for (parent, graph) in by_parent {
        for circle in strongly_connected(&graph) {
            let members: BTreeSet<&str> = circle.iter().copied().collect();
            let mut examples = Vec::new();
            for ((p, from, to), (file, line, path)) in &edges {
                if p == parent && members.contains(from.as_str()) && members.contains(to.as_str()) {
                    examples.push(format!(
                        "{from} -> {to} ({}:{line} `{path}`)",
                        file.display()
                    ));
                }
            }
            let (file, line, _) = edges
                .iter()
                .find(|((p, from, _), _)| p == parent && members.contains(from.as_str()))
                .map(|(_, example)| example.clone())
                .expect("a circle has an edge");
            let scope = if parent.is_empty() {
                "the crate root".to_string()
            } else {
                format!("`{}`", parent.join("::"))
            };
            findings.push(Finding {
                file,
                line,
                message: format!(
                    "module circle under {scope}: {}; move what both need below them",
                    examples.join(", ")
                ),
            });
        }
    }
    Ok(findings)
}

/// The module a mention lands in: the longest prefix that is a module, followed through that
/// module's `use` items, so that `crate::infer::PageTranscriber` counts as `infer::page`.
fn resolve(modules: &BTreeMap<ModulePath, ModuleFile>, mentioned: &[String]) -> Option<ModulePath> {
    let mut path = mentioned.to_vec();
    for _ in 0..8 {
        let prefix = (0..=path.len())
            .rev()
            .find(|&n| modules.contains_key(&path[..n]))?;
        let module = &modules[&path[..prefix]];
        match path.get(prefix).and_then(|name| module.imports.get(name)) {
            Some(source) if source.as_slice() != &path[..prefix] => {
                let mut next = source.clone();
                next.extend_from_slice(&path[prefix..]);
                path = next;
            }
            _ => return Some(path[..prefix].to_vec()),
        }
    }
    None
}

/// Tarjan's strongly connected components with more than one member.
fn strongly_connected<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<&'a str>>,
    }
    fn connect<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        state: &mut State<'a>,
    ) {
        let index = state.index.len();
        state.index.insert(node, index);
        state.low.insert(node, index);
        state.stack.push(node);
        state.on_stack.insert(node);
        for &next in graph.get(node).into_iter().flatten() {
            if !state.index.contains_key(next) {
                connect(next, graph, state);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member);
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for &node in graph.keys() {
        if !state.index.contains_key(node) {
            connect(node, graph, &mut state);
        }
    }
    state.found
}

fn is_dir_module(file: &Path) -> bool {
    matches!(
        file.file_name().and_then(|n| n.to_str()),
        Some("mod.rs" | "lib.rs" | "main.rs")
    )
}

fn module_path(src: &Path, file: &Path) -> ModulePath {
    let relative = file.strip_prefix(src).unwrap_or(file);
    let mut path: ModulePath = relative
        .components()
        .filter_map(|c| c.as_os_str().to_str().map(str::to_string))
        .collect();
    let last = path.pop().unwrap_or_default();
    if !is_dir_module(file) {
        path.push(last.trim_end_matches(".rs").to_string());
    }
    path
}

/// Walks one file's syntax, recording the crate paths it mentions and its `pub use`s.
struct Collector {
    here: ModulePath,
    is_dir_module: bool,
    mentions: Vec<(ModulePath, usize)>,
    imports: BTreeMap<String, ModulePath>,
}

impl Collector {
    /// `segments` made absolute inside this crate, or `None` for another crate or a local name.
    fn absolute(&self, segments: &[String]) -> Option<ModulePath> {
        let (first, rest) = segments.split_first()?;
        // In `infer/page.rs` the module itself is `infer::page`, and `super` is `infer`; in
        // `infer/mod.rs` the module is `infer`, and `super` is the crate root.
        let mut base = self.here.clone();
        let mut rest = rest;
        match first.as_str() {
            "crate" => base.clear(),
            "self" => {}
            "super" => {
                base.pop();
                while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
                    base.pop();
                    rest = tail;
                }
            }
            _ => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn record(&mut self, segments: &[String], line: usize) {
        if let Some(path) = self.absolute(segments) {
            self.mentions.push((path, line));
        }
    }

    /// Flattens a use tree into full paths (a glob ends at its module).
    fn use_paths(
        tree: &syn::UseTree,
        prefix: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, String)>,
    ) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                Self::use_paths(&p.tree, prefix, out);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                full.push(n.ident.to_string());
                out.push((full, n.ident.to_string()));
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                out.push((full, r.rename.to_string()));
            }
            syn::UseTree::Glob(_) => out.push((prefix.clone(), String::new())),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    Self::use_paths(item, prefix, out);
                }
            }
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_cfg_test(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_cfg_test(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if is_cfg_test(&item.attrs) {
            return;
        }
        let line = item.use_token.span.start().line;
        let mut paths = Vec::new();
        Self::use_paths(&item.tree, &mut Vec::new(), &mut paths);
        for (segments, name) in paths {
            // In a directory module a bare first segment may be a child module (`pub use
            // page::PageTranscriber`, as 2018-edition paths allow).
            let absolute = self.absolute(&segments).or_else(|| {
                self.is_dir_module.then(|| {
                    let mut path = self.here.clone();
                    path.extend(segments.iter().cloned());
                    path
                })
            });
            let Some(absolute) = absolute else { continue };
            if !name.is_empty() {
                self.imports
                    .insert(name, absolute[..absolute.len() - 1].to_vec());
            }
            self.mentions.push((absolute, line));
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = path
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        self.record(&segments, line);
        syn::visit::visit_path(self, path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_circle_between_sibling_directories_is_found_through_a_reexport() {
        let dir = workspace(&[
            ("x/src/lib.rs", "//! x\npub mod a;\npub mod b;\n"),
            (
                "x/src/a/mod.rs",
                "//! a\nmod inner;\npub use inner::Thing;\n",
            ),
            (
                "x/src/a/inner.rs",
                "//! inner\npub struct Thing(crate::b::Other);\n",
            ),
            (
                "x/src/b.rs",
                "//! b\npub struct Other;\npub fn f(_: crate::a::Thing) {}\n",
            ),
        ]);
        let src = dir.path().join("x/src");
        let files = rust_files(&src).unwrap();
        let findings = module_circles(dir.path(), &src, &files).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].message.contains("a -> b"), "{}", findings[0]);
        assert!(findings[0].message.contains("b -> a"), "{}", findings[0]);
    }

    #[test]
    fn layers_and_test_modules_are_not_circles() {
        let dir = workspace(&[
            ("x/src/lib.rs", "//! x\npub mod a;\npub mod b;\n"),
            (
                "x/src/a.rs",
                "//! a\npub struct Thing(pub crate::b::Other);\n",
            ),
            (
                "x/src/b.rs",
                "//! b\npub struct Other;\n#[cfg(test)]\nmod tests { use crate::a::Thing; }\n",
            ),
        ]);
        let src = dir.path().join("x/src");
        let files = rust_files(&src).unwrap();
        assert!(module_circles(dir.path(), &src, &files).unwrap().is_empty());
    }

    #[test]
    fn a_comment_path_out_of_the_repository_is_found_and_one_inside_is_not() {
        let lines = vec![
            (3, "see [notes](../../elsewhere/notes.md)".to_string()),
            (4, "see [readme](../README.md)".to_string()),
        ];
        let docs = Path::new("docs");
        let findings = paths_leaving(Path::new("docs/a.md"), docs, &lines);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].line, 3);
        assert!(findings[0].message.contains("../../elsewhere/notes.md"));
        let findings = paths_leaving(Path::new("README.md"), Path::new(""), &lines);
        assert_eq!(findings.len(), 2, "{findings:?}");
    }

    #[test]
    fn a_module_without_a_doc_is_found() {
        assert!(module_doc(Path::new("a.rs"), "use x;\n").is_some());
        assert!(module_doc(Path::new("a.rs"), "\n//! Why.\nuse x;\n").is_none());
    }
}
