//! The `package` stage end to end through the real `xtask` binary, on a tiny untrained ONNX
//! model: rebuilds (forced, or in another workspace) give the same bytes, one changed param gives
//! a different bundle, and the bundle holds what a release needs and verifies.

mod support;

use std::path::Path;

use prost::Message;
use support::Workspace;
use textrec_pipeline::LockFile;
use textrec_recognizer::bundle::{self, Bundle};
use textrec_recognizer::onnx::{GraphBuilder, Metadata};

const PIPELINE: &str = r#"
stages:
  - name: import
    kind: copy
    deps: [in/chars.onnx]
    outs: [onnx/chars.onnx]
  - name: evaluate
    kind: shell
    deps: [in/evaluate-chars.json]
    params: {cmd: 'sleep 0.05; cp "$DEP" "$OUT"'}
    outs: [metrics/evaluate-chars.json]
  - name: release
    kind: package
    deps: [onnx/chars.onnx, metrics/evaluate-chars.json, p.yaml]
    params: {version: 0.1.0, intended_use: For the tests.}
    outs: [release/textrec-0.1.0.tar.gz]
"#;

const BUNDLE: &str = "release/textrec-0.1.0.tar.gz";

/// `image [N, 1, 4, 4]` → flatten → matmul → `logits [N, 3]`, with the metadata `export` writes.
fn tiny_model() -> Vec<u8> {
    let mut g = GraphBuilder::new();
    let weights: Vec<f32> = (0..48).map(|i| i as f32 / 48.0).collect();
    g.input("image", &[Err("N"), Ok(1), Ok(4), Ok(4)])
        .weight("w", &[16, 3], &weights)
        .node("Flatten", &["image"], &["flat"], &[])
        .node("MatMul", &["flat", "w"], &["logits"], &[])
        .output("logits", &[Err("N"), Ok(3)]);
    let metadata = Metadata::default()
        .with("textrec.architecture", "char_cnn")
        .with("textrec.vocabulary", r#"["a","b","c"]"#)
        .with("textrec.input_height", "4")
        .with("textrec.input_width", "4")
        .with(
            "textrec.normalisation",
            "pixel / 255, ink = 1 (white on black)",
        )
        .with("textrec.model_version", "0.1.0")
        .with("textrec.training_data_sha256", "ab".repeat(32));
    g.build("tiny", &metadata).encode_to_vec()
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    ws.write(
        "in/evaluate-chars.json",
        r#"{"accuracy": 0.875, "samples": 64, "split": "test", "dataset": "data/chars", "seconds": 1.5}"#,
    );
    std::fs::write(ws.path("in/chars.onnx"), tiny_model()).unwrap();
    ws
}

fn run_ok(ws: &Workspace, args: &[&str]) {
    let run = ws.run(args);
    assert_eq!(run.code, 0, "{}\n{}", run.json, run.stderr);
}

fn bundle_bytes(ws: &Workspace) -> Vec<u8> {
    std::fs::read(ws.path(BUNDLE)).unwrap()
}

#[test]
fn rebuilds_are_byte_identical_and_one_changed_param_changes_the_bundle() {
    let ws = workspace();
    run_ok(&ws, &[]);
    let first = bundle_bytes(&ws);

    run_ok(&ws, &["--force"]);
    assert!(
        bundle_bytes(&ws) == first,
        "a forced rebuild of every stage"
    );

    let twin = workspace();
    run_ok(&twin, &[]);
    assert!(
        bundle_bytes(&twin) == first,
        "another workspace, the same inputs"
    );

    let changed = ws.run(&["-S", "release.intended_use=Reading test digits."]);
    assert_eq!(changed.status("release"), "ran", "{}", changed.stderr);
    assert_eq!(changed.with_status("cached"), ["evaluate", "import"]);
    assert!(
        bundle_bytes(&ws) != first,
        "intended_use changed, so must the bundle"
    );
    let card = Bundle::open(&ws.path(BUNDLE)).unwrap();
    let card = String::from_utf8(card.file("MODEL_CARD.md").unwrap().to_vec()).unwrap();
    assert!(
        card.contains("## Intended use\n\nReading test digits.\n"),
        "{card}"
    );
}

#[test]
fn the_bundle_holds_models_vocabulary_preprocessing_card_and_upstream_lock_and_verifies() {
    let ws = workspace();
    run_ok(&ws, &[]);
    let bundle = Bundle::open(&ws.path(BUNDLE)).unwrap();
    assert_eq!(
        bundle.file_names().collect::<Vec<_>>(),
        [
            "MODEL_CARD.md",
            "models/chars.onnx",
            "pipeline.lock",
            "pipeline.yaml",
            "preprocessing.json",
            "vocabulary.json",
        ]
    );
    assert_eq!(bundle.file("models/chars.onnx").unwrap(), tiny_model());
    assert_eq!(bundle.file("pipeline.yaml").unwrap(), PIPELINE.as_bytes());
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_slice(bundle.file(name).unwrap()).unwrap()
    };
    assert_eq!(
        json("vocabulary.json"),
        serde_json::json!({"chars": ["a", "b", "c"]})
    );
    assert_eq!(
        json("preprocessing.json"),
        serde_json::json!({"chars": {
            "architecture": "char_cnn", "input_height": 4, "input_width": 4,
            "normalisation": "pixel / 255, ink = 1 (white on black)", "polarity": null
        }})
    );

    let lock = std::str::from_utf8(bundle.file("pipeline.lock").unwrap()).unwrap();
    let lock = LockFile::parse(Path::new("pipeline.lock"), lock).unwrap();
    let on_disk = LockFile::load(&ws.path("p.lock")).unwrap();
    assert_eq!(
        lock.stages.keys().collect::<Vec<_>>(),
        ["evaluate", "import"],
        "the stages upstream of the release, not the release itself"
    );
    assert_eq!(lock.stages["evaluate"].seconds, 0.0, "timings are zeroed");
    assert_eq!(lock.stages["import"].outs, on_disk.stages["import"].outs);
    assert_eq!(lock.stages["import"].key, on_disk.stages["import"].key);

    let card = std::str::from_utf8(bundle.file("MODEL_CARD.md").unwrap()).unwrap();
    for expected in [
        "# textrec 0.1.0: model card",
        "| `models/chars.onnx` | char_cnn | 1×4×4 | 3 | 0.1.0 |",
        "### `metrics/evaluate-chars.json`: test split of `data/chars`",
        "| accuracy | 0.8750 |\n| samples | 64 |\n",
        "## Intended use\n\nFor the tests.\n",
        "## Known limits",
        "No `download` stage is upstream",
    ] {
        assert!(card.contains(expected), "{expected:?} missing from\n{card}");
    }
    assert!(
        !card.contains("seconds"),
        "timings stay out of the card:\n{card}"
    );

    let verification = bundle::verify(&ws.path(BUNDLE)).unwrap();
    assert!(verification.is_ok());
    let model = verification.models[0].outcome.as_ref().unwrap();
    assert_eq!(model.outputs[0].shape, [1, 3]);
}

#[test]
fn a_model_without_textrec_metadata_is_refused_naming_it() {
    let ws = workspace();
    let mut g = GraphBuilder::new();
    g.input("x", &[Err("N"), Ok(2)])
        .node("Relu", &["x"], &["y"], &[])
        .output("y", &[Err("N"), Ok(2)]);
    std::fs::write(
        ws.path("in/chars.onnx"),
        g.build("plain", &Metadata::default()).encode_to_vec(),
    )
    .unwrap();
    let run = ws.run(&[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.status("release"), "failed");
    assert!(
        run.reason("release").contains(
            "`onnx/chars.onnx`: no textrec.architecture metadata: not a textrec model: only models written by `export`"
        ),
        "{}",
        run.reason("release")
    );
    assert!(!ws.exists(BUNDLE));
}
