//! The character classifier: `CharCnn` trained with cross-entropy on a `chars` dataset.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::fit::{Task, TrainOptions, TrainOutcome, fit, with_stable_ids};
use super::{History, ModelError};
use crate::data::batch::Batch;
use crate::data::{Dataset, DatasetKind, Observer};
use crate::networks::{CharCnn, CharCnnConfig};

pub const WEIGHTS: &str = "weights.mpk";
pub const SPEC: &str = "model.json";

/// Everything needed to rebuild and feed a trained character model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CharModelSpec {
    pub architecture: String,
    pub network: CharCnnConfig,
    /// Class index → character.
    pub vocabulary: Vec<String>,
    /// Input: 28×28, white ink on black, pixels / 255.
    pub input_height: usize,
    pub input_width: usize,
    pub normalisation: String,
    pub train: TrainOptions,
    pub outcome: TrainOutcome,
    /// sha256 of the training dataset's manifest.
    pub dataset_manifest_sha256: String,
}

struct CharTask {
    classes: HashMap<String, usize>,
}

impl CharTask {
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

impl<B: AutodiffBackend> Task<B> for CharTask {
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
/// `history.json`, `history.csv` and `curves.png` into `out`.
pub fn train_char_model<B: AutodiffBackend>(
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
    let config = network_config.unwrap_or_else(|| CharCnnConfig::new(vocabulary.len()));
    if config.classes != vocabulary.len() {
        return Err(ModelError::Invalid {
            reason: format!(
                "the network has {} classes, the dataset {}",
                config.classes,
                vocabulary.len()
            ),
        });
    }
    B::seed(device, options.seed);
    let network: CharCnn<B> = with_stable_ids(config.init(device));
    let task = CharTask {
        classes: vocabulary
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect(),
    };
    let (best, history, outcome) = fit(
        &task, network, &dataset, options, resume_dir, observer, device,
    )?;

    std::fs::create_dir_all(out).map_err(ModelError::io("create", out))?;
    let weights = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .record(best.into_record(), ())
        .map_err(|e| ModelError::Invalid {
            reason: format!("serialise weights: {e}"),
        })?;
    write(out, WEIGHTS, &weights)?;
    let manifest = std::fs::read(dataset_dir.join(crate::data::manifest::MANIFEST))
        .map_err(ModelError::io("read", dataset_dir))?;
    let spec = CharModelSpec {
        architecture: "char_cnn".into(),
        network: config,
        vocabulary,
        input_height: crate::networks::CHAR_SIDE,
        input_width: crate::networks::CHAR_SIDE,
        normalisation: "pixel / 255, ink = 1 (white on black)".into(),
        train: options.clone(),
        outcome,
        dataset_manifest_sha256: crate::data::download::sha256_bytes(&manifest),
    };
    write(out, SPEC, &pretty(&spec))?;
    write(out, "history.json", &pretty(&history))?;
    write(out, "history.csv", history.to_csv().as_bytes())?;
    history.plot(&out.join("curves.png"))?;
    Ok((spec, history))
}

fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(value).expect("model records serialise");
    json.push(b'\n');
    json
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ModelError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(ModelError::io("write", &path))
}

/// Loads a trained character model from a directory written by [`train_char_model`].
pub fn load_char_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(CharModelSpec, CharCnn<B>), ModelError> {
    let spec_path = dir.join(SPEC);
    let text = std::fs::read(&spec_path).map_err(ModelError::io("read", &spec_path))?;
    let spec: CharModelSpec = serde_json::from_slice(&text).map_err(|e| ModelError::Weights {
        path: spec_path.clone(),
        reason: format!("not a char model spec: {e}"),
    })?;
    let weights_path = dir.join(WEIGHTS);
    let bytes = std::fs::read(&weights_path).map_err(ModelError::io("read", &weights_path))?;
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .load(bytes, device)
        .map_err(|e| ModelError::Weights {
            path: weights_path,
            reason: e.to_string(),
        })?;
    let network = spec.network.init::<B>(device).load_record(record);
    Ok((spec, network))
}
