//! The contract between the engine and the stage kinds (which live in the `stages` crate).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::lock::LockFile;
use crate::progress::Progress;

/// One declared stage.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub kind: String,
    pub desc: Option<String>,
    /// Inputs: files or directories, relative to the workdir, normalised (`a/b`, no `./`).
    pub deps: Vec<String>,
    /// Outputs the stage produces, relative to the workdir.
    pub outs: Vec<String>,
    /// JSON files the stage produces whose numbers are recorded in the lock (`metrics show`).
    pub metrics: Vec<String>,
    /// The `params:` mapping, after `-S` overrides.
    pub params: Value,
    /// What the stage asks of a cluster scheduler; not part of its cache key.
    pub resources: Option<Resources>,
    /// Where the stage's name is written (1-based line and column), for errors.
    pub line: u64,
    pub column: u64,
}

/// A stage's `resources:` block, for `--executor slurm` (`--cpus-per-task`, `--mem`, `--gres`,
/// `--time`). It changes where a stage runs, not what it makes, so it is not in the cache key.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpus: Option<u32>,
    pub mem_gb: Option<f64>,
    pub gpus: Option<u32>,
    /// A wall-clock limit in Slurm's forms: `MINUTES`, `H:MM:SS`, `D-HH`, `D-HH:MM:SS`, ...
    pub time: Option<String>,
}

impl Resources {
    /// Why these resources cannot be asked for, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.cpus == Some(0) {
            return Err("cpus must be at least 1".into());
        }
        if let Some(mem) = self.mem_gb
            && !(mem.is_finite() && mem > 0.0)
        {
            return Err(format!(
                "mem_gb must be a positive number of GiB, not {mem}"
            ));
        }
        if let Some(time) = &self.time
            && !slurm_time(time)
        {
            return Err(format!(
                "time `{time}` is not a Slurm time limit: MINUTES, MM:SS, H:MM:SS, D-H, D-H:MM or \
                 D-H:MM:SS"
            ));
        }
        Ok(())
    }
}

/// Slurm's time formats: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, each part digits.
fn slurm_time(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (days, rest) = match text.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    days.is_none_or(digits) && parts.iter().all(|p| digits(p)) && (1..=3).contains(&parts.len())
}

impl Stage {
    /// Everything the stage writes: outs, then metrics files.
    pub fn all_outs(&self) -> impl Iterator<Item = &String> {
        self.outs.iter().chain(&self.metrics)
    }
}

/// The error a stage kind reports; the engine records its message and fails the stage.
pub type StageFailure = Box<dyn std::error::Error + Send + Sync>;

/// One kind of stage (`shell`, `copy`, `train`, ...): validates its params, then does the work.
pub trait StageKind: Send + Sync {
    /// The name used in `kind:`.
    fn name(&self) -> &'static str;

    /// Bump when the kind's behaviour changes so that cached results stop matching.
    fn version(&self) -> u32;

    /// One line for `--help`-style listings.
    fn summary(&self) -> &'static str;

    /// Validates params and the shape of deps/outs at load time, so a typo fails before any stage
    /// runs. The error is shown at the stage's `params:` location.
    fn check(&self, stage: &Stage) -> Result<(), InvalidStage>;

    /// Does the work, writing every declared output under [`StageContext::out`].
    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure>;
}

/// Why a stage's declaration does not suit its kind ([`StageKind::check`]), found before any
/// stage runs.
#[derive(Debug, thiserror::Error)]
pub enum InvalidStage {
    /// The params do not deserialise into the kind's struct: an unknown field, a wrong type.
    #[error(transparent)]
    Params(#[from] serde_json::Error),
    /// The deps, outs or metrics are not what the kind reads and writes; `takes` says what it does.
    #[error("{takes}")]
    Shape { takes: String },
    /// A param whose value the kind cannot use; `problem` says why and what would do.
    #[error("{problem}")]
    Param {
        param: &'static str,
        problem: String,
    },
    /// A param rejected by the code it configures, whose error names the param itself.
    #[error(transparent)]
    Rejected(Box<dyn std::error::Error + Send + Sync>),
    /// A param (a nested block, a path) rejected by the code it configures; shown after its name.
    #[error("{param}: {source}")]
    Nested {
        param: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl InvalidStage {
    pub fn shape(takes: impl Into<String>) -> Self {
        Self::Shape {
            takes: takes.into(),
        }
    }

    pub fn param(param: &'static str, problem: impl Into<String>) -> Self {
        Self::Param {
            param,
            problem: problem.into(),
        }
    }

    pub fn rejected(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Rejected(source.into())
    }

    pub fn nested(
        param: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Nested {
            param: param.into(),
            source: source.into(),
        }
    }
}

/// Typed params for a stage kind: `deny_unknown_fields` structs deserialised from the YAML value.
pub fn parse_params<T: DeserializeOwned>(params: &Value) -> Result<T, InvalidStage> {
    Ok(serde_json::from_value(params.clone())?)
}

/// The stage kinds a pipeline may use, by name.
#[derive(Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn StageKind>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, kind: impl StageKind + 'static) {
        self.kinds.insert(kind.name(), Arc::new(kind));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn StageKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn StageKind>> + '_ {
        self.kinds.values()
    }
}

/// What a running stage sees: its params, where its inputs are, where to write its outputs.
///
/// Outputs are written into a private staging directory and moved into place by the engine only
/// when [`StageKind::run`] returns `Ok`, so a failed or killed stage never leaves a trusted output.
pub struct StageContext<'a> {
    pub stage: &'a Stage,
    /// The directory the pipeline's relative paths are resolved against.
    pub workdir: &'a Path,
    /// Absolute paths of the deps, in declaration order.
    pub deps: Vec<PathBuf>,
    /// Declared output (relative, as written in the YAML; outs then metrics) → staging path.
    pub outs: Vec<(String, PathBuf)>,
    /// A log file for the stage's own chatter (e.g. a child process's stdout and stderr).
    pub log: PathBuf,
    /// Private state that survives a failed or killed attempt with the same cache key (training
    /// checkpoints), cleared when the stage succeeds.
    pub resume: PathBuf,
    /// The lock records of every stage this one depends on, directly or not, as they stand when
    /// it starts: run in this run, or up to date from an earlier one. For stages that ship
    /// provenance (`package`). Not in the cache key: the stage re-runs when its deps' content
    /// changes, and the records it saw describe runs that produced exactly that content.
    pub upstream: LockFile,
    pub progress: Arc<dyn Progress>,
}

impl fmt::Debug for StageContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageContext")
            .field("stage", &self.stage.name)
            .field("deps", &self.deps)
            .field("outs", &self.outs)
            .finish_non_exhaustive()
    }
}

impl StageContext<'_> {
    /// The staging path to write the declared output `declared` to.
    pub fn out(&self, declared: &str) -> Option<&Path> {
        self.outs
            .iter()
            .find(|(d, _)| d == declared)
            .map(|(_, p)| p.as_path())
    }

    /// The stage's params as the kind's typed struct.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, StageFailure> {
        parse_params(&self.stage.params).map_err(|e| format!("params: {e}").into())
    }
}
