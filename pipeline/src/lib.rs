//! textrec's pipeline engine: YAML-declared stages, a DAG from their deps and outs, DVC-style
//! content-hash caching with a lock file, and a parallel executor that never leaves a half-written
//! output behind. It knows nothing about ML: stage kinds plug in through [`StageKind`].

mod commit;
mod error;
mod fsutil;
mod hash;
mod lock;
pub mod metrics;
mod process;
mod progress;
#[cfg(feature = "remote")]
mod remote;
mod render;
mod report;
mod run;
mod spec;
mod stage;
#[cfg(feature = "remote")]
mod transfer;
mod workspace;

pub use error::{Error, InvalidOverride, RemoteError, SpecError, StageRunError, Stranded};
pub use fsutil::{copy_tree, count_files, remove_path, write_atomic};
pub use hash::{ContentHash, StateDb, hash_file_contents};
pub use lock::{LockFile, LockedStage};
pub use process::run_in_process_group;
pub use progress::{
    NoProgress, PROGRESS_INTERVAL_ENV, Progress, ProgressLog, Reporter, SilentReporter,
    TerminalReporter, Verbosity,
};
#[cfg(feature = "remote")]
pub use remote::{Moved, REMOTE_ENV, Remote};
pub use render::{DagFormat, render_dag};
pub use report::{RunReport, StageReport, StageStatus};
pub use run::{RunOptions, cache_key, run};
pub use spec::{Graph, InvalidPath, Pipeline, normalize_dep};
pub use stage::{
    InvalidStage, Registry, Resources, Stage, StageContext, StageFailure, StageKind, parse_params,
};
#[cfg(feature = "remote")]
pub use transfer::{Direction, TransferReport, TransferStatus, transfer};
pub use workspace::Workspace;
