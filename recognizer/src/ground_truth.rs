//! Ground truth as HTR annotation tools export it, imported as a lines dataset: folders of line
//! images with `NAME.gt.txt` beside each (the OCR-D, kraken and Calamari convention), PAGE XML
//! (2013 and 2019 schemas) and ALTO (v2 to v4) with the page images they name. Lines on a page
//! are cut out exactly as transcription cuts detected lines ([`crate::infer::cut_lines`]), so a
//! model trained here reads what it will be shown. That is why the importer is a module of its
//! own above both [`crate::data`] (whose shard format it writes) and [`crate::infer`], not a
//! part of `data`, which inference reads its samples from.
//!
//! Nothing is written unless every file reads: a missing image, a box outside its image, an
//! empty transcription or an unknown XML namespace is an error naming the file (and the XML
//! line), as a half-imported dataset would train on silently missing pages.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::manifest::{DatasetKind, Manifest, Polarity, SplitInfo, count_classes};
use crate::data::shard::{Sample, ShardWriter};
use crate::data::split::{Fractions, Split};
use crate::data::{DataError, Observer};
use crate::infer::{LineBox, cut_lines, decode_page};
use crate::vocab::Vocabulary;
use image::GrayImage;

/// Bumped whenever the same inputs would give different samples.
pub const IMPORTER_VERSION: u32 = 1;

const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp"];

/// Which exports to read; `auto` takes every `.gt.txt` and every PAGE or ALTO file it finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroundTruthFormat {
    #[default]
    Auto,
    /// Line images with `NAME.gt.txt` beside each.
    Lines,
    Page,
    Alto,
    /// The IAM Handwriting Database's forms: `xml/ID.xml` (`handwritten-part/line@text`, boxes
    /// from its words' `cmp`) with `ID.png` or `ID.jpg` anywhere under the folder; a form's
    /// document is its writer, so splits share no writer.
    Iam,
}

/// What happens to a character outside the vocabulary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutOfVocabulary {
    /// Fold it to what the vocabulary has (é → e, œ → oe, ’ → '), and drop the lines that
    /// still have a character it lacks.
    #[default]
    Fold,
    /// Drop every line with a character outside the vocabulary.
    DropLine,
}

/// What is kept together in one split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitBy {
    /// A document: pages named `NAME-1.xml`, `NAME-2.xml`, … in one folder (a trailing `-N` or
    /// `_N` is a page number); for line images, their folder. One document is one hand in most
    /// collections, so the splits share no writer.
    #[default]
    Document,
    Page,
    Line,
}

/// Where the lines go: every line into one split (a test set kept apart by folder), or
/// fractions for val and test, drawn by a seeded hash of the [`SplitBy`] key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SplitRule {
    All(Split),
    Fractions(Fractions),
}

impl Default for SplitRule {
    fn default() -> Self {
        SplitRule::Fractions(Fractions::default())
    }
}

#[derive(Debug, Clone)]
pub struct GroundTruthConfig {
    pub format: GroundTruthFormat,
    /// Line height of the dataset (what the line model reads).
    pub height: u16,
    pub split: SplitRule,
    pub split_by: SplitBy,
    pub seed: u64,
    pub out_of_vocabulary: OutOfVocabulary,
    pub vocabulary: Vocabulary,
    /// Name under which the manifest records the sha256 of everything read.
    pub source_name: String,
    pub shard_bytes: u64,
    /// Largest page read, in pixels.
    pub max_pixels: u64,
    /// Pages (by file stem) that a split list puts in a split, from [`read_split_lists`]; the
    /// others follow `split`.
    pub listed: SplitLists,
    /// Also write the pages that have line geometry as a pages dataset, for the line detector
    /// and page evaluation.
    pub pages: Option<PagesOutput>,
    pub params: serde_json::Value,
}

/// Where and how pages are written beside the lines.
#[derive(Debug, Clone)]
pub struct PagesOutput {
    pub dir: PathBuf,
    /// Each page is the region its lines cover, this many source pixels wider on every side.
    pub margin: u32,
    /// Then resized by this factor (FSDL halves IAM's paragraphs).
    pub scale: f32,
}

/// Page IDs named by split lists: a listed ID is a page's file stem or one of its lines'
/// (`STEM-…`, as IAM's task lists name lines), so each ID also names the stems it extends.
#[derive(Debug, Clone, Default)]
pub struct SplitLists {
    /// `None` where lines of one page are listed in two splits.
    by_stem: BTreeMap<String, Option<Split>>,
    /// Each list file with the stems its IDs name, to catch a list that names no page.
    files: Vec<(PathBuf, usize, BTreeSet<String>)>,
}

impl SplitLists {
    /// The split a page is listed in; an error when its lines are listed in two.
    fn split_of(&self, page: &PageSource) -> Result<Option<Split>, DataError> {
        let stem = page.stem();
        match self.by_stem.get(stem) {
            None => Ok(None),
            Some(Some(split)) => Ok(Some(*split)),
            Some(None) => Err(DataError::format(
                &page.described_by,
                format!("the split lists put lines of page `{stem}` in two different splits"),
            )),
        }
    }

    /// Fails on a list whose IDs name none of `pages`: the wrong file, or IDs in another form,
    /// would otherwise leave its split silently empty.
    fn check_against(&self, pages: &[PageSource]) -> Result<(), DataError> {
        let stems: BTreeSet<&str> = pages.iter().map(PageSource::stem).collect();
        for (path, ids, named) in &self.files {
            if !named.is_empty() && !named.iter().any(|s| stems.contains(s.as_str())) {
                let example = stems.first().copied().unwrap_or("NAME");
                return Err(DataError::format(
                    path,
                    format!(
                        "its {} listed ID(s) name none of the {} pages here: an ID is a page's \
                         file name without extension (`{example}`) or one of its lines' \
                         (`{example}-00`)",
                        ids,
                        pages.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Reads split lists: files of IDs, one per line, each list naming the pages of one split.
pub fn read_split_lists(lists: &[(Split, PathBuf)]) -> Result<SplitLists, DataError> {
    let mut by_stem: BTreeMap<String, Option<Split>> = BTreeMap::new();
    let mut whole: BTreeMap<String, (Split, &Path)> = BTreeMap::new();
    let mut files = Vec::with_capacity(lists.len());
    for (split, path) in lists {
        let text = fs::read_to_string(path).map_err(DataError::io("read", path))?;
        let mut named = BTreeSet::new();
        let mut ids = 0;
        for id in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            ids += 1;
            if let Some((other, file)) = whole.insert(id.to_owned(), (*split, path))
                && other != *split
            {
                return Err(DataError::format(
                    path,
                    format!(
                        "`{id}` is listed for {} here and for {} in {}",
                        split.name(),
                        other.name(),
                        file.display()
                    ),
                ));
            }
            let stems = id
                .match_indices('-')
                .map(|(i, _)| &id[..i])
                .chain(std::iter::once(id));
            for stem in stems {
                named.insert(stem.to_owned());
                let entry = by_stem.entry(stem.to_owned()).or_insert(Some(*split));
                if *entry != Some(*split) {
                    *entry = None;
                }
            }
        }
        files.push((path.clone(), ids, named));
    }
    Ok(SplitLists { by_stem, files })
}

/// One transcribed line as the export gives it.
#[derive(Debug, Clone)]
struct Annotated {
    /// `None`: the whole image is the line.
    bbox: Option<[f64; 4]>,
    text: String,
    /// `file:row:column` of its element, or the `.gt.txt` file, the file relative to the folder
    /// imported: a split key and a note in the manifest, so it must not depend on where the
    /// folder lies.
    origin: String,
}

/// One image and its lines.
#[derive(Debug, Clone)]
struct PageSource {
    image: PathBuf,
    /// The XML or `.gt.txt` file that described it.
    described_by: PathBuf,
    /// Relative path of `described_by`, for split keys and the record.
    relative: String,
    document: String,
    lines: Vec<Annotated>,
    /// The page size the boxes are given in, where it may differ from the image's (FSDL's
    /// IAM forms are JPEGs at half the size of the scans the XML measures).
    declared_size: Option<(f64, f64)>,
}

impl PageSource {
    /// Its file's name without extension (`.gt.txt` counting as one): the ID split lists use.
    fn stem(&self) -> &str {
        let name = self.relative.rsplit('/').next().unwrap_or(&self.relative);
        name.strip_suffix(".gt.txt")
            .or_else(|| name.rsplit_once('.').map(|(stem, _)| stem))
            .unwrap_or(name)
    }
}

/// Imports the ground truth under `root` into the lines dataset `out` (shards + manifest).
pub fn import_ground_truth(
    root: &Path,
    config: &GroundTruthConfig,
    out: &Path,
    observer: &dyn Observer,
) -> Result<Manifest, DataError> {
    let mut files = Vec::new();
    list_files(root, root, &mut BTreeSet::new(), &mut files)?;
    // Images by file stem, for exports that keep pages apart from their XML (IAM's forms/).
    let mut images: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (path, _) in &files {
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if let (true, Some(stem)) = (is_image, path.file_stem().and_then(|s| s.to_str())) {
            images
                .entry(stem.to_owned())
                .or_insert_with(|| path.clone());
        }
    }
    let mut pages = Vec::new();
    for (path, relative) in &files {
        let name = relative.rsplit('/').next().unwrap_or(relative);
        let wants =
            |f: GroundTruthFormat| config.format == GroundTruthFormat::Auto || config.format == f;
        if let Some(stem) = name.strip_suffix(".gt.txt") {
            if wants(GroundTruthFormat::Lines) {
                pages.push(line_image(path, relative, stem)?);
            }
        } else if name.ends_with(".xml")
            && (wants(GroundTruthFormat::Page)
                || wants(GroundTruthFormat::Alto)
                || wants(GroundTruthFormat::Iam))
        {
            pages.push(xml_page(path, relative, config.format, &images)?);
        }
    }
    config.listed.check_against(&pages)?;
    let total: usize = pages.iter().map(|p| p.lines.len()).sum();
    if total == 0 {
        return Err(DataError::format(
            root,
            "no ground truth here: no `NAME.gt.txt` beside a line image, no PAGE or ALTO file \
             with a transcribed line",
        ));
    }
    observer.total(total as u64);
    fs::create_dir_all(out).map_err(DataError::io("create", out))?;

    let mut lines = SplitWriters::new(out, config.shard_bytes);
    if let Some(pages) = &config.pages {
        fs::create_dir_all(&pages.dir).map_err(DataError::io("create", &pages.dir))?;
    }
    let mut page_writers = config
        .pages
        .as_ref()
        .map(|p| SplitWriters::new(&p.dir, config.shard_bytes));
    let mut pages_left_out = 0u64;
    let mut dropped = DroppedLines::default();
    let mut provenance = Vec::with_capacity(pages.len());
    // Pages a few dozen at a time: decoding in parallel, memory bounded by the chunk.
    for chunk in pages.chunks(32) {
        let cut: Vec<Result<CutPage, DataError>> = chunk
            .par_iter()
            .map(|page| cut_page(page, config))
            .collect();
        for (page, result) in chunk.iter().zip(cut) {
            let CutPage {
                samples,
                page: region,
                image_sha256,
                described_sha256,
            } = result?;
            // Paths below the folder imported, so the hash does not depend on where it lies.
            let image = page.image.strip_prefix(root).unwrap_or(&page.image);
            provenance.push(format!(
                "{} {described_sha256}\n{} {image_sha256}\n",
                page.relative,
                image.display()
            ));
            let listed = config.listed.split_of(page)?;
            let mut kept = Vec::with_capacity(page.lines.len());
            for (line, mut sample) in page.lines.iter().zip(samples) {
                observer.advance(1);
                let Some(text) = fit_to_vocabulary(&line.text, config, &mut dropped, line) else {
                    continue;
                };
                let split = listed.unwrap_or_else(|| split_of(config, page, Some(line)));
                sample.label = text;
                sample.style = truncate(&page.document, u8::MAX as usize);
                lines.push(split, DatasetKind::Lines, &sample)?;
                kept.push(sample.label);
            }
            if let (Some(writers), Some(mut region)) = (page_writers.as_mut(), region) {
                // A page's label must hold every line its boxes show.
                if kept.len() < page.lines.len() {
                    pages_left_out += 1;
                    continue;
                }
                region.label = kept.join("\n");
                region.style = truncate(&page.document, u8::MAX as usize);
                let split = listed.unwrap_or_else(|| split_of(config, page, None));
                writers.push(split, DatasetKind::Pages, &region)?;
            }
        }
    }

    let splits = lines.finish()?;
    let kept: u64 = splits.values().map(|s| s.count).sum();
    if kept == 0 {
        return Err(DataError::invalid(format!(
            "every one of the {total} lines under {} was dropped: {}",
            root.display(),
            dropped.summary()
        )));
    }
    let mut skipped = Vec::new();
    if dropped.lines > 0 {
        let note = dropped.summary();
        observer.warn(&note);
        skipped.push(note);
    }
    let mut hasher = Sha256::new();
    for entry in &provenance {
        hasher.update(entry.as_bytes());
    }
    let manifest = Manifest {
        kind: DatasetKind::Lines,
        vocabulary: config.vocabulary.tokens().to_vec(),
        seed: config.seed,
        generator_version: IMPORTER_VERSION,
        polarity: Polarity::InkWhite,
        height: Some(config.height),
        width: None,
        sources: BTreeMap::from([(
            config.source_name.clone(),
            format!("{:x}", hasher.finalize()),
        )]),
        splits,
        params: config.params.clone(),
        skipped,
    };
    if let (Some(output), Some(writers)) = (&config.pages, page_writers) {
        let mut skipped = Vec::new();
        if pages_left_out > 0 {
            let note = format!(
                "{pages_left_out} pages left out of the pages dataset: a line of each was dropped"
            );
            observer.warn(&note);
            skipped.push(note);
        }
        Manifest {
            kind: DatasetKind::Pages,
            polarity: Polarity::InkBlack,
            height: None,
            splits: writers.finish()?,
            skipped,
            ..manifest.clone()
        }
        .write(&output.dir)?;
    }
    manifest.write(out)?;
    Ok(manifest)
}

/// A dataset's shard writers, one per split, and what each split holds.
struct SplitWriters {
    writers: BTreeMap<Split, ShardWriter>,
    infos: BTreeMap<Split, (SplitInfo, BTreeSet<String>)>,
}

impl SplitWriters {
    fn new(dir: &Path, shard_bytes: u64) -> SplitWriters {
        SplitWriters {
            writers: Split::ALL
                .into_iter()
                .map(|s| (s, ShardWriter::new(dir, s, shard_bytes)))
                .collect(),
            infos: BTreeMap::new(),
        }
    }

    fn push(&mut self, split: Split, kind: DatasetKind, sample: &Sample) -> Result<(), DataError> {
        let (info, styles) = self.infos.entry(split).or_default();
        count_classes(kind, &sample.label, &mut info.class_counts);
        info.count += 1;
        styles.insert(sample.style.clone());
        self.writers
            .get_mut(&split)
            .expect("a writer per split")
            .push(sample)
    }

    fn finish(mut self) -> Result<BTreeMap<Split, SplitInfo>, DataError> {
        let mut splits = BTreeMap::new();
        for (split, writer) in self.writers {
            let shards = writer.finish()?;
            let (mut info, styles) = self.infos.remove(&split).unwrap_or_default();
            info.shards = shards;
            info.fonts = styles.into_iter().collect();
            splits.insert(split, info);
        }
        Ok(splits)
    }
}

/// Every regular file under `dir` (links followed), sorted by relative path, hidden ones left
/// out. A directory met again through a link (a loop, or two links to one place) is read once.
fn list_files(
    root: &Path,
    dir: &Path,
    visited: &mut BTreeSet<(u64, u64)>,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<(), DataError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).map_err(DataError::io("read", dir))?;
    if !visited.insert((meta.dev(), meta.ino())) {
        return Ok(());
    }
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(DataError::io("list", dir))?
        .collect::<Result<_, _>>()
        .map_err(DataError::io("list", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let meta = fs::metadata(&path).map_err(DataError::io("read", &path))?;
        if meta.is_dir() {
            list_files(root, &path, visited, out)?;
        } else if meta.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push((path, relative));
        }
    }
    Ok(())
}

/// `NAME.gt.txt` and the line image beside it (`NAME.png`, OCR-D's `NAME.bin.png`, …).
fn line_image(gt: &Path, relative: &str, stem: &str) -> Result<PageSource, DataError> {
    let dir = gt.parent().unwrap_or(Path::new("."));
    let candidates: Vec<String> = ["", ".bin", ".nrm"]
        .iter()
        .flat_map(|infix| IMAGE_EXTENSIONS.map(|ext| format!("{stem}{infix}.{ext}")))
        .collect();
    let image = candidates
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            DataError::format(
                gt,
                format!(
                    "no line image beside it (looked for {stem}.png, {stem}.bin.png, {stem}.jpg, \
                     {stem}.tif and the like)"
                ),
            )
        })?;
    let text = fs::read_to_string(gt).map_err(DataError::io("read", gt))?;
    // The transcription is the first line; a trailing newline is the file's, not the text's.
    let text = text.lines().next().unwrap_or("").to_owned();
    let folder = relative.rsplit_once('/').map_or(".", |(d, _)| d).to_owned();
    Ok(PageSource {
        image,
        described_by: gt.to_owned(),
        relative: relative.to_owned(),
        document: folder,
        lines: vec![Annotated {
            bbox: None,
            text,
            origin: relative.to_owned(),
        }],
        declared_size: None,
    })
}

const ALTO_NAMESPACES: [&str; 3] = [
    "http://www.loc.gov/standards/alto/ns-v2#",
    "http://www.loc.gov/standards/alto/ns-v3#",
    "http://www.loc.gov/standards/alto/ns-v4#",
];
const PAGE_NAMESPACES: [&str; 2] = [
    "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15",
    "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15",
];

/// An XML file's text: UTF-8, or ISO-8859-1 where its declaration says so (IAM's forms do).
fn xml_text(path: &Path) -> Result<String, DataError> {
    let bytes = fs::read(path).map_err(DataError::io("read", path))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let bytes = e.into_bytes();
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_ascii_lowercase();
            if head.contains("encoding=\"iso-8859-1\"") || head.contains("encoding='iso-8859-1'") {
                Ok(bytes.iter().map(|&b| char::from(b)).collect())
            } else {
                Err(DataError::format(
                    path,
                    "not UTF-8, and its XML declaration names no ISO-8859-1 encoding",
                ))
            }
        }
    }
}

/// A PAGE, ALTO or IAM file: the image it names and its transcribed lines.
fn xml_page(
    path: &Path,
    relative: &str,
    format: GroundTruthFormat,
    images: &BTreeMap<String, PathBuf>,
) -> Result<PageSource, DataError> {
    let text = xml_text(path)?;
    let doc = roxmltree::Document::parse(&text)
        .map_err(|e| DataError::format(path, format!("not well-formed XML: {e}")))?;
    let root = doc.root_element();
    let namespace = root.tag_name().namespace().unwrap_or("");
    let at = |node: roxmltree::Node| {
        let pos = doc.text_pos_at(node.range().start);
        format!("{relative}:{}:{}", pos.row, pos.col)
    };
    let (image_name, lines) = match (root.tag_name().name(), namespace) {
        ("alto", ns) if ALTO_NAMESPACES.contains(&ns) && format != GroundTruthFormat::Page => {
            alto_lines(&doc, path, &at)?
        }
        ("PcGts", ns) if PAGE_NAMESPACES.contains(&ns) && format != GroundTruthFormat::Alto => {
            page_lines(&doc, path, &at)?
        }
        ("form", "") if matches!(format, GroundTruthFormat::Auto | GroundTruthFormat::Iam) => {
            return iam_form(&doc, path, relative, images, &at);
        }
        (name, ns) => {
            return Err(DataError::format(
                path,
                format!(
                    "root element `{name}` in namespace `{ns}` is not {}: known are PAGE \
                     (2013-07-15, 2019-07-15), ALTO (ns-v2#, ns-v3#, ns-v4#) and IAM (`form`)",
                    match format {
                        GroundTruthFormat::Page => "PAGE XML",
                        GroundTruthFormat::Alto => "ALTO",
                        _ => "PAGE XML or ALTO",
                    }
                ),
            ));
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = relative
        .rsplit('/')
        .next()
        .unwrap_or(relative)
        .trim_end_matches(".xml");
    let image = find_image(dir, image_name.as_deref(), stem).ok_or_else(|| {
        DataError::format(
            path,
            match &image_name {
                Some(name) => format!("its image `{name}` is not in {}", dir.display()),
                None => {
                    format!("it names no image and none is beside it ({stem}.png, {stem}.jpg, …)")
                }
            },
        )
    })?;
    let folder = relative.rsplit_once('/').map_or("", |(d, _)| d);
    let document = match folder {
        "" => document_of(stem).to_owned(),
        folder => format!("{folder}/{}", document_of(stem)),
    };
    Ok(PageSource {
        image,
        described_by: path.to_owned(),
        relative: relative.to_owned(),
        document,
        lines,
        declared_size: None,
    })
}

/// An IAM form: each `handwritten-part/line`, boxed by the union of its words' `cmp` boxes (as
/// FSDL crops IAM lines), its text from `@text`; the image is `ID.png` or `ID.jpg` anywhere
/// under the folder, and the document is the writer. The boxes measure the scan, whose size
/// the form's `width` and `height` give: an image of another size (FSDL's half-size JPEGs) is
/// measured in proportion.
fn iam_form(
    doc: &roxmltree::Document,
    path: &Path,
    relative: &str,
    images: &BTreeMap<String, PathBuf>,
    at: &Position,
) -> Result<PageSource, DataError> {
    let form = doc.root_element();
    let id = form
        .attribute("id")
        .ok_or_else(|| DataError::format(path, format!("form at {} has no id", at(form))))?;
    let writer = form
        .attribute("writer-id")
        .ok_or_else(|| DataError::format(path, format!("form at {} has no writer-id", at(form))))?;
    let image = images.get(id).cloned().ok_or_else(|| {
        DataError::format(
            path,
            format!("the image of form {id} ({id}.png, {id}.jpg) is nowhere in the folder"),
        )
    })?;
    // The scan's size, which the boxes measure (absent: the image is the scan).
    let size = |attr: &str| {
        form.attribute(attr)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let declared_size = size("width").zip(size("height"));
    let named = |node: &roxmltree::Node, name: &str| node.tag_name().name() == name;
    let mut lines = Vec::new();
    let part = form.children().find(|n| named(n, "handwritten-part"));
    for line in part
        .iter()
        .flat_map(|p| p.children().filter(|n| named(n, "line")))
    {
        let mut bbox = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for cmp in line.descendants().filter(|n| named(n, "cmp")) {
            let number = |attr: &str| -> Result<f64, DataError> {
                cmp.attribute(attr)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        DataError::format(path, format!("cmp at {} has no numeric {attr}", at(cmp)))
                    })
            };
            let (x, y, w, h) = (
                number("x")?,
                number("y")?,
                number("width")?,
                number("height")?,
            );
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x + w),
                bbox[3].max(y + h),
            ];
        }
        if !bbox[0].is_finite() {
            return Err(DataError::format(
                path,
                format!("line at {} has no word boxes (cmp)", at(line)),
            ));
        }
        lines.push(Annotated {
            bbox: Some(bbox),
            text: line.attribute("text").unwrap_or("").to_owned(),
            origin: at(line),
        });
    }
    Ok(PageSource {
        image,
        described_by: path.to_owned(),
        relative: relative.to_owned(),
        document: format!("writer {writer}"),
        lines,
        declared_size,
    })
}

/// The document a page belongs to: its name less a trailing page number (`will_0005-1` →
/// `will_0005`).
fn document_of(stem: &str) -> &str {
    match stem.rfind(['-', '_']) {
        Some(i)
            if i > 0 && stem[i + 1..].chars().all(|c| c.is_ascii_digit()) && i + 1 < stem.len() =>
        {
            &stem[..i]
        }
        _ => stem,
    }
}

/// The image a page file names (its file name, in the file's folder), or one named like it.
fn find_image(dir: &Path, named: Option<&str>, stem: &str) -> Option<PathBuf> {
    if let Some(named) = named {
        // Exports name images by path or URL; the file sits beside the XML.
        let file = named.rsplit(['/', '\\']).next().unwrap_or(named);
        let path = dir.join(file);
        return path.is_file().then_some(path);
    }
    IMAGE_EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
}

type Position<'a> = dyn Fn(roxmltree::Node) -> String + 'a;

/// ALTO: `TextLine@HPOS/VPOS/WIDTH/HEIGHT` in pixels, text from its `String@CONTENT`, `SP`
/// and `HYP` children in order (adjacent strings without an `SP` are words all the same).
fn alto_lines(
    doc: &roxmltree::Document,
    path: &Path,
    at: &Position,
) -> Result<(Option<String>, Vec<Annotated>), DataError> {
    let named = |node: &roxmltree::Node, name: &str| node.tag_name().name() == name;
    let find = |name: &str| doc.descendants().find(|n| named(n, name));
    if let Some(unit) = find("MeasurementUnit") {
        let unit = unit.text().unwrap_or("").trim();
        if unit != "pixel" {
            return Err(DataError::format(
                path,
                format!(
                    "MeasurementUnit `{unit}` at {}: only pixel coordinates are read; export \
                     the ALTO in pixels",
                    at(find("MeasurementUnit").expect("found above"))
                ),
            ));
        }
    }
    let image = find("fileName")
        .and_then(|n| n.text())
        .map(|t| t.trim().to_owned());
    let mut lines = Vec::new();
    for line in doc.descendants().filter(|n| named(n, "TextLine")) {
        let number = |attr: &str| -> Result<f64, DataError> {
            let value = line.attribute(attr).ok_or_else(|| {
                DataError::format(path, format!("TextLine at {} has no {attr}", at(line)))
            })?;
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    DataError::format(
                        path,
                        format!(
                            "TextLine at {}: {attr}=\"{value}\" is not a number",
                            at(line)
                        ),
                    )
                })
        };
        let (x, y, w, h) = (
            number("HPOS")?,
            number("VPOS")?,
            number("WIDTH")?,
            number("HEIGHT")?,
        );
        let mut text = String::new();
        let mut after_word = false;
        for child in line.children().filter(|n| n.is_element()) {
            match child.tag_name().name() {
                "String" | "HYP" => {
                    if after_word && named(&child, "String") {
                        text.push(' ');
                    }
                    text.push_str(child.attribute("CONTENT").unwrap_or(""));
                    after_word = named(&child, "String");
                }
                "SP" => {
                    text.push(' ');
                    after_word = false;
                }
                _ => {}
            }
        }
        lines.push(Annotated {
            bbox: Some([x, y, x + w, y + h]),
            text,
            origin: at(line),
        });
    }
    Ok((image, lines))
}

/// PAGE: `TextLine/Coords@points` (`x,y x,y …`), text from the line's own
/// `TextEquiv/Unicode` (the one with `index="1"`, else the first).
fn page_lines(
    doc: &roxmltree::Document,
    path: &Path,
    at: &Position,
) -> Result<(Option<String>, Vec<Annotated>), DataError> {
    let named = |node: &roxmltree::Node, name: &str| node.tag_name().name() == name;
    let page = doc
        .descendants()
        .find(|n| named(n, "Page"))
        .ok_or_else(|| DataError::format(path, "no Page element"))?;
    let image = page
        .attribute("imageFilename")
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| {
            DataError::format(path, format!("Page at {} has no imageFilename", at(page)))
        })?;
    let mut lines = Vec::new();
    for line in page.descendants().filter(|n| named(n, "TextLine")) {
        let coords = line
            .children()
            .find(|n| named(n, "Coords"))
            .and_then(|c| c.attribute("points"))
            .ok_or_else(|| {
                DataError::format(
                    path,
                    format!("TextLine at {} has no Coords points", at(line)),
                )
            })?;
        let mut bbox = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for point in coords.split_whitespace() {
            let parsed = point
                .split_once(',')
                .and_then(|(x, y)| Some((x.parse::<f64>().ok()?, y.parse::<f64>().ok()?)))
                .filter(|(x, y)| x.is_finite() && y.is_finite());
            let (x, y) = parsed.ok_or_else(|| {
                DataError::format(
                    path,
                    format!("TextLine at {}: `{point}` in Coords is not x,y", at(line)),
                )
            })?;
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x),
                bbox[3].max(y),
            ];
        }
        if !bbox[0].is_finite() {
            return Err(DataError::format(
                path,
                format!("TextLine at {} has empty Coords", at(line)),
            ));
        }
        let equivs: Vec<_> = line.children().filter(|n| named(n, "TextEquiv")).collect();
        let equiv = equivs
            .iter()
            .find(|e| e.attribute("index") == Some("1"))
            .or(equivs.first());
        let text = equiv
            .and_then(|e| e.children().find(|n| named(n, "Unicode")))
            .and_then(|u| u.text())
            .unwrap_or("")
            .to_owned();
        lines.push(Annotated {
            bbox: Some(bbox),
            text,
            origin: at(line),
        });
    }
    Ok((Some(image), lines))
}

struct CutPage {
    samples: Vec<Sample>,
    /// The region the lines cover, with its line boxes and no label yet, when pages are asked
    /// for and the page has line geometry.
    page: Option<Sample>,
    image_sha256: String,
    described_sha256: String,
}

/// Reads the page's image, checks every line against it, and cuts the lines out.
fn cut_page(page: &PageSource, config: &GroundTruthConfig) -> Result<CutPage, DataError> {
    for line in &page.lines {
        if line.text.trim().is_empty() {
            return Err(DataError::format(
                &page.described_by,
                format!("empty transcription at {}", line.origin),
            ));
        }
    }
    let bytes = fs::read(&page.image).map_err(DataError::io("read", &page.image))?;
    let described =
        fs::read(&page.described_by).map_err(DataError::io("read", &page.described_by))?;
    let image = decode_page(&bytes, config.max_pixels)
        .map_err(|e| DataError::format(&page.image, e.to_string()))?;
    let (width, height) = (f64::from(image.width()), f64::from(image.height()));
    let (scale_x, scale_y) = page
        .declared_size
        .map_or((1.0, 1.0), |(w, h)| (width / w, height / h));
    let mut boxes = Vec::with_capacity(page.lines.len());
    for line in &page.lines {
        let [x0, y0, x1, y1] = line
            .bbox
            .map_or([0.0, 0.0, width, height], |[x0, y0, x1, y1]| {
                [x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y]
            });
        // Exports round outward by a pixel now and then; a box further out is a wrong image or
        // wrong coordinates.
        let slack = 2.0;
        if x0 < -slack
            || y0 < -slack
            || x1 > width + slack
            || y1 > height + slack
            || x1 <= x0
            || y1 <= y0
        {
            return Err(DataError::format(
                &page.described_by,
                format!(
                    "the line at {} spans ({x0}, {y0})–({x1}, {y1}), outside its {}×{} image {}",
                    line.origin,
                    image.width(),
                    image.height(),
                    page.image.display()
                ),
            ));
        }
        let clamp = |v: f64, max: f64| v.clamp(0.0, max) as u32;
        boxes.push(LineBox {
            x0: clamp(x0.floor(), width),
            y0: clamp(y0.floor(), height),
            x1: clamp(x1.ceil(), width),
            y1: clamp(y1.ceil(), height),
        });
    }
    // A page without lines shows a detector nothing to find, and has no region to cut.
    let has_geometry = !page.lines.is_empty() && page.lines.iter().all(|l| l.bbox.is_some());
    let region = match &config.pages {
        Some(pages) if has_geometry => Some(page_region(&image, &boxes, pages)),
        _ => None,
    };
    Ok(CutPage {
        samples: cut_lines(&image, &boxes, usize::from(config.height)),
        page: region,
        image_sha256: format!("{:x}", Sha256::digest(&bytes)),
        described_sha256: format!("{:x}", Sha256::digest(&described)),
    })
}

/// The part of `image` that `boxes` cover, `margin` wider on each side, resized by `scale`,
/// with the boxes in its frame: dark ink on light paper, as scans and synthetic pages are.
fn page_region(image: &GrayImage, boxes: &[LineBox], pages: &PagesOutput) -> Sample {
    let margin = pages.margin;
    let x0 = boxes
        .iter()
        .map(|b| b.x0)
        .min()
        .unwrap_or(0)
        .saturating_sub(margin);
    let y0 = boxes
        .iter()
        .map(|b| b.y0)
        .min()
        .unwrap_or(0)
        .saturating_sub(margin);
    let x1 = (boxes.iter().map(|b| b.x1).max().unwrap_or(0) + margin).min(image.width());
    let y1 = (boxes.iter().map(|b| b.y1).max().unwrap_or(0) + margin).min(image.height());
    let crop = image::imageops::crop_imm(image, x0, y0, x1 - x0, y1 - y0).to_image();
    let to_page = |v: u32, origin: u32, max: u32| {
        ((f64::from(v - origin) * f64::from(pages.scale)).round() as u32).min(max) as u16
    };
    let (width, height) = (
        ((f64::from(crop.width()) * f64::from(pages.scale)).round() as u32)
            .clamp(1, u32::from(u16::MAX)),
        ((f64::from(crop.height()) * f64::from(pages.scale)).round() as u32)
            .clamp(1, u32::from(u16::MAX)),
    );
    let resized = if (width, height) == crop.dimensions() {
        crop
    } else {
        image::imageops::resize(&crop, width, height, image::imageops::FilterType::Triangle)
    };
    Sample {
        label: String::new(),
        style: String::new(),
        width: width as u16,
        height: height as u16,
        boxes: boxes
            .iter()
            .map(|b| {
                [
                    to_page(b.x0, x0, width),
                    to_page(b.y0, y0, height),
                    to_page(b.x1, x0, width),
                    to_page(b.y1, y0, height),
                ]
            })
            .collect(),
        pixels: resized.into_raw(),
    }
}

/// Lines left out for characters the vocabulary lacks.
#[derive(Debug, Default)]
struct DroppedLines {
    lines: u64,
    characters: BTreeMap<char, u64>,
    examples: Vec<String>,
}

impl DroppedLines {
    fn summary(&self) -> String {
        let characters: Vec<String> = self
            .characters
            .iter()
            .map(|(c, n)| format!("{c:?} ×{n}"))
            .collect();
        format!(
            "{} lines dropped for characters outside the vocabulary ({}); e.g. {}",
            self.lines,
            characters.join(", "),
            self.examples.join("; ")
        )
    }
}

/// The line's text as the vocabulary can hold it (whitespace runs made one space, folded if
/// asked), or `None` when it cannot, counted in `dropped`.
fn fit_to_vocabulary(
    text: &str,
    config: &GroundTruthConfig,
    dropped: &mut DroppedLines,
    line: &Annotated,
) -> Option<String> {
    let spaced = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = match config.out_of_vocabulary {
        OutOfVocabulary::Fold => fold(&spaced),
        OutOfVocabulary::DropLine => spaced,
    };
    let missing: Vec<char> = text
        .chars()
        .filter(|&c| config.vocabulary.index_of(c).is_none())
        .collect();
    if missing.is_empty() {
        return Some(text);
    }
    dropped.lines += 1;
    for c in missing {
        *dropped.characters.entry(c).or_default() += 1;
    }
    if dropped.examples.len() < 3 {
        dropped
            .examples
            .push(format!("{:?} at {}", text, line.origin));
    }
    None
}

/// Folds the letters and marks a Latin-script text commonly has onto plain ASCII: accents
/// dropped (é → e), ligatures spelled out (œ → oe, ß → ss), typographic quotes and dashes made
/// plain (’ → ', « → ", – → -).
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let folded: &str = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
            'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā' | 'Ă' | 'Ą' => "A",
            'ç' | 'ć' | 'č' => "c",
            'Ç' | 'Ć' | 'Č' => "C",
            'ď' => "d",
            'Ď' => "D",
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
            'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ė' | 'Ę' | 'Ě' => "E",
            'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' => "i",
            'Ì' | 'Í' | 'Î' | 'Ï' | 'Ī' | 'Į' => "I",
            'ł' => "l",
            'Ł' => "L",
            'ñ' | 'ń' | 'ň' => "n",
            'Ñ' | 'Ń' | 'Ň' => "N",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
            'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'Ō' | 'Ő' => "O",
            'ř' => "r",
            'Ř' => "R",
            'ś' | 'š' | 'ş' => "s",
            'Ś' | 'Š' | 'Ş' => "S",
            'ť' | 'ţ' => "t",
            'Ť' | 'Ţ' => "T",
            'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
            'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ū' | 'Ů' | 'Ű' | 'Ų' => "U",
            'ý' | 'ÿ' => "y",
            'Ý' | 'Ÿ' => "Y",
            'ź' | 'ż' | 'ž' => "z",
            'Ź' | 'Ż' | 'Ž' => "Z",
            'œ' => "oe",
            'Œ' => "OE",
            'æ' => "ae",
            'Æ' => "AE",
            'ß' => "ss",
            '’' | '‘' | '‚' | '′' | '`' | '´' => "'",
            '“' | '”' | '„' | '«' | '»' | '″' => "\"",
            '–' | '—' | '‐' | '‑' | '−' => "-",
            '…' => "...",
            '\u{a0}' | '\u{202f}' => " ",
            other => {
                out.push(other);
                continue;
            }
        };
        out.push_str(folded);
    }
    out
}

/// The split of a line (`Some`) or of a whole page (`None`, by its document or its file) by
/// the `split` rule.
fn split_of(config: &GroundTruthConfig, page: &PageSource, line: Option<&Annotated>) -> Split {
    match config.split {
        SplitRule::All(split) => split,
        SplitRule::Fractions(fractions) => {
            let key = match (config.split_by, line) {
                (SplitBy::Document, _) => &page.document,
                (SplitBy::Line, Some(line)) => &line.origin,
                (SplitBy::Page | SplitBy::Line, _) => &page.relative,
            };
            fractions.split_of(config.seed, key.as_bytes())
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, Unobserved};
    use image::{GrayImage, Luma};

    /// A light page with a dark bar of strokes inside each box.
    fn page_png(path: &Path, width: u32, height: u32, boxes: &[[u32; 4]]) {
        let page = GrayImage::from_fn(width, height, |x, y| {
            let inked = boxes.iter().any(|b| {
                (b[0]..b[2]).contains(&x) && (b[1] + 4..b[3] - 4).contains(&y) && x % 6 < 3
            });
            Luma([if inked { 20 } else { 230 }])
        });
        page.save(path).unwrap();
    }

    fn alto(image: &str, lines: &[([u32; 4], &str)]) -> String {
        let mut xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#">
  <Description><MeasurementUnit>pixel</MeasurementUnit>
    <sourceImageInformation><fileName>{image}</fileName></sourceImageInformation>
  </Description>
  <Layout><Page WIDTH="400" HEIGHT="200" PHYSICAL_IMG_NR="1" ID="p"><PrintSpace>
    <TextBlock ID="b">
"#
        );
        for (i, ([x0, y0, x1, y1], text)) in lines.iter().enumerate() {
            let words: Vec<String> = text
                .split(' ')
                .map(|w| format!(r#"<String CONTENT="{w}"/>"#))
                .collect();
            xml.push_str(&format!(
                "      <TextLine ID=\"l{i}\" HPOS=\"{x0}\" VPOS=\"{y0}\" WIDTH=\"{}\" HEIGHT=\"{}\">{}</TextLine>\n",
                x1 - x0,
                y1 - y0,
                words.join("<SP/>")
            ));
        }
        xml.push_str("    </TextBlock>\n  </PrintSpace></Page></Layout>\n</alto>\n");
        xml
    }

    fn page_xml(image: &str, lines: &[([u32; 4], &str)]) -> String {
        let mut xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
  <Metadata><Creator>test</Creator></Metadata>
  <Page imageFilename="{image}" imageWidth="400" imageHeight="200">
    <TextRegion id="r"><Coords points="0,0 400,0 400,200 0,200"/>
"#
        );
        for (i, ([x0, y0, x1, y1], text)) in lines.iter().enumerate() {
            xml.push_str(&format!(
                "      <TextLine id=\"l{i}\"><Coords points=\"{x0},{y0} {x1},{y0} {x1},{y1} {x0},{y1}\"/>\
                 <TextEquiv><Unicode>{text}</Unicode></TextEquiv></TextLine>\n"
            ));
        }
        xml.push_str("    </TextRegion>\n  </Page>\n</PcGts>\n");
        xml
    }

    fn config() -> GroundTruthConfig {
        GroundTruthConfig {
            format: GroundTruthFormat::Auto,
            height: 32,
            split: SplitRule::Fractions(Fractions {
                val: 0.0,
                test: 0.0,
            }),
            split_by: SplitBy::Document,
            seed: 1,
            out_of_vocabulary: OutOfVocabulary::Fold,
            vocabulary: Vocabulary::default(),
            source_name: "gt".into(),
            shard_bytes: 1 << 20,
            max_pixels: 10_000_000,
            listed: SplitLists::default(),
            pages: None,
            params: serde_json::Value::Null,
        }
    }

    const TOP: [u32; 4] = [20, 20, 380, 60];
    const BOTTOM: [u32; 4] = [20, 100, 300, 140];

    /// ALTO, PAGE and line images side by side: one dataset, every line in reading order.
    fn fixture(root: &Path) {
        fs::create_dir_all(root.join("alto")).unwrap();
        fs::create_dir_all(root.join("page")).unwrap();
        fs::create_dir_all(root.join("lines/writer-a")).unwrap();
        page_png(&root.join("alto/will_7-1.png"), 400, 200, &[TOP, BOTTOM]);
        fs::write(
            root.join("alto/will_7-1.xml"),
            alto(
                "will_7-1.png",
                &[(TOP, "Mon père était là"), (BOTTOM, "le 3 mai")],
            ),
        )
        .unwrap();
        page_png(&root.join("page/scan.png"), 400, 200, &[TOP]);
        fs::write(
            root.join("page/scan.xml"),
            page_xml("scan.png", &[(TOP, "l’œuvre – fin")]),
        )
        .unwrap();
        page_png(
            &root.join("lines/writer-a/001.bin.png"),
            200,
            40,
            &[[0, 0, 200, 40]],
        );
        fs::write(root.join("lines/writer-a/001.gt.txt"), "a  line\n").unwrap();
    }

    fn labels(dir: &Path, split: Split) -> Vec<(String, String)> {
        Dataset::open(dir)
            .unwrap()
            .samples(split)
            .map(|s| {
                let s = s.unwrap();
                (s.style, s.label)
            })
            .collect()
    }

    #[test]
    fn alto_page_xml_and_line_images_become_one_lines_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let (root, out) = (dir.path().join("gt"), dir.path().join("out"));
        fixture(&root);
        // A link back up the tree is followed once, not forever.
        std::os::unix::fs::symlink(&root, root.join("page/again")).unwrap();
        fs::create_dir_all(&out).unwrap();
        let manifest = import_ground_truth(&root, &config(), &out, &Unobserved).unwrap();
        assert_eq!(manifest.kind, DatasetKind::Lines);
        assert_eq!(manifest.height, Some(32));
        assert_eq!(
            labels(&out, Split::Train),
            [
                ("alto/will_7".into(), "Mon pere etait la".into()),
                ("alto/will_7".into(), "le 3 mai".into()),
                ("lines/writer-a".into(), "a line".into()),
                ("page/scan".into(), "l'oeuvre - fin".into()),
            ]
        );
        let first = Dataset::open(&out)
            .unwrap()
            .samples(Split::Train)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(first.height, 32);
        // The line is cut in the recognizer's frame (set by its ink, as transcription does):
        // several times wider than high, with ink (white) in it.
        assert!((96..=520).contains(&first.width), "width {}", first.width);
        assert!(first.pixels.iter().filter(|&&p| p > 128).count() > 200);
        assert_eq!(manifest.sources.len(), 1);
        assert_eq!(
            manifest.splits[&Split::Train].fonts.len(),
            3,
            "three documents"
        );
    }

    #[test]
    fn the_splits_keep_a_documents_pages_together_and_depend_on_the_seed_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("gt");
        fs::create_dir_all(&root).unwrap();
        for doc in 0..12 {
            for page in 0..2 {
                let name = format!("doc{doc:02}-{page}");
                page_png(&root.join(format!("{name}.png")), 400, 200, &[TOP]);
                fs::write(
                    root.join(format!("{name}.xml")),
                    alto(&format!("{name}.png"), &[(TOP, "text")]),
                )
                .unwrap();
            }
        }
        let mut config = config();
        config.split = SplitRule::Fractions(Fractions {
            val: 0.3,
            test: 0.3,
        });
        let run = |name: &str| {
            let out = dir.path().join(name);
            fs::create_dir_all(&out).unwrap();
            import_ground_truth(&root, &config, &out, &Unobserved).unwrap();
            Split::ALL.map(|s| labels(&out, s).into_iter().map(|l| l.0).collect::<Vec<_>>())
        };
        let splits = run("a");
        assert_eq!(splits, run("b"), "same seed, same splits");
        for (i, a) in splits.iter().enumerate() {
            assert!(!a.is_empty(), "split {i} is empty: {splits:?}");
            for b in &splits[i + 1..] {
                assert!(
                    a.iter().all(|d| !b.contains(d)),
                    "a document in two splits: {splits:?}"
                );
            }
            // Both pages of each document.
            assert_eq!(a.len() % 2, 0, "{a:?}");
        }
    }

    #[test]
    fn characters_outside_the_vocabulary_drop_their_line_and_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (root, out) = (dir.path().join("gt"), dir.path().join("out"));
        fs::create_dir_all(&root).unwrap();
        page_png(&root.join("p.png"), 400, 200, &[TOP, BOTTOM]);
        fs::write(
            root.join("p.xml"),
            alto("p.png", &[(TOP, "le 3°"), (BOTTOM, "été")]),
        )
        .unwrap();
        fs::create_dir_all(&out).unwrap();
        let manifest = import_ground_truth(&root, &config(), &out, &Unobserved).unwrap();
        assert_eq!(labels(&out, Split::Train), [("p".into(), "ete".into())]);
        assert_eq!(manifest.skipped.len(), 1);
        assert!(
            manifest.skipped[0].starts_with("1 lines dropped"),
            "{:?}",
            manifest.skipped
        );
        assert!(
            manifest.skipped[0].contains("'°' ×1") && manifest.skipped[0].contains("p.xml:"),
            "{:?}",
            manifest.skipped
        );

        let mut strict = config();
        strict.out_of_vocabulary = OutOfVocabulary::DropLine;
        let out = dir.path().join("strict");
        fs::create_dir_all(&out).unwrap();
        let error = import_ground_truth(&root, &strict, &out, &Unobserved)
            .unwrap_err()
            .to_string();
        assert!(error.contains("every one of the 2 lines"), "{error}");
        assert!(!out.join("manifest.json").exists());
    }

    /// The manifest's notes and a split by line key on paths inside the folder, so a checkout
    /// elsewhere makes the same dataset and the same lock hashes.
    #[test]
    fn the_same_folder_imported_from_two_places_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        config.split = SplitRule::Fractions(Fractions {
            val: 0.3,
            test: 0.3,
        });
        config.split_by = SplitBy::Line;
        config.out_of_vocabulary = OutOfVocabulary::DropLine;
        let mut files = Vec::new();
        for place in ["here", "elsewhere/deeper"] {
            let (root, out) = (
                dir.path().join(place).join("gt"),
                dir.path().join(place).join("out"),
            );
            fixture(&root);
            fs::write(
                root.join("lines/writer-a/002.gt.txt"),
                "ten per cent, 10%\n",
            )
            .unwrap();
            fs::copy(
                root.join("lines/writer-a/001.bin.png"),
                root.join("lines/writer-a/002.bin.png"),
            )
            .unwrap();
            fs::create_dir_all(&out).unwrap();
            let manifest = import_ground_truth(&root, &config, &out, &Unobserved).unwrap();
            assert!(
                manifest.skipped[0].contains("at lines/writer-a/002.gt.txt"),
                "{:?}",
                manifest.skipped
            );
            let mut names: Vec<_> = fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            files.push(
                names
                    .into_iter()
                    .map(|name| (name.clone(), fs::read(out.join(name)).unwrap()))
                    .collect::<Vec<_>>(),
            );
        }
        let names = |files: &[(std::ffi::OsString, Vec<u8>)]| {
            files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&files[0]), names(&files[1]));
        for ((name, here), (_, elsewhere)) in files[0].iter().zip(&files[1]) {
            assert!(
                here == elsewhere,
                "{name:?} differs:\n{}\n{}",
                String::from_utf8_lossy(here)
                    .chars()
                    .take(3000)
                    .collect::<String>(),
                String::from_utf8_lossy(elsewhere)
                    .chars()
                    .take(3000)
                    .collect::<String>()
            );
        }
    }

    /// Each broken export: an error naming the file (and line), and no dataset.
    #[test]
    fn bad_ground_truth_is_named_and_leaves_no_dataset() {
        type Fixture = Box<dyn Fn(&Path)>;
        let cases: [(&str, Fixture, &str); 6] = [
            (
                "a missing image",
                Box::new(|root| {
                    fs::write(root.join("p.xml"), alto("gone.png", &[(TOP, "text")])).unwrap();
                }),
                "p.xml: its image `gone.png` is not in",
            ),
            (
                "a box outside the image",
                Box::new(|root| {
                    page_png(&root.join("p.png"), 400, 200, &[TOP]);
                    fs::write(
                        root.join("p.xml"),
                        alto("p.png", &[([20, 150, 380, 260], "text")]),
                    )
                    .unwrap();
                }),
                "p.xml:8:7 spans (20, 150)–(380, 260), outside its 400×200 image",
            ),
            (
                "an empty transcription",
                Box::new(|root| {
                    page_png(&root.join("p.png"), 400, 200, &[TOP]);
                    fs::write(root.join("p.xml"), page_xml("p.png", &[(TOP, " ")])).unwrap();
                }),
                "empty transcription at",
            ),
            (
                "an unknown namespace",
                Box::new(|root| {
                    fs::write(root.join("p.xml"), "<alto xmlns=\"urn:other\"/>").unwrap();
                }),
                "p.xml: root element `alto` in namespace `urn:other` is not PAGE XML or ALTO",
            ),
            (
                "a truncated file",
                Box::new(|root| {
                    let full = alto("p.png", &[(TOP, "text")]);
                    fs::write(root.join("p.xml"), &full[..full.len() / 2]).unwrap();
                }),
                "p.xml: not well-formed XML",
            ),
            (
                "a line image without its picture",
                Box::new(|root| {
                    fs::write(root.join("l.gt.txt"), "text").unwrap();
                }),
                "l.gt.txt: no line image beside it",
            ),
        ];
        for (what, make, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (root, out) = (dir.path().join("gt"), dir.path().join("out"));
            fs::create_dir_all(&root).unwrap();
            fs::create_dir_all(&out).unwrap();
            make(&root);
            let error = import_ground_truth(&root, &config(), &out, &Unobserved)
                .expect_err(what)
                .to_string();
            assert!(error.contains(expected), "{what}: {error}");
            assert!(
                !out.join("manifest.json").exists(),
                "{what}: a dataset was written"
            );
        }
    }

    /// IAM's layout: `forms/ID.png` apart from `xml/ID.xml`; lines boxed by their words, in
    /// coordinates of a scan `scan_scale` times the image's size (FSDL's JPEGs are half-size).
    fn iam_forms(root: &Path, scan_scale: u32) {
        fs::create_dir_all(root.join("forms")).unwrap();
        fs::create_dir_all(root.join("xml")).unwrap();
        for (form, writer) in [("a01-000u", "000"), ("a01-003", "001"), ("b02-010", "000")] {
            page_png(
                &root.join(format!("forms/{form}.png")),
                400,
                200,
                &[TOP, BOTTOM],
            );
            let word = |id: &str, text: &str, box_: [u32; 4]| {
                let [x0, y0, x1, y1] = box_.map(|v| v * scan_scale);
                format!(
                    r#"<word id="{id}" tag="NN" text="{text}"><cmp x="{x0}" y="{y0}" width="{}" height="{}"/></word>"#,
                    x1 - x0,
                    y1 - y0
                )
            };
            let xml = format!(
                r#"<?xml version="1.0" encoding="ISO-8859-1"?>
<form created="2000-01-01" height="{}" id="{form}" width="{}" writer-id="{writer}">
<machine-printed-part><machine-print-line text="A MOVE to stop"/></machine-printed-part>
<handwritten-part>
<line id="{form}-00" text="A MOVE to &quot;stop&quot;" segmentation="ok">{}{}</line>
<line id="{form}-01" text="Mr. Gaitsk@ll" segmentation="err">{}</line>
</handwritten-part>
</form>
"#,
                200 * scan_scale,
                400 * scan_scale,
                word("w0", "A", [20, 20, 100, 60]),
                word("w1", "MOVE", [120, 24, 380, 58]),
                word("w2", "Mr.", BOTTOM),
            );
            // IAM's files are ISO-8859-1: an é as the single byte 0xE9.
            let latin1: Vec<u8> = xml
                .bytes()
                .map(|b| if b == b'@' { 0xE9 } else { b })
                .collect();
            fs::write(root.join(format!("xml/{form}.xml")), latin1).unwrap();
        }
    }

    #[test]
    fn iam_forms_become_lines_split_by_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (root, out) = (dir.path().join("iamdb"), dir.path().join("out"));
        iam_forms(&root, 1);
        let mut config = config();
        config.format = GroundTruthFormat::Iam;
        config.split = SplitRule::Fractions(Fractions {
            val: 0.5,
            test: 0.0,
        });
        let manifest = import_ground_truth(&root, &config, &out, &Unobserved).unwrap();
        let all: Vec<(String, String)> = Split::ALL.iter().flat_map(|&s| labels(&out, s)).collect();
        assert_eq!(all.len(), 6);
        assert!(
            all.iter().any(|(_, t)| t == "A MOVE to \"stop\""),
            "{all:?}"
        );
        assert!(all.iter().any(|(_, t)| t == "Mr. Gaitskell"), "{all:?}");
        // Writer 000 wrote two forms: they land in one split together.
        for split in Split::ALL {
            let writers = &manifest.splits[&split].fonts;
            assert!(writers.len() <= 2, "{writers:?}");
        }
        let with_writer_000: Vec<Split> = Split::ALL
            .into_iter()
            .filter(|s| manifest.splits[s].fonts.contains(&"writer 000".to_owned()))
            .collect();
        assert_eq!(with_writer_000.len(), 1, "{manifest:?}");

        fs::remove_file(root.join("forms/a01-003.png")).unwrap();
        let error = import_ground_truth(&root, &config, &dir.path().join("out2"), &Unobserved)
            .unwrap_err()
            .to_string();
        assert!(error.contains("the image of form a01-003"), "{error}");
    }

    /// FSDL's IAM: half-size images, the task lists' line IDs as the split, paragraphs as pages.
    #[test]
    fn iam_split_lists_half_size_scans_and_paragraph_pages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("iamdb");
        let (out, pages) = (dir.path().join("lines"), dir.path().join("pages"));
        iam_forms(&root, 2);
        fs::create_dir_all(root.join("task")).unwrap();
        fs::write(root.join("task/testset.txt"), "a01-003-00\na01-003-01\n").unwrap();
        fs::write(root.join("task/validationset1.txt"), "b02-010-00\n").unwrap();
        // A form whose handwritten part is empty: no lines, so no page either.
        page_png(&root.join("forms/c03-000.png"), 400, 200, &[]);
        fs::write(
            root.join("xml/c03-000.xml"),
            r#"<form height="400" id="c03-000" width="800" writer-id="009"><handwritten-part/></form>"#,
        )
        .unwrap();
        let mut config = config();
        config.format = GroundTruthFormat::Iam;
        config.listed = read_split_lists(&[
            (Split::Test, root.join("task/testset.txt")),
            (Split::Val, root.join("task/validationset1.txt")),
        ])
        .unwrap();
        config.pages = Some(PagesOutput {
            dir: pages.clone(),
            margin: 10,
            scale: 0.5,
        });
        import_ground_truth(&root, &config, &out, &Unobserved).unwrap();
        let styles = |dir: &Path, split| -> Vec<String> {
            labels(dir, split)
                .into_iter()
                .map(|(style, _)| style)
                .collect()
        };
        // Listed forms go where their lines are listed, the rest to train.
        assert_eq!(styles(&out, Split::Test), ["writer 001", "writer 001"]);
        assert_eq!(styles(&out, Split::Val), ["writer 000", "writer 000"]);
        assert_eq!(styles(&out, Split::Train), ["writer 000", "writer 000"]);

        // One page per form: the paragraph (20..380 × 20..140 in the image, 10 px more each
        // side), halved, with both lines' boxes inside it.
        let manifest = Dataset::open(&pages).unwrap().manifest.clone();
        assert_eq!(manifest.kind, DatasetKind::Pages);
        let counts = Split::ALL.map(|s| manifest.splits.get(&s).map_or(0, |i| i.count));
        assert_eq!(counts, [1, 1, 1], "train, val, test pages");
        assert_eq!(manifest.polarity, Polarity::InkBlack);
        let page = Dataset::open(&pages)
            .unwrap()
            .samples(Split::Test)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!((page.width, page.height), (190, 70));
        assert_eq!(page.label, "A MOVE to \"stop\"\nMr. Gaitskell");
        assert_eq!(page.boxes, [[5, 5, 185, 25], [5, 45, 145, 65]]);
        // Dark ink on light paper, as scans are.
        let dark = page.pixels.iter().filter(|&&p| p < 128).count();
        assert!(dark > 100 && dark < page.pixels.len() / 2, "{dark}");

        // A list that names none of the pages (another collection's IDs) is an error naming it,
        // and nothing is written.
        fs::write(root.join("task/other.txt"), "z99-999-00\n").unwrap();
        config.listed = read_split_lists(&[(Split::Test, root.join("task/other.txt"))]).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        let error = import_ground_truth(&root, &config, &elsewhere, &Unobserved)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("other.txt: its 1 listed ID(s) name none of the 4 pages here"),
            "{error}"
        );
        assert!(!elsewhere.join("manifest.json").exists());

        // A line in two splits' lists is an error naming both lists.
        fs::write(root.join("task/validationset2.txt"), "a01-003-01\n").unwrap();
        let error = read_split_lists(&[
            (Split::Test, root.join("task/testset.txt")),
            (Split::Val, root.join("task/validationset2.txt")),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "validationset2.txt: `a01-003-01` is listed for val here and for test in"
            ),
            "{error}"
        );
    }

    #[test]
    fn folding_spells_out_what_the_vocabulary_lacks() {
        assert_eq!(
            fold("Œuvre d’été « à Noël » – 1918…"),
            "OEuvre d'ete \" a Noel \" - 1918..."
        );
        assert_eq!(fold("3° ^e"), "3° ^e");
        assert_eq!(document_of("will_0005-12"), "will_0005");
        assert_eq!(document_of("scan"), "scan");
        assert_eq!(document_of("-3"), "-3");
        assert_eq!(document_of("page_"), "page_");
    }
}
