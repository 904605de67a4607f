//! `language-model`: count a character n-gram language model over a lines dataset's training
//! transcriptions (never val or test), with the beam decoder's settings, as one `.lm` file that
//! `evaluate` and `package` take next to the line model. Reports how well it predicts the
//! validation lines (bits per character).

use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::Vocabulary;
use textrec_recognizer::data::{Dataset, DatasetKind, Split};
use textrec_recognizer::lm::{BeamSearch, CharLm, MAX_ORDER};

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
}

fn default_order() -> usize {
    6
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    let out_is_lm = stage.outs.first().is_some_and(|o| o.ends_with(".lm"));
    if stage.deps.len() != 1 || stage.outs.len() != 1 || !out_is_lm || stage.metrics.len() > 1 {
        return Err(InvalidStage::shape(
            "`language-model` reads one lines dataset (deps) and writes one .lm file (outs), \
             plus optional metrics",
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
        1
    }

    fn summary(&self) -> &'static str {
        "count a character n-gram language model over a lines dataset's training text, for beam decoding"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let dataset = Dataset::open(&ctx.deps[0])?;
        if dataset.manifest.kind != DatasetKind::Lines {
            return Err(format!(
                "{}: a language model is counted over a lines dataset, this one holds {}",
                ctx.deps[0].display(),
                dataset.manifest.kind.name()
            )
            .into());
        }
        // Line models are trained over the default vocabulary; so is their language model.
        let vocabulary = Vocabulary::default();
        let labels = |split| {
            dataset
                .samples(split)
                .map(|s| s.map(|s| s.label))
                .collect::<Result<Vec<_>, _>>()
        };
        let lm = CharLm::count(
            &vocabulary,
            params.order,
            labels(Split::Train)?,
            params.search,
        )
        .map_err(|e| format!("{} (train split): {e}", ctx.deps[0].display()))?;
        let val = labels(Split::Val)?;
        let bits = lm
            .bits_per_char(&vocabulary, &val)
            .map_err(|e| format!("{} (val split): {e}", ctx.deps[0].display()))?;
        std::fs::write(&ctx.outs[0].1, lm.to_bytes())?;
        if let Some((_, path)) = ctx.outs.get(1) {
            let metrics = serde_json::json!({
                "order": lm.order(),
                "ngrams": lm.ngrams(),
                "val_lines": val.len(),
                "val_bits_per_char": bits,
                "uniform_bits_per_char": (vocabulary.len() as f64).log2(),
            });
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
    }
}
