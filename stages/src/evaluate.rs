//! `evaluate`: run the exported ONNX model (what ships) on a dataset split with tract, next to a
//! trivial baseline and the previous release's metrics, and enforce the quality gates.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Deserialize;
use textrec_pipeline::{Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::{Dataset, Split};
use textrec_recognizer::infer::{CharClassifier, score_chars};

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct Evaluate;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_split")]
    split: Split,
    /// Fail below this accuracy.
    #[serde(default)]
    min_accuracy: Option<f64>,
    /// Fail if the evaluation takes longer.
    #[serde(default)]
    max_seconds: Option<f64>,
    /// A previous release's metrics.json; `max_regression` is measured against it.
    #[serde(default)]
    previous: Option<String>,
    /// Fail if accuracy dropped by more than this (absolute) from `previous`.
    #[serde(default)]
    max_regression: Option<f64>,
}

fn default_split() -> Split {
    Split::Test
}

fn validate(stage: &Stage) -> Result<Params, String> {
    let params: Params = parse_params(&stage.params)?;
    if stage.deps.len() != 2 || stage.outs.len() != 1 || stage.metrics.len() != 1 {
        return Err("`evaluate` reads [model.onnx, dataset], writes a report directory (outs) and a metrics file".into());
    }
    if params.max_regression.is_some() && params.previous.is_none() {
        return Err(
            "`max_regression` needs `previous` (the earlier release's metrics.json)".into(),
        );
    }
    Ok(params)
}

impl StageKind for Evaluate {
    fn name(&self) -> &'static str {
        "evaluate"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "score the exported model vs a baseline and the previous release; gates min_accuracy, max_seconds, max_regression"
    }

    fn check(&self, stage: &Stage) -> Result<(), String> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let started = Instant::now();
        let classifier = CharClassifier::load(&ctx.deps[0], 128)?;
        let dataset = Dataset::open(&ctx.deps[1])?;
        let confusion = score_chars(&classifier, &dataset, params.split, &StageObserver { ctx })?;
        let seconds = started.elapsed().as_secs_f64();
        let accuracy = confusion.accuracy();
        // Baseline: always answer the training split's most frequent class.
        let majority = dataset
            .split(Split::Train)
            .and_then(|s| {
                s.class_counts
                    .iter()
                    .max_by_key(|(_, c)| **c)
                    .map(|(k, _)| k.clone())
            })
            .unwrap_or_default();
        let baseline = confusion.share_of(&majority);
        let previous = match &params.previous {
            Some(p) => read_previous(&ctx.workdir.join(p))?,
            None => None,
        };

        let metrics = serde_json::json!({
            "accuracy": accuracy,
            "samples": confusion.total(),
            "baseline_majority_accuracy": baseline,
            "previous_accuracy": previous,
            "seconds": seconds,
        });
        let report = &ctx.outs[0].1;
        std::fs::create_dir_all(report)?;
        std::fs::write(&ctx.outs[1].1, format!("{metrics}\n"))?;
        let per_class = confusion.per_class();
        std::fs::write(
            report.join("per_class.json"),
            serde_json::to_vec_pretty(&per_class)?,
        )?;
        confusion.write_png(&report.join("confusion.png"))?;
        let summary = Summary {
            split: params.split,
            accuracy,
            baseline,
            previous,
            samples: confusion.total(),
        };
        std::fs::write(report.join("report.md"), summary.markdown(&per_class))?;

        let mut failures = Vec::new();
        if let Some(floor) = params.min_accuracy
            && accuracy < floor
        {
            failures.push(format!(
                "accuracy {accuracy:.4} is below min_accuracy {floor}"
            ));
        }
        if let Some(limit) = params.max_seconds
            && seconds > limit
        {
            failures.push(format!(
                "evaluation took {seconds:.1}s, over max_seconds {limit}"
            ));
        }
        if let (Some(allowed), Some(before)) = (params.max_regression, previous)
            && before - accuracy > allowed
        {
            failures.push(format!(
                "accuracy {accuracy:.4} regressed from the previous release's {before:.4} by more than {allowed}"
            ));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("quality gate failed: {}", failures.join("; ")).into())
        }
    }
}

fn read_previous(path: &Path) -> Result<Option<f64>, StageFailure> {
    if !path.exists() {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(value.get("accuracy").and_then(serde_json::Value::as_f64))
}

struct Summary {
    split: Split,
    accuracy: f64,
    baseline: f64,
    previous: Option<f64>,
    samples: u32,
}

impl Summary {
    fn markdown(&self, per_class: &BTreeMap<String, f64>) -> String {
        let mut md = format!(
            "# Character model evaluation ({} split, {} samples)\n\n| model | accuracy |\n|---|---|\n\
             | this model | {:.4} |\n| majority-class baseline | {:.4} |\n",
            self.split.name(),
            self.samples,
            self.accuracy,
            self.baseline
        );
        if let Some(p) = self.previous {
            md.push_str(&format!("| previous release | {p:.4} |\n"));
        }
        let mut worst: Vec<(&String, &f64)> = per_class.iter().collect();
        worst.sort_by(|a, b| a.1.total_cmp(b.1));
        md.push_str("\n## Hardest classes\n\n| class | accuracy |\n|---|---|\n");
        for (c, a) in worst.iter().take(10) {
            md.push_str(&format!("| `{c}` | {a:.3} |\n"));
        }
        md.push_str("\n![confusion matrix](confusion.png)\n");
        md
    }
}
