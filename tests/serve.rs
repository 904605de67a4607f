//! `textrec serve` as a client sees it: the JSON API (raw and multipart uploads, limits, errors),
//! health and Prometheus metrics, a clean exit on SIGTERM, the protections against slow, silent
//! or surplus connections and against requests from other sites, the bearer token of
//! `--token-file`, the PNG of a TIFF upload, and the demo page driven in headless Chromium
//! through WebDriver: uploads (a PNG, a TIFF) whose transcription and boxes must appear on it.

mod pages;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat};
use pages::{page, png, save, write_bundle};
use serde_json::{Value, json};

/// A running `textrec serve`, stopped when dropped; its stderr is collected.
struct Server {
    child: Child,
    url: String,
    /// Reads the rest of stderr, to its end when the process exits, and returns it.
    stderr_reader: Option<std::thread::JoinHandle<String>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let bundle = write_bundle(dir.path());
        let mut child = Command::new(env!("CARGO_BIN_EXE_textrec"))
            .args(["serve", "--addr", "127.0.0.1:0", "--model"])
            .arg(&bundle)
            .args(extra)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        let url = first
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .trim_end_matches('/')
            .to_owned();
        let stderr_reader = std::thread::spawn(move || {
            let _ = stderr.read_to_string(&mut first);
            first
        });
        Server {
            child,
            url,
            stderr_reader: Some(stderr_reader),
            _dir: dir,
        }
    }
}

impl Server {
    /// `127.0.0.1:PORT`.
    fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Sends SIGTERM and waits, at most 20 s, for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        exit_status(&mut self.child, Duration::from_secs(20))
            .expect("still running 20 s after SIGTERM")
    }

    /// Its whole stderr, once the process has exited.
    fn log(&mut self) -> String {
        let reader = self.stderr_reader.take().expect("the log is read once");
        reader.join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's exit status, or `None` (and the child killed) when it runs longer than `limit`.
fn exit_status(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Status and body text of a POST.
fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let (status, _, text) = post_with(url, &[("Content-Type", content_type)], body);
    (status, text)
}

/// Status, `WWW-Authenticate` (empty when there is none) and body text of a POST with these
/// headers.
fn post_with(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, String) {
    let mut request = agent().post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body).unwrap();
    let challenge = response
        .headers()
        .get("WWW-Authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let status = response.status().as_u16();
    (
        status,
        challenge,
        response.body_mut().read_to_string().unwrap(),
    )
}

fn get(url: &str) -> (u16, String) {
    let mut response = agent().get(url).call().unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// Asserts that each line appears, whole, in the server's /metrics.
fn assert_metrics(server: &Server, lines: &[&str]) {
    let (status, metrics) = get(&format!("{}/metrics", server.url));
    assert_eq!(status, 200);
    for line in lines {
        assert!(metrics.lines().any(|l| l == *line), "{line} in:\n{metrics}");
    }
}

/// A connection to the server for what no HTTP client sends (silence, a stalled body, a forged
/// Host); reads give up after 20 s.
fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.address()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// The whole answer to a raw request that asks for `Connection: close`.
fn exchange(server: &Server, request: &str) -> String {
    let mut stream = connect(server);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw answer.
fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// Reads what comes next, within `limit`: `None` when nothing does.
fn read_within(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buffer = [0u8; 4096];
    match stream.read(&mut buffer) {
        Ok(n) => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("reading: {e}"),
    }
}

fn multipart(field: &str, file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "textrec-test-boundary-7d0b";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn the_api_transcribes_uploads_refuses_bad_ones_and_counts_everything() {
    let server = Server::start(&["--max-body-bytes", "300000", "--max-pixels", "1000000"]);
    let endpoint = format!("{}/v1/transcribe", server.url);

    let (status, body) = post(&endpoint, "image/png", &png(&page(&[3, 1, 2])));
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["text"], "aaa\na\naa\n");
    assert_eq!(json["model"], "textrec-0.1.0");
    assert_eq!(json["lines"].as_array().unwrap().len(), 3);
    assert!(json["lines"][0]["box"]["x1"].as_u64().unwrap() > 0);
    assert!(json["ms"]["total"].as_f64().unwrap() > 0.0);

    let (content_type, form) = multipart("image", "page.png", &png(&page(&[2])));
    let (status, body) = post(&endpoint, &content_type, &form);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["text"],
        "aa\n"
    );

    let (status, body) = post(&endpoint, "image/png", b"not an image at all");
    assert_eq!(status, 400);
    assert!(body.contains("not an image"), "{body}");
    let (status, body) = post(&endpoint, "image/png", &vec![0u8; 400_000]);
    assert_eq!(status, 413, "{body}");
    let big = image::GrayImage::from_pixel(2000, 1000, image::Luma([255]));
    let (status, body) = post(&endpoint, "image/png", &png(&big));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("over the limit"), "{body}");

    let (status, body) = get(&format!("{}/healthz", server.url));
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    // The test bundle has no pages.json: the projection detector.
    assert_eq!(health["line_detector"], "projection", "{body}");
    assert_metrics(
        &server,
        &[
            "textrec_requests_total{status=\"200\"} 2",
            "textrec_requests_total{status=\"400\"} 1",
            "textrec_requests_total{status=\"413\"} 2",
            "textrec_errors_total 3",
            "textrec_request_duration_seconds_count 5",
            "textrec_input_megapixels_count 2",
            "textrec_input_mean_brightness_count 2",
            "textrec_lines_total 4",
            "textrec_workers_busy 0",
        ],
    );
    let (status, page_html) = get(&server.url);
    assert_eq!(status, 200);
    assert!(page_html.contains("id=\"transcription\""));
}

/// The page of a `data:image/png;base64,` URL.
fn png_of_data_url(url: &str) -> image::GrayImage {
    let encoded = url
        .strip_prefix("data:image/png;base64,")
        .unwrap_or_else(|| panic!("not a PNG data URL: {:.40}", url));
    let bytes = base64_decode(encoded);
    assert_eq!(image::guess_format(&bytes).ok(), Some(ImageFormat::Png));
    image::load_from_memory(&bytes).unwrap().to_luma8()
}

#[test]
fn a_tiff_upload_can_come_back_as_a_png_of_the_page_read() {
    let server = Server::start(&[]);
    let endpoint = format!("{}/v1/transcribe", server.url);
    let dir = tempfile::tempdir().unwrap();
    let scan = page(&[3, 1]);
    let path = dir.path().join("page.tif");
    save(
        DynamicImage::ImageLuma8(scan.clone()),
        &path,
        ImageFormat::Tiff,
    );
    let tiff = std::fs::read(&path).unwrap();

    let (status, body) = post(&format!("{endpoint}?preview=png"), "image/tiff", &tiff);
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["text"], "aaa\na\n");
    let preview = json["preview"].as_str().expect("no preview in the answer");
    let shown = png_of_data_url(preview);
    assert_eq!(shown.dimensions(), scan.dimensions());
    assert!(shown == scan, "the preview is not the page sent");

    let (status, body) = post(&endpoint, "image/tiff", &tiff);
    assert_eq!(status, 200, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert!(json.get("preview").is_none(), "a preview nobody asked for");
    let (status, body) = post(&format!("{endpoint}?preview=gif"), "image/tiff", &tiff);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("preview=png"), "{body}");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    // As soon as the server says it listens, SIGTERM is its to handle, not a kill.
    let mut fresh = Server::start(&[]);
    let status = fresh.terminate();
    assert!(status.success(), "SIGTERM right after start: {status}");
    let mut server = Server::start(&[]);
    assert_eq!(get(&format!("{}/healthz", server.url)).0, 200);
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn a_transcription_keeps_its_worker_after_its_request_times_out() {
    let server = Server::start(&["--workers", "1", "--queue", "0", "--timeout", "0.001"]);
    let endpoint = format!("{}/v1/transcribe", server.url);
    // A page long enough to read that its job outlasts the next request by far.
    let (status, body) = post(&endpoint, "image/png", &png(&page(&[30; 150])));
    assert_eq!(status, 504, "{body}");
    let (status, body) = post(&endpoint, "image/png", b"x");
    assert_eq!(
        status, 503,
        "the only worker is still transcribing the first page: {body}"
    );
    // The slot comes back when the job ends.
    let started = Instant::now();
    while !get(&format!("{}/metrics", server.url))
        .1
        .lines()
        .any(|l| l == "textrec_workers_busy 0")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker never came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = post(&endpoint, "image/png", b"x");
    assert_ne!(status, 503, "{body}");
}

#[test]
fn a_silent_connection_is_closed_after_the_header_timeout_and_counted() {
    let server = Server::start(&["--header-timeout", "1"]);
    let mut silent = connect(&server);
    let started = Instant::now();
    let read = read_within(&mut silent, Duration::from_secs(15));
    assert_eq!(read.as_deref(), Some(""), "still open after 15 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the header timeout",
        started.elapsed()
    );
    assert_metrics(&server, &["textrec_header_timeouts_total 1"]);
}

#[test]
fn past_max_connections_a_connection_waits_for_a_free_one() {
    let server = Server::start(&["--max-connections", "1", "--header-timeout", "60"]);
    let silent = connect(&server);
    let mut waiting = connect(&server);
    write!(
        waiting,
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.address()
    )
    .unwrap();
    assert_eq!(
        read_within(&mut waiting, Duration::from_millis(500)),
        None,
        "answered while the only connection slot is taken"
    );
    drop(silent);
    let answer = read_within(&mut waiting, Duration::from_secs(15)).expect("never answered");
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[test]
fn a_body_slower_than_the_body_timeout_gets_408() {
    let server = Server::start(&["--body-timeout", "1"]);
    let mut stalled = connect(&server);
    write!(
        stalled,
        "POST /v1/transcribe HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\n\
         Content-Length: 1000\r\n\r\n0123456789",
        server.address()
    )
    .unwrap();
    let answer = read_within(&mut stalled, Duration::from_secs(15)).expect("no answer in 15 s");
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_metrics(&server, &["textrec_requests_total{status=\"408\"} 1"]);
}

#[test]
fn sigterm_closes_a_stalled_upload_after_the_shutdown_timeout() {
    let mut server = Server::start(&["--shutdown-timeout", "1", "--body-timeout", "600"]);
    let mut stalled = connect(&server);
    write!(
        stalled,
        "POST /v1/transcribe HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\n\
         Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        server.address()
    )
    .unwrap();
    // 100 Continue: the handler is reading the body.
    let interim = read_within(&mut stalled, Duration::from_secs(15)).expect("no 100 Continue");
    assert_eq!(status_of(&interim), 100, "{interim}");
    stalled.write_all(b"0123456789").unwrap();
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let log = server.log();
    assert!(log.contains("closing 1 connection(s) still busy"), "{log}");
}

#[test]
fn requests_from_other_sites_are_refused_and_counted() {
    let server = Server::start(&["--allow-host", "proxy.example"]);
    let port = server.address().rsplit(':').next().unwrap().to_owned();
    let health = |host: &str| {
        let host = if host.is_empty() {
            String::new()
        } else {
            format!("Host: {host}\r\n")
        };
        status_of(&exchange(
            &server,
            &format!("GET /healthz HTTP/1.1\r\n{host}Connection: close\r\n\r\n"),
        ))
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "proxy.example".to_owned(),
    ] {
        assert_eq!(health(&host), 200, "Host: {host}");
    }
    // DNS rebinding: a page whose name now points at 127.0.0.1.
    assert_eq!(health(&format!("attacker.example:{port}")), 421);
    assert_eq!(health("127.0.0.1:1"), 421);
    assert_eq!(health(""), 400);

    let upload = |origin: &str| {
        let answer = exchange(
            &server,
            &format!(
                "POST /v1/transcribe HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\n\
                 Content-Type: image/png\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
                server.address()
            ),
        );
        (status_of(&answer), answer)
    };
    let (status, answer) = upload("http://attacker.example");
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("another site"), "{answer}");
    assert_eq!(upload("null").0, 403);
    // The server's own page: through to the handler, which finds no image.
    let (status, answer) = upload(&server.url);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("not an image"), "{answer}");

    assert_metrics(
        &server,
        &[
            "textrec_refused_total{reason=\"host\"} 3",
            "textrec_refused_total{reason=\"origin\"} 2",
        ],
    );
}

/// Exit code and stderr of a `textrec serve` that should refuse to start (killed, with code
/// `None`, if it is still running after 20 s).
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_textrec"))
        .args(["serve", "--addr", "127.0.0.1:0", "--model"])
        .arg(&bundle)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exit_status(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.and_then(|s| s.code()), stderr)
}

#[test]
fn time_limits_outside_0_to_1e9_seconds_are_usage_errors() {
    for (option, value) in [
        ("--timeout", "inf"),
        ("--timeout", "NaN"),
        ("--timeout", "0"),
        ("--timeout", "-1"),
        ("--timeout", "1e300"),
        ("--header-timeout", "0"),
        ("--body-timeout", "inf"),
        ("--shutdown-timeout", "soon"),
    ] {
        let (code, stderr) = refused_start(&[&format!("{option}={value}")]);
        assert_eq!(code, Some(2), "{option} {value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{option}")),
            "{option} {value}: {stderr}"
        );
    }
}

/// A file named `name` in `dir` holding `contents`, with permissions `mode`.
fn token_file(dir: &Path, name: &str, contents: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn with_a_token_file_transcription_needs_the_bearer_token_and_health_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "token", "s3cret-Token_1\n", 0o600);
    let server = Server::start(&["--token-file", token.to_str().unwrap()]);
    let endpoint = format!("{}/v1/transcribe", server.url);
    let image = png(&page(&[2]));
    let upload = |authorization: Option<&str>| {
        let mut headers = vec![("Content-Type", "image/png")];
        headers.extend(authorization.map(|value| ("Authorization", value)));
        post_with(&endpoint, &headers, &image)
    };

    let (status, challenge, body) = upload(None);
    assert_eq!(status, 401, "{body}");
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: {challenge}"
    );
    assert!(body.contains("Authorization: Bearer"), "{body}");
    for wrong in [
        "Bearer s3cret-Token_2",
        "Bearer s3cret-Token_",
        "Bearer s3cret-Token_1x",
        "Bearer ",
        "Basic s3cret-Token_1",
        "s3cret-Token_1",
    ] {
        let (status, challenge, body) = upload(Some(wrong));
        assert_eq!(status, 401, "Authorization: {wrong}: {body}");
        assert!(challenge.contains("invalid_token"), "{wrong}: {challenge}");
    }
    // The file's line break is not part of the token; the scheme is case-insensitive.
    for right in ["Bearer s3cret-Token_1", "bearer  s3cret-Token_1"] {
        let (status, _, body) = upload(Some(right));
        assert_eq!(status, 200, "Authorization: {right}: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["text"],
            "aa\n"
        );
    }
    // Refused before the body is read: an upload without the token is never taken in.
    let answer = exchange(
        &server,
        &format!(
            "POST /v1/transcribe HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\n\
             Content-Length: 100000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            server.address()
        ),
    );
    assert_eq!(status_of(&answer), 401, "{answer}");

    assert_eq!(get(&format!("{}/healthz", server.url)).0, 200);
    assert_eq!(get(&server.url).0, 200);
    assert_metrics(
        &server,
        &[
            "textrec_requests_total{status=\"200\"} 2",
            "textrec_requests_total{status=\"401\"} 8",
        ],
    );
}

#[test]
fn a_bad_token_file_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (dir.path().join("missing"), "cannot read the token file"),
        (token_file(dir.path(), "empty", "", 0o600), "is empty"),
        (token_file(dir.path(), "newline", "\n", 0o600), "is empty"),
        (
            token_file(dir.path(), "two-lines", "s3cret\n\n", 0o600),
            "one line of visible ASCII",
        ),
        (
            token_file(dir.path(), "spaced", "s3cret token\n", 0o600),
            "one line of visible ASCII",
        ),
        (
            token_file(dir.path(), "shared", "s3cret\n", 0o644),
            "chmod 600",
        ),
        (dir.path().to_owned(), "is a directory"),
    ];
    for (path, reason) in cases {
        let path = path.to_str().unwrap();
        let (code, stderr) = refused_start(&["--token-file", path]);
        assert_eq!(code, Some(2), "{path}: {stderr}");
        assert!(stderr.contains(path), "{path}: {stderr}");
        assert!(stderr.contains(reason), "{path}: {stderr}");
    }
}

/// A chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn webdriver(method: &str, url: &str, body: Option<Value>) -> Value {
    let agent = agent();
    let mut response = match (method, body) {
        ("POST", body) => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.unwrap_or_else(|| json!({})).to_string())
            .unwrap(),
        ("DELETE", _) => agent.delete(url).call().unwrap(),
        _ => agent.get(url).call().unwrap(),
    };
    let text = response.body_mut().read_to_string().unwrap();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert!(
        value["value"].get("error").is_none(),
        "WebDriver {method} {url}: {text}"
    );
    value["value"].clone()
}

fn start_driver() -> Driver {
    let program = find_program("chromedriver").expect(
        "chromedriver is not installed: `apt-get install chromium chromium-driver` \
         (`cargo xtask ci` installs them)",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while agent()
        .get(&format!("{}/status", driver.url))
        .call()
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    driver
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .map(value)
        .collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(chunk.len().saturating_sub(1))
        })
        .collect()
}

/// What `poll` finds, asking every 100 ms; fails after 30 s.
fn wait_for<T>(what: &str, mut poll: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = poll() {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: not there after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_demo_page_shows_the_transcription_of_an_upload_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "token", "s3cret-token\n", 0o600);
    let server = Server::start(&["--token-file", token.to_str().unwrap()]);
    let driver = start_driver();
    let chromium = find_program("chromium").expect("chromium is not installed");
    let session = webdriver(
        "POST",
        &format!("{}/session", driver.url),
        Some(json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-default-apps", "--disable-extensions", "--disable-sync",
                    "--no-first-run", "--window-size=1100,900"
                ]
            }
        }}})),
    );
    let session_url = format!(
        "{}/session/{}",
        driver.url,
        session["sessionId"].as_str().unwrap()
    );
    webdriver(
        "POST",
        &format!("{session_url}/url"),
        Some(json!({"url": format!("{}/", server.url)})),
    );
    let element = |css: &str| {
        let found = webdriver(
            "POST",
            &format!("{session_url}/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let text_of = |css: &str| {
        let text = webdriver(
            "GET",
            &format!("{session_url}/element/{}/text", element(css)),
            None,
        );
        text.as_str().unwrap_or_default().to_owned()
    };
    let type_into = |css: &str, text: &str| {
        webdriver(
            "POST",
            &format!("{session_url}/element/{}/value", element(css)),
            Some(json!({"text": text})),
        );
    };
    let canvas_width = || {
        let script = json!({"script": "return document.getElementById('page').width", "args": []});
        webdriver("POST", &format!("{session_url}/execute/sync"), Some(script))
    };
    let uploads = tempfile::tempdir().unwrap();
    let choose = |name: &str, bytes: &[u8]| {
        let file = uploads.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        type_into("#file", file.to_str().unwrap());
    };

    // Without the token the server's refusal is shown; with it typed in, the upload is read.
    choose("refused.png", &png(&page(&[1])));
    let refusal = wait_for("the refusal", || {
        Some(text_of("#status")).filter(|s| s.starts_with("Failed"))
    });
    assert!(refusal.contains("token"), "{refusal}");
    type_into("#token", "s3cret-token");
    let scan = page(&[3, 1, 2]);
    choose("page.png", &png(&scan));
    let text = wait_for("the transcription", || {
        Some(text_of("#transcription")).filter(|t| !t.is_empty())
    });
    assert_eq!(text.trim_end(), "aaa\na\naa");
    let status_line = text_of("#status");
    assert!(status_line.starts_with("3 lines"), "{status_line}");
    wait_for("the page drawn", || {
        (canvas_width() == json!(scan.width())).then_some(())
    });
    // The image is drawn with its line boxes: a red box edge where the first line starts.
    let screenshot = webdriver("GET", &format!("{session_url}/screenshot"), None);
    let bytes = base64_decode(screenshot.as_str().unwrap());
    let shot = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert!(
        shot.pixels()
            .any(|p| p.0[0] > 180 && p.0[1] < 90 && p.0[2] < 90),
        "no red line box on the page"
    );
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-page.png");
    std::fs::write(&kept, &bytes).unwrap();

    // Chromium cannot show a TIFF: the page draws the server's PNG of it, with the boxes.
    let tiff_scan = page(&[2, 2]);
    let tiff = uploads.path().join("page.tif");
    save(
        DynamicImage::ImageLuma8(tiff_scan.clone()),
        &tiff,
        ImageFormat::Tiff,
    );
    type_into("#file", tiff.to_str().unwrap());
    wait_for("the TIFF's transcription", || {
        (text_of("#transcription").trim_end() == "aa\naa").then_some(())
    });
    wait_for("the TIFF drawn", || {
        (canvas_width() == json!(tiff_scan.width())).then_some(())
    });
    let red_on_canvas = json!({"script": "const c = document.getElementById('page'); \
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
        for (let i = 0; i < d.length; i += 4) \
            if (d[i] > 180 && d[i + 1] < 90 && d[i + 2] < 90) return true; \
        return false;", "args": []});
    assert_eq!(
        webdriver(
            "POST",
            &format!("{session_url}/execute/sync"),
            Some(red_on_canvas)
        ),
        json!(true),
        "no line box drawn on the TIFF"
    );
    webdriver("DELETE", &session_url, None);
}
