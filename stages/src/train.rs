//! `train`: fit a model (`char_cnn`, the character classifier, `line_ctc`, the line recognizer,
//! or `line_fcn`, the learned line detector) on a dataset, with checkpoints that let a killed run resume, and write the
//! weights, spec, history and curves.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::Architecture;
use textrec_recognizer::data::Observer;
use textrec_recognizer::models::{
    CpuTraining, Device, TrainOptions, TrainOutcome, TrainingBackend, train_char_model,
    train_detector_model, train_line_model,
};
use textrec_recognizer::networks::{CharCnnConfig, LineCtcConfig, LineFcnConfig};
use textrec_recognizer::setting::InvalidSetting;

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct Train;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: Architecture,
    #[serde(default)]
    training: TrainOptions,
    /// Size of the network, read as the model's own config (`CharCnnConfig`, `LineCtcConfig`,
    /// `LineFcnConfig`); unset fields keep the defaults.
    #[serde(default)]
    network: Option<serde_json::Value>,
    /// A model directory (another train stage's out) to start from: a fine-tune. It must be
    /// one of the deps, so that the stage re-runs when those weights change.
    #[serde(default)]
    init: Option<String>,
}

/// The stage's `network`, read as the model's own config `C`; `from_dataset` names the fields that
/// training sets from the dataset, which the block must leave out.
fn network_config<C: DeserializeOwned>(
    params: &Params,
    from_dataset: &[&str],
    validate: impl FnOnce(&C) -> Result<(), InvalidSetting>,
) -> Result<Option<C>, InvalidStage> {
    let Some(network) = &params.network else {
        return Ok(None);
    };
    if let Some(field) = from_dataset
        .iter()
        .find(|field| network.get(**field).is_some())
    {
        return Err(InvalidStage::param(
            "network",
            format!("network: `{field}` comes from the dataset when training starts; remove it"),
        ));
    }
    let config: C = parse_params(network).map_err(|e| InvalidStage::nested("network", e))?;
    validate(&config).map_err(|e| InvalidStage::nested("network", e))?;
    Ok(Some(config))
}

/// The stage's params, checked, with `network` read as the chosen model's config (unset: the
/// model's defaults).
struct Validated {
    training: TrainOptions,
    model: Model,
    /// Index in the deps of the model to start from.
    init: Option<usize>,
}

enum Model {
    Char(Option<CharCnnConfig>),
    Line(Option<LineCtcConfig>),
    Detector(Option<LineFcnConfig>),
}

fn validate(stage: &Stage) -> Result<Validated, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    let deps = 1 + usize::from(params.init.is_some());
    if stage.deps.len() != deps || stage.outs.len() != 1 || stage.metrics.len() > 1 {
        return Err(InvalidStage::shape(
            "`train` reads one dataset (deps; plus the `init` model when fine-tuning), writes one model directory (outs) and at most one metrics file",
        ));
    }
    let init = match &params.init {
        None => None,
        Some(init) => {
            if params.network.is_some() {
                return Err(InvalidStage::param(
                    "network",
                    format!(
                        "`network` and `init` both given: a fine-tune keeps the network of `{init}`; remove `network`"
                    ),
                ));
            }
            let normalized = textrec_pipeline::normalize_dep(init)
                .map_err(|e| InvalidStage::nested(format!("`init: {init}`"), e))?;
            let index = stage
                .deps
                .iter()
                .position(|d| *d == normalized)
                .ok_or_else(|| {
                    InvalidStage::param("init", format!("`init: {init}` must be one of the deps (the dataset, then the model to start from)"))
                })?;
            if index == 0 {
                return Err(InvalidStage::param(
                    "init",
                    format!(
                        "`init: {init}` is the first dep, which is the dataset; list the dataset first and the model after it"
                    ),
                ));
            }
            Some(index)
        }
    };
    params
        .training
        .validate()
        .map_err(|e| InvalidStage::nested("training", e))?;
    let model = match params.model {
        Architecture::CharCnn => Model::Char(network_config(
            &params,
            &["classes"],
            CharCnnConfig::validate,
        )?),
        Architecture::LineCtc => Model::Line(network_config(
            &params,
            &["classes", "height"],
            LineCtcConfig::validate,
        )?),
        Architecture::LineFcn => {
            Model::Detector(network_config(&params, &[], LineFcnConfig::validate)?)
        }
    };
    if params.training.label_smoothing.is_some() && !matches!(model, Model::Char(_)) {
        return Err(InvalidStage::param(
            "label_smoothing",
            "training: label_smoothing is for the char_cnn classifier (line_ctc and \
                    line_fcn have no class targets to smooth); remove it from this stage",
        ));
    }
    if params.training.augment.is_some() && matches!(model, Model::Detector(_)) {
        return Err(InvalidStage::param(
            "augment",
            "training: augment is for char_cnn and line_ctc (a page's line boxes would not \
                    follow its warped pixels); remove it from this stage",
        ));
    }
    Ok(Validated {
        training: params.training,
        model,
        init,
    })
}

/// The Burn backend a train stage runs on, after `device` has been checked against this build
/// and machine.
enum SelectedBackend {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda,
}

fn training_backend(
    device: Device,
    observer: &StageObserver<'_, '_>,
) -> Result<SelectedBackend, StageFailure> {
    #[cfg(feature = "cuda")]
    {
        use textrec_recognizer::models::cuda_runtime;
        match (device, cuda_runtime()) {
            (Device::Cpu, _) => Ok(SelectedBackend::Cpu),
            (Device::Cuda | Device::Auto, Ok(())) => Ok(SelectedBackend::Cuda),
            (Device::Cuda, Err(why)) => Err(format!("device: cuda: {why}").into()),
            (Device::Auto, Err(why)) => {
                observer.warn(&format!("device: auto → cpu ({why})"));
                Ok(SelectedBackend::Cpu)
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    match device {
        Device::Cpu => Ok(SelectedBackend::Cpu),
        Device::Auto => {
            observer.warn("device: auto → cpu (this build has no CUDA backend)");
            Ok(SelectedBackend::Cpu)
        }
        Device::Cuda => Err("device: cuda needs a build with the `cuda` feature \
             (`cargo run --release -p xtask --features cuda -- run …`); use device: cpu or auto"
            .into()),
    }
}

/// Trains the stage's model on backend `B`; returns the outcome and the validation metric.
fn train_on<B: TrainingBackend>(
    params: &Validated,
    ctx: &StageContext<'_>,
    observer: &StageObserver<'_, '_>,
    device: &B::Device,
) -> Result<(TrainOutcome, (&'static str, f64)), StageFailure> {
    let out = &ctx.outs[0].1;
    let init = params.init.map(|i| ctx.deps[i].as_path());
    Ok(match &params.model {
        Model::Char(network) => {
            let (spec, _) = train_char_model::<B>(
                &ctx.deps[0],
                &params.training,
                network.clone(),
                init,
                out,
                &ctx.resume,
                observer,
                device,
            )?;
            let accuracy = spec.outcome.best_metric;
            (spec.outcome, ("val_accuracy", accuracy))
        }
        Model::Line(network) => {
            let (spec, _) = train_line_model::<B>(
                &ctx.deps[0],
                &params.training,
                network.clone(),
                init,
                out,
                &ctx.resume,
                observer,
                device,
            )?;
            // The fit maximises character accuracy, 1 − CER.
            let cer = 1.0 - spec.outcome.best_metric;
            (spec.outcome, ("val_cer", cer))
        }
        Model::Detector(network) => {
            let (spec, _) = train_detector_model::<B>(
                &ctx.deps[0],
                &params.training,
                network.clone(),
                init,
                out,
                &ctx.resume,
                observer,
                device,
            )?;
            let quality = spec.outcome.best_metric;
            (spec.outcome, ("val_detection_f1_x_iou", quality))
        }
    })
}

#[cfg(feature = "cuda")]
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

impl StageKind for Train {
    fn name(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        2
    }

    fn summary(&self) -> &'static str {
        "train a model (char_cnn, line_ctc, line_fcn) with AdamW, cosine LR, clipping, an optional weight average, early stopping; resumes after a kill"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let observer = StageObserver { ctx };
        let (outcome, metric) = match training_backend(params.training.device, &observer)? {
            SelectedBackend::Cpu => {
                train_on::<CpuTraining>(&params, ctx, &observer, &Default::default())?
            }
            #[cfg(feature = "cuda")]
            SelectedBackend::Cuda => {
                use textrec_recognizer::models::CudaTraining;
                let device = Default::default();
                // cudarc panics on driver/NVRTC failures it meets after the probe (a too-new
                // CUDA version, out of memory): a stage failure, not a crashed pipeline.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    train_on::<CudaTraining>(&params, ctx, &observer, &device)
                }))
                .map_err(|panic| format!("CUDA training failed: {}", panic_message(&panic)))??
            }
        };
        if let Some((_, metrics)) = ctx.outs.get(1) {
            let o = &outcome;
            let mut json = serde_json::json!({
                "best_epoch": o.best_epoch,
                "epochs": o.epochs_run,
                "steps": o.steps,
            });
            json[metric.0] = metric.1.into();
            std::fs::write(metrics, format!("{json}\n"))?;
        }
        if let Some(step) = outcome.resumed_from {
            observer.warn(&format!("resumed from the checkpoint at step {step}"));
        }
        Ok(())
    }
}
