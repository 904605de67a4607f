//! FSDL's character CNN (LeNet-style): conv 3×3 → conv 3×3 → max-pool → dropout → fc → fc.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::conv::{ConvBackend, conv2d};
use crate::setting::{InvalidSetting, require};

/// Input side: the EMNIST-like 28×28 character images.
pub const SIDE: usize = 28;

/// The classifier's size. A train stage's `network:` block deserialises into it (unset fields
/// keep [`Default`]; `classes` comes from the dataset), and so does `model.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "CharCnnFields")]
pub struct CharCnnConfig {
    pub classes: usize,
    /// Output channels of the two convolutions.
    pub channels: [usize; 2],
    /// Units of the hidden fully connected layer.
    pub hidden: usize,
    /// Dropout after pooling and before the head.
    pub dropout: f64,
}

impl Default for CharCnnConfig {
    fn default() -> Self {
        Self {
            classes: 2,
            channels: [32, 64],
            hidden: 128,
            dropout: 0.25,
        }
    }
}

/// How [`CharCnnConfig`] is written: YAML names the convolutions `channels: [c1, c2]` like the
/// other networks, `model.json` names them `conv1_channels` and `conv2_channels` (the names of the
/// first trained models, kept so that their files and the lock's hashes stay valid). Either is read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CharCnnFields {
    classes: Option<usize>,
    channels: Option<[usize; 2]>,
    conv1_channels: Option<usize>,
    conv2_channels: Option<usize>,
    hidden: Option<usize>,
    dropout: Option<f64>,
}

impl TryFrom<CharCnnFields> for CharCnnConfig {
    type Error = &'static str;

    fn try_from(fields: CharCnnFields) -> Result<Self, Self::Error> {
        let default = Self::default();
        let channels = match (
            fields.channels,
            fields.conv1_channels,
            fields.conv2_channels,
        ) {
            (Some(channels), None, None) => channels,
            (None, conv1, conv2) => [
                conv1.unwrap_or(default.channels[0]),
                conv2.unwrap_or(default.channels[1]),
            ],
            (Some(_), _, _) => {
                return Err("give `channels` or `conv1_channels`/`conv2_channels`, not both");
            }
        };
        Ok(Self {
            classes: fields.classes.unwrap_or(default.classes),
            channels,
            hidden: fields.hidden.unwrap_or(default.hidden),
            dropout: fields.dropout.unwrap_or(default.dropout),
        })
    }
}

impl Serialize for CharCnnConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut spec = serializer.serialize_struct("CharCnnConfig", 5)?;
        spec.serialize_field("classes", &self.classes)?;
        spec.serialize_field("conv1_channels", &self.channels[0])?;
        spec.serialize_field("conv2_channels", &self.channels[1])?;
        spec.serialize_field("hidden", &self.hidden)?;
        spec.serialize_field("dropout", &self.dropout)?;
        spec.end()
    }
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
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(self.classes >= 2, "classes", self.classes, "at least 2")?;
        require(
            !self.channels.contains(&0),
            "channels",
            self.channels,
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
        self.channels[1] * 12 * 12
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> CharCnn<B> {
        CharCnn {
            conv1: Conv2dConfig::new([1, self.channels[0]], [3, 3]).init(device),
            conv2: Conv2dConfig::new(self.channels, [3, 3]).init(device),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yaml_and_model_json_forms_read_the_same_config_and_model_json_keeps_its_names() {
        let yaml: CharCnnConfig =
            serde_json::from_str(r#"{"channels": [64, 128], "hidden": 256}"#).unwrap();
        let spec: CharCnnConfig =
            serde_json::from_str(r#"{"conv1_channels": 64, "conv2_channels": 128, "hidden": 256}"#)
                .unwrap();
        assert_eq!(yaml, spec);
        assert_eq!((yaml.channels, yaml.dropout), ([64, 128], 0.25));
        assert_eq!(
            serde_json::to_string(&yaml).unwrap(),
            r#"{"classes":2,"conv1_channels":64,"conv2_channels":128,"hidden":256,"dropout":0.25}"#
        );
        let both = r#"{"channels": [64, 128], "conv1_channels": 64}"#;
        assert!(serde_json::from_str::<CharCnnConfig>(both).is_err());
    }
}
