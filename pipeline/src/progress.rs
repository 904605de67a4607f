//! How stages report progress and how a run reports stage events: indicatif bars on a terminal,
//! plain lines otherwise (CI logs, pipes), nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::run::{StageReport, StageStatus};

/// Progress of one running stage. Cheap to call often.
pub trait Progress: Send + Sync {
    /// Sets the number of work units (items, bytes, steps) the stage will do.
    fn set_length(&self, len: u64);
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

/// Plain output (not a terminal): no bar, but warnings still reach stderr.
struct LineProgress {
    stage: String,
}

impl Progress for LineProgress {
    fn set_length(&self, _len: u64) {}
    fn inc(&self, _delta: u64) {}
    fn set_message(&self, _message: String) {}
    fn warn(&self, message: &str) {
        eprintln!("[{}] warning: {message}", self.stage);
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
