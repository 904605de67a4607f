//! The engine's private directory `.textrec/` inside a workdir: the run lock (one run per
//! workspace), the state db, staging directories for outputs in the making, and stage logs.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::fsutil::remove_path;

#[derive(Debug, Clone)]
pub struct Workspace {
    dir: PathBuf,
}

/// Held for the whole run: a shared hold on the workspace (so leftovers are cleaned only when
/// no run is active) and an exclusive lock per selected stage, so runs of different stages
/// (`--only A` beside `--only B`, Slurm jobs on a shared disk) go on at once while two runs of
/// one stage cannot. The OS releases every lock when the process dies, even by `kill -9`; a clean
/// exit also empties each holder record, so a record found later was left by a dead run.
#[derive(Debug)]
pub struct RunGuard {
    _workspace: File,
    stages: Vec<File>,
    /// The holders dead processes left behind on the stages we took over.
    pub stale_holders: Vec<String>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        for file in &self.stages {
            let _ = file.set_len(0);
        }
    }
}

/// Held while `pipeline.lock` is read, changed and written, so that runs of different stages
/// merge their records instead of overwriting each other's.
#[derive(Debug)]
pub struct LockFileGuard {
    _file: File,
}

impl Workspace {
    pub fn new(workdir: &Path) -> Workspace {
        Workspace {
            dir: workdir.join(".textrec"),
        }
    }

    fn ensure(&self, sub: &str) -> Result<PathBuf, Error> {
        let path = self.dir.join(sub);
        fs::create_dir_all(&path).map_err(|e| Error::io("create directory", &path, e))?;
        Ok(path)
    }

    pub fn state_db_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn log_path(&self, stage: &str) -> Result<PathBuf, Error> {
        Ok(self.ensure("logs")?.join(format!("{stage}.log")))
    }

    fn open_lock(&self, path: &Path) -> Result<File, Error> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("open lock", path, e))
    }

    /// Takes the workspace for a run of `stages`, or fails at once with [`Error::Busy`] naming
    /// the stage and the run that holds it. The first run to find no other run active removes
    /// what killed runs left in staging/ and trash/; later runs remove only their stages'.
    pub fn acquire<'a>(
        &self,
        stages: impl IntoIterator<Item = &'a str>,
    ) -> Result<RunGuard, Error> {
        self.ensure("locks")?;
        let path = self.dir.join("run.lock");
        let workspace = self.open_lock(&path)?;
        let mut stages: Vec<&str> = stages.into_iter().collect();
        stages.sort_unstable();
        stages.dedup();
        let alone = match workspace.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        };
        if alone {
            self.clean_leftovers(None)?;
            workspace
                .unlock()
                .map_err(|e| Error::io("unlock", &path, e))?;
        }
        // Exclusive holds on run.lock last only as long as a cleaning: wait for one.
        workspace
            .lock_shared()
            .map_err(|e| Error::io("lock", &path, e))?;
        let mut guard = RunGuard {
            _workspace: workspace,
            stages: Vec::new(),
            stale_holders: Vec::new(),
        };
        for stage in stages {
            let path = self.dir.join("locks").join(format!("{stage}.lock"));
            let mut file = self.open_lock(&path)?;
            let mut previous = String::new();
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let _ = file.read_to_string(&mut previous);
                    return Err(Error::Busy {
                        workdir: self.dir.parent().unwrap_or(&self.dir).to_path_buf(),
                        stage: stage.to_owned(),
                        holder: describe_holder(previous.trim()),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
            }
            let _ = file.read_to_string(&mut previous);
            if !previous.trim().is_empty() {
                guard.stale_holders.push(format!(
                    "stage `{stage}`: {}",
                    describe_holder(previous.trim())
                ));
            }
            let record = format!("pid {} started {}\n", std::process::id(), unix_now());
            (|| {
                file.set_len(0)?;
                file.rewind()?;
                file.write_all(record.as_bytes())?;
                file.sync_all()
            })()
            .map_err(|e| Error::io("write stage lock", &path, e))?;
            if !alone {
                self.clean_leftovers(Some(stage))?;
            }
            guard.stages.push(file);
        }
        Ok(guard)
    }

    /// Waits for, then holds, the right to read, change and write `pipeline.lock`.
    pub fn lock_file_guard(&self) -> Result<LockFileGuard, Error> {
        self.ensure("locks")?;
        let path = self.dir.join("locks").join("pipeline.lock.lock");
        let file = self.open_lock(&path)?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        Ok(LockFileGuard { _file: file })
    }

    /// Removes what killed runs left behind: all of it, or only `stage`'s (its staging and trash
    /// directories are named `STAGE-PID-N`). Call only while holding the workspace alone, or the
    /// stage's lock.
    fn clean_leftovers(&self, stage: Option<&str>) -> Result<(), Error> {
        for sub in ["staging", "trash"] {
            let path = self.dir.join(sub);
            let Some(stage) = stage else {
                remove_path(&path).map_err(|e| Error::io("clean", &path, e))?;
                continue;
            };
            let Ok(entries) = fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = name
                    .strip_prefix(stage)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .and_then(|rest| rest.split_once('-'))
                    .is_some_and(|(pid, n)| {
                        [pid, n]
                            .iter()
                            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    });
                if ours {
                    remove_path(&entry.path()).map_err(|e| Error::io("clean", entry.path(), e))?;
                }
            }
        }
        Ok(())
    }

    /// The directory a stage may keep resumable state in (checkpoints) between attempts with
    /// the same cache key: it survives failures and kills, and [`Self::clear_resume_dirs`]
    /// removes it once the stage has succeeded.
    pub fn resume_dir(&self, stage: &str, key: &str) -> Result<PathBuf, Error> {
        let path = self.ensure("resume")?.join(format!("{stage}-{key}"));
        fs::create_dir_all(&path).map_err(|e| Error::io("create directory", &path, e))?;
        Ok(path)
    }

    /// Removes every resume directory of `stage` (whatever key it was for).
    pub fn clear_resume_dirs(&self, stage: &str) -> Result<(), Error> {
        let dir = self.dir.join("resume");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(());
        };
        let prefix = format!("{stage}-");
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only `STAGE-<16 hex>`: stage `a` must not clear the directories of stage `a-b`.
            if name
                .strip_prefix(&prefix)
                .is_some_and(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                remove_path(&entry.path()).map_err(|e| Error::io("clean", entry.path(), e))?;
            }
        }
        Ok(())
    }

    /// A fresh, empty staging directory for one execution of `stage`.
    pub fn staging_dir(&self, stage: &str) -> Result<PathBuf, Error> {
        self.unique_dir("staging", stage)
    }

    /// A fresh path under trash/ to move a replaced output to before deleting it.
    pub fn trash_dir(&self, stage: &str) -> Result<PathBuf, Error> {
        self.unique_dir("trash", stage)
    }

    fn unique_dir(&self, sub: &str, stage: &str) -> Result<PathBuf, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self
            .ensure(sub)?
            .join(format!("{stage}-{}-{n}", std::process::id()));
        remove_path(&path).map_err(|e| Error::io("clean", &path, e))?;
        fs::create_dir_all(&path).map_err(|e| Error::io("create directory", &path, e))?;
        Ok(path)
    }
}

/// `pid 42 started 1700000000` → `pid 42 (running for 12s)` or `... (no longer running)`.
fn describe_holder(record: &str) -> String {
    let mut words = record.split_whitespace();
    let pid = words.nth(1).and_then(|p| p.parse::<i32>().ok());
    let started = words.nth(1).and_then(|s| s.parse::<u64>().ok());
    match (pid, started) {
        (Some(pid), Some(started)) => {
            let state = if process_alive(pid) {
                format!("running for {}s", unix_now().saturating_sub(started))
            } else {
                "no longer running".to_owned()
            };
            format!("pid {pid} ({state})")
        }
        _ => format!("unknown holder `{record}`"),
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission; it sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_different_stages_share_the_workspace_and_a_stage_has_one_run() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(tmp.path());
        let a = ws.acquire(["a"]).unwrap();
        assert!(a.stale_holders.is_empty());
        let b = ws.acquire(["b"]).expect("another stage is free");
        let err = ws.acquire(["c", "a"]).unwrap_err();
        assert_eq!(err.exit_code(), 3);
        let message = err.to_string();
        assert!(message.contains("stage `a`"), "{message}");
        assert!(
            message.contains(&format!("pid {} (running for", std::process::id())),
            "{message}"
        );
        drop(a);
        let again = ws.acquire(["a", "c"]).unwrap();
        assert!(
            again.stale_holders.is_empty(),
            "a clean exit leaves no stale record"
        );
        drop((b, again));
    }

    #[test]
    fn a_run_beside_another_cleans_only_its_own_stages_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(tmp.path());
        let other = ws.acquire(["a-b"]).unwrap();
        let theirs = ws.staging_dir("a-b").unwrap();
        let dead = tmp.path().join(".textrec/staging/a-999999-0");
        fs::create_dir_all(&dead).unwrap();
        let _mine = ws.acquire(["a"]).unwrap();
        assert!(!dead.exists(), "stage a's leftover is removed");
        assert!(
            theirs.exists(),
            "stage a-b's staging, in use by another run, is kept"
        );
        drop(other);
    }

    #[test]
    fn a_record_left_by_a_dead_process_is_taken_over_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        fs::create_dir_all(tmp.path().join(".textrec/locks")).unwrap();
        fs::write(
            tmp.path().join(".textrec/locks/train.lock"),
            format!("pid {dead_pid} started 1\n"),
        )
        .unwrap();
        let guard = Workspace::new(tmp.path()).acquire(["train"]).unwrap();
        assert_eq!(
            guard.stale_holders,
            [format!("stage `train`: pid {dead_pid} (no longer running)")]
        );
    }
}
