//! Dataset diagnostics: counts, class histogram, size and label-length statistics, and a PNG
//! contact sheet of random samples per split with their labels ("look at your data").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontVec, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::DataError;
use super::manifest::{Dataset, Polarity, count_classes};
use super::shard::Sample;
use super::split::Split;

/// Minimum, mean and maximum of a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitReport {
    pub count: u64,
    pub fonts: Vec<String>,
    pub class_histogram: BTreeMap<String, u64>,
    pub width: Option<Stats>,
    pub label_length: Option<Stats>,
    /// Lines per page (pages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines_per_page: Option<Stats>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub dataset: PathBuf,
    pub kind: String,
    pub seed: u64,
    pub generator_version: u32,
    pub sources: BTreeMap<String, String>,
    pub splits: BTreeMap<String, SplitReport>,
    pub skipped: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_sheet: Option<PathBuf>,
}

struct Accumulator {
    min: f64,
    max: f64,
    sum: f64,
    n: u64,
}

impl Accumulator {
    fn new() -> Accumulator {
        Accumulator {
            min: f64::MAX,
            max: f64::MIN,
            sum: 0.0,
            n: 0,
        }
    }
    fn add(&mut self, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.n += 1;
    }
    fn stats(&self) -> Option<Stats> {
        (self.n > 0).then(|| Stats {
            min: self.min,
            mean: self.sum / self.n as f64,
            max: self.max,
        })
    }
}

/// Reads every sample once; keeps `per_split` random ones (reservoir sampling, seeded) for the
/// contact sheet.
pub fn inspect(
    dataset: &Dataset,
    per_split: usize,
    seed: u64,
) -> Result<(Report, BTreeMap<Split, Vec<Sample>>), DataError> {
    let mut splits = BTreeMap::new();
    let mut picked = BTreeMap::new();
    for split in Split::ALL {
        let Some(info) = dataset.split(split) else {
            continue;
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ split as u64);
        let (mut width, mut length, mut lines) =
            (Accumulator::new(), Accumulator::new(), Accumulator::new());
        let mut histogram: BTreeMap<String, u64> = BTreeMap::new();
        let mut reservoir: Vec<Sample> = Vec::new();
        let mut count = 0u64;
        for sample in dataset.samples(split) {
            let sample = sample?;
            count += 1;
            width.add(f64::from(sample.width));
            length.add(sample.label.chars().filter(|c| *c != '\n').count() as f64);
            if !sample.boxes.is_empty() {
                lines.add(sample.boxes.len() as f64);
            }
            count_classes(dataset.manifest.kind, &sample.label, &mut histogram);
            if reservoir.len() < per_split {
                reservoir.push(sample);
            } else {
                let j = rng.random_range(0..count) as usize;
                if j < per_split {
                    reservoir[j] = sample;
                }
            }
        }
        if count != info.count {
            return Err(DataError::format(
                &dataset.dir,
                format!(
                    "{} split: the manifest says {} samples, the shards hold {count}",
                    split.name(),
                    info.count
                ),
            ));
        }
        splits.insert(
            split.name().to_owned(),
            SplitReport {
                count,
                fonts: info.fonts.clone(),
                class_histogram: histogram,
                width: width.stats(),
                label_length: length.stats(),
                lines_per_page: lines.stats(),
            },
        );
        picked.insert(split, reservoir);
    }
    let m = &dataset.manifest;
    let report = Report {
        dataset: dataset.dir.clone(),
        kind: m.kind.name().to_owned(),
        seed: m.seed,
        generator_version: m.generator_version,
        sources: m.sources.clone(),
        splits,
        skipped: m.skipped.clone(),
        contact_sheet: None,
    };
    Ok((report, picked))
}

/// A font to print labels with: `explicit`, else a common system sans font.
pub fn label_font(explicit: Option<&Path>) -> Result<FontVec, DataError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_owned()],
        None => [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/Library/Fonts/Arial.ttf",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
    };
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            return FontVec::try_from_vec(bytes)
                .map_err(|e| DataError::format(path, format!("not a font: {e}")));
        }
    }
    Err(DataError::invalid(format!(
        "no font to print labels with (tried {}); pass one with --font",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

const TILE_WIDTH: u32 = 300;
const LABEL_PX: f32 = 13.0;
const MARGIN: u32 = 8;

/// Draws the samples of each split in a grid, each above its label (pages: line boxes in red),
/// and writes the PNG atomically.
pub fn contact_sheet(
    dataset: &Dataset,
    picked: &BTreeMap<Split, Vec<Sample>>,
    font: &FontVec,
    path: &Path,
) -> Result<(), DataError> {
    let columns = 4u32;
    // Lay out: a header row per split, then rows of up to `columns` samples.
    let mut rows: Vec<(Option<Split>, Vec<&Sample>)> = Vec::new();
    for (split, samples) in picked {
        rows.push((Some(*split), Vec::new()));
        rows.extend(
            samples
                .chunks(columns as usize)
                .map(|chunk| (None, chunk.iter().collect())),
        );
    }
    let scaled = |s: &Sample| {
        let k = (TILE_WIDTH as f32 / f32::from(s.width)).min(if s.boxes.is_empty() {
            4.0
        } else {
            1.0
        });
        (
            (f32::from(s.width) * k).round() as u32,
            (f32::from(s.height) * k).round() as u32,
        )
    };
    let label_lines = |s: &Sample| s.label.lines().count().clamp(1, 16) as u32;
    let line_px = LABEL_PX as u32 + 3;
    let row_height = |row: &(Option<Split>, Vec<&Sample>)| match row {
        (Some(_), _) => line_px + 2 * MARGIN,
        (None, samples) => samples
            .iter()
            .map(|s| scaled(s).1 + label_lines(s) * line_px + 2 * MARGIN)
            .max()
            .unwrap_or(0),
    };
    let width = columns * (TILE_WIDTH + 2 * MARGIN);
    let height: u32 = rows.iter().map(row_height).sum::<u32>().max(1);
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut y = 0;
    for row in &rows {
        match row {
            (Some(split), _) => {
                let info = dataset.split(*split).map(|i| i.count).unwrap_or(0);
                draw_text(
                    &mut sheet,
                    font,
                    MARGIN,
                    y + MARGIN,
                    &format!("{} — {info} samples", split.name()),
                    Rgb([0, 0, 160]),
                );
            }
            (None, samples) => {
                for (col, sample) in samples.iter().enumerate() {
                    let x0 = col as u32 * (TILE_WIDTH + 2 * MARGIN) + MARGIN;
                    let (w, h) = scaled(sample);
                    draw_sample(
                        &mut sheet,
                        sample,
                        dataset.manifest.polarity,
                        x0,
                        y + MARGIN,
                        w,
                        h,
                    );
                    for (i, line) in sample.label.lines().take(16).enumerate() {
                        draw_text(
                            &mut sheet,
                            font,
                            x0,
                            y + MARGIN + h + 2 + i as u32 * line_px,
                            line,
                            Rgb([0, 0, 0]),
                        );
                    }
                }
            }
        }
        y += row_height(row);
    }
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(sheet)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| DataError::format(path, format!("cannot encode PNG: {e}")))?;
    let tmp = path.with_extension("png.tmp");
    std::fs::write(&tmp, &png).map_err(DataError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(DataError::io("rename into", path))
}

/// Draws a sample scaled to `w`×`h`, as dark ink on light paper whatever its stored polarity.
fn draw_sample(
    sheet: &mut RgbImage,
    s: &Sample,
    polarity: Polarity,
    x0: u32,
    y0: u32,
    w: u32,
    h: u32,
) {
    let (sw, sh) = (u32::from(s.width), u32::from(s.height));
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = ((x * sw / w).min(sw - 1), (y * sh / h).min(sh - 1));
            let v = s.pixels[(sy * sw + sx) as usize];
            let v = if polarity == Polarity::InkWhite {
                255 - v
            } else {
                v
            };
            if x0 + x < sheet.width() && y0 + y < sheet.height() {
                sheet.put_pixel(x0 + x, y0 + y, Rgb([v, v, v]));
            }
        }
    }
    for b in &s.boxes {
        let map = |v: u16, full: u32, scaled: u32| u32::from(v) * scaled / full.max(1);
        let (bx0, by0) = (x0 + map(b[0], sw, w), y0 + map(b[1], sh, h));
        let (bx1, by1) = (x0 + map(b[2], sw, w), y0 + map(b[3], sh, h));
        for x in bx0..=bx1.min(sheet.width() - 1) {
            for y in [by0, by1] {
                if y < sheet.height() {
                    sheet.put_pixel(x, y, Rgb([220, 0, 0]));
                }
            }
        }
        for y in by0..=by1.min(sheet.height() - 1) {
            for x in [bx0, bx1] {
                if x < sheet.width() {
                    sheet.put_pixel(x, y, Rgb([220, 0, 0]));
                }
            }
        }
    }
}

fn draw_text(sheet: &mut RgbImage, font: &FontVec, x: u32, y: u32, text: &str, color: Rgb<u8>) {
    let scaled = font.as_scaled(PxScale::from(LABEL_PX));
    let mut pen = x as f32;
    let baseline = y as f32 + scaled.ascent();
    for c in text.chars() {
        let glyph = scaled.scaled_glyph(c);
        let advance = scaled.h_advance(glyph.id);
        let glyph = glyph
            .id
            .with_scale_and_position(PxScale::from(LABEL_PX), point(pen, baseline));
        if let Some(outlined) = font.outline_glyph(glyph) {
            let bounds = outlined.px_bounds();
            outlined.draw(|gx, gy, alpha| {
                let (px, py) = (
                    bounds.min.x as i64 + i64::from(gx),
                    bounds.min.y as i64 + i64::from(gy),
                );
                if px >= 0 && py >= 0 && (px as u32) < sheet.width() && (py as u32) < sheet.height()
                {
                    let old = sheet.get_pixel(px as u32, py as u32).0;
                    let mix =
                        |o: u8, n: u8| (f32::from(o) * (1.0 - alpha) + f32::from(n) * alpha) as u8;
                    sheet.put_pixel(
                        px as u32,
                        py as u32,
                        Rgb([
                            mix(old[0], color[0]),
                            mix(old[1], color[1]),
                            mix(old[2], color[2]),
                        ]),
                    );
                }
            });
        }
        pen += advance;
    }
}
