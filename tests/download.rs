//! The download cache against a real HTTP server on 127.0.0.1 started by the test: success,
//! resume after a dropped connection, wrong checksum, 404, a stalled server, size limits, the
//! mirror fallback and a corrupt cache entry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use textrec_recognizer::data::DataError;
use textrec_recognizer::data::download::{
    DownloadCache, FetchOptions, Origin, Source, Unpack, unpack,
};

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
        _ => send(&mut stream, "404 Not Found", b"no", 2),
    }
}

fn url_source(name: &str, url: String, sha256: String) -> Source {
    Source {
        name: name.into(),
        origin: Origin::Url(url),
        sha256: Some(sha256),
        unpack: Unpack::Auto,
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
        mirror: Some(mirror.path().to_owned()),
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
    };
    let (file, fetched) = cache.fetch(&source, &quick()).unwrap();
    assert_eq!(fetched.via, "file");
    let out = work.path().join("out");
    unpack(&source, &file, &out).unwrap();
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
