//! The training path CUDA takes, run on the CPU: Burn's generic convolution, the LSTM recurrence
//! as tensor ops and Burn's CTC loss, each differentiated by autodiff, against the CPU kernels
//! ([`crate::networks::cpu`]). Each model trains a few AdamW steps both ways from the same
//! weights on the same batch; the losses and every parameter's gradient must agree, so a GPU run
//! executes code that CI has run and checked.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;

use super::char_cnn::CharTask;
use super::fit::{Task, optimizer, train_step, with_stable_ids};
use super::line_ctc::{LineTask, initial_network};
use super::line_fcn::DetectorTask;
use super::{CpuTraining, TrainOptions, seeded_exclusively};
use crate::data::batch::Batch;
use crate::networks::cpu::{Kernel, with_generic_kernels};
use crate::networks::{
    CHAR_SIDE, CharCnn, CharCnnConfig, LineCtc, LineCtcConfig, LineFcn, LineFcnConfig,
};
use crate::vocab::Vocabulary;

type B = CpuTraining;

const STEPS: usize = 3;

/// Per step: the loss, and each parameter's gradient (in the module's visiting order).
type Trace = Vec<(f64, Vec<Vec<f32>>)>;

/// `STEPS` training steps (loss, backward, AdamW) from `network` on `batch`, recording the loss
/// and gradients of each.
fn train<T: Task<B>>(task: &T, mut network: T::Network, batch: &Batch) -> Trace {
    let device = Default::default();
    let options = TrainOptions::default();
    let mut adamw = optimizer::<B, T>(&options);
    let mut trace = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let loss = task.loss(&network, batch, &device);
        let value: f64 = loss.clone().into_scalar().elem();
        let grads = loss.backward();
        let mut visitor = Gradients {
            grads: &grads,
            flat: Vec::new(),
        };
        network.visit(&mut visitor);
        trace.push((value, visitor.flat));
        let (next, _) = train_step(task, network, &mut adamw, batch, 1e-3, &device);
        network = next.expect("a finite loss");
    }
    trace
}

struct Gradients<'a> {
    grads: &'a <B as AutodiffBackend>::Gradients,
    flat: Vec<Vec<f32>>,
}

impl ModuleVisitor<B> for Gradients<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = param.val().grad(self.grads) {
            self.flat
                .push(grad.into_data().to_vec().expect("f32 gradients"));
        }
    }
}

/// Trains `network()` once through the kernels and once through the generic path and checks
/// that they agree within `tolerance` (relative to each gradient's largest value), and that
/// every kernel in `diverted` really gave way to Burn's ops.
fn assert_paths_agree<T: Task<B>>(
    task: &T,
    network: impl Fn() -> T::Network,
    batch: &Batch,
    diverted: &[Kernel],
    tolerance: f32,
) {
    let kernels = train(task, network(), batch);
    let (generic, taken) = with_generic_kernels(|| train(task, network(), batch));
    assert_eq!(taken, diverted, "the kernels that took Burn's ops");
    for (step, ((loss, grads), (generic_loss, generic_grads))) in
        kernels.iter().zip(&generic).enumerate()
    {
        assert!(
            (loss - generic_loss).abs() <= f64::from(tolerance) * loss.abs().max(1.0),
            "step {step}: loss {loss} with the kernels, {generic_loss} through Burn's ops"
        );
        assert_eq!(grads.len(), generic_grads.len(), "step {step}: parameters");
        assert!(!grads.is_empty(), "step {step}: no gradient at all");
        let largest = |grad: &[f32]| grad.iter().fold(0f32, |m, g| m.max(g.abs()));
        let step_largest = grads.iter().map(|g| largest(g)).fold(0f32, f32::max);
        for (param, (grad, generic_grad)) in grads.iter().zip(generic_grads).enumerate() {
            // A gradient that is zero in exact arithmetic (a convolution's bias before a batch
            // norm) is rounding noise both ways: measure it against the step's largest.
            let scale = largest(grad).max(1e-3 * step_largest);
            let worst = grad
                .iter()
                .zip(generic_grad)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= tolerance * scale,
                "step {step}, parameter {param}: gradients differ by {worst} (largest {scale})"
            );
        }
    }
    // The steps really trained: the loss moved.
    assert!(
        (kernels[0].0 - kernels[STEPS - 1].0).abs() > 1e-6,
        "the loss never moved: {:?}",
        kernels.iter().map(|t| t.0).collect::<Vec<_>>()
    );
}

/// `len` images `height × width` of a fixed pattern in `[0, 1]`.
fn pixels(len: usize, height: usize, width: usize) -> Vec<f32> {
    (0..len * height * width)
        .map(|i| ((i * 7919) % 251) as f32 / 250.0)
        .collect()
}

#[test]
fn the_char_model_trains_the_same_through_burns_generic_ops() {
    let device = Default::default();
    let labels: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let mut config = CharCnnConfig::new(labels.len());
    (config.channels, config.hidden) = ([4, 8], 16);
    config.dropout = 0.0;
    let batch = Batch {
        height: CHAR_SIDE,
        width: CHAR_SIDE,
        pixels: pixels(4, CHAR_SIDE, CHAR_SIDE),
        widths: vec![CHAR_SIDE; 4],
        heights: vec![CHAR_SIDE; 4],
        labels: labels.clone(),
        boxes: vec![Vec::new(); 4],
    };
    let network = || {
        let _seeded = seeded_exclusively::<B>(&device, 11);
        let network: CharCnn<B> = with_stable_ids(config.init(&device));
        network
    };
    assert_paths_agree(
        &CharTask::new(&labels, None),
        network,
        &batch,
        &[Kernel::Conv],
        1e-3,
    );
}

#[test]
fn the_line_model_trains_the_same_through_burns_generic_ops() {
    let device = Default::default();
    let vocabulary = Vocabulary::default();
    let mut config = LineCtcConfig::new(vocabulary.len());
    (config.channels, config.lstm_hidden, config.dropout) = ([4, 8, 8], 16, 0.0);
    let (height, width) = (config.height, 96);
    let batch = Batch {
        height,
        width,
        pixels: pixels(3, height, width),
        // The last line is shorter: its padding must be ignored both ways.
        widths: vec![width, width, 64],
        heights: vec![height; 3],
        labels: ["abc", "hello", "x1"].map(String::from).to_vec(),
        boxes: vec![Vec::new(); 3],
    };
    let network = || {
        let _seeded = seeded_exclusively::<B>(&device, 12);
        let network: LineCtc<B> = initial_network(&config, &device);
        network
    };
    let all = [Kernel::Conv, Kernel::Lstm, Kernel::Ctc];
    assert_paths_agree(&LineTask { vocabulary }, network, &batch, &all, 1e-3);
}

#[test]
fn the_line_detector_trains_the_same_through_burns_generic_ops() {
    let device = Default::default();
    let config = LineFcnConfig {
        channels: [4, 4, 8, 8],
        ..LineFcnConfig::default()
    };
    let (height, width) = (64, 96);
    // Light paper, two dark lines of text-like strokes, and their boxes.
    let lines = [[8u16, 10, 88, 24], [8, 36, 70, 50]];
    let page: Vec<f32> = (0..height * width)
        .map(|i| {
            let (x, y) = ((i % width) as u16, (i / width) as u16);
            let inked = lines
                .iter()
                .any(|b| (b[0]..b[2]).contains(&x) && (b[1]..b[3]).contains(&y) && x % 5 < 3);
            if inked { 0.1 } else { 0.9 }
        })
        .collect();
    let batch = Batch {
        height,
        width,
        pixels: [page.clone(), page].concat(),
        widths: vec![width; 2],
        heights: vec![height; 2],
        labels: vec![String::new(); 2],
        boxes: vec![lines.to_vec(); 2],
    };
    let network = || {
        let _seeded = seeded_exclusively::<B>(&device, 13);
        let network: LineFcn<B> = with_stable_ids(config.init(&device));
        network
    };
    let task = DetectorTask {
        scale: config.scale,
    };
    assert_paths_agree(&task, network, &batch, &[Kernel::Conv], 1e-3);
}
