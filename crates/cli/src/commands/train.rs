//! `dpselft train`: DP fine-tuning of a model on a data set (or a non-private baseline).
//!
//! ```text
//! dpselft train --model minilm --data train.jsonl [--eval-data test.jsonl] --task classify \
//!     --epsilon 3 --delta 1e-5 --trainable head,last:2 --epochs 3 --batch-size 256 --clip 1 \
//!     --lr 1e-3 [--optimizer adamw|sgd] [--non-private] [--seed S] --out runs/x
//! dpselft train --resume --out runs/x      # continue the run from its checkpoint
//! ```
//!
//! The output folder gets `model/` (Hugging Face layout), `ledger.json` (private runs),
//! `metrics.jsonl`, `summary.json` and `config.json` (the resolved run configuration).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;
use dpselft_data::{Dataset, LoadOptions, load_dataset};
use dpselft_dp::{
    Checkpoints, DpTrainer, Duration, EvalMetrics, OptimizerKind, PrivacyTarget, Start, Task,
    TrainConfig, TrainData, TrainSummary, TrainerOptions,
};
use dpselft_model::{DeviceSpec, TrainableSpec};
use serde::{Deserialize, Serialize};

use super::UsageError;
use super::fetch_assets::resolve_model;
use super::progress::{Bar, fmt_eps};

/// The task, on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    /// Sequence classification.
    Classify,
    /// Causal language modelling.
    Lm,
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Task {
        match t {
            TaskArg::Classify => Task::Classify,
            TaskArg::Lm => Task::Lm,
        }
    }
}

/// The optimizer, on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// DP-AdamW (β = 0.9, 0.999).
    Adamw,
    /// DP-SGD with momentum.
    Sgd,
}

/// A fine-tuning method: a named trainable set (`--method`, instead of `--trainable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Every parameter (`all`).
    Full,
    /// LoRA (r = 8, α = 16 on q, v) and the head (`lora;head`).
    Lora,
    /// Biases and norm weights, and the head (`bitfit,head`).
    Bitfit,
    /// The top K blocks and the head (`head,last:K`).
    LastK,
    /// The bottom K blocks and the head (`head,first:K`).
    FirstK,
    /// K blocks drawn at random (seeded by --init-seed) and the head.
    RandomK,
}

/// The trainable spec of a method, for a model with `num_blocks` blocks.
pub fn method_spec(method: MethodArg, k: usize, num_blocks: usize, seed: u64) -> TrainableSpec {
    let text = match method {
        MethodArg::Full => "all".to_string(),
        MethodArg::Lora => "lora;head".into(),
        MethodArg::Bitfit => "bitfit,head".into(),
        MethodArg::LastK => format!("head,last:{k}"),
        MethodArg::FirstK => format!("head,first:{k}"),
        // Public randomness: which blocks are trained is chosen independently of the data.
        MethodArg::RandomK => return dpselft_dp::random_blocks_spec(k, num_blocks, seed),
    };
    TrainableSpec::parse(&text).expect("every method names a valid spec")
}

/// Arguments of `dpselft train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A model folder, a .gguf file, or an asset id (`minilm`, `smollm2`).
    #[arg(long, required_unless_present = "resume")]
    pub model: Option<String>,
    /// The training data (JSONL/CSV/TSV, as `dpselft data` writes them).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// A held-out set evaluated every --eval-every steps and at the end (never the training
    /// data: evaluating on it would be an unaccounted release).
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// The task.
    #[arg(long, value_enum, default_value_t = TaskArg::Classify)]
    pub task: TaskArg,
    /// Target ε of the whole run.
    #[arg(long, allow_negative_numbers = true, required_unless_present_any = ["non_private", "resume"])]
    pub epsilon: Option<f64>,
    /// Target δ.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// No clipping, no noise: an upper-bound baseline with ε = ∞.
    #[arg(long, conflicts_with = "epsilon")]
    pub non_private: bool,
    /// The trainable set (`head`, `head,last:2`, `all`, `bitfit,head`, `lora:r=8;head`, …).
    #[arg(long, default_value = "head,last:2")]
    pub trainable: TrainableSpec,
    /// A named method instead of --trainable: full, lora, bitfit, last-k, first-k, random-k.
    #[arg(long, value_enum, conflicts_with = "trainable")]
    pub method: Option<MethodArg>,
    /// K of last-k, first-k and random-k.
    #[arg(long, default_value_t = 2)]
    pub k: usize,
    /// Passes over the data (in expectation).
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<f64>,
    /// Optimizer steps (instead of --epochs).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Expected logical batch size B (Poisson sampling with q = B/n).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Clip norm C of each example's whole trainable gradient.
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Automatic clipping C/(‖g‖+γ) with this γ (instead of flat clipping).
    #[arg(long)]
    pub automatic_clip_gamma: Option<f64>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// The update rule.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
    pub optimizer: OptimizerArg,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Decoupled weight decay (not applied to biases and norm weights).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// Seed sampling and noise for a reproducible experiment (the noise is then predictable to
    /// anyone with the seed; the summary says so). Default: the OS's randomness.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seed of the head's initialisation, LoRA factors and --limit subsets (public randomness).
    #[arg(long, default_value_t = 0)]
    pub init_seed: u64,
    /// Most padded tokens per physical micro-batch (memory only).
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
    /// Truncate examples to this many tokens.
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
    /// Train on a random subset of this many training examples (seeded by --init-seed).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate on a random subset of this many held-out examples.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Evaluate the held-out set every N steps.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Write a metrics line every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// Write a checkpoint every N steps, `auto` (10 per run) or `off`: `--resume` continues an
    /// interrupted run from its last checkpoint; without one it restarts from step 0 and the
    /// steps the ledger recorded for the lost attempt keep counting.
    #[arg(long, default_value = "auto")]
    pub checkpoint_every: Checkpoints,
    /// Also write each logged step's training loss, realised batch size, clipped fraction and
    /// throughput to `private_metrics.jsonl`: values of the private data *without* noise, not
    /// covered by the ledger (keep that file to yourself). `metrics.jsonl` never holds them.
    #[arg(long)]
    pub log_private_metrics: bool,
    /// Allow δ ≥ 1/n (refused otherwise: at such a δ, publishing one training example outright
    /// meets the guarantee). The ledger records the override.
    #[arg(long)]
    pub allow_large_delta: bool,
    /// Recompute the frozen blocks below the lowest trainable one at every step instead of
    /// caching their output per example (the cache holds tokens × hidden floats per example:
    /// about 200 KB for MiniLM at 128 tokens; it changes no result beyond float rounding).
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Continue the run in --out from its checkpoint, with its own config.json.
    #[arg(long)]
    pub resume: bool,
    /// The run folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// The resolved configuration of a run, written to `<out>/config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// The model loaded (a resolved path).
    pub model: PathBuf,
    /// The training data.
    pub data: PathBuf,
    /// The held-out data.
    pub eval_data: Option<PathBuf>,
    /// Training subset size, if any.
    pub limit: Option<usize>,
    /// Held-out subset size, if any.
    pub eval_limit: Option<usize>,
    /// The trainer's configuration.
    pub train: TrainConfig,
}

fn usage(msg: String) -> anyhow::Error {
    UsageError(msg).into()
}

fn resolve(args: &Args) -> anyhow::Result<RunConfig> {
    let model_spec = args.model.as_deref().unwrap_or_default();
    let model = resolve_model(model_spec, args.assets.as_deref())?;
    let data = args.data.clone().unwrap_or_default();
    let duration = match (args.epochs, args.steps) {
        (Some(k), None) => Duration::Epochs(k),
        (None, Some(t)) => Duration::Steps(t),
        (None, None) => Duration::Epochs(3.0),
        (Some(_), Some(_)) => return Err(usage("give --epochs or --steps, not both".into())),
    };
    let privacy = match (args.non_private, args.epsilon) {
        (true, _) => PrivacyTarget::NonPrivate,
        (false, Some(epsilon)) => PrivacyTarget::Private {
            epsilon,
            delta: args.delta,
        },
        (false, None) => return Err(usage("give --epsilon, or --non-private".into())),
    };
    let optimizer = match args.optimizer {
        OptimizerArg::Adamw => OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: args.weight_decay,
        },
        OptimizerArg::Sgd => OptimizerKind::Sgd {
            momentum: args.momentum,
            weight_decay: args.weight_decay,
        },
    };
    let train = TrainConfig {
        task: args.task.into(),
        trainable: args.trainable.clone(),
        duration,
        batch_size: args.batch_size,
        clip: args.clip,
        automatic_clip_gamma: args.automatic_clip_gamma,
        lr: args.lr,
        optimizer,
        warmup_steps: args.warmup_steps,
        privacy,
        max_tokens: args.max_tokens,
        max_seq_len: args.max_seq_len,
        eval_every: args.eval_every,
        log_every: args.log_every,
        checkpoints: args.checkpoint_every,
        seed: args.seed,
        init_seed: args.init_seed,
        log_private_metrics: args.log_private_metrics,
        allow_large_delta: args.allow_large_delta,
    };
    // Configuration mistakes are usage errors (exit code 2), caught before loading anything.
    train.validate().map_err(|e| usage(e.to_string()))?;
    Ok(RunConfig {
        model,
        data,
        eval_data: args.eval_data.clone(),
        limit: args.limit,
        eval_limit: args.eval_limit,
        train,
    })
}

/// Keeps a seeded random subset of `limit` examples (order preserved). Public randomness: which
/// examples a run trains on is chosen before, and independently of, the training.
pub fn subset(data: &mut Dataset, limit: Option<usize>, seed: u64) {
    if let Some(limit) = limit {
        dpselft_data::subset(data, limit, seed);
    }
}

fn load_data(path: &Path, known_labels: Option<Vec<String>>) -> anyhow::Result<Dataset> {
    let options = LoadOptions {
        known_labels,
        ..LoadOptions::default()
    };
    load_dataset(path, &options).with_context(|| format!("loading {}", path.display()))
}

/// Runs `dpselft train`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config_path = args.out.join("config.json");
    let (run, start) = if args.resume {
        let text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "--resume: reading {} (the run's configuration)",
                config_path.display()
            )
        })?;
        let run: RunConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run configuration", config_path.display()))?;
        check_not_finished(&args.out)?;
        (run, Start::Resume)
    } else {
        if config_path.exists() {
            return Err(usage(format!(
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                args.out.display()
            )));
        }
        (resolve(&args)?, Start::Fresh)
    };
    let model = super::load_model_on(&run.model, args.device)?;
    let mut run = run;
    if let (Start::Fresh, Some(method)) = (start, args.method) {
        if matches!(
            method,
            MethodArg::LastK | MethodArg::FirstK | MethodArg::RandomK
        ) && !(1..=model.num_blocks()).contains(&args.k)
        {
            return Err(usage(format!(
                "--k {}: must be in 1..={} (the model's blocks)",
                args.k,
                model.num_blocks()
            )));
        }
        run.train.trainable = method_spec(method, args.k, model.num_blocks(), run.train.init_seed);
    }
    let cfg = &run.train;
    let mut train = load_data(&run.data, None)?;
    subset(&mut train, run.limit, cfg.init_seed);
    let known = (cfg.task == Task::Classify).then(|| train.labels.clone());
    let eval = match &run.eval_data {
        Some(p) => {
            let mut d = load_data(p, known)?;
            subset(&mut d, run.eval_limit, cfg.init_seed.wrapping_add(1));
            Some(d)
        }
        None => None,
    };
    check_data(&run, &train, eval.as_ref())?;
    let majority = majority_accuracy(&train, eval.as_ref());

    let options = TrainerOptions {
        prefix_cache: !args.no_prefix_cache,
        ..TrainerOptions::default()
    };
    let mut trainer = DpTrainer::new_with(
        cfg.clone(),
        model,
        TrainData::Dataset(&train),
        eval.as_ref(),
        &args.out,
        start,
        &options,
    )?;
    if trainer.lost_steps() > 0 {
        eprintln!(
            "warning: {} had no checkpoint to resume from: the {} steps its ledger recorded for \
             the interrupted attempt are lost but keep counting in its total; training restarts \
             from step 0 with σ = {:.4}, calibrated to what is left of the budget",
            args.out.display(),
            trainer.lost_steps(),
            trainer.plan().noise_multiplier
        );
    }
    if start == Start::Fresh {
        let text = serde_json::to_string_pretty(&run)?;
        dpselft_model::save::write_atomic(&config_path, text.as_bytes())
            .with_context(|| format!("writing {}", config_path.display()))?;
    }
    let mut bar = Bar::default();
    let summary = trainer.run(&mut bar)?;
    bar.finish();
    if cfg.log_private_metrics {
        eprintln!(
            "note: {} holds values of the private data without noise (losses, batch sizes): \
             NOT covered by the ledger's guarantee; keep it to yourself",
            args.out.join("private_metrics.jsonl").display()
        );
    }
    if !summary.completed {
        bail!("the run stopped at step {} before finishing", summary.steps);
    }
    let model_dir = args.out.join("model");
    dpselft_model::save::save_hf(trainer.model(), &model_dir)
        .with_context(|| format!("saving the model to {}", model_dir.display()))?;
    if args.json {
        let mut v = serde_json::to_value(&summary)?;
        v["majority_class_accuracy"] = serde_json::json!(majority);
        v["model"] = serde_json::json!(model_dir);
        crate::output::emit_json(&v, false)?;
    } else {
        print_summary(&summary, majority, &model_dir);
    }
    Ok(())
}

/// `--resume` of a finished run: refused, saying whether its model was saved (a process killed
/// between the last step and the model's files has spent its ε and lost the weights).
fn check_not_finished(out: &Path) -> anyhow::Result<()> {
    if dpselft_dp::finished_summary(out).is_none() {
        return Ok(());
    }
    let model = out.join("model/model.safetensors");
    if model.exists() {
        anyhow::bail!(
            "{} holds a finished run: there is nothing to resume",
            out.display()
        );
    }
    anyhow::bail!(
        "{}: every step ran (summary.json) but the model was not saved ({} is missing): the \
         process died while saving. The run's ε is spent (ledger.json) and its weights are lost; \
         a new run in another folder spends privacy again on the same data",
        out.display(),
        model.display()
    )
}

/// What must hold before the trainer records anything: a classifier's training data has two
/// labels or more, and the held-out set is not (mostly) training data.
fn check_data(run: &RunConfig, train: &Dataset, eval: Option<&Dataset>) -> anyhow::Result<()> {
    if run.train.task == Task::Classify {
        dpselft_data::check_two_labels(train, &run.data)?;
    }
    if let (Some(eval), Some(path)) = (eval, &run.eval_data) {
        let o = dpselft_data::check_eval_overlap(train, &run.data, eval, path)?;
        if o.shared > 0 {
            eprintln!(
                "note: {} of the {} held-out examples in {} are also training examples (by \
                 content); their results are not held-out",
                o.shared,
                o.total,
                path.display()
            );
        }
    }
    Ok(())
}

/// The accuracy of always predicting the training set's most frequent label, on the held-out
/// set (the baseline a classifier must beat).
fn majority_accuracy(train: &Dataset, eval: Option<&Dataset>) -> Option<f64> {
    let eval = eval?;
    let counts = train.label_counts();
    let (majority, _) = counts.iter().enumerate().max_by_key(|&(_, c)| *c)?;
    if eval.is_empty() || !eval.is_labelled() {
        return None;
    }
    let hits = eval
        .examples
        .iter()
        .filter(|e| e.label == Some(majority))
        .count();
    Some(hits as f64 / eval.len() as f64)
}

fn print_summary(s: &TrainSummary, majority: Option<f64>, model_dir: &Path) {
    let p = &s.plan;
    println!(
        "steps              {} (q = {:.5}, B = {:.1}, n = {})",
        s.steps, p.sampling_rate, p.expected_batch_size, p.examples
    );
    println!(
        "trainable          {} tensors, {} parameters",
        p.trainable.len(),
        p.trainable_scalars
    );
    match p.privacy {
        PrivacyTarget::Private { epsilon, delta } => {
            println!(
                "noise multiplier σ {:.4} (clip C = {})",
                p.noise_multiplier,
                p.clip.unwrap_or(f64::NAN)
            );
            println!(
                "privacy            ε = {} (PLD), {} (RDP) at δ = {delta:e}; target ε = {epsilon}",
                fmt_eps(s.epsilon),
                fmt_eps(s.epsilon_rdp)
            );
        }
        PrivacyTarget::NonPrivate => println!("privacy            ε = ∞ (non-private baseline)"),
    }
    if p.seeded {
        println!(
            "randomness         seeded (--seed): reproducible, the noise is predictable from the seed"
        );
    }
    if let Some(m) = &s.eval {
        print_eval(m);
    }
    if let Some(m) = majority {
        println!("majority class     accuracy {m:.4}");
    }
    println!("wall time          {:.1} s", s.wall_s);
    println!("model              {}", model_dir.display());
}

/// Prints evaluation metrics as a small table.
pub fn print_eval(m: &EvalMetrics) {
    println!("eval examples      {}", m.examples);
    println!("eval loss          {:.4}", m.loss);
    if let Some(a) = m.accuracy {
        println!("accuracy           {a:.4}");
    }
    if let Some(f) = m.macro_f1 {
        println!("macro-F1           {f:.4}");
    }
    if let Some(p) = m.perplexity {
        println!("perplexity         {p:.4}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_trainable_specs() {
        let text = |m, k| method_spec(m, k, 6, 0).to_string();
        assert_eq!(text(MethodArg::Full, 2), "all");
        assert_eq!(text(MethodArg::LastK, 2), "head,last:2");
        assert_eq!(text(MethodArg::FirstK, 3), "head,first:3");
        assert_eq!(text(MethodArg::Lora, 2), "lora;head");
        assert_eq!(text(MethodArg::Bitfit, 2), "bitfit,head");
        let r = method_spec(MethodArg::RandomK, 2, 6, 4);
        assert_eq!(r, method_spec(MethodArg::RandomK, 2, 6, 4), "seeded");
        assert_eq!(r.to_string().matches("block.").count(), 2, "{r}");
        assert_eq!(
            TrainableSpec::parse(&r.to_string()).unwrap(),
            r,
            "prints what it parses"
        );
    }
}
