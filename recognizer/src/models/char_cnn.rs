//! The character classifier: `CharCnn` trained with cross-entropy on a `chars` dataset.

use std::collections::HashMap;
use std::path::Path;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;

use super::TrainingBackend;
use super::artifacts::{
    ModelSpec, dataset_fingerprint, expect_architecture, init_spec, load_weights,
    model_architecture, read_spec, save_model,
};
use super::fit::{Task, TrainOptions, exclusive_training, fit, with_stable_ids};
use super::{History, ModelError};
use crate::Architecture;
use crate::data::batch::Batch;
use crate::data::{Dataset, DatasetKind, Observer};
use crate::networks::{CharCnn, CharCnnConfig};

const ARCHITECTURE: Architecture = Architecture::CharCnn;

/// A trained character model's spec.
pub type CharModelSpec = ModelSpec<CharCnnConfig>;

pub(super) struct CharTask {
    classes: HashMap<String, usize>,
    /// The training loss's label smoothing (see [`TrainOptions::label_smoothing`]).
    label_smoothing: Option<f32>,
}

impl CharTask {
    /// Class `i` is `labels[i]`.
    pub(super) fn new(labels: &[String], label_smoothing: Option<f32>) -> CharTask {
        CharTask {
            classes: labels
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i))
                .collect(),
            label_smoothing,
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
            .with_smoothing(self.label_smoothing)
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
#[allow(clippy::too_many_arguments)]
pub fn train_char_model<B: TrainingBackend>(
    dataset_dir: &Path,
    options: &TrainOptions,
    network_config: Option<CharCnnConfig>,
    init: Option<&Path>,
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
    let mut config = match init {
        Some(dir) => {
            let spec: CharModelSpec = init_spec(dir, ARCHITECTURE, dataset_dir, &vocabulary)?;
            spec.network
        }
        None => network_config.unwrap_or_else(|| CharCnnConfig::new(vocabulary.len())),
    };
    config.classes = vocabulary.len();
    config.validate()?;
    let _exclusive = exclusive_training(observer);
    B::seed(device, options.seed);
    let mut network: CharCnn<B> = with_stable_ids(config.init(device));
    if let Some(dir) = init {
        network = load_weights(dir, network, device)?;
    }
    let task = CharTask::new(&vocabulary, options.label_smoothing);
    let (kept, history, outcome) = fit(
        &task, network, &dataset, options, resume_dir, observer, device,
    )?;

    let spec = CharModelSpec {
        architecture: ARCHITECTURE,
        network: config,
        vocabulary,
        input_height: crate::networks::CHAR_SIDE,
        input_width: Some(crate::networks::CHAR_SIDE),
        normalisation: "pixel / 255, ink = 1 (white on black)".into(),
        train: options.clone(),
        outcome,
        dataset_manifest_sha256: dataset_fingerprint(dataset_dir)?,
    };
    save_model(out, kept, &spec, &history)?;
    Ok((spec, history))
}

/// Loads a trained character model from a directory written by [`train_char_model`].
pub fn load_char_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(CharModelSpec, CharCnn<B>), ModelError> {
    expect_architecture(dir, model_architecture(dir)?, ARCHITECTURE)?;
    let spec: CharModelSpec = read_spec(dir)?;
    let network = load_weights(dir, spec.network.init::<B>(device), device)?;
    Ok((spec, network))
}

/// Training throughput of the default `CharCnn` on the CPU: random 28×28 images, batches of
/// `batch_size`, `classes` classes (see `models/throughput.rs`).
pub fn char_training_throughput(
    batch_size: usize,
    classes: usize,
    steps: usize,
) -> Result<super::Throughput, ModelError> {
    use crate::networks::CHAR_SIDE as SIDE;
    let device = Default::default();
    let labels: Vec<String> = (0..classes).map(|i| i.to_string()).collect();
    let task = CharTask::new(&labels, None);
    let network: CharCnn<super::CpuTraining> = CharCnnConfig::new(classes).init(&device);
    let batches = super::throughput::random_batches(4, batch_size, SIDE, SIDE, &labels, 1);
    super::throughput::time_steps(&task, network, &batches, 3, steps, &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::CpuTraining;

    /// The training loss with label smoothing α is (1 − α) × cross-entropy + α × the mean over
    /// classes of −log p, computed here by hand from the network's own logits.
    #[test]
    fn label_smoothing_spreads_the_target_over_every_class() {
        let device = Default::default();
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let mut config = CharCnnConfig::new(labels.len());
        (config.channels, config.hidden) = ([2, 2], 4);
        config.dropout = 0.0;
        CpuTraining::seed(&device, 7);
        let network: CharCnn<CpuTraining> = config.init(&device);
        let side = crate::networks::CHAR_SIDE;
        let batch = Batch {
            height: side,
            width: side,
            pixels: (0..2 * side * side)
                .map(|i| (i % 13) as f32 / 12.0)
                .collect(),
            widths: vec![side; 2],
            heights: vec![side; 2],
            labels: vec!["b".into(), "c".into()],
            boxes: vec![Vec::new(); 2],
        };
        let (images, _) = CharTask::new(&labels, None).tensors::<CpuTraining>(&batch, &device);
        let logits: Vec<f32> = network.forward(images).into_data().to_vec().unwrap();
        let (mut plain, mut uniform) = (0.0f64, 0.0f64);
        for (row, target) in logits.chunks(labels.len()).zip([1, 2]) {
            let log_sum = row.iter().map(|&z| f64::from(z).exp()).sum::<f64>().ln();
            let neg_log_p: Vec<f64> = row.iter().map(|&z| log_sum - f64::from(z)).collect();
            plain += neg_log_p[target] / 2.0;
            uniform += neg_log_p.iter().sum::<f64>() / labels.len() as f64 / 2.0;
        }
        let loss = |smoothing| -> f64 {
            CharTask::new(&labels, smoothing)
                .loss(&network, &batch, &device)
                .into_scalar()
                .elem()
        };
        assert!(
            (loss(None) - plain).abs() < 1e-5,
            "{} vs {plain}",
            loss(None)
        );
        let smoothed = 0.8 * plain + 0.2 * uniform;
        assert!(
            (loss(Some(0.2)) - smoothed).abs() < 1e-5,
            "{} vs {smoothed}",
            loss(Some(0.2))
        );
        assert!(
            (smoothed - plain).abs() > 1e-3,
            "the case tells the two apart"
        );
    }
}
