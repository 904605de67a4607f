//! A bidirectional LSTM laid out the way ONNX's `LSTM` operator stores it: the four gates of a
//! direction are fused into one `[input, 4·hidden]` input projection and one `[hidden, 4·hidden]`
//! recurrent projection, in ONNX gate order (input, output, forget, cell).
//!
//! Why not `burn::nn::BiLstm`: it runs eight small matmuls per time step; here the input
//! projection of every step is one matmul over the whole sequence, the recurrence is one
//! operation (a CPU kernel, see `recurrence.rs`), and the export is a transpose per weight
//! instead of a re-shuffle.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;

use super::recurrence::LstmBackend;

#[derive(Config, Debug)]
pub struct BiLstmConfig {
    pub input: usize,
    pub hidden: usize,
}

/// One direction: `gates = x·W + b + h·R`.
#[derive(Module, Debug)]
pub struct LstmDirection<B: Backend> {
    /// `[input, 4·hidden]` weights and `[4·hidden]` bias (ONNX `W`, `Wb`).
    pub input: Linear<B>,
    /// `[hidden, 4·hidden]`, no bias (ONNX `R`; `Rb` is zero).
    pub recurrent: Linear<B>,
}

#[derive(Module, Debug)]
pub struct BiLstm<B: Backend> {
    pub forward: LstmDirection<B>,
    pub backward: LstmDirection<B>,
    pub hidden: usize,
}

impl BiLstmConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> BiLstm<B> {
        BiLstm {
            forward: self.direction(device),
            backward: self.direction(device),
            hidden: self.hidden,
        }
    }

    fn direction<B: Backend>(&self, device: &B::Device) -> LstmDirection<B> {
        let h = self.hidden;
        let mut input = LinearConfig::new(self.input, 4 * h).init(device);
        // Forget-gate bias 1: the usual start, so early gradients flow through time.
        let bias: Vec<f32> = (0..4 * h)
            .map(|i| {
                if (2 * h..3 * h).contains(&i) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        input.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias, [4 * h]),
            device,
        )));
        LstmDirection {
            input,
            recurrent: LinearConfig::new(h, 4 * h).with_bias(false).init(device),
        }
    }
}

impl<B: LstmBackend> BiLstm<B> {
    /// `[steps, batch, input]` → `[steps, batch, 2·hidden]` (forward states, then backward).
    pub fn forward(&self, sequence: Tensor<B, 3>) -> Tensor<B, 3> {
        let forward = self.forward.input.forward(sequence.clone());
        let backward = self.backward.input.forward(sequence);
        let primitive = |t: Tensor<B, 3>| t.into_primitive().tensor();
        let weight = |d: &LstmDirection<B>| d.recurrent.weight.val().into_primitive().tensor();
        Tensor::from_primitive(TensorPrimitive::Float(B::bilstm_recurrence(
            primitive(forward),
            primitive(backward),
            weight(&self.forward),
            weight(&self.backward),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::CpuInference as B;

    /// One LSTM step computed by hand from the ONNX equations for a single unit.
    #[test]
    fn a_single_unit_follows_the_onnx_equations() {
        let device = Default::default();
        let _rng = crate::models::seeded_exclusively::<B>(&device, 1);
        let mut lstm = BiLstmConfig::new(1, 1).init::<B>(&device);
        let set = |values: [f32; 4]| {
            Param::from_tensor(Tensor::<B, 2>::from_data(
                TensorData::new(values.to_vec(), [1, 4]),
                &device,
            ))
        };
        // Gates i, o, f, c: W = [0.5, -0.3, 0.8, 1.2], R = [0.1, 0.2, -0.4, 0.7], b = 0.
        for direction in [&mut lstm.forward, &mut lstm.backward] {
            direction.input.weight = set([0.5, -0.3, 0.8, 1.2]);
            direction.input.bias = Some(Param::from_tensor(Tensor::zeros([4], &device)));
            direction.recurrent.weight = set([0.1, 0.2, -0.4, 0.7]);
        }
        let xs = [1.0f32, -2.0];
        let sequence = Tensor::<B, 3>::from_data(TensorData::new(xs.to_vec(), [2, 1, 1]), &device);
        let out: Vec<f32> = lstm.forward(sequence).into_data().to_vec().unwrap();

        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let step = |x: f32, h: f32, c: f32| {
            let i = sig(0.5 * x + 0.1 * h);
            let o = sig(-0.3 * x + 0.2 * h);
            let f = sig(0.8 * x - 0.4 * h);
            let g = (1.2 * x + 0.7 * h).tanh();
            let c = f * c + i * g;
            (o * c.tanh(), c)
        };
        let (h0, c0) = step(xs[0], 0.0, 0.0);
        let (h1, _) = step(xs[1], h0, c0);
        let (b1, c1) = step(xs[1], 0.0, 0.0);
        let (b0, _) = step(xs[0], b1, c1);
        // [steps, batch, 2]: step 0 = (h0, b0), step 1 = (h1, b1).
        for (got, want) in out.iter().zip([h0, b0, h1, b1]) {
            assert!(
                (got - want).abs() < 1e-6,
                "{out:?} vs {:?}",
                [h0, b0, h1, b1]
            );
        }
    }
}
