//! The line recognizer: `LineCtc` trained with CTC loss on a `lines` dataset, validated by
//! character accuracy (1 − CER) of greedy decoding.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::TrainingBackend;
use super::artifacts::{
    ModelSpec, check_init_vocabulary, dataset_fingerprint, expect_architecture, init_spec,
    load_weights, model_architecture, read_spec, save_model,
};
use super::ctc_loss::CtcBackend;
use super::fit::{
    Task, TrainOptions, exclusive_training, fit, with_stable_ids, with_stable_running_ids,
};
use super::{History, ModelError};
use crate::Architecture;
use crate::data::batch::Batch;
use crate::data::{Dataset, DatasetKind, Observer};
use crate::infer::TextErrors;
use crate::networks::{LINE_DOWNSAMPLE, LineCtc, LineCtcConfig};
use crate::vocab::{BLANK_INDEX, Vocabulary};

const ARCHITECTURE: Architecture = Architecture::LineCtc;

/// A trained line model's spec.
pub type LineModelSpec = ModelSpec<LineCtcConfig>;

/// Width buckets for batching: lines within 64 px of each other share a batch.
const BUCKET_WIDTH: usize = 64;

pub(super) struct LineTask {
    pub(super) vocabulary: Vocabulary,
}

/// A batch as the CTC loss wants it.
struct CtcBatch<B: Backend> {
    images: Tensor<B, 4>,
    /// `[batch, longest label]`, padded with the blank (ignored past each length).
    targets: Tensor<B, 2, Int>,
    input_lengths: Vec<usize>,
    target_lengths: Vec<usize>,
}

impl LineTask {
    fn tensors<B: Backend>(&self, batch: &Batch, device: &B::Device) -> CtcBatch<B> {
        let n = batch.len();
        let images = Tensor::<B, 4>::from_data(
            TensorData::new(batch.pixels.clone(), [n, 1, batch.height, batch.width]),
            device,
        );
        let encoded: Vec<Vec<i64>> = batch
            .labels
            .iter()
            .map(|label| {
                label
                    .chars()
                    .filter_map(|c| self.vocabulary.index_of(c))
                    .map(|i| i as i64)
                    .collect()
            })
            .collect();
        let longest = encoded.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut targets = vec![BLANK_INDEX as i64; n * longest];
        for (row, label) in targets.chunks_mut(longest).zip(&encoded) {
            row[..label.len()].copy_from_slice(label);
        }
        CtcBatch {
            images,
            targets: Tensor::from_data(TensorData::new(targets, [n, longest]), device),
            input_lengths: batch
                .widths
                .iter()
                .map(|w| w.div_ceil(LINE_DOWNSAMPLE))
                .collect(),
            target_lengths: encoded.iter().map(Vec::len).collect(),
        }
    }
}

/// Per-line CTC loss divided by the label length (PyTorch's `mean` reduction), as a `[batch]`
/// tensor. Alignments that cannot exist (a label too long for its line) count as zero.
pub fn ctc_loss<B: CtcBackend>(
    log_probs: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    input_lengths: &[usize],
    target_lengths: &[usize],
) -> Tensor<B, 1> {
    let device = log_probs.device();
    let divisors: Vec<f32> = target_lengths.iter().map(|&l| l.max(1) as f32).collect();
    let divisors =
        Tensor::<B, 1>::from_data(TensorData::new(divisors, [target_lengths.len()]), &device);
    let nll = B::ctc_nll(
        log_probs.into_primitive().tensor(),
        targets.into_primitive(),
        input_lengths,
        target_lengths,
        BLANK_INDEX,
    );
    Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(nll)) / divisors
}

/// A fresh network whose every id, the batch norms' running statistics included, is a function
/// of its position: the weights bytes then depend on the seed alone.
pub(super) fn initial_network<B: Backend>(
    config: &LineCtcConfig,
    device: &B::Device,
) -> LineCtc<B> {
    let mut network: LineCtc<B> = with_stable_ids(config.init(device));
    with_stable_running_ids(&mut [&mut network.norm1, &mut network.norm2, &mut network.norm3]);
    network
}

/// Training throughput of the default `LineCtc` on the CPU: batches of `batch_size` random
/// `32 × width` lines labelled with `label_len` characters of the default vocabulary (see
/// `models/throughput.rs`).
pub fn line_training_throughput(
    batch_size: usize,
    width: usize,
    label_len: usize,
    steps: usize,
) -> Result<super::Throughput, ModelError> {
    let device = Default::default();
    let vocabulary = Vocabulary::default();
    let config = LineCtcConfig::new(vocabulary.len());
    let labels: Vec<String> = vocabulary.tokens()[1..].to_vec();
    let batches =
        super::throughput::random_batches(4, batch_size, config.height, width, &labels, label_len);
    let network: LineCtc<super::CpuTraining> = config.init(&device);
    let task = LineTask { vocabulary };
    super::throughput::time_steps(&task, network, &batches, 2, steps, &device)
}

/// Greedy transcriptions of `[steps, batch, classes]` log-probabilities, each line read over its
/// own `lengths[i]` steps.
pub fn decode_batch<B: Backend>(
    log_probs: Tensor<B, 3>,
    lengths: &[usize],
    vocabulary: &Vocabulary,
) -> Vec<String> {
    let [steps, batch, classes] = log_probs.dims();
    let values: Vec<f32> = log_probs
        .swap_dims(0, 1)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 log-probabilities");
    (0..batch)
        .map(|i| {
            let line = &values[i * steps * classes..][..lengths[i].min(steps) * classes];
            crate::ctc::greedy_decode(line, classes, vocabulary)
                .map(|d| d.text)
                .unwrap_or_default()
        })
        .collect()
}

impl<B: TrainingBackend> Task<B> for LineTask {
    type Network = LineCtc<B>;

    fn metric_name(&self) -> &'static str {
        "char_accuracy"
    }

    fn loss(&self, network: &LineCtc<B>, batch: &Batch, device: &B::Device) -> Tensor<B, 1> {
        let b = self.tensors::<B>(batch, device);
        ctc_loss(
            network.forward(b.images),
            b.targets,
            &b.input_lengths,
            &b.target_lengths,
        )
        .mean()
    }

    fn validate(
        &self,
        network: &LineCtc<B::InnerBackend>,
        batches: &mut dyn Iterator<Item = Batch>,
        device: &B::Device,
    ) -> (f64, f64) {
        let (mut loss_sum, mut count) = (0.0, 0usize);
        let mut errors = TextErrors::default();
        for batch in batches {
            let b = self.tensors::<B::InnerBackend>(&batch, device);
            let log_probs = network.forward(b.images);
            let loss: f64 = ctc_loss(
                log_probs.clone(),
                b.targets,
                &b.input_lengths,
                &b.target_lengths,
            )
            .sum()
            .into_scalar()
            .elem();
            loss_sum += loss;
            count += batch.len();
            let predictions = decode_batch(log_probs, &b.input_lengths, &self.vocabulary);
            for (truth, predicted) in batch.labels.iter().zip(&predictions) {
                errors.add(TextErrors::of(truth, predicted));
            }
        }
        (loss_sum / count.max(1) as f64, 1.0 - errors.cer())
    }

    fn bucket_width(&self) -> usize {
        BUCKET_WIDTH
    }
}

/// Where a fine-tune's weights come from: a model directory, or a line model's ONNX (a file, or
/// the one in a release bundle).
enum Init {
    Directory(std::path::PathBuf, Box<LineModelSpec>),
    Onnx(super::LineCtcOnnx),
}

impl Init {
    /// Reads `path` and checks it against the dataset's vocabulary and line height.
    fn read(
        path: &Path,
        dataset_dir: &Path,
        tokens: &[String],
        height: usize,
    ) -> Result<Init, ModelError> {
        let (init, model_height) = if path.is_dir() {
            let spec: LineModelSpec = init_spec(path, ARCHITECTURE, dataset_dir, tokens)?;
            let model_height = spec.input_height;
            (
                Init::Directory(path.to_owned(), Box::new(spec)),
                model_height,
            )
        } else {
            let bytes = std::fs::read(path).map_err(ModelError::io("read", path))?;
            let name = path.to_string_lossy();
            let onnx = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
                let bundle =
                    crate::bundle::Bundle::from_bytes(&bytes).map_err(|e| ModelError::Invalid {
                        reason: format!("init {}: {e}", path.display()),
                    })?;
                let line = bundle
                    .model_of(ARCHITECTURE)
                    .ok_or_else(|| ModelError::Invalid {
                        reason: format!(
                            "init {}: the bundle has no line_ctc model",
                            path.display()
                        ),
                    })?;
                super::read_line_ctc_onnx(line.bytes)
            } else {
                super::read_line_ctc_onnx(&bytes)
            }
            .map_err(|e| ModelError::Invalid {
                reason: format!("init {}: {e}", path.display()),
            })?;
            check_init_vocabulary(path, &onnx.vocabulary, dataset_dir, tokens)?;
            let model_height = onnx.config.height;
            (Init::Onnx(onnx), model_height)
        };
        if model_height != height {
            return Err(ModelError::Invalid {
                reason: format!(
                    "init {} reads lines {model_height} px high and {} holds lines {height} px high",
                    path.display(),
                    dataset_dir.display()
                ),
            });
        }
        Ok(init)
    }
}

/// Trains a line model on `dataset_dir` and writes the model directory `out` (see
/// `models/artifacts.rs`). `network_config` sizes the network; its classes and height are taken
/// from the dataset. With `init`, training starts from that model directory's weights (and
/// network) instead: a fine-tune.
#[allow(clippy::too_many_arguments)]
pub fn train_line_model<B: TrainingBackend>(
    dataset_dir: &Path,
    options: &TrainOptions,
    network_config: Option<LineCtcConfig>,
    init: Option<&Path>,
    out: &Path,
    resume_dir: &Path,
    observer: &dyn Observer,
    device: &B::Device,
) -> Result<(LineModelSpec, History), ModelError> {
    let dataset = Dataset::open(dataset_dir)?;
    if dataset.manifest.kind != DatasetKind::Lines {
        return Err(ModelError::Invalid {
            reason: format!(
                "{} is a {} dataset; the line model trains on lines",
                dataset_dir.display(),
                dataset.manifest.kind.name()
            ),
        });
    }
    let tokens = dataset.manifest.vocabulary.clone();
    let vocabulary = Vocabulary::from_tokens(tokens.clone()).map_err(|e| ModelError::Invalid {
        reason: format!("{}: {e}", dataset_dir.display()),
    })?;
    let height = dataset.manifest.height.unwrap_or(0) as usize;
    // The dataset decides what the network reads and predicts; the caller only sizes it.
    let init = init
        .map(|path| Init::read(path, dataset_dir, &tokens, height))
        .transpose()?;
    let mut config = match &init {
        Some(Init::Directory(_, spec)) => spec.network.clone(),
        Some(Init::Onnx(onnx)) => onnx.config.clone(),
        None => network_config.unwrap_or_else(|| LineCtcConfig::new(vocabulary.len())),
    };
    config.classes = vocabulary.len();
    config.height = height;
    config.validate()?;
    let _exclusive = exclusive_training(observer);
    B::seed(device, options.seed);
    let mut network: LineCtc<B> = initial_network(&config, device);
    match init {
        Some(Init::Directory(dir, _)) => network = load_weights(&dir, network, device)?,
        Some(Init::Onnx(onnx)) => network = onnx.load_into(network, device)?,
        None => {}
    }
    let task = LineTask { vocabulary };
    let (kept, history, outcome) = fit(
        &task, network, &dataset, options, resume_dir, observer, device,
    )?;
    let spec = LineModelSpec {
        architecture: ARCHITECTURE,
        network: config,
        vocabulary: tokens,
        input_height: height,
        input_width: None,
        normalisation: format!(
            "pixel / 255, ink = 1 (white on black), height {height}, width padded with 0 to a multiple of {LINE_DOWNSAMPLE}"
        ),
        train: options.clone(),
        outcome,
        dataset_manifest_sha256: dataset_fingerprint(dataset_dir)?,
    };
    save_model(out, kept, &spec, &history)?;
    Ok((spec, history))
}

/// Loads a trained line model from a directory written by [`train_line_model`].
pub fn load_line_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(LineModelSpec, LineCtc<B>), ModelError> {
    expect_architecture(dir, model_architecture(dir)?, ARCHITECTURE)?;
    let spec: LineModelSpec = read_spec(dir)?;
    let network = load_weights(dir, spec.network.init::<B>(device), device)?;
    Ok((spec, network))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::CpuInference as B;

    /// `[steps, 1, classes]` log-probabilities from per-step probabilities.
    fn log_probs(steps: &[&[f32]]) -> Tensor<B, 3> {
        let classes = steps[0].len();
        let values: Vec<f32> = steps
            .iter()
            .flat_map(|s| s.iter().map(|p| p.ln()))
            .collect();
        Tensor::from_data(
            TensorData::new(values, [steps.len(), 1, classes]),
            &Default::default(),
        )
    }

    /// Raw CTC negative log-likelihood (times the label length, undoing the mean reduction).
    fn nll(steps: &[&[f32]], label: &[i64]) -> f32 {
        let targets = Tensor::<B, 2, Int>::from_data(
            TensorData::new(label.to_vec(), [1, label.len()]),
            &Default::default(),
        );
        let per_char: f32 =
            ctc_loss(log_probs(steps), targets, &[steps.len()], &[label.len()]).into_scalar();
        per_char * label.len() as f32
    }

    #[test]
    fn the_same_seed_builds_the_same_weights_bytes() {
        use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
        let bytes = || {
            let device = Default::default();
            let _rng = crate::models::seeded_exclusively::<B>(&device, 9);
            let network: LineCtc<B> = initial_network(&LineCtcConfig::new(12), &device);
            NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
                .record(network.into_record(), ())
                .unwrap()
        };
        assert!(bytes() == bytes(), "same seed, different weights bytes");
    }

    #[test]
    fn ctc_loss_matches_alignments_counted_by_hand() {
        // Classes: blank, a, b. Uniform over {blank, a}: every path has probability 1/4 over 2
        // steps; "a" has three alignments (a a, a _, _ a), so P = 3/4.
        let half: &[f32] = &[0.5, 0.5, 1e-30];
        assert!((nll(&[half, half], &[1]) - -(0.75f32).ln()).abs() < 1e-5);

        // One step, label "a": P = p(a).
        assert!((nll(&[&[0.3, 0.6, 0.1]], &[1]) - -(0.6f32).ln()).abs() < 1e-5);

        // "ab" over 2 steps has a single alignment: P = p0(a) · p1(b).
        let s0: &[f32] = &[0.2, 0.7, 0.1];
        let s1: &[f32] = &[0.3, 0.1, 0.6];
        assert!((nll(&[s0, s1], &[1, 2]) - -(0.7f32 * 0.6).ln()).abs() < 1e-5);

        // "aa" needs a blank between the two: over 3 steps only "a _ a", P = 0.7 · 0.3 · 0.5.
        let t0: &[f32] = &[0.2, 0.7, 0.1];
        let t1: &[f32] = &[0.3, 0.6, 0.1];
        let t2: &[f32] = &[0.4, 0.5, 0.1];
        assert!((nll(&[t0, t1, t2], &[1, 1]) - -(0.7f32 * 0.3 * 0.5).ln()).abs() < 1e-4);

        // "ab" over 3 steps: a a b, a b b, _ a b, a _ b, a b _.
        let p = |s: &[f32], c: usize| s[c];
        let want = p(t0, 1) * p(t1, 1) * p(t2, 2)
            + p(t0, 1) * p(t1, 2) * p(t2, 2)
            + p(t0, 0) * p(t1, 1) * p(t2, 2)
            + p(t0, 1) * p(t1, 0) * p(t2, 2)
            + p(t0, 1) * p(t1, 2) * p(t2, 0);
        assert!((nll(&[t0, t1, t2], &[1, 2]) - -want.ln()).abs() < 1e-4);

        // "aa" in 2 steps is impossible: zeroed instead of infinite, so training goes on.
        assert_eq!(nll(&[t0, t1], &[1, 1]), 0.0);
    }

    #[test]
    fn the_ctc_gradient_raises_the_probability_of_the_label() {
        use crate::models::CpuTraining as A;
        let device = Default::default();
        let logits = Tensor::<A, 3>::zeros([4, 1, 3], &device).require_grad();
        let targets =
            Tensor::<A, 2, Int>::from_data(TensorData::new(vec![1i64, 2], [1, 2]), &device);
        let loss = ctc_loss(
            burn::tensor::activation::log_softmax(logits.clone(), 2),
            targets,
            &[4],
            &[2],
        )
        .sum();
        let grads = loss.backward();
        let grad: Vec<f32> = logits.grad(&grads).unwrap().into_data().to_vec().unwrap();
        // Step 0 must start the label (blank or a), never b: descending the gradient raises a
        // and lowers b there; at the last step b (or blank) must end it, never a.
        assert!(grad[1] < 0.0 && grad[2] > 0.0, "step 0: {:?}", &grad[..3]);
        assert!(
            grad[9 + 1] > 0.0 && grad[9 + 2] < 0.0,
            "step 3: {:?}",
            &grad[9..]
        );
    }
}
