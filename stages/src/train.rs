//! `train`: fit a model (today the `char_cnn` character classifier) on a dataset, with
//! checkpoints that let a killed run resume, and write the weights, spec, history and curves.

use serde::{Deserialize, Serialize};
use textrec_pipeline::{Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::Observer;
use textrec_recognizer::models::{CpuTraining, Device, TrainOptions, train_char_model};

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct Train;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Architecture {
    CharCnn,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: Architecture,
    #[serde(default)]
    training: TrainOptions,
}

fn validate(stage: &Stage) -> Result<Params, String> {
    let params: Params = parse_params(&stage.params)?;
    if stage.deps.len() != 1 || stage.outs.len() != 1 || stage.metrics.len() > 1 {
        return Err("`train` reads one dataset (deps), writes one model directory (outs) and at most one metrics file".into());
    }
    params
        .training
        .validate()
        .map_err(|e| format!("training: {e}"))?;
    Ok(params)
}

impl StageKind for Train {
    fn name(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "train a model (char_cnn) with AdamW, cosine LR, clipping, early stopping; resumes after a kill"
    }

    fn check(&self, stage: &Stage) -> Result<(), String> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let observer = StageObserver { ctx };
        let out = &ctx.outs[0].1;
        if params.training.device == Device::Auto {
            // This build has no GPU backend: `auto` means the CPU, and the user should know.
            observer.warn("device: auto → cpu (this build has no CUDA backend)");
        }
        let (spec, _history) = match (params.model, params.training.device) {
            (Architecture::CharCnn, Device::Cpu | Device::Auto) => train_char_model::<CpuTraining>(
                &ctx.deps[0],
                &params.training,
                None,
                out,
                &ctx.resume,
                &observer,
                &Default::default(),
            )?,
            (_, Device::Cuda) => {
                return Err(
                    "device: cuda is not available in this build (CPU training uses Burn's flex backend); \
                     use device: cpu or auto"
                        .into(),
                );
            }
        };
        if let Some((_, metrics)) = ctx.outs.get(1) {
            let o = &spec.outcome;
            let json = serde_json::json!({
                "val_accuracy": o.best_metric,
                "best_epoch": o.best_epoch,
                "epochs": o.epochs_run,
                "steps": o.steps,
                "images_per_second": o.images_per_second,
            });
            std::fs::write(metrics, format!("{json}\n"))?;
        }
        if let Some(step) = spec.outcome.resumed_from {
            observer.warn(&format!("resumed from the checkpoint at step {step}"));
        }
        Ok(())
    }
}
