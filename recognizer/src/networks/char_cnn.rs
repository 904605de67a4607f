//! FSDL's character CNN (LeNet-style): conv 3×3 → conv 3×3 → max-pool → dropout → fc → fc.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;

use super::conv::{ConvBackend, conv2d};
use crate::setting::{InvalidSetting, require};

/// Input side: the EMNIST-like 28×28 character images.
pub const SIDE: usize = 28;

#[derive(Config, Debug)]
pub struct CharCnnConfig {
    pub classes: usize,
    #[config(default = 32)]
    pub conv1_channels: usize,
    #[config(default = 64)]
    pub conv2_channels: usize,
    #[config(default = 128)]
    pub hidden: usize,
    #[config(default = 0.25)]
    pub dropout: f64,
}

#[derive(Module, Debug)]
pub struct CharCnn<B: Backend> {
    pub conv1: Conv2d<B>,
    pub conv2: Conv2d<B>,
    pool: MaxPool2d,
    dropout: Dropout,
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    activation: Relu,
}

impl CharCnnConfig {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(self.classes >= 2, "classes", self.classes, "at least 2")?;
        let channels = [self.conv1_channels, self.conv2_channels];
        require(
            !channels.contains(&0),
            "channels",
            channels,
            "at least 1 each",
        )?;
        require(self.hidden >= 1, "hidden", self.hidden, "at least 1")?;
        require(
            (0.0..1.0).contains(&self.dropout),
            "dropout",
            self.dropout,
            "in [0, 1)",
        )
    }

    /// Features after the two valid 3×3 convolutions (28 → 26 → 24) and 2×2 pooling (→ 12).
    pub fn flat_features(&self) -> usize {
        self.conv2_channels * 12 * 12
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> CharCnn<B> {
        CharCnn {
            conv1: Conv2dConfig::new([1, self.conv1_channels], [3, 3]).init(device),
            conv2: Conv2dConfig::new([self.conv1_channels, self.conv2_channels], [3, 3])
                .init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            fc1: LinearConfig::new(self.flat_features(), self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.classes).init(device),
            activation: Relu::new(),
        }
    }
}

impl<B: ConvBackend> CharCnn<B> {
    /// `[batch, 1, 28, 28]` ink in `[0, 1]` → `[batch, classes]` logits.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.activation.forward(conv2d(&self.conv1, images));
        let x = self.activation.forward(conv2d(&self.conv2, x));
        let x = self.dropout.forward(self.pool.forward(x));
        let [batch, channels, height, width] = x.dims();
        let x = x.reshape([batch, channels * height * width]);
        let x = self
            .dropout
            .forward(self.activation.forward(self.fc1.forward(x)));
        self.fc2.forward(x)
    }
}
