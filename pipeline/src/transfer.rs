//! `cargo xtask push` and `pull`: move the outputs the lock file records between the workdir and
//! a remote, as `dvc push` and `dvc pull` do. `run` with a remote does the same stage by stage on
//! its own; these are for a workdir that ran without one, and for a fresh clone whose committed
//! lock names outputs it does not have.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::commit::Commit;
use crate::error::{Error, RemoteError, StageRunError};
use crate::fsutil::remove_path;
use crate::hash::StateDb;
use crate::lock::{LockFile, LockedStage};
use crate::progress::Reporter;
use crate::remote::{Moved, Remote};
use crate::spec::Pipeline;
use crate::stage::Stage;
use crate::workspace::Workspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferStatus {
    /// Moved (push: any object the remote lacked, then the record; pull: the outputs).
    Done,
    /// Pull: the outputs in place already are the recorded ones.
    UpToDate,
    /// The lock has no record of the stage, so there is nothing to move.
    NotRecorded,
    Failed,
}

/// One stage's transfer, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TransferReport {
    pub name: String,
    pub status: TransferStatus,
    pub files: u64,
    pub bytes: u64,
    /// Files the other side already had.
    pub skipped: u64,
    pub seconds: f64,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Push,
    Pull,
}

/// Pushes or pulls the recorded outputs of the stages named in `only` (all when empty). A pull
/// replaces an output that differs from the recorded one only when `force` is set.
pub fn transfer(
    pipeline: &Pipeline,
    only: &[String],
    remote: &Remote,
    direction: Direction,
    force: bool,
    reporter: &dyn Reporter,
) -> Result<Vec<TransferReport>, Error> {
    for name in only {
        if pipeline.stage_index(name).is_none() {
            return Err(Error::UnknownStage {
                name: name.clone(),
                file: pipeline.file.clone(),
            });
        }
    }
    let workspace = Workspace::new(&pipeline.workdir);
    std::fs::create_dir_all(&pipeline.workdir)
        .map_err(|e| Error::io("create workdir", &pipeline.workdir, e))?;
    let guard = workspace.acquire(
        pipeline
            .stages
            .iter()
            .filter(|s| only.is_empty() || only.contains(&s.name))
            .map(|s| s.name.as_str()),
    )?;
    let lock = LockFile::load(&pipeline.lock_path())?;
    let state = StateDb::open(&workspace.state_db_path());
    let mut reports = Vec::new();
    for &i in &pipeline.graph.order {
        let stage = &pipeline.stages[i];
        if !only.is_empty() && !only.contains(&stage.name) {
            continue;
        }
        let started = Instant::now();
        let verb = match direction {
            Direction::Push => "push to",
            Direction::Pull => "pull from",
        };
        let (status, moved, reason) = match lock.stages.get(&stage.name) {
            None => (
                TransferStatus::NotRecorded,
                Moved::default(),
                "the lock has no record of it".to_owned(),
            ),
            Some(record) => {
                let progress =
                    reporter.stage_started(&stage.name, &format!("{verb} {}", remote.url()));
                let outcome = match direction {
                    Direction::Push => {
                        push_stage(pipeline, &state, stage, record, remote, &*progress)
                    }
                    Direction::Pull => pull_stage(
                        &Here {
                            pipeline,
                            workspace: &workspace,
                            state: &state,
                        },
                        stage,
                        record,
                        remote,
                        force,
                        &*progress,
                    ),
                };
                match outcome {
                    Ok(None) => (
                        TransferStatus::UpToDate,
                        Moved::default(),
                        "the outputs here are the recorded ones".to_owned(),
                    ),
                    Ok(Some(moved)) => (
                        TransferStatus::Done,
                        moved,
                        format!(
                            "{} files, {} bytes moved, {} already there",
                            moved.files, moved.bytes, moved.skipped
                        ),
                    ),
                    Err(e) => (TransferStatus::Failed, Moved::default(), e.to_string()),
                }
            }
        };
        let report = TransferReport {
            name: stage.name.clone(),
            status,
            files: moved.files,
            bytes: moved.bytes,
            skipped: moved.skipped,
            seconds: started.elapsed().as_secs_f64(),
            reason,
        };
        let line = match status {
            TransferStatus::Failed => format!("[{}] FAILED: {}", report.name, report.reason),
            _ => format!("[{}] {}", report.name, report.reason),
        };
        reporter.notice(&line);
        reports.push(report);
    }
    let _ = state.save(true);
    drop(guard);
    Ok(reports)
}

/// Each declared output of `stage` with its path in the workdir.
pub(crate) fn local_outs(pipeline: &Pipeline, stage: &Stage) -> Vec<(String, PathBuf)> {
    stage
        .all_outs()
        .map(|out| (out.clone(), pipeline.resolve(out)))
        .collect()
}

/// An output's declared name, its path in the staging directory, and its path in the workdir.
pub(crate) type StagedOutput = (String, PathBuf, PathBuf);

/// Downloads the outputs `hashes` names into `staging` (verified), and returns what moved and,
/// for [`Commit::swap_in`], each output's declared name, staged path and target path.
pub(crate) fn fetch_staged(
    pipeline: &Pipeline,
    remote: &Remote,
    stage: &Stage,
    hashes: &std::collections::BTreeMap<String, crate::hash::ContentHash>,
    staging: &std::path::Path,
    progress: &dyn crate::progress::Progress,
) -> Result<(Moved, Vec<StagedOutput>), StageRunError> {
    let staged: Vec<(String, PathBuf)> = stage
        .all_outs()
        .map(|out| (out.clone(), staging.join(out)))
        .collect();
    for (_, path) in &staged {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StageRunError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
    }
    let moved = remote.fetch(&stage.name, hashes, &staged, progress)?;
    let swaps = staged
        .into_iter()
        .map(|(out, path)| {
            let target = pipeline.resolve(&out);
            (out, path, target)
        })
        .collect();
    Ok((moved, swaps))
}

/// Whether every output in place hashes to what the record says.
fn outputs_match(
    pipeline: &Pipeline,
    state: &StateDb,
    stage: &Stage,
    record: &LockedStage,
) -> Result<Option<String>, StageRunError> {
    let declared: Vec<&String> = stage.all_outs().collect();
    if let Some(gone) = record.outs.keys().find(|out| !declared.contains(out)) {
        return Ok(Some(format!(
            "the lock records output `{gone}`, which the pipeline no longer declares"
        )));
    }
    for out in stage.all_outs() {
        let now = state.hash_path(&pipeline.resolve(out)).map_err(|source| {
            StageRunError::HashOutput {
                out: out.clone(),
                source,
            }
        })?;
        match now {
            None => return Ok(Some(format!("output `{out}` is missing"))),
            Some(hash) if record.outs.get(out) != Some(&hash) => {
                return Ok(Some(format!(
                    "output `{out}` is not what the lock recorded"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

fn push_stage(
    pipeline: &Pipeline,
    state: &StateDb,
    stage: &Stage,
    record: &LockedStage,
    remote: &Remote,
    progress: &dyn crate::progress::Progress,
) -> Result<Option<Moved>, StageRunError> {
    if let Some(why) = outputs_match(pipeline, state, stage, record)? {
        return Err(StageRunError::Remote(RemoteError::NotAsRecorded {
            stage: stage.name.clone(),
            why,
        }));
    }
    Ok(Some(remote.push(
        record,
        &local_outs(pipeline, stage),
        progress,
    )?))
}

/// The workdir a transfer reads and writes: its pipeline, engine directory and hashes.
struct Here<'a> {
    pipeline: &'a Pipeline,
    workspace: &'a Workspace,
    state: &'a StateDb,
}

fn pull_stage(
    here: &Here<'_>,
    stage: &Stage,
    record: &LockedStage,
    remote: &Remote,
    force: bool,
    progress: &dyn crate::progress::Progress,
) -> Result<Option<Moved>, StageRunError> {
    let Here {
        pipeline,
        workspace,
        state,
    } = *here;
    if outputs_match(pipeline, state, stage, record)?.is_none() {
        return Ok(None);
    }
    if !force {
        for out in stage.all_outs() {
            let here = state.hash_path(&pipeline.resolve(out)).map_err(|source| {
                StageRunError::HashOutput {
                    out: out.clone(),
                    source,
                }
            })?;
            if here.is_some_and(|hash| record.outs.get(out) != Some(&hash)) {
                return Err(StageRunError::Remote(RemoteError::WouldReplace {
                    stage: stage.name.clone(),
                    out: out.clone(),
                }));
            }
        }
    }
    let staging = workspace.staging_dir(&stage.name)?;
    let result = (|| {
        let (moved, staged) =
            fetch_staged(pipeline, remote, stage, &record.outs, &staging, progress)?;
        let commit = Commit::swap_in(workspace, &stage.name, staged)?;
        for out in stage.all_outs() {
            state.forget(&pipeline.resolve(out));
        }
        commit.finish()?;
        Ok(Some(moved))
    })();
    let _ = remove_path(&staging);
    result
}
