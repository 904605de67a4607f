//! The model architectures textrec trains, exports and reads. Each has one name, spelled the
//! same in pipeline params (`model:`), `model.json`, the ONNX metadata and bundles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Input pixels per output step along the width of a line (the line recognizer's two 2×2 pools).
/// Synthesis reads it too: a line narrower than its label needs steps cannot be learned.
pub const LINE_CTC_DOWNSAMPLE: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// The character classifier (FSDL's `CNN`), 28×28 in, one class out.
    CharCnn,
    /// The line recognizer: CNN + BiLSTM + CTC.
    LineCtc,
    /// The learned line detector: a dilated FCN marking each line's core.
    LineFcn,
}

impl Architecture {
    pub const ALL: [Architecture; 3] = [
        Architecture::CharCnn,
        Architecture::LineCtc,
        Architecture::LineFcn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Architecture::CharCnn => "char_cnn",
            Architecture::LineCtc => "line_ctc",
            Architecture::LineFcn => "line_fcn",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no architecture textrec knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture `{name}` (known: char_cnn, line_ctc, line_fcn)")]
pub struct UnknownArchitecture {
    pub name: String,
}

impl FromStr for Architecture {
    type Err = UnknownArchitecture;

    fn from_str(name: &str) -> Result<Architecture, UnknownArchitecture> {
        Architecture::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| UnknownArchitecture {
                name: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_serialize_as_written() {
        for architecture in Architecture::ALL {
            assert_eq!(architecture.name().parse(), Ok(architecture));
            assert_eq!(
                serde_json::to_string(&architecture).unwrap(),
                format!("\"{}\"", architecture.name())
            );
        }
        assert_eq!(
            "lstm".parse::<Architecture>().unwrap_err().to_string(),
            "unknown architecture `lstm` (known: char_cnn, line_ctc, line_fcn)"
        );
    }
}
