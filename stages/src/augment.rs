//! `augment`: materialise seeded augmented copies of a chars or lines dataset (affine, elastic,
//! blur, noise, erasing), keeping every original. Val and test pass through unchanged unless
//! named in `splits`.

use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::augment::{AugmentPlan, Augmentation, augment_dataset};
use textrec_recognizer::data::{Dataset, Split};

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct Augment;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    seed: u64,
    /// Augmented copies per original sample.
    copies: u32,
    #[serde(default = "default_splits")]
    splits: Vec<Split>,
    #[serde(default)]
    augmentation: Augmentation,
    #[serde(default = "default_shard_mb")]
    shard_mb: u64,
}

fn default_splits() -> Vec<Split> {
    vec![Split::Train]
}

fn default_shard_mb() -> u64 {
    256
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    if stage.deps.len() != 1 || stage.outs.len() != 1 || !stage.metrics.is_empty() {
        return Err(InvalidStage::shape(
            "`augment` reads one dataset (deps) and writes one (outs)",
        ));
    }
    params
        .augmentation
        .validate()
        .map_err(|e| InvalidStage::nested("augmentation", e))?;
    if params.shard_mb == 0 {
        return Err(InvalidStage::param("shard_mb", "`shard_mb` must be > 0"));
    }
    Ok(params)
}

impl StageKind for Augment {
    fn name(&self) -> &'static str {
        "augment"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "write a dataset plus seeded augmented copies (affine, elastic, blur, noise, erase) of chosen splits"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let input = Dataset::open(&ctx.deps[0])?;
        let plan = AugmentPlan {
            augmentation: params.augmentation,
            seed: params.seed,
            copies: params.copies,
            splits: params.splits,
            shard_bytes: params.shard_mb << 20,
        };
        augment_dataset(&input, &ctx.outs[0].1, &plan, &StageObserver { ctx })?;
        Ok(())
    }
}
