//! `textrec transcribe`: a batch of page images to text files, in parallel, going on past bad
//! inputs and saying which failed and why.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde_json::{Value, json};
use textrec_pipeline::ProgressLog;
use textrec_recognizer::infer::{
    Backend, DetectorKind, LineRecognizer, OutputFormat, PageImageError, PageTranscriber,
    PageTranscript, decode_pages,
};

/// Image files a folder walk picks up (explicitly named files are read whatever their name).
const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "tif", "tiff"];

/// Lines per tract run.
const LINE_BATCH: usize = 8;

/// Bytes an input may have per `--max-pixels` pixel: twice a page at the limit stored raw as
/// 16-bit RGBA (8 bytes a pixel), which leaves room for any compressed image and for a raw
/// multi-page scan of a few such pages, while a link to `/dev/zero` or a wrong huge file is
/// refused after reading at most this much (640 MB at the default 40 M pixels) instead of
/// filling the memory.
const MAX_INPUT_BYTES_PER_PIXEL: u64 = 16;

#[derive(Debug)]
pub struct Options {
    pub inputs: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub model: Option<PathBuf>,
    pub formats: Vec<OutputFormat>,
    pub recursive: bool,
    pub jobs: usize,
    pub resume: bool,
    pub max_pixels: u64,
    pub json: bool,
    pub backend: Backend,
    /// None: the bundle's default.
    pub detector: Option<DetectorKind>,
    pub decoder: Option<Decoder>,
    /// Only this part of the inputs (a Slurm array task, a Kubernetes indexed job).
    pub shard: Option<Shard>,
}

/// `--shard K/N`: the K-th (from 0) of N disjoint parts of the inputs. An input belongs to the
/// part its own path picks (FNV-1a of its path relative to the folder given, or its file name,
/// modulo N), so N runs over the same inputs transcribe each once, and adding or removing files
/// moves no other file to another part: a re-submitted task with `--resume` finds its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(text: &str) -> Result<Shard, String> {
        let whole = |part: &str| part.trim().parse::<u64>().ok();
        match text.split_once('/').map(|(k, n)| (whole(k), whole(n))) {
            Some((Some(index), Some(count))) if index < count => Ok(Shard { index, count }),
            _ => Err(format!(
                "`{text}` is not K/N with 0 <= K < N (e.g. 0/4 … 3/4; Slurm: \
                 $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
            )),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether the input at `key` (see [`Shard`]) is this part's.
    fn owns(&self, key: &Path) -> bool {
        // FNV-1a, 64 bits: fixed by its definition, unlike std's hasher, so every task (and
        // every version of textrec) splits the same inputs the same way.
        let hash = key
            .as_os_str()
            .as_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        hash % self.count == self.index
    }
}

/// How a batch ended, for the exit status.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    AllTranscribed,
    SomeFailed,
}

/// `--format` values, parsed by [`OutputFormat`]'s names.
#[derive(Debug, Clone)]
pub struct FormatArg(pub OutputFormat);

impl std::str::FromStr for FormatArg {
    type Err = textrec_recognizer::setting::UnknownChoice;
    fn from_str(name: &str) -> Result<FormatArg, Self::Err> {
        name.parse().map(FormatArg)
    }
}

/// One input page and where its outputs go.
#[derive(Debug)]
struct Job {
    input: PathBuf,
    /// Output path without the format's extension.
    out_stem: PathBuf,
    /// The input's path relative to the folder it was found in (its file name for files and
    /// globs): what `--shard` partitions by.
    key: PathBuf,
}

/// What happened to one input.
#[derive(Debug)]
enum Done {
    Transcribed {
        /// One per image page (several for a multi-page TIFF).
        pages: Vec<PageTranscript>,
        outputs: Vec<PathBuf>,
    },
    Skipped {
        outputs: Vec<PathBuf>,
    },
    Failed {
        reason: String,
    },
}

/// The newest `*.tar.gz` under `release/`, the package stage's output folder.
pub fn newest_bundle(dir: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(dir).ok().into_iter().flatten().flatten();
    let newest = entries
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    match newest {
        Some((_, path)) => Ok(path),
        None => bail!(
            "no release bundle in {}/: make one with `cargo xtask run pipeline.yaml` (its \
             package stage writes release/textrec-VERSION.tar.gz), or pass --model BUNDLE",
            dir.display()
        ),
    }
}

/// How lines are decoded: `beam` with the bundle's language model, `greedy` without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    Greedy,
    Beam,
}

impl std::str::FromStr for Decoder {
    type Err = String;
    fn from_str(name: &str) -> Result<Decoder, String> {
        match name {
            "greedy" => Ok(Decoder::Greedy),
            "beam" => Ok(Decoder::Beam),
            other => Err(format!("unknown decoder `{other}`: use greedy or beam")),
        }
    }
}

/// Loads the model: a release bundle (verified), or a bare exported line model (`.onnx`, read
/// with the projection detector and greedy decoding), on `backend`, with `detector` and
/// `decoder` or the bundle's defaults; says so on stderr when `auto` falls back to tract.
pub fn load_transcriber(
    model: &Path,
    backend: Backend,
    detector: Option<DetectorKind>,
    decoder: Option<Decoder>,
) -> anyhow::Result<PageTranscriber> {
    let (transcriber, notice) = if model.extension().is_some_and(|e| e == "onnx") {
        if detector == Some(DetectorKind::Learned) {
            bail!(
                "--detector learned needs a release bundle: a bare line model has no line detector"
            );
        }
        let bytes =
            std::fs::read(model).with_context(|| format!("cannot read {}", model.display()))?;
        let (recognizer, notice) =
            LineRecognizer::from_bytes_on(&bytes, model, LINE_BATCH, backend)?;
        let name = model.file_name().unwrap_or_default().to_string_lossy();
        (PageTranscriber::new(recognizer, name.into_owned()), notice)
    } else {
        let language_model = decoder != Some(Decoder::Greedy);
        PageTranscriber::from_bundle(model, LINE_BATCH, backend, detector, language_model)?
    };
    if decoder == Some(Decoder::Beam) && transcriber.recognizer.language_model().is_none() {
        bail!(
            "--decoder beam needs a release bundle with a language model; {} has none",
            model.display()
        );
    }
    if let Some(notice) = notice {
        eprintln!("note: {notice}");
    }
    Ok(transcriber)
}

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `*` and `?` in the last component of `pattern` (quoted globs; a shell expands unquoted ones).
fn glob_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    go(&p, &n)
}

/// A folder's device and inode: what a walk has entered, whatever path led there.
type FolderId = (u64, u64);

fn folder_id(path: &Path) -> std::io::Result<FolderId> {
    let metadata = std::fs::metadata(path)?;
    Ok((metadata.dev(), metadata.ino()))
}

/// The image files under `dir`, sorted. Links are followed (a linked folder of scans is read),
/// but each folder only once: a link back up the tree (`a -> .`) would otherwise repeat the
/// folder up to the kernel's link limit, and two such links would never end. `entered` maps each
/// folder read so far to the path it was read by.
fn walk(
    dir: &Path,
    recursive: bool,
    entered: &mut HashMap<FolderId, PathBuf>,
    found: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if recursive {
                match entered.entry(folder_id(&path)?) {
                    Entry::Occupied(first) => eprintln!(
                        "warning: {}: the same folder as {}, read once; skipped",
                        path.display(),
                        first.get().display()
                    ),
                    Entry::Vacant(entry) => {
                        entry.insert(path.clone());
                        walk(&path, recursive, entered, found)?;
                    }
                }
            }
        } else if is_image_name(&path) {
            found.push(path);
        }
    }
    Ok(())
}

/// The image files in the folder `input` (and its sub-folders when `recursive`), sorted.
fn walk_folder(input: &Path, recursive: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut entered = HashMap::from([(folder_id(input)?, input.to_owned())]);
    let mut found = Vec::new();
    walk(input, recursive, &mut entered, &mut found)?;
    Ok(found)
}

/// Refuses a plan in which two inputs would write the same output: they would run in parallel
/// and the last writer would win, with both reported transcribed.
fn refuse_shared_outputs(jobs: &[Job], formats: &[OutputFormat]) -> anyhow::Result<()> {
    let mut writers: HashMap<PathBuf, &Path> = HashMap::new();
    for job in jobs {
        for &format in formats {
            let output = output_path(&job.out_stem, format);
            if let Some(first) = writers.insert(output.clone(), &job.input) {
                bail!(
                    "{} and {} would both be written to {}: transcribe them into different \
                     -o folders, or rename one",
                    first.display(),
                    job.input.display(),
                    output.display()
                );
            }
        }
    }
    Ok(())
}

/// The inputs as jobs: files as given, folders walked (outputs mirror their sub-folders),
/// quoted globs matched. A missing input is a usage error, found before any work starts.
fn plan_jobs(options: &Options) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for input in &options.inputs {
        let text = input.to_string_lossy();
        if input.is_dir() {
            let found = walk_folder(input, options.recursive)
                .with_context(|| format!("cannot list {}", input.display()))?;
            if found.is_empty() {
                eprintln!(
                    "warning: {}: no PNG, JPEG or TIFF files{}",
                    input.display(),
                    if options.recursive {
                        ""
                    } else {
                        " (sub-folders need --recursive)"
                    }
                );
            }
            for path in found {
                let relative = path.strip_prefix(input).unwrap_or(&path).to_owned();
                jobs.push(Job {
                    out_stem: options.out_dir.join(relative.with_extension("")),
                    input: path,
                    key: relative,
                });
            }
        } else if text.contains('*') || text.contains('?') {
            let parent = input
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let pattern = input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut found: Vec<PathBuf> = std::fs::read_dir(parent)
                .with_context(|| format!("cannot list {}", parent.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && glob_matches(
                            &pattern,
                            &p.file_name().unwrap_or_default().to_string_lossy(),
                        )
                })
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("{text}: no file matches");
            }
            jobs.extend(found.into_iter().map(|path| {
                let name = PathBuf::from(path.file_name().unwrap_or_default());
                Job {
                    out_stem: options.out_dir.join(name.with_extension("")),
                    input: path,
                    key: name,
                }
            }));
        } else if input.exists() {
            let name = PathBuf::from(input.file_name().unwrap_or_default());
            jobs.push(Job {
                out_stem: options.out_dir.join(name.with_extension("")),
                input: input.clone(),
                key: name,
            });
        } else {
            bail!("{}: no such file or folder", input.display());
        }
    }
    // One file named twice (`scans` and `scans/page.png`) is one job.
    let mut planned = std::collections::HashSet::new();
    jobs.retain(|job| planned.insert((job.input.clone(), job.out_stem.clone())));
    // `page.png` and `page.jpg` would both write `page.txt`: keep the extension for those.
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    for job in &jobs {
        *seen.entry(job.out_stem.clone()).or_default() += 1;
    }
    for job in &mut jobs {
        if seen[&job.out_stem] > 1 {
            let name = job.input.file_name().unwrap_or_default();
            job.out_stem.set_file_name(name);
        }
    }
    refuse_shared_outputs(&jobs, &options.formats)?;
    // After the checks above, which see every input, so that each part refuses what the whole
    // run would.
    if let Some(shard) = options.shard {
        let all = jobs.len();
        jobs.retain(|job| shard.owns(&job.key));
        if !options.json {
            eprintln!("shard {shard}: {} of {all} inputs", jobs.len());
        }
    }
    Ok(jobs)
}

fn output_path(stem: &Path, format: OutputFormat) -> PathBuf {
    let mut name = stem.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(format.extension());
    stem.with_file_name(name)
}

/// Outputs exist and are newer than the input: `--resume` leaves the input alone.
fn up_to_date(input: &Path, outputs: &[PathBuf]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(input_time) = modified(input) else {
        return false;
    };
    outputs
        .iter()
        .all(|o| modified(o).is_some_and(|t: SystemTime| t >= input_time))
}

/// Reads an input whole, but no more than [`MAX_INPUT_BYTES_PER_PIXEL`] bytes per
/// `max_pixels`: a larger file is refused unread, a device (`/dev/zero`) once that many bytes
/// are read. A FIFO or socket is refused unopened: opening one waits for a writer, maybe forever.
fn read_input(path: &Path, max_pixels: u64) -> Result<Vec<u8>, String> {
    let read_error = |e: std::io::Error| PageImageError::Read(e).to_string();
    let file_type = std::fs::metadata(path).map_err(read_error)?.file_type();
    if file_type.is_fifo() || file_type.is_socket() {
        return Err("a FIFO or socket, not an image file".into());
    }
    let limit = max_pixels.saturating_mul(MAX_INPUT_BYTES_PER_PIXEL);
    let over = || {
        format!(
            "over the limit of {limit} bytes ({MAX_INPUT_BYTES_PER_PIXEL} per pixel of \
             --max-pixels {max_pixels}; raise --max-pixels)"
        )
    };
    let file = File::open(path).map_err(read_error)?;
    if file.metadata().map_err(read_error)?.len() > limit {
        return Err(over());
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(over());
    }
    Ok(bytes)
}

/// Writes `contents` next to `path` under a temporary name, fsyncs, then renames and fsyncs the
/// folder: a reader never sees half a file, and neither a killed run nor a power cut leaves a
/// truncated or empty output that `--resume` would take as done. The file gets the mode the
/// umask leaves of 0666, as any other file the user writes, so other users and a web server can
/// read transcripts where the umask lets them.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    file.write_all(contents.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

fn transcribe_one(transcriber: &PageTranscriber, job: &Job, options: &Options) -> Done {
    let outputs: Vec<PathBuf> = options
        .formats
        .iter()
        .map(|&f| output_path(&job.out_stem, f))
        .collect();
    if options.resume && up_to_date(&job.input, &outputs) {
        return Done::Skipped { outputs };
    }
    let failed = |reason: String| Done::Failed { reason };
    let bytes = match read_input(&job.input, options.max_pixels) {
        Ok(bytes) => bytes,
        Err(reason) => return failed(reason),
    };
    let images = match decode_pages(&bytes, options.max_pixels) {
        Ok(images) => images,
        Err(e) => return failed(e.to_string()),
    };
    let multi_page = images.is_multi_page();
    let mut pages = Vec::new();
    for (index, image) in images.enumerate() {
        let image = match image {
            Ok(image) => image,
            Err(e) => return failed(e.to_string()),
        };
        // Decoding errors name their page already; transcription errors get it here.
        let page_prefix = if multi_page {
            format!("page {}: ", index + 1)
        } else {
            String::new()
        };
        // The last guard: a bug on one page must not take the batch down.
        match std::panic::catch_unwind(AssertUnwindSafe(|| transcriber.transcribe(&image))) {
            Ok(Ok(transcript)) => pages.push(transcript),
            Ok(Err(e)) => return failed(format!("{page_prefix}{e}")),
            Err(_) => {
                return failed(format!(
                    "{page_prefix}internal error while transcribing (please report it)"
                ));
            }
        }
    }
    let source = job.input.to_string_lossy();
    for (&format, path) in options.formats.iter().zip(&outputs) {
        let text = format.render(&pages, &source, &transcriber.model_version);
        if let Err(e) = write_atomically(path, &text) {
            return failed(format!("cannot write {}: {e}", path.display()));
        }
    }
    Done::Transcribed { pages, outputs }
}

/// A bar on a terminal; plain lines now and then in a log (CI, `nohup`, Slurm), where a bar
/// would show nothing until the batch ends.
enum PageProgress {
    Bar(ProgressBar),
    Log(ProgressLog),
}

impl PageProgress {
    fn new(len: usize, json: bool) -> PageProgress {
        if !std::io::stderr().is_terminal() {
            let log = ProgressLog::from_env("transcribe:");
            log.set_length(len as u64);
            return PageProgress::Log(log);
        }
        if json {
            return PageProgress::Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} pages  {per_sec} · ETA {eta}  {wide_msg}",
            )
            .expect("a valid template"),
        );
        PageProgress::Bar(bar)
    }

    fn inc(&self) {
        match self {
            PageProgress::Bar(bar) => bar.inc(1),
            PageProgress::Log(log) => log.inc(1),
        }
    }

    /// Prints a line without tearing the bar.
    fn println(&self, text: &str) {
        match self {
            PageProgress::Bar(bar) => bar.suspend(|| eprintln!("{text}")),
            PageProgress::Log(_) => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        if let PageProgress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Why a batch could not start.
#[derive(Debug)]
pub enum Fatal {
    /// Inputs that do not exist, an unreadable folder.
    Usage(anyhow::Error),
    /// No model, or one that does not load.
    Model(anyhow::Error),
}

pub fn run(options: &Options) -> Result<Outcome, Fatal> {
    let jobs = plan_jobs(options).map_err(Fatal::Usage)?;
    let model = match &options.model {
        Some(model) => model.clone(),
        None => newest_bundle(Path::new("release")).map_err(Fatal::Model)?,
    };
    let transcriber = load_transcriber(&model, options.backend, options.detector, options.decoder)
        .with_context(|| format!("cannot load the model {}", model.display()))
        .map_err(Fatal::Model)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.max(1))
        .build()
        .context("cannot start the worker threads")
        .map_err(Fatal::Usage)?;
    let progress = PageProgress::new(jobs.len(), options.json);
    let failed = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Done> = pool.install(|| {
        jobs.par_iter()
            .map(|job| {
                let done = transcribe_one(&transcriber, job, options);
                if let Done::Failed { reason } = &done {
                    failed.fetch_add(1, Ordering::Relaxed);
                    progress.println(&format!("error: {}: {reason}", job.input.display()));
                }
                progress.inc();
                done
            })
            .collect()
    });
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let failed = failed.into_inner();
    let transcribed = results
        .iter()
        .filter(|d| matches!(d, Done::Transcribed { .. }))
        .count();
    let skipped = results
        .iter()
        .filter(|d| matches!(d, Done::Skipped { .. }))
        .count();
    if options.json {
        let mut summary = summary_json(&jobs, &results, &model, seconds);
        if let Some(shard) = options.shard {
            summary["shard"] = shard.to_string().into();
        }
        println!("{summary}");
    } else {
        let (pages, lines) = results
            .iter()
            .filter_map(|d| match d {
                Done::Transcribed { pages, .. } => Some(pages),
                _ => None,
            })
            .flatten()
            .fold((0, 0), |(pages, lines), page| {
                (pages + 1, lines + page.lines.len())
            });
        let files = if pages == transcribed {
            String::new()
        } else {
            format!(" from {transcribed} files")
        };
        eprintln!(
            "transcribed {pages} pages{files} ({lines} lines) in {seconds:.1} s{}{}; outputs in {}",
            if skipped > 0 {
                format!(", {skipped} up to date")
            } else {
                String::new()
            },
            if failed > 0 {
                format!(", {failed} FAILED")
            } else {
                String::new()
            },
            options.out_dir.display()
        );
    }
    Ok(if failed > 0 {
        Outcome::SomeFailed
    } else {
        Outcome::AllTranscribed
    })
}

/// A path for JSON, which holds only Unicode: bytes that are not UTF-8 become U+FFFD.
pub fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn summary_json(jobs: &[Job], results: &[Done], model: &Path, seconds: f64) -> Value {
    let inputs: Vec<Value> = jobs
        .iter()
        .zip(results)
        .map(|(job, done)| match done {
            Done::Transcribed { pages, outputs } => json!({
                "input": lossy(&job.input),
                "status": "transcribed",
                "outputs": outputs.iter().map(|o| lossy(o)).collect::<Vec<_>>(),
                "pages": pages.len(),
                "lines": pages.iter().map(|p| p.lines.len()).sum::<usize>(),
                "ms": pages.iter().map(|p| p.detect_ms + p.recognize_ms).sum::<f64>(),
            }),
            Done::Skipped { outputs } => json!({
                "input": lossy(&job.input),
                "status": "up_to_date",
                "outputs": outputs.iter().map(|o| lossy(o)).collect::<Vec<_>>(),
            }),
            Done::Failed { reason } => json!({
                "input": lossy(&job.input),
                "status": "failed",
                "error": reason,
            }),
        })
        .collect();
    let failed = results
        .iter()
        .filter(|d| matches!(d, Done::Failed { .. }))
        .count();
    json!({
        "ok": failed == 0,
        "model": lossy(model),
        "failed": failed,
        "seconds": seconds,
        "inputs": inputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_globs_match_names() {
        assert!(glob_matches("*.png", "page 1.png"));
        assert!(glob_matches("p?ge-*.tif", "page-3.tif"));
        assert!(!glob_matches("*.png", "page.png.txt"));
        assert!(!glob_matches("p?ge", "pge"));
    }

    /// `work` on a thread, failing the test if it has not finished within a minute.
    fn within_a_minute<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(work()));
        receiver
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("finished within a minute")
    }

    #[test]
    fn two_links_back_up_the_tree_end_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("page.png"), b"").unwrap();
        for link in ["a", "b"] {
            std::os::unix::fs::symlink(".", dir.path().join(link)).unwrap();
        }
        let root = dir.path().to_owned();
        let found = within_a_minute(move || walk_folder(&root, true).unwrap());
        assert_eq!(found, [dir.path().join("page.png")]);
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.png");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let read = within_a_minute(move || read_input(&fifo, 1000));
        assert_eq!(read.unwrap_err(), "a FIFO or socket, not an image file");
    }

    #[test]
    fn outputs_keep_the_format_extension_after_the_stem() {
        let stem = Path::new("out/scans/page.1");
        assert_eq!(
            output_path(stem, OutputFormat::Alto),
            Path::new("out/scans/page.1.alto.xml")
        );
    }
}
