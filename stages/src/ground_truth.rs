//! `ground-truth`: a lines dataset (shards + `manifest.json`) from the ground truth users export
//! from annotation tools: line images with `NAME.gt.txt`, PAGE XML, or ALTO, with their images;
//! and, given a second out, the pages with line geometry as a pages dataset. Its one dep is the
//! folder that holds them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::Split;
use textrec_recognizer::ground_truth::{
    GroundTruthConfig, GroundTruthFormat, IMPORTER_VERSION, OutOfVocabulary, PagesOutput, SplitBy,
    SplitRule, import_ground_truth, read_split_lists,
};
use textrec_recognizer::vocab::Vocabulary;

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct GroundTruth;

/// What the ground-truth importers take (`ground-truth`, `iam`): one set of params, whose
/// defaults for `format`, `split` and `split_lists` each importer chooses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportParams {
    #[serde(default)]
    pub format: Option<GroundTruthFormat>,
    /// `{val: 0.1, test: 0.1}` (fractions drawn per `split_by` key), or one split for every
    /// line (`test`).
    #[serde(default)]
    pub split: Option<SplitRule>,
    #[serde(default)]
    pub split_by: SplitBy,
    /// Line height of the dataset: the line model's input height.
    #[serde(default = "default_height")]
    pub height: u16,
    /// Files of page or line IDs (paths in the dep folder), by split: listed pages go to that
    /// split whatever `split` says.
    #[serde(default)]
    pub split_lists: Option<BTreeMap<Split, Vec<PathBuf>>>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub out_of_vocabulary: OutOfVocabulary,
    /// Pages (the second out): source pixels around the lines' region, and the resize factor.
    #[serde(default = "default_page_margin")]
    pub page_margin: u32,
    #[serde(default = "default_page_scale")]
    pub page_scale: f32,
    #[serde(default = "default_max_megapixels")]
    pub max_megapixels: u64,
    #[serde(default = "default_shard_mb")]
    pub shard_mb: u64,
}

fn default_height() -> u16 {
    32
}

fn default_page_margin() -> u32 {
    16
}

fn default_page_scale() -> f32 {
    1.0
}

fn default_max_megapixels() -> u64 {
    100
}

fn default_shard_mb() -> u64 {
    256
}

impl ImportParams {
    /// The checks shared by the importers; `kind` names the stage kind in messages.
    pub(crate) fn check(&self, stage: &Stage, kind: &str) -> Result<(), InvalidStage> {
        if stage.deps.len() != 1
            || !(1..=2).contains(&stage.outs.len())
            || !stage.metrics.is_empty()
        {
            return Err(InvalidStage::shape(format!(
                "`{kind}` reads one dep (the folder of ground truth) and writes one or two outs \
                 (the lines dataset, then optionally the pages dataset), no metrics"
            )));
        }
        if self.height < 8 {
            return Err(InvalidStage::param("height", "`height` must be at least 8"));
        }
        if !(self.page_scale > 0.0 && self.page_scale <= 4.0) {
            return Err(InvalidStage::param(
                "page_scale",
                "`page_scale` must be in (0, 4]",
            ));
        }
        if self.shard_mb == 0 || self.max_megapixels == 0 {
            return Err(InvalidStage::param(
                "shard_mb",
                "`shard_mb` and `max_megapixels` must be > 0",
            ));
        }
        if let Some(SplitRule::Fractions(f)) = self.split
            && !(f.val >= 0.0 && f.test >= 0.0 && f.val + f.test < 1.0)
        {
            return Err(InvalidStage::param(
                "split",
                "`split`: val and test must be >= 0 and leave some train",
            ));
        }
        if let Some(path) = self
            .split_lists
            .iter()
            .flatten()
            .flat_map(|(_, f)| f)
            .find(|p| {
                p.is_absolute()
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
            })
        {
            return Err(InvalidStage::param(
                "split_lists",
                format!(
                    "`split_lists`: `{}` must be a path inside the dep folder",
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Imports the dep folder into the stage's outs: as `format`, unlisted pages split by
    /// `split`, with `lists` where the params name none.
    pub(crate) fn import(
        &self,
        ctx: &StageContext<'_>,
        format: GroundTruthFormat,
        split: SplitRule,
        lists: &BTreeMap<Split, Vec<PathBuf>>,
    ) -> Result<(), StageFailure> {
        let root = &ctx.deps[0];
        let lists: Vec<(Split, PathBuf)> = self
            .split_lists
            .as_ref()
            .unwrap_or(lists)
            .iter()
            .flat_map(|(split, files)| files.iter().map(|f| (*split, root.join(f))))
            .collect();
        let config = GroundTruthConfig {
            format,
            height: self.height,
            split,
            split_by: self.split_by,
            seed: self.seed,
            out_of_vocabulary: self.out_of_vocabulary,
            vocabulary: Vocabulary::default(),
            source_name: ctx.stage.deps[0].clone(),
            shard_bytes: self.shard_mb << 20,
            max_pixels: self.max_megapixels * 1_000_000,
            listed: read_split_lists(&lists)?,
            pages: ctx.outs.get(1).map(|(_, dir)| PagesOutput {
                dir: dir.clone(),
                margin: self.page_margin,
                scale: self.page_scale,
            }),
            params: ctx.stage.params.clone(),
        };
        import_ground_truth(root, &config, &ctx.outs[0].1, &StageObserver { ctx })?;
        Ok(())
    }
}

fn validate(stage: &Stage) -> Result<ImportParams, InvalidStage> {
    let params: ImportParams = parse_params(&stage.params)?;
    params.check(stage, "ground-truth")?;
    Ok(params)
}

impl StageKind for GroundTruth {
    fn name(&self) -> &'static str {
        "ground-truth"
    }

    fn version(&self) -> u32 {
        IMPORTER_VERSION
    }

    fn summary(&self) -> &'static str {
        "import line images + .gt.txt, PAGE XML or ALTO ground truth as lines (and pages) datasets"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        params.import(
            ctx,
            params.format.unwrap_or_default(),
            params.split.unwrap_or_default(),
            &BTreeMap::new(),
        )
    }
}
