//! `cargo xtask bench serve`: a load test of `textrec serve` on loopback. N clients post the same
//! image back to back for a fixed time, once with a single line and once with a whole page; the
//! report is requests/s, p50/p99 latency, errors, and the server's resident memory over the run
//! (it must stay flat: no per-request leak).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use image::GrayImage;
use serde_json::{Value, json};
use textrec_recognizer::data::{Dataset, Split};
use textrec_recognizer::infer::ProjectionDetector;

#[derive(Debug, Args)]
pub struct ServeBench {
    /// A release bundle for the server.
    #[arg(long)]
    model: PathBuf,
    /// A pages dataset; its first test page is the page image, that page's first detected line
    /// the line image.
    #[arg(long)]
    pages: PathBuf,
    /// Concurrent clients, each posting back to back.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of load per image.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The server's `--workers` (inference threads) [default: the number of cores].
    #[arg(long)]
    workers: Option<usize>,
    /// The `textrec` binary [default: next to this xtask binary, built if missing].
    #[arg(long)]
    textrec: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// A `textrec serve` child process on an ephemeral loopback port.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(textrec: &Path, model: &Path, workers: usize, clients: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(textrec)
            .args(["serve", "--addr", "127.0.0.1:0", "--model"])
            .arg(model)
            .args(["--workers", &workers.to_string()])
            // Every client may wait: the test measures throughput, not admission control.
            .args(["--queue", &clients.max(1).to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", textrec.display()))?;
        let mut stderr = BufReader::new(child.stderr.take().context("no stderr")?);
        let mut first = String::new();
        stderr.read_line(&mut first)?;
        let Some(url) = first
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        else {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            let _ = child.kill();
            bail!("the server did not start: {first}{rest}");
        };
        let url = url.trim_end_matches('/').to_owned();
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(Server { child, url })
    }

    /// Resident set size in MB, from /proc.
    fn rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One image's run: every request's latency, the failures, and memory samples.
struct Load {
    latencies: Vec<Duration>,
    errors: Vec<String>,
    seconds: f64,
    rss_mb: Vec<f64>,
}

fn load(server: &Server, body: &[u8], clients: usize, seconds: u64) -> Load {
    let url = format!("{}/v1/transcribe", server.url);
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let mut rss_mb = Vec::new();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build()
                    .into();
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let result = agent
                        .post(&url)
                        .header("Content-Type", "image/png")
                        .send(body);
                    match result {
                        Ok(mut response) if response.status() == 200 => {
                            let _ = response.body_mut().read_to_vec();
                            mine.push(sent.elapsed());
                        }
                        Ok(mut response) => {
                            let status = response.status();
                            let text = response.body_mut().read_to_string().unwrap_or_default();
                            errors.lock().unwrap().push(format!("{status}: {text}"));
                        }
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                }
                latencies.lock().unwrap().extend(mine);
            });
        }
        let deadline = started + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            rss_mb.extend(server.rss_mb());
            std::thread::sleep(Duration::from_millis(250));
        }
        stop.store(true, Ordering::Relaxed);
    });
    Load {
        latencies: latencies.into_inner().unwrap(),
        errors: errors.into_inner().unwrap(),
        seconds: started.elapsed().as_secs_f64(),
        rss_mb,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank].as_secs_f64() * 1e3
}

fn summarise(load: &Load) -> Value {
    let mut sorted = load.latencies.clone();
    sorted.sort();
    let rss = &load.rss_mb;
    // Memory is "flat" when the last quarter of the run sits where the second quarter did:
    // warm-up allocations are done by then, a leak keeps growing.
    let quarter = |q: usize| -> f64 {
        let n = rss.len();
        let part = &rss[n * q / 4..n * (q + 1) / 4];
        part.iter().sum::<f64>() / part.len() as f64
    };
    let (second, last) = if rss.len() >= 4 {
        (quarter(1), quarter(3))
    } else {
        (f64::NAN, f64::NAN)
    };
    json!({
        "requests": load.latencies.len(),
        "errors": load.errors.len(),
        "first_error": load.errors.first(),
        "requests_per_second": load.latencies.len() as f64 / load.seconds,
        "p50_ms": percentile(&sorted, 50.0),
        "p99_ms": percentile(&sorted, 99.0),
        "rss_mb_start": rss.first(),
        "rss_mb_peak": rss.iter().cloned().fold(f64::NAN, f64::max),
        "rss_mb_second_quarter": second,
        "rss_mb_last_quarter": last,
    })
}

fn png(image: &GrayImage) -> anyhow::Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png)?;
    Ok(bytes.into_inner())
}

/// The first test page, and its first detected line cropped out.
fn test_images(pages: &Path) -> anyhow::Result<(GrayImage, GrayImage)> {
    let dataset = Dataset::open(pages)?;
    let sample = dataset
        .samples(Split::Test)
        .next()
        .with_context(|| format!("{} has no test pages", pages.display()))??;
    let page = GrayImage::from_raw(
        u32::from(sample.width),
        u32::from(sample.height),
        sample.pixels,
    )
    .context("a page's pixels do not match its size")?;
    let boxes = ProjectionDetector::default().detect(&page);
    let first = boxes
        .first()
        .context("no line detected on the first test page")?;
    let line = image::imageops::crop_imm(&page, first.x0, first.y0, first.width(), first.height())
        .to_image();
    Ok((page, line))
}

fn textrec_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let beside = exe.with_file_name("textrec");
    if !beside.exists() {
        eprintln!("==> cargo build -p textrec");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "textrec"])
            .current_dir(crate::workspace_root()?)
            .status()?;
        ensure!(status.success(), "`cargo build -p textrec` {status}");
    }
    Ok(beside)
}

pub fn serve(args: &ServeBench) -> anyhow::Result<ExitCode> {
    ensure!(
        args.clients > 0 && args.seconds > 0,
        "need clients and seconds"
    );
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (page, line) = test_images(&args.pages)?;
    let textrec = textrec_binary(args.textrec.as_deref())?;
    let server = Server::start(&textrec, &args.model, workers, args.clients)?;
    let mut report = serde_json::Map::new();
    for (name, image) in [("line", &line), ("page", &page)] {
        let body = png(image)?;
        let mut result = summarise(&load(&server, &body, args.clients, args.seconds));
        result["image"] = json!(format!("{}×{}", image.width(), image.height()));
        report.insert(name.into(), result);
    }
    let report = json!({
        "clients": args.clients,
        "workers": workers,
        "seconds": args.seconds,
        "results": report,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "textrec serve, {} clients, {workers} workers, {} s each, loopback",
            args.clients, args.seconds
        );
        println!(
            "{:<6} {:>10} {:>9} {:>8} {:>8} {:>7} {:>22}",
            "image", "size", "req/s", "p50 ms", "p99 ms", "errors", "RSS MB start/peak/end"
        );
        for name in ["line", "page"] {
            let r = &report["results"][name];
            println!(
                "{name:<6} {:>10} {:>9.1} {:>8.1} {:>8.1} {:>7} {:>8.0}/{:.0}/{:.0}",
                r["image"].as_str().unwrap_or(""),
                r["requests_per_second"].as_f64().unwrap_or(f64::NAN),
                r["p50_ms"].as_f64().unwrap_or(f64::NAN),
                r["p99_ms"].as_f64().unwrap_or(f64::NAN),
                r["errors"],
                r["rss_mb_start"].as_f64().unwrap_or(f64::NAN),
                r["rss_mb_peak"].as_f64().unwrap_or(f64::NAN),
                r["rss_mb_last_quarter"].as_f64().unwrap_or(f64::NAN),
            );
            if let Some(error) = r["first_error"].as_str() {
                println!("       first error: {error}");
            }
        }
    }
    let errors = ["line", "page"]
        .iter()
        .map(|n| report["results"][n]["errors"].as_u64().unwrap_or(0))
        .sum::<u64>();
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
