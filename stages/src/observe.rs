//! Bridges the ML core's [`Observer`] to the engine's progress display and the stage log.

use std::fs::OpenOptions;
use std::io::Write;

use textrec_pipeline::StageContext;
use textrec_recognizer::data::Observer;

/// Progress goes to the stage's bar; warnings go to the terminal and into the stage's log.
pub struct StageObserver<'a, 'b> {
    pub ctx: &'a StageContext<'b>,
}

impl Observer for StageObserver<'_, '_> {
    fn total(&self, units: u64) {
        self.ctx.progress.set_length(units);
    }

    fn advance(&self, units: u64) {
        self.ctx.progress.inc(units);
    }

    fn warn(&self, message: &str) {
        self.ctx.progress.warn(message);
        self.log(&format!("warning: {message}"));
    }

    fn message(&self, text: &str) {
        self.ctx.progress.set_message(text.to_owned());
    }

    fn log(&self, text: &str) {
        if let Ok(mut log) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.ctx.log)
        {
            let _ = writeln!(log, "{text}");
        }
    }
}
