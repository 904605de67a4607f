//! FSDL's line recognizer (LineCNNLSTM): a CNN reads a fixed-height line into a sequence of
//! column features (one per 4 pixels of width), a bidirectional LSTM gives each column the
//! context of the whole line, and a linear head scores every class (CTC blank included) per step.
//! Batch normalisation after each convolution (as in CRNN) gets CTC training off its all-blank
//! plateau in a few hundred steps instead of thousands.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::NetworkBackend;
use super::conv::conv2d;
use crate::setting::{InvalidSetting, require};
use burn::tensor::activation::log_softmax;

use super::batch_norm::batch_norm;
use super::lstm::{BiLstm, BiLstmConfig};

pub use crate::architecture::LINE_CTC_DOWNSAMPLE as DOWNSAMPLE;

/// The recognizer's size. A train stage's `network:` block deserialises into it (unset fields
/// keep [`Default`]; `classes` and `height` come from the dataset), and so does `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineCtcConfig {
    /// Output classes, the CTC blank included.
    pub classes: usize,
    /// Line height in pixels, a multiple of 8.
    pub height: usize,
    /// Output channels of the three convolution blocks.
    pub channels: [usize; 3],
    /// Hidden units per LSTM direction.
    pub lstm_hidden: usize,
    /// Dropout before the head.
    pub dropout: f64,
}

impl Default for LineCtcConfig {
    fn default() -> Self {
        Self {
            classes: 2,
            height: 32,
            channels: [32, 64, 96],
            lstm_hidden: 128,
            dropout: 0.2,
        }
    }
}

#[derive(Module, Debug)]
pub struct LineCtc<B: Backend> {
    pub conv1: Conv2d<B>,
    pub conv2: Conv2d<B>,
    pub conv3: Conv2d<B>,
    pub norm1: BatchNorm<B>,
    pub norm2: BatchNorm<B>,
    pub norm3: BatchNorm<B>,
    pool: MaxPool2d,
    pool_height: MaxPool2d,
    pub lstm: BiLstm<B>,
    pub head: Linear<B>,
    dropout: Dropout,
    activation: Relu,
}

impl LineCtcConfig {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            ..Self::default()
        }
    }

    /// Features per step entering the LSTM: channels × the height left after pooling by 8.
    pub fn step_features(&self) -> usize {
        self.channels[2] * (self.height / 8)
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            self.height != 0 && self.height.is_multiple_of(8),
            "line height",
            self.height,
            "a multiple of 8",
        )?;
        require(self.classes >= 2, "classes", self.classes, "at least 2")?;
        require(
            !self.channels.contains(&0),
            "channels",
            self.channels,
            "at least 1 each",
        )?;
        require(
            self.lstm_hidden >= 1,
            "lstm_hidden",
            self.lstm_hidden,
            "at least 1",
        )?;
        require(
            (0.0..1.0).contains(&self.dropout),
            "dropout",
            self.dropout,
            "in [0, 1)",
        )
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> LineCtc<B> {
        let conv = |from: usize, to: usize| {
            Conv2dConfig::new([from, to], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let [c1, c2, c3] = self.channels;
        LineCtc {
            conv1: conv(1, c1),
            conv2: conv(c1, c2),
            conv3: conv(c2, c3),
            norm1: BatchNormConfig::new(c1).init(device),
            norm2: BatchNormConfig::new(c2).init(device),
            norm3: BatchNormConfig::new(c3).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            pool_height: MaxPool2dConfig::new([2, 1]).with_strides([2, 1]).init(),
            lstm: BiLstmConfig::new(self.step_features(), self.lstm_hidden).init(device),
            head: LinearConfig::new(2 * self.lstm_hidden, self.classes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: Relu::new(),
        }
    }
}

impl<B: NetworkBackend> LineCtc<B> {
    /// `[batch, 1, height, width]` ink in `[0, 1]` (width a multiple of 4) →
    /// `[width / 4, batch, classes]` log-probabilities (time first, as CTC wants).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let block = |conv: &Conv2d<B>, norm: &BatchNorm<B>, x| {
            self.activation.forward(batch_norm(norm, conv2d(conv, x)))
        };
        let x = self.pool.forward(block(&self.conv1, &self.norm1, images));
        let x = self.pool.forward(block(&self.conv2, &self.norm2, x));
        let x = self.pool_height.forward(block(&self.conv3, &self.norm3, x));
        let [batch, channels, height, steps] = x.dims();
        let sequence = x
            .permute([3, 0, 1, 2])
            .reshape([steps, batch, channels * height]);
        let states = self.dropout.forward(self.lstm.forward(sequence));
        log_softmax(self.head.forward(states), 2)
    }
}
