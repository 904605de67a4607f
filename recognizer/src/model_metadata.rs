//! The `textrec.*` metadata of an exported ONNX model: what a reader needs beyond the graph (the
//! architecture, the classes, the input size and how to prepare an image). `onnx` writes it at
//! export; `infer`, `bundle` and the package stage read it. One struct, one list of keys.

use prost::Message;
use tract_onnx::pb;

use crate::architecture::{Architecture, UnknownArchitecture};

/// Every key, without the `textrec.` prefix, in the order an export writes them.
pub mod key {
    pub const ARCHITECTURE: &str = "architecture";
    pub const VOCABULARY: &str = "vocabulary";
    pub const INPUT_HEIGHT: &str = "input_height";
    pub const INPUT_WIDTH: &str = "input_width";
    pub const NORMALISATION: &str = "normalisation";
    pub const MODEL_VERSION: &str = "model_version";
    pub const TRAINING_DATA_SHA256: &str = "training_data_sha256";
    pub const DOWNSAMPLE: &str = "downsample";
    pub const SCALE: &str = "scale";
    pub const POLARITY: &str = "polarity";
}

/// The namespace of textrec's keys in an ONNX model's `metadata_props`.
pub const PREFIX: &str = "textrec.";

#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    pub architecture: Architecture,
    /// Class index → token.
    pub vocabulary: Option<Vec<String>>,
    /// The input height a model reads (a detector's only sizes a test run).
    pub input_height: Option<usize>,
    /// A fixed input width (characters); lines and pages take any.
    pub input_width: Option<usize>,
    pub normalisation: Option<String>,
    pub model_version: Option<String>,
    /// sha256 of the training dataset's manifest.
    pub training_data_sha256: Option<String>,
    /// Line models: input columns per output step.
    pub downsample: Option<usize>,
    /// Detectors: input pixels per output pixel.
    pub scale: Option<usize>,
    /// `ink-white` or `ink-black`, where a model says.
    pub polarity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetadataError {
    #[error("not an ONNX model: {reason}")]
    NotOnnx { reason: String },
    #[error("no textrec.architecture metadata: not a textrec model")]
    NotTextrec,
    #[error("textrec.architecture: {0}")]
    Architecture(#[from] UnknownArchitecture),
    #[error("no textrec.{key} metadata")]
    Missing { key: &'static str },
    #[error("textrec.{key} `{value}` is not {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl ModelMetadata {
    /// The metadata of an encoded model.
    pub fn read(bytes: &[u8]) -> Result<ModelMetadata, MetadataError> {
        let model = pb::ModelProto::decode(bytes).map_err(|e| MetadataError::NotOnnx {
            reason: e.to_string(),
        })?;
        ModelMetadata::from_proto(&model)
    }

    /// The metadata of a decoded model.
    pub fn from_proto(model: &pb::ModelProto) -> Result<ModelMetadata, MetadataError> {
        ModelMetadata::from_props(
            model
                .metadata_props
                .iter()
                .map(|p| (p.key.as_str(), p.value.as_str())),
        )
    }

    /// The metadata among `props` (key, value) pairs, other keys ignored.
    pub fn from_props<'a>(
        props: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<ModelMetadata, MetadataError> {
        let props: Vec<(&str, &str)> = props
            .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v)))
            .collect();
        let text = |key: &str| {
            props
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        };
        let size = |key: &'static str| -> Result<Option<usize>, MetadataError> {
            text(key)
                .map(|value| match value.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(MetadataError::Invalid {
                        key,
                        value,
                        expected: "a positive whole number",
                    }),
                })
                .transpose()
        };
        let architecture = text(key::ARCHITECTURE)
            .ok_or(MetadataError::NotTextrec)?
            .parse()?;
        let vocabulary = text(key::VOCABULARY)
            .map(|value| {
                serde_json::from_str(&value).map_err(|_| MetadataError::Invalid {
                    key: key::VOCABULARY,
                    value,
                    expected: "a JSON array of strings",
                })
            })
            .transpose()?;
        Ok(ModelMetadata {
            architecture,
            vocabulary,
            input_height: size(key::INPUT_HEIGHT)?,
            input_width: size(key::INPUT_WIDTH)?,
            normalisation: text(key::NORMALISATION),
            model_version: text(key::MODEL_VERSION),
            training_data_sha256: text(key::TRAINING_DATA_SHA256),
            downsample: size(key::DOWNSAMPLE)?,
            scale: size(key::SCALE)?,
            polarity: text(key::POLARITY),
        })
    }

    /// `value`, or the error that the model lacks `key`.
    pub fn required<T>(value: Option<T>, key: &'static str) -> Result<T, MetadataError> {
        value.ok_or(MetadataError::Missing { key })
    }

    /// The `(textrec.KEY, value)` pairs to write, in export order, absent values left out.
    pub fn entries(&self) -> Vec<(String, String)> {
        let size = |v: Option<usize>| v.map(|n| n.to_string());
        [
            (key::ARCHITECTURE, Some(self.architecture.name().to_owned())),
            (
                key::VOCABULARY,
                self.vocabulary
                    .as_ref()
                    .map(|v| serde_json::to_string(v).expect("strings serialise")),
            ),
            (key::INPUT_HEIGHT, size(self.input_height)),
            (key::INPUT_WIDTH, size(self.input_width)),
            (key::NORMALISATION, self.normalisation.clone()),
            (key::MODEL_VERSION, self.model_version.clone()),
            (key::TRAINING_DATA_SHA256, self.training_data_sha256.clone()),
            (key::DOWNSAMPLE, size(self.downsample)),
            (key::SCALE, size(self.scale)),
            (key::POLARITY, self.polarity.clone()),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((format!("{PREFIX}{key}"), value?)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_model() -> ModelMetadata {
        ModelMetadata {
            architecture: Architecture::LineCtc,
            vocabulary: Some(vec!["<blank>".into(), " ".into(), "a".into()]),
            input_height: Some(32),
            input_width: None,
            normalisation: Some("ink-white 0..1".into()),
            model_version: Some("0.1.0".into()),
            training_data_sha256: Some("ab".into()),
            downsample: Some(4),
            scale: None,
            polarity: None,
        }
    }

    #[test]
    fn what_is_written_reads_back_and_in_export_order() {
        let metadata = line_model();
        let entries = metadata.entries();
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "textrec.architecture",
                "textrec.vocabulary",
                "textrec.input_height",
                "textrec.normalisation",
                "textrec.model_version",
                "textrec.training_data_sha256",
                "textrec.downsample",
            ]
        );
        assert_eq!(entries[1].1, r#"["<blank>"," ","a"]"#);
        let read = ModelMetadata::from_props(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(read, Ok(metadata));
    }

    #[test]
    fn missing_and_malformed_values_are_named() {
        let read = |props: &[(&str, &str)]| {
            ModelMetadata::from_props(props.iter().copied())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            read(&[("other.key", "x")]),
            "no textrec.architecture metadata: not a textrec model"
        );
        assert_eq!(
            read(&[("textrec.architecture", "lstm")]),
            "textrec.architecture: unknown architecture `lstm` (known: char_cnn, line_ctc, line_fcn)"
        );
        assert_eq!(
            read(&[("textrec.architecture", "line_fcn"), ("textrec.scale", "0")]),
            "textrec.scale `0` is not a positive whole number"
        );
        assert_eq!(
            read(&[
                ("textrec.architecture", "char_cnn"),
                ("textrec.vocabulary", "[1]")
            ]),
            "textrec.vocabulary `[1]` is not a JSON array of strings"
        );
        assert_eq!(
            ModelMetadata::required(None::<usize>, key::INPUT_HEIGHT)
                .unwrap_err()
                .to_string(),
            "no textrec.input_height metadata"
        );
    }
}
