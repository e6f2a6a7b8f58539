//! `dpselft run --resume`: a killed run folder continues at its first unfinished stage
//! (docs/design.md, §2 "Lost attempts"). Finished stages are judged by their outputs
//! (`synth.json`, `selection.json`, `train/summary.json` with `model/`, `metrics.json`).

use std::path::Path;
use std::time::Instant;

use dpselft_dp::Start;
use dpselft_privacy::{PrivacyLedger, Stage};

use crate::Progress;
use crate::error::{Result, SelftError, io_err};
use crate::pipeline::{
    CheckedInputs, ResolvedPaths, RunConfig, RunMetrics, check_inputs, create_ledger, finish_run,
    lock_out, select_stage, synthesize_into, train_stage,
};

/// `dpselft run --resume`: continues the run in `out` at its first unfinished stage, with the
/// run's own `config.toml`. A finished stage is never rerun (nor re-spent). An interrupted
/// stage 3 continues from its checkpoint. A stage interrupted with nothing to continue from
/// (stage 1, or stage 3 before its first checkpoint) has its ledger entries marked lost — they
/// keep counting — and runs again; stage 2 then reruns too, because the fine-tuning σ, now
/// calibrated to what is left of the budget, changed. A run killed after stage 3 saved its
/// model only gets its report written. The report lists what was lost.
pub fn resume(
    paths: &ResolvedPaths,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<RunMetrics> {
    let _lock = lock_out(out)?;
    let started = Instant::now();
    let config = resumable_config(out)?;
    let ledger_path = out.join("ledger.json");
    let private = if out.join("synth.json").exists() {
        check_inputs(&config, paths, progress)?.private
    } else {
        let inputs = check_inputs(&config, paths, progress)?;
        restart_synth(&config, &inputs, out, progress)?;
        synthesize_into(&config, inputs, out, progress)?
    };
    // Killed while writing the report: stage 3 finished and its model is saved.
    if let Some(summary) = dpselft_dp::finished_summary(&out.join("train"))
        && out.join("model/model.safetensors").exists()
    {
        let wall_s = summary.wall_s;
        return finish_run(out, &private, summary, wall_s);
    }
    let train_dir = out.join("train");
    let checkpoint = dpselft_dp::checkpoint::has_checkpoint(&train_dir);
    if !checkpoint && mark_lost(&ledger_path, |s| s == Stage::Train, progress)? {
        remove_if_present(&out.join("selection.json"))?;
    }
    if !out.join("selection.json").exists() {
        select_stage(out, paths, progress)?;
    }
    let start = if checkpoint {
        Start::Resume
    } else {
        Start::Fresh
    };
    let mut metrics = train_stage(out, paths, &private, start, progress)?;
    metrics.wall_s = started.elapsed().as_secs_f64();
    crate::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// The configuration of a run folder that holds an unfinished run.
fn resumable_config(out: &Path) -> Result<RunConfig> {
    let config_path = out.join("config.toml");
    if !config_path.exists() {
        return Err(SelftError::Config(format!(
            "{} holds no run to resume (no config.toml)",
            out.display()
        )));
    }
    if out.join("metrics.json").exists() {
        return Err(SelftError::Config(format!(
            "{} holds a finished run (metrics.json): there is nothing to resume",
            out.display()
        )));
    }
    RunConfig::load(&config_path)
}

/// Before stage 1 runs again: the interrupted attempt's entries are marked lost, and what it
/// left behind (the generator's work folder, a partial `synthetic/`, a selection made on it) is
/// removed. A run killed
/// before its ledger existed spent nothing and starts it now.
fn restart_synth(
    config: &RunConfig,
    inputs: &CheckedInputs,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<()> {
    let ledger_path = out.join("ledger.json");
    if ledger_path.exists() {
        mark_lost(&ledger_path, Stage::is_synth, progress)?;
    } else {
        create_ledger(&ledger_path, config, inputs)?;
    }
    for dir in ["synth", "synthetic"] {
        let path = out.join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| io_err(&path, e))?;
        }
    }
    // A selection of the lost attempt's synthetic data (and σ) must not outlive it.
    remove_if_present(&out.join("selection.json"))
}

/// Marks the ledger's entries of the stages `keep` selects as lost and says so; whether any were.
fn mark_lost(
    ledger_path: &Path,
    keep: impl Fn(Stage) -> bool,
    progress: &mut dyn Progress,
) -> Result<bool> {
    let mut ledger = PrivacyLedger::open(ledger_path)?;
    let lost = ledger.mark_lost(keep)?;
    let Some(first) = lost.first() else {
        return Ok(false);
    };
    let steps: u64 = lost.iter().map(|e| e.steps).sum();
    progress.message(&format!(
        "resume: the interrupted `{}` attempt left nothing to continue from; its {} recorded \
         releases are lost but keep counting (ε lost so far {:.4}); the stage runs again",
        first.stage,
        steps,
        ledger.lost_epsilon()?
    ));
    Ok(true)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path, e)),
        _ => Ok(()),
    }
}
