//! The learned line detector (FSDL 2019's approach): a fully convolutional network marks each
//! line's core (the middle [`CORE`] of its height) on a page area-averaged down by `scale`, and
//! on the core predicts how far the line reaches up and down; connected components of the mark
//! become line boxes. Training and inference share [`detector_input`] and [`DetectorMaps`]
//! (targets and boxes), so they cannot drift apart.
//! [`LineDetector`] puts it and the classical [`ProjectionDetector`] behind one type.

use std::fmt;
use std::path::Path;

use image::GrayImage;
use serde::{Deserialize, Serialize};

use super::InferError;
use super::line_detector::{LineBox, ProjectionDetector};
use super::page_image::paper_and_ink;
use super::plans::Plans;
use crate::Architecture;
use crate::model_metadata::{ModelMetadata, key};

/// The fraction of a line box's height, around its middle, that the network learns to mark:
/// small enough that the cores of touching lines never touch, so each line is one component.
pub const CORE: f32 = 0.4;
/// The network's input is padded to a multiple of this (scaled pixels), which bounds the plans.
const SIZE_BUCKET: usize = 32;
/// Components smaller than this many scaled pixels are specks, not lines.
const MIN_COMPONENT: usize = 4;

/// A page as the network reads it: ink in `[0, 1]`, `scale` times smaller each way.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorInput {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

/// Contrast-stretches `page` (dark ink on light paper) from its paper and ink levels, as the
/// line cuts are, and area-averages it down by `scale` (a partial block at the right or bottom
/// edge averages what it has).
pub fn detector_input(page: &GrayImage, scale: usize) -> DetectorInput {
    let scale = scale.max(1);
    let (paper, ink) = paper_and_ink(page);
    let range = f32::from(paper.saturating_sub(ink).max(1));
    let (page_width, page_height) = (page.width() as usize, page.height() as usize);
    let (width, height) = (page_width.div_ceil(scale), page_height.div_ceil(scale));
    let mut sums = vec![0.0f32; width * height];
    let mut counts = vec![0u32; width * height];
    for (x, y, pixel) in page.enumerate_pixels() {
        let level = (f32::from(paper) - f32::from(pixel.0[0])) / range;
        let cell = (y as usize / scale) * width + x as usize / scale;
        sums[cell] += level.clamp(0.0, 1.0);
        counts[cell] += 1;
    }
    let pixels = sums
        .iter()
        .zip(&counts)
        .map(|(&sum, &count)| sum / count.max(1) as f32)
        .collect();
    DetectorInput {
        width,
        height,
        pixels,
    }
}

/// Scaled (network-input) rows per unit of the predicted distances, so targets are about 1.
pub const DISTANCE_UNIT: f32 = 8.0;

/// What the network predicts per pixel of its input, row-major planes: whether it is on a line's
/// core (a logit), and from there the distances up to the line's top and down to its bottom (in
/// `DISTANCE_UNIT`s of scaled pixels, read only on core pixels).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorMaps {
    pub width: usize,
    pub height: usize,
    pub core: Vec<f32>,
    pub top: Vec<f32>,
    pub bottom: Vec<f32>,
}

impl DetectorMaps {
    /// The planes of a `[3, height, width]` output.
    pub fn from_channels(values: &[f32], width: usize, height: usize) -> DetectorMaps {
        let plane = |c: usize| values[c * width * height..][..width * height].to_vec();
        DetectorMaps {
            width,
            height,
            core: plane(0),
            top: plane(1),
            bottom: plane(2),
        }
    }

    /// The training target for a page whose input is `width × height` (scaled): core 1 on each
    /// box's core, 0 elsewhere, with the distances to that box's edges. A scaled pixel is on the
    /// core when its centre falls in it; a core thinner than a pixel still marks the row its
    /// centre is in.
    pub fn target(boxes: &[LineBox], width: usize, height: usize, scale: usize) -> DetectorMaps {
        let scale = scale.max(1) as f32;
        let mut maps = DetectorMaps {
            width,
            height,
            core: vec![0.0; width * height],
            top: vec![0.0; width * height],
            bottom: vec![0.0; width * height],
        };
        // An empty or inverted box (a corrupt dataset) marks nothing.
        for b in boxes.iter().filter(|b| b.width() > 0 && b.height() > 0) {
            let (y0, y1) = (b.y0 as f32 / scale, b.y1 as f32 / scale);
            let centre = (y0 + y1) / 2.0;
            let half = (y1 - y0) * CORE / 2.0;
            let inside = |from: f32, to: f32, limit: usize| -> std::ops::Range<usize> {
                let first = (from - 0.5).ceil().max(0.0) as usize;
                let end = ((to - 0.5).floor() + 1.0).max(0.0) as usize;
                first.min(limit)..end.min(limit)
            };
            let mut rows = inside(centre - half, centre + half, height);
            if rows.is_empty() {
                let row = (centre as usize).min(height.saturating_sub(1));
                rows = row..(row + 1).min(height);
            }
            let columns = inside(b.x0 as f32 / scale, (b.x1 as f32 - 1e-3) / scale, width);
            for row in rows {
                let middle = row as f32 + 0.5;
                let line = row * width..(row + 1) * width;
                maps.core[line.clone()][columns.clone()].fill(1.0);
                maps.top[line.clone()][columns.clone()].fill((middle - y0) / DISTANCE_UNIT);
                maps.bottom[line][columns.clone()].fill((y1 - middle) / DISTANCE_UNIT);
            }
        }
        maps
    }

    /// Line boxes on a `page_width × page_height` page, in reading order: the 4-connected
    /// components of positive core logits, each spanning its columns and, in height, the mean of
    /// its pixels' predicted top and bottom edges; pieces of one line (a gap in its core) are
    /// joined back into one box.
    pub fn boxes(&self, scale: usize, page_width: u32, page_height: u32) -> Vec<LineBox> {
        let (width, height) = (self.width, self.height);
        let scale = scale.max(1) as f32;
        let on = |i: usize| self.core[i] > 0.0;
        let mut seen = vec![false; width * height];
        let mut boxes = Vec::new();
        let mut stack = Vec::new();
        for start in 0..width * height {
            if seen[start] || !on(start) {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let (mut size, mut x0, mut x1) = (0usize, usize::MAX, 0);
            let (mut tops, mut bottoms) = (0.0f32, 0.0f32);
            while let Some(i) = stack.pop() {
                let (x, y) = (i % width, i / width);
                let middle = y as f32 + 0.5;
                size += 1;
                (x0, x1) = (x0.min(x), x1.max(x));
                tops += middle - self.top[i] * DISTANCE_UNIT;
                bottoms += middle + self.bottom[i] * DISTANCE_UNIT;
                let neighbours = [
                    (x > 0).then(|| i - 1),
                    (x + 1 < width).then(|| i + 1),
                    (y > 0).then(|| i - width),
                    (y + 1 < height).then(|| i + width),
                ];
                for n in neighbours.into_iter().flatten() {
                    if !seen[n] && on(n) {
                        seen[n] = true;
                        stack.push(n);
                    }
                }
            }
            if size < MIN_COMPONENT {
                continue;
            }
            let clamp = |v: f32, limit: u32| (v * scale).round().clamp(0.0, limit as f32) as u32;
            let (y0, y1) = (tops / size as f32, bottoms / size as f32);
            boxes.push(LineBox {
                x0: clamp(x0 as f32, page_width),
                y0: clamp(y0.min(y1), page_height),
                x1: clamp((x1 + 1) as f32, page_width),
                y1: clamp(y1.max(y0), page_height),
            });
        }
        join_pieces(boxes)
    }
}

/// Joins boxes that share most of their height (more than half of the lower one's) into one,
/// then sorts top to bottom: a line whose core the network broke in two is read as one line,
/// in order, never as two lines whose right half might sort first.
fn join_pieces(mut boxes: Vec<LineBox>) -> Vec<LineBox> {
    boxes.sort_by_key(|b| (b.y0 + b.y1, b.x0));
    let mut joined: Vec<LineBox> = Vec::with_capacity(boxes.len());
    for b in boxes {
        let same_line = joined.iter_mut().find(|j| {
            let overlap = j.y1.min(b.y1).saturating_sub(j.y0.max(b.y0));
            2 * overlap > j.height().min(b.height())
        });
        match same_line {
            Some(j) => {
                *j = LineBox {
                    x0: j.x0.min(b.x0),
                    y0: j.y0.min(b.y0),
                    x1: j.x1.max(b.x1),
                    y1: j.y1.max(b.y1),
                }
            }
            None => joined.push(b),
        }
    }
    joined.sort_by_key(|b| (b.y0 + b.y1, b.x0));
    joined
}

/// An exported `line_fcn` model run by tract, one fixed-shape plan per padded page size.
#[derive(Debug)]
pub struct LearnedDetector {
    /// Page pixels per network input pixel.
    pub scale: usize,
    plans: Plans,
}

impl LearnedDetector {
    /// Loads an exported `line_fcn` model from its bytes; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<LearnedDetector, InferError> {
        let bad = |reason: String| InferError::Model {
            path: origin.to_owned(),
            reason,
        };
        let metadata = ModelMetadata::read(bytes).map_err(|e| bad(e.to_string()))?;
        if metadata.architecture != Architecture::LineFcn {
            return Err(bad(format!(
                "this is a {} model, not a line detector",
                metadata.architecture
            )));
        }
        let scale =
            ModelMetadata::required(metadata.scale, key::SCALE).map_err(|e| bad(e.to_string()))?;
        let detector = LearnedDetector {
            scale,
            plans: Plans::read(bytes, origin)?,
        };
        // Plan the smallest input now: a model tract cannot run fails here, not on every page.
        detector.plans.get([1, 1, SIZE_BUCKET, SIZE_BUCKET])?;
        Ok(detector)
    }

    /// Loads an exported `line_fcn` model file.
    pub fn load(path: &Path) -> Result<LearnedDetector, InferError> {
        let bytes = std::fs::read(path).map_err(|source| InferError::Read {
            path: path.to_owned(),
            source,
        })?;
        LearnedDetector::from_bytes(&bytes, path)
    }

    /// The network's maps over `input`, cut back to its own size.
    pub fn maps(&self, input: &DetectorInput) -> Result<DetectorMaps, InferError> {
        let padded_width = input.width.max(1).div_ceil(SIZE_BUCKET) * SIZE_BUCKET;
        let padded_height = input.height.max(1).div_ceil(SIZE_BUCKET) * SIZE_BUCKET;
        let mut pixels = vec![0.0f32; padded_width * padded_height];
        for y in 0..input.height {
            pixels[y * padded_width..][..input.width]
                .copy_from_slice(&input.pixels[y * input.width..][..input.width]);
        }
        let (_, values) = self
            .plans
            .run([1, 1, padded_height, padded_width], pixels)?;
        if values.len() != 3 * padded_width * padded_height {
            return Err(InferError::Model {
                path: self.plans.path().to_owned(),
                reason: format!(
                    "the detector gave {} values for a {padded_width}×{padded_height} input, not \
                     3 maps",
                    values.len()
                ),
            });
        }
        let own: Vec<f32> = (0..3 * input.height)
            .flat_map(|row| {
                let (plane, y) = (row / input.height, row % input.height);
                values[(plane * padded_height + y) * padded_width..][..input.width]
                    .iter()
                    .copied()
            })
            .collect();
        Ok(DetectorMaps::from_channels(&own, input.width, input.height))
    }

    /// The lines of `page` (dark ink on light paper), top to bottom.
    pub fn detect(&self, page: &GrayImage) -> Result<Vec<LineBox>, InferError> {
        let input = detector_input(page, self.scale);
        Ok(self
            .maps(&input)?
            .boxes(self.scale, page.width(), page.height()))
    }
}

/// Which line detector a page transcriber uses.
#[derive(Debug)]
pub enum LineDetector {
    /// Binarisation and a projection profile: no model, nothing to train.
    Projection(ProjectionDetector),
    /// The `line_fcn` network.
    Learned(LearnedDetector),
}

impl LineDetector {
    /// The lines of `page` (dark ink on light paper), in reading order.
    pub fn detect(&self, page: &GrayImage) -> Result<Vec<LineBox>, InferError> {
        match self {
            LineDetector::Projection(detector) => Ok(detector.detect(page)),
            LineDetector::Learned(detector) => detector.detect(page),
        }
    }

    pub fn kind(&self) -> DetectorKind {
        match self {
            LineDetector::Projection(_) => DetectorKind::Projection,
            LineDetector::Learned(_) => DetectorKind::Learned,
        }
    }
}

impl Default for LineDetector {
    fn default() -> LineDetector {
        LineDetector::Projection(ProjectionDetector::default())
    }
}

/// The two detectors by name: what a bundle's `pages.json` and `--detector` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    Projection,
    Learned,
}

impl DetectorKind {
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Projection => "projection",
            DetectorKind::Learned => "learned",
        }
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DetectorKind {
    type Err = crate::setting::UnknownChoice;
    fn from_str(name: &str) -> Result<DetectorKind, Self::Err> {
        match name {
            "projection" => Ok(DetectorKind::Projection),
            "learned" => Ok(DetectorKind::Learned),
            other => Err(crate::setting::UnknownChoice {
                setting: "line detector",
                given: other.to_owned(),
                choices: &["projection", "learned"],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(x0: u32, y0: u32, x1: u32, y1: u32) -> LineBox {
        LineBox { x0, y0, x1, y1 }
    }

    /// What a perfect network would output: confident core logits and the true distances.
    fn perfect(target: DetectorMaps) -> DetectorMaps {
        DetectorMaps {
            core: target
                .core
                .iter()
                .map(|&m| if m > 0.5 { 8.0 } else { -8.0 })
                .collect(),
            ..target
        }
    }

    #[test]
    fn input_is_contrast_stretched_ink_averaged_per_block() {
        // 6×3 page, scale 2: paper 200, one ink pixel of 0 in the first block, a half-ink
        // block, and a partial last row.
        let mut page = GrayImage::from_pixel(6, 3, image::Luma([200]));
        page.put_pixel(0, 0, image::Luma([0]));
        for (x, y) in [(2, 0), (3, 0), (2, 1), (3, 1)] {
            page.put_pixel(x, y, image::Luma([100]));
        }
        let input = detector_input(&page, 2);
        assert_eq!((input.width, input.height), (3, 2));
        assert_eq!(input.pixels, vec![0.25, 0.5, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn perfect_maps_give_back_the_true_boxes() {
        // Three lines 36 px high, 8 px apart, on a 400×200 page at scale 4; edges off the grid.
        let truth = [
            line(20, 21, 300, 57),
            line(40, 65, 378, 101),
            line(20, 109, 202, 143),
        ];
        let maps = perfect(DetectorMaps::target(&truth, 100, 50, 4));
        let found = maps.boxes(4, 400, 200);
        assert_eq!(found.len(), 3, "one box per line: {found:?}");
        for (t, f) in truth.iter().zip(&found) {
            assert!(t.iou(f) > 0.95, "{t:?} vs {f:?}: IoU {}", t.iou(f));
            assert_eq!(
                (t.y0, t.y1),
                (f.y0, f.y1),
                "heights come from the distances"
            );
        }
    }

    #[test]
    fn touching_lines_keep_separate_cores() {
        // Boxes that overlap by 4 px (descenders into ascenders) still make two components.
        let truth = [line(0, 0, 200, 40), line(0, 36, 200, 76)];
        let found = perfect(DetectorMaps::target(&truth, 50, 20, 4)).boxes(4, 200, 80);
        assert_eq!(found, truth.to_vec());
    }

    #[test]
    fn pieces_of_one_line_are_joined_and_lines_stay_apart() {
        // A line broken in two (the right piece a little higher, so it would sort first), and
        // the next line just below.
        let pieces = vec![
            line(10, 20, 100, 50),
            line(120, 18, 300, 48),
            line(10, 56, 200, 86),
        ];
        assert_eq!(
            join_pieces(pieces),
            vec![line(10, 18, 300, 50), line(10, 56, 200, 86)]
        );
    }

    #[test]
    fn maps_read_back_from_a_three_channel_output() {
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let maps = DetectorMaps::from_channels(&values, 2, 2);
        assert_eq!(
            (maps.core, maps.top, maps.bottom),
            (
                vec![0.0, 1.0, 2.0, 3.0],
                vec![4.0, 5.0, 6.0, 7.0],
                vec![8.0, 9.0, 10.0, 11.0]
            )
        );
    }

    #[test]
    fn specks_and_empty_pages_give_no_lines() {
        let mut maps = DetectorMaps::target(&[], 20, 20, 4);
        maps.core.iter_mut().for_each(|v| *v = -8.0);
        maps.core[5 * 20 + 5] = 8.0;
        maps.core[5 * 20 + 6] = 8.0;
        assert!(maps.boxes(4, 80, 80).is_empty());
        assert!(DetectorMaps::target(&[], 0, 0, 4).boxes(4, 0, 0).is_empty());
    }

    #[test]
    fn detector_names_parse_and_print() {
        for kind in [DetectorKind::Projection, DetectorKind::Learned] {
            assert_eq!(kind.name().parse::<DetectorKind>(), Ok(kind));
        }
        assert!(
            "fcn"
                .parse::<DetectorKind>()
                .unwrap_err()
                .to_string()
                .contains("projection, learned")
        );
    }
}
