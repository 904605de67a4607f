//! Batch normalisation of `[batch, channels, height, width]` maps, applied as one scale and one
//! shift per (image, channel) row of `[batch·channels, height·width]`.
//!
//! Why not `BatchNorm::forward`: it broadcasts `[1, C, 1, 1]` statistics over the whole map
//! (sub, div, mul, add, plus two strided transposes for the statistics), and Burn's CPU backend
//! walks such broadcasts element by element; that was a third of line-training time. A
//! `[batch·channels, 1]` column over contiguous rows takes its SIMD path instead. The module,
//! its parameters and running statistics stay Burn's, so checkpoints and the ONNX export
//! (`BatchNormalization` from the running statistics) are unchanged.

use burn::nn::BatchNorm;
use burn::prelude::*;

/// Same result as `norm.forward(maps)`: batch statistics (and a running-statistics update)
/// when autodiff is on, the running statistics otherwise.
pub fn batch_norm<B: Backend>(norm: &BatchNorm<B>, maps: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, channels, height, width] = maps.dims();
    let rows = maps.reshape([batch * channels, height * width]);
    // `[C]` → `[batch·channels, 1]`, materialised (it is tiny) so the broadcast stays a column.
    let per_row = |values: Tensor<B, 1>| {
        values
            .reshape([1, channels])
            .repeat_dim(0, batch)
            .reshape([batch * channels, 1])
    };
    // `[batch·channels, 1]` row means → `[C]` channel means (every row has height·width pixels).
    let per_channel = |row_means: Tensor<B, 2>| {
        row_means
            .reshape([batch, channels])
            .mean_dim(0)
            .reshape([channels])
    };
    let (mean, variance) = if B::ad_enabled(&rows.device()) {
        let mean = per_channel(rows.clone().mean_dim(1));
        let centred = rows.clone() - per_row(mean.clone());
        let variance = per_channel(centred.square().mean_dim(1));
        let keep = 1.0 - norm.momentum;
        norm.running_mean.update(
            norm.running_mean.value_sync().mul_scalar(keep)
                + mean.clone().detach().mul_scalar(norm.momentum),
        );
        norm.running_var.update(
            norm.running_var.value_sync().mul_scalar(keep)
                + variance.clone().detach().mul_scalar(norm.momentum),
        );
        (mean, variance)
    } else {
        (norm.running_mean.value(), norm.running_var.value())
    };
    let scale = norm.gamma.val() / variance.add_scalar(norm.epsilon).sqrt();
    let shift = norm.beta.val() - mean * scale.clone();
    (rows * per_row(scale) + per_row(shift)).reshape([batch, channels, height, width])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{CpuInference, CpuTraining};
    use burn::module::{AutodiffModule, Param};
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;

    fn assert_close<const D: usize, B: Backend>(got: Tensor<B, D>, want: Tensor<B, D>) {
        let got: Vec<f32> = got.into_data().to_vec().unwrap();
        let want: Vec<f32> = want.into_data().to_vec().unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "max abs diff {worst}");
    }

    /// Training mode: the output, the gradients of input and parameters, and the running
    /// statistics all match Burn's own BatchNorm (non-trivial gamma, beta and a shifted input).
    #[test]
    fn matches_burn_batch_norm_in_training_and_inference() {
        type B = CpuTraining;
        let device = Default::default();
        let _rng = crate::models::seeded_exclusively::<B>(&device, 1);
        // Two separate modules: a clone would share its running statistics.
        let norm = || {
            let mut norm = BatchNormConfig::new(3).init::<B>(&device);
            let values = |v: [f32; 3]| {
                Param::from_tensor(Tensor::from_data(TensorData::new(v.to_vec(), [3]), &device))
            };
            norm.gamma = values([1.7, 0.3, -0.8]);
            norm.beta = values([-0.4, 0.0, 2.5]);
            norm
        };
        let (ours, burns) = (norm(), norm());
        let input = Tensor::<B, 4>::random([2, 3, 4, 5], Distribution::Normal(2.0, 3.0), &device);

        let x_ours = input.clone().detach().require_grad();
        let x_burn = input.detach().require_grad();
        let y_ours = batch_norm(&ours, x_ours.clone());
        let y_burn = burns.forward(x_burn.clone());
        assert_close(y_ours.clone(), y_burn.clone());

        // A non-uniform upstream gradient, so the mean and variance terms of the backward pass count.
        let weights = Tensor::<B, 4>::random([2, 3, 4, 5], Distribution::Default, &device);
        let grads_ours = (y_ours * weights.clone()).sum().backward();
        let grads_burn = (y_burn * weights).sum().backward();
        assert_close(
            x_ours.grad(&grads_ours).unwrap(),
            x_burn.grad(&grads_burn).unwrap(),
        );
        assert_close(
            ours.gamma.grad(&grads_ours).unwrap(),
            burns.gamma.grad(&grads_burn).unwrap(),
        );
        assert_close(
            ours.beta.grad(&grads_ours).unwrap(),
            burns.beta.grad(&grads_burn).unwrap(),
        );
        assert_close(ours.running_mean.value(), burns.running_mean.value());
        assert_close(ours.running_var.value(), burns.running_var.value());

        let ours: BatchNorm<CpuInference> = ours.valid();
        let burns: BatchNorm<CpuInference> = burns.valid();
        let input = Tensor::<CpuInference, 4>::random(
            [2, 3, 4, 5],
            Distribution::Normal(1.0, 2.0),
            &device,
        );
        assert_close(batch_norm(&ours, input.clone()), burns.forward(input));
    }
}
