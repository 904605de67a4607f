//! Inference with exported ONNX models through tract: what `evaluate`, `textrec transcribe` and
//! `textrec serve` run.

mod char_cnn;
mod error;
mod formats;
mod line_ctc;
pub mod line_detector;
mod line_fcn;
mod onnx_runtime;
mod page;
mod page_image;
mod plans;
mod scoring;

pub use char_cnn::CharClassifier;
pub use error::InferError;
pub use formats::{OutputFormat, to_alto, to_hocr, to_json};
pub use line_ctc::{LineRecognizer, SlantSearch};
pub use line_detector::{DetectionScore, LineBox, ProjectionDetector};
pub use line_fcn::{
    CORE as DETECTOR_CORE, DetectorInput, DetectorKind, DetectorMaps, LearnedDetector,
    LineDetector, detector_input,
};
pub use onnx_runtime::Backend;
pub use page::{
    InkRows, LineFrame, PAGES, PageLine, PageTranscriber, PageTranscript, PageWord, PagesConfig,
    cut_lines,
};
pub use page_image::{PageImageError, PageImages, decode_page, decode_pages};
pub use scoring::{CharScores, Confusion, TextErrors, edit_distance, score_chars};
