//! `pipeline.lock`: what each stage last ran with and produced. YAML with stable ordering (so it
//! diffs well in git), written atomically after every stage that ran.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::hash::ContentHash;

const LOCK_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub schema: u32,
    /// By stage name.
    pub stages: BTreeMap<String, LockedStage>,
}

/// The record of one successful stage run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedStage {
    pub kind: String,
    pub kind_version: u32,
    /// Hash of kind, kind version, params and every dep's content: the cache key.
    pub key: ContentHash,
    pub params: Value,
    pub deps: BTreeMap<String, ContentHash>,
    pub outs: BTreeMap<String, ContentHash>,
    /// Numbers from the stage's metrics files, flattened (`a.b: 0.5`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    pub seconds: f64,
    /// The engine that wrote the record, e.g. `textrec-pipeline 0.1.0`.
    pub tool: String,
}

impl LockFile {
    /// Reads a lock file; a missing one is empty, a corrupt one is an error (never silently reset:
    /// it is the record of what was produced).
    pub fn load(path: &Path) -> Result<LockFile, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => LockFile::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile {
                schema: LOCK_SCHEMA,
                stages: BTreeMap::new(),
            }),
            Err(e) => Err(Error::io("read lock file", path, e)),
        }
    }

    /// Parses lock text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<LockFile, Error> {
        let lock: LockFile = serde_saphyr::from_str(text).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            reason: e.without_snippet().to_string(),
        })?;
        if lock.schema != LOCK_SCHEMA {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: format!("schema {} is not the supported {LOCK_SCHEMA}", lock.schema),
            });
        }
        Ok(lock)
    }

    pub fn to_yaml(&self) -> String {
        let body = serde_saphyr::to_string(self).expect("lock data always serialises");
        format!(
            "# Written by textrec's pipeline engine. Do not edit; commit it with the pipeline.\n{body}"
        )
    }

    pub fn save(&self, path: &Path) -> Result<(), Error> {
        crate::fsutil::write_atomic(path, self.to_yaml().as_bytes())
            .map_err(|e| Error::io("write lock file", path, e))
    }
}

/// Flattens the numbers of a metrics JSON document into `a.b.c → value`.
pub fn flatten_metrics(value: &Value, prefix: &str, out: &mut BTreeMap<String, f64>) {
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_owned(), x);
            }
        }
        Value::Bool(b) => {
            out.insert(prefix.to_owned(), f64::from(u8::from(*b)));
        }
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_metrics(v, &key, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lock_round_trips_and_serialises_in_stable_order() {
        let stage = |key: &str| LockedStage {
            kind: "shell".into(),
            kind_version: 1,
            key: key.into(),
            params: json!({"z": 1, "a": {"y": [1, 2], "b": "x"}}),
            deps: BTreeMap::from([("b".into(), "h2".into()), ("a".into(), "h1".into())]),
            outs: BTreeMap::from([("out".into(), "h3".into())]),
            metrics: BTreeMap::from([("acc".into(), 0.5)]),
            seconds: 1.25,
            tool: "textrec-pipeline 0.1.0".into(),
        };
        let lock = LockFile {
            schema: LOCK_SCHEMA,
            stages: BTreeMap::from([("zeta".into(), stage("k1")), ("alpha".into(), stage("k2"))]),
        };
        let text = lock.to_yaml();
        assert!(text.find("alpha:").unwrap() < text.find("zeta:").unwrap());
        let params_at = text.find("params:").unwrap();
        assert!(text[params_at..].find("a:").unwrap() < text[params_at..].find("z:").unwrap());
        assert_eq!(LockFile::parse(Path::new("x.lock"), &text).unwrap(), lock);
        assert_eq!(lock.to_yaml(), text, "serialisation is deterministic");
    }

    #[test]
    fn corrupt_lock_is_an_error_naming_the_file() {
        let err = LockFile::parse(Path::new("p.lock"), "schema: [").unwrap_err();
        assert!(err.to_string().contains("p.lock is corrupt"), "{err}");
    }

    #[test]
    fn metrics_flatten_to_dotted_keys() {
        let mut out = BTreeMap::new();
        flatten_metrics(
            &json!({"acc": 0.9, "per": {"a": 1, "b": "x"}, "ok": true}),
            "",
            &mut out,
        );
        assert_eq!(
            out,
            BTreeMap::from([
                ("acc".into(), 0.9),
                ("ok".into(), 1.0),
                ("per.a".into(), 1.0)
            ])
        );
    }
}
