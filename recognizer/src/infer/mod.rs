//! Inference with exported ONNX models through tract: what `evaluate`, `textrec transcribe` and
//! `textrec serve` run.

mod char_classifier;

pub use char_classifier::{CharClassifier, InferError};
