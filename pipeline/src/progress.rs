//! How stages report progress and how a run reports stage events: indicatif bars on a terminal,
//! plain lines otherwise (CI logs, pipes), nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{StageReport, StageStatus};

/// Progress of one running stage. Cheap to call often.
pub trait Progress: Send + Sync {
    /// Sets the number of work units (items, bytes, steps) the stage will do.
    fn set_length(&self, len: u64);
    /// Like [`Progress::set_length`], for work counted in bytes (transfers): shown as bytes and
    /// bytes per second.
    fn set_length_bytes(&self, len: u64) {
        self.set_length(len);
    }
    fn inc(&self, delta: u64);
    /// A short status, e.g. `loss 0.41`.
    fn set_message(&self, message: String);
    /// Something the user should read even though the stage goes on (a skipped input, a
    /// replaced cache entry).
    fn warn(&self, message: &str);
}

/// Receives the events of a run.
pub trait Reporter: Send + Sync {
    fn stage_started(&self, stage: &str, reason: &str) -> Arc<dyn Progress>;
    fn stage_finished(&self, report: &StageReport);
    /// A warning or notice that is not tied to one stage.
    fn notice(&self, message: &str);
}

/// Output style of [`TerminalReporter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Bars when stderr is a terminal, plain lines when it is not.
    Normal,
    /// Only failures.
    Quiet,
}

/// The reporter the CLI uses; writes to stderr so that stdout stays free for `--json`.
#[derive(Debug)]
pub struct TerminalReporter {
    bars: Option<MultiProgress>,
    verbosity: Verbosity,
}

impl TerminalReporter {
    pub fn new(verbosity: Verbosity) -> Self {
        let bars = (verbosity == Verbosity::Normal && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        TerminalReporter { bars, verbosity }
    }

    fn line(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                // Printing through the MultiProgress keeps bars from tearing.
                let _ = bars.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

impl Reporter for TerminalReporter {
    fn stage_started(&self, stage: &str, reason: &str) -> Arc<dyn Progress> {
        if self.verbosity == Verbosity::Quiet {
            return Arc::new(NoProgress);
        }
        match &self.bars {
            Some(bars) => {
                let bar = bars.add(ProgressBar::no_length());
                bar.set_style(spinner_style());
                bar.set_prefix(stage.to_owned());
                bar.set_message(reason.to_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                Arc::new(BarProgress {
                    bar,
                    stage: stage.to_owned(),
                })
            }
            None => {
                self.line(&format!("[{stage}] running: {reason}"));
                Arc::new(LineProgress {
                    stage: stage.to_owned(),
                    log: ProgressLog::from_env(&format!("[{stage}]")),
                })
            }
        }
    }

    fn stage_finished(&self, report: &StageReport) {
        let quiet = self.verbosity == Verbosity::Quiet;
        let text = match report.status {
            StageStatus::Ran if !quiet => {
                format!("[{}] ran in {:.2}s", report.name, report.seconds)
            }
            StageStatus::Cached if !quiet => format!("[{}] cached: {}", report.name, report.reason),
            StageStatus::Pulled if !quiet => {
                format!(
                    "[{}] {} in {:.2}s",
                    report.name, report.reason, report.seconds
                )
            }
            StageStatus::Skipped if !quiet => {
                format!("[{}] skipped: {}", report.name, report.reason)
            }
            StageStatus::WouldRun if !quiet => {
                format!("[{}] would run: {}", report.name, report.reason)
            }
            StageStatus::Failed => format!("[{}] FAILED: {}", report.name, report.reason),
            _ => return,
        };
        self.line(&text);
    }

    fn notice(&self, message: &str) {
        self.line(&format!("note: {message}"));
    }
}

/// Until a stage says how much work it has: a spinner, the elapsed time and why it runs.
fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{prefix}] {elapsed_precise} {msg}")
        .expect("static template is valid")
}

/// Once it has: a bar with position, rate and ETA.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{prefix}] {elapsed_precise} {wide_bar} {pos}/{len} {per_sec} eta {eta} {msg}",
    )
    .expect("static template is valid")
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{prefix}] {elapsed_precise} {wide_bar} {binary_bytes}/{binary_total_bytes} \
         {binary_bytes_per_sec} eta {eta} {msg}",
    )
    .expect("static template is valid")
}

struct BarProgress {
    bar: ProgressBar,
    stage: String,
}

impl Progress for BarProgress {
    fn set_length(&self, len: u64) {
        if self.bar.length().is_none() {
            self.bar.set_style(bar_style());
            self.bar.set_message(String::new());
        }
        self.bar.set_length(len);
    }
    fn set_length_bytes(&self, len: u64) {
        self.bar.set_style(bytes_style());
        self.bar.set_message(String::new());
        self.bar.set_length(len);
    }
    fn inc(&self, delta: u64) {
        self.bar.inc(delta);
    }
    fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }
    fn warn(&self, message: &str) {
        self.bar
            .println(format!("[{}] warning: {message}", self.stage));
    }
}

/// Plain output (not a terminal): a progress line now and then, and every warning.
struct LineProgress {
    stage: String,
    log: ProgressLog,
}

impl Progress for LineProgress {
    fn set_length(&self, len: u64) {
        self.log.set_length(len);
    }
    fn set_length_bytes(&self, len: u64) {
        self.log.set_length(len);
        self.log.lock().bytes = true;
    }
    fn inc(&self, delta: u64) {
        self.log.inc(delta);
    }
    fn set_message(&self, message: String) {
        self.log.set_message(message);
    }
    fn warn(&self, message: &str) {
        eprintln!("[{}] warning: {message}", self.stage);
    }
}

/// The environment variable that sets [`ProgressLog`]'s interval, in seconds.
pub const PROGRESS_INTERVAL_ENV: &str = "TEXTREC_PROGRESS_INTERVAL";

/// Progress as plain lines on stderr, for logs that no one watches live (CI, `nohup`, Slurm):
/// a bar there would print nothing between a stage's first and last line. A line comes every
/// `interval`, and also when another 5% is done but no sooner than `interval / 10` after the
/// last one, so a fast stage logs a few lines and a 90-minute one a steady trickle, as
/// Lightning and DVC do in logs.
#[derive(Debug)]
pub struct ProgressLog {
    label: String,
    interval: Duration,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    started: Instant,
    last_line: Instant,
    len: Option<u64>,
    pos: u64,
    message: String,
    /// Whether the units are bytes (shown as MiB and MiB/s).
    bytes: bool,
    /// How many 5% steps were done when the last line was printed.
    steps_logged: u64,
}

impl ProgressLog {
    pub fn new(label: &str, interval: Duration) -> ProgressLog {
        let now = Instant::now();
        ProgressLog {
            label: label.to_owned(),
            interval,
            state: Mutex::new(LogState {
                started: now,
                last_line: now,
                len: None,
                pos: 0,
                message: String::new(),
                bytes: false,
                steps_logged: 0,
            }),
        }
    }

    /// Every 30 s, or every [`PROGRESS_INTERVAL_ENV`] seconds where that is set (0: every step).
    pub fn from_env(label: &str) -> ProgressLog {
        let seconds = std::env::var(PROGRESS_INTERVAL_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(30.0);
        ProgressLog::new(label, Duration::from_secs_f64(seconds))
    }

    pub fn set_length(&self, len: u64) {
        self.lock().len = Some(len);
    }

    pub fn set_message(&self, message: String) {
        self.lock().message = message;
    }

    /// Counts `delta` more units done and prints a line if one is due.
    pub fn inc(&self, delta: u64) {
        if let Some(line) = self.inc_at(delta, Instant::now()) {
            eprintln!("{line}");
        }
    }

    /// [`ProgressLog::inc`] at a given time; returns the line due, if any.
    pub fn inc_at(&self, delta: u64, now: Instant) -> Option<String> {
        if delta == 0 {
            return None;
        }
        let mut state = self.lock();
        state.pos += delta;
        let since_last = now.saturating_duration_since(state.last_line);
        let steps = match state.len {
            Some(len) if len > 0 => state.pos.min(len) * 20 / len,
            _ => 0,
        };
        let due = since_last >= self.interval
            || (steps > state.steps_logged && since_last >= self.interval / 10);
        if !due {
            return None;
        }
        state.last_line = now;
        state.steps_logged = steps;
        Some(self.render(&state, now))
    }

    fn render(&self, state: &LogState, now: Instant) -> String {
        let elapsed = now.saturating_duration_since(state.started).as_secs_f64();
        let rate = if elapsed > 0.0 {
            state.pos as f64 / elapsed
        } else {
            0.0
        };
        let mut line = format!("{} ", self.label);
        if state.bytes {
            const MIB: f64 = (1 << 20) as f64;
            let done = state.pos as f64 / MIB;
            let total = state
                .len
                .map_or(String::new(), |l| format!("/{:.1}", l as f64 / MIB));
            line.push_str(&format!("{done:.1}{total} MiB, {:.1} MiB/s", rate / MIB));
        } else {
            match state.len {
                Some(len) if len > 0 => {
                    let percent = state.pos.min(len) * 100 / len;
                    line.push_str(&format!("{}/{len} ({percent}%), {rate:.2}/s", state.pos));
                    if rate > 0.0 && state.pos < len {
                        let eta = (len - state.pos) as f64 / rate;
                        line.push_str(&format!(", eta {}", clock(eta)));
                    }
                }
                _ => line.push_str(&format!("{} done, {rate:.2}/s", state.pos)),
            }
        }
        line.push_str(&format!(", elapsed {}", clock(elapsed)));
        if !state.message.is_empty() {
            line.push_str(&format!(", {}", state.message));
        }
        line
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `1h02m03s`, `4m05s`, `6s`: short enough for a log line, exact enough for an ETA.
fn clock(seconds: f64) -> String {
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

impl Drop for BarProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Progress sink for quiet runs, plain output and tests.
#[derive(Debug, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_length(&self, _len: u64) {}
    fn inc(&self, _delta: u64) {}
    fn set_message(&self, _message: String) {}
    fn warn(&self, _message: &str) {}
}

/// A reporter that reports nothing; for library users and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilentReporter;

impl Reporter for SilentReporter {
    fn stage_started(&self, _stage: &str, _reason: &str) -> Arc<dyn Progress> {
        Arc::new(NoProgress)
    }
    fn stage_finished(&self, _report: &StageReport) {}
    fn notice(&self, _message: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_comes_every_interval_and_at_each_5_percent_but_not_in_a_burst() {
        let log = ProgressLog::new("[train]", Duration::from_secs(30));
        let t0 = log.lock().started;
        let at = |s: u64| t0 + Duration::from_secs(s);
        log.set_length(1000);
        log.set_message("loss 0.41".into());
        // 1% after 1 s: nothing to say yet.
        assert_eq!(log.inc_at(10, at(1)), None);
        // 5% reached, but only 2 s after the start: too soon for a line.
        assert_eq!(log.inc_at(40, at(2)), None);
        // 3 s after the last line (interval / 10) with a 5% step pending: a line.
        let line = log.inc_at(1, at(3)).expect("a line at the 5% step");
        assert_eq!(
            line,
            "[train] 51/1000 (5%), 17.00/s, eta 56s, elapsed 3s, loss 0.41"
        );
        // No new 5% step and not 30 s yet: quiet.
        assert_eq!(log.inc_at(1, at(20)), None);
        // 30 s after the last line: a line even without a new step.
        let line = log.inc_at(1, at(33)).expect("a line every interval");
        assert!(line.starts_with("[train] 53/1000 (5%)"), "{line}");
        assert!(line.contains("elapsed 33s"), "{line}");
    }

    #[test]
    fn a_log_line_without_a_known_length_counts_what_is_done() {
        let log = ProgressLog::new("transcribe:", Duration::from_secs(30));
        let t0 = log.lock().started;
        assert_eq!(log.inc_at(3, t0 + Duration::from_secs(29)), None);
        let line = log
            .inc_at(3, t0 + Duration::from_secs(3750))
            .expect("a line after the interval");
        assert_eq!(line, "transcribe: 6 done, 0.00/s, elapsed 1h02m30s");
    }

    #[test]
    fn a_zero_interval_logs_every_step() {
        let log = ProgressLog::new("[s]", Duration::ZERO);
        let now = Instant::now();
        log.set_length(2);
        assert!(log.inc_at(1, now).is_some());
        assert!(log.inc_at(1, now).is_some());
    }
}
