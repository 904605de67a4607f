//! Planning and running: decide which stages are stale and why, run them in dependency order on
//! up to `jobs` threads, move their outputs into place, and record them in the lock file.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use serde_json::Value;

use crate::commit::Commit;
#[cfg(feature = "remote")]
use crate::error::RemoteError;
use crate::error::{Error, StageRunError};
use crate::fsutil::remove_path;
use crate::hash::{ContentHash, StateDb};
use crate::lock::{LockFile, LockedStage, flatten_metrics};
use crate::progress::{Progress, Reporter};
#[cfg(feature = "remote")]
use crate::remote::{Moved, Remote};
use crate::report::{RunReport, StageReport, StageStatus};
use crate::spec::Pipeline;
use crate::stage::{Registry, Stage, StageContext};
#[cfg(feature = "remote")]
use crate::transfer::{fetch_staged, local_outs};
use crate::workspace::Workspace;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Re-run the selected stages even when they are up to date.
    pub force: bool,
    /// Run only these stages (their upstream outputs must already exist).
    pub only: Vec<String>,
    /// Run these stages and everything downstream of them.
    pub from: Vec<String>,
    /// Stages running at once.
    pub jobs: usize,
    /// Report what would run and why; change nothing.
    pub dry_run: bool,
    /// Pull a stale stage's outputs from here when a machine pushed a run with its cache key,
    /// and push what runs.
    #[cfg(feature = "remote")]
    pub remote: Option<Arc<Remote>>,
    /// Only pull: a stale stage that the remote cannot supply is reported as `would-run`, and so
    /// are the stages after it (a cluster executor submits those).
    pub pull_only: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            force: false,
            only: Vec::new(),
            from: Vec::new(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            dry_run: false,
            #[cfg(feature = "remote")]
            remote: None,
            pull_only: false,
        }
    }
}

/// Runs (or with `dry_run`, plans) a pipeline.
pub fn run(
    pipeline: &Pipeline,
    registry: &Registry,
    options: &RunOptions,
    reporter: &dyn Reporter,
) -> Result<RunReport, Error> {
    let selected = select(pipeline, options)?;
    let workspace = Workspace::new(&pipeline.workdir);
    let lock_path = pipeline.lock_path();
    if options.dry_run {
        let engine = Engine::new(
            pipeline,
            registry,
            workspace,
            LockFile::load(&lock_path)?,
            reporter,
            options,
        );
        return Ok(engine.plan(&selected));
    }
    std::fs::create_dir_all(&pipeline.workdir)
        .map_err(|e| Error::io("create workdir", &pipeline.workdir, e))?;
    let guard = workspace.acquire(
        pipeline
            .stages
            .iter()
            .zip(&selected)
            .filter(|(_, selected)| **selected)
            .map(|(stage, _)| stage.name.as_str()),
    )?;
    for holder in &guard.stale_holders {
        reporter.notice(&format!("took over the lock left on {holder}"));
    }
    let lock = {
        let _merging = workspace.lock_file_guard()?;
        let mut lock = LockFile::load(&lock_path)?;
        let before = lock.stages.len();
        lock.stages
            .retain(|name, _| pipeline.stage_index(name).is_some());
        if lock.stages.len() != before {
            lock.save(&lock_path)?;
        }
        lock
    };
    let engine = Engine::new(pipeline, registry, workspace, lock, reporter, options);
    let report = engine.execute_all(&selected, options.jobs.max(1));
    let partial = selected.iter().any(|s| !s);
    if let Err(e) = engine.state.save(partial) {
        reporter.notice(&format!(
            "could not save the hash cache (next run re-hashes): {e}"
        ));
    }
    drop(guard);
    Ok(report)
}

/// Which stages a run covers, from `--only` and `--from`.
fn select(pipeline: &Pipeline, options: &RunOptions) -> Result<Vec<bool>, Error> {
    let n = pipeline.stages.len();
    if options.only.is_empty() && options.from.is_empty() {
        return Ok(vec![true; n]);
    }
    let index = |name: &String| {
        pipeline
            .stage_index(name)
            .ok_or_else(|| Error::UnknownStage {
                name: name.clone(),
                file: pipeline.file.clone(),
            })
    };
    let mut selected = vec![false; n];
    for name in &options.only {
        selected[index(name)?] = true;
    }
    for name in &options.from {
        for i in pipeline.downstream_closure(index(name)?) {
            selected[i] = true;
        }
    }
    Ok(selected)
}

struct Engine<'a> {
    pipeline: &'a Pipeline,
    registry: &'a Registry,
    workspace: Workspace,
    state: StateDb,
    lock: Mutex<LockFile>,
    lock_path: PathBuf,
    reporter: &'a dyn Reporter,
    force: bool,
    #[cfg(feature = "remote")]
    remote: Option<Arc<Remote>>,
    pull_only: bool,
}

/// What a stage's cache key is made of.
struct Inputs {
    deps: BTreeMap<String, ContentHash>,
    key: ContentHash,
}

impl<'a> Engine<'a> {
    fn new(
        pipeline: &'a Pipeline,
        registry: &'a Registry,
        workspace: Workspace,
        lock: LockFile,
        reporter: &'a dyn Reporter,
        options: &RunOptions,
    ) -> Self {
        Engine {
            pipeline,
            registry,
            state: StateDb::open(&workspace.state_db_path()),
            workspace,
            lock: Mutex::new(lock),
            lock_path: pipeline.lock_path(),
            reporter,
            force: options.force,
            #[cfg(feature = "remote")]
            remote: options.remote.clone(),
            pull_only: options.pull_only,
        }
    }

    fn locked(&self, name: &str) -> Option<LockedStage> {
        self.lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stages
            .get(name)
            .cloned()
    }

    /// The dry-run: stale stages and why, in topological order; nothing is written.
    fn plan(&self, selected: &[bool]) -> RunReport {
        let n = self.pipeline.stages.len();
        let mut reports: Vec<Option<StageReport>> = vec![None; n];
        for &i in &self.pipeline.graph.order {
            let stage = &self.pipeline.stages[i];
            let (status, reason) = if !selected[i] {
                (StageStatus::Skipped, "not selected".to_owned())
            } else if let Some(up) = self.pipeline.graph.upstream[i].iter().find(|&&j| {
                reports[j]
                    .as_ref()
                    .is_some_and(|r| r.status == StageStatus::WouldRun)
            }) {
                let up = &self.pipeline.stages[*up].name;
                (
                    StageStatus::WouldRun,
                    format!("upstream stage `{up}` will run (re-checked after it)"),
                )
            } else {
                match self
                    .inputs(stage)
                    .and_then(|inputs| self.staleness(stage, &inputs))
                {
                    Ok(None) => (StageStatus::Cached, "up to date".to_owned()),
                    Ok(Some(reason)) => (StageStatus::WouldRun, reason),
                    Err(error) => (StageStatus::Failed, error.to_string()),
                }
            };
            let report = StageReport {
                name: stage.name.clone(),
                status,
                seconds: 0.0,
                reason,
            };
            self.reporter.stage_finished(&report);
            reports[i] = Some(report);
        }
        finish_report(reports)
    }

    fn execute_all(&self, selected: &[bool], jobs: usize) -> RunReport {
        let graph = &self.pipeline.graph;
        let n = self.pipeline.stages.len();
        let mut waiting: Vec<usize> = graph.upstream.iter().map(Vec::len).collect();
        let mut reports: Vec<Option<StageReport>> = vec![None; n];
        // Failed, or skipped because something upstream failed.
        let mut blocked = vec![false; n];
        let mut ready: VecDeque<usize> = graph
            .order
            .iter()
            .copied()
            .filter(|&i| waiting[i] == 0)
            .collect();
        std::thread::scope(|scope| {
            let (done_tx, done_rx) = mpsc::channel::<(usize, StageReport)>();
            let mut running = 0;
            loop {
                while running < jobs {
                    let Some(i) = ready.pop_front() else { break };
                    let stage = &self.pipeline.stages[i];
                    let early = if !selected[i] {
                        Some("not selected".to_owned())
                    } else {
                        graph.upstream[i].iter().find(|&&j| blocked[j]).map(|&j| {
                            let verb = match reports[j].as_ref().map(|r| r.status) {
                                Some(StageStatus::WouldRun) => "will run",
                                _ => "failed",
                            };
                            format!("upstream stage `{}` {verb}", self.pipeline.stages[j].name)
                        })
                    };
                    if let Some(reason) = early {
                        blocked[i] = selected[i];
                        let status = if self.pull_only && selected[i] {
                            StageStatus::WouldRun
                        } else {
                            StageStatus::Skipped
                        };
                        let report = StageReport {
                            name: stage.name.clone(),
                            status,
                            seconds: 0.0,
                            reason,
                        };
                        self.reporter.stage_finished(&report);
                        reports[i] = Some(report);
                        release(i, &graph.downstream, &mut waiting, &mut ready);
                        continue;
                    }
                    running += 1;
                    let done_tx = done_tx.clone();
                    scope.spawn(move || {
                        // Whatever happens in the job, the scheduler gets its report.
                        let report = catch_unwind(AssertUnwindSafe(|| self.execute(stage)))
                            .unwrap_or_else(|panic| StageReport {
                                name: stage.name.clone(),
                                status: StageStatus::Failed,
                                seconds: 0.0,
                                reason: format!("internal error: {}", panic_message(&*panic)),
                            });
                        let _ = done_tx.send((i, report));
                    });
                }
                if running == 0 {
                    break;
                }
                let (i, report) = done_rx.recv().expect("a running stage always reports");
                running -= 1;
                blocked[i] = matches!(report.status, StageStatus::Failed | StageStatus::WouldRun);
                self.reporter.stage_finished(&report);
                reports[i] = Some(report);
                release(i, &graph.downstream, &mut waiting, &mut ready);
            }
        });
        finish_report(reports)
    }

    /// Checks, and if stale runs, one stage.
    fn execute(&self, stage: &Stage) -> StageReport {
        let started = Instant::now();
        let outcome =
            self.inputs(stage)
                .and_then(|inputs| match self.staleness(stage, &inputs)? {
                    None => Ok((StageStatus::Cached, "up to date".to_owned())),
                    Some(reason) => {
                        let progress = self.reporter.stage_started(&stage.name, &reason);
                        #[cfg(feature = "remote")]
                        if let Some(remote) = self.remote.as_deref().filter(|_| !self.force) {
                            match self.pull(remote, stage, &inputs, &*progress) {
                                Ok(true) => {
                                    let why =
                                        format!("pulled from remote {} ({reason})", remote.url());
                                    return Ok((StageStatus::Pulled, why));
                                }
                                Ok(false) => {}
                                Err(e) => progress.warn(&format!("{e}; running the stage instead")),
                            }
                        }
                        if self.pull_only {
                            return Ok((StageStatus::WouldRun, reason));
                        }
                        self.produce(stage, &inputs, progress.clone(), started)?;
                        #[cfg(feature = "remote")]
                        if let Some(remote) = &self.remote {
                            let local = local_outs(self.pipeline, stage);
                            let record = self.locked(&stage.name).expect("recorded just now");
                            if let Err(e) = remote.push(&record, &local, &*progress) {
                                progress.warn(&format!(
                                    "{e}; the stage's outputs are in place here, and \
                                     `cargo xtask push` pushes them later"
                                ));
                            }
                        }
                        Ok((StageStatus::Ran, reason))
                    }
                });
        let (status, reason) = outcome.unwrap_or_else(|e| (StageStatus::Failed, e.to_string()));
        let seconds = if status == StageStatus::Cached {
            0.0
        } else {
            started.elapsed().as_secs_f64()
        };
        StageReport {
            name: stage.name.clone(),
            status,
            seconds,
            reason,
        }
    }

    fn inputs(&self, stage: &Stage) -> Result<Inputs, StageRunError> {
        let mut deps = BTreeMap::new();
        for dep in &stage.deps {
            let path = self.pipeline.resolve(dep);
            let hash = match self.state.hash_path(&path) {
                Ok(Some(hash)) => hash,
                Ok(None) => {
                    return Err(StageRunError::MissingDependency {
                        dep: dep.clone(),
                        path,
                    });
                }
                Err(source) => {
                    return Err(StageRunError::HashDependency {
                        dep: dep.clone(),
                        path,
                        source,
                    });
                }
            };
            deps.insert(dep.clone(), hash);
        }
        let kind_version = self.kind_version(stage);
        let key = cache_key(stage, kind_version, &deps);
        Ok(Inputs { deps, key })
    }

    fn kind_version(&self, stage: &Stage) -> u32 {
        self.registry.get(&stage.kind).map_or(0, |k| k.version())
    }

    /// `None` when the stage is up to date, else the reason it must run; an error when it must
    /// run but cannot.
    fn staleness(&self, stage: &Stage, inputs: &Inputs) -> Result<Option<String>, StageRunError> {
        let reason = self.why_stale(stage, inputs)?;
        if reason.is_some() && !self.force {
            self.refuse_unrecorded_outputs(stage)?;
        }
        Ok(reason)
    }

    /// Refuses to run a stage while something that no run recorded sits at one of its output
    /// paths: a file the user put there (or a first run's output path chosen by mistake) would
    /// be replaced, and only the user knows whether it matters. Like DVC's checkout, which will
    /// not delete a workspace file its cache cannot restore without `--force`, and git, which
    /// will not overwrite untracked files: refused before the stage runs, so no work is wasted,
    /// and `--force` replaces it.
    fn refuse_unrecorded_outputs(&self, stage: &Stage) -> Result<(), StageRunError> {
        let locked = self.locked(&stage.name);
        for out in stage.all_outs() {
            let recorded = locked.as_ref().is_some_and(|l| l.outs.contains_key(out));
            let path = self.pipeline.resolve(out);
            if !recorded && std::fs::symlink_metadata(&path).is_ok() {
                return Err(StageRunError::UnrecordedOutput {
                    out: out.clone(),
                    path,
                });
            }
        }
        Ok(())
    }

    /// `None` when the stage is up to date, else the reason it must run.
    fn why_stale(&self, stage: &Stage, inputs: &Inputs) -> Result<Option<String>, StageRunError> {
        let Some(locked) = self.locked(&stage.name) else {
            return Ok(Some("never ran".into()));
        };
        if self.force {
            return Ok(Some("forced".into()));
        }
        let version = self.kind_version(stage);
        if locked.kind != stage.kind || locked.kind_version != version {
            return Ok(Some(format!(
                "stage kind changed ({} v{} -> {} v{version})",
                locked.kind, locked.kind_version, stage.kind
            )));
        }
        let mut changes = Vec::new();
        diff_values("", &locked.params, &stage.params, &mut changes);
        if !changes.is_empty() {
            return Ok(Some(summarise(changes)));
        }
        for (dep, hash) in &inputs.deps {
            match locked.deps.get(dep) {
                None => changes.push(format!("dep `{dep}` added")),
                Some(old) if old != hash => changes.push(format!("dep `{dep}` changed")),
                Some(_) => {}
            }
        }
        changes.extend(
            locked
                .deps
                .keys()
                .filter(|d| !inputs.deps.contains_key(*d))
                .map(|d| format!("dep `{d}` removed")),
        );
        if !changes.is_empty() {
            return Ok(Some(summarise(changes)));
        }
        if locked.key != inputs.key {
            return Ok(Some(
                "the declared order or names of deps, outs or metrics changed".into(),
            ));
        }
        for out in stage.all_outs() {
            let path = self.pipeline.resolve(out);
            let now = self
                .state
                .hash_path(&path)
                .map_err(|source| StageRunError::HashOutput {
                    out: out.clone(),
                    source,
                })?;
            match (now, locked.outs.get(out)) {
                (None, _) => changes.push(format!("output `{out}` is missing")),
                (Some(_), None) => changes.push(format!("output `{out}` was never recorded")),
                (Some(now), Some(old)) if &now != old => {
                    changes.push(format!("output `{out}` was modified"))
                }
                _ => {}
            }
        }
        Ok((!changes.is_empty()).then(|| summarise(changes)))
    }

    /// Runs the stage into a staging directory, moves its outputs into place, records it.
    fn produce(
        &self,
        stage: &Stage,
        inputs: &Inputs,
        progress: Arc<dyn Progress>,
        started: Instant,
    ) -> Result<(), StageRunError> {
        let staging = self.workspace.staging_dir(&stage.name)?;
        let result = self.produce_in(stage, inputs, progress, started, &staging);
        let _ = remove_path(&staging);
        result
    }

    fn produce_in(
        &self,
        stage: &Stage,
        inputs: &Inputs,
        progress: Arc<dyn Progress>,
        started: Instant,
        staging: &std::path::Path,
    ) -> Result<(), StageRunError> {
        let mut outs = Vec::new();
        for out in stage.all_outs() {
            let path = staging.join(out);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| StageRunError::CreateDir {
                    path: parent.to_owned(),
                    source,
                })?;
            }
            outs.push((out.clone(), path));
        }
        let kind = self
            .registry
            .get(&stage.kind)
            .ok_or_else(|| StageRunError::UnknownKind {
                kind: stage.kind.clone(),
            })?;
        let ctx = StageContext {
            stage,
            workdir: &self.pipeline.workdir,
            deps: stage
                .deps
                .iter()
                .map(|d| self.pipeline.resolve(d))
                .collect(),
            outs,
            log: self.workspace.log_path(&stage.name)?,
            resume: self.workspace.resume_dir(&stage.name, &inputs.key[..16])?,
            upstream: self.upstream_records(stage),
            progress,
        };
        match catch_unwind(AssertUnwindSafe(|| kind.run(&ctx))) {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => return Err(StageRunError::Stage(failure)),
            Err(panic) => {
                return Err(StageRunError::Panicked {
                    kind: stage.kind.clone(),
                    message: panic_message(&*panic),
                });
            }
        }
        drop(ctx.progress);
        for (out, path) in &ctx.outs {
            if std::fs::symlink_metadata(path).is_err() {
                return Err(StageRunError::OutputNotWritten { out: out.clone() });
            }
        }
        self.check_deps_unchanged(inputs)?;
        let mut metrics = BTreeMap::new();
        for file in &stage.metrics {
            let path = staging.join(file);
            let text = std::fs::read(&path).map_err(|source| StageRunError::ReadMetrics {
                file: file.clone(),
                source,
            })?;
            let value: Value =
                serde_json::from_slice(&text).map_err(|source| StageRunError::MetricsNotJson {
                    file: file.clone(),
                    source,
                })?;
            flatten_metrics(&value, "", &mut metrics);
        }
        let commit = Commit::swap_in(
            &self.workspace,
            &stage.name,
            ctx.outs
                .iter()
                .map(|(out, staged)| (out.clone(), staged.clone(), self.pipeline.resolve(out))),
        );
        self.record_and_finish(stage, commit, || {
            self.record(stage, inputs, metrics, started)
        })?;
        // Recorded: only now may the checkpoints go.
        if let Err(e) = self.workspace.clear_resume_dirs(&stage.name) {
            self.reporter.notice(&format!(
                "stage `{}`: {e} (stale checkpoints remain)",
                stage.name
            ));
        }
        Ok(())
    }

    /// Hashes the deps again after the stage ran. A run of another stage may have replaced one
    /// while this stage read it (runs of different stages share a workdir); recording (and
    /// pushing) would then pair these outputs with deps they were not made from. Unchanged files
    /// are only looked at, not read.
    fn check_deps_unchanged(&self, inputs: &Inputs) -> Result<(), StageRunError> {
        for (dep, before) in &inputs.deps {
            let path = self.pipeline.resolve(dep);
            self.state.forget(&path);
            let now =
                self.state
                    .hash_path(&path)
                    .map_err(|source| StageRunError::HashDependency {
                        dep: dep.clone(),
                        path: path.clone(),
                        source,
                    })?;
            if now.as_ref() != Some(before) {
                return Err(StageRunError::DepChangedWhileRunning { dep: dep.clone() });
            }
        }
        Ok(())
    }

    /// Makes the state db forget this run's hashes of the stage's output paths (and of paths
    /// inside or around them), after something new was moved there: its record, and the stages
    /// downstream that depend on these paths, must see what is there now.
    fn forget_outputs(&self, stage: &Stage) {
        for out in stage.all_outs() {
            self.state.forget(&self.pipeline.resolve(out));
        }
    }

    /// Hashes the outputs now in place and records the run in the lock file. If the lock cannot
    /// be saved, the record in memory is put back as well, so no later save writes it.
    fn record(
        &self,
        stage: &Stage,
        inputs: &Inputs,
        metrics: BTreeMap<String, f64>,
        started: Instant,
    ) -> Result<(), StageRunError> {
        let mut out_hashes = BTreeMap::new();
        for out in stage.all_outs() {
            let hash = self
                .state
                .hash_path(&self.pipeline.resolve(out))
                .map_err(|source| StageRunError::HashOutput {
                    out: out.clone(),
                    source,
                })?
                .ok_or_else(|| StageRunError::OutputVanished { out: out.clone() })?;
            out_hashes.insert(out.clone(), hash);
        }
        let record = LockedStage {
            kind: stage.kind.clone(),
            kind_version: self.kind_version(stage),
            key: inputs.key.clone(),
            params: stage.params.clone(),
            deps: inputs.deps.clone(),
            outs: out_hashes,
            metrics,
            seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            tool: format!("textrec-pipeline {}", env!("CARGO_PKG_VERSION")),
        };
        self.save_record(stage, record)
    }

    /// Puts `record` into the lock file as it is on disk now (runs of other stages may have
    /// recorded theirs since this run read it) and saves it; only a saved record reaches the
    /// lock in memory, so no later save writes one that could not be saved.
    fn save_record(&self, stage: &Stage, record: LockedStage) -> Result<(), StageRunError> {
        let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _merging = self.workspace.lock_file_guard()?;
        let mut merged = LockFile::load(&self.lock_path)?;
        merged.stages.insert(stage.name.clone(), record);
        merged.save(&self.lock_path)?;
        *lock = merged;
        Ok(())
    }

    #[cfg(feature = "remote")]
    /// Pulls the outputs of a run that some machine pushed with this stage's cache key, swaps
    /// them into place and records them as that run recorded them. `false` when the remote has
    /// no such run; an error (the caller runs the stage instead) when what it has is unusable.
    fn pull(
        &self,
        remote: &Remote,
        stage: &Stage,
        inputs: &Inputs,
        progress: &dyn Progress,
    ) -> Result<bool, StageRunError> {
        let Some(pushed) = remote.record(&inputs.key)? else {
            return Ok(false);
        };
        if let Some(out) = stage.all_outs().find(|o| !pushed.outs.contains_key(*o)) {
            return Err(StageRunError::Remote(RemoteError::BadRecord {
                url: remote.url().to_owned(),
                key: inputs.key.clone(),
                reason: format!("it has no output `{out}`"),
            }));
        }
        let staging = self.workspace.staging_dir(&stage.name)?;
        let result = self.pull_into(remote, stage, inputs, pushed, progress, &staging);
        let _ = remove_path(&staging);
        result.map(|_| true)
    }

    #[cfg(feature = "remote")]
    fn pull_into(
        &self,
        remote: &Remote,
        stage: &Stage,
        inputs: &Inputs,
        pushed: LockedStage,
        progress: &dyn Progress,
        staging: &std::path::Path,
    ) -> Result<Moved, StageRunError> {
        let (moved, staged) = fetch_staged(
            self.pipeline,
            remote,
            stage,
            &pushed.outs,
            staging,
            progress,
        )?;
        let commit = Commit::swap_in(&self.workspace, &stage.name, staged);
        let record = LockedStage {
            kind: stage.kind.clone(),
            kind_version: self.kind_version(stage),
            key: inputs.key.clone(),
            params: stage.params.clone(),
            deps: inputs.deps.clone(),
            ..pushed
        };
        self.record_and_finish(stage, commit, || self.save_record(stage, record))?;
        Ok(moved)
    }

    /// After outputs were swapped in (or put back): records them with `record`, then lets the
    /// replaced outputs go; if recording fails, puts the replaced outputs back.
    fn record_and_finish(
        &self,
        stage: &Stage,
        commit: Result<Commit, StageRunError>,
        record: impl FnOnce() -> Result<(), StageRunError>,
    ) -> Result<(), StageRunError> {
        // Whether it all went in or was put back, what this run hashed there may be out of date.
        self.forget_outputs(stage);
        let commit = commit?;
        if let Err(e) = record() {
            let error = commit.roll_back(e);
            self.forget_outputs(stage);
            return Err(error);
        }
        if let Err(e) = commit.finish() {
            self.reporter.notice(&format!(
                "stage `{}`: {e} (the next run retries)",
                stage.name
            ));
        }
        Ok(())
    }

    /// The lock records of the stages `stage` transitively depends on. They have all finished
    /// (or were not selected), so the records are final for this run.
    fn upstream_records(&self, stage: &Stage) -> LockFile {
        let lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let upstream = self
            .pipeline
            .stage_index(&stage.name)
            .map(|i| self.pipeline.upstream_closure(i))
            .unwrap_or_default();
        let stages = upstream
            .into_iter()
            .filter_map(|i| {
                let name = &self.pipeline.stages[i].name;
                lock.stages.get(name).map(|r| (name.clone(), r.clone()))
            })
            .collect();
        LockFile {
            schema: lock.schema,
            stages,
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

fn release(
    i: usize,
    downstream: &[Vec<usize>],
    waiting: &mut [usize],
    ready: &mut VecDeque<usize>,
) {
    for &d in &downstream[i] {
        waiting[d] -= 1;
        if waiting[d] == 0 {
            ready.push_back(d);
        }
    }
}

fn finish_report(reports: Vec<Option<StageReport>>) -> RunReport {
    let stages: Vec<StageReport> = reports
        .into_iter()
        .map(|r| r.expect("every stage is decided"))
        .collect();
    let ok = stages.iter().all(|r| r.status != StageStatus::Failed);
    RunReport { stages, ok }
}

/// The cache key: blake3 over canonical JSON (sorted keys) of everything a stage's result depends
/// on: kind, kind version, params, the content of each dep *in declared order* (stages address
/// deps and outputs by position, e.g. `$DEP_0`), and the declared outs and metrics files.
pub fn cache_key(
    stage: &Stage,
    kind_version: u32,
    deps: &BTreeMap<String, ContentHash>,
) -> ContentHash {
    let ordered_deps: Vec<[&str; 2]> = stage
        .deps
        .iter()
        .map(|d| [d.as_str(), deps.get(d).map_or("", String::as_str)])
        .collect();
    let mut doc = String::new();
    canonical_json(
        &serde_json::json!({
            "kind": stage.kind,
            "kind_version": kind_version,
            "params": stage.params,
            "deps": ordered_deps,
            "outs": stage.outs,
            "metrics": stage.metrics,
        }),
        &mut doc,
    );
    blake3::hash(doc.as_bytes()).to_hex().to_string()
}

/// JSON with object keys sorted at every level, independent of map implementation details.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Lists `param `a.b` changed (x -> y)`-style differences between two params trees.
fn diff_values(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff_values(&path, x, y, out),
                    (None, Some(y)) => out.push(format!("param `{path}` added ({})", short(y))),
                    (Some(_), None) => out.push(format!("param `{path}` removed")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!(
            "param `{prefix}` changed ({} -> {})",
            short(a),
            short(b)
        )),
        _ => {}
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}...", text.chars().take(37).collect::<String>())
    } else {
        text
    }
}

fn summarise(mut changes: Vec<String>) -> String {
    let more = changes.len().saturating_sub(3);
    changes.truncate(3);
    let mut text = changes.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(params: Value, deps: &[&str], outs: &[&str]) -> Stage {
        Stage {
            name: "s".into(),
            kind: "shell".into(),
            desc: None,
            deps: deps.iter().map(|d| d.to_string()).collect(),
            outs: outs.iter().map(|o| o.to_string()).collect(),
            metrics: Vec::new(),
            params,
            resources: None,
            line: 1,
            column: 1,
        }
    }

    #[test]
    fn cache_key_ignores_param_key_order_but_not_values_or_positions() {
        let deps = BTreeMap::from([
            ("a".to_owned(), "h1".to_owned()),
            ("b".to_owned(), "h2".to_owned()),
        ]);
        let params = json!({"x": 1, "y": {"b": 2, "a": 3}});
        let key = cache_key(&stage(params.clone(), &["a", "b"], &["o"]), 1, &deps);
        let reordered_yaml: Value = serde_saphyr::from_str("y: {a: 3, b: 2}\nx: 1\n").unwrap();
        assert_eq!(
            key,
            cache_key(&stage(reordered_yaml, &["a", "b"], &["o"]), 1, &deps)
        );
        assert_ne!(
            key,
            cache_key(&stage(params.clone(), &["a", "b"], &["o"]), 2, &deps)
        );
        assert_ne!(
            key,
            cache_key(
                &stage(json!({"x": 2, "y": {"b": 2, "a": 3}}), &["a", "b"], &["o"]),
                1,
                &deps
            )
        );
        // $DEP_0 / $OUT_0 are positional: swapping them changes what the stage computes.
        assert_ne!(
            key,
            cache_key(&stage(params.clone(), &["b", "a"], &["o"]), 1, &deps)
        );
        assert_ne!(
            key,
            cache_key(&stage(params, &["a", "b"], &["p"]), 1, &deps)
        );
    }

    /// Writes the upstream records it was given, as JSON.
    struct Provenance;

    impl crate::stage::StageKind for Provenance {
        fn name(&self) -> &'static str {
            "provenance"
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "writes ctx.upstream"
        }
        fn check(&self, _: &Stage) -> Result<(), crate::InvalidStage> {
            Ok(())
        }
        fn run(&self, ctx: &StageContext<'_>) -> Result<(), crate::stage::StageFailure> {
            std::fs::write(&ctx.outs[0].1, serde_json::to_vec(&ctx.upstream)?)?;
            Ok(())
        }
    }

    #[test]
    fn a_stage_sees_the_records_of_its_transitive_upstream_and_a_rerun_sees_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(
            &file,
            "stages:\n  - {name: a, kind: provenance, outs: [a]}\n  \
             - {name: b, kind: provenance, deps: [a], outs: [b]}\n  \
             - {name: c, kind: provenance, deps: [b], outs: [c]}\n  \
             - {name: d, kind: provenance, outs: [d]}\n",
        )
        .unwrap();
        let mut registry = Registry::new();
        registry.register(Provenance);
        let pipeline = Pipeline::load(&file, &registry, &[]).unwrap();
        let reporter = crate::progress::SilentReporter;
        assert!(
            run(&pipeline, &registry, &RunOptions::default(), &reporter)
                .unwrap()
                .ok
        );
        let seen = std::fs::read(dir.path().join("c")).unwrap();
        let upstream: LockFile = serde_json::from_slice(&seen).unwrap();
        let lock = LockFile::load(&pipeline.lock_path()).unwrap();
        assert_eq!(
            upstream.stages.keys().collect::<Vec<_>>(),
            ["a", "b"],
            "transitive deps only, not itself or unrelated stages"
        );
        assert_eq!(upstream.stages["a"], lock.stages["a"]);
        assert_eq!(upstream.stages["b"], lock.stages["b"]);

        let again = RunOptions {
            force: true,
            only: vec!["c".into()],
            ..RunOptions::default()
        };
        assert!(run(&pipeline, &registry, &again, &reporter).unwrap().ok);
        assert_eq!(std::fs::read(dir.path().join("c")).unwrap(), seen);
    }

    /// Writes `params.text` to every output and to a checkpoint in its resume directory, then
    /// breaks what `params.sabotage` names in the workdir, as a full disk or another device
    /// would: `second-output` puts a file where the second output's directory goes, `lock`
    /// puts a directory where the lock file goes.
    struct Sabotage;

    impl crate::stage::StageKind for Sabotage {
        fn name(&self) -> &'static str {
            "sabotage"
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "writes params.text, then breaks params.sabotage"
        }
        fn check(&self, _: &Stage) -> Result<(), crate::InvalidStage> {
            Ok(())
        }
        fn run(&self, ctx: &StageContext<'_>) -> Result<(), crate::stage::StageFailure> {
            let text = ctx.stage.params["text"].as_str().unwrap_or_default();
            std::fs::write(ctx.resume.join("checkpoint"), text)?;
            for (_, path) in &ctx.outs {
                std::fs::write(path, text)?;
            }
            match ctx.stage.params["sabotage"].as_str() {
                Some("second-output") => {
                    remove_path(&ctx.workdir.join("sub"))?;
                    std::fs::write(ctx.workdir.join("sub"), "in the way")?;
                }
                Some("lock") => {
                    std::fs::remove_file(ctx.workdir.join("p.lock"))?;
                    std::fs::create_dir(ctx.workdir.join("p.lock"))?;
                }
                _ => {}
            }
            Ok(())
        }
    }

    /// Runs stage `s` (kind `sabotage`, `params`, outs `outs`) in `dir`.
    fn run_sabotage(dir: &std::path::Path, params: &str, outs: &str) -> RunReport {
        let file = dir.join("p.yaml");
        std::fs::write(
            &file,
            format!("stages:\n  - {{name: s, kind: sabotage, params: {params}, outs: {outs}}}\n"),
        )
        .unwrap();
        let mut registry = Registry::new();
        registry.register(Sabotage);
        let pipeline = Pipeline::load(&file, &registry, &[]).unwrap();
        let options = RunOptions::default();
        run(
            &pipeline,
            &registry,
            &options,
            &crate::progress::SilentReporter,
        )
        .unwrap()
    }

    #[test]
    fn a_commit_that_fails_halfway_puts_the_previous_outputs_back() {
        let dir = tempfile::tempdir().unwrap();
        let outs = "[a.txt, sub/b.txt]";
        assert!(run_sabotage(dir.path(), "{text: one}", outs).ok);
        let report = run_sabotage(dir.path(), "{text: two, sabotage: second-output}", outs);
        assert_eq!(report.stages[0].status, StageStatus::Failed);
        assert!(
            report.stages[0].reason.contains("sub"),
            "{}",
            report.stages[0].reason
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
            "one",
            "the first output, already swapped in, goes back to the recorded one"
        );
        let lock = LockFile::load(&dir.path().join("p.lock")).unwrap();
        assert_eq!(lock.stages["s"].params["text"], "one");
        let trash = dir.path().join(".textrec/trash");
        assert_eq!(
            std::fs::read_dir(&trash).unwrap().count(),
            0,
            "trash is empty"
        );
    }

    #[test]
    fn a_lock_that_cannot_be_saved_keeps_the_checkpoints_and_the_previous_outputs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(run_sabotage(dir.path(), "{text: one}", "[a.txt]").ok);
        let report = run_sabotage(dir.path(), "{text: two, sabotage: lock}", "[a.txt]");
        assert_eq!(report.stages[0].status, StageStatus::Failed);
        assert!(
            report.stages[0].reason.contains("lock file /"),
            "{}",
            report.stages[0].reason
        );
        let checkpoints: Vec<String> = std::fs::read_dir(dir.path().join(".textrec/resume"))
            .unwrap()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path().join("checkpoint")))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            checkpoints,
            ["two"],
            "the failed attempt's checkpoint survives for the next one"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
            "one"
        );
    }

    /// Writes something new to every output on every run (a run counter): an output whose name
    /// has no `.` becomes a directory holding `inner.txt`.
    struct Stamp;

    static STAMPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    impl crate::stage::StageKind for Stamp {
        fn name(&self) -> &'static str {
            "stamp"
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "writes a new stamp to every output"
        }
        fn check(&self, _: &Stage) -> Result<(), crate::InvalidStage> {
            Ok(())
        }
        fn run(&self, ctx: &StageContext<'_>) -> Result<(), crate::stage::StageFailure> {
            for (out, path) in &ctx.outs {
                let stamp = format!(
                    "{} run {}\n",
                    ctx.stage.name,
                    STAMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                if out.contains('.') {
                    std::fs::write(path, stamp)?;
                } else {
                    std::fs::create_dir_all(path)?;
                    std::fs::write(path.join("inner.txt"), stamp)?;
                }
            }
            Ok(())
        }
    }

    fn stamp_pipeline(dir: &std::path::Path, stages: &str) -> (Pipeline, Registry) {
        let file = dir.join("p.yaml");
        std::fs::write(&file, format!("stages:\n{stages}")).unwrap();
        let mut registry = Registry::new();
        registry.register(Stamp);
        let pipeline = Pipeline::load(&file, &registry, &[]).unwrap();
        (pipeline, registry)
    }

    fn statuses(report: &RunReport) -> Vec<(&str, StageStatus)> {
        report
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.status))
            .collect()
    }

    #[test]
    fn a_directory_many_stages_depend_on_is_looked_at_once_per_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("shared")).unwrap();
        for n in 0..20 {
            std::fs::write(dir.path().join(format!("shared/{n}.txt")), n.to_string()).unwrap();
        }
        // Four stages that may all run at once, and one after the first of them.
        let (pipeline, registry) = stamp_pipeline(
            dir.path(),
            "  - {name: s0, kind: stamp, deps: [shared], outs: [o0.txt]}\n  \
             - {name: s1, kind: stamp, deps: [shared], outs: [o1.txt]}\n  \
             - {name: s2, kind: stamp, deps: [shared], outs: [o2.txt]}\n  \
             - {name: s3, kind: stamp, deps: [shared], outs: [o3.txt]}\n  \
             - {name: s4, kind: stamp, deps: [shared, o0.txt], outs: [o4.txt]}\n",
        );
        let reporter = crate::progress::SilentReporter;
        let options = RunOptions {
            jobs: 4,
            ..RunOptions::default()
        };
        assert!(run(&pipeline, &registry, &options, &reporter).unwrap().ok);

        let engine = Engine::new(
            &pipeline,
            &registry,
            Workspace::new(&pipeline.workdir),
            LockFile::load(&pipeline.lock_path()).unwrap(),
            &reporter,
            &options,
        );
        let report = engine.execute_all(&[true; 5], options.jobs);
        assert!(
            report
                .stages
                .iter()
                .all(|s| s.status == StageStatus::Cached),
            "{:?}",
            statuses(&report)
        );
        assert_eq!(
            engine.state.files_checked(),
            20 + 5,
            "each shared file once, and each output once (s4's dep o0.txt is s0's output)"
        );
    }

    #[test]
    fn outputs_rewritten_in_a_run_are_seen_anew_by_their_record_and_by_the_stages_after() {
        let dir = tempfile::tempdir().unwrap();
        // b depends on a directory holding a's output, c on a file inside a's output, d on a's
        // output itself.
        let (pipeline, registry) = stamp_pipeline(
            dir.path(),
            "  - {name: a, kind: stamp, outs: [gen/a.txt, tree]}\n  \
             - {name: b, kind: stamp, deps: [gen], outs: [b.txt]}\n  \
             - {name: c, kind: stamp, deps: [tree/inner.txt], outs: [c.txt]}\n  \
             - {name: d, kind: stamp, deps: [gen/a.txt], outs: [d.txt]}\n",
        );
        let reporter = crate::progress::SilentReporter;
        let options = RunOptions::default();
        assert!(run(&pipeline, &registry, &options, &reporter).unwrap().ok);

        // Edited by hand: this run hashes a's outputs to find them modified, then a rewrites
        // them; what it hashed before must not be what a records or what b, c and d see.
        std::fs::write(dir.path().join("gen/a.txt"), "edited").unwrap();
        std::fs::write(dir.path().join("tree/inner.txt"), "edited").unwrap();
        let report = run(&pipeline, &registry, &options, &reporter).unwrap();
        assert_eq!(
            statuses(&report),
            [
                ("a", StageStatus::Ran),
                ("b", StageStatus::Ran),
                ("c", StageStatus::Ran),
                ("d", StageStatus::Ran)
            ]
        );
        assert!(
            report.stages[0].reason.contains("was modified"),
            "{}",
            report.stages[0].reason
        );
        let hash = |rel: &str| {
            StateDb::in_memory()
                .hash_path(&dir.path().join(rel))
                .unwrap()
                .unwrap()
        };
        let lock = LockFile::load(&pipeline.lock_path()).unwrap();
        assert_eq!(lock.stages["a"].outs["gen/a.txt"], hash("gen/a.txt"));
        assert_eq!(lock.stages["a"].outs["tree"], hash("tree"));
        assert_eq!(lock.stages["b"].deps["gen"], hash("gen"));
        assert_eq!(
            lock.stages["c"].deps["tree/inner.txt"],
            hash("tree/inner.txt")
        );
        assert_eq!(lock.stages["d"].deps["gen/a.txt"], hash("gen/a.txt"));

        let again = run(&pipeline, &registry, &options, &reporter).unwrap();
        assert!(
            again.stages.iter().all(|s| s.status == StageStatus::Cached),
            "{:?}",
            statuses(&again)
        );
    }

    #[test]
    fn param_differences_name_the_key_and_both_values() {
        let mut changes = Vec::new();
        diff_values(
            "",
            &json!({"env": {"A": "x"}, "n": 1}),
            &json!({"env": {"A": "y"}, "m": 2}),
            &mut changes,
        );
        assert_eq!(
            changes,
            vec![
                "param `env.A` changed (\"x\" -> \"y\")",
                "param `m` added (2)",
                "param `n` removed"
            ]
        );
    }
}
