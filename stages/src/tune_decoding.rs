//! `tune-decoding`: choose the beam decoder's language-model weight and per-character bonus on
//! validation lines only, and write the language model again with the winner as its defaults.
//!
//! Settings tuned on synthetic lines alone misread real hands: a large bonus per character
//! makes the beam write long English-looking text over ink the network is unsure of. So the
//! first dataset (real lines, say) is the one whose CER is minimised, and every later dataset
//! (the synthetic lines) may give up at most `tolerance` CER against its own best setting in
//! the grid. A weight of 0 with no bonus reads the ink alone, so the grid holds "leave the
//! language model out" too. Test splits are never read.

use std::path::Path;

use rayon::prelude::*;
use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::{Dataset, DatasetKind, Observer, Split};
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
    if !(params.tolerance.is_finite() && params.tolerance >= 0.0) {
        return Err(InvalidStage::param(
            "tolerance",
            format!("`tolerance` {} must be a number >= 0", params.tolerance),
        ));
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

/// A setting as the metrics show it: the weights as written in the YAML (0.4, not the f32's
/// 0.4000000059604645).
fn search_metrics(search: &BeamSearch) -> serde_json::Value {
    let shown = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::from(x));
    serde_json::json!({
        "beam_width": search.beam_width,
        "lm_weight": shown(search.lm_weight),
        "length_bonus": shown(search.length_bonus),
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
        1
    }

    fn summary(&self) -> &'static str {
        "choose the beam's language-model weight and length bonus on validation lines; writes the .lm with them"
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
                    ..lm.search
                });
            }
        }
        let datasets = &ctx.deps[2..];
        // Decoding work per dataset: every grid point, then greedy and the given setting.
        let decodings = (datasets.len() * (grid.len() + 2)) as u64;
        observer.total((datasets.len() * params.lines_per_dataset) as u64 + decodings);
        let sets = datasets
            .iter()
            .zip(&ctx.stage.deps[2..])
            .map(|(path, dep)| {
                ScoredLines::read(&recognizer, dep, path, params.lines_per_dataset, &observer)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A split smaller than `lines_per_dataset` gave fewer lines than the first estimate.
        let lines: usize = sets.iter().map(|set| set.labels.len()).sum();
        observer.total(lines as u64 + decodings);

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
        lm.search = grid[chosen];
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
        let metrics = serde_json::json!({
            "chosen": search_metrics(&grid[chosen]),
            "given": search_metrics(&given),
            "tolerance": params.tolerance,
            "datasets": per_dataset,
            "grid": table,
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
}
