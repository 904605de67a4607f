//! `iam`: the IAM Handwriting Database as FSDL mirrors it (`iamdb.zip` unpacked: `forms/ID.jpg`
//! at half the scan's size, `xml/ID.xml`, `task/*.txt`) into a lines dataset and, given a second
//! out, a pages dataset of the handwritten paragraphs with their line boxes. The split is FSDL's:
//! the forms of the LWITLRT task's test lines are test, those of its two validation sets val, the
//! rest train; each writer's forms sit in one split. Its one dep is the folder holding `xml/`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::Split;
use textrec_recognizer::ground_truth::{GroundTruthFormat, IMPORTER_VERSION, SplitRule};

use crate::ground_truth::ImportParams;

#[derive(Debug, Clone, Copy)]
pub struct Iam;

/// FSDL's split (`text_recognizer/data/iam.py`): IAM's own task lists, which name lines.
fn fsdl_split_lists() -> BTreeMap<Split, Vec<PathBuf>> {
    BTreeMap::from([
        (Split::Test, vec![PathBuf::from("task/testset.txt")]),
        (
            Split::Val,
            vec![
                PathBuf::from("task/validationset1.txt"),
                PathBuf::from("task/validationset2.txt"),
            ],
        ),
    ])
}

fn validate(stage: &Stage) -> Result<ImportParams, InvalidStage> {
    let params: ImportParams = parse_params(&stage.params)?;
    if params.format.is_some() {
        return Err(InvalidStage::shape(
            "`iam` reads IAM forms only; `format` belongs to `ground-truth`",
        ));
    }
    params.check(stage, "iam")?;
    Ok(params)
}

impl StageKind for Iam {
    fn name(&self) -> &'static str {
        "iam"
    }

    fn version(&self) -> u32 {
        IMPORTER_VERSION
    }

    fn summary(&self) -> &'static str {
        "import the IAM Handwriting Database (FSDL's iamdb) as lines and paragraph pages, split as FSDL does"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        params.import(
            ctx,
            GroundTruthFormat::Iam,
            params.split.unwrap_or(SplitRule::All(Split::Train)),
            &fsdl_split_lists(),
        )
    }
}
