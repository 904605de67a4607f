//! `emnist`: a chars dataset (shards + `manifest.json`) from EMNIST's MAT-file as FSDL ships it
//! (`matlab.zip` → `matlab/emnist-byclass.mat`), balanced as FSDL balances it, with a
//! validation split of train's writers. Its one dep is the `.mat` file.

use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::emnist::{EmnistConfig, IMPORTER_VERSION, import_emnist};
use textrec_recognizer::vocab::Vocabulary;

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct Emnist;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    seed: u64,
    /// FSDL's `SAMPLE_TO_BALANCE`: per class, at most the mean count per class.
    #[serde(default = "default_balance")]
    balance: bool,
    /// Share of train's writers held out as the validation split (FSDL: a random 20% of
    /// train's images).
    #[serde(default = "default_val_fraction")]
    val_fraction: f64,
    #[serde(default = "default_shard_mb")]
    shard_mb: u64,
}

fn default_balance() -> bool {
    true
}

fn default_val_fraction() -> f64 {
    0.2
}

fn default_shard_mb() -> u64 {
    256
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    if stage.deps.len() != 1 || stage.outs.len() != 1 || !stage.metrics.is_empty() {
        return Err(InvalidStage::shape(
            "`emnist` reads one dep (the .mat file, e.g. DOWNLOADS/emnist/matlab/emnist-byclass.mat) \
             and writes one out (the dataset directory), no metrics",
        ));
    }
    if !(0.0..1.0).contains(&params.val_fraction) {
        return Err(InvalidStage::param(
            "val_fraction",
            format!(
                "`val_fraction` is {}: it must be at least 0 and below 1",
                params.val_fraction
            ),
        ));
    }
    if params.shard_mb == 0 {
        return Err(InvalidStage::param("shard_mb", "`shard_mb` must be > 0"));
    }
    Ok(params)
}

impl StageKind for Emnist {
    fn name(&self) -> &'static str {
        "emnist"
    }

    fn version(&self) -> u32 {
        IMPORTER_VERSION
    }

    fn summary(&self) -> &'static str {
        "import EMNIST's MAT-file (FSDL's matlab.zip) as a balanced chars dataset, validation by writer"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let config = EmnistConfig {
            seed: params.seed,
            balance: params.balance,
            val_fraction: params.val_fraction,
            vocabulary: Vocabulary::default(),
            source_name: ctx.stage.deps[0].clone(),
            shard_bytes: params.shard_mb << 20,
            params: ctx.stage.params.clone(),
        };
        import_emnist(
            &ctx.deps[0],
            &config,
            &ctx.outs[0].1,
            &StageObserver { ctx },
        )?;
        Ok(())
    }
}
