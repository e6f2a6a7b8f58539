//! One module per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<()>`.
//! Shared between commands: [`progress`] (the training bar or log lines) and [`UsageError`].

pub mod account;
pub mod audit;
pub mod bench;
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

/// An invalid value on the command line: reported like clap's own errors, with exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
