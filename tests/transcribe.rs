//! `textrec transcribe` as a user runs it, on pages whose right transcription is known (see
//! `pages/mod.rs`): detection, cropping, batching, decoding and reading order together, without
//! training; every output format; bad inputs; `--resume`; `--shard`, also as the documented
//! Slurm array on a real Slurm; paths as they come on
//! Linux (bytes, links, devices).

#[path = "support/markup.rs"]
mod markup;
mod pages;
#[path = "support/slurm.rs"]
mod slurm;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use image::{DynamicImage, GrayImage, ImageFormat};
use pages::{
    page, save, write_bundle, write_bundle_naming, write_bundle_reading_nothing,
    write_bundle_reading_pages, write_bundle_with_language_model,
};
use serde_json::Value;

fn textrec<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_textrec"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// [`textrec`] with `setup` run in the child before it starts (a umask, a memory limit).
fn textrec_after<S: AsRef<OsStr>>(
    dir: &Path,
    args: &[S],
    setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_textrec"));
    command.args(args).current_dir(dir);
    // SAFETY: every `setup` here makes one async-signal-safe system call (umask, setrlimit).
    unsafe { command.pre_exec(setup) };
    command.output().unwrap()
}

/// A file name as Linux has it: bytes, which need not be UTF-8.
fn byte_name(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// A 2×2 24-bit Windows bitmap: an image, but not one textrec reads.
fn bmp() -> Vec<u8> {
    let mut bytes = b"BM".to_vec();
    for field in [70u32, 0, 54, 40, 2, 2] {
        bytes.extend(field.to_le_bytes());
    }
    bytes.extend(1u16.to_le_bytes());
    bytes.extend(24u16.to_le_bytes());
    for field in [0u32, 16, 2835, 2835, 0, 0] {
        bytes.extend(field.to_le_bytes());
    }
    bytes.extend([0x80; 16]);
    bytes
}

fn summary_inputs(output: &Output) -> Vec<Value> {
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    summary["inputs"].as_array().unwrap().clone()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_folder_is_transcribed_in_reading_order_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    save(
        DynamicImage::ImageLuma8(page(&[3, 1, 2])),
        &dir.path().join("scans/first.png"),
        ImageFormat::Png,
    );
    // RGB JPEG in a sub-folder, 16-bit PNG with alpha next to it.
    save(
        DynamicImage::ImageLuma8(page(&[2, 2])).to_rgb8().into(),
        &dir.path().join("scans/more/second.jpg"),
        ImageFormat::Jpeg,
    );
    save(
        DynamicImage::ImageLuma8(page(&[1])).to_rgba16().into(),
        &dir.path().join("scans/more/third.png"),
        ImageFormat::Png,
    );
    let output = textrec(
        dir.path(),
        &[
            "transcribe",
            "scans",
            "-o",
            "out",
            "--recursive",
            "--jobs",
            "2",
            "--format",
            "txt,json,hocr,alto",
            "--model",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let read = |name: &str| std::fs::read_to_string(dir.path().join("out").join(name)).unwrap();
    assert_eq!(read("first.txt"), "aaa\na\naa\n");
    assert_eq!(read("more/second.txt"), "aa\naa\n");
    assert_eq!(read("more/third.txt"), "a\n");
    for name in ["first", "more/second", "more/third"] {
        let out = dir.path().join("out");
        markup::assert_valid_hocr(&out.join(format!("{name}.hocr")));
        markup::assert_valid_alto(&out.join(format!("{name}.alto.xml")));
    }

    let json: Value = serde_json::from_str(&read("first.json")).unwrap();
    assert_eq!(json["model"], "textrec-0.1.0");
    let lines = json["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    // The first line's box holds its three blobs (x 40..224, y 40..64), give or take padding.
    let first = &lines[0]["box"];
    for (key, expected) in [("x0", 40), ("y0", 40), ("x1", 224), ("y1", 64)] {
        let found = first[key].as_i64().unwrap();
        assert!(
            (found - expected).abs() <= 8,
            "{key} {found} vs {expected}: {json}"
        );
    }
    assert!(lines[0]["confidence"].as_f64().unwrap() > 0.9, "{json}");

    let hocr = read("first.hocr");
    let xhtml = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(&hocr, xhtml).expect("hOCR is well-formed XML");
    let class_count = |class: &str| {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .count()
    };
    assert_eq!(class_count("ocr_page"), 1);
    assert_eq!(class_count("ocr_line"), 3);
    assert_eq!(class_count("ocrx_word"), 3);
    assert!(
        doc.descendants()
            .any(|n| n.attribute("name") == Some("ocr-system"))
    );

    let alto = read("first.alto.xml");
    let doc = roxmltree::Document::parse(&alto).expect("ALTO is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "alto");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.loc.gov/standards/alto/ns-v4#")
    );
    let named = |tag: &str| {
        doc.descendants()
            .filter(|n| n.tag_name().name() == tag)
            .collect::<Vec<_>>()
    };
    for tag in [
        "Description",
        "MeasurementUnit",
        "Layout",
        "Page",
        "PrintSpace",
        "TextBlock",
    ] {
        assert_eq!(named(tag).len(), 1, "one {tag}");
    }
    let strings = named("String");
    assert_eq!(named("TextLine").len(), 3);
    assert_eq!(strings[0].attribute("CONTENT"), Some("aaa"));
    for attribute in ["HPOS", "VPOS", "WIDTH", "HEIGHT", "WC"] {
        assert!(strings[0].attribute(attribute).is_some(), "{attribute}");
    }
}

#[test]
fn a_multi_page_tiff_is_one_document_with_every_page() {
    use tiff::encoder::{TiffEncoder, colortype};
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    let mut scan = std::io::Cursor::new(Vec::new());
    let mut encoder = TiffEncoder::new(&mut scan).unwrap();
    for blobs in [&[2][..], &[1, 3], &[1]] {
        let image = page(blobs);
        encoder
            .write_image::<colortype::Gray8>(image.width(), image.height(), &image)
            .unwrap();
    }
    std::fs::write(dir.path().join("scan.tif"), scan.into_inner()).unwrap();
    let output = textrec(
        dir.path(),
        &[
            "transcribe",
            "scan.tif",
            "-o",
            "out",
            "--format",
            "txt,json,hocr,alto",
            "--json",
            "--model",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["inputs"][0]["pages"], 3, "{summary}");
    assert_eq!(summary["inputs"][0]["lines"], 4, "{summary}");

    let read = |name: &str| std::fs::read_to_string(dir.path().join("out").join(name)).unwrap();
    // Tesseract's convention: each page's text ends with a form feed.
    assert_eq!(read("scan.txt"), "aa\n\u{c}a\naaa\n\u{c}a\n\u{c}");
    let json: Value = serde_json::from_str(&read("scan.json")).unwrap();
    let pages = json["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[1]["page"], 2);
    assert_eq!(pages[1]["text"], "a\naaa\n");
    assert_eq!(pages[1]["lines"].as_array().unwrap().len(), 2);
    markup::assert_valid_hocr(&dir.path().join("out/scan.hocr"));
    markup::assert_valid_alto(&dir.path().join("out/scan.alto.xml"));
    let hocr = read("scan.hocr");
    let xhtml = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&hocr, xhtml).expect("well-formed hOCR");
    let pages = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("ocr_page"))
        .count();
    assert_eq!(pages, 3);
    let alto = read("scan.alto.xml");
    let doc = roxmltree::Document::parse(&alto).expect("well-formed ALTO");
    let ids: Vec<_> = doc
        .descendants()
        .filter_map(|n| n.attribute("ID"))
        .collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "ALTO IDs are unique: {ids:?}");
    assert_eq!(
        doc.descendants()
            .filter(|n| n.tag_name().name() == "Page")
            .count(),
        3
    );
}

#[test]
fn the_bundles_default_line_detector_is_used_unless_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle_naming(dir.path(), "learned", true);
    save(
        DynamicImage::ImageLuma8(page(&[3, 1, 2])),
        &dir.path().join("scan.png"),
        ImageFormat::Png,
    );
    let first_box = |detector: Option<&str>| -> [i64; 4] {
        let mut args = vec![
            "transcribe",
            "scan.png",
            "-o",
            "out",
            "--format",
            "txt,json",
            "--model",
            bundle.to_str().unwrap(),
        ];
        args.extend(detector.map(|d| ["--detector", d]).into_iter().flatten());
        let output = textrec(dir.path(), &args);
        assert!(output.status.success(), "{}", stderr(&output));
        let read = |name: &str| std::fs::read_to_string(dir.path().join("out").join(name)).unwrap();
        assert_eq!(read("scan.txt"), "aaa\na\naa\n", "{detector:?}");
        let json: Value = serde_json::from_str(&read("scan.json")).unwrap();
        let first = &json["lines"][0]["box"];
        ["x0", "y0", "x1", "y1"].map(|k| first[k].as_i64().unwrap())
    };
    // The first line's ink is x 40..224, y 40..64. The bundle's pages.json names the learned
    // detector: its box reaches 3 rows (12 px) up and down from the marked core, rows 48..56,
    // and runs past both ends of the line by the reach of its 25-column window (7 columns).
    let [x0, y0, x1, y1] = first_box(None);
    assert!(
        (x0 - 12).abs() <= 4 && (x1 - 256).abs() <= 4,
        "learned: {x0}..{x1}"
    );
    assert_eq!((y0, y1), (40, 64), "learned");
    assert_eq!(first_box(Some("learned")), [x0, y0, x1, y1]);
    // --detector projection overrides the bundle: the ink box, give or take padding.
    let found = first_box(Some("projection"));
    for (found, expected) in found.into_iter().zip([40, 40, 224, 64]) {
        assert!(
            (found - expected).abs() <= 8,
            "projection: {found} vs {expected}"
        );
    }

    // The learned detector asked for, by the flag or by pages.json, in a bundle without it: the
    // model fails to load (exit 3), saying so.
    let elsewhere = tempfile::tempdir().unwrap();
    for (bundle, flag) in [
        (write_bundle(elsewhere.path()), Some("learned")),
        (write_bundle_naming(dir.path(), "learned", false), None),
    ] {
        let mut args = vec![
            "transcribe",
            "scan.png",
            "-o",
            "out2",
            "--model",
            bundle.to_str().unwrap(),
        ];
        args.extend(flag.map(|d| ["--detector", d]).into_iter().flatten());
        let output = textrec(dir.path(), &args);
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("no learned line detector"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn a_bundles_slant_search_is_read_from_pages_json_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    save(
        DynamicImage::ImageLuma8(page(&[3, 1, 2])),
        &dir.path().join("scan.png"),
        ImageFormat::Png,
    );
    let run = |slant_search: &str, out: &str| {
        let bundles = dir.path().join(format!("bundle-{out}"));
        std::fs::create_dir(&bundles).unwrap();
        let bundle = write_bundle_reading_pages(
            &bundles,
            &format!("{{\"line_detector\": \"projection\", \"slant_search\": {slant_search}}}"),
        );
        textrec(
            dir.path(),
            &[
                "transcribe",
                "scan.png",
                "-o",
                out,
                "--model",
                bundle.to_str().unwrap(),
            ],
        )
    };
    // Sheared readings of clear blobs say the same: the text is unchanged.
    let output = run(r#"{"shears": [-0.3, 0.3], "margin": 2}"#, "searched");
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(dir.path().join("searched/scan.txt")).unwrap();
    assert_eq!(text, "aaa\na\naa\n");
    // A search with no shears: the model fails to load (exit 3), naming pages.json.
    let output = run(r#"{"shears": [], "margin": 2}"#, "empty");
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("pages.json: slant_search.shears []"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_bundle_with_a_language_model_beam_decodes_unless_told_greedy() {
    let dir = tempfile::tempdir().unwrap();
    let with_lm = write_bundle_with_language_model(dir.path());
    save(
        DynamicImage::ImageLuma8(page(&[3, 1, 2])),
        &dir.path().join("scan.png"),
        ImageFormat::Png,
    );
    let run = |bundle: &Path, decoder: Option<&str>, out: &str| {
        let mut args = vec![
            "transcribe",
            "scan.png",
            "-o",
            out,
            "--format",
            "txt,json",
            "--model",
            bundle.to_str().unwrap(),
        ];
        args.extend(decoder.map(|d| ["--decoder", d]).into_iter().flatten());
        textrec(dir.path(), &args)
    };
    for (decoder, expected) in [
        (None, "beam"),
        (Some("beam"), "beam"),
        (Some("greedy"), "greedy"),
    ] {
        let out = format!("out-{expected}-{}", decoder.is_some());
        let output = run(&with_lm, decoder, &out);
        assert!(output.status.success(), "{}", stderr(&output));
        let read = |name: &str| std::fs::read_to_string(dir.path().join(&out).join(name)).unwrap();
        // The ink reader leaves no doubt, so the language model changes no character.
        assert_eq!(read("scan.txt"), "aaa\na\naa\n", "{decoder:?}");
        let json: Value = serde_json::from_str(&read("scan.json")).unwrap();
        assert_eq!(json["decoder"], expected, "{decoder:?}");
    }
    // Beam decoding asked of a bundle without a language model: the model fails to load (exit 3).
    let elsewhere = tempfile::tempdir().unwrap();
    let output = run(&write_bundle(elsewhere.path()), Some("beam"), "out-none");
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("with a language model"),
        "{}",
        stderr(&output)
    );
    // `verify` reads the language model too.
    let output = textrec(dir.path(), &["verify", with_lm.to_str().unwrap(), "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("models/lines.lm") && report.contains("char_ngram"),
        "{report}"
    );
}

#[test]
fn bad_inputs_are_named_with_their_reason_and_the_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    let scans = dir.path().join("scans");
    save(
        DynamicImage::ImageLuma8(page(&[2])),
        &scans.join("good.png"),
        ImageFormat::Png,
    );
    let png = pages::png(&page(&[1, 1]));
    std::fs::write(scans.join("empty.png"), b"").unwrap();
    std::fs::write(
        scans.join("notes.png"),
        b"these are my notes, not a picture",
    )
    .unwrap();
    std::fs::write(scans.join("truncated.png"), &png[..png.len() / 3]).unwrap();
    save(
        DynamicImage::ImageLuma8(GrayImage::new(3000, 3000)),
        &scans.join("huge.tif"),
        ImageFormat::Tiff,
    );
    // A Latin-1 name is bytes that are not UTF-8: still a page to read.
    let latin1 = byte_name(b"latin1_\xe9.png");
    std::fs::write(scans.join(latin1), pages::png(&page(&[1]))).unwrap();
    symlink("loop.png", scans.join("loop.png")).unwrap();
    symlink("gone.png", scans.join("dangling.png")).unwrap();
    std::fs::create_dir(scans.join("x.png")).unwrap();
    std::fs::write(scans.join("bitmap.png"), bmp()).unwrap();
    let output = textrec(
        dir.path(),
        &[
            "transcribe",
            "scans",
            "-o",
            "out",
            "--max-pixels",
            "4000000",
            "--json",
            "--model",
            bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let errors = stderr(&output);
    for (file, reason) in [
        ("empty.png", "empty"),
        ("notes.png", "not an image"),
        ("truncated.png", "truncated"),
        ("huge.tif", "over the limit"),
        ("loop.png", "Too many levels of symbolic links"),
        ("dangling.png", "No such file"),
        ("bitmap.png", "not an image"),
    ] {
        assert!(
            errors
                .lines()
                .any(|l| l.contains(file) && l.contains(reason)),
            "{file}: {reason} missing from:\n{errors}"
        );
    }
    assert!(!errors.contains("panicked"), "{errors}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/good.txt")).unwrap(),
        "aa\n"
    );
    // The output has the input's bytes for a name; the summary, which is Unicode, U+FFFD.
    let out = dir.path().join("out");
    assert_eq!(
        std::fs::read_to_string(out.join(byte_name(b"latin1_\xe9.txt"))).unwrap(),
        "a\n"
    );
    let written: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(written.len(), 2, "only the good pages have an output");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["failed"], 7);
    let inputs = summary["inputs"].as_array().unwrap();
    let transcribed: Vec<&str> = inputs
        .iter()
        .filter(|i| i["status"] == "transcribed")
        .map(|i| i["input"].as_str().unwrap())
        .collect();
    assert_eq!(transcribed, ["scans/good.png", "scans/latin1_\u{fffd}.png"]);
    assert!(
        inputs.iter().all(|i| i["input"] != "scans/x.png"),
        "a folder is not an input: {summary}"
    );
}

#[test]
fn resume_leaves_pages_whose_outputs_are_newer_alone() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    for name in ["a.png", "b.png"] {
        save(
            DynamicImage::ImageLuma8(page(&[1])),
            &dir.path().join("scans").join(name),
            ImageFormat::Png,
        );
    }
    let run = || {
        let output = textrec(
            dir.path(),
            &[
                "transcribe",
                "scans/*.png",
                "-o",
                "out",
                "--resume",
                "--json",
                "--model",
                bundle.to_str().unwrap(),
            ],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
        summary["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["status"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), ["transcribed", "transcribed"]);
    std::fs::remove_file(dir.path().join("out/b.txt")).unwrap();
    assert_eq!(run(), ["up_to_date", "transcribed"]);
}

/// Every output file under `dir`, by its path relative to `dir`, with its bytes.
fn outputs_under(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

#[test]
fn shards_split_the_inputs_disjointly_and_together_write_what_one_run_writes() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    for i in 0..12 {
        let folder = if i % 2 == 0 { "scans" } else { "scans/box-2" };
        save(
            DynamicImage::ImageLuma8(page(&[1 + i % 3])),
            &dir.path().join(folder).join(format!("page-{i:02}.png")),
            ImageFormat::Png,
        );
    }
    let run = |out: &str, shard: Option<&str>| -> Vec<String> {
        let mut args = vec![
            "transcribe",
            "scans",
            "-r",
            "--format",
            "txt,json",
            "-o",
            out,
        ];
        args.extend(["--json", "--model", bundle.to_str().unwrap()]);
        if let Some(shard) = shard {
            args.extend(["--shard", shard]);
        }
        let output = textrec(dir.path(), &args);
        assert!(output.status.success(), "{}", stderr(&output));
        summary_inputs(&output)
            .iter()
            .map(|i| i["input"].as_str().unwrap().to_owned())
            .collect()
    };
    let whole = run("whole", None);
    let parts: Vec<Vec<String>> = (0..3)
        .map(|k| run("parts", Some(&format!("{k}/3"))))
        .collect();
    let mut union: Vec<String> = parts.concat();
    union.sort();
    let mut all = whole.clone();
    all.sort();
    assert_eq!(union, all, "each input in exactly one shard");
    assert!(parts.iter().all(|p| !p.is_empty()), "{parts:?}");
    // The JSON outputs hold timings; the text is what must not differ.
    let texts_only = |files: std::collections::BTreeMap<String, Vec<u8>>| {
        files
            .into_iter()
            .filter(|(name, _)| name.ends_with(".txt"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        texts_only(outputs_under(&dir.path().join("parts"))),
        texts_only(outputs_under(&dir.path().join("whole"))),
        "the shards' outputs are one run's, byte for byte"
    );

    // A new file lands in one part and moves no other.
    save(
        DynamicImage::ImageLuma8(page(&[2])),
        &dir.path().join("scans/page-99.png"),
        ImageFormat::Png,
    );
    for (k, before) in parts.iter().enumerate() {
        let after = run("again", Some(&format!("{k}/3")));
        let kept: Vec<&String> = after
            .iter()
            .filter(|i| !i.ends_with("page-99.png"))
            .collect();
        assert_eq!(kept, before.iter().collect::<Vec<_>>(), "shard {k}/3");
    }

    for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
        let shard = format!("--shard={bad}");
        let output = textrec(dir.path(), &["transcribe", "scans", "-o", "x", &shard]);
        assert_eq!(output.status.code(), Some(2), "{bad}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("is not K/N"),
            "{bad}: {}",
            stderr(&output)
        );
    }
}

/// docs/slurm-transcribe.sh, submitted as it is (smaller resources and array on sbatch's
/// command line) to a one-node Slurm on loopback.
#[test]
fn the_documented_slurm_array_writes_what_one_unsharded_run_writes() {
    let cluster = slurm::Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    for i in 0..9 {
        save(
            DynamicImage::ImageLuma8(page(&[1 + i % 3])),
            &dir.path().join(format!("scans/box-{}/page-{i}.png", i % 2)),
            ImageFormat::Png,
        );
    }
    let whole = textrec(
        dir.path(),
        &[
            "transcribe".as_ref(),
            "scans".as_ref(),
            "-r".as_ref(),
            "-o".as_ref(),
            "whole".as_ref(),
            "--model".as_ref(),
            bundle.as_os_str(),
        ],
    );
    assert!(whole.status.success(), "{}", stderr(&whole));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/slurm-transcribe.sh");
    let submitted = cluster
        .command("sbatch")
        .args([
            "--parsable",
            "--array=0-2",
            "--cpus-per-task=1",
            "--mem=500M",
            "--time=5",
        ])
        .arg(format!("--chdir={}", dir.path().display()))
        .arg(format!("--output={}/slurm-%A_%a.log", dir.path().display()))
        .env("SCANS", dir.path().join("scans"))
        .env("OUT", dir.path().join("parts"))
        .env("MODEL", &bundle)
        .env("TEXTREC", env!("CARGO_BIN_EXE_textrec"))
        .arg(script)
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    let id = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
    let jobs = cluster.wait_for_job(&id, std::time::Duration::from_secs(180));
    let states: Vec<String> = String::from_utf8_lossy(&jobs.stdout)
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix("JobState="))
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        states,
        ["COMPLETED"; 3],
        "{}",
        String::from_utf8_lossy(&jobs.stdout)
    );
    let texts = |folder: &str| -> Vec<(String, Vec<u8>)> {
        outputs_under(&dir.path().join(folder))
            .into_iter()
            .filter(|(name, _)| name.ends_with(".txt"))
            .collect()
    };
    assert_eq!(texts("whole").len(), 9);
    assert_eq!(
        texts("parts"),
        texts("whole"),
        "the array's outputs are one run's, byte for byte"
    );
}

#[test]
fn a_batch_logged_to_a_file_says_how_far_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    for name in ["a.png", "b.png", "c.png"] {
        save(
            DynamicImage::ImageLuma8(page(&[1])),
            &dir.path().join("scans").join(name),
            ImageFormat::Png,
        );
    }
    // stderr is a pipe here, as in a CI log or a Slurm job; 0 s: a line for every page.
    let output = Command::new(env!("CARGO_BIN_EXE_textrec"))
        .args(["transcribe", "scans", "-o", "out", "--json", "--model"])
        .arg(&bundle)
        .env("TEXTREC_PROGRESS_INTERVAL", "0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    for done in ["1/3 (33%)", "2/3 (66%)", "3/3 (100%)"] {
        assert!(log.contains(&format!("transcribe: {done}")), "{log}");
    }
    assert!(log.contains("/s, elapsed"), "{log}");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("stdout stays JSON");
    assert_eq!(summary["inputs"].as_array().unwrap().len(), 3);
}

#[test]
fn without_a_model_or_an_input_the_error_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    save(
        DynamicImage::ImageLuma8(page(&[1])),
        &dir.path().join("page.png"),
        ImageFormat::Png,
    );
    let output = textrec(dir.path(), &["transcribe", "page.png", "-o", "out"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("cargo xtask run pipeline.yaml"),
        "{}",
        stderr(&output)
    );

    let output = textrec(dir.path(), &["transcribe", "missing.png", "-o", "out"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("missing.png: no such file"));

    std::fs::write(dir.path().join("broken.tar.gz"), b"not a bundle").unwrap();
    let output = textrec(
        dir.path(),
        &[
            "transcribe",
            "page.png",
            "-o",
            "out",
            "--model",
            "broken.tar.gz",
        ],
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("broken.tar.gz"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn two_inputs_that_would_write_one_output_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    for folder in ["a", "b"] {
        save(
            DynamicImage::ImageLuma8(page(&[1])),
            &dir.path().join(folder).join("page.png"),
            ImageFormat::Png,
        );
    }
    let model = bundle.to_str().unwrap();
    // Two files of one name, and two folders holding the same names.
    for inputs in [&["a/page.png", "b/page.png"][..], &["a", "b"]] {
        let mut args = vec!["transcribe"];
        args.extend(inputs);
        args.extend(["-o", "out", "--model", model]);
        let output = textrec(dir.path(), &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{inputs:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output)
                .contains("a/page.png and b/page.png would both be written to out/page.png.txt"),
            "{inputs:?}: {}",
            stderr(&output)
        );
        assert!(!dir.path().join("out").exists(), "nothing is written");
    }
    // One file named twice is one page to read.
    let output = textrec(
        dir.path(),
        &[
            "transcribe",
            "a",
            "a/page.png",
            "-o",
            "out",
            "--json",
            "--model",
            model,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary_inputs(&output).len(), 1);
}

#[test]
fn control_characters_in_a_file_name_leave_hocr_and_alto_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    save(
        DynamicImage::ImageLuma8(page(&[1])),
        &dir.path().join("p\u{1}q.png"),
        ImageFormat::Png,
    );
    let output = textrec(
        dir.path(),
        &[
            "transcribe",
            "p\u{1}q.png",
            "-o",
            "out",
            "--format",
            "hocr,alto",
            "--model",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    markup::assert_valid_hocr(&dir.path().join("out/p\u{1}q.hocr"));
    markup::assert_valid_alto(&dir.path().join("out/p\u{1}q.alto.xml"));
    let read = |name: &str| std::fs::read_to_string(dir.path().join("out").join(name)).unwrap();
    let xhtml = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let hocr = read("p\u{1}q.hocr");
    let doc = roxmltree::Document::parse_with_options(&hocr, xhtml).expect("well-formed hOCR");
    let title = doc.descendants().find(|n| n.has_tag_name("title")).unwrap();
    assert_eq!(title.text(), Some("p\u{fffd}q.png"));
    let alto = read("p\u{1}q.alto.xml");
    let doc = roxmltree::Document::parse(&alto).expect("well-formed ALTO");
    let file_name = doc
        .descendants()
        .find(|n| n.tag_name().name() == "fileName")
        .unwrap();
    assert_eq!(file_name.text(), Some("p\u{fffd}q.png"));
}

/// Transcribes a three-line `scan.png` into `out/` in `formats` with `bundle`; returns `out/`.
fn transcribe_scan(dir: &Path, bundle: &Path, formats: &str) -> std::path::PathBuf {
    save(
        DynamicImage::ImageLuma8(page(&[3, 1, 2])),
        &dir.join("scan.png"),
        ImageFormat::Png,
    );
    let output = textrec(
        dir,
        &[
            "transcribe",
            "scan.png",
            "-o",
            "out",
            "--format",
            formats,
            "--model",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    dir.join("out")
}

#[test]
fn lines_read_as_no_words_leave_hocr_and_alto_valid() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle_reading_nothing(dir.path());
    let out = transcribe_scan(dir.path(), &bundle, "json,hocr,alto");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scan.json")).unwrap()).unwrap();
    let lines = json["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{json}");
    assert!(
        lines
            .iter()
            .all(|l| l["text"] == "" && l["words"] == serde_json::json!([])),
        "{json}"
    );
    // hOCR keeps the empty lines; ALTO cannot (a TextLine holds at least one String), so its
    // one TextBlock is empty.
    markup::assert_valid_hocr(&out.join("scan.hocr"));
    markup::assert_valid_alto(&out.join("scan.alto.xml"));
    let hocr = std::fs::read_to_string(out.join("scan.hocr")).unwrap();
    assert_eq!(hocr.matches(r#"class="ocr_line""#).count(), 3, "{hocr}");
    assert_eq!(hocr.matches(r#"class="ocrx_word""#).count(), 0, "{hocr}");
    let alto = std::fs::read_to_string(out.join("scan.alto.xml")).unwrap();
    assert_eq!(alto.matches("<TextBlock ").count(), 1, "{alto}");
    assert_eq!(alto.matches("<TextLine").count(), 0, "{alto}");
}

/// `doc` with the attribute `name` of the first tag that starts with `tag` set to `value`, or
/// removed.
fn with_attribute(doc: &str, tag: &str, name: &str, value: Option<&str>) -> String {
    let start = doc.find(tag).unwrap_or_else(|| panic!("no {tag} in {doc}"));
    let end = start + doc[start..].find('>').unwrap();
    let key = format!(" {name}=\"");
    let at = start
        + doc[start..end]
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} on {tag}"));
    let value_end = at + key.len() + doc[at + key.len()..].find('"').unwrap() + 1;
    let attribute = value.map_or(String::new(), |v| format!(" {name}=\"{v}\""));
    format!("{}{attribute}{}", &doc[..at], &doc[value_end..])
}

/// `doc` with its first `from` replaced by `to`.
fn replaced(doc: &str, from: &str, to: &str) -> String {
    assert!(doc.contains(from), "no {from} in {doc}");
    doc.replacen(from, to, 1)
}

/// The checks the format tests rely on have teeth: the real output passes, and each change
/// below, one a writer could make, fails for the reason given.
#[test]
fn the_format_validators_reject_broken_alto_and_hocr() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    let out = transcribe_scan(dir.path(), &bundle, "hocr,alto");
    let check = |name: &str, doc: &str, problems: fn(&Path) -> Option<String>| {
        let file = dir.path().join(name);
        std::fs::write(&file, doc).unwrap();
        problems(&file)
    };

    let alto = std::fs::read_to_string(out.join("scan.alto.xml")).unwrap();
    assert_eq!(check("ok.alto.xml", &alto, markup::alto_problems), None);
    let description = {
        let (start, end) = (
            alto.find("  <Description>").unwrap(),
            alto.find("  <Layout>").unwrap(),
        );
        alto[start..end].to_owned()
    };
    // ALTO 4 itself forbids all but three of these: a String without HPOS, a negative HPOS
    // and units other than pixels are valid ALTO that textrec promises not to write.
    let broken_alto = [
        (
            "a String without HPOS",
            with_attribute(&alto, "<String ", "HPOS", None),
            "The attribute 'HPOS' is required but missing",
        ),
        (
            "a Page without PHYSICAL_IMG_NR",
            with_attribute(&alto, "<Page ", "PHYSICAL_IMG_NR", None),
            "The attribute 'PHYSICAL_IMG_NR' is required but missing",
        ),
        (
            "Description after Layout",
            replaced(
                &alto.replacen(&description, "", 1),
                "</alto>",
                &format!("{description}</alto>"),
            ),
            "Layout': This element is not expected",
        ),
        (
            "WC above 1",
            with_attribute(&alto, "<String ", "WC", Some("1.5")),
            "maxInclusive",
        ),
        (
            "a negative HPOS",
            with_attribute(&alto, "<TextLine ", "HPOS", Some("-1")),
            "minInclusive",
        ),
        (
            "a repeated ID",
            with_attribute(&alto, "<TextLine ", "ID", Some("block_1")),
            "block_1",
        ),
        (
            "a TextLine without a String",
            replaced(
                &alto,
                "</TextBlock>",
                r#"<TextLine ID="empty" HPOS="0" VPOS="0" WIDTH="1" HEIGHT="1"/></TextBlock>"#,
            ),
            "Missing child element(s)",
        ),
        (
            "SP before the first String",
            replaced(&alto, "<String ", "<SP/><String "),
            "SP': This element is not expected",
        ),
        (
            "an attribute ALTO does not have",
            replaced(&alto, "<String ", r#"<String FONT="serif" "#),
            "The attribute 'FONT' is not allowed",
        ),
        (
            "a unit other than the pixels written",
            replaced(&alto, ">pixel<", ">mm10<"),
            "not an element of the set",
        ),
        (
            "ALTO 3's namespace",
            replaced(&alto, "ns-v4#\"", "ns-v3#\""),
            "No matching global declaration",
        ),
    ];
    for (change, doc, reason) in broken_alto {
        let problems = check("broken.alto.xml", &doc, markup::alto_problems)
            .unwrap_or_else(|| panic!("{change}: accepted:\n{doc}"));
        assert!(problems.contains(reason), "{change}: {problems}");
    }

    let hocr = std::fs::read_to_string(out.join("scan.hocr")).unwrap();
    assert_eq!(check("ok.hocr", &hocr, markup::hocr_problems), None);
    let broken_hocr = [
        (
            "a tag left open",
            replaced(&hocr, "</span>", ""),
            "Opening and ending tag mismatch",
        ),
        (
            "a block inside a line",
            replaced(
                &hocr,
                r#"<span class="ocrx_word""#,
                r#"<div></div><span class="ocrx_word""#,
            ),
            "Element div is not declared in span list of possible children",
        ),
        (
            "a paragraph that is not a p",
            replaced(
                &replaced(&hocr, r#"<p class="ocr_par""#, r#"<div class="ocr_par""#),
                "</p>",
                "</div>",
            ),
            "must have a tag name from ['p']",
        ),
        (
            "a line without a bbox",
            with_attribute(
                &hocr,
                r#"<span class="ocr_line""#,
                "title",
                Some("x_wconf 90"),
            ),
            "must have title prop 'bbox'",
        ),
        (
            "x_wconf over 100",
            with_attribute(
                &hocr,
                r#"<span class="ocrx_word""#,
                "title",
                Some("bbox 40 40 80 64; x_wconf 150"),
            ),
            "Value out of range",
        ),
        (
            "no ocr-system",
            replaced(&hocr, r#"name="ocr-system""#, r#"name="generator""#),
            "Required metadata field 'ocr-system' missing",
        ),
        (
            "a class the capabilities do not list",
            replaced(&hocr, " ocr_carea ", " "),
            r#"Requires the "ocr_carea" capability"#,
        ),
    ];
    for (change, doc, reason) in broken_hocr {
        let problems = check("broken.hocr", &doc, markup::hocr_problems)
            .unwrap_or_else(|| panic!("{change}: accepted:\n{doc}"));
        assert!(problems.contains(reason), "{change}: {problems}");
    }
}

#[test]
fn output_folders_and_models_whose_paths_are_not_utf8_are_reported_lossily() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join(byte_name(b"models_\xe9"));
    std::fs::create_dir(&models).unwrap();
    let bundle = write_bundle(&models);
    save(
        DynamicImage::ImageLuma8(page(&[2])),
        &dir.path().join("page.png"),
        ImageFormat::Png,
    );
    let out = byte_name(b"out_\xff");
    let output = textrec(
        dir.path(),
        &[
            OsStr::new("transcribe"),
            OsStr::new("page.png"),
            OsStr::new("-o"),
            out,
            OsStr::new("--json"),
            OsStr::new("--model"),
            bundle.strip_prefix(dir.path()).unwrap().as_os_str(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["model"], "models_\u{fffd}/textrec-0.1.0.tar.gz");
    assert_eq!(summary["inputs"][0]["outputs"][0], "out_\u{fffd}/page.txt");
    let text = std::fs::read_to_string(dir.path().join(out).join("page.txt")).unwrap();
    assert_eq!(text, "aa\n");
}

#[test]
fn a_link_back_up_the_tree_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    save(
        DynamicImage::ImageLuma8(page(&[1])),
        &dir.path().join("scans/page.png"),
        ImageFormat::Png,
    );
    symlink(".", dir.path().join("scans/again")).unwrap();
    let output = textrec(
        dir.path(),
        &[
            "transcribe",
            "scans",
            "-o",
            "out",
            "--recursive",
            "--json",
            "--model",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let inputs: Vec<Value> = summary_inputs(&output)
        .iter()
        .map(|i| i["input"].clone())
        .collect();
    assert_eq!(inputs, ["scans/page.png"]);
    assert!(
        stderr(&output).contains("warning: scans/again: the same folder as scans, read once"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_input_is_read_no_further_than_max_pixels_allows() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    let scans = dir.path().join("scans");
    save(
        DynamicImage::ImageLuma8(page(&[1])),
        &scans.join("good.png"),
        ImageFormat::Png,
    );
    symlink("/dev/zero", scans.join("zero.png")).unwrap();
    // 16 bytes a pixel of --max-pixels: 1,600,000 bytes; one more is refused unread.
    let big = std::fs::File::create(scans.join("big.tif")).unwrap();
    big.set_len(1_600_001).unwrap();
    // Were the limit lost, reading /dev/zero would fail here, not fill the machine's memory.
    let output = textrec_after(
        dir.path(),
        &[
            "transcribe",
            "scans",
            "-o",
            "out",
            "--max-pixels",
            "100000",
            "--jobs",
            "1",
            "--json",
            "--model",
            bundle.to_str().unwrap(),
        ],
        || {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            // SAFETY: setrlimit only reads the struct.
            match unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        },
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let errors = stderr(&output);
    for file in ["zero.png", "big.tif"] {
        assert!(
            errors.lines().any(|l| l.contains(file)
                && l.contains(
                    "over the limit of 1600000 bytes (16 per pixel of --max-pixels 100000"
                )),
            "{file}: {errors}"
        );
    }
    let statuses: Vec<Value> = summary_inputs(&output)
        .iter()
        .map(|i| i["status"].clone())
        .collect();
    assert_eq!(statuses, ["failed", "transcribed", "failed"]);
}

#[test]
fn outputs_get_the_mode_the_umask_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    save(
        DynamicImage::ImageLuma8(page(&[1])),
        &dir.path().join("page.png"),
        ImageFormat::Png,
    );
    for (umask, mode) in [(0o022, 0o644), (0o027, 0o640)] {
        let out = format!("out-{umask:o}");
        let output = textrec_after(
            dir.path(),
            &[
                "transcribe",
                "page.png",
                "-o",
                &out,
                "--format",
                "txt,json",
                "--model",
                bundle.to_str().unwrap(),
            ],
            move || {
                // SAFETY: umask only sets the process's file mode mask.
                unsafe { libc::umask(umask) };
                Ok(())
            },
        );
        assert!(output.status.success(), "{}", stderr(&output));
        for name in ["page.txt", "page.json"] {
            let metadata = std::fs::metadata(dir.path().join(&out).join(name)).unwrap();
            assert_eq!(
                metadata.permissions().mode() & 0o777,
                mode,
                "{name} under umask {umask:o}"
            );
        }
    }
}

/// ONNX Runtime's library: `ORT_DYLIB_PATH`, else the one `pip install onnxruntime` put in
/// site-packages (`cargo xtask ci` installs it).
fn onnx_runtime_library() -> String {
    if let Ok(path) = std::env::var("ORT_DYLIB_PATH") {
        return path;
    }
    let found = Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os, glob; \
             print(sorted(glob.glob(os.path.dirname(onnxruntime.__file__) + '/capi/libonnxruntime.so*'))[-1])",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    found.expect("ONNX Runtime not found: `pip install onnxruntime`, or set ORT_DYLIB_PATH")
}

#[test]
fn onnx_runtime_reads_the_same_text_as_tract_and_auto_falls_back_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    save(
        DynamicImage::ImageLuma8(page(&[3, 1, 2, 4])),
        &dir.path().join("scans/page.png"),
        ImageFormat::Png,
    );
    let run = |backend: &str, out: &str, library: &str| {
        Command::new(env!("CARGO_BIN_EXE_textrec"))
            .args([
                "transcribe",
                "scans",
                "-o",
                out,
                "--format",
                "txt,json",
                "--backend",
                backend,
            ])
            .args(["--model", bundle.to_str().unwrap()])
            .env("ORT_DYLIB_PATH", library)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let library = onnx_runtime_library();
    let tract = run("tract", "tract", &library);
    let ort = run("ort", "ort", &library);
    assert!(
        tract.status.success() && ort.status.success(),
        "{}",
        stderr(&ort)
    );
    let read = |path: &str| std::fs::read_to_string(dir.path().join(path)).unwrap();
    assert_eq!(read("ort/page.txt"), "aaa\na\naa\naaaa\n");
    assert_eq!(read("ort/page.txt"), read("tract/page.txt"));
    let boxes = |path: &str| {
        let json: Value = serde_json::from_str(&read(path)).unwrap();
        json["lines"].clone()
    };
    let (a, b) = (boxes("ort/page.json"), boxes("tract/page.json"));
    for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        assert_eq!(x["box"], y["box"]);
        let gap = (x["confidence"].as_f64().unwrap() - y["confidence"].as_f64().unwrap()).abs();
        assert!(gap < 1e-4, "confidence differs by {gap}");
    }

    let fallback = run("auto", "auto", "/nonexistent/libonnxruntime.so");
    assert!(fallback.status.success(), "{}", stderr(&fallback));
    assert!(
        stderr(&fallback).contains("using tract"),
        "{}",
        stderr(&fallback)
    );
    assert_eq!(read("auto/page.txt"), read("tract/page.txt"));
    let refused = run("ort", "refused", "/nonexistent/libonnxruntime.so");
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("/nonexistent/libonnxruntime.so"));
}
