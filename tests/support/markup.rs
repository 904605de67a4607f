//! Validators for the document formats textrec writes, run as the tools their users run:
//! ALTO against `tests/schemas/alto-4-subset.xsd` with xmllint, hOCR against the XHTML 1.0 DTD
//! it declares (xmllint, offline, through the system's XML catalog) and against the hOCR
//! specification with `hocr-spec`. A missing tool fails the test, naming how to install it:
//! a check that quietly skips would pass on a machine that checks nothing.
//!
//! Included with `#[path]`: `support/mod.rs` needs the `xtask` binary, which not every test
//! package builds.

#![allow(dead_code)] // Each test file uses a different subset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The ALTO 4 schema the outputs must satisfy (see its header for what it covers).
pub fn alto_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/schemas/alto-4-subset.xsd")
}

/// Why `file` is not valid ALTO as textrec writes it, or `None` when it is.
pub fn alto_problems(file: &Path) -> Option<String> {
    let schema = alto_schema();
    let out = xmllint(&[
        "--noout".as_ref(),
        "--nonet".as_ref(),
        "--schema".as_ref(),
        schema.as_os_str(),
        file.as_os_str(),
    ]);
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !report.contains("failed to compile"),
        "{} does not compile: {report}",
        schema.display()
    );
    (!out.status.success()).then_some(report)
}

/// Panics with xmllint's report unless `file` is valid against [`alto_schema`].
pub fn assert_valid_alto(file: &Path) {
    if let Some(report) = alto_problems(file) {
        panic!(
            "{} is not valid ALTO ({}):\n{report}\n{}",
            file.display(),
            alto_schema().display(),
            read(file)
        );
    }
}

/// Why `file` is not valid hOCR, or `None` when it is: first XHTML (well-formed, and valid
/// against the XHTML 1.0 Transitional DTD its DOCTYPE names), then the hOCR specification
/// (hocr-spec: no error, and no warning).
pub fn hocr_problems(file: &Path) -> Option<String> {
    let out = xmllint(&[
        "--noout".as_ref(),
        "--nonet".as_ref(),
        "--valid".as_ref(),
        file.as_os_str(),
    ]);
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !report.contains("failed to load external entity"),
        "xmllint cannot find the XHTML 1.0 DTD offline: `apt-get install w3c-sgml-lib` puts it \
         in the XML catalog (`cargo xtask ci` installs it):\n{report}"
    );
    if !out.status.success() {
        return Some(format!("not valid XHTML 1.0 Transitional:\n{report}"));
    }
    // `--profile standard` runs every check (`relaxed` skips the capability checks). Not
    // `--parse-strict`: in hocr-spec 0.2.0 it turns lxml's error recovery on.
    let out = Command::new(hocr_spec())
        .args(["--profile", "standard", "--format", "text"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", hocr_spec().display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Warnings count too: they are the specification's recommendations (metadata), which
    // textrec follows, and hocr-spec 0.2.0 stops checking the metadata at the first
    // recommended field it misses, so a missing one would hide a missing required one.
    (!out.status.success() || report.contains("[WARN]"))
        .then(|| format!("not valid hOCR (hocr-spec):\n{report}"))
}

/// Panics with the validators' report unless `file` is valid hOCR.
pub fn assert_valid_hocr(file: &Path) {
    if let Some(report) = hocr_problems(file) {
        panic!("{}: {report}\n{}", file.display(), read(file));
    }
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_else(|e| format!("(unreadable: {e})"))
}

fn xmllint(args: &[&std::ffi::OsStr]) -> Output {
    let program = find_program("xmllint").expect(
        "xmllint is not installed: `apt-get install libxml2-utils` (`cargo xtask ci` installs \
         it)",
    );
    Command::new(program).args(args).output().unwrap()
}

/// The hOCR checker: `HOCR_SPEC` (`cargo xtask ci` sets it to the one in its venv under
/// `target/ci-tools`), else `hocr-spec` on the PATH.
fn hocr_spec() -> PathBuf {
    if let Some(path) = std::env::var_os("HOCR_SPEC") {
        return path.into();
    }
    find_program("hocr-spec").expect(
        "hocr-spec is not installed: `pip install hocr-spec==0.2.0` (in a venv), or set HOCR_SPEC \
         to its path (`cargo xtask ci` installs it in target/ci-tools/bin and sets HOCR_SPEC)",
    )
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}
