//! Page transcription: detect the lines, cut each out in the frame the recognizer was trained
//! on, recognise them in width-sorted batches, and put the text back in reading order.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use image::GrayImage;
use image::imageops::{FilterType, resize};
use serde::Serialize;

use super::line_detector::LineBox;
use super::line_fcn::{DetectorKind, LearnedDetector, LineDetector};
use super::page_image::paper_and_ink;
use super::{Backend, InferError, LineRecognizer, SlantSearch};
use crate::Architecture;
use crate::bundle::Bundle;
use crate::ctc::Decoded;
use crate::data::Sample;
use crate::lm::CharLm;

/// How a detected line becomes the recognizer's input frame. The frame is set by the line's
/// own ink, not by its box: the baseline (bottom of the x-height band) and the top of the
/// tallest letters, read from the rows' ink profile, land where the same estimate finds them on
/// the training lines. A box alone cannot do that, since a line with descenders has a box a
/// third taller than one without, which made the recognizer read the latter a third too large
/// and too low.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineFrame {
    /// The baseline's depth in the frame, as a fraction of its height from the top.
    pub baseline: f32,
    /// From the tallest letters' tops to the baseline, as a fraction of the frame's height.
    pub ascent: f32,
    /// Paper each side, as a fraction of the frame's height.
    pub sides: f32,
}

impl Default for LineFrame {
    /// [`InkRows::of_sample`] on 20,000 of the default pipeline's training lines: the medians
    /// (0.69 and 0.48; the middle 80% spans 0.66–0.75 and 0.39–0.66), and the mean margin.
    fn default() -> LineFrame {
        LineFrame {
            baseline: 0.69,
            ascent: 0.48,
            sides: 0.16,
        }
    }
}

/// Where a line's ink sits in its rows, from their ink profile (pixels of at least half ink
/// per row, so paper texture and noise count for nothing). Both edges are walked out from the
/// busiest row through rows with ink, so a neighbouring line's descenders or capitals across a
/// gap do not count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InkRows {
    /// Top edge of the highest row, above the x-height band and joined to it, with a tenth of
    /// the busiest row's ink: the tallest letters.
    pub top: f32,
    /// Bottom edge of the x-height band (the rows around the busiest with half its ink):
    /// letters stand on it, only descenders go lower.
    pub baseline: f32,
}

impl InkRows {
    /// `None` when the rows hold no ink.
    pub fn of(profile: &[f32]) -> Option<InkRows> {
        let (busiest_row, busiest) = profile
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if busiest <= 0.0 {
            return None;
        }
        // The first row above `from` (going up) that falls under `level`, or 0.
        let up = |from: usize, level: f32| {
            (0..from)
                .rev()
                .find(|&r| profile[r] < level * busiest)
                .map_or(0, |r| r + 1)
        };
        let x_top = up(busiest_row, 0.5);
        let top = up(x_top, 0.1);
        let baseline = (busiest_row..profile.len())
            .find(|&r| profile[r] < 0.5 * busiest)
            .unwrap_or(profile.len());
        // A line without ascenders or capitals ("a museum was on"): its tops are the x-height,
        // about two thirds of a capital.
        let ascent = ((baseline - top) as f32).max(1.4 * (baseline - x_top) as f32);
        Some(InkRows {
            top: baseline as f32 - ascent,
            baseline: baseline as f32,
        })
    }

    /// The ink rows of a line image (ink coverage, 255 = full ink), as fractions of its height.
    pub fn of_sample(sample: &Sample) -> Option<(f32, f32)> {
        let width = usize::from(sample.width).max(1);
        let profile: Vec<f32> = sample
            .pixels
            .chunks(width)
            .map(|row| row.iter().filter(|&&p| p >= 128).count() as f32)
            .collect();
        let rows = InkRows::of(&profile)?;
        let h = f32::from(sample.height).max(1.0);
        Some((rows.top / h, rows.baseline / h))
    }
}

/// One recognised line of a page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageLine {
    #[serde(rename = "box")]
    pub bbox: LineBox,
    pub text: String,
    /// Geometric mean of the winning per-step probabilities.
    pub confidence: f32,
    pub words: Vec<PageWord>,
}

/// A word of a line: its characters' extent from the CTC steps that produced them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageWord {
    #[serde(rename = "box")]
    pub bbox: LineBox,
    pub text: String,
    /// The lowest confidence of its characters.
    pub confidence: f32,
}

/// A transcribed page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageTranscript {
    pub width: u32,
    pub height: u32,
    pub lines: Vec<PageLine>,
    /// How the lines were decoded: `beam` (with a language model) or `greedy`.
    pub decoder: &'static str,
    /// Milliseconds spent detecting and recognising (not reading the file).
    pub detect_ms: f64,
    pub recognize_ms: f64,
}

impl PageTranscript {
    /// The page's text: one line per detected line, in reading order.
    pub fn text(&self) -> String {
        let mut text: String = self
            .lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        text.push('\n');
        text
    }
}

/// The bundle file that says how pages are read.
pub const PAGES: &str = "pages.json";

/// `pages.json`: which line detector a bundle uses unless told otherwise, the language model
/// (a bundle entry) its lines are beam-decoded with, if any, and the slant search its page
/// evaluation read lines with, if any.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PagesConfig {
    pub line_detector: DetectorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slant_search: Option<SlantSearch>,
}

/// A line detector and a line recognizer working together.
#[derive(Debug)]
pub struct PageTranscriber {
    pub recognizer: LineRecognizer,
    pub detector: LineDetector,
    pub frame: LineFrame,
    /// The model's version, for outputs (`NAME-VERSION` of the bundle, or the file name).
    pub model_version: String,
}

impl PageTranscriber {
    /// The default detector and line frame around `recognizer`.
    pub fn new(recognizer: LineRecognizer, model_version: String) -> PageTranscriber {
        PageTranscriber {
            recognizer,
            detector: LineDetector::default(),
            frame: LineFrame::default(),
            model_version,
        }
    }

    /// Takes the line model out of a release bundle (verified against its manifest), on
    /// `backend`, with the line detector `detector` names or, if none, the one the bundle's
    /// `pages.json` names (the one its pipeline measured better), beam-decoding with the
    /// language model `pages.json` names, if any and if `language_model` (greedy callers skip
    /// reading it), and with the slant search it names, if any; the notice says when
    /// `Backend::Auto` fell back to tract.
    pub fn from_bundle(
        path: &Path,
        batch: usize,
        backend: Backend,
        detector: Option<DetectorKind>,
        language_model: bool,
    ) -> Result<(PageTranscriber, Option<String>), InferError> {
        let bad = |reason: String| InferError::Model {
            path: path.to_owned(),
            reason,
        };
        // Opening checks every file against the manifest's sha256.
        let bundle = Bundle::open(path).map_err(|source| InferError::Bundle {
            path: path.to_owned(),
            source,
        })?;
        let line_model = bundle
            .model_of(Architecture::LineCtc)
            .ok_or_else(|| bad("the bundle has no line_ctc model".into()))?;
        let origin = path.join(line_model.name);
        let (recognizer, notice) =
            LineRecognizer::from_bytes_on(line_model.bytes, &origin, batch, backend)?;
        let manifest = bundle.manifest();
        let version = format!("{}-{}", manifest.name, manifest.version);
        let mut transcriber = PageTranscriber::new(recognizer, version);
        let config = bundle
            .file(PAGES)
            .map(serde_json::from_slice::<PagesConfig>);
        // A bad pages.json matters only when it is needed, so a flag gets past it.
        let config = match (config, detector) {
            (Some(Ok(config)), _) => Some(config),
            (Some(Err(e)), None) => return Err(bad(format!("{PAGES}: {e}"))),
            (Some(Err(_)), Some(_)) | (None, _) => None,
        };
        if let Some(search) = config.as_ref().and_then(|c| c.slant_search.clone()) {
            // Checked here, so the message is about the file rather than a failed run.
            search.check().map_err(|e| bad(format!("{PAGES}: {e}")))?;
            transcriber.recognizer.set_slant_search(Some(search))?;
        }
        let named = config.as_ref().and_then(|c| c.language_model.as_deref());
        if let Some(entry) = named.filter(|_| language_model) {
            let bytes = bundle
                .file(entry)
                .ok_or_else(|| bad(format!("{PAGES} names {entry}, which the bundle lacks")))?;
            let unusable =
                |source: Box<dyn std::error::Error + Send + Sync>| InferError::BundleEntry {
                    path: path.to_owned(),
                    entry: entry.to_owned(),
                    source,
                };
            let lm = CharLm::from_bytes(bytes).map_err(|e| unusable(e.into()))?;
            transcriber
                .recognizer
                .set_language_model(Some(Arc::new(lm)))
                .map_err(|e| unusable(e.into()))?;
        }
        let detector = detector
            .or(config.map(|c| c.line_detector))
            .unwrap_or(DetectorKind::Projection);
        if detector == DetectorKind::Learned {
            let model = bundle
                .model_of(Architecture::LineFcn)
                .ok_or_else(|| bad("the bundle has no learned line detector (line_fcn)".into()))?;
            transcriber.detector = LineDetector::Learned(LearnedDetector::from_bytes(
                model.bytes,
                &path.join(model.name),
            )?);
        }
        Ok((transcriber, notice))
    }

    /// Detects and reads the lines of `page` (dark ink on light paper).
    pub fn transcribe(&self, page: &GrayImage) -> Result<PageTranscript, InferError> {
        let started = Instant::now();
        let boxes = self.detector.detect(page)?;
        let detect_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut transcript = self.read_lines(page, boxes)?;
        transcript.detect_ms = detect_ms;
        Ok(transcript)
    }

    /// The recognizer's input for each box: what [`PageTranscriber::read_lines`] reads, for
    /// reports and debugging.
    pub fn line_images(&self, page: &GrayImage, boxes: &[LineBox]) -> Vec<Sample> {
        let (paper, ink) = paper_and_ink(page);
        boxes
            .iter()
            .map(|b| line_sample(page, b, &self.frame, self.recognizer.height, paper, ink).sample)
            .collect()
    }

    /// Reads the lines in `boxes` (in the order given): for a detector of one's own, or for
    /// scoring the recognizer on true boxes.
    pub fn read_lines(
        &self,
        page: &GrayImage,
        boxes: Vec<LineBox>,
    ) -> Result<PageTranscript, InferError> {
        let started = Instant::now();
        let (paper, ink) = paper_and_ink(page);
        let cuts: Vec<LineCut> = boxes
            .iter()
            .map(|b| line_sample(page, b, &self.frame, self.recognizer.height, paper, ink))
            .collect();
        let samples: Vec<&Sample> = cuts.iter().map(|c| &c.sample).collect();
        let decoded = self.recognizer.recognize(&samples)?;
        let lines = boxes
            .into_iter()
            .zip(decoded)
            .zip(&cuts)
            .map(|((bbox, d), cut)| PageLine {
                bbox,
                words: words(&d, cut, bbox, self.recognizer.downsample),
                text: d.text,
                confidence: d.confidence,
            })
            .collect();
        Ok(PageTranscript {
            width: page.width(),
            height: page.height(),
            lines,
            decoder: self.recognizer.decoder_name(),
            detect_ms: 0.0,
            recognize_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// The lines of `page` inside `boxes` as the recognizer reads them at `height`, in the default
/// frame: what a model trained on real pages must see, so that training matches transcription.
pub fn cut_lines(page: &GrayImage, boxes: &[LineBox], height: usize) -> Vec<Sample> {
    let (paper, ink) = paper_and_ink(page);
    let frame = LineFrame::default();
    boxes
        .iter()
        .map(|b| line_sample(page, b, &frame, height, paper, ink).sample)
        .collect()
}

/// A line as the recognizer reads it, and where its pixels came from on the page.
struct LineCut {
    sample: Sample,
    /// Page x of the sample's column 0, and page pixels per sample pixel.
    origin_x: f32,
    scale: f32,
}

/// Splits a decoded line at spaces into words, each boxed by the page columns its CTC steps
/// cover, within the line's vertical extent.
fn words(decoded: &Decoded, cut: &LineCut, line: LineBox, downsample: usize) -> Vec<PageWord> {
    let to_page = |step: usize| {
        let x = cut.origin_x + (step * downsample) as f32 * cut.scale;
        x.round().clamp(line.x0 as f32, line.x1 as f32) as u32
    };
    let mut words = Vec::new();
    for group in decoded
        .chars
        .split(|c| c.character == " ")
        .filter(|g| !g.is_empty())
    {
        let (first, last) = (group[0].steps.0, group[group.len() - 1].steps.1);
        words.push(PageWord {
            bbox: LineBox {
                x0: to_page(first),
                y0: line.y0,
                x1: to_page(last + 1).max(to_page(first) + 1),
                y1: line.y1,
            },
            text: group.iter().map(|c| c.character.as_str()).collect(),
            confidence: group.iter().map(|c| c.confidence).fold(1.0, f32::min),
        });
    }
    words
}

/// How much of full ink a gray `value` is, between the page's `paper` level and `range` below it.
fn coverage(value: f32, paper: u8, range: f32) -> f32 {
    ((f32::from(paper) - value) / range).clamp(0.0, 1.0)
}

/// Steepest tilt straightened, in rows per column (tan 3°): pages are scanned about level, and a
/// steeper estimate more likely comes from a neighbouring line's ink than from skew.
const MAX_SLOPE: f32 = 0.0524;

/// The tilt of the line of ink in `bbox`, in rows per column (positive: falling to the right),
/// from an ink-weighted straight-line fit of the ink's centre row in strips half the box high.
/// Zero when the box is too short to tell, or the tilt moves the line by under two pixels end
/// to end: such a line is read exactly as a level one.
fn ink_slope(page: &GrayImage, bbox: &LineBox, paper: u8, range: f32) -> f32 {
    let (x_end, y_end) = (bbox.x1.min(page.width()), bbox.y1.min(page.height()));
    let (h, w) = (
        y_end.saturating_sub(bbox.y0) as usize,
        x_end.saturating_sub(bbox.x0) as usize,
    );
    let strip = (h / 2).max(4);
    if h == 0 || w < 3 * h {
        return 0.0;
    }
    let ink_at = |x: u32, y: u32| coverage(f32::from(page.get_pixel(x, y).0[0]), paper, range);
    // (centre column, centre row, ink mass) of each strip with ink.
    let strips: Vec<(f32, f32, f32)> = (bbox.x0..x_end)
        .step_by(strip)
        .filter_map(|sx| {
            let (mut mass, mut moment) = (0.0f32, 0.0f32);
            for x in sx..(sx + strip as u32).min(x_end) {
                for y in bbox.y0..y_end {
                    let c = ink_at(x, y);
                    mass += c;
                    moment += c * y as f32;
                }
            }
            let centre = sx as f32 + (strip as u32).min(x_end - sx) as f32 / 2.0;
            (mass > 0.0).then(|| (centre, moment / mass, mass))
        })
        .collect();
    let total: f32 = strips.iter().map(|s| s.2).sum();
    if strips.len() < 3 || total <= 0.0 {
        return 0.0;
    }
    let mean_x = strips.iter().map(|s| s.0 * s.2).sum::<f32>() / total;
    let mean_y = strips.iter().map(|s| s.1 * s.2).sum::<f32>() / total;
    let (mut covariance, mut variance) = (0.0f32, 0.0f32);
    for &(x, y, m) in &strips {
        covariance += m * (x - mean_x) * (y - mean_y);
        variance += m * (x - mean_x) * (x - mean_x);
    }
    if variance <= 0.0 {
        return 0.0;
    }
    let slope = (covariance / variance).clamp(-MAX_SLOPE, MAX_SLOPE);
    if slope.abs() * (w as f32) < 2.0 {
        return 0.0;
    }
    slope
}

/// Cuts `bbox` out in the recognizer's frame, scaled to `height`, as ink coverage (the lines
/// datasets' polarity: 255 = full ink). A tilted line (a skewed scan) is sheared level first:
/// the recognizer was trained on level lines, and a tilted line's box is taller than its text by
/// the rise across it, which would shrink the text in the frame. The frame's rows then follow
/// the line's ink ([`LineFrame`]); a box without ink keeps its own height and a fifth more.
fn line_sample(
    page: &GrayImage,
    bbox: &LineBox,
    frame: &LineFrame,
    height: usize,
    paper: u8,
    ink: u8,
) -> LineCut {
    let range = f32::from(paper.saturating_sub(ink).max(1));
    let slope = ink_slope(page, bbox, paper, range);
    // The box bounds the tilted band; the level band is the box less half the rise at each end.
    let rise = (slope.abs() * bbox.width() as f32 / 2.0).min(bbox.height() as f32 / 4.0);
    let (band_top, band_bottom) = (bbox.y0 as f32 + rise, bbox.y1 as f32 - rise);
    let band = (band_bottom - band_top).max(1.0);
    let centre_x = (bbox.x0 + bbox.x1) as f32 / 2.0;
    // Ink coverage at level-line coordinates: page column `px`, row `y` of the band's frame.
    let coverage_at = |px: i64, y: f32| {
        let row = y + slope * (px as f32 - centre_x);
        let above = row.floor();
        let t = row - above;
        let level = |py: i64| {
            let inside =
                px >= 0 && py >= 0 && px < i64::from(page.width()) && py < i64::from(page.height());
            // Outside the page is paper.
            if inside {
                f32::from(page.get_pixel(px as u32, py as u32).0[0])
            } else {
                f32::from(paper)
            }
        };
        // A level line (and every column's whole rows) reads one pixel, as before the shear.
        let value = if t == 0.0 {
            level(above as i64)
        } else {
            level(above as i64) * (1.0 - t) + level(above as i64 + 1) * t
        };
        coverage(value, paper, range)
    };
    let rows = (band.round() as usize).max(1);
    let profile: Vec<f32> = (0..rows)
        .map(|r| {
            (bbox.x0..bbox.x1.min(page.width()))
                .filter(|&x| coverage_at(i64::from(x), band_top.round() + r as f32) >= 0.5)
                .count() as f32
        })
        .collect();
    let (y0, frame_height) = match InkRows::of(&profile) {
        Some(ink) => {
            let h = ((ink.baseline - ink.top) / frame.ascent).max(1.0);
            (band_top.round() + ink.baseline - frame.baseline * h, h)
        }
        None => (band_top - 0.1 * band, 1.2 * band),
    };
    let x0 = bbox.x0 as f32 - frame.sides * frame_height;
    let x1 = bbox.x1 as f32 + frame.sides * frame_height;
    let (w, fh) = (
        (x1 - x0).round().max(1.0) as u32,
        frame_height.round().max(1.0) as u32,
    );
    let crop = GrayImage::from_fn(w, fh, |x, y| {
        let px = x0.round() as i64 + i64::from(x);
        image::Luma([(coverage_at(px, y0.round() + y as f32) * 255.0).round() as u8])
    });
    let width = ((w as f32 * height as f32 / fh as f32).round() as u32).clamp(1, u16::MAX as u32);
    let scaled = resize(&crop, width, height as u32, FilterType::Triangle);
    LineCut {
        sample: Sample {
            label: String::new(),
            style: String::new(),
            width: width as u16,
            height: height as u16,
            boxes: Vec::new(),
            pixels: scaled.into_raw(),
        },
        origin_x: x0.round(),
        scale: w as f32 / width as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_cut_in_the_training_frame_as_full_strength_ink() {
        // Gray paper (200) with a faint pencil bar (120) where the line's ink is.
        let mut page = GrayImage::from_pixel(300, 140, image::Luma([200]));
        for y in 60..80 {
            for x in 50..250 {
                page.put_pixel(x, y, image::Luma([120]));
            }
        }
        let (paper, ink) = paper_and_ink(&page);
        assert_eq!((paper, ink), (200, 120));
        let bbox = LineBox {
            x0: 50,
            y0: 60,
            x1: 250,
            y1: 80,
        };
        let frame = LineFrame::default();
        let sample = line_sample(&page, &bbox, &frame, 32, paper, ink).sample;
        assert_eq!(sample.height, 32);
        let (top, baseline) = InkRows::of_sample(&sample).unwrap();
        // A bar reads as letters without ascenders: x-height = bar, baseline at its bottom.
        assert!(
            (baseline - frame.baseline).abs() <= 1.0 / 32.0,
            "{baseline}"
        );
        assert!((baseline - top - frame.ascent).abs() <= 1.5 / 32.0, "{top}");
        let at = |x: usize, y: usize| sample.pixels[y * sample.width as usize + x];
        let middle = sample.width as usize / 2;
        assert_eq!(at(middle, 19), 255, "the bar is full ink");
        assert_eq!(at(middle, 2), 0, "above the bar is paper");
        assert_eq!(at(1, 19), 0, "beside the bar is paper");
    }

    /// A white page with one line of black "letters" on baseline row 100: x-height 12 px,
    /// every third letter with an 8 px ascender, and, if `descenders`, every fifth with a 7 px
    /// descender; and its tight ink box.
    fn written_line(descenders: bool) -> (GrayImage, LineBox) {
        let mut page = GrayImage::from_pixel(700, 200, image::Luma([255]));
        let (mut y0, mut y1) = (u32::MAX, 0);
        for letter in 0..40u32 {
            let x = 40 + letter * 15;
            let top = if letter % 3 == 0 { 80 } else { 88 };
            let bottom = if descenders && letter % 5 == 2 {
                107
            } else {
                100
            };
            for y in top..bottom {
                for dx in 0..9 {
                    page.put_pixel(x + dx, y, image::Luma([0]));
                }
            }
            (y0, y1) = (y0.min(top), y1.max(bottom));
        }
        let bbox = LineBox {
            x0: 40,
            y0,
            x1: 40 + 39 * 15 + 9,
            y1,
        };
        (page, bbox)
    }

    #[test]
    fn ink_rows_walk_out_from_the_x_height_band_and_stop_at_a_gap() {
        // Rows: a neighbour's descenders (0-1), a gap (2), ascenders (3-5), x-height band
        // (6-11), descenders (12-13).
        let profile = [
            8.0, 8.0, 0.0, 15.0, 15.0, 15.0, 90.0, 100.0, 95.0, 90.0, 92.0, 88.0, 9.0, 9.0,
        ];
        let rows = InkRows::of(&profile).unwrap();
        assert_eq!(rows.baseline, 12.0);
        assert_eq!(rows.top, 3.0);
        // Without ascenders the tops are the x-height, taken as two thirds of the ascent.
        let flat = [0.0, 100.0, 100.0, 100.0, 100.0, 100.0, 0.0];
        let rows = InkRows::of(&flat).unwrap();
        assert_eq!((rows.baseline, rows.top), (6.0, 6.0 - 7.0));
        assert_eq!(InkRows::of(&[0.0; 4]), None);
    }

    #[test]
    fn descenders_do_not_move_or_shrink_the_line_in_its_frame() {
        let frame = LineFrame::default();
        let cut = |descenders| {
            let (page, bbox) = written_line(descenders);
            line_sample(&page, &bbox, &frame, 32, 255, 0).sample
        };
        let (with, without) = (cut(true), cut(false));
        let (top_with, base_with) = InkRows::of_sample(&with).unwrap();
        let (top_without, base_without) = InkRows::of_sample(&without).unwrap();
        let px = 1.0 / 32.0;
        assert!(
            (base_with - base_without).abs() <= px,
            "{base_with} vs {base_without}"
        );
        assert!(
            (top_with - top_without).abs() <= px,
            "{top_with} vs {top_without}"
        );
        assert!(
            (base_without - frame.baseline).abs() <= px,
            "{base_without}"
        );
        assert!(
            (base_without - top_without - frame.ascent).abs() <= 1.5 * px,
            "{top_without}"
        );
        assert!(with.width.abs_diff(without.width) <= 1, "the same scale");
        // Descenders reach below the baseline, as in the training lines; nothing is cut off.
        let ink_rows_below = |s: &Sample| {
            s.pixels
                .chunks(usize::from(s.width))
                .skip((base_with * 32.0).round() as usize)
                .filter(|row| row.iter().any(|&p| p >= 128))
                .count()
        };
        assert!(ink_rows_below(&with) >= 3);
        assert_eq!(ink_rows_below(&without), 0);
    }

    #[test]
    fn a_box_at_the_page_edge_is_framed_with_paper() {
        let page = GrayImage::from_pixel(40, 20, image::Luma([0]));
        let bbox = LineBox {
            x0: 0,
            y0: 0,
            x1: 40,
            y1: 20,
        };
        let sample = line_sample(&page, &bbox, &LineFrame::default(), 32, 255, 0).sample;
        assert_eq!(sample.pixels[0], 0, "outside the page is paper");
        let middle = (16 * sample.width as usize) + sample.width as usize / 2;
        assert_eq!(sample.pixels[middle], 255);
    }

    /// A 600×120 paper page with a line of 12×20 ink blocks (a 40% gap between them) whose
    /// baseline falls `slope` rows per column, and the line's box as a detector gives it.
    fn tilted_line(slope: f32) -> (GrayImage, LineBox) {
        let mut page = GrayImage::from_pixel(600, 120, image::Luma([255]));
        let (x0, x1, top) = (50u32, 550u32, 40.0f32);
        let (mut y_min, mut y_max) = (u32::MAX, 0);
        for x in x0..x1 {
            if (x - x0) % 20 >= 12 {
                continue;
            }
            let shift = slope * (x as f32 - 300.0);
            for y in 0..20 {
                let row = (top + shift + y as f32).round() as u32;
                page.put_pixel(x, row, image::Luma([0]));
                (y_min, y_max) = (y_min.min(row), y_max.max(row + 1));
            }
        }
        let bbox = LineBox {
            x0,
            y0: y_min,
            x1,
            y1: y_max,
        };
        (page, bbox)
    }

    #[test]
    fn a_level_line_is_not_sheared() {
        let (page, bbox) = tilted_line(0.0);
        assert_eq!(ink_slope(&page, &bbox, 255, 255.0), 0.0);
        // Under a pixel of rise end to end is read as level too.
        let (page, bbox) = tilted_line(0.0015);
        assert_eq!(ink_slope(&page, &bbox, 255, 255.0), 0.0);
    }

    #[test]
    fn a_skewed_line_is_cut_as_the_level_line_would_be() {
        let frame = LineFrame::default();
        let (level_page, level_box) = tilted_line(0.0);
        let level = line_sample(&level_page, &level_box, &frame, 32, 255, 0).sample;
        for slope in [0.026f32, -0.026] {
            let (page, bbox) = tilted_line(slope);
            assert!(bbox.height() >= 32, "1.5° adds 13 px to a 20 px line");
            let found = ink_slope(&page, &bbox, 255, 255.0);
            assert!((found - slope).abs() < 0.003, "{found} for {slope}");
            let cut = line_sample(&page, &bbox, &frame, 32, 255, 0).sample;
            // The text is as large as on the level line (to a row of its 20: the straightened
            // line keeps a pixel of its rise) …
            let ratio = f32::from(cut.width) / f32::from(level.width);
            assert!(
                (0.94..1.06).contains(&ratio),
                "{} vs {}",
                cut.width,
                level.width
            );
            assert!(ink_rows(&cut).abs_diff(ink_rows(&level)) <= 2);
            // … and level: its ink centre is the same row at both ends.
            let quarter = cut.width as usize / 4;
            let (left, right) = (
                ink_centre(&cut, quarter / 2..quarter),
                ink_centre(&cut, 3 * quarter..7 * quarter / 2),
            );
            assert!((left - right).abs() < 1.5, "{left} vs {right} for {slope}");
        }
    }

    /// Rows of `sample` where ink covers more than a quarter of the columns.
    fn ink_rows(sample: &Sample) -> usize {
        let width = sample.width as usize;
        sample
            .pixels
            .chunks(width)
            .filter(|row| row.iter().filter(|&&p| p > 128).count() * 4 > width)
            .count()
    }

    /// The ink-weighted mean row of `columns` of `sample`.
    fn ink_centre(sample: &Sample, columns: std::ops::Range<usize>) -> f32 {
        let width = sample.width as usize;
        let (mut mass, mut moment) = (0.0f32, 0.0f32);
        for (y, row) in sample.pixels.chunks(width).enumerate() {
            for &p in &row[columns.clone()] {
                mass += f32::from(p);
                moment += f32::from(p) * y as f32;
            }
        }
        moment / mass
    }

    #[test]
    fn a_blank_page_has_no_contrast_to_stretch() {
        let page = GrayImage::from_pixel(10, 10, image::Luma([250]));
        let (paper, ink) = paper_and_ink(&page);
        assert!(paper - ink >= 32);
    }
}
