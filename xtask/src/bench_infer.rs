//! `cargo xtask bench infer`: the same held-out pages through textrec on tract, textrec on
//! ONNX Runtime, and Tesseract (one process per core, `OMP_THREAD_LIMIT=1`): pages/s and page
//! CER; the line model's single-line latency on tract vs ort; peak RSS.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use rayon::prelude::*;
use serde_json::{Value, json};
use textrec_recognizer::Architecture;
use textrec_recognizer::bundle::Bundle;
use textrec_recognizer::data::{Dataset, Sample, Split};
use textrec_recognizer::eval::{self, TruthPage};
use textrec_recognizer::infer::{
    Backend, LearnedDetector, LineDetector, LineRecognizer, PageTranscriber,
};

#[derive(Debug, Args)]
pub struct InferBench {
    /// A release bundle (its line model is used).
    #[arg(long)]
    model: PathBuf,
    /// A pages dataset (e.g. data/pages, build/smoke/data/pages).
    #[arg(long)]
    pages: PathBuf,
    /// Which split's pages.
    #[arg(long, default_value = "test")]
    split: String,
    /// At most this many pages (repeated when the split has fewer).
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Worker threads (pages at once); Tesseract runs this many processes.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get()))]
    jobs: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

/// pages/s and CER of `transcribe` over every page, `jobs` at once.
fn time_pages(
    transcriber: &PageTranscriber,
    pages: &[TruthPage],
    jobs: usize,
) -> anyhow::Result<(f64, f64)> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?;
    let started = Instant::now();
    let texts: Vec<String> = pool.install(|| {
        pages
            .par_iter()
            .map(|page| transcriber.transcribe(&page.image).map(|t| t.text()))
            .collect::<Result<_, _>>()
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let errors = eval::text_errors(pages, &texts);
    Ok((pages.len() as f64 / seconds, errors.cer()))
}

/// Seconds of one line of `width` px through each recognizer (one line model on several
/// engines): the median of 200 runs each, taken in turns (one run on each, then the next), so
/// that a slow spell of this noisy machine class lands on all of them alike; measured one after
/// the other, 30 runs each moved the tract/ort ratio by ±0.3.
fn line_latencies(recognizers: &[&LineRecognizer], width: u16) -> anyhow::Result<Vec<f64>> {
    let Some(first) = recognizers.first() else {
        return Ok(Vec::new());
    };
    // One line of vertical strokes, like handwriting, at the line model's height.
    let line = Sample {
        label: String::new(),
        style: String::new(),
        width,
        height: first.height as u16,
        boxes: Vec::new(),
        pixels: (0..usize::from(width) * first.height)
            .map(|i| if i % 7 < 2 { 255 } else { 0 })
            .collect(),
    };
    for recognizer in recognizers {
        recognizer.log_probs(&[&line])?;
    }
    let mut times = vec![Vec::with_capacity(200); recognizers.len()];
    for _ in 0..200 {
        for (recognizer, times) in recognizers.iter().zip(&mut times) {
            let started = Instant::now();
            recognizer.log_probs(&[&line])?;
            times.push(started.elapsed().as_secs_f64());
        }
    }
    Ok(times
        .into_iter()
        .map(|mut times| {
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        })
        .collect())
}

/// Tesseract 5 on the same pages, one process per page, `jobs` at once.
fn tesseract(pages: &[TruthPage], jobs: usize) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let files: Vec<PathBuf> = pages
        .iter()
        .enumerate()
        .map(|(i, page)| {
            let path = dir.path().join(format!("{i:04}.png"));
            page.image.save(&path).map(|()| path)
        })
        .collect::<Result<_, _>>()?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?;
    let started = Instant::now();
    let texts: Vec<String> = pool.install(|| {
        files
            .par_iter()
            .map(|file| -> anyhow::Result<String> {
                let out = Command::new("tesseract")
                    .arg(file)
                    .args(["stdout", "--psm", "6", "-l", "eng"])
                    .env("OMP_THREAD_LIMIT", "1")
                    .stderr(Stdio::null())
                    .output()
                    .context("cannot run tesseract")?;
                if !out.status.success() {
                    bail!("tesseract failed on {}", file.display());
                }
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            })
            .collect::<Result<_, _>>()
    })?;
    let seconds = started.elapsed().as_secs_f64();
    // Tesseract separates paragraphs with blank lines, which the truth does not have.
    let texts = texts.iter().map(|text| {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines.join("\n")
    });
    let errors = eval::text_errors(pages, texts);
    Ok((pages.len() as f64 / seconds, errors.cer()))
}

pub fn infer(args: &InferBench) -> anyhow::Result<ExitCode> {
    let split: Split = serde_json::from_value(json!(args.split))
        .with_context(|| format!("unknown split {:?}", args.split))?;
    let dataset = Dataset::open(&args.pages)?;
    let pages = TruthPage::read_split(&dataset, split).collect::<Result<Vec<_>, _>>()?;
    if pages.is_empty() {
        bail!("{} has no {} pages", args.pages.display(), args.split);
    }
    let distinct = pages.len();
    let pages: Vec<_> = pages.iter().cycle().take(args.count).cloned().collect();
    let bundle = Bundle::open(&args.model)?;
    let lines = bundle
        .model_of(Architecture::LineCtc)
        .context("the bundle has no line model")?
        .bytes
        .to_vec();

    // Single-line recognizers on every backend there is, for the latency race.
    let mut singles = Vec::new();
    for backend in [Backend::Tract, Backend::Ort] {
        match LineRecognizer::from_bytes_on(&lines, &args.model, 1, backend) {
            Ok((recognizer, _)) => singles.push((backend, recognizer)),
            Err(e) if backend == Backend::Ort => eprintln!("ort skipped: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    let racers: Vec<&LineRecognizer> = singles.iter().map(|(_, r)| r).collect();
    let latencies = line_latencies(&racers, 256)?;

    let mut results = serde_json::Map::new();
    for ((backend, single), &latency) in singles.iter().zip(&latencies) {
        let (backend, name) = (*backend, single.backend_name());
        let recognizer = LineRecognizer::from_bytes_on(&lines, &args.model, 8, backend)?.0;
        // The bundle's own line detector, as `textrec transcribe` reads pages.
        let (mut transcriber, _) =
            PageTranscriber::from_bundle(&args.model, 8, backend, None, true)?;
        let language_model = transcriber.recognizer.language_model().cloned();
        let slant_search = transcriber.recognizer.slant_search().cloned();
        transcriber.recognizer = recognizer;
        transcriber.recognizer.set_slant_search(slant_search)?;
        // The bundle's decoding first, then (with a language model) greedy on tract for contrast.
        let greedy_too = language_model.is_some() && backend == Backend::Tract;
        transcriber.recognizer.set_language_model(language_model)?;
        let (one, cer) = time_pages(&transcriber, &pages, 1)?;
        let (all, _) = time_pages(&transcriber, &pages, args.jobs)?;
        let decoder = transcriber.recognizer.decoder_name();
        results.insert(
            format!("textrec/{name}"),
            json!({"pages_per_second_1_core": one, "pages_per_second": all, "cer": cer,
                   "decoder": decoder, "line_latency_ms_256px": latency * 1e3}),
        );
        if greedy_too {
            transcriber.recognizer.set_language_model(None)?;
            let (one, cer) = time_pages(&transcriber, &pages, 1)?;
            let (all, _) = time_pages(&transcriber, &pages, args.jobs)?;
            results.insert(
                format!("textrec/{name}, greedy"),
                json!({"pages_per_second_1_core": one, "pages_per_second": all, "cer": cer,
                       "decoder": "greedy", "line_latency_ms_256px": latency * 1e3}),
            );
        }
    }
    let mut detectors = vec![LineDetector::default()];
    if let Some(model) = bundle.model_of(Architecture::LineFcn) {
        detectors.push(LineDetector::Learned(LearnedDetector::from_bytes(
            model.bytes,
            &args.model.join(model.name),
        )?));
    }
    let mut detection_ms = serde_json::Map::new();
    for detector in &detectors {
        // One pass first, so the learned detector's plans for these page sizes exist.
        for page in &pages[..distinct.min(pages.len())] {
            detector.detect(&page.image)?;
        }
        let started = Instant::now();
        for page in &pages {
            detector.detect(&page.image)?;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / pages.len() as f64;
        detection_ms.insert(detector.kind().name().into(), ms.into());
    }
    let has_tesseract = Command::new("tesseract")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_tesseract {
        let (one, cer) = tesseract(&pages, 1)?;
        let (all, _) = tesseract(&pages, args.jobs)?;
        results.insert(
            "tesseract".into(),
            json!({"pages_per_second_1_core": one, "pages_per_second": all, "cer": cer}),
        );
    } else {
        eprintln!(
            "tesseract skipped: not installed (apt-get install tesseract-ocr tesseract-ocr-eng)"
        );
    }
    let ratio = match latencies.as_slice() {
        [tract, ort] => Some(tract / ort),
        _ => None,
    };
    let report: Value = json!({
        "pages": pages.len(),
        "distinct_pages": distinct,
        "jobs": args.jobs,
        "results": results,
        "line_detection_ms_per_page": detection_ms,
        "tract_over_ort_line_latency": ratio,
        "peak_rss_mb": peak_rss_mb(),
    });
    if args.json {
        println!("{report}");
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{} pages ({distinct} distinct), {} jobs\n\n| engine | pages/s (1 core) | pages/s ({} jobs) | page CER | line latency, 256 px |\n|---|---|---|---|---|",
            pages.len(),
            args.jobs,
            args.jobs
        )?;
        for (name, r) in &results {
            writeln!(
                out,
                "| {name} | {:.2} | {:.2} | {:.4} | {} |",
                r["pages_per_second_1_core"].as_f64().unwrap_or(0.0),
                r["pages_per_second"].as_f64().unwrap_or(0.0),
                r["cer"].as_f64().unwrap_or(0.0),
                r["line_latency_ms_256px"]
                    .as_f64()
                    .map_or("-".into(), |ms| format!("{ms:.2} ms")),
            )?;
        }
        if let Some(ratio) = ratio {
            writeln!(out, "\ntract / ort line latency: {ratio:.2}× (goal ≤ 1.5×)")?;
        }
        for (name, ms) in &detection_ms {
            writeln!(
                out,
                "line detection, {name}: {:.2} ms/page (1 core)",
                ms.as_f64().unwrap_or(0.0)
            )?;
        }
        writeln!(
            out,
            "peak RSS: {:.0} MB (goal ≤ 1024 MB for 100 pages)",
            peak_rss_mb()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
