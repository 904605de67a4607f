//! The one error type of the engine. Each variant maps to a documented exit code (see
//! [`Error::exit_code`]), so binaries never have to guess how bad a failure was.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while loading, planning or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file is not a valid pipeline; points at the line and column.
    #[error(transparent)]
    Spec(#[from] SpecError),

    /// The pipeline file itself cannot be read.
    #[error("cannot read pipeline file {path}: {source}")]
    PipelineFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A `-S STAGE.KEY=VALUE` override that does not fit the pipeline.
    #[error("invalid override `-S {text}`: {reason}")]
    Override {
        text: String,
        #[source]
        reason: InvalidOverride,
    },

    /// `--only`/`--from` name a stage the pipeline does not have.
    #[error("no stage named `{name}` in {file}")]
    UnknownStage { name: String, file: PathBuf },

    /// A file the engine owns (lock file, state db) could not be parsed.
    #[error(
        "{path} is corrupt: {reason}. Delete it to rebuild it (stages will re-run or re-hash)."
    )]
    Corrupt { path: PathBuf, reason: String },

    /// Another process holds the workspace.
    #[error(
        "another run holds stage `{stage}` of the workspace {workdir}: {holder}. Wait for it to \
         finish (or kill it); a lock left by a dead process is taken over automatically."
    )]
    Busy {
        workdir: PathBuf,
        stage: String,
        holder: String,
    },

    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// `metrics diff --against REV` could not read the lock file at that revision.
    #[error("cannot read {path} at git revision `{rev}`: {reason}")]
    GitShow {
        rev: String,
        path: PathBuf,
        reason: String,
    },
}

impl Error {
    /// Exit codes, as documented in the README: 2 for an invalid pipeline or usage, 3 when another
    /// run holds the workspace, 1 for everything that happened while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Spec(_)
            | Error::PipelineFile { .. }
            | Error::Override { .. }
            | Error::UnknownStage { .. }
            | Error::Corrupt { .. }
            | Error::GitShow { .. } => 2,
            Error::Busy { .. } => 3,
            Error::Io { .. } => 1,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Why a `-S STAGE.KEY=VALUE` override cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum InvalidOverride {
    #[error("expected STAGE.KEY=VALUE (e.g. train.epochs=3)")]
    Syntax,
    #[error("no stage named `{0}`")]
    NoStage(String),
    #[error("`{key}` is {found}, not a mapping")]
    NotAMapping { key: String, found: &'static str },
    #[error("`{key}` is {expected} in the pipeline; `{given}` is not")]
    WrongType {
        key: String,
        expected: &'static str,
        given: String,
    },
}

/// Why one stage failed, as its report says it: the checks before it runs (its inputs, outputs
/// no run recorded), the stage kind's own failure, and moving, hashing and recording its
/// outputs. The run goes on with the stages that do not depend on it.
#[derive(Debug, thiserror::Error)]
pub enum StageRunError {
    #[error("cannot hash dependency `{dep}` ({}): {source}", path.display())]
    HashDependency {
        dep: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("dependency `{dep}` is missing ({})", path.display())]
    MissingDependency { dep: String, path: PathBuf },
    #[error(
        "output `{out}` already exists ({}) but no run recorded it, so it may be data of yours \
         that running would replace: move it away, or run with --force to replace it",
        path.display()
    )]
    UnrecordedOutput { out: String, path: PathBuf },
    #[error("cannot hash output `{out}`: {source}")]
    HashOutput {
        out: String,
        #[source]
        source: io::Error,
    },
    #[error("output `{out}` vanished after it was moved into place")]
    OutputVanished { out: String },
    #[error("unknown kind `{kind}`")]
    UnknownKind { kind: String },
    /// The stage kind's own failure (a `StageFailure`, spelled out: the error types sit below
    /// the stage trait).
    #[error("{0}")]
    Stage(Box<dyn std::error::Error + Send + Sync>),
    #[error("stage kind `{kind}` panicked: {message}")]
    Panicked { kind: String, message: String },
    #[error(
        "dependency `{dep}` changed while the stage ran (did another run replace it?): its \
         outputs were not recorded; run it again"
    )]
    DepChangedWhileRunning { dep: String },
    #[error("the stage finished without writing its declared output `{out}`")]
    OutputNotWritten { out: String },
    #[error("read metrics `{file}`: {source}")]
    ReadMetrics {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("metrics file `{file}` is not JSON: {source}")]
    MetricsNotJson {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("move old `{out}` aside: {source}")]
    MoveAside {
        out: String,
        #[source]
        source: io::Error,
    },
    #[error("move `{out}` into place: {source}")]
    MoveIntoPlace {
        out: String,
        #[source]
        source: io::Error,
    },
    #[error("remove replaced outputs: {source}")]
    RemoveReplaced {
        #[source]
        source: io::Error,
    },
    /// The engine's own files: the workspace's directories, the lock file.
    #[error(transparent)]
    Engine(#[from] Error),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// `error` made the outputs go back, and some could not.
    #[error("{error}{}", stranded.iter().map(|s| format!("; {s}")).collect::<String>())]
    RolledBack {
        error: Box<StageRunError>,
        stranded: Vec<Stranded>,
    },
}

/// What a rolled-back commit could not undo: the user must finish it by hand.
#[derive(Debug, thiserror::Error)]
pub enum Stranded {
    #[error(
        "the previous `{out}` could not be put back ({source}): it is at {}, which the next run \
         empties, so move it back to {} first",
        aside.display(),
        target.display()
    )]
    PreviousNotPutBack {
        out: String,
        aside: PathBuf,
        target: PathBuf,
        source: io::Error,
    },
    #[error("the new `{out}` could not be removed again ({source})")]
    NewNotRemoved { out: String, source: io::Error },
}

/// A problem in a pipeline file, located at a line and column, with the offending line quoted.
#[derive(Debug)]
pub struct SpecError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no single place (e.g. an empty file).
    pub line: u64,
    pub column: u64,
    pub message: String,
    snippet: String,
}

impl SpecError {
    pub(crate) fn new(
        file: PathBuf,
        source: &str,
        line: u64,
        column: u64,
        message: String,
    ) -> Self {
        let snippet = render_snippet(source, line, column);
        SpecError {
            file,
            line,
            column,
            message,
            snippet,
        }
    }
}

impl std::error::Error for SpecError {}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if !self.snippet.is_empty() {
            write!(f, "\n{}", self.snippet)?;
        }
        Ok(())
    }
}

/// Quotes the offending line with a caret under the column, like rustc does.
fn render_snippet(source: &str, line: u64, column: u64) -> String {
    let Some(text) = line
        .checked_sub(1)
        .and_then(|l| source.lines().nth(l as usize))
    else {
        return String::new();
    };
    let gutter = line.to_string().len();
    let pad = " ".repeat(column.saturating_sub(1) as usize);
    format!("{:gutter$} |\n{line} | {text}\n{:gutter$} | {pad}^", "", "")
}

/// What can go wrong talking to a remote. Each names the remote (never its credentials) and the
/// object.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote `{url}` is not a URL textrec can use: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "remote {url} refused the credentials (trying to {action} `{key}`): check \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the GOOGLE_*/AZURE_* variables)"
    )]
    Refused {
        url: String,
        action: &'static str,
        key: String,
    },
    #[error("remote {url}: cannot {action} `{key}`: {source}")]
    Store {
        url: String,
        action: &'static str,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("remote {url} has no `{key}`, which the record of stage `{stage}` needs")]
    Missing {
        url: String,
        stage: String,
        key: String,
    },
    #[error(
        "remote {url}: `{key}` is corrupt: its bytes hash to {found}, not {expected}; deleted \
         it there, so the next push of these outputs stores them again"
    )]
    Corrupt {
        url: String,
        key: String,
        expected: String,
        found: String,
    },
    #[error("remote {url}: `{key}` is not a record textrec wrote: {reason}")]
    BadRecord {
        url: String,
        key: String,
        reason: String,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "output `{out}` ({}) changed since the lock recorded it: run the stage before pushing it",
        path.display()
    )]
    OutputChanged { out: String, path: PathBuf },
    #[error("stage `{stage}`: {why}; run the stage before pushing it")]
    NotAsRecorded { stage: String, why: String },
    #[error(
        "stage `{stage}`: output `{out}` here is not the one the lock records, and pulling would \
         replace it: move it away, or pull with --force"
    )]
    WouldReplace { stage: String, out: String },
}
