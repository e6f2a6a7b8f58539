//! The DP trainer: it wires the model, the sampler, clipping, the optimizer and the accountant
//! into a training run (DESIGN.md, "3. DP fine-tuning").
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

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use dpselft_data::Dataset;
use dpselft_model::trainable::{self, TrainableSpec};
use dpselft_model::{Ctx, Head, Model, Pooling, Recorder};
use dpselft_privacy::{
    LedgerEntry, Mechanism, PldAccountant, PrivacyLedger, calibrate_sigma, sampling_from_epochs,
};
use serde::{Deserialize, Serialize};

use crate::bridge::{TrainableParams, clip_groups, group_records};
use crate::checkpoint::{
    CheckpointState, has_checkpoint, load_checkpoint, remove_checkpoints, save_checkpoint,
    write_json,
};
use crate::clip::{ClippedSumAccumulator, Clipping};
use crate::error::{DpError, Result, io_err};
use crate::eval::{EvalMetrics, evaluate};
use crate::norms::NormMethod;
use crate::optim::{
    DpOptimizer, DpOptimizerConfig, LrSchedule, OptimizerCheckpoint, OptimizerKind, StepInfo,
};
use crate::prefix::PrefixCache;
use crate::rng::NoiseRng;
use crate::sampler::{PoissonSampler, split_by_tokens};
use crate::task::{EncodedSet, Task, per_example_loss_masked, to_f64s};

/// The ledger purpose of the fine-tuning steps.
pub const LEDGER_PURPOSE: &str = "train";

/// The ledger purpose of the fine-tuning steps of a `--seed`ed run: the noise is reproducible
/// from the seed, and the ledger says so.
pub const LEDGER_PURPOSE_SEEDED: &str = "train (seeded: noise reproducible from the seed)";

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Duration {
    /// K passes over the data in expectation: T = ⌈K·n/B⌉ steps.
    Epochs(f64),
    /// A fixed number of steps T.
    Steps(u64),
}

/// The privacy target of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PrivacyTarget {
    /// (ε, δ)-DP under add/remove-one adjacency for the whole run.
    Private {
        /// Target ε.
        epsilon: f64,
        /// Target δ.
        delta: f64,
    },
    /// No clipping and no noise: ε = ∞ (upper-bound baselines only).
    NonPrivate,
}

/// Everything that defines a training run (serialised as the run's resolved configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Classification or language modelling.
    pub task: Task,
    /// The trainable set, in the model crate's spec syntax (`head,last:2`, `lora:r=8;head`, …).
    pub trainable: String,
    /// Epochs or steps.
    pub duration: Duration,
    /// The expected logical batch size B (q = B/n).
    pub batch_size: usize,
    /// The clip norm C (the sensitivity of the clipped sum).
    pub clip: f64,
    /// Automatic clipping C/(‖g‖+γ) with this γ instead of flat clipping.
    pub automatic_clip_gamma: Option<f64>,
    /// The peak learning rate.
    pub lr: f64,
    /// The update rule.
    pub optimizer: OptimizerKind,
    /// Linear warm-up steps (then linear decay to the end).
    pub warmup_steps: u64,
    /// (ε, δ) or non-private.
    pub privacy: PrivacyTarget,
    /// The most padded tokens in one physical micro-batch (bounds memory; no privacy effect).
    pub max_tokens: usize,
    /// Examples are truncated to this many tokens.
    pub max_seq_len: usize,
    /// Evaluate the held-out set every this many steps (and at the end).
    pub eval_every: Option<u64>,
    /// Write a metrics line (and update ε spent) every this many steps.
    pub log_every: u64,
    /// Write a checkpoint every this many steps.
    pub checkpoint_every: Option<u64>,
    /// A seed for a reproducible run: it seeds sampling *and noise* (the noise is then
    /// predictable to whoever knows the seed; the ledger and summary say so). `None`: the OS.
    pub seed: Option<u64>,
    /// The seed of the classification head's initialisation and of LoRA factors (public
    /// randomness; not the noise).
    pub init_seed: u64,
}

impl Default for TrainConfig {
    /// Classification, head + top two blocks, 3 epochs, B = 256, C = 1, AdamW lr 1e-3,
    /// ε = 3 at δ = 1e-5, 8192 tokens per micro-batch, 128 tokens per example.
    fn default() -> Self {
        Self {
            task: Task::Classify,
            trainable: "head,last:2".into(),
            duration: Duration::Epochs(3.0),
            batch_size: 256,
            clip: 1.0,
            automatic_clip_gamma: None,
            lr: 1e-3,
            optimizer: OptimizerKind::default(),
            warmup_steps: 0,
            privacy: PrivacyTarget::Private {
                epsilon: 3.0,
                delta: 1e-5,
            },
            max_tokens: 8192,
            max_seq_len: 128,
            eval_every: None,
            log_every: 10,
            checkpoint_every: None,
            seed: None,
            init_seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every field that can be checked without the data.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(DpError::Config(what));
        if self.batch_size == 0 {
            return bad("batch size: must be ≥ 1".into());
        }
        if self.max_tokens == 0 || self.max_seq_len < 2 {
            return bad("max tokens must be ≥ 1 and max sequence length ≥ 2".into());
        }
        if self.log_every == 0 || self.eval_every == Some(0) || self.checkpoint_every == Some(0) {
            return bad("log/eval/checkpoint intervals must be ≥ 1 step".into());
        }
        match self.duration {
            Duration::Epochs(k) if !(k.is_finite() && k > 0.0) => {
                return bad(format!("epochs {k}: must be a finite number > 0"));
            }
            Duration::Steps(0) => return bad("steps: must be ≥ 1".into()),
            _ => {}
        }
        if let PrivacyTarget::Private { epsilon, delta } = self.privacy {
            if !(epsilon.is_finite() && epsilon > 0.0) {
                return bad(format!("ε = {epsilon}: must be a finite number > 0"));
            }
            if !(delta > 0.0 && delta < 1.0) {
                return bad(format!("δ = {delta}: must be in (0, 1)"));
            }
        }
        self.clipping().validate()?;
        TrainableSpec::parse(&self.trainable)?;
        Ok(())
    }

    /// The clipping of this run: off for non-private runs, else flat (or automatic) at C.
    pub fn clipping(&self) -> Clipping {
        match (self.privacy, self.automatic_clip_gamma) {
            (PrivacyTarget::NonPrivate, _) => Clipping::Off,
            (_, Some(gamma)) => Clipping::Automatic {
                max_norm: self.clip,
                gamma,
            },
            (_, None) => Clipping::Flat {
                max_norm: self.clip,
            },
        }
    }
}

/// What set-up decided: the quantities of the privacy analysis and of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    /// n: training examples.
    pub examples: usize,
    /// q = B/n.
    pub sampling_rate: f64,
    /// B = q·n, the divisor of the noisy sum.
    pub expected_batch_size: f64,
    /// T: optimizer steps.
    pub total_steps: u64,
    /// σ (0 for non-private runs).
    pub noise_multiplier: f64,
    /// The sensitivity C of the clipped sum (`None`: unbounded, non-private).
    pub clip: Option<f64>,
    /// The target.
    pub privacy: PrivacyTarget,
    /// Whether sampling and noise come from a user seed (reproducible, predictable noise).
    pub seeded: bool,
    /// The trainable parameter names.
    pub trainable: Vec<String>,
    /// The number of trainable scalars.
    pub trainable_scalars: usize,
}

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

/// The outcome of [`DpTrainer::run`] (also written to `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The plan.
    pub plan: TrainPlan,
    /// Steps completed.
    pub steps: u64,
    /// Whether all planned steps ran (false when stopped early by [`DpTrainer::stop_after`]).
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

/// Whether a run starts afresh or continues from its checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run: the run folder must hold no ledger or checkpoint.
    Fresh,
    /// Continue from the run folder's newest checkpoint, and continue its ledger.
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
#[derive(Debug, Clone, Default)]
pub struct TrainerOptions {
    /// A ledger shared with earlier stages (a DP-SelFT run's `ledger.json`). The mechanisms it
    /// already records are composed with this run's steps when σ is calibrated, so that *all of
    /// them together* meet the target (ε, δ), and this run's steps are appended to it.
    /// `None`: the run's own `ledger.json` in the run folder.
    pub shared_ledger: Option<PathBuf>,
    /// The ledger purpose of this run's steps; `None`: [`LEDGER_PURPOSE`].
    pub purpose: Option<String>,
    /// Cache the hidden states entering the lowest trainable block per training example
    /// ([`PrefixCache`]): the frozen blocks then run once per example instead of once per step.
    /// Costs T_i × d floats per example seen.
    pub prefix_cache: bool,
}

/// A DP training run (see the module documentation).
pub struct DpTrainer {
    config: TrainConfig,
    model: Model,
    params: TrainableParams,
    train: EncodedSet,
    eval: Option<EncodedSet>,
    run_dir: PathBuf,
    plan: TrainPlan,
    clipping: Clipping,
    sampler: PoissonSampler,
    optimizer: DpOptimizer,
    sampling_rng: NoiseRng,
    noise_rng: NoiseRng,
    ledger: Option<PrivacyLedger>,
    /// Steps recorded in the ledger (≥ `step`: chunks are recorded before they run).
    ledger_steps: u64,
    step: u64,
    resumed_at: u64,
    stop_after: u64,
    epsilon_so_far: Option<f64>,
    last_eval: Option<EvalMetrics>,
    /// Mechanisms of earlier stages in a shared ledger (composed with this run's steps).
    prior: Vec<Mechanism>,
    ledger_path: PathBuf,
    purpose: String,
    prefix: Option<PrefixCache>,
}

impl DpTrainer {
    /// Sets up a run (see the module documentation, step 1): applies the head and trainable
    /// set to `model`, tokenizes `train` (and the held-out `eval`), plans T and q, calibrates σ,
    /// and creates (or, with [`Start::Resume`], reopens) the run folder's ledger and state.
    ///
    /// Privacy: σ is the smallest noise multiplier for which the PLD accountant certifies that
    /// T Poisson-sampled Gaussian steps with rate q are (ε, δ)-DP; the training data's size n is
    /// treated as public, as usual.
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
        let labels = match train {
            TrainData::Dataset(d) => d.labels.clone(),
            TrainData::Encoded(_) => Vec::new(),
        };
        prepare_model(
            &mut model,
            config.task,
            labels,
            &config.trainable,
            config.init_seed,
        )?;
        let params = TrainableParams::of(&model)?;

        let train_set = match train {
            TrainData::Dataset(d) => EncodedSet::new(&model, d, config.task, config.max_seq_len)?,
            TrainData::Encoded(e) => e.clone(),
        };
        let eval_set = match eval {
            Some(d) => Some(EncodedSet::new(&model, d, config.task, config.max_seq_len)?),
            None => None,
        };
        let n = train_set.len();
        if config.batch_size > n {
            return Err(DpError::Config(format!(
                "batch size {} exceeds the {n} training examples",
                config.batch_size
            )));
        }
        let (q, total_steps) = match config.duration {
            Duration::Epochs(k) => sampling_from_epochs(n as u64, config.batch_size as u64, k)?,
            Duration::Steps(t) => (config.batch_size as f64 / n as f64, t),
        };
        let sampler = PoissonSampler::new(n, q)?;
        let clipping = config.clipping();
        let ledger_path = options
            .shared_ledger
            .clone()
            .unwrap_or_else(|| run_dir.join("ledger.json"));
        let purpose = options
            .purpose
            .clone()
            .unwrap_or_else(|| LEDGER_PURPOSE.to_string());
        let prior = match (&options.shared_ledger, config.privacy) {
            (Some(path), PrivacyTarget::Private { .. }) => {
                prior_mechanisms(path, &purpose, config.seed.is_some())?
            }
            _ => Vec::new(),
        };
        let noise_multiplier = match config.privacy {
            PrivacyTarget::Private { epsilon, delta } => {
                let template = Mechanism::sampled_gaussian(q, 1.0, total_steps)?;
                calibrate_sigma(&PldAccountant::default(), &prior, &template, epsilon, delta)?
            }
            PrivacyTarget::NonPrivate => 0.0,
        };
        let plan = TrainPlan {
            examples: n,
            sampling_rate: q,
            expected_batch_size: sampler.expected_batch_size(),
            total_steps,
            noise_multiplier,
            clip: clipping.sensitivity(),
            privacy: config.privacy,
            seeded: config.seed.is_some(),
            trainable: params.names.clone(),
            trainable_scalars: params.num_scalars(),
        };
        let opt_config = DpOptimizerConfig {
            optimizer: config.optimizer,
            schedule: LrSchedule {
                peak_lr: config.lr,
                warmup_steps: config.warmup_steps.min(total_steps),
                total_steps,
            },
            noise_multiplier,
            clipping,
            expected_batch_size: plan.expected_batch_size,
        };
        let optimizer = DpOptimizer::new(opt_config, &params.vars)?
            .with_weight_decay_mask(params.weight_decay_mask())?;
        // Two independent streams: which examples are drawn must not be correlated with the
        // noise. With a seed both derive from it; otherwise both are keyed by the OS.
        let (sampling_rng, noise_rng) = match config.seed {
            Some(seed) => {
                let mut root = NoiseRng::from_seed(seed);
                (root.split(), root.split())
            }
            None => (NoiseRng::from_os_rng()?, NoiseRng::from_os_rng()?),
        };

        let mut trainer = Self {
            config,
            model,
            params,
            train: train_set,
            eval: eval_set,
            run_dir: run_dir.to_path_buf(),
            plan,
            clipping,
            sampler,
            optimizer,
            sampling_rng,
            noise_rng,
            ledger: None,
            ledger_steps: 0,
            step: 0,
            resumed_at: 0,
            stop_after: u64::MAX,
            epsilon_so_far: None,
            last_eval: None,
            prior,
            ledger_path,
            purpose,
            prefix: None,
        };
        let low = trainer.model.lowest_trainable_block();
        if options.prefix_cache && !trainer.model.embeddings_trainable() && low > 0 {
            trainer.prefix = Some(PrefixCache::new(low, trainer.train.len()));
        }
        match start {
            Start::Fresh => trainer.start_fresh()?,
            Start::Resume => trainer.resume()?,
        }
        Ok(trainer)
    }

    fn ledger_path(&self) -> PathBuf {
        self.ledger_path.clone()
    }

    /// This run's ledger purpose (the seeded variant when the noise comes from a seed).
    fn ledger_purpose(&self) -> String {
        purpose_label(&self.purpose, self.plan.seeded)
    }

    fn metrics_path(&self) -> PathBuf {
        self.run_dir.join("metrics.jsonl")
    }

    fn start_fresh(&mut self) -> Result<()> {
        let shared = self.ledger_path != self.run_dir.join("ledger.json");
        if (!shared && self.ledger_path().exists()) || has_checkpoint(&self.run_dir) {
            return Err(DpError::Config(format!(
                "{} already holds a run (ledger or checkpoint): resume it, or choose another \
                 output folder",
                self.run_dir.display()
            )));
        }
        std::fs::create_dir_all(&self.run_dir).map_err(|e| io_err(&self.run_dir, e))?;
        if let PrivacyTarget::Private { delta, .. } = self.config.privacy {
            let ledger = if shared {
                let ledger = PrivacyLedger::open(self.ledger_path())?;
                check_ledger_delta(&ledger, delta)?;
                let purpose = self.ledger_purpose();
                if ledger.entries().iter().any(|e| e.purpose == purpose) {
                    return Err(DpError::State(format!(
                        "the ledger {} already records `{purpose}` steps: this stage ran before \
                         (resume it rather than start it again)",
                        self.ledger_path.display()
                    )));
                }
                ledger
            } else {
                PrivacyLedger::create(self.ledger_path(), delta)?
            };
            self.ledger = Some(ledger);
            self.epsilon_so_far = Some(self.epsilon_after(0)?);
        }
        let path = self.metrics_path();
        std::fs::File::create(&path).map_err(|e| io_err(&path, e))?;
        Ok(())
    }

    fn resume(&mut self) -> Result<()> {
        let ckpt = load_checkpoint(&self.run_dir, &self.model.device)?;
        let s = &ckpt.state;
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
        for (name, var) in self.params.names.iter().zip(&self.params.vars) {
            let t = ckpt.params.get(name).ok_or_else(|| {
                DpError::State(format!("checkpoint lacks trainable parameter `{name}`"))
            })?;
            if t.dims() != var.dims() {
                return Err(DpError::State(format!(
                    "checkpoint parameter `{name}` has shape {:?}, the model {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        let opt = OptimizerCheckpoint {
            meta: s.optimizer.clone(),
            tensors: ckpt.optimizer_tensors.clone(),
        };
        self.optimizer = DpOptimizer::restore(*self.optimizer.config(), &self.params.vars, &opt)?;
        self.sampling_rng = NoiseRng::from_state(&s.sampling_rng)?;
        self.noise_rng = NoiseRng::from_state(&s.noise_rng)?;
        self.step = s.step;
        self.resumed_at = s.step;
        if let PrivacyTarget::Private { delta, .. } = self.config.privacy {
            let ledger = PrivacyLedger::open(self.ledger_path())?;
            check_ledger_delta(&ledger, delta)?;
            let purpose = self.ledger_purpose();
            self.ledger_steps = ledger
                .entries()
                .iter()
                .filter(|e| e.purpose == purpose)
                .map(|e| e.steps)
                .sum();
            if self.ledger_steps < self.step {
                return Err(DpError::State(format!(
                    "the ledger records {} training steps but the checkpoint is at step {}",
                    self.ledger_steps, self.step
                )));
            }
            self.ledger = Some(ledger);
            self.epsilon_so_far = Some(self.epsilon_after(self.step)?);
        }
        // Metrics after the checkpoint belong to steps that will run again.
        self.truncate_metrics()?;
        Ok(())
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
                if self.ledger.is_some() {
                    self.epsilon_so_far = Some(self.epsilon_after(self.step)?);
                }
                metrics.epsilon = self.epsilon_so_far;
                self.append_metrics("step", &metrics)?;
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
            if let Some(every) = self.config.checkpoint_every
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
        let spent = self.ledger.as_ref().map(PrivacyLedger::spent);
        let summary = TrainSummary {
            plan: self.plan.clone(),
            steps: self.step,
            completed,
            epsilon: spent.and_then(|s| s.pld.epsilon),
            epsilon_rdp: spent.and_then(|s| s.rdp.epsilon),
            delta: spent.map(|s| s.pld.delta),
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
        let micro_batches = split_by_tokens(&batch, &self.train.lengths, self.config.max_tokens)?;
        let mut acc = ClippedSumAccumulator::new();
        let mut loss_sum = 0.0;
        let mut clipped = 0usize;
        for indices in &micro_batches {
            let (b, labels) = self.train.batch(&self.model, indices)?;
            let recorder = Recorder::new();
            let ctx = Ctx::recording(&recorder);
            let out = match self.prefix.as_mut() {
                Some(cache) => {
                    let h = cache.states(&self.model, &self.train, indices, &b)?;
                    self.model.forward_from(&h, &b, cache.upto(), ctx)?
                }
                None => self.model.forward_train(&b, ctx)?,
            };
            let mask = self.train.loss_mask(&self.model, indices, b.ids.dim(1)?)?;
            let losses =
                per_example_loss_masked(&self.model, &out, &b, labels.as_ref(), mask.as_ref())?;
            loss_sum += to_f64s(&losses)?.iter().sum::<f64>();
            // The backward pass only fills the records (input, ∂output) of trainable layers; the
            // gradient store it returns (biases' batch sums) is deliberately dropped.
            losses.sum_all()?.backward()?;
            let groups = group_records(recorder.take(), &self.params, &b.attn)?;
            let out = clip_groups(&groups, &self.params, &self.clipping, NormMethod::Auto)?;
            clipped += out.factors.iter().filter(|&&c| c < 1.0).count();
            acc.add(&out)?;
        }
        let realised = acc.examples();
        let sums = acc.into_sums();
        let info = self
            .optimizer
            .step(&self.params.vars, sums.as_deref(), &mut self.noise_rng)?;
        let metrics = StepMetrics {
            step: info.step,
            epoch: info.step as f64 * self.plan.sampling_rate,
            lr: info.lr,
            loss: (realised > 0).then(|| loss_sum / realised as f64),
            batch_size: realised,
            micro_batches: micro_batches.len(),
            clipped_fraction: match self.clipping {
                Clipping::Off => None,
                _ if realised == 0 => Some(0.0),
                _ => Some(clipped as f64 / realised as f64),
            },
            epsilon: None,
            examples_per_s: 0.0,
            elapsed_s: 0.0,
        };
        Ok((info, metrics))
    }

    /// Records the next chunk of steps in the ledger when the steps about to run are not yet in
    /// it. Chunks end at checkpoint steps (or at T), so an interrupted and resumed run records
    /// exactly the entries of an uninterrupted one; the ledger is always ahead of (never behind)
    /// the steps executed.
    fn record_chunk_if_due(&mut self) -> Result<()> {
        let purpose = self.ledger_purpose();
        let Some(ledger) = self.ledger.as_mut() else {
            return Ok(());
        };
        if self.ledger_steps > self.step {
            return Ok(());
        }
        let total = self.plan.total_steps;
        let end = match self.config.checkpoint_every {
            Some(every) => ((self.step / every + 1) * every).min(total),
            None => total,
        };
        let steps = end - self.step;
        let clip = self.plan.clip.ok_or_else(|| {
            DpError::Config("a private run needs a bounded sensitivity (clipping)".into())
        })?;
        ledger.record(LedgerEntry::sampled_gaussian(
            self.plan.sampling_rate,
            self.plan.noise_multiplier,
            steps,
            clip,
            purpose,
        ))?;
        self.ledger_steps = end;
        Ok(())
    }

    /// ε (PLD, target δ) of the earlier stages (shared ledger) and the first `steps` steps of
    /// this run, composed.
    fn epsilon_after(&self, steps: u64) -> Result<f64> {
        let PrivacyTarget::Private { delta, .. } = self.config.privacy else {
            return Ok(f64::INFINITY);
        };
        let mut events = self.prior.clone();
        if steps > 0 {
            events.push(Mechanism::sampled_gaussian(
                self.plan.sampling_rate,
                self.plan.noise_multiplier,
                steps,
            )?);
        }
        if events.is_empty() {
            return Ok(0.0);
        }
        Ok(PldAccountant::default().epsilon(&events, delta)?)
    }

    fn evaluate_held_out(&mut self) -> Result<EvalMetrics> {
        let Some(set) = &self.eval else {
            return Err(DpError::Config("no held-out set to evaluate".into()));
        };
        let m = evaluate(&self.model, set, self.config.max_tokens)?;
        #[derive(Serialize)]
        struct EvalLine<'a> {
            step: u64,
            #[serde(flatten)]
            metrics: &'a EvalMetrics,
        }
        self.append_metrics(
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
        let params: HashMap<String, Tensor> = self
            .params
            .names
            .iter()
            .zip(&self.params.vars)
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect();
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

    /// Appends one JSON line `{"kind": kind, ...value}` to `metrics.jsonl`.
    fn append_metrics<T: Serialize>(&self, kind: &str, value: &T) -> Result<()> {
        let mut v = serde_json::to_value(value)
            .map_err(|e| DpError::State(format!("serialising metrics: {e}")))?;
        if let serde_json::Value::Object(map) = &mut v {
            map.insert("kind".into(), kind.into());
        }
        let path = self.metrics_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        writeln!(f, "{v}").map_err(|e| io_err(&path, e))
    }

    fn truncate_metrics(&self) -> Result<()> {
        let path = self.metrics_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(&path, e)),
        };
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s <= self.step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        dpselft_fsio::write_bytes_atomic(&path, kept.as_bytes()).map_err(|e| io_err(&path, e))
    }
}

/// Puts the task head on a pretrained model and makes `trainable` (a spec such as `head,last:2`)
/// its trainable set: a classifier over `labels` (mean-pooled for encoders, last-token for
/// decoders, initialised from `init_seed`) for classification; the model's own LM head for
/// language modelling.
pub fn prepare_model(
    model: &mut Model,
    task: Task,
    labels: Vec<String>,
    trainable: &str,
    init_seed: u64,
) -> Result<()> {
    match task {
        Task::Classify => {
            if labels.is_empty() {
                return Err(DpError::Config(
                    "task classify: the training data have no labels (pass a labelled data \
                     set)"
                        .into(),
                ));
            }
            let pooling = if model.is_decoder() {
                Pooling::LastToken
            } else {
                Pooling::Mean
            };
            model.set_classifier(labels, pooling, init_seed)?;
        }
        Task::Lm => {
            if model.head != Head::CausalLm {
                return Err(DpError::Config(
                    "task lm needs a causal LM (its LM head); this model has none".into(),
                ));
            }
        }
    }
    let spec = TrainableSpec::parse(trainable)?;
    trainable::apply(model, &spec, init_seed)?;
    Ok(())
}

/// A ledger purpose, with the seeded marker when the noise is reproducible from a seed.
fn purpose_label(purpose: &str, seeded: bool) -> String {
    if !seeded {
        purpose.to_string()
    } else if purpose == LEDGER_PURPOSE {
        LEDGER_PURPOSE_SEEDED.to_string()
    } else {
        format!("{purpose} (seeded: noise reproducible from the seed)")
    }
}

/// The mechanisms of a shared ledger that belong to *other* stages than `purpose` (this run's
/// own entries, on resumption, are accounted as its steps).
fn prior_mechanisms(path: &Path, purpose: &str, seeded: bool) -> Result<Vec<Mechanism>> {
    let ledger = PrivacyLedger::open(path)?;
    let own = purpose_label(purpose, seeded);
    ledger
        .entries()
        .iter()
        .filter(|e| e.purpose != own)
        .map(|e| Ok(e.mechanism()?))
        .collect()
}

fn check_ledger_delta(ledger: &PrivacyLedger, delta: f64) -> Result<()> {
    if ledger.delta() != delta {
        return Err(DpError::State(format!(
            "the ledger {} records δ = {:e}, this configuration asks for δ = {delta:e}",
            ledger.path().display(),
            ledger.delta()
        )));
    }
    Ok(())
}
