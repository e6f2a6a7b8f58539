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

// Keep freed pages instead of handing them back to the OS after 10 s: a training step frees and
// reallocates the same large buffers every step, and refaulting them cost ~12% of a MiniLM step
// (page faults and page clearing in `perf`; `bench step`: 4.9 → 4.25 s for head + last 2). The
// resident size stays at the run's peak, which it reaches anyway. `_RJEM_MALLOC_CONF` still
// overrides it (the memory probes of `bench step` do).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&u8> = Some(&b"dirty_decay_ms:-1,muzzy_decay_ms:-1\0"[0]);

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
