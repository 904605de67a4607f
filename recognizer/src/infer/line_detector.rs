//! The classical line detector, FSDL's and OCRopus's baseline before a learned one: Otsu
//! binarisation, a deskewed horizontal projection profile cut into bands at its valleys, and each
//! band's horizontal extent from its column profile. [`DetectionScore`] says how detected boxes
//! compare with ground truth, for `evaluate` and benchmarks.

use std::ops::Range;

use image::GrayImage;
use serde::{Deserialize, Serialize};

/// A detected text line: its box on the page, `[x0, y0, x1, y1)` in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl LineBox {
    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }

    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }

    fn area(&self) -> u64 {
        u64::from(self.width()) * u64::from(self.height())
    }

    /// Intersection over union; 0 when both boxes are empty.
    pub fn iou(&self, other: &LineBox) -> f64 {
        let w = self.x1.min(other.x1).saturating_sub(self.x0.max(other.x0));
        let h = self.y1.min(other.y1).saturating_sub(self.y0.max(other.y0));
        let inter = u64::from(w) * u64::from(h);
        let union = self.area() + other.area() - inter;
        if union == 0 {
            0.0
        } else {
            inter as f64 / union as f64
        }
    }

    /// A ground-truth box as a dataset stores it (`Sample::boxes`).
    pub fn from_array([x0, y0, x1, y1]: [u16; 4]) -> LineBox {
        LineBox {
            x0: x0.into(),
            y0: y0.into(),
            x1: x1.into(),
            y1: y1.into(),
        }
    }
}

/// Parameters of the projection-profile detector. Every field has a default, so a pipeline file
/// sets only what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionDetector {
    /// Least gap, in grey levels, between Otsu's paper and ink means. Below it the page is blank:
    /// a uniform or noise-only page has no lines rather than noise boxes.
    pub min_contrast: u8,
    /// Largest share of the page the ink may cover; a darker page is not dark writing on light
    /// paper.
    pub max_ink_fraction: f64,
    /// Averages each pixel with its neighbours before thresholding, so that sensor noise and
    /// paper grain fall on the paper side of the threshold and faint strokes on the ink side.
    pub blur: bool,
    /// Drops ink pixels with no ink neighbour (dust, sensor noise).
    pub despeckle: bool,
    /// Largest page skew searched for, in degrees either way; 0 turns the search off. At most 10.
    pub max_skew_degrees: f64,
    /// Step of the skew search, in degrees.
    pub skew_step_degrees: f64,
    /// Radius, in rows, of the box filter that smooths the row profile.
    pub smoothing: u32,
    /// Rows with less ink than this share of the median line's peak separate lines.
    pub valley_fraction: f64,
    /// A band at least this many times the median band height holds several lines (ascenders
    /// touching descenders): it is split at its deepest valley.
    pub split_ratio: f64,
    /// A valley inside a band at most this share of the lower of the peaks either side of it
    /// separates two lines whatever the band's height (a page with too few lines for a median).
    pub split_depth: f64,
    /// Bands thinner than this, in pixels, are specks or rules, not lines.
    pub min_line_height: u32,
    /// Widest gap between the words of one line, in band heights.
    pub max_word_gap: f64,
    /// Least share of a band's ink a horizontal piece needs to count towards the line's extent,
    /// so that a stray speck in the margin does not stretch the box.
    pub min_piece_ink: f64,
    /// Pixels added around each box (Otsu's threshold trims the faint edge of the strokes).
    pub padding: u32,
}

impl Default for ProjectionDetector {
    fn default() -> Self {
        ProjectionDetector {
            min_contrast: 48,
            max_ink_fraction: 0.5,
            blur: true,
            despeckle: true,
            max_skew_degrees: 2.0,
            skew_step_degrees: 0.25,
            smoothing: 2,
            valley_fraction: 0.15,
            split_ratio: 1.6,
            split_depth: 0.4,
            min_line_height: 8,
            max_word_gap: 2.0,
            min_piece_ink: 0.02,
            padding: 1,
        }
    }
}

/// Width, in columns, of the strips the skew search shifts as one.
const STRIP: usize = 16;

impl ProjectionDetector {
    /// The text lines of a page of dark ink on light paper, top to bottom.
    pub fn detect(&self, page: &GrayImage) -> Vec<LineBox> {
        let (width, height) = (page.width() as usize, page.height() as usize);
        let Some(pixels) = width
            .checked_mul(height)
            .and_then(|n| page.as_raw().get(..n))
        else {
            return Vec::new();
        };
        if pixels.is_empty() {
            return Vec::new();
        }
        let mut grey = if self.blur {
            blurred(pixels, width)
        } else {
            pixels.to_vec()
        };
        let Some(threshold) = self.ink_threshold(&grey) else {
            return Vec::new();
        };
        for p in &mut grey {
            *p = u8::from(*p <= threshold);
        }
        let ink = InkMap::new(grey, width, height, self.despeckle);
        let shear = ink.best_shear(&self.skew_angles());
        // Noise that survives binarisation lies evenly over the page: the emptiest rows (margins,
        // gaps) measure it, and it is taken off the profiles so that valleys are valleys again.
        let mut sorted = shear.profile.clone();
        sorted.sort_unstable();
        let background = sorted.get(sorted.len() / 10).copied().unwrap_or(0);
        let profile: Vec<u32> = shear
            .profile
            .iter()
            .map(|&p| p.saturating_sub(background))
            .collect();
        let density = f64::from(background) / width as f64;
        self.bands(&profile)
            .into_iter()
            .filter_map(|band| self.line_box(&ink, &shear, band, density))
            .collect()
    }

    /// Otsu's threshold (ink is `<=` it), or `None` for a page with no writing on it.
    fn ink_threshold(&self, pixels: &[u8]) -> Option<u8> {
        // Four counters in turn, so that runs of one grey level do not wait on one another.
        let mut lanes = [[0u64; 256]; 4];
        let mut quads = pixels.chunks_exact(4);
        for quad in &mut quads {
            for (lane, &p) in lanes.iter_mut().zip(quad) {
                lane[usize::from(p)] += 1;
            }
        }
        for &p in quads.remainder() {
            lanes[0][usize::from(p)] += 1;
        }
        let mut histogram = [0u64; 256];
        for (v, h) in histogram.iter_mut().enumerate() {
            *h = lanes.iter().map(|lane| lane[v]).sum();
        }
        let total = pixels.len() as f64;
        let sum: f64 = (0..256).map(|v| v as f64 * histogram[v] as f64).sum();
        let (mut below, mut below_sum) = (0.0, 0.0);
        let mut best: Option<(f64, u8, f64, f64, f64)> = None;
        for (v, &count) in histogram.iter().enumerate().take(255) {
            below += count as f64;
            below_sum += v as f64 * count as f64;
            let above = total - below;
            if below == 0.0 || above == 0.0 {
                continue;
            }
            let (ink_mean, paper_mean) = (below_sum / below, (sum - below_sum) / above);
            let between = below * above * (paper_mean - ink_mean).powi(2);
            if best.is_none_or(|b| between > b.0) {
                best = Some((between, v as u8, ink_mean, paper_mean, below));
            }
        }
        let (_, threshold, ink_mean, paper_mean, ink) = best?;
        (paper_mean - ink_mean >= f64::from(self.min_contrast)
            && ink / total <= self.max_ink_fraction)
            .then_some(threshold)
    }

    /// Candidate skew angles (as slopes), nearest to level first so that ties keep the page level.
    fn skew_angles(&self) -> Vec<f64> {
        let max = self.max_skew_degrees.clamp(0.0, 10.0);
        let step = if self.skew_step_degrees.is_finite() {
            self.skew_step_degrees.max(0.05)
        } else {
            max
        };
        let steps = if max > 0.0 && step > 0.0 {
            ((max / step).floor() as usize).min(200)
        } else {
            0
        };
        let mut slopes = vec![0.0];
        for k in 1..=steps {
            let a = (k as f64 * step).to_radians().tan();
            slopes.extend([a, -a]);
        }
        slopes
    }

    /// Line bands, in sheared rows, top to bottom.
    fn bands(&self, profile: &[u32]) -> Vec<Range<usize>> {
        let smooth = box_filter(profile, self.smoothing as usize);
        let max = smooth.iter().copied().fold(0.0, f64::max);
        if max <= 0.0 {
            return Vec::new();
        }
        let min_height = (self.min_line_height as usize).max(1);
        // The typical line's peak, from the bands a rough cut at a share of the page's maximum
        // finds: one dark blob must not set the level for every line.
        let mut peaks: Vec<f64> = runs(&smooth, self.valley_fraction * max)
            .into_iter()
            .filter(|r| r.len() >= min_height.div_ceil(2))
            .map(|r| smooth[r].iter().copied().fold(0.0, f64::max))
            .collect();
        let Some(peak) = median(&mut peaks) else {
            return Vec::new();
        };
        let cores = runs(
            &smooth,
            (self.valley_fraction * peak).max(f64::MIN_POSITIVE),
        );
        let mut heights: Vec<f64> = cores
            .iter()
            .filter(|r| r.len() >= min_height)
            .map(|r| r.len() as f64)
            .collect();
        let typical = median(&mut heights).unwrap_or(0.0);
        let mut split = Vec::with_capacity(cores.len());
        for core in cores {
            self.split(&smooth, core, typical, &mut split);
        }
        // Rows between lines hold only noise: ascenders and descenders are what stands above it.
        let mut outside = vec![true; profile.len()];
        for core in &split {
            outside[core.clone()].fill(false);
        }
        let mut background: Vec<f64> = profile
            .iter()
            .zip(&outside)
            .filter(|(_, out)| **out)
            .map(|(&p, _)| f64::from(p))
            .collect();
        background.sort_by(f64::total_cmp);
        let noise = background.get(background.len() / 4).copied().unwrap_or(0.0);
        extend(profile, &smooth, &split, noise as u32 + 1)
            .into_iter()
            .filter(|r| r.len() >= min_height)
            .collect()
    }

    /// Cuts a core holding several lines at its valleys.
    fn split(&self, smooth: &[f64], core: Range<usize>, typical: f64, out: &mut Vec<Range<usize>>) {
        let mut stack = vec![core];
        while let Some(band) = stack.pop() {
            match self.split_point(smooth, &band, typical) {
                Some(at) => {
                    stack.push(at..band.end);
                    stack.push(band.start..at);
                }
                None => out.push(band),
            }
        }
    }

    /// Where a band holding two lines divides, if it does.
    fn split_point(&self, smooth: &[f64], band: &Range<usize>, typical: f64) -> Option<usize> {
        let min_side = (self.min_line_height as usize).max(1);
        let values = &smooth[band.clone()];
        let n = values.len();
        if n < 2 * min_side {
            return None;
        }
        // A band too tall for one line: its deepest valley away from the ends.
        if typical > 0.0 && n as f64 >= self.split_ratio * typical {
            let margin = ((typical / 2.0) as usize).max(min_side);
            if n > 2 * margin {
                let at = argmin(&values[margin..n - margin]) + margin;
                return Some(band.start + at);
            }
        }
        // A valley deep against the peaks either side of it.
        let mut left = vec![0.0; n];
        let mut running = 0.0f64;
        for (i, &v) in values.iter().enumerate() {
            running = running.max(v);
            left[i] = running;
        }
        let mut right = vec![0.0; n];
        running = 0.0;
        for (i, &v) in values.iter().enumerate().rev() {
            running = running.max(v);
            right[i] = running;
        }
        (min_side..n - min_side)
            .filter_map(|i| {
                let shoulder = left[i].min(right[i]);
                let depth = values[i] / shoulder;
                (shoulder > 0.0 && depth <= self.split_depth).then_some((depth, i))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, i)| band.start + i)
    }

    /// The box of one band: its horizontal extent from the band's column profile, its vertical
    /// extent the band's rows carried back through the shear.
    fn line_box(
        &self,
        ink: &InkMap,
        shear: &Shear,
        band: Range<usize>,
        density: f64,
    ) -> Option<LineBox> {
        let mut columns = vec![0u32; ink.width];
        for (strip, &shift) in shear.shifts.iter().enumerate() {
            let xs = strip * STRIP..((strip + 1) * STRIP).min(ink.width);
            let rows =
                band.start.saturating_sub(shift)..band.end.saturating_sub(shift).min(ink.height);
            for y in rows {
                let row = &ink.mask[y * ink.width..][xs.clone()];
                for (c, &m) in columns[xs.clone()].iter_mut().zip(row) {
                    *c += u32::from(m);
                }
            }
        }
        let noise = (density * band.len() as f64).ceil() as u32;
        for c in &mut columns {
            *c = c.saturating_sub(noise);
        }
        let total: u64 = columns.iter().map(|&c| u64::from(c)).sum();
        let gap = (self.max_word_gap * band.len() as f64).max(1.0) as usize;
        let mut pieces: Vec<(Range<usize>, u64)> = Vec::new();
        for (x, &c) in columns.iter().enumerate() {
            if c == 0 {
                continue;
            }
            match pieces.last_mut() {
                Some((r, sum)) if x - r.end <= gap => {
                    r.end = x + 1;
                    *sum += u64::from(c);
                }
                _ => pieces.push((x..x + 1, u64::from(c))),
            }
        }
        let least = (self.min_piece_ink * total as f64).max(2.0);
        let mut kept = pieces
            .iter()
            .filter(|(_, sum)| *sum as f64 >= least)
            .map(|(r, _)| r);
        let first = kept.next()?.clone();
        let (first, last) = (first.start, kept.next_back().map_or(first.end, |r| r.end));
        let shift_at = |x: usize| shear.shifts[(x / STRIP).min(shear.shifts.len() - 1)];
        let (a, b) = (shift_at(first), shift_at(last - 1));
        let (high, low) = (a.max(b), a.min(b));
        let pad = self.padding as usize;
        let clamp = |v: usize, limit: usize| v.min(limit) as u32;
        Some(LineBox {
            x0: clamp(first.saturating_sub(pad), ink.width),
            y0: clamp(
                band.start.saturating_sub(high).saturating_sub(pad),
                ink.height,
            ),
            x1: clamp(last.saturating_add(pad), ink.width),
            y1: clamp(band.end.saturating_sub(low).saturating_add(pad), ink.height),
        })
        .filter(|b| b.width() > 0 && b.height() > 0)
    }
}

/// A binarised page (1 = ink) and its ink counted per row in vertical strips.
struct InkMap {
    width: usize,
    height: usize,
    mask: Vec<u8>,
    /// `strips[s * height + y]`: ink in row `y` of strip `s`.
    strips: Vec<u32>,
}

/// A page sheared by one skew: each strip's row offset and the row profile it gives.
struct Shear {
    /// Page row `y` of strip `s` is sheared row `y + shifts[s]`.
    shifts: Vec<usize>,
    profile: Vec<u32>,
}

impl InkMap {
    /// From a binarised page (1 = ink).
    fn new(raw: Vec<u8>, width: usize, height: usize, despeckle: bool) -> InkMap {
        let mask = if despeckle {
            despeckled(&raw, width)
        } else {
            raw
        };
        let strip_count = width.div_ceil(STRIP);
        let mut strips = vec![0u32; strip_count * height];
        for (y, row) in mask.chunks_exact(width).enumerate() {
            for (s, chunk) in row.chunks(STRIP).enumerate() {
                strips[s * height + y] = chunk.iter().map(|&m| u32::from(m)).sum();
            }
        }
        InkMap {
            width,
            height,
            mask,
            strips,
        }
    }

    /// The shear among `slopes` whose row profile is sharpest (largest sum of squares: lines
    /// level with the rows pile their ink into few rows).
    fn best_shear(&self, slopes: &[f64]) -> Shear {
        let mut best: Option<(f64, Shear)> = None;
        for &slope in slopes {
            let shear = self.shear(slope);
            let energy: f64 = shear.profile.iter().map(|&p| f64::from(p).powi(2)).sum();
            if best.as_ref().is_none_or(|(e, _)| energy > *e) {
                best = Some((energy, shear));
            }
        }
        best.map_or_else(|| self.shear(0.0), |(_, s)| s)
    }

    fn shear(&self, slope: f64) -> Shear {
        let strip_count = self.width.div_ceil(STRIP);
        let offsets: Vec<i64> = (0..strip_count)
            .map(|s| ((s * STRIP) as f64 + STRIP as f64 / 2.0) * slope)
            .map(|d| d.round() as i64)
            .collect();
        let top = offsets.iter().copied().max().unwrap_or(0);
        let shifts: Vec<usize> = offsets.iter().map(|&o| (top - o) as usize).collect();
        let span = shifts.iter().copied().max().unwrap_or(0);
        let mut profile = vec![0u32; self.height + span];
        for (s, &shift) in shifts.iter().enumerate() {
            let counts = &self.strips[s * self.height..(s + 1) * self.height];
            for (p, &c) in profile[shift..].iter_mut().zip(counts) {
                *p += c;
            }
        }
        Shear { shifts, profile }
    }
}

/// Grows each core over the rows of its ascenders and descenders (rows with at least `floor`
/// ink), by at most its own height, and never past the valley between it and its neighbour.
fn extend(
    profile: &[u32],
    smooth: &[f64],
    cores: &[Range<usize>],
    floor: u32,
) -> Vec<Range<usize>> {
    let mut bands: Vec<Range<usize>> = cores.to_vec();
    for (i, core) in cores.iter().enumerate() {
        let reach = core.len();
        let low = if i == 0 { 0 } else { cores[i - 1].end };
        let ceiling = cores.get(i + 1).map_or(profile.len(), |c| c.start);
        let mut start = core.start;
        while start > low && core.start - start < reach && profile[start - 1] >= floor {
            start -= 1;
        }
        let mut end = core.end;
        while end < ceiling && end - core.end < reach && profile[end] >= floor {
            end += 1;
        }
        bands[i] = start..end;
    }
    for i in 1..bands.len() {
        if bands[i - 1].end > bands[i].start {
            let gap = cores[i - 1].end..cores[i].start;
            let at = if gap.is_empty() {
                gap.start
            } else {
                gap.start + argmin(&smooth[gap.clone()])
            };
            bands[i - 1].end = at;
            bands[i].start = at;
        }
    }
    bands
}

/// `mask` without its isolated pixels (no ink among their eight neighbours).
fn despeckled(mask: &[u8], width: usize) -> Vec<u8> {
    let rows: Vec<&[u8]> = mask.chunks_exact(width).collect();
    let mut kept = vec![0u8; mask.len()];
    // Ink per column over the three rows around `y`, with an empty column either side.
    let mut column = vec![0u8; width + 2];
    for (y, (row, out)) in rows.iter().zip(kept.chunks_exact_mut(width)).enumerate() {
        if !row.contains(&1) {
            continue;
        }
        column[1..=width].copy_from_slice(row);
        let neighbours = [y.checked_sub(1).map(|a| rows[a]), rows.get(y + 1).copied()];
        for other in neighbours.into_iter().flatten() {
            for (c, &v) in column[1..=width].iter_mut().zip(other) {
                *c += v;
            }
        }
        let blocks = column.iter().zip(&column[1..]).zip(&column[2..]);
        for ((o, &ink), ((&a, &b), &c)) in out.iter_mut().zip(*row).zip(blocks) {
            *o = ink & u8::from(a + b + c > 1);
        }
    }
    kept
}

/// The 3×3 mean of each pixel, edges repeated.
fn blurred(pixels: &[u8], width: usize) -> Vec<u8> {
    let rows: Vec<&[u8]> = pixels.chunks_exact(width).collect();
    let last = rows.len().saturating_sub(1);
    let mut out = vec![0u8; pixels.len()];
    let mut column = vec![0u16; width + 2];
    for (y, out_row) in out.chunks_exact_mut(width).enumerate() {
        let (above, row, below) = (rows[y.saturating_sub(1)], rows[y], rows[(y + 1).min(last)]);
        for (((c, &a), &r), &b) in column[1..=width].iter_mut().zip(above).zip(row).zip(below) {
            *c = u16::from(a) + u16::from(r) + u16::from(b);
        }
        column[0] = column[1];
        column[width + 1] = column[width];
        let blocks = column.iter().zip(&column[1..]).zip(&column[2..]);
        for (o, ((&a, &b), &c)) in out_row.iter_mut().zip(blocks) {
            *o = ((a + b + c + 4) / 9) as u8;
        }
    }
    out
}

/// Mean over a window of `2 * radius + 1` rows (fewer at the ends).
fn box_filter(values: &[u32], radius: usize) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(values.len() + 1);
    prefix.push(0u64);
    let mut sum = 0u64;
    for &v in values {
        sum += u64::from(v);
        prefix.push(sum);
    }
    (0..values.len())
        .map(|i| {
            let (lo, hi) = (
                i.saturating_sub(radius),
                i.saturating_add(radius.saturating_add(1)).min(values.len()),
            );
            (prefix[hi] - prefix[lo]) as f64 / (hi - lo) as f64
        })
        .collect()
}

/// Maximal runs of rows at or above `level` (and above zero).
fn runs(values: &[f64], level: f64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &v) in values.iter().enumerate() {
        let on = v >= level && v > 0.0;
        match (on, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..values.len());
    }
    out
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// Index of the smallest value (the middle one of a flat bottom); 0 for an empty slice.
fn argmin(values: &[f64]) -> usize {
    let Some(low) = values.iter().copied().min_by(f64::total_cmp) else {
        return 0;
    };
    let first = values.iter().position(|&v| v == low).unwrap_or(0);
    let last = values.iter().rposition(|&v| v == low).unwrap_or(first);
    (first + last) / 2
}

/// Detection quality against ground truth, for `evaluate` and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DetectionScore {
    pub pages: usize,
    pub truth_lines: usize,
    pub detected_lines: usize,
    /// Truth lines matched one-to-one by a detection.
    pub matched: usize,
    /// Sum of the matched pairs' IoU.
    pub iou_sum: f64,
}

impl DetectionScore {
    /// Scores one page: pairs are matched greedily, best IoU first, each box at most once, and
    /// only pairs with IoU of at least `min_iou` count.
    pub fn of(truth: &[LineBox], detected: &[LineBox], min_iou: f64) -> DetectionScore {
        let mut pairs: Vec<(f64, usize, usize)> = truth
            .iter()
            .enumerate()
            .flat_map(|(t, tb)| {
                detected
                    .iter()
                    .enumerate()
                    .map(move |(d, db)| (tb.iou(db), t, d))
            })
            .filter(|&(iou, _, _)| iou > 0.0 && iou >= min_iou)
            .collect();
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        let mut truth_used = vec![false; truth.len()];
        let mut detected_used = vec![false; detected.len()];
        let mut score = DetectionScore {
            pages: 1,
            truth_lines: truth.len(),
            detected_lines: detected.len(),
            ..DetectionScore::default()
        };
        for (iou, t, d) in pairs {
            if !truth_used[t] && !detected_used[d] {
                truth_used[t] = true;
                detected_used[d] = true;
                score.matched += 1;
                score.iou_sum += iou;
            }
        }
        score
    }

    /// Accumulates another page's (or set's) counts.
    pub fn add(&mut self, other: &DetectionScore) {
        self.pages += other.pages;
        self.truth_lines += other.truth_lines;
        self.detected_lines += other.detected_lines;
        self.matched += other.matched;
        self.iou_sum += other.iou_sum;
    }

    /// Share of truth lines found; 1 when there were none to find.
    pub fn recall(&self) -> f64 {
        ratio(self.matched, self.truth_lines)
    }

    /// Share of detections that are lines; 1 when nothing was detected.
    pub fn precision(&self) -> f64 {
        ratio(self.matched, self.detected_lines)
    }

    /// Mean IoU of the matched pairs; 0 when none matched.
    pub fn mean_iou(&self) -> f64 {
        if self.matched == 0 {
            0.0
        } else {
            self.iou_sum / self.matched as f64
        }
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use image::Luma;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// A line of "words": dark blocks of x-height with ascender and descender strokes.
    struct Line {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        /// Ascender and descender strokes per half line height of word.
        strokes: u32,
    }

    /// A page of noisy light paper with `lines` inked on it, every column shifted down by one
    /// pixel per `skew` pixels from the left; returns it with each line's ink bounds.
    fn render(
        width: u32,
        height: u32,
        lines: &[Line],
        skew: u32,
        seed: u64,
    ) -> (GrayImage, Vec<LineBox>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut page =
            GrayImage::from_fn(width, height, |_, _| Luma([rng.random_range(215..=250)]));
        let mut truth = Vec::new();
        for line in lines {
            let h = line.height;
            let (core_top, core_bottom) = (line.y + h * 3 / 10, line.y + h * 7 / 10);
            let mut bounds: Option<LineBox> = None;
            let mut ink = |x0: u32, y0: u32, x1: u32, y1: u32, rng: &mut ChaCha8Rng| {
                for x in x0..x1.min(width) {
                    let shift = x / skew;
                    for y in (y0 + shift)..(y1 + shift).min(height) {
                        page.put_pixel(x, y, Luma([rng.random_range(20..=70)]));
                        let b = bounds.get_or_insert(LineBox {
                            x0: x,
                            y0: y,
                            x1: x + 1,
                            y1: y + 1,
                        });
                        *b = LineBox {
                            x0: b.x0.min(x),
                            y0: b.y0.min(y),
                            x1: b.x1.max(x + 1),
                            y1: b.y1.max(y + 1),
                        };
                    }
                }
            };
            let mut x = line.x;
            while x < line.x + line.width {
                let word = rng.random_range(h / 2..h * 3).min(line.x + line.width - x);
                ink(x, core_top, x + word, core_bottom, &mut rng);
                let stroke = (h / 10).max(2);
                let strokes = line.strokes * word / (h / 2).max(1);
                for _ in 0..strokes {
                    let at = x + rng.random_range(0..word.saturating_sub(stroke).max(1));
                    if rng.random_bool(0.5) {
                        ink(at, line.y, at + stroke, core_top, &mut rng);
                    } else {
                        ink(at, core_bottom, at + stroke, line.y + h, &mut rng);
                    }
                }
                x += word + rng.random_range(h / 4..h / 2);
            }
            truth.extend(bounds);
        }
        (page, truth)
    }

    fn lines(tops: &[u32], height: u32, indents: &[u32], length: u32, strokes: u32) -> Vec<Line> {
        tops.iter()
            .zip(indents.iter().cycle())
            .map(|(&y, &indent)| Line {
                x: 40 + indent,
                y,
                width: length - indent,
                height,
                strokes,
            })
            .collect()
    }

    #[test]
    fn finds_the_lines_of_a_skewed_noisy_page_in_reading_order() {
        let tops: Vec<u32> = (0..8).map(|i| 30 + i * 50).collect();
        let (page, truth) = render(
            900,
            470,
            &lines(&tops, 36, &[0, 40, 0, 120, 10], 800, 1),
            60,
            1,
        );
        let detected = ProjectionDetector::default().detect(&page);
        let score = DetectionScore::of(&truth, &detected, 0.5);
        assert_eq!(truth.len(), 8);
        assert!(score.recall() >= 0.95, "{score:?} {detected:?}");
        assert!(score.precision() >= 0.95, "{score:?} {detected:?}");
        assert!(score.mean_iou() >= 0.7, "{score:?}");
        assert!(
            detected.windows(2).all(|w| w[0].y0 < w[1].y0),
            "{detected:?}"
        );
        assert!(detected.iter().all(|b| b.x1 <= 900 && b.y1 <= 470));
    }

    #[test]
    fn splits_lines_whose_descenders_touch_the_next_ascenders() {
        // Pitch 0.9× the line height and many strokes: descenders run into the next line's
        // ascenders, and no row between the two is clear. Two lines alone (no median band height
        // to compare with), and two among others.
        for (tops, name) in [
            (vec![40, 72], "alone"),
            (vec![20, 80, 112, 170, 230], "among others"),
        ] {
            let (page, truth) = render(600, 300, &lines(&tops, 36, &[0, 30], 500, 4), 1000, 7);
            let detected = ProjectionDetector::default().detect(&page);
            let score = DetectionScore::of(&truth, &detected, 0.5);
            assert_eq!(detected.len(), tops.len(), "{name}: {detected:?}");
            assert_eq!(
                score.matched,
                tops.len(),
                "{name}: {score:?} {detected:?} {truth:?}"
            );
        }
    }

    #[test]
    fn blank_uniform_and_degenerate_pages_have_no_lines() {
        let detector = ProjectionDetector::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noisy = GrayImage::from_fn(500, 400, |_, _| Luma([rng.random_range(200..=255)]));
        let mut dust = GrayImage::from_pixel(500, 400, Luma([240]));
        for (x, y) in [(10, 10), (250, 200), (251, 200), (400, 30)] {
            dust.put_pixel(x, y, Luma([0]));
        }
        for (x, y) in [(100, 300), (101, 300), (100, 301), (101, 301), (102, 302)] {
            dust.put_pixel(x, y, Luma([10]));
        }
        for (page, name) in [
            (GrayImage::new(0, 0), "0×0"),
            (GrayImage::new(0, 50), "0×50"),
            (GrayImage::from_pixel(1, 1, Luma([255])), "1×1 white"),
            (GrayImage::from_pixel(1, 1, Luma([0])), "1×1 black"),
            (GrayImage::from_pixel(640, 480, Luma([255])), "white"),
            (GrayImage::from_pixel(640, 480, Luma([0])), "black"),
            (GrayImage::from_pixel(640, 480, Luma([128])), "grey"),
            (noisy, "noisy paper"),
            (dust, "dust"),
        ] {
            assert_eq!(detector.detect(&page), Vec::new(), "{name}");
        }
        // Pages too thin for a line, or mostly ink, must not panic whatever they hold.
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for (w, h) in [(1, 300), (300, 1), (2, 2), (3, 700), (700, 3), (17, 33)] {
            let page = GrayImage::from_fn(w, h, |_, _| {
                Luma([if rng.random_bool(0.3) { 0 } else { 255 }])
            });
            detector.detect(&page);
        }
    }

    #[test]
    fn parameters_deserialise_over_the_defaults() {
        let detector: ProjectionDetector =
            serde_json::from_str(r#"{"padding": 4, "max_skew_degrees": 0}"#).expect("valid");
        assert_eq!(
            detector,
            ProjectionDetector {
                padding: 4,
                max_skew_degrees: 0.0,
                ..ProjectionDetector::default()
            }
        );
        assert!(serde_json::from_str::<ProjectionDetector>(r#"{"padding_px": 4}"#).is_err());
    }

    #[test]
    fn iou_of_hand_computed_boxes() {
        let a = LineBox::from_array([0, 0, 10, 10]);
        assert_eq!((a.width(), a.height()), (10, 10));
        // 5×5 shared out of 100 + 100 − 25.
        let b = LineBox::from_array([5, 5, 15, 15]);
        assert!((a.iou(&b) - 25.0 / 175.0).abs() < 1e-12);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(
            a.iou(&LineBox::from_array([10, 0, 20, 10])),
            0.0,
            "touching is not overlapping"
        );
        let empty = LineBox::from_array([3, 3, 3, 3]);
        assert_eq!(empty.iou(&empty), 0.0);
        let inverted = LineBox::from_array([9, 9, 1, 1]);
        assert_eq!((inverted.width(), inverted.iou(&a)), (0, 0.0));
    }

    #[test]
    fn score_counts_by_hand() {
        let truth = [
            LineBox::from_array([0, 0, 100, 10]),
            LineBox::from_array([0, 20, 100, 30]),
            LineBox::from_array([0, 40, 100, 50]),
        ];
        // One detection covers 80% of the first line, the other is off the text.
        let detected = [
            LineBox::from_array([0, 0, 80, 10]),
            LineBox::from_array([0, 100, 100, 110]),
        ];
        let score = DetectionScore::of(&truth, &detected, 0.5);
        assert_eq!(
            (
                score.pages,
                score.truth_lines,
                score.detected_lines,
                score.matched
            ),
            (1, 3, 2, 1)
        );
        assert!((score.iou_sum - 0.8).abs() < 1e-12);
        assert!((score.recall() - 1.0 / 3.0).abs() < 1e-12);
        assert!((score.precision() - 0.5).abs() < 1e-12);
        assert!((score.mean_iou() - 0.8).abs() < 1e-12);
        assert!((score.f1() - 0.4).abs() < 1e-12);
        // Above the IoU asked for, the same pair does not count.
        assert_eq!(DetectionScore::of(&truth, &detected, 0.9).matched, 0);

        let mut total = score.clone();
        total.add(&DetectionScore::of(&truth, &truth, 0.5));
        assert_eq!(
            (
                total.pages,
                total.truth_lines,
                total.detected_lines,
                total.matched
            ),
            (2, 6, 5, 4)
        );
        assert!((total.mean_iou() - 3.8 / 4.0).abs() < 1e-12);

        let nothing = DetectionScore::of(&[], &[], 0.5);
        assert_eq!(
            (nothing.recall(), nothing.precision(), nothing.mean_iou()),
            (1.0, 1.0, 0.0)
        );
        let missed = DetectionScore::of(&truth, &[], 0.5);
        assert_eq!((missed.recall(), missed.f1()), (0.0, 0.0));
    }

    #[test]
    fn one_detection_matches_one_truth_at_most() {
        // A box spanning two lines overlaps both well enough; it may count for one of them only,
        // the better one.
        let truth = [
            LineBox::from_array([0, 0, 100, 10]),
            LineBox::from_array([0, 8, 100, 20]),
        ];
        let detected = [LineBox::from_array([0, 2, 100, 18])];
        let score = DetectionScore::of(&truth, &detected, 0.5);
        assert_eq!(score.matched, 1);
        assert!((score.iou_sum - truth[1].iou(&detected[0])).abs() < 1e-12);
        // Greedy by best IoU: the closer detection takes the line, the other is unmatched.
        let detected = [
            LineBox::from_array([0, 0, 70, 10]),
            LineBox::from_array([0, 0, 95, 10]),
        ];
        let score = DetectionScore::of(&truth[..1], &detected, 0.5);
        assert_eq!(score.matched, 1);
        assert!((score.iou_sum - 0.95).abs() < 1e-12);
    }
}
