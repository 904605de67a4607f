//! The character classifier: `CharCnn` trained with cross-entropy on a `chars` dataset.

use std::collections::HashMap;
use std::path::Path;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;

use super::TrainingBackend;
use super::artifacts::{
    ModelSpec, dataset_fingerprint, expect_architecture, load_weights, model_architecture,
    read_spec, save_model,
};
use super::fit::{Task, TrainOptions, exclusive_training, fit, with_stable_ids};
use super::{History, ModelError};
use crate::data::batch::Batch;
use crate::data::{Dataset, DatasetKind, Observer};
use crate::networks::{CharCnn, CharCnnConfig};

const ARCHITECTURE: &str = "char_cnn";

/// A trained character model's spec.
pub type CharModelSpec = ModelSpec<CharCnnConfig>;

struct CharTask {
    classes: HashMap<String, usize>,
}

impl CharTask {
    /// Class `i` is `labels[i]`.
    fn new(labels: &[String]) -> CharTask {
        CharTask {
            classes: labels
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i))
                .collect(),
        }
    }

    fn tensors<B: Backend>(
        &self,
        batch: &Batch,
        device: &B::Device,
    ) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let images = Tensor::<B, 4>::from_data(
            TensorData::new(
                batch.pixels.clone(),
                [batch.len(), 1, batch.height, batch.width],
            ),
            device,
        );
        let labels: Vec<i64> = batch
            .labels
            .iter()
            .map(|l| self.classes.get(l).copied().unwrap_or(0) as i64)
            .collect();
        let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [batch.len()]), device);
        (images, labels)
    }
}

impl<B: TrainingBackend> Task<B> for CharTask {
    type Network = CharCnn<B>;

    fn metric_name(&self) -> &'static str {
        "accuracy"
    }

    fn loss(&self, network: &CharCnn<B>, batch: &Batch, device: &B::Device) -> Tensor<B, 1> {
        let (images, labels) = self.tensors::<B>(batch, device);
        CrossEntropyLossConfig::new()
            .init(device)
            .forward(network.forward(images), labels)
    }

    fn validate(
        &self,
        network: &CharCnn<B::InnerBackend>,
        batches: &mut dyn Iterator<Item = Batch>,
        device: &B::Device,
    ) -> (f64, f64) {
        let (mut loss_sum, mut correct, mut count) = (0.0, 0usize, 0usize);
        for batch in batches {
            let (images, labels) = self.tensors::<B::InnerBackend>(&batch, device);
            let logits = network.forward(images);
            let loss: f64 = CrossEntropyLossConfig::new()
                .init(device)
                .forward(logits.clone(), labels.clone())
                .into_scalar()
                .elem();
            loss_sum += loss * batch.len() as f64;
            let hits: i64 = logits
                .argmax(1)
                .squeeze_dim::<1>(1)
                .equal(labels)
                .int()
                .sum()
                .into_scalar()
                .elem();
            correct += hits as usize;
            count += batch.len();
        }
        (
            loss_sum / count.max(1) as f64,
            correct as f64 / count.max(1) as f64,
        )
    }
}

/// Trains a character model on `dataset_dir` and writes `weights.mpk`, `model.json`,
/// `history.json`, `history.csv` and `curves.png` into `out`. `network_config` sizes the
/// network; its classes are taken from the dataset.
pub fn train_char_model<B: TrainingBackend>(
    dataset_dir: &Path,
    options: &TrainOptions,
    network_config: Option<CharCnnConfig>,
    out: &Path,
    resume_dir: &Path,
    observer: &dyn Observer,
    device: &B::Device,
) -> Result<(CharModelSpec, History), ModelError> {
    let dataset = Dataset::open(dataset_dir)?;
    if dataset.manifest.kind != DatasetKind::Chars {
        return Err(ModelError::Invalid {
            reason: format!(
                "{} is a {} dataset; the char model trains on chars",
                dataset_dir.display(),
                dataset.manifest.kind.name()
            ),
        });
    }
    let vocabulary = dataset.manifest.vocabulary.clone();
    // The dataset decides what the network predicts; the caller only sizes it.
    let mut config = network_config.unwrap_or_else(|| CharCnnConfig::new(vocabulary.len()));
    config.classes = vocabulary.len();
    config
        .validate()
        .map_err(|reason| ModelError::Invalid { reason })?;
    let _exclusive = exclusive_training(observer);
    B::seed(device, options.seed);
    let network: CharCnn<B> = with_stable_ids(config.init(device));
    let task = CharTask::new(&vocabulary);
    let (best, history, outcome) = fit(
        &task, network, &dataset, options, resume_dir, observer, device,
    )?;

    let spec = CharModelSpec {
        architecture: ARCHITECTURE.into(),
        network: config,
        vocabulary,
        input_height: crate::networks::CHAR_SIDE,
        input_width: Some(crate::networks::CHAR_SIDE),
        normalisation: "pixel / 255, ink = 1 (white on black)".into(),
        train: options.clone(),
        outcome,
        dataset_manifest_sha256: dataset_fingerprint(dataset_dir)?,
    };
    save_model(out, best, &spec, &history)?;
    Ok((spec, history))
}

/// Loads a trained character model from a directory written by [`train_char_model`].
pub fn load_char_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(CharModelSpec, CharCnn<B>), ModelError> {
    expect_architecture(dir, &model_architecture(dir)?, ARCHITECTURE)?;
    let spec: CharModelSpec = read_spec(dir)?;
    let network = load_weights(dir, spec.network.init::<B>(device), device)?;
    Ok((spec, network))
}

/// Training throughput of the default `CharCnn` on the CPU: random 28×28 images, batches of
/// `batch_size`, `classes` classes (see [`super::throughput`]).
pub fn char_training_throughput(
    batch_size: usize,
    classes: usize,
    steps: usize,
) -> Result<super::Throughput, ModelError> {
    use crate::networks::CHAR_SIDE as SIDE;
    let device = Default::default();
    let labels: Vec<String> = (0..classes).map(|i| i.to_string()).collect();
    let task = CharTask::new(&labels);
    let network: CharCnn<super::CpuTraining> = CharCnnConfig::new(classes).init(&device);
    let batches = super::throughput::random_batches(4, batch_size, SIDE, SIDE, &labels, 1);
    super::throughput::time_steps(&task, network, &batches, 3, steps, &device)
}
