//! `metrics.jsonl`: one JSON line per logged step or evaluation, `{"kind": ..., ...}`; with
//! `log_private_metrics`, also `private_metrics.jsonl`.
//!
//! Privacy: what the trainer writes to `metrics.jsonl` is private-safe (step, schedule, ε spent,
//! time; evaluations of the held-out set); `private_metrics.jsonl` holds unprivatised values
//! (training loss, realised batch size) for the operator only.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{DpError, Result, io_err};

/// A run's `metrics.jsonl`.
#[derive(Debug, Clone)]
pub(crate) struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// The log of the run folder `run_dir` (nothing is created yet).
    pub(crate) fn in_dir(run_dir: &Path) -> Self {
        Self {
            path: run_dir.join("metrics.jsonl"),
        }
    }

    /// `private_metrics.jsonl` of the run folder `run_dir`.
    pub(crate) fn private_in_dir(run_dir: &Path) -> Self {
        Self {
            path: run_dir.join("private_metrics.jsonl"),
        }
    }

    /// Starts an empty log.
    pub(crate) fn create(&self) -> Result<()> {
        std::fs::File::create(&self.path).map_err(|e| io_err(&self.path, e))?;
        Ok(())
    }

    /// Appends one JSON line `{"kind": kind, ...value}`.
    pub(crate) fn append<T: Serialize>(&self, kind: &str, value: &T) -> Result<()> {
        let mut v = serde_json::to_value(value)
            .map_err(|e| DpError::State(format!("serialising metrics: {e}")))?;
        if let serde_json::Value::Object(map) = &mut v {
            map.insert("kind".into(), kind.into());
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io_err(&self.path, e))?;
        writeln!(f, "{v}").map_err(|e| io_err(&self.path, e))
    }

    /// Drops the lines of steps after `step` (on resumption they will run again).
    pub(crate) fn truncate_after(&self, step: u64) -> Result<()> {
        let path = &self.path;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(path, e)),
        };
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        dpselft_fsio::write_bytes_atomic(path, kept.as_bytes()).map_err(|e| io_err(path, e))
    }
}
