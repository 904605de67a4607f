//! The remote cache against a real S3-compatible server: `s3s-fs` (an S3 implementation over a
//! directory, from the Rust crate registry; `cargo xtask ci` installs it and sets `S3S_FS`),
//! started by each test on 127.0.0.1 with credentials of its own, and against a `file://` remote.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::{Workspace, wait_for};

const ACCESS_KEY: &str = "textrec-test";
const SECRET_KEY: &str = "s3cr3t-for-loopback-only";
const BUCKET: &str = "cache";

/// Two stages: a directory of many small files plus one file large enough to go up in parts,
/// and a count over it. Deterministic, so any run anywhere makes the same bytes.
const PIPELINE: &str = r#"
stages:
  - name: make
    kind: shell
    params:
      cmd: >-
        mkdir -p "$OUT_0/pages" &&
        for i in $(seq 1 $FILES); do echo "page $i" > "$OUT_0/pages/p$i.txt"; done &&
        awk 'BEGIN { for (i = 0; i < 1500000; i++) print i }' > "$OUT_0/big.txt" &&
        echo '{"files": '$FILES'}' > "$METRICS_0"
      env: {FILES: "40"}
    outs: [data]
    metrics: [make.json]
  - name: count
    kind: shell
    deps: [data]
    params: {cmd: 'find "$DEP_0" -type f | wc -l > "$OUT_0"'}
    outs: [count.txt]
"#;

/// An `s3s-fs` process serving `root` on a free loopback port; killed on drop.
struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl S3Server {
    fn start() -> S3Server {
        let program = std::env::var_os("S3S_FS").map(PathBuf::from).unwrap_or_else(|| {
            panic!(
                "s3s-fs is not installed: `cargo install --locked s3s-fs@0.14.1 --features binary`, \
                 and set S3S_FS to its path (`cargo xtask ci` installs it in target/ci-tools/bin)"
            )
        });
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        wait_for(Duration::from_secs(20), "s3s-fs listening", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        S3Server { child, port, root }
    }

    /// The objects stored under `prefix` of the bucket (s3s-fs keeps each at its key's path).
    fn objects(&self, prefix: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let dir = self.root.path().join(BUCKET).join(prefix);
        collect(&dir, &mut found);
        found.sort();
        found
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// `xtask ARGS` in `ws`, set up to talk to `server` with `secret` as the secret key.
fn s3_command(ws: &Workspace, server: &S3Server, secret: &str, args: &[&str]) -> Command {
    let mut command = ws.command(args);
    command
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", server.port),
        )
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1");
    command
}

fn xtask_s3(ws: &Workspace, server: &S3Server, secret: &str, args: &[&str]) -> Output {
    s3_command(ws, server, secret, args)
        .output()
        .expect("run xtask")
}

/// `xtask run p.yaml --json --remote s3://cache/PREFIX`: (stage → status, stderr, exit code).
fn run_s3(ws: &Workspace, server: &S3Server, prefix: &str) -> (Vec<(String, String)>, String, i32) {
    let remote = format!("s3://{BUCKET}/{prefix}");
    let out = xtask_s3(
        ws,
        server,
        SECRET_KEY,
        &["run", "p.yaml", "--json", "--remote", &remote],
    );
    statuses(&out)
}

fn statuses(out: &Output) -> (Vec<(String, String)>, String, i32) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}); stderr:\n{stderr}"));
    let stages = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (stages, stderr, out.status.code().unwrap_or(-1))
}

fn pair(name: &str, status: &str) -> (String, String) {
    (name.to_owned(), status.to_owned())
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    ws
}

/// Every file under `rel` in `ws`, by relative path, with its bytes.
fn tree(ws: &Workspace, rel: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = ws.path(rel);
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f.strip_prefix(&root).unwrap().to_path_buf(), bytes)
        })
        .collect()
}

#[test]
fn a_fresh_workspace_pulls_every_stage_from_s3_and_gets_the_same_bytes_and_lock() {
    let server = S3Server::start();
    let a = workspace();
    let (first, stderr, code) = run_s3(&a, &server, "team");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(first, [pair("make", "ran"), pair("count", "ran")]);
    assert_eq!(server.objects("team/runs").len(), 2, "one record per stage");

    let b = workspace();
    let (pulled, stderr, code) = run_s3(&b, &server, "team");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(pulled, [pair("make", "pulled"), pair("count", "pulled")]);
    assert!(
        stderr.contains("pulled from remote s3://cache/team"),
        "{stderr}"
    );
    assert_eq!(tree(&a, "data"), tree(&b, "data"));
    assert_eq!(a.read("count.txt"), b.read("count.txt"));
    assert_eq!(
        a.read("p.lock"),
        b.read("p.lock"),
        "the lock records what A ran"
    );

    let (again, stderr, _) = run_s3(&b, &server, "team");
    assert_eq!(
        again,
        [pair("make", "cached"), pair("count", "cached")],
        "{stderr}"
    );

    // A clone with the committed lock: `pull` puts the recorded outputs in place, and a run
    // without any remote then finds everything up to date.
    let c = workspace();
    c.write("p.lock", &a.read("p.lock"));
    let out = xtask_s3(
        &c,
        &server,
        SECRET_KEY,
        &["pull", "p.yaml", "--remote", "s3://cache/team"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&a, "data"), tree(&c, "data"));
    // An output of one's own is not replaced by a pull without --force.
    c.write("count.txt", "mine\n");
    let pull = ["pull", "p.yaml", "--remote", "s3://cache/team"];
    let out = xtask_s3(&c, &server, SECRET_KEY, &pull);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pulling would replace it"));
    assert_eq!(c.read("count.txt"), "mine\n");
    let out = xtask_s3(&c, &server, SECRET_KEY, &[&pull[..], &["--force"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.read("count.txt"), a.read("count.txt"));
    let run = c.run(&["--no-remote"]);
    assert_eq!(
        run.with_status("cached"),
        ["count", "make"],
        "{}",
        run.stderr
    );

    // `--no-remote` ignores the remote even when the environment names one.
    let d = workspace();
    let out = d
        .command(&["run", "p.yaml", "--json", "--no-remote"])
        .env("TEXTREC_REMOTE", "s3://cache/team")
        .output()
        .unwrap();
    let (ran, stderr, _) = statuses(&out);
    assert_eq!(ran, [pair("make", "ran"), pair("count", "ran")], "{stderr}");
}

#[test]
fn a_corrupt_object_is_caught_by_its_hash_and_the_stage_runs_instead() {
    let server = S3Server::start();
    let a = workspace();
    assert_eq!(run_s3(&a, &server, "team").2, 0);
    let big = server
        .objects("team/files")
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&big).unwrap();
    bytes[1000] ^= 0x20;
    std::fs::write(&big, &bytes).unwrap();

    let b = workspace();
    let (statuses, stderr, code) = run_s3(&b, &server, "team");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(statuses[0], pair("make", "ran"), "{stderr}");
    assert!(stderr.contains("is corrupt: its bytes hash to"), "{stderr}");
    assert_eq!(
        tree(&a, "data"),
        tree(&b, "data"),
        "the run made the right bytes"
    );

    // The corrupt copy was deleted and B's run pushed the right one: the next clone pulls.
    let c = workspace();
    let (statuses, stderr, _) = run_s3(&c, &server, "team");
    assert_eq!(
        statuses,
        [pair("make", "pulled"), pair("count", "pulled")],
        "{stderr}"
    );
    assert_eq!(tree(&a, "data"), tree(&c, "data"));
}

#[test]
fn a_push_killed_midway_leaves_objects_but_no_record_and_a_second_push_completes_it() {
    let server = S3Server::start();
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        &PIPELINE.replace("FILES: \"40\"", "FILES: \"3000\""),
    );
    let run = ws.run(&["--no-remote"]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let mut push = s3_command(
        &ws,
        &server,
        SECRET_KEY,
        &["push", "p.yaml", "--remote", "s3://cache/team"],
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_for(Duration::from_secs(60), "the push's first objects", || {
        server.objects("team/files").len() >= 20
    });
    push.kill().unwrap();
    let status = push.wait().unwrap();
    assert!(!status.success(), "killed before it finished");
    let stored = server.objects("team/files").len();
    assert!(stored < 3000, "the push was cut short ({stored} objects)");
    assert!(
        server.objects("team/runs").is_empty(),
        "no record without all of its objects"
    );

    let out = xtask_s3(
        &ws,
        &server,
        SECRET_KEY,
        &["push", "p.yaml", "--remote", "s3://cache/team"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("already there"),
        "objects pushed before the kill are kept: {stderr}"
    );
    assert_eq!(server.objects("team/runs").len(), 2);

    let fresh = Workspace::new();
    fresh.write("p.yaml", &ws.read("p.yaml"));
    let (statuses, stderr, _) = run_s3(&fresh, &server, "team");
    assert_eq!(
        statuses,
        [pair("make", "pulled"), pair("count", "pulled")],
        "{stderr}"
    );
    assert_eq!(tree(&ws, "data"), tree(&fresh, "data"));
}

#[test]
fn wrong_credentials_fail_before_any_stage_runs_and_write_nothing() {
    let server = S3Server::start();
    let ws = workspace();
    let out = xtask_s3(
        &ws,
        &server,
        "wrong",
        &["run", "p.yaml", "--remote", "s3://cache/team"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("remote s3://cache/team refused the credentials"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the secret is never printed: {stderr}"
    );
    assert!(!ws.exists("data") && !ws.exists("p.lock"));

    assert_eq!(ws.run(&["--no-remote"]).code, 0);
    let out = xtask_s3(
        &ws,
        &server,
        "wrong",
        &["push", "p.yaml", "--remote", "s3://cache/team"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the credentials"));
    assert!(
        server.objects("team").is_empty(),
        "nothing reached the bucket"
    );
}

#[test]
fn a_directory_remote_works_like_s3_and_a_bad_remote_url_is_a_usage_error() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}/cache", store.path().display());
    let a = workspace();
    let run = a.run(&["--remote", &url]);
    assert_eq!(run.with_status("ran"), ["count", "make"], "{}", run.stderr);
    let b = workspace();
    let run = b.run(&["--remote", &url]);
    assert_eq!(
        run.with_status("pulled"),
        ["count", "make"],
        "{}",
        run.stderr
    );
    assert_eq!(tree(&a, "data"), tree(&b, "data"));

    // A record whose output hash is not a hash is not followed: the stage runs.
    let records = store.path().join("cache/runs");
    for entry in std::fs::read_dir(&records).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut record: serde_json::Value = serde_json::from_str(&text).unwrap();
        if let Some(hash) = record["outs"].get_mut("count.txt") {
            *hash = serde_json::json!("../../etc");
            std::fs::write(&path, record.to_string()).unwrap();
        }
    }
    let c = workspace();
    let run = c.run(&["--remote", &url]);
    assert_eq!(run.status("make"), "pulled", "{}", run.stderr);
    assert_eq!(run.status("count"), "ran", "{}", run.stderr);
    assert!(run.stderr.contains("has no content hash"), "{}", run.stderr);

    let out = b.xtask(&["run", "p.yaml", "--remote", "ftp://example/cache"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a URL textrec can use"));
}
