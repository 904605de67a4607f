//! A MATLAB v5 MAT-file writer for test fixtures (no real EMNIST is ever committed): matrices
//! given row-major, as numpy holds them, written column-major as MATLAB and scipy's `savemat`
//! store them; 1×1 structs; each variable optionally zlib-compressed, as `save -v7` does.
//!
//! Included with `#[path]` by the ML core's unit tests and by the end-to-end tests, so it needs
//! nothing but std and flate2.

#![allow(dead_code)] // Each includer uses a different subset.

use std::io::Write;

/// Side of an EMNIST image.
pub const SIDE: usize = 28;

/// A MATLAB array to write.
#[derive(Debug, Clone)]
pub enum Value {
    /// A `uint8` matrix, row-major.
    Bytes {
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    },
    /// A numeric matrix, row-major, of `class`.
    Numbers {
        rows: usize,
        cols: usize,
        class: Class,
        data: Vec<f64>,
    },
    /// A 1×1 struct, fields in order.
    Struct(Vec<(String, Value)>),
    /// A char row vector (readers may skip it).
    Text(String),
}

/// How a numeric matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Double,
    /// A `double` whose values fit a byte, stored as bytes: MATLAB's own space saving.
    DoubleAsBytes,
    Uint16,
    Int32,
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_DOUBLE: u32 = 9;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

const MX_STRUCT: u32 = 2;
const MX_CHAR: u32 = 4;
const MX_DOUBLE: u32 = 6;
const MX_UINT8: u32 = 9;
const MX_UINT16: u32 = 11;
const MX_INT32: u32 = 12;

/// A data element: the small format for up to 4 bytes, else a tag and data padded to 8.
fn element(kind: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    if data.len() <= 4 {
        out.extend_from_slice(&(kind | ((data.len() as u32) << 16)).to_le_bytes());
        out.extend_from_slice(data);
        out.resize(8, 0);
    } else {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

fn words(kind: u32, values: &[u32]) -> Vec<u8> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    element(kind, &bytes)
}

/// Row-major to MATLAB's column-major.
fn column_major<T: Copy>(rows: usize, cols: usize, data: &[T]) -> Vec<T> {
    assert_eq!(data.len(), rows * cols, "a {rows}×{cols} matrix");
    let mut out = Vec::with_capacity(data.len());
    for c in 0..cols {
        for r in 0..rows {
            out.push(data[r * cols + c]);
        }
    }
    out
}

/// The `miMATRIX` element of `value` named `name`.
pub fn matrix(name: &str, value: &Value) -> Vec<u8> {
    let header = |class: u32, rows: usize, cols: usize| {
        let mut body = words(MI_UINT32, &[class, 0]);
        body.extend(words(MI_INT32, &[rows as u32, cols as u32]));
        body.extend(element(MI_INT8, name.as_bytes()));
        body
    };
    let body = match value {
        Value::Bytes { rows, cols, data } => {
            let mut body = header(MX_UINT8, *rows, *cols);
            body.extend(element(MI_UINT8, &column_major(*rows, *cols, data)));
            body
        }
        Value::Numbers {
            rows,
            cols,
            class,
            data,
        } => {
            let values = column_major(*rows, *cols, data);
            let (mx, stored) = match class {
                Class::Double => (
                    MX_DOUBLE,
                    element(
                        MI_DOUBLE,
                        &values
                            .iter()
                            .flat_map(|v| v.to_le_bytes())
                            .collect::<Vec<_>>(),
                    ),
                ),
                Class::DoubleAsBytes => (
                    MX_DOUBLE,
                    element(
                        MI_UINT8,
                        &values.iter().map(|&v| v as u8).collect::<Vec<_>>(),
                    ),
                ),
                Class::Uint16 => (
                    MX_UINT16,
                    element(
                        MI_UINT16,
                        &values
                            .iter()
                            .flat_map(|&v| (v as u16).to_le_bytes())
                            .collect::<Vec<_>>(),
                    ),
                ),
                Class::Int32 => (
                    MX_INT32,
                    element(
                        MI_INT32,
                        &values
                            .iter()
                            .flat_map(|&v| (v as i32).to_le_bytes())
                            .collect::<Vec<_>>(),
                    ),
                ),
            };
            let mut body = header(mx, *rows, *cols);
            body.extend(stored);
            body
        }
        Value::Struct(fields) => {
            const WIDTH: usize = 32;
            let mut body = header(MX_STRUCT, 1, 1);
            body.extend(words(MI_INT32, &[WIDTH as u32]));
            let mut names = Vec::new();
            for (field, _) in fields {
                let mut padded = field.as_bytes().to_vec();
                assert!(padded.len() < WIDTH, "field name {field}");
                padded.resize(WIDTH, 0);
                names.extend(padded);
            }
            body.extend(element(MI_INT8, &names));
            for (_, value) in fields {
                body.extend(matrix("", value));
            }
            body
        }
        Value::Text(text) => {
            let units: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
            let mut body = header(MX_CHAR, 1, text.encode_utf16().count());
            body.extend(element(MI_UINT16, &units));
            body
        }
    };
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&MI_MATRIX.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

/// A whole MAT-file: the 128-byte header, then each variable, zlib-compressed or not.
pub fn mat_file(variables: &[(&str, Value)], compressed: bool) -> Vec<u8> {
    let mut text =
        b"MATLAB 5.0 MAT-file, Platform: test, Created by textrec's test fixtures".to_vec();
    text.resize(116, b' ');
    let mut out = text;
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for (name, value) in variables {
        let array = matrix(name, value);
        if compressed {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&array).unwrap();
            let packed = z.finish().unwrap();
            // Compressed elements are not padded.
            out.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
            out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            out.extend(packed);
        } else {
            out.extend(array);
        }
    }
    out
}

/// One EMNIST character as a person sees it: 28×28, row-major, white ink on black.
#[derive(Debug, Clone)]
pub struct Char {
    pub class: u32,
    pub writer: u32,
    pub pixels: Vec<u8>,
}

/// EMNIST's `images`, `labels` and `writers` for `chars`. EMNIST stores each image transposed
/// (row `i` holds pixel `(y, x)` at column `x * 28 + y`), which FSDL's
/// `reshape(-1, 28, 28).swapaxes(1, 2)` undoes.
pub fn emnist_split(chars: &[Char]) -> Value {
    let n = chars.len();
    let mut images = vec![0u8; n * SIDE * SIDE];
    for (i, c) in chars.iter().enumerate() {
        assert_eq!(c.pixels.len(), SIDE * SIDE);
        for y in 0..SIDE {
            for x in 0..SIDE {
                images[i * SIDE * SIDE + x * SIDE + y] = c.pixels[y * SIDE + x];
            }
        }
    }
    Value::Struct(vec![
        (
            "images".into(),
            Value::Bytes {
                rows: n,
                cols: SIDE * SIDE,
                data: images,
            },
        ),
        (
            "labels".into(),
            Value::Numbers {
                rows: n,
                cols: 1,
                class: Class::DoubleAsBytes,
                data: chars.iter().map(|c| f64::from(c.class)).collect(),
            },
        ),
        (
            "writers".into(),
            Value::Numbers {
                rows: n,
                cols: 1,
                class: Class::Uint16,
                data: chars.iter().map(|c| f64::from(c.writer)).collect(),
            },
        ),
    ])
}

/// EMNIST's `mapping`: class, character code (integers: FSDL's `chr(v)` takes no float).
pub fn emnist_mapping(mapping: &[(u32, u32)]) -> Value {
    Value::Numbers {
        rows: mapping.len(),
        cols: 2,
        class: Class::Int32,
        data: mapping
            .iter()
            .flat_map(|&(class, code)| [f64::from(class), f64::from(code)])
            .collect(),
    }
}

/// EMNIST ByClass's mapping: 0–9, A–Z, a–z as classes 0–61.
pub fn byclass_mapping() -> Vec<(u32, u32)> {
    ('0'..='9')
        .chain('A'..='Z')
        .chain('a'..='z')
        .enumerate()
        .map(|(i, c)| (i as u32, c as u32))
        .collect()
}

/// A file laid out as `emnist-byclass.mat`: `dataset` with `train`, `test` and `mapping`.
pub fn emnist_mat(
    train: &[Char],
    test: &[Char],
    mapping: &[(u32, u32)],
    compressed: bool,
) -> Vec<u8> {
    let dataset = Value::Struct(vec![
        ("train".into(), emnist_split(train)),
        ("test".into(), emnist_split(test)),
        ("mapping".into(), emnist_mapping(mapping)),
    ]);
    mat_file(&[("dataset", dataset)], compressed)
}

/// An `F`, which reads differently after any flip or transpose: a stem at x 6–8 from y 4 to
/// 23, a top bar to x 20 and a shorter middle bar at y 13–14. `mark` sets one pixel of the
/// bottom row, so images can be told apart.
pub fn letter_f(mark: u8) -> Vec<u8> {
    let mut pixels = vec![0u8; SIDE * SIDE];
    for y in 4..24 {
        for x in 6..9 {
            pixels[y * SIDE + x] = 255;
        }
    }
    for y in 4..6 {
        for x in 6..21 {
            pixels[y * SIDE + x] = 255;
        }
    }
    for y in 13..15 {
        for x in 6..16 {
            pixels[y * SIDE + x] = 200;
        }
    }
    pixels[(SIDE - 1) * SIDE + usize::from(mark) % SIDE] = 1 + mark / SIDE as u8;
    pixels
}
