//! dpselft's benchmark harnesses, kept out of the libraries that users link: the experiment code
//! measures the pipeline (`dpselft-selft`) and the engine (`dpselft-dp`), it is not part of them.
//!
//! - [`grid`] — the privacy–utility grid: dp-selft against the baselines at the same (ε, δ),
//!   resumable, one line of `results.jsonl` per (method, ε, seed) cell; [`methods`] reads the
//!   committed per-method settings; [`cell`] runs one cell under the one learning-rate rule;
//!   [`table`] writes `table.md` and `chart.svg`.
//! - [`selection`] — the selection's choice against the oracle: every candidate DP-fine-tuned
//!   and scored on held-out private training data (`dpselft bench selection`).
//! - [`synthetic`] — how much of the task the synthetic data carry: a fixed probe trained on
//!   them and scored on the real test split (`dpselft bench synthetic`).
//! - [`step_cost`] — the cost of one DP step against a non-private step on the same trainable
//!   set (`dpselft bench dp-overhead`); [`peer`] — the same steps in PyTorch and Opacus
//!   beside it (`--peer`).
//! - [`generation`] — tokens/s of batched, KV-cached sampling, ours and (`--peer`) Hugging
//!   Face transformers' on the same weights (`dpselft bench generate`).
//! - [`device_parity`] — whether a GPU computes the DP step's norms, clipped sums and updates as
//!   the CPU does (`dpselft bench device --device cuda:N`).

#![deny(missing_docs)]

pub mod cell;
pub mod device_parity;
pub mod generation;
pub mod grid;
pub mod methods;
pub mod peer;
pub mod selection;
pub mod step_cost;
pub mod synthetic;
pub mod table;

pub use grid::{CellResult, UtilityBench, run_grid};
pub use methods::{Method, MethodKind, MethodsFile, SelftVariant};

use std::path::Path;

use dpselft_selft::error::{Result, SelftError, io_err};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The rows of a JSONL results file (none if it does not exist yet); `what` names a row in
/// errors, which give the file and line.
pub fn read_rows<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| SelftError::Format {
                path: path.to_path_buf(),
                message: format!("line {}: not a {what}: {e}", i + 1),
            })
        })
        .collect()
}

/// Writes `rows` as JSONL, atomically (a results file is whole or as it was).
pub fn write_rows<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text += &serde_json::to_string(r)
            .map_err(|e| SelftError::Config(format!("serialising a result: {e}")))?;
        text.push('\n');
    }
    write_text(path, &text)
}

/// Writes a text file atomically.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    dpselft_fsio::write_bytes_atomic(path, text.as_bytes()).map_err(|e| io_err(path, e))
}
