//! `shell`: run a command with declared deps and outs, so users can mix their own tools into a
//! pipeline (as `cmd:` in DVC). The command writes its outputs to the paths in `$OUT_0`, `$OUT_1`,
//! ... (`$OUT` = `$OUT_0`) and metrics files to `$METRICS_0`, ...; it reads deps from `$DEP_0`, ...
//! Those are staging paths: the engine moves them into place only if the command exits 0.

use std::collections::BTreeMap;
use std::fs::File;
use std::process::{Command, Stdio};

use serde::Deserialize;
use textrec_pipeline::{
    InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params, run_in_process_group,
};

use crate::error::StageError;

#[derive(Debug, Clone, Copy)]
pub struct Shell;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellParams {
    /// Run by `sh -c` in the pipeline's workdir.
    cmd: String,
    /// Extra environment variables; part of the cache key like every param.
    #[serde(default)]
    env: BTreeMap<String, String>,
}

impl StageKind for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "run `cmd` with sh; outputs go to $OUT_i, metrics to $METRICS_i, deps are $DEP_i"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        let params: ShellParams = parse_params(&stage.params)?;
        if params.cmd.trim().is_empty() {
            return Err(InvalidStage::param("cmd", "`cmd` is empty"));
        }
        Ok(())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params: ShellParams = ctx.params()?;
        let log = File::create(&ctx.log).map_err(|source| StageError::Io {
            action: "create log",
            path: ctx.log.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| StageError::Io {
            action: "open log",
            path: ctx.log.clone(),
            source,
        })?;

        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&params.cmd)
            .current_dir(ctx.workdir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env("TEXTREC_STAGE", &ctx.stage.name)
            .env("TEXTREC_WORKDIR", ctx.workdir);
        let (outs, metrics) = ctx.outs.split_at(ctx.stage.outs.len());
        for (prefix, paths) in [("OUT", outs), ("METRICS", metrics)] {
            for (i, (_, path)) in paths.iter().enumerate() {
                command.env(format!("{prefix}_{i}"), path);
            }
            if let Some((_, first)) = paths.first() {
                command.env(prefix, first);
            }
        }
        for (i, dep) in ctx.deps.iter().enumerate() {
            command.env(format!("DEP_{i}"), dep);
        }
        if let Some(first) = ctx.deps.first() {
            command.env("DEP", first);
        }
        command.envs(&params.env);
        // The command and all it starts die with the engine, so a killed run leaves no orphan
        // writing into a staging directory.
        let status = run_in_process_group(&mut command).map_err(|source| StageError::Spawn {
            cmd: params.cmd.clone(),
            source,
        })?;
        if status.success() {
            return Ok(());
        }
        let status = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "failed".to_owned(),
        };
        Err(StageError::CommandFailed {
            cmd: params.cmd,
            status,
            log: ctx.log.clone(),
            tail: log_tail(&ctx.log, 15),
        }
        .into())
    }
}

fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        "(no output)".to_owned()
    } else {
        tail
    }
}
