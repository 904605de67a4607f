//! `textrec`: the user-facing binary. It depends on the recognizer's inference side only.

mod serve;
mod transcribe;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use textrec_recognizer::Vocabulary;
use textrec_recognizer::bundle::{self, BundleError, TensorSummary, Verification};
use textrec_recognizer::infer::{Backend, DetectorKind};

/// The exit statuses of `textrec`, numbered as `cargo xtask`'s are: 1 the work failed, 2 bad
/// usage (clap's own choice), then statuses of their own.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Exit {
    /// A bundle fails verification (`verify`), or some inputs could not be transcribed
    /// (`transcribe`; the others were).
    Failed = 1,
    /// Unknown verb or option, missing argument or input.
    Usage = 2,
    /// No model could be loaded (`transcribe`, `serve`): none found, or a bad bundle.
    NoModel = 3,
    /// The server cannot start (address in use) or fails (`serve`).
    ServeFailed = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "textrec",
    version,
    about = "Read handwriting: transcribe images with textrec models."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the label vocabulary textrec models predict (index, token); the CTC blank is 0.
    #[command(after_help = "Example:\n  textrec vocabulary --json | jq length")]
    Vocabulary {
        /// Print a JSON array of tokens instead (index = position).
        #[arg(long)]
        json: bool,
    },
    /// Transcribe page images (PNG, JPEG, TIFF) to text: each page's lines are found, read by
    /// the line model, and written as OUTDIR/NAME.txt (and .json, .hocr, .alto.xml on request).
    #[command(after_help = "\
Folders are read for *.png, *.jpg, *.jpeg, *.tif, *.tiff (sub-folders with --recursive; the
outputs mirror them). A bad input (not an image, truncated, empty, too large) is reported with
its path and reason; the others are still transcribed. Links are followed, each folder read once.
Two inputs that would write the same output (a/page.png and b/page.png) are refused before any
work. In JSON, path bytes that are not UTF-8 are written as U+FFFD.

Exit status: 0 every input transcribed, 1 some inputs failed (each named on stderr), 2 bad usage
(unknown option, missing input, two inputs with one output), 3 no model could be loaded.

Examples:
  textrec transcribe scans/ -o text/
  textrec transcribe 'scans/*.png' -o text/ --format txt,json,hocr,alto --jobs 2
  textrec transcribe scans/ -o text/ --recursive --resume --model release/textrec-0.1.0.tar.gz
  textrec transcribe page.png -o out/ --json | jq '.inputs[] | select(.status == \"failed\")'
  textrec transcribe scans/ -o text/ -r --resume --shard $SLURM_ARRAY_TASK_ID/16")]
    Transcribe {
        /// Image files, folders, or quoted globs ('scans/*.png').
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Folder for the outputs (created if missing).
        #[arg(short, long = "output", value_name = "OUTDIR")]
        output: PathBuf,
        /// A release bundle (NAME-VERSION.tar.gz from the pipeline's package stage), or an
        /// exported line model (.onnx). Default: the newest bundle in ./release/.
        #[arg(long, value_name = "BUNDLE")]
        model: Option<PathBuf>,
        /// Output formats, comma-separated: txt, json (boxes, words, confidences, timing),
        /// hocr, alto (ALTO 4 XML).
        #[arg(long, value_delimiter = ',', default_value = "txt")]
        format: Vec<transcribe::FormatArg>,
        /// Walk sub-folders of folder inputs.
        #[arg(short, long)]
        recursive: bool,
        /// Pages transcribed at once (each on one core).
        #[arg(short, long, default_value_t = default_jobs())]
        jobs: usize,
        /// Skip inputs whose outputs all exist and are newer than the input.
        #[arg(long)]
        resume: bool,
        /// Refuse images with more pixels than this (decompression bombs, mistaken inputs).
        #[arg(long, default_value_t = 40_000_000)]
        max_pixels: u64,
        /// Print one JSON summary on stdout: {"ok","failed","inputs":[{"input","status",...}]}.
        #[arg(long)]
        json: bool,
        /// Inference engine: tract (pure Rust), ort (ONNX Runtime from ORT_DYLIB_PATH), or
        /// auto (ort when it loads, else tract with a notice).
        #[arg(long, default_value = "tract")]
        backend: Backend,
        /// Line detector: projection (binarise + projection profile) or learned (the bundle's
        /// line_fcn network); default: the one the bundle's pages.json names, which its
        /// pipeline measured better.
        #[arg(long)]
        detector: Option<DetectorKind>,
        /// Line decoding: beam (a beam search weighed by the bundle's character language model)
        /// or greedy (the network's best path alone, faster); default: beam when the bundle has
        /// a language model.
        #[arg(long)]
        decoder: Option<transcribe::Decoder>,
        /// Transcribe only part K (from 0) of N disjoint parts of the inputs, each input's part
        /// fixed by its own path: one task of a cluster array (see the README).
        #[arg(long, value_name = "K/N")]
        shard: Option<transcribe::Shard>,
    },
    /// Serve the transcriber over HTTP: POST /v1/transcribe, GET /healthz, GET /metrics, and a
    /// demo page at / to drop an image on.
    #[command(after_help = "\
API:
  POST /v1/transcribe   body: the image (raw bytes, or multipart/form-data with a file field)
                        200 → the JSON of `transcribe --format json` plus ms.total
                        ?preview=png adds `preview`: the page read, a PNG data: URL
                        400 not an image · 401 no token (with --token-file)
                        408 body slower than --body-timeout
                        413 body or pixels over the limit
                        503 workers busy and queue full (Retry-After: 1) · 504 over --timeout
  GET  /healthz         {\"status\": \"ok\", \"model\": ..., \"line_detector\": ..., \"decoder\": ...}
  GET  /metrics         Prometheus text: requests by status, errors, latency, input size and
                        brightness histograms (drift), lines, queue length, workers busy,
                        connections open, header timeouts, requests refused

Other sites are refused: on a loopback address, a Host that is not a loopback name with the port
(421; --allow-host adds a name), and anywhere, an Origin that is not the server's own (403).
Listening beyond loopback, give --token-file (and TLS through a reverse proxy; see the README).

SIGTERM or Ctrl-C stops accepting, finishes the requests in flight (at most --shutdown-timeout),
and exits 0. Exit status: 2 bad usage (a bad --token-file too), 3 no model could be loaded, 4
the server cannot start.

Examples:
  textrec serve                                    # http://127.0.0.1:8080/
  textrec serve --addr 0.0.0.0:8080 --workers 2 --queue 16 --token-file /etc/textrec/token
  curl --data-binary @page.png http://127.0.0.1:8080/v1/transcribe | jq -r .text
  curl -H \"Authorization: Bearer $(cat token)\" --data-binary @page.png http://HOST:8080/v1/transcribe")]
    Serve {
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// A release bundle or an exported line model (.onnx); default: the newest bundle in
        /// ./release/.
        #[arg(long, value_name = "BUNDLE")]
        model: Option<PathBuf>,
        /// Pages transcribed at once (each on one core).
        #[arg(long, default_value_t = default_jobs())]
        workers: usize,
        /// Requests that may wait for a worker; past that, 503.
        #[arg(long, default_value_t = 32)]
        queue: usize,
        /// Largest request body, in bytes.
        #[arg(long, default_value_t = 20 * 1024 * 1024)]
        max_body_bytes: usize,
        /// Largest image, in pixels.
        #[arg(long, default_value_t = 40_000_000)]
        max_pixels: u64,
        /// Seconds one transcription may take before the answer is 504.
        #[arg(long, default_value = "30", value_parser = seconds)]
        timeout: Duration,
        /// Connections served at once; past it, new ones wait to be accepted. Uploads held in
        /// memory are at most this many times --max-body-bytes.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
        /// Seconds a connection has to send a request's headers (an idle kept-alive one: from
        /// its last answer) before it is closed.
        #[arg(long, default_value = "5", value_parser = seconds)]
        header_timeout: Duration,
        /// Seconds a request has to send its body, once its headers are in, before the answer
        /// is 408.
        #[arg(long, default_value = "60", value_parser = seconds)]
        body_timeout: Duration,
        /// On SIGTERM or Ctrl-C, seconds the requests in flight have to finish before their
        /// connections are closed.
        #[arg(long, default_value = "30", value_parser = seconds)]
        shutdown_timeout: Duration,
        /// A Host name to accept besides the loopback ones when listening on loopback: the
        /// public name a reverse proxy forwards (repeatable).
        #[arg(long = "allow-host", value_name = "NAME")]
        allow_hosts: Vec<String>,
        /// A file holding a token (one line, readable by its owner only) that POST
        /// /v1/transcribe then requires as `Authorization: Bearer TOKEN`; /healthz, /metrics and
        /// the page stay open.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Inference engine: tract, ort (ONNX Runtime from ORT_DYLIB_PATH), or auto.
        #[arg(long, default_value = "tract")]
        backend: Backend,
        /// Line detector: projection or learned; default: the one the bundle's pages.json names.
        #[arg(long)]
        detector: Option<DetectorKind>,
        /// Line decoding: beam (with the bundle's language model) or greedy; default: beam when
        /// the bundle has a language model.
        #[arg(long)]
        decoder: Option<transcribe::Decoder>,
    },
    /// Check a release bundle: every file against the sha256 in its manifest.json, and every
    /// model loaded and run once with tract.
    #[command(after_help = "\
Exit status: 0 when the bundle verifies, 1 when it does not (the message names the file), 2 on
bad usage.

Examples:
  textrec verify release/textrec-0.1.0.tar.gz
  textrec verify --json release/textrec-0.1.0.tar.gz | jq .ok")]
    Verify {
        /// The bundle: a NAME-VERSION.tar.gz written by the pipeline's `package` stage.
        bundle: PathBuf,
        /// Print one JSON object on stdout instead, whatever the outcome.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    textrec_recognizer::memory::retain_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Vocabulary { json } => {
            let vocab = Vocabulary::default();
            if json {
                println!("{}", Value::from(vocab.tokens().to_vec()));
            } else {
                for (index, token) in vocab.tokens().iter().enumerate() {
                    println!("{index:>3} {token:?}");
                }
            }
            ExitCode::SUCCESS
        }
        Command::Verify { bundle, json } => verify(&bundle, json),
        Command::Serve {
            addr,
            model,
            workers,
            queue,
            max_body_bytes,
            max_pixels,
            timeout,
            max_connections,
            header_timeout,
            body_timeout,
            shutdown_timeout,
            allow_hosts,
            token_file,
            backend,
            detector,
            decoder,
        } => {
            // Before the model, which takes a while to load: a bad file is a usage error.
            let token = match token_file.as_deref().map(serve::Token::read).transpose() {
                Ok(token) => token,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Exit::Usage.into();
                }
            };
            let model = match model {
                Some(model) => model,
                None => match transcribe::newest_bundle(Path::new("release")) {
                    Ok(model) => model,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return Exit::NoModel.into();
                    }
                },
            };
            let transcriber = match transcribe::load_transcriber(&model, backend, detector, decoder)
            {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot load the model {}: {e:#}", model.display());
                    return Exit::NoModel.into();
                }
            };
            let options = serve::Options {
                addr,
                max_body_bytes,
                max_pixels,
                workers,
                queue,
                timeout,
                max_connections,
                header_timeout,
                body_timeout,
                shutdown_timeout,
                allowed_hosts: allow_hosts,
                token,
            };
            match serve::run(transcriber, options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Exit::ServeFailed.into()
                }
            }
        }
        Command::Transcribe {
            inputs,
            output,
            model,
            format,
            recursive,
            jobs,
            resume,
            max_pixels,
            json,
            backend,
            detector,
            decoder,
            shard,
        } => {
            let options = transcribe::Options {
                inputs,
                out_dir: output,
                model,
                formats: format.into_iter().map(|f| f.0).collect(),
                recursive,
                jobs,
                resume,
                max_pixels,
                json,
                backend,
                detector,
                decoder,
                shard,
            };
            match transcribe::run(&options) {
                Ok(transcribe::Outcome::AllTranscribed) => ExitCode::SUCCESS,
                Ok(transcribe::Outcome::SomeFailed) => Exit::Failed.into(),
                Err(transcribe::Fatal::Usage(e)) => {
                    eprintln!("error: {e:#}");
                    Exit::Usage.into()
                }
                Err(transcribe::Fatal::Model(e)) => {
                    eprintln!("error: {e:#}");
                    Exit::NoModel.into()
                }
            }
        }
    }
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The longest time limit `serve` takes, about 31 years: a deadline this far ahead still fits
/// in an `Instant`, where `inf` or `1e300` would panic.
const MAX_SECONDS: f64 = 1e9;

/// A number of seconds for `serve`'s time limits: above 0 (0 or less would time out every
/// request) and at most [`MAX_SECONDS`].
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds".to_owned())?;
    if !(value > 0.0 && value <= MAX_SECONDS) {
        return Err(format!(
            "expected a number of seconds above 0 and at most {MAX_SECONDS:e}"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

fn verify(path: &Path, json: bool) -> ExitCode {
    let verification = match bundle::verify(path) {
        Ok(v) => v,
        Err(e) => {
            // A read error names the path already.
            let message = match e {
                BundleError::Read { .. } => e.to_string(),
                _ => format!("{}: {e}", path.display()),
            };
            if json {
                println!(
                    "{}",
                    json!({"bundle": transcribe::lossy(path), "ok": false, "errors": [message]})
                );
            } else {
                eprintln!("error: {message}");
            }
            return Exit::Failed.into();
        }
    };
    if json {
        println!("{}", report_json(path, &verification));
    } else {
        print_report(path, &verification);
    }
    if verification.is_ok() {
        ExitCode::SUCCESS
    } else {
        Exit::Failed.into()
    }
}

fn shape(tensors: &[TensorSummary]) -> String {
    tensors
        .iter()
        .map(|t| {
            format!(
                "{} [{}] (ran as [{}])",
                t.name,
                t.declared.join(", "),
                t.shape
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_report(path: &Path, v: &Verification) {
    println!("{}-{} ({})", v.name, v.version, path.display());
    for file in &v.files {
        match (&file.problem, &file.found) {
            (None, Some(found)) => println!(
                "  ok        {}  {} bytes  sha256 {}",
                file.name, found.bytes, found.sha256
            ),
            (Some(problem), _) => println!("  FAILED    {problem}"),
            (None, None) => {}
        }
    }
    for model in &v.models {
        match &model.outcome {
            // A language model has no tensors: it is read, not run.
            Ok(summary) if summary.inputs.is_empty() => {
                println!("  read      {}: {}", model.name, summary.architecture)
            }
            Ok(summary) => println!(
                "  loaded    {}: {}, input {}, output {}",
                model.name,
                summary.architecture,
                shape(&summary.inputs),
                shape(&summary.outputs)
            ),
            Err(problem) => println!("  FAILED    {problem}"),
        }
    }
    let problems: Vec<&BundleError> = v.problems().collect();
    if problems.is_empty() {
        println!(
            "verified: {} files, {} models",
            v.files.len(),
            v.models.len()
        );
    } else {
        for problem in problems {
            eprintln!("error: {}: {problem}", path.display());
        }
    }
}

fn report_json(path: &Path, v: &Verification) -> Value {
    let files: Vec<Value> = v
        .files
        .iter()
        .map(|file| {
            let status = match &file.problem {
                None => "ok",
                Some(BundleError::Mismatch { .. }) => "mismatch",
                Some(BundleError::Missing { .. }) => "missing",
                Some(BundleError::Unlisted { .. }) => "unlisted",
                Some(_) => "failed",
            };
            let mut entry = json!({"name": file.name, "status": status});
            if let Some(found) = &file.found {
                entry["bytes"] = json!(found.bytes);
                entry["sha256"] = json!(found.sha256);
            }
            if let Some(BundleError::Mismatch { expected, .. }) = &file.problem {
                entry["expected_sha256"] = json!(expected);
            }
            if let Some(problem) = &file.problem {
                entry["error"] = json!(problem.to_string());
            }
            entry
        })
        .collect();
    let models: Vec<Value> = v
        .models
        .iter()
        .map(|model| match &model.outcome {
            Ok(summary) => json!({
                "name": model.name,
                "status": "loaded",
                "architecture": summary.architecture,
                "inputs": summary.inputs,
                "outputs": summary.outputs,
            }),
            Err(problem) => json!({
                "name": model.name,
                "status": "failed",
                "error": problem.to_string(),
            }),
        })
        .collect();
    let errors: Vec<String> = v.problems().map(ToString::to_string).collect();
    json!({
        "bundle": transcribe::lossy(path),
        "name": v.name,
        "version": v.version,
        "ok": errors.is_empty(),
        "files": files,
        "models": models,
        "errors": errors,
    })
}
