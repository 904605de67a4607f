//! 2-D convolutions with many inputs per output point, run as im2col + one GEMM per image on the
//! kernels training uses ([`crate::kernels::matmul`]).
//!
//! Why: on x86 tract picks its direct spatial convolution for up to 576 inputs per output point,
//! and for the line model's second convolution (16 channels × 3×3) that ran at a third of what
//! the GEMM reaches (0.6 ms of a 256-px line; ONNX Runtime 0.2 ms). A convolution with few
//! inputs per point (the first, over one grey channel) keeps tract's, which suits it.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::KernelFormat;
use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::tract_model::{concrete_nchw, f32_input, f32_output};
use crate::kernels::matmul;

/// Below this many inputs per output point (channels × kernel taps) tract's own kernels win.
const MIN_INPUTS_PER_POINT: usize = 64;

/// Replaces every tract `Conv` of `model` that [`Im2colConv`] covers; others are left alone.
pub(crate) fn im2col_convs(model: &mut TypedModel) -> TractResult<()> {
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(op) = Im2colConv::for_conv(conv, model, &node.inputs)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs[..1], op)?;
        patch.apply(model)?;
    }
    Ok(())
}

/// `[N, C, H, W]` → `[N, O, H', W']`, stride 1, no dilation, explicit zero padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Im2colConv {
    /// `[O, C·kh·kw]`.
    kernel: Arc<Tensor>,
    /// `[O]`.
    bias: Arc<Tensor>,
    channels: usize,
    kernel_size: [usize; 2],
    /// Rows and columns of zeros before and after: `[top, left]`, `[bottom, right]`.
    pad_before: [usize; 2],
    pad_after: [usize; 2],
}

impl Im2colConv {
    fn for_conv(
        conv: &Conv,
        model: &TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<Option<Im2colConv>> {
        let spec = &conv.pool_spec;
        let &[kh, kw] = spec.kernel_shape.as_slice() else {
            return Ok(None);
        };
        let (pad_before, pad_after) = match &spec.padding {
            PaddingSpec::Valid => ([0, 0], [0, 0]),
            PaddingSpec::Explicit(b, a) if b.len() == 2 && a.len() == 2 => {
                ([b[0], b[1]], [a[0], a[1]])
            }
            _ => return Ok(None),
        };
        let ones = |v: &Option<TVec<usize>>| v.as_deref().is_none_or(|v| v.iter().all(|&d| d == 1));
        let [Some(&x), Some(&kernel), Some(&bias)] = [0, 1, 2].map(|i| inputs.get(i)) else {
            return Ok(None);
        };
        let x = model.outlet_fact(x)?;
        let Some(shape) = x.shape.as_concrete() else {
            return Ok(None);
        };
        let channels = conv.input_channels();
        let outputs = conv.output_channels();
        if conv.q_params.is_some()
            || conv.group != 1
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.data_format != DataFormat::NCHW
            || !ones(&spec.strides)
            || !ones(&spec.dilations)
            || x.datum_type != f32::datum_type()
            || shape.len() != 4
            || shape[1] != channels
            || channels * kh * kw < MIN_INPUTS_PER_POINT
            || shape[2] + pad_before[0] + pad_after[0] < kh
            || shape[3] + pad_before[1] + pad_after[1] < kw
        {
            return Ok(None);
        }
        let constant = |outlet: OutletId, len: usize| -> TractResult<Option<Vec<f32>>> {
            Ok(match &model.outlet_fact(outlet)?.konst {
                Some(k) if k.datum_type() == f32::datum_type() && k.len() == len => {
                    Some(k.to_plain_array_view::<f32>()?.iter().copied().collect())
                }
                _ => None,
            })
        };
        let per_output = channels * kh * kw;
        let (Some(kernel), Some(bias)) = (
            constant(kernel, outputs * per_output)?,
            constant(bias, outputs)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(Im2colConv {
            kernel: Arc::new(Tensor::from_shape(&[outputs, per_output], &kernel)?),
            bias: Arc::new(Tensor::from_shape(&[outputs], &bias)?),
            channels,
            kernel_size: [kh, kw],
            pad_before,
            pad_after,
        }))
    }

    fn output_size(&self, h: usize, w: usize) -> [usize; 2] {
        [
            h + self.pad_before[0] + self.pad_after[0] + 1 - self.kernel_size[0],
            w + self.pad_before[1] + self.pad_after[1] + 1 - self.kernel_size[1],
        ]
    }

    /// `columns[(c·kh + ky)·kw + kx][y·ow + x]` = the input under tap (ky, kx) of output (y, x).
    /// Written in order into the emptied `columns`, so its buffer is never zeroed first.
    fn im2col(&self, image: &[f32], [h, w]: [usize; 2], columns: &mut Vec<f32>) {
        let [kh, kw] = self.kernel_size;
        let [oh, ow] = self.output_size(h, w);
        let [top, left] = self.pad_before;
        let zeros = |columns: &mut Vec<f32>, n: usize| columns.resize(columns.len() + n, 0.0);
        columns.clear();
        for c in 0..self.channels {
            let plane = &image[c * h * w..(c + 1) * h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    // Output columns x whose input column x + kx − left lies inside the image.
                    let x0 = left.saturating_sub(kx).min(ow);
                    let x1 = (w + left).saturating_sub(kx).min(ow).max(x0);
                    for y in 0..oh {
                        let Some(iy) = (y + ky).checked_sub(top).filter(|&iy| iy < h) else {
                            zeros(columns, ow);
                            continue;
                        };
                        let from = iy * w + x0 + kx - left;
                        zeros(columns, x0);
                        columns.extend_from_slice(&plane[from..from + (x1 - x0)]);
                        zeros(columns, ow - x1);
                    }
                }
            }
        }
    }
}

impl Op for Im2colConv {
    fn name(&self) -> StaticName {
        "Im2colConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}→{} channels, kernel {:?}, padding {:?} {:?}",
            self.channels,
            self.bias.len(),
            self.kernel_size,
            self.pad_before,
            self.pad_after
        )])
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Im2colConv {
    tract_onnx::tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let ([n, c, h, w], x) = f32_input(&inputs[0], "Im2colConv")?;
        let x = &*x;
        ensure!(
            c == self.channels,
            "Im2colConv: {c} channels, expected {}",
            self.channels
        );
        let [oh, ow] = self.output_size(h, w);
        let outputs = self.bias.len();
        let per_output = self.kernel.shape()[1];
        let kernel = self.kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut columns = Vec::with_capacity(per_output * oh * ow);
        // Every output starts as its channel's bias.
        let mut y = Vec::with_capacity(n * outputs * oh * ow);
        for _ in 0..n {
            for &b in bias {
                y.extend(std::iter::repeat_n(b, oh * ow));
            }
        }
        for (image, out) in x
            .chunks_exact(c * h * w)
            .zip(y.chunks_exact_mut(outputs * oh * ow))
        {
            self.im2col(image, [h, w], &mut columns);
            // out[O × HW] += kernel[O × CK] · columns[CK × HW]
            matmul(
                outputs,
                oh * ow,
                per_output,
                out,
                true,
                (kernel, per_output, 1),
                (&columns, oh * ow, 1),
            );
        }
        f32_output([n, outputs, oh, ow], y)
    }
}

impl TypedOp for Im2colConv {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [n, _, h, w] = concrete_nchw(inputs[0], "Im2colConv")?;
        let [oh, ow] = self.output_size(h, w);
        Ok(tvec!(f32::fact([n, self.bias.len(), oh, ow])))
    }
}

#[cfg(test)]
mod tests {
    use crate::infer::tract_model::run_model;
    use crate::onnx::{Attr, GraphBuilder, Metadata};
    use prost::Message;

    /// One ONNX `Conv` over a fixed `[2, channels, 7, 10]` input: the output, and whether the
    /// plan uses [`super::Im2colConv`].
    fn conv(channels: usize, pads: [i64; 4], textrec: bool) -> (Vec<usize>, Vec<f32>, bool) {
        let (outputs, shape) = (5, [2, channels, 7, 10]);
        let weights: Vec<f32> = (0..outputs * channels * 9)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let bias: Vec<f32> = (0..outputs).map(|i| i as f32 * 0.1 - 0.2).collect();
        let dims: Vec<Result<i64, &str>> = shape.iter().map(|&d| Ok(d as i64)).collect();
        let mut g = GraphBuilder::new();
        g.input("x", &dims)
            .weight("w", &[outputs, channels, 3, 3], &weights)
            .weight("b", &[outputs], &bias)
            .node(
                "Conv",
                &["x", "w", "b"],
                &["y"],
                &[
                    ("kernel_shape", Attr::Ints(vec![3, 3])),
                    ("pads", Attr::Ints(pads.to_vec())),
                ],
            )
            .output("y", &[Err("n"), Err("c"), Err("h"), Err("w")]);
        let bytes = g.build("conv", &Metadata::default()).encode_to_vec();
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let (shape, y, ops) = run_model(&bytes, (&shape, x), textrec);
        (shape, y, ops.iter().any(|op| op == "Im2colConv"))
    }

    #[test]
    fn im2col_matches_tracts_convolution_with_and_without_padding() {
        for pads in [[1, 1, 1, 1], [0, 0, 0, 0], [2, 0, 1, 3]] {
            let (shape, ours, used) = conv(8, pads, true);
            let (tract_shape, tracts, _) = conv(8, pads, false);
            assert!(used, "{pads:?}: not run as im2col");
            assert_eq!(shape, tract_shape, "{pads:?}");
            let diff = ours
                .iter()
                .zip(&tracts)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-4, "{pads:?}: differs from tract by {diff}");
        }
    }

    #[test]
    fn a_convolution_with_few_inputs_per_point_stays_tracts() {
        let (_, ours, used) = conv(1, [1, 1, 1, 1], true);
        let (_, tracts, _) = conv(1, [1, 1, 1, 1], false);
        assert!(!used);
        assert_eq!(ours, tracts);
    }
}
