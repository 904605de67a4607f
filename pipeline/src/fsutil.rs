//! File system steps that must survive a crash at any instant.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` via a temporary file in the same directory, fsync, and rename: readers
/// see the old content or the new, never a torn mix, even after `kill -9` or a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes a file or a directory tree; a missing path is not an error.
///
/// A tree with read-only directories (unpacked from an archive that had `0555` directories) is
/// removed too: for a user without root's override, unlinking inside such a directory fails, so
/// the directories get their owner's write permission back and removal is tried again. Without
/// that, one such tree left in staging would stop every later run at its cleanup.
pub fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                restore_owner_access(path)?;
                fs::remove_dir_all(path)
            }
            result => result,
        },
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Gives `dir` and every directory below it read, write and search permission for their owner.
/// Symbolic links are never followed, so nothing outside the tree changes.
fn restore_owner_access(dir: &Path) -> io::Result<()> {
    let mut permissions = fs::symlink_metadata(dir)?.permissions();
    permissions.set_mode(permissions.mode() | 0o700);
    fs::set_permissions(dir, permissions)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            restore_owner_access(&entry.path())?;
        }
    }
    Ok(())
}

/// Copies a file or directory tree, calling `on_file` after each file.
pub fn copy_tree(from: &Path, to: &Path, on_file: &mut dyn FnMut()) -> io::Result<()> {
    if fs::metadata(from)?.is_dir() {
        fs::create_dir_all(to)?;
        let mut entries: Vec<_> = fs::read_dir(from)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            copy_tree(&entry.path(), &to.join(entry.file_name()), on_file)?;
        }
    } else {
        fs::copy(from, to)?;
        on_file();
    }
    Ok(())
}

/// Number of regular files under `path` (1 for a file).
pub fn count_files(path: &Path) -> io::Result<u64> {
    if !fs::metadata(path)?.is_dir() {
        return Ok(1);
    }
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        total += count_files(&entry?.path())?;
    }
    Ok(total)
}
