//! Datasets: fetching sources, synthesising handwriting, the shard format, augmentation and
//! inspection. FSDL's `data/` package: everything a model needs to get its inputs.

#[cfg(feature = "datasets")]
pub mod augment;
pub mod batch;
pub mod corpus;
#[cfg(feature = "datasets")]
pub mod download;
#[cfg(feature = "datasets")]
pub mod emnist;
mod error;
#[cfg(feature = "datasets")]
pub mod fonts;
#[cfg(feature = "datasets")]
pub mod hershey;
#[cfg(feature = "datasets")]
pub mod inspect;
pub mod manifest;
#[cfg(feature = "datasets")]
pub mod mat;
pub mod mix;
pub mod mnist;
#[cfg(feature = "datasets")]
pub mod raster;
pub mod shard;
pub mod split;
#[cfg(feature = "datasets")]
pub mod synth;
#[cfg(feature = "uci-digits")]
pub mod uci_digits;
#[cfg(feature = "datasets")]
pub mod woff;

pub use error::DataError;
pub use manifest::{Dataset, DatasetKind, Manifest, Polarity, SplitInfo};
pub use shard::{Sample, ShardInfo, ShardReader, ShardWriter};
pub use split::Split;

/// Receives progress and warnings from long data work, without tying the library to a UI.
pub trait Observer: Sync {
    /// The number of work units to expect.
    fn total(&self, units: u64);
    fn advance(&self, units: u64);
    /// Something was skipped or replaced; the work goes on.
    fn warn(&self, message: &str);
    /// A transient status (`loss 0.41 …`), replaced by the next one.
    fn message(&self, _text: &str) {}
    /// A line for the record (an epoch summary): kept in the log, not shouted.
    fn log(&self, _text: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl Observer for Unobserved {
    fn total(&self, _units: u64) {}
    fn advance(&self, _units: u64) {}
    fn warn(&self, _message: &str) {}
}
