//! End-to-end behaviour of `cargo xtask run` and friends, through the real binary: caching and
//! invalidation, kill safety, workspace locking, parallelism, failures, metrics, overrides.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Workspace, find_named, wait_for};
use textrec_pipeline::LockFile;

/// a → b → {c, e → f}; d beside. e counts b's lines, so a change to b's text that keeps its line
/// count re-runs e with identical output, and f must then stay cached.
const CHAIN: &str = r#"
stages:
  - name: a
    kind: shell
    deps: [input.txt]
    params: {cmd: 'cat "$DEP" > "$OUT"'}
    outs: [a.txt]
  - name: b
    kind: shell
    deps: [a.txt]
    params:
      cmd: 'cat "$DEP" > "$OUT"; echo "$SUFFIX" >> "$OUT"'
      env: {SUFFIX: one}
    outs: [b.txt]
  - name: c
    kind: shell
    deps: [b.txt]
    params: {cmd: 'tr a-z A-Z < "$DEP" > "$OUT"'}
    outs: [c.txt]
  - name: d
    kind: copy
    deps: [input.txt]
    outs: [d.txt]
  - name: e
    kind: shell
    deps: [b.txt]
    params: {cmd: 'wc -l < "$DEP" > "$OUT"'}
    outs: [counts/e.txt]
  - name: f
    kind: shell
    deps: [counts/e.txt]
    params: {cmd: 'cat "$DEP" > "$OUT"'}
    outs: [f.txt]
"#;

fn chain() -> Workspace {
    let ws = Workspace::new();
    ws.write("input.txt", "hello\n");
    ws.write("p.yaml", CHAIN);
    let first = ws.run(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.with_status("ran"), ["a", "b", "c", "d", "e", "f"]);
    ws
}

#[test]
fn touching_nothing_reruns_nothing_and_mtime_alone_is_not_a_change() {
    let ws = chain();
    let lock = ws.read("p.lock");
    let again = ws.run(&[]);
    assert_eq!(again.with_status("cached"), ["a", "b", "c", "d", "e", "f"]);
    // Rewrite the input with the same bytes: new mtime, same content.
    std::thread::sleep(Duration::from_millis(20));
    ws.write("input.txt", "hello\n");
    let touched = ws.run(&[]);
    assert_eq!(
        touched.with_status("cached"),
        ["a", "b", "c", "d", "e", "f"]
    );
    assert_eq!(
        ws.read("p.lock"),
        lock,
        "a fully cached run leaves the lock as it was"
    );
}

#[test]
fn changing_a_param_reruns_that_stage_and_only_what_its_new_output_changes() {
    let ws = chain();
    ws.write("p.yaml", &CHAIN.replace("SUFFIX: one", "SUFFIX: two"));
    let run = ws.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.with_status("ran"), ["b", "c", "e"]);
    assert_eq!(
        run.with_status("cached"),
        ["a", "d", "f"],
        "e rewrote identical bytes, so f stays cached"
    );
    assert_eq!(
        run.reason("b"),
        "param `env.SUFFIX` changed (\"one\" -> \"two\")"
    );
    assert_eq!(run.reason("c"), "dep `b.txt` changed");
    assert_eq!(ws.read("c.txt"), "HELLO\nTWO\n");
}

#[test]
fn changing_an_input_file_reruns_its_consumers() {
    let ws = chain();
    ws.write("input.txt", "hello\nworld\n");
    let run = ws.run(&[]);
    assert_eq!(run.with_status("ran"), ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(run.reason("a"), "dep `input.txt` changed");
}

/// s0 → s1 → s2 → s3 → s4; s0, s2 and s4 also depend on `shared/` and write how many files it
/// holds, so an edit there re-runs exactly them, and a new file changes what they write.
const FAN_OUT: &str = r#"
stages:
  - {name: s0, kind: shell, deps: [shared], params: {cmd: 'ls "$DEP_0" | wc -l > "$OUT"'}, outs: [o0.txt]}
  - {name: s1, kind: shell, deps: [o0.txt], params: {cmd: 'cat "$DEP_0" > "$OUT"'}, outs: [o1.txt]}
  - {name: s2, kind: shell, deps: [shared, o1.txt], params: {cmd: 'ls "$DEP_0" | wc -l > "$OUT"'}, outs: [o2.txt]}
  - {name: s3, kind: shell, deps: [o2.txt], params: {cmd: 'cat "$DEP_0" > "$OUT"'}, outs: [o3.txt]}
  - {name: s4, kind: shell, deps: [shared, o3.txt], params: {cmd: 'ls "$DEP_0" | wc -l > "$OUT"'}, outs: [o4.txt]}
"#;

#[test]
fn an_edit_in_a_directory_several_stages_share_reruns_exactly_those_stages() {
    let all = ["s0", "s1", "s2", "s3", "s4"];
    let ws = Workspace::new();
    for n in 0..30 {
        ws.write(&format!("shared/{n:02}.txt"), &n.to_string());
    }
    ws.write("p.yaml", FAN_OUT);
    assert_eq!(ws.run(&[]).with_status("ran"), all);
    assert_eq!(ws.run(&[]).with_status("cached"), all);

    ws.write("shared/17.txt", "edited");
    let edited = ws.run(&[]);
    assert_eq!(edited.with_status("ran"), ["s0", "s2", "s4"]);
    assert_eq!(edited.with_status("cached"), ["s1", "s3"]);
    assert_eq!(edited.reason("s4"), "dep `shared` changed");

    // Now each of them writes 31, so the stages after them re-run too.
    ws.write("shared/30.txt", "new");
    assert_eq!(ws.run(&[]).with_status("ran"), all);
    assert_eq!(ws.read("o4.txt").trim(), "31");
    assert_eq!(ws.run(&[]).with_status("cached"), all);
}

#[test]
fn deleting_an_output_reruns_its_producer_only() {
    let ws = chain();
    std::fs::remove_file(ws.path("c.txt")).unwrap();
    let run = ws.run(&[]);
    assert_eq!(run.with_status("ran"), ["c"]);
    assert_eq!(run.reason("c"), "output `c.txt` is missing");

    // Re-creating a.txt reproduces the same bytes, so nothing downstream runs.
    std::fs::remove_file(ws.path("a.txt")).unwrap();
    let run = ws.run(&[]);
    assert_eq!(run.with_status("ran"), ["a"]);

    // An output edited by hand is not trusted.
    ws.write("d.txt", "tampered\n");
    let run = ws.run(&[]);
    assert_eq!(run.with_status("ran"), ["d"]);
    assert_eq!(run.reason("d"), "output `d.txt` was modified");
    assert_eq!(ws.read("d.txt"), "hello\n");
}

#[test]
fn dry_run_and_status_say_why_and_touch_nothing() {
    let ws = chain();
    let lock = ws.read("p.lock");
    ws.write("input.txt", "changed\n");
    let run = ws.run(&["--dry-run", "-S", "d.nothing=1"]);
    assert_eq!(run.code, 2, "copy takes no params: {}", run.json);
    let plan = ws.run(&["--dry-run"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert_eq!(
        plan.with_status("would-run"),
        ["a", "b", "c", "d", "e", "f"]
    );
    assert_eq!(plan.reason("a"), "dep `input.txt` changed");
    assert!(
        plan.reason("b").contains("upstream stage `a` will run"),
        "{}",
        plan.reason("b")
    );
    assert_eq!(ws.read("p.lock"), lock);
    assert_eq!(ws.read("a.txt"), "hello\n");

    let status = ws.xtask(&["status", "p.yaml"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("dep `input.txt` changed"), "{text}");
    assert_eq!(ws.read("p.lock"), lock);
}

/// FSDL's experiments, on archives this machine cannot fetch.
const FSDL_CONFIGS: &[(&str, &str)] = &[
    ("iam", include_str!("../configs/iam.yaml")),
    ("emnist", include_str!("../configs/emnist.yaml")),
];

/// The experiments users run on data this machine cannot fetch (FSDL's archives) still load,
/// validate every stage's params and plan, as they would on a networked machine.
#[test]
fn the_fsdl_configs_plan_cleanly_offline() {
    let ws = Workspace::new();
    ws.write("configs/text/sentences.txt", "a line\n");
    for (name, config) in FSDL_CONFIGS {
        ws.write(&format!("configs/{name}.yaml"), config);
        let path = format!("configs/{name}.yaml");
        let out = ws.xtask(&["run", &path, "--dry-run", "--json"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{path}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plan: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let stages = plan["stages"].as_array().unwrap();
        assert!(
            stages.len() > 5 && stages.iter().all(|s| s["status"] == "would-run"),
            "{path}: {plan}"
        );
    }
    assert!(!ws.exists("data"), "a dry run wrote outputs");
}

#[test]
fn overrides_change_params_for_one_run_and_are_type_checked() {
    let ws = chain();
    let run = ws.run(&["-S", "b.env.SUFFIX=three"]);
    assert_eq!(run.with_status("ran"), ["b", "c", "e"]);
    assert!(ws.read("b.txt").ends_with("three\n"));

    for (set, expected) in [
        ("nosuch.x=1", "no stage named `nosuch`"),
        ("b.cmd.x=1", "`cmd` is a string, not a mapping"),
        ("b.colour=red", "unknown field `colour`"),
        ("b=1", "expected STAGE.KEY=VALUE"),
    ] {
        let out = ws.xtask(&["run", "p.yaml", "-S", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "-S {set}: {stderr}");
        assert!(stderr.contains(expected), "-S {set}: {stderr}");
    }
}

#[test]
fn only_and_from_select_stages() {
    let ws = chain();
    ws.write("input.txt", "changed\n");
    let only = ws.run(&["--only", "d"]);
    assert_eq!(only.with_status("ran"), ["d"]);
    assert_eq!(only.reason("a"), "not selected");
    let from = ws.run(&["--from", "b", "-S", "b.env.SUFFIX=x"]);
    assert_eq!(from.with_status("ran"), ["b", "c", "e"]);
    assert_eq!(from.with_status("skipped"), ["a", "d"]);
    let unknown = ws.xtask(&["run", "p.yaml", "--only", "zzz"]);
    assert_eq!(unknown.status.code(), Some(2));
}

const SLOW: &str = r#"
stages:
  - name: slow
    kind: shell
    params:
      cmd: 'echo $$ > slow.pid; for i in $(seq 1 30); do echo "line $i" >> "$OUT"; sleep 0.05; done'
      env: {VERSION: "1"}
    outs: [slow.txt]
  - name: after
    kind: shell
    deps: [slow.txt]
    params: {cmd: 'wc -l < "$DEP" > "$OUT"'}
    outs: [after.txt]
"#;

fn staged_lines(ws: &Workspace) -> usize {
    find_named(&ws.path(".textrec/staging"), "slow.txt")
        .first()
        .map_or(0, |p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .count()
        })
}

#[test]
fn a_run_killed_mid_write_leaves_no_trusted_output_and_the_next_run_redoes_it() {
    let ws = Workspace::new();
    ws.write("p.yaml", SLOW);

    let mut victim = ws.spawn(&["run", "p.yaml"]);
    wait_for(Duration::from_secs(20), "the slow stage to write", || {
        staged_lines(&ws) >= 3
    });
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    assert!(
        !ws.exists("slow.txt"),
        "a half-written output must never appear in place"
    );
    assert!(!ws.exists("after.txt"));
    if ws.exists("p.lock") {
        let lock = LockFile::load(&ws.path("p.lock")).expect("lock stays valid");
        assert!(!lock.stages.contains_key("slow"));
    }

    let redo = ws.run(&[]);
    assert_eq!(redo.code, 0, "{}", redo.stderr);
    assert_eq!(redo.with_status("ran"), ["after", "slow"]);
    assert_eq!(ws.read("slow.txt").lines().count(), 30);
    assert_eq!(ws.read("after.txt").trim(), "30");
    assert!(
        find_named(&ws.path(".textrec/staging"), "slow.txt").is_empty(),
        "leftovers are cleaned"
    );

    // Kill a re-run of a stage whose previous output is complete: the old output and its lock
    // record survive intact, and the next run redoes the stage because its params changed.
    let complete = ws.read("slow.txt");
    let lock_before = ws.read("p.lock");
    ws.write("p.yaml", &SLOW.replace("VERSION: \"1\"", "VERSION: \"2\""));
    let mut victim = ws.spawn(&["run", "p.yaml"]);
    wait_for(Duration::from_secs(20), "the slow stage to write", || {
        staged_lines(&ws) >= 3
    });
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert_eq!(ws.read("slow.txt"), complete);
    assert_eq!(ws.read("p.lock"), lock_before);
    let redo = ws.run(&[]);
    assert_eq!(
        redo.with_status("ran"),
        ["slow"],
        "identical new output: `after` stays cached"
    );
    assert!(
        redo.reason("slow").contains("env.VERSION"),
        "{}",
        redo.reason("slow")
    );
}

#[test]
fn a_killed_command_fails_its_stage_and_skips_its_dependents() {
    let ws = Workspace::new();
    ws.write("p.yaml", SLOW);
    let runner = ws.spawn(&["run", "p.yaml", "--json"]);
    wait_for(Duration::from_secs(20), "the slow stage to start", || {
        staged_lines(&ws) >= 2 && ws.exists("slow.pid")
    });
    let pid: i32 = ws.read("slow.pid").trim().parse().unwrap();
    // SAFETY: plain kill(2) of the test's own grandchild.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let output = runner.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["ok"], false);
    let stages = json["stages"].as_array().unwrap();
    assert_eq!(stages[0]["status"], "failed");
    assert!(
        stages[0]["reason"]
            .as_str()
            .unwrap()
            .contains("killed by signal 9"),
        "{}",
        stages[0]
    );
    assert_eq!(stages[1]["status"], "skipped");
    assert_eq!(stages[1]["reason"], "upstream stage `slow` failed");
    assert!(!ws.exists("slow.txt"));
}

#[test]
fn a_failing_stage_reports_its_log_and_independent_stages_still_run() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        r#"
stages:
  - name: broken
    kind: shell
    params: {cmd: 'echo "reading model"; echo "no such weights" >&2; exit 3'}
    outs: [x.txt]
  - name: downstream
    kind: shell
    deps: [x.txt]
    params: {cmd: 'cp "$DEP" "$OUT"'}
    outs: [y.txt]
  - name: independent
    kind: shell
    params: {cmd: 'echo ok > "$OUT"'}
    outs: [z.txt]
  - name: forgetful
    kind: shell
    params: {cmd: 'true'}
    outs: [never-written.txt]
"#,
    );
    let run = ws.run(&["--jobs", "1"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.status("broken"), "failed");
    assert!(
        run.reason("broken").contains("exited with status 3"),
        "{}",
        run.reason("broken")
    );
    assert!(
        run.reason("broken").contains("no such weights"),
        "the log tail is shown"
    );
    assert_eq!(run.status("downstream"), "skipped");
    assert_eq!(run.status("independent"), "ran");
    assert_eq!(run.status("forgetful"), "failed");
    assert!(
        run.reason("forgetful")
            .contains("without writing its declared output `never-written.txt`")
    );
    assert!(run.stderr.contains("[broken] FAILED"), "{}", run.stderr);
}

/// A dep replaced while a stage reads it (by another run, say) would pair the outputs with deps
/// they were not made from: the stage fails and records nothing.
#[test]
fn a_dep_that_changes_while_its_stage_runs_fails_the_stage_and_records_nothing() {
    let ws = Workspace::new();
    ws.write("input.txt", "one\n");
    ws.write(
        "p.yaml",
        "stages:\n  - name: s\n    kind: shell\n    deps: [input.txt]\n    params: {cmd: 'cat \"$DEP\" > \"$OUT\"; echo two >> \"$DEP\"'}\n    outs: [s.txt]\n",
    );
    let run = ws.run(&[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.status("s"), "failed");
    assert!(
        run.reason("s")
            .contains("dependency `input.txt` changed while the stage ran"),
        "{}",
        run.reason("s")
    );
    assert!(!ws.exists("s.txt"), "nothing moved into place");
    assert!(!ws.exists("p.lock") || !ws.read("p.lock").contains("s.txt"));
}

/// Two runs of different stages (as Slurm jobs on a shared disk would be) go on at once: `left`
/// waits for a file that only `right` writes, so neither finishes unless both run together, and
/// both records reach the lock.
#[test]
fn runs_of_different_stages_go_on_at_once_and_both_reach_the_lock() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        r#"
stages:
  - name: left
    kind: shell
    params:
      cmd: 'for i in $(seq 200); do [ -e "$TEXTREC_WORKDIR/right-started" ] && break; sleep 0.05; done; [ -e "$TEXTREC_WORKDIR/right-started" ] && echo left > "$OUT"'
    outs: [left.txt]
  - name: right
    kind: shell
    params: {cmd: 'touch "$TEXTREC_WORKDIR/right-started"; sleep 0.5; echo right > "$OUT"'}
    outs: [right.txt]
"#,
    );
    let left = ws.spawn(&["run", "p.yaml", "--only", "left"]);
    wait_for(
        Duration::from_secs(20),
        "the left run to take its stage",
        || {
            std::fs::read_to_string(ws.path(".textrec/locks/left.lock"))
                .is_ok_and(|s| s.starts_with("pid"))
        },
    );
    let right = ws.xtask(&["run", "p.yaml", "--only", "right"]);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    let left = left.wait_with_output().unwrap();
    assert!(
        left.status.success(),
        "{}",
        String::from_utf8_lossy(&left.stderr)
    );
    let lock = LockFile::load(&ws.path("p.lock")).unwrap();
    assert_eq!(
        lock.stages.keys().collect::<Vec<_>>(),
        ["left", "right"],
        "each run merged its record into the lock"
    );
    let run = ws.run(&[]);
    assert_eq!(
        run.with_status("cached"),
        ["left", "right"],
        "{}",
        run.stderr
    );
}

#[test]
fn a_second_concurrent_run_fails_fast_with_exit_3_naming_the_holder() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        "stages:\n  - name: hold\n    kind: shell\n    params: {cmd: 'sleep 1.5; echo done > \"$OUT\"'}\n    outs: [held.txt]\n",
    );
    let holder = ws.spawn(&["run", "p.yaml"]);
    wait_for(
        Duration::from_secs(20),
        "the first run to take the workspace",
        || {
            std::fs::read_to_string(ws.path(".textrec/locks/hold.lock"))
                .is_ok_and(|s| s.starts_with("pid"))
        },
    );
    let started = Instant::now();
    let second = ws.xtask(&["run", "p.yaml"]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the second run fails fast, it does not wait"
    );
    assert_eq!(second.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another run holds stage `hold`"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("pid {}", holder.id())), "{stderr}");

    let first = holder.wait_with_output().unwrap();
    assert!(first.status.success());
    assert_eq!(ws.read("held.txt"), "done\n");
    assert!(
        LockFile::load(&ws.path("p.lock"))
            .unwrap()
            .stages
            .contains_key("hold")
    );
}

#[test]
fn a_lock_left_by_a_dead_run_is_taken_over() {
    let ws = Workspace::new();
    ws.write("p.yaml", "stages:\n  - name: s\n    kind: shell\n    params: {cmd: 'echo > \"$OUT\"'}\n    outs: [s.txt]\n");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    ws.write(".textrec/locks/s.lock", &format!("pid {dead} started 1\n"));
    let run = ws.run(&[]);
    assert_eq!(run.code, 0);
    assert!(run.stderr.contains(&format!(
        "took over the lock left on stage `s`: pid {dead} (no longer running)"
    )));
}

const PARALLEL: &str = r#"
stages:
  - name: left
    kind: shell
    params: {cmd: 'date +%s.%N > "$OUT"; sleep 2; date +%s.%N >> "$OUT"'}
    outs: [left.txt]
  - name: right
    kind: shell
    params: {cmd: 'date +%s.%N > "$OUT"; sleep 2; date +%s.%N >> "$OUT"'}
    outs: [right.txt]
"#;

fn interval(ws: &Workspace, file: &str) -> (f64, f64) {
    let text = ws.read(file);
    let mut times = text.lines().map(|l| l.trim().parse::<f64>().unwrap());
    (times.next().unwrap(), times.next().unwrap())
}

#[test]
fn independent_stages_run_in_parallel_up_to_jobs() {
    let ws = Workspace::new();
    ws.write("p.yaml", PARALLEL);
    let run = ws.run(&["--jobs", "2"]);
    assert_eq!(run.with_status("ran"), ["left", "right"]);
    let (l0, l1) = interval(&ws, "left.txt");
    let (r0, r1) = interval(&ws, "right.txt");
    assert!(l0 < r1 && r0 < l1, "the two 2 s stages overlapped in time");
    // Timed by the stages' own clocks, so a loaded machine's process start-up does not count.
    let span = l1.max(r1) - l0.min(r0);
    assert!(
        span < 3.5,
        "two 2 s stages with --jobs 2 spanned {span:.2} s"
    );

    let serial = ws.run(&["--jobs", "1", "--force"]);
    assert_eq!(serial.with_status("ran"), ["left", "right"]);
    let (l0, l1) = interval(&ws, "left.txt");
    let (r0, r1) = interval(&ws, "right.txt");
    assert!(
        l1 <= r0 || r1 <= l0,
        "with --jobs 1 the stages do not overlap"
    );
}

#[test]
fn metrics_are_recorded_shown_and_diffed_against_a_lock_file_or_git_revision() {
    let ws = Workspace::new();
    let pipeline = |accuracy: &str| {
        format!(
            "stages:\n  - name: evaluate\n    kind: shell\n    params:\n      cmd: 'echo \"{{\\\"accuracy\\\": $ACC, \\\"per_class\\\": {{\\\"a\\\": 1}}}}\" > \"$METRICS\"'\n      env: {{ACC: \"{accuracy}\"}}\n    metrics: [metrics/eval.json]\n"
        )
    };
    ws.write("p.yaml", &pipeline("0.5"));
    assert_eq!(ws.run(&[]).code, 0);
    let show = ws.xtask(&["metrics", "show", "p.yaml", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(
        shown,
        serde_json::json!({"evaluate": {"accuracy": 0.5, "per_class.a": 1.0}})
    );

    std::fs::copy(ws.path("p.lock"), ws.path("old.lock")).unwrap();
    commit_lock_file(&ws);

    ws.write("p.yaml", &pipeline("0.75"));
    assert_eq!(ws.run(&[]).code, 0);
    for against in ["old.lock", "HEAD"] {
        let diff = ws.xtask(&["metrics", "diff", "p.yaml", "--against", against, "--json"]);
        assert!(
            diff.status.success(),
            "{}",
            String::from_utf8_lossy(&diff.stderr)
        );
        let rows: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
        assert_eq!(
            rows[0],
            serde_json::json!({"stage": "evaluate", "metric": "accuracy", "old": 0.5, "new": 0.75}),
            "against {against}"
        );
    }
    let table = ws.xtask(&["metrics", "diff", "p.yaml", "--against", "HEAD"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("+0.250000"));
    let missing = ws.xtask(&["metrics", "diff", "p.yaml", "--against", "no-such-rev"]);
    assert_eq!(missing.status.code(), Some(2));
}

/// Makes the workspace a git repository whose one commit holds `p.lock`.
fn commit_lock_file(ws: &Workspace) {
    for args in [
        &["init", "-q"][..],
        &["add", "p.lock"],
        &["commit", "-q", "-m", "baseline"],
    ] {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(ws.path(""))
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    }
}

#[test]
fn metrics_diff_never_hands_a_revision_to_git_as_an_option() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        "stages:\n  - name: evaluate\n    kind: shell\n    params: {cmd: 'echo \"{\\\"accuracy\\\": 1}\" > \"$METRICS\"'}\n    metrics: [eval.json]\n",
    );
    assert_eq!(ws.run(&[]).code, 0);
    commit_lock_file(&ws);
    // `git show --output=out:./p.lock` would write git's output into that file.
    std::fs::create_dir(ws.path("out:.")).unwrap();
    let diff = ws.xtask(&["metrics", "diff", "p.yaml", "--against=--output=out"]);
    let stderr = String::from_utf8_lossy(&diff.stderr);
    assert_eq!(diff.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("git revision `--output=out`") && stderr.contains("cannot start with `-`"),
        "{stderr}"
    );
    assert!(
        !ws.exists("out:./p.lock"),
        "git took the revision for an option and wrote a file"
    );
}

#[test]
fn dag_renders_edges_in_every_format() {
    let ws = Workspace::new();
    ws.write("input.txt", "x\n");
    ws.write("p.yaml", CHAIN);
    let dot = String::from_utf8(ws.xtask(&["dag", "p.yaml", "--format", "dot"]).stdout).unwrap();
    assert!(
        dot.contains("\"a\" -> \"b\";") && dot.contains("\"b\" -> \"e\";"),
        "{dot}"
    );
    assert!(!dot.contains("\"a\" -> \"c\";"));
    let text = String::from_utf8(ws.xtask(&["dag", "p.yaml"]).stdout).unwrap();
    assert!(text.contains("f [shell] <- e"), "{text}");
    let mermaid =
        String::from_utf8(ws.xtask(&["dag", "p.yaml", "--format", "mermaid"]).stdout).unwrap();
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("s0 --> s1"),
        "{mermaid}"
    );
}

#[test]
fn paths_resolve_against_the_pipeline_file_and_its_workdir() {
    let ws = Workspace::new();
    ws.write("configs/data/in.txt", "payload\n");
    ws.write(
        "configs/p.yaml",
        "workdir: ../build\nstages:\n  - name: import\n    kind: copy\n    deps: [../configs/data/in.txt]\n    outs: [imported/in.txt]\n",
    );
    let out = ws.xtask(&["run", "configs/p.yaml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws.read("build/imported/in.txt"), "payload\n");
    assert!(
        Path::new(&ws.path("configs/p.lock")).exists(),
        "the lock sits beside the pipeline"
    );
}

#[test]
fn reordering_positional_deps_reruns_the_stage() {
    let ws = Workspace::new();
    ws.write("x.txt", "x\n");
    ws.write("y.txt", "y\n");
    let pipeline = |deps: &str| {
        format!(
            "stages:\n  - name: pick\n    kind: shell\n    deps: [{deps}]\n    params: {{cmd: 'cp \"$DEP_0\" \"$OUT\"'}}\n    outs: [picked.txt]\n"
        )
    };
    ws.write("p.yaml", &pipeline("x.txt, y.txt"));
    assert_eq!(ws.run(&[]).with_status("ran"), ["pick"]);
    assert_eq!(ws.read("picked.txt"), "x\n");
    ws.write("p.yaml", &pipeline("y.txt, x.txt"));
    let run = ws.run(&[]);
    assert_eq!(
        run.with_status("ran"),
        ["pick"],
        "$DEP_0 now names another file"
    );
    assert_eq!(
        run.reason("pick"),
        "the declared order or names of deps, outs or metrics changed"
    );
    assert_eq!(ws.read("picked.txt"), "y\n");
}

#[test]
fn a_dep_spelled_as_an_absolute_path_still_depends_on_its_producer() {
    let ws = Workspace::new();
    let absolute = ws.path("made.txt");
    ws.write(
        "p.yaml",
        &format!(
            "stages:\n  - name: consume\n    kind: shell\n    deps: [{}]\n    params: {{cmd: 'cp \"$DEP\" \"$OUT\"'}}\n    outs: [copy.txt]\n  - name: make\n    kind: shell\n    params: {{cmd: 'echo made > \"$OUT\"'}}\n    outs: [made.txt]\n",
            absolute.display()
        ),
    );
    let dag = String::from_utf8(ws.xtask(&["dag", "p.yaml", "--format", "dot"]).stdout).unwrap();
    assert!(dag.contains("\"make\" -> \"consume\";"), "{dag}");
    let run = ws.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ws.read("copy.txt"), "made\n");
}

#[test]
fn a_file_no_run_recorded_at_an_output_path_is_refused_not_replaced() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        "stages:\n  - name: make\n    kind: shell\n    params: {cmd: 'touch ran; echo made > \"$OUT\"'}\n    outs: [notes.txt]\n",
    );
    ws.write("notes.txt", "written by hand\n");
    let status = ws.xtask(&["status", "p.yaml"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("cannot run: output `notes.txt`"), "{text}");

    let run = ws.run(&[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.status("make"), "failed");
    let reason = run.reason("make");
    assert!(
        reason.contains("output `notes.txt` already exists") && reason.contains("--force"),
        "{reason}"
    );
    assert_eq!(ws.read("notes.txt"), "written by hand\n");
    assert!(!ws.exists("ran"), "refused before the stage ran");

    let forced = ws.run(&["--force"]);
    assert_eq!(forced.with_status("ran"), ["make"], "{}", forced.stderr);
    assert_eq!(ws.read("notes.txt"), "made\n");
}

/// `xtask ARGS` as a user whom permission bits bind. Tests running as root run it with no
/// capabilities, so without root's override of permission bits (`CAP_DAC_OVERRIDE`,
/// `CAP_FOWNER`): for files it owns, exactly what an ordinary user is.
fn xtask_bound_by_permissions(ws: &Workspace, args: &[&str]) -> std::process::Output {
    // SAFETY: geteuid has no preconditions.
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut setpriv = std::process::Command::new("setpriv");
        setpriv
            .args(["--bounding-set=-all", "--inh-caps=-all", "--"])
            .arg(env!("CARGO_BIN_EXE_xtask"));
        setpriv
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
    };
    command
        .args(args)
        .current_dir(ws.path(""))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run xtask")
}

fn make_read_only(ws: &Workspace, rel: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ws.path(rel), std::fs::Permissions::from_mode(0o555)).unwrap();
}

#[test]
fn read_only_directories_from_archives_never_wedge_the_workspace() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        "stages:\n  - name: unpack\n    kind: shell\n    params: {cmd: 'mkdir -p \"$OUT/bin\" && echo tool > \"$OUT/bin/tool\" && chmod 555 \"$OUT/bin\"'}\n    outs: [pkg]\n",
    );
    // What a run killed while unpacking an archive of read-only directories leaves behind.
    ws.write(".textrec/staging/unpack-1-0/pkg/bin/tool", "tool\n");
    make_read_only(&ws, ".textrec/staging/unpack-1-0/pkg/bin");
    make_read_only(&ws, ".textrec/staging/unpack-1-0/pkg");

    let first = xtask_bound_by_permissions(&ws, &["run", "p.yaml"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(find_named(&ws.path(".textrec/staging"), "tool").is_empty());
    assert_eq!(ws.read("pkg/bin/tool"), "tool\n");

    // Replacing the output sends the old tree, read-only directory and all, to the trash.
    let again = xtask_bound_by_permissions(&ws, &["run", "p.yaml", "--force"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(!stderr.contains("remove replaced outputs"), "{stderr}");
    assert!(find_named(&ws.path(".textrec/trash"), "tool").is_empty());
}

/// Whether `pid` is a live process (a zombie is not: it has ended and waits to be reaped).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn a_shell_stages_background_processes_die_with_a_killed_engine() {
    let ws = Workspace::new();
    ws.write(
        "p.yaml",
        "stages:\n  - name: spawner\n    kind: shell\n    params: {cmd: 'sleep 300 & echo $! > background.pid; wait'}\n    outs: [never.txt]\n",
    );
    let mut engine = ws.spawn(&["run", "p.yaml"]);
    wait_for(
        Duration::from_secs(20),
        "the stage to start its background process",
        || std::fs::read_to_string(ws.path("background.pid")).is_ok_and(|s| s.ends_with('\n')),
    );
    let pid: i32 = ws.read("background.pid").trim().parse().unwrap();
    assert!(running(pid));
    engine.kill().unwrap(); // SIGKILL: the engine can do nothing about it
    engine.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = running(pid);
    if survived {
        // SAFETY: plain kill(2) of the process this test made the stage start.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        !survived,
        "the stage's background `sleep 300` outlived the engine by 10 s"
    );
}
