//! The fit loop shared by every model: AdamW with warm-up and cosine decay, gradient clipping,
//! an optional moving average of the weights, a validation pass per epoch, early stopping, and
//! checkpoints that make training resumable after a kill.
//!
//! Determinism: the data order of epoch `e` and the backend RNG of step `s` are seeded from
//! `(seed, e)` and `(seed, s)` alone, so a resumed run continues exactly as an uninterrupted one
//! would, and the same seed on CPU gives the same weights bytes.
//!
//! Burn's backend RNG and autodiff graph registry are process-wide, and two trainings running
//! at once in one process (pipeline stages side by side) change each other's weights bytes
//! even with every seed set (seen with `-j 2`: other bytes on every run, also with dropout and
//! backward serialised). So a training holds [`exclusive_training`] from init to its last step.

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use burn::module::{
    AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId, RunningState,
};
use burn::nn::BatchNorm;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::history::{EpochRecord, History, StepRecord};
use crate::data::augment::{Augmentation, augment_batch};
use crate::data::batch::{Batch, Batcher};
use crate::data::split::stable_hash;
use crate::data::{DataError, Dataset, Observer, Sample, Split};
use crate::setting::{InvalidSetting, require};

/// Where training runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    /// CUDA when a driver is present (and the build has the `cuda` feature), else CPU.
    Auto,
}

/// Which weights a fit returns and saves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// Those of the epoch that validated best (PyTorch Lightning's best checkpoint).
    #[default]
    Best,
    /// Those after the last epoch (Keras's default), for when the validation writers are a poor
    /// guide to the test writers and the schedule has decayed the learning rate by the end.
    Last,
}

impl Keep {
    fn is_best(&self) -> bool {
        *self == Keep::Best
    }
}

/// Hyper-parameters of a fit, straight from the pipeline params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainOptions {
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f32,
    /// Steps of linear warm-up before the cosine decay.
    pub warmup_steps: u64,
    /// The learning rate decays to this fraction of `learning_rate`.
    pub min_learning_rate_ratio: f64,
    /// Gradient L2-norm clip (0 disables).
    pub clip_grad_norm: f32,
    /// Stop when the validation metric has not improved for this many epochs (0 disables).
    pub patience: usize,
    /// Save a checkpoint every this many steps (and at each epoch end).
    pub checkpoint_every: u64,
    /// Stop after this many steps in total, whatever `epochs` says (quick runs).
    pub max_steps: Option<u64>,
    /// Samples in the shuffle buffer.
    pub shuffle_buffer: usize,
    pub device: Device,
    /// Keep an exponential moving average of the weights, with this decay per step, and
    /// validate, select and save the average instead of the last weights. Averaged weights sit
    /// in a flatter part of the loss surface, which generalises better to writers training never
    /// saw (as SWA and timm's model EMA do). Unset: the last weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Train a classifier against targets that spread this much probability evenly over all
    /// classes (Szegedy et al. 2016, PyTorch's `label_smoothing`), so shapes that writers share
    /// (`l` and `/`, `O` and `0`) are not pushed to certainty. Classifiers only (`char_cnn`);
    /// validation loss stays plain cross-entropy. Unset: one-hot targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f32>,
    /// The weights to return and save: the best-validating epoch's, or the last epoch's.
    /// Validation runs every epoch either way, for the history and for `patience`.
    #[serde(skip_serializing_if = "Keep::is_best")]
    pub keep: Keep,
    /// Augment every training image on the fly, drawn afresh at each step from the seed, the
    /// step and the image's place in the batch, so a resumed run sees what an uninterrupted one
    /// saw and every epoch sees new variants. Characters and lines (not pages, whose boxes would
    /// not follow); unset: images as the dataset holds them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augmentation>,
}

/// An augmentation field's name as written under `training:` (`augment.scale`).
fn within_augment(field: &'static str) -> &'static str {
    match field {
        "rotate_degrees" => "augment.rotate_degrees",
        "shear" => "augment.shear",
        "scale" => "augment.scale",
        "translate" => "augment.translate",
        "elastic_alpha" => "augment.elastic_alpha",
        "elastic_sigma" => "augment.elastic_sigma",
        "blur" => "augment.blur",
        "noise" => "augment.noise",
        "erase_probability" => "augment.erase_probability",
        "erase_max_fraction" => "augment.erase_max_fraction",
        other => other,
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            seed: 1,
            epochs: 10,
            batch_size: 128,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            warmup_steps: 100,
            min_learning_rate_ratio: 0.05,
            clip_grad_norm: 1.0,
            patience: 3,
            checkpoint_every: 200,
            max_steps: None,
            shuffle_buffer: 8192,
            device: Device::Cpu,
            ema_decay: None,
            label_smoothing: None,
            keep: Keep::Best,
            augment: None,
        }
    }
}

impl TrainOptions {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(self.epochs > 0, "epochs", self.epochs, "at least 1")?;
        require(
            self.batch_size > 0,
            "batch_size",
            self.batch_size,
            "at least 1",
        )?;
        require(
            self.checkpoint_every > 0,
            "checkpoint_every",
            self.checkpoint_every,
            "at least 1",
        )?;
        require(
            self.learning_rate > 0.0 && self.learning_rate.is_finite(),
            "learning_rate",
            self.learning_rate,
            "a positive number",
        )?;
        require(
            (0.0..=1.0).contains(&self.min_learning_rate_ratio),
            "min_learning_rate_ratio",
            self.min_learning_rate_ratio,
            "in 0..=1",
        )?;
        if let Some(decay) = self.ema_decay {
            require(
                decay > 0.0 && decay < 1.0,
                "ema_decay",
                decay,
                "between 0 and 1, exclusive (0.999 is typical)",
            )?;
        }
        if let Some(alpha) = self.label_smoothing {
            require(
                (0.0..1.0).contains(&alpha),
                "label_smoothing",
                alpha,
                "at least 0 and below 1 (0.1 is typical)",
            )?;
        }
        if let Some(augment) = &self.augment {
            augment.validate().map_err(|e| InvalidSetting {
                setting: within_augment(e.setting),
                ..e
            })?;
        }
        Ok(())
    }

    /// Warm-up then cosine decay over `total` steps.
    pub fn learning_rate_at(&self, step: u64, total: u64) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.learning_rate * self.min_learning_rate_ratio;
        floor + (self.learning_rate - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// What a model plugs into [`fit`].
pub trait Task<B: AutodiffBackend> {
    type Network: AutodiffModule<B> + Clone + Send;

    /// Name of the validation metric (higher is better), e.g. `accuracy`.
    fn metric_name(&self) -> &'static str;

    /// Loss of one batch, in training mode.
    fn loss(&self, network: &Self::Network, batch: &Batch, device: &B::Device) -> Tensor<B, 1>;

    /// `(mean loss, metric)` over the validation split, in inference mode.
    fn validate(
        &self,
        network: &<Self::Network as AutodiffModule<B>>::InnerModule,
        batches: &mut dyn Iterator<Item = Batch>,
        device: &B::Device,
    ) -> (f64, f64);

    /// Width bucket for batching (lines); a huge value for fixed-size images.
    fn bucket_width(&self) -> usize {
        usize::MAX
    }
}

static TRAINING: Mutex<()> = Mutex::new(());

/// Test support: Burn's process-wide RNG seeded with `seed`, and no training or other test
/// drawing from it until the guard drops (tests run in parallel threads; one that drew between
/// another's seed and its draws changed that test's numbers).
#[cfg(test)]
pub(crate) fn seeded_exclusively<B: Backend>(
    device: &B::Device,
    seed: u64,
) -> MutexGuard<'static, ()> {
    let guard = TRAINING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    guard
}

/// Waits until no other training runs in this process and holds that until dropped; see the
/// module docs for why.
pub fn exclusive_training(observer: &dyn Observer) -> MutexGuard<'static, ()> {
    match TRAINING.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            observer.message("waiting for the other training in this process to finish");
            TRAINING
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

/// Renumbers a freshly built network's parameter ids 0, 1, 2, …: Burn draws them at random,
/// and they are written into every weights file, so without this the same seed would not give
/// the same bytes.
pub fn with_stable_ids<B: Backend, M: Module<B>>(network: M) -> M {
    struct StableIds(u64);
    impl<B: Backend> ModuleMapper<B> for StableIds {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (_, tensor, mapper) = param.consume();
            self.0 += 1;
            Param::from_mapped_value(ParamId::from(self.0), tensor, mapper)
        }
    }
    network.map(&mut StableIds(0))
}

/// Renumbers the running statistics of batch norms, which Burn's module mapping passes through
/// with the random ids it drew (they are written into weights files too): from the top of the
/// id range down, clear of [`with_stable_ids`]' 1, 2, 3, ….
pub fn with_stable_running_ids<B: Backend>(norms: &mut [&mut BatchNorm<B>]) {
    let mut next = u64::MAX;
    for norm in norms {
        for running in [&mut norm.running_mean, &mut norm.running_var] {
            *running = RunningState::with_id(ParamId::from(next), running.value());
            next -= 1;
        }
    }
}

/// The moving average's decay at update `step`: ramped up as (1 + step) / (10 + step), as
/// timm's model EMA does, so the first steps' weights (the random init) do not linger in it.
fn average_decay(decay: f64, step: u64) -> f64 {
    decay.min((1 + step) as f64 / (10 + step) as f64)
}

/// `average ← decay · average + (1 − decay) · current`, parameter by parameter. Visiting and
/// mapping walk a module in the same order (batch-norm statistics included), which pairs the
/// two modules' tensors.
fn blend_weights<B: Backend, M: Module<B>>(average: M, current: &M, decay: f64) -> M {
    struct Flatten<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Flatten<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let tensor = param.val();
            let count = tensor.shape().num_elements();
            self.0.push(tensor.reshape([count]));
        }
    }
    struct Blend<B: Backend> {
        current: std::vec::IntoIter<Tensor<B, 1>>,
        decay: f64,
    }
    impl<B: Backend> ModuleMapper<B> for Blend<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, average, mapper) = param.consume();
            let current = self
                .current
                .next()
                .expect("the average and the network are the same module")
                .reshape(average.shape());
            let blended = average
                .mul_scalar(self.decay)
                .add(current.mul_scalar(1.0 - self.decay));
            Param::from_mapped_value(id, blended, mapper)
        }
    }
    let mut flat = Flatten(Vec::new());
    current.visit(&mut flat);
    average.map(&mut Blend {
        current: flat.0.into_iter(),
        decay,
    })
}

/// How a fit ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub steps: u64,
    pub epochs_run: usize,
    /// The epoch whose weights were kept (the best-validating one, or the last with
    /// `keep: last`) and its validation metric.
    pub best_epoch: usize,
    pub best_metric: f64,
    pub stopped_early: bool,
    /// The step a killed run was resumed from, if any.
    pub resumed_from: Option<u64>,
    /// Wall-clock numbers: logged, never written into the model directory (same seed → same
    /// bytes).
    #[serde(skip)]
    pub seconds: f64,
    #[serde(skip)]
    pub images_per_second: f64,
}

/// The resumable state besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    /// The epoch in progress and how many of its batches are done.
    epoch: usize,
    batches_done: u64,
    step: u64,
    /// `None` until the first validation (JSON has no -∞).
    best_metric: Option<f64>,
    best_epoch: usize,
    epochs_without_improvement: usize,
    history: History,
    train_loss_sum: f64,
    train_batches: u64,
    /// The loss since the last step record, for the history's per-checkpoint curve.
    #[serde(default)]
    window_loss_sum: f64,
    #[serde(default)]
    window_batches: u64,
}

type Record<B, T> = <<T as Task<B>>::Network as burn::module::Module<B>>::Record;
/// The network in inference mode, which is what the weight average is.
type Inner<B, T> = <<T as Task<B>>::Network as AutodiffModule<B>>::InnerModule;
type InnerRecord<B, T> = <Inner<B, T> as Module<<B as AutodiffBackend>::InnerBackend>>::Record;

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::default()
}

/// Streams one split's samples; the first read error stops the stream and is kept.
struct Samples<'a> {
    inner: Box<dyn Iterator<Item = Result<Sample, DataError>> + 'a>,
    error: &'a RefCell<Option<DataError>>,
}

impl Iterator for Samples<'_> {
    type Item = Sample;
    fn next(&mut self) -> Option<Sample> {
        match self.inner.next()? {
            Ok(s) => Some(s),
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }
}

fn batches<'a>(
    dataset: &'a Dataset,
    split: Split,
    batch_size: usize,
    bucket: usize,
    buffer: usize,
    seed: u64,
    error: &'a RefCell<Option<DataError>>,
) -> Batcher<Samples<'a>> {
    let samples = Samples {
        inner: Box::new(dataset.samples(split)),
        error,
    };
    Batcher::new(samples, batch_size, bucket, buffer, seed)
}

/// The kept network (inference mode; see [`Keep`]), its history, and how training ended.
pub type Fitted<B, T> = (
    <<T as Task<B>>::Network as AutodiffModule<B>>::InnerModule,
    History,
    TrainOutcome,
);

/// Trains `network` on the dataset's train split, validating on val after each epoch, and
/// returns the kept network (by default the best by validation metric; see [`Keep`]), its
/// history and how training ended.
/// Checkpoints go to `resume_dir`; a checkpoint found there is resumed from.
pub fn fit<B: AutodiffBackend, T: Task<B>>(
    task: &T,
    mut network: T::Network,
    dataset: &Dataset,
    options: &TrainOptions,
    resume_dir: &Path,
    observer: &dyn Observer,
    device: &B::Device,
) -> Result<Fitted<B, T>, ModelError> {
    options.validate()?;
    let train_count = dataset.split(Split::Train).map_or(0, |s| s.count);
    if train_count == 0 {
        return Err(ModelError::Invalid {
            reason: format!("{} has no training samples", dataset.dir.display()),
        });
    }
    let steps_per_epoch = train_count.div_ceil(options.batch_size as u64);
    let planned = steps_per_epoch * options.epochs as u64;
    let total_steps = options.max_steps.map_or(planned, |m| m.min(planned));

    let mut optimizer = optimizer::<B, T>(options);

    let mut state = Checkpoint {
        epoch: 0,
        batches_done: 0,
        step: 0,
        best_metric: None,
        best_epoch: 0,
        epochs_without_improvement: 0,
        history: History {
            metric_name: task.metric_name().to_owned(),
            epochs: Vec::new(),
            steps: Vec::new(),
        },
        train_loss_sum: 0.0,
        train_batches: 0,
        window_loss_sum: 0.0,
        window_batches: 0,
    };
    // The weights `fit` will return, serialised: the best-validating epoch's, or with
    // `keep: last` the last epoch's.
    let mut kept: Option<Vec<u8>> = None;
    let mut resumed_from = None;
    let mut average: Option<Inner<B, T>> = options.ema_decay.map(|_| network.valid());
    if let Some((saved, net, opt, kept_bytes, saved_average)) =
        load_checkpoint::<B, T>(resume_dir, options.ema_decay.is_some(), device)?
    {
        network = network.load_record(net);
        optimizer = optimizer.load_record(opt);
        // `valid()` builds a fresh module, so loading into it leaves the network's state alone.
        average = saved_average.map(|record| network.valid().load_record(record));
        resumed_from = Some(saved.step);
        kept = kept_bytes;
        state = saved;
    }

    observer.total(total_steps);
    observer.advance(state.step);
    let started = Instant::now();
    let mut images = 0u64;
    let error = RefCell::new(None);
    let mut stopped_early = false;
    // An epoch whose batches are all done but which a kill stopped before its validation
    // (`batches_done > 0` at the step budget) still needs that validation.
    'epochs: while state.epoch < options.epochs
        && (state.step < total_steps || state.batches_done > 0)
    {
        let epoch_seed = stable_hash(options.seed, format!("epoch/{}", state.epoch).as_bytes());
        let mut train = batches(
            dataset,
            Split::Train,
            options.batch_size,
            task.bucket_width(),
            options.shuffle_buffer,
            epoch_seed,
            &error,
        );
        // A resumed epoch skips the batches it already trained on: same seed, same order.
        for _ in 0..state.batches_done {
            train.next();
        }
        while state.step < total_steps {
            let Some(mut batch) = train.next() else { break };
            if let Some(augmentation) = &options.augment {
                if batch.boxes.iter().any(|b| !b.is_empty()) {
                    return Err(ModelError::Invalid {
                        reason: "`augment` applies to characters and lines; a page's line boxes \
                                 would not follow its pixels"
                            .into(),
                    });
                }
                augment_batch(&mut batch, augmentation, options.seed, state.step);
            }
            B::seed(
                device,
                stable_hash(options.seed, format!("step/{}", state.step).as_bytes()),
            );
            let lr = options.learning_rate_at(state.step, total_steps);
            let (stepped, loss_value) =
                train_step(task, network, &mut optimizer, &batch, lr, device);
            network = stepped.ok_or_else(|| ModelError::Invalid {
                reason: format!(
                    "the loss became {loss_value} at step {}; lower learning_rate",
                    state.step
                ),
            })?;
            state.step += 1;
            if let (Some(decay), Some(averaged)) = (options.ema_decay, average.take()) {
                let decay = average_decay(decay, state.step);
                average = Some(blend_weights(averaged, &network.valid(), decay));
            }
            state.batches_done += 1;
            state.train_loss_sum += loss_value;
            state.train_batches += 1;
            state.window_loss_sum += loss_value;
            state.window_batches += 1;
            images += batch.len() as u64;
            // The message first: a log line printed on `advance` shows this step's loss.
            observer.message(&format!(
                "epoch {} loss {:.4} lr {:.2e} {:.0} img/s",
                state.epoch + 1,
                loss_value,
                lr,
                images as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
            observer.advance(1);
            if state.step.is_multiple_of(options.checkpoint_every) {
                state.history.steps.push(StepRecord {
                    step: state.step,
                    train_loss: state.window_loss_sum / state.window_batches.max(1) as f64,
                });
                state.window_loss_sum = 0.0;
                state.window_batches = 0;
                let (average, kept) = (average.as_ref(), kept.as_deref());
                save_checkpoint::<B, T>(resume_dir, &state, &network, &optimizer, average, kept)?;
            }
        }
        if let Some(e) = error.borrow_mut().take() {
            return Err(e.into());
        }
        // Validation at the end of the epoch (or of the step budget).
        let inference = average.clone().unwrap_or_else(|| network.valid());
        let mut val = batches(
            dataset,
            Split::Val,
            options.batch_size,
            task.bucket_width(),
            1,
            0,
            &error,
        );
        let (val_loss, metric) = task.validate(&inference, &mut val, device);
        if let Some(e) = error.borrow_mut().take() {
            return Err(e.into());
        }
        state.history.epochs.push(EpochRecord {
            epoch: state.epoch + 1,
            step: state.step,
            learning_rate: options.learning_rate_at(state.step.saturating_sub(1), total_steps),
            train_loss: state.train_loss_sum / state.train_batches.max(1) as f64,
            val_loss,
            val_metric: metric,
            images_per_second: images as f64 / started.elapsed().as_secs_f64().max(1e-9),
        });
        let last = state.history.epochs.last().expect("just pushed");
        observer.log(&format!(
            "epoch {}: train loss {:.4}, val loss {val_loss:.4}, val {} {metric:.4}, {:.1} img/s",
            state.epoch + 1,
            last.train_loss,
            task.metric_name(),
            last.images_per_second
        ));
        let improved = state.best_metric.is_none_or(|best| metric > best);
        if improved {
            state.best_metric = Some(metric);
            state.best_epoch = state.epoch + 1;
            state.epochs_without_improvement = 0;
        } else {
            state.epochs_without_improvement += 1;
        }
        if improved || options.keep == Keep::Last {
            kept = Some(match &average {
                Some(averaged) => record_bytes(averaged)?,
                None => record_bytes::<B, _>(&network)?,
            });
        }
        state.epoch += 1;
        state.batches_done = 0;
        state.train_loss_sum = 0.0;
        state.train_batches = 0;
        let (average, kept) = (average.as_ref(), kept.as_deref());
        save_checkpoint::<B, T>(resume_dir, &state, &network, &optimizer, average, kept)?;
        if options.patience > 0 && state.epochs_without_improvement >= options.patience {
            stopped_early = true;
            break 'epochs;
        }
    }

    let kept_bytes = kept.ok_or_else(|| ModelError::Invalid {
        reason: "training ended before any validation".into(),
    })?;
    let record: Record<B, T> =
        recorder()
            .load(kept_bytes, device)
            .map_err(|e| ModelError::Invalid {
                reason: format!("reload kept weights: {e}"),
            })?;
    // Records carry no backend, so an average saved from the inference module loads here.
    let kept_network = network.load_record(record).valid();
    let seconds = started.elapsed().as_secs_f64();
    let (best_epoch, best_metric) = match options.keep {
        Keep::Best => (state.best_epoch, state.best_metric.unwrap_or(0.0)),
        Keep::Last => (
            state.epoch,
            state.history.epochs.last().map_or(0.0, |e| e.val_metric),
        ),
    };
    let outcome = TrainOutcome {
        steps: state.step,
        epochs_run: state.epoch,
        best_epoch,
        best_metric,
        stopped_early,
        resumed_from,
        seconds,
        images_per_second: images as f64 / seconds.max(1e-9),
    };
    Ok((kept_network, state.history, outcome))
}

/// A module's weights file bytes: the network in training, or its average in inference mode.
fn record_bytes<K: Backend, M: Module<K>>(module: &M) -> Result<Vec<u8>, ModelError> {
    recorder()
        .record(module.clone().into_record(), ())
        .map_err(|e| ModelError::Invalid {
            reason: format!("serialise weights: {e}"),
        })
}

const STATE: &str = "state.json";
const NETWORK: &str = "network.mpk";
const OPTIMIZER: &str = "optimizer.mpk";
const KEPT: &str = "kept.mpk";
const AVERAGE: &str = "average.mpk";

/// Writes the checkpoint files (the network, the optimiser, the weight average and the weights
/// kept so far, serialised), then `state.json` last: a checkpoint counts only once its state
/// file is in place, so a kill mid-save falls back to the previous complete checkpoint.
fn save_checkpoint<B: AutodiffBackend, T: Task<B>>(
    dir: &Path,
    state: &Checkpoint,
    network: &T::Network,
    optimizer: &impl Optimizer<T::Network, B>,
    average: Option<&Inner<B, T>>,
    kept: Option<&[u8]>,
) -> Result<(), ModelError> {
    let tag = state.step;
    let write = |name: String, bytes: &[u8]| -> Result<(), ModelError> {
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).map_err(ModelError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(ModelError::io("rename into", &path))
    };
    write(format!("{tag}.{NETWORK}"), &record_bytes::<B, _>(network)?)?;
    let optimizer_bytes =
        recorder()
            .record(optimizer.to_record(), ())
            .map_err(|e| ModelError::Invalid {
                reason: format!("serialise optimiser: {e}"),
            })?;
    write(format!("{tag}.{OPTIMIZER}"), &optimizer_bytes)?;
    if let Some(kept) = kept {
        write(format!("{tag}.{KEPT}"), kept)?;
    }
    if let Some(average) = average {
        write(format!("{tag}.{AVERAGE}"), &record_bytes(average)?)?;
    }
    let json = serde_json::to_vec(state).expect("checkpoint state serialises");
    write(STATE.to_owned(), &json)?;
    // Older checkpoints are superseded now that state.json names this one.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let current = name.starts_with(&format!("{tag}."));
            if name.ends_with(".mpk") && !current {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

type Adaptor<B, T> = OptimizerAdaptor<AdamW, <T as Task<B>>::Network, B>;

/// AdamW with the options' weight decay and gradient clipping.
pub(super) fn optimizer<B: AutodiffBackend, T: Task<B>>(options: &TrainOptions) -> Adaptor<B, T> {
    let mut config = AdamWConfig::new().with_weight_decay(options.weight_decay);
    if options.clip_grad_norm > 0.0 {
        config =
            config.with_grad_clipping(Some(GradientClippingConfig::Norm(options.clip_grad_norm)));
    }
    config.init::<B, T::Network>()
}

/// One optimisation step on `batch`: the loss (read back, which also waits for the backend),
/// then backward and the AdamW update. A non-finite loss updates nothing: `(None, loss)`.
pub(super) fn train_step<B: AutodiffBackend, T: Task<B>>(
    task: &T,
    network: T::Network,
    optimizer: &mut Adaptor<B, T>,
    batch: &Batch,
    learning_rate: f64,
    device: &B::Device,
) -> (Option<T::Network>, f64) {
    let loss = task.loss(&network, batch, device);
    let loss_value: f64 = loss.clone().into_scalar().elem::<f64>();
    if !loss_value.is_finite() {
        return (None, loss_value);
    }
    let grads = GradientsParams::from_grads(loss.backward(), &network);
    (
        Some(optimizer.step(learning_rate, network, grads)),
        loss_value,
    )
}
type OptimizerRecord<B, T> = <Adaptor<B, T> as Optimizer<<T as Task<B>>::Network, B>>::Record;
type Resumed<B, T> = (
    Checkpoint,
    Record<B, T>,
    OptimizerRecord<B, T>,
    Option<Vec<u8>>,
    Option<InnerRecord<B, T>>,
);

/// The record file `name` of the checkpoint in `dir`.
fn read_record<K: Backend, R: burn::record::Record<K>>(
    dir: &Path,
    name: &str,
    device: &K::Device,
) -> Result<R, ModelError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(ModelError::io("read", &path))?;
    recorder()
        .load(bytes, device)
        .map_err(|e| ModelError::Weights {
            path,
            reason: e.to_string(),
        })
}

/// The last complete checkpoint in `dir`, if any, with its weight average when `averaged`.
fn load_checkpoint<B: AutodiffBackend, T: Task<B>>(
    dir: &Path,
    averaged: bool,
    device: &B::Device,
) -> Result<Option<Resumed<B, T>>, ModelError> {
    let path = dir.join(STATE);
    let Ok(text) = std::fs::read(&path) else {
        return Ok(None);
    };
    let state: Checkpoint = serde_json::from_slice(&text).map_err(|e| ModelError::Weights {
        path: path.clone(),
        reason: format!("corrupt checkpoint state: {e}"),
    })?;
    let tag = state.step;
    let network = read_record::<B, _>(dir, &format!("{tag}.{NETWORK}"), device)?;
    let optimizer = read_record::<B, _>(dir, &format!("{tag}.{OPTIMIZER}"), device)?;
    let kept = std::fs::read(dir.join(format!("{tag}.{KEPT}"))).ok();
    let average = averaged
        .then(|| read_record::<B::InnerBackend, _>(dir, &format!("{tag}.{AVERAGE}"), device))
        .transpose()?;
    Ok(Some((state, network, optimizer, kept, average)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use burn::nn::{Linear, LinearConfig};

    use super::*;
    use crate::data::{DatasetKind, Manifest, Polarity, ShardWriter, SplitInfo, Unobserved};
    use crate::models::CpuTraining as B;

    /// Maps a 2×2 image's mean ink to one number pulled towards 1: the smallest task `fit` can train.
    struct Toy;

    fn toy_loss<K: Backend>(
        network: &Linear<K>,
        batch: &Batch,
        device: &K::Device,
    ) -> Tensor<K, 1> {
        let per_image = batch.pixels.len() / batch.len();
        let pixels = TensorData::new(batch.pixels.clone(), [batch.len(), per_image]);
        let ink = Tensor::<K, 2>::from_data(pixels, device).mean_dim(1);
        let out = network.forward(ink);
        out.sub_scalar(1.0).powi_scalar(2).mean()
    }

    impl<K: AutodiffBackend> Task<K> for Toy {
        type Network = Linear<K>;

        fn metric_name(&self) -> &'static str {
            "negative_loss"
        }

        fn loss(&self, network: &Linear<K>, batch: &Batch, device: &K::Device) -> Tensor<K, 1> {
            toy_loss(network, batch, device)
        }

        fn validate(
            &self,
            network: &Linear<K::InnerBackend>,
            batches: &mut dyn Iterator<Item = Batch>,
            device: &K::Device,
        ) -> (f64, f64) {
            let losses: Vec<f64> = batches
                .map(|b| toy_loss(network, &b, device).into_scalar().elem::<f64>())
                .collect();
            let mean = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
            (mean, -mean)
        }
    }

    fn toy_dataset(dir: &Path) -> Dataset {
        std::fs::create_dir_all(dir).unwrap();
        let mut splits = BTreeMap::new();
        for (split, count) in [(Split::Train, 8u8), (Split::Val, 4)] {
            let mut writer = ShardWriter::new(dir, split, 1 << 20);
            for i in 0..count {
                writer
                    .push(&Sample {
                        label: i.to_string(),
                        style: "toy".into(),
                        width: 2,
                        height: 2,
                        boxes: Vec::new(),
                        pixels: vec![i * 30, 255 - i * 30, i, 7],
                    })
                    .unwrap();
            }
            let info = SplitInfo {
                count: u64::from(count),
                fonts: vec!["toy".into()],
                class_counts: BTreeMap::new(),
                shards: writer.finish().unwrap(),
                ..SplitInfo::default()
            };
            splits.insert(split, info);
        }
        Manifest {
            kind: DatasetKind::Chars,
            vocabulary: Vec::new(),
            seed: 0,
            generator_version: 0,
            polarity: Polarity::InkWhite,
            height: Some(2),
            width: Some(2),
            sources: BTreeMap::new(),
            splits,
            params: serde_json::Value::Null,
            skipped: Vec::new(),
        }
        .write(dir)
        .unwrap();
        Dataset::open(dir).unwrap()
    }

    #[test]
    fn a_run_killed_after_its_last_step_but_before_validation_resumes_into_that_validation() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = toy_dataset(&dir.path().join("data"));
        let resume = dir.path().join("resume");
        std::fs::create_dir_all(&resume).unwrap();
        let options = TrainOptions {
            epochs: 1,
            batch_size: 2,
            warmup_steps: 1,
            checkpoint_every: 4,
            patience: 0,
            shuffle_buffer: 8,
            ..TrainOptions::default()
        };
        let device = Default::default();
        let _rng = seeded_exclusively::<B>(&device, 1);
        let train = || {
            let network = LinearConfig::new(1, 1).init::<B>(&device);
            fit(
                &Toy,
                network,
                &dataset,
                &options,
                &resume,
                &Unobserved,
                &device,
            )
            .unwrap()
        };
        let (trained, history, outcome) = train();
        assert_eq!(outcome.steps, 4);

        // The epoch-end checkpoint, rewound to the one saved after the last step: same weights,
        // all four batches done, not yet validated.
        let state_path = resume.join(STATE);
        let done: Checkpoint =
            serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
        let last = &history.epochs[0];
        let killed = Checkpoint {
            epoch: 0,
            batches_done: done.step,
            best_metric: None,
            best_epoch: 0,
            epochs_without_improvement: 0,
            history: History {
                epochs: Vec::new(),
                ..history.clone()
            },
            train_loss_sum: last.train_loss * done.step as f64,
            train_batches: done.step,
            ..done
        };
        std::fs::remove_file(resume.join(format!("{}.{KEPT}", killed.step))).unwrap();
        std::fs::write(&state_path, serde_json::to_vec(&killed).unwrap()).unwrap();

        let (resumed, resumed_history, resumed_outcome) = train();
        assert_eq!(resumed_outcome.resumed_from, Some(4));
        assert_eq!(resumed_outcome.steps, 4, "no batch is trained twice");
        assert_eq!(resumed_history.epochs.len(), 1);
        assert_eq!(resumed_history.epochs[0].val_metric, last.val_metric);
        assert_eq!(resumed_history.epochs[0].train_loss, last.train_loss);
        assert_eq!(
            resumed.weight.val().into_data(),
            trained.weight.val().into_data()
        );
    }

    #[test]
    fn blending_weights_moves_each_parameter_towards_the_current_network_by_one_minus_decay() {
        let device = Default::default();
        let linear = |w: f32, b: f32| {
            let mut layer = LinearConfig::new(1, 1).init::<B>(&device);
            layer.weight = Param::from_tensor(Tensor::from_data([[w]], &device));
            layer.bias = Some(Param::from_tensor(Tensor::from_data([b], &device)));
            layer
        };
        let blended = blend_weights(linear(1.0, -2.0), &linear(5.0, 2.0), 0.75);
        assert_eq!(
            blended.weight.val().into_data().to_vec::<f32>().unwrap(),
            [2.0]
        );
        let bias = blended
            .bias
            .unwrap()
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(bias, [-1.0]);
    }

    /// Options for fitting the toy at a constant learning rate, with no warm-up, early stopping
    /// or mid-epoch checkpoints.
    fn constant_rate(epochs: usize, learning_rate: f64) -> TrainOptions {
        TrainOptions {
            epochs,
            batch_size: 2,
            learning_rate,
            warmup_steps: 0,
            min_learning_rate_ratio: 1.0,
            checkpoint_every: 100,
            patience: 0,
            shuffle_buffer: 8,
            ..TrainOptions::default()
        }
    }

    /// Fits the toy from the same initial weights each time, checkpointing into `resume`.
    fn fit_toy(dataset: &Dataset, options: &TrainOptions, resume: &Path) -> Fitted<B, Toy> {
        std::fs::create_dir_all(resume).unwrap();
        let device = Default::default();
        B::seed(&device, 7);
        let network = with_stable_ids(LinearConfig::new(1, 1).init::<B>(&device));
        fit(
            &Toy,
            network,
            dataset,
            options,
            resume,
            &Unobserved,
            &device,
        )
        .unwrap()
    }

    fn weights<K: Backend>(network: &Linear<K>) -> Vec<f32> {
        network.weight.val().into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn keep_last_returns_the_last_epochs_weights_where_best_returns_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = toy_dataset(&dir.path().join("data"));
        let device = Default::default();
        let _rng = seeded_exclusively::<B>(&device, 1);
        // Constant steps of 0.2 overshoot the toy's optimum: validation peaks at the second epoch
        // (-0.029) and is worse at the third (-0.211).
        let keeping = |keep| TrainOptions {
            keep,
            ..constant_rate(3, 0.2)
        };

        let (best, _, best_outcome) =
            fit_toy(&dataset, &keeping(Keep::Best), &dir.path().join("b"));
        assert!(best_outcome.best_epoch < 3, "the case tells the two apart");
        let resume = dir.path().join("last");
        let (last, history, last_outcome) = fit_toy(&dataset, &keeping(Keep::Last), &resume);
        assert_eq!(last_outcome.best_epoch, 3);
        assert_eq!(last_outcome.best_metric, history.epochs[2].val_metric);
        let (_, last_record, ..) = load_checkpoint::<B, Toy>(&resume, false, &device)
            .unwrap()
            .unwrap();
        let last_checkpoint = LinearConfig::new(1, 1)
            .init::<B>(&device)
            .load_record(last_record);
        assert_eq!(weights(&last), weights(&last_checkpoint));
        assert_ne!(weights(&last), weights(&best));
    }

    #[test]
    fn label_smoothing_is_refused_outside_zero_to_one() {
        let with = |alpha| TrainOptions {
            label_smoothing: Some(alpha),
            ..TrainOptions::default()
        };
        assert_eq!(with(0.0).validate(), Ok(()));
        assert_eq!(with(0.1).validate(), Ok(()));
        for alpha in [1.0, -0.1, f32::NAN] {
            assert_eq!(
                with(alpha).validate().map_err(|e| e.to_string()),
                Err(format!(
                    "label_smoothing {alpha:?} must be at least 0 and below 1 (0.1 is typical)"
                ))
            );
        }
    }

    #[test]
    fn a_weight_average_is_what_a_fit_returns_and_a_resumed_fit_carries_it_on() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = toy_dataset(&dir.path().join("data"));
        let device = Default::default();
        let _rng = seeded_exclusively::<B>(&device, 1);
        // A constant learning rate, so a one-epoch run continued to three is the three-epoch run.
        let options = |epochs, ema_decay| TrainOptions {
            ema_decay,
            ..constant_rate(epochs, 0.05)
        };
        let train = |options: &TrainOptions, resume: &str| {
            fit_toy(&dataset, options, &dir.path().join(resume))
        };

        let (last, _, _) = train(&options(3, None), "last");
        let (averaged, _, outcome) = train(&options(3, Some(0.5)), "averaged");
        assert_eq!(outcome.best_epoch, 3, "the toy keeps improving");
        assert_ne!(
            weights(&averaged),
            weights(&last),
            "the average is returned"
        );

        train(&options(1, Some(0.5)), "resumed");
        let (resumed, _, resumed_outcome) = train(&options(3, Some(0.5)), "resumed");
        assert_eq!(resumed_outcome.resumed_from, Some(4));
        assert_eq!(weights(&resumed), weights(&averaged));
    }
}
