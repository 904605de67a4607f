//! `DataError`, what every dataset operation fails with: the file and what was wrong with it,
//! so a bad download, archive or shard is named wherever it surfaces.

use std::io;
use std::path::PathBuf;

/// Failures while fetching, generating, writing or reading datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("source `{name}`: {reason}")]
    Download { name: String, reason: String },

    #[error("source `{name}`: sha256 mismatch for {}: expected {expected}, got {actual}", path.display())]
    Checksum {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },

    /// A download cache in a shared directory that someone else could tamper with.
    #[error("download cache {}: {reason}; remove it, or set TEXTREC_CACHE_DIR to a directory of your own", path.display())]
    UnsafeCache { path: PathBuf, reason: String },

    #[error("{reason}")]
    Invalid { reason: String },
}

impl DataError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> DataError {
        DataError::Invalid {
            reason: reason.into(),
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> DataError {
        DataError::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
