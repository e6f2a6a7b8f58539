//! The cost of one DP step against a non-private step on the same trainable set
//! (`dpselft bench dp-overhead`, which adds model loading, memory probes in child processes and
//! the printed table).
//!
//! `dpselft bench dp-overhead [--models minilm,smollm2] [--batch 32] [--seq-len 128] [--reps 3]
//! [--json OUT]`: the cost of a DP step against a non-private step on the same trainable set.
//!
//! Per row (a model and a trainable set), in one process and interleaved (one warm-up of each
//! kind, then R pairs, the order alternating within the pairs):
//! - **non-private step**: forward (plain autograd), backward, AdamW update on the summed
//!   gradient (divided by B);
//! - **DP step**, with the functions `DpTrainer::train_step` uses for one micro-batch:
//!   `record_grads` (recording forward, backward with autograd's gradients dropped, records
//!   grouped per parameter), `clip_groups` (per-example norms, flat clipping at C = 1, clipped
//!   sums), Gaussian noise σC (σ = 1) and the AdamW update.
//!
//! Both kinds run on the same fixed batch of B examples of exactly L tokens (no padding): a
//! fixed English passage tokenized by the model's tokenizer, repeated, example i starting 17·i
//! tokens into the stream (encoders get `[CLS]` … `[SEP]` around L − 2 tokens); the built-in
//! random `tiny` models use seeded pseudo-random token ids. Classification task (2 labels,
//! alternating), mean pooling for encoders and last-token pooling for decoders, as the trainer.
//!
//! On a GPU (`--device cuda:N`) the clock is read at each phase boundary only after the device
//! has finished its queued work; the memory probes are skipped there (they read the host's
//! resident size).
//!
//! Memory: each kind of step runs once more in a child process of its own (this binary with a
//! hidden `--probe` flag) that sets the row up, returns freed memory to the OS at once (jemalloc
//! `dirty_decay_ms:0,muzzy_decay_ms:0`), resets the kernel's peak-RSS counter (`clear_refs` 5),
//! runs one step and reads the peak (VmHWM). Reported: that peak (the process: weights, data and
//! the step) and the growth over the resident size just before the step.

use candle_core::{DType, Device, Tensor};
use dpselft_dp::{
    ClipOutput, ClippedSumAccumulator, Clipping, DpOptimizer, DpOptimizerConfig, HeadChoice,
    LrSchedule, MicroBatch, NoiseRng, NormMethod, OptimizerKind, ParamGroups, Task,
    TrainableParams, clip_groups, per_example_loss, prepare_model, record_grads,
};
use dpselft_model::{
    Batch, BertConfig, Ctx, DeviceSpec, LlamaConfig, Model, ModelConfig, TrainableSpec,
};
use dpselft_selft::{Result, SelftError};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The shape of the benchmark's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepShape {
    /// Examples per step (one micro-batch).
    pub batch: usize,
    /// Tokens per example.
    pub seq_len: usize,
}

/// A fixed passage (written for this benchmark) that the real models' inputs are cut from.
const PASSAGE: &str = "The harbour town woke slowly under a grey sky. Fishing boats came back \
    before noon with their holds half full, and the men who unloaded them talked about the \
    weather, the price of diesel and the new regulations from the ministry. In the market square \
    a baker sold bread still warm from the oven, while children ran between the stalls with a \
    dog that belonged to nobody in particular. The schoolteacher, who had lived there for thirty \
    years, wrote letters to the newspaper about the state of the old lighthouse, which had not \
    been painted since the war. Nobody answered them, but everyone read them. In the afternoon \
    the wind turned to the east, the ferry was cancelled, and the cafe by the pier filled with \
    travellers who would now spend the night in a place they had meant only to pass through.";

/// The two kinds of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain autograd, no clipping, no noise.
    NonPrivate,
    /// The DP step.
    Dp,
}

impl Kind {
    /// The kind as the `--probe` flag names it.
    pub fn flag(self) -> &'static str {
        match self {
            Kind::NonPrivate => "non-private",
            Kind::Dp => "dp",
        }
    }
}

/// Seconds spent in each phase of one step.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Phases {
    /// The whole step.
    pub total: f64,
    /// Forward and backward (for the DP step `record_grads`: recording, records grouped).
    pub forward_backward: f64,
    /// DP only: `clip_groups` (per-example norms, factors, clipped sums).
    pub norms_clip: f64,
    /// Noise (DP only) and the optimizer update.
    pub noise_optimizer: f64,
}

/// Peak memory of one kind of step, measured in a child process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MemoryProbe {
    /// Resident size just before the step (model, data, set-up), MiB.
    pub before_mib: f64,
    /// Peak resident size of the process during the step (VmHWM after a reset), MiB.
    pub peak_mib: f64,
    /// peak − before, MiB.
    pub growth_mib: f64,
}

/// Medians over the timed steps of one kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindResult {
    /// Median of each phase (s).
    pub median: Phases,
    /// Every timed step's total (s).
    pub samples_s: Vec<f64>,
    /// Peak memory (None with --no-memory).
    pub memory: Option<MemoryProbe>,
}

/// One row of the benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The model (id or path).
    pub model: String,
    /// The trainable set.
    pub trainable: String,
    /// Trainable scalars.
    pub trainable_scalars: usize,
    /// The non-private step.
    pub non_private: KindResult,
    /// The DP step.
    pub dp: KindResult,
    /// Median DP step / median non-private step.
    pub time_ratio: f64,
    /// Median norms+clipping / median DP step.
    pub dp_share_norms_clip: f64,
    /// Median noise+optimizer / median DP step.
    pub dp_share_noise_optimizer: f64,
    /// DP peak / non-private peak (process resident size).
    pub memory_peak_ratio: Option<f64>,
    /// DP growth / non-private growth during the step.
    pub memory_growth_ratio: Option<f64>,
    /// The same step in PyTorch and Opacus (`--peer`), interleaved with ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<crate::peer::PeerResult>,
}

/// The whole report (the JSON file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Examples per step.
    pub batch: usize,
    /// Tokens per example.
    pub seq_len: usize,
    /// Timed steps of each kind per row.
    pub reps: usize,
    /// How the inputs, times and memory were obtained.
    pub method: Vec<String>,
    /// /proc/loadavg at the start and the end (other load on the machine skews times).
    pub loadavg: [String; 2],
    /// Logical CPUs.
    pub cpus: usize,
    /// The device the steps ran on (reports before it was recorded: the CPU).
    #[serde(default)]
    pub device: DeviceSpec,
    /// The rows.
    pub rows: Vec<Row>,
    /// With `--peer`: the rows that have a peer, side by side (medians).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_rows: Vec<crate::peer::PeerRow>,
    /// With `--peer`: what the peer ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_versions: Option<crate::peer::PeerVersions>,
    /// Wall time of the whole benchmark (s).
    pub wall_s: f64,
}

/// How the inputs, times and memory are obtained (the report says so).
pub fn method_notes(shape: StepShape, reps: usize) -> Vec<String> {
    vec![
        format!(
            "inputs: one fixed batch of {} examples x {} tokens, no padding; real models: a fixed \
             English passage tokenized, repeated and cut (example i starts 17*i tokens in); \
             tiny models: seeded pseudo-random token ids; classification, 2 labels",
            shape.batch, shape.seq_len
        ),
        "non-private step: plain forward, backward, AdamW on the summed gradient / B".into(),
        "DP step: record_grads (recording forward, backward, records grouped), clip_groups (flat \
         C = 1), noise (sigma = 1), AdamW: what DpTrainer::train_step does for one micro-batch"
            .into(),
        format!(
            "times: one warm-up step of each kind, then {} interleaved pairs (order alternating); \
             medians",
            reps
        ),
        "memory: each kind once more in its own child process, jemalloc returning freed pages at \
         once; peak = VmHWM during the step (reset by clear_refs before it), growth = peak - \
         resident size just before the step"
            .into(),
    ]
}

/// The default trainable sets of a model.
pub fn default_rows(model_id: &str, model: &Model) -> Vec<TrainableSpec> {
    let v = |s: &[&str]| {
        s.iter()
            .map(|x| TrainableSpec::parse(x).expect("valid built-in specs"))
            .collect()
    };
    match model_id {
        "tiny" | "tiny-llama" => v(&["head", "head,last:1", "all"]),
        _ if model.is_causal() => v(&["head,last:2", "head,last:8"]),
        _ => v(&["head", "head,last:2", "all"]),
    }
}

/// The built-in random models (no tokenizer; fed random ids), on `device`.
pub fn tiny_model(id: &str, device: &Device) -> Result<Model> {
    let cfg = match id {
        "tiny" => ModelConfig::Bert(BertConfig {
            vocab_size: 64,
            hidden_size: 16,
            intermediate_size: 32,
            max_position_embeddings: 512,
            ..BertConfig::tiny()
        }),
        _ => ModelConfig::Llama(LlamaConfig {
            vocab_size: 64,
            hidden_size: 16,
            intermediate_size: 32,
            max_position_embeddings: 512,
            ..LlamaConfig::tiny(false)
        }),
    };
    Ok(Model::random(cfg, 0.2, 11, DType::F32, device)?)
}

/// `batch` sequences of `len` token ids drawn uniformly from `[lowest, vocab)` (clear of the
/// special ids below `lowest`), reproducible from `seed`.
pub fn random_ids(
    (batch, len): (usize, usize),
    vocab: usize,
    lowest: usize,
    seed: u64,
) -> Vec<Vec<u32>> {
    let span = vocab.saturating_sub(lowest).max(1);
    let mut rng = NoiseRng::from_seed(seed);
    (0..batch)
        .map(|_| {
            (0..len)
                .map(|_| {
                    let k = (rng.uniform_f64() * span as f64) as usize;
                    (lowest + k.min(span - 1)) as u32
                })
                .collect()
        })
        .collect()
}

/// B sequences of exactly L tokens (see the module documentation).
fn inputs(model: &Model, batch: usize, seq_len: usize) -> Result<Vec<Vec<u32>>> {
    let Some(tok) = model.tokenizer.as_ref() else {
        return Ok(random_ids(
            (batch, seq_len),
            model.config.vocab_size(),
            3,
            5,
        ));
    };
    let stream = dpselft_model::tokenizer::encode(tok, PASSAGE, false)?;
    // Encoders: [CLS] … [SEP] as the model's own special tokens around an empty text.
    let (prefix, suffix) = if !model.adds_special_tokens() {
        (Vec::new(), Vec::new())
    } else {
        let empty = dpselft_model::tokenizer::encode(tok, "", true)?;
        match empty.as_slice() {
            [cls, sep] => (vec![*cls], vec![*sep]),
            _ => (Vec::new(), Vec::new()),
        }
    };
    let body = seq_len
        .checked_sub(prefix.len() + suffix.len())
        .filter(|&b| b > 0)
        .ok_or_else(|| SelftError::Config(format!("--seq-len {seq_len}: too short")))?;
    Ok((0..batch)
        .map(|i| {
            let mut s = prefix.clone();
            s.extend((0..body).map(|k| stream[(17 * i + k) % stream.len()]));
            s.extend_from_slice(&suffix);
            s
        })
        .collect())
}

/// One row, set up: the model with its head and trainable set, the batch and two optimizers.
pub struct StepBench {
    model: Model,
    params: TrainableParams,
    batch: Batch,
    labels: Tensor,
    clipping: Clipping,
    dp_opt: DpOptimizer,
    np_opt: DpOptimizer,
    rng: NoiseRng,
}

impl StepBench {
    /// A copy of `base` with a 2-label head and `spec` trainable, and its fixed batch.
    pub fn new(base: &Model, spec: &TrainableSpec, shape: StepShape) -> Result<Self> {
        let mut model = base.clone();
        let head = HeadChoice::New(vec!["a".into(), "b".into()]);
        prepare_model(&mut model, Task::Classify, head, spec, 0)?;
        let params = TrainableParams::of(&model)?;
        let seqs = inputs(&model, shape.batch, shape.seq_len)?;
        let pad = model.special.pad.unwrap_or(0);
        let batch = Batch::from_ids(&seqs, pad, false, &model.device)?;
        let labels: Vec<u32> = (0..shape.batch as u32).map(|i| i % 2).collect();
        let labels = Tensor::new(labels.as_slice(), &model.device)?;
        let clipping = Clipping::Flat { max_norm: 1.0 };
        let opt = |noise_multiplier: f64, clipping: Clipping| {
            DpOptimizer::new(
                DpOptimizerConfig {
                    optimizer: OptimizerKind::default(),
                    schedule: LrSchedule::constant(1e-4),
                    noise_multiplier,
                    clipping,
                    expected_batch_size: shape.batch as f64,
                },
                &params.vars,
            )?
            .with_weight_decay_mask(params.weight_decay_mask())
        };
        let dp_opt = opt(1.0, clipping)?;
        let np_opt = opt(0.0, Clipping::Off)?;
        Ok(Self {
            model,
            params,
            batch,
            labels,
            clipping,
            dp_opt,
            np_opt,
            rng: NoiseRng::from_seed(9),
        })
    }

    /// Trainable scalars of the row.
    pub fn trainable_scalars(&self) -> usize {
        self.params.num_scalars()
    }

    /// The DP step's private core on the batch, without an update: the per-example norms and
    /// the clipped sums, as the DP step computes them.
    pub fn clip_output(&self) -> Result<ClipOutput> {
        let recorded = record_grads(&self.model, &self.params, self.micro_batch())?;
        self.clip(&recorded.groups)
    }

    /// The row's fixed batch as one micro-batch.
    fn micro_batch(&self) -> MicroBatch<'_> {
        MicroBatch {
            batch: &self.batch,
            labels: Some(&self.labels),
            loss_mask: None,
            prefix: None,
        }
    }

    /// Per-example norms, flat clipping and clipped sums of the recorded groups.
    fn clip(&self, groups: &ParamGroups) -> Result<ClipOutput> {
        Ok(clip_groups(
            groups,
            &self.params,
            &self.clipping,
            NormMethod::Auto,
        )?)
    }

    /// Every trainable scalar, in [`TrainableParams`] order, on the host.
    pub fn trainable_values(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.trainable_scalars());
        for v in &self.params.vars {
            out.extend(v.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// One step of `kind`, timed by phase.
    pub fn step(&mut self, kind: Kind) -> Result<Phases> {
        match kind {
            Kind::NonPrivate => self.non_private_step(),
            Kind::Dp => self.dp_step(),
        }
    }

    /// The clock, once the device has finished the work queued so far (GPU kernels run
    /// asynchronously: without this a phase would be charged its successor's kernels).
    fn now(&self) -> Result<Instant> {
        dpselft_model::device::synchronize(&self.model.device)?;
        Ok(Instant::now())
    }

    fn non_private_step(&mut self) -> Result<Phases> {
        let t0 = self.now()?;
        let out = self.model.forward_train(&self.batch, Ctx::plain())?;
        let losses = per_example_loss(&self.model, &out, &self.batch, Some(&self.labels))?;
        let grads = losses.sum_all()?.backward()?;
        let sums = self
            .params
            .vars
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => v.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let t1 = self.now()?;
        self.np_opt
            .step(&self.params.vars, Some(&sums), &mut self.rng)?;
        let t2 = self.now()?;
        Ok(Phases {
            total: (t2 - t0).as_secs_f64(),
            forward_backward: (t1 - t0).as_secs_f64(),
            norms_clip: 0.0,
            noise_optimizer: (t2 - t1).as_secs_f64(),
        })
    }

    fn dp_step(&mut self) -> Result<Phases> {
        let t0 = self.now()?;
        let recorded = record_grads(&self.model, &self.params, self.micro_batch())?;
        let t1 = self.now()?;
        let clipped = self.clip(&recorded.groups)?;
        let mut acc = ClippedSumAccumulator::new();
        acc.add(&clipped)?;
        let sums = acc.into_sums();
        let t2 = self.now()?;
        self.dp_opt
            .step(&self.params.vars, sums.as_deref(), &mut self.rng)?;
        let t3 = self.now()?;
        Ok(Phases {
            total: (t3 - t0).as_secs_f64(),
            forward_backward: (t1 - t0).as_secs_f64(),
            norms_clip: (t2 - t1).as_secs_f64(),
            noise_optimizer: (t3 - t2).as_secs_f64(),
        })
    }
}

/// The median (NaN for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The median of each phase.
pub fn median_phases(samples: &[Phases]) -> Phases {
    let m = |f: fn(&Phases) -> f64| median(samples.iter().map(f).collect());
    Phases {
        total: m(|p| p.total),
        forward_backward: m(|p| p.forward_backward),
        norms_clip: m(|p| p.norms_clip),
        noise_optimizer: m(|p| p.noise_optimizer),
    }
}

/// One warm-up step of each kind, then `reps` interleaved pairs (the order alternating within
/// the pairs); `each` sees every pair's (non-private, DP) phases. Returns every timed step, by
/// kind: (non-private, DP).
pub fn time_interleaved(
    bench: &mut StepBench,
    reps: usize,
    mut each: impl FnMut(usize, &Phases, &Phases),
) -> Result<(Vec<Phases>, Vec<Phases>)> {
    bench.step(Kind::NonPrivate)?;
    bench.step(Kind::Dp)?;
    let (mut np, mut dp) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for r in 0..reps {
        let order = if r % 2 == 0 {
            [Kind::NonPrivate, Kind::Dp]
        } else {
            [Kind::Dp, Kind::NonPrivate]
        };
        for kind in order {
            let p = bench.step(kind)?;
            match kind {
                Kind::NonPrivate => np.push(p),
                Kind::Dp => dp.push(p),
            }
        }
        each(r, &np[r], &dp[r]);
    }
    Ok((np, dp))
}

impl Row {
    /// A row from its timed steps and (optionally) the memory probes of each kind.
    pub fn from_samples(
        model: &str,
        trainable: &TrainableSpec,
        trainable_scalars: usize,
        (np, dp): (&[Phases], &[Phases]),
        (np_mem, dp_mem): (Option<MemoryProbe>, Option<MemoryProbe>),
    ) -> Self {
        let (np_med, dp_med) = (median_phases(np), median_phases(dp));
        Self {
            model: model.to_string(),
            trainable: trainable.to_string(),
            trainable_scalars,
            time_ratio: dp_med.total / np_med.total,
            dp_share_norms_clip: dp_med.norms_clip / dp_med.total,
            dp_share_noise_optimizer: dp_med.noise_optimizer / dp_med.total,
            memory_peak_ratio: np_mem.zip(dp_mem).map(|(n, d)| d.peak_mib / n.peak_mib),
            memory_growth_ratio: np_mem.zip(dp_mem).map(|(n, d)| d.growth_mib / n.growth_mib),
            peer: None,
            non_private: KindResult {
                median: np_med,
                samples_s: np.iter().map(|p| p.total).collect(),
                memory: np_mem,
            },
            dp: KindResult {
                median: dp_med,
                samples_s: dp.iter().map(|p| p.total).collect(),
                memory: dp_mem,
            },
        }
    }
}
