//! `dpselft audit`: an empirical check of the privacy claim (the one-run canary audit of
//! Steinke, Nasr and Jagielski 2023; `dpselft_dp::audit`).
//!
//! ```text
//! dpselft audit                                  # preset: brown-genre, ε ∈ {1, 3, 8} and noise off
//! dpselft audit --epsilon 3 --canaries 2000 --json
//! ```
//!
//! Each audited run trains on a seeded subset of the task's training data plus the member
//! canaries, in its own folder under `--out` (its own ledger: nothing of another run is spent).

use std::path::{Path, PathBuf};

use anyhow::Context;
use dpselft_data::{BenchmarkTask, LoadOptions, load_dataset};
use dpselft_dp::{
    AuditConfig, AuditReport, Checkpoints, Duration, NoiseRng, OptimizerKind, PrivacyTarget, Task,
    TrainConfig,
};
use dpselft_model::{DeviceSpec, TrainableSpec};

use super::UsageError;
use super::fetch_assets::resolve_model;
use super::progress::Bar;

/// Arguments of `dpselft audit` (the defaults are the preset: ≤ 10 minutes on 2 cores).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model: asset id or path.
    #[arg(long, default_value = "minilm")]
    pub model: String,
    /// Training data (JSONL, CSV, folder) [default: the brown-genre training split, built if
    /// absent].
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Seeded subset of this many real training examples.
    #[arg(long, default_value_t = 500)]
    pub limit: usize,
    /// Claimed ε of each audited run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,3,8")]
    pub epsilon: Vec<f64>,
    /// Also audit the same run with the noise switched off (non-private training).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub no_noise: bool,
    /// δ of the claims.
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// Canaries m (each a member with probability ½).
    #[arg(long, default_value_t = 1000)]
    pub canaries: usize,
    /// Random vocabulary words per canary.
    #[arg(long, default_value_t = 12)]
    pub words: usize,
    /// Trainable set.
    #[arg(long, default_value = "head,last:1")]
    pub trainable: TrainableSpec,
    /// Epochs.
    #[arg(long, default_value_t = 10.0)]
    pub epochs: f64,
    /// Expected batch size B.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Clip norm C.
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Tokens per example (a canary's 12 words fit; real examples are cut).
    #[arg(long, default_value_t = 24)]
    pub max_seq_len: usize,
    /// Seed of the canaries, their membership and the noise (default: the OS).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder [default: runs/audit-<unix time>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the reports as JSON.
    #[arg(long)]
    pub json: bool,
    /// Assets folder [default: $DPSELFT_ASSETS, else ./assets].
    #[arg(long, value_name = "DIR")]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// The audited runs, in order.
#[derive(serde::Serialize)]
struct Audits {
    runs: Vec<AuditReport>,
}

/// Runs `dpselft audit`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(e) = args.epsilon.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
        return Err(UsageError(format!("--epsilon {e}: expected finite numbers > 0")).into());
    }
    let model_path = resolve_model(&args.model, args.assets.as_deref())?;
    let data_path = match &args.data {
        Some(p) => p.clone(),
        None => super::data::ensure_task_data(BenchmarkTask::BrownGenre, args.assets.as_deref())?.0,
    };
    let mut data = load_dataset(&data_path, &LoadOptions::default())
        .with_context(|| format!("loading {}", data_path.display()))?;
    dpselft_data::check_two_labels(&data, &data_path)?;
    dpselft_data::subset(&mut data, args.limit, 0);
    let out = args.out.clone().unwrap_or_else(default_out);
    let mut rng = match args.seed {
        Some(s) => NoiseRng::from_seed(s),
        None => NoiseRng::from_os_rng()?,
    };
    let audit_config = AuditConfig {
        canaries: args.canaries,
        words: args.words,
        confidence: 0.95,
    };
    let mut targets: Vec<Option<f64>> = args.epsilon.iter().copied().map(Some).collect();
    if args.no_noise {
        targets.push(None);
    }
    let mut runs = Vec::new();
    for target in targets {
        let (name, privacy) = match target {
            Some(epsilon) => (
                format!("eps-{epsilon}"),
                PrivacyTarget::Private {
                    epsilon,
                    delta: args.delta,
                },
            ),
            None => ("no-noise".to_string(), PrivacyTarget::NonPrivate),
        };
        eprintln!("audit: {name} ({} canaries)", args.canaries);
        let model = super::load_model_on(&model_path, args.device)?;
        let mut bar = Bar::default();
        let report = dpselft_dp::audit::audit(
            train_config(&args, privacy),
            model,
            &data,
            &out.join(&name),
            &audit_config,
            &mut rng.split(),
            &mut bar,
        )?;
        bar.finish();
        runs.push(report);
    }
    let audits = Audits { runs };
    let text = serde_json::to_string_pretty(&audits)?;
    dpselft_fsio::write_bytes_atomic(&out.join("audit.json"), text.as_bytes())
        .with_context(|| format!("writing {}", out.join("audit.json").display()))?;
    if args.json {
        println!("{text}");
    } else {
        print_table(&audits.runs, &out);
    }
    Ok(())
}

fn default_out() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Path::new("runs").join(format!("audit-{secs}"))
}

/// The training configuration of one audited run.
fn train_config(args: &Args, privacy: PrivacyTarget) -> TrainConfig {
    TrainConfig {
        task: Task::Classify,
        trainable: args.trainable.clone(),
        duration: Duration::Epochs(args.epochs),
        batch_size: args.batch_size,
        clip: args.clip,
        automatic_clip_gamma: None,
        lr: args.lr,
        optimizer: OptimizerKind::default(),
        warmup_steps: 0,
        privacy,
        max_tokens: 8192,
        max_seq_len: args.max_seq_len,
        eval_every: None,
        log_every: 10,
        checkpoints: Checkpoints::Off,
        seed: args.seed,
        init_seed: 0,
        log_private_metrics: false,
        allow_large_delta: false,
    }
}

fn print_table(runs: &[AuditReport], out: &Path) {
    println!(
        "{:<10} {:>8} {:>10} {:>8} {:>14} {:>10} {:>16}",
        "claimed ε", "σ", "ε lower", "k", "correct/guess", "members", "score in/out"
    );
    for r in runs {
        let b = &r.audit.best;
        println!(
            "{:<10} {:>8.4} {:>10.4} {:>8} {:>14} {:>10} {:>16}",
            r.claimed_epsilon
                .map_or("∞ (off)".into(), |e| format!("{e:.4}")),
            r.noise_multiplier,
            r.epsilon_lower_bound,
            b.k_plus,
            format!("{}/{}", b.correct, b.guesses),
            format!("{}/{}", r.members, r.canaries),
            format!(
                "{:.3}/{:.3}",
                r.mean_score_members, r.mean_score_non_members
            )
        );
    }
    println!(
        "95% confidence, Bonferroni over the k grid; reports in {}",
        out.join("audit.json").display()
    );
}
