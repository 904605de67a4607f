//! `export`: trained weights → ONNX (opset 17, IR 8) with metadata, checked structurally and for
//! parity with Burn (tract vs Burn on real test inputs, within 1e-4 + 5e-5 × |value|) before it
//! is kept.

use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::Architecture;
use textrec_recognizer::data::{Dataset, Split};
use textrec_recognizer::models::{
    CpuInference, load_char_model, load_detector_model, load_line_model, model_architecture,
};
use textrec_recognizer::onnx::{export_char_cnn, export_line_ctc, export_line_fcn};

#[derive(Debug, Clone, Copy)]
pub struct Export;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Test samples the parity check runs on.
    #[serde(default = "default_parity_samples")]
    parity_samples: usize,
}

fn default_parity_samples() -> usize {
    64
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    if stage.deps.len() != 2 || stage.outs.len() != 1 || stage.metrics.len() > 1 {
        return Err(InvalidStage::shape(
            "`export` reads [model directory, dataset] and writes one .onnx file (plus optional metrics)",
        ));
    }
    if params.parity_samples == 0 {
        return Err(InvalidStage::param(
            "parity_samples",
            "`parity_samples` must be > 0",
        ));
    }
    Ok(params)
}

impl StageKind for Export {
    fn name(&self) -> &'static str {
        "export"
    }

    fn version(&self) -> u32 {
        2
    }

    fn summary(&self) -> &'static str {
        "write a trained model as ONNX with metadata; fails unless tract matches Burn on test inputs"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let device = Default::default();
        let dataset = Dataset::open(&ctx.deps[1])?;
        let samples = dataset
            .samples(Split::Test)
            .take(params.parity_samples)
            .collect::<Result<Vec<_>, _>>()?;
        let model = &ctx.deps[0];
        let architecture = model_architecture(model)?;
        // The detector's parity check runs on one page (a page is thousands of outputs).
        let checked = if architecture == Architecture::LineFcn {
            1.min(samples.len())
        } else {
            samples.len()
        };
        let (bytes, max_diff) = match architecture {
            Architecture::CharCnn => {
                let (spec, network) = load_char_model::<CpuInference>(model, &device)?;
                export_char_cnn(&network, &spec, &samples, &device)?
            }
            Architecture::LineCtc => {
                let (spec, network) = load_line_model::<CpuInference>(model, &device)?;
                export_line_ctc(&network, &spec, &samples, &device)?
            }
            Architecture::LineFcn => {
                let (spec, network) = load_detector_model::<CpuInference>(model, &device)?;
                export_line_fcn(&network, &spec, &samples, &device)?
            }
        };
        std::fs::write(&ctx.outs[0].1, bytes)?;
        if let Some((_, metrics)) = ctx.outs.get(1) {
            let json =
                serde_json::json!({"parity_max_abs_diff": max_diff, "parity_samples": checked});
            std::fs::write(metrics, format!("{json}\n"))?;
        }
        Ok(())
    }
}
