//! Inference with exported ONNX models through tract: what `evaluate`, `textrec transcribe` and
//! `textrec serve` run.

mod char_classifier;
mod scoring;

pub use char_classifier::{CharClassifier, InferError, metadata};
pub use scoring::{Confusion, score_chars};
