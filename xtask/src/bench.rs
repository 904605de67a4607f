//! `cargo xtask bench pipeline`: how long a fully cached re-run of a large pipeline takes. The
//! engine must not re-read unchanged data to decide that nothing changed (state db of file
//! metadata, as DVC does); the goal is under 0.2 s for 20 stages over 10,000 files / 500 MB.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use textrec_pipeline::{Pipeline, Registry, RunOptions, SilentReporter, StageStatus};

#[derive(Debug, Args)]
pub struct PipelineBench {
    /// Number of stages (each hashes its own slice of the files).
    #[arg(long, default_value_t = 20)]
    stages: usize,
    /// Total number of dependency files.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Total size of the dependency files.
    #[arg(long, default_value_t = 500)]
    megabytes: usize,
    /// Timed cached re-runs.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Where to build the benchmark workspace [default: target/bench-pipeline].
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn pipeline(args: &PipelineBench, registry: &Registry) -> anyhow::Result<ExitCode> {
    ensure!(
        args.stages > 0 && args.files >= args.stages,
        "need at least one file per stage"
    );
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => crate::workspace_root()?.join("target/bench-pipeline"),
    };
    let file = prepare(&dir, args)?;
    let pipeline = Pipeline::load(&file, registry, &[])?;
    let options = RunOptions::default();

    let started = Instant::now();
    let cold = textrec_pipeline::run(&pipeline, registry, &options, &SilentReporter)?;
    ensure!(
        cold.ok,
        "cold run failed: {:?}",
        cold.stages.iter().find(|s| s.status == StageStatus::Failed)
    );
    let cold_seconds = started.elapsed().as_secs_f64();

    // Hashes taken within 2 s of a file's last write are not trusted (racy); let them settle once.
    std::thread::sleep(Duration::from_millis(2100));
    textrec_pipeline::run(&pipeline, registry, &options, &SilentReporter)?;

    let mut in_process = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let started = Instant::now();
        let pipeline = Pipeline::load(&file, registry, &[])?;
        let report = textrec_pipeline::run(&pipeline, registry, &options, &SilentReporter)?;
        in_process.push(started.elapsed().as_secs_f64());
        ensure!(
            report
                .stages
                .iter()
                .all(|s| s.status == StageStatus::Cached),
            "a cached re-run ran something: {:?}",
            report
                .stages
                .iter()
                .find(|s| s.status != StageStatus::Cached)
        );
    }
    let exe = std::env::current_exe().context("find the xtask binary")?;
    let mut cli = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let started = Instant::now();
        let status = Command::new(&exe)
            .args(["run", "--quiet"])
            .arg(&file)
            .status()?;
        cli.push(started.elapsed().as_secs_f64());
        ensure!(status.success(), "cli re-run failed: {status}");
    }

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "pipeline bench: {} stages, {} files, {} MB",
        args.stages, args.files, args.megabytes
    );
    println!("  cold run (hash everything, run every stage): {cold_seconds:.2}s");
    println!(
        "  cached re-run, in process: median {:.3}s, min {:.3}s over {} runs",
        median(&mut in_process),
        in_process[0],
        args.runs
    );
    println!(
        "  cached re-run, `xtask run` process: median {:.3}s, min {:.3}s (goal < 0.200s)",
        median(&mut cli),
        cli[0]
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the input files (once per size configuration) and a pipeline over them.
fn prepare(dir: &Path, args: &PipelineBench) -> anyhow::Result<PathBuf> {
    let marker = dir.join(format!(
        "inputs-{}-{}-{}.done",
        args.stages, args.files, args.megabytes
    ));
    if !marker.exists() {
        eprintln!(
            "writing {} files ({} MB) under {} ...",
            args.files,
            args.megabytes,
            dir.display()
        );
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("clear {}", dir.display()))?;
        }
        let file_size = args.megabytes * 1_000_000 / args.files;
        let mut block = vec![0u8; file_size];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for n in 0..args.files {
            let stage_dir = dir.join(format!("inputs/{:03}", n % args.stages));
            fs::create_dir_all(&stage_dir)?;
            for byte in block.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            fs::write(stage_dir.join(format!("{n:06}.bin")), &block)?;
        }
        fs::write(&marker, b"")?;
    }
    let mut yaml = String::from("# Generated by `cargo xtask bench pipeline`.\nstages:\n");
    for s in 0..args.stages {
        let _ = write!(
            yaml,
            "  - name: count-{s:03}\n    kind: shell\n    deps: [inputs/{s:03}{prev}]\n    \
             params: {{cmd: 'ls \"$DEP\" | wc -l > \"$OUT\"'}}\n    outs: [counts/{s:03}.txt]\n",
            prev = if s > 0 {
                format!(", counts/{:03}.txt", s - 1)
            } else {
                String::new()
            }
        );
    }
    let file = dir.join("bench.yaml");
    fs::write(&file, yaml)?;
    Ok(file)
}
