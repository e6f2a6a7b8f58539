//! The DP trainer: it wires the model, the sampler, clipping, the optimizer and the accountant
//! into a training run (docs/design.md, §2 (b) and (d)).
//!
//! A run, top to bottom:
//! 1. **Set-up** ([`DpTrainer::new`]): the task head and the trainable set are applied to the
//!    model; the data are tokenized; the number of steps T and the sampling rate q = B/n follow
//!    from the epochs (or steps) and the expected batch size B; the noise multiplier σ is
//!    calibrated with the PLD accountant so that T sampled Gaussian steps meet the target (ε, δ).
//! 2. **Each step** ([`DpTrainer::train_step`]): a Poisson-sampled logical batch is split into
//!    micro-batches by a token budget; per micro-batch one forward (recording) and one backward
//!    leave the records from which the per-example norms, the clipping factors and the clipped
//!    sums follow ([`crate::bridge`]); the sums of the micro-batches are added; the optimizer adds
//!    N(0, σ²C²), divides by B and updates (an empty batch takes a noise-only step).
//! 3. **Book-keeping**: the steps are recorded in the privacy ledger *before* they run (in chunks
//!    up to the next checkpoint), metrics go to `metrics.jsonl`, the held-out set is evaluated
//!    every N steps, and checkpoints are written every M steps.
//!
//! Non-private mode (an upper-bound baseline): no clipping, no noise, no ledger; everything it
//! reports says ε = ∞.
//!
//! What the run folder holds: `ledger.json` (private runs), `metrics.jsonl`, `summary.json` and,
//! while the run is in progress, `checkpoint/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use dpselft_data::Dataset;
use dpselft_model::Model;
use dpselft_privacy::Spent;
use serde::Serialize;

use crate::bridge::TrainableParams;
use crate::checkpoint::{
    CheckpointState, has_checkpoint, load_checkpoint, remove_checkpoints, save_checkpoint,
    write_json,
};
use crate::clip::Clipping;
use crate::config::TrainConfig;
use crate::error::{DpError, Result, io_err};
use crate::eval::{EvalMetrics, evaluate_cached};
use crate::head::{HeadChoice, prepare_model};
use crate::metrics_log::MetricsLog;
use crate::optim::{DpOptimizer, OptimizerCheckpoint, StepInfo};
use crate::plan::{NoisePlan, TrainPlan};
use crate::prefix::{PrefixCache, PrefixCaches};
use crate::rng::NoiseRng;
use crate::sampler::PoissonSampler;
use crate::stage_ledger::StageLedger;
use crate::step::clip_sum;
use crate::task::EncodedSet;
use crate::trainer_io::{
    Observer, PublicStepLine, Start, StepMetrics, TrainData, TrainSummary, TrainerOptions,
};
use crate::trainer_setup::{
    delta_override, encode_sets, lock_run_dir, make_optimizer, plan_with, prefix_cache,
    restart_from_zero, rng_streams, stage_ledger,
};

/// A DP training run (see the module documentation).
pub struct DpTrainer {
    config: TrainConfig,
    model: Model,
    params: TrainableParams,
    train: EncodedSet,
    eval: Option<EncodedSet>,
    run_dir: PathBuf,
    plan: TrainPlan,
    noise: NoisePlan,
    clipping: Clipping,
    sampler: PoissonSampler,
    optimizer: DpOptimizer,
    sampling_rng: NoiseRng,
    noise_rng: NoiseRng,
    /// The privacy ledger (`None` for non-private runs).
    ledger: Option<StageLedger>,
    metrics: MetricsLog,
    /// `private_metrics.jsonl`, only with `log_private_metrics`.
    private_metrics: Option<MetricsLog>,
    step: u64,
    resumed_at: u64,
    stop_after: u64,
    epsilon_so_far: Option<f64>,
    last_eval: Option<EvalMetrics>,
    prefix: Option<PrefixCache>,
    /// The held-out set's frozen-prefix cache (with the training set's).
    eval_prefix: Option<PrefixCache>,
    /// Steps of an interrupted attempt without a checkpoint, marked lost on restart.
    lost_steps: u64,
    /// The run folder's exclusive lock, held for the trainer's life: no second process can run
    /// or resume this run (and append to its ledger) at the same time.
    _lock: dpselft_fsio::FolderLock,
}

impl DpTrainer {
    /// Sets up a run (see the module documentation, step 1): applies the head and trainable
    /// set to `model`, tokenizes `train` (and the held-out `eval`), plans T and q, calibrates σ,
    /// and creates (or, with [`Start::Resume`], reopens) the run folder's ledger and state.
    ///
    /// Privacy: σ is the smallest noise multiplier for which the PLD accountant certifies that
    /// T Poisson-sampled Gaussian steps with rate q are (ε, δ)-DP ([`plan_noise`]); the training
    /// data's size n is treated as public, as usual.
    pub fn new(
        config: TrainConfig,
        model: Model,
        train: &Dataset,
        eval: Option<&Dataset>,
        run_dir: &Path,
        start: Start,
    ) -> Result<Self> {
        Self::new_with(
            config,
            model,
            TrainData::Dataset(train),
            eval,
            run_dir,
            start,
            &TrainerOptions::default(),
        )
    }

    /// [`DpTrainer::new`] with pre-tokenized data and [`TrainerOptions`] (a shared ledger, the
    /// frozen-prefix cache). With a shared ledger, σ is the smallest noise multiplier for which
    /// the ledger's earlier mechanisms *and* this run's T steps together are (ε, δ)-DP.
    pub fn new_with(
        config: TrainConfig,
        mut model: Model,
        train: TrainData<'_>,
        eval: Option<&Dataset>,
        run_dir: &Path,
        start: Start,
        options: &TrainerOptions,
    ) -> Result<Self> {
        config.validate()?;
        let lock = lock_run_dir(run_dir)?;
        let head = match train {
            TrainData::Dataset(d) => HeadChoice::New(d.labels.clone()),
            TrainData::Encoded(_) => HeadChoice::New(Vec::new()),
        };
        let spec = &config.trainable;
        prepare_model(&mut model, config.task, head, spec, config.init_seed)?;
        let params = TrainableParams::of(&model)?;
        let (train_set, eval_set) = encode_sets(&model, &config, train, eval)?;
        let n = train_set.len();
        let delta_override = delta_override(&config, n)?;
        let restart = start == Start::Resume && !has_checkpoint(run_dir);
        let lost_steps = if restart {
            restart_from_zero(&config, run_dir, options)?
        } else {
            0
        };
        let ledger = stage_ledger(&config, run_dir, options)?;
        let noise = plan_with(&config, n, ledger.as_ref()).map_err(|e| match lost_steps {
            0 => e,
            lost => DpError::Config(format!(
                "{}: the interrupted attempt had no checkpoint and its {lost} recorded steps are \
                 lost (they keep counting); restarting from step 0 cannot meet the target: {e}",
                run_dir.display()
            )),
        })?;
        let sampler = PoissonSampler::new(n, noise.sampling_rate)?;
        let clipping = config.clipping();
        let plan = TrainPlan {
            examples: n,
            sampling_rate: noise.sampling_rate,
            expected_batch_size: sampler.expected_batch_size(),
            total_steps: noise.total_steps,
            noise_multiplier: noise.noise_multiplier,
            clip: clipping.sensitivity(),
            privacy: config.privacy,
            seeded: config.seed.is_some(),
            trainable: params.names.clone(),
            trainable_scalars: params.num_scalars(),
        };
        let optimizer = make_optimizer(&config, &plan, clipping, &params)?;
        let (sampling_rng, noise_rng) = rng_streams(config.seed)?;
        let prefix = prefix_cache(&model, options, n);
        let eval_prefix = eval_set
            .as_ref()
            .and_then(|e| prefix_cache(&model, options, e.len()));
        let log_private_metrics = config.log_private_metrics;
        let mut trainer = Self {
            config,
            model,
            params,
            train: train_set,
            eval: eval_set,
            run_dir: run_dir.to_path_buf(),
            plan,
            noise,
            clipping,
            sampler,
            optimizer,
            sampling_rng,
            noise_rng,
            ledger,
            metrics: MetricsLog::in_dir(run_dir),
            private_metrics: log_private_metrics.then(|| MetricsLog::private_in_dir(run_dir)),
            step: 0,
            resumed_at: 0,
            stop_after: u64::MAX,
            epsilon_so_far: None,
            last_eval: None,
            prefix,
            eval_prefix,
            lost_steps,
            _lock: lock,
        };
        match start {
            Start::Fresh => trainer.start_fresh()?,
            Start::Resume if restart => trainer.open_logs_and_ledger()?,
            Start::Resume => trainer.resume()?,
        }
        // The operator's δ ≥ 1/n goes into the ledger with the steps it weakens.
        if let (Some(ledger), Some(o)) = (trainer.ledger.as_mut(), delta_override) {
            ledger.record_override(o)?;
        }
        Ok(trainer)
    }

    fn start_fresh(&mut self) -> Result<()> {
        let shared = self.ledger.as_ref().is_some_and(StageLedger::is_shared);
        let own_ledger = !shared && self.run_dir.join("ledger.json").exists();
        if own_ledger || has_checkpoint(&self.run_dir) {
            return Err(DpError::Config(format!(
                "{} already holds a run (ledger or checkpoint): resume it, or choose another \
                 output folder",
                self.run_dir.display()
            )));
        }
        self.open_logs_and_ledger()
    }

    /// Opens the ledger for a run from step 0 and starts empty logs.
    fn open_logs_and_ledger(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.run_dir).map_err(|e| io_err(&self.run_dir, e))?;
        if let Some(ledger) = self.ledger.as_mut() {
            ledger.open_fresh()?;
            self.epsilon_so_far = Some(ledger.epsilon_after(0, &self.noise)?);
        }
        if let Some(log) = &self.private_metrics {
            log.create()?;
        }
        self.metrics.create()
    }

    fn resume(&mut self) -> Result<()> {
        let ckpt = load_checkpoint(&self.run_dir, &self.model.device)?;
        self.check_checkpoint_plan(&ckpt.state)?;
        self.params.restore(&ckpt.params, "checkpoint")?;
        let s = &ckpt.state;
        let opt = OptimizerCheckpoint {
            meta: s.optimizer.clone(),
            tensors: ckpt.optimizer_tensors.clone(),
        };
        self.optimizer = DpOptimizer::restore(*self.optimizer.config(), &self.params.vars, &opt)?;
        self.sampling_rng = NoiseRng::from_state(&s.sampling_rng)?;
        self.noise_rng = NoiseRng::from_state(&s.noise_rng)?;
        self.step = s.step;
        self.resumed_at = s.step;
        if let Some(ledger) = self.ledger.as_mut() {
            ledger.open_resumed(self.step)?;
            self.epsilon_so_far = Some(ledger.epsilon_after(self.step, &self.noise)?);
        }
        // Metrics after the checkpoint belong to steps that will run again.
        if let Some(log) = &self.private_metrics {
            log.truncate_after(self.step)?;
        }
        self.metrics.truncate_after(self.step)
    }

    /// A checkpoint continues only the run it was planned for (same σ, q and T).
    fn check_checkpoint_plan(&self, s: &CheckpointState) -> Result<()> {
        let same = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
        if !same(s.noise_multiplier, self.plan.noise_multiplier)
            || !same(s.sampling_rate, self.plan.sampling_rate)
            || s.total_steps != self.plan.total_steps
        {
            return Err(DpError::State(format!(
                "the checkpoint was planned with σ = {}, q = {}, T = {}; this configuration \
                 gives σ = {}, q = {}, T = {} (resume with the run's own configuration)",
                s.noise_multiplier,
                s.sampling_rate,
                s.total_steps,
                self.plan.noise_multiplier,
                self.plan.sampling_rate,
                self.plan.total_steps
            )));
        }
        Ok(())
    }

    /// Uses `caches` in place of this run's own frozen-prefix caches where they fit (same block
    /// boundary and size; the caller vouches for the same data and frozen weights): a learning-rate
    /// sweep then runs the frozen blocks once for all its runs. A cache that does not fit is
    /// ignored, and so are caches for a run without the prefix cache.
    pub fn reuse_prefix_caches(&mut self, caches: &PrefixCaches) {
        fn swap(own: &mut Option<PrefixCache>, given: &Option<PrefixCache>) {
            if let (Some(o), Some(g)) = (own.as_mut(), given)
                && o.matches(g)
            {
                *o = g.clone();
            }
        }
        swap(&mut self.prefix, &caches.train);
        swap(&mut self.eval_prefix, &caches.eval);
    }

    /// Computes every example's frozen-prefix states of both sets now, in file order, so that
    /// they do not depend on which batches happened to be drawn first: runs that share the
    /// caches then see exactly the states a run of their own would.
    pub fn fill_prefix_caches(&mut self) -> Result<()> {
        let max_tokens = self.config.max_tokens;
        if let Some(cache) = self.prefix.as_mut() {
            cache.fill_all(&self.model, &self.train, max_tokens)?;
        }
        if let (Some(cache), Some(set)) = (self.eval_prefix.as_mut(), &self.eval) {
            cache.fill_all(&self.model, set, max_tokens)?;
        }
        Ok(())
    }

    /// This run's frozen-prefix caches as filled so far (shared states, not copies).
    pub fn prefix_caches(&self) -> PrefixCaches {
        PrefixCaches {
            train: self.prefix.clone(),
            eval: self.eval_prefix.clone(),
        }
    }

    /// Stop after step `step` (for tests of resumption, or a time-boxed session); the checkpoint
    /// written at that step (if it is a checkpoint step) lets [`Start::Resume`] continue.
    pub fn stop_after(&mut self, step: u64) {
        self.stop_after = step;
    }

    /// The plan decided at set-up.
    pub fn plan(&self) -> &TrainPlan {
        &self.plan
    }

    /// The model (with its trainable parameters as trained so far).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The trainable parameters, in the engine's order.
    pub fn params(&self) -> &TrainableParams {
        &self.params
    }

    /// The model, consuming the trainer.
    pub fn into_model(self) -> Model {
        self.model
    }

    /// Steps that an interrupted attempt of this run recorded in the ledger before it was
    /// killed without a checkpoint: marked lost when this attempt restarted from step 0 (they
    /// keep counting in the ledger's total). 0 unless a [`Start::Resume`] had to restart.
    pub fn lost_steps(&self) -> u64 {
        self.lost_steps
    }

    /// Steps between checkpoints (`None`: none).
    fn checkpoint_interval(&self) -> Option<u64> {
        self.config.checkpoints.interval(self.plan.total_steps)
    }

    /// Steps completed.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Runs the remaining steps (see the module documentation, steps 2–3), then evaluates the
    /// held-out set, removes the checkpoints (they hold the noise key) and writes
    /// `summary.json`. The caller saves the model afterwards: by then every step is in the ledger.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<TrainSummary> {
        let started = Instant::now();
        let mut examples_seen = 0usize;
        observer.started(&self.plan, self.resumed_at);
        let total = self.plan.total_steps;
        while self.step < total && self.step < self.stop_after {
            self.record_chunk_if_due()?;
            let (info, mut metrics) = self.train_step()?;
            self.step = info.step;
            examples_seen += metrics.batch_size;
            let elapsed = started.elapsed().as_secs_f64();
            metrics.elapsed_s = elapsed;
            metrics.examples_per_s = examples_seen as f64 / elapsed.max(1e-9);
            if self.step.is_multiple_of(self.config.log_every) || self.step == total {
                if let Some(ledger) = &self.ledger {
                    self.epsilon_so_far = Some(ledger.epsilon_after(self.step, &self.noise)?);
                }
                metrics.epsilon = self.epsilon_so_far;
                self.log_step(&metrics)?;
            }
            metrics.epsilon = self.epsilon_so_far;
            observer.step(&metrics);
            if let Some(every) = self.config.eval_every
                && self.step.is_multiple_of(every)
                && self.step < total
                && self.eval.is_some()
            {
                let m = self.evaluate_held_out()?;
                observer.evaluated(self.step, &m);
            }
            if let Some(every) = self.checkpoint_interval()
                && self.step.is_multiple_of(every)
                && self.step < total
            {
                self.save_checkpoint()?;
            }
        }
        let completed = self.step >= total;
        if completed {
            if self.eval.is_some() {
                let m = self.evaluate_held_out()?;
                observer.evaluated(self.step, &m);
            }
            remove_checkpoints(&self.run_dir)?;
        }
        let spent = self.ledger.as_ref().and_then(StageLedger::spent);
        let summary = TrainSummary {
            plan: self.plan.clone(),
            steps: self.step,
            completed,
            epsilon: spent.as_ref().and_then(Spent::epsilon),
            epsilon_rdp: spent.as_ref().and_then(|s| s.under("rdp")?.epsilon),
            delta: spent.as_ref().map(|s| s.guarantee().delta),
            eval: self.last_eval.clone(),
            wall_s: started.elapsed().as_secs_f64(),
        };
        write_json(&self.run_dir.join("summary.json"), &summary)?;
        Ok(summary)
    }

    /// One DP step on a fresh Poisson-sampled logical batch. Returns the optimizer's report and
    /// the step's metrics (timing and ε fields are filled in by [`Self::run`]).
    ///
    /// Privacy: the update depends on the data only through the clipped sums
    /// ([`clip_groups`]: every example's contribution over all trainable parameters has norm
    /// ≤ C), to which the optimizer adds N(0, σ²C²) before anything else — one sampled Gaussian
    /// mechanism (q, σ) per call. Autograd's own batch gradient is never used. The returned loss
    /// and batch size are not privatised.
    pub fn train_step(&mut self) -> Result<(StepInfo, StepMetrics)> {
        let batch = self.sampler.sample(&mut self.sampling_rng);
        let clipped = clip_sum(
            &self.model,
            &self.params,
            &self.train,
            &batch,
            self.prefix.as_mut(),
            &self.clipping,
            self.config.max_tokens,
        )?;
        let realised = clipped.examples;
        let info = self.optimizer.step(
            &self.params.vars,
            clipped.sums.as_deref(),
            &mut self.noise_rng,
        )?;
        let metrics = StepMetrics {
            step: info.step,
            epoch: info.step as f64 * self.plan.sampling_rate,
            lr: info.lr,
            loss: (realised > 0).then(|| clipped.loss_sum / realised as f64),
            batch_size: realised,
            micro_batches: clipped.micro_batches,
            clipped_fraction: match self.clipping {
                Clipping::Off => None,
                _ if realised == 0 => Some(0.0),
                _ => Some(clipped.clipped as f64 / realised as f64),
            },
            epsilon: None,
            examples_per_s: 0.0,
            elapsed_s: 0.0,
        };
        Ok((info, metrics))
    }

    /// Records the next chunk of steps in the ledger when the steps about to run are not yet in
    /// it. Chunks end at checkpoint steps (or at T), so an interrupted and resumed run records
    /// exactly the entries of an uninterrupted one.
    fn record_chunk_if_due(&mut self) -> Result<()> {
        let total = self.plan.total_steps;
        let end = match self.checkpoint_interval() {
            Some(every) => ((self.step / every + 1) * every).min(total),
            None => total,
        };
        let Some(ledger) = self.ledger.as_mut() else {
            return Ok(());
        };
        let clip = self.plan.clip.ok_or_else(|| {
            DpError::Config("a private run needs a bounded sensitivity (clipping)".into())
        })?;
        ledger.record_chunk_if_due(self.step, end, &self.noise, clip)
    }

    /// A step's line in `metrics.jsonl` (private-safe) and, if asked for, its full metrics in
    /// `private_metrics.jsonl`.
    fn log_step(&self, metrics: &StepMetrics) -> Result<()> {
        self.metrics
            .append("step", &PublicStepLine::from(metrics))?;
        match &self.private_metrics {
            Some(log) => log.append("step", metrics),
            None => Ok(()),
        }
    }

    fn evaluate_held_out(&mut self) -> Result<EvalMetrics> {
        let Some(set) = &self.eval else {
            return Err(DpError::Config("no held-out set to evaluate".into()));
        };
        let m = evaluate_cached(
            &self.model,
            set,
            self.config.max_tokens,
            self.eval_prefix.as_mut(),
        )?;
        #[derive(Serialize)]
        struct EvalLine<'a> {
            step: u64,
            #[serde(flatten)]
            metrics: &'a EvalMetrics,
        }
        self.metrics.append(
            "eval",
            &EvalLine {
                step: self.step,
                metrics: &m,
            },
        )?;
        self.last_eval = Some(m.clone());
        Ok(m)
    }

    fn save_checkpoint(&self) -> Result<()> {
        let params = self.params.tensors();
        let opt = self.optimizer.checkpoint();
        let state = CheckpointState {
            step: self.step,
            optimizer: opt.meta.clone(),
            sampling_rng: self.sampling_rng.state(),
            noise_rng: self.noise_rng.state(),
            noise_multiplier: self.plan.noise_multiplier,
            sampling_rate: self.plan.sampling_rate,
            total_steps: self.plan.total_steps,
        };
        save_checkpoint(&self.run_dir, &state, &params, &opt)
    }
}
