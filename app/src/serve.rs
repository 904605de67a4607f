//! `textrec serve`: the transcriber behind HTTP. `POST /v1/transcribe` (raw image body or
//! multipart) → JSON, with the page read as PNG on request (`?preview=png`); `GET /healthz`;
//! `GET /metrics` (Prometheus text: requests, latency, errors, and the input images' size and
//! brightness for drift watching); a demo page at `/`.
//!
//! Limits protect the host: body bytes (413), image pixels (413), pages transcribed at once plus
//! a bounded queue (503 with `Retry-After` past it), a per-request timeout (504), connections
//! served at once, and deadlines for a request's head and body (408). Requests from other sites
//! are refused: a Host that is not this server when it listens on loopback (421), an Origin that
//! is another site (403). SIGTERM or Ctrl-C stops accepting, lets requests in flight finish for
//! at most `--shutdown-timeout`, then exits 0. With `--token-file`, transcribing takes the token
//! (401 without it); health, metrics and the page stay open.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use textrec_recognizer::infer::{PageImageError, PageTranscriber, decode_page, to_json};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

const DEMO_PAGE: &str = include_str!("demo.html");

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the input-size histogram, in megapixels.
const MEGAPIXEL_BUCKETS: [f64; 6] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0];
/// Upper bounds of the input mean-brightness histogram (0 black … 255 white).
const BRIGHTNESS_BUCKETS: [f64; 6] = [64.0, 128.0, 160.0, 192.0, 224.0, 255.0];

#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    pub max_pixels: u64,
    /// Pages transcribed at once.
    pub workers: usize,
    /// Requests that may wait for a worker; the next gets 503.
    pub queue: usize,
    pub timeout: Duration,
    /// Connections served at once; past it, new ones wait to be accepted. Each may hold an
    /// upload of up to `max_body_bytes` in memory, so this bounds the memory uploads take.
    pub max_connections: u32,
    /// Time a connection has to send a request's head (on a kept-alive connection, counted
    /// from the previous response), so that sockets opened and left silent are closed.
    pub header_timeout: Duration,
    /// Time a request has to send its body once its head is in (408 past it), so that a
    /// trickling upload cannot hold its connection, or a shutdown, forever.
    pub body_timeout: Duration,
    /// On SIGTERM, how long the requests in flight have to finish before their connections are
    /// closed.
    pub shutdown_timeout: Duration,
    /// Host names accepted besides the loopback ones when listening on loopback: the public
    /// name a reverse proxy in front forwards.
    pub allowed_hosts: Vec<String>,
    /// The token `POST /v1/transcribe` requires, when one was given.
    pub token: Option<Token>,
}

/// The secret a client must present as `Authorization: Bearer <token>` to transcribe
/// (`--token-file`). Its `Debug` hides it, so that it never reaches a log.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hidden)")
    }
}

/// Longest token file read: a file longer than this is the wrong file, not a token.
const MAX_TOKEN_BYTES: usize = 4096;

impl Token {
    /// The token in the file at `path`: its one line, less the line break. Refused: a file
    /// that other users can open (as ssh refuses such a key: the token would be theirs too),
    /// an empty one, and one with characters a header cannot carry intact.
    pub fn read(path: &Path) -> anyhow::Result<Token> {
        let shown = path.display();
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read the token file {shown}"))?;
        let metadata = file
            .metadata()
            .with_context(|| format!("cannot read the token file {shown}"))?;
        if metadata.is_dir() {
            anyhow::bail!("the token file {shown} is a directory");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode();
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "the token file {shown} is open to other users (mode {:03o}); \
                     make it yours alone: chmod 600 {shown}",
                    mode & 0o777
                );
            }
        }
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the token file {shown}"))?;
        if bytes.len() > MAX_TOKEN_BYTES {
            anyhow::bail!(
                "the token file {shown} is longer than {MAX_TOKEN_BYTES} bytes: is it the right file?"
            );
        }
        let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            anyhow::bail!("the token file {shown} is empty");
        }
        if !line.iter().all(u8::is_ascii_graphic) {
            anyhow::bail!(
                "the token file {shown} must hold one line of visible ASCII (no spaces, no \
                 other characters): a header carries nothing else intact"
            );
        }
        Ok(Token(line.to_vec()))
    }

    /// The 401 for a request that does not present this token, `None` for one that does.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let credentials = headers.get(header::AUTHORIZATION);
        let presented = credentials.and_then(|value| bearer_token(value.as_bytes()));
        if presented.is_some_and(|token| same_secret(token, &self.0)) {
            return None;
        }
        // RFC 6750 3.1: no error code for a request that sent no credentials at all.
        let (challenge, message) = match credentials {
            None => (
                "Bearer realm=\"textrec\"",
                "this server needs a token: send `Authorization: Bearer <token>` \
                 (on the demo page, fill in the token field)",
            ),
            Some(_) => (
                "Bearer realm=\"textrec\", error=\"invalid_token\"",
                "the token is wrong, or not sent as `Authorization: Bearer <token>`",
            ),
        };
        let mut response = error(StatusCode::UNAUTHORIZED, message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        Some(response)
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 11.1).
fn bearer_token(credentials: &[u8]) -> Option<&[u8]> {
    let space = credentials.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = credentials.split_at(space);
    let token = rest.trim_ascii_start();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// Whether `presented` is `secret`, in a time that depends on the lengths only: an early exit at
/// the first wrong byte would tell a guesser, by the answer's timing, how much was right.
fn same_secret(presented: &[u8], secret: &[u8]) -> bool {
    if presented.len() != secret.len() {
        return false;
    }
    let difference = presented
        .iter()
        .zip(secret)
        .fold(0u8, |acc, (a, b)| std::hint::black_box(acc | (a ^ b)));
    difference == 0
}

/// Who may transcribe now, who may wait, and who is turned away.
#[derive(Debug)]
struct Admission {
    /// Owned permits, so that a slot can move into the transcription job and stay taken until
    /// the job ends, whatever becomes of the request.
    workers: Arc<Semaphore>,
    worker_count: usize,
    waiting: AtomicUsize,
    queue: usize,
}

/// A request's place in the queue, given back when dropped: also when the request is
/// cancelled while it waits (its client went away), which no code after the wait would see.
#[derive(Debug)]
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    fn new(workers: usize, queue: usize) -> Admission {
        Admission {
            workers: Arc::new(Semaphore::new(workers.max(1))),
            worker_count: workers.max(1),
            waiting: AtomicUsize::new(0),
            queue,
        }
    }

    /// A worker slot, after waiting in the queue if there is room in it; `None` when the queue
    /// is full.
    async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.workers.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w < self.queue).then_some(w + 1)
            })
            .ok()?;
        let _place = QueuePlace(&self.waiting);
        self.workers.clone().acquire_owned().await.ok()
    }

    /// Worker slots taken: by transcriptions running, also those whose request has gone.
    fn busy(&self) -> usize {
        self.worker_count - self.workers.available_permits()
    }
}

/// A Prometheus histogram: cumulative counts per upper bound, sum and count.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    fn observe(&self, value: f64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (bound, count) in self.bounds.iter().zip(counts.0.iter_mut()) {
            if value <= *bound {
                *count += 1;
            }
        }
        counts.1 += value;
        counts.2 += 1;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (bound, count) in self.bounds.iter().zip(&counts.0) {
            out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {count}\n"));
        }
        out.push_str(&format!(
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}\n",
            counts.2, counts.1, counts.2
        ));
    }
}

#[derive(Debug)]
struct Metrics {
    /// By response status: 200, 400, 401, 408, 413, 503, 504, 500.
    responses: Mutex<std::collections::BTreeMap<u16, u64>>,
    latency: Histogram,
    megapixels: Histogram,
    brightness: Histogram,
    lines: AtomicU64,
    /// Connections closed for sending no request head within `--header-timeout`.
    header_timeouts: AtomicU64,
    /// Requests refused for their Host header (421 or 400).
    refused_host: AtomicU64,
    /// Requests refused for their Origin header (403).
    refused_origin: AtomicU64,
}

impl Metrics {
    fn count(&self, status: StatusCode) {
        *self
            .responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status.as_u16())
            .or_default() += 1;
    }

    fn render(&self, admission: &Admission, connections_open: usize) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP textrec_requests_total Transcription requests by response status.\n\
             # TYPE textrec_requests_total counter\n",
        );
        let responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        let mut errors = 0;
        for (status, count) in responses.iter() {
            out.push_str(&format!(
                "textrec_requests_total{{status=\"{status}\"}} {count}\n"
            ));
            if *status >= 400 {
                errors += count;
            }
        }
        out.push_str(&format!(
            "# HELP textrec_errors_total Transcription requests answered with an error.\n\
             # TYPE textrec_errors_total counter\ntextrec_errors_total {errors}\n"
        ));
        self.latency.render(
            "textrec_request_duration_seconds",
            "Time from request to response, transcriptions only.",
            &mut out,
        );
        self.megapixels.render(
            "textrec_input_megapixels",
            "Size of the images received (drift: a new scanner, photos instead of scans).",
            &mut out,
        );
        self.brightness.render(
            "textrec_input_mean_brightness",
            "Mean gray level of the images received (drift: darker paper, other lighting).",
            &mut out,
        );
        out.push_str(&format!(
            "# HELP textrec_lines_total Lines transcribed.\n# TYPE textrec_lines_total counter\n\
             textrec_lines_total {}\n\
             # HELP textrec_queue_waiting Requests waiting for a worker.\n# TYPE textrec_queue_waiting gauge\n\
             textrec_queue_waiting {}\n\
             # HELP textrec_workers_busy Workers transcribing, for requests answered 504 too.\n\
             # TYPE textrec_workers_busy gauge\ntextrec_workers_busy {}\n\
             # HELP textrec_connections_open Connections being served.\n\
             # TYPE textrec_connections_open gauge\ntextrec_connections_open {}\n\
             # HELP textrec_header_timeouts_total Connections closed for sending no request head in time.\n\
             # TYPE textrec_header_timeouts_total counter\ntextrec_header_timeouts_total {}\n\
             # HELP textrec_refused_total Requests refused for a Host that is not this server or an Origin that is another site.\n\
             # TYPE textrec_refused_total counter\n\
             textrec_refused_total{{reason=\"host\"}} {}\n\
             textrec_refused_total{{reason=\"origin\"}} {}\n",
            self.lines.load(Ordering::Relaxed),
            admission.waiting.load(Ordering::Relaxed),
            admission.busy(),
            connections_open,
            self.header_timeouts.load(Ordering::Relaxed),
            self.refused_host.load(Ordering::Relaxed),
            self.refused_origin.load(Ordering::Relaxed),
        ));
        out
    }
}

/// Why a request is refused as coming from another site.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// No Host header, or one that cannot be parsed (400).
    NoHost,
    /// A Host that is not this server (421): a page elsewhere whose name was re-pointed at
    /// 127.0.0.1 (DNS rebinding).
    Host(String),
    /// An Origin that is another site (403): a cross-site form post or fetch from the browser.
    Origin(String),
}

/// Which requests come from this server's own pages, not from other sites in the user's browser.
#[derive(Debug)]
struct Site {
    /// The port listened on, when that is on loopback: the Host must then be a loopback name or
    /// address with this port. Elsewhere the server is reached by names it cannot know (DNS, a
    /// proxy), and the Host is not checked.
    loopback_port: Option<u16>,
    /// Names accepted too, with any port (`--allow-host`).
    allowed_hosts: Vec<String>,
}

impl Site {
    fn new(local: SocketAddr, allowed_hosts: &[String]) -> Site {
        Site {
            loopback_port: local.ip().is_loopback().then_some(local.port()),
            allowed_hosts: allowed_hosts.to_vec(),
        }
    }

    fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        // An absolute-form target names the host itself and overrides Host (RFC 9112 3.2.2).
        let host = match uri.authority() {
            Some(authority) => Some(authority.clone()),
            None => headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Authority>().ok()),
        };
        if let Some(port) = self.loopback_port {
            let Some(host) = &host else {
                return Err(Refusal::NoHost);
            };
            let allowed = self
                .allowed_hosts
                .iter()
                .any(|name| name.eq_ignore_ascii_case(host.host()));
            let loopback = is_loopback_name(host.host()) && host.port_u16().unwrap_or(80) == port;
            if !(allowed || loopback) {
                return Err(Refusal::Host(host.to_string()));
            }
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let origin = origin
            .to_str()
            .ok()
            .and_then(|v| v.parse::<Uri>().ok())
            .and_then(|uri| Some((uri.scheme()?.clone(), uri.authority()?.clone())));
        let same = match (origin, host) {
            (Some((scheme, origin)), Some(host)) => {
                let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
                origin.host().eq_ignore_ascii_case(host.host())
                    && origin.port_u16().unwrap_or(default_port)
                        == host.port_u16().unwrap_or(default_port)
            }
            // `Origin: null` (a sandboxed frame, a local file) or no Host to compare with.
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(Refusal::Origin(text))
        }
    }
}

/// The warning for a server that anyone who can reach it may use: listening beyond loopback
/// with no token. `None` on loopback, or with a token.
fn open_server_warning(local: SocketAddr, token: Option<&Token>) -> Option<String> {
    (!local.ip().is_loopback() && token.is_none()).then(|| {
        format!(
            "warning: listening on {local} without --token-file: anyone who can reach this \
             address can use the API. Give a token (and TLS, through a reverse proxy in front; \
             see the README), or listen on 127.0.0.1"
        )
    })
}

/// `localhost` or a loopback address (`127.0.0.1`, `[::1]`): names a page elsewhere cannot take.
fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

struct AppState {
    transcriber: Arc<PageTranscriber>,
    admission: Admission,
    metrics: Metrics,
    site: Site,
    /// A permit per connection served; what is taken is the number open.
    connections: Arc<Semaphore>,
    options: Options,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("model", &self.transcriber.model_version)
            .finish()
    }
}

type Shared = Arc<AppState>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"error": message.into(), "status": status.as_u16()})),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if status == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body may still come: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The image bytes: the raw body, or the first file part of a multipart form.
async fn image_bytes(request: Request) -> Result<Bytes, Response> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let too_large = |e: &dyn std::fmt::Display| {
        let text = e.to_string();
        if text.contains("length limit") || text.contains("too large") {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is over the size limit",
            )
        } else {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {text}"),
            )
        }
    };
    if !is_multipart {
        return Bytes::from_request(request, &())
            .await
            .map_err(|e| too_large(&e.body_text()));
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
    while let Some(field) = form.next_field().await.map_err(|e| too_large(&e))? {
        if field.file_name().is_some() || field.name() == Some("image") {
            return field.bytes().await.map_err(|e| too_large(&e));
        }
    }
    Err(error(
        StatusCode::BAD_REQUEST,
        "the form has no file field (send the image as `image`)",
    ))
}

async fn transcribe(State(state): State<Shared>, request: Request) -> Response {
    let started = Instant::now();
    // Before the body is read: an upload without the token is never taken in.
    let refusal = state
        .options
        .token
        .as_ref()
        .and_then(|token| token.refusal(request.headers()));
    let response = match refusal {
        Some(refusal) => refusal,
        None => transcribe_inner(&state, request, started).await,
    };
    state.metrics.count(response.status());
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Whether the request asks for the page as PNG (`?preview=png`): the demo page draws the line
/// boxes on it when the browser cannot show the upload itself (a TIFF, outside Safari). It comes
/// in the same answer, not from an endpoint of its own, so that the page is uploaded, admitted
/// and decoded once, and the boxes are drawn on the very pixels they were found in. The error
/// says what is wrong with the query.
fn preview_asked(uri: &Uri) -> Result<bool, String> {
    let mut asked = false;
    for pair in uri.query().unwrap_or_default().split('&') {
        let (key, kind) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "preview" {
            if kind != "png" {
                return Err(format!("no preview of kind {kind:?}: ask for preview=png"));
            }
            asked = true;
        }
    }
    Ok(asked)
}

/// `bytes` in base64 with padding (RFC 4648 section 4), for a `data:` URL.
fn base64(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |group, (i, &b)| group | u32::from(b) << (16 - 8 * i));
        for digit in 0..4 {
            if digit <= chunk.len() {
                out.push(char::from(
                    DIGITS[(group >> (18 - 6 * digit)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn transcribe_inner(state: &Shared, request: Request, started: Instant) -> Response {
    let preview = match preview_asked(request.uri()) {
        Ok(preview) => preview,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let body_timeout = state.options.body_timeout;
    let bytes = match tokio::time::timeout(body_timeout, image_bytes(request)).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {:.1} s",
                    body_timeout.as_secs_f64()
                ),
            );
        }
        Ok(Err(response)) => return response,
        Ok(Ok(bytes)) => bytes,
    };
    let Some(permit) = state.admission.enter().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "every worker is busy and the queue is full; retry shortly",
        );
    };
    let transcriber = state.transcriber.clone();
    let max_pixels = state.options.max_pixels;
    /// Why a transcription produced no JSON: the client's image, or our side.
    enum Failure {
        Image(PageImageError),
        Internal(String),
    }
    let work = tokio::task::spawn_blocking(move || {
        // The worker slot is the job's: it stays taken until the work ends, also when the
        // request has been answered 504 or its client has gone (the handler is then dropped).
        let _permit = permit;
        let page = decode_page(&bytes, max_pixels).map_err(Failure::Image)?;
        let pixels = page.as_raw();
        let brightness =
            pixels.iter().map(|&p| u64::from(p)).sum::<u64>() as f64 / pixels.len().max(1) as f64;
        let megapixels = pixels.len() as f64 / 1e6;
        let transcript = transcriber
            .transcribe(&page)
            .map_err(|e| Failure::Internal(e.to_string()))?;
        let png = if preview {
            let mut png = std::io::Cursor::new(Vec::new());
            page.write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| Failure::Internal(format!("cannot encode the preview: {e}")))?;
            Some(png.into_inner())
        } else {
            None
        };
        Ok((transcript, brightness, megapixels, png))
    });
    let (transcript, brightness, megapixels, png) =
        match tokio::time::timeout(state.options.timeout, work).await {
            Err(_) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "transcription took longer than {:.1} s",
                        state.options.timeout.as_secs_f64()
                    ),
                );
            }
            Ok(Err(_)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            Ok(Ok(Err(Failure::Internal(reason)))) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, reason);
            }
            Ok(Ok(Err(Failure::Image(e @ PageImageError::TooLarge { .. })))) => {
                return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
            }
            Ok(Ok(Err(Failure::Image(e)))) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            Ok(Ok(Ok(done))) => done,
        };
    state.metrics.brightness.observe(brightness);
    state.metrics.megapixels.observe(megapixels);
    state
        .metrics
        .lines
        .fetch_add(transcript.lines.len() as u64, Ordering::Relaxed);
    let mut body = to_json(&transcript, "upload", &state.transcriber.model_version);
    if let Some(png) = png {
        body["preview"] = json!(format!("data:image/png;base64,{}", base64(&png)));
    }
    body["ms"]["total"] = json!(started.elapsed().as_secs_f64() * 1e3);
    axum::Json(body).into_response()
}

async fn healthz(State(state): State<Shared>) -> Response {
    let transcriber = &state.transcriber;
    axum::Json(json!({
        "status": "ok",
        "model": transcriber.model_version,
        "line_detector": transcriber.detector.kind(),
        "decoder": transcriber.recognizer.decoder_name(),
    }))
    .into_response()
}

async fn metrics(State(state): State<Shared>) -> Response {
    let connections_open =
        state.options.max_connections as usize - state.connections.available_permits();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&state.admission, connections_open),
    )
        .into_response()
}

/// Lets through only requests from this server's own pages or from non-browser clients.
async fn same_site_only(State(state): State<Shared>, request: Request, next: Next) -> Response {
    match state.site.check(request.uri(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let (counter, status, message) = match refusal {
                Refusal::NoHost => (
                    &state.metrics.refused_host,
                    StatusCode::BAD_REQUEST,
                    "the request has no Host header naming this server".to_owned(),
                ),
                Refusal::Host(host) => (
                    &state.metrics.refused_host,
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "the Host {host} is not this server (it listens on loopback; \
                         --allow-host NAME accepts a name a proxy forwards)"
                    ),
                ),
                Refusal::Origin(origin) => (
                    &state.metrics.refused_origin,
                    StatusCode::FORBIDDEN,
                    format!("requests from another site ({origin}) are refused"),
                ),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            error(status, message)
        }
    }
}

fn router(state: Shared) -> Router {
    let limit = state.options.max_body_bytes;
    Router::new()
        .route("/", get(|| async { Html(DEMO_PAGE) }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/transcribe", post(transcribe))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            same_site_only,
        ))
        .with_state(state)
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when the
/// future is first polled: a SIGTERM that came in between would kill the process instead.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        [
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ]
    };
    async move {
        #[cfg(unix)]
        {
            let [terminate, interrupt] = signals;
            tokio::select! {
                () = received(terminate) => {},
                () = received(interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down: finishing the requests in flight");
    }
}

/// Waits for the signal `handler` was installed for; forever when it could not be installed.
#[cfg(unix)]
async fn received(handler: std::io::Result<tokio::signal::unix::Signal>) {
    match handler {
        Ok(mut handler) => {
            handler.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

/// Serves until SIGTERM or Ctrl-C.
pub fn run(transcriber: PageTranscriber, options: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(options.workers.max(1) + 2)
        .enable_all()
        .build()
        .context("cannot start the server runtime")?;
    let served = runtime.block_on(serve(transcriber, options));
    // Every request has its answer, or its connection was closed past the shutdown timeout; a
    // transcription still running for a request answered 504 is not waited for.
    runtime.shutdown_background();
    served
}

/// Accepts connections, each served on its own task, up to `--max-connections` at once; on the
/// signal, stops accepting and drains.
async fn serve(transcriber: PageTranscriber, options: Options) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("cannot listen on {}", options.addr))?;
    let local = listener.local_addr()?;
    let connections = Arc::new(Semaphore::new(options.max_connections as usize));
    let state = Arc::new(AppState {
        transcriber: Arc::new(transcriber),
        admission: Admission::new(options.workers, options.queue),
        metrics: Metrics {
            responses: Mutex::default(),
            latency: Histogram::new(&LATENCY_BUCKETS),
            megapixels: Histogram::new(&MEGAPIXEL_BUCKETS),
            brightness: Histogram::new(&BRIGHTNESS_BUCKETS),
            lines: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            refused_host: AtomicU64::new(0),
            refused_origin: AtomicU64::new(0),
        },
        site: Site::new(local, &options.allowed_hosts),
        connections: connections.clone(),
        options,
    });
    let mut signal = pin!(shutdown_signal());
    eprintln!(
        "textrec serve: model {} listening on http://{local}/ (demo page at /, API at POST /v1/transcribe)",
        state.transcriber.model_version
    );
    if let Some(warning) = open_server_warning(local, state.options.token.as_ref()) {
        eprintln!("{warning}");
    }
    let app = router(state.clone());
    let mut http = http1::Builder::new();
    // hyper enforces the head's deadline only with a timer to measure it.
    http.timer(TokioTimer::new())
        .header_read_timeout(state.options.header_timeout);
    let (stop, stopping) = watch::channel(false);
    loop {
        // The slot is taken before accepting: past the limit, connections wait in the listen
        // backlog instead of each buffering an upload.
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => slot.context("the connection limit closed")?,
            () = &mut signal => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("cannot accept a connection: {e}");
                    // Out of file descriptors, say: give the open connections time to close.
                    if !is_connection_error(&e) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut signal => break,
        };
        tokio::spawn(serve_connection(
            stream,
            slot,
            http.clone(),
            app.clone(),
            stopping.clone(),
            state.clone(),
        ));
    }
    drop(listener);
    stop.send_replace(true);
    let every_slot = state.options.max_connections;
    let drained = tokio::time::timeout(
        state.options.shutdown_timeout,
        connections.acquire_many(every_slot),
    )
    .await;
    if drained.is_err() {
        eprintln!(
            "closing {} connection(s) still busy after {:.1} s",
            every_slot as usize - connections.available_permits(),
            state.options.shutdown_timeout.as_secs_f64()
        );
    }
    eprintln!("stopped");
    Ok(())
}

/// An error of the one connection being accepted (the client gave up), not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection's requests until it closes; on shutdown, finishes the request in
/// flight and closes. `_slot` is its place under `--max-connections`, given back at the end.
async fn serve_connection(
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    http: http1::Builder,
    app: Router,
    stopping: watch::Receiver<bool>,
    state: Shared,
) {
    let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut connection = pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stopped(stopping) => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    // The socket closes when `connection` is dropped, on return, so after this count: a client
    // that sees its connection closed finds it counted in /metrics.
    if served.is_err_and(|e| e.is_timeout()) {
        state
            .metrics
            .header_timeouts
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Resolves once the server is shutting down.
async fn stopped(mut stopping: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means the server is stopping.
    let _ = stopping.wait_for(|&stop| stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_workers_and_the_queue_requests_are_turned_away() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let admission = Arc::new(Admission::new(1, 1));
            let first = admission.enter().await.expect("a free worker");
            let waiter = {
                let admission = admission.clone();
                tokio::spawn(async move { admission.enter().await.is_some() })
            };
            while admission.waiting.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            assert!(admission.enter().await.is_none(), "queue of 1 is full");
            drop(first);
            assert!(waiter.await.unwrap(), "the queued request gets the worker");
        });
    }

    #[test]
    fn a_request_cancelled_while_queued_gives_its_place_back() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let admission = Arc::new(Admission::new(1, 1));
            let _worker = admission.enter().await.expect("a free worker");
            let queued = {
                let admission = admission.clone();
                tokio::spawn(async move { admission.enter().await.is_some() })
            };
            while admission.waiting.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            // Its client went away: hyper drops the request's future.
            queued.abort();
            assert!(queued.await.unwrap_err().is_cancelled());
            assert_eq!(admission.waiting.load(Ordering::SeqCst), 0);
            let next = {
                let admission = admission.clone();
                tokio::spawn(async move { admission.enter().await.is_some() })
            };
            while admission.waiting.load(Ordering::SeqCst) == 0 {
                assert!(!next.is_finished(), "turned away from an empty queue");
                tokio::task::yield_now().await;
            }
        });
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_str(value).unwrap()))
            .collect()
    }

    #[test]
    fn origins_are_compared_with_default_ports_and_hosts_checked_only_on_loopback() {
        let anywhere = Site::new("0.0.0.0:8080".parse().unwrap(), &[]);
        let path: Uri = "/v1/transcribe".parse().unwrap();
        let public = headers(&[(header::HOST, "ocr.example")]);
        assert_eq!(anywhere.check(&path, &public), Ok(()));
        let same = headers(&[
            (header::HOST, "ocr.example"),
            (header::ORIGIN, "https://OCR.example:443"),
        ]);
        assert_eq!(anywhere.check(&path, &same), Ok(()));
        let other_port = headers(&[
            (header::HOST, "ocr.example"),
            (header::ORIGIN, "http://ocr.example:8443"),
        ]);
        assert!(matches!(
            anywhere.check(&path, &other_port),
            Err(Refusal::Origin(_))
        ));

        let loopback = Site::new("127.0.0.1:8080".parse().unwrap(), &[]);
        // An absolute-form target names the host, whatever Host says.
        let absolute: Uri = "http://localhost:8080/healthz".parse().unwrap();
        let forged = headers(&[(header::HOST, "attacker.example")]);
        assert_eq!(loopback.check(&absolute, &forged), Ok(()));
        assert_eq!(
            loopback.check(&path, &forged),
            Err(Refusal::Host("attacker.example".to_owned()))
        );
        let default_port = headers(&[(header::HOST, "127.0.0.1")]);
        assert!(matches!(
            loopback.check(&path, &default_port),
            Err(Refusal::Host(_))
        ));
    }

    #[test]
    fn only_a_server_beyond_loopback_without_a_token_is_warned_about() {
        let token = Token(b"s3cret".to_vec());
        let warning = open_server_warning("0.0.0.0:8080".parse().unwrap(), None)
            .expect("no warning for 0.0.0.0 without a token");
        assert!(
            warning.contains("0.0.0.0:8080 without --token-file"),
            "{warning}"
        );
        for (addr, token) in [("[::]:8080", None), ("192.168.1.20:8080", None)] {
            assert!(
                open_server_warning(addr.parse().unwrap(), token).is_some(),
                "{addr}"
            );
        }
        for (addr, token) in [
            ("0.0.0.0:8080", Some(&token)),
            ("127.0.0.1:8080", None),
            ("[::1]:8080", None),
        ] {
            assert_eq!(
                open_server_warning(addr.parse().unwrap(), token),
                None,
                "{addr}"
            );
        }
    }

    #[test]
    fn only_the_same_bearer_token_is_admitted() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        for other in [&b"s3creT"[..], b"s3cre", b"s3crets", b""] {
            assert!(!same_secret(other, b"s3cret"), "{other:?}");
        }
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER   abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
    }

    #[test]
    fn base64_is_rfc_4648s() {
        for (bytes, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(bytes.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn histograms_render_cumulative_prometheus_buckets() {
        let histogram = Histogram::new(&LATENCY_BUCKETS);
        histogram.observe(0.02);
        histogram.observe(3.0);
        let mut out = String::new();
        histogram.render("t", "help", &mut out);
        assert!(out.contains("t_bucket{le=\"0.01\"} 0\n"));
        assert!(out.contains("t_bucket{le=\"0.025\"} 1\n"));
        assert!(out.contains("t_bucket{le=\"5\"} 2\n"));
        assert!(out.contains("t_bucket{le=\"+Inf\"} 2\nt_sum 3.02\nt_count 2\n"));
    }
}
