//! Max-pooling whose windows tile the image (kernel = stride, no padding), as every textrec
//! network pools, run as one plain loop over rows.
//!
//! Why: tract's general max-pool walks a patch per output point and took 0.25–0.4 ms for the
//! line model's first pool of a 256-px line (ONNX Runtime: 0.02 ms); this loop reads each input
//! row once, and the comparisons vectorise. A ReLU just before the pool is folded in (the
//! maximum of rectified values is the rectified maximum): one pass over the convolution's output
//! instead of two.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::math::Max;
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::op_io::{concrete_nchw, f32_input, f32_output};

/// Replaces every tract `MaxPool` of `model` that tiles its NCHW f32 input of concrete shape by
/// a [`TilingMaxPool`], with the ReLU that only feeds it when there is one; others are left alone.
pub(crate) fn tile_max_pools(model: &mut TypedModel) -> TractResult<()> {
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<MaxPool>() else {
            continue;
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        let Some(mut op) = TilingMaxPool::for_pool(pool, fact) else {
            continue;
        };
        let mut input = node.inputs[0];
        if let Some(rectified) = relu_input(model, input)? {
            op.relu = true;
            input = rectified;
        }
        let patch = TypedModelPatch::replace_single_op(model, node, &[input], op)?;
        patch.apply(model)?;
    }
    Ok(())
}

/// When `outlet` is a ReLU (as tract declutters ONNX's: the larger of the input and a constant
/// zero) read by one op only, the ReLU's input.
fn relu_input(model: &TypedModel, outlet: OutletId) -> TractResult<Option<OutletId>> {
    let node = model.node(outlet.node);
    let is_max = node
        .op_as::<TypedBinOp>()
        .is_some_and(|op| op.0.is::<Max>());
    if !is_max || node.inputs.len() != 2 || node.outputs[0].successors.len() != 1 {
        return Ok(None);
    }
    let is_zero = |outlet: OutletId| -> TractResult<bool> {
        Ok(match &model.outlet_fact(outlet)?.konst {
            Some(k) if k.datum_type() == f32::datum_type() && k.len() == 1 => {
                k.to_plain_array_view::<f32>()?.iter().all(|&v| v == 0.0)
            }
            _ => false,
        })
    };
    let output = model.outlet_fact(outlet)?;
    for (data, zero) in [(0, 1), (1, 0)] {
        let data = node.inputs[data];
        if is_zero(node.inputs[zero])? && model.outlet_fact(data)?.shape == output.shape {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// `[N, C, H, W]` → `[N, C, H / kernel.0, W / kernel.1]`, the maximum of each window (rows and
/// columns past the last whole window dropped, as ONNX's floor mode does), rectified if `relu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TilingMaxPool {
    kernel: (usize, usize),
    relu: bool,
}

impl TilingMaxPool {
    fn for_pool(pool: &MaxPool, input: &TypedFact) -> Option<TilingMaxPool> {
        let spec = &pool.pool_spec;
        let &[kh, kw] = spec.kernel_shape.as_slice() else {
            return None;
        };
        let no_padding = match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(before, after) => before.iter().chain(after).all(|&p| p == 0),
            PaddingSpec::ExplicitOnnxPool(before, after, ceil_mode) => {
                !ceil_mode && before.iter().chain(after).all(|&p| p == 0)
            }
            _ => false,
        };
        let tiles = spec.strides.as_deref() == Some(&[kh, kw][..])
            && spec
                .dilations
                .as_deref()
                .is_none_or(|d| d.iter().all(|&d| d == 1));
        let shape = input.shape.as_concrete()?;
        (pool.with_index_outputs.is_none()
            && spec.data_format == DataFormat::NCHW
            && no_padding
            && tiles
            && kh > 0
            && kw > 0
            && input.datum_type == f32::datum_type()
            && shape.len() == 4
            && shape[2] >= kh
            && shape[3] >= kw)
            .then_some(TilingMaxPool {
                kernel: (kh, kw),
                relu: false,
            })
    }
}

impl TilingMaxPool {
    /// The pooled size of an `[h, w]` plane.
    pub(crate) fn output_size(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        [h / self.kernel.0, w / self.kernel.1]
    }

    /// Pools every `[h, w]` plane of `x` into `y`.
    pub(crate) fn pool_into(&self, x: &[f32], y: &mut [f32], plane: [usize; 2]) {
        // max(·, −∞) leaves a value be; max(·, 0) is the ReLU.
        let floor = if self.relu { 0.0 } else { f32::NEG_INFINITY };
        pool(x, y, plane, self.kernel, floor);
    }
}

impl Op for TilingMaxPool {
    fn name(&self) -> StaticName {
        "TilingMaxPool".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "kernel={}x{}{}",
            self.kernel.0,
            self.kernel.1,
            if self.relu { ", ReLU folded in" } else { "" }
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for TilingMaxPool {
    tract_onnx::tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let ([n, c, h, w], x) = f32_input(&inputs[0], "TilingMaxPool")?;
        let x = &*x;
        let [oh, ow] = self.output_size([h, w]);
        let mut y = vec![0.0; n * c * oh * ow];
        self.pool_into(x, &mut y, [h, w]);
        f32_output([n, c, oh, ow], y)
    }
}

impl TypedOp for TilingMaxPool {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [n, c, h, w] = concrete_nchw(inputs[0], "TilingMaxPool")?;
        let [oh, ow] = self.output_size([h, w]);
        Ok(tvec!(f32::fact([n, c, oh, ow])))
    }
}

/// Pools every `[h, w]` plane of `x` into `y`, no output below `floor`, compiled for AVX2 where
/// the CPU has it.
fn pool(x: &[f32], y: &mut [f32], plane: [usize; 2], kernel: (usize, usize), floor: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has the feature the function is compiled for, checked just above.
        unsafe { pool_avx2(x, y, plane, kernel, floor) };
        return;
    }
    pool_planes(x, y, plane, kernel, floor);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pool_avx2(x: &[f32], y: &mut [f32], plane: [usize; 2], kernel: (usize, usize), floor: f32) {
    pool_planes(x, y, plane, kernel, floor);
}

/// The larger of two, as `maxps` computes it (NaN-unaware, so it vectorises).
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

#[inline(always)]
fn pool_planes(x: &[f32], y: &mut [f32], [h, w]: [usize; 2], (kh, kw): (usize, usize), floor: f32) {
    let (oh, ow) = (h / kh, w / kw);
    for (plane, out) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
        for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
            let row = |ky: usize| &plane[(oy * kh + ky) * w..(oy * kh + ky) * w + ow * kw];
            match (kh, kw) {
                (2, 2) => {
                    let (top, bottom) = (row(0), row(1));
                    for (i, o) in out_row.iter_mut().enumerate() {
                        let t = larger(top[2 * i], top[2 * i + 1]);
                        let b = larger(bottom[2 * i], bottom[2 * i + 1]);
                        *o = larger(larger(t, b), floor);
                    }
                }
                (2, 1) => {
                    let (top, bottom) = (row(0), row(1));
                    for ((o, &t), &b) in out_row.iter_mut().zip(top).zip(bottom) {
                        *o = larger(larger(t, b), floor);
                    }
                }
                _ => {
                    out_row.fill(floor);
                    for ky in 0..kh {
                        for (o, window) in out_row.iter_mut().zip(row(ky).chunks_exact(kw)) {
                            *o = window.iter().fold(*o, |m, &v| larger(m, v));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::onnx::{Attr, GraphBuilder, Metadata};
    use crate::tract::run_model;
    use prost::Message;

    const SHAPE: [usize; 4] = [2, 3, 9, 11];

    /// The output of one ONNX `MaxPool` over a fixed input, and whether the plan tiles it.
    fn pool(attributes: &[(&str, Attr)], textrec: bool) -> (Vec<usize>, Vec<f32>, bool) {
        let (shape, y, ops) = relu_then_pool(false, attributes, textrec);
        (shape, y, ops.iter().any(|op| op == "TilingMaxPool"))
    }

    /// One ONNX `MaxPool`, after a `Relu` if `relu`, over a fixed input of both signs: the
    /// output and the plan's ops.
    fn relu_then_pool(
        relu: bool,
        attributes: &[(&str, Attr)],
        textrec: bool,
    ) -> (Vec<usize>, Vec<f32>, Vec<String>) {
        let mut g = GraphBuilder::new();
        let dims: Vec<Result<i64, &str>> = SHAPE.iter().map(|&d| Ok(d as i64)).collect();
        g.input("x", &dims);
        if relu {
            g.node("Relu", &["x"], &["rectified"], &[]);
        }
        let pooled = if relu { "rectified" } else { "x" };
        g.node("MaxPool", &[pooled], &["y"], attributes)
            .output("y", &[Err("n"), Err("c"), Err("h"), Err("w")]);
        let bytes = g.build("pool", &Metadata::default()).encode_to_vec();
        let n: usize = SHAPE.iter().product();
        // Mostly negative before a ReLU, so that some whole windows are rectified.
        let shift = if relu { 90.0 } else { 50.0 };
        let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 - shift).collect();
        run_model(&bytes, (&SHAPE, x), textrec)
    }

    #[test]
    fn a_relu_before_a_tiling_pool_is_folded_into_it() {
        for kernel in [[2, 2], [2, 1], [3, 3]] {
            let (shape, ours, ops) = relu_then_pool(true, &tiling(kernel), true);
            let (tract_shape, tracts, _) = relu_then_pool(true, &tiling(kernel), false);
            assert_eq!(
                ops,
                ["Source", "TilingMaxPool"].map(String::from),
                "{kernel:?}"
            );
            assert_eq!(shape, tract_shape, "{kernel:?}");
            assert_eq!(ours, tracts, "{kernel:?}");
            assert!(ours.contains(&0.0), "{kernel:?}: nothing was rectified");
        }
    }

    fn tiling(kernel: [i64; 2]) -> Vec<(&'static str, Attr)> {
        vec![
            ("kernel_shape", Attr::Ints(kernel.to_vec())),
            ("strides", Attr::Ints(kernel.to_vec())),
        ]
    }

    #[test]
    fn tiling_pools_match_tracts_own_including_the_dropped_edge() {
        for kernel in [[2, 2], [2, 1], [3, 3]] {
            let (shape, ours, tiled) = pool(&tiling(kernel), true);
            let (tract_shape, tracts, _) = pool(&tiling(kernel), false);
            assert!(tiled, "{kernel:?} was not tiled");
            assert_eq!(shape, tract_shape, "{kernel:?}");
            assert_eq!(ours, tracts, "{kernel:?}");
        }
    }

    #[test]
    fn overlapping_or_padded_pools_stay_tracts() {
        let overlapping = [
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("strides", Attr::Ints(vec![1, 1])),
        ];
        let padded = [
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
        ];
        for attributes in [&overlapping[..], &padded[..]] {
            let (_, ours, tiled) = pool(attributes, true);
            let (_, tracts, _) = pool(attributes, false);
            assert!(!tiled);
            assert_eq!(ours, tracts);
        }
    }
}
