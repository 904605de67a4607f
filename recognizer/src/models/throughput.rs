//! Training throughput on synthetic batches of the real shapes: each model's own loss, backward
//! pass and AdamW step (gradient clipping included) exactly as `fit` runs them, minus data
//! loading. `cargo xtask bench train` sets these numbers beside the same networks in PyTorch.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::ModelError;
use super::fit::{Task, TrainOptions, optimizer, train_step};
use crate::data::batch::Batch;

/// Samples (images or lines) per second over the timed steps.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    pub samples_per_second: f64,
    pub steps: usize,
    pub seconds: f64,
}

/// `warmup` untimed steps, then `steps` timed ones, cycling over `batches`.
pub(super) fn time_steps<B: AutodiffBackend, T: Task<B>>(
    task: &T,
    mut network: T::Network,
    batches: &[Batch],
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> Result<Throughput, ModelError> {
    let options = TrainOptions::default();
    let mut optimizer = optimizer::<B, T>(&options);
    let mut samples = 0;
    let mut started = Instant::now();
    for (step, batch) in batches.iter().cycle().take(warmup + steps).enumerate() {
        if step == warmup {
            started = Instant::now();
            samples = 0;
        }
        let (stepped, loss) = train_step(
            task,
            network,
            &mut optimizer,
            batch,
            options.learning_rate,
            device,
        );
        network = stepped.ok_or_else(|| ModelError::Invalid {
            reason: format!("the loss became {loss} at step {step} of the throughput run"),
        })?;
        samples += batch.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Throughput {
        samples_per_second: samples as f64 / seconds.max(1e-9),
        steps,
        seconds,
    })
}

/// `count` batches of `size` random images `height × width` with labels drawn from `labels`
/// (each `label_len` tokens long, joined), seeded.
pub(super) fn random_batches(
    count: usize,
    size: usize,
    height: usize,
    width: usize,
    labels: &[String],
    label_len: usize,
) -> Vec<Batch> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..count)
        .map(|_| Batch {
            height,
            width,
            pixels: (0..size * height * width)
                .map(|_| rng.random::<f32>())
                .collect(),
            widths: vec![width; size],
            heights: vec![height; size],
            labels: (0..size)
                .map(|_| {
                    (0..label_len)
                        .map(|_| labels[rng.random_range(0..labels.len())].as_str())
                        .collect()
                })
                .collect(),
            boxes: vec![Vec::new(); size],
        })
        .collect()
}
