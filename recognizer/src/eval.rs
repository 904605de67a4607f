//! Evaluation as a library: what a page transcription is scored against and how, shared by the
//! `evaluate` stage (which adds reports, gates and the release's choice of line detector) and
//! `cargo xtask bench infer` (which times the same reading), so that a benchmark's page CER and
//! a release's are the same number computed the same way.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use image::GrayImage;

use crate::data::{DataError, Dataset, Sample, Split};
use crate::infer::{DetectionScore, LineBox, TextErrors};

/// Why a page could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("a page's pixels ({pixels} bytes) do not match its size {width}×{height}")]
    PageSize {
        width: u16,
        height: u16,
        pixels: usize,
    },
    #[error(transparent)]
    Data(#[from] DataError),
}

/// A page with what is on it: the image, its text (lines joined by `\n`), the true line boxes
/// and the writer (for a synthetic page, the font).
#[derive(Debug, Clone)]
pub struct TruthPage {
    pub image: GrayImage,
    pub text: String,
    pub boxes: Vec<LineBox>,
    pub writer: String,
}

impl TruthPage {
    /// A pages dataset's sample as a page to read.
    pub fn from_sample(sample: Sample) -> Result<TruthPage, EvalError> {
        let (width, height, pixels) = (sample.width, sample.height, sample.pixels.len());
        let image = GrayImage::from_raw(u32::from(width), u32::from(height), sample.pixels).ok_or(
            EvalError::PageSize {
                width,
                height,
                pixels,
            },
        )?;
        Ok(TruthPage {
            image,
            boxes: sample
                .boxes
                .iter()
                .map(|&b| LineBox::from_array(b))
                .collect(),
            text: sample.label,
            writer: sample.style,
        })
    }

    /// Every page of `dataset`'s `split`, in dataset order.
    pub fn read_split(
        dataset: &Dataset,
        split: Split,
    ) -> impl Iterator<Item = Result<TruthPage, EvalError>> + '_ {
        dataset
            .samples(split)
            .map(|sample| TruthPage::from_sample(sample?))
    }

    /// The edits from this page's text to `transcript` (whose trailing newline is not an error).
    pub fn errors(&self, transcript: &str) -> TextErrors {
        TextErrors::of(&self.text, transcript.trim_end())
    }
}

/// One line detector (with the recognizer after it) over a set of pages: detection against the
/// true boxes, page text errors, both also per writer.
#[derive(Debug, Clone, Default)]
pub struct PageScores {
    pub detection: DetectionScore,
    pub errors: TextErrors,
    pub by_writer: BTreeMap<String, (DetectionScore, TextErrors)>,
}

/// A detection matches a true line at this intersection over union or more.
pub const MIN_IOU: f64 = 0.5;

/// Page CERs closer than this are a tie between detectors, broken by detection quality.
pub const CER_TIE: f64 = 0.005;

impl PageScores {
    /// Adds one page: the lines a detector `found` on it and the `transcript` read from them.
    pub fn add(&mut self, page: &TruthPage, found: &[LineBox], transcript: &str) {
        let detection = DetectionScore::of(&page.boxes, found, MIN_IOU);
        let errors = page.errors(transcript);
        self.detection.add(&detection);
        self.errors.add(errors);
        let writer = self.by_writer.entry(page.writer.clone()).or_default();
        writer.0.add(&detection);
        writer.1.add(errors);
    }

    /// Detection F1 × mean IoU: the tie-breaker when two detectors read equally well.
    pub fn detection_quality(&self) -> f64 {
        self.detection.f1() * self.detection.mean_iou()
    }
}

/// The index of the detector whose pages read best: the lowest page CER, and within
/// [`CER_TIE`] the better detection. `None` for no detectors.
pub fn best_detector<S: Borrow<PageScores>>(scores: &[S]) -> Option<usize> {
    (0..scores.len()).min_by(|&a, &b| {
        let (a, b) = (scores[a].borrow(), scores[b].borrow());
        let (cer_a, cer_b) = (a.errors.cer(), b.errors.cer());
        if (cer_a - cer_b).abs() < CER_TIE {
            b.detection_quality().total_cmp(&a.detection_quality())
        } else {
            cer_a.total_cmp(&cer_b)
        }
    })
}

/// The text errors of `transcripts` against `pages`, summed (CER over all pages' characters).
pub fn text_errors<'a>(
    pages: impl IntoIterator<Item = &'a TruthPage>,
    transcripts: impl IntoIterator<Item = impl AsRef<str>>,
) -> TextErrors {
    let mut errors = TextErrors::default();
    for (page, transcript) in pages.into_iter().zip(transcripts) {
        errors.add(page.errors(transcript.as_ref()));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(writer: &str, text: &str, boxes: Vec<LineBox>) -> TruthPage {
        TruthPage {
            image: GrayImage::new(4, 4),
            text: text.into(),
            boxes,
            writer: writer.into(),
        }
    }

    fn line(y0: u32) -> LineBox {
        LineBox {
            x0: 0,
            y0,
            x1: 100,
            y1: y0 + 10,
        }
    }

    #[test]
    fn pages_are_scored_overall_and_per_writer() {
        let mut scores = PageScores::default();
        scores.add(
            &page("a", "ab\ncd", vec![line(0), line(20)]),
            &[line(0)],
            "ab\n",
        );
        scores.add(&page("b", "ef", vec![line(0)]), &[line(0)], "ef\n");
        assert_eq!(scores.detection.truth_lines, 3);
        assert_eq!(scores.detection.matched, 2);
        assert_eq!(scores.errors.chars, 7);
        assert_eq!(scores.by_writer["a"].1.chars, 5);
        assert_eq!(scores.by_writer["b"].1.char_edits, 0);
        assert!(scores.by_writer["a"].1.char_edits >= 3);
    }

    #[test]
    fn the_lower_cer_wins_and_a_tie_goes_to_the_better_detection() {
        let truth = page("a", "abcd", vec![line(0)]);
        let mut worse = PageScores::default();
        worse.add(&truth, &[line(0)], "abxx");
        let mut better = PageScores::default();
        better.add(&truth, &[line(3)], "abcd");
        assert_eq!(best_detector(&[worse.clone(), better.clone()]), Some(1));
        let mut sharper = PageScores::default();
        sharper.add(&truth, &[line(0)], "abcd");
        assert_eq!(best_detector(&[better, sharper]), Some(1));
        assert_eq!(best_detector::<PageScores>(&[]), None);
    }
}
