//! One typed error for every option a user sets (network sizes, training options, decoding,
//! augmentation): which setting, the value given and what it must be, whichever layer checked
//! it, so a caller can point at the YAML key and a message reads the same everywhere.

use std::fmt;

/// A setting outside what it may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {value} must be {expected}")]
pub struct InvalidSetting {
    /// The setting's name as the user writes it (`dropout`, `slant_search.margin`).
    pub setting: &'static str,
    /// The value given, as Rust's `Debug` writes it (`1.5`, `[0, 16]`).
    pub value: String,
    /// What it must be (`in [0, 1)`).
    pub expected: &'static str,
}

/// A name that is not one of a setting's choices (an output format, a backend, a detector).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {setting} `{given}`: choose from {}", choices.join(", "))]
pub struct UnknownChoice {
    /// What is being chosen, as a user would say it (`output format`).
    pub setting: &'static str,
    pub given: String,
    pub choices: &'static [&'static str],
}

/// `Ok` when `ok`; otherwise the error for `setting` holding `value`.
pub fn require(
    ok: bool,
    setting: &'static str,
    value: impl fmt::Debug,
    expected: &'static str,
) -> Result<(), InvalidSetting> {
    if ok {
        Ok(())
    } else {
        Err(InvalidSetting {
            setting,
            value: format!("{value:?}"),
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_setting_its_value_and_the_rule() {
        let error = require(false, "dropout", 1.5, "in [0, 1)").unwrap_err();
        assert_eq!(error.to_string(), "dropout 1.5 must be in [0, 1)");
        assert_eq!(error.setting, "dropout");
        assert!(require(true, "dropout", 0.5, "in [0, 1)").is_ok());
        let unknown = UnknownChoice {
            setting: "backend",
            given: "onnx".into(),
            choices: &["tract", "ort"],
        };
        assert_eq!(
            unknown.to_string(),
            "unknown backend `onnx`: choose from tract, ort"
        );
    }
}
