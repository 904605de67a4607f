//! Models own what turns a network into a trained artefact: loss, optimiser, the fit loop
//! (schedule, clipping, early stopping, checkpoints and resume), evaluation and weights I/O.

mod artifacts;
mod char_model;
mod fit;
mod history;
mod line_model;

pub use artifacts::{ModelSpec, SPEC, WEIGHTS, model_architecture};
pub use char_model::{CharModelSpec, load_char_model, train_char_model};
pub use fit::{Device, TrainOptions, TrainOutcome};
pub use history::{EpochRecord, History};
pub use line_model::{LineModelSpec, ctc_loss, decode_batch, load_line_model, train_line_model};

use std::path::PathBuf;

/// Burn's CPU backend (`flex`: SIMD + rayon), for inference-mode work (export, evaluation).
pub type CpuInference = burn::backend::Flex;
/// The same with automatic differentiation, for training.
pub type CpuTraining = burn::backend::Autodiff<CpuInference>;

use crate::data::DataError;

/// Failures while training, evaluating or loading models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Data(#[from] DataError),

    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {reason}", path.display())]
    Weights { path: PathBuf, reason: String },

    #[error("{reason}")]
    Invalid { reason: String },

    #[error(
        "ONNX parity check failed: tract and Burn differ by {max_abs_diff:e} (tolerance {tolerance:e})"
    )]
    Parity { max_abs_diff: f32, tolerance: f32 },
}

impl ModelError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ModelError {
        let path = path.into();
        move |source| ModelError::Io {
            action,
            path,
            source,
        }
    }
}
