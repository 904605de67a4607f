//! ONNX Runtime as an optional backend (docs/decisions.md 4): the library is loaded at run time from
//! `ORT_DYLIB_PATH` (e.g. `site-packages/onnxruntime/capi/libonnxruntime.so.1.*` after
//! `pip install onnxruntime`), so nothing is downloaded at build time and a machine without it
//! still runs everything on tract.

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
    type Err = String;
    fn from_str(name: &str) -> Result<Backend, String> {
        match name {
            "tract" => Ok(Backend::Tract),
            "ort" => Ok(Backend::Ort),
            "auto" => Ok(Backend::Auto),
            other => Err(format!(
                "unknown backend {other:?}; choose tract, ort or auto"
            )),
        }
    }
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime, loaded once from `ORT_DYLIB_PATH`.
fn environment() -> Result<&'static Environment, String> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = std::env::var_os("ORT_DYLIB_PATH").ok_or(
                "ORT_DYLIB_PATH is not set: point it at libonnxruntime.so (`pip install \
                 onnxruntime` puts it in site-packages/onnxruntime/capi/)",
            )?;
            ort::init_from(&path)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
                .with_name("textrec")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
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
    pub fn from_bytes(bytes: &[u8]) -> Result<OrtModel, String> {
        let session = Session::builder(environment()?)
            .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
            .and_then(|mut b| b.commit_from_memory(bytes))
            .map_err(|e| format!("ONNX Runtime cannot load the model: {e}"))?;
        Ok(OrtModel {
            session: Mutex::new(session),
        })
    }

    /// Runs the model's one input `[dims]` and returns its first output, shape and values.
    pub fn run(&self, dims: [usize; 4], values: &[f32]) -> Result<(Vec<usize>, Vec<f32>), String> {
        let input = TensorRef::from_array_view((dims, values)).map_err(|e| e.to_string())?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![input])
            .map_err(|e| format!("ONNX Runtime failed: {e}"))?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        Ok((
            shape.iter().map(|&d| d.max(0) as usize).collect(),
            data.to_vec(),
        ))
    }
}
