//! `cargo xtask bench train`: training throughput on the CPU, textrec (Burn flex) beside the same
//! networks in PyTorch, in one run: CharCnn images/s at batch 128 and LineCtc lines/s. Both sides
//! time the full step (forward, loss, backward, clipping, AdamW) on random batches of the real
//! shapes after a few warm-up steps, on every core. PyTorch is optional: Debian's `python3-torch`
//! (`apt-get install python3-torch`) is what the numbers in the README used.

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use textrec_recognizer::Vocabulary;
use textrec_recognizer::models::{char_training_throughput, line_training_throughput};

const TORCH_SCRIPT: &str = include_str!("bench_train.py");

#[derive(Debug, Args)]
pub struct TrainBench {
    /// Timed CharCnn steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 40)]
    char_steps: usize,
    /// CharCnn batch size.
    #[arg(long, default_value_t = 128)]
    char_batch: usize,
    /// Timed LineCtc steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    line_steps: usize,
    /// LineCtc batch size.
    #[arg(long, default_value_t = 16)]
    line_batch: usize,
    /// Line width in pixels (height 32); one output step per 4 px.
    #[arg(long, default_value_t = 512)]
    line_width: usize,
    /// Characters per line label.
    #[arg(long, default_value_t = 40)]
    label_len: usize,
    /// Python with torch [default: the first of python3, /usr/bin/python3 that imports torch].
    #[arg(long)]
    python: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn python_with_torch(explicit: Option<&str>) -> Option<String> {
    let candidates: Vec<&str> = match explicit {
        Some(p) => vec![p],
        None => vec!["python3", "/usr/bin/python3"],
    };
    candidates.into_iter().map(str::to_owned).find(|python| {
        Command::new(python)
            .args(["-c", "import torch"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

pub fn train(args: &TrainBench) -> anyhow::Result<ExitCode> {
    if args.line_width < 4 || args.label_len == 0 || args.label_len > args.line_width / 4 {
        bail!("a line needs at least one 4-px step per label character");
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let vocabulary = Vocabulary::default();
    // The character classes: the vocabulary less CTC's blank.
    let classes = vocabulary.len() - 1;
    eprintln!(
        "==> textrec (Burn flex): CharCnn, {} steps",
        args.char_steps
    );
    let char_cnn = char_training_throughput(args.char_batch, classes, args.char_steps)?;
    eprintln!(
        "==> textrec (Burn flex): LineCtc, {} steps",
        args.line_steps
    );
    let line_ctc = line_training_throughput(
        args.line_batch,
        args.line_width,
        args.label_len,
        args.line_steps,
    )?;
    let textrec = json!({"char_cnn": char_cnn, "line_ctc": line_ctc});

    let torch = match python_with_torch(args.python.as_deref()) {
        None => {
            eprintln!(
                "PyTorch not found (python3 -c 'import torch' failed); \
                 `apt-get install python3-torch` to compare"
            );
            Value::Null
        }
        Some(python) => {
            eprintln!("==> PyTorch ({python}): the same networks and steps");
            let dir = tempfile::tempdir()?;
            let script = dir.path().join("bench_train.py");
            std::fs::write(&script, TORCH_SCRIPT)?;
            let out = Command::new(&python)
                .arg(&script)
                .arg(format!("threads={threads}"))
                .arg(format!("classes={classes}"))
                .arg(format!("char_batch={}", args.char_batch))
                .arg(format!("char_steps={}", args.char_steps))
                .arg(format!("line_batch={}", args.line_batch))
                .arg(format!("line_width={}", args.line_width))
                .arg(format!("label_len={}", args.label_len))
                .arg(format!("line_classes={}", vocabulary.len()))
                .arg(format!("line_steps={}", args.line_steps))
                .output()
                .with_context(|| format!("cannot run {python}"))?;
            if !out.status.success() {
                bail!(
                    "the PyTorch benchmark failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            serde_json::from_slice(&out.stdout).context("the PyTorch benchmark's output")?
        }
    };
    let ratio = |model: &str| {
        let ours = textrec[model]["samples_per_second"].as_f64()?;
        let theirs = torch[model]["samples_per_second"].as_f64()?;
        Some(ours / theirs)
    };
    let report = json!({
        "threads": threads,
        "textrec": textrec,
        "pytorch": torch,
        "ratio": {"char_cnn": ratio("char_cnn"), "line_ctc": ratio("line_ctc")},
    });
    if args.json {
        println!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "training throughput, CPU, {threads} threads{}",
        torch["torch"]
            .as_str()
            .map(|v| format!(", PyTorch {v}"))
            .unwrap_or_default()
    );
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "model", "textrec/s", "PyTorch/s", "ratio"
    );
    for (model, what) in [
        (
            "char_cnn",
            format!("CharCnn images, batch {}", args.char_batch),
        ),
        (
            "line_ctc",
            format!(
                "LineCtc lines, batch {}×{} px",
                args.line_batch, args.line_width
            ),
        ),
    ] {
        let cell = |v: &Value| {
            v.as_f64()
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"))
        };
        println!(
            "{what:<34} {:>12} {:>12} {:>8}",
            cell(&report["textrec"][model]["samples_per_second"]),
            cell(&report["pytorch"][model]["samples_per_second"]),
            ratio(model).map_or_else(|| "-".to_owned(), |r| format!("{r:.2}×")),
        );
    }
    Ok(ExitCode::SUCCESS)
}
