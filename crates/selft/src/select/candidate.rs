//! Training and scoring one candidate of the selection stage (see the parent module): the
//! synthetic splits with their frozen-prefix caches, the perturbed training loop, the S_val score.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{D, DType, Tensor};
use dpselft_dp::{
    Clipping, DpOptimizer, DpOptimizerConfig, EncodedSet, HeadChoice, LrSchedule, NoiseRng,
    PrefixCache, Task, TrainableParams, blocks_spec, clip_sum, per_example_loss_masked,
    prepare_model, split_by_tokens,
};
use dpselft_model::{Ctx, Model};

use super::{CandidateResult, ModelSource, Perturbation, SelectConfig};
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

/// Trains one candidate `config.seeds` times and scores it.
pub(super) fn train_candidate(
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
