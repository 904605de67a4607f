//! `train`: fit a model (`char_cnn`, the character classifier, `line_ctc`, the line recognizer,
//! or `line_fcn`, the learned line detector) on a dataset, with checkpoints that let a killed run resume, and write the
//! weights, spec, history and curves.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use textrec_pipeline::{Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::Architecture;
use textrec_recognizer::data::Observer;
use textrec_recognizer::models::{
    CpuTraining, Device, TrainOptions, TrainOutcome, TrainingBackend, train_char_model,
    train_detector_model, train_line_model,
};
use textrec_recognizer::networks::{CharCnnConfig, LineCtcConfig, LineFcnConfig};

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct Train;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: Architecture,
    #[serde(default)]
    training: TrainOptions,
    /// Size of the network, read as the model's own `*Network`; unset fields keep the defaults.
    #[serde(default)]
    network: Option<serde_json::Value>,
    /// A model directory (another train stage's out) to start from: a fine-tune. It must be
    /// one of the deps, so that the stage re-runs when those weights change.
    #[serde(default)]
    init: Option<String>,
}

/// `network` for char_cnn. One struct per model, so a field of another model is an unknown
/// field, and the error lists the ones this model takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CharNetwork {
    /// Output channels of the two convolutions (default [32, 64]).
    channels: Option<Vec<usize>>,
    /// Units of the hidden fully connected layer (default 128).
    hidden: Option<usize>,
    /// Dropout after pooling and before the head (default 0.25).
    dropout: Option<f64>,
}

/// `network` for line_ctc.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineNetwork {
    /// Output channels of the three convolution blocks (default [32, 64, 96]).
    channels: Option<Vec<usize>>,
    /// Hidden units per LSTM direction (default 128).
    lstm_hidden: Option<usize>,
    /// Dropout before the head (default 0.2).
    dropout: Option<f64>,
}

/// `network` for line_fcn.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorNetwork {
    /// Output channels of the four dilated convolutions (default [16, 16, 32, 32]).
    channels: Option<Vec<usize>>,
    /// Page pixels per network pixel (default 4).
    scale: Option<usize>,
}

fn exactly<const N: usize>(channels: &Option<Vec<usize>>) -> Result<Option<[usize; N]>, String> {
    channels
        .as_ref()
        .map(|c| {
            <[usize; N]>::try_from(c.as_slice())
                .map_err(|_| format!("channels has {} entries, not {N}", c.len()))
        })
        .transpose()
}

/// The stage's `network`, read as `N` and turned into a network config by `config`.
fn network_config<N: DeserializeOwned, C>(
    params: &Params,
    config: impl FnOnce(N) -> Result<C, String>,
) -> Result<Option<C>, String> {
    params
        .network
        .as_ref()
        .map(|value| parse_params(value).and_then(config))
        .transpose()
        .map_err(|e| format!("network: {e}"))
}

impl CharNetwork {
    fn config(self) -> Result<CharCnnConfig, String> {
        // Classes come from the dataset when training starts.
        let mut config = CharCnnConfig::new(2);
        if let Some([conv1, conv2]) = exactly(&self.channels)? {
            config.conv1_channels = conv1;
            config.conv2_channels = conv2;
        }
        config.hidden = self.hidden.unwrap_or(config.hidden);
        config.dropout = self.dropout.unwrap_or(config.dropout);
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

impl LineNetwork {
    fn config(self) -> Result<LineCtcConfig, String> {
        // Classes and height come from the dataset when training starts.
        let mut config = LineCtcConfig::new(2);
        config.channels = exactly(&self.channels)?.unwrap_or(config.channels);
        config.lstm_hidden = self.lstm_hidden.unwrap_or(config.lstm_hidden);
        config.dropout = self.dropout.unwrap_or(config.dropout);
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

impl DetectorNetwork {
    fn config(self) -> Result<LineFcnConfig, String> {
        let mut config = LineFcnConfig::new();
        config.channels = exactly(&self.channels)?.unwrap_or(config.channels);
        config.scale = self.scale.unwrap_or(config.scale);
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
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

fn validate(stage: &Stage) -> Result<Validated, String> {
    let params: Params = parse_params(&stage.params)?;
    let deps = 1 + usize::from(params.init.is_some());
    if stage.deps.len() != deps || stage.outs.len() != 1 || stage.metrics.len() > 1 {
        return Err("`train` reads one dataset (deps; plus the `init` model when fine-tuning), writes one model directory (outs) and at most one metrics file".into());
    }
    let init = match &params.init {
        None => None,
        Some(init) => {
            if params.network.is_some() {
                return Err(format!(
                    "`network` and `init` both given: a fine-tune keeps the network of `{init}`; remove `network`"
                ));
            }
            let normalized = textrec_pipeline::normalize_dep(init)
                .map_err(|e| format!("`init: {init}`: {e}"))?;
            let index = stage
                .deps
                .iter()
                .position(|d| *d == normalized)
                .ok_or_else(|| {
                    format!("`init: {init}` must be one of the deps (the dataset, then the model to start from)")
                })?;
            if index == 0 {
                return Err(format!(
                    "`init: {init}` is the first dep, which is the dataset; list the dataset first and the model after it"
                ));
            }
            Some(index)
        }
    };
    params
        .training
        .validate()
        .map_err(|e| format!("training: {e}"))?;
    let model = match params.model {
        Architecture::CharCnn => Model::Char(network_config(&params, CharNetwork::config)?),
        Architecture::LineCtc => Model::Line(network_config(&params, LineNetwork::config)?),
        Architecture::LineFcn => Model::Detector(network_config(&params, DetectorNetwork::config)?),
    };
    if params.training.label_smoothing.is_some() && !matches!(model, Model::Char(_)) {
        return Err(
            "training: label_smoothing is for the char_cnn classifier (line_ctc and \
                    line_fcn have no class targets to smooth); remove it from this stage"
                .into(),
        );
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

    fn check(&self, stage: &Stage) -> Result<(), String> {
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
