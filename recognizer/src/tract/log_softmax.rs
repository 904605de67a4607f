//! ONNX `LogSoftmax` over the last axis, as one op: `x − max − ln Σ e^(x − max)` per row.
//!
//! Why: tract reads `LogSoftmax` as a softmax followed by a logarithm, which cost the line model
//! 0.035 ms of a 256-px line (its 64 steps × 80 classes; ONNX Runtime's whole line takes
//! 0.75 ms), and whose logarithm of an underflowed probability is −∞ where the ONNX operator,
//! and ONNX Runtime, give a finite log-probability.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::Ln;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use crate::kernels::log_softmax_rows;

/// Replaces every f32 softmax over the last axis that only feeds a logarithm, and the logarithm,
/// by one [`LogSoftmax`]; others are left alone.
pub(crate) fn fuse_log_softmaxes(model: &mut TypedModel) -> TractResult<()> {
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(softmax) = node.op_as::<Softmax>() else {
            continue;
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        let over_last_axis = fact
            .rank()
            .checked_sub(1)
            .is_some_and(|last| softmax.axes.as_slice() == [last]);
        let Some(next) = model.single_succ(id)? else {
            continue;
        };
        let is_ln = next
            .op_as::<ElementWiseOp>()
            .is_some_and(|op| op.0.is::<Ln>());
        if !is_ln
            || softmax.kind != SoftmaxKind::Softmax
            || softmax.quant_output_dt.is_some()
            || !over_last_axis
            || fact.datum_type != f32::datum_type()
        {
            continue;
        }
        let patch = TypedModelPatch::fuse_with_next(model, node, LogSoftmax)?;
        patch.apply(model)?;
    }
    Ok(())
}

/// Log-softmax over the last axis of an f32 tensor of any rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogSoftmax;

impl Op for LogSoftmax {
    fn name(&self) -> StaticName {
        "LogSoftmax".into()
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for LogSoftmax {
    tract_onnx::tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut y = args_1!(inputs).into_tensor();
        let row = y.shape().last().copied().unwrap_or(1).max(1);
        log_softmax_rows(y.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?, row);
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for LogSoftmax {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

#[cfg(test)]
mod tests {
    use crate::onnx::{Attr, GraphBuilder, Metadata};
    use crate::tract::run_model;
    use prost::Message;

    const SHAPE: [usize; 3] = [2, 5, 37];

    /// The output of one ONNX `LogSoftmax` over the last axis, and whether the plan fused it.
    fn log_softmax(x: &[f32], textrec: bool) -> (Vec<usize>, Vec<f32>, bool) {
        let mut g = GraphBuilder::new();
        let dims: Vec<Result<i64, &str>> = SHAPE.iter().map(|&d| Ok(d as i64)).collect();
        g.input("x", &dims)
            .node("LogSoftmax", &["x"], &["y"], &[("axis", Attr::Int(2))])
            .output("y", &[Err("n"), Err("t"), Err("c")]);
        let bytes = g.build("log_softmax", &Metadata::default()).encode_to_vec();
        let (shape, y, ops) = run_model(&bytes, (&SHAPE, x.to_vec()), textrec);
        (shape, y, ops.iter().any(|op| op == "LogSoftmax"))
    }

    #[test]
    fn the_fused_log_softmax_matches_the_definition_and_tracts_own() {
        let n: usize = SHAPE.iter().product();
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 * 0.3 - 15.0)
            .collect();
        let (shape, ours, fused) = log_softmax(&x, true);
        let (tract_shape, tracts, _) = log_softmax(&x, false);
        assert!(fused, "the softmax and its logarithm were not fused");
        assert_eq!(shape, tract_shape);
        for (row, out) in x.chunks(SHAPE[2]).zip(ours.chunks(SHAPE[2])) {
            let max = row
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |m, v| m.max(f64::from(v)));
            let log_sum = row
                .iter()
                .map(|&v| (f64::from(v) - max).exp())
                .sum::<f64>()
                .ln();
            for (&v, &y) in row.iter().zip(out) {
                let exact = f64::from(v) - max - log_sum;
                assert!((f64::from(y) - exact).abs() < 1e-5, "{y} vs {exact}");
            }
        }
        let furthest = ours
            .iter()
            .zip(&tracts)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(furthest < 1e-5, "differs from tract's by {furthest}");
    }

    #[test]
    fn a_class_far_below_the_best_keeps_a_finite_log_probability() {
        let n: usize = SHAPE.iter().product();
        // Every row: one class at 0, the rest 120 below, where e^-120 underflows f32.
        let x: Vec<f32> = (0..n)
            .map(|i| if i % SHAPE[2] == 3 { 0.0 } else { -120.0 })
            .collect();
        let (_, ours, _) = log_softmax(&x, true);
        for (&v, &y) in x.iter().zip(&ours) {
            assert!(y.is_finite(), "{y} for {v}");
            assert!((y - v).abs() < 1e-4, "{y} for {v}");
        }
    }
}
