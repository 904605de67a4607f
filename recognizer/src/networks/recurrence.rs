//! The BiLSTM's recurrence (everything after the input projections) as one operation, with a
//! backward pass of its own on Burn's CPU backend.
//!
//! Why: in Burn tensor ops every time step of every direction is a dozen tiny ops (a
//! `[batch, 4·hidden]` matmul, slices, activations, products) and the autodiff graph as many
//! again; at the line model's sizes that bookkeeping, not arithmetic, was most of a training
//! step, and all of it on one core. Here a direction is one loop over plain slices, the two
//! directions run on two threads, and the backward pass recomputes the gates from the saved
//! inputs instead of keeping a graph node per step. Backends without a kernel (CUDA) keep the
//! tensor-op recurrence through the trait's default method.
//!
//! Determinism: each direction runs on its own in a fixed order, and the recurrent weight
//! gradient is one GEMM over all steps, so results do not depend on the number of threads.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};

use super::cpu::{Kernel, f32s, generic_kernels, matmul, tensor};
use crate::kernels::{self, LstmShape, lstm_direction};

/// A backend the BiLSTM runs on: Burn's tensor ops unless the backend brings a kernel.
pub trait LstmBackend: Backend {
    /// `[steps, batch, 4·hidden]` input projections of the forward and the backward direction
    /// (gates in ONNX order: input, output, forget, cell) and their `[hidden, 4·hidden]`
    /// recurrent weights → `[steps, batch, 2·hidden]` hidden states, forward then backward.
    fn bilstm_recurrence(
        forward: FloatTensor<Self>,
        backward: FloatTensor<Self>,
        forward_weight: FloatTensor<Self>,
        backward_weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tensor_op_primitives::<Self>(forward, backward, forward_weight, backward_weight)
    }
}

#[cfg(feature = "cuda")]
impl LstmBackend for burn::backend::Cuda {}

#[cfg(feature = "cuda")]
impl<C: CheckpointStrategy> LstmBackend for Autodiff<burn::backend::Cuda, C> {}

/// [`tensor_op_recurrence`] on primitives.
fn tensor_op_primitives<B: Backend>(
    forward: FloatTensor<B>,
    backward: FloatTensor<B>,
    forward_weight: FloatTensor<B>,
    backward_weight: FloatTensor<B>,
) -> FloatTensor<B> {
    let sequence = |t| Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(t));
    let weight = |t| Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(t));
    tensor_op_recurrence(
        sequence(forward),
        sequence(backward),
        weight(forward_weight),
        weight(backward_weight),
    )
    .into_primitive()
    .tensor()
}

/// The recurrence in Burn tensor ops, for any backend (autodiff differentiates it step by step).
pub(super) fn tensor_op_recurrence<B: Backend>(
    forward: Tensor<B, 3>,
    backward: Tensor<B, 3>,
    forward_weight: Tensor<B, 2>,
    backward_weight: Tensor<B, 2>,
) -> Tensor<B, 3> {
    Tensor::cat(
        vec![
            tensor_op_direction(forward, forward_weight, false),
            tensor_op_direction(backward, backward_weight, true),
        ],
        2,
    )
}

/// One direction: `[steps, batch, 4·hidden]` projections → `[steps, batch, hidden]` states.
fn tensor_op_direction<B: Backend>(
    projected: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    reverse: bool,
) -> Tensor<B, 3> {
    let [steps, batch, gates] = projected.dims();
    let hidden = gates / 4;
    let device = projected.device();
    let mut h = Tensor::<B, 2>::zeros([batch, hidden], &device);
    let mut c = Tensor::<B, 2>::zeros([batch, hidden], &device);
    let mut outputs: Vec<Option<Tensor<B, 2>>> = vec![None; steps];
    let mut inputs = Vec::with_capacity(steps);
    unstack(projected, &mut inputs);
    let shape = LstmShape {
        steps,
        batch,
        hidden,
    };
    for step in shape.order(reverse) {
        let gates = inputs[step].clone().reshape([batch, 4 * hidden]) + h.matmul(weight.clone());
        let sigmoids = sigmoid(gates.clone().slice([0..batch, 0..3 * hidden]));
        let candidate = tanh(gates.slice([0..batch, 3 * hidden..4 * hidden]));
        let input_gate = sigmoids.clone().slice([0..batch, 0..hidden]);
        let output_gate = sigmoids.clone().slice([0..batch, hidden..2 * hidden]);
        let forget_gate = sigmoids.slice([0..batch, 2 * hidden..3 * hidden]);
        c = forget_gate * c + input_gate * candidate;
        h = output_gate * tanh(c.clone());
        outputs[step] = Some(h.clone());
    }
    Tensor::stack(outputs.into_iter().flatten().collect(), 0)
}

/// Splits `[steps, …]` into its steps by halving: the gradient of a slice is a zero tensor the
/// size of what was sliced, so slicing step by step costs O(steps²) in the backward pass and
/// halving costs O(steps · log steps).
fn unstack<B: Backend>(sequence: Tensor<B, 3>, out: &mut Vec<Tensor<B, 3>>) {
    let [steps, batch, width] = sequence.dims();
    if steps <= 1 {
        out.push(sequence);
        return;
    }
    let middle = steps / 2;
    unstack(sequence.clone().slice([0..middle, 0..batch, 0..width]), out);
    unstack(sequence.slice([middle..steps, 0..batch, 0..width]), out);
}

impl LstmBackend for Flex {
    fn bilstm_recurrence(
        forward: FlexTensor,
        backward: FlexTensor,
        forward_weight: FlexTensor,
        backward_weight: FlexTensor,
    ) -> FlexTensor {
        let dims = Dims::of([&forward, &backward, &forward_weight, &backward_weight]);
        let Some(dims) = dims.filter(|_| !generic_kernels(Kernel::Lstm)) else {
            return tensor_op_primitives::<Flex>(
                forward,
                backward,
                forward_weight,
                backward_weight,
            );
        };
        let [x_f, x_b, r_f, r_b] =
            [forward, backward, forward_weight, backward_weight].map(|t| t.to_contiguous());
        let (trace_f, trace_b) = rayon::join(
            || dims.run(f32s(&x_f), f32s(&r_f), false),
            || dims.run(f32s(&x_b), f32s(&r_b), true),
        );
        tensor(
            dims.interleave(&trace_f.hidden, &trace_b.hidden),
            [dims.steps, dims.batch, 2 * dims.hidden],
        )
    }
}

impl<C: CheckpointStrategy> LstmBackend for Autodiff<Flex, C> {
    fn bilstm_recurrence(
        forward: FloatTensor<Self>,
        backward: FloatTensor<Self>,
        forward_weight: FloatTensor<Self>,
        backward_weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        /// The backward step over the four parents: both projections, both recurrent weights.
        #[derive(Debug)]
        struct RecurrenceStep;

        impl Backward<Flex, 4> for RecurrenceStep {
            type State = [NodeId; 4];
            fn backward(
                self,
                ops: Ops<[NodeId; 4], 4>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let output_grad = grads.consume::<Flex>(&ops.node).to_contiguous();
                let inputs = ops.state.map(|node| {
                    checkpointer
                        .retrieve_node_output::<FlexTensor>(node)
                        .to_contiguous()
                });
                let gradients = recurrence_gradients(&inputs, &output_grad);
                for (parent, grad) in ops.parents.into_iter().zip(gradients) {
                    if let Some(parent) = parent {
                        grads.register::<Flex>(parent.id, grad);
                    }
                }
            }
        }

        let parents = [&forward, &backward, &forward_weight, &backward_weight];
        if generic_kernels(Kernel::Lstm) || Dims::of(parents.map(|t| &t.primitive)).is_none() {
            return tensor_op_primitives::<Self>(
                forward,
                backward,
                forward_weight,
                backward_weight,
            );
        }
        let nodes = parents.map(|t| t.node.clone());
        match RecurrenceStep
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = parents.map(|t| prep.checkpoint(t));
                let output = Flex::bilstm_recurrence(
                    forward.primitive,
                    backward.primitive,
                    forward_weight.primitive,
                    backward_weight.primitive,
                );
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::bilstm_recurrence(
                forward.primitive,
                backward.primitive,
                forward_weight.primitive,
                backward_weight.primitive,
            )),
        }
    }
}

/// Gradients of the projections and recurrent weights (in that order, forward direction first)
/// given the output's gradient.
fn recurrence_gradients(inputs: &[FlexTensor; 4], output_grad: &FlexTensor) -> [FlexTensor; 4] {
    let [x_f, x_b, r_f, r_b] = inputs;
    let dims = Dims::of([x_f, x_b, r_f, r_b]).expect("checked when the step was recorded");
    assert_eq!(output_grad.dtype(), DType::F32, "the output is f32");
    let out_grad = f32s(output_grad);
    let ((dx_f, dr_f), (dx_b, dr_b)) = rayon::join(
        || dims.backward(f32s(x_f), f32s(r_f), out_grad, false),
        || dims.backward(f32s(x_b), f32s(r_b), out_grad, true),
    );
    let sequence = [dims.steps, dims.batch, 4 * dims.hidden];
    let weight = [dims.hidden, 4 * dims.hidden];
    [
        tensor(dx_f, sequence),
        tensor(dx_b, sequence),
        tensor(dr_f, weight),
        tensor(dr_b, weight),
    ]
}

/// What one direction's forward pass computed, in time order: hidden states and cells
/// `[steps, batch, hidden]`, activated gates `[steps, batch, 4·hidden]`.
#[derive(Debug)]
struct Trace {
    hidden: Vec<f32>,
    cells: Vec<f32>,
    gates: Vec<f32>,
}

/// The recurrence's sizes (the shared kernel's, with what training adds).
type Dims = LstmShape;

impl Dims {
    /// `None` unless all four are f32 with the shapes of one recurrence.
    fn of([x_f, x_b, r_f, r_b]: [&FlexTensor; 4]) -> Option<Dims> {
        if [x_f, x_b, r_f, r_b].iter().any(|t| t.dtype() != DType::F32) {
            return None;
        }
        let [steps, batch, gates] = x_f.shape().dims::<3>();
        let hidden = gates / 4;
        let sequence = [steps, batch, 4 * hidden];
        let weight = [hidden, 4 * hidden];
        (gates == 4 * hidden
            && hidden > 0
            && x_b.shape().dims::<3>() == sequence
            && r_f.shape().dims::<2>() == weight
            && r_b.shape().dims::<2>() == weight)
            .then_some(Dims {
                steps,
                batch,
                hidden,
            })
    }

    /// One direction over `x` (`[steps, batch, 4·hidden]`) with recurrent weights `r`.
    fn run(self, x: &[f32], r: &[f32], reverse: bool) -> Trace {
        let mut gates = x.to_vec();
        let mut hidden = vec![0.0; self.steps * self.state_len()];
        let mut cells = vec![0.0; self.steps * self.state_len()];
        lstm_direction(self, &mut gates, r, reverse, &mut hidden, &mut cells);
        Trace {
            hidden,
            cells,
            gates,
        }
    }

    /// Gradients of one direction's projections and recurrent weights, given the gradient of the
    /// whole `[steps, batch, 2·hidden]` output (this direction's half read from it). Recomputes
    /// the forward pass first.
    fn backward(
        self,
        x: &[f32],
        r: &[f32],
        output_grad: &[f32],
        reverse: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let trace = self.run(x, r, reverse);
        let (b, h) = (self.batch, self.hidden);
        let (sl, gl) = (self.state_len(), self.gates_len());
        let column = if reverse { h } else { 0 };
        let order: Vec<usize> = self.order(reverse).collect();
        let mut gate_grads = vec![0.0; self.steps * gl];
        // Gradients reaching h and c of the step just processed from the step after it.
        let mut h_grad = vec![0.0; sl];
        let mut c_grad = vec![0.0; sl];
        for (k, &t) in order.iter().enumerate().rev() {
            let previous = k.checked_sub(1).map(|k| order[k]);
            let step_grads = &mut gate_grads[t * gl..(t + 1) * gl];
            for row in 0..b {
                let g = &trace.gates[t * gl + row * 4 * h..t * gl + (row + 1) * 4 * h];
                let dg = &mut step_grads[row * 4 * h..(row + 1) * 4 * h];
                for j in 0..h {
                    let at = row * h + j;
                    let (i, o, f, cand) = (g[j], g[h + j], g[2 * h + j], g[3 * h + j]);
                    let dh = output_grad[(t * b + row) * 2 * h + column + j] + h_grad[at];
                    let tc = kernels::tanh(trace.cells[t * sl + at]);
                    let c_prev = previous.map_or(0.0, |p| trace.cells[p * sl + at]);
                    let dc = c_grad[at] + dh * o * (1.0 - tc * tc);
                    dg[j] = dc * cand * i * (1.0 - i);
                    dg[h + j] = dh * tc * o * (1.0 - o);
                    dg[2 * h + j] = dc * c_prev * f * (1.0 - f);
                    dg[3 * h + j] = dc * i * (1.0 - cand * cand);
                    c_grad[at] = dc * f;
                }
            }
            if previous.is_some() {
                // h_grad[b×h] = gate_grads[b×4h] · rᵀ[4h×h]
                matmul(
                    b,
                    h,
                    4 * h,
                    &mut h_grad,
                    false,
                    (step_grads, 4 * h, 1),
                    (r, 1, 4 * h),
                );
            }
        }
        // r_grad[h×4h] = Σ over steps of h_prevᵀ[h×b] · gate_grads[b×4h], as one GEMM.
        let mut previous_hidden = vec![0.0; self.steps * sl];
        for pair in order.windows(2) {
            let (p, t) = (pair[0], pair[1]);
            previous_hidden[t * sl..(t + 1) * sl]
                .copy_from_slice(&trace.hidden[p * sl..(p + 1) * sl]);
        }
        let mut r_grad = vec![0.0; h * 4 * h];
        let rows = self.steps * b;
        matmul(
            h,
            4 * h,
            rows,
            &mut r_grad,
            false,
            (&previous_hidden, 1, h),
            (&gate_grads, 4 * h, 1),
        );
        (gate_grads, r_grad)
    }

    /// `[steps, batch, 2·hidden]` from the two directions' `[steps, batch, hidden]` states.
    fn interleave(self, forward: &[f32], backward: &[f32]) -> Vec<f32> {
        let h = self.hidden;
        let mut out = Vec::with_capacity(2 * forward.len());
        for (f, b) in forward.chunks(h).zip(backward.chunks(h)) {
            out.extend_from_slice(f);
            out.extend_from_slice(b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::CpuTraining as B;
    use burn::tensor::Distribution;

    /// The output and the four input gradients, under a loss whose gradient differs per element.
    fn outputs(
        inputs: &[Tensor<B, 3>; 2],
        weights: &[Tensor<B, 2>; 2],
        run: impl Fn([Tensor<B, 3>; 2], [Tensor<B, 2>; 2]) -> Tensor<B, 3>,
    ) -> Vec<Vec<f32>> {
        let xs = inputs.clone().map(|t| t.require_grad());
        let rs = weights.clone().map(|t| t.require_grad());
        let y = run(xs.clone(), rs.clone());
        let n = y.shape().num_elements();
        let mix: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let mix = Tensor::<B, 3>::from_data(TensorData::new(mix, y.dims()), &y.device());
        let grads = (y.clone() * mix).sum().backward();
        let mut all = vec![y.inner().into_data().to_vec::<f32>().unwrap()];
        for x in &xs {
            all.push(x.grad(&grads).unwrap().into_data().to_vec().unwrap());
        }
        for r in &rs {
            all.push(r.grad(&grads).unwrap().into_data().to_vec().unwrap());
        }
        all
    }

    #[test]
    fn the_kernel_matches_the_tensor_op_recurrence_and_its_gradients() {
        // A small case, and one with batch ≥ 5 and hidden ≥ 64, where the kernel sums a
        // step's rows with the GEMM instead of row by row.
        agrees_with_tensor_ops(7, 3, 5);
        agrees_with_tensor_ops(9, 6, 64);
    }

    fn agrees_with_tensor_ops(steps: usize, batch: usize, hidden: usize) {
        let device = Default::default();
        let _rng = crate::models::seeded_exclusively::<B>(&device, 5);
        let x = || {
            Tensor::<B, 3>::random(
                [steps, batch, 4 * hidden],
                Distribution::Normal(0.0, 1.0),
                &device,
            )
        };
        let r = || {
            Tensor::<B, 2>::random(
                [hidden, 4 * hidden],
                Distribution::Normal(0.0, 0.5),
                &device,
            )
        };
        let (inputs, weights) = ([x(), x()], [r(), r()]);
        let kernel = outputs(&inputs, &weights, |[xf, xb], [rf, rb]| {
            Tensor::from_primitive(TensorPrimitive::Float(B::bilstm_recurrence(
                xf.into_primitive().tensor(),
                xb.into_primitive().tensor(),
                rf.into_primitive().tensor(),
                rb.into_primitive().tensor(),
            )))
        });
        let reference = outputs(&inputs, &weights, |[xf, xb], [rf, rb]| {
            tensor_op_recurrence(xf, xb, rf, rb)
        });
        let names = [
            "output",
            "forward x",
            "backward x",
            "forward r",
            "backward r",
        ];
        for ((got, want), name) in kernel.iter().zip(&reference).zip(names) {
            assert_eq!(got.len(), want.len(), "{name}");
            let worst = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let largest = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            assert!(
                worst < 1e-5 * largest,
                "{name} (steps {steps}, batch {batch}, hidden {hidden}): off by {worst}"
            );
            assert!(got.iter().any(|v| v.abs() > 1e-3), "{name} is all zero");
        }
    }
}
