//! What a training run reports and takes besides its configuration: per-step metrics, the
//! observer that receives them, the summary, how it starts, its data and pipeline options.

use std::path::PathBuf;

use dpselft_data::Dataset;
use dpselft_privacy::Stage;
use serde::{Deserialize, Serialize};

use crate::eval::EvalMetrics;
use crate::plan::TrainPlan;
use crate::task::EncodedSet;

/// What one step did. `loss` is computed on private training examples and is *not* privatised:
/// it is for the operator's eyes (progress, debugging), not for release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The 1-based step.
    pub step: u64,
    /// Epochs completed in expectation (step·q).
    pub epoch: f64,
    /// The learning rate of the step.
    pub lr: f64,
    /// Mean per-example loss over the realised batch before the update (None: empty batch).
    /// Not privatised.
    pub loss: Option<f64>,
    /// The realised batch size (not privatised).
    pub batch_size: usize,
    /// Micro-batches the batch was split into.
    pub micro_batches: usize,
    /// Fraction of examples whose gradient was clipped (None when clipping is off).
    pub clipped_fraction: Option<f64>,
    /// ε spent so far under the PLD accountant at the target δ, as of the last log point
    /// (None: unbounded, non-private).
    pub epsilon: Option<f64>,
    /// Training examples per second since this session started.
    pub examples_per_s: f64,
    /// Seconds since this session started.
    pub elapsed_s: f64,
}

/// What `metrics.jsonl` keeps of a step: only data-independent or noisy quantities (the step,
/// the schedule, ε spent, time), so that the file may be shared like the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicStepLine {
    /// The 1-based step.
    pub step: u64,
    /// Epochs completed in expectation (step·q).
    pub epoch: f64,
    /// The learning rate of the step.
    pub lr: f64,
    /// ε spent so far (None: non-private).
    pub epsilon: Option<f64>,
    /// Seconds since this session started.
    pub elapsed_s: f64,
}

impl From<&StepMetrics> for PublicStepLine {
    fn from(m: &StepMetrics) -> Self {
        Self {
            step: m.step,
            epoch: m.epoch,
            lr: m.lr,
            epsilon: m.epsilon,
            elapsed_s: m.elapsed_s,
        }
    }
}

/// Receives progress (the CLI draws a progress bar from it). Every method defaults to nothing.
pub trait Observer {
    /// Set-up is done; `resumed_at` is the step the run continues from (0 for a fresh run).
    fn started(&mut self, _plan: &TrainPlan, _resumed_at: u64) {}
    /// A step is done.
    fn step(&mut self, _metrics: &StepMetrics) {}
    /// The held-out set was evaluated after step `step`.
    fn evaluated(&mut self, _step: u64, _metrics: &EvalMetrics) {}
}

impl Observer for () {}

/// The outcome of [`crate::DpTrainer::run`] (also written to `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The plan.
    pub plan: TrainPlan,
    /// Steps completed.
    pub steps: u64,
    /// Whether all planned steps ran (false when stopped early by [`crate::DpTrainer::stop_after`]).
    pub completed: bool,
    /// ε spent (PLD, from the ledger), `None` for ε = ∞ (non-private).
    pub epsilon: Option<f64>,
    /// ε spent under the RDP accountant (reported alongside), `None` for ∞.
    pub epsilon_rdp: Option<f64>,
    /// δ (None for non-private runs).
    pub delta: Option<f64>,
    /// The last evaluation of the held-out set, if one was given.
    pub eval: Option<EvalMetrics>,
    /// Wall time of this session in seconds.
    pub wall_s: f64,
}

/// The summary of the run in `run_dir` if it ran all its steps (`summary.json` with
/// `completed`), else `None` (no run, an unreadable summary, or a run stopped early).
pub fn finished_summary(run_dir: &std::path::Path) -> Option<TrainSummary> {
    let text = std::fs::read_to_string(run_dir.join("summary.json")).ok()?;
    serde_json::from_str::<TrainSummary>(&text)
        .ok()
        .filter(|s| s.completed)
}

/// Whether a run starts afresh or continues from its checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run: the run folder must hold no ledger or checkpoint.
    Fresh,
    /// Continue from the run folder's newest checkpoint, and continue its ledger. A run
    /// interrupted before its first checkpoint restarts from step 0 instead: the steps its
    /// ledger recorded are marked lost (they keep counting) and σ is calibrated to what is left
    /// of the budget ([`crate::DpTrainer::lost_steps`]). A finished run is refused.
    Resume,
}

/// The training data of a run: a data set to tokenize, or examples already tokenized (e.g.
/// prompted LM examples from [`EncodedSet::lm_with_prompts`]).
#[derive(Debug, Clone, Copy)]
pub enum TrainData<'a> {
    /// Tokenized by the trainer for its task.
    Dataset(&'a Dataset),
    /// Already tokenized for this model.
    Encoded(&'a EncodedSet),
}

/// How a run fits into a larger pipeline; the defaults are those of a stand-alone run.
#[derive(Debug, Clone)]
pub struct TrainerOptions {
    /// A ledger shared with earlier stages (a DP-SelFT run's `ledger.json`). The mechanisms it
    /// already records are composed with this run's steps when σ is calibrated, so that *all of
    /// them together* meet the target (ε, δ), and this run's steps are appended to it.
    /// `None`: the run's own `ledger.json` in the run folder.
    pub shared_ledger: Option<PathBuf>,
    /// The ledger stage of this run's steps (default: [`Stage::Train`]).
    pub stage: Stage,
    /// Cache the hidden states entering the lowest trainable block per training example
    /// ([`crate::PrefixCache`]): the frozen blocks then run once per example instead of once
    /// per step. Costs T_i × d floats per example seen.
    pub prefix_cache: bool,
    /// Calibrate against the shared ledger's mechanisms but lost ones: the target (ε, δ) is then
    /// this stage's own budget within the current attempt (the synthetic stage's share), and lost
    /// attempts are counted by the later calibration against the run's total. `false` (the
    /// default): the target is the total, lost attempts included.
    pub stage_budget: bool,
}

impl Default for TrainerOptions {
    fn default() -> Self {
        Self {
            shared_ledger: None,
            stage: Stage::Train,
            prefix_cache: false,
            stage_budget: false,
        }
    }
}
