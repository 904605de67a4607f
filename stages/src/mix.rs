//! `mix`: several datasets of one kind as one, each train split drawn `weights[i]` times (real
//! lines oversampled beside synthetic ones), validation and test splits taken once each.

use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::mix::{MIX_VERSION, MixConfig, mix_datasets};

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct Mix;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// One per dep: how many times its train split is drawn (1: once; 2.5: twice, and half of
    /// it a third time).
    weights: Vec<f64>,
    seed: u64,
    #[serde(default = "default_shard_mb")]
    shard_mb: u64,
}

fn default_shard_mb() -> u64 {
    256
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    if stage.deps.len() < 2 || stage.outs.len() != 1 || !stage.metrics.is_empty() {
        return Err(InvalidStage::shape(
            "`mix` reads two or more datasets (deps) and writes one (outs), no metrics",
        ));
    }
    if params.weights.len() != stage.deps.len() {
        return Err(InvalidStage::param(
            "weights",
            format!(
                "`weights` has {} entries for {} deps: one weight per dataset",
                params.weights.len(),
                stage.deps.len()
            ),
        ));
    }
    if let Some(w) = params
        .weights
        .iter()
        .find(|w| !(w.is_finite() && **w > 0.0 && **w <= 1000.0))
    {
        return Err(InvalidStage::param(
            "weights",
            format!("weight {w} must be > 0 and at most 1000"),
        ));
    }
    if params.shard_mb == 0 {
        return Err(InvalidStage::param("shard_mb", "`shard_mb` must be > 0"));
    }
    Ok(params)
}

impl StageKind for Mix {
    fn name(&self) -> &'static str {
        "mix"
    }

    fn version(&self) -> u32 {
        MIX_VERSION
    }

    fn summary(&self) -> &'static str {
        "mix datasets of one kind, each train split drawn by its weight, val and test once"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let config = MixConfig {
            inputs: ctx.deps.iter().cloned().zip(params.weights).collect(),
            seed: params.seed,
            shard_bytes: params.shard_mb << 20,
            params: ctx.stage.params.clone(),
        };
        mix_datasets(&config, &ctx.outs[0].1, &StageObserver { ctx })?;
        Ok(())
    }
}
