//! `metrics show` / `metrics diff`: the numbers stages declared, as recorded in lock files.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::error::Error;
use crate::lock::LockFile;

/// Stage → metric → value, for the stages that declared metrics.
pub type MetricTable = BTreeMap<String, BTreeMap<String, f64>>;

pub fn table(lock: &LockFile) -> MetricTable {
    lock.stages
        .iter()
        .filter(|(_, s)| !s.metrics.is_empty())
        .map(|(name, s)| (name.clone(), s.metrics.clone()))
        .collect()
}

/// One row of `metrics diff`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricChange {
    pub stage: String,
    pub metric: String,
    pub old: Option<f64>,
    pub new: Option<f64>,
}

impl MetricChange {
    pub fn delta(&self) -> Option<f64> {
        Some(self.new? - self.old?)
    }
}

/// Every metric present in either table, with both values.
pub fn diff(old: &MetricTable, new: &MetricTable) -> Vec<MetricChange> {
    let mut rows = BTreeMap::new();
    for (side, table) in [(0, old), (1, new)] {
        for (stage, metrics) in table {
            for (metric, value) in metrics {
                let row: &mut [Option<f64>; 2] =
                    rows.entry((stage.clone(), metric.clone())).or_default();
                row[side] = Some(*value);
            }
        }
    }
    rows.into_iter()
        .map(|((stage, metric), [old, new])| MetricChange {
            stage,
            metric,
            old,
            new,
        })
        .collect()
}

/// Reads the lock to compare against: a lock file path if one exists there, else a git revision
/// of `lock_path` (e.g. `HEAD`, `main~3`, a tag).
pub fn baseline(lock_path: &Path, against: &str) -> Result<LockFile, Error> {
    let as_file = Path::new(against);
    if as_file.is_file() {
        return LockFile::load(as_file);
    }
    let dir = match lock_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = lock_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let git_error = |reason: String| Error::GitShow {
        rev: against.to_owned(),
        path: lock_path.to_path_buf(),
        reason,
    };
    // A revision starting with `-` would reach git as an option (`--output=FILE` writes a file);
    // refuse it, and mark the end of the options all the same.
    if against.starts_with('-') {
        return Err(git_error(
            "a revision cannot start with `-` (and no lock file has that name)".to_owned(),
        ));
    }
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .arg("show")
        .arg("--end-of-options")
        .arg(format!("{against}:./{name}"))
        .output()
        .map_err(|e| git_error(format!("cannot run git: {e}")))?;
    if !output.status.success() {
        return Err(git_error(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    LockFile::parse(&Path::new(against).join(&name), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lists_changed_new_and_dropped_metrics() {
        let old = MetricTable::from([(
            "eval".into(),
            BTreeMap::from([("acc".into(), 0.8), ("gone".into(), 1.0)]),
        )]);
        let new = MetricTable::from([(
            "eval".into(),
            BTreeMap::from([("acc".into(), 0.9), ("cer".into(), 0.1)]),
        )]);
        let rows = diff(&old, &new);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].metric, "acc");
        assert!((rows[0].delta().unwrap() - 0.1).abs() < 1e-12);
        assert_eq!((rows[1].old, rows[1].new), (None, Some(0.1)));
        assert_eq!((rows[2].old, rows[2].new), (Some(1.0), None));
    }
}
