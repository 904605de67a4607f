//! ONNX Runtime as an optional backend (docs/decisions.md 4): the library is loaded at run time from
//! `ORT_DYLIB_PATH` (e.g. `site-packages/onnxruntime/capi/libonnxruntime.so.1.*` after
//! `pip install onnxruntime`), so nothing is downloaded at build time and a machine without it
//! still runs everything on tract.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;

/// Which engine runs the models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Backend {
    /// tract: pure Rust, always there.
    #[default]
    Tract,
    /// ONNX Runtime through `ORT_DYLIB_PATH`; an error when it cannot be loaded.
    Ort,
    /// ONNX Runtime when it loads, else tract (with a notice).
    Auto,
}

impl FromStr for Backend {
    type Err = crate::setting::UnknownChoice;
    fn from_str(name: &str) -> Result<Backend, Self::Err> {
        match name {
            "tract" => Ok(Backend::Tract),
            "ort" => Ok(Backend::Ort),
            "auto" => Ok(Backend::Auto),
            other => Err(crate::setting::UnknownChoice {
                setting: "backend",
                given: other.to_owned(),
                choices: &["tract", "ort", "auto"],
            }),
        }
    }
}

/// Why ONNX Runtime cannot run a model. Its own errors are kept as text: the process loads the
/// library once and every later model gets the same (cloned) error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrtError {
    #[error(
        "ORT_DYLIB_PATH is not set: point it at libonnxruntime.so (`pip install onnxruntime` \
         puts it in site-packages/onnxruntime/capi/)"
    )]
    NoLibraryPath,
    #[error("cannot load ONNX Runtime from {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("cannot start ONNX Runtime: {reason}")]
    Start { reason: String },
    #[error("ONNX Runtime cannot load the model: {reason}")]
    Model { reason: String },
    #[error("ONNX Runtime failed: {reason}")]
    Run { reason: String },
}

static ENVIRONMENT: OnceLock<Result<Environment, OrtError>> = OnceLock::new();

/// The process's ONNX Runtime, loaded once from `ORT_DYLIB_PATH`.
fn environment() -> Result<&'static Environment, OrtError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path =
                PathBuf::from(std::env::var_os("ORT_DYLIB_PATH").ok_or(OrtError::NoLibraryPath)?);
            ort::init_from(&path)
                .map_err(|e| OrtError::Load {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .with_name("textrec")
                .build()
                .map_err(|e| OrtError::Start {
                    reason: e.to_string(),
                })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// One model in an ONNX Runtime session: one thread inside (callers parallelise across pages).
#[derive(Debug)]
pub struct OrtModel {
    session: Mutex<Session>,
}

impl OrtModel {
    pub fn from_bytes(bytes: &[u8]) -> Result<OrtModel, OrtError> {
        let session = Session::builder(environment()?)
            .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
            .and_then(|mut b| b.commit_from_memory(bytes))
            .map_err(|e| OrtError::Model {
                reason: e.to_string(),
            })?;
        Ok(OrtModel {
            session: Mutex::new(session),
        })
    }

    /// Runs the model's one input `[dims]` and returns its first output, shape and values.
    pub fn run(
        &self,
        dims: [usize; 4],
        values: &[f32],
    ) -> Result<(Vec<usize>, Vec<f32>), OrtError> {
        let failed = |e: ort::Error| OrtError::Run {
            reason: e.to_string(),
        };
        let input = TensorRef::from_array_view((dims, values)).map_err(failed)?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(ort::inputs![input]).map_err(failed)?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(failed)?;
        Ok((
            shape.iter().map(|&d| d.max(0) as usize).collect(),
            data.to_vec(),
        ))
    }
}
