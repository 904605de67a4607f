//! CTC loss (Graves et al. 2006) in log space, with a CPU kernel and a backward pass of its own.
//!
//! Why not Burn's `CTCLoss` alone: its forward (alpha) recursion is a dozen tensor ops per time
//! step and autodiff records every one, so at the line model's sizes the loss cost more than
//! the network, on one core. The kernel here runs each line's alpha and beta recursions over
//! plain slices, lines in parallel, and gives the gradient from the alignment posteriors.
//! Backends without it (CUDA) keep Burn's implementation through the trait's default method.
//!
//! Determinism: every line is computed on its own, so results do not depend on the number of
//! threads.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use rayon::prelude::*;

use crate::networks::cpu::{Kernel, f32s, generic_kernels, tensor};

/// Where the loss runs: Burn's `CTCLoss` unless the backend brings a kernel.
pub trait CtcBackend: Backend {
    /// Per-line negative log-likelihood `[batch]` of `[batch, longest]` targets (padding past
    /// each length ignored) under `[steps, batch, classes]` log-probabilities; a label its line
    /// cannot hold scores zero instead of infinity (PyTorch's `zero_infinity`).
    fn ctc_nll(
        log_probs: FloatTensor<Self>,
        targets: IntTensor<Self>,
        input_lengths: &[usize],
        target_lengths: &[usize],
        blank: usize,
    ) -> FloatTensor<Self> {
        burn_ctc_nll::<Self>(log_probs, targets, input_lengths, target_lengths, blank)
    }
}

#[cfg(feature = "cuda")]
impl CtcBackend for burn::backend::Cuda {}

#[cfg(feature = "cuda")]
impl<C: CheckpointStrategy> CtcBackend for Autodiff<burn::backend::Cuda, C> {}

/// The loss through Burn's `CTCLoss` (autodiff differentiates its recursion op by op).
fn burn_ctc_nll<B: Backend>(
    log_probs: FloatTensor<B>,
    targets: IntTensor<B>,
    input_lengths: &[usize],
    target_lengths: &[usize],
    blank: usize,
) -> FloatTensor<B> {
    let log_probs = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(log_probs));
    let device = log_probs.device();
    let ints = |v: &[usize]| {
        Tensor::<B, 1, Int>::from_data(
            TensorData::new(v.iter().map(|&x| x as i64).collect(), [v.len()]),
            &device,
        )
    };
    burn::nn::loss::CTCLossConfig::new()
        .with_blank(blank)
        .with_zero_infinity(true)
        .init()
        .forward(
            log_probs,
            Tensor::from_primitive(targets),
            ints(input_lengths),
            ints(target_lengths),
        )
        .into_primitive()
        .tensor()
}

impl CtcBackend for Flex {
    fn ctc_nll(
        log_probs: FlexTensor,
        targets: FlexTensor,
        input_lengths: &[usize],
        target_lengths: &[usize],
        blank: usize,
    ) -> FlexTensor {
        let problem = Problem::of(&log_probs, &targets, input_lengths, target_lengths, blank);
        match problem.filter(|_| !generic_kernels(Kernel::Ctc)) {
            Some(problem) => problem.nll_tensor(&log_probs),
            None => burn_ctc_nll::<Flex>(log_probs, targets, input_lengths, target_lengths, blank),
        }
    }
}

impl<C: CheckpointStrategy> CtcBackend for Autodiff<Flex, C> {
    fn ctc_nll(
        log_probs: FloatTensor<Self>,
        targets: IntTensor<Self>,
        input_lengths: &[usize],
        target_lengths: &[usize],
        blank: usize,
    ) -> FloatTensor<Self> {
        /// The backward step: the gradient of the log-probabilities from the alignment posteriors.
        #[derive(Debug)]
        struct CtcStep;

        impl Backward<Flex, 1> for CtcStep {
            type State = (NodeId, Problem);
            fn backward(
                self,
                ops: Ops<(NodeId, Problem), 1>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let output_grad = grads.consume::<Flex>(&ops.node).to_contiguous();
                let (log_probs, problem) = ops.state;
                let log_probs = checkpointer
                    .retrieve_node_output::<FlexTensor>(log_probs)
                    .to_contiguous();
                if let [Some(parent)] = ops.parents {
                    let grad = problem.gradient(f32s(&log_probs), f32s(&output_grad));
                    let shape = [problem.steps, problem.batch, problem.classes];
                    grads.register::<Flex>(parent.id, tensor(grad, shape));
                }
            }
        }

        let problem = Problem::of(
            &log_probs.primitive,
            &targets,
            input_lengths,
            target_lengths,
            blank,
        );
        let Some(problem) = problem.filter(|_| !generic_kernels(Kernel::Ctc)) else {
            return burn_ctc_nll::<Self>(log_probs, targets, input_lengths, target_lengths, blank);
        };
        match CtcStep
            .prepare::<C>([log_probs.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let output = problem.nll_tensor(&log_probs.primitive);
                let state = (prep.checkpoint(&log_probs), problem);
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(problem.nll_tensor(&log_probs.primitive)),
        }
    }
}

/// One batch's sizes and labels, read off the tensors once.
#[derive(Debug, Clone)]
struct Problem {
    steps: usize,
    batch: usize,
    classes: usize,
    /// Per line: the label with a blank before, between and after its characters (CTC's `l'`).
    extended: Vec<Vec<usize>>,
    input_lengths: Vec<usize>,
}

/// `ln(Σ exp(v))` over a few values, `-∞` when all are.
fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

impl Problem {
    /// `None` where the kernel does not apply: other dtypes than f32, or lengths and labels the
    /// tensors do not hold (Burn's implementation then reports them).
    fn of(
        log_probs: &FlexTensor,
        targets: &FlexTensor,
        input_lengths: &[usize],
        target_lengths: &[usize],
        blank: usize,
    ) -> Option<Problem> {
        if log_probs.dtype() != DType::F32 {
            return None;
        }
        let [steps, batch, classes] = log_probs.shape().dims::<3>();
        let [target_rows, longest] = targets.shape().dims::<2>();
        let fits = target_rows == batch
            && input_lengths.len() == batch
            && target_lengths.len() == batch
            && blank < classes
            && input_lengths.iter().all(|&t| t <= steps)
            && target_lengths.iter().all(|&s| s <= longest);
        if !fits {
            return None;
        }
        let labels: Vec<i64> = Tensor::<Flex, 2, Int>::from_primitive(targets.clone())
            .into_data()
            .convert::<i64>()
            .to_vec()
            .ok()?;
        let mut extended = Vec::with_capacity(batch);
        for (row, &length) in labels.chunks(longest.max(1)).zip(target_lengths) {
            let mut line = vec![blank; 2 * length + 1];
            for (k, &label) in row[..length].iter().enumerate() {
                line[2 * k + 1] = usize::try_from(label).ok().filter(|&c| c < classes)?;
            }
            extended.push(line);
        }
        Some(Problem {
            steps,
            batch,
            classes,
            extended,
            input_lengths: input_lengths.to_vec(),
        })
    }

    /// [`Problem::nll`] as a `[batch]` tensor.
    fn nll_tensor(&self, log_probs: &FlexTensor) -> FlexTensor {
        let log_probs = log_probs.to_contiguous();
        let nll = self.nll(f32s(&log_probs));
        tensor(nll, [self.batch])
    }

    /// Each line's negative log-likelihood, zero where it is infinite.
    fn nll(&self, log_probs: &[f32]) -> Vec<f32> {
        (0..self.batch)
            .into_par_iter()
            .map(|n| {
                let nll = self.line(log_probs, n).nll();
                if nll.is_finite() { nll } else { 0.0 }
            })
            .collect()
    }

    /// d Σ (output_grad · nll) / d log_probs, `[steps, batch, classes]`.
    fn gradient(&self, log_probs: &[f32], output_grad: &[f32]) -> Vec<f32> {
        let lines: Vec<Vec<f32>> = (0..self.batch)
            .into_par_iter()
            .map(|n| self.line(log_probs, n).gradient(output_grad[n]))
            .collect();
        let mut grad = vec![0.0; self.steps * self.batch * self.classes];
        for (n, line) in lines.iter().enumerate() {
            for (t, row) in line.chunks(self.classes).enumerate() {
                let at = (t * self.batch + n) * self.classes;
                grad[at..at + self.classes].copy_from_slice(row);
            }
        }
        grad
    }

    fn line<'a>(&'a self, log_probs: &'a [f32], n: usize) -> Line<'a> {
        Line {
            log_probs,
            problem: self,
            n,
            steps: self.input_lengths[n],
            extended: &self.extended[n],
        }
    }
}

/// One line's recursions over its own steps.
struct Line<'a> {
    log_probs: &'a [f32],
    problem: &'a Problem,
    n: usize,
    steps: usize,
    extended: &'a [usize],
}

impl Line<'_> {
    /// `ln p(class | step t)`.
    fn log_prob(&self, t: usize, class: usize) -> f32 {
        let p = self.problem;
        self.log_probs[(t * p.batch + self.n) * p.classes + class]
    }

    /// Whether a path may skip from `l'[s - 2]` straight to `l'[s]` (a label between blanks,
    /// not repeating the label before it).
    fn can_skip(&self, s: usize) -> bool {
        s >= 2 && self.extended[s] != self.extended[s - 2]
    }

    /// `ln α_t(s)`, `[steps, |l'|]`: all prefixes of paths through `l'[s]` at step `t`.
    fn alpha(&self) -> Vec<f32> {
        let width = self.extended.len();
        let mut alpha = vec![f32::NEG_INFINITY; self.steps * width];
        if self.steps == 0 {
            return alpha;
        }
        for (a, &class) in alpha.iter_mut().zip(self.extended).take(2) {
            *a = self.log_prob(0, class);
        }
        for t in 1..self.steps {
            let (before, now) = alpha.split_at_mut(t * width);
            let before = &before[(t - 1) * width..];
            for s in 0..width {
                let mut from = [before[s], f32::NEG_INFINITY, f32::NEG_INFINITY];
                if s >= 1 {
                    from[1] = before[s - 1];
                }
                if self.can_skip(s) {
                    from[2] = before[s - 2];
                }
                now[s] = log_sum_exp(&from) + self.log_prob(t, self.extended[s]);
            }
        }
        alpha
    }

    /// `ln β_t(s)`, `[steps, |l'|]`: all suffixes of paths through `l'[s]` at step `t`.
    fn beta(&self) -> Vec<f32> {
        let width = self.extended.len();
        let mut beta = vec![f32::NEG_INFINITY; self.steps * width];
        if self.steps == 0 {
            return beta;
        }
        let last = self.steps - 1;
        for s in width.saturating_sub(2)..width {
            beta[last * width + s] = self.log_prob(last, self.extended[s]);
        }
        for t in (0..last).rev() {
            let (now, after) = beta.split_at_mut((t + 1) * width);
            let now = &mut now[t * width..];
            for s in 0..width {
                let mut from = [after[s], f32::NEG_INFINITY, f32::NEG_INFINITY];
                if s + 1 < width {
                    from[1] = after[s + 1];
                }
                if s + 2 < width && self.can_skip(s + 2) {
                    from[2] = after[s + 2];
                }
                now[s] = log_sum_exp(&from) + self.log_prob(t, self.extended[s]);
            }
        }
        beta
    }

    /// `-ln p(label)` from the last step's alpha; infinite when no path exists.
    fn nll(&self) -> f32 {
        self.nll_of(&self.alpha())
    }

    fn nll_of(&self, alpha: &[f32]) -> f32 {
        let width = self.extended.len();
        if self.steps == 0 {
            return if width == 1 { 0.0 } else { f32::INFINITY };
        }
        let last = &alpha[(self.steps - 1) * width..];
        -log_sum_exp(&last[width.saturating_sub(2)..])
    }

    /// `[steps of the batch, classes]`: `-scale · posterior(class at step t)` for this line's
    /// steps, zero past them and everywhere when the label is impossible.
    fn gradient(&self, scale: f32) -> Vec<f32> {
        let classes = self.problem.classes;
        let mut grad = vec![0.0; self.problem.steps * classes];
        let alpha = self.alpha();
        let nll = self.nll_of(&alpha);
        if !nll.is_finite() {
            return grad;
        }
        let beta = self.beta();
        let width = self.extended.len();
        for t in 0..self.steps {
            let row = &mut grad[t * classes..(t + 1) * classes];
            for (s, &class) in self.extended.iter().enumerate() {
                let at = t * width + s;
                // α and β both count step t's probability: divide one out, and p(label).
                let log_posterior = alpha[at] + beta[at] - self.log_prob(t, class) + nll;
                row[class] -= scale * log_posterior.exp();
            }
        }
        grad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::CpuTraining as B;
    use burn::tensor::Distribution;
    use burn::tensor::activation::log_softmax;

    /// Per-line losses and the logits' gradient under `nll`, for random logits and labels of
    /// every kind: repeats (which need a blank between), a label too long for its line, an empty
    /// label, lines shorter than the batch.
    fn loss_and_gradient(
        nll: impl Fn(Tensor<B, 3>, Tensor<B, 2, Int>, &[usize], &[usize]) -> Tensor<B, 1>,
    ) -> (Vec<f32>, Vec<f32>) {
        let device = Default::default();
        let _rng = crate::models::seeded_exclusively::<B>(&device, 11);
        let logits = Tensor::<B, 3>::random([9, 5, 6], Distribution::Normal(0.0, 2.0), &device)
            .require_grad();
        let targets = vec![
            1i64, 2, 2, 3, 0, 4, 4, 4, 4, 4, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 1, 2,
        ];
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [5, 5]), &device);
        let loss = nll(
            log_softmax(logits.clone(), 2),
            targets,
            &[9, 4, 7, 3, 9],
            &[4, 5, 2, 0, 5],
        );
        let mix = Tensor::<B, 1>::from_data(
            TensorData::new(vec![1.0f32, 0.5, 2.0, 1.5, 0.25], [5]),
            &device,
        );
        let grads = (loss.clone() * mix).sum().backward();
        (
            loss.into_data().to_vec().unwrap(),
            logits.grad(&grads).unwrap().into_data().to_vec().unwrap(),
        )
    }

    #[test]
    fn the_kernel_matches_burns_ctc_loss_and_its_gradient() {
        let primitive = |kernel: bool| {
            move |log_probs: Tensor<B, 3>,
                  targets: Tensor<B, 2, Int>,
                  input: &[usize],
                  target: &[usize]| {
                let (log_probs, targets) = (
                    log_probs.into_primitive().tensor(),
                    targets.into_primitive(),
                );
                let nll = if kernel {
                    B::ctc_nll(log_probs, targets, input, target, 0)
                } else {
                    burn_ctc_nll::<B>(log_probs, targets, input, target, 0)
                };
                Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(nll))
            }
        };
        let (loss, grad) = loss_and_gradient(primitive(true));
        let (want_loss, want_grad) = loss_and_gradient(primitive(false));
        // Line 1 (five labels, two repeats, in four steps) cannot be aligned: zero, not ∞.
        assert_eq!(loss[1], 0.0);
        assert!(
            loss.iter().enumerate().all(|(i, &l)| i == 1 || l > 0.1),
            "{loss:?}"
        );
        for (name, got, want) in [("loss", &loss, &want_loss), ("gradient", &grad, &want_grad)] {
            let worst = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{name}: off by {worst}\n{got:?}\n{want:?}");
        }
    }
}
