//! What a run reports: each stage's outcome, as `--json` prints it and progress shows it.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageStatus {
    Ran,
    Cached,
    /// Stale here, and its outputs came from a run another machine pushed to the remote.
    Pulled,
    Failed,
    Skipped,
    /// Dry run / status: the stage is stale.
    WouldRun,
}

/// The outcome of one stage, as printed by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub name: String,
    pub status: StageStatus,
    pub seconds: f64,
    /// Why it ran, why it was skipped, or what failed.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub stages: Vec<StageReport>,
    pub ok: bool,
}
