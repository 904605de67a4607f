//! `cargo xtask`: run textrec's pipelines and project chores. Thin by design: argument parsing,
//! then calls into `textrec-pipeline` (the engine) and `textrec-stages` (the stage kinds).

mod bench;
mod bench_infer;
mod bench_serve;
mod bench_train;
mod ci;
mod data;
mod slurm;
mod tidy;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use textrec_pipeline::{
    DagFormat, Direction, LockFile, Pipeline, REMOTE_ENV, Remote, RemoteError, RunOptions,
    RunReport, StageStatus, TerminalReporter, TransferStatus, Verbosity, metrics, render_dag,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a stage failed (or a gate failed, for `ci`)
  2  invalid pipeline file or usage
  3  another run holds a stage this run needs";

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    about = "Run textrec's declarative ML pipelines and project chores.",
    long_about = "Run textrec's declarative ML pipelines and project chores.\n\n\
        A pipeline is a YAML file of stages (download, synthesize, train, export, evaluate, package, \
        or your own `shell` commands). Each stage declares its deps, params and outs; a stage runs \
        only when the content of a dep, a param, or one of its outputs changed since the run recorded \
        in the lock file beside the pipeline (pipeline.yaml -> pipeline.lock).",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stale stages of a pipeline, in parallel where the DAG allows.
    #[command(after_help = concat!(
        "Examples:\n",
        "  cargo xtask run pipeline.yaml                      run what changed\n",
        "  cargo xtask run pipeline.yaml --dry-run            show what would run and why\n",
        "  cargo xtask run pipeline.yaml -S train-chars.epochs=3 --from train-chars\n",
        "  cargo xtask run configs/smoke.yaml --json | jq .ok\n",
        "  cargo xtask run pipeline.yaml --executor slurm --remote s3://team-bucket/textrec\n\n",
        "Exit codes: 0 ok, 1 a stage failed, 2 invalid pipeline/usage, 3 a stage is held by another run"
    ))]
    Run(RunArgs),
    /// Push the outputs the lock file records to the remote cache (objects first, then each
    /// stage's run record), so other machines pull them instead of running the stages.
    #[command(after_help = concat!(
        "Examples:\n",
        "  cargo xtask push pipeline.yaml --remote s3://team-bucket/textrec\n",
        "  TEXTREC_REMOTE=file:///mnt/nfs/textrec-cache cargo xtask push pipeline.yaml --only train-lines\n\n",
        "S3 credentials and endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,\n",
        "AWS_ENDPOINT_URL (an S3-compatible server) and AWS_ALLOW_HTTP=true (plain http).\n\n",
        "Exit codes: 0 ok, 1 a stage could not be pushed, 2 invalid pipeline/usage, 3 a stage is held by another run"
    ))]
    Push(TransferArgs),
    /// Pull the outputs the lock file records from the remote cache into the workdir (a fresh
    /// clone then runs nothing): every byte is checked against its hash.
    #[command(after_help = concat!(
        "Example:\n  git clone ... && cd textrec && cargo xtask pull pipeline.yaml --remote s3://team-bucket/textrec\n\n",
        "Exit codes: 0 ok, 1 a stage could not be pulled, 2 invalid pipeline/usage, 3 a stage is held by another run"
    ))]
    Pull(TransferArgs),
    /// Print the stage graph as text, Graphviz dot or Mermaid.
    #[command(
        after_help = "Example:\n  cargo xtask dag pipeline.yaml --format dot | dot -Tsvg > dag.svg"
    )]
    Dag {
        /// The pipeline file.
        pipeline: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List stale stages and why they would run; changes nothing.
    #[command(after_help = "Example:\n  cargo xtask status pipeline.yaml")]
    Status {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Show or compare the metrics stages recorded in the lock file.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// List the stage kinds a pipeline can use.
    Stages,
    /// Look at datasets: statistics and a contact sheet of samples.
    #[command(subcommand)]
    Data(DataCommand),
    /// Benchmarks (numbers, not pass/fail tests).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Check that every module has a `//!` doc, no comment or document points outside the
    /// repository, and no two sibling modules import each other (directly or round a circle).
    #[command(
        after_help = "A gate of `cargo xtask ci`. Each finding names the file and line; a circle names \
        one import on each of its edges."
    )]
    Tidy {
        /// The checkout to check (default: this one).
        root: Option<PathBuf>,
    },
    /// Run every CI gate: fmt, clippy, tidy and docs, tests, cargo-deny, the smoke pipeline twice.
    #[command(
        after_help = "This is the README's test command; .ci/run and GitHub Actions run exactly it."
    )]
    Ci,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The pipeline file (e.g. pipeline.yaml, configs/smoke.yaml).
    pipeline: PathBuf,
    /// Print what would run and why (which dep or param changed); touch nothing.
    #[arg(long)]
    dry_run: bool,
    /// Re-run the selected stages even if they are up to date.
    #[arg(long)]
    force: bool,
    /// Run only this stage (repeatable); its inputs must already exist.
    #[arg(long, value_name = "STAGE")]
    only: Vec<String>,
    /// Run this stage and everything downstream of it (repeatable).
    #[arg(long, value_name = "STAGE")]
    from: Vec<String>,
    /// Override a param without editing the file, e.g. -S train.epochs=3 (type-checked).
    #[arg(short = 'S', long = "set", value_name = "STAGE.KEY=VALUE")]
    set: Vec<String>,
    /// Stages running at once [default: number of cores].
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Print one JSON object at the end: {"stages":[{"name","status","seconds","reason"}],"ok"}.
    #[arg(long)]
    json: bool,
    /// Print only failures.
    #[arg(long, short = 'q')]
    quiet: bool,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Where stale stages run: here, or as Slurm jobs (one `sbatch` per stage, after its
    /// upstream jobs; the workdir must be on a disk every node shares).
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    executor: Executor,
    /// With --executor slurm: wait for the jobs to end and exit 0 only if every one completed.
    #[arg(long, requires = "executor")]
    wait: bool,
    /// With --executor slurm: an extra sbatch argument for every job (repeatable), e.g.
    /// --sbatch-arg=--partition=gpu.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    sbatch_arg: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Executor {
    Local,
    Slurm,
}

/// Which remote cache to use: `--remote`, else $TEXTREC_REMOTE, else the pipeline's `remote:`.
#[derive(Debug, Args)]
struct RemoteArgs {
    /// The remote cache: s3://BUCKET/PREFIX, gs://..., az://..., file:///PATH. A stale stage whose
    /// run the remote holds is pulled instead of run; a stage that runs is pushed.
    #[arg(long, value_name = "URL", conflicts_with = "no_remote")]
    remote: Option<String>,
    /// Use no remote, even if the pipeline file or $TEXTREC_REMOTE names one.
    #[arg(long)]
    no_remote: bool,
}

impl RemoteArgs {
    fn url(&self, pipeline: &Pipeline) -> Option<String> {
        if self.no_remote {
            return None;
        }
        self.remote
            .clone()
            .or_else(|| std::env::var(REMOTE_ENV).ok().filter(|v| !v.is_empty()))
            .or_else(|| pipeline.remote.clone())
    }

    fn open(&self, pipeline: &Pipeline) -> anyhow::Result<Option<Remote>> {
        let Some(url) = self.url(pipeline) else {
            return Ok(None);
        };
        let remote = Remote::open(&url)?;
        remote.probe()?;
        Ok(Some(remote))
    }
}

#[derive(Debug, Args)]
struct TransferArgs {
    /// The pipeline file whose lock names the outputs.
    pipeline: PathBuf,
    /// Only this stage (repeatable).
    #[arg(long, value_name = "STAGE")]
    only: Vec<String>,
    /// Print one JSON array of {"name","status","files","bytes","skipped","seconds","reason"}.
    #[arg(long)]
    json: bool,
    /// Pull: replace outputs here that differ from the recorded ones (without it, such a stage
    /// fails and its outputs stay as they are).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Dot,
    Mermaid,
}

#[derive(Debug, Subcommand)]
enum MetricsCommand {
    /// Every metric a stage declared, from the lock file.
    #[command(after_help = "Example:\n  cargo xtask metrics show pipeline.yaml --json")]
    Show {
        #[arg(default_value = "pipeline.yaml")]
        pipeline: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Compare metrics with another lock file or a git revision of this one.
    #[command(
        after_help = "Examples:\n  cargo xtask metrics diff pipeline.yaml --against HEAD~1\n  \
        cargo xtask metrics diff pipeline.yaml --against old/pipeline.lock"
    )]
    Diff {
        #[arg(default_value = "pipeline.yaml")]
        pipeline: PathBuf,
        /// A lock file path, or a git revision of the pipeline's lock file.
        #[arg(long, default_value = "HEAD")]
        against: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Counts, class histogram, width and label-length statistics, and a PNG contact sheet of
    /// random samples per split with their labels.
    #[command(after_help = "Examples:\n  cargo xtask data inspect data/chars\n  \
        cargo xtask data inspect build/smoke/data/pages --json --sheet /tmp/pages.png")]
    Inspect(data::InspectArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time a fully cached re-run of a large pipeline (default: 20 stages, 10,000 files, 500 MB),
    /// as a chain and with one directory shared by several stages (plus a one-file edit in it).
    #[command(after_help = "Examples:\n  cargo xtask bench pipeline\n  \
        cargo xtask bench pipeline --shape fan-out --fan-out 6 --runs 20")]
    Pipeline(bench::PipelineBench),
    /// Transcribe held-out pages with textrec on tract and on ONNX Runtime (ORT_DYLIB_PATH) and
    /// with Tesseract (when installed): pages/s, page CER, line latency, peak RSS.
    #[command(
        after_help = "Example:\n  ORT_DYLIB_PATH=$(python3 -c 'import onnxruntime,os,glob; \
        print(glob.glob(os.path.dirname(onnxruntime.__file__)+\"/capi/libonnxruntime.so*\")[0])') \\\n    \
        cargo xtask bench infer --model build/smoke/release/textrec-0.1.0.tar.gz --pages build/smoke/data/pages"
    )]
    Infer(bench_infer::InferBench),
    /// Load-test `textrec serve` on loopback: N clients posting a line image, then a page image,
    /// for a fixed time: requests/s, p50/p99 latency, errors, server memory over the run.
    #[command(
        after_help = "Example:\n  cargo xtask bench serve --model build/smoke/release/textrec-0.1.0.tar.gz \
        --pages build/smoke/data/pages --clients 8 --seconds 20\n\n\
        Exit status 1 when any request failed."
    )]
    Serve(bench_serve::ServeBench),
    /// Training throughput on the CPU: CharCnn images/s and LineCtc lines/s in textrec (Burn)
    /// beside the same networks and steps in PyTorch (when `import torch` works).
    #[command(
        after_help = "Example:\n  apt-get install python3-torch   # once, optional\n  \
        cargo xtask bench train --json"
    )]
    Train(bench_train::TrainBench),
}

fn main() -> ExitCode {
    textrec_recognizer::memory::retain_freed_memory();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(err) => {
            let code = match err.downcast_ref::<RemoteError>() {
                Some(RemoteError::BadUrl { .. }) => 2,
                _ => err
                    .downcast_ref::<textrec_pipeline::Error>()
                    .map_or(1, |e| e.exit_code()),
            };
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let registry = textrec_stages::registry();
    match command {
        Command::Run(args) => run(args),
        Command::Push(args) => transfer(args, Direction::Push),
        Command::Pull(args) => transfer(args, Direction::Pull),
        Command::Dag { pipeline, format } => {
            let pipeline = Pipeline::load(&pipeline, &registry, &[])?;
            let format = match format {
                Format::Text => DagFormat::Text,
                Format::Dot => DagFormat::Dot,
                Format::Mermaid => DagFormat::Mermaid,
            };
            print!("{}", render_dag(&pipeline, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { pipeline, json } => {
            let pipeline = Pipeline::load(&pipeline, &registry, &[])?;
            let options = RunOptions {
                dry_run: true,
                ..RunOptions::default()
            };
            let reporter = TerminalReporter::new(Verbosity::Quiet);
            let report = textrec_pipeline::run(&pipeline, &registry, &options, &reporter)?;
            let jobs = slurm::last_jobs(&pipeline)?;
            if json {
                let mut value = serde_json::to_value(&report)?;
                if let Some(jobs) = &jobs {
                    value["slurm_jobs"] = serde_json::to_value(jobs)?;
                }
                println!("{value}");
            } else {
                print_status(&report);
                for job in jobs.iter().flatten() {
                    let state = job.state.as_deref().unwrap_or("UNKNOWN");
                    println!("{:<24} slurm job {} {state}", job.stage, job.job);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Metrics(MetricsCommand::Show { pipeline, json }) => {
            let lock = LockFile::load(&pipeline.with_extension("lock"))?;
            let table = metrics::table(&lock);
            if json {
                println!("{}", serde_json::to_string(&table)?);
            } else if table.is_empty() {
                println!(
                    "no metrics recorded in {}",
                    pipeline.with_extension("lock").display()
                );
            } else {
                for (stage, values) in &table {
                    for (metric, value) in values {
                        println!("{stage:<24} {metric:<32} {value}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Metrics(MetricsCommand::Diff {
            pipeline,
            against,
            json,
        }) => {
            let lock_path = pipeline.with_extension("lock");
            let new = metrics::table(&LockFile::load(&lock_path)?);
            let old = metrics::table(&metrics::baseline(&lock_path, &against)?);
            let rows = metrics::diff(&old, &new);
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print_metric_diff(&against, &rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stages => {
            for kind in registry.kinds() {
                println!(
                    "{:<12} v{:<3} {}",
                    kind.name(),
                    kind.version(),
                    kind.summary()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Data(DataCommand::Inspect(args)) => data::inspect_command(&args),
        Command::Bench(BenchCommand::Pipeline(args)) => bench::pipeline(&args, &registry),
        Command::Bench(BenchCommand::Infer(args)) => bench_infer::infer(&args),
        Command::Bench(BenchCommand::Serve(args)) => bench_serve::serve(&args),
        Command::Bench(BenchCommand::Train(args)) => bench_train::train(&args),
        Command::Tidy { root } => {
            let root = match root {
                Some(root) => root,
                None => workspace_root()?,
            };
            tidy::run(&root).map(|()| ExitCode::SUCCESS)
        }
        Command::Ci => ci::run(),
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    run_pipeline(args).inspect_err(|err| {
        if json {
            // Scripts reading stdout get an answer even when the pipeline never started.
            let error = serde_json::json!({"stages": [], "ok": false, "error": format!("{err:#}")});
            println!("{error}");
        }
    })
}

fn run_pipeline(args: RunArgs) -> anyhow::Result<ExitCode> {
    let registry = textrec_stages::registry();
    let pipeline = Pipeline::load(&args.pipeline, &registry, &args.set)?;
    let mut options = RunOptions {
        force: args.force,
        only: args.only,
        from: args.from,
        dry_run: args.dry_run,
        ..RunOptions::default()
    };
    if let Some(jobs) = args.jobs {
        options.jobs = jobs.max(1);
    }
    if !args.dry_run {
        options.remote = args.remote.open(&pipeline)?.map(std::sync::Arc::new);
    }
    if args.executor == Executor::Slurm && !args.dry_run {
        let submission = slurm::Submission {
            file: slurm::absolute(&args.pipeline)?,
            overrides: &args.set,
            remote: options.remote.as_ref().map(|r| r.url().to_owned()),
            force: args.force,
            sbatch_args: &args.sbatch_arg,
            wait: args.wait,
            json: args.json,
        };
        return slurm::submit(&pipeline, &registry, &options, &submission);
    }
    let verbosity = if args.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    };
    let reporter = TerminalReporter::new(verbosity);
    let started = Instant::now();
    let report = textrec_pipeline::run(&pipeline, &registry, &options, &reporter)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if !args.quiet {
        eprintln!(
            "{}",
            summary_line(&report, started.elapsed().as_secs_f64(), args.dry_run)
        );
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn transfer(args: TransferArgs, direction: Direction) -> anyhow::Result<ExitCode> {
    let registry = textrec_stages::registry();
    let pipeline = Pipeline::load(&args.pipeline, &registry, &[])?;
    let Some(remote) = args.remote.open(&pipeline)? else {
        anyhow::bail!(
            "no remote: pass --remote URL, set {REMOTE_ENV}, or add `remote:` to {}",
            args.pipeline.display()
        );
    };
    let reporter = TerminalReporter::new(Verbosity::Normal);
    let started = Instant::now();
    let reports = textrec_pipeline::transfer(
        &pipeline, &args.only, &remote, direction, args.force, &reporter,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&reports)?);
    }
    let failed = reports
        .iter()
        .filter(|r| r.status == TransferStatus::Failed)
        .count();
    let files: u64 = reports.iter().map(|r| r.files).sum();
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{}: {files} files, {:.1} MiB {} {} in {seconds:.2}s ({:.1} MiB/s), {failed} stages failed",
        if failed == 0 { "ok" } else { "FAILED" },
        bytes as f64 / f64::from(1 << 20),
        match direction {
            Direction::Push => "pushed to",
            Direction::Pull => "pulled from",
        },
        remote.url(),
        bytes as f64 / f64::from(1 << 20) / seconds.max(1e-9),
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn summary_line(report: &RunReport, seconds: f64, dry_run: bool) -> String {
    let count = |status| report.stages.iter().filter(|s| s.status == status).count();
    if dry_run {
        return format!(
            "dry run: {} would run, {} up to date, {} not selected",
            count(StageStatus::WouldRun),
            count(StageStatus::Cached),
            count(StageStatus::Skipped)
        );
    }
    let pulled = match count(StageStatus::Pulled) {
        0 => String::new(),
        n => format!(", {n} pulled"),
    };
    format!(
        "{}: {} ran{pulled}, {} cached, {} failed, {} skipped in {seconds:.2}s",
        if report.ok { "ok" } else { "FAILED" },
        count(StageStatus::Ran),
        count(StageStatus::Cached),
        count(StageStatus::Failed),
        count(StageStatus::Skipped)
    )
}

fn print_status(report: &RunReport) {
    let stale: Vec<_> = report
        .stages
        .iter()
        .filter(|s| s.status != StageStatus::Cached)
        .collect();
    if stale.is_empty() {
        println!("everything is up to date");
    }
    for stage in stale {
        let label = match stage.status {
            StageStatus::Failed => "cannot run",
            _ => "stale",
        };
        println!("{:<24} {label}: {}", stage.name, stage.reason);
    }
}

fn print_metric_diff(against: &str, rows: &[metrics::MetricChange]) {
    if rows.is_empty() {
        println!("no metrics in either lock file");
        return;
    }
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.6}"));
    let color = std::io::stdout().is_terminal();
    println!(
        "{:<24} {:<28} {:>14} {:>14} {:>14}",
        "stage", "metric", against, "workspace", "change"
    );
    for row in rows {
        let change = row
            .delta()
            .map_or_else(|| "-".to_owned(), |d| format!("{d:+.6}"));
        let line = format!(
            "{:<24} {:<28} {:>14} {:>14} {:>14}",
            row.stage,
            row.metric,
            fmt(row.old),
            fmt(row.new),
            change
        );
        if color && row.delta().is_some_and(|d| d != 0.0) {
            println!("\x1b[1m{line}\x1b[0m");
        } else {
            println!("{line}");
        }
    }
}

/// The workspace root (where Cargo.toml with `[workspace]` lives), for chores run from anywhere.
pub(crate) fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives inside the workspace")
}
