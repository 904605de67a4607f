//! Pipeline files: YAML → typed, validated stages and the dependency graph between them.
//!
//! Every problem is reported at its line and column: syntax, unknown fields, unknown stage kinds,
//! bad params, duplicate stages or outputs, deps nobody produces, cycles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::error::{Error, InvalidOverride, SpecError};
use crate::stage::{Registry, Resources, Stage};

/// A loaded, validated pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// The pipeline file, as given.
    pub file: PathBuf,
    /// Relative paths in the pipeline resolve against this directory (the file's directory
    /// joined with its optional `workdir:`).
    pub workdir: PathBuf,
    /// The remote cache the file names (`remote: s3://bucket/prefix`), checked to be a URL of
    /// a store textrec can open.
    pub remote: Option<String>,
    /// Stages in file order.
    pub stages: Vec<Stage>,
    pub graph: Graph,
}

/// Edges between stages (by index into [`Pipeline::stages`]).
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// For each stage, the stages producing its deps.
    pub upstream: Vec<Vec<usize>>,
    /// For each stage, the stages consuming its outputs.
    pub downstream: Vec<Vec<usize>>,
    /// A topological order; ties keep file order.
    pub order: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    workdir: Option<Spanned<String>>,
    #[serde(default)]
    remote: Option<Spanned<String>>,
    stages: Spanned<Vec<RawStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    desc: Option<String>,
    #[serde(default)]
    deps: Vec<Spanned<String>>,
    #[serde(default)]
    params: Option<Spanned<Value>>,
    #[serde(default)]
    outs: Vec<Spanned<String>>,
    #[serde(default)]
    metrics: Vec<Spanned<String>>,
    #[serde(default)]
    resources: Option<Spanned<Resources>>,
}

/// Source text plus file name, to build located errors.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, at: serde_saphyr::Location, message: impl Into<String>) -> Error {
        Error::Spec(SpecError::new(
            self.file.to_path_buf(),
            self.text,
            at.line(),
            at.column(),
            message.into(),
        ))
    }

    fn yaml_error(&self, err: &serde_saphyr::Error) -> Error {
        let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        let plain = err.without_snippet().to_string();
        let suffix = format!(" at line {line}, column {column}");
        let message = plain.strip_suffix(&suffix).unwrap_or(&plain).to_owned();
        Error::Spec(SpecError::new(
            self.file.to_path_buf(),
            self.text,
            line,
            column,
            message,
        ))
    }
}

impl Pipeline {
    /// Reads and validates `file`, applying `-S STAGE.KEY=VALUE` overrides before the stage kinds
    /// check their params.
    pub fn load(file: &Path, registry: &Registry, overrides: &[String]) -> Result<Pipeline, Error> {
        let text = std::fs::read_to_string(file).map_err(|source| Error::PipelineFile {
            path: file.to_path_buf(),
            source,
        })?;
        Self::parse(file, &text, registry, overrides)
    }

    /// Like [`Pipeline::load`], from text already in memory (`file` names it in errors and
    /// anchors relative paths).
    pub fn parse(
        file: &Path,
        text: &str,
        registry: &Registry,
        overrides: &[String],
    ) -> Result<Pipeline, Error> {
        let src = Source { file, text };
        let raw: RawPipeline = serde_saphyr::from_str(text).map_err(|e| src.yaml_error(&e))?;

        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let workdir = absolute_lexical(&match &raw.workdir {
            Some(w) => base.join(&w.value),
            None => base,
        });

        if let Some(remote) = &raw.remote {
            #[cfg(feature = "remote")]
            let checked = crate::remote::check_url(&remote.value);
            #[cfg(not(feature = "remote"))]
            let checked =
                Err("this build has no remote cache (textrec-pipeline's `remote` feature)");
            checked.map_err(|reason| src.error(remote.referenced, format!("remote: {reason}")))?;
        }

        let mut stages = Vec::with_capacity(raw.stages.value.len());
        let mut kind_at = Vec::with_capacity(raw.stages.value.len());
        let mut seen_names: HashMap<String, u64> = HashMap::new();
        let mut out_spans = Vec::new();
        let mut dep_spans = Vec::new();
        for raw_stage in &raw.stages.value {
            let stage = convert_stage(&src, raw_stage, registry, &mut seen_names)?;
            out_spans.push([spans(&raw_stage.outs), spans(&raw_stage.metrics)].concat());
            dep_spans.push(spans(&raw_stage.deps));
            kind_at.push(
                raw_stage
                    .params
                    .as_ref()
                    .map_or(raw_stage.kind.referenced, |p| p.referenced),
            );
            stages.push(stage);
        }
        if stages.is_empty() {
            return Err(src.error(raw.stages.referenced, "the pipeline has no stages"));
        }

        let mut overridden = Vec::new();
        for text in overrides {
            overridden.push(apply_override(&mut stages, text)?);
        }
        for (stage, at) in stages.iter().zip(&kind_at) {
            let kind = registry
                .get(&stage.kind)
                .expect("kind checked in convert_stage");
            kind.check(stage).map_err(|invalid| {
                let after = if overridden.contains(&stage.name) {
                    " (after -S overrides)"
                } else {
                    ""
                };
                src.error(
                    *at,
                    format!(
                        "stage `{}` ({} params{after}): {invalid}",
                        stage.name, stage.kind
                    ),
                )
            })?;
        }

        // A dep spelled as an absolute path or through `..` but lying inside the workdir is
        // rewritten to its workdir-relative form, so it meets the outputs it names in the graph.
        for stage in &mut stages {
            for dep in &mut stage.deps {
                if let Ok(inside) = resolve_in(&workdir, dep).strip_prefix(&workdir) {
                    let parts: Vec<_> = inside.iter().map(|p| p.to_string_lossy()).collect();
                    if !parts.is_empty() {
                        *dep = parts.join("/");
                    }
                }
            }
        }
        check_outputs_disjoint(&src, &stages, &out_spans)?;
        check_outputs_spare_engine_files(&src, &workdir, &stages, &out_spans)?;
        let graph = build_graph(&src, &workdir, &stages, &dep_spans)?;
        Ok(Pipeline {
            file: file.to_path_buf(),
            workdir,
            remote: raw.remote.map(|r| r.value),
            stages,
            graph,
        })
    }

    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// Where the lock file of this pipeline lives: beside it, `NAME.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.file.with_extension("lock")
    }

    /// The absolute path of a workdir-relative pipeline path.
    pub fn resolve(&self, rel: &str) -> PathBuf {
        resolve_in(&self.workdir, rel)
    }

    /// The stages `start` depends on, directly or not (excluding it), in topological order.
    pub fn upstream_closure(&self, start: usize) -> Vec<usize> {
        self.closure(self.graph.upstream[start].clone(), &self.graph.upstream)
    }

    /// The stages reachable downstream from `start` (including it), in topological order.
    pub fn downstream_closure(&self, start: usize) -> Vec<usize> {
        self.closure(vec![start], &self.graph.downstream)
    }

    /// `seeds` and everything reachable from them along `edges`, in topological order.
    fn closure(&self, seeds: Vec<usize>, edges: &[Vec<usize>]) -> Vec<usize> {
        let mut marked = vec![false; self.stages.len()];
        let mut stack = seeds;
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut marked[i], true) {
                stack.extend(&edges[i]);
            }
        }
        self.graph
            .order
            .iter()
            .copied()
            .filter(|&i| marked[i])
            .collect()
    }
}

fn spans(items: &[Spanned<String>]) -> Vec<serde_saphyr::Location> {
    items.iter().map(|item| item.referenced).collect()
}

fn convert_stage(
    src: &Source<'_>,
    raw: &RawStage,
    registry: &Registry,
    seen_names: &mut HashMap<String, u64>,
) -> Result<Stage, Error> {
    let name = &raw.name.value;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(src.error(
            raw.name.referenced,
            format!("invalid stage name `{name}`: use letters, digits, `-` and `_`"),
        ));
    }
    if let Some(first) = seen_names.insert(name.clone(), raw.name.referenced.line()) {
        return Err(src.error(
            raw.name.referenced,
            format!("duplicate stage name `{name}` (first defined at line {first})"),
        ));
    }
    if registry.get(&raw.kind.value).is_none() {
        let known: Vec<_> = registry.names().collect();
        return Err(src.error(
            raw.kind.referenced,
            format!(
                "unknown stage kind `{}`; known kinds: {}",
                raw.kind.value,
                known.join(", ")
            ),
        ));
    }
    let params = match &raw.params {
        None => Value::Object(Default::default()),
        Some(p) if p.value.is_object() => p.value.clone(),
        Some(p) if p.value.is_null() => Value::Object(Default::default()),
        Some(p) => {
            return Err(src.error(
                p.referenced,
                "`params` must be a mapping of names to values",
            ));
        }
    };
    let path_list = |items: &[Spanned<String>], what: PathRole| -> Result<Vec<String>, Error> {
        let mut paths = Vec::with_capacity(items.len());
        for item in items {
            let path = normalize_path(&item.value, what)
                .map_err(|m| src.error(item.referenced, m.to_string()))?;
            if paths.contains(&path) {
                return Err(src.error(item.referenced, format!("`{path}` is listed twice")));
            }
            paths.push(path);
        }
        Ok(paths)
    };
    if let Some(resources) = &raw.resources {
        resources
            .value
            .check()
            .map_err(|reason| src.error(resources.referenced, format!("resources: {reason}")))?;
    }
    Ok(Stage {
        name: name.clone(),
        kind: raw.kind.value.clone(),
        desc: raw.desc.clone(),
        deps: path_list(&raw.deps, PathRole::Dep)?,
        outs: path_list(&raw.outs, PathRole::Out)?,
        metrics: path_list(&raw.metrics, PathRole::Out)?,
        params,
        resources: raw.resources.as_ref().map(|r| r.value.clone()),
        line: raw.name.referenced.line(),
        column: raw.name.referenced.column(),
    })
}

/// `rel` resolved lexically against `workdir`, so a path that climbs out with `..`
/// works before the workdir exists.
fn resolve_in(workdir: &Path, rel: &str) -> PathBuf {
    absolute_lexical(&workdir.join(rel))
}

/// An absolute path with `.` and `..` resolved lexically (the directory may not exist yet).
fn absolute_lexical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum PathRole {
    Dep,
    Out,
}

/// Why a path in the pipeline cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPath {
    #[error("empty path")]
    Empty,
    #[error("output `{0}` must be relative to the pipeline's workdir")]
    AbsoluteOutput(String),
    #[error("output `{0}` must stay inside the pipeline's workdir")]
    OutputOutsideWorkdir(String),
    #[error("`{0}` climbs above the filesystem root")]
    AboveRoot(String),
    #[error("`{0}` names the workdir itself; name a file or directory in it")]
    Workdir(String),
    #[error("`{0}` is inside .textrec/, which belongs to the engine")]
    EngineDirectory(String),
}

/// Lexically normalises a pipeline path: `./a//b/` → `a/b`. Outputs must stay inside the workdir
/// and out of the engine's own `.textrec/` directory; deps may point anywhere.
fn normalize_path(path: &str, role: PathRole) -> Result<String, InvalidPath> {
    if path.trim().is_empty() {
        return Err(InvalidPath::Empty);
    }
    let absolute = path.starts_with('/');
    if absolute && role == PathRole::Out {
        return Err(InvalidPath::AbsoluteOutput(path.into()));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if role == PathRole::Out => {
                return Err(InvalidPath::OutputOutsideWorkdir(path.into()));
            }
            ".." if absolute => return Err(InvalidPath::AboveRoot(path.into())),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Err(InvalidPath::Workdir(path.into()));
    }
    if role == PathRole::Out && parts[0] == ".textrec" {
        return Err(InvalidPath::EngineDirectory(path.into()));
    }
    let joined = parts.join("/");
    Ok(if absolute {
        format!("/{joined}")
    } else {
        joined
    })
}

/// A dep path as the engine stores it (`./a//b/` → `a/b`), so that a stage kind can match a path
/// named in its params against its declared deps.
pub fn normalize_dep(path: &str) -> Result<String, InvalidPath> {
    normalize_path(path, PathRole::Dep)
}

/// True when one path is the other or contains it.
pub(crate) fn paths_overlap(a: &str, b: &str) -> bool {
    let nested = |outer: &str, inner: &str| {
        inner.len() > outer.len()
            && inner.starts_with(outer)
            && inner.as_bytes()[outer.len()] == b'/'
    };
    a == b || nested(a, b) || nested(b, a)
}

fn check_outputs_disjoint(
    src: &Source<'_>,
    stages: &[Stage],
    spans: &[Vec<serde_saphyr::Location>],
) -> Result<(), Error> {
    let mut claimed: Vec<(&str, &str)> = Vec::new();
    for (stage, spans) in stages.iter().zip(spans) {
        for (out, at) in stage.all_outs().zip(spans) {
            if let Some((owner, other)) = claimed.iter().find(|(_, o)| paths_overlap(o, out)) {
                let what = if *other == out.as_str() {
                    format!("output `{out}` is already claimed by stage `{owner}`")
                } else {
                    format!("output `{out}` overlaps output `{other}` of stage `{owner}`")
                };
                return Err(src.error(*at, what));
            }
            claimed.push((&stage.name, out));
        }
    }
    Ok(())
}

/// Outputs are replaced wholesale; one that covered the pipeline file or its lock would destroy it.
fn check_outputs_spare_engine_files(
    src: &Source<'_>,
    workdir: &Path,
    stages: &[Stage],
    spans: &[Vec<serde_saphyr::Location>],
) -> Result<(), Error> {
    let file = absolute_lexical(src.file);
    if file.extension().is_some_and(|e| e == "lock") {
        return Err(src.error(
            serde_saphyr::Location::UNKNOWN,
            "a pipeline file must not end in `.lock`: that name is taken by its lock file",
        ));
    }
    let engine_files = [
        (file.clone(), "the pipeline file"),
        (file.with_extension("lock"), "the pipeline's lock file"),
    ];
    for (stage, spans) in stages.iter().zip(spans) {
        for (out, at) in stage.all_outs().zip(spans) {
            let target = resolve_in(workdir, out);
            if let Some((_, what)) = engine_files.iter().find(|(f, _)| f.starts_with(&target)) {
                return Err(src.error(*at, format!("output `{out}` would overwrite {what}")));
            }
        }
    }
    Ok(())
}

fn build_graph(
    src: &Source<'_>,
    workdir: &Path,
    stages: &[Stage],
    dep_spans: &[Vec<serde_saphyr::Location>],
) -> Result<Graph, Error> {
    let n = stages.len();
    let mut upstream = vec![Vec::new(); n];
    let mut downstream = vec![Vec::new(); n];
    for (i, stage) in stages.iter().enumerate() {
        for (dep, at) in stage.deps.iter().zip(&dep_spans[i]) {
            let producers: Vec<usize> = (0..n)
                .filter(|&j| stages[j].all_outs().any(|o| paths_overlap(o, dep)))
                .collect();
            if producers.contains(&i) {
                return Err(src.error(
                    *at,
                    format!(
                        "dependency cycle: stage `{}` depends on its own output `{dep}`",
                        stage.name
                    ),
                ));
            }
            if producers.is_empty() && !resolve_in(workdir, dep).exists() {
                return Err(src.error(
                    *at,
                    format!(
                        "dependency `{dep}` does not exist (looked in {}) and no stage produces it",
                        workdir.display()
                    ),
                ));
            }
            for j in producers {
                if !upstream[i].contains(&j) {
                    upstream[i].push(j);
                    downstream[j].push(i);
                }
            }
        }
    }
    if let Some(mut cycle) = find_cycle(&upstream) {
        // Start the loop at the stage that comes first in the file.
        cycle.pop();
        let first_at = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
        cycle.rotate_left(first_at);
        cycle.push(cycle[0]);
        let names: Vec<&str> = cycle.iter().map(|&i| stages[i].name.as_str()).collect();
        let first = &stages[cycle[0]];
        return Err(Error::Spec(SpecError::new(
            src.file.to_path_buf(),
            src.text,
            first.line,
            first.column,
            format!("dependency cycle: {}", names.join(" -> ")),
        )));
    }
    let order = topological_order(&upstream, &downstream);
    Ok(Graph {
        upstream,
        downstream,
        order,
    })
}

/// Returns a cycle as `[a, b, ..., a]` (following "depends on" edges reversed: producer first).
fn find_cycle(upstream: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        up: &[Vec<usize>],
        marks: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[i] = Mark::Active;
        path.push(i);
        for &j in &up[i] {
            match marks[j] {
                Mark::Active => {
                    let start = path
                        .iter()
                        .position(|&p| p == j)
                        .expect("active node is on the path");
                    let mut cycle: Vec<usize> = path[start..].to_vec();
                    cycle.reverse();
                    cycle.push(i);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(j, up, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; upstream.len()];
    (0..upstream.len()).find_map(|i| {
        if marks[i] == Mark::New {
            visit(i, upstream, &mut marks, &mut Vec::new())
        } else {
            None
        }
    })
}

fn topological_order(upstream: &[Vec<usize>], downstream: &[Vec<usize>]) -> Vec<usize> {
    let mut waiting: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut ready: std::collections::BTreeSet<usize> =
        (0..waiting.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(waiting.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &downstream[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}

/// Applies `STAGE.KEY[.KEY...]=VALUE`. The value is read as a YAML scalar and must have the type
/// of the value it replaces (a string param takes any text); new keys are checked by the kind.
/// Returns the name of the stage it changed.
fn apply_override(stages: &mut [Stage], text: &str) -> Result<String, Error> {
    let fail = |reason: InvalidOverride| Error::Override {
        text: text.to_owned(),
        reason,
    };
    let (target, raw_value) = text
        .split_once('=')
        .ok_or_else(|| fail(InvalidOverride::Syntax))?;
    let mut keys = target.split('.');
    let stage_name = keys.next().unwrap_or_default();
    let keys: Vec<&str> = keys.collect();
    if keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
        return Err(fail(InvalidOverride::Syntax));
    }
    let stage = stages
        .iter_mut()
        .find(|s| s.name == stage_name)
        .ok_or_else(|| fail(InvalidOverride::NoStage(stage_name.to_owned())))?;
    set_param(&mut stage.params, &keys, raw_value).map_err(fail)?;
    Ok(stage.name.clone())
}

/// Sets `keys` in `params` to `raw` (YAML text), type-checked against the current value.
pub(crate) fn set_param(
    params: &mut Value,
    keys: &[&str],
    raw: &str,
) -> Result<(), InvalidOverride> {
    let (leaf, parents) = keys.split_last().expect("at least one key");
    let mut node = params;
    for (depth, key) in parents.iter().enumerate() {
        let path = keys[..=depth].join(".");
        let found = type_name(node);
        node = node
            .as_object_mut()
            .ok_or_else(|| InvalidOverride::NotAMapping {
                key: path.clone(),
                found,
            })?
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if !node.is_object() {
            return Err(InvalidOverride::NotAMapping {
                key: path,
                found: type_name(node),
            });
        }
    }
    let found = type_name(node);
    let map = node.as_object_mut().ok_or(InvalidOverride::NotAMapping {
        key: "params".into(),
        found,
    })?;
    let parsed: Value =
        serde_saphyr::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let new = match map.get(*leaf) {
        None | Some(Value::Null) => parsed,
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(current) => {
            let fits = match (current, &parsed) {
                (Value::Number(c), Value::Number(p)) => c.is_f64() || !p.is_f64(),
                (Value::Bool(_), Value::Bool(_))
                | (Value::Array(_), Value::Array(_))
                | (Value::Object(_), Value::Object(_)) => true,
                _ => false,
            };
            if !fits {
                return Err(InvalidOverride::WrongType {
                    key: keys.join("."),
                    expected: type_name(current),
                    given: raw.to_owned(),
                });
            }
            parsed
        }
    };
    map.insert(leaf.to_string(), new);
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overrides_keep_the_type_of_the_value_they_replace() {
        let mut params =
            json!({"epochs": 3, "lr": 0.001, "name": "x", "fast": true, "sizes": [1, 2]});
        set_param(&mut params, &["epochs"], "5").unwrap();
        set_param(&mut params, &["lr"], "2").unwrap();
        set_param(&mut params, &["name"], "1.50").unwrap();
        set_param(&mut params, &["fast"], "false").unwrap();
        set_param(&mut params, &["sizes"], "[3, 4]").unwrap();
        set_param(&mut params, &["nested", "depth"], "2").unwrap();
        assert_eq!(
            params,
            json!({"epochs": 5, "lr": 2, "name": "1.50", "fast": false, "sizes": [3, 4], "nested": {"depth": 2}})
        );
        assert!(
            set_param(&mut params, &["epochs"], "2.5")
                .unwrap_err()
                .to_string()
                .contains("an integer")
        );
        assert!(
            set_param(&mut params, &["epochs"], "many")
                .unwrap_err()
                .to_string()
                .contains("an integer")
        );
        assert!(
            set_param(&mut params, &["fast"], "3")
                .unwrap_err()
                .to_string()
                .contains("a boolean")
        );
        assert!(
            set_param(&mut params, &["name", "x"], "3")
                .unwrap_err()
                .to_string()
                .contains("not a mapping")
        );
    }

    #[test]
    fn paths_are_normalised_and_outputs_stay_inside() {
        assert_eq!(
            normalize_path("./data//raw/", PathRole::Out).unwrap(),
            "data/raw"
        );
        assert_eq!(normalize_path("a/../b", PathRole::Out).unwrap(), "b");
        assert_eq!(
            normalize_path("../shared/x", PathRole::Dep).unwrap(),
            "../shared/x"
        );
        assert!(normalize_path("../x", PathRole::Out).is_err());
        assert!(normalize_path("/abs", PathRole::Out).is_err());
        assert!(normalize_path(".textrec/x", PathRole::Out).is_err());
        assert!(normalize_path(".", PathRole::Dep).is_err());
    }

    #[test]
    fn overlap_is_by_path_component_not_prefix() {
        assert!(paths_overlap("data", "data/raw"));
        assert!(paths_overlap("data/raw", "data"));
        assert!(paths_overlap("a", "a"));
        assert!(!paths_overlap("data", "database"));
    }

    #[test]
    fn cycles_are_reported_in_dependency_order() {
        // 0 <- 2, 1 <- 0, 2 <- 1: 0 -> 1 -> 2 -> 0
        let upstream = vec![vec![2], vec![0], vec![1]];
        let cycle = find_cycle(&upstream).unwrap();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        for pair in cycle.windows(2) {
            assert!(
                upstream[pair[1]].contains(&pair[0]),
                "{cycle:?} follows producer -> consumer"
            );
        }
    }
}
