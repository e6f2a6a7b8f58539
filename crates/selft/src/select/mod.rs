//! Stage 2: noise-matched layer selection on the synthetic data (docs/design.md,
//! §3). It reads only [`SyntheticData`] (see [`crate::data`]), so it spends no privacy.
//!
//! Each candidate set c of blocks (plus the task head) is trained from the pretrained weights for
//! τ steps on S_train with the final stage's clip norm C, optimizer and learning rate η, under a
//! perturbation matched to the final stage's noise multiplier σ_ft and expected batch size B:
//! - `worst-case`: a sharpness-aware step. With ḡ the clipped mean gradient on c, the radius is
//!   ρ_c = κ·η·σ_ft·C·√d_c / B (the norm of the noise DP-SGD would add to that step in parameter
//!   space); the gradient is taken again at w + ρ_c·ḡ/‖ḡ‖ and applied at w. Large sets pay for
//!   their size as they will under DP.
//! - `gaussian`: N(0, σ_ft²C²)/B per coordinate added to ḡ (a simulation of the final run).
//! - `none`: plain clipped training (what a non-private selector would pick).
//!
//! The score is the accuracy on S_val (classification) or −loss (LM), averaged over seeds; ties
//! go to the lower loss, then to fewer parameters. The frozen blocks below a candidate run once
//! per synthetic example for the whole stage ([`dpselft_dp::PrefixCache`] per block boundary).

use std::time::Instant;

use dpselft_dp::{EncodedSet, OptimizerKind, Task, blocks_spec};
use dpselft_model::{Model, TrainableSpec};
use serde::{Deserialize, Serialize};

use crate::Progress;
use crate::data::SyntheticData;
use crate::error::{Result, SelftError};

mod candidate;

use candidate::{Boundaries, Sets, train_candidate};

/// Which candidate sets are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Candidates {
    /// Each block alone.
    Singles,
    /// Every contiguous run of 1..=k blocks.
    Windows(usize),
    /// Singles, then grow the best set one block at a time while the score improves, up to k.
    Greedy(usize),
}

impl std::str::FromStr for Candidates {
    type Err = SelftError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            SelftError::Config(format!(
                "candidates `{s}`: expected `singles`, `windows:K` or `greedy:K` (K ≥ 1)"
            ))
        };
        let k = |v: &str| v.parse::<usize>().ok().filter(|&k| k >= 1).ok_or_else(bad);
        match s.split_once(':') {
            None if s == "singles" => Ok(Self::Singles),
            Some(("windows", v)) => Ok(Self::Windows(k(v)?)),
            Some(("greedy", v)) => Ok(Self::Greedy(k(v)?)),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Candidates {
    type Error = SelftError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Candidates> for String {
    fn from(c: Candidates) -> String {
        match c {
            Candidates::Singles => "singles".into(),
            Candidates::Windows(k) => format!("windows:{k}"),
            Candidates::Greedy(k) => format!("greedy:{k}"),
        }
    }
}

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

/// Settings of the selection stage. `noise_multiplier`, `final_batch_size`, `clip`, `lr` and
/// `optimizer` are those of the final fine-tuning stage (the pipeline fills them in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectConfig {
    /// Classification or LM.
    pub task: Task,
    /// Candidate sets.
    pub candidates: Candidates,
    /// Perturbation regime.
    pub perturbation: Perturbation,
    /// Training steps τ per candidate.
    pub steps: u64,
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
    /// The final stage's peak learning rate η.
    pub lr: f64,
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
    /// The blocks trained (with the head).
    pub blocks: Vec<usize>,
    /// Its trainable set.
    pub spec: TrainableSpec,
    /// Trainable scalars d_c (head included).
    pub params: usize,
    /// The perturbation radius ρ_c (0 unless worst-case).
    pub radius: f64,
    /// Mean score over seeds (accuracy on S_val, or −loss for LM).
    pub score: f64,
    /// Mean S_val loss over seeds.
    pub loss: f64,
    /// The score of each seed.
    pub seed_scores: Vec<f64>,
    /// Greedy round (1 = singles); 1 for the other strategies.
    pub round: usize,
    /// Seconds spent on this candidate.
    pub wall_s: f64,
}

/// The stage's output (`selection.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The settings used.
    pub config: SelectConfig,
    /// Every candidate, in the order trained.
    pub candidates: Vec<CandidateResult>,
    /// The chosen blocks U*.
    pub chosen: Vec<usize>,
    /// The chosen set as a trainable spec (head included for classification).
    pub chosen_spec: TrainableSpec,
    /// Seconds for the whole stage.
    pub wall_s: f64,
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
    let probe = model()?;
    let num_blocks = probe.num_blocks();
    let encode =
        |d| Ok::<_, SelftError>(EncodedSet::new(&probe, d, config.task, config.max_seq_len)?);
    let mut sets = Sets {
        train: Boundaries::new(encode(synthetic.train())?),
        val: Boundaries::new(encode(synthetic.val())?),
        labels: synthetic.train().labels.clone(),
    };
    drop(probe);
    let mut results: Vec<CandidateResult> = Vec::new();
    let mut run = |blocks: Vec<usize>, round: usize, progress: &mut dyn Progress| {
        let r = train_candidate(model, &blocks, round, config, &mut sets)?;
        progress.advance(1);
        progress.message(&format!(
            "select: {:<24} score {:.4}  loss {:.4}  ρ {:.3e}",
            r.spec, r.score, r.loss, r.radius
        ));
        Ok::<_, SelftError>(r)
    };
    let chosen = match config.candidates {
        Candidates::Singles | Candidates::Windows(_) => {
            let sets_to_try = candidate_sets(config.candidates, num_blocks);
            progress.stage("select: training candidates", sets_to_try.len() as u64);
            for blocks in sets_to_try {
                results.push(run(blocks, 1, progress)?);
            }
            best(&results).blocks.clone()
        }
        Candidates::Greedy(k) => {
            let k = k.min(num_blocks);
            // An upper bound on the candidates, for the progress bar.
            let bound: usize = (0..k).map(|r| num_blocks - r).sum();
            progress.stage("select: training candidates (greedy)", bound as u64);
            for i in 0..num_blocks {
                results.push(run(vec![i], 1, progress)?);
            }
            let mut current = best(&results).clone();
            for round in 2..=k {
                let mut this_round = Vec::new();
                for j in (0..num_blocks).filter(|j| !current.blocks.contains(j)) {
                    let mut blocks = current.blocks.clone();
                    blocks.push(j);
                    blocks.sort_unstable();
                    this_round.push(run(blocks, round, progress)?);
                }
                let top = best(&this_round).clone();
                results.extend(this_round);
                if better(&top, &current) {
                    current = top;
                } else {
                    break;
                }
            }
            current.blocks
        }
    };
    progress.finish();
    Ok(Selection {
        config: config.clone(),
        candidates: results,
        chosen_spec: blocks_spec(&chosen, config.task),
        chosen,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn validate(config: &SelectConfig) -> Result<()> {
    let ok = config.steps > 0
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
            "select: steps, batch_size, seeds, final batch size, clip and lr must be > 0, κ and \
             σ ≥ 0 (got {config:?})"
        )))
    }
}

/// The block sets of the non-greedy strategies.
pub fn candidate_sets(candidates: Candidates, num_blocks: usize) -> Vec<Vec<usize>> {
    match candidates {
        Candidates::Singles | Candidates::Greedy(_) => (0..num_blocks).map(|i| vec![i]).collect(),
        Candidates::Windows(k) => (1..=k.min(num_blocks))
            .flat_map(|w| (0..=num_blocks - w).map(move |s| (s..s + w).collect()))
            .collect(),
    }
}

/// Whether `a` beats `b`: higher score, then lower loss, then fewer parameters.
fn better(a: &CandidateResult, b: &CandidateResult) -> bool {
    (a.score, -a.loss, -(a.params as f64)) > (b.score, -b.loss, -(b.params as f64))
}

fn best(results: &[CandidateResult]) -> &CandidateResult {
    let mut top = &results[0];
    for r in &results[1..] {
        if better(r, top) {
            top = r;
        }
    }
    top
}
