//! Training and scoring one candidate of the selection stage (see the parent module): the
//! synthetic splits with their frozen-prefix caches, the perturbed training loop, the S_val score.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{D, DType, Tensor};
use dpselft_dp::{
    Clipping, DpOptimizer, DpOptimizerConfig, EncodedSet, HeadChoice, LrSchedule, NoiseRng,
    NoiseStep, PrefixCache, TrainableParams, clip_sum, micro_batch_tokens, per_example_loss_masked,
    prepare_model, split_by_tokens,
};
use dpselft_model::{BlockPart, Ctx, Model};

use super::{CandidateResult, ModelSource, Perturbation, SelectConfig, candidate_spec};
use crate::error::{Result, SelftError};

/// The synthetic splits, tokenized, with their prefix caches.
pub(super) struct Sets {
    pub(super) train: Boundaries,
    pub(super) val: Boundaries,
    pub(super) labels: Vec<String>,
}

/// One encoded split and the frozen-prefix states at every block boundary computed so far.
pub(super) struct Boundaries {
    set: EncodedSet,
    caches: BTreeMap<usize, PrefixCache>,
}

impl Boundaries {
    pub(super) fn new(set: EncodedSet) -> Self {
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

/// Trains one candidate `config.seeds` times at peak learning rate `lr` and scores it.
pub(super) fn train_candidate(
    source: &ModelSource<'_>,
    (blocks, part): (Vec<usize>, Option<BlockPart>),
    round: usize,
    lr: f64,
    config: &SelectConfig,
    sets: &mut Sets,
) -> Result<CandidateResult> {
    let started = Instant::now();
    let spec = candidate_spec(&blocks, part, config.task);
    let mut runs = Vec::new();
    let (mut params_count, mut radii) = (0, Vec::new());
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
        radii = radii_per_step(config, lr, params_count);
        let low = model.lowest_trainable_block();
        let mut train_cache = sets.train.at(&model, low, config.max_tokens)?;
        let mut val_cache = sets.val.at(&model, low, config.max_tokens)?;
        let seed = config.seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut trainer = CandidateTrainer::new(&params, config, lr, radii.clone(), seed)?;
        for _ in 0..config.steps {
            trainer.step(&model, &params, &sets.train.set, &mut train_cache)?;
        }
        runs.push(score(
            &model,
            &sets.val.set,
            &mut val_cache,
            config.max_tokens,
        )?);
    }
    let mean_radius = radii.iter().sum::<f64>() / radii.len().max(1) as f64;
    Ok(CandidateResult::from_runs(
        (blocks, part),
        spec,
        (params_count, mean_radius, lr),
        &runs,
        round,
        started.elapsed().as_secs_f64(),
    ))
}

/// The worst-case radius of each of the candidate's τ steps (0 unless worst-case): κ times the
/// displacement the final run's noise causes at the final step the candidate's step stands for
/// (step k of τ ↦ step ⌈k·T/τ⌉ of T, so the learning-rate schedule lines up), under the final
/// run's optimizer ([`NoiseStep::displacement`]).
pub(super) fn radii_per_step(config: &SelectConfig, lr: f64, params: usize) -> Vec<f64> {
    if config.perturbation != Perturbation::WorstCase {
        return vec![0.0; config.steps as usize];
    }
    let noise = NoiseStep {
        optimizer: config.optimizer,
        schedule: LrSchedule {
            peak_lr: lr,
            warmup_steps: config.final_warmup_steps,
            total_steps: config.final_steps,
        },
        noise_std: config.noise_multiplier * config.clip / config.final_batch_size,
    };
    let (tau, big_t) = (config.steps, config.final_steps);
    (1..=tau)
        .map(|k| config.kappa * noise.displacement((k * big_t).div_ceil(tau), params))
        .collect()
}

/// The training loop of one candidate run.
struct CandidateTrainer {
    optimizer: DpOptimizer,
    clipping: Clipping,
    perturbation: Perturbation,
    /// The worst-case radius of each step.
    radii: Vec<f64>,
    taken: usize,
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
        lr: f64,
        radii: Vec<f64>,
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
                // The final run's schedule, compressed to the candidate's τ steps.
                schedule: LrSchedule {
                    peak_lr: lr,
                    warmup_steps: config.final_warmup_steps * config.steps
                        / config.final_steps.max(1),
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
            radii,
            taken: 0,
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
        let radius = self.radii.get(self.taken).copied().unwrap_or(0.0);
        self.taken += 1;
        // Sharpness-aware: the clipped sums at w + ρ·ḡ/‖ḡ‖, applied at w.
        if self.perturbation == Perturbation::WorstCase
            && radius > 0.0
            && let Some(saved) = ascend(params, &sums, radius)?
        {
            let at_ascent = self.clipped_sums(model, params, set, cache, &batch);
            restore(params, &saved)?;
            sums = at_ascent?;
        }
        self.optimizer
            .step(&params.vars, Some(&sums), &mut self.rng)?;
        Ok(())
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

/// Moves the parameters to w + ρ·ḡ/‖ḡ‖ (ḡ ∝ `sums`) and returns w, or does nothing and returns
/// `None` when ḡ = 0.
fn ascend(params: &TrainableParams, sums: &[Tensor], radius: f64) -> Result<Option<Vec<Tensor>>> {
    let mut norm_sq = 0.0;
    for s in sums {
        norm_sq += s
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    if norm_sq <= 0.0 {
        return Ok(None);
    }
    let scale = radius / norm_sq.sqrt();
    let saved: Vec<Tensor> = params
        .vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<std::result::Result<_, _>>()?;
    for (v, s) in params.vars.iter().zip(sums) {
        let moved = (v.as_tensor() + (s.to_dtype(v.dtype())? * scale)?)?;
        v.set(&moved)?;
    }
    Ok(Some(saved))
}

/// Puts the parameters back to `saved`.
fn restore(params: &TrainableParams, saved: &[Tensor]) -> Result<()> {
    for (v, w) in params.vars.iter().zip(saved) {
        v.set(w)?;
    }
    Ok(())
}

/// One trained run's result on S_val: its mean loss and, for classification, its accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ValResult {
    pub(super) loss: f64,
    pub(super) accuracy: Option<f64>,
}

/// The mean loss and (classification) accuracy on S_val.
fn score(
    model: &Model,
    set: &EncodedSet,
    cache: &mut PrefixCache,
    max_tokens: usize,
) -> Result<ValResult> {
    let all: Vec<usize> = (0..set.len()).collect();
    let (mut loss_sum, mut hits) = (0.0, 0usize);
    let mut labelled = false;
    for mb in split_by_tokens(&all, &set.lengths, micro_batch_tokens(model, max_tokens))? {
        let (b, labels) = set.batch(model, &mb)?;
        let h = cache.states(model, set, &mb, &b)?;
        let out = model
            .forward_from(&h, &b, cache.upto(), Ctx::plain())?
            .detach();
        let mask = set.loss_mask(model, &mb, b.ids.dim(1)?)?;
        let losses = per_example_loss_masked(model, &out, &b, labels.as_ref(), mask.as_ref())?;
        loss_sum += losses.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        if let Some(labels) = &labels {
            labelled = true;
            let pred = out.argmax(D::Minus1)?.to_dtype(DType::U32)?;
            hits += pred
                .eq(labels)?
                .to_dtype(DType::U32)?
                .sum_all()?
                .to_scalar::<u32>()? as usize;
        }
    }
    let n = set.len() as f64;
    Ok(ValResult {
        loss: loss_sum / n,
        accuracy: labelled.then(|| hits as f64 / n),
    })
}
