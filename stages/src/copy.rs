//! `copy`: copy each dep to the out at the same position. The simplest real stage: it imports
//! files into a pipeline's outputs (and so into its cache and lock) and exercises the engine.

use textrec_pipeline::{
    InvalidStage, Stage, StageContext, StageFailure, StageKind, copy_tree, count_files,
};

use crate::error::StageError;

#[derive(Debug, Clone, Copy)]
pub struct Copy;

impl StageKind for Copy {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "copy deps[i] (file or directory) to outs[i]; no params"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        if stage.params.as_object().is_some_and(|p| !p.is_empty()) {
            return Err(InvalidStage::param("copy", "`copy` takes no params"));
        }
        if stage.deps.is_empty()
            || stage.deps.len() != stage.outs.len()
            || !stage.metrics.is_empty()
        {
            return Err(InvalidStage::param(
                "copy",
                format!(
                    "`copy` needs as many outs as deps (deps[i] is copied to outs[i]); got {} deps, {} outs, {} metrics",
                    stage.deps.len(),
                    stage.outs.len(),
                    stage.metrics.len()
                ),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let mut total = 0;
        for dep in &ctx.deps {
            total += count_files(dep).map_err(|source| StageError::Io {
                action: "read",
                path: dep.clone(),
                source,
            })?;
        }
        ctx.progress.set_length(total);
        for (dep, (_, out)) in ctx.deps.iter().zip(&ctx.outs) {
            copy_tree(dep, out, &mut || ctx.progress.inc(1)).map_err(|source| StageError::Io {
                action: "copy",
                path: dep.clone(),
                source,
            })?;
        }
        Ok(())
    }
}
