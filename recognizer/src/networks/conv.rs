//! 2-D convolution for the networks: im2col + one GEMM per image on Burn's CPU backend, with a
//! backward pass of its own (col2im for the input gradient, GEMMs over image chunks for the
//! weight gradient).
//!
//! Why not `Conv2d::forward` alone: Burn derives the convolution gradients through generic ops
//! that swap the batch and channel axes of whole feature maps, and its CPU backend copies such
//! layouts element by element (`StridedIter`); that, not arithmetic, was most of the time of
//! CharCnn training. The module, its parameters and the ONNX export stay Burn's; backends other
//! than the CPU one (CUDA) keep Burn's convolution through the trait's default methods.
//!
//! Determinism: every image is computed on its own, and the weight and bias gradients are summed
//! over fixed chunks of images in order, so results do not depend on the number of threads.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::{Flex, FlexTensor};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{TensorMetadata, TensorPrimitive};
use rayon::prelude::*;
use std::cell::RefCell;

use super::cpu::{Kernel, f32s, generic_kernels, matmul, tensor};

/// Images whose weight gradients one GEMM chain accumulates before the chunks are summed.
const GRADIENT_CHUNK: usize = 4;

/// Gradients of one convolution; `None` where the caller did not ask for one.
#[derive(Debug)]
pub struct ConvGradients<B: Backend> {
    pub x: Option<FloatTensor<B>>,
    pub weight: Option<FloatTensor<B>>,
    pub bias: Option<FloatTensor<B>>,
}

/// Which gradients the backward pass must produce.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub x: bool,
    pub weight: bool,
    pub bias: bool,
}

/// A backend the networks run on: Burn's convolution unless the backend brings a faster one.
pub trait ConvBackend: Backend {
    fn conv2d_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, bias, options)
    }

    fn conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        wanted: Wanted,
    ) -> ConvGradients<Self> {
        burn_conv2d_backward::<Self>(x, weight, output_grad, options, wanted)
    }
}

/// The gradients as Burn's autodiff computes them.
fn burn_conv2d_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
    wanted: Wanted,
) -> ConvGradients<B> {
    let out_channels = weight.shape().dims::<4>()[0];
    let device = B::float_device(&weight);
    let dtype = weight.dtype();
    ConvGradients {
        x: wanted.x.then(|| {
            B::conv2d_x_backward(
                x.clone(),
                weight.clone(),
                output_grad.clone(),
                options.clone(),
            )
        }),
        bias: wanted.bias.then(|| {
            let bias = B::float_zeros([out_channels].into(), &device, dtype.into());
            B::conv2d_bias_backward(x.clone(), bias, output_grad.clone())
        }),
        weight: wanted
            .weight
            .then(|| B::conv2d_weight_backward(x, weight, output_grad, options)),
    }
}

#[cfg(feature = "cuda")]
impl ConvBackend for burn::backend::Cuda {}

impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    fn conv2d_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        /// The backward step; `N` is the parent count (input, weights, and the bias if any).
        #[derive(Debug)]
        struct ConvStep<const N: usize>;

        impl<B: ConvBackend, const N: usize> Backward<B, N> for ConvStep<N> {
            type State = ConvState;
            fn backward(
                self,
                ops: Ops<ConvState, N>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let output_grad = grads.consume::<B>(&ops.node);
                let (x_state, weight_state, options) = ops.state;
                let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
                let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
                let parent = |i: usize| ops.parents.get(i).cloned().flatten();
                let (node_x, node_weight, node_bias) = (parent(0), parent(1), parent(2));
                let wanted = Wanted {
                    x: node_x.is_some(),
                    weight: node_weight.is_some(),
                    bias: node_bias.is_some(),
                };
                let gradients = B::conv2d_backward(x, weight, output_grad, options, wanted);
                for (node, grad) in [
                    (node_x, gradients.x),
                    (node_weight, gradients.weight),
                    (node_bias, gradients.bias),
                ] {
                    if let (Some(node), Some(grad)) = (node, grad) {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        match bias {
            Some(bias) => {
                let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
                let kind = ConvStep::<3>.prepare::<C>(nodes).compute_bound().stateful();
                record(kind, x, weight, Some(bias.primitive), options)
            }
            None => {
                let nodes = [x.node.clone(), weight.node.clone()];
                let kind = ConvStep::<2>.prepare::<C>(nodes).compute_bound().stateful();
                record(kind, x, weight, None, options)
            }
        }
    }
}

/// Saved for the backward pass: the input, the weights and the options.
type ConvState = (NodeId, NodeId, ConvOptions<2>);

/// Runs the forward convolution and, when it is tracked, records what its backward step needs.
fn record<B, C, Step, const N: usize>(
    kind: OpsKind<Step, B, ConvState, C, N>,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<B>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: ConvBackend,
    C: CheckpointStrategy,
    Step: Backward<B, N, State = ConvState>,
{
    match kind {
        OpsKind::Tracked(mut prep) => {
            let state = (
                prep.checkpoint(&x),
                prep.checkpoint(&weight),
                options.clone(),
            );
            let output = B::conv2d_forward(x.primitive, weight.primitive, bias, options);
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::conv2d_forward(
            x.primitive,
            weight.primitive,
            bias,
            options,
        )),
    }
}

impl ConvBackend for Flex {
    fn conv2d_forward(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        let geometry = Geometry::of(&x, &weight, bias.as_ref(), &options);
        let Some(geometry) = geometry.filter(|_| !generic_kernels(Kernel::Conv)) else {
            return Flex::conv2d(x, weight, bias, options);
        };
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let bias = bias.map(|b| b.to_contiguous());
        let output = geometry.forward(f32s(&x), f32s(&weight), bias.as_ref().map(f32s));
        tensor(output, geometry.output_shape())
    }

    fn conv2d_backward(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        options: ConvOptions<2>,
        wanted: Wanted,
    ) -> ConvGradients<Flex> {
        let geometry = Geometry::of(&x, &weight, Some(&output_grad), &options);
        let Some(geometry) = geometry.filter(|_| !generic_kernels(Kernel::Conv)) else {
            return burn_conv2d_backward::<Flex>(x, weight, output_grad, options, wanted);
        };
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let output_grad = output_grad.to_contiguous();
        let (x_data, weight_data, grad) = (f32s(&x), f32s(&weight), f32s(&output_grad));
        ConvGradients {
            x: wanted
                .x
                .then(|| tensor(geometry.input_grad(weight_data, grad), x.shape())),
            weight: wanted
                .weight
                .then(|| tensor(geometry.weight_grad(x_data, grad), weight.shape())),
            bias: wanted.bias.then(|| {
                tensor(
                    geometry.bias_grad(grad),
                    Shape::new([geometry.out_channels]),
                )
            }),
        }
    }
}

/// `conv.forward(x)`, through the backend's [`ConvBackend`] convolution.
pub fn conv2d<B: ConvBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        // `Same` and uneven padding: Burn pads those itself.
        _ => return conv.forward(x),
    };
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    let output = B::conv2d_forward(
        x.into_primitive().tensor(),
        conv.weight.val().into_primitive().tensor(),
        conv.bias
            .as_ref()
            .map(|b| b.val().into_primitive().tensor()),
        options,
    );
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// One convolution's sizes: f32 NCHW maps, one group, any kernel, stride, padding, dilation.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    out_channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    out_height: usize,
    out_width: usize,
}

impl Geometry {
    /// `None` for what the kernels here do not handle (grouped convolutions, other dtypes than
    /// f32 in `x`, `weight` and `other`: the bias, or the output gradient).
    fn of(
        x: &FlexTensor,
        weight: &FlexTensor,
        other: Option<&FlexTensor>,
        options: &ConvOptions<2>,
    ) -> Option<Geometry> {
        let f32_only = [Some(x), Some(weight), other]
            .into_iter()
            .flatten()
            .all(|t| t.dtype() == burn::tensor::DType::F32);
        if options.groups != 1 || !f32_only {
            return None;
        }
        let [batch, channels, height, width] = x.shape().dims::<4>();
        let [out_channels, weight_channels, kh, kw] = weight.shape().dims::<4>();
        if weight_channels != channels {
            return None;
        }
        let out = |size: usize, k: usize, s: usize, p: usize, d: usize| {
            (size + 2 * p)
                .checked_sub(d * (k - 1) + 1)
                .map(|span| span / s + 1)
        };
        let [sh, sw] = options.stride;
        let [ph, pw] = options.padding;
        let [dh, dw] = options.dilation;
        Some(Geometry {
            batch,
            channels,
            height,
            width,
            out_channels,
            kernel: [kh, kw],
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
            out_height: out(height, kh, sh, ph, dh)?,
            out_width: out(width, kw, sw, pw, dw)?,
        })
    }

    fn output_shape(&self) -> [usize; 4] {
        [
            self.batch,
            self.out_channels,
            self.out_height,
            self.out_width,
        ]
    }

    fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Rows of the patch matrix: one per (channel, kernel row, kernel column).
    fn patch_len(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// Columns of the patch matrix: one per output pixel.
    fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    /// A 1×1 kernel at stride 1 without padding reads the image as its own patch matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// `[batch, out_channels, out_height, out_width]` = weight · patches (+ bias), per image.
    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (k, l, o) = (self.patch_len(), self.positions(), self.out_channels);
        let mut output = vec![0.0; self.batch * o * l];
        output
            .par_chunks_mut(o * l)
            .zip(x.par_chunks(self.image_len()))
            .for_each(|(out, image)| {
                // out[o×l] = weight[o×k] · patches[k×l]
                self.with_patches(image, |patches| {
                    matmul(o, l, k, out, false, (weight, k, 1), (patches, l, 1))
                });
                if let Some(bias) = bias {
                    for (row, b) in out.chunks_mut(l).zip(bias) {
                        row.iter_mut().for_each(|v| *v += b);
                    }
                }
            });
        output
    }

    /// d loss / d input: weightᵀ · output gradient, scattered back over the image (col2im).
    fn input_grad(&self, weight: &[f32], output_grad: &[f32]) -> Vec<f32> {
        let (k, l, o) = (self.patch_len(), self.positions(), self.out_channels);
        let mut grad = vec![0.0; self.batch * self.image_len()];
        grad.par_chunks_mut(self.image_len())
            .zip(output_grad.par_chunks(o * l))
            .for_each(|(image_grad, out_grad)| {
                if self.is_pointwise() {
                    matmul(k, l, o, image_grad, false, (weight, 1, k), (out_grad, l, 1));
                    return;
                }
                with_scratch(k * l, |patch_grad| {
                    // patch_grad[k×l] = weightᵀ[k×o] · out_grad[o×l]
                    matmul(k, l, o, patch_grad, false, (weight, 1, k), (out_grad, l, 1));
                    self.scatter_patches(patch_grad, image_grad);
                });
            });
        grad
    }

    /// d loss / d weight: Σ over images of output gradient · patchesᵀ, summed per fixed chunk of
    /// images and then over the chunks in order.
    fn weight_grad(&self, x: &[f32], output_grad: &[f32]) -> Vec<f32> {
        let (k, l, o) = (self.patch_len(), self.positions(), self.out_channels);
        let chunks: Vec<Vec<f32>> = x
            .par_chunks(GRADIENT_CHUNK * self.image_len())
            .zip(output_grad.par_chunks(GRADIENT_CHUNK * o * l))
            .map(|(images, out_grads)| {
                let mut sum = vec![0.0; o * k];
                for (i, (image, out_grad)) in images
                    .chunks(self.image_len())
                    .zip(out_grads.chunks(o * l))
                    .enumerate()
                {
                    // sum[o×k] += out_grad[o×l] · patchesᵀ[l×k]
                    self.with_patches(image, |patches| {
                        matmul(o, k, l, &mut sum, i > 0, (out_grad, l, 1), (patches, 1, l))
                    });
                }
                sum
            })
            .collect();
        let mut chunks = chunks.into_iter();
        let mut total = chunks.next().unwrap_or_else(|| vec![0.0; o * k]);
        for chunk in chunks {
            total.iter_mut().zip(chunk).for_each(|(t, c)| *t += c);
        }
        total
    }

    /// d loss / d bias: the output gradient summed over images and positions, per channel.
    fn bias_grad(&self, output_grad: &[f32]) -> Vec<f32> {
        let (l, o) = (self.positions(), self.out_channels);
        let mut sums = vec![0.0f64; o];
        for image in output_grad.chunks(o * l) {
            for (sum, row) in sums.iter_mut().zip(image.chunks(l)) {
                // Eight running sums, which the compiler keeps in one vector register.
                let mut lanes = [0.0f32; 8];
                let mut blocks = row.chunks_exact(8);
                for block in &mut blocks {
                    lanes.iter_mut().zip(block).for_each(|(s, v)| *s += v);
                }
                let rest: f32 = blocks.remainder().iter().sum();
                *sum += lanes.iter().map(|&v| v as f64).sum::<f64>() + rest as f64;
            }
        }
        sums.into_iter().map(|s| s as f32).collect()
    }

    /// Runs `f` on the image's patch matrix `[patch_len, positions]` (im2col), zeros where
    /// padding is read.
    fn with_patches<R>(&self, image: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
        if self.is_pointwise() {
            return f(image);
        }
        with_scratch(self.patch_len() * self.positions(), |patches| {
            patches.fill(0.0);
            self.for_each_run(|run| {
                let target = &mut patches[run.patch..run.patch + run.len];
                if run.step == 1 {
                    target.copy_from_slice(&image[run.image..run.image + run.len]);
                } else {
                    for (j, t) in target.iter_mut().enumerate() {
                        *t = image[run.image + j * run.step];
                    }
                }
            });
            f(patches)
        })
    }

    /// Adds a patch-matrix gradient back onto the image gradient (col2im).
    fn scatter_patches(&self, patch_grad: &[f32], image_grad: &mut [f32]) {
        self.for_each_run(|run| {
            let source = &patch_grad[run.patch..run.patch + run.len];
            for (j, g) in source.iter().enumerate() {
                image_grad[run.image + j * run.step] += g;
            }
        });
    }

    /// Every stretch of one patch-matrix row that reads inside the image: for each channel,
    /// kernel offset and output row, the output columns whose input column is in range.
    fn for_each_run(&self, mut visit: impl FnMut(Run)) {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [ph, pw] = self.padding;
        let [dh, dw] = self.dilation;
        let (ow, l) = (self.out_width, self.positions());
        // First output column at or after which `ox·s + shift` is ≥ 0, and the end of those < size.
        let columns = |shift: isize, stride: usize, size: usize| {
            let stride = stride as isize;
            let lo = if shift >= 0 {
                0
            } else {
                (-shift + stride - 1) / stride
            };
            let hi = (size as isize - shift + stride - 1).div_euclid(stride);
            (lo.max(0) as usize, (hi.max(0) as usize).min(ow))
        };
        for c in 0..self.channels {
            let plane = c * self.height * self.width;
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = ((c * kh + ky) * kw + kx) * l;
                    let shift_x = (kx * dw) as isize - pw as isize;
                    let (lo, hi) = columns(shift_x, sw, self.width);
                    if lo >= hi {
                        continue;
                    }
                    for oy in 0..self.out_height {
                        let iy = (oy * sh + ky * dh) as isize - ph as isize;
                        if iy < 0 || iy >= self.height as isize {
                            continue;
                        }
                        let ix = (lo * sw) as isize + shift_x;
                        visit(Run {
                            patch: row + oy * ow + lo,
                            image: plane + iy as usize * self.width + ix as usize,
                            len: hi - lo,
                            step: sw,
                        });
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Each worker's patch matrix, kept between calls: a fresh one per image costs page faults.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of `len` floats (contents unspecified).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        f(&mut scratch[..len])
    })
}

/// `patch[patch + j]` pairs with `image[image + j·step]` for `j < len`.
#[derive(Debug, Clone, Copy)]
struct Run {
    patch: usize,
    image: usize,
    len: usize,
    step: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::CpuTraining as B;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    /// The output and the gradients of x, weight and bias, through `run`.
    fn outputs(
        conv: &Conv2d<B>,
        x: &Tensor<B, 4>,
        run: impl Fn(&Conv2d<B>, Tensor<B, 4>) -> Tensor<B, 4>,
    ) -> Vec<Vec<f32>> {
        let x = x.clone().require_grad();
        let y = run(conv, x.clone());
        // A loss whose gradient differs per output element, the same for every `run`.
        let n = y.shape().num_elements();
        let weights: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
        let weights = Tensor::<B, 4>::from_data(TensorData::new(weights, y.dims()), &x.device());
        let grads = (y.clone() * weights).sum().backward();
        let values = |t: Tensor<burn::backend::Flex, 4>| t.into_data().to_vec::<f32>().unwrap();
        let mut all = vec![values(y.inner())];
        all.push(values(x.grad(&grads).expect("x gradient")));
        all.push(values(
            conv.weight.val().grad(&grads).expect("weight gradient"),
        ));
        if let Some(bias) = &conv.bias {
            let g = bias.val().grad(&grads).expect("bias gradient");
            all.push(g.into_data().to_vec::<f32>().unwrap());
        }
        all
    }

    fn agrees_with_burn(config: Conv2dConfig, input: [usize; 4]) {
        let device = Default::default();
        let _rng = crate::models::seeded_exclusively::<B>(&device, 3);
        let conv = config.init::<B>(&device);
        let x = Tensor::<B, 4>::random(input, Distribution::Default, &device);
        let ours = outputs(&conv, &x, conv2d);
        let burns = outputs(&conv, &x, |c, x| c.forward(x));
        for (what, (a, b)) in ["output", "x grad", "weight grad", "bias grad"]
            .iter()
            .zip(ours.iter().zip(&burns))
        {
            assert_eq!(a.len(), b.len(), "{what}: sizes");
            let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(b)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= 1e-5 * scale,
                "{config:?} {input:?} {what}: off by {worst}"
            );
        }
    }

    #[test]
    fn valid_padded_dilated_strided_and_pointwise_match_burn() {
        // Six images: more than one gradient chunk, the last one short.
        agrees_with_burn(Conv2dConfig::new([3, 5], [3, 3]), [6, 3, 7, 9]);
        agrees_with_burn(
            Conv2dConfig::new([2, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            [3, 2, 8, 5],
        );
        agrees_with_burn(
            Conv2dConfig::new([2, 3], [3, 3])
                .with_dilation([2, 2])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2)),
            [2, 2, 9, 11],
        );
        agrees_with_burn(
            Conv2dConfig::new([3, 4], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            [2, 3, 9, 8],
        );
        agrees_with_burn(Conv2dConfig::new([4, 3], [1, 1]), [5, 4, 6, 7]);
        agrees_with_burn(
            Conv2dConfig::new([2, 3], [3, 2]).with_bias(false),
            [2, 2, 5, 6],
        );
    }

    #[test]
    fn inference_without_autodiff_matches_burn() {
        let device = Default::default();
        let _rng = crate::models::seeded_exclusively::<burn::backend::Flex>(&device, 1);
        let conv = Conv2dConfig::new([2, 3], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<burn::backend::Flex>(&device);
        let x = Tensor::random([2, 2, 6, 5], Distribution::Default, &device);
        let ours = conv2d(&conv, x.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let burns = conv.forward(x).into_data().to_vec::<f32>().unwrap();
        let worst = ours
            .iter()
            .zip(&burns)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "off by {worst}");
    }

    #[test]
    fn an_input_that_needs_no_gradient_gets_none() {
        let device = Default::default();
        let _rng = crate::models::seeded_exclusively::<B>(&device, 1);
        let conv = Conv2dConfig::new([1, 2], [3, 3]).init::<B>(&device);
        let x = Tensor::<B, 4>::random([2, 1, 5, 5], Distribution::Default, &device);
        let grads = conv2d(&conv, x.clone()).sum().backward();
        assert!(x.grad(&grads).is_none());
        assert!(conv.weight.val().grad(&grads).is_some());
    }
}
