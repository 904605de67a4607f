//! What a trained model directory holds, whatever the network: `weights.mpk` (Burn record, full
//! precision), `model.json` (a [`ModelSpec`]: how to rebuild and feed the network), the history
//! as JSON and CSV, and `curves.png`.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{History, ModelError, TrainOptions, TrainOutcome};
use crate::Architecture;
use crate::data::manifest::MANIFEST;

pub const WEIGHTS: &str = "weights.mpk";
pub const SPEC: &str = "model.json";

/// Everything needed to rebuild and feed a trained model; `N` is the network's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSpec<N> {
    pub architecture: Architecture,
    pub network: N,
    /// Class index → token.
    pub vocabulary: Vec<String>,
    pub input_height: usize,
    /// Fixed input width, or none for lines (any width, a multiple of the downsampling).
    pub input_width: Option<usize>,
    pub normalisation: String,
    pub train: TrainOptions,
    pub outcome: TrainOutcome,
    /// sha256 of the training dataset's manifest.
    pub dataset_manifest_sha256: String,
}

/// The `architecture` a model directory declares, to pick the loader.
pub fn model_architecture(dir: &Path) -> Result<Architecture, ModelError> {
    #[derive(Deserialize)]
    struct Head {
        architecture: Architecture,
    }
    Ok(read_spec::<Head>(dir)?.architecture)
}

pub(crate) fn read_spec<S: DeserializeOwned>(dir: &Path) -> Result<S, ModelError> {
    let path = dir.join(SPEC);
    let text = std::fs::read(&path).map_err(ModelError::io("read", &path))?;
    serde_json::from_slice(&text).map_err(|e| ModelError::Weights {
        path,
        reason: format!("not a model spec of this kind: {e}"),
    })
}

/// sha256 of a dataset's manifest: names the exact data a model was trained on.
pub(crate) fn dataset_fingerprint(dataset_dir: &Path) -> Result<String, ModelError> {
    let path = dataset_dir.join(MANIFEST);
    let manifest = std::fs::read(&path).map_err(ModelError::io("read", &path))?;
    Ok(format!("{:x}", sha2::Sha256::digest(&manifest)))
}

/// Writes the weights, the spec, the history and its curves into `out`.
pub(crate) fn save_model<B: Backend, M: Module<B>, N: Serialize>(
    out: &Path,
    network: M,
    spec: &ModelSpec<N>,
    history: &History,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(out).map_err(ModelError::io("create", out))?;
    let weights = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .record(network.into_record(), ())
        .map_err(|e| ModelError::Invalid {
            reason: format!("serialise weights: {e}"),
        })?;
    write(out, WEIGHTS, &weights)?;
    write(out, SPEC, &pretty(spec))?;
    write(out, "history.json", &pretty(history))?;
    write(out, "history.csv", history.to_csv().as_bytes())?;
    history.plot(&out.join("curves.png"))
}

/// Loads `weights.mpk` from `dir` into `network` (built from the spec).
pub(crate) fn load_weights<B: Backend, M: Module<B>>(
    dir: &Path,
    network: M,
    device: &B::Device,
) -> Result<M, ModelError> {
    let path = dir.join(WEIGHTS);
    let bytes = std::fs::read(&path).map_err(ModelError::io("read", &path))?;
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .load(bytes, device)
        .map_err(|e| ModelError::Weights {
            path,
            reason: e.to_string(),
        })?;
    Ok(network.load_record(record))
}

/// Fails unless `spec` is of the `expected` architecture, naming both.
pub(crate) fn expect_architecture(
    dir: &Path,
    found: Architecture,
    expected: Architecture,
) -> Result<(), ModelError> {
    if found == expected {
        return Ok(());
    }
    Err(ModelError::Weights {
        path: dir.join(SPEC),
        reason: format!("this is a {found} model, not a {expected} model"),
    })
}

/// The spec of the model a fine-tune starts from (`init`), checked against what this training
/// makes: the same architecture, and the same classes in the same order as `dataset_dir`'s
/// vocabulary (a class index means one token to the weights), each mismatch naming both sides.
pub(crate) fn init_spec<N: DeserializeOwned>(
    dir: &Path,
    architecture: Architecture,
    dataset_dir: &Path,
    vocabulary: &[String],
) -> Result<ModelSpec<N>, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::Invalid {
            reason: format!(
                "init {}: a {architecture} fine-tune starts from a model directory (a train stage's out)",
                dir.display()
            ),
        });
    }
    expect_architecture(dir, model_architecture(dir)?, architecture)?;
    let spec: ModelSpec<N> = read_spec(dir)?;
    check_init_vocabulary(dir, &spec.vocabulary, dataset_dir, vocabulary)?;
    Ok(spec)
}

/// Fails unless the init model predicts the dataset's classes in the same order, naming both.
pub(crate) fn check_init_vocabulary(
    init: &Path,
    model: &[String],
    dataset_dir: &Path,
    vocabulary: &[String],
) -> Result<(), ModelError> {
    if model == vocabulary {
        return Ok(());
    }
    let differs = model
        .iter()
        .zip(vocabulary)
        .position(|(a, b)| a != b)
        .unwrap_or(model.len().min(vocabulary.len()));
    Err(ModelError::Invalid {
        reason: format!(
            "init {} predicts {} classes and {} has {}; they differ from class {differs} \
             ({:?} vs {:?}): fine-tune on a dataset with the model's vocabulary",
            init.display(),
            model.len(),
            dataset_dir.display(),
            vocabulary.len(),
            model.get(differs),
            vocabulary.get(differs),
        ),
    })
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
