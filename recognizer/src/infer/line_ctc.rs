//! The exported line recognizer run by tract: lines batched by width and padded to a width
//! bucket, one fixed-shape plan per (batch size, bucket) built on first use (tract's LSTM needs a
//! concrete batch, and concrete widths let it fix every shape ahead; docs/decisions.md 3), CTC decoding
//! (greedy, or a beam search weighed by a character language model when one is attached) with
//! per-character and per-line confidence, optionally after a slant search (each line also read
//! sheared, the surest reading kept).

use std::borrow::Borrow;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::InferError;
use super::onnx_runtime::{Backend, OrtModel};
use super::plans::Plans;
use crate::Architecture;
use crate::ctc::{Decoded, beam_decode, greedy_decode};
use crate::data::Sample;
use crate::data::batch::collate;
use crate::lm::CharLm;
use crate::model_metadata::{ModelMetadata, key};
use crate::setting::{InvalidSetting, require};
use crate::vocab::Vocabulary;

/// Batches are padded to a multiple of this width (the training batches' bucket, so the model
/// sees the padding it was trained with), which bounds the number of plans.
const WIDTH_BUCKET: usize = 64;

/// Reading each line also at other slants and keeping the reading the model is surest of: its
/// training writers mostly stand upright, and a strongly slanted hand reads better sheared
/// upright (deslanting by search, with the model as the judge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlantSearch {
    /// Shears tried besides the line as it is: x shift per pixel of height, positive moving the
    /// top left (uprighting forward-leaning writing).
    pub shears: Vec<f64>,
    /// How much surer a sheared reading must be to replace the plain one: its best path's
    /// log-probability summed over the line, in nats.
    pub margin: f64,
}

impl SlantSearch {
    /// Shears within ±1 (45°) and a margin that is not negative.
    pub fn check(&self) -> Result<(), InvalidSetting> {
        require(
            !self.shears.is_empty() && self.shears.iter().all(|k| (-1.0..=1.0).contains(k)),
            "slant_search.shears",
            &self.shears,
            "one or more shears within -1..=1",
        )?;
        require(
            self.margin >= 0.0,
            "slant_search.margin",
            self.margin,
            "a number >= 0",
        )
    }
}

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
    slant_search: Option<SlantSearch>,
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
        let metadata = ModelMetadata::read(bytes).map_err(|e| bad(e.to_string()))?;
        if metadata.architecture != Architecture::LineCtc {
            return Err(bad(format!(
                "this is a {} model, not a line recognizer",
                metadata.architecture
            )));
        }
        let tokens = ModelMetadata::required(metadata.vocabulary, key::VOCABULARY)
            .map_err(|e| bad(e.to_string()))?;
        let vocabulary = Vocabulary::from_tokens(tokens).map_err(|e| bad(e.to_string()))?;
        let height = ModelMetadata::required(metadata.input_height, key::INPUT_HEIGHT)
            .map_err(|e| bad(e.to_string()))?;
        let downsample = ModelMetadata::required(metadata.downsample, key::DOWNSAMPLE)
            .map_err(|e| bad(e.to_string()))?;
        let recognizer = LineRecognizer {
            vocabulary,
            height,
            downsample,
            batch: batch.max(1),
            plans: Plans::read(bytes, origin)?,
            ort: None,
            language_model: None,
            slant_search: None,
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
                reason: reason.to_string(),
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

    /// Reads every line at the search's slants too (about one more model run per shear).
    pub fn set_slant_search(&mut self, search: Option<SlantSearch>) -> Result<(), InferError> {
        if let Some(search) = &search {
            search.check()?;
        }
        self.slant_search = search;
        Ok(())
    }

    pub fn slant_search(&self) -> Option<&SlantSearch> {
        self.slant_search.as_ref()
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
            let (shape, values) = ort.run(dims, &batch.pixels).map_err(InferError::Ort)?;
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

    /// Per-step log-probabilities `[steps][classes]` of each line, each cut to its own width;
    /// with a slant search, those of the surest of its readings.
    pub fn log_probs<S: Borrow<Sample>>(&self, lines: &[S]) -> Result<Vec<Vec<f32>>, InferError> {
        let lines: Vec<&Sample> = lines.iter().map(Borrow::borrow).collect();
        let plain = self.read(&lines)?;
        let Some(search) = &self.slant_search else {
            return Ok(plain);
        };
        let classes = self.vocabulary.len();
        // The plain reading starts `margin` ahead; the best-scoring reading wins.
        let mut best: Vec<(f32, Vec<f32>)> = plain
            .into_iter()
            .map(|scores| {
                (
                    best_path_score(&scores, classes) + search.margin as f32,
                    scores,
                )
            })
            .collect();
        for &shear in &search.shears {
            let sheared: Vec<Sample> = lines.iter().map(|l| shear_line(l, shear as f32)).collect();
            let sheared: Vec<&Sample> = sheared.iter().collect();
            for (kept, scores) in best.iter_mut().zip(self.read(&sheared)?) {
                let score = best_path_score(&scores, classes);
                if score > kept.0 {
                    *kept = (score, scores);
                }
            }
        }
        Ok(best.into_iter().map(|(_, scores)| scores).collect())
    }

    /// One model reading of each line as it is.
    fn read(&self, lines: &[&Sample]) -> Result<Vec<Vec<f32>>, InferError> {
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
            Some(lm) => beam_decode(log_probs, classes, &self.vocabulary, lm, lm.search),
            None => greedy_decode(log_probs, classes, &self.vocabulary),
        }
        .map_err(|e| InferError::Run(e.to_string()))
    }
}

/// The log-probability of a line's best CTC path: the most likely class at every step.
fn best_path_score(log_probs: &[f32], classes: usize) -> f32 {
    log_probs
        .chunks_exact(classes)
        .map(|step| step.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .sum()
}

/// `line` sheared by `shear` (x shift per pixel of height; positive moves the top left) about
/// its middle row, widened by the largest shift on each side so no ink is cut off.
fn shear_line(line: &Sample, shear: f32) -> Sample {
    let (width, height) = (line.width as usize, line.height as usize);
    let pad = (shear.abs() * height as f32 / 2.0).ceil() as usize;
    let out_width = width + 2 * pad;
    let mut pixels = vec![0u8; out_width * height];
    let middle = height as f32 / 2.0;
    for y in 0..height {
        let row = &line.pixels[y * width..][..width];
        // Output column x reads input column x - pad - offset, interpolated.
        let offset = shear * (y as f32 + 0.5 - middle);
        for (x, out) in pixels[y * out_width..][..out_width].iter_mut().enumerate() {
            let source = x as f32 - pad as f32 - offset;
            let left = source.floor();
            let t = source - left;
            let at = |i: f32| -> f32 {
                if i >= 0.0 && (i as usize) < width {
                    f32::from(row[i as usize])
                } else {
                    0.0
                }
            };
            *out = ((1.0 - t) * at(left) + t * at(left + 1.0)).round() as u8;
        }
    }
    Sample {
        label: line.label.clone(),
        style: line.style.clone(),
        width: out_width as u16,
        height: line.height,
        boxes: Vec::new(),
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(width: usize, height: usize, column: usize) -> Sample {
        let mut pixels = vec![0u8; width * height];
        for y in 0..height {
            pixels[y * width + column] = 255;
        }
        Sample {
            label: "l".into(),
            style: "test".into(),
            width: width as u16,
            height: height as u16,
            boxes: Vec::new(),
            pixels,
        }
    }

    fn ink_column(line: &Sample, y: usize) -> usize {
        let width = line.width as usize;
        let row = &line.pixels[y * width..][..width];
        (0..width).max_by_key(|&x| row[x]).unwrap()
    }

    #[test]
    fn a_positive_shear_moves_the_top_left_and_the_bottom_right() {
        let upright = bar(20, 32, 10);
        let sheared = shear_line(&upright, 0.25);
        assert_eq!(sheared.width, 20 + 2 * 4);
        assert_eq!(sheared.height, 32);
        // Row y moves by 0.25 × (y + 0.5 - 16): the top row 4 px left of the middle's place,
        // the bottom row 4 px right; the padding keeps both on the canvas.
        let middle = ink_column(&sheared, 16);
        assert_eq!(middle, 10 + 4);
        assert_eq!(ink_column(&sheared, 0), middle - 4);
        assert_eq!(ink_column(&sheared, 31), middle + 4);
        // A forward-leaning bar (top right) comes out upright.
        let mut leaning = bar(40, 32, 0);
        leaning.pixels.fill(0);
        for y in 0..32 {
            leaning.pixels[y * 40 + 20 + (31 - y) / 4] = 255;
        }
        let upright = shear_line(&leaning, 0.25);
        let columns: Vec<usize> = (0..32).map(|y| ink_column(&upright, y)).collect();
        let spread = columns.iter().max().unwrap() - columns.iter().min().unwrap();
        assert!(spread <= 1, "{columns:?}");
    }

    #[test]
    fn the_best_path_sums_each_steps_most_likely_class() {
        let log_probs = [-0.1, -2.0, -3.0, -1.5, -0.5, -4.0];
        assert!((best_path_score(&log_probs, 3) - (-0.6)).abs() < 1e-6);
    }

    #[test]
    fn a_slant_search_needs_shears_within_45_degrees_and_a_margin_not_below_zero() {
        let search = |shears: Vec<f64>, margin| SlantSearch { shears, margin }.check();
        assert!(search(vec![-0.3, 0.3], 2.0).is_ok());
        assert_eq!(
            search(vec![], 2.0).unwrap_err().setting,
            "slant_search.shears"
        );
        assert!(search(vec![1.5], 2.0).is_err());
        assert_eq!(
            search(vec![0.3], -1.0).unwrap_err().setting,
            "slant_search.margin"
        );
        assert!(search(vec![0.3], f64::NAN).is_err());
    }
}
