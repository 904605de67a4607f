//! `StageError`, the typed failures of the stage kinds, with the file or param they concern;
//! the engine shows them through `StageFailure`.

use std::io;
use std::path::PathBuf;

/// Failures of the stage kinds in this crate.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("cannot start `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },

    #[error("`{cmd}` {status}; last lines of {}:\n{tail}", log.display())]
    CommandFailed {
        cmd: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    /// A param names a downloaded source that none of the stage's deps holds.
    #[error("no downloaded source is named `{name}` (the deps hold: {})", held.join(", "))]
    MissingSource { name: String, held: Vec<String> },

    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
