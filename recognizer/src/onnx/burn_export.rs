//! What every Burn → ONNX export shares: tensors out of Burn, layer initializers, the metadata
//! every model carries, and the tract-vs-Burn parity check that decides whether a file is kept.

use burn::module::Param;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use prost::Message;
use tract_onnx::pb;

use super::check::{check_structure, run_tract};
use super::graph::GraphBuilder;
use crate::data::Sample;
use crate::data::batch::{Batch, collate};
use crate::model_metadata::ModelMetadata;
use crate::models::{ModelError, ModelSpec};

/// Parity tolerance between tract and Burn on the same inputs, numpy's `isclose` rule: each
/// value must satisfy `|tract - burn| <= TOLERANCE + RELATIVE_TOLERANCE * |burn|`. The relative
/// part is for log-probabilities: a confident line model puts unlikely classes at -10 to -40,
/// where f32 rounding through the CNN and the 232-step BiLSTM alone is 1e-5 to 3e-5 relative.
/// Measured on the 320,000-line model's 64 parity lines against an f64 evaluation of the same
/// ONNX graph (onnx's reference evaluator): Burn is off by up to 7.6e-5, tract 1.7e-4, ONNX
/// Runtime 2.3e-4, so tract and Burn, rounding in opposite directions, sit 2.4e-4 apart at -7.77.
/// 5e-5 admits that with 2× headroom and stays 20× tighter than `torch.onnx.verification`'s
/// default (rtol 1e-3); an export mistake (a gate, layout or epsilon wrong) moves values by 1e-2
/// and more.
pub const TOLERANCE: f32 = 1e-4;
pub const RELATIVE_TOLERANCE: f32 = 5e-5;

/// A tensor's dims and f32 values.
pub(crate) fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 tensor data");
    (dims, values)
}

/// Adds `NAME.weight` and `NAME.bias` as initializers, in Burn's layout.
fn add_weight_and_bias<B: Backend, const D: usize>(
    g: &mut GraphBuilder,
    name: &str,
    weight: Tensor<B, D>,
    bias: &Option<Param<Tensor<B, 1>>>,
) -> Result<(), ModelError> {
    let (bias_dims, bias) =
        bias.as_ref()
            .map(|b| values(b.val()))
            .ok_or_else(|| ModelError::Invalid {
                reason: format!("{name} has no bias"),
            })?;
    let (dims, weight) = values(weight);
    g.weight(&format!("{name}.weight"), &dims, &weight);
    g.weight(&format!("{name}.bias"), &bias_dims, &bias);
    Ok(())
}

/// Adds a convolution: weight `[out, in, kh, kw]` (as ONNX wants) and bias.
pub(crate) fn add_conv<B: Backend>(
    g: &mut GraphBuilder,
    name: &str,
    conv: &Conv2d<B>,
) -> Result<(), ModelError> {
    add_weight_and_bias(g, name, conv.weight.val(), &conv.bias)
}

/// Adds a linear layer: weight `[in, out]` (Burn's layout: use `Gemm transB=0` or `MatMul`) and bias.
pub(crate) fn add_linear<B: Backend>(
    g: &mut GraphBuilder,
    name: &str,
    linear: &Linear<B>,
) -> Result<(), ModelError> {
    add_weight_and_bias(g, name, linear.weight.val(), &linear.bias)
}

/// Validates the graph's structure and encodes it.
pub(crate) fn encode_checked(model: &pb::ModelProto) -> Result<Vec<u8>, ModelError> {
    check_structure(model).map_err(|e| ModelError::Invalid {
        reason: format!("exported graph: {e}"),
    })?;
    Ok(model.encode_to_vec())
}

/// The parity check's input: the samples in one batch padded to a multiple of `multiple`.
pub(crate) fn parity_batch(samples: &[Sample], multiple: usize) -> Result<Batch, ModelError> {
    if samples.is_empty() {
        return Err(ModelError::Invalid {
            reason: "the parity check needs at least one sample".into(),
        });
    }
    Ok(collate(samples, multiple, false))
}

/// The `textrec.*` metadata every exported model carries; each architecture adds its own.
pub(crate) fn metadata<N>(spec: &ModelSpec<N>) -> ModelMetadata {
    ModelMetadata {
        architecture: spec.architecture,
        vocabulary: Some(spec.vocabulary.clone()),
        input_height: Some(spec.input_height),
        input_width: spec.input_width,
        normalisation: Some(spec.normalisation.clone()),
        model_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        training_data_sha256: Some(spec.dataset_manifest_sha256.clone()),
        downsample: None,
        scale: None,
        polarity: None,
    }
}

/// Runs the encoded model in tract on `input` (`shape`) and compares with Burn's `reference`
/// output: the largest absolute difference, or a parity error naming the worst value outside
/// [`TOLERANCE`] + [`RELATIVE_TOLERANCE`] × |value|.
pub(crate) fn check_parity(
    model: &[u8],
    shape: &[usize],
    input: Vec<f32>,
    reference: &[f32],
) -> Result<f32, ModelError> {
    let (_, got) = run_tract(model, shape, input).map_err(|e| ModelError::Invalid {
        reason: format!("tract cannot run the exported model: {e:#}"),
    })?;
    if got.len() != reference.len() {
        return Err(ModelError::Invalid {
            reason: format!(
                "tract returned {} values where Burn returned {}",
                got.len(),
                reference.len()
            ),
        });
    }
    parity(&got, reference)
}

/// The largest absolute difference of `got` from `reference`, or the worst breach of the
/// tolerance (by how many allowances it uses up). NaN breaches it infinitely.
fn parity(got: &[f32], reference: &[f32]) -> Result<f32, ModelError> {
    let mut max_diff = 0.0f32;
    let mut worst: Option<(f32, f32, f32)> = None;
    for (&a, &b) in got.iter().zip(reference) {
        let diff = (a - b).abs();
        let diff = if diff.is_nan() { f32::INFINITY } else { diff };
        max_diff = max_diff.max(diff);
        let allowed = TOLERANCE + RELATIVE_TOLERANCE * b.abs();
        // `diff` is never NaN; a NaN reference makes `allowed` NaN: both breach.
        if allowed.is_nan() || diff > allowed {
            let used = diff / allowed;
            let used = if used.is_nan() { f32::INFINITY } else { used };
            if worst.is_none_or(|(w, _, _)| used > w) {
                worst = Some((used, diff, b));
            }
        }
    }
    match worst {
        Some((_, diff, value)) => Err(ModelError::Parity {
            abs_diff: diff,
            value,
            tolerance: TOLERANCE,
            relative_tolerance: RELATIVE_TOLERANCE,
        }),
        None => Ok(max_diff),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parity_allows_f32_rounding_and_rejects_real_differences() {
        // The measured cases: 1.08e-4 apart at -9.89 and 2.4e-4 at -7.77 are rounding.
        let diff = parity(&[-9.894_126, 0.5], &[-9.894_234, 0.5]).unwrap();
        assert!((diff - 1.08e-4).abs() < 1e-6, "{diff}");
        assert!(parity(&[-7.769_172], &[-7.768_932]).is_ok());
        // Near zero the absolute bound rules.
        assert!(parity(&[0.000_2], &[0.0]).is_err());
        // Large values get their relative allowance, no more.
        assert!(parity(&[-40.002], &[-40.0]).is_ok());
        assert!(parity(&[-40.003], &[-40.0]).is_err());
        // An export mistake's size is far outside it.
        assert!(parity(&[-7.78], &[-7.77]).is_err());
        let nan = parity(&[f32::NAN], &[1.0]).unwrap_err().to_string();
        assert!(nan.contains("inf"), "{nan}");
        assert!(
            parity(&[1.0], &[f32::NAN]).is_err(),
            "NaN in Burn's output too"
        );
    }
}
