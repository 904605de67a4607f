//! Content hashes of files and directories (blake3, streamed), with a state db that remembers
//! `(size, mtime, ctime, inode) → hash` so unchanged files are not re-read, as DVC's state db does.
//!
//! An entry is trusted only when the file's metadata is identical *and* the hash was taken well
//! after the file's last modification: a file written in the same clock tick as its hashing could
//! change again without its mtime moving (git's "racy" problem), so such entries are re-hashed.
//!
//! A db lives for one run and answers each path once: a directory that many stages depend on is
//! walked once, not once per stage. During a run the workspace changes only where the engine moves
//! a stage's outputs into place (stages write into staging directories), and it then calls
//! [`StateDb::forget`] for them, so a stage that depends on a freshly written output sees its new
//! hash.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Entries whose hash was taken less than this long after the file's mtime are re-checked.
const RACY_WINDOW_NS: i64 = 2_000_000_000;
const STATE_VERSION: u32 = 1;

/// A content hash, hex encoded. Files and directories hash differently even for equal bytes.
pub type ContentHash = String;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    hash: ContentHash,
    hashed_at_ns: i64,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    entries: HashMap<String, Entry>,
}

/// This run's answer for one path; its lock is held while the path is hashed, so stages that ask
/// for the same path at once wait for one hashing instead of each doing it.
type Slot = Arc<Mutex<Option<Option<ContentHash>>>>;

/// Hashes paths, reusing the hashes of files whose metadata has not changed.
#[derive(Debug)]
pub struct StateDb {
    path: PathBuf,
    known: HashMap<String, Entry>,
    touched: Mutex<HashMap<String, Entry>>,
    /// Whether any file was (re-)hashed, i.e. whether saving would change anything.
    rehashed: AtomicBool,
    /// Paths already answered in this run (`None`: it did not exist), by absolute path.
    answered: Mutex<HashMap<PathBuf, Slot>>,
    /// Files looked at (metadata against the db, or read), so tests can see what a run costs.
    files_checked: AtomicUsize,
}

impl StateDb {
    /// Opens the state db at `path`; a missing or unreadable db starts empty (it is only a cache).
    pub fn open(path: &Path) -> StateDb {
        let known = fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StateFile>(&bytes).ok())
            .filter(|state| state.version == STATE_VERSION)
            .map(|state| state.entries)
            .unwrap_or_default();
        StateDb::with_entries(path.to_path_buf(), known)
    }

    /// An empty db that never persists; for hashing outside a workspace.
    pub fn in_memory() -> StateDb {
        StateDb::with_entries(PathBuf::new(), HashMap::new())
    }

    fn with_entries(path: PathBuf, known: HashMap<String, Entry>) -> StateDb {
        StateDb {
            path,
            known,
            touched: Mutex::default(),
            rehashed: AtomicBool::new(false),
            answered: Mutex::default(),
            files_checked: AtomicUsize::new(0),
        }
    }

    /// The content hash of a file or directory, `None` if it does not exist. Answered once per
    /// path: later calls return the first answer until [`StateDb::forget`] drops it.
    pub fn hash_path(&self, path: &Path) -> io::Result<Option<ContentHash>> {
        let slot = lock(&self.answered)
            .entry(path.to_path_buf())
            .or_default()
            .clone();
        let mut answer = lock(&slot);
        if let Some(hash) = &*answer {
            return Ok(hash.clone());
        }
        let hash = self.hash_now(path)?;
        *answer = Some(hash.clone());
        Ok(hash)
    }

    /// Drops the answers for `path` and for every path inside it or containing it: something new
    /// was moved there, so their hashes may have changed.
    pub fn forget(&self, path: &Path) {
        lock(&self.answered)
            .retain(|known, _| !known.starts_with(path) && !path.starts_with(known));
    }

    fn hash_now(&self, path: &Path) -> io::Result<Option<ContentHash>> {
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            self.hash_dir(path).map(Some)
        } else {
            self.hash_file(path, &meta).map(Some)
        }
    }

    fn hash_dir(&self, root: &Path) -> io::Result<ContentHash> {
        let mut files = Vec::new();
        collect_files(root, String::new(), &mut files)?;
        files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let hashes: Vec<ContentHash> = files
            .par_iter()
            .map(|(_, path)| {
                let meta = fs::metadata(path)?;
                self.hash_file(path, &meta)
            })
            .collect::<io::Result<_>>()?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"textrec-dir-v1\0");
        for ((rel, _), hash) in files.iter().zip(&hashes) {
            hasher.update(rel.as_bytes());
            hasher.update(b"\0");
            hasher.update(hash.as_bytes());
            hasher.update(b"\n");
        }
        Ok(hasher.finalize().to_hex().to_string())
    }

    fn hash_file(&self, path: &Path, meta: &fs::Metadata) -> io::Result<ContentHash> {
        self.files_checked.fetch_add(1, Ordering::Relaxed);
        let key = path.to_string_lossy().into_owned();
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let ctime_ns = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
        if let Some(entry) = self.known.get(&key) {
            let same = entry.size == meta.len()
                && entry.mtime_ns == mtime_ns
                && entry.ctime_ns == ctime_ns
                && entry.ino == meta.ino();
            let settled = entry.hashed_at_ns - mtime_ns.max(ctime_ns) > RACY_WINDOW_NS;
            if same && settled {
                self.touch(key, entry.clone());
                return Ok(entry.hash.clone());
            }
        }
        let hashed_at_ns = now_ns();
        let hash = hash_file_contents(path)?;
        self.rehashed.store(true, Ordering::Relaxed);
        let entry = Entry {
            size: meta.len(),
            mtime_ns,
            ctime_ns,
            ino: meta.ino(),
            hash: hash.clone(),
            hashed_at_ns,
        };
        self.touch(key, entry);
        Ok(hash)
    }

    fn touch(&self, key: String, entry: Entry) {
        lock(&self.touched).insert(key, entry);
    }

    /// How many files this db has looked at so far.
    #[cfg(test)]
    pub(crate) fn files_checked(&self) -> usize {
        self.files_checked.load(Ordering::Relaxed)
    }

    /// Writes the db atomically. Keeps the entries used by this run, plus, when `keep_untouched`
    /// (a partial run), the ones it did not look at.
    pub fn save(&self, keep_untouched: bool) -> io::Result<()> {
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let touched = lock(&self.touched);
        let dropped_some = !keep_untouched && touched.len() != self.known.len();
        if !self.rehashed.load(Ordering::Relaxed) && !dropped_some {
            return Ok(());
        }
        let mut entries = if keep_untouched {
            self.known.clone()
        } else {
            HashMap::new()
        };
        entries.extend(touched.iter().map(|(k, v)| (k.clone(), v.clone())));
        let state = StateFile {
            version: STATE_VERSION,
            entries,
        };
        let bytes = serde_json::to_vec(&state).map_err(io::Error::other)?;
        crate::fsutil::write_atomic(&self.path, &bytes)
    }
}

/// A poisoned lock still guards consistent data here: each guarded value is changed in one step
/// (an insert, a removal, an assignment), so a panic never leaves one half-written.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Recursively lists regular files under `dir` with their `/`-separated relative paths.
fn collect_files(dir: &Path, prefix: String, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        if fs::metadata(&path)?.is_dir() {
            collect_files(&path, rel, out)?;
        } else {
            out.push((rel, path));
        }
    }
    Ok(())
}

/// blake3 of a file's bytes, streamed.
pub fn hash_file_contents(path: &Path) -> io::Result<ContentHash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_hash_follows_content_and_names_not_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("a.txt"), "alpha").unwrap();
        fs::write(dir.join("sub/b.txt"), "beta").unwrap();
        let db = StateDb::in_memory();
        let first = db.hash_path(&dir).unwrap().unwrap();

        // Same bytes rewritten: same hash.
        fs::write(dir.join("a.txt"), "alpha").unwrap();
        assert_eq!(
            StateDb::in_memory().hash_path(&dir).unwrap().unwrap(),
            first
        );

        // Content change, rename, and a new empty file all change it.
        fs::write(dir.join("a.txt"), "alphA").unwrap();
        let changed = StateDb::in_memory().hash_path(&dir).unwrap().unwrap();
        assert_ne!(changed, first);
        fs::rename(dir.join("a.txt"), dir.join("c.txt")).unwrap();
        assert_ne!(
            StateDb::in_memory().hash_path(&dir).unwrap().unwrap(),
            changed
        );

        assert_eq!(db.hash_path(&tmp.path().join("missing")).unwrap(), None);
    }

    #[test]
    fn a_path_is_answered_once_until_something_at_inside_or_around_it_is_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/b.txt"), "beta").unwrap();
        fs::write(dir.join("sub2.txt"), "two").unwrap();
        let paths = [dir.clone(), dir.join("sub/b.txt"), dir.join("sub2.txt")];
        let db = StateDb::in_memory();
        let before: Vec<_> = paths.iter().map(|p| db.hash_path(p).unwrap()).collect();

        fs::write(dir.join("sub/b.txt"), "BETA").unwrap();
        fs::write(dir.join("sub2.txt"), "TWO").unwrap();
        let checked = db.files_checked();
        let again: Vec<_> = paths.iter().map(|p| db.hash_path(p).unwrap()).collect();
        assert_eq!(again, before, "this run's first answers");
        assert_eq!(
            db.files_checked(),
            checked,
            "answered without looking at any file"
        );

        // `d` contains `d/sub`, `d/sub/b.txt` is inside it; `d/sub2.txt` only shares a prefix.
        db.forget(&dir.join("sub"));
        let fresh = |p: &Path| StateDb::in_memory().hash_path(p).unwrap();
        assert_eq!(db.hash_path(&paths[0]).unwrap(), fresh(&paths[0]));
        assert_ne!(db.hash_path(&paths[0]).unwrap(), before[0]);
        assert_eq!(db.hash_path(&paths[1]).unwrap(), fresh(&paths[1]));
        assert_ne!(db.hash_path(&paths[1]).unwrap(), before[1]);
        assert_eq!(db.hash_path(&paths[2]).unwrap(), before[2]);
    }

    #[test]
    fn a_file_hashed_right_after_writing_is_rehashed_next_time() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        let state = tmp.path().join("state.json");
        fs::write(&file, "one").unwrap();
        let db = StateDb::open(&state);
        let one = db.hash_path(&file).unwrap().unwrap();
        db.save(false).unwrap();

        // Rewrite with the same size; the entry is racy, so the new content must be seen even if
        // the clock tick did not move mtime.
        fs::write(&file, "two").unwrap();
        let db = StateDb::open(&state);
        let two = db.hash_path(&file).unwrap().unwrap();
        assert_ne!(one, two);
        assert_eq!(two, hash_file_contents(&file).unwrap());
    }

    #[test]
    fn settled_entries_are_reused_without_reading_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, "content").unwrap();
        let meta = fs::metadata(&file).unwrap();
        let key = file.to_string_lossy().into_owned();
        let entry = Entry {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            hash: "remembered".into(),
            hashed_at_ns: now_ns() + 10 * RACY_WINDOW_NS,
        };
        let db = StateDb::with_entries(PathBuf::new(), HashMap::from([(key, entry)]));
        assert_eq!(db.hash_path(&file).unwrap().unwrap(), "remembered");
    }
}
