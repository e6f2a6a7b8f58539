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
// resident size stays at the run's peak, which it reaches anyway.
//
// `thp:always` for the same reason, a second path to the same faults: candle allocates most
// buffers zeroed (`vec![0; n]`), and jemalloc zeroes a recycled large extent by
// `madvise(MADV_DONTNEED)` (the kernel then clears every page again on first touch, with a TLB
// shootdown on the other core) unless its mappings use transparent huge pages, where it
// `memset`s instead. `strace` showed 245 such calls on 24 MiB attention buffers in 6 MiniLM
// steps, ~330,000 page faults a step; with `thp:always` a step faults ~300 times, and head + last
// 2 went from 2.95 to 2.35 s (non-private) and 3.7 to 3.0 s (DP) in one `bench step` session.
// Where the kernel's THP mode is `never` this changes nothing. `_RJEM_MALLOC_CONF` still
// overrides it (the memory probes of `bench step` set their decay there).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&u8> = Some(&b"dirty_decay_ms:-1,muzzy_decay_ms:-1,thp:always\0"[0]);

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
