//! `ground-truth`: a lines dataset (shards + `manifest.json`) from the ground truth users export
//! from annotation tools: line images with `NAME.gt.txt`, PAGE XML, or ALTO, with their images.
//! Its one dep is the folder that holds them.

use serde::Deserialize;
use textrec_pipeline::{Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::ground_truth::{
    GroundTruthConfig, GroundTruthFormat, IMPORTER_VERSION, OutOfVocabulary, SplitBy, SplitRule,
    import_ground_truth,
};
use textrec_recognizer::vocab::Vocabulary;

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct GroundTruth;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    format: GroundTruthFormat,
    /// Line height of the dataset: the line model's input height.
    #[serde(default = "default_height")]
    height: u16,
    /// `{val: 0.1, test: 0.1}` (fractions drawn per `split_by` key), or one split for every
    /// line (`test`).
    #[serde(default)]
    split: SplitRule,
    #[serde(default)]
    split_by: SplitBy,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    out_of_vocabulary: OutOfVocabulary,
    #[serde(default = "default_max_megapixels")]
    max_megapixels: u64,
    #[serde(default = "default_shard_mb")]
    shard_mb: u64,
}

fn default_height() -> u16 {
    32
}

fn default_max_megapixels() -> u64 {
    100
}

fn default_shard_mb() -> u64 {
    256
}

fn validate(stage: &Stage) -> Result<Params, String> {
    let params: Params = parse_params(&stage.params)?;
    if stage.deps.len() != 1 || stage.outs.len() != 1 || !stage.metrics.is_empty() {
        return Err(
            "`ground-truth` reads one dep (the folder of ground truth) and writes one out (the \
             dataset directory), no metrics"
                .into(),
        );
    }
    if params.height < 8 {
        return Err("`height` must be at least 8".into());
    }
    if let SplitRule::Fractions(f) = params.split
        && !(f.val >= 0.0 && f.test >= 0.0 && f.val + f.test < 1.0)
    {
        return Err("`split`: val and test must be >= 0 and leave some train".into());
    }
    if params.shard_mb == 0 || params.max_megapixels == 0 {
        return Err("`shard_mb` and `max_megapixels` must be > 0".into());
    }
    Ok(params)
}

impl StageKind for GroundTruth {
    fn name(&self) -> &'static str {
        "ground-truth"
    }

    fn version(&self) -> u32 {
        IMPORTER_VERSION
    }

    fn summary(&self) -> &'static str {
        "import line images + .gt.txt, PAGE XML or ALTO ground truth as a lines dataset"
    }

    fn check(&self, stage: &Stage) -> Result<(), String> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let config = GroundTruthConfig {
            format: params.format,
            height: params.height,
            split: params.split,
            split_by: params.split_by,
            seed: params.seed,
            out_of_vocabulary: params.out_of_vocabulary,
            vocabulary: Vocabulary::default(),
            source_name: ctx.stage.deps[0].clone(),
            shard_bytes: params.shard_mb << 20,
            max_pixels: params.max_megapixels * 1_000_000,
            params: ctx.stage.params.clone(),
        };
        import_ground_truth(
            &ctx.deps[0],
            &config,
            &ctx.outs[0].1,
            &StageObserver { ctx },
        )?;
        Ok(())
    }
}
