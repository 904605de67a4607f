//! `tune-decoding`: choose the beam decoder's language-model weight and per-character bonus on
//! validation lines only, and write the language model again with the winner as its defaults.
//!
//! Settings tuned on synthetic lines alone misread real hands: a large bonus per character
//! makes the beam write long English-looking text over ink the network is unsure of. So the
//! first dataset (real lines, say) is the one whose CER is minimised, and every later dataset
//! (the synthetic lines) may give up at most `tolerance` CER against its own best setting in
//! the grid. A weight of 0 with no bonus reads the ink alone, so the grid holds "leave the
//! language model out" too. Then the guard (`min_sure_fraction`, `max_length_ratio`: lines with
//! too few sure steps, or whose beam text outgrows greedy's, are read greedily): of every pair
//! of the two lists, the one that leaves the most of 64 fixed noise lines to greedy decoding
//! while costing no dataset more than `guard_tolerance` CER against the unguarded beam. Test
//! splits are never read.

use std::path::Path;

use rayon::prelude::*;
use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::Vocabulary;
use textrec_recognizer::ctc::{guard_reads_greedily, sure_fraction};
use textrec_recognizer::data::split::stable_hash;
use textrec_recognizer::data::{Dataset, DatasetKind, Observer, Sample, Split};
use textrec_recognizer::infer::{LineRecognizer, TextErrors};
use textrec_recognizer::lm::{BeamSearch, CharLm};
use textrec_recognizer::{beam_decode, greedy_decode};

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct TuneDecoding;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Language-model weights tried.
    #[serde(default = "default_lm_weights")]
    lm_weight: Vec<f32>,
    /// Per-character bonuses tried.
    #[serde(default = "default_length_bonuses")]
    length_bonus: Vec<f32>,
    /// At most this many validation lines of each dataset, evenly spaced through its split
    /// (each setting decodes all of them).
    #[serde(default = "default_lines")]
    lines_per_dataset: usize,
    /// How much CER each dataset after the first may lose against its best setting.
    #[serde(default = "default_tolerance")]
    tolerance: f64,
    /// Guards tried with the chosen weight and bonus, every pair of these two lists (see
    /// `ctc::guard_reads_greedily`): the pair that leaves the most noise lines to greedy
    /// decoding while no dataset reads more than `guard_tolerance` CER worse than with the beam
    /// on every line is kept.
    #[serde(default = "default_sure_fractions")]
    min_sure_fraction: Vec<f32>,
    #[serde(default = "default_length_ratios")]
    max_length_ratio: Vec<f32>,
    #[serde(default = "default_guard_tolerance")]
    guard_tolerance: f64,
}

fn default_lm_weights() -> Vec<f32> {
    vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
}

fn default_length_bonuses() -> Vec<f32> {
    vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
}

fn default_lines() -> usize {
    500
}

fn default_tolerance() -> f64 {
    0.01
}

fn default_sure_fractions() -> Vec<f32> {
    vec![0.0, 0.2, 0.3, 0.4, 0.5]
}

fn default_length_ratios() -> Vec<f32> {
    vec![0.0, 8.0, 6.0, 5.0, 4.0, 3.0]
}

fn default_guard_tolerance() -> f64 {
    0.01
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    let out_is_lm = stage.outs.first().is_some_and(|o| o.ends_with(".lm"));
    if stage.deps.len() < 3 || stage.outs.len() != 1 || !out_is_lm || stage.metrics.len() != 1 {
        return Err(InvalidStage::shape(
            "`tune-decoding` reads [line model .onnx, language model .lm, one or more lines \
             datasets (the first is the one to read best)] and writes one .lm file (outs) and a \
             metrics file",
        ));
    }
    for (param, values) in [
        ("lm_weight", &params.lm_weight),
        ("length_bonus", &params.length_bonus),
        ("min_sure_fraction", &params.min_sure_fraction),
        ("max_length_ratio", &params.max_length_ratio),
    ] {
        if values.is_empty() {
            return Err(InvalidStage::param(
                param,
                format!("`{param}` lists no value"),
            ));
        }
    }
    for &lm_weight in &params.lm_weight {
        for &length_bonus in &params.length_bonus {
            BeamSearch {
                beam_width: 1,
                lm_weight,
                length_bonus,
                min_sure_fraction: 0.0,
                max_length_ratio: 0.0,
            }
            .validate()
            .map_err(InvalidStage::rejected)?;
        }
    }
    for &min_sure_fraction in &params.min_sure_fraction {
        for &max_length_ratio in &params.max_length_ratio {
            BeamSearch {
                min_sure_fraction,
                max_length_ratio,
                ..BeamSearch::default()
            }
            .validate()
            .map_err(InvalidStage::rejected)?;
        }
    }
    if params.lines_per_dataset == 0 {
        return Err(InvalidStage::param(
            "lines_per_dataset",
            "`lines_per_dataset` must be at least 1",
        ));
    }
    for (param, value) in [
        ("tolerance", params.tolerance),
        ("guard_tolerance", params.guard_tolerance),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(InvalidStage::param(
                param,
                format!("`{param}` {value} must be a number >= 0"),
            ));
        }
    }
    Ok(params)
}

/// One dataset's validation lines as the network scores them.
struct ScoredLines {
    dep: String,
    labels: Vec<String>,
    log_probs: Vec<Vec<f32>>,
}

impl ScoredLines {
    /// Every `stride`-th validation line, so the sample spans the split's writers.
    fn read(
        recognizer: &LineRecognizer,
        dep: &str,
        path: &Path,
        most: usize,
        observer: &dyn Observer,
    ) -> Result<ScoredLines, StageFailure> {
        let dataset = Dataset::open(path)?;
        if dataset.manifest.kind != DatasetKind::Lines {
            return Err(format!(
                "{}: decoding is tuned on lines, this dataset holds {}",
                path.display(),
                dataset.manifest.kind.name()
            )
            .into());
        }
        let count = dataset.split(Split::Val).map_or(0, |s| s.count);
        if count == 0 {
            return Err(format!(
                "{}: no validation lines to tune on (decoding is never tuned on test)",
                path.display()
            )
            .into());
        }
        let stride = (count as usize).div_ceil(most);
        let mut lines = Vec::new();
        for (i, sample) in dataset.samples(Split::Val).enumerate() {
            let sample = sample?;
            if i % stride == 0 {
                lines.push(sample);
            }
        }
        let mut log_probs = Vec::with_capacity(lines.len());
        for chunk in lines.chunks(CHUNK) {
            log_probs.extend(recognizer.log_probs(chunk)?);
            observer.advance(chunk.len() as u64);
        }
        Ok(ScoredLines {
            dep: dep.to_owned(),
            labels: lines.into_iter().map(|s| s.label).collect(),
            log_probs,
        })
    }

    /// Every line's guard inputs under `open` (the beam without a guard).
    fn both_readings(
        &self,
        classes: usize,
        vocabulary: &Vocabulary,
        lm: &CharLm,
        open: BeamSearch,
    ) -> Result<Vec<LineReadings>, StageFailure> {
        self.log_probs
            .par_iter()
            .zip(&self.labels)
            .map(|(scores, label)| {
                LineReadings::read(label.clone(), scores, classes, vocabulary, lm, open)
            })
            .collect()
    }

    /// Every line decoded with `decode`, its errors added in line order.
    fn decode_all(
        &self,
        decode: impl Fn(&[f32]) -> Result<String, StageFailure> + Sync,
    ) -> Result<Reading, StageFailure> {
        let texts = self
            .log_probs
            .par_iter()
            .map(|scores| decode(scores))
            .collect::<Result<Vec<_>, _>>()?;
        let mut reading = Reading::default();
        for (label, text) in self.labels.iter().zip(&texts) {
            reading.errors.add(TextErrors::of(label, text));
            reading.written += text.chars().count() as u64;
        }
        Ok(reading)
    }
}

/// A decoding of a dataset's sample: its errors, and how many characters it wrote (a decoder
/// that writes far more than the truth holds is inventing text).
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    errors: TextErrors,
    written: u64,
}

const CHUNK: usize = 256;

/// A number as written in the YAML (0.4, not the f32's 0.4000000059604645).
fn shown(x: f32) -> f64 {
    x.to_string().parse::<f64>().unwrap_or(f64::from(x))
}

/// A setting as the metrics show it.
fn search_metrics(search: &BeamSearch) -> serde_json::Value {
    serde_json::json!({
        "beam_width": search.beam_width,
        "lm_weight": shown(search.lm_weight),
        "length_bonus": shown(search.length_bonus),
        "min_sure_fraction": shown(search.min_sure_fraction),
        "max_length_ratio": shown(search.max_length_ratio),
    })
}

/// Lines of noise the probe reads: half pixels drawn evenly from 0 to 255, half blank paper
/// with a sprinkle of ink (one pixel in 20, on average).
const NOISE_LINES: usize = 64;

/// One line as the guard sees it: its sure fraction and its greedy and unguarded beam texts.
struct LineReadings {
    label: String,
    sure: f32,
    greedy: String,
    beam: String,
}

impl LineReadings {
    fn read(
        label: String,
        scores: &[f32],
        classes: usize,
        vocabulary: &Vocabulary,
        lm: &CharLm,
        open: BeamSearch,
    ) -> Result<LineReadings, StageFailure> {
        let greedy = greedy_decode(scores, classes, vocabulary).map_err(|e| e.to_string())?;
        let beam = beam_decode(scores, classes, vocabulary, lm, open).map_err(|e| e.to_string())?;
        Ok(LineReadings {
            label,
            sure: sure_fraction(scores, classes),
            greedy: greedy.text,
            beam: beam.text,
        })
    }

    fn read_greedily(&self, search: &BeamSearch) -> bool {
        let lengths = (self.greedy.chars().count(), self.beam.chars().count());
        guard_reads_greedily(search, self.sure, lengths.0, Some(lengths.1))
    }

    /// The text `beam_decode` gives under `search`.
    fn text(&self, search: &BeamSearch) -> &str {
        if self.read_greedily(search) {
            &self.greedy
        } else {
            &self.beam
        }
    }
}

/// A dataset's errors with `search`'s guard choosing each line's reading.
fn guarded_reading(search: &BeamSearch, lines: &[LineReadings]) -> Reading {
    let mut reading = Reading::default();
    for line in lines {
        let text = line.text(search);
        reading.errors.add(TextErrors::of(&line.label, text));
        reading.written += text.chars().count() as u64;
    }
    reading
}

/// Lines with no writing, read with the chosen weight and bonus: a decoder that turns noise
/// into text would turn a stain into a sentence, and the guard is chosen to stop it. The lines
/// are a fixed function of their index, so the probe is the same on every run.
fn noise_lines(
    recognizer: &LineRecognizer,
    lm: &CharLm,
    open: BeamSearch,
    observer: &dyn Observer,
) -> Result<Vec<LineReadings>, StageFailure> {
    let height = recognizer.height;
    let lines: Vec<Sample> = (0..NOISE_LINES as u64)
        .map(|line| {
            let width = 128 + (stable_hash(line, b"width") % 897) as usize;
            let pixels = (0..width * height)
                .map(|i| {
                    let draw = stable_hash(line, &(i as u64).to_le_bytes());
                    if line % 2 == 0 {
                        draw as u8
                    } else if draw.is_multiple_of(20) {
                        255
                    } else {
                        0
                    }
                })
                .collect();
            Sample {
                label: String::new(),
                style: "noise".into(),
                width: width as u16,
                height: height as u16,
                boxes: Vec::new(),
                pixels,
            }
        })
        .collect();
    let scores = recognizer.log_probs(&lines)?;
    observer.advance(NOISE_LINES as u64);
    let classes = recognizer.vocabulary.len();
    let read = scores
        .par_iter()
        .map(|s| LineReadings::read(String::new(), s, classes, &recognizer.vocabulary, lm, open))
        .collect::<Result<Vec<_>, _>>()?;
    observer.advance(NOISE_LINES as u64);
    Ok(read)
}

/// The guard to keep, given each guard's CER per dataset and noise lines it leaves to greedy
/// decoding: the one that stops the most noise among those within `tolerance` of `open` (the
/// CERs with no guard) on every dataset, then the lowest CER summed over the datasets (so a
/// guard that stops no more noise costs nothing), then the earliest.
fn choose_guard(guards: &[(Vec<f64>, usize)], open: &[f64], tolerance: f64) -> Option<usize> {
    let within = |cers: &[f64]| cers.iter().zip(open).all(|(c, o)| *c <= o + tolerance);
    let sum = |cers: &[f64]| cers.iter().sum::<f64>();
    (0..guards.len())
        .filter(|&g| within(&guards[g].0))
        .min_by(|&a, &b| {
            guards[b]
                .1
                .cmp(&guards[a].1)
                .then(sum(&guards[a].0).total_cmp(&sum(&guards[b].0)))
                .then(a.cmp(&b))
        })
}

/// The grid point to keep: first by how far any later dataset falls outside its tolerance
/// (0 when none does), then by the first dataset's CER, then by grid order.
fn choose(cers: &[Vec<f64>], tolerance: f64) -> usize {
    let datasets = cers.first().map_or(0, Vec::len);
    let best: Vec<f64> = (0..datasets)
        .map(|d| cers.iter().map(|c| c[d]).fold(f64::INFINITY, f64::min))
        .collect();
    let excess = |c: &[f64]| {
        (1..datasets)
            .map(|d| (c[d] - best[d] - tolerance).max(0.0))
            .fold(0.0, f64::max)
    };
    (0..cers.len())
        .min_by(|&a, &b| {
            excess(&cers[a])
                .total_cmp(&excess(&cers[b]))
                .then(cers[a][0].total_cmp(&cers[b][0]))
                .then(a.cmp(&b))
        })
        .unwrap_or(0)
}

impl StageKind for TuneDecoding {
    fn name(&self) -> &'static str {
        "tune-decoding"
    }

    fn version(&self) -> u32 {
        2
    }

    fn summary(&self) -> &'static str {
        "choose the beam's language-model weight, length bonus and guard on validation lines; writes the .lm with them"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let observer = StageObserver { ctx };
        let recognizer = LineRecognizer::load(&ctx.deps[0], 16)?;
        let lm_path = &ctx.deps[1];
        let bytes = std::fs::read(lm_path).map_err(|e| format!("{}: {e}", lm_path.display()))?;
        let mut lm =
            CharLm::from_bytes(&bytes).map_err(|e| format!("{}: {e}", lm_path.display()))?;
        lm.check_vocabulary(&recognizer.vocabulary)
            .map_err(|e| format!("{}: {e}", lm_path.display()))?;

        let mut grid: Vec<BeamSearch> = Vec::new();
        for &lm_weight in &params.lm_weight {
            for &length_bonus in &params.length_bonus {
                grid.push(BeamSearch {
                    lm_weight,
                    length_bonus,
                    min_sure_fraction: 0.0,
                    max_length_ratio: 0.0,
                    ..lm.search
                });
            }
        }
        let datasets = &ctx.deps[2..];
        // Decoding work per dataset: every grid point, greedy, the given setting and the
        // chosen one's readings line by line for the guard; then the noise lines, scored and
        // read the same way.
        let decodings = (datasets.len() * (grid.len() + 3)) as u64;
        let probe = NOISE_LINES as u64 * 2;
        observer.total((datasets.len() * params.lines_per_dataset) as u64 + decodings + probe);
        let sets = datasets
            .iter()
            .zip(&ctx.stage.deps[2..])
            .map(|(path, dep)| {
                ScoredLines::read(&recognizer, dep, path, params.lines_per_dataset, &observer)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A split smaller than `lines_per_dataset` gave fewer lines than the first estimate.
        let lines: usize = sets.iter().map(|set| set.labels.len()).sum();
        observer.total(lines as u64 + decodings + probe);

        let classes = recognizer.vocabulary.len();
        let vocabulary = &recognizer.vocabulary;
        let beam = |search: BeamSearch, set: &ScoredLines| {
            set.decode_all(|scores| {
                beam_decode(scores, classes, vocabulary, &lm, search)
                    .map(|d| d.text)
                    .map_err(|e| e.to_string().into())
            })
        };
        // Each grid point's reading of each dataset; the choice and the metrics derive from them.
        let mut readings: Vec<Vec<Reading>> = Vec::with_capacity(grid.len());
        for search in &grid {
            observer.message(&format!(
                "lm_weight {} length_bonus {}",
                search.lm_weight, search.length_bonus
            ));
            let row = sets
                .iter()
                .map(|set| {
                    let reading = beam(*search, set);
                    observer.advance(1);
                    reading
                })
                .collect::<Result<Vec<_>, _>>()?;
            observer.log(&format!(
                "lm_weight {:>4} length_bonus {:>4}: CER {}",
                search.lm_weight,
                search.length_bonus,
                row.iter()
                    .map(|r| format!("{:.4}", r.errors.cer()))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            readings.push(row);
        }
        let cers: Vec<Vec<f64>> = readings
            .iter()
            .map(|row| row.iter().map(|r| r.errors.cer()).collect())
            .collect();
        let chosen = choose(&cers, params.tolerance);
        let given = lm.search;
        let given_on_grid = grid.iter().position(|search| *search == given);

        let mut per_dataset = serde_json::Map::new();
        for (d, set) in sets.iter().enumerate() {
            let greedy = set.decode_all(|scores| {
                greedy_decode(scores, classes, vocabulary)
                    .map(|d| d.text)
                    .map_err(|e| e.to_string().into())
            })?;
            // The given setting was decoded already when it is a grid point.
            let given_reading = match given_on_grid {
                Some(g) => readings[g][d],
                None => beam(given, set)?,
            };
            let chosen_reading = readings[chosen][d];
            observer.advance(2);
            let best = cers.iter().map(|c| c[d]).fold(f64::INFINITY, f64::min);
            per_dataset.insert(
                set.dep.clone(),
                serde_json::json!({
                    "lines": set.labels.len(),
                    "characters": greedy.errors.chars,
                    "cer": chosen_reading.errors.cer(),
                    "written": chosen_reading.written,
                    "best_cer": best,
                    "given_cer": given_reading.errors.cer(),
                    "given_written": given_reading.written,
                    "greedy_cer": greedy.errors.cer(),
                    "greedy_written": greedy.written,
                }),
            );
        }
        // The guard, chosen without decoding again: each line's beam and greedy readings under
        // the chosen weight and bonus, between which every guard picks as the decoder would.
        let open = grid[chosen];
        let mut lines = Vec::with_capacity(sets.len());
        for set in &sets {
            lines.push(set.both_readings(classes, vocabulary, &lm, open)?);
            observer.advance(1);
        }
        observer.message("noise lines");
        let noise = noise_lines(&recognizer, &lm, open, &observer)?;
        let mut guards = Vec::new();
        for &min_sure_fraction in &params.min_sure_fraction {
            for &max_length_ratio in &params.max_length_ratio {
                let search = BeamSearch {
                    min_sure_fraction,
                    max_length_ratio,
                    ..open
                };
                let row: Vec<Reading> = lines.iter().map(|l| guarded_reading(&search, l)).collect();
                let caught = noise.iter().filter(|l| l.read_greedily(&search)).count();
                guards.push((search, row, caught));
            }
        }
        let guard_cers: Vec<(Vec<f64>, usize)> = guards
            .iter()
            .map(|(_, row, caught)| (row.iter().map(|r| r.errors.cer()).collect(), *caught))
            .collect();
        let (guarded, caught) =
            match choose_guard(&guard_cers, &cers[chosen], params.guard_tolerance) {
                Some(g) => {
                    // What the written settings read is the guarded reading.
                    for (set, reading) in sets.iter().zip(&guards[g].1) {
                        let entry = &mut per_dataset[&set.dep];
                        entry["unguarded_cer"] = entry["cer"].clone();
                        entry["unguarded_written"] = entry["written"].clone();
                        entry["cer"] = reading.errors.cer().into();
                        entry["written"] = reading.written.into();
                    }
                    (guards[g].0, guards[g].2)
                }
                None => (open, 0),
            };
        let written = |search: &BeamSearch| -> u64 {
            noise
                .iter()
                .map(|l| l.text(search).chars().count() as u64)
                .sum()
        };
        let noise_metrics = serde_json::json!({
            "lines": NOISE_LINES,
            "written_unguarded": written(&open),
            "written": written(&guarded),
            "read_greedily": caught,
        });

        lm.search = guarded;
        std::fs::write(&ctx.outs[0].1, lm.to_bytes())?;
        let table: Vec<serde_json::Value> = grid
            .iter()
            .zip(&cers)
            .map(|(search, row)| {
                let mut point = search_metrics(search);
                point["cer"] = row.as_slice().into();
                point
            })
            .collect();
        let guard_table: Vec<serde_json::Value> = guards
            .iter()
            .map(|(search, row, caught)| {
                serde_json::json!({
                    "min_sure_fraction": shown(search.min_sure_fraction),
                    "max_length_ratio": shown(search.max_length_ratio),
                    "cer": row.iter().map(|r| r.errors.cer()).collect::<Vec<_>>(),
                    "noise_read_greedily": caught,
                })
            })
            .collect();
        let metrics = serde_json::json!({
            "chosen": search_metrics(&guarded),
            "given": search_metrics(&given),
            "tolerance": params.tolerance,
            "guard_tolerance": params.guard_tolerance,
            "datasets": per_dataset,
            "grid": table,
            "guards": guard_table,
            "noise": noise_metrics,
        });
        std::fs::write(&ctx.outs[1].1, format!("{metrics}\n"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(params: serde_json::Value, deps: usize) -> Stage {
        Stage {
            name: "tune-decoding".into(),
            kind: "tune-decoding".into(),
            desc: None,
            deps: [
                "onnx/lines.onnx",
                "models/lines.lm",
                "data/real",
                "data/lines",
            ][..deps]
                .iter()
                .map(|d| d.to_string())
                .collect(),
            outs: vec!["models/tuned.lm".into()],
            metrics: vec!["metrics/tune.json".into()],
            params,
            resources: None,
            line: 1,
            column: 1,
        }
    }

    #[test]
    fn params_and_deps_are_checked_at_load_time() {
        let params = validate(&stage(json!({}), 4)).unwrap();
        assert_eq!(params.lm_weight.len() * params.length_bonus.len(), 36);
        let err = |params, deps| validate(&stage(params, deps)).unwrap_err().to_string();
        assert!(err(json!({}), 2).contains("lines datasets"));
        assert!(err(json!({"lm_weight": []}), 3).contains("lm_weight"));
        assert!(err(json!({"lm_weight": [-1.0]}), 3).contains("lm_weight"));
        assert!(err(json!({"lines_per_dataset": 0}), 3).contains("lines_per_dataset"));
        assert!(err(json!({"tolerance": -0.1}), 3).contains("tolerance"));
        assert!(err(json!({"min_sure_fraction": [0.5, 1.5]}), 3).contains("min_sure_fraction"));
        assert!(err(json!({"min_sure_fraction": []}), 3).contains("min_sure_fraction"));
        assert!(err(json!({"guard_tolerance": -1}), 3).contains("guard_tolerance"));
        assert!(err(json!({"max_length_ratio": [-2.0]}), 3).contains("max_length_ratio"));
        assert!(err(json!({"split": "test"}), 3).contains("split"));
    }

    #[test]
    fn the_first_dataset_is_read_best_within_the_others_tolerance() {
        // Rows are settings, columns datasets (real lines first, synthetic second).
        let cers = vec![
            vec![0.60, 0.090],
            vec![0.50, 0.098],
            vec![0.45, 0.120],
            vec![0.50, 0.095],
        ];
        assert_eq!(
            choose(&cers, 0.01),
            1,
            "0.45 costs the synthetic lines 0.03"
        );
        assert_eq!(choose(&cers, 0.05), 2);
        assert_eq!(choose(&cers, 0.0), 0);
        // One dataset: its best setting, the earlier one on a tie.
        let alone = vec![vec![0.3], vec![0.2], vec![0.2]];
        assert_eq!(choose(&alone, 0.0), 1);
    }

    #[test]
    fn the_guard_is_chosen_from_the_readings_the_decoder_would_give() {
        // Tuning picks between a line's greedy and unguarded beam readings; for every guard of
        // the default grid that must be exactly what the decoder writes under that guard.
        let vocabulary = Vocabulary::from_chars("abcdefghijklmnopqrstuvwxyz ".chars()).unwrap();
        let classes = vocabulary.len();
        let mut lm = CharLm::count(
            &vocabulary,
            4,
            [
                "the cat sat on the mat",
                "she sells sea shells",
                "a man and his dog",
            ],
            BeamSearch::default(),
        )
        .unwrap();
        lm.search.lm_weight = 0.4;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut step = |peak: Option<(usize, f32)>| -> Vec<f32> {
            let mut p: Vec<f32> = (0..classes)
                .map(|_| {
                    state = stable_hash(state, b"step");
                    (state >> 40) as f32 / (1u64 << 24) as f32 + 0.01
                })
                .collect();
            if let Some((class, share)) = peak {
                let rest: f32 = p.iter().sum::<f32>() - p[class];
                p.iter_mut().for_each(|v| *v *= (1.0 - share) / rest);
                p[class] = share;
            }
            let total: f32 = p.iter().sum();
            p.iter().map(|v| (v / total).ln()).collect()
        };
        // Noise; sure gaps with a faint spread of letters; a clear "the cat".
        let noise: Vec<f32> = (0..50).flat_map(|_| step(None)).collect();
        let gaps: Vec<f32> = (0..50).flat_map(|_| step(Some((0, 0.8)))).collect();
        let clear: Vec<f32> = "the cat"
            .chars()
            .flat_map(|c| [Some(vocabulary.index_of(c).unwrap()), Some(0)])
            .flat_map(|class| step(class.map(|c| (c, 0.9))))
            .collect();
        let mut outcomes = [0; 2];
        for bonus in [1.0, 5.0] {
            let open = BeamSearch {
                length_bonus: bonus,
                ..lm.search
            };
            for scores in [&noise, &gaps, &clear] {
                let line =
                    LineReadings::read(String::new(), scores, classes, &vocabulary, &lm, open)
                        .unwrap();
                for min_sure_fraction in default_sure_fractions() {
                    for max_length_ratio in default_length_ratios() {
                        let guard = BeamSearch {
                            min_sure_fraction,
                            max_length_ratio,
                            ..open
                        };
                        let decoded =
                            beam_decode(scores, classes, &vocabulary, &lm, guard).unwrap();
                        assert_eq!(line.text(&guard), decoded.text, "{guard:?}");
                        assert_eq!(line.read_greedily(&guard), decoded.guarded, "{guard:?}");
                        outcomes[usize::from(decoded.guarded)] += 1;
                    }
                }
            }
        }
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }

    #[test]
    fn the_guard_stops_the_most_noise_that_validation_can_afford() {
        // Rows: (CER per dataset, noise lines read greedily); no guard reads 0.50 and 0.10.
        let open = [0.50, 0.10];
        let guards = vec![
            (vec![0.50, 0.10], 0),
            (vec![0.502, 0.10], 30),
            (vec![0.503, 0.101], 30),
            (vec![0.52, 0.10], 64),
            (vec![0.50, 0.13], 64),
        ];
        assert_eq!(choose_guard(&guards, &open, 0.005), Some(1));
        assert_eq!(choose_guard(&guards, &open, 0.0), Some(0));
        // Two stop all 64; the one that reads the datasets better in all wins.
        assert_eq!(choose_guard(&guards, &open, 0.05), Some(3));
        assert_eq!(choose_guard(&[], &open, 0.05), None);
    }
}
