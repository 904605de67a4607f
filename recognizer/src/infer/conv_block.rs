//! 2-D convolutions, and the tiling max-pool (with its folded ReLU) that follows one, as one
//! op: the convolution is summed into a reused buffer and pooled from there, so the full-size
//! map never becomes a tensor of its own.
//!
//! Why: on a 256-px line the line model's first convolution map is 512 KB. As a tensor it was
//! written, read back by the pool, and its fresh pages faulted in on every run: 0.05 ms in
//! tract's direct convolution and 0.03 ms in the pool, where summing one output channel at a
//! time and pooling it while it sits in L1 costs less than either. Convolutions with many
//! inputs per output point run as im2col + one GEMM per image on the kernels training uses
//! ([`crate::kernels::matmul`]): tract's direct convolution ran the second one at a third of
//! what the GEMM reaches (0.6 ms of a 256-px line; ONNX Runtime 0.2 ms).

use std::cell::Cell;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::KernelFormat;
use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::tiling_max_pool::TilingMaxPool;
use super::tract_model::{concrete_nchw, f32_input, f32_output};
use crate::kernels::matmul;

/// From this many inputs per output point (channels × kernel taps) im2col + GEMM wins; below
/// it, summing the taps directly does.
const MIN_IM2COL_INPUTS_PER_POINT: usize = 64;

thread_local! {
    /// Buffers a convolution leaves for the next one on the thread: im2col's columns and the
    /// unpooled map. Kept, their pages stay mapped; a fresh megabyte faults in page by page.
    static SCRATCH: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Replaces every tract `Conv` of `model` that [`ConvBlock`] covers, with the [`TilingMaxPool`]
/// that alone reads its output when there is one; other convolutions are left alone. Runs after
/// [`super::tiling_max_pool::tile_max_pools`].
pub(crate) fn conv_blocks(model: &mut TypedModel) -> TractResult<()> {
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(mut op) = ConvBlock::for_conv(conv, model, &node.inputs)? else {
            continue;
        };
        let read_outside = model.output_outlets()?.contains(&id.into());
        let pool = model
            .single_succ(id)?
            .filter(|_| !read_outside)
            .and_then(|next| Some((next.id, next.op_as::<TilingMaxPool>()?.clone())));
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, node.inputs[0])?;
        let replaced = match pool {
            Some((next, pool)) => {
                op.pool = Some(pool);
                next
            }
            None => id,
        };
        let y = patch.wire_node(&node.name, op, &[x])?;
        patch.shunt_outside(model, replaced.into(), y[0])?;
        patch.apply(model)?;
    }
    Ok(())
}

/// `[N, C, H, W]` → `[N, O, H', W']`, stride 1, no dilation, explicit zero padding; then pooled
/// by `pool` when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConvBlock {
    /// `[O, C·kh·kw]`.
    kernel: Arc<Tensor>,
    /// `[O]`.
    bias: Arc<Tensor>,
    channels: usize,
    kernel_size: [usize; 2],
    /// Rows and columns of zeros before and after: `[top, left]`, `[bottom, right]`.
    pad_before: [usize; 2],
    pad_after: [usize; 2],
    pool: Option<TilingMaxPool>,
}

impl ConvBlock {
    fn for_conv(
        conv: &Conv,
        model: &TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<Option<ConvBlock>> {
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
        Ok(Some(ConvBlock {
            kernel: Arc::new(Tensor::from_shape(&[outputs, per_output], &kernel)?),
            bias: Arc::new(Tensor::from_shape(&[outputs], &bias)?),
            channels,
            kernel_size: [kh, kw],
            pad_before,
            pad_after,
            pool: None,
        }))
    }

    /// The convolution's output size for an `h × w` input, before any pooling.
    fn conv_size(&self, h: usize, w: usize) -> [usize; 2] {
        [
            h + self.pad_before[0] + self.pad_after[0] + 1 - self.kernel_size[0],
            w + self.pad_before[1] + self.pad_after[1] + 1 - self.kernel_size[1],
        ]
    }

    /// The op's output size for an `h × w` input.
    fn output_size(&self, h: usize, w: usize) -> [usize; 2] {
        let size = self.conv_size(h, w);
        self.pool
            .as_ref()
            .map_or(size, |pool| pool.output_size(size))
    }

    fn inputs_per_point(&self) -> usize {
        self.kernel.shape()[1]
    }

    /// `columns[(c·kh + ky)·kw + kx][y·ow + x]` = the input under tap (ky, kx) of output (y, x).
    /// Written in order into the emptied `columns`, so its buffer is never zeroed first.
    fn im2col(&self, image: &[f32], [h, w]: [usize; 2], columns: &mut Vec<f32>) {
        let [kh, kw] = self.kernel_size;
        let [oh, ow] = self.conv_size(h, w);
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

    /// One image through im2col and one GEMM, into `out` (`[O, oh, ow]` after pooling), the
    /// unpooled map in `map` when there is a pool.
    fn by_gemm(
        &self,
        image: &[f32],
        [h, w]: [usize; 2],
        (columns, map): (&mut Vec<f32>, &mut Vec<f32>),
        out: &mut [f32],
    ) -> TractResult<()> {
        let [oh, ow] = self.conv_size(h, w);
        let kernel = self.kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?.as_slice::<f32>()?;
        let per_output = self.inputs_per_point();
        self.im2col(image, [h, w], columns);
        let sums = match self.pool {
            Some(_) => {
                map.resize(bias.len() * oh * ow, 0.0);
                &mut map[..]
            }
            None => out,
        };
        // Every output starts as its channel's bias.
        for (plane, &b) in sums.chunks_exact_mut(oh * ow).zip(bias) {
            plane.fill(b);
        }
        // sums[O × HW] += kernel[O × CK] · columns[CK × HW]
        matmul(
            bias.len(),
            oh * ow,
            per_output,
            sums,
            true,
            (kernel, per_output, 1),
            (columns, oh * ow, 1),
        );
        if let Some(pool) = &self.pool {
            pool.pool_into(map, out, [oh, ow]);
        }
        Ok(())
    }

    /// One image summed tap by tap, one output channel at a time, each pooled (when there is a
    /// pool) while it sits in L1: for few inputs per point, where im2col's copies would cost
    /// more than the sums. `padded` and `map` are scratch.
    fn direct(
        &self,
        image: &[f32],
        [h, w]: [usize; 2],
        (padded, map): (&mut Vec<f32>, &mut Vec<f32>),
        out: &mut [f32],
    ) -> TractResult<()> {
        let [kh, kw] = self.kernel_size;
        let [top, left] = self.pad_before;
        let (ph, pw) = (h + top + self.pad_after[0], w + left + self.pad_after[1]);
        // The zero-padded image, and a block of slack so that every block reads whole.
        padded.clear();
        padded.resize(self.channels * ph * pw + DIRECT_BLOCK, 0.0);
        for c in 0..self.channels {
            for y in 0..h {
                let at = c * ph * pw + (y + top) * pw + left;
                padded[at..at + w].copy_from_slice(&image[(c * h + y) * w..(c * h + y + 1) * w]);
            }
        }
        let offsets: Vec<usize> = (0..self.channels)
            .flat_map(|c| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (c, ky, kx))))
            .map(|(c, ky, kx)| c * ph * pw + ky * pw + kx)
            .collect();
        let kernel = self.kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?.as_slice::<f32>()?;
        let [oh, ow] = self.conv_size(h, w);
        let [poh, pow] = self.output_size(h, w);
        map.resize(oh * ow, 0.0);
        let taps = offsets.len();
        for ((weights, &b), out) in kernel
            .chunks_exact(taps)
            .zip(bias)
            .zip(out.chunks_exact_mut(poh * pow))
        {
            match &self.pool {
                Some(pool) => {
                    direct_conv(padded, pw, [oh, ow], (weights, b), &offsets, map);
                    pool.pool_into(map, out, [oh, ow]);
                }
                None => direct_conv(padded, pw, [oh, ow], (weights, b), &offsets, out),
            }
        }
        Ok(())
    }
}

/// Output columns summed at once by [`direct_conv`]: eight AVX-512 registers.
const DIRECT_BLOCK: usize = 128;

/// [`direct_conv_body`] compiled for the widest vectors the CPU has.
fn direct_conv(
    padded: &[f32],
    pw: usize,
    size: [usize; 2],
    filter: (&[f32], f32),
    offsets: &[usize],
    plane: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for, checked just above.
            unsafe { direct_conv_avx512(padded, pw, size, filter, offsets, plane) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            unsafe { direct_conv_avx2(padded, pw, size, filter, offsets, plane) };
            return;
        }
    }
    direct_conv_body::<64>(padded, pw, size, filter, offsets, plane);
}

/// [`direct_conv_body`] compiled for the target features `$features`, `$block` columns at once.
macro_rules! direct_conv_for {
    ($name:ident, $features:literal, $block:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        fn $name(
            padded: &[f32],
            pw: usize,
            size: [usize; 2],
            filter: (&[f32], f32),
            offsets: &[usize],
            plane: &mut [f32],
        ) {
            direct_conv_body::<{ $block }>(padded, pw, size, filter, offsets, plane);
        }
    };
}

direct_conv_for!(direct_conv_avx512, "avx512f,avx2,fma", DIRECT_BLOCK);
direct_conv_for!(direct_conv_avx2, "avx2,fma", 64);

/// `plane[y][x] = bias + Σ_tap weights[tap] · padded[y·pw + x + offsets[tap]]` for one output
/// channel `filter = (weights, bias)`, `BLOCK` columns at a time, summed in registers.
#[inline(always)]
fn direct_conv_body<const BLOCK: usize>(
    padded: &[f32],
    pw: usize,
    [oh, ow]: [usize; 2],
    (weights, bias): (&[f32], f32),
    offsets: &[usize],
    plane: &mut [f32],
) {
    for (y, row) in plane[..oh * ow].chunks_exact_mut(ow).enumerate() {
        for x0 in (0..ow).step_by(BLOCK) {
            let mut sum = [bias; BLOCK];
            let base = y * pw + x0;
            for (&offset, &weight) in offsets.iter().zip(weights) {
                let source: &[f32; BLOCK] = padded[base + offset..base + offset + BLOCK]
                    .try_into()
                    .expect("a whole block");
                for (s, &v) in sum.iter_mut().zip(source) {
                    *s = weight.mul_add(v, *s);
                }
            }
            let width = BLOCK.min(ow - x0);
            row[x0..x0 + width].copy_from_slice(&sum[..width]);
        }
    }
}

impl Op for ConvBlock {
    fn name(&self) -> StaticName {
        "ConvBlock".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = vec![format!(
            "{}→{} channels, kernel {:?}, padding {:?} {:?}, {}",
            self.channels,
            self.bias.len(),
            self.kernel_size,
            self.pad_before,
            self.pad_after,
            if self.inputs_per_point() < MIN_IM2COL_INPUTS_PER_POINT {
                "direct"
            } else {
                "im2col + GEMM"
            }
        )];
        if let Some(pool) = &self.pool {
            info.extend(pool.info()?);
        }
        Ok(info)
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for ConvBlock {
    tract_onnx::tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let ([n, c, h, w], x) = f32_input(&inputs[0], "ConvBlock")?;
        ensure!(
            c == self.channels,
            "ConvBlock: {c} channels, expected {}",
            self.channels
        );
        let [oh, ow] = self.output_size(h, w);
        let outputs = self.bias.len();
        let mut y = vec![0.0; n * outputs * oh * ow];
        let (mut first, mut second) = SCRATCH.take();
        let direct = self.inputs_per_point() < MIN_IM2COL_INPUTS_PER_POINT;
        let ran = x
            .chunks_exact(c * h * w)
            .zip(y.chunks_exact_mut(outputs * oh * ow))
            .try_for_each(|(image, out)| {
                let scratch = (&mut first, &mut second);
                if direct {
                    self.direct(image, [h, w], scratch, out)
                } else {
                    self.by_gemm(image, [h, w], scratch, out)
                }
            });
        SCRATCH.set((first, second));
        ran?;
        f32_output([n, outputs, oh, ow], y)
    }
}

impl TypedOp for ConvBlock {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [n, _, h, w] = concrete_nchw(inputs[0], "ConvBlock")?;
        let [oh, ow] = self.output_size(h, w);
        Ok(tvec!(f32::fact([n, self.bias.len(), oh, ow])))
    }
}

#[cfg(test)]
mod tests {
    use crate::infer::tract_model::run_model;
    use crate::onnx::{Attr, GraphBuilder, Metadata};
    use prost::Message;

    /// One ONNX `Conv` (followed by a `Relu` and a 2×2 `MaxPool` if `pooled`) over a fixed
    /// `[2, channels, 7, width]` input: the output, and the plan's ops.
    fn conv(
        (channels, width): (usize, usize),
        pads: [i64; 4],
        pooled: bool,
        textrec: bool,
    ) -> (Vec<usize>, Vec<f32>, Vec<String>) {
        let (outputs, shape) = (5, [2, channels, 7, width]);
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
            );
        let output = if pooled {
            g.node("Relu", &["y"], &["rectified"], &[]).node(
                "MaxPool",
                &["rectified"],
                &["pooled"],
                &[
                    ("kernel_shape", Attr::Ints(vec![2, 2])),
                    ("strides", Attr::Ints(vec![2, 2])),
                ],
            );
            "pooled"
        } else {
            "y"
        };
        g.output(output, &[Err("n"), Err("c"), Err("h"), Err("w")]);
        let bytes = g.build("conv", &Metadata::default()).encode_to_vec();
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        run_model(&bytes, (&shape, x), textrec)
    }

    /// The largest difference between textrec's and tract's run of [`conv`]; asserts that
    /// textrec ran it as one op.
    fn difference_from_tract(size: (usize, usize), pads: [i64; 4], pooled: bool) -> f32 {
        let (shape, ours, ops) = conv(size, pads, pooled, true);
        let (tract_shape, tracts, _) = conv(size, pads, pooled, false);
        assert_eq!(ops, ["Source", "ConvBlock"], "{size:?}, {pads:?}");
        assert_eq!(shape, tract_shape, "{size:?}, {pads:?}");
        if pooled {
            assert!(
                ours.contains(&0.0),
                "{size:?}, {pads:?}: nothing was rectified"
            );
        }
        ours.iter()
            .zip(&tracts)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// Paddings: none, even, uneven.
    const PADS: [[i64; 4]; 3] = [[1, 1, 1, 1], [0, 0, 0, 0], [2, 0, 1, 3]];

    #[test]
    fn im2col_matches_tracts_convolution_with_and_without_padding() {
        for pads in PADS {
            let diff = difference_from_tract((8, 10), pads, false);
            assert!(diff < 1e-4, "{pads:?}: differs from tract by {diff}");
        }
    }

    #[test]
    fn direct_sums_match_tracts_convolution_with_and_without_padding() {
        // Narrower than one block of columns, and three blocks with a partial last one.
        for size in [(1, 10), (3, 10), (1, 300)] {
            for pads in PADS {
                let diff = difference_from_tract(size, pads, false);
                assert!(diff < 1e-5, "{size:?}, {pads:?}: differs by {diff}");
            }
        }
    }

    #[test]
    fn the_relu_and_pool_after_a_convolution_run_inside_it() {
        // Both ways of summing: direct (1 channel) and im2col (8).
        for size in [(1, 10), (8, 10), (1, 300)] {
            for pads in PADS {
                let diff = difference_from_tract(size, pads, true);
                assert!(diff < 1e-4, "{size:?}, {pads:?}: differs by {diff}");
            }
        }
    }
}
