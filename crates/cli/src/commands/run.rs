//! `dpselft run` (the whole DP-SelFT pipeline), and its first two stages alone:
//! `dpselft synth` and `dpselft select` (docs/design.md, §1).
//!
//! With no arguments, `run` fetches MiniLM, SmolLM2 and the Brown corpus if absent, builds
//! brown-genre, and runs the small default (ε = 3, δ = 1e-5) into `runs/run-<time>/`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;
use dpselft_dp::{EvalMetrics, Observer, StepMetrics, TrainPlan};
use dpselft_model::DeviceSpec;
use dpselft_selft::pipeline::{self, ResolvedPaths, RunConfig, Scale, SelectSection};
use dpselft_selft::{Candidates, Perturbation, Progress, RateSearch, SynthSection};

use super::UsageError;
use super::fetch_assets::resolve_model;
use super::progress::Bar;
use super::train::TaskArg;

/// Arguments shared by `run`, `synth` and `select`: a configuration and overrides.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Run folder [default: runs/run-<unix time>]. `select` continues the folder `synth` made.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A TOML configuration (sections run, synth, select, train; see a run's config.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Preset: `small` (minutes on 2 cores: a small synthetic set, short selection stages) or
    /// `full` (a large synthetic set, candidates trained for all T steps).
    #[arg(long, value_enum)]
    pub scale: Option<ScaleArg>,
    /// Target model: asset id (minilm) or path.
    #[arg(long)]
    pub model: Option<String>,
    /// Generator of the synthetic stage: asset id (smollm2) or path.
    #[arg(long)]
    pub generator: Option<String>,
    /// What the target learns: classify (the labels; BERT-style or last-token pooling) or lm
    /// (causal language modelling of the texts, labels ignored; needs a decoder target)
    /// [default: classify].
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Private training data (JSONL, CSV, folder) [default: data/spam/train.jsonl, built if
    /// absent].
    #[arg(long, value_name = "FILE")]
    pub train_data: Option<PathBuf>,
    /// Held-out test data, evaluated once at the end.
    #[arg(long, value_name = "FILE")]
    pub test_data: Option<PathBuf>,
    /// Target ε of the whole run.
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// Target δ.
    #[arg(long)]
    pub delta: Option<f64>,
    /// Share of ε spent on the synthetic data.
    #[arg(long)]
    pub synth_fraction: Option<f64>,
    /// Allow δ ≥ 1/n (refused otherwise); the ledger records the override.
    #[arg(long)]
    pub allow_large_delta: bool,
    /// Seeded subset of this many training examples (0: all).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Seeded subset of this many test examples (0: all).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Seed for a reproducible experiment (seeds the noise too; the ledger says so).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The synthesizer of stage 1, with its default settings: dp-generator or private-evolution.
    #[arg(long)]
    pub synthesizer: Option<String>,
    /// What one training example is, in a few public words (e.g. "email message"); the
    /// synthetic stage's prompts say it [default: the default data's kind, or "text" with
    /// --train-data].
    #[arg(long)]
    pub data_kind: Option<String>,
    /// Synthetic texts to sample, N_syn.
    #[arg(long)]
    pub num_synthetic: Option<usize>,
    /// Candidate sets: singles, windows:K, greedy:K.
    #[arg(long)]
    pub candidates: Option<String>,
    /// Train at most this many candidate sets (a compute budget for deep models: round 1 spread
    /// over depth, greedy rounds nearest the current set first) [default: all].
    #[arg(long, value_name = "N")]
    pub select_budget: Option<usize>,
    /// After the block search, also try the chosen blocks' attention, MLP and norms alone
    /// (`block.N.attn`, `block.N.mlp`, `block.N.norms`).
    #[arg(long)]
    pub sub_blocks: bool,
    /// Perturbation of the selection: worst-case, gaussian, none.
    #[arg(long)]
    pub perturbation: Option<String>,
    /// Where the learning-rate grid is searched: winner (the chosen set alone) or per-candidate
    /// (every candidate at every rate, each set compared at its best).
    #[arg(long)]
    pub rate_search: Option<String>,
    /// Selection steps τ per candidate as a fraction of the fine-tuning's T steps.
    #[arg(long)]
    pub select_step_fraction: Option<f64>,
    /// Multiples of --lr tried on the chosen set (comma-separated); the best on the synthetic
    /// validation split is the fine-tuning's learning rate. `1` alone: keep --lr.
    #[arg(long, value_delimiter = ',')]
    pub lr_grid: Option<Vec<f64>>,
    /// Radius scale κ of the worst-case perturbation.
    #[arg(long)]
    pub kappa: Option<f64>,
    /// Training runs per candidate.
    #[arg(long)]
    pub select_seeds: Option<usize>,
    /// Expected batch size B of the fine-tuning.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Clip norm C.
    #[arg(long)]
    pub clip: Option<f64>,
    /// Peak learning rate of the selection's candidates, and the centre of its learning-rate grid
    /// for the fine-tuning.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Fine-tuning epochs.
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Tokens per example of the target model.
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Assets folder [default: $DPSELFT_ASSETS, else ./assets].
    #[arg(long, value_name = "DIR")]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
    /// Print metrics.json to stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// `run` only: continue the run in --out at its first unfinished stage, with the run's own
    /// config.toml (other settings are not read). Finished stages are never rerun or re-spent.
    #[arg(long)]
    pub resume: bool,
}

/// The presets.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScaleArg {
    /// Minutes on two cores.
    Small,
    /// All the data, paper-like settings.
    Full,
}

/// The resolved configuration: preset or file, then flags.
fn resolve(args: &Args) -> anyhow::Result<RunConfig> {
    let mut c = match (&args.config, args.scale) {
        (Some(path), _) => RunConfig::load(path)?,
        (None, Some(ScaleArg::Full)) => RunConfig::preset(Scale::Full),
        (None, _) => RunConfig::preset(Scale::Small),
    };
    let limit = |v: usize| (v > 0).then_some(v);
    let r = &mut c.run;
    set(&mut r.model, args.model.clone());
    set(&mut r.generator, args.generator.clone());
    set(&mut r.task, args.task.map(Into::into));
    if args.train_data.is_some() {
        // Other data than the default's: its kind is unknown unless said.
        r.data_kind = "text".into();
    }
    set(&mut r.train_data, args.train_data.clone());
    set(&mut r.data_kind, args.data_kind.clone());
    if args.test_data.is_some() {
        r.test_data = args.test_data.clone();
    }
    set(&mut r.epsilon, args.epsilon);
    set(&mut r.delta, args.delta);
    set(&mut r.synth_fraction, args.synth_fraction);
    r.allow_large_delta |= args.allow_large_delta;
    if let Some(v) = args.train_limit {
        r.train_limit = limit(v);
    }
    if let Some(v) = args.test_limit {
        r.test_limit = limit(v);
    }
    if args.seed.is_some() {
        r.seed = args.seed;
    }
    if let Some(name) = &args.synthesizer {
        c.synth =
            SynthSection::named(name).map_err(|e| UsageError(format!("--synthesizer: {e}")))?;
        if let Some(ScaleArg::Full) = args.scale {
            c.synth.scale_to(Scale::Full);
        }
    }
    set(c.synth.num_samples_mut(), args.num_synthetic);
    apply_select_flags(&mut c.select, args)?;
    let t = &mut c.train;
    set(&mut t.batch_size, args.batch_size);
    set(&mut t.clip, args.clip);
    set(&mut t.lr, args.lr);
    set(&mut t.epochs, args.epochs);
    set(&mut t.max_seq_len, args.max_seq_len);
    c.validate().map_err(|e| UsageError(e.to_string()))?;
    Ok(c)
}

/// The selection's own flags (`--lr` aside, which is `train.lr`) applied to `s`.
fn apply_select_flags(s: &mut SelectSection, args: &Args) -> anyhow::Result<()> {
    if let Some(v) = &args.candidates {
        s.candidates = v
            .parse::<Candidates>()
            .map_err(|e| UsageError(format!("--candidates: {e}")))?;
    }
    if let Some(v) = &args.perturbation {
        s.perturbation = v
            .parse::<Perturbation>()
            .map_err(|e| UsageError(format!("--perturbation: {e}")))?;
    }
    if let Some(v) = &args.rate_search {
        s.rate_search = v
            .parse::<RateSearch>()
            .map_err(|e| UsageError(format!("--rate-search: {e}")))?;
    }
    if let Some(n) = args.select_budget {
        s.max_candidates = Some(n);
    }
    if args.sub_blocks {
        s.sub_blocks = true;
    }
    set(&mut s.step_fraction, args.select_step_fraction);
    set(&mut s.lr_grid, args.lr_grid.clone());
    set(&mut s.kappa, args.kappa);
    set(&mut s.seeds, args.select_seeds);
    Ok(())
}

/// The flags that `dpselft select` refuses: settings of the run or of the other stages, which
/// the folder's `config.toml` fixed when `synth` spent from its ledger.
fn flags_select_refuses(args: &Args) -> Vec<&'static str> {
    let given = [
        (args.config.is_some(), "--config"),
        (args.scale.is_some(), "--scale"),
        (args.model.is_some(), "--model"),
        (args.generator.is_some(), "--generator"),
        (args.task.is_some(), "--task"),
        (args.train_data.is_some(), "--train-data"),
        (args.test_data.is_some(), "--test-data"),
        (args.epsilon.is_some(), "--epsilon"),
        (args.delta.is_some(), "--delta"),
        (args.synth_fraction.is_some(), "--synth-fraction"),
        (args.allow_large_delta, "--allow-large-delta"),
        (args.train_limit.is_some(), "--train-limit"),
        (args.test_limit.is_some(), "--test-limit"),
        (args.seed.is_some(), "--seed"),
        (args.synthesizer.is_some(), "--synthesizer"),
        (args.data_kind.is_some(), "--data-kind"),
        (args.num_synthetic.is_some(), "--num-synthetic"),
        (args.batch_size.is_some(), "--batch-size"),
        (args.clip.is_some(), "--clip"),
        (args.epochs.is_some(), "--epochs"),
        (args.max_seq_len.is_some(), "--max-seq-len"),
        (args.resume, "--resume"),
    ];
    given
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
}

/// Whether any of the selection's own flags (or `--lr`) was given.
fn select_flags_given(args: &Args) -> bool {
    args.candidates.is_some()
        || args.select_budget.is_some()
        || args.sub_blocks
        || args.perturbation.is_some()
        || args.rate_search.is_some()
        || args.select_step_fraction.is_some()
        || args.lr_grid.is_some()
        || args.kappa.is_some()
        || args.select_seeds.is_some()
        || args.lr.is_some()
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Fetches the models, builds the default data if the default path is used, and returns the
/// models' paths and the device they run on.
fn prepare(
    config: &mut RunConfig,
    assets: Option<&Path>,
    device: DeviceSpec,
) -> anyhow::Result<ResolvedPaths> {
    let default = pipeline::RunSection::default();
    if config.run.train_data == default.train_data {
        if !config.run.train_data.exists() {
            super::data::ensure_task_data(pipeline::DEFAULT_TASK, assets)?;
        }
        // The default data's labels are public and described (the synthetic prompts say them).
        if config.run.label_descriptions.is_empty() {
            config.run.label_descriptions = pipeline::descriptions_of(pipeline::DEFAULT_TASK);
        }
    }
    Ok(ResolvedPaths {
        model: resolve_model(&config.run.model, assets)?,
        generator: resolve_model(&config.run.generator, assets)?,
        device,
    })
}

fn out_dir(args: &Args) -> PathBuf {
    args.out.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Path::new("runs").join(format!("run-{secs}"))
    })
}

/// Runs `dpselft run` (or, with `--resume`, continues one).
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.resume {
        return resume(args);
    }
    let mut config = resolve(&args)?;
    let paths = prepare(&mut config, args.assets.as_deref(), args.device)?;
    let out = out_dir(&args);
    eprintln!("dpselft run → {}", out.display());
    let mut progress = Bars::default();
    let metrics = pipeline::run(&config, &paths, &out, &mut progress)
        .with_context(|| format!("run in {}", out.display()))?;
    report(&metrics, &out, args.json, progress)
}

/// `dpselft run --resume --out DIR`.
fn resume(args: Args) -> anyhow::Result<()> {
    let out = args.out.clone().ok_or_else(|| {
        UsageError("--resume needs --out DIR, the folder of the run to continue".into())
    })?;
    let config_path = out.join("config.toml");
    if !config_path.exists() {
        return Err(UsageError(format!(
            "{}: no such file; --resume continues a run folder that `dpselft run` made",
            config_path.display()
        ))
        .into());
    }
    let mut config = RunConfig::load(&config_path)?;
    let paths = prepare(&mut config, args.assets.as_deref(), args.device)?;
    eprintln!("dpselft run --resume → {}", out.display());
    let mut progress = Bars::default();
    let metrics = pipeline::resume(&paths, &out, &mut progress)
        .with_context(|| format!("resuming the run in {}", out.display()))?;
    report(&metrics, &out, args.json, progress)
}

fn report(
    metrics: &pipeline::RunMetrics,
    out: &Path,
    json: bool,
    mut progress: Bars,
) -> anyhow::Result<()> {
    progress.finish_all();
    if json {
        crate::output::emit_json(metrics, true)?;
    } else {
        print_metrics(metrics, out);
    }
    Ok(())
}

/// Runs `dpselft synth`: stage 1 into a new run folder.
pub fn synth(args: Args) -> anyhow::Result<()> {
    let mut config = resolve(&args)?;
    let paths = prepare(&mut config, args.assets.as_deref(), args.device)?;
    let out = out_dir(&args);
    let mut progress = Bars::default();
    pipeline::run_synth(&config, &paths, &out, &mut progress)?;
    progress.finish_all();
    println!(
        "synthetic data in {} (ledger {})",
        out.join("synthetic").display(),
        out.join("ledger.json").display()
    );
    Ok(())
}

/// Runs `dpselft select`: stage 2 in the folder `dpselft synth` made (it reads only the
/// synthetic data, the ledger and the configuration there).
pub fn select(args: Args) -> anyhow::Result<()> {
    let out = args.out.clone().ok_or_else(|| {
        UsageError("select needs --out DIR, the folder `dpselft synth` wrote".into())
    })?;
    let refused = flags_select_refuses(&args);
    if !refused.is_empty() {
        return Err(UsageError(format!(
            "{}: `select` reruns stage 2 with the settings {} holds (written by `synth`); it \
             takes only the selection's own options (--candidates, --select-budget, \
             --sub-blocks, --perturbation, --rate-search, --select-step-fraction, --lr-grid, \
             --kappa, --select-seeds, --lr)",
            refused.join(", "),
            out.join("config.toml").display()
        ))
        .into());
    }
    let config = RunConfig::load(&out.join("config.toml"))?;
    let settings = if select_flags_given(&args) {
        let mut select = config.select.clone();
        apply_select_flags(&mut select, &args)?;
        Some(pipeline::SelectSettings {
            select,
            lr: args.lr.unwrap_or(config.train.lr),
        })
    } else {
        None
    };
    let paths = ResolvedPaths {
        model: resolve_model(&config.run.model, args.assets.as_deref())?,
        generator: PathBuf::new(),
        device: args.device,
    };
    let mut progress = Bars::default();
    let selection = pipeline::run_select(&out, &paths, settings.as_ref(), &mut progress)?;
    progress.finish_all();
    if args.json {
        crate::output::emit_json(&selection, true)?;
    } else {
        println!(
            "chosen: {} at lr {:.2e}",
            selection.chosen_spec, selection.chosen_lr
        );
        for c in selection.trained() {
            println!(
                "  round {}  {:<28} lr {:.1e}  score {:.4} ± {:.4}  acc {}  params {:>9}  ρ {:.3e}",
                c.round,
                c.spec,
                c.lr,
                c.score,
                c.score_std,
                c.accuracy.map_or("-".into(), |a| format!("{a:.3}")),
                c.params,
                c.radius
            );
        }
    }
    Ok(())
}

fn print_metrics(m: &pipeline::RunMetrics, out: &Path) {
    println!("run folder      {}", out.display());
    if let Some(t) = &m.test {
        super::train::print_eval(t);
    }
    if let Some(a) = m.majority_accuracy {
        println!("majority class     {a:.4}");
    }
    println!(
        "ε spent            {:.4} (PLD) / {} (RDP) of {} at δ = {:e}",
        m.epsilon_pld,
        m.epsilon_rdp.map_or("-".into(), |e| format!("{e:.4}")),
        m.target_epsilon,
        m.delta
    );
    println!(
        "chosen set         {} ({} parameters)",
        m.chosen_spec, m.trainable_params
    );
    println!("{:<8} {:>9} {:>10}", "stage", "wall s", "ε alone");
    for s in &m.stages {
        println!("{:<8} {:>9.1} {:>10.4}", s.stage, s.wall_s, s.epsilon);
    }
    println!("report             {}", out.join("report.md").display());
}

/// Progress: the trainer's step bar, and one counted bar per stage task.
#[derive(Default)]
struct Bars {
    train: Bar,
    counted: Option<indicatif::ProgressBar>,
}

impl Bars {
    fn finish_all(&mut self) {
        self.train.finish();
        Progress::finish(self);
    }
}

impl Observer for Bars {
    fn started(&mut self, plan: &TrainPlan, resumed_at: u64) {
        self.train.finish();
        self.train.started(plan, resumed_at);
    }
    fn step(&mut self, m: &StepMetrics) {
        self.train.step(m);
    }
    fn evaluated(&mut self, step: u64, m: &EvalMetrics) {
        self.train.evaluated(step, m);
    }
}

impl Progress for Bars {
    fn message(&mut self, text: &str) {
        match &self.counted {
            Some(b) if !b.is_hidden() => b.println(text),
            _ => eprintln!("{text}"),
        }
    }
    fn stage(&mut self, name: &str, total: u64) {
        self.train.finish();
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg}  {per_sec}  [{elapsed_precise} < {eta_precise}]",
        ) {
            bar.set_style(style);
        }
        bar.set_message(name.to_string());
        self.counted = Some(bar);
    }
    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.counted {
            b.inc(n);
            // Without a terminal the bar is hidden: log every tenth instead (CI, redirected runs).
            let (pos, len) = (b.position(), b.length().unwrap_or(0).max(1));
            if b.is_hidden() && (pos * 10 / len) != ((pos - n.min(pos)) * 10 / len) {
                eprintln!(
                    "  {} {pos}/{len} [{:.0} s]",
                    b.message(),
                    b.elapsed().as_secs_f64()
                );
            }
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.counted.take() {
            b.finish_and_clear();
        }
    }
}
