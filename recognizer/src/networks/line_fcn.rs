//! The learned line detector's network (FSDL 2019's approach): a fully convolutional net over a
//! downscaled page that scores every pixel as inside a text line's core or not, and predicts
//! from each core pixel the distances to its line's top and bottom. Dilated 3×3
//! convolutions (dilation 1, 2, 4, 8) see 31 input pixels (124 page pixels at scale 4, two to
//! four lines) without pooling, so the output has the input's size and the ONNX is convolutions
//! and ReLUs only.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{PaddingConfig2d, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::conv::{ConvBackend, conv2d};
use crate::setting::{InvalidSetting, require};

/// Dilation of each 3×3 convolution, in order.
pub const DILATIONS: [usize; 4] = [1, 2, 4, 8];
/// Output channels: the core logit, then the distances to the line's top and bottom.
pub const MAPS: usize = 3;

/// The detector's size. A train stage's `network:` block deserialises into it (unset fields keep
/// [`Default`]), and so does `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineFcnConfig {
    /// Output channels of the four dilated convolutions.
    pub channels: [usize; 4],
    /// Page pixels per input pixel: pages are area-averaged down this much before the network
    /// (see `infer::line_fcn`).
    pub scale: usize,
}

impl Default for LineFcnConfig {
    fn default() -> Self {
        Self {
            channels: [16, 16, 32, 32],
            scale: 4,
        }
    }
}

#[derive(Module, Debug)]
pub struct LineFcn<B: Backend> {
    pub convs: Vec<Conv2d<B>>,
    /// 1×1 convolution to three maps: the core logit, the distances up and down.
    pub head: Conv2d<B>,
    activation: Relu,
}

impl LineFcnConfig {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            !self.channels.contains(&0),
            "channels",
            self.channels,
            "at least 1 each",
        )?;
        require(
            (1..=16).contains(&self.scale),
            "scale",
            self.scale,
            "in 1..=16",
        )
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> LineFcn<B> {
        let mut from = 1;
        let convs = self
            .channels
            .iter()
            .zip(DILATIONS)
            .map(|(&to, d)| {
                let conv = Conv2dConfig::new([from, to], [3, 3])
                    .with_dilation([d, d])
                    .with_padding(PaddingConfig2d::Explicit(d, d, d, d))
                    .init(device);
                from = to;
                conv
            })
            .collect();
        LineFcn {
            convs,
            head: Conv2dConfig::new([from, MAPS], [1, 1]).init(device),
            activation: Relu::new(),
        }
    }
}

impl<B: ConvBackend> LineFcn<B> {
    /// `[batch, 1, height, width]` ink in `[0, 1]` → `[batch, 3, height, width]` maps (see
    /// `infer::DetectorMaps`).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self
            .convs
            .iter()
            .fold(images, |x, conv| self.activation.forward(conv2d(conv, x)));
        self.head.forward(x)
    }
}
