//! textrec's ML core, FSDL's `text_recognizer` in Rust. A library first: training, export and
//! transcription are callable without the pipeline, YAML or a CLI.
//!
//! From the bottom up: the label [`vocab`]ulary every model shares, the character [`lm`] and
//! [`ctc`] decoding of per-step class scores; [`data`] (the shard format, manifests, batches,
//! imports of real handwriting; with feature `datasets`, downloads, synthesis and augmentation);
//! `networks` (architectures) and `models` (training, checkpoints), feature `train`; [`onnx`]
//! export and its checks; [`tract`], how every model is read and planned in tract (with
//! textrec's kernels); [`bundle`], release bundles; [`infer`], models run on pages (page images,
//! line detection, transcription, scoring). ARCHITECTURE.md has the map.

pub mod architecture;
pub mod bundle;
pub mod ctc;
pub mod data;
pub mod eval;
#[cfg(feature = "datasets")]
pub mod ground_truth;
pub mod infer;
mod kernels;
pub mod lm;
pub mod memory;
pub mod model_metadata;
#[cfg(feature = "train")]
pub mod models;
#[cfg(feature = "train")]
pub mod networks;
pub mod onnx;
pub mod setting;
pub mod tract;
pub mod vocab;

pub use architecture::Architecture;
pub use ctc::{Decoded, DecodedChar, beam_decode, greedy_decode};
pub use vocab::{Vocabulary, VocabularyError};
