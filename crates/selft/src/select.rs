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
//! per synthetic example for the whole stage ([`PrefixCache`] per block boundary).

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{D, DType, Tensor};
use dpselft_dp::{
    Clipping, DpOptimizer, DpOptimizerConfig, EncodedSet, HeadChoice, LrSchedule, NoiseRng,
    OptimizerKind, PrefixCache, Task, TrainableParams, blocks_spec, clip_sum,
    per_example_loss_masked, prepare_model, split_by_tokens,
};
use dpselft_model::{Ctx, Model, TrainableSpec};
use serde::{Deserialize, Serialize};

use crate::Progress;
use crate::data::SyntheticData;
use crate::error::{Result, SelftError};

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

/// The synthetic splits, tokenized, with their prefix caches.
struct Sets {
    train: Boundaries,
    val: Boundaries,
    labels: Vec<String>,
}

/// One encoded split and the frozen-prefix states at every block boundary computed so far.
struct Boundaries {
    set: EncodedSet,
    caches: BTreeMap<usize, PrefixCache>,
}

impl Boundaries {
    fn new(set: EncodedSet) -> Self {
        Self {
            set,
            caches: BTreeMap::new(),
        }
    }

    /// The states entering block `upto` for every example, derived from the nearest boundary
    /// below (the pretrained blocks below any candidate are the same for every candidate).
    fn at(&mut self, model: &Model, upto: usize, max_tokens: usize) -> Result<PrefixCache> {
        if let Some(c) = self.caches.get(&upto) {
            return Ok(c.clone());
        }
        let below = self
            .caches
            .range(..upto)
            .next_back()
            .map(|(_, c)| c.clone());
        let cache = match below {
            Some(c) => c.advance(model, &self.set, upto, max_tokens)?,
            None => {
                let mut c = PrefixCache::new(0, self.set.len());
                c.fill_all(model, &self.set, max_tokens)?;
                self.caches.insert(0, c.clone());
                c.advance(model, &self.set, upto, max_tokens)?
            }
        };
        self.caches.insert(upto, cache.clone());
        Ok(cache)
    }
}

/// Trains one candidate `config.seeds` times and scores it.
fn train_candidate(
    source: &ModelSource<'_>,
    blocks: &[usize],
    round: usize,
    config: &SelectConfig,
    sets: &mut Sets,
) -> Result<CandidateResult> {
    let started = Instant::now();
    let spec = blocks_spec(blocks, config.task);
    let (mut scores, mut losses) = (Vec::new(), Vec::new());
    let (mut params_count, mut radius) = (0, 0.0);
    for s in 0..config.seeds {
        let mut model = source()?;
        prepare_model(
            &mut model,
            config.task,
            HeadChoice::New(sets.labels.clone()),
            &spec,
            config.init_seed,
        )?;
        let params = TrainableParams::of(&model)?;
        params_count = params.num_scalars();
        radius = match config.perturbation {
            Perturbation::WorstCase => {
                config.kappa
                    * config.lr
                    * config.noise_multiplier
                    * config.clip
                    * (params_count as f64).sqrt()
                    / config.final_batch_size
            }
            _ => 0.0,
        };
        let low = model.lowest_trainable_block();
        let mut train_cache = sets.train.at(&model, low, config.max_tokens)?;
        let mut val_cache = sets.val.at(&model, low, config.max_tokens)?;
        let seed = config.seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut trainer = CandidateTrainer::new(&params, config, radius, seed)?;
        for _ in 0..config.steps {
            trainer.step(&model, &params, &sets.train.set, &mut train_cache)?;
        }
        let (score, loss) = score(&model, &sets.val.set, &mut val_cache, config)?;
        scores.push(score);
        losses.push(loss);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(CandidateResult {
        blocks: blocks.to_vec(),
        spec,
        params: params_count,
        radius,
        score: mean(&scores),
        loss: mean(&losses),
        seed_scores: scores,
        round,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// The training loop of one candidate run.
struct CandidateTrainer {
    optimizer: DpOptimizer,
    clipping: Clipping,
    perturbation: Perturbation,
    radius: f64,
    batch_size: usize,
    max_tokens: usize,
    rng: NoiseRng,
    order: Vec<usize>,
    cursor: usize,
}

impl CandidateTrainer {
    fn new(
        params: &TrainableParams,
        config: &SelectConfig,
        radius: f64,
        seed: u64,
    ) -> Result<Self> {
        let b = config.batch_size as f64;
        // `gaussian`: the final run adds N(0, σ²C²)/B to the mean gradient; with the selection's
        // own batch b the optimizer divides by b, so the noise on the sum is σ·(b/B)·C.
        let noise_multiplier = match config.perturbation {
            Perturbation::Gaussian => config.noise_multiplier * b / config.final_batch_size,
            _ => 0.0,
        };
        let clipping = Clipping::Flat {
            max_norm: config.clip,
        };
        let optimizer = DpOptimizer::new(
            DpOptimizerConfig {
                optimizer: config.optimizer,
                schedule: LrSchedule {
                    peak_lr: config.lr,
                    warmup_steps: 0,
                    total_steps: config.steps,
                },
                noise_multiplier,
                clipping,
                expected_batch_size: b,
            },
            &params.vars,
        )?
        .with_weight_decay_mask(params.weight_decay_mask())?;
        Ok(Self {
            optimizer,
            clipping,
            perturbation: config.perturbation,
            radius,
            batch_size: config.batch_size,
            max_tokens: config.max_tokens,
            rng: NoiseRng::from_seed(seed),
            order: Vec::new(),
            cursor: 0,
        })
    }

    /// The next `batch_size` examples of a seeded shuffle (reshuffled at each pass).
    fn next_batch(&mut self, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.batch_size);
        while out.len() < self.batch_size.min(n) {
            if self.cursor == self.order.len() {
                self.order = (0..n).collect();
                self.rng.shuffle(&mut self.order);
                self.cursor = 0;
            }
            out.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        out
    }

    fn step(
        &mut self,
        model: &Model,
        params: &TrainableParams,
        set: &EncodedSet,
        cache: &mut PrefixCache,
    ) -> Result<()> {
        let batch = self.next_batch(set.len());
        let mut sums = self.clipped_sums(model, params, set, cache, &batch)?;
        if self.perturbation == Perturbation::WorstCase && self.radius > 0.0 {
            sums = self.sharpness_aware(model, params, set, cache, &batch, sums)?;
        }
        self.optimizer
            .step(&params.vars, Some(&sums), &mut self.rng)?;
        Ok(())
    }

    /// The clipped sums at w + ρ·ḡ/‖ḡ‖ (ḡ ∝ `sums`), with the parameters restored to w.
    fn sharpness_aware(
        &mut self,
        model: &Model,
        params: &TrainableParams,
        set: &EncodedSet,
        cache: &mut PrefixCache,
        batch: &[usize],
        sums: Vec<Tensor>,
    ) -> Result<Vec<Tensor>> {
        let mut norm_sq = 0.0;
        for s in &sums {
            norm_sq += s
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        if norm_sq <= 0.0 {
            return Ok(sums);
        }
        let scale = self.radius / norm_sq.sqrt();
        let saved: Vec<Tensor> = params
            .vars
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<std::result::Result<_, _>>()?;
        for (v, s) in params.vars.iter().zip(&sums) {
            let moved = (v.as_tensor() + (s.to_dtype(v.dtype())? * scale)?)?;
            v.set(&moved)?;
        }
        let result = self.clipped_sums(model, params, set, cache, batch);
        for (v, w) in params.vars.iter().zip(&saved) {
            v.set(w)?;
        }
        result
    }

    /// Σ_i c_i g_i per trainable parameter over `batch` (one recorded forward/backward per
    /// micro-batch from the cached prefix states).
    fn clipped_sums(
        &self,
        model: &Model,
        params: &TrainableParams,
        set: &EncodedSet,
        cache: &mut PrefixCache,
        batch: &[usize],
    ) -> Result<Vec<Tensor>> {
        clip_sum(
            model,
            params,
            set,
            batch,
            Some(cache),
            &self.clipping,
            self.max_tokens,
        )?
        .sums
        .ok_or_else(|| SelftError::Config("a selection batch was empty".into()))
    }
}

/// (score, mean loss) on S_val: accuracy for classification, −loss for LM.
fn score(
    model: &Model,
    set: &EncodedSet,
    cache: &mut PrefixCache,
    config: &SelectConfig,
) -> Result<(f64, f64)> {
    let all: Vec<usize> = (0..set.len()).collect();
    let (mut loss_sum, mut hits) = (0.0, 0usize);
    for mb in split_by_tokens(&all, &set.lengths, config.max_tokens)? {
        let (b, labels) = set.batch(model, &mb)?;
        let h = cache.states(model, set, &mb, &b)?;
        let out = model
            .forward_from(&h, &b, cache.upto(), Ctx::plain())?
            .detach();
        let mask = set.loss_mask(model, &mb, b.ids.dim(1)?)?;
        let losses = per_example_loss_masked(model, &out, &b, labels.as_ref(), mask.as_ref())?;
        loss_sum += losses.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        if let Some(labels) = &labels {
            let pred = out.argmax(D::Minus1)?.to_dtype(DType::U32)?;
            hits += pred
                .eq(labels)?
                .to_dtype(DType::U32)?
                .sum_all()?
                .to_scalar::<u32>()? as usize;
        }
    }
    let n = set.len() as f64;
    let loss = loss_sum / n;
    Ok(match config.task {
        Task::Classify => (hits as f64 / n, loss),
        Task::Lm => (-loss, loss),
    })
}
