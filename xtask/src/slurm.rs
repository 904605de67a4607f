//! `cargo xtask run --executor slurm`: the stale stages of a pipeline as Slurm jobs on a shared
//! disk. Each job runs `xtask run PIPELINE --only STAGE` after the jobs of its stale upstream
//! stages (`--dependency=afterok:`, and `--kill-on-invalid-dep=yes`, so a failed stage cancels
//! what depends on it instead of leaving it pending forever). Stages that are up to date, or that
//! the remote cache holds (pulled here first), are not submitted. The per-stage locks let the jobs
//! run at once on the same workdir and merge their records into one lock file.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use textrec_pipeline::{
    Pipeline, Registry, RunOptions, Stage, StageStatus, TerminalReporter, Verbosity,
};

/// How the submitted jobs are run.
pub struct Submission<'a> {
    /// The pipeline file as the jobs must read it (absolute).
    pub file: PathBuf,
    pub overrides: &'a [String],
    /// The remote the jobs pull from and push to (`None`: `--no-remote`).
    pub remote: Option<String>,
    pub force: bool,
    /// Extra `sbatch` arguments for every job (`--partition=gpu`, `--account=...`).
    pub sbatch_args: &'a [String],
    /// Wait for every job to end and exit with their outcome.
    pub wait: bool,
    pub json: bool,
}

/// One submitted job, as `.textrec/slurm/jobs.json` keeps it for `xtask status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub stage: String,
    pub job: String,
    /// The jobs it waits for.
    pub after: Vec<String>,
    pub log: PathBuf,
    /// Slurm's state when last asked (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JobsFile {
    jobs: Vec<Job>,
}

const ENDED: [&str; 9] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
];

fn jobs_file(pipeline: &Pipeline) -> PathBuf {
    pipeline.workdir.join(".textrec/slurm/jobs.json")
}

/// Pulls what the remote holds, then submits the stages still stale; with `wait`, follows the
/// jobs to their end.
pub fn submit(
    pipeline: &Pipeline,
    registry: &Registry,
    options: &RunOptions,
    submission: &Submission<'_>,
) -> anyhow::Result<ExitCode> {
    let reporter = TerminalReporter::new(if submission.json {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    });
    if options.remote.is_some() && !options.force {
        let pull = RunOptions {
            pull_only: true,
            ..options.clone()
        };
        let report = textrec_pipeline::run(pipeline, registry, &pull, &reporter)?;
        if let Some(failed) = report
            .stages
            .iter()
            .find(|s| s.status == StageStatus::Failed)
        {
            bail!("stage `{}` cannot run: {}", failed.name, failed.reason);
        }
    }
    let plan = textrec_pipeline::run(
        pipeline,
        registry,
        &RunOptions {
            dry_run: true,
            remote: None,
            ..options.clone()
        },
        &reporter,
    )?;
    if let Some(failed) = plan.stages.iter().find(|s| s.status == StageStatus::Failed) {
        bail!("stage `{}` cannot run: {}", failed.name, failed.reason);
    }
    let stale: Vec<bool> = pipeline
        .stages
        .iter()
        .map(|stage| {
            plan.stages
                .iter()
                .any(|r| r.name == stage.name && r.status == StageStatus::WouldRun)
        })
        .collect();
    let logs = pipeline.workdir.join(".textrec/slurm");
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let xtask = std::env::current_exe().context("find the xtask binary")?;
    let mut jobs: Vec<Job> = Vec::new();
    let mut job_of: Vec<Option<String>> = vec![None; pipeline.stages.len()];
    for &i in &pipeline.graph.order {
        if !stale[i] {
            continue;
        }
        let stage = &pipeline.stages[i];
        let after: Vec<String> = pipeline.graph.upstream[i]
            .iter()
            .filter_map(|&j| job_of[j].clone())
            .collect();
        let mut sbatch = sbatch_command(submission, &xtask, stage, &after, &logs)?;
        let id = match run_sbatch(&mut sbatch) {
            Ok(id) => id,
            Err(e) => {
                cancel(&jobs);
                return Err(e.context(format!(
                    "submitting stage `{}` (the {} jobs submitted before it were cancelled)",
                    stage.name,
                    jobs.len()
                )));
            }
        };
        if !submission.json {
            let waits = if after.is_empty() {
                String::new()
            } else {
                format!(" after {}", after.join(", "))
            };
            eprintln!("[{}] submitted as Slurm job {id}{waits}", stage.name);
        }
        job_of[i] = Some(id.clone());
        jobs.push(Job {
            stage: stage.name.clone(),
            log: logs.join(format!("{}-{id}.log", stage.name)),
            job: id,
            after,
            state: None,
        });
    }
    let record = serde_json::to_vec_pretty(&JobsFile { jobs: jobs.clone() })?;
    textrec_pipeline::write_atomic(&jobs_file(pipeline), &record)
        .with_context(|| format!("write {}", jobs_file(pipeline).display()))?;
    if !submission.wait {
        if submission.json {
            println!("{}", serde_json::json!({ "jobs": jobs, "ok": true }));
        } else {
            eprintln!(
                "{} jobs submitted; `cargo xtask status {}` follows them",
                jobs.len(),
                submission.file.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    follow(&mut jobs);
    let ok = jobs.iter().all(|j| j.state.as_deref() == Some("COMPLETED"));
    if submission.json {
        println!("{}", serde_json::json!({ "jobs": jobs, "ok": ok }));
    } else {
        for job in &jobs {
            let state = job.state.as_deref().unwrap_or("UNKNOWN");
            eprintln!("[{}] job {} {state}", job.stage, job.job);
            if state != "COMPLETED" && job.log.is_file() {
                eprintln!("  log: {}", job.log.display());
            }
        }
        eprintln!(
            "{}: {} jobs ended in {:.1}s",
            if ok { "ok" } else { "FAILED" },
            jobs.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Polls every job until each has ended (or Slurm could not tell about it for 30 s).
fn follow(jobs: &mut [Job]) {
    // A job Slurm cannot tell about for this many polls in a row (30 s) is given up as UNKNOWN;
    // one failed poll (a busy controller) is not an answer.
    const UNKNOWN_POLLS: u32 = 60;
    let mut unknown = vec![0u32; jobs.len()];
    loop {
        for (job, unknown) in jobs.iter_mut().zip(&mut unknown) {
            if job.state.as_deref().is_some_and(|s| ENDED.contains(&s)) {
                continue;
            }
            let state = job_state(&job.job);
            *unknown = if state == "UNKNOWN" { *unknown + 1 } else { 0 };
            if state != "UNKNOWN" || *unknown >= UNKNOWN_POLLS {
                job.state = Some(state);
            }
        }
        let settled = jobs.iter().zip(&unknown).all(|(job, &polls)| {
            job.state.as_deref().is_some_and(|s| ENDED.contains(&s)) || polls >= UNKNOWN_POLLS
        });
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The `sbatch` command that submits `stage`: `xtask run FILE --only STAGE` with the run's
/// overrides and remote, after the jobs `after`, with the stage's resources.
fn sbatch_command(
    submission: &Submission<'_>,
    xtask: &Path,
    stage: &Stage,
    after: &[String],
    logs: &Path,
) -> anyhow::Result<Command> {
    let mut command = vec![
        xtask.display().to_string(),
        "run".into(),
        submission.file.display().to_string(),
        "--only".into(),
        stage.name.clone(),
    ];
    for set in submission.overrides {
        command.extend(["-S".into(), set.clone()]);
    }
    if submission.force {
        command.push("--force".into());
    }
    match &submission.remote {
        Some(url) => command.extend(["--remote".into(), url.clone()]),
        None => command.push("--no-remote".into()),
    }
    let mut sbatch = Command::new("sbatch");
    sbatch
        .arg("--parsable")
        .arg(format!("--job-name=textrec-{}", stage.name))
        .arg(format!(
            "--output={}",
            logs.join(format!("{}-%j.log", stage.name)).display()
        ))
        .arg("--kill-on-invalid-dep=yes")
        .arg(format!("--chdir={}", std::env::current_dir()?.display()));
    if !after.is_empty() {
        sbatch.arg(format!("--dependency=afterok:{}", after.join(":")));
    }
    if let Some(resources) = &stage.resources {
        if let Some(cpus) = resources.cpus {
            sbatch.arg(format!("--cpus-per-task={cpus}"));
        }
        if let Some(mem) = resources.mem_gb {
            sbatch.arg(format!("--mem={}M", (mem * 1024.0).ceil() as u64));
        }
        if let Some(gpus) = resources.gpus.filter(|&g| g > 0) {
            sbatch.arg(format!("--gres=gpu:{gpus}"));
        }
        if let Some(time) = &resources.time {
            sbatch.arg(format!("--time={time}"));
        }
    }
    sbatch.args(submission.sbatch_args);
    let words: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
    sbatch.arg(format!("--wrap=exec {}", words.join(" ")));
    Ok(sbatch)
}

/// The jobs the last `--executor slurm` run submitted for this workdir, with their states now;
/// `None` when it never submitted any.
pub fn last_jobs(pipeline: &Pipeline) -> anyhow::Result<Option<Vec<Job>>> {
    let path = jobs_file(pipeline);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mut file: JobsFile = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a jobs file xtask wrote", path.display()))?;
    for job in &mut file.jobs {
        job.state = Some(job_state(&job.job));
    }
    Ok(Some(file.jobs))
}

/// Slurm's state of a job (`scontrol show job`), `UNKNOWN` once Slurm has forgotten it.
fn job_state(id: &str) -> String {
    let Ok(out) = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .output()
    else {
        return "UNKNOWN".into();
    };
    if !out.status.success() {
        return "UNKNOWN".into();
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|field| field.strip_prefix("JobState="))
        .map_or_else(|| "UNKNOWN".into(), str::to_owned)
}

fn run_sbatch(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .context("run sbatch (is Slurm's client installed, and SLURM_CONF set if needed?)")?;
    if !out.status.success() {
        bail!(
            "sbatch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        bail!(
            "sbatch --parsable printed `{}`, not a job id",
            stdout.trim()
        );
    }
    Ok(id)
}

fn cancel(jobs: &[Job]) {
    if jobs.is_empty() {
        return;
    }
    let _ = Command::new("scancel")
        .args(jobs.iter().map(|j| j.job.as_str()))
        .status();
}

/// `text` as one word for `sh`.
fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Where a pipeline file is, absolute, for jobs that may start in another directory.
pub fn absolute(file: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(file).with_context(|| format!("find {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_with_spaces_or_quotes_stays_one_word_for_sh() {
        for word in ["plain", "with space", "it's", "$HOME", ""] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }
}
