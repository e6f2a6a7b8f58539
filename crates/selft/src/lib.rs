//! DP-SelFT: differentially private selective fine-tuning (docs/design.md, §1).
//!
//! 1. [`synth`] — a DP synthetic data set from the private split (spends ε_syn);
//! 2. [`select`] — noise-matched layer selection on the synthetic data only (free);
//! 3. [`pipeline`] — DP fine-tuning of the chosen blocks on the private split, σ calibrated so
//!    that everything in the run's ledger together meets the target (ε, δ); the run folder and
//!    its [`report`].
//!
//! The privacy–utility benchmark against the baselines is in `dpselft-bench`.
//!
//! Private and synthetic data are different types ([`data`]): selection cannot be handed the
//! private split.

#![deny(missing_docs)]

pub mod data;
pub mod error;
pub mod pipeline;
pub mod report;
mod resume;
pub mod run_config;
pub mod select;
pub mod synth;

pub use data::{PrivateData, SynthManifest, SyntheticData};
pub use error::{Result, SelftError};
pub use pipeline::{ResolvedPaths, RunConfig, RunMetrics, Scale, run};
pub use select::{Candidates, Perturbation, RateSearch, SelectConfig, Selection, select};
pub use synth::{GeneratorConfig, SynthReport, SynthSection, Synthesizer, synthesize};

use std::path::Path;

use dpselft_dp::Observer;

/// Receives the pipeline's progress (the CLI draws bars from it). As an [`Observer`] it also
/// receives the DP trainer's steps. Every method defaults to nothing.
pub trait Progress: Observer {
    /// A line of narration.
    fn message(&mut self, _text: &str) {}
    /// A counted task of `total` units begins.
    fn stage(&mut self, _name: &str, _total: u64) {}
    /// `n` more units are done.
    fn advance(&mut self, _n: u64) {}
    /// The counted task is over.
    fn finish(&mut self) {}
}

impl Progress for () {}

/// Writes `value` as pretty JSON, atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| SelftError::Config(format!("serialising {}: {e}", path.display())))?;
    text.push('\n');
    dpselft_fsio::write_bytes_atomic(path, text.as_bytes()).map_err(|e| error::io_err(path, e))
}
