//! `language-model`: count a character n-gram language model over the training transcriptions
//! of one or more lines datasets (never val or test), with the beam decoder's settings, as one
//! `.lm` file that `evaluate` and `package` take next to the line model. Several datasets let
//! the text of real lines (French wills, say) join the synthetic lines' English, so the
//! decoder expects both. Reports how well it predicts the validation lines (bits per character).

use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::Vocabulary;
use textrec_recognizer::data::{Dataset, DatasetKind, Split};
use textrec_recognizer::lm::{BeamSearch, CharLm, LmError, MAX_ORDER};

#[derive(Debug, Clone, Copy)]
pub struct LanguageModel;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Longest n-gram counted: the model sees `order − 1` characters of context.
    #[serde(default = "default_order")]
    order: usize,
    /// How the beam decoder weighs it; stored in the file as its defaults.
    #[serde(default)]
    search: BeamSearch,
    /// How many times each dataset's lines are counted, one per dep (default once each).
    #[serde(default)]
    weights: Option<Vec<u32>>,
}

fn default_order() -> usize {
    6
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    let out_is_lm = stage.outs.first().is_some_and(|o| o.ends_with(".lm"));
    if stage.deps.is_empty() || stage.outs.len() != 1 || !out_is_lm || stage.metrics.len() > 1 {
        return Err(InvalidStage::shape(
            "`language-model` reads one or more lines datasets (deps) and writes one .lm file \
             (outs), plus optional metrics",
        ));
    }
    if let Some(weights) = &params.weights
        && (weights.len() != stage.deps.len() || weights.contains(&0))
    {
        return Err(InvalidStage::param(
            "weights",
            format!(
                "`weights` needs one count of at least 1 per dep ({} deps, {} weights)",
                stage.deps.len(),
                weights.len()
            ),
        ));
    }
    if !(1..=MAX_ORDER).contains(&params.order) {
        return Err(InvalidStage::param(
            "order",
            format!("`order` {} must be in 1..={MAX_ORDER}", params.order),
        ));
    }
    params
        .search
        .validate()
        .map_err(|e| InvalidStage::nested("search", e))?;
    Ok(params)
}

impl StageKind for LanguageModel {
    fn name(&self) -> &'static str {
        "language-model"
    }

    fn version(&self) -> u32 {
        2
    }

    fn summary(&self) -> &'static str {
        "count a character n-gram language model over a lines dataset's training text, for beam decoding"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        // Line models are trained over the default vocabulary; so is their language model.
        let vocabulary = Vocabulary::default();
        let (mut train, mut val) = (Vec::new(), Vec::new());
        // Where each dataset's lines end in `train`, to name the file of a bad line.
        let mut ends = Vec::new();
        for (i, (path, dep)) in ctx.deps.iter().zip(&ctx.stage.deps).enumerate() {
            let dataset = Dataset::open(path)?;
            if dataset.manifest.kind != DatasetKind::Lines {
                return Err(format!(
                    "{}: a language model is counted over lines datasets, this one holds {}",
                    path.display(),
                    dataset.manifest.kind.name()
                )
                .into());
            }
            let labels = |split| {
                dataset
                    .samples(split)
                    .map(|s| s.map(|s| s.label))
                    .collect::<Result<Vec<_>, _>>()
            };
            let lines = labels(Split::Train)?;
            let times = params.weights.as_ref().map_or(1, |w| w[i]);
            for _ in 0..times {
                train.extend(lines.iter().cloned());
            }
            ends.push((train.len(), path));
            let lines = labels(Split::Val)?;
            val.push((path, dep, lines));
        }
        let lm = CharLm::count(&vocabulary, params.order, train, params.search).map_err(|e| {
            let line = match &e {
                LmError::Text { line, .. } => *line,
                _ => 0,
            };
            let path = ends.iter().find(|(end, _)| line <= *end).map(|(_, p)| p);
            format!(
                "{} (train split): {e}",
                path.unwrap_or(&&ctx.deps[0]).display()
            )
        })?;
        let mut all_val = Vec::new();
        let mut by_dataset = serde_json::Map::new();
        for (path, dep, lines) in val {
            let bits = lm
                .bits_per_char(&vocabulary, &lines)
                .map_err(|e| format!("{} (val split): {e}", path.display()))?;
            by_dataset.insert(dep.clone(), serde_json::json!(bits));
            all_val.extend(lines);
        }
        let bits = lm
            .bits_per_char(&vocabulary, &all_val)
            .map_err(|e| format!("{} (val split): {e}", ctx.deps[0].display()))?;
        std::fs::write(&ctx.outs[0].1, lm.to_bytes())?;
        if let Some((_, path)) = ctx.outs.get(1) {
            let mut metrics = serde_json::json!({
                "order": lm.order(),
                "ngrams": lm.ngrams(),
                "val_lines": all_val.len(),
                "val_bits_per_char": bits,
                "uniform_bits_per_char": (vocabulary.len() as f64).log2(),
            });
            // One dataset keeps the metrics file it always had.
            if by_dataset.len() > 1 {
                metrics["val_bits_per_char_by_dataset"] = by_dataset.into();
            }
            std::fs::write(path, format!("{metrics}\n"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(params: serde_json::Value, outs: &[&str]) -> Stage {
        Stage {
            name: "language-model".into(),
            kind: "language-model".into(),
            desc: None,
            deps: vec!["data/lines".into()],
            outs: outs.iter().map(|o| o.to_string()).collect(),
            metrics: Vec::new(),
            params,
            resources: None,
            line: 1,
            column: 1,
        }
    }

    #[test]
    fn params_and_outs_are_checked_at_load_time() {
        let params = validate(&stage(json!({}), &["models/lines.lm"])).unwrap();
        assert_eq!((params.order, params.search), (6, BeamSearch::default()));
        let partial = json!({"order": 4, "search": {"beam_width": 8}});
        let params = validate(&stage(partial, &["m.lm"])).unwrap();
        assert_eq!((params.order, params.search.beam_width), (4, 8));
        assert_eq!(params.search.lm_weight, BeamSearch::default().lm_weight);
        let err = |params, outs: &[&str]| validate(&stage(params, outs)).unwrap_err().to_string();
        assert!(err(json!({}), &["models/lines"]).contains(".lm"));
        assert!(err(json!({"order": 9}), &["m.lm"]).contains("1..=8"));
        assert!(err(json!({"search": {"beam_width": 0}}), &["m.lm"]).contains("beam_width"));
        assert!(err(json!({"search": {"beam": 4}}), &["m.lm"]).contains("beam"));
        // One weight per dep, each at least 1.
        assert!(err(json!({"weights": [1, 3]}), &["m.lm"]).contains("1 deps, 2 weights"));
        assert!(err(json!({"weights": [0]}), &["m.lm"]).contains("at least 1"));
        assert!(validate(&stage(json!({"weights": [3]}), &["m.lm"])).is_ok());
    }
}
