//! `manifest.json`: what a dataset directory holds and how it was made. Written last, through a
//! temporary file, so a dataset with a manifest is always complete.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DataError;
use super::shard::{Sample, ShardInfo, ShardReader};
use super::split::Split;

pub const MANIFEST: &str = "manifest.json";

/// The kinds of dataset the synthesiser makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// 28×28 single characters, EMNIST-like.
    Chars,
    /// Fixed-height text lines of variable width.
    Lines,
    /// Paragraph pages with one box per line.
    Pages,
}

impl DatasetKind {
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Chars => "chars",
            DatasetKind::Lines => "lines",
            DatasetKind::Pages => "pages",
        }
    }
}

/// Adds one label to a class histogram: a character class counts once per sample; lines and
/// pages count each character they show (line breaks are layout, not classes).
pub fn count_classes(kind: DatasetKind, label: &str, counts: &mut BTreeMap<String, u64>) {
    if kind == DatasetKind::Chars {
        *counts.entry(label.to_owned()).or_default() += 1;
    } else {
        for c in label.chars().filter(|c| *c != '\n') {
            *counts.entry(c.to_string()).or_default() += 1;
        }
    }
}

/// Which way round the pixels are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Polarity {
    /// 0 = paper, 255 = ink (EMNIST's convention; what the networks read).
    InkWhite,
    /// 255 = paper, 0 = ink (a scanned page).
    InkBlack,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitInfo {
    pub count: u64,
    /// Fonts (and `mnist`) that drew this split's samples.
    pub fonts: Vec<String>,
    /// Samples per class for chars; character occurrences for lines and pages.
    pub class_counts: BTreeMap<String, u64>,
    pub shards: Vec<ShardInfo>,
    /// Synthetic lines and pages: source sentences assigned to this split (whole, by their
    /// case-folded letters and digits, so no sentence lends text to two splits).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sentences: u64,
    /// Line texts cut from those sentences that an earlier split (train, then val) also had,
    /// from other sentences, and that this split therefore left out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared_texts_left_out: u64,
    /// Lines drawn too narrow for the line model to align their label (fewer output steps than
    /// CTC needs) and stretched to the narrowest width that can; of the lines synthesis drew
    /// (an augmented dataset keeps its source's count, not its copies').
    #[serde(default, skip_serializing_if = "is_zero")]
    pub widened: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub kind: DatasetKind,
    /// The label characters, in class-index order for chars.
    pub vocabulary: Vec<String>,
    pub seed: u64,
    pub generator_version: u32,
    pub polarity: Polarity,
    /// Fixed image height (chars: 28; lines: the line height); absent for pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u16>,
    /// Fixed image width (chars only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u16>,
    /// Source name → sha256 of what was downloaded.
    pub sources: BTreeMap<String, String>,
    pub splits: BTreeMap<Split, SplitInfo>,
    /// The generation params, for the record.
    #[serde(default)]
    pub params: serde_json::Value,
    /// What was left out and why (fonts lacking glyphs, sentences outside the vocabulary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl Manifest {
    pub fn write(&self, dir: &Path) -> Result<(), DataError> {
        let path = dir.join(MANIFEST);
        let mut json = serde_json::to_vec_pretty(self).expect("manifests serialise");
        json.push(b'\n');
        let tmp = dir.join(format!(".{MANIFEST}.tmp"));
        fs::write(&tmp, &json).map_err(DataError::io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(DataError::io("rename into", &path))
    }
}

/// A dataset directory opened through its manifest.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Dataset, DataError> {
        let path = dir.join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(DataError::io("read", &path))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| DataError::format(&path, format!("not a dataset manifest: {e}")))?;
        Ok(Dataset {
            dir: dir.to_owned(),
            manifest,
        })
    }

    pub fn split(&self, split: Split) -> Option<&SplitInfo> {
        self.manifest.splits.get(&split)
    }

    /// Streams a split's samples shard by shard.
    pub fn samples(&self, split: Split) -> impl Iterator<Item = Result<Sample, DataError>> + '_ {
        let shards = self
            .split(split)
            .map(|s| s.shards.as_slice())
            .unwrap_or_default();
        shards.iter().flat_map(move |shard| {
            let path = self.dir.join(&shard.file);
            let reader: Box<dyn Iterator<Item = Result<Sample, DataError>>> =
                match ShardReader::open(&path) {
                    Ok(r) => Box::new(r),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
            reader
        })
    }
}
