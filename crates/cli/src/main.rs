//! `dpselft`: differentially private selective fine-tuning of transformer language models.
//!
//! The binary only parses arguments and runs the command (`lib.rs`); every command lives in its
//! own module under `commands/`.

use std::process::ExitCode;

use clap::Parser;
use dpselft::{Cli, error_chain, execute, is_usage_error};

// glibc malloc made training steps swing 2x in time on the 2-core machines (page faults took ~35%
// of cycles); jemalloc was both the fastest and the steadiest allocator measured.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match execute(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            // Invalid arguments exit with 2, like clap's own usage errors; everything else with 1.
            if is_usage_error(&err) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
