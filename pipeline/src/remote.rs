//! A remote cache on object storage (S3 and S3-compatible stores, GCS, Azure, or a local/NFS
//! directory, all through `object_store`), shared between machines as DVC's remotes and its
//! run-cache are: one machine runs a stage and pushes, the others pull instead of running it.
//!
//! Layout under the remote's URL:
//! - `files/ab/cdef…`: a file's bytes, named by their blake3 hash;
//! - `dirs/HASH.json`: a directory output's listing, `[[relative path, file hash], …]`, from
//!   which its hash is recomputed on pull;
//! - `runs/KEY.json`: a stage run's lock record, named by its cache key.
//!
//! A push writes objects first and the record last, so a push killed halfway leaves objects
//! nobody points at, never a record that points at missing objects. Content addressing makes a
//! push idempotent and two machines pushing the same output harmless. Every byte pulled is hashed
//! and compared before it is used. Credentials come from the standard environment variables
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and are never printed or written down.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use crate::error::RemoteError;
use crate::hash::{ContentHash, collect_files, dir_hash, hash_file_contents};
use crate::lock::LockedStage;
use crate::progress::Progress;

/// Files up to this size go up in one request; larger ones stream in parts of this size.
const PART_BYTES: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Environment variable that names the remote, overriding the pipeline file's `remote:`.
pub const REMOTE_ENV: &str = "TEXTREC_REMOTE";

impl RemoteError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        RemoteError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// A directory output's listing, as stored under `dirs/`.
#[derive(Debug, Serialize, Deserialize)]
struct Listing {
    files: Vec<(String, ContentHash)>,
}

/// One file to move, with the hash it must have.
struct Transfer {
    local: PathBuf,
    hash: ContentHash,
}

/// What a push or pull moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub files: u64,
    pub bytes: u64,
    /// Files the other side already had.
    pub skipped: u64,
}

impl std::ops::AddAssign for Moved {
    fn add_assign(&mut self, other: Moved) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.skipped += other.skipped;
    }
}

/// An open remote: the store, the prefix inside it, and the runtime its async client runs on.
pub struct Remote {
    /// As the user wrote it, for messages.
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    runtime: tokio::runtime::Runtime,
    /// Transfers in flight at once.
    parallel: usize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

/// Checks that `url` names a store textrec can open, without opening it (for load-time
/// validation of the pipeline file).
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    match ObjectStoreScheme::parse(&parsed) {
        Ok((ObjectStoreScheme::Memory | ObjectStoreScheme::Http, _)) | Err(_) => Err(format!(
            "expected s3://BUCKET/PREFIX, gs://, az://, abfss:// or file:///PATH, not `{url}`"
        )),
        Ok(_) => Ok(()),
    }
}

impl Remote {
    /// Opens the remote at `url`, configured from the environment (`AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`, credentials, ...). Nothing is sent until the first transfer.
    pub fn open(url: &str) -> Result<Remote, RemoteError> {
        let bad = |reason: String| RemoteError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        check_url(url).map_err(bad)?;
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        // TLS through rustls with ring; the first caller installs it, the others find it there.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| {
                k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_")
            });
        let (store, prefix) =
            object_store::parse_url_opts(&parsed, options).map_err(|e| bad(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start its I/O runtime: {e}")))?;
        Ok(Remote {
            url: url.to_owned(),
            store: Arc::from(store),
            prefix,
            runtime,
            parallel: 8,
        })
    }

    /// Asks the remote for an object that does not exist, so wrong credentials, a wrong endpoint
    /// or a missing bucket fail here, before any stage runs, rather than stage by stage.
    pub fn probe(&self) -> Result<(), RemoteError> {
        let key = self.key("runs/probe");
        self.runtime.block_on(self.exists(&key)).map(|_| ())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, relative: &str) -> Key {
        relative
            .split('/')
            .fold(self.prefix.clone(), |key, part| key.join(part))
    }

    fn file_key(&self, hash: &str) -> Key {
        self.key(&format!("files/{}/{}", &hash[..2], &hash[2..]))
    }

    fn store_error(
        &self,
        action: &'static str,
        key: &Key,
        source: object_store::Error,
    ) -> RemoteError {
        match source {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => RemoteError::Refused {
                url: self.url.clone(),
                action,
                key: key.to_string(),
            },
            source => RemoteError::Store {
                url: self.url.clone(),
                action,
                key: key.to_string(),
                source: Box::new(source),
            },
        }
    }

    /// The bytes at `key`, or `None` if there is no such object.
    async fn get_small(&self, key: &Key) -> Result<Option<Vec<u8>>, RemoteError> {
        match self.store.get(key).await {
            Ok(found) => found
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| self.store_error("read", key, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error("read", key, e)),
        }
    }

    async fn exists(&self, key: &Key) -> Result<bool, RemoteError> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.store_error("look up", key, e)),
        }
    }

    /// The record a machine pushed for cache key `key`, if any.
    pub fn record(&self, key: &str) -> Result<Option<LockedStage>, RemoteError> {
        let object = self.key(&format!("runs/{key}.json"));
        let Some(bytes) = self.runtime.block_on(self.get_small(&object))? else {
            return Ok(None);
        };
        let record: LockedStage =
            serde_json::from_slice(&bytes).map_err(|e| RemoteError::BadRecord {
                url: self.url.clone(),
                key: object.to_string(),
                reason: e.to_string(),
            })?;
        let reason = if record.key != key {
            Some(format!("it is the record of key {}", record.key))
        } else {
            record
                .outs
                .iter()
                .find(|(_, hash)| !is_hash(hash))
                .map(|(out, hash)| format!("`{out}` has no content hash but `{hash}`"))
        };
        if let Some(reason) = reason {
            return Err(RemoteError::BadRecord {
                url: self.url.clone(),
                key: object.to_string(),
                reason,
            });
        }
        Ok(Some(record))
    }

    /// Pushes the outputs of `record` (each at its local path) and then the record itself. The
    /// outputs must still hash to what the record says: they are hashed again as they go up.
    pub fn push(
        &self,
        record: &LockedStage,
        local: &[(String, PathBuf)],
        progress: &dyn Progress,
    ) -> Result<Moved, RemoteError> {
        self.runtime.block_on(async {
            let mut transfers = Vec::new();
            let mut listings = Vec::new();
            for (out, path) in local {
                let Some(hash) = record.outs.get(out) else {
                    continue;
                };
                let meta =
                    std::fs::metadata(path).map_err(|e| RemoteError::io("read output", path, e))?;
                if meta.is_dir() {
                    let files = list_files(path)?;
                    let mut listing = Listing { files: Vec::new() };
                    for (rel, file) in files {
                        let file_hash = hash_file_contents(&file)
                            .map_err(|e| RemoteError::io("hash", &file, e))?;
                        listing.files.push((rel, file_hash.clone()));
                        transfers.push(Transfer {
                            local: file,
                            hash: file_hash,
                        });
                    }
                    if &dir_hash(listing.files.iter().map(|(r, h)| (r.as_str(), h.as_str())))
                        != hash
                    {
                        return Err(RemoteError::OutputChanged {
                            out: out.clone(),
                            path: path.clone(),
                        });
                    }
                    listings.push((hash.clone(), listing));
                } else {
                    transfers.push(Transfer {
                        local: path.clone(),
                        hash: hash.clone(),
                    });
                }
            }
            transfers.sort_by(|a, b| a.hash.cmp(&b.hash));
            transfers.dedup_by(|a, b| a.hash == b.hash);
            let total: u64 = transfers
                .iter()
                .map(|t| std::fs::metadata(&t.local).map_or(0, |m| m.len()))
                .sum();
            progress.set_length_bytes(total);
            let moved = futures::stream::iter(transfers.iter().map(|t| self.upload(t, progress)))
                .buffer_unordered(self.parallel)
                .try_fold(Moved::default(), |mut sum, one| async move {
                    sum += one;
                    Ok(sum)
                })
                .await?;
            for (hash, listing) in &listings {
                let key = self.key(&format!("dirs/{hash}.json"));
                let body = serde_json::to_vec(listing).expect("listings serialise");
                self.store
                    .put(&key, PutPayload::from(body))
                    .await
                    .map_err(|e| self.store_error("write", &key, e))?;
            }
            // Last: from now on other machines may pull this run.
            let key = self.key(&format!("runs/{}.json", record.key));
            let body = serde_json::to_vec_pretty(record).expect("records serialise");
            self.store
                .put(&key, PutPayload::from(body))
                .await
                .map_err(|e| self.store_error("write", &key, e))?;
            Ok(moved)
        })
    }

    /// Uploads one file unless the remote has it, hashing the bytes as they go: a file that no
    /// longer has the expected hash is not stored under it.
    async fn upload(
        &self,
        transfer: &Transfer,
        progress: &dyn Progress,
    ) -> Result<Moved, RemoteError> {
        let key = self.file_key(&transfer.hash);
        let path = &transfer.local;
        let size = std::fs::metadata(path)
            .map_err(|e| RemoteError::io("read", path, e))?
            .len();
        if self.exists(&key).await? {
            progress.inc(size);
            return Ok(Moved {
                skipped: 1,
                ..Moved::default()
            });
        }
        let mut file = File::open(path).map_err(|e| RemoteError::io("read", path, e))?;
        let mut hasher = blake3::Hasher::new();
        let changed = || RemoteError::OutputChanged {
            out: path.display().to_string(),
            path: path.clone(),
        };
        if size as usize <= PART_BYTES {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes)
                .map_err(|e| RemoteError::io("read", path, e))?;
            hasher.update(&bytes);
            if hasher.finalize().to_hex().as_str() != transfer.hash {
                return Err(changed());
            }
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|e| self.store_error("write", &key, e))?;
            progress.inc(size);
        } else {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| self.store_error("start writing", &key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buffer = vec![0u8; 1 << 20];
            let streamed: Result<(), RemoteError> = async {
                loop {
                    let n = file
                        .read(&mut buffer)
                        .map_err(|e| RemoteError::io("read", path, e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buffer[..n]);
                    writer
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(|e| self.store_error("write", &key, e))?;
                    writer.write(&buffer[..n]);
                    progress.inc(n as u64);
                }
                if hasher.finalize().to_hex().as_str() != transfer.hash {
                    return Err(changed());
                }
                Ok(())
            }
            .await;
            if let Err(e) = streamed {
                // An unfinished upload's parts are kept (and billed) by S3 until aborted.
                let _ = writer.abort().await;
                return Err(e);
            }
            writer
                .finish()
                .await
                .map_err(|e| self.store_error("finish writing", &key, e))?;
        }
        Ok(Moved {
            files: 1,
            bytes: size,
            skipped: 0,
        })
    }

    /// Downloads the outputs `hashes` names (`out → hash`) to the paths in `into` (`out → path`,
    /// which must not exist yet), verifying every file's hash and every directory's listing.
    pub fn fetch(
        &self,
        stage: &str,
        hashes: &std::collections::BTreeMap<String, ContentHash>,
        into: &[(String, PathBuf)],
        progress: &dyn Progress,
    ) -> Result<Moved, RemoteError> {
        self.runtime.block_on(async {
            let mut transfers = Vec::new();
            for (out, path) in into {
                let Some(hash) = hashes.get(out) else {
                    continue;
                };
                let listing_key = self.key(&format!("dirs/{hash}.json"));
                match self.get_small(&listing_key).await? {
                    Some(bytes) => {
                        let listing: Listing =
                            serde_json::from_slice(&bytes).map_err(|e| RemoteError::BadRecord {
                                url: self.url.clone(),
                                key: listing_key.to_string(),
                                reason: e.to_string(),
                            })?;
                        if let Some((rel, bad)) = listing.files.iter().find(|(_, h)| !is_hash(h)) {
                            return Err(RemoteError::BadRecord {
                                url: self.url.clone(),
                                key: listing_key.to_string(),
                                reason: format!("`{rel}` has no content hash but `{bad}`"),
                            });
                        }
                        let found =
                            dir_hash(listing.files.iter().map(|(r, h)| (r.as_str(), h.as_str())));
                        if &found != hash {
                            return Err(RemoteError::Corrupt {
                                url: self.url.clone(),
                                key: listing_key.to_string(),
                                expected: hash.clone(),
                                found,
                            });
                        }
                        std::fs::create_dir_all(path)
                            .map_err(|e| RemoteError::io("create directory", path, e))?;
                        for (rel, file_hash) in listing.files {
                            let local =
                                safe_join(path, &rel).ok_or_else(|| RemoteError::BadRecord {
                                    url: self.url.clone(),
                                    key: listing_key.to_string(),
                                    reason: format!("`{rel}` leaves its directory"),
                                })?;
                            transfers.push(Transfer {
                                local,
                                hash: file_hash,
                            });
                        }
                    }
                    None => transfers.push(Transfer {
                        local: path.clone(),
                        hash: hash.clone(),
                    }),
                }
            }
            // Every object is looked up before any is fetched, several at a time: a missing one
            // fails the pull before it has moved anything.
            let sizes: Vec<u64> = futures::stream::iter(transfers.iter().map(|transfer| async {
                let key = self.file_key(&transfer.hash);
                match self.store.head(&key).await {
                    Ok(meta) => Ok(meta.size),
                    Err(object_store::Error::NotFound { .. }) => Err(RemoteError::Missing {
                        url: self.url.clone(),
                        stage: stage.to_owned(),
                        key: key.to_string(),
                    }),
                    Err(e) => Err(self.store_error("look up", &key, e)),
                }
            }))
            .buffered(self.parallel * 4)
            .try_collect()
            .await?;
            progress.set_length_bytes(sizes.iter().sum());
            futures::stream::iter(transfers.iter().map(|t| self.download(t, progress)))
                .buffer_unordered(self.parallel)
                .try_fold(Moved::default(), |mut sum, one| async move {
                    sum += one;
                    Ok(sum)
                })
                .await
        })
    }

    /// Streams one object to its local path, hashing as it writes.
    async fn download(
        &self,
        transfer: &Transfer,
        progress: &dyn Progress,
    ) -> Result<Moved, RemoteError> {
        let key = self.file_key(&transfer.hash);
        let path = &transfer.local;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| RemoteError::io("create directory", parent, e))?;
        }
        let found = self
            .store
            .get(&key)
            .await
            .map_err(|e| self.store_error("read", &key, e))?;
        let mut stream = found.into_stream();
        let mut file = File::create(path).map_err(|e| RemoteError::io("write", path, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.store_error("read", &key, e))?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| RemoteError::io("write", path, e))?;
            bytes += chunk.len() as u64;
            progress.inc(chunk.len() as u64);
        }
        let found = hasher.finalize().to_hex().to_string();
        if found != transfer.hash {
            // Content-addressed: bytes under the wrong name are wrong for everyone who reads them.
            let _ = self.store.delete(&key).await;
            return Err(RemoteError::Corrupt {
                url: self.url.clone(),
                key: key.to_string(),
                expected: transfer.hash.clone(),
                found,
            });
        }
        Ok(Moved {
            files: 1,
            bytes,
            skipped: 0,
        })
    }
}

/// The files under `dir`, following symlinks, as (`/`-separated relative path, path), sorted by
/// relative path as [`dir_hash`] wants them.
fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, RemoteError> {
    let mut found = Vec::new();
    collect_files(dir, "", &mut found).map_err(|e| RemoteError::io("list", dir, e))?;
    let mut files: Vec<(String, PathBuf)> = found.into_iter().map(|f| (f.rel, f.path)).collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Whether `text` is a blake3 content hash as textrec writes them: 64 lowercase hex digits.
fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `dir` joined with a listing's relative path, or `None` if the path would leave `dir`.
fn safe_join(dir: &Path, rel: &str) -> Option<PathBuf> {
    let mut path = dir.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\\') {
            return None;
        }
        path.push(part);
    }
    Some(path)
}
