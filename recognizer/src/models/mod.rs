//! Models own what turns a network into a trained artefact: loss, optimiser, the fit loop
//! (schedule, clipping, early stopping, checkpoints and resume), evaluation and weights I/O.

mod artifacts;
mod char_cnn;
mod ctc_loss;
mod fit;
#[cfg(test)]
mod generic_path;
mod history;
mod line_ctc;
mod line_fcn;
mod onnx_init;
mod throughput;

pub use artifacts::{ModelSpec, SPEC, WEIGHTS, model_architecture};
pub use char_cnn::{CharModelSpec, char_training_throughput, load_char_model, train_char_model};
pub use ctc_loss::CtcBackend;
#[cfg(test)]
pub(crate) use fit::seeded_exclusively;
pub use fit::{Device, Keep, TrainOptions, TrainOutcome};
pub use history::{EpochRecord, History};
pub use line_ctc::{
    LineModelSpec, ctc_loss, decode_batch, line_training_throughput, load_line_model,
    train_line_model,
};
pub use line_fcn::{DetectorModelSpec, load_detector_model, train_detector_model};
pub use onnx_init::{LineCtcOnnx, read_line_ctc_onnx};
pub use throughput::Throughput;

/// The bound every trainable backend meets (CPU flex, CUDA), so callers can pick one: autodiff
/// over a backend the networks run on, itself one they run on.
pub trait TrainingBackend:
    burn::tensor::backend::AutodiffBackend<InnerBackend: NetworkBackend + CtcBackend>
    + NetworkBackend
    + CtcBackend
{
}

impl<B> TrainingBackend for B where
    B: burn::tensor::backend::AutodiffBackend<InnerBackend: NetworkBackend + CtcBackend>
        + NetworkBackend
        + CtcBackend
{
}

use crate::networks::NetworkBackend;

use std::path::PathBuf;

/// Burn's CPU backend (`flex`: SIMD + rayon), for inference-mode work (export, evaluation).
pub type CpuInference = burn::backend::Flex;
/// The same with automatic differentiation, for training.
pub type CpuTraining = burn::backend::Autodiff<CpuInference>;
/// Burn's CUDA backend (CubeCL kernels compiled through NVRTC at run time) with autodiff.
#[cfg(feature = "cuda")]
pub type CudaTraining = burn::backend::Autodiff<burn::backend::Cuda>;

/// Checks that the libraries Burn's CUDA backend loads at run time are present: without them it
/// panics deep inside cudarc, so training asks first and gives an error that says what to install
/// (or, with `device: auto`, falls back to the CPU).
#[cfg(feature = "cuda")]
pub fn cuda_runtime() -> Result<(), CudaUnavailable> {
    fn loadable(names: &[&str]) -> bool {
        names.iter().any(|name| {
            let name = std::ffi::CString::new(*name).expect("library names have no NUL");
            // SAFETY: dlopen with a valid C string; the handle is only closed again.
            unsafe {
                let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
                if handle.is_null() {
                    return false;
                }
                libc::dlclose(handle);
            }
            true
        })
    }
    if !loadable(&["libcuda.so.1", "libcuda.so"]) {
        return Err(CudaUnavailable::NoDriver);
    }
    let nvrtc = [
        "libnvrtc.so",
        "libnvrtc.so.13",
        "libnvrtc.so.12",
        "libnvrtc.so.11.2",
    ];
    if !loadable(&nvrtc) {
        return Err(CudaUnavailable::NoNvrtc { tried: nvrtc });
    }
    Ok(())
}

/// What Burn's CUDA backend needs at run time and this machine lacks.
#[cfg(feature = "cuda")]
#[derive(Debug, thiserror::Error)]
pub enum CudaUnavailable {
    #[error("no CUDA driver: libcuda.so.1 cannot be loaded (is an NVIDIA driver installed?)")]
    NoDriver,
    #[error(
        "no NVRTC: none of {tried:?} can be loaded; install the CUDA toolkit or `pip install \
         nvidia-cuda-nvrtc` and add its lib folder to LD_LIBRARY_PATH"
    )]
    NoNvrtc { tried: [&'static str; 4] },
}

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
    #[error(transparent)]
    Setting(#[from] crate::setting::InvalidSetting),

    #[error(
        "ONNX parity check failed: tract and Burn differ by {abs_diff:e} where Burn gives {value} \
         (allowed: {tolerance:e} + {relative_tolerance:e} × |value|)"
    )]
    Parity {
        abs_diff: f32,
        value: f32,
        tolerance: f32,
        relative_tolerance: f32,
    },
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
