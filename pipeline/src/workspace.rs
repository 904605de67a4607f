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

/// Held for the whole run; the OS releases the lock when the process dies, even by `kill -9`.
/// A clean exit also empties the holder record, so a record found later was left by a dead run.
#[derive(Debug)]
pub struct RunGuard {
    file: File,
    /// The holder a dead process left behind, if we took its lock over.
    pub stale_holder: Option<String>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
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

    /// Takes the workspace for this process or fails at once with [`Error::Busy`] naming the holder.
    pub fn acquire(&self) -> Result<RunGuard, Error> {
        self.ensure("")?;
        let path = self.dir.join("run.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open run lock", &path, e))?;
        let mut previous = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let _ = file.read_to_string(&mut previous);
                return Err(Error::Busy {
                    workdir: self.dir.parent().unwrap_or(&self.dir).to_path_buf(),
                    holder: describe_holder(previous.trim()),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        let _ = file.read_to_string(&mut previous);
        let stale_holder = (!previous.trim().is_empty()).then(|| describe_holder(previous.trim()));
        let record = format!("pid {} started {}\n", std::process::id(), unix_now());
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(record.as_bytes())?;
            file.sync_all()
        })()
        .map_err(|e| Error::io("write run lock", &path, e))?;
        Ok(RunGuard { file, stale_holder })
    }

    /// Removes what killed runs left behind. Call only while holding the `RunGuard`.
    pub fn clean_leftovers(&self) -> Result<(), Error> {
        for sub in ["staging", "trash"] {
            let path = self.dir.join(sub);
            remove_path(&path).map_err(|e| Error::io("clean", &path, e))?;
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
    fn a_second_acquire_fails_with_the_holder_and_succeeds_once_released() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(tmp.path());
        let guard = ws.acquire().unwrap();
        assert_eq!(guard.stale_holder, None);
        let err = ws.acquire().unwrap_err();
        assert_eq!(err.exit_code(), 3);
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {} (running for", std::process::id())),
            "{message}"
        );
        drop(guard);
        let again = ws.acquire().unwrap();
        assert_eq!(
            again.stale_holder, None,
            "a clean exit leaves no stale record"
        );
    }

    #[test]
    fn a_record_left_by_a_dead_process_is_taken_over_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        fs::create_dir_all(tmp.path().join(".textrec")).unwrap();
        fs::write(
            tmp.path().join(".textrec/run.lock"),
            format!("pid {dead_pid} started 1\n"),
        )
        .unwrap();
        let guard = Workspace::new(tmp.path()).acquire().unwrap();
        assert_eq!(
            guard.stale_holder,
            Some(format!("pid {dead_pid} (no longer running)"))
        );
    }
}
