//! Inference with exported ONNX models through tract: what `evaluate`, `textrec transcribe` and
//! `textrec serve` run.

mod char_classifier;
mod line_recognizer;
mod scoring;

pub use char_classifier::{CharClassifier, InferError, metadata};
pub use line_recognizer::LineRecognizer;
pub use scoring::{Confusion, TextErrors, edit_distance, score_chars};
