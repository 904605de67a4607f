//! The `textrec` binary as a user runs it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use prost::Message;
use serde_json::Value;
use textrec_recognizer::bundle;
use textrec_recognizer::onnx::{GraphBuilder, Metadata};

#[test]
fn vocabulary_json_lists_the_blank_first_then_every_character_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_textrec"))
        .args(["vocabulary", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let tokens: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(tokens.len(), 80);
    assert_eq!(tokens[0], "<B>");
    let mut chars: Vec<&String> = tokens[1..].iter().collect();
    assert!(chars.iter().all(|t| t.chars().count() == 1));
    chars.sort();
    chars.dedup();
    assert_eq!(chars.len(), 79, "no character twice");
    for c in ["a", "Z", "7", " ", "?", "'"] {
        assert!(tokens.iter().any(|t| t == c), "{c:?} is predicted");
    }
}

/// A bundle with one tiny real model (`image [N, 1, 4, 4]` → `logits [N, 3]`), as `package`
/// would write it.
fn write_test_bundle(dir: &Path) -> PathBuf {
    let mut g = GraphBuilder::new();
    let weights: Vec<f32> = (0..48).map(|i| i as f32 / 48.0).collect();
    g.input("image", &[Err("N"), Ok(1), Ok(4), Ok(4)])
        .weight("w", &[16, 3], &weights)
        .node("Flatten", &["image"], &["flat"], &[])
        .node("MatMul", &["flat", "w"], &["logits"], &[])
        .output("logits", &[Err("N"), Ok(3)]);
    let metadata = Metadata::default()
        .with("textrec.architecture", "char_cnn")
        .with("textrec.input_height", "4")
        .with("textrec.input_width", "4");
    let files = BTreeMap::from([
        (
            "models/chars.onnx".to_owned(),
            g.build("tiny", &metadata).encode_to_vec(),
        ),
        ("MODEL_CARD.md".to_owned(), b"# A card\n".to_vec()),
    ]);
    let bytes = bundle::write_bundle("textrec", "0.1.0", "tests", &files).unwrap();
    let path = dir.join("textrec-0.1.0.tar.gz");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Rewrites the bundle with one byte of the model changed and the manifest left as it was.
fn tamper_with_the_model(path: &Path) {
    let mut tar = Vec::new();
    GzDecoder::new(std::fs::read(path).unwrap().as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    let at = tar
        .windows(8)
        .position(|w| w == b"char_cnn")
        .expect("the model's metadata is stored as is");
    tar[at + 7] = b'x';
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&tar).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

fn verify(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_textrec"))
        .arg("verify")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn verify_passes_a_good_bundle_and_fails_a_tampered_one_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_test_bundle(dir.path());

    let good = verify(&[path.as_os_str()]);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert_eq!(good.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ok        models/chars.onnx"), "{stdout}");
    assert!(
        stdout.contains("loaded    models/chars.onnx: char_cnn, input image [N, 1, 4, 4] (ran as [1, 1, 4, 4]), output logits [N, 3] (ran as [1, 3])"),
        "{stdout}"
    );
    let json = verify(&["--json".as_ref(), path.as_os_str()]);
    assert_eq!(json.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["models"][0]["status"], "loaded");

    tamper_with_the_model(&path);
    let bad = verify(&[path.as_os_str()]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`models/chars.onnx` does not match the manifest"),
        "{stderr}"
    );
    let json = verify(&["--json".as_ref(), path.as_os_str()]);
    assert_eq!(json.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let files = report["files"].as_array().unwrap();
    let model = files
        .iter()
        .find(|f| f["name"] == "models/chars.onnx")
        .unwrap();
    assert_eq!(model["status"], "mismatch");
    assert_ne!(model["sha256"], model["expected_sha256"]);
    assert!(
        files
            .iter()
            .any(|f| f["name"] == "MODEL_CARD.md" && f["status"] == "ok")
    );
}

#[test]
fn verify_fails_on_something_that_is_not_a_bundle_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tar.gz");
    std::fs::write(&junk, b"not gzip").unwrap();
    let out = verify(&[junk.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("junk.tar.gz: not a valid tar.gz"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = verify(&[dir.path().join("nope.tar.gz").as_os_str()]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(verify(&[]).status.code(), Some(2), "no BUNDLE is bad usage");
}

#[test]
fn verify_json_reports_a_path_that_is_not_utf8_lossily() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"bundles_\xe9"));
    std::fs::create_dir(&folder).unwrap();
    let good = write_test_bundle(&folder);
    let junk = folder.join("junk.tar.gz");
    std::fs::write(&junk, b"not gzip").unwrap();
    for (bundle, code, ok) in [(&good, 0, true), (&junk, 1, false)] {
        let out = verify(&["--json".as_ref(), bundle.as_os_str()]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], ok);
        assert_eq!(
            report["bundle"],
            bundle.to_string_lossy().as_ref(),
            "{report}"
        );
        assert!(
            report["bundle"]
                .as_str()
                .unwrap()
                .contains("bundles_\u{fffd}/")
        );
    }
}
