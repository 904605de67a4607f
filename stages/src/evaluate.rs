//! `evaluate`: run the exported ONNX model (what ships) on a dataset split with tract, next to a
//! trivial baseline and the previous release's metrics, and enforce the quality gates.
//!
//! Character models are scored by accuracy (per class, confusion matrix); line models by CER
//! and WER (per writer, per length, the worst lines with their images). A line model on a
//! pages dataset is scored end to end: the line detector's recall, precision and IoU against
//! the true boxes, page CER with detected lines, and CER with the true boxes (what a perfect
//! detector would give). Given a learned line detector as a third dep, both detectors are
//! scored and the better one on the validation pages (never the reported split) is named in the
//! metrics (`line_detector`), which `package` writes into the bundle as its default. Given a character language model (`.lm`, any dep after the
//! dataset), lines are beam-decoded with it (`read_greedily` counts those its guard left to
//! greedy decoding), and greedy decoding is reported beside it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use serde::Deserialize;
use textrec_pipeline::{InvalidStage, Stage, StageContext, StageFailure, StageKind, parse_params};
use textrec_recognizer::data::{Dataset, DatasetKind, Observer, Sample, Split, mnist};
use textrec_recognizer::eval::{self, CER_TIE, PageScores, TruthPage};
use textrec_recognizer::infer::{
    CharClassifier, LearnedDetector, LineDetector, LineRecognizer, PageTranscriber, SlantSearch,
    TextErrors, score_chars,
};
use textrec_recognizer::lm::CharLm;
use textrec_recognizer::model_metadata::ModelMetadata;
use textrec_recognizer::{Architecture, greedy_decode};

use crate::observe::StageObserver;

#[derive(Debug, Clone, Copy)]
pub struct Evaluate;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_split")]
    split: Split,
    /// Character models: fail below this accuracy.
    #[serde(default)]
    min_accuracy: Option<f64>,
    /// Line models: fail above this character error rate.
    #[serde(default)]
    max_cer: Option<f64>,
    /// Fail if the evaluation takes longer.
    #[serde(default)]
    max_seconds: Option<f64>,
    /// A previous release's metrics file; `max_regression` is measured against it.
    #[serde(default)]
    previous: Option<String>,
    /// Fail if the headline metric (accuracy, or CER) got worse than `previous` by more than this.
    #[serde(default)]
    max_regression: Option<f64>,
    /// Character models: also score the 1,797 real UCI digits (never trained on).
    #[serde(default)]
    uci_digits: bool,
    /// Pages: fail when a line detector (each one scored) finds fewer of the true lines
    /// (IoU ≥ 0.5).
    #[serde(default)]
    min_detection_recall: Option<f64>,
    /// Line models: also read each line at these shears, keeping the surest reading; a page
    /// evaluation's setting goes into the release bundle with its line detector.
    #[serde(default)]
    slant_search: Option<SlantSearch>,
}

fn default_split() -> Split {
    Split::Test
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = parse_params(&stage.params)?;
    if !(2..=4).contains(&stage.deps.len()) || stage.outs.len() != 1 || stage.metrics.len() != 1 {
        return Err(InvalidStage::shape(
            "`evaluate` reads [model.onnx (or a release bundle's line model), dataset], then for line models optionally a language model (.lm) and, on pages, a learned line detector's .onnx; it writes a report directory (outs) and a metrics file",
        ));
    }
    if let Some(search) = &params.slant_search {
        search.check().map_err(InvalidStage::rejected)?;
    }
    if params.max_regression.is_some() && params.previous.is_none() {
        return Err(InvalidStage::param(
            "max_regression",
            "`max_regression` needs `previous` (the earlier release's metrics.json)",
        ));
    }
    Ok(params)
}

/// The headline metric of a model kind and which way is better.
#[derive(Debug, Clone, Copy)]
struct Headline {
    name: &'static str,
    value: f64,
    higher_is_better: bool,
}

impl Headline {
    /// Character error rate, lines and pages alike: lower is better.
    fn cer(value: f64) -> Headline {
        Headline {
            name: "cer",
            value,
            higher_is_better: false,
        }
    }

    /// How much worse `self` is than `before` (positive = regression).
    fn regression_from(&self, before: f64) -> f64 {
        if self.higher_is_better {
            before - self.value
        } else {
            self.value - before
        }
    }
}

impl StageKind for Evaluate {
    fn name(&self) -> &'static str {
        "evaluate"
    }

    fn version(&self) -> u32 {
        10
    }

    fn summary(&self) -> &'static str {
        "score the exported model vs a baseline and the previous release; gates min_accuracy, max_cer, max_seconds, max_regression"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let started = Instant::now();
        let model = &ctx.deps[0];
        let dataset = Dataset::open(&ctx.deps[1])?;
        let report = &ctx.outs[0].1;
        std::fs::create_dir_all(report)?;
        let previous_metrics = match &params.previous {
            Some(p) => read_previous(&ctx.workdir.join(p))?,
            None => None,
        };
        let mut bytes = std::fs::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
        if model.to_string_lossy().ends_with(".tar.gz") {
            // A release bundle: its line model, to measure a release before fine-tuning it.
            let bundle = textrec_recognizer::bundle::Bundle::from_bytes(&bytes)
                .map_err(|e| format!("{}: {e}", model.display()))?;
            bytes = bundle
                .model_of(Architecture::LineCtc)
                .map(|m| m.bytes.to_vec())
                .ok_or_else(|| format!("{}: the bundle has no line model", model.display()))?;
        }
        let architecture = ModelMetadata::read(&bytes)
            .map_err(|e| format!("{}: {e}", model.display()))?
            .architecture;
        let observer = StageObserver { ctx };
        let (language_model, detector) = extra_deps(&ctx.deps[2..])?;
        let (metrics, headline) = match architecture {
            Architecture::LineFcn => {
                return Err(format!(
                    "{}: a line detector is scored on pages, as a dep after the dataset beside a line model",
                    model.display()
                )
                .into());
            }
            Architecture::LineCtc => {
                if params.min_accuracy.is_some() || params.uci_digits {
                    return Err(InvalidStage::param(
                        "min_accuracy",
                        "min_accuracy and uci_digits apply to character models; use max_cer",
                    )
                    .into());
                }
                let mut recognizer = LineRecognizer::from_bytes(&bytes, model, 16)?;
                recognizer.set_slant_search(params.slant_search.clone())?;
                if let Some((lm, path)) = language_model {
                    recognizer
                        .set_language_model(Some(lm))
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                if dataset.manifest.kind == DatasetKind::Pages {
                    let transcriber = PageTranscriber::new(recognizer, String::new());
                    let mut detectors = vec![LineDetector::default()];
                    if let Some(path) = detector {
                        detectors.push(LineDetector::Learned(LearnedDetector::load(path)?));
                    }
                    evaluate_pages(
                        &transcriber,
                        &detectors,
                        &dataset,
                        &params,
                        report,
                        &observer,
                    )?
                } else {
                    if detector.is_some() {
                        return Err(InvalidStage::shape(
                            "a line detector is evaluated on pages only",
                        )
                        .into());
                    }
                    evaluate_lines(
                        &recognizer,
                        &dataset,
                        &params,
                        &previous_metrics,
                        report,
                        &observer,
                    )?
                }
            }
            Architecture::CharCnn => {
                if ctx.deps.len() > 2 {
                    return Err(InvalidStage::shape(
                        "a language model or line detector is evaluated with a line model",
                    )
                    .into());
                }
                if params.max_cer.is_some() || params.slant_search.is_some() {
                    return Err(InvalidStage::param(
                        "max_cer",
                        "max_cer and slant_search apply to line models; use min_accuracy",
                    )
                    .into());
                }
                let classifier = CharClassifier::load(model, 128)?;
                evaluate_chars(
                    &classifier,
                    &dataset,
                    &params,
                    &previous_metrics,
                    report,
                    &observer,
                )?
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        // Timings go to the log, not the metrics file, so re-runs give the same bytes.
        observer.log(&format!("evaluated in {seconds:.2}s"));
        std::fs::write(&ctx.outs[1].1, format!("{metrics}\n"))?;

        let mut failures = Vec::new();
        if let Some(floor) = params.min_accuracy
            && headline.value < floor
        {
            failures.push(format!(
                "accuracy {:.4} is below min_accuracy {floor}",
                headline.value
            ));
        }
        if let Some(ceiling) = params.max_cer
            && headline.value > ceiling
        {
            failures.push(format!(
                "CER {:.4} is above max_cer {ceiling}",
                headline.value
            ));
        }
        if let (Some(floor), Some(detectors)) = (
            params.min_detection_recall,
            metrics.get("detectors").and_then(|v| v.as_object()),
        ) {
            for (name, scores) in detectors {
                if let Some(recall) = scores["detection_recall"].as_f64()
                    && recall < floor
                {
                    failures.push(format!(
                        "{name} line detection recall {recall:.4} is below min_detection_recall {floor}"
                    ));
                }
            }
        }
        if let Some(limit) = params.max_seconds
            && seconds > limit
        {
            failures.push(format!(
                "evaluation took {seconds:.1}s, over max_seconds {limit}"
            ));
        }
        let before = previous_metrics
            .as_ref()
            .and_then(|m| m.get(headline.name))
            .and_then(serde_json::Value::as_f64);
        if let (Some(allowed), Some(before)) = (params.max_regression, before)
            && headline.regression_from(before) > allowed
        {
            failures.push(format!(
                "{} {:.4} regressed from the previous release's {before:.4} by more than {allowed}",
                headline.name, headline.value
            ));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("quality gate failed: {}", failures.join("; ")).into())
        }
    }
}

/// A language model read from a dep, with its path for errors.
type NamedLm<'a> = (std::sync::Arc<CharLm>, &'a Path);

/// The deps after the dataset: a language model (told by its magic) and a line detector.
fn extra_deps(
    deps: &[std::path::PathBuf],
) -> Result<(Option<NamedLm<'_>>, Option<&Path>), StageFailure> {
    let (mut language_model, mut detector) = (None, None);
    for path in deps {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if CharLm::sniff(&bytes) {
            if language_model.is_some() {
                return Err("`evaluate` takes one language model".into());
            }
            let lm = CharLm::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            language_model = Some((std::sync::Arc::new(lm), path.as_path()));
        } else if detector.replace(path.as_path()).is_some() {
            return Err("`evaluate` takes one learned line detector".into());
        }
    }
    Ok((language_model, detector))
}

fn read_previous(path: &Path) -> Result<Option<serde_json::Value>, StageFailure> {
    if !path.exists() {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(value))
}

fn previous_value(previous: &Option<serde_json::Value>, key: &str) -> Option<f64> {
    previous.as_ref()?.get(key)?.as_f64()
}

fn evaluate_chars(
    classifier: &CharClassifier,
    dataset: &Dataset,
    params: &Params,
    previous: &Option<serde_json::Value>,
    report: &Path,
    observer: &dyn Observer,
) -> Result<(serde_json::Value, Headline), StageFailure> {
    let scores = score_chars(classifier, dataset, params.split, observer)?;
    let confusion = &scores.all;
    // MNIST's digits are split by a hash of their pixels, not by writer, so its test writers
    // also wrote training digits: the headline counts the held-out font writers alone.
    let (mut correct, mut total) = (0u32, 0u32);
    for (writer, c) in &scores.by_writer {
        if writer != mnist::STYLE {
            correct += c.correct();
            total += c.total();
        }
    }
    let mnist_scores = scores.by_writer.get(mnist::STYLE);
    let accuracy = match mnist_scores {
        Some(_) if total > 0 => f64::from(correct) / f64::from(total),
        _ => confusion.accuracy(),
    };
    // Baseline: always answer the training split's most frequent class.
    let majority = dataset
        .split(Split::Train)
        .and_then(|s| {
            s.class_counts
                .iter()
                .max_by_key(|(_, c)| **c)
                .map(|(k, _)| k.clone())
        })
        .unwrap_or_default();
    let baseline = confusion.share_of(&majority);
    let previous = previous_value(previous, "accuracy");
    let per_class = confusion.per_class();
    std::fs::write(
        report.join("per_class.json"),
        serde_json::to_vec_pretty(&per_class)?,
    )?;
    confusion.write_png(&report.join("confusion.png"))?;

    let mut md = format!(
        "# Character model evaluation ({} split, {} samples)\n\n| model | accuracy |\n|---|---|\n\
         | this model | {accuracy:.4} |\n| majority-class baseline | {baseline:.4} |\n",
        params.split.name(),
        confusion.total(),
    );
    if let Some(digits) = mnist_scores {
        md.push_str(&format!(
            "\nThe accuracy above counts the {total} characters of held-out font writers. MNIST's \
             {} test digits are split by image, not by writer, so their writers also wrote \
             training digits: {:.4} on them, {:.4} with everything pooled.\n",
            digits.total(),
            digits.accuracy(),
            confusion.accuracy()
        ));
    }
    if let Some(p) = previous {
        md.push_str(&format!("| previous release | {p:.4} |\n"));
    }
    md.push_str("\n## By writer (font)\n\n| writer | characters | accuracy |\n|---|---|---|\n");
    for (writer, c) in &scores.by_writer {
        md.push_str(&format!(
            "| {writer} | {} | {:.4} |\n",
            c.total(),
            c.accuracy()
        ));
    }
    let mut worst: Vec<(&String, &f64)> = per_class.iter().collect();
    worst.sort_by(|a, b| a.1.total_cmp(b.1));
    md.push_str("\n## Hardest classes\n\n| class | accuracy |\n|---|---|\n");
    for (c, a) in worst.iter().take(10) {
        md.push_str(&format!("| `{c}` | {a:.3} |\n"));
    }
    let merged = confusion.accuracy_merging_alike_cases();
    md.push_str(&format!(
        "\nCounting the other case of c i j k l m o p s u v w x y z as right (EMNIST Balanced's \
         merges: in a 28×28 box they differ only in size): {merged:.4}.\n\n\
         ## Most frequent mistakes\n\n| truth | predicted | count |\n|---|---|---|\n"
    ));
    for (truth, predicted, count) in confusion.top_confusions(15) {
        md.push_str(&format!("| `{truth}` | `{predicted}` | {count} |\n"));
    }
    md.push_str("\n![confusion matrix](confusion.png)\n");

    let mut metrics = serde_json::json!({
        "accuracy": accuracy,
        "accuracy_alike_cases_merged": merged,
        "samples": confusion.total(),
        "by_writer": scores
            .by_writer
            .iter()
            .map(|(writer, c)| (writer.clone(), c.accuracy().into()))
            .collect::<serde_json::Map<_, _>>(),
        "baseline_majority_accuracy": baseline,
        "previous_accuracy": previous,
    });
    if let Some(digits) = mnist_scores {
        metrics["mnist_accuracy"] = digits.accuracy().into();
        metrics["accuracy_with_mnist"] = confusion.accuracy().into();
        metrics["samples_held_out_writers"] = total.into();
    }
    if params.uci_digits {
        let (any_class, digits_only) = score_uci_digits(classifier)?;
        metrics["uci_digits_accuracy"] = any_class.into();
        metrics["uci_digits_accuracy_digits_only"] = digits_only.into();
        md.push_str(&format!(
            "\n## Real digits (UCI, 1,797 images by other writers, never trained on)\n\n\
             | answer among | accuracy |\n|---|---|\n| all {} classes | {any_class:.4} |\n\
             | the 10 digits | {digits_only:.4} |\n",
            classifier.vocabulary.len()
        ));
    }
    std::fs::write(report.join("report.md"), md)?;
    Ok((
        metrics,
        Headline {
            name: "accuracy",
            value: accuracy,
            higher_is_better: true,
        },
    ))
}

/// Accuracy on the UCI digits when the answer may be any class, and when it is the best digit.
fn score_uci_digits(classifier: &CharClassifier) -> Result<(f64, f64), StageFailure> {
    let digits = textrec_recognizer::data::uci_digits::uci_digits();
    let labels = &classifier.vocabulary;
    let digit_classes: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i].len() == 1 && labels[i].as_bytes()[0].is_ascii_digit())
        .collect();
    let (mut any_class, mut digits_only) = (0usize, 0usize);
    for (sample, scores) in digits.iter().zip(classifier.logits(&digits)?) {
        let best = |classes: &mut dyn Iterator<Item = usize>| {
            classes
                .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                .map(|i| labels[i].as_str())
        };
        any_class += usize::from(best(&mut (0..labels.len())) == Some(&sample.label));
        digits_only += usize::from(best(&mut digit_classes.iter().copied()) == Some(&sample.label));
    }
    let n = digits.len().max(1) as f64;
    Ok((any_class as f64 / n, digits_only as f64 / n))
}

/// One scored line, kept for the worst-examples table.
struct Scored {
    sample: Sample,
    predicted: String,
    confidence: f32,
    errors: TextErrors,
}

/// Lines at a time through the recognizer: bounded memory, whole width buckets.
const CHUNK: usize = 256;
/// How many of the worst lines the report shows.
const WORST: usize = 20;

fn length_bucket(chars: usize) -> &'static str {
    match chars {
        0..=10 => "1-10",
        11..=20 => "11-20",
        21..=30 => "21-30",
        31..=45 => "31-45",
        _ => "46+",
    }
}

fn evaluate_lines(
    recognizer: &LineRecognizer,
    dataset: &Dataset,
    params: &Params,
    previous: &Option<serde_json::Value>,
    report: &Path,
    observer: &dyn Observer,
) -> Result<(serde_json::Value, Headline), StageFailure> {
    announce_split(dataset, params, observer)?;

    // Baseline: the training split's most frequent line, said for every line.
    let mut counts: HashMap<String, u32> = HashMap::new();
    for sample in dataset.samples(Split::Train) {
        *counts.entry(sample?.label).or_default() += 1;
    }
    let frequent_line = counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(line, _)| line)
        .unwrap_or_default();

    let mut total = TextErrors::default();
    let mut greedy = TextErrors::default();
    // Lines the beam's guard gave to greedy decoding.
    let mut read_greedily = 0u64;
    let mut baseline = TextErrors::default();
    let mut by_writer: BTreeMap<String, TextErrors> = BTreeMap::new();
    let mut by_length: BTreeMap<&'static str, TextErrors> = BTreeMap::new();
    let mut worst: Vec<Scored> = Vec::new();
    let mut samples = dataset.samples(params.split).peekable();
    while samples.peek().is_some() {
        let chunk = samples
            .by_ref()
            .take(CHUNK)
            .collect::<Result<Vec<_>, _>>()?;
        let scores = recognizer.log_probs(&chunk)?;
        observer.advance(chunk.len() as u64);
        for (sample, scores) in chunk.into_iter().zip(scores) {
            let line = recognizer.decode(&scores)?;
            read_greedily += u64::from(line.guarded);
            let errors = TextErrors::of(&sample.label, &line.text);
            // Without a language model the recognizer's own decoding is the greedy one.
            greedy.add(if recognizer.language_model().is_some() {
                let best_path =
                    greedy_decode(&scores, recognizer.vocabulary.len(), &recognizer.vocabulary)?;
                TextErrors::of(&sample.label, &best_path.text)
            } else {
                errors
            });
            total.add(errors);
            baseline.add(TextErrors::of(&sample.label, &frequent_line));
            by_writer
                .entry(sample.style.clone())
                .or_default()
                .add(errors);
            by_length
                .entry(length_bucket(sample.label.chars().count()))
                .or_default()
                .add(errors);
            worst.push(Scored {
                sample,
                predicted: line.text,
                confidence: line.confidence,
                errors,
            });
            // Keep only the worst few: sort by CER, then by edits.
            if worst.len() > 4 * WORST {
                rank_worst(&mut worst);
            }
        }
    }
    rank_worst(&mut worst);

    let cer = total.cer();
    let previous_cer = previous_value(previous, "cer");
    let images = report.join("worst");
    std::fs::create_dir_all(&images)?;
    let mut md = format!(
        "# Line model evaluation ({} split, {} lines, {} characters)\n\n\
         | model | CER | WER |\n|---|---|---|\n\
         | this model | {:.4} | {:.4} |\n\
         | empty-output baseline | 1.0000 | 1.0000 |\n\
         | most-frequent-line baseline | {:.4} | {:.4} |\n",
        params.split.name(),
        total.lines,
        total.chars,
        cer,
        total.wer(),
        baseline.cer(),
        baseline.wer(),
    );
    if recognizer.language_model().is_some() {
        md.push_str(&format!(
            "| this model, greedy decoding (no language model) | {:.4} | {:.4} |\n",
            greedy.cer(),
            greedy.wer()
        ));
    }
    if let Some(p) = previous_cer {
        md.push_str(&format!("| previous release | {p:.4} | |\n"));
    }
    md.push_str("\n## By writer (font)\n\n| writer | lines | CER | WER |\n|---|---|---|---|\n");
    for (writer, e) in &by_writer {
        md.push_str(&format!(
            "| {writer} | {} | {:.4} | {:.4} |\n",
            e.lines,
            e.cer(),
            e.wer()
        ));
    }
    md.push_str("\n## By length (characters)\n\n| length | lines | CER |\n|---|---|---|\n");
    for (bucket, e) in &by_length {
        md.push_str(&format!("| {bucket} | {} | {:.4} |\n", e.lines, e.cer()));
    }
    md.push_str(&format!(
        "\n## The {WORST} worst lines\n\n| image | truth | prediction | CER | confidence |\n|---|---|---|---|---|\n"
    ));
    for (i, scored) in worst.iter().enumerate() {
        let file = format!("{i:02}.png");
        let s = &scored.sample;
        save_line(s, &images.join(&file))?;
        md.push_str(&format!(
            "| ![](worst/{file}) | `{}` | `{}` | {:.3} | {:.2} |\n",
            s.label.replace('|', "\\|"),
            scored.predicted.replace('|', "\\|"),
            scored.errors.cer(),
            scored.confidence
        ));
    }
    std::fs::write(report.join("report.md"), md)?;
    let breakdown = |m: &dyn Fn() -> Vec<(String, TextErrors)>| -> serde_json::Value {
        m().into_iter()
            .map(|(k, e)| {
                (
                    k,
                    serde_json::json!({"lines": e.lines, "cer": e.cer(), "wer": e.wer()}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    std::fs::write(
        report.join("breakdown.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "by_writer": breakdown(&|| by_writer.iter().map(|(k, e)| (k.clone(), *e)).collect()),
            "by_length": breakdown(&|| by_length.iter().map(|(k, e)| ((*k).to_owned(), *e)).collect()),
        }))?,
    )?;

    let mut metrics = serde_json::json!({
        "cer": cer,
        "wer": total.wer(),
        "lines": total.lines,
        "characters": total.chars,
        "decoder": recognizer.decoder_name(),
        "greedy_cer": greedy.cer(),
        "greedy_wer": greedy.wer(),
        "read_greedily": read_greedily,
        "baseline_empty_cer": 1.0,
        "baseline_frequent_line_cer": baseline.cer(),
        "previous_cer": previous_cer,
    });
    if let Some(search) = recognizer.slant_search() {
        metrics["slant_search"] = serde_json::to_value(search)?;
    }
    Ok((metrics, Headline::cer(cer)))
}

/// Fails unless the dataset has the split to score, and tells the progress bar its size.
fn announce_split(
    dataset: &Dataset,
    params: &Params,
    observer: &dyn Observer,
) -> Result<(), StageFailure> {
    let split = dataset
        .split(params.split)
        .ok_or_else(|| format!("the dataset has no {} split", params.split.name()))?;
    observer.total(split.count);
    Ok(())
}

/// Writes a line as the network reads it (white ink), shown as ink on paper.
fn save_line(line: &Sample, path: &Path) -> Result<(), StageFailure> {
    let paper = line.pixels.iter().map(|p| 255 - p).collect();
    image::GrayImage::from_raw(u32::from(line.width), u32::from(line.height), paper)
        .ok_or("a line's pixels do not match its size")?
        .save(path)
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(())
}

/// One line detector's results over the split, and the first page's lines as the recognizer
/// read them (Markdown rows).
#[derive(Default)]
struct DetectorRun {
    scores: PageScores,
    examples: String,
}

fn page_metrics(scores: &PageScores) -> serde_json::Value {
    serde_json::json!({
        "cer": scores.errors.cer(),
        "wer": scores.errors.wer(),
        "detection_recall": scores.detection.recall(),
        "detection_precision": scores.detection.precision(),
        "detection_mean_iou": scores.detection.mean_iou(),
    })
}

/// Every detector's page scores on `split`, and the text errors with the true boxes; with a
/// `report`, the first page's lines go into it as examples.
fn score_detectors(
    transcriber: &PageTranscriber,
    detectors: &[LineDetector],
    dataset: &Dataset,
    split: Split,
    report: Option<&Path>,
    observer: &dyn Observer,
) -> Result<(Vec<DetectorRun>, TextErrors), StageFailure> {
    let mut runs: Vec<DetectorRun> = detectors.iter().map(|_| DetectorRun::default()).collect();
    let mut oracle = TextErrors::default();
    for (index, truth) in TruthPage::read_split(dataset, split).enumerate() {
        let truth = truth?;
        let page = &truth.image;
        for (detector, run) in detectors.iter().zip(&mut runs) {
            let found = detector.detect(page)?;
            let transcript = transcriber.read_lines(page, found.clone())?;
            run.scores.add(&truth, &found, &transcript.text());
            if let Some(report) = report
                && index == 0
            {
                let dir = format!("lines-{}", detector.kind());
                std::fs::create_dir_all(report.join(&dir))?;
                let truths: Vec<&str> = truth.text.lines().collect();
                for (i, (cut, line)) in transcriber
                    .line_images(page, &found)
                    .iter()
                    .zip(&transcript.lines)
                    .enumerate()
                {
                    let file = format!("{dir}/{i:02}.png");
                    save_line(cut, &report.join(&file))?;
                    run.examples.push_str(&format!(
                        "| ![]({file}) | `{}` | `{}` | {:.2} |\n",
                        truths.get(i).unwrap_or(&"").replace('|', "\\|"),
                        line.text.replace('|', "\\|"),
                        line.confidence
                    ));
                }
            }
        }
        let oracle_text = transcriber.read_lines(page, truth.boxes.clone())?.text();
        oracle.add(truth.errors(&oracle_text));
        observer.advance(1);
    }
    Ok((runs, oracle))
}

/// Detected lines and page text against the truth, page by page, for every detector in
/// `detectors`; the one with the lowest page CER (ties: better detection) is named the default.
/// That choice reads the validation pages whenever another split is being reported, so the
/// reported numbers never chose anything.
fn evaluate_pages(
    transcriber: &PageTranscriber,
    detectors: &[LineDetector],
    dataset: &Dataset,
    params: &Params,
    report: &Path,
    observer: &dyn Observer,
) -> Result<(serde_json::Value, Headline), StageFailure> {
    let choose_on_val = detectors.len() > 1 && params.split != Split::Val;
    let split_pages = |split| dataset.split(split).map_or(0, |s| s.count);
    if choose_on_val && split_pages(Split::Val) == 0 {
        return Err(format!(
            "the pages dataset has no val split to choose the line detector on (the {} split \
             only reports)",
            params.split.name()
        )
        .into());
    }
    announce_split(dataset, params, observer)?;
    let choice = if choose_on_val {
        observer.total(split_pages(params.split) + split_pages(Split::Val));
        let (val_runs, _) =
            score_detectors(transcriber, detectors, dataset, Split::Val, None, observer)?;
        Some(
            val_runs
                .into_iter()
                .map(|run| run.scores)
                .collect::<Vec<_>>(),
        )
    } else {
        None
    };
    let (runs, oracle) = score_detectors(
        transcriber,
        detectors,
        dataset,
        params.split,
        Some(report),
        observer,
    )?;
    let scores: Vec<&PageScores> = runs.iter().map(|run| &run.scores).collect();
    let (chosen_on, best) = match &choice {
        Some(val) => (Split::Val, eval::best_detector(val)),
        None => (params.split, eval::best_detector(&scores)),
    };
    let best = best.ok_or("no line detector to evaluate")?;
    let chosen = scores[best];
    let first = &scores[0].detection;
    let mut md = format!(
        "# Page evaluation ({} split, {} pages, {} lines)\n\n\
         Default line detector: **{}** (lowest page CER on the {} split; within {CER_TIE} the \
         better detection F1 × IoU); decoding: **{}**\n\n\
         | line detector | recall (IoU ≥ 0.5) | precision | mean IoU | page CER | page WER |\n\
         |---|---|---|---|---|---|\n",
        params.split.name(),
        first.pages,
        first.truth_lines,
        detectors[best].kind(),
        chosen_on.name(),
        transcriber.recognizer.decoder_name(),
    );
    for (detector, s) in detectors.iter().zip(&scores) {
        md.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            detector.kind(),
            s.detection.recall(),
            s.detection.precision(),
            s.detection.mean_iou(),
            s.errors.cer(),
            s.errors.wer()
        ));
    }
    md.push_str(&format!(
        "| true line boxes | 1.0000 | 1.0000 | 1.0000 | {:.4} | {:.4} |\n\
         | empty-output baseline | | | | 1.0000 | 1.0000 |\n\n\
         ## By writer (font), {} detector\n\n\
         | writer | pages | recall | precision | CER |\n|---|---|---|---|---|\n",
        oracle.cer(),
        oracle.wer(),
        detectors[best].kind(),
    ));
    for (writer, (d, e)) in &chosen.by_writer {
        md.push_str(&format!(
            "| {writer} | {} | {:.4} | {:.4} | {:.4} |\n",
            d.pages,
            d.recall(),
            d.precision(),
            e.cer()
        ));
    }
    for (detector, run) in detectors.iter().zip(&runs) {
        md.push_str(&format!(
            "\n## The first page's lines as the recognizer read them ({} detector)\n\n\
             | line | truth (same position) | read | confidence |\n|---|---|---|---|\n{}",
            detector.kind(),
            run.examples
        ));
    }
    std::fs::write(report.join("report.md"), md)?;
    let mut metrics = page_metrics(chosen);
    metrics["pages"] = first.pages.into();
    metrics["lines"] = first.truth_lines.into();
    metrics["true_boxes_cer"] = oracle.cer().into();
    metrics["baseline_empty_cer"] = 1.0.into();
    metrics["line_detector"] = detectors[best].kind().name().into();
    metrics["line_detector_chosen_on"] = chosen_on.name().into();
    if let Some(val) = &choice {
        metrics["val_detectors"] = detectors
            .iter()
            .zip(val)
            .map(|(d, s)| (d.kind().name().to_owned(), page_metrics(s)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    metrics["decoder"] = transcriber.recognizer.decoder_name().into();
    if let Some(search) = transcriber.recognizer.slant_search() {
        metrics["slant_search"] = serde_json::to_value(search)?;
    }
    metrics["detectors"] = detectors
        .iter()
        .zip(&scores)
        .map(|(d, s)| (d.kind().name().to_owned(), page_metrics(s)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let cer = chosen.errors.cer();
    Ok((metrics, Headline::cer(cer)))
}

/// Worst first (highest CER, then most edits), cut to [`WORST`].
fn rank_worst(scored: &mut Vec<Scored>) {
    scored.sort_by(|a, b| {
        b.errors
            .cer()
            .total_cmp(&a.errors.cer())
            .then(b.errors.char_edits.cmp(&a.errors.char_edits))
            .then_with(|| a.sample.label.cmp(&b.sample.label))
    });
    scored.truncate(WORST);
}
