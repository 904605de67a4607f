//! Handwriting fonts, outline (TrueType, OpenType, WOFF) and stroke (Hershey): loading,
//! vocabulary coverage, and the ink metric used to normalise sizes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontVec, GlyphId, Outline};

use super::DataError;
use super::hershey::{JhfError, StrokeFont};
use super::raster::{GlyphShape, Stroke};
use super::woff;

/// One font file, with what it can draw.
#[derive(Debug)]
pub struct HandFont {
    /// `GROUP/FILE_STEM`, unique and stable: the name splits and manifests use.
    pub name: String,
    /// The source (package) the file came from; splits hold out whole groups.
    pub group: String,
    face: Face,
    /// Height of a capital `H` in font units: fonts differ wildly in how much of the em their
    /// letters fill, so sizes are set by measured ink, not by point size.
    cap_height: f32,
    /// Vocabulary characters this font cannot draw (no glyph, or a capitals-only font that maps
    /// a lower-case letter onto its capital).
    pub missing: Vec<char>,
    /// Its lower case is small capitals: it writes text upper-cased.
    pub capitals_only: bool,
}

/// How a font draws: filled outlines, or a pen's path.
#[derive(Debug)]
enum Face {
    Outline(FontVec),
    Strokes(StrokeFont),
}

impl HandFont {
    pub fn cap_height(&self) -> f32 {
        self.cap_height
    }

    pub fn covers(&self, c: char) -> bool {
        c == ' ' || !self.missing.contains(&c)
    }

    pub fn covers_text(&self, text: &str) -> bool {
        text.chars().all(|c| self.covers(c))
    }

    /// Whether this font can write `text`, upper-cased if it is capitals-only ([`Self::spell`]).
    pub fn can_spell(&self, text: &str) -> bool {
        self.covers_text(text)
            || (self.capitals_only && text.chars().all(|c| self.covers(c.to_ascii_uppercase())))
    }

    /// `text` as this font writes it: unchanged when it has every character, upper-cased by a
    /// capitals-only font (the label says what the image shows), `None` when it cannot.
    pub fn spell<'t>(&self, text: &'t str) -> Option<Cow<'t, str>> {
        if self.covers_text(text) {
            return Some(Cow::Borrowed(text));
        }
        self.can_spell(text)
            .then(|| Cow::Owned(text.to_ascii_uppercase()))
    }

    /// What `c` draws, in font units (y up from the baseline); a stroke font's pen is `pen`
    /// cap heights wide. `None` when the font has nothing to draw for it (a space).
    pub fn shape(&self, c: char, pen: f32) -> Option<GlyphShape> {
        match &self.face {
            Face::Outline(font) => font.outline(font.glyph_id(c)).map(GlyphShape::Outline),
            Face::Strokes(font) => {
                let strokes = &font.glyph(c)?.strokes;
                let width = pen * self.cap_height;
                (!strokes.is_empty()).then(|| {
                    GlyphShape::Strokes(
                        strokes
                            .iter()
                            .map(|points| Stroke {
                                widths: vec![width; points.len()],
                                points: points.clone(),
                            })
                            .collect(),
                    )
                })
            }
        }
    }

    /// How far the pen moves on after `c`, in font units.
    pub fn advance(&self, c: char) -> f32 {
        match &self.face {
            Face::Outline(font) => font.h_advance_unscaled(font.glyph_id(c)),
            Face::Strokes(font) => font.glyph(c).map_or(0.0, |g| g.advance),
        }
    }

    /// The kerning between `a` and `b` (stroke fonts have none).
    pub fn kern(&self, a: char, b: char) -> f32 {
        match &self.face {
            Face::Outline(font) => font.kern_unscaled(font.glyph_id(a), font.glyph_id(b)),
            Face::Strokes(_) => 0.0,
        }
    }
}

/// Every `.ttf`/`.otf` under each `(group, directory)` (or, in a web-font package that has
/// none, every WOFF 1.0 `.woff`; in a Hershey package, every `.jhf` of the faces named), sorted
/// by name, with coverage of `characters` measured.
/// Returns the fonts and one warning per font that lacks characters. A file that draws under half
/// of `characters` is a script subset (a web font's `latin-ext` or `cyrillic` file) or a symbol
/// font: it is left out, with one warning for all such files.
/// Groups in `capitals_only` draw small capitals for lower-case letters: their lower case is
/// treated as missing (such fonts write upper-case text only: docs/decisions.md 8). A group in
/// `faces` keeps only the files with those stems: some packages mix handwriting with print faces.
pub fn load_fonts(
    dirs: &[(String, PathBuf)],
    characters: &[char],
    capitals_only: &[String],
    faces: &BTreeMap<String, Vec<String>>,
) -> Result<(Vec<HandFont>, Vec<String>), DataError> {
    let mut fonts = Vec::new();
    let mut warnings = Vec::new();
    let mut left_out = Vec::new();
    for (group, dir) in dirs {
        let mut files = font_files(dir)?;
        files.sort();
        if files.is_empty() {
            return Err(DataError::format(
                dir,
                format!(
                    "font source `{group}` has no .ttf, .otf, .woff or .jhf file (is it a font \
                     package? WOFF 2.0 is not read)"
                ),
            ));
        }
        match faces.get(group) {
            Some(kept) => files = keep_faces(group, dir, files, kept)?,
            // Hershey's files map ASCII onto Latin, Greek, Cyrillic and symbol alphabets alike,
            // and nothing in a file says which: drawing them all would mislabel letters.
            None if files.iter().any(|f| has_extension(f, "jhf")) => {
                return Err(DataError::format(
                    dir,
                    format!(
                        "font source `{group}` holds Hershey stroke fonts (.jhf), which draw \
                         Greek, Cyrillic and symbols at Latin letters' codes: name the faces to \
                         draw with under `faces` (e.g. `{group}: [cursive, scripts, futural]`)"
                    ),
                ));
            }
            None => {}
        }
        for file in files {
            let font = match read_font(&file)? {
                Ok(f) => f,
                Err(reason) => {
                    warnings.push(format!("skipped font {}: {reason}", file.display()));
                    continue;
                }
            };
            let stem = file_stem(&file);
            let mut missing = font.missing(characters);
            let name = format!("{group}/{stem}");
            if missing.len() * 2 > characters.len() {
                left_out.push(name);
                continue;
            }
            let small_capitals = font.writes_small_capitals();
            let named_capitals_only = capitals_only.contains(group);
            if small_capitals && !named_capitals_only {
                warnings.push(format!(
                    "font {name} writes small capitals for lower case (its ascenders barely top \
                     its `x`): it writes upper-cased text only"
                ));
            }
            let writes_capitals = small_capitals || named_capitals_only;
            if writes_capitals {
                missing.extend(characters.iter().filter(|c| c.is_ascii_lowercase()));
                missing.sort_unstable();
                missing.dedup();
            }
            let cap_height = font.cap_height();
            if !missing.is_empty() {
                let list: String = missing.iter().collect();
                warnings.push(format!(
                    "font {name} lacks {} of the vocabulary's characters ({list:?}); they are never drawn with it",
                    missing.len()
                ));
            }
            fonts.push(HandFont {
                name,
                group: group.clone(),
                face: font,
                cap_height,
                missing,
                capitals_only: writes_capitals,
            });
        }
    }
    if !left_out.is_empty() {
        // Every file by name: the dataset manifest keeps this warning, a record of what was read.
        warnings.push(format!(
            "left out {} font files that draw under half of the vocabulary (script subsets or \
             symbol fonts): {}",
            left_out.len(),
            left_out.join(", ")
        ));
    }
    Ok((fonts, warnings))
}

/// The font in `file`: a Hershey `.jhf` stroke font, or an outline font (unwrapped first when it
/// is WOFF); `Ok(Err(reason))` for a file that is not a font we can read (skipped with a
/// warning), `Err` when it cannot be read at all.
fn read_font(file: &Path) -> Result<Result<Face, UnreadableFont>, DataError> {
    let bytes = fs::read(file).map_err(DataError::io("read", file))?;
    if has_extension(file, "jhf") {
        let text = String::from_utf8_lossy(&bytes);
        return Ok(StrokeFont::parse(&text)
            .map(Face::Strokes)
            .map_err(UnreadableFont::Strokes));
    }
    let sfnt = if bytes.starts_with(woff::SIGNATURE) {
        match woff::to_sfnt(&bytes) {
            Ok(sfnt) => sfnt,
            Err(e) => return Ok(Err(UnreadableFont::Woff(e))),
        }
    } else {
        bytes
    };
    Ok(FontVec::try_from_vec(sfnt)
        .map(Face::Outline)
        .map_err(UnreadableFont::Sfnt))
}

/// Why a font file is skipped.
#[derive(Debug, thiserror::Error)]
enum UnreadableFont {
    #[error(transparent)]
    Woff(woff::WoffError),
    #[error(transparent)]
    Sfnt(ab_glyph::InvalidFont),
    #[error(transparent)]
    Strokes(JhfError),
}

impl Face {
    /// The `characters` this face cannot draw.
    fn missing(&self, characters: &[char]) -> Vec<char> {
        match self {
            Face::Outline(font) => missing_characters(font, characters),
            Face::Strokes(font) => characters
                .iter()
                .copied()
                .filter(|&c| c != ' ' && font.glyph(c).is_none_or(|g| g.strokes.is_empty()))
                .collect(),
        }
    }

    /// Hershey's Latin faces have a true lower case; outline fonts are measured.
    fn writes_small_capitals(&self) -> bool {
        match self {
            Face::Outline(font) => writes_small_capitals(font),
            Face::Strokes(_) => false,
        }
    }

    fn cap_height(&self) -> f32 {
        match self {
            Face::Outline(font) => font
                .outline(font.glyph_id('H'))
                .map(|o| top(&o) - bottom(&o).max(0.0))
                .filter(|h| *h > 0.0)
                .unwrap_or_else(|| font.ascent_unscaled() * 0.7),
            Face::Strokes(font) => font.cap_height(),
        }
    }
}

/// Highest point of a glyph in font units (y up). ab_glyph's bounds are a screen-style rect:
/// `min.y` holds the top, `max.y` the bottom.
fn top(outline: &Outline) -> f32 {
    outline.bounds.min.y
}

/// Lowest point of a glyph in font units (below 0 for descenders).
fn bottom(outline: &Outline) -> f32 {
    outline.bounds.max.y
}

/// Whether the lower case is capitals: letters with ascenders (`b d h k l`) reaching no higher
/// than 1.2 × the top of `x`. Drawing such a font under lower-case labels would teach that
/// capitals are lower case. Measured on Debian's fonts: small-capital and capitals-only faces
/// 0.93–1.14, ordinary and script faces 1.24 (Lobster) and up.
fn writes_small_capitals(font: &FontVec) -> bool {
    let top_of = |c: char| {
        font.outline(font.glyph_id(c))
            .map(|o| top(&o))
            .filter(|t| *t > 0.0)
    };
    let Some(x_top) = top_of('x') else {
        return false;
    };
    let mut ascenders: Vec<f32> = "bdhkl".chars().filter_map(top_of).collect();
    if ascenders.is_empty() {
        return false;
    }
    ascenders.sort_by(f32::total_cmp);
    ascenders[ascenders.len() / 2] < 1.2 * x_top
}

fn missing_characters(font: &FontVec, characters: &[char]) -> Vec<char> {
    characters
        .iter()
        .copied()
        .filter(|&c| c != ' ')
        .filter(|&c| {
            let id = font.glyph_id(c);
            let drawn = id.0 != 0 && font.outline(id).is_some();
            // Capitals-only fonts map `a` onto `A` (the same glyph, or a copy of its outline):
            // drawing it would teach a wrong label.
            let aliased = c.is_ascii_lowercase() && {
                let upper = font.glyph_id(c.to_ascii_uppercase());
                id == upper || same_outline(font, id, upper)
            };
            !drawn || aliased
        })
        .collect()
}

fn same_outline(font: &FontVec, a: GlyphId, b: GlyphId) -> bool {
    // `Outline` has no `PartialEq`; its `Debug` form lists every curve point.
    match (font.outline(a), font.outline(b)) {
        (Some(a), Some(b)) => format!("{:?}", a.curves) == format!("{:?}", b.curves),
        _ => false,
    }
}

fn file_stem(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The files among `files` whose stems `kept` names; a name no file has is an error listing the
/// faces there are.
fn keep_faces(
    group: &str,
    dir: &Path,
    files: Vec<PathBuf>,
    kept: &[String],
) -> Result<Vec<PathBuf>, DataError> {
    if let Some(absent) = kept
        .iter()
        .find(|face| !files.iter().any(|f| file_stem(f) == **face))
    {
        let there: Vec<String> = files.iter().map(|f| file_stem(f)).collect();
        return Err(DataError::format(
            dir,
            format!(
                "font source `{group}` has no face `{absent}` (its faces: {})",
                there.join(", ")
            ),
        ));
    }
    Ok(files
        .into_iter()
        .filter(|f| kept.contains(&file_stem(f)))
        .collect())
}

/// The `.ttf`/`.otf` files under `dir`; the `.woff` files when there are none (Debian packages
/// that ship both carry the same faces twice); the Hershey `.jhf` files when there are neither.
fn font_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for extensions in [&["ttf", "otf"][..], &["woff"], &["jhf"]] {
        collect_font_files(dir, extensions, &mut files)?;
        if !files.is_empty() {
            break;
        }
    }
    Ok(files)
}

fn has_extension(file: &Path, extension: &str) -> bool {
    file.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(extension))
}

fn collect_font_files(
    dir: &Path,
    extensions: &[&str],
    out: &mut Vec<PathBuf>,
) -> Result<(), DataError> {
    let entries = fs::read_dir(dir).map_err(DataError::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(DataError::io("list", dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(DataError::io("stat", &path))?;
        if file_type.is_dir() {
            collect_font_files(&path, extensions, out)?;
        } else if extensions.iter().any(|x| has_extension(&path, x)) {
            out.push(path);
        }
    }
    Ok(())
}
