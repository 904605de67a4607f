//! `cargo xtask bench pipeline`: how long a fully cached re-run of a large pipeline takes. The
//! engine must not re-read unchanged data to decide that nothing changed (state db of file
//! metadata, as DVC does), nor look at a directory again for every stage that depends on it.
//!
//! Two shapes over 10,000 files / 500 MB and 20 stages:
//! - `chain`: each stage depends on its own slice of the files and on the previous stage's
//!   output; goal under 0.2 s.
//! - `fan-out` (DVC's own benchmark shape): the stages form a chain, and one directory holding
//!   all the files is a dep of 6 of them; goal under 0.1 s. It also times a one-file edit in
//!   that directory, which must re-run exactly the 6 stages that depend on it.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Args, ValueEnum};
use textrec_pipeline::{Pipeline, Registry, RunOptions, SilentReporter, StageStatus};

#[derive(Debug, Args)]
pub struct PipelineBench {
    /// Which pipeline shape to time.
    #[arg(long, value_enum, default_value_t = Shape::Both)]
    shape: Shape,
    /// Number of stages.
    #[arg(long, default_value_t = 20)]
    stages: usize,
    /// Total number of dependency files.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Total size of the dependency files.
    #[arg(long, default_value_t = 500)]
    megabytes: usize,
    /// Fan-out shape: how many of the stages depend on the shared directory.
    #[arg(long, default_value_t = 6)]
    fan_out: usize,
    /// Timed cached re-runs.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Where to build the benchmark workspaces, one directory per shape
    /// [default: target/bench-pipeline].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// Each stage hashes its own slice of the files.
    Chain,
    /// One directory of all the files is a dep of `--fan-out` stages.
    FanOut,
    /// Both, chain first.
    Both,
}

pub fn pipeline(args: &PipelineBench, registry: &Registry) -> anyhow::Result<ExitCode> {
    ensure!(
        args.stages > 0 && args.files >= args.stages,
        "need at least one file per stage"
    );
    ensure!(
        (1..=args.stages).contains(&args.fan_out),
        "--fan-out must be between 1 and --stages"
    );
    ensure!(args.runs > 0, "--runs must be at least 1");
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => crate::workspace_root()?.join("target/bench-pipeline"),
    };
    if matches!(args.shape, Shape::Chain | Shape::Both) {
        let file = prepare_chain(&dir.join("chain"), args)?;
        let times = time_noop(&file, registry, args.runs)?;
        println!(
            "pipeline bench, chain: {} stages, {} files, {} MB (each stage its own slice)",
            args.stages, args.files, args.megabytes
        );
        times.print("0.200");
    }
    if matches!(args.shape, Shape::FanOut | Shape::Both) {
        let (file, fanned) = prepare_fan_out(&dir.join("fan-out"), args)?;
        let times = time_noop(&file, registry, args.runs)?;
        println!(
            "pipeline bench, fan-out: {} stages in a chain, one directory of {} files / {} MB \
             that {} of them depend on",
            args.stages, args.files, args.megabytes, args.fan_out
        );
        times.print("0.100");
        time_one_file_edits(&file, registry, &fanned)?;
    }
    Ok(ExitCode::SUCCESS)
}

struct NoopTimes {
    /// The first run's time and how many stages it ran (all, in a new workspace; none when an
    /// earlier bench left the workspace up to date).
    first: (f64, usize),
    in_process: Vec<f64>,
    cli: Vec<f64>,
}

impl NoopTimes {
    fn print(mut self, goal: &str) {
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let runs = self.cli.len();
        let (seconds, ran) = self.first;
        println!("  first run, settling the workspace: {seconds:.2}s, ran {ran} stages");
        println!(
            "  cached re-run, in process: median {:.3}s, min {:.3}s over {runs} runs",
            median(&mut self.in_process),
            self.in_process[0],
        );
        println!(
            "  cached re-run, `xtask run` process: median {:.3}s, min {:.3}s (goal < {goal}s)",
            median(&mut self.cli),
            self.cli[0]
        );
    }
}

/// Runs the pipeline until it is settled, then times `runs` no-op re-runs in this process and as
/// `xtask run` processes; each must run nothing.
fn time_noop(file: &Path, registry: &Registry, runs: usize) -> anyhow::Result<NoopTimes> {
    let pipeline = Pipeline::load(file, registry, &[])?;
    let options = RunOptions::default();
    let started = Instant::now();
    let first = textrec_pipeline::run(&pipeline, registry, &options, &SilentReporter)?;
    ensure!(
        first.ok,
        "first run failed: {:?}",
        first
            .stages
            .iter()
            .find(|s| s.status == StageStatus::Failed)
    );
    let ran = first
        .stages
        .iter()
        .filter(|s| s.status == StageStatus::Ran)
        .count();
    let first = (started.elapsed().as_secs_f64(), ran);

    // Hashes taken within 2 s of a file's last write are not trusted (racy); let them settle once.
    std::thread::sleep(Duration::from_millis(2100));
    textrec_pipeline::run(&pipeline, registry, &options, &SilentReporter)?;

    let mut in_process = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let pipeline = Pipeline::load(file, registry, &[])?;
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
    let mut cli = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let status = Command::new(&exe)
            .args(["run", "--quiet"])
            .arg(file)
            .status()?;
        cli.push(started.elapsed().as_secs_f64());
        ensure!(status.success(), "cli re-run failed: {status}");
    }
    Ok(NoopTimes {
        first,
        in_process,
        cli,
    })
}

/// One-file edits timed on the fan-out shape.
const EDITS: usize = 5;

/// `EDITS` times: changes one byte of one file in the fan-out directory, times the `xtask run`
/// that follows and checks that it ran exactly `fanned`, the stages that depend on the directory
/// (their outputs, file counts, do not change, so nothing downstream of them may run); then puts
/// the byte back and runs again, which must re-run the same stages.
fn time_one_file_edits(file: &Path, registry: &Registry, fanned: &[String]) -> anyhow::Result<()> {
    let workdir = file.parent().context("the pipeline file has a directory")?;
    let shared = workdir.join("shared");
    let mut files = fs::read_dir(&shared)
        .with_context(|| format!("list {}", shared.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    files.sort();
    let exe = std::env::current_exe().context("find the xtask binary")?;
    let mut times = Vec::with_capacity(EDITS);
    let mut cached = 0;
    for k in 0..EDITS {
        let edited = files
            .get(files.len() * (2 * k + 1) / (2 * EDITS))
            .with_context(|| format!("{} is empty", shared.display()))?;
        let original = fs::read(edited).with_context(|| format!("read {}", edited.display()))?;
        ensure!(!original.is_empty(), "{} is empty", edited.display());
        let mut changed = original.clone();
        changed[0] ^= 0xff;
        fs::write(edited, &changed).with_context(|| format!("write {}", edited.display()))?;

        let started = Instant::now();
        let output = Command::new(&exe)
            .args(["run", "--quiet", "--json"])
            .arg(file)
            .output()?;
        times.push(started.elapsed().as_secs_f64());
        // Put the byte back whatever the run did, and bring the lock back to the original data.
        fs::write(edited, &original).with_context(|| format!("restore {}", edited.display()))?;
        let pipeline = Pipeline::load(file, registry, &[])?;
        let restored =
            textrec_pipeline::run(&pipeline, registry, &RunOptions::default(), &SilentReporter)?;

        ensure!(
            output.status.success(),
            "the run after editing {} failed: {}",
            edited.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("parse `xtask run --json`")?;
        let stages = report["stages"]
            .as_array()
            .context("`xtask run --json` lists stages")?;
        let ran: Vec<&str> = stages
            .iter()
            .filter(|s| s["status"] == "ran")
            .filter_map(|s| s["name"].as_str())
            .collect();
        ensure!(
            ran == fanned,
            "editing {} must re-run exactly {fanned:?}, but ran {ran:?}",
            edited.display()
        );
        cached = stages.iter().filter(|s| s["status"] == "cached").count();
        let rerun: Vec<&str> = restored
            .stages
            .iter()
            .filter(|s| s.status == StageStatus::Ran)
            .map(|s| s.name.as_str())
            .collect();
        ensure!(
            restored.ok && rerun == fanned,
            "undoing the edit of {} must re-run exactly {fanned:?}, but ran {rerun:?}",
            edited.display()
        );
    }
    let fastest = times.iter().copied().fold(f64::INFINITY, f64::min);
    times.sort_by(f64::total_cmp);
    println!(
        "  one-file edit in the shared directory, `xtask run` process: median {:.3}s, min \
         {fastest:.3}s over {EDITS} edits; each ran exactly the {} that depend on it ({}), {cached} \
         cached",
        times[EDITS / 2],
        fanned.len(),
        fanned.join(", ")
    );
    Ok(())
}

/// Chain shape: writes the input files (once per size configuration) and a pipeline over them.
fn prepare_chain(dir: &Path, args: &PipelineBench) -> anyhow::Result<PathBuf> {
    write_inputs(dir, args, |n| format!("inputs/{:03}", n % args.stages))?;
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

/// Fan-out shape: one directory `shared/` of all the files; stage `s` depends on the previous
/// stage's output, and `--fan-out` stages spread evenly along the chain (the first among them)
/// also on `shared/`. Returns the pipeline file and the names of those stages.
fn prepare_fan_out(dir: &Path, args: &PipelineBench) -> anyhow::Result<(PathBuf, Vec<String>)> {
    write_inputs(dir, args, |_| "shared".to_owned())?;
    let fanned: Vec<usize> = (0..args.fan_out)
        .map(|k| k * args.stages / args.fan_out)
        .collect();
    let mut yaml = String::from("# Generated by `cargo xtask bench pipeline --shape fan-out`.\n");
    yaml.push_str("stages:\n");
    for s in 0..args.stages {
        let mut deps = Vec::new();
        if fanned.contains(&s) {
            deps.push("shared".to_owned());
        }
        if s > 0 {
            deps.push(format!("out/{:03}.txt", s - 1));
        }
        // Each output is a file count (of the shared directory, or carried along the chain), so a
        // content edit in `shared/` leaves every output as it was.
        let cmd = if fanned.contains(&s) {
            "ls \"$DEP_0\" | wc -l > \"$OUT\""
        } else {
            "cat \"$DEP_0\" > \"$OUT\""
        };
        let _ = write!(
            yaml,
            "  - name: stage-{s:03}\n    kind: shell\n    deps: [{}]\n    \
             params: {{cmd: '{cmd}'}}\n    outs: [out/{s:03}.txt]\n",
            deps.join(", ")
        );
    }
    let file = dir.join("bench.yaml");
    fs::write(&file, yaml)?;
    let names = fanned.iter().map(|s| format!("stage-{s:03}")).collect();
    Ok((file, names))
}

/// Writes `args.files` files of pseudo-random bytes, file `n` into the directory `place(n)` under
/// `dir`, unless a marker says this size configuration is already there.
fn write_inputs(
    dir: &Path,
    args: &PipelineBench,
    place: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    let marker = dir.join(format!(
        "inputs-{}-{}-{}.done",
        args.stages, args.files, args.megabytes
    ));
    if marker.exists() {
        return Ok(());
    }
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
        let target = dir.join(place(n));
        fs::create_dir_all(&target)?;
        for byte in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        fs::write(target.join(format!("{n:06}.bin")), &block)?;
    }
    fs::write(&marker, b"")?;
    Ok(())
}
