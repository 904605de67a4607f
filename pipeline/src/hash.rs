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

use std::borrow::Cow;
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

#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    hash: ContentHash,
    hashed_at_ns: i64,
    /// Whether this run reused the entry, so that saving keeps it. A flag rather than a copy
    /// into a second map: a no-op run reuses every entry, often tens of thousands of them.
    #[serde(skip)]
    used: AtomicBool,
}

#[derive(Deserialize)]
struct StateFile {
    version: u32,
    entries: HashMap<String, Entry>,
}

/// [`StateFile`] as written: borrowed from the db, not copied.
#[derive(Serialize)]
struct StateFileRef<'a> {
    version: u32,
    entries: HashMap<&'a str, &'a Entry>,
}

/// This run's answer for one path; its lock is held while the path is hashed, so stages that ask
/// for the same path at once wait for one hashing instead of each doing it.
type Slot = Arc<Mutex<Option<Option<ContentHash>>>>;

/// Hashes paths, reusing the hashes of files whose metadata has not changed.
#[derive(Debug)]
pub struct StateDb {
    path: PathBuf,
    known: HashMap<String, Entry>,
    /// Files this run read and hashed (new, changed or racy), by path.
    fresh: Mutex<HashMap<String, Entry>>,
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
            fresh: Mutex::default(),
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
            self.hash_file(path, &Stamp::of(&meta))
                .map(|hash| Some(hash.into_owned()))
        }
    }

    fn hash_dir(&self, root: &Path) -> io::Result<ContentHash> {
        let mut files = Vec::new();
        collect_files(root, "", &mut files)?;
        files.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
        let hashes: Vec<Cow<'_, str>> = files
            .par_iter()
            .map(|file| self.hash_file(&file.path, &file.stamp))
            .collect::<io::Result<_>>()?;
        Ok(dir_hash(
            files
                .iter()
                .zip(&hashes)
                .map(|(file, hash)| (file.rel.as_str(), hash.as_ref())),
        ))
    }

    /// The hash of the file at `path` with metadata `stamp`: the db's, borrowed, when the
    /// metadata matches a settled entry, else read from the file.
    fn hash_file(&self, path: &Path, stamp: &Stamp) -> io::Result<Cow<'_, str>> {
        self.files_checked.fetch_add(1, Ordering::Relaxed);
        let key = path.to_string_lossy();
        let Stamp {
            size,
            mtime_ns,
            ctime_ns,
            ino,
        } = *stamp;
        if let Some(entry) = self.known.get(key.as_ref()) {
            let same = entry.size == size
                && entry.mtime_ns == mtime_ns
                && entry.ctime_ns == ctime_ns
                && entry.ino == ino;
            let settled = entry.hashed_at_ns - mtime_ns.max(ctime_ns) > RACY_WINDOW_NS;
            if same && settled {
                entry.used.store(true, Ordering::Relaxed);
                return Ok(Cow::Borrowed(&entry.hash));
            }
        }
        let hashed_at_ns = now_ns();
        let hash = hash_file_contents(path)?;
        let entry = Entry {
            size,
            mtime_ns,
            ctime_ns,
            ino,
            hash: hash.clone(),
            hashed_at_ns,
            used: AtomicBool::new(true),
        };
        lock(&self.fresh).insert(key.into_owned(), entry);
        Ok(Cow::Owned(hash))
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
        let fresh = lock(&self.fresh);
        let keep = |(path, entry): &(&String, &Entry)| {
            keep_untouched || entry.used.load(Ordering::Relaxed) || fresh.contains_key(*path)
        };
        let dropped_some = self.known.iter().any(|known| !keep(&known));
        if fresh.is_empty() && !dropped_some {
            return Ok(());
        }
        let mut entries: HashMap<&str, &Entry> = self
            .known
            .iter()
            .filter(keep)
            .map(|(path, entry)| (path.as_str(), entry))
            .collect();
        entries.extend(fresh.iter().map(|(path, entry)| (path.as_str(), entry)));
        let state = StateFileRef {
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

/// The metadata that decides whether a file's db entry still holds.
#[derive(Clone, Copy)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
        }
    }
}

/// A file found under a directory being hashed.
pub(crate) struct Found {
    /// `/`-separated, relative to the directory.
    pub(crate) rel: String,
    pub(crate) path: PathBuf,
    stamp: Stamp,
}

/// Recursively lists the files under `dir` (following symlinks) with their metadata.
pub(crate) fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<Found>) -> io::Result<()> {
    let entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    // One lookup per entry, relative to the open directory, in parallel (a directory may hold
    // tens of thousands of files); only a symlink needs the full path, to see what it points at.
    let found: Vec<(Found, bool)> = entries
        .par_iter()
        .with_min_len(64)
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            let meta = if entry.file_type()?.is_symlink() {
                fs::metadata(&path)?
            } else {
                entry.metadata()?
            };
            let found = Found {
                rel,
                path,
                stamp: Stamp::of(&meta),
            };
            Ok((found, meta.is_dir()))
        })
        .collect::<io::Result<_>>()?;
    // The directory stays open only while its own entries are looked at.
    drop(entries);
    for (file, is_dir) in found {
        if is_dir {
            collect_files(&file.path, &file.rel, out)?;
        } else {
            out.push(file);
        }
    }
    Ok(())
}

/// A directory's hash from its files' relative paths (`/`-separated, in sorted order) and
/// content hashes; the remote cache recomputes it from a listing.
pub(crate) fn dir_hash<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> ContentHash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"textrec-dir-v1\0");
    for (rel, hash) in files {
        hasher.update(rel.as_bytes());
        hasher.update(b"\0");
        hasher.update(hash.as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().to_hex().to_string()
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
            ..Entry::default()
        };
        let db = StateDb::with_entries(PathBuf::new(), HashMap::from([(key, entry)]));
        assert_eq!(db.hash_path(&file).unwrap().unwrap(), "remembered");
    }

    /// A settled entry for `file` that remembers `hash`.
    fn settled(file: &Path, hash: &str) -> (String, Entry) {
        let stamp = Stamp::of(&fs::metadata(file).unwrap());
        let entry = Entry {
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            ctime_ns: stamp.ctime_ns,
            ino: stamp.ino,
            hash: hash.into(),
            hashed_at_ns: now_ns() + 10 * RACY_WINDOW_NS,
            ..Entry::default()
        };
        (file.to_string_lossy().into_owned(), entry)
    }

    #[test]
    fn saving_keeps_what_the_run_used_drops_the_rest_unless_partial_and_skips_a_no_op() {
        let tmp = tempfile::tempdir().unwrap();
        let [a, b, c] = ["a", "b", "c"].map(|name| tmp.path().join(name));
        for file in [&a, &b, &c] {
            fs::write(file, "x").unwrap();
        }
        let state = tmp.path().join("state.json");
        let db = |entries: Vec<(String, Entry)>| {
            StateDb::with_entries(state.clone(), entries.into_iter().collect())
        };
        let saved = || {
            let mut keys: Vec<String> = StateDb::open(&state).known.into_keys().collect();
            keys.sort();
            keys
        };
        let name = |file: &Path| file.to_string_lossy().into_owned();

        // Everything known was used and nothing was read: nothing to write.
        let full = db(vec![settled(&a, "ha"), settled(&b, "hb")]);
        assert_eq!(full.hash_path(&a).unwrap().unwrap(), "ha");
        assert_eq!(full.hash_path(&b).unwrap().unwrap(), "hb");
        full.save(false).unwrap();
        assert!(!state.exists());

        // A full run that used `a` only forgets `b`.
        let full = db(vec![settled(&a, "ha"), settled(&b, "hb")]);
        full.hash_path(&a).unwrap();
        full.save(false).unwrap();
        assert_eq!(saved(), [name(&a)]);

        // A partial run keeps what it did not look at, and adds what it read.
        let partial = db(vec![settled(&a, "ha"), settled(&b, "hb")]);
        assert_eq!(
            partial.hash_path(&c).unwrap().unwrap(),
            hash_file_contents(&c).unwrap()
        );
        partial.save(true).unwrap();
        assert_eq!(saved(), [name(&a), name(&b), name(&c)]);
    }
}
