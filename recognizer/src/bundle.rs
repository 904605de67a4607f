//! Release bundles: `NAME-VERSION.tar.gz` holding the models and what a user needs beside them,
//! with a `manifest.json` that lists every other file's sha256, and the checks `textrec verify`
//! runs on one.
//!
//! Writing is deterministic, so that a rebuild from the same files is byte-identical: entries are
//! sorted under one top directory `NAME-VERSION/`, every header has mtime 0, uid and gid 0, mode
//! 0644 and no owner names, and the gzip header has mtime 0, no file name and OS "unknown".
//!
//! Reading is defensive, since a bundle may come from anywhere: only regular files under the top
//! directory are accepted (no absolute paths, `..`, links or devices), sizes are capped before
//! anything is read into memory, and the files must be exactly those the manifest lists, with
//! the listed hashes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::{Compression, GzBuilder};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::prelude::*;

use crate::Architecture;
use crate::model_metadata::ModelMetadata;

/// The manifest's name inside the top directory.
pub const MANIFEST: &str = "manifest.json";
/// The manifest format this code writes and reads.
pub const FORMAT: u32 = 1;
/// The largest file a bundle may hold.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// The largest total of a bundle's files, decompressed: bounds memory on a hostile archive.
pub const MAX_TOTAL_BYTES: u64 = 2 << 30;
/// The most entries a bundle may hold.
pub const MAX_ENTRIES: usize = 10_000;
/// The most elements of one input tensor `verify` runs a model on (256 MiB of `f32`): shapes
/// come from the model file, so a hostile one could otherwise ask for terabytes of zeros. The
/// shipped models take at most a few hundred thousand.
pub const MAX_CHECK_ELEMENTS: usize = 1 << 26;

/// Why a bundle could not be written, read or trusted. Every variant about one file names it.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid tar.gz: {reason}")]
    Archive { reason: String },
    #[error("entry `{entry}`: {reason}")]
    UnsafeEntry { entry: String, reason: &'static str },
    #[error("entry `{entry}` is {bytes} bytes, over the limit of {limit}")]
    TooLarge {
        entry: String,
        bytes: u64,
        limit: u64,
    },
    #[error("the files add up to more than {limit} bytes")]
    TotalTooLarge { limit: u64 },
    #[error("more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("no manifest.json in the bundle's top directory")]
    NoManifest,
    #[error("manifest.json: {reason}")]
    Manifest { reason: String },
    #[error(
        "`{entry}` does not match the manifest: sha256 {actual} ({actual_bytes} bytes), \
         the manifest says {expected} ({expected_bytes} bytes)"
    )]
    Mismatch {
        entry: String,
        expected: String,
        actual: String,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    #[error("`{entry}` is listed in the manifest but missing from the bundle")]
    Missing { entry: String },
    #[error("`{entry}` is in the bundle but not in the manifest")]
    Unlisted { entry: String },
    #[error("{what} `{value}`: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("model `{entry}`: {reason}")]
    Model { entry: String, reason: String },
}

/// `manifest.json`: what the bundle is and the sha256 of every other file. No timestamps or
/// host names, so that it is reproducible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    /// What built the bundle, e.g. `textrec-stages 0.1.0, stage release`.
    pub created_by: String,
    /// Path inside the top directory → hash and size.
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub sha256: String,
    pub bytes: u64,
}

impl Manifest {
    /// The top directory every entry lives under: `NAME-VERSION`.
    pub fn root(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// Checks a bundle name: ASCII letters, digits, `.`, `_` and `-`, starting with a letter or digit
/// (it becomes a directory and a file name).
pub fn check_name(name: &str) -> Result<(), BundleError> {
    let bad = |reason| BundleError::InvalidName {
        what: "bundle name",
        value: name.to_owned(),
        reason,
    };
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(bad("must start with an ASCII letter or digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad("may use only ASCII letters, digits, `.`, `_` and `-`"));
    }
    Ok(())
}

/// Checks a version: `MAJOR.MINOR.PATCH` with an optional `-prerelease` and `+build`, as in
/// semver (leading zeros allowed).
pub fn check_version(version: &str) -> Result<(), BundleError> {
    let bad = |reason| BundleError::InvalidName {
        what: "version",
        value: version.to_owned(),
        reason,
    };
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    if numbers.len() != 3
        || numbers
            .iter()
            .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("must be MAJOR.MINOR.PATCH, e.g. 0.1.0 or 1.2.0-rc.1"));
    }
    let identifiers_ok = |s: &str| {
        s.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    };
    if pre.is_some_and(|p| !identifiers_ok(p)) || build.is_some_and(|b| !identifiers_ok(b)) {
        return Err(bad(
            "pre-release and build parts are dot-separated ASCII letters, digits and `-`",
        ));
    }
    Ok(())
}

/// Checks a file's path inside the bundle: relative, `/`-separated, no empty, `.` or `..`
/// components, no backslashes or NULs.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.starts_with('/') {
        return Err("absolute paths are refused");
    }
    if path.contains(['\\', '\0']) {
        return Err("backslashes and NULs are refused");
    }
    for component in path.split('/') {
        match component {
            ".." => return Err("`..` would leave the bundle"),
            "" | "." => return Err("not a normalised relative path"),
            _ => {}
        }
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Writes a bundle of `files` (path inside the bundle → bytes) plus its manifest, as a
/// deterministic tar.gz. The same arguments always give the same bytes.
pub fn write_bundle(
    name: &str,
    version: &str,
    created_by: &str,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, BundleError> {
    check_name(name)?;
    check_version(version)?;
    for path in files.keys() {
        check_path(path).map_err(|reason| BundleError::InvalidName {
            what: "file name",
            value: path.clone(),
            reason,
        })?;
        if path == MANIFEST {
            return Err(BundleError::InvalidName {
                what: "file name",
                value: path.clone(),
                reason: "is the bundle's own manifest",
            });
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        name: name.to_owned(),
        version: version.to_owned(),
        created_by: created_by.to_owned(),
        files: files
            .iter()
            .map(|(path, bytes)| {
                let entry = FileEntry {
                    sha256: sha256_hex(bytes),
                    bytes: bytes.len() as u64,
                };
                (path.clone(), entry)
            })
            .collect(),
    };
    let mut manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    manifest_json.push(b'\n');

    let mut entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
        .collect();
    entries.push((MANIFEST, &manifest_json));
    entries.sort_by_key(|&(path, _)| path);

    let archive_error = |e: std::io::Error| BundleError::Archive {
        reason: e.to_string(),
    };
    let gzip = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    let mut tar = tar::Builder::new(gzip);
    let root = manifest.root();
    for (path, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        tar.append_data(&mut header, format!("{root}/{path}"), bytes)
            .map_err(archive_error)?;
    }
    let mut gzip = tar.into_inner().map_err(archive_error)?;
    gzip.flush().map_err(archive_error)?;
    gzip.finish().map_err(archive_error)
}

/// A bundle's files as read, before they are checked against its manifest.
struct Contents {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    /// Every file but the manifest, by path inside the top directory.
    files: BTreeMap<String, Vec<u8>>,
}

fn read_contents(reader: impl Read) -> Result<Contents, BundleError> {
    let archive_error = |e: std::io::Error| BundleError::Archive {
        reason: e.to_string(),
    };
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let mut root: Option<String> = None;
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    for (n, entry) in archive.entries().map_err(archive_error)?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(BundleError::TooManyEntries { limit: MAX_ENTRIES });
        }
        let mut entry = entry.map_err(archive_error)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |reason| BundleError::UnsafeEntry {
            entry: name.clone(),
            reason,
        };
        if String::from_utf8(raw).is_err() {
            return Err(unsafe_entry("the name is not UTF-8"));
        }
        let kind = entry.header().entry_type();
        let is_dir = kind.is_dir();
        if !is_dir && !kind.is_file() {
            return Err(unsafe_entry(
                "not a regular file or directory (links and devices are refused)",
            ));
        }
        let path = if is_dir {
            name.trim_end_matches('/')
        } else {
            &name
        };
        check_path(path).map_err(unsafe_entry)?;
        let (top, inner) = path.split_once('/').unwrap_or((path, ""));
        if !is_dir && inner.is_empty() {
            return Err(unsafe_entry(
                "a file at the top level; every file lives under NAME-VERSION/",
            ));
        }
        match &root {
            None => root = Some(top.to_owned()),
            Some(root) if root != top => {
                return Err(unsafe_entry(
                    "outside the bundle's top directory (a bundle has exactly one)",
                ));
            }
            Some(_) => {}
        }
        if is_dir {
            continue;
        }
        let bytes = entry.size();
        if bytes > MAX_FILE_BYTES {
            return Err(BundleError::TooLarge {
                entry: name.clone(),
                bytes,
                limit: MAX_FILE_BYTES,
            });
        }
        total += bytes;
        if total > MAX_TOTAL_BYTES {
            return Err(BundleError::TotalTooLarge {
                limit: MAX_TOTAL_BYTES,
            });
        }
        let mut content = Vec::with_capacity(bytes as usize);
        (&mut entry)
            .take(bytes)
            .read_to_end(&mut content)
            .map_err(archive_error)?;
        if files.insert(inner.to_owned(), content).is_some() {
            return Err(unsafe_entry("appears twice"));
        }
    }
    let root = root.ok_or(BundleError::NoManifest)?;
    let manifest_bytes = files.remove(MANIFEST).ok_or(BundleError::NoManifest)?;
    let bad = |reason: String| BundleError::Manifest { reason };
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| bad(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(bad(format!(
            "format {} is not the supported {FORMAT}",
            manifest.format
        )));
    }
    if manifest.root() != root {
        return Err(bad(format!(
            "describes {} but the bundle's top directory is {root}",
            manifest.root()
        )));
    }
    for path in manifest.files.keys() {
        check_path(path).map_err(|reason| bad(format!("lists `{path}`: {reason}")))?;
        if path == MANIFEST {
            return Err(bad("lists itself".into()));
        }
    }
    Ok(Contents {
        manifest,
        manifest_bytes,
        files,
    })
}

/// The outcome of checking one file against the manifest.
#[derive(Debug)]
pub struct FileCheck {
    /// Path inside the bundle's top directory.
    pub name: String,
    /// Size and sha256 of the file as found; `None` when it is missing.
    pub found: Option<FileEntry>,
    /// `None` when the file is exactly what the manifest lists.
    pub problem: Option<BundleError>,
}

impl Contents {
    /// Every file of the manifest and of the archive, by name, with what is wrong with it.
    fn check_files(&self) -> Vec<FileCheck> {
        let names: BTreeSet<&String> = self
            .manifest
            .files
            .keys()
            .chain(self.files.keys())
            .collect();
        names
            .into_iter()
            .map(|name| {
                let entry = name.clone();
                let found = self.files.get(name).map(|bytes| FileEntry {
                    sha256: sha256_hex(bytes),
                    bytes: bytes.len() as u64,
                });
                let problem = match (self.manifest.files.get(name), &found) {
                    (Some(expected), Some(actual)) if expected == actual => None,
                    (Some(expected), Some(actual)) => Some(BundleError::Mismatch {
                        entry,
                        expected: expected.sha256.clone(),
                        actual: actual.sha256.clone(),
                        expected_bytes: expected.bytes,
                        actual_bytes: actual.bytes,
                    }),
                    (Some(_), None) => Some(BundleError::Missing { entry }),
                    (None, _) => Some(BundleError::Unlisted { entry }),
                };
                FileCheck {
                    name: name.clone(),
                    found,
                    problem,
                }
            })
            .collect()
    }
}

/// A bundle whose every file matched its manifest.
#[derive(Debug)]
pub struct Bundle {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    files: BTreeMap<String, Vec<u8>>,
}

/// One model of a bundle: an ONNX file under `models/`.
#[derive(Debug, Clone, Copy)]
pub struct BundledModel<'a> {
    /// Path inside the bundle, e.g. `models/chars.onnx`.
    pub name: &'a str,
    pub bytes: &'a [u8],
}

impl BundledModel<'_> {
    /// The architecture its metadata names; `None` for a model textrec did not export.
    pub fn architecture(&self) -> Option<Architecture> {
        ModelMetadata::read(self.bytes).ok().map(|m| m.architecture)
    }

    /// Loads the model in tract and runs it once; see [`check_model`].
    pub fn check(&self) -> Result<ModelSummary, BundleError> {
        check_model(self.name, self.bytes)
    }
}

impl Bundle {
    /// Reads a bundle and checks every file against the manifest; the first problem is the error.
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        let file = std::fs::File::open(path).map_err(|source| BundleError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::read(std::io::BufReader::new(file))
    }

    /// Like [`Bundle::open`], from the bytes of a tar.gz.
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        Self::read(bytes)
    }

    fn read(reader: impl Read) -> Result<Bundle, BundleError> {
        let contents = read_contents(reader)?;
        if let Some(problem) = contents
            .check_files()
            .into_iter()
            .find_map(|check| check.problem)
        {
            return Err(problem);
        }
        Ok(Bundle {
            manifest: contents.manifest,
            manifest_bytes: contents.manifest_bytes,
            files: contents.files,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// A file by its path inside the top directory (`manifest.json` included).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        if name == MANIFEST {
            return Some(&self.manifest_bytes);
        }
        self.files.get(name).map(Vec::as_slice)
    }

    /// The paths of every file but the manifest, sorted.
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The ONNX models under `models/`, by path.
    pub fn models(&self) -> Vec<BundledModel<'_>> {
        models(&self.files)
    }

    /// The first model whose `textrec.architecture` is `architecture` (`line_ctc`, `line_fcn`).
    pub fn model_of(&self, architecture: Architecture) -> Option<BundledModel<'_>> {
        self.models()
            .into_iter()
            .find(|m| m.architecture() == Some(architecture))
    }
}

fn models(files: &BTreeMap<String, Vec<u8>>) -> Vec<BundledModel<'_>> {
    files
        .iter()
        .filter(|(name, _)| name.starts_with("models/") && name.ends_with(".onnx"))
        .map(|(name, bytes)| BundledModel { name, bytes })
        .collect()
}

/// What `textrec verify` reports: every file checked against the manifest, and every model whose
/// bytes matched, loaded and run.
#[derive(Debug)]
pub struct Verification {
    pub name: String,
    pub version: String,
    pub files: Vec<FileCheck>,
    pub models: Vec<ModelCheck>,
}

/// A model loaded and run in tract, or why it could not be.
#[derive(Debug)]
pub struct ModelCheck {
    pub name: String,
    pub outcome: Result<ModelSummary, BundleError>,
}

impl Verification {
    /// Every problem found, files first.
    pub fn problems(&self) -> impl Iterator<Item = &BundleError> {
        let files = self.files.iter().filter_map(|f| f.problem.as_ref());
        let models = self.models.iter().filter_map(|m| m.outcome.as_ref().err());
        files.chain(models)
    }

    pub fn is_ok(&self) -> bool {
        self.problems().next().is_none()
    }
}

/// Checks a bundle file the way `textrec verify` does. Problems with individual files or models
/// are collected in the [`Verification`]; an archive that cannot be read at all, or has no valid
/// manifest, is the error.
pub fn verify(path: &Path) -> Result<Verification, BundleError> {
    let file = std::fs::File::open(path).map_err(|source| BundleError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(verify_contents(read_contents(std::io::BufReader::new(
        file,
    ))?))
}

/// Like [`verify`], from the bytes of a tar.gz.
pub fn verify_bytes(bytes: &[u8]) -> Result<Verification, BundleError> {
    Ok(verify_contents(read_contents(bytes)?))
}

fn verify_contents(contents: Contents) -> Verification {
    let files = contents.check_files();
    let intact: BTreeSet<&str> = files
        .iter()
        .filter(|f| f.problem.is_none())
        .map(|f| f.name.as_str())
        .collect();
    let mut models: Vec<ModelCheck> = models(&contents.files)
        .into_iter()
        .filter(|model| intact.contains(model.name))
        .map(|model| ModelCheck {
            name: model.name.to_owned(),
            outcome: model.check(),
        })
        .collect();
    // Language models are read whole: every n-gram entry is checked.
    models.extend(
        contents
            .files
            .iter()
            .filter(|(name, _)| {
                name.starts_with("models/")
                    && name.ends_with(".lm")
                    && intact.contains(name.as_str())
            })
            .map(|(name, bytes)| ModelCheck {
                name: name.clone(),
                outcome: crate::lm::CharLm::from_bytes(bytes)
                    .map(|lm| ModelSummary {
                        architecture: format!("char_ngram (order {})", lm.order()),
                        inputs: Vec::new(),
                        outputs: Vec::new(),
                    })
                    .map_err(|e| BundleError::Model {
                        entry: name.clone(),
                        reason: e.to_string(),
                    }),
            }),
    );
    Verification {
        name: contents.manifest.name.clone(),
        version: contents.manifest.version.clone(),
        files,
        models,
    }
}

/// A graph input or output: its shape as declared (symbols by name) and as run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSummary {
    pub name: String,
    pub declared: Vec<String>,
    pub shape: Vec<usize>,
}

/// A model that loaded and ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelSummary {
    pub architecture: String,
    pub inputs: Vec<TensorSummary>,
    pub outputs: Vec<TensorSummary>,
}

/// One dimension of a tensor as the ONNX file declares it.
enum DeclaredDim {
    Fixed(i64),
    /// A named free dimension (`batch`, `width`).
    Symbol(String),
    Unknown,
}

fn declared_dims(value: &pb::ValueInfoProto) -> Vec<DeclaredDim> {
    let shape = value.r#type.as_ref().and_then(|t| match &t.value {
        Some(pb::type_proto::Value::TensorType(tensor)) => tensor.shape.as_ref(),
        _ => None,
    });
    shape
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(v)) => DeclaredDim::Fixed(*v),
                    Some(dimension::Value::DimParam(p)) => DeclaredDim::Symbol(p.clone()),
                    None => DeclaredDim::Unknown,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn show_dims(dims: &[DeclaredDim]) -> Vec<String> {
    dims.iter()
        .map(|d| match d {
            DeclaredDim::Fixed(v) => v.to_string(),
            DeclaredDim::Symbol(symbol) => symbol.clone(),
            DeclaredDim::Unknown => "?".to_owned(),
        })
        .collect()
}

/// Loads an exported textrec model in tract and runs it once on zeros: the check that it will
/// work where it ships. Shapes come from the model's declared inputs, so any architecture
/// works: a symbolic first dimension (the batch) becomes 1, any other symbolic dimension (a
/// line's width) becomes `textrec.input_width`, else 4 × `textrec.input_height`. Every output
/// must be finite.
pub fn check_model(entry: &str, bytes: &[u8]) -> Result<ModelSummary, BundleError> {
    let bad = |reason: String| BundleError::Model {
        entry: entry.to_owned(),
        reason,
    };
    let proto =
        pb::ModelProto::decode(bytes).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    let metadata = ModelMetadata::from_proto(&proto).map_err(|e| bad(e.to_string()))?;
    let architecture = metadata.architecture.name().to_owned();
    let free_size = metadata
        .input_width
        .or_else(|| metadata.input_height.and_then(|h| h.checked_mul(4)));
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| bad("the model has no graph".into()))?;
    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();

    let mut inputs = Vec::new();
    for input in graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
    {
        let elem_type = input.r#type.as_ref().and_then(|t| match &t.value {
            Some(pb::type_proto::Value::TensorType(tensor)) => Some(tensor.elem_type),
            _ => None,
        });
        if elem_type != Some(pb::tensor_proto::DataType::Float as i32) {
            return Err(bad(format!("input `{}` is not a float tensor", input.name)));
        }
        let dims = declared_dims(input);
        let mut shape = Vec::with_capacity(dims.len());
        for (axis, dim) in dims.iter().enumerate() {
            shape.push(match dim {
                DeclaredDim::Fixed(v) if *v > 0 => *v as usize,
                _ if axis == 0 => 1,
                _ => free_size.ok_or_else(|| {
                    bad(format!(
                        "input `{}` has a free dimension {axis} and no textrec.input_height to size it",
                        input.name
                    ))
                })?,
            });
        }
        let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if elements.is_none_or(|n| n > MAX_CHECK_ELEMENTS) {
            return Err(bad(format!(
                "input `{}` would run as {shape:?}, over the {MAX_CHECK_ELEMENTS} elements a \
                 check allows",
                input.name
            )));
        }
        inputs.push(TensorSummary {
            name: input.name.clone(),
            declared: show_dims(&dims),
            shape,
        });
    }

    let tract_error = |e: TractError| bad(format!("tract cannot load it: {e:#}"));
    let mut model = crate::tract::read_onnx(bytes).map_err(tract_error)?;
    for (i, input) in inputs.iter().enumerate() {
        model = model
            .with_input_fact(i, f32::fact(input.shape.as_slice()).into())
            .map_err(tract_error)?;
    }
    let plan = crate::tract::optimized(model)
        .and_then(|m| m.into_runnable())
        .map_err(tract_error)?;
    let zeros = inputs
        .iter()
        .map(|input| Tensor::zero::<f32>(&input.shape).map(TValue::from))
        .collect::<TractResult<TVec<TValue>>>()
        .map_err(tract_error)?;
    let results = crate::tract::without_panics("running", || plan.run(zeros))
        .map_err(|e| bad(format!("tract cannot run it: {e:#}")))?;

    let mut outputs = Vec::with_capacity(results.len());
    for (n, result) in results.iter().enumerate() {
        let declared = graph.output.get(n);
        let name = declared.map_or_else(|| format!("#{n}"), |o| o.name.clone());
        if result.datum_type() == f32::datum_type() {
            let values = result
                .to_plain_array_view::<f32>()
                .map_err(|e| bad(format!("{e:#}")))?;
            if !values.iter().all(|v| v.is_finite()) {
                return Err(bad(format!(
                    "output `{name}` is not finite on an all-zero input"
                )));
            }
        }
        outputs.push(TensorSummary {
            name,
            declared: declared
                .map(|o| show_dims(&declared_dims(o)))
                .unwrap_or_default(),
            shape: result.shape().to_vec(),
        });
    }
    Ok(ModelSummary {
        architecture,
        inputs,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{GraphBuilder, Metadata};

    /// `image [N, 1, side, side]` → flatten → matmul → `logits [N, classes]`.
    fn char_model(side: usize, classes: usize) -> Vec<u8> {
        let mut g = GraphBuilder::new();
        let weights: Vec<f32> = (0..side * side * classes)
            .map(|i| (i % 7) as f32 * 0.01)
            .collect();
        g.input(
            "image",
            &[Err("N"), Ok(1), Ok(side as i64), Ok(side as i64)],
        )
        .weight("w", &[side * side, classes], &weights)
        .node("Flatten", &["image"], &["flat"], &[])
        .node("MatMul", &["flat", "w"], &["logits"], &[])
        .output("logits", &[Err("N"), Ok(classes as i64)]);
        let metadata = Metadata::default()
            .with("textrec.architecture", "char_cnn")
            .with("textrec.input_height", side.to_string())
            .with("textrec.input_width", side.to_string());
        g.build("char", &metadata).encode_to_vec()
    }

    /// `image [batch, 1, 32, width]` → relu, with symbolic batch and width like a line model.
    fn line_model() -> Vec<u8> {
        let mut g = GraphBuilder::new();
        g.input("image", &[Err("batch"), Ok(1), Ok(32), Err("width")])
            .node("Relu", &["image"], &["features"], &[])
            .output("features", &[Err("batch"), Ok(1), Ok(32), Err("width")]);
        let metadata = Metadata::default()
            .with("textrec.architecture", "line_ctc")
            .with("textrec.input_height", "32");
        g.build("line", &metadata).encode_to_vec()
    }

    fn files() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("models/chars.onnx".to_owned(), char_model(4, 3)),
            ("models/lines.onnx".to_owned(), line_model()),
            ("MODEL_CARD.md".to_owned(), b"# card\n".to_vec()),
        ])
    }

    fn bundle() -> Vec<u8> {
        write_bundle("textrec", "0.1.0", "tests", &files()).unwrap()
    }

    /// The entries of a tar.gz: (path, header, content).
    fn entries(gz: &[u8]) -> Vec<(String, tar::Header, Vec<u8>)> {
        let mut archive = tar::Archive::new(GzDecoder::new(gz));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let header = e.header().clone();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (path, header, content)
            })
            .collect()
    }

    /// A tar.gz of raw entries, written without the tar crate's path checks.
    fn raw_archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, kind, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append(&header, *content).unwrap();
        }
        let mut gz = GzBuilder::new().write(Vec::new(), Compression::fast());
        gz.write_all(&tar.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    }

    /// Rewrites the entries of a bundle through `edit` (path, content) → replacement.
    fn repack(gz: &[u8], edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> Vec<u8> {
        let edited: Vec<(String, Vec<u8>)> = entries(gz)
            .into_iter()
            .filter_map(|(path, _, content)| edit(&path, content).map(|c| (path, c)))
            .collect();
        let refs: Vec<(&str, tar::EntryType, &[u8])> = edited
            .iter()
            .map(|(p, c)| (p.as_str(), tar::EntryType::Regular, c.as_slice()))
            .collect();
        raw_archive(&refs)
    }

    #[test]
    fn the_same_files_give_the_same_bytes_with_fixed_metadata() {
        let gz = bundle();
        assert_eq!(gz, bundle(), "rebuilds are byte-identical");
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime is 0");
        assert_eq!(gz[9], 255, "gzip OS is unknown");
        let entries = entries(&gz);
        let paths: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "textrec-0.1.0/MODEL_CARD.md",
                "textrec-0.1.0/manifest.json",
                "textrec-0.1.0/models/chars.onnx",
                "textrec-0.1.0/models/lines.onnx",
            ]
        );
        for (path, header, _) in &entries {
            assert_eq!(header.mtime().unwrap(), 0, "{path}");
            assert_eq!(header.uid().unwrap(), 0, "{path}");
            assert_eq!(header.gid().unwrap(), 0, "{path}");
            assert_eq!(header.mode().unwrap(), 0o644, "{path}");
            assert_eq!(header.username().unwrap(), Some(""), "{path}");
            assert_eq!(header.groupname().unwrap(), Some(""), "{path}");
        }
        assert_ne!(
            gz,
            write_bundle("textrec", "0.1.1", "tests", &files()).unwrap()
        );
    }

    #[test]
    fn a_bundle_reads_back_with_a_manifest_of_every_file() {
        let bundle = Bundle::from_bytes(&bundle()).unwrap();
        let manifest = bundle.manifest();
        assert_eq!(manifest.root(), "textrec-0.1.0");
        assert_eq!(manifest.created_by, "tests");
        for (name, bytes) in files() {
            assert_eq!(bundle.file(&name), Some(bytes.as_slice()));
            assert_eq!(manifest.files[&name].sha256, sha256_hex(&bytes));
            assert_eq!(manifest.files[&name].bytes, bytes.len() as u64);
        }
        assert_eq!(manifest.files.len(), 3, "the manifest does not list itself");
        let text = std::str::from_utf8(bundle.file(MANIFEST).unwrap()).unwrap();
        assert!(!text.contains("time") && !text.contains("host"), "{text}");
        let models: Vec<(&str, Option<Architecture>)> = bundle
            .models()
            .iter()
            .map(|m| (m.name, m.architecture()))
            .collect();
        assert_eq!(
            models,
            [
                ("models/chars.onnx", Some(Architecture::CharCnn)),
                ("models/lines.onnx", Some(Architecture::LineCtc)),
            ]
        );
    }

    #[test]
    fn verification_loads_each_model_with_its_free_dimensions_fixed() {
        let verification = verify_bytes(&bundle()).unwrap();
        assert!(
            verification.is_ok(),
            "{:?}",
            verification.problems().collect::<Vec<_>>()
        );
        let summaries: Vec<&ModelSummary> = verification
            .models
            .iter()
            .map(|m| m.outcome.as_ref().unwrap())
            .collect();
        assert_eq!(summaries[0].inputs[0].declared, ["N", "1", "4", "4"]);
        assert_eq!(summaries[0].inputs[0].shape, [1, 1, 4, 4]);
        assert_eq!(summaries[0].outputs[0].shape, [1, 3]);
        assert_eq!(
            summaries[1].inputs[0].declared,
            ["batch", "1", "32", "width"]
        );
        assert_eq!(summaries[1].inputs[0].shape, [1, 1, 32, 128]);
        assert_eq!(summaries[1].outputs[0].shape, [1, 1, 32, 128]);
    }

    #[test]
    fn a_tampered_file_is_a_mismatch_that_names_it() {
        let tampered = repack(&bundle(), |path, mut content| {
            if path.ends_with("models/chars.onnx") {
                let last = content.len() - 1;
                content[last] ^= 1;
            }
            Some(content)
        });
        match Bundle::from_bytes(&tampered).unwrap_err() {
            BundleError::Mismatch { entry, .. } => assert_eq!(entry, "models/chars.onnx"),
            other => panic!("{other}"),
        }
        let verification = verify_bytes(&tampered).unwrap();
        let problems: Vec<String> = verification.problems().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("`models/chars.onnx` does not match"),
            "{problems:?}"
        );
        assert_eq!(
            verification.models.len(),
            1,
            "a model that does not match is not loaded"
        );
    }

    #[test]
    fn missing_and_unlisted_files_are_refused() {
        let missing = repack(&bundle(), |path, content| {
            (!path.ends_with("MODEL_CARD.md")).then_some(content)
        });
        assert!(matches!(
            Bundle::from_bytes(&missing).unwrap_err(),
            BundleError::Missing { entry } if entry == "MODEL_CARD.md"
        ));
        let mut all: Vec<(String, Vec<u8>)> = entries(&bundle())
            .into_iter()
            .map(|(path, _, content)| (path, content))
            .collect();
        all.push(("textrec-0.1.0/extra.txt".into(), b"x".to_vec()));
        let refs: Vec<(&str, tar::EntryType, &[u8])> = all
            .iter()
            .map(|(p, c)| (p.as_str(), tar::EntryType::Regular, c.as_slice()))
            .collect();
        assert!(matches!(
            Bundle::from_bytes(&raw_archive(&refs)).unwrap_err(),
            BundleError::Unlisted { entry } if entry == "extra.txt"
        ));
    }

    #[test]
    fn unsafe_entries_are_refused_before_the_manifest_is_read() {
        let regular = tar::EntryType::Regular;
        for (path, kind, why) in [
            ("textrec-0.1.0/../evil", regular, "`..`"),
            ("/etc/evil", regular, "absolute"),
            ("textrec-0.1.0/link", tar::EntryType::Symlink, "links"),
            ("other-0.1.0/x", regular, "top directory"),
            ("loose.txt", regular, "top level"),
        ] {
            let gz = raw_archive(&[("textrec-0.1.0/a", regular, b"a"), (path, kind, b"x")]);
            let err = Bundle::from_bytes(&gz).unwrap_err();
            assert!(
                matches!(&err, BundleError::UnsafeEntry { entry, .. } if entry == path),
                "{path}: {err}"
            );
            assert!(err.to_string().contains(why), "{path}: {err}");
        }
    }

    /// A line model whose declared height and metadata ask for `[1, 1, height, 4 × height]`.
    fn line_model_of_height(height: i64, metadata_height: &str) -> Vec<u8> {
        let mut g = GraphBuilder::new();
        g.input("image", &[Err("batch"), Ok(1), Ok(height), Err("width")])
            .node("Relu", &["image"], &["features"], &[])
            .output("features", &[Err("batch"), Ok(1), Ok(height), Err("width")]);
        let metadata = Metadata::default()
            .with("textrec.architecture", "line_ctc")
            .with("textrec.input_height", metadata_height);
        g.build("line", &metadata).encode_to_vec()
    }

    /// A language model whose header declares `ngrams` n-grams, with no entries after it.
    fn language_model_declaring(ngrams: u64) -> Vec<u8> {
        let vocabulary = crate::Vocabulary::from_chars("ab ".chars()).unwrap();
        let lm = crate::lm::CharLm::count(&vocabulary, 2, ["ab"], Default::default()).unwrap();
        let bytes = lm.to_bytes();
        let json_at = bytes.iter().position(|&b| b == b'{').unwrap();
        let header_len = u32::from_le_bytes(bytes[json_at - 4..json_at].try_into().unwrap());
        let mut header: serde_json::Value =
            serde_json::from_slice(&bytes[json_at..json_at + header_len as usize]).unwrap();
        header["ngrams"] = ngrams.into();
        let header = serde_json::to_vec(&header).unwrap();
        let mut hostile = bytes[..json_at - 4].to_vec();
        hostile.extend_from_slice(&(header.len() as u32).to_le_bytes());
        hostile.extend_from_slice(&header);
        hostile
    }

    /// A bundle may come from anywhere and its manifest can be made to match anything: sizes and
    /// counts read from its files must be refused, not allocated (which aborts or panics).
    #[test]
    fn hostile_shapes_and_counts_are_model_problems_not_allocations() {
        let hostile = |name: &str, bytes: Vec<u8>| {
            let mut files = files();
            files.insert(name.to_owned(), bytes);
            let verification =
                verify_bytes(&write_bundle("textrec", "0.1.0", "tests", &files).unwrap()).unwrap();
            let problems: Vec<String> = verification.problems().map(|p| p.to_string()).collect();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].contains(name), "{problems:?}");
            problems.into_iter().next().unwrap()
        };
        // 2^20 rows declared, and free widths of 4 × 2^20: 2^42 zeros.
        let problem = hostile(
            "models/tall.onnx",
            line_model_of_height(1 << 20, &(1u64 << 20).to_string()),
        );
        assert!(problem.contains("elements a check allows"), "{problem}");
        // A height whose width 4 × height does not fit a usize leaves the width unsized.
        let problem = hostile(
            "models/wide.onnx",
            line_model_of_height(32, &(usize::MAX / 2).to_string()),
        );
        assert!(problem.contains("free dimension 3"), "{problem}");
        // 12 × 2^62 wraps to 0, the length of an empty body.
        let problem = hostile("models/text.lm", language_model_declaring(1 << 62));
        assert!(problem.contains("n-grams"), "{problem}");
    }

    /// Every one-byte change and every truncation of a model is an `Ok` or a named error, never
    /// a panic that would take `textrec verify` down (exit 101) instead of reporting the file.
    #[test]
    fn damaged_models_are_errors_not_panics() {
        let model = char_model(2, 2);
        let mut variants: Vec<Vec<u8>> = (0..model.len()).map(|n| model[..n].to_vec()).collect();
        for at in 0..model.len() {
            for value in [0x00, 0xff, model[at] ^ 0x80] {
                let mut damaged = model.clone();
                damaged[at] = value;
                variants.push(damaged);
            }
        }
        for (n, bytes) in variants.iter().enumerate() {
            let outcome =
                std::panic::catch_unwind(|| check_model("models/damaged.onnx", bytes).err());
            match outcome {
                Ok(Some(err)) => assert!(
                    err.to_string().starts_with("model `models/damaged.onnx`"),
                    "{err}"
                ),
                Ok(None) => {}
                Err(_) => panic!("variant {n} of {} panicked the check", variants.len()),
            }
        }
    }

    #[test]
    fn an_entry_over_the_size_limit_is_refused_from_its_header() {
        let mut header = tar::Header::new_gnu();
        header.set_path("textrec-0.1.0/huge").unwrap();
        header.set_size(MAX_FILE_BYTES + 1);
        header.set_cksum();
        let mut raw = header.as_bytes().to_vec();
        raw.extend([0; 1024]);
        let mut gz = GzBuilder::new().write(Vec::new(), Compression::fast());
        gz.write_all(&raw).unwrap();
        assert!(matches!(
            Bundle::from_bytes(&gz.finish().unwrap()).unwrap_err(),
            BundleError::TooLarge { entry, .. } if entry == "textrec-0.1.0/huge"
        ));
    }

    #[test]
    fn bad_names_versions_and_paths_are_refused_when_writing() {
        let files = BTreeMap::from([("a".to_owned(), Vec::new())]);
        for (name, version) in [
            ("textrec", "1.0"),
            ("textrec", "v1.0.0"),
            ("textrec", "1.0.0-"),
            ("", "1.0.0"),
            ("../x", "1.0.0"),
        ] {
            assert!(
                write_bundle(name, version, "t", &files).is_err(),
                "{name} {version}"
            );
        }
        for good in ["0.1.0", "1.2.3-rc.1", "1.0.0+build.5", "2024.1.0"] {
            check_version(good).unwrap();
        }
        for path in ["../a", "/a", "a//b", "./a", "a\\b", MANIFEST] {
            let files = BTreeMap::from([(path.to_owned(), Vec::new())]);
            assert!(matches!(
                write_bundle("textrec", "1.0.0", "t", &files).unwrap_err(),
                BundleError::InvalidName { value, .. } if value == path
            ));
        }
    }

    #[test]
    fn models_without_textrec_metadata_or_that_are_not_onnx_fail_to_load() {
        let mut g = GraphBuilder::new();
        g.input("x", &[Err("N"), Ok(2)])
            .node("Relu", &["x"], &["y"], &[])
            .output("y", &[Err("N"), Ok(2)]);
        let plain = g.build("plain", &Metadata::default()).encode_to_vec();
        let err = check_model("models/plain.onnx", &plain).unwrap_err();
        assert!(err.to_string().contains("textrec.architecture"), "{err}");
        let err = check_model("models/junk.onnx", b"not a model").unwrap_err();
        assert!(
            err.to_string().starts_with("model `models/junk.onnx`"),
            "{err}"
        );
    }
}
