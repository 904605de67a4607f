//! The exported line recognizer run by tract: lines batched by width and padded to a width
//! bucket, one fixed-shape plan per (batch size, bucket) built on first use (tract's LSTM needs a
//! concrete batch, and concrete widths let it fix every shape ahead; DESIGN.md 3), CTC decoding
//! (greedy, or a beam search weighed by a character language model when one is attached) with
//! per-character and per-line confidence.

use std::borrow::Borrow;
use std::path::Path;
use std::sync::Arc;

use super::onnx_runtime::{Backend, OrtModel};
use super::plans::Plans;
use super::{InferError, metadata};
use crate::ctc::{Decoded, beam_decode, greedy_decode};
use crate::data::Sample;
use crate::data::batch::collate;
use crate::lm::CharLm;
use crate::vocab::Vocabulary;

/// Batches are padded to a multiple of this width (the training batches' bucket, so the model
/// sees the padding it was trained with), which bounds the number of plans.
const WIDTH_BUCKET: usize = 64;

/// A loaded line model.
#[derive(Debug)]
pub struct LineRecognizer {
    pub vocabulary: Vocabulary,
    /// Line height the model reads.
    pub height: usize,
    /// Input pixels per output step.
    pub downsample: usize,
    /// Lines per tract run.
    pub batch: usize,
    plans: Plans,
    /// Set when ONNX Runtime runs the model instead of tract.
    ort: Option<OrtModel>,
    /// With one, lines are beam-decoded; without, greedily.
    language_model: Option<Arc<CharLm>>,
}

impl LineRecognizer {
    /// Loads an exported `line_ctc` model; `batch` lines go through tract at once.
    pub fn load(path: &Path, batch: usize) -> Result<LineRecognizer, InferError> {
        let bytes = std::fs::read(path).map_err(|source| InferError::Read {
            path: path.to_owned(),
            source,
        })?;
        LineRecognizer::from_bytes(&bytes, path, batch)
    }

    /// Same from the model's bytes (e.g. out of a release bundle); `origin` names it in errors.
    pub fn from_bytes(
        bytes: &[u8],
        origin: &Path,
        batch: usize,
    ) -> Result<LineRecognizer, InferError> {
        let bad = |reason: String| InferError::Model {
            path: origin.to_owned(),
            reason,
        };
        let architecture = metadata(bytes, "textrec.architecture")
            .ok_or_else(|| bad("no textrec.architecture metadata: not a textrec model".into()))?;
        if architecture != "line_ctc" {
            return Err(bad(format!(
                "this is a {architecture} model, not a line recognizer"
            )));
        }
        let tokens: Vec<String> = metadata(bytes, "textrec.vocabulary")
            .and_then(|v| serde_json::from_str(&v).ok())
            .ok_or_else(|| bad("no textrec.vocabulary metadata".into()))?;
        let vocabulary = Vocabulary::from_tokens(tokens).map_err(|e| bad(e.to_string()))?;
        let number = |key: &str| {
            metadata(bytes, key)
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(format!("no {key} metadata")))
        };
        let height = number("textrec.input_height")?;
        let downsample = number("textrec.downsample")?;
        let recognizer = LineRecognizer {
            vocabulary,
            height,
            downsample,
            batch: batch.max(1),
            plans: Plans::read(bytes, origin)?,
            ort: None,
            language_model: None,
        };
        recognizer
            .plans
            .get([recognizer.batch, 1, height, recognizer.bucket()])?;
        Ok(recognizer)
    }

    /// Like [`LineRecognizer::from_bytes`] on the chosen backend. With [`Backend::Auto`], a
    /// runtime that cannot be loaded means tract, and the returned notice says why.
    pub fn from_bytes_on(
        bytes: &[u8],
        origin: &Path,
        batch: usize,
        backend: Backend,
    ) -> Result<(LineRecognizer, Option<String>), InferError> {
        let mut recognizer = LineRecognizer::from_bytes(bytes, origin, batch)?;
        if backend == Backend::Tract {
            return Ok((recognizer, None));
        }
        match OrtModel::from_bytes(bytes) {
            Ok(model) => {
                recognizer.ort = Some(model);
                Ok((recognizer, None))
            }
            Err(reason) if backend == Backend::Auto => {
                Ok((recognizer, Some(format!("{reason}; using tract"))))
            }
            Err(reason) => Err(InferError::Model {
                path: origin.to_owned(),
                reason,
            }),
        }
    }

    /// Beam-decodes with `lm` (or greedily again with `None`); fails unless `lm` was counted over
    /// this model's vocabulary.
    pub fn set_language_model(&mut self, lm: Option<Arc<CharLm>>) -> Result<(), InferError> {
        if let Some(lm) = &lm {
            lm.check_vocabulary(&self.vocabulary)
                .map_err(|e| InferError::Run(e.to_string()))?;
        }
        self.language_model = lm;
        Ok(())
    }

    /// The attached language model, if lines are beam-decoded.
    pub fn language_model(&self) -> Option<&Arc<CharLm>> {
        self.language_model.as_ref()
    }

    /// How lines are decoded: `beam` (with the language model) or `greedy`.
    pub fn decoder_name(&self) -> &'static str {
        if self.language_model.is_some() {
            "beam"
        } else {
            "greedy"
        }
    }

    /// The engine that runs the model: `tract` or `ort`.
    pub fn backend_name(&self) -> &'static str {
        if self.ort.is_some() { "ort" } else { "tract" }
    }

    /// `[batch, steps, classes]` log-probabilities of a padded batch, from whichever engine.
    fn run_batch(&self, batch: crate::data::batch::Batch) -> Result<(usize, Vec<f32>), InferError> {
        let dims = [batch.len(), 1, batch.height, batch.width];
        if let Some(ort) = &self.ort {
            let (shape, values) = ort.run(dims, &batch.pixels).map_err(InferError::Run)?;
            return Ok((shape.get(1).copied().unwrap_or(0), values));
        }
        let (shape, values) = self.plans.run(dims, batch.pixels)?;
        Ok((shape.get(1).copied().unwrap_or(0), values))
    }

    /// The width lines are padded to a multiple of: the bucket, kept a multiple of the model's
    /// downsampling.
    fn bucket(&self) -> usize {
        WIDTH_BUCKET.div_ceil(self.downsample) * self.downsample
    }

    /// Per-step log-probabilities `[steps][classes]` of each line, each cut to its own width.
    pub fn log_probs<S: Borrow<Sample>>(&self, lines: &[S]) -> Result<Vec<Vec<f32>>, InferError> {
        let lines: Vec<&Sample> = lines.iter().map(Borrow::borrow).collect();
        if let Some(line) = lines.iter().find(|l| l.height as usize != self.height) {
            return Err(InferError::Run(format!(
                "a line is {} px high, the model reads {} px",
                line.height, self.height
            )));
        }
        // Similar widths together, so little of each batch is padding.
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by_key(|&i| lines[i].width);
        let classes = self.vocabulary.len();
        let mut out = vec![Vec::new(); lines.len()];
        for chunk in order.chunks(self.batch) {
            let samples: Vec<&Sample> = chunk.iter().map(|&i| lines[i]).collect();
            let batch = collate(&samples, self.bucket(), false);
            let widths = batch.widths.clone();
            let (steps, values) = self.run_batch(batch)?;
            if values.len() < chunk.len() * steps * classes {
                return Err(InferError::Run(format!(
                    "the model gave {} values for {} lines of {steps} steps",
                    values.len(),
                    chunk.len()
                )));
            }
            for (row, (&index, width)) in chunk.iter().zip(&widths).enumerate() {
                let own = width.div_ceil(self.downsample).min(steps);
                out[index] = values[row * steps * classes..][..own * classes].to_vec();
            }
        }
        Ok(out)
    }

    /// Transcriptions of `lines`, in order.
    pub fn recognize<S: Borrow<Sample>>(&self, lines: &[S]) -> Result<Vec<Decoded>, InferError> {
        self.log_probs(lines)?
            .iter()
            .map(|scores| self.decode(scores))
            .collect()
    }

    /// One line's `[steps][classes]` log-probabilities decoded the way this recognizer decodes.
    pub fn decode(&self, log_probs: &[f32]) -> Result<Decoded, InferError> {
        let classes = self.vocabulary.len();
        match &self.language_model {
            Some(lm) => beam_decode(log_probs, classes, &self.vocabulary, lm),
            None => greedy_decode(log_probs, classes, &self.vocabulary),
        }
        .map_err(|e| InferError::Run(e.to_string()))
    }
}
