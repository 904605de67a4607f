//! Content hashes of files and directories (blake3, streamed), with a state db that remembers
//! `(size, mtime, ctime, inode) → hash` so unchanged files are not re-read, as DVC's state db does.
//!
//! An entry is trusted only when the file's metadata is identical *and* the hash was taken well
//! after the file's last modification: a file written in the same clock tick as its hashing could
//! change again without its mtime moving (git's "racy" problem), so such entries are re-hashed.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Hashes paths, reusing the hashes of files whose metadata has not changed.
#[derive(Debug)]
pub struct StateDb {
    path: PathBuf,
    known: HashMap<String, Entry>,
    touched: Mutex<HashMap<String, Entry>>,
    /// Whether any file was (re-)hashed, i.e. whether saving would change anything.
    rehashed: AtomicBool,
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
        StateDb {
            path: path.to_path_buf(),
            known,
            touched: Mutex::default(),
            rehashed: AtomicBool::new(false),
        }
    }

    /// An empty db that never persists; for hashing outside a workspace.
    pub fn in_memory() -> StateDb {
        StateDb {
            path: PathBuf::new(),
            known: HashMap::new(),
            touched: Mutex::default(),
            rehashed: AtomicBool::new(false),
        }
    }

    /// The content hash of a file or directory, `None` if it does not exist.
    pub fn hash_path(&self, path: &Path) -> io::Result<Option<ContentHash>> {
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
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, entry);
    }

    /// Writes the db atomically. Keeps the entries used by this run, plus, when `keep_untouched`
    /// (a partial run), the ones it did not look at.
    pub fn save(&self, keep_untouched: bool) -> io::Result<()> {
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
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
        let db = StateDb {
            path: PathBuf::new(),
            known: HashMap::from([(key, entry)]),
            touched: Mutex::default(),
            rehashed: AtomicBool::new(false),
        };
        assert_eq!(db.hash_path(&file).unwrap().unwrap(), "remembered");
    }
}
