//! `dpselft bench`: measurements of the engine itself.
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
//! Memory: each kind of step runs once more in a child process of its own (this binary with a
//! hidden `--probe` flag) that sets the row up, returns freed memory to the OS at once (jemalloc
//! `dirty_decay_ms:0,muzzy_decay_ms:0`), resets the kernel's peak-RSS counter (`clear_refs` 5),
//! runs one step and reads the peak (VmHWM). Reported: that peak (the process: weights, data and
//! the step) and the growth over the resident size just before the step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use dpselft_dp::{
    ClippedSumAccumulator, Clipping, DpOptimizer, DpOptimizerConfig, HeadChoice, LrSchedule,
    MicroBatch, NoiseRng, NormMethod, OptimizerKind, Task, TrainableParams, clip_groups,
    per_example_loss, prepare_model, record_grads,
};
use dpselft_model::{Batch, BertConfig, Ctx, LlamaConfig, Model, ModelConfig, TrainableSpec};
use serde::{Deserialize, Serialize};

use super::UsageError;
use super::fetch_assets::resolve_model;

/// Arguments of `dpselft bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The benchmark.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Time and peak memory of a DP step against a non-private step on the same trainable set.
    DpOverhead(DpOverheadArgs),
    /// The privacy–utility grid: dp-selft against every baseline at the same (ε, δ).
    Utility(Box<super::bench_utility::UtilityArgs>),
}

/// Arguments of `dpselft bench dp-overhead`.
#[derive(clap::Args, Debug, Clone)]
pub struct DpOverheadArgs {
    /// Models, comma-separated: asset ids (`minilm`, `smollm2`), model paths, or the built-in
    /// random `tiny` (BERT) and `tiny-llama` (for tests).
    #[arg(long, default_value = "minilm,smollm2", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Trainable sets to measure (repeat the flag); default per model: minilm `head`,
    /// `head,last:2`, `all`; smollm2 `head,last:2`, `head,last:8`; tiny `head`, `head,last:1`,
    /// `all`; another encoder as minilm, another decoder as smollm2.
    #[arg(long)]
    pub trainable: Vec<String>,
    /// Examples per step (one micro-batch).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Timed steps of each kind per row (after one warm-up of each).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Skip the peak-memory child processes.
    #[arg(long)]
    pub no_memory: bool,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    /// Internal: run one step of this kind (`dp` or `non-private`) and print its memory.
    #[arg(long, hide = true)]
    pub probe: Option<String>,
}

/// Runs `dpselft bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::DpOverhead(args) => match &args.probe {
            Some(kind) => probe(&args, kind),
            None => dp_overhead(&args).map(|_| ()),
        },
        BenchCommand::Utility(args) => super::bench_utility::run(*args),
    }
}

fn usage(msg: String) -> anyhow::Error {
    UsageError(msg).into()
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
enum Kind {
    NonPrivate,
    Dp,
}

impl Kind {
    fn flag(self) -> &'static str {
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
    /// The rows.
    pub rows: Vec<Row>,
    /// Wall time of the whole benchmark (s).
    pub wall_s: f64,
}

fn method_notes(args: &DpOverheadArgs) -> Vec<String> {
    vec![
        format!(
            "inputs: one fixed batch of {} examples x {} tokens, no padding; real models: a fixed \
             English passage tokenized, repeated and cut (example i starts 17*i tokens in); \
             tiny models: seeded pseudo-random token ids; classification, 2 labels",
            args.batch, args.seq_len
        ),
        "non-private step: plain forward, backward, AdamW on the summed gradient / B".into(),
        "DP step: recording forward, backward, group_records, clip_groups (flat C = 1), noise \
         (sigma = 1), AdamW: DpTrainer::train_step for one micro-batch"
            .into(),
        format!(
            "times: one warm-up step of each kind, then {} interleaved pairs (order alternating); \
             medians",
            args.reps
        ),
        "memory: each kind once more in its own child process, jemalloc returning freed pages at \
         once; peak = VmHWM during the step (reset by clear_refs before it), growth = peak - \
         resident size just before the step"
            .into(),
    ]
}

/// The default trainable sets of a model.
fn default_rows(model_id: &str, model: &Model) -> Vec<String> {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    match model_id {
        "tiny" | "tiny-llama" => v(&["head", "head,last:1", "all"]),
        _ if model.is_decoder() => v(&["head,last:2", "head,last:8"]),
        _ => v(&["head", "head,last:2", "all"]),
    }
}

/// The built-in random models (no tokenizer; fed random ids).
fn tiny_model(id: &str) -> anyhow::Result<Model> {
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
    Ok(Model::random(cfg, 0.2, 11, DType::F32, &Device::Cpu)?)
}

fn load_model(id: &str, assets: Option<&Path>) -> anyhow::Result<Model> {
    if matches!(id, "tiny" | "tiny-llama") {
        return tiny_model(id);
    }
    let path = resolve_model(id, assets)?;
    Model::load(&path, &Device::Cpu).with_context(|| format!("loading {}", path.display()))
}

/// B sequences of exactly L tokens (see the module documentation).
fn inputs(model: &Model, batch: usize, seq_len: usize) -> anyhow::Result<Vec<Vec<u32>>> {
    let Some(tok) = model.tokenizer.as_ref() else {
        let vocab = match &model.config {
            ModelConfig::Bert(c) => c.vocab_size,
            ModelConfig::Llama(c) => c.vocab_size,
        };
        let mut rng = NoiseRng::from_seed(5);
        return Ok((0..batch)
            .map(|_| {
                (0..seq_len)
                    .map(|_| {
                        let k = (rng.uniform_f64() * (vocab - 3) as f64) as usize;
                        (3 + k.min(vocab - 4)) as u32
                    })
                    .collect()
            })
            .collect());
    };
    let stream = dpselft_model::tokenizer::encode(tok, PASSAGE, false)?;
    // Encoders: [CLS] … [SEP] as the model's own special tokens around an empty text.
    let (prefix, suffix) = if model.is_decoder() {
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
        .ok_or_else(|| usage(format!("--seq-len {seq_len}: too short")))?;
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
struct Setup {
    model: Model,
    params: TrainableParams,
    batch: Batch,
    labels: Tensor,
    clipping: Clipping,
    dp_opt: DpOptimizer,
    np_opt: DpOptimizer,
    rng: NoiseRng,
}

fn setup(base: &Model, spec: &str, args: &DpOverheadArgs) -> anyhow::Result<Setup> {
    let mut model = base.clone();
    let parsed = TrainableSpec::parse(spec).map_err(|e| usage(e.to_string()))?;
    let head = HeadChoice::New(vec!["a".into(), "b".into()]);
    prepare_model(&mut model, Task::Classify, head, &parsed, 0)?;
    let params = TrainableParams::of(&model)?;
    let seqs = inputs(&model, args.batch, args.seq_len)?;
    let pad = model.special.pad.unwrap_or(0);
    let batch = Batch::from_ids(&seqs, pad, false, &model.device)?;
    let labels: Vec<u32> = (0..args.batch as u32).map(|i| i % 2).collect();
    let labels = Tensor::new(labels.as_slice(), &model.device)?;
    let clipping = Clipping::Flat { max_norm: 1.0 };
    let opt = |noise_multiplier: f64, clipping: Clipping| {
        DpOptimizer::new(
            DpOptimizerConfig {
                optimizer: OptimizerKind::default(),
                schedule: LrSchedule::constant(1e-4),
                noise_multiplier,
                clipping,
                expected_batch_size: args.batch as f64,
            },
            &params.vars,
        )?
        .with_weight_decay_mask(params.weight_decay_mask())
    };
    let dp_opt = opt(1.0, clipping)?;
    let np_opt = opt(0.0, Clipping::Off)?;
    Ok(Setup {
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

impl Setup {
    fn step(&mut self, kind: Kind) -> anyhow::Result<Phases> {
        match kind {
            Kind::NonPrivate => self.non_private_step(),
            Kind::Dp => self.dp_step(),
        }
    }

    fn non_private_step(&mut self) -> anyhow::Result<Phases> {
        let t0 = Instant::now();
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
        let t1 = Instant::now();
        self.np_opt
            .step(&self.params.vars, Some(&sums), &mut self.rng)?;
        let t2 = Instant::now();
        Ok(Phases {
            total: (t2 - t0).as_secs_f64(),
            forward_backward: (t1 - t0).as_secs_f64(),
            norms_clip: 0.0,
            noise_optimizer: (t2 - t1).as_secs_f64(),
        })
    }

    fn dp_step(&mut self) -> anyhow::Result<Phases> {
        let t0 = Instant::now();
        let micro_batch = MicroBatch {
            batch: &self.batch,
            labels: Some(&self.labels),
            loss_mask: None,
            prefix: None,
        };
        let recorded = record_grads(&self.model, &self.params, micro_batch)?;
        let t1 = Instant::now();
        let clipped = clip_groups(
            &recorded.groups,
            &self.params,
            &self.clipping,
            NormMethod::Auto,
        )?;
        let mut acc = ClippedSumAccumulator::new();
        acc.add(&clipped)?;
        let sums = acc.into_sums();
        let t2 = Instant::now();
        self.dp_opt
            .step(&self.params.vars, sums.as_deref(), &mut self.rng)?;
        let t3 = Instant::now();
        Ok(Phases {
            total: (t3 - t0).as_secs_f64(),
            forward_backward: (t1 - t0).as_secs_f64(),
            norms_clip: (t2 - t1).as_secs_f64(),
            noise_optimizer: (t3 - t2).as_secs_f64(),
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
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

fn median_phases(samples: &[Phases]) -> Phases {
    let m = |f: fn(&Phases) -> f64| median(samples.iter().map(f).collect());
    Phases {
        total: m(|p| p.total),
        forward_backward: m(|p| p.forward_backward),
        norms_clip: m(|p| p.norms_clip),
        noise_optimizer: m(|p| p.noise_optimizer),
    }
}

/// A field of /proc/self/status in KiB (VmRSS, VmHWM).
fn status_kib(field: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

/// The child side of a memory probe: set up, reset the peak, one step, report.
fn probe(args: &DpOverheadArgs, kind: &str) -> anyhow::Result<()> {
    let kind = match kind {
        "dp" => Kind::Dp,
        "non-private" => Kind::NonPrivate,
        k => bail!("--probe {k}: expected dp or non-private"),
    };
    let [model_id] = args.models.as_slice() else {
        bail!("--probe needs exactly one model");
    };
    let [spec] = args.trainable.as_slice() else {
        bail!("--probe needs exactly one --trainable");
    };
    let base = load_model(model_id, args.assets.as_deref())?;
    let mut s = setup(&base, spec, args)?;
    drop(base);
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS")?;
    let before = status_kib("VmRSS")?;
    s.step(kind)?;
    let peak = status_kib("VmHWM")?;
    let m = MemoryProbe {
        before_mib: before / 1024.0,
        peak_mib: peak / 1024.0,
        growth_mib: (peak - before) / 1024.0,
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// Runs one memory probe in a child process.
fn run_probe(
    args: &DpOverheadArgs,
    model_id: &str,
    spec: &str,
    kind: Kind,
) -> anyhow::Result<MemoryProbe> {
    let exe = std::env::current_exe().context("locating the dpselft binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "bench",
        "dp-overhead",
        "--models",
        model_id,
        "--trainable",
        spec,
    ])
    .args(["--batch", &args.batch.to_string()])
    .args(["--seq-len", &args.seq_len.to_string()])
    .args(["--probe", kind.flag()])
    .env("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0");
    if let Some(a) = &args.assets {
        cmd.arg("--assets").arg(a);
    }
    let out = cmd.output().context("running the memory probe")?;
    if !out.status.success() {
        bail!(
            "memory probe ({model_id}, {spec}, {}) failed: {}",
            kind.flag(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the memory probe's report")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs `dpselft bench dp-overhead`: prints the table, writes the JSON, returns the report.
pub fn dp_overhead(args: &DpOverheadArgs) -> anyhow::Result<Report> {
    if args.batch == 0 || args.seq_len < 3 || args.reps == 0 || args.models.is_empty() {
        return Err(usage(
            "--batch and --reps must be ≥ 1, --seq-len ≥ 3, --models not empty".into(),
        ));
    }
    let started = Instant::now();
    let load_start = loadavg();
    let mut rows = Vec::new();
    for model_id in &args.models {
        eprintln!("{model_id}: loading");
        let base = load_model(model_id, args.assets.as_deref())?;
        let specs = if args.trainable.is_empty() {
            default_rows(model_id, &base)
        } else {
            args.trainable.clone()
        };
        for spec in specs {
            let mut s = setup(&base, &spec, args)?;
            let scalars = s.params.num_scalars();
            eprintln!("{model_id} [{spec}] ({scalars} trainable): warm-up");
            s.step(Kind::NonPrivate)?;
            s.step(Kind::Dp)?;
            let (mut np, mut dp) = (Vec::new(), Vec::new());
            for r in 0..args.reps {
                let order = if r % 2 == 0 {
                    [Kind::NonPrivate, Kind::Dp]
                } else {
                    [Kind::Dp, Kind::NonPrivate]
                };
                for kind in order {
                    let p = s.step(kind)?;
                    match kind {
                        Kind::NonPrivate => np.push(p),
                        Kind::Dp => dp.push(p),
                    }
                }
                eprintln!(
                    "{model_id} [{spec}] {}/{}: non-private {:.3} s, DP {:.3} s",
                    r + 1,
                    args.reps,
                    np[r].total,
                    dp[r].total
                );
            }
            drop(s);
            let (np_mem, dp_mem) = if args.no_memory {
                (None, None)
            } else {
                eprintln!("{model_id} [{spec}]: memory probes");
                (
                    Some(run_probe(args, model_id, &spec, Kind::NonPrivate)?),
                    Some(run_probe(args, model_id, &spec, Kind::Dp)?),
                )
            };
            let (np_med, dp_med) = (median_phases(&np), median_phases(&dp));
            rows.push(Row {
                model: model_id.clone(),
                trainable: spec.clone(),
                trainable_scalars: scalars,
                time_ratio: dp_med.total / np_med.total,
                dp_share_norms_clip: dp_med.norms_clip / dp_med.total,
                dp_share_noise_optimizer: dp_med.noise_optimizer / dp_med.total,
                memory_peak_ratio: np_mem.zip(dp_mem).map(|(n, d)| d.peak_mib / n.peak_mib),
                memory_growth_ratio: np_mem.zip(dp_mem).map(|(n, d)| d.growth_mib / n.growth_mib),
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
            });
        }
    }
    let report = Report {
        batch: args.batch,
        seq_len: args.seq_len,
        reps: args.reps,
        method: method_notes(args),
        loadavg: [load_start, loadavg()],
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        rows,
        wall_s: started.elapsed().as_secs_f64(),
    };
    print_table(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        dpselft_fsio::write_bytes_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn print_table(r: &Report) {
    println!(
        "dp-overhead: batch {} x {} tokens, {} timed steps of each kind per row (medians), {} CPUs",
        r.batch, r.seq_len, r.reps, r.cpus
    );
    let line = |cells: [&str; 11]| {
        println!(
            "{:<10} {:<12} {:>9} {:>9} {:>9} {:>6} {:>6} {:>7} {:>17} {:>17} {:>12}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9],
            cells[10]
        );
    };
    line([
        "model",
        "trainable",
        "scalars",
        "nonpriv s",
        "DP s",
        "DP/np",
        "clip%",
        "nz+opt%",
        "np MiB peak(+step)",
        "DP MiB peak(+step)",
        "mem DP/np",
    ]);
    for row in &r.rows {
        let mem = |m: &Option<MemoryProbe>| {
            m.map_or("-".into(), |m| {
                format!("{:.0} (+{:.0})", m.peak_mib, m.growth_mib)
            })
        };
        let ratio = match (row.memory_peak_ratio, row.memory_growth_ratio) {
            (Some(p), Some(g)) => format!("{p:.2} ({g:.2})"),
            _ => "-".into(),
        };
        let model = Path::new(&row.model)
            .file_name()
            .map_or(row.model.clone(), |f| f.to_string_lossy().into_owned());
        line([
            &model,
            &row.trainable,
            &row.trainable_scalars.to_string(),
            &format!("{:.3}", row.non_private.median.total),
            &format!("{:.3}", row.dp.median.total),
            &format!("{:.2}", row.time_ratio),
            &format!("{:.1}", 100.0 * row.dp_share_norms_clip),
            &format!("{:.1}", 100.0 * row.dp_share_noise_optimizer),
            &mem(&row.non_private.memory),
            &mem(&row.dp.memory),
            &ratio,
        ]);
    }
    println!(
        "  DP/np: median DP step / median non-private step; clip%, nz+opt%: shares of the median \
         DP step in group_records+clip_groups and in noise+optimizer; mem: peak resident MiB of a \
         process doing one such step (+ growth during the step), ratio DP/np of peaks (of growths)"
    );
    for note in &r.method {
        println!("  {note}");
    }
    println!(
        "  load average at start / end: {} / {}; wall time {:.1} s",
        r.loadavg[0], r.loadavg[1], r.wall_s
    );
}
