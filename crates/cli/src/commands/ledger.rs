//! `dpselft ledger`: a run's privacy ledger, checked. Every entry is validated and the totals
//! are recomputed by the ledger's accountants, not read from the file, so what it prints is what
//! the recorded mechanisms spend.
//!
//! ```text
//! dpselft ledger runs/x            # or runs/x/ledger.json
//! dpselft ledger runs/x --json
//! ```

use std::path::PathBuf;

use anyhow::Context;
use dpselft_privacy::PrivacyLedger;
use serde_json::json;

use super::progress::fmt_eps;

/// Arguments of `dpselft ledger`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder (its `ledger.json` is read) or a ledger file.
    pub path: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `dpselft ledger`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let file = if args.path.is_dir() {
        args.path.join("ledger.json")
    } else {
        args.path.clone()
    };
    let ledger =
        PrivacyLedger::open(&file).with_context(|| format!("reading {}", file.display()))?;
    let spent = ledger.spent();
    let lost = ledger.lost_epsilon()?;
    if args.json {
        let value = json!({
            "path": file,
            "delta": ledger.delta(),
            "epsilon": spent.epsilon(),
            "lost_epsilon": lost,
            "spent": spent,
            "entries": ledger.entries(),
        });
        return Ok(crate::output::emit_json(&value, true)?);
    }
    println!("ledger   {}", file.display());
    println!(
        "spent    ε = {} at δ = {:e} ({})",
        fmt_eps(spent.epsilon()),
        ledger.delta(),
        spent.guarantee
    );
    if lost > 0.0 {
        println!("lost     ε = {lost:.4} of it by interrupted attempts");
    }
    println!(
        "\n{:<24} {:>10} {:>10} {:>8} {:>6}",
        "stage", "σ", "q", "steps", "lost"
    );
    for e in ledger.entries() {
        println!(
            "{:<24} {:>10.4} {:>10.5} {:>8} {:>6}",
            e.stage.to_string(),
            e.noise_multiplier,
            e.sampling_rate,
            e.steps,
            if e.lost { "yes" } else { "" }
        );
    }
    Ok(())
}
