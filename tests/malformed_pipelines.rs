//! Every malformed pipeline in tests/malformed/ must fail with exit code 2 and a message that
//! names the file, the line and column of the problem, and what is wrong.

mod support;

use std::path::Path;

use support::Workspace;

/// (file, line, column, what the message must say)
const EXPECTED: &[(&str, u64, u64, &str)] = &[
    (
        "01-syntax-unclosed-list.yaml",
        5,
        9,
        "illegal placement of ':' indicator",
    ),
    (
        "02-unknown-stage-field.yaml",
        5,
        5,
        "unknown field `outz`, expected one of name, kind",
    ),
    (
        "03-unknown-top-level-field.yaml",
        1,
        1,
        "unknown field `version`, expected one of workdir, remote, stages",
    ),
    (
        "04-unknown-kind.yaml",
        3,
        11,
        "unknown stage kind `shel`; known kinds: augment, copy, download, emnist, evaluate, export, ground-truth, iam, language-model, mix, package, shell, synthesize, train, tune-decoding",
    ),
    ("05-missing-kind.yaml", 3, 5, "missing field `kind`"),
    (
        "06-duplicate-stage.yaml",
        6,
        11,
        "duplicate stage name `a` (first defined at line 2)",
    ),
    (
        "07-output-claimed-twice.yaml",
        9,
        12,
        "output `data/x.txt` is already claimed by stage `a`",
    ),
    (
        "08-nested-outputs.yaml",
        9,
        12,
        "output `data/raw` overlaps output `data` of stage `a`",
    ),
    ("09-cycle.yaml", 2, 11, "dependency cycle: a -> b -> c -> a"),
    (
        "10-missing-dep.yaml",
        4,
        12,
        "dependency `nowhere/input.txt` does not exist",
    ),
    (
        "11-params-not-a-mapping.yaml",
        4,
        13,
        "`params` must be a mapping",
    ),
    (
        "12-bad-param-for-kind.yaml",
        5,
        7,
        "stage `a` (shell params): unknown field `command`, expected `cmd` or `env`",
    ),
    (
        "13-invalid-stage-name.yaml",
        2,
        11,
        "invalid stage name `train model`",
    ),
    (
        "14-output-outside-workdir.yaml",
        5,
        12,
        "output `../escape.txt` must stay inside the pipeline's workdir",
    ),
    ("15-deps-not-a-list.yaml", 4, 11, "expected sequence start"),
    ("16-no-stages.yaml", 1, 9, "the pipeline has no stages"),
    ("17-duplicate-key.yaml", 4, 5, "duplicate mapping key: kind"),
    (
        "18-self-dependency.yaml",
        4,
        12,
        "stage `a` depends on its own output `a.txt`",
    ),
    (
        "19-copy-shape.yaml",
        3,
        11,
        "`copy` needs as many outs as deps",
    ),
    (
        "20-bad-indentation.yaml",
        3,
        10,
        "mapping values are not allowed in this context",
    ),
    (
        "21-output-over-lock.yaml",
        5,
        12,
        "output `21-output-over-lock.lock` would overwrite the pipeline's lock file",
    ),
    (
        "22-dep-above-root.yaml",
        4,
        12,
        "`/../x` climbs above the filesystem root",
    ),
    (
        "23-detector-network-shape.yaml",
        10,
        7,
        "stage `train-detector` (train params): network: invalid length 3, expected an array of length 4",
    ),
    (
        "24-char-network-option.yaml",
        10,
        7,
        "stage `train-chars` (train params): network: unknown field `lstm_hidden`, expected one of `classes`, `channels`, `conv1_channels`, `conv2_channels`, `hidden`, `dropout`",
    ),
    (
        "25-weight-average-decay.yaml",
        10,
        7,
        "stage `train-chars` (train params): training: ema_decay 1.5 must be between 0 and 1, exclusive (0.999 is typical)",
    ),
    (
        "26-label-smoothing-on-lines.yaml",
        10,
        7,
        "stage `train-lines` (train params): training: label_smoothing is for the char_cnn classifier (line_ctc and line_fcn have no class targets to smooth); remove it from this stage",
    ),
    (
        "27-init-not-a-dep.yaml",
        10,
        7,
        "stage `finetune` (train params): `train` reads one dataset (deps; plus the `init` model when fine-tuning)",
    ),
    (
        "28-init-with-network.yaml",
        10,
        7,
        "stage `finetune` (train params): `network` and `init` both given: a fine-tune keeps the network of `models/lines`; remove `network`",
    ),
    (
        "29-mix-weights.yaml",
        10,
        7,
        "stage `mixed` (mix params): `weights` has 1 entries for 2 deps: one weight per dataset",
    ),
    (
        "30-line-network-from-dataset.yaml",
        10,
        7,
        "stage `train-lines` (train params): network: `height` comes from the dataset when training starts; remove it",
    ),
    (
        "31-augment-on-pages.yaml",
        10,
        7,
        "stage `train-detector` (train params): training: augment is for char_cnn and line_ctc (a page's line boxes would not follow its warped pixels); remove it from this stage",
    ),
    (
        "32-augment-bad-range.yaml",
        10,
        7,
        "stage `train-lines` (train params): training: augment.scale [1.2, 0.9] must be [min, max] with 0 < min <= max",
    ),
    (
        "33-remote-not-a-store.yaml",
        2,
        9,
        "remote: expected s3://BUCKET/PREFIX, gs://, az://, abfss:// or file:///PATH, not `ftp://files.example/cache`",
    ),
    (
        "34-resources-bad-time.yaml",
        7,
        16,
        "resources: time `2h` is not a Slurm time limit",
    ),
];

#[test]
fn each_malformed_pipeline_fails_with_its_location_and_reason() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/malformed");
    let mut files: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let covered: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    assert_eq!(
        files, covered,
        "every corpus file has exactly one expectation"
    );

    let ws = Workspace::new();
    for (file, line, column, message) in EXPECTED {
        ws.write(file, &std::fs::read_to_string(corpus.join(file)).unwrap());
        let out = ws.xtask(&["run", file, "--dry-run"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        let located = format!("{file}:{line}:{column}: ");
        assert!(
            stderr.contains(&located),
            "{file}: expected `{located}` in:\n{stderr}"
        );
        assert!(
            stderr.contains(message),
            "{file}: expected `{message}` in:\n{stderr}"
        );
        assert!(
            stderr.lines().any(|l| l.contains(" | ")),
            "{file}: the offending line is quoted:\n{stderr}"
        );
    }
}

#[test]
fn a_missing_pipeline_file_is_a_usage_error_naming_it() {
    let ws = Workspace::new();
    let out = ws.xtask(&["run", "nope.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read pipeline file nope.yaml"));
}
