//! `cargo xtask run --executor slurm` on a real one-node Slurm cluster that each test starts on
//! loopback (tests/support/slurm.rs): jobs in dependency order with their resources, the same
//! lock as a local run, failures that cancel what depends on them, nothing submitted when
//! nothing is stale, `xtask status` reading the jobs' states.

#[path = "support/slurm.rs"]
mod slurm;
mod support;

use std::process::Output;

use slurm::Cluster;
use support::Workspace;
use textrec_pipeline::LockFile;

/// a → b; c beside them, asking for resources.
const PIPELINE: &str = r#"
stages:
  - name: a
    kind: shell
    params: {cmd: 'echo "$SLURM_JOB_ID" > "$TEXTREC_WORKDIR/a-job"; seq 1 1000 > "$OUT"'}
    outs: [a.txt]
  - name: b
    kind: shell
    deps: [a.txt]
    params: {cmd: 'test -s "$TEXTREC_WORKDIR/a-job" && wc -l < "$DEP" > "$OUT"'}
    outs: [b.txt]
  - name: c
    kind: shell
    params: {cmd: 'echo "$SLURM_CPUS_PER_TASK cpus" > "$OUT"'}
    outs: [c.txt]
    resources: {cpus: 1, mem_gb: 0.25, time: "5"}
"#;

/// `xtask run p.yaml --executor slurm --wait --json EXTRA...` against `cluster`.
fn submit(cluster: &Cluster, ws: &Workspace, extra: &[&str]) -> (serde_json::Value, Output) {
    let out = ws
        .command(&["run", "p.yaml", "--executor", "slurm", "--wait", "--json"])
        .args(extra)
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, out)
}

fn job<'a>(json: &'a serde_json::Value, stage: &str) -> &'a serde_json::Value {
    json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["stage"] == stage)
        .unwrap_or_else(|| panic!("no job for {stage} in {json}"))
}

#[test]
fn stale_stages_run_as_jobs_in_dependency_order_and_record_what_a_local_run_records() {
    let cluster = Cluster::start();
    let ws = Workspace::new();
    ws.write("p.yaml", PIPELINE);
    let (json, out) = submit(&cluster, &ws, &[]);
    assert!(
        out.status.success(),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json["ok"], true);
    let a = job(&json, "a")["job"].as_str().unwrap().to_owned();
    assert_eq!(job(&json, "b")["after"], serde_json::json!([a]));
    assert_eq!(job(&json, "c")["after"], serde_json::json!([]));
    for stage in ["a", "b", "c"] {
        assert_eq!(job(&json, stage)["state"], "COMPLETED", "{json}");
    }
    assert_eq!(ws.read("a-job").trim(), a, "stage a ran inside its job");
    assert_eq!(
        ws.read("c.txt"),
        "1 cpus\n",
        "the stage's resources reached sbatch"
    );

    let local = Workspace::new();
    local.write("p.yaml", &PIPELINE.replace("$SLURM_JOB_ID", "local"));
    local.write("a-job", "x");
    let run = local.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let on_slurm = LockFile::load(&ws.path("p.lock")).unwrap();
    let here = LockFile::load(&local.path("p.lock")).unwrap();
    for stage in ["a", "b"] {
        assert_eq!(
            on_slurm.stages[stage].outs, here.stages[stage].outs,
            "{stage}"
        );
    }

    let (json, out) = submit(&cluster, &ws, &[]);
    assert!(out.status.success());
    assert_eq!(
        json["jobs"],
        serde_json::json!([]),
        "nothing stale, nothing submitted"
    );

    let status = ws.xtask(&["status", "p.yaml"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("everything is up to date"), "{text}");
}

/// With a remote, the jobs push, and another workdir then submits nothing: what the remote holds
/// is pulled on the submitting machine.
#[test]
fn stages_the_remote_holds_are_pulled_not_submitted() {
    let cluster = Cluster::start();
    let store = tempfile::tempdir().unwrap();
    let remote = format!("file://{}", store.path().display());
    let mut workdirs = Vec::new();
    for _ in 0..2 {
        let ws = Workspace::new();
        ws.write("p.yaml", PIPELINE);
        let (json, out) = submit(&cluster, &ws, &["--remote", &remote]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        workdirs.push((ws, json));
    }
    assert_eq!(workdirs[0].1["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(
        workdirs[1].1["jobs"],
        serde_json::json!([]),
        "{}",
        workdirs[1].1
    );
    assert_eq!(workdirs[0].0.read("b.txt"), workdirs[1].0.read("b.txt"));
    assert_eq!(
        LockFile::load(&workdirs[0].0.path("p.lock")).unwrap(),
        LockFile::load(&workdirs[1].0.path("p.lock")).unwrap()
    );
}

#[test]
fn a_failing_stage_fails_its_job_and_cancels_the_jobs_that_depend_on_it() {
    let cluster = Cluster::start();
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        &PIPELINE.replace("seq 1 1000 > \"$OUT\"", "echo broken >&2; exit 3"),
    );
    let (json, out) = submit(&cluster, &ws, &[]);
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(json["ok"], false);
    assert_eq!(job(&json, "a")["state"], "FAILED");
    assert_eq!(job(&json, "b")["state"], "CANCELLED", "{json}");
    assert_eq!(job(&json, "c")["state"], "COMPLETED");
    assert!(!ws.exists("b.txt"), "the dependent stage never ran");
    let log = std::fs::read_to_string(job(&json, "a")["log"].as_str().unwrap()).unwrap();
    assert!(
        log.contains("broken"),
        "the job's log holds the stage's error: {log}"
    );

    let status = ws
        .command(&["status", "p.yaml", "--json"])
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let mut states: Vec<(&str, &str)> = status["slurm_jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["stage"].as_str().unwrap(), j["state"].as_str().unwrap()))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [("a", "FAILED"), ("b", "CANCELLED"), ("c", "COMPLETED")]
    );
}

/// A copy of the smoke pipeline where its relative paths still resolve: `configs/smoke.yaml`
/// and the text it reads, in a directory of their own.
fn smoke_copy() -> Workspace {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ws = Workspace::new();
    for file in ["configs/smoke.yaml", "configs/text/sentences.txt"] {
        ws.write(file, &std::fs::read_to_string(repo.join(file)).unwrap());
    }
    ws
}

fn lock(ws: &Workspace) -> LockFile {
    LockFile::load(&ws.path("configs/smoke.lock")).unwrap()
}

/// The whole smoke pipeline (downloads, training, export, evaluation, release) as Slurm jobs:
/// the records and the release a local run makes. Its jobs push to a remote, from which a fresh
/// copy then pulls every stage, running none.
#[test]
fn the_smoke_pipeline_on_slurm_makes_a_local_runs_release_and_a_fresh_copy_pulls_all_of_it() {
    let cluster = Cluster::start();
    let local = smoke_copy();
    let run = local
        .command(&["run", "configs/smoke.yaml", "--no-remote"])
        .env("TEXTREC_CACHE_DIR", support::download_cache())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let store = tempfile::tempdir().unwrap();
    let remote = format!("file://{}", store.path().display());
    let on_slurm = smoke_copy();
    let out = on_slurm
        .command(&[
            "run",
            "configs/smoke.yaml",
            "--executor",
            "slurm",
            "--wait",
            "--remote",
            &remote,
        ])
        .env("TEXTREC_CACHE_DIR", support::download_cache())
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (here, there) = (lock(&local), lock(&on_slurm));
    assert_eq!(
        here.stages.keys().collect::<Vec<_>>(),
        there.stages.keys().collect::<Vec<_>>()
    );
    for (stage, record) in &here.stages {
        assert_eq!(record.key, there.stages[stage].key, "{stage}");
        assert_eq!(record.outs, there.stages[stage].outs, "{stage}");
    }
    let release = "build/smoke/release/textrec-0.1.0.tar.gz";
    assert_eq!(
        std::fs::read(local.path(release)).unwrap(),
        std::fs::read(on_slurm.path(release)).unwrap(),
        "the release's bytes"
    );

    let fresh = smoke_copy();
    let out = fresh
        .command(&["run", "configs/smoke.yaml", "--json", "--remote", &remote])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let not_pulled: Vec<&serde_json::Value> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] != "pulled")
        .collect();
    assert!(not_pulled.is_empty(), "{not_pulled:?}");
    assert_eq!(
        lock(&fresh),
        there,
        "the pulled records are the pushed ones"
    );
    assert_eq!(
        std::fs::read(fresh.path(release)).unwrap(),
        std::fs::read(on_slurm.path(release)).unwrap()
    );
}
