//! What goes wrong loading or running an exported model, for every reader in `infer`.

use std::path::PathBuf;

/// Failures loading or running an exported model.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    /// A release bundle that cannot be opened or fails its manifest.
    #[error("{}: {source}", path.display())]
    Bundle {
        path: PathBuf,
        #[source]
        source: crate::bundle::BundleError,
    },
    /// A file in a bundle (its language model) that cannot be used.
    #[error("{}: {entry}: {source}", path.display())]
    BundleEntry {
        path: PathBuf,
        entry: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("inference failed: {0}")]
    Run(String),
    #[error(transparent)]
    Ort(crate::infer::onnx_runtime::OrtError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Setting(#[from] crate::setting::InvalidSetting),
}
