//! One module per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<()>`.
//! Shared between commands: [`progress`] (the training bar or log lines), [`UsageError`],
//! `--device` ([`DEVICE_HELP`]) and [`load_model_on`].

pub mod account;
pub mod audit;
pub mod bench;
pub mod bench_generate;
pub mod bench_peer;
pub mod bench_selection;
pub mod bench_synthetic;
pub mod bench_utility;
pub mod data;
pub mod eval;
pub mod fetch_assets;
pub mod generate;
pub mod inspect;
pub mod ledger;
pub mod progress;
pub mod run;
pub mod train;

use std::path::Path;

use anyhow::Context;
use dpselft_model::{DeviceSpec, Model};

/// The help of `--device`, on every command that runs a model.
pub const DEVICE_HELP: &str = "Where the models run: `cpu`, or a CUDA GPU `cuda` / `cuda:N` \
    (a binary built with scripts/build-cuda). Results do not depend on it beyond float \
    rounding: the DP noise is drawn on the host from the run's seeded stream";

/// Loads the model at `path` (resolved by `fetch_assets::resolve_model`) on `device`.
pub fn load_model_on(path: &Path, device: DeviceSpec) -> anyhow::Result<Model> {
    Model::load_on(path, device).with_context(|| format!("loading {}", path.display()))
}

/// An invalid value on the command line: reported like clap's own errors, with exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
