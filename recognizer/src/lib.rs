//! textrec's ML core, FSDL's `text_recognizer` in Rust. A library first: training, export and
//! transcription are callable without the pipeline, YAML or a CLI.
//!
//! Today: the label [`vocab`]ulary every model shares, [`ctc`] decoding of per-step class scores,
//! and [`data`]: downloads, synthetic handwriting datasets, shards, augmentation, inspection.

pub mod bundle;
pub mod ctc;
pub mod data;
pub mod infer;
mod kernels;
pub mod lm;
pub mod memory;
#[cfg(feature = "train")]
pub mod models;
#[cfg(feature = "train")]
pub mod networks;
pub mod onnx;
pub mod vocab;

pub use ctc::{Decoded, DecodedChar, greedy_decode};
pub use vocab::{Vocabulary, VocabularyError};
