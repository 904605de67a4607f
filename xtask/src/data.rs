//! `cargo xtask data inspect`: look at a dataset before training on it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use textrec_recognizer::data::Dataset;
use textrec_recognizer::data::inspect::{contact_sheet, inspect, label_font};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A dataset directory (it holds manifest.json), e.g. data/lines.
    dataset: PathBuf,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    /// Where to write the contact sheet [default: DATASET-samples.png beside the dataset].
    #[arg(long, value_name = "PNG")]
    sheet: Option<PathBuf>,
    /// Random samples drawn per split.
    #[arg(long, default_value_t = 12)]
    per_split: usize,
    /// Seed for picking the samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A .ttf/.otf font for the labels [default: a system sans font].
    #[arg(long, value_name = "FONT")]
    font: Option<PathBuf>,
}

pub fn inspect_command(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dataset)?;
    let (mut report, picked) = inspect(&dataset, args.per_split, args.seed)
        .with_context(|| format!("inspect {}", args.dataset.display()))?;
    let sheet = args.sheet.clone().unwrap_or_else(|| {
        let name = args
            .dataset
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".into());
        args.dataset.with_file_name(format!("{name}-samples.png"))
    });
    let font = label_font(args.font.as_deref())?;
    contact_sheet(&dataset, &picked, &font, &sheet)?;
    report.contact_sheet = Some(sheet.clone());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} ({} dataset, seed {}, generator v{})",
        report.dataset.display(),
        report.kind,
        report.seed,
        report.generator_version
    );
    for (name, split) in &report.splits {
        let stats = |s: Option<textrec_recognizer::data::inspect::Stats>| {
            s.map_or("-".into(), |s| {
                format!("{:.0}/{:.1}/{:.0}", s.min, s.mean, s.max)
            })
        };
        let (rarest, commonest) = (
            split.class_histogram.iter().min_by_key(|(_, n)| **n),
            split.class_histogram.iter().max_by_key(|(_, n)| **n),
        );
        println!(
            "  {name:<5} {:>7} samples  {:>3} classes (rarest {:?}, commonest {:?})  width min/mean/max {}  label length {}{}",
            split.count,
            split.class_histogram.len(),
            rarest.map(|(c, n)| format!("{c}:{n}")).unwrap_or_default(),
            commonest
                .map(|(c, n)| format!("{c}:{n}"))
                .unwrap_or_default(),
            stats(split.width),
            stats(split.label_length),
            split
                .lines_per_page
                .map(|s| format!("  lines/page {:.0}/{:.1}/{:.0}", s.min, s.mean, s.max))
                .unwrap_or_default()
        );
        println!("        fonts: {}", split.fonts.join(", "));
    }
    for note in &report.skipped {
        println!("  skipped: {note}");
    }
    println!("contact sheet: {}", sheet.display());
    Ok(ExitCode::SUCCESS)
}
