//! Stage 2: noise-matched layer selection on the synthetic data (docs/design.md,
//! §3). It reads only [`SyntheticData`] (see [`crate::data`]), so it spends no privacy.
//!
//! The menu is the task head alone and sets of blocks (each with the head, for classification),
//! and with `sub_blocks` the attention, the MLP and the norms alone of the set the block search
//! chose (`block.N.attn`, …: a round of their own after the search).
//! Each candidate is trained from the pretrained weights for τ steps on S_train (τ a stated
//! fraction of the final run's T steps) with the final stage's clip norm C and optimizer, under a
//! perturbation matched to the final stage's noise multiplier σ_ft and expected batch size B:
//! - `worst-case`: a sharpness-aware step. With ḡ the clipped mean gradient on c, the gradient is
//!   taken again at w + ρ_k·ḡ/‖ḡ‖ and applied at w, where ρ_k = κ·‖Δw‖ is the norm of the
//!   displacement the final run's noise alone causes in the corresponding final step, *under
//!   the final run's optimizer* ([`dpselft_dp::NoiseStep`]: η·σC√d/B for SGD, about
//!   0.23·η·√d for AdamW). Large sets pay for their size as they will under DP.
//! - `gaussian`: N(0, σ_ft²C²)/B per coordinate added to ḡ (a simulation of the final run).
//! - `none`: plain clipped training (what a non-private selector would pick).
//!
//! The score is −(mean S_val loss), smooth where accuracy on a few hundred examples is not,
//! averaged over seeds (their spread is reported; accuracy too); ties go to the higher accuracy,
//! then to fewer parameters. Then the chosen set is trained again at each learning rate of a
//! small grid (multiples of η) and the best on S_val becomes the final run's learning rate.
//! The rate is chosen as the baselines choose theirs: the higher S_val accuracy, ties to the
//! lower loss. These trials have their own perturbation (`lr_perturbation`, by default
//! `gaussian`) and steps. Not the worst-case one: its radius grows with η (ρ ∝ η under both
//! optimizers), so it penalises a large rate beyond what the real noise does to it — on spam
//! it chose 0.0178 where the final run does best at 0.1 — while Gaussian noise of the final
//! run's scale is that noise itself, at any η.
//! The frozen blocks below a candidate run once per synthetic example for the whole stage
//! ([`dpselft_dp::PrefixCache`] per block boundary).

use std::time::Instant;

use dpselft_dp::{EncodedSet, OptimizerKind, Task};
use dpselft_model::{BlockPart, Model, TrainableSpec};
use serde::{Deserialize, Serialize};

use crate::Progress;
use crate::data::SyntheticData;
use crate::error::{Result, SelftError};

mod budget;
mod candidate;
mod menu;
mod parts;

pub use budget::spread_order;
use budget::{distance, within_budget};
pub use menu::{Candidates, candidate_sets};

use candidate::{Boundaries, Sets, train_candidate};
pub(crate) use parts::candidate_spec;

/// The perturbation regime of the candidates' training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Perturbation {
    /// Sharpness-aware step with the DP-noise radius (the default).
    WorstCase,
    /// Real Gaussian noise of the final run's scale.
    Gaussian,
    /// Plain clipped training (ablation).
    None,
}

impl std::fmt::Display for Perturbation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WorstCase => "worst-case",
            Self::Gaussian => "gaussian",
            Self::None => "none",
        })
    }
}

impl std::str::FromStr for Perturbation {
    type Err = SelftError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "worst-case" => Ok(Self::WorstCase),
            "gaussian" => Ok(Self::Gaussian),
            "none" => Ok(Self::None),
            _ => Err(SelftError::Config(format!(
                "perturbation `{s}`: expected worst-case, gaussian or none"
            ))),
        }
    }
}

/// Where the learning-rate grid (`lr_grid`, multiples of η) is searched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RateSearch {
    /// Every candidate at η; then the chosen set alone at every multiple, in the trials' own
    /// regime (`lr_perturbation`, `lr_steps`). Cheap, but it compares the sets at one rate,
    /// which favours whichever kind of set that rate suits (a head wants a larger rate than a
    /// block under DP-AdamW).
    #[default]
    Winner,
    /// Every candidate at every multiple, each set scored by its best rate — the rule every
    /// baseline gets (its own best rate) — and the chosen set's best rate is the final one.
    /// Costs one training per multiple and candidate.
    PerCandidate,
}

impl std::fmt::Display for RateSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Winner => "winner",
            Self::PerCandidate => "per-candidate",
        })
    }
}

impl std::str::FromStr for RateSearch {
    type Err = SelftError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "winner" => Ok(Self::Winner),
            "per-candidate" => Ok(Self::PerCandidate),
            _ => Err(SelftError::Config(format!(
                "rate search `{s}`: expected winner or per-candidate"
            ))),
        }
    }
}

/// Settings of the selection stage. `noise_multiplier`, `final_batch_size`, `final_steps`,
/// `final_warmup_steps`, `clip`, `lr` and `optimizer` are those of the final fine-tuning stage
/// (the pipeline fills them in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectConfig {
    /// Classification or LM.
    pub task: Task,
    /// Candidate sets.
    pub candidates: Candidates,
    /// At most this many candidate sets are trained (`None`: every set the strategy names).
    /// Under a budget the singles are tried spread over depth ([`spread_order`]) and a greedy
    /// round tries the blocks nearest the current set first, so a 30-block decoder's search is
    /// coarse-to-fine rather than cut off at its bottom blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_candidates: Option<usize>,
    /// After the block search, try the chosen blocks' attention alone, MLP alone and norms
    /// alone (within the budget); the best of every candidate is chosen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sub_blocks: bool,
    /// Perturbation regime.
    pub perturbation: Perturbation,
    /// Training steps τ per candidate.
    pub steps: u64,
    /// The final stage's steps T (the radius of candidate step k is that of final step ⌈kT/τ⌉).
    pub final_steps: u64,
    /// The final stage's warm-up steps.
    pub final_warmup_steps: u64,
    /// Examples per selection step (a compute setting: the radius uses the final B).
    pub batch_size: usize,
    /// Radius scale κ.
    pub kappa: f64,
    /// Training runs per candidate (scores averaged).
    pub seeds: usize,
    /// The final stage's noise multiplier σ_ft.
    pub noise_multiplier: f64,
    /// The final stage's expected batch size B.
    pub final_batch_size: f64,
    /// The final stage's clip norm C.
    pub clip: f64,
    /// The final stage's peak learning rate η (as configured; see `lr_grid`).
    pub lr: f64,
    /// Multiples of η at which the chosen set is trained again; the best on S_val is the final
    /// run's learning rate. Empty: keep η.
    pub lr_grid: Vec<f64>,
    /// Where the grid is searched: for the chosen set alone, or for every candidate.
    #[serde(default)]
    pub rate_search: RateSearch,
    /// The perturbation of the chosen set's learning-rate trials (`winner` search only; see
    /// the module documentation).
    #[serde(default = "default_lr_perturbation")]
    pub lr_perturbation: Perturbation,
    /// Training steps of each learning-rate trial (0: τ, the candidates' steps).
    #[serde(default)]
    pub lr_steps: u64,
    /// The final stage's optimizer.
    pub optimizer: OptimizerKind,
    /// Tokens per example.
    pub max_seq_len: usize,
    /// Padded tokens per micro-batch.
    pub max_tokens: usize,
    /// Initialisation seed of the head (as in the final stage).
    pub init_seed: u64,
    /// Seed of the batches and of the `gaussian` noise (public randomness: synthetic data only).
    pub seed: u64,
}

/// One trained candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateResult {
    /// The blocks trained (with the head; empty: the head alone).
    pub blocks: Vec<usize>,
    /// Only this part of each of those blocks (`None`: the whole blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<BlockPart>,
    /// Its trainable set.
    pub spec: TrainableSpec,
    /// Trainable scalars d_c (head included).
    pub params: usize,
    /// Its peak learning rate.
    pub lr: f64,
    /// The mean perturbation radius ρ_k over its steps (0 unless worst-case).
    pub radius: f64,
    /// Mean score over seeds: −(mean S_val loss).
    pub score: f64,
    /// Standard deviation of the score over seeds (0 for one seed).
    pub score_std: f64,
    /// Mean S_val loss over seeds.
    pub loss: f64,
    /// Mean S_val accuracy over seeds (classification).
    pub accuracy: Option<f64>,
    /// The score of each seed.
    pub seed_scores: Vec<f64>,
    /// Greedy round (1 = the head alone and singles); 1 for the other strategies; 0 for the
    /// learning-rate trials of the chosen set.
    pub round: usize,
    /// Seconds spent on this candidate.
    pub wall_s: f64,
}

impl CandidateResult {
    /// Summarises the seeds' S_val results of one candidate.
    fn from_runs(
        (blocks, part): (Vec<usize>, Option<BlockPart>),
        spec: TrainableSpec,
        (params, radius, lr): (usize, f64, f64),
        runs: &[candidate::ValResult],
        round: usize,
        wall_s: f64,
    ) -> Self {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let seed_scores: Vec<f64> = runs.iter().map(|r| -r.loss).collect();
        let score = mean(&seed_scores);
        let var = seed_scores.iter().map(|s| (s - score).powi(2)).sum::<f64>()
            / (seed_scores.len().max(2) - 1) as f64;
        let accuracies: Option<Vec<f64>> = runs.iter().map(|r| r.accuracy).collect();
        Self {
            blocks,
            part,
            spec,
            params,
            lr,
            radius,
            score,
            score_std: if seed_scores.len() > 1 {
                var.sqrt()
            } else {
                0.0
            },
            loss: -score,
            accuracy: accuracies.map(|a| mean(&a)),
            seed_scores,
            round,
            wall_s,
        }
    }
}

/// The stage's output (`selection.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The settings used.
    pub config: SelectConfig,
    /// Every candidate, in the order trained.
    pub candidates: Vec<CandidateResult>,
    /// The chosen blocks U* (empty: the head alone).
    pub chosen: Vec<usize>,
    /// Only this part of each chosen block (`None`: the whole blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_part: Option<BlockPart>,
    /// The chosen set as a trainable spec (head included for classification).
    pub chosen_spec: TrainableSpec,
    /// The chosen set at each learning rate of the grid. `winner` search: first its own run at
    /// η (from the candidates), then the other multiples (round 0); `per-candidate`: its runs
    /// at every multiple, its best among them also listed in `candidates`.
    pub lr_trials: Vec<CandidateResult>,
    /// `per-candidate` search: the runs of every candidate at the rates that were not its best
    /// (its best is in `candidates`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_rates: Vec<CandidateResult>,
    /// The learning rate of the final run: the best of `lr_trials` on S_val (η without a grid).
    pub chosen_lr: f64,
    /// Seconds for the whole stage.
    pub wall_s: f64,
}

impl Selection {
    /// Every run the stage trained, once each: the candidates, then the learning-rate trials
    /// (round 0; a trial that is the chosen candidate's own run is listed among the candidates).
    pub fn trained(&self) -> impl Iterator<Item = &CandidateResult> {
        self.candidates
            .iter()
            .chain(&self.other_rates)
            .chain(self.lr_trials.iter().filter(|t| t.round == 0))
    }
}

/// Makes a fresh copy of the pretrained target model (each candidate starts from it).
pub type ModelSource<'a> = dyn Fn() -> Result<Model> + 'a;

/// Runs the selection stage (see the module documentation).
pub fn select(
    synthetic: &SyntheticData,
    model: &ModelSource<'_>,
    config: &SelectConfig,
    progress: &mut dyn Progress,
) -> Result<Selection> {
    validate(config)?;
    let started = Instant::now();
    let per_candidate = config.rate_search == RateSearch::PerCandidate;
    // Without a grid the final run keeps η, the chosen candidate's own rate.
    let rate_config = rate_trial_config(config);
    let same_regime = rate_config == *config || config.lr_grid.is_empty() || per_candidate;
    let probe = model()?;
    let num_blocks = probe.num_blocks();
    let encode =
        |d| Ok::<_, SelftError>(EncodedSet::new(&probe, d, config.task, config.max_seq_len)?);
    let sets = Sets {
        train: Boundaries::new(encode(synthetic.train())?),
        val: Boundaries::new(encode(synthetic.val())?),
        labels: synthetic.train().labels.clone(),
    };
    drop(probe);
    let mut runner = Runner {
        model,
        config,
        sets,
        other_rates: Vec::new(),
    };
    // Round 1: the head alone (classification) and the strategy's first sets.
    let mut first: Vec<Vec<usize>> = match config.task {
        Task::Classify => vec![Vec::new()],
        Task::Lm => Vec::new(),
    };
    first.extend(candidate_sets(config.candidates, num_blocks));
    let greedy_k = match config.candidates {
        Candidates::Greedy(k) => k.min(num_blocks),
        _ => 1,
    };
    // An upper bound on the candidates, for the progress bar.
    let mut bound = first.len() + (1..greedy_k).map(|r| num_blocks - r).sum::<usize>();
    if config.sub_blocks {
        bound += BlockPart::ALL.len();
    }
    if let Some(budget) = config.max_candidates {
        first = within_budget(first, num_blocks, budget, greedy_k);
        bound = bound.min(budget);
    }
    let grid = if per_candidate {
        Vec::new()
    } else {
        lr_multiples(config, same_regime)
    };
    let runs_per_set = if per_candidate {
        config.lr_grid.len().max(1)
    } else {
        1
    };
    progress.stage(
        "select: training candidates",
        (bound * runs_per_set + grid.len()) as u64,
    );
    let mut results = Vec::new();
    for blocks in first {
        results.push(runner.candidate((blocks, None), 1, progress)?);
    }
    let mut current = runner.grow(&mut results, greedy_k, num_blocks, progress)?;
    if config.sub_blocks {
        current = runner.split_into_parts(&mut results, current, progress)?;
    }
    let (lr_trials, chosen_lr) = if per_candidate {
        // The chosen set's runs at every rate; its best (`current`) decides.
        let mut trials: Vec<CandidateResult> = runner
            .other_rates
            .iter()
            .filter(|r| r.spec == current.spec)
            .cloned()
            .chain([current.clone()])
            .collect();
        trials.sort_by(|a, b| a.lr.total_cmp(&b.lr));
        (trials, current.lr)
    } else {
        // The learning rate of the chosen set, on S_val, in the trials' own regime (η again
        // too, unless that regime is the candidates').
        let mut trials = Vec::new();
        if same_regime {
            trials.push(current.clone());
        }
        runner.config = &rate_config;
        for m in grid {
            let set = (current.blocks.clone(), current.part);
            trials.push(runner.run(set, 0, config.lr * m, progress)?);
        }
        let lr = best_rate(&trials).lr;
        (trials, lr)
    };
    progress.finish();
    Ok(Selection {
        config: config.clone(),
        candidates: results,
        chosen_spec: current.spec,
        chosen: current.blocks,
        chosen_part: current.part,
        lr_trials,
        other_rates: runner.other_rates,
        chosen_lr,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Trains candidates on the stage's synthetic splits.
struct Runner<'a, 'm> {
    model: &'a ModelSource<'m>,
    config: &'a SelectConfig,
    sets: Sets,
    /// `per-candidate` search: every run that was not its set's best.
    other_rates: Vec<CandidateResult>,
}

impl Runner<'_, '_> {
    /// One candidate set as the search sees it: its run at η (`winner` search), or its best run
    /// over the grid's multiples of η (`per-candidate`; the others kept in `other_rates`).
    fn candidate(
        &mut self,
        set: (Vec<usize>, Option<BlockPart>),
        round: usize,
        progress: &mut dyn Progress,
    ) -> Result<CandidateResult> {
        let multiples = match self.config.rate_search {
            RateSearch::PerCandidate if !self.config.lr_grid.is_empty() => {
                self.config.lr_grid.clone()
            }
            _ => vec![1.0],
        };
        let mut runs = Vec::with_capacity(multiples.len());
        for m in multiples {
            runs.push(self.run(set.clone(), round, self.config.lr * m, progress)?);
        }
        let top = best(&runs).clone();
        let i = runs.iter().position(|r| *r == top).unwrap_or(0);
        runs.remove(i);
        self.other_rates.extend(runs);
        Ok(top)
    }

    /// Trains and scores one candidate (blocks, and only a part of each if given) at peak
    /// learning rate `lr`, and reports it.
    fn run(
        &mut self,
        set: (Vec<usize>, Option<BlockPart>),
        round: usize,
        lr: f64,
        progress: &mut dyn Progress,
    ) -> Result<CandidateResult> {
        let r = train_candidate(self.model, set, round, lr, self.config, &mut self.sets)?;
        progress.advance(1);
        progress.message(&format!(
            "select: {:<24} lr {:.1e}  score {:.4} ± {:.4}  acc {}  ρ {:.3e}",
            r.spec,
            r.lr,
            r.score,
            r.score_std,
            r.accuracy.map_or("-".into(), |a| format!("{a:.3}")),
            r.radius
        ));
        Ok(r)
    }

    /// Greedy growth from the best of `results` (round 1), one block per round up to
    /// `greedy_k` blocks while the best extension is better; every candidate trained is appended
    /// to `results`. Returns the chosen candidate. Nothing grows from the head alone: its
    /// extensions are the singles.
    fn grow(
        &mut self,
        results: &mut Vec<CandidateResult>,
        greedy_k: usize,
        num_blocks: usize,
        progress: &mut dyn Progress,
    ) -> Result<CandidateResult> {
        let mut current = best(results).clone();
        for round in 2..=greedy_k {
            if current.blocks.is_empty() {
                break;
            }
            let mut this_round = Vec::new();
            let mut next: Vec<usize> = (0..num_blocks)
                .filter(|j| !current.blocks.contains(j))
                .collect();
            if let Some(budget) = self.config.max_candidates {
                next.sort_by_key(|&j| distance(&current.blocks, j));
                next.truncate(budget.saturating_sub(results.len()));
            }
            if next.is_empty() {
                break;
            }
            for j in next {
                let mut blocks = current.blocks.clone();
                blocks.push(j);
                blocks.sort_unstable();
                this_round.push(self.candidate((blocks, None), round, progress)?);
            }
            let top = best(&this_round).clone();
            results.extend(this_round);
            if !better(&top, &current) {
                break;
            }
            current = top;
        }
        Ok(current)
    }
}

/// The grid's multiples of η to train; η itself only when the trials' regime differs from the
/// candidates' (otherwise the chosen candidate's own run is η's trial).
fn lr_multiples(config: &SelectConfig, same_regime: bool) -> Vec<f64> {
    config
        .lr_grid
        .iter()
        .copied()
        .filter(|&m| !same_regime || (m - 1.0).abs() > 1e-12)
        .collect()
}

/// The candidates' settings with the learning-rate trials' perturbation and steps.
fn rate_trial_config(config: &SelectConfig) -> SelectConfig {
    SelectConfig {
        perturbation: config.lr_perturbation,
        steps: if config.lr_steps > 0 {
            config.lr_steps
        } else {
            config.steps
        },
        ..config.clone()
    }
}

fn validate(config: &SelectConfig) -> Result<()> {
    let ok = config.steps > 0
        && config.final_steps > 0
        && config.final_warmup_steps <= config.final_steps
        && config.lr_grid.iter().all(|m| m.is_finite() && *m > 0.0)
        && config.batch_size > 0
        && config.seeds > 0
        && config.kappa >= 0.0
        && config.noise_multiplier >= 0.0
        && config.final_batch_size > 0.0
        && config.clip > 0.0
        && config.lr > 0.0;
    if ok {
        Ok(())
    } else {
        Err(SelftError::Config(format!(
            "select: steps, final steps, batch_size, seeds, final batch size, clip, lr and the lr \
             grid's multiples must be > 0, warm-up ≤ final steps, κ and σ ≥ 0 (got {config:?})"
        )))
    }
}

/// For selections written before the learning-rate trials had a regime of their own (they ran
/// as the candidates did, and the field is only informative there).
fn default_lr_perturbation() -> Perturbation {
    Perturbation::Gaussian
}

/// Whether `a` beats `b`: higher score (lower S_val loss), then higher accuracy, then fewer
/// parameters.
fn better(a: &CandidateResult, b: &CandidateResult) -> bool {
    set_key(a) > set_key(b)
}

fn set_key(c: &CandidateResult) -> (f64, f64, f64) {
    (c.score, c.accuracy.unwrap_or(0.0), -(c.params as f64))
}

/// The order in which learning rates are chosen, here and by the utility grid's baselines
/// (bench/methods.toml): the higher validation accuracy, ties to the lower loss (loss alone for
/// language modelling, which has no accuracy); a larger key is better. Unlike a set's score,
/// the rate's choice is between runs of one set, where accuracy — the reported metric — is what
/// the rate should maximise.
pub fn rate_key(accuracy: Option<f64>, loss: f64) -> (f64, f64) {
    (accuracy.unwrap_or(0.0), -loss)
}

/// The learning-rate trial [`rate_key`] picks; the first of equals.
fn best_rate(trials: &[CandidateResult]) -> &CandidateResult {
    first_max(trials, |t| rate_key(t.accuracy, t.loss))
}

fn best(results: &[CandidateResult]) -> &CandidateResult {
    first_max(results, set_key)
}

/// The first of `items` with the largest key (`items` is never empty here).
fn first_max<K: PartialOrd>(
    items: &[CandidateResult],
    key: impl Fn(&CandidateResult) -> K,
) -> &CandidateResult {
    let mut top = &items[0];
    for c in &items[1..] {
        if key(c) > key(top) {
            top = c;
        }
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(lr: f64, accuracy: Option<f64>, loss: f64) -> CandidateResult {
        CandidateResult {
            blocks: Vec::new(),
            part: None,
            spec: candidate_spec(&[], None, Task::Classify),
            params: 10,
            lr,
            radius: 0.0,
            score: -loss,
            score_std: 0.0,
            loss,
            accuracy,
            seed_scores: vec![-loss],
            round: 0,
            wall_s: 0.0,
        }
    }

    #[test]
    fn the_rate_is_the_higher_accuracy_then_the_lower_loss() {
        // Accuracy first, even against a lower loss (spam, ε = 8: 0.875 at 0.1, 0.859 at 0.0178).
        let t = [
            trial(0.0178, Some(0.859), 0.324),
            trial(0.1, Some(0.875), 0.390),
        ];
        assert_eq!(best_rate(&t).lr, 0.1);
        // Equal accuracy: the lower loss.
        let t = [
            trial(0.0178, Some(0.906), 0.221),
            trial(0.1, Some(0.906), 0.205),
        ];
        assert_eq!(best_rate(&t).lr, 0.1);
        // No accuracy (language modelling): the lower loss; equals keep the first.
        let t = [
            trial(0.01, None, 2.0),
            trial(0.1, None, 1.5),
            trial(1.0, None, 1.5),
        ];
        assert_eq!(best_rate(&t).lr, 0.1);
    }
}
