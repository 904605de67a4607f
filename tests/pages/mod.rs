//! Pages with a known transcription, and a release bundle whose line model reads them: a real
//! ONNX graph run by tract that reads any inked column as `a` and paper as the CTC blank, so a
//! line of three ink blobs must come out as `aaa`. Shared by the `textrec` binary's tests.

// Each test binary uses a part of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, ImageFormat, Luma};
use prost::Message;
use textrec_recognizer::bundle;
use textrec_recognizer::onnx::{Attr, GraphBuilder, Metadata};

/// `image [N, 1, 32, W]` → max over 32×4 blocks → `[N, W/4, 1]` → per-class affine →
/// `log_probs [N, W/4, 3]` over `<B>`, `a`, ` `.
pub fn ink_reader_model() -> Vec<u8> {
    reader_model([0.0, 20.0, 0.0], [0.0, -6.0, -10.0])
}

/// [`ink_reader_model`]'s graph reading every column as the CTC blank: a model that finds no
/// text in lines the detector found (an untrained one, or marks that are not writing).
pub fn blank_reader_model() -> Vec<u8> {
    reader_model([0.0, 0.0, 0.0], [0.0, -10.0, -10.0])
}

/// The line model with per-class weights `w` on a column's ink and biases `b`.
fn reader_model(w: [f32; 3], b: [f32; 3]) -> Vec<u8> {
    let mut g = GraphBuilder::new();
    g.input("image", &[Err("N"), Ok(1), Ok(32), Err("W")])
        .weight("w", &[1, 3], &w)
        .weight("b", &[3], &b)
        .int64s("shape", &[0, 0, -1])
        .node(
            "MaxPool",
            &["image"],
            &["pooled"],
            &[
                ("kernel_shape", Attr::Ints(vec![32, 4])),
                ("strides", Attr::Ints(vec![32, 4])),
            ],
        )
        .node(
            "Transpose",
            &["pooled"],
            &["columns"],
            &[("perm", Attr::Ints(vec![0, 3, 1, 2]))],
        )
        .node("Reshape", &["columns", "shape"], &["steps"], &[])
        .node("MatMul", &["steps", "w"], &["scaled"], &[])
        .node("Add", &["scaled", "b"], &["logits"], &[])
        .node(
            "LogSoftmax",
            &["logits"],
            &["log_probs"],
            &[("axis", Attr::Int(-1))],
        )
        .output("log_probs", &[Err("N"), Err("T"), Ok(3)]);
    let metadata = Metadata::default()
        .with("textrec.architecture", "line_ctc")
        .with("textrec.vocabulary", r#"["<B>","a"," "]"#)
        .with("textrec.input_height", "32")
        .with("textrec.downsample", "4");
    g.build("ink_reader", &metadata).encode_to_vec()
}

/// A `line_fcn` line detector for [`page`]s (scale 4): a pixel is a line's core when the rows
/// 2 above and 2 below both have ink within 12 columns, which on a page's 6-row lines marks the
/// middle 2 rows and bridges the gaps between a line's blobs; from there the line reaches 3 rows
/// up and down (0.375 distance units of 8).
/// `image [1, 1, H, W]` → conv 5×25 (4 channels: ink counts above and below, each against two
/// thresholds) → ReLU → 1×1 conv → `maps`: 20 · (clip(above) + clip(below)) − 30, 0.375, 0.375.
pub fn blob_line_detector_model() -> Vec<u8> {
    let (rows, columns) = (5, 25);
    let mut weights = vec![0.0f32; 4 * rows * columns];
    for channel in 0..4 {
        let row = if channel < 2 { 0 } else { rows - 1 };
        weights[(channel * rows + row) * columns..][..columns].fill(1.0);
    }
    let mut g = GraphBuilder::new();
    g.input("image", &[Err("N"), Ok(1), Err("H"), Err("W")])
        .weight("count.weight", &[4, 1, rows, columns], &weights)
        .weight("count.bias", &[4], &[-4.5, -5.5, -4.5, -5.5])
        .weight(
            "maps.weight",
            &[3, 4, 1, 1],
            &[
                20.0, -20.0, 20.0, -20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            ],
        )
        .weight("maps.bias", &[3], &[-30.0, 0.375, 0.375])
        .node(
            "Conv",
            &["image", "count.weight", "count.bias"],
            &["counts"],
            &[
                ("kernel_shape", Attr::Ints(vec![5, 25])),
                ("pads", Attr::Ints(vec![2, 12, 2, 12])),
            ],
        )
        .node("Relu", &["counts"], &["ramps"], &[])
        .node(
            "Conv",
            &["ramps", "maps.weight", "maps.bias"],
            &["maps"],
            &[("kernel_shape", Attr::Ints(vec![1, 1]))],
        )
        .output("maps", &[Err("N"), Ok(3), Err("H"), Err("W")]);
    let metadata = Metadata::default()
        .with("textrec.architecture", "line_fcn")
        .with("textrec.vocabulary", "[]")
        .with("textrec.input_height", "32")
        .with("textrec.scale", "4");
    g.build("blob_line_detector", &metadata).encode_to_vec()
}

/// A bundle with the line model, a `pages.json` naming `detector`, and the learned detector
/// when `with_detector`.
pub fn write_bundle_naming(dir: &Path, detector: &str, with_detector: bool) -> PathBuf {
    let mut files = BTreeMap::from([
        ("models/lines.onnx".to_owned(), ink_reader_model()),
        (
            "pages.json".to_owned(),
            format!("{{\"line_detector\": \"{detector}\"}}\n").into_bytes(),
        ),
    ]);
    if with_detector {
        files.insert(
            "models/detector.onnx".to_owned(),
            blob_line_detector_model(),
        );
    }
    bundle_file(dir, &files)
}

/// The bundle of [`write_bundle`] plus a character language model (counted over lines of `a`s)
/// that `pages.json` names, so lines are beam-decoded by default.
pub fn write_bundle_with_language_model(dir: &Path) -> PathBuf {
    let vocabulary = textrec_recognizer::Vocabulary::from_chars("a ".chars()).unwrap();
    let lm = textrec_recognizer::lm::CharLm::count(
        &vocabulary,
        3,
        ["aaa", "a", "aa"],
        Default::default(),
    )
    .unwrap();
    let files = BTreeMap::from([
        ("models/lines.onnx".to_owned(), ink_reader_model()),
        ("models/lines.lm".to_owned(), lm.to_bytes()),
        (
            "pages.json".to_owned(),
            b"{\"line_detector\": \"projection\", \"language_model\": \"models/lines.lm\"}\n"
                .to_vec(),
        ),
    ]);
    bundle_file(dir, &files)
}

/// The bundle of [`write_bundle`] with `pages_json` as its `pages.json`.
pub fn write_bundle_reading_pages(dir: &Path, pages_json: &str) -> PathBuf {
    let files = BTreeMap::from([
        ("models/lines.onnx".to_owned(), ink_reader_model()),
        ("pages.json".to_owned(), pages_json.as_bytes().to_vec()),
    ]);
    bundle_file(dir, &files)
}

pub fn write_bundle(dir: &Path) -> PathBuf {
    let files = BTreeMap::from([("models/lines.onnx".to_owned(), ink_reader_model())]);
    bundle_file(dir, &files)
}

/// A bundle whose line model is [`blank_reader_model`].
pub fn write_bundle_reading_nothing(dir: &Path) -> PathBuf {
    let files = BTreeMap::from([("models/lines.onnx".to_owned(), blank_reader_model())]);
    bundle_file(dir, &files)
}

fn bundle_file(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> PathBuf {
    let bytes = bundle::write_bundle("textrec", "0.1.0", "tests", files).unwrap();
    let path = dir.join("textrec-0.1.0.tar.gz");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A page of dark blobs ("words") on light, slightly noisy paper: `lines[i]` blobs on line `i`.
pub fn page(lines: &[usize]) -> GrayImage {
    let (pitch, height, blob, gap, left, top) = (64, 24, 40, 32, 40, 40);
    let widest = lines.iter().max().copied().unwrap_or(1);
    let width = left * 2 + widest * (blob + gap);
    let mut page = GrayImage::from_fn(
        width as u32,
        (top * 2 + lines.len() * pitch) as u32,
        |x, y| Luma([235 + ((x * 7 + y * 13) % 11) as u8]),
    );
    for (i, &blobs) in lines.iter().enumerate() {
        let y0 = top + i * pitch;
        for b in 0..blobs {
            let x0 = left + (i % 2) * 12 + b * (blob + gap);
            for y in y0..y0 + height {
                for x in x0..x0 + blob {
                    page.put_pixel(x as u32, y as u32, Luma([30]));
                }
            }
        }
    }
    page
}

pub fn save(image: DynamicImage, path: &Path, format: ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    std::fs::write(path, bytes.into_inner()).unwrap();
}

/// The page encoded as PNG.
pub fn png(page: &GrayImage) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    DynamicImage::ImageLuma8(page.clone())
        .write_to(&mut bytes, ImageFormat::Png)
        .unwrap();
    bytes.into_inner()
}
