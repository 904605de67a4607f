//! 2-D convolutions, and the tiling max-pool (with its folded ReLU) that follows one, as one
//! op: the convolution is summed straight from the zero-padded image into a reused buffer and
//! pooled from there, so the full-size map never becomes a tensor of its own.
//!
//! Why: tract's direct spatial convolution ran the line model's second convolution at a third
//! of what a GEMM reaches (0.6 ms of a 256-px line), and im2col + GEMM, which textrec ran
//! instead, copied a megabyte of columns per line (0.2 ms; ONNX Runtime's whole convolution:
//! 0.09 ms). Here each input load feeds eight output channels' multiply-adds in registers, as
//! in a GEMM's micro-kernel, with nothing copied but the padded image; on AVX-512 the three
//! convolutions of the default line model, with their ReLUs and pools, take about 0.2 ms
//! together, where im2col + GEMM took 0.4. Each output is summed from zero in the training
//! GEMM's order and its bias added last, so an exported model stays within the export stage's
//! parity bound of Burn.

use std::cell::Cell;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::KernelFormat;
use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::op_io::{concrete_nchw, f32_input, f32_output};
use super::tiling_max_pool::TilingMaxPool;

thread_local! {
    /// Buffers a convolution leaves for the next one on the thread: the padded image and the
    /// unpooled map. Kept, their pages stay mapped; a fresh half megabyte faults in page by page.
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
    /// The `[O, C·kh·kw]` kernel as [`blocked`] lays it out, for [`direct_conv`].
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
        let kernel = blocked(&kernel, outputs);
        Ok(Some(ConvBlock {
            kernel: Arc::new(Tensor::from_shape(&[kernel.len()], &kernel)?),
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

    /// One image into `out` (`[O, oh, ow]` after pooling). `padded` and `map` are scratch.
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
        // The zero-padded image, and slack so that every block of columns reads whole.
        padded.clear();
        padded.resize(self.channels * ph * pw + MAX_COLUMN_BLOCK, 0.0);
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
        let weights = self.kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?.as_slice::<f32>()?;
        let [oh, ow] = self.conv_size(h, w);
        let sums = match self.pool {
            Some(_) => {
                map.resize(bias.len() * oh * ow, 0.0);
                &mut map[..]
            }
            None => out,
        };
        let conv = DirectConv {
            padded,
            pw,
            size: [oh, ow],
            weights,
            bias,
            offsets: &offsets,
        };
        direct_conv(conv, sums);
        if let Some(pool) = &self.pool {
            pool.pool_into(map, out, [oh, ow]);
        }
        Ok(())
    }
}

/// Output channels [`direct_conv`] sums at once.
const CHANNEL_BLOCK: usize = 8;

/// The most columns [`direct_conv`] sums at once, on any CPU.
const MAX_COLUMN_BLOCK: usize = 32;

/// `kernel` (`[O, taps]`) as `[⌈O / CHANNEL_BLOCK⌉, taps, CHANNEL_BLOCK]`, zeros past the last
/// channel: the eight weights one input value meets lie together.
fn blocked(kernel: &[f32], outputs: usize) -> Vec<f32> {
    let taps = kernel.len() / outputs;
    let blocks = outputs.div_ceil(CHANNEL_BLOCK);
    let mut blocked = vec![0.0; blocks * taps * CHANNEL_BLOCK];
    for (o, filter) in kernel.chunks_exact(taps).enumerate() {
        let (block, lane) = (o / CHANNEL_BLOCK, o % CHANNEL_BLOCK);
        for (tap, &weight) in filter.iter().enumerate() {
            blocked[(block * taps + tap) * CHANNEL_BLOCK + lane] = weight;
        }
    }
    blocked
}

/// One image's convolution, as the kernels below read it.
#[derive(Debug, Clone, Copy)]
struct DirectConv<'a> {
    /// The zero-padded image, with slack past its end for a whole block of columns.
    padded: &'a [f32],
    /// The padded image's width.
    pw: usize,
    /// The output's rows and columns.
    size: [usize; 2],
    /// The kernel as [`blocked`] lays it out.
    weights: &'a [f32],
    bias: &'a [f32],
    /// Where each tap reads in `padded` from an output's top-left corner, channel by channel,
    /// then row by row of the kernel: the training GEMM's order.
    offsets: &'a [usize],
}

/// [`direct_conv_body`] compiled for the widest vectors the CPU has.
fn direct_conv(conv: DirectConv, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for, checked just above.
            unsafe { direct_conv_avx512(conv, out) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            unsafe { direct_conv_avx2(conv, out) };
            return;
        }
    }
    direct_conv_body::<8>(conv, out);
}

/// [`direct_conv_body`] compiled for the target features `$features`, `$columns` columns at
/// once: eight channels of them fill eight AVX2 registers.
macro_rules! direct_conv_for {
    ($name:ident, $features:literal, $columns:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        fn $name(conv: DirectConv, out: &mut [f32]) {
            direct_conv_body::<$columns>(conv, out);
        }
    };
}

direct_conv_for!(direct_conv_avx2, "avx2,fma", 8);

/// Columns [`direct_conv_avx512`] sums at once: two vectors, so each broadcast weight feeds two
/// multiply-adds and the sixteen sums keep both FMA units busy.
const AVX512_COLUMNS: usize = 32;
const _: () = assert!(AVX512_COLUMNS <= MAX_COLUMN_BLOCK);

/// [`direct_conv_body`]'s sums, in its order, written with AVX-512 intrinsics: 8 channels × 32
/// columns in sixteen named registers. Compiled from the generic body, LLVM kept three of the
/// sums in memory and stored them back after every tap (0.15 ms for the line model's second
/// convolution, where the multiply-adds alone take 0.1).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn direct_conv_avx512(conv: DirectConv, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (padded, pw, [oh, ow]) = (conv.padded, conv.pw, conv.size);
    let (weights, bias, offsets) = (conv.weights, conv.bias, conv.offsets);
    let outputs = bias.len();
    let taps = offsets.len();
    let Some(&reach) = offsets.iter().max() else {
        return;
    };
    if oh == 0 || ow == 0 {
        return;
    }
    // Every vector read below starts at most here; every write ends inside its output row.
    let last_read = (oh - 1) * pw + (ow - 1) / AVX512_COLUMNS * AVX512_COLUMNS + reach;
    assert!(
        last_read + AVX512_COLUMNS <= padded.len(),
        "padded image too short"
    );
    assert!(out.len() >= outputs * oh * ow, "output too short");
    // The first `columns` lanes of a vector.
    let mask = |columns: usize| -> __mmask16 {
        if columns >= 16 {
            !0
        } else {
            (1 << columns) - 1
        }
    };
    for (block, block_weights) in weights.chunks_exact(taps * CHANNEL_BLOCK).enumerate() {
        let first = block * CHANNEL_BLOCK;
        let count = CHANNEL_BLOCK.min(outputs - first);
        let (tap_weights, _) = block_weights.as_chunks::<CHANNEL_BLOCK>();
        for y in 0..oh {
            for x0 in (0..ow).step_by(AVX512_COLUMNS) {
                // SAFETY: base + offset + 32 ≤ padded.len() for every tap, asserted above.
                let base = unsafe { padded.as_ptr().add(y * pw + x0) };
                let mut low = [_mm512_setzero_ps(); CHANNEL_BLOCK];
                let mut high = [_mm512_setzero_ps(); CHANNEL_BLOCK];
                for (&offset, w) in offsets.iter().zip(tap_weights) {
                    // SAFETY: as above.
                    let (a, b) = unsafe {
                        let source = base.add(offset);
                        (_mm512_loadu_ps(source), _mm512_loadu_ps(source.add(16)))
                    };
                    for channel in 0..CHANNEL_BLOCK {
                        let weight = _mm512_set1_ps(w[channel]);
                        low[channel] = _mm512_fmadd_ps(weight, a, low[channel]);
                        high[channel] = _mm512_fmadd_ps(weight, b, high[channel]);
                    }
                }
                let width = AVX512_COLUMNS.min(ow - x0);
                let low_mask = mask(width);
                // A constant count, so that the sums stay registers: indexed by a variable,
                // the arrays became memory.
                for channel in 0..CHANNEL_BLOCK {
                    if channel < count {
                        let bias = _mm512_set1_ps(bias[first + channel]);
                        let at = (first + channel) * oh * ow + y * ow + x0;
                        // SAFETY: the masks cover columns x0..x0 + width of this output row,
                        // inside `out` (asserted above).
                        unsafe {
                            let target = out.as_mut_ptr().add(at);
                            _mm512_mask_storeu_ps(
                                target,
                                low_mask,
                                _mm512_add_ps(low[channel], bias),
                            );
                            if width > 16 {
                                _mm512_mask_storeu_ps(
                                    target.add(16),
                                    mask(width - 16),
                                    _mm512_add_ps(high[channel], bias),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `out[o][y][x] = (Σ_tap weights[o][tap] · padded[y·pw + x + offsets[tap]]) + bias[o]`, for
/// `CHANNEL_BLOCK` channels × `COLUMNS` columns at a time, summed in registers.
///
/// The sum runs from zero over the taps in `offsets`' order and the bias comes last, as in the
/// training convolution's GEMM: summed in another order, a trained line model's outputs drifted
/// 6e-4 from Burn's through the BiLSTM, past the export stage's parity bound.
#[inline(always)]
fn direct_conv_body<const COLUMNS: usize>(conv: DirectConv, out: &mut [f32]) {
    let DirectConv {
        padded,
        pw,
        size: [oh, ow],
        weights,
        bias,
        offsets,
    } = conv;
    let outputs = bias.len();
    let taps = offsets.len();
    for (block, block_weights) in weights.chunks_exact(taps * CHANNEL_BLOCK).enumerate() {
        let first = block * CHANNEL_BLOCK;
        let count = CHANNEL_BLOCK.min(outputs - first);
        let mut block_bias = [0.0f32; CHANNEL_BLOCK];
        block_bias[..count].copy_from_slice(&bias[first..first + count]);
        for y in 0..oh {
            for x0 in (0..ow).step_by(COLUMNS) {
                let mut sums = [[0.0f32; COLUMNS]; CHANNEL_BLOCK];
                let base = y * pw + x0;
                // Whole arrays, so every loop over the block has a constant length (with a
                // slice, the sums were stored back after every tap).
                let (tap_weights, _) = block_weights.as_chunks::<CHANNEL_BLOCK>();
                for (&offset, tap_weights) in offsets.iter().zip(tap_weights) {
                    let source: &[f32; COLUMNS] = padded[base + offset..][..COLUMNS]
                        .try_into()
                        .expect("a whole block");
                    for (sum, &weight) in sums.iter_mut().zip(tap_weights) {
                        for (s, &v) in sum.iter_mut().zip(source) {
                            *s = weight.mul_add(v, *s);
                        }
                    }
                }
                let width = COLUMNS.min(ow - x0);
                for (channel, (sum, &bias)) in sums.iter().zip(&block_bias).enumerate().take(count)
                {
                    let at = (first + channel) * oh * ow + y * ow + x0;
                    // Element by element (a constant count), so that the sums stay values
                    // in registers: copying a slice of them made them memory, stored back
                    // after every tap.
                    for (o, &s) in out[at..at + width].iter_mut().zip(sum) {
                        *o = s + bias;
                    }
                }
            }
        }
    }
}

impl Op for ConvBlock {
    fn name(&self) -> StaticName {
        "ConvBlock".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = vec![format!(
            "{}→{} channels, kernel {:?}, padding {:?} {:?}",
            self.channels,
            self.bias.len(),
            self.kernel_size,
            self.pad_before,
            self.pad_after,
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
        let (mut padded, mut map) = SCRATCH.take();
        let ran = x
            .chunks_exact(c * h * w)
            .zip(y.chunks_exact_mut(outputs * oh * ow))
            .try_for_each(|(image, out)| self.direct(image, [h, w], (&mut padded, &mut map), out));
        SCRATCH.set((padded, map));
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
    use crate::onnx::{Attr, GraphBuilder, Metadata};
    use crate::tract::run_model;
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
    fn direct_sums_match_tracts_convolution_with_and_without_padding() {
        // Narrower than one block of columns, and several with a partial last one; 5 output
        // channels fill part of a block of 8.
        for size in [(1, 10), (3, 10), (8, 10), (1, 300)] {
            for pads in PADS {
                let diff = difference_from_tract(size, pads, false);
                assert!(diff < 1e-5, "{size:?}, {pads:?}: differs by {diff}");
            }
        }
    }

    #[test]
    fn every_width_of_the_kernel_sums_alike() {
        // What AVX2 and plain CPUs run (8 columns at once) against what this CPU dispatches to,
        // on 11 output channels (a block and a part) of a 3-channel 3×3 convolution, with last
        // blocks of columns partial in either half of a 32-column block, and whole.
        for width in [38, 21, 16] {
            let (outputs, pw) = (11, width + 2);
            let size = [5, width];
            let offsets: Vec<usize> = (0..3)
                .flat_map(|c| {
                    (0..3).flat_map(move |ky| (0..3).map(move |kx| c * 7 * pw + ky * pw + kx))
                })
                .collect();
            let kernel: Vec<f32> = (0..outputs * offsets.len())
                .map(|i| (i as f32 * 0.61).sin())
                .collect();
            let weights = super::blocked(&kernel, outputs);
            let bias: Vec<f32> = (0..outputs).map(|i| i as f32 * 0.3).collect();
            let padded: Vec<f32> = (0..3 * 7 * pw + super::MAX_COLUMN_BLOCK)
                .map(|i| (i as f32 * 0.23).cos())
                .collect();
            let conv = super::DirectConv {
                padded: &padded,
                pw,
                size,
                weights: &weights,
                bias: &bias,
                offsets: &offsets,
            };
            let mut narrow = vec![0.0; outputs * size[0] * size[1]];
            let mut dispatched = narrow.clone();
            super::direct_conv_body::<8>(conv, &mut narrow);
            super::direct_conv(conv, &mut dispatched);
            assert_eq!(narrow, dispatched, "{width} columns");
            // One output by hand: channel 9, row 2, the last column.
            let x = width - 1;
            let expected = offsets
                .iter()
                .zip(&kernel[9 * 27..10 * 27])
                .fold(0.0, |sum, (&offset, &w)| {
                    w.mul_add(padded[2 * pw + x + offset], sum)
                })
                + bias[9];
            assert_eq!(
                narrow[(9 * size[0] + 2) * size[1] + x],
                expected,
                "{width} columns"
            );
        }
    }

    #[test]
    fn the_relu_and_pool_after_a_convolution_run_inside_it() {
        for size in [(1, 10), (8, 10), (1, 300)] {
            for pads in PADS {
                let diff = difference_from_tract(size, pads, true);
                assert!(diff < 1e-4, "{size:?}, {pads:?}: differs by {diff}");
            }
        }
    }
}
