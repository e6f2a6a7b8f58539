//! `dpselft run`: the three stages chained in one run folder (docs/design.md, §1).
//!
//! ```text
//! private train split ─► synth (ε_syn) ─► synthetic/ ─► select (free) ─► selection.json
//!                  └──────────────────────────────────► train U* + head (ε_ft) ─► model/
//! ledger.json: histogram + generator steps + fine-tuning steps, composed (PLD) ≤ target (ε, δ)
//! ```
//!
//! Budget: the synthetic stage's mechanisms are calibrated to `synth_fraction`·ε on their own;
//! the fine-tuning σ is then calibrated so that *all* mechanisms in the ledger together meet the
//! target ε at δ exactly (PLD). The selection stage is told that σ before it starts, so its
//! perturbations match the noise the chosen layers will face.
//!
//! Run folder: `config.toml` (resolved), `ledger.json`, `synthetic/`, `synth.json`,
//! `selection.json`, `train/` (metrics of the fine-tuning), `model/` (HF layout),
//! `metrics.json`, `report.md`, `selection.svg`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use dpselft_data::{Dataset, LoadOptions, load_dataset};
use dpselft_dp::{
    Checkpoints, DpTrainer, Duration, EvalMetrics, NoisePlan, Start, Task, TrainConfig, TrainData,
    TrainSummary, TrainerOptions, plan_noise,
};
use dpselft_model::{DeviceSpec, Model, TrainableSpec};
use dpselft_privacy::{Override, PrivacyLedger, Stage, check_delta_for_examples};
use serde::{Deserialize, Serialize};

use crate::Progress;
use crate::data::{PrivateData, SyntheticData};
use crate::error::{Result, SelftError, io_err};
use crate::select::{SelectConfig, Selection, select};
use crate::synth::{PromptWords, StageBudget, SynthInputs, SynthReport, synthesize};

pub use crate::resume::resume;
pub use crate::run_config::{
    DEFAULT_TASK, RunConfig, RunSection, Scale, SelectSection, TrainSection, descriptions_of,
};

/// Where the run's models are (the CLI resolves asset ids and builds default data) and the
/// device they run on. The device is not part of the run's configuration: it changes no result
/// beyond float rounding, and a run may be resumed on another one.
#[derive(Debug, Clone)]
pub struct ResolvedPaths {
    /// The target model's folder or file.
    pub model: PathBuf,
    /// The generator's folder or file.
    pub generator: PathBuf,
    /// The device every model of the run is loaded on.
    pub device: DeviceSpec,
}

impl ResolvedPaths {
    /// Loads the model at `path` on the run's device.
    pub fn load(&self, path: &Path) -> Result<Model> {
        Ok(Model::load_on(path, self.device)?)
    }

    /// Loads the target model on the run's device.
    pub fn load_model(&self) -> Result<Model> {
        self.load(&self.model)
    }
}

/// Wall time and ε of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    /// `synth`, `select` or `train`.
    pub stage: String,
    /// Seconds.
    pub wall_s: f64,
    /// ε (PLD) of the stage's mechanisms alone at the run's δ (0 for selection).
    pub epsilon: f64,
}

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// The held-out test result (if a test split was given).
    pub test: Option<EvalMetrics>,
    /// Accuracy of always predicting the most frequent training label (classification).
    pub majority_accuracy: Option<f64>,
    /// Target ε and δ.
    pub target_epsilon: f64,
    /// Target δ.
    pub delta: f64,
    /// ε of all mechanisms composed, PLD (the guarantee).
    pub epsilon_pld: f64,
    /// ε of all mechanisms composed, RDP (looser; for comparison).
    pub epsilon_rdp: Option<f64>,
    /// ε (PLD) of the ledger entries of interrupted attempts alone, which produced nothing
    /// (`run --resume` reran their stage); they are part of `epsilon_pld` and of their stage's ε.
    #[serde(default)]
    pub lost_epsilon: f64,
    /// Per stage.
    pub stages: Vec<StageSummary>,
    /// The fine-tuning noise multiplier σ_ft.
    pub train_sigma: f64,
    /// Fine-tuning steps T and sampling rate q.
    pub train_steps: u64,
    /// Fine-tuning sampling rate q.
    pub train_sampling_rate: f64,
    /// Private training examples n.
    pub train_examples: usize,
    /// The chosen trainable set.
    pub chosen_spec: TrainableSpec,
    /// Its trainable scalars.
    pub trainable_params: usize,
    /// Whether the run was seeded (noise reproducible from the seed).
    pub seeded: bool,
    /// Seconds for the whole run.
    pub wall_s: f64,
}

/// Runs the whole pipeline into `out` (which must not hold a run yet): [`run_synth`],
/// [`run_select`], [`run_train`].
pub fn run(
    config: &RunConfig,
    paths: &ResolvedPaths,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<RunMetrics> {
    let _lock = lock_out(out)?;
    let started = Instant::now();
    let private = synth_stage(config, paths, out, progress)?;
    select_stage(out, paths, progress)?;
    let mut metrics = train_stage(out, paths, &private, Start::Fresh, progress)?;
    metrics.wall_s = started.elapsed().as_secs_f64();
    crate::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// Takes the run folder's exclusive lock for the whole call: one process per run folder, so that
/// no two processes append to its ledger.
pub(crate) fn lock_out(out: &Path) -> Result<dpselft_fsio::FolderLock> {
    dpselft_fsio::lock_folder(out).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => SelftError::Config(e.to_string()),
        _ => io_err(out, e),
    })
}

/// Stage 1 into a new run folder `out`: writes `config.toml`, creates `ledger.json`, runs the
/// synthetic stage, writes `synthetic/` and `synth.json`. Returns the private split (for
/// [`run_train`]).
///
/// Before the ledger exists, everything that can be checked is: the configuration, both data
/// splits (the test split's labels against the training split's), and that the generator and
/// the target model load; a run that fails there has spent nothing.
pub fn run_synth(
    config: &RunConfig,
    paths: &ResolvedPaths,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<PrivateData> {
    let _lock = lock_out(out)?;
    synth_stage(config, paths, out, progress)
}

fn synth_stage(
    config: &RunConfig,
    paths: &ResolvedPaths,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<PrivateData> {
    config.validate()?;
    let ledger_path = out.join("ledger.json");
    if ledger_path.exists() {
        return Err(SelftError::Config(format!(
            "{} already holds a run (ledger.json): resume it with --resume, or choose another \
             output folder",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    write_text(&out.join("config.toml"), &config.to_toml()?)?;
    let inputs = check_inputs(config, paths, progress)?;
    create_ledger(&ledger_path, config, &inputs)?;
    synthesize_into(config, inputs, out, progress)
}

/// The run's new, empty ledger, with the operator's δ override if the checks allowed one.
pub(crate) fn create_ledger(path: &Path, config: &RunConfig, inputs: &CheckedInputs) -> Result<()> {
    let mut ledger = PrivacyLedger::create(path, config.run.delta)?;
    if let Some(o) = &inputs.delta_override {
        ledger.record_override(o.clone())?;
    }
    Ok(())
}

/// What stage 1 needs, loaded and checked before anything is spent.
pub(crate) struct CheckedInputs {
    pub(crate) private: PrivateData,
    test: Option<Dataset>,
    generator: Model,
    target: Model,
    delta_override: Option<Override>,
}

/// Everything that can be checked before the first mechanism is recorded: the configuration,
/// both data splits (the test split's labels against the training split's, no test example
/// also in training), δ against n, and that the generator and the target model load.
pub(crate) fn check_inputs(
    config: &RunConfig,
    paths: &ResolvedPaths,
    progress: &mut dyn Progress,
) -> Result<CheckedInputs> {
    config.validate()?;
    let r = &config.run;
    let private = load_private(r)?;
    if r.task == Task::Classify {
        dpselft_data::check_two_labels(private.dataset(), &r.train_data)?;
        check_label_descriptions(r, private.labels())?;
    }
    let test = load_test(r, private.labels())?;
    if let (Some(test), Some(path)) = (&test, &r.test_data) {
        let o = dpselft_data::check_eval_overlap(private.dataset(), &r.train_data, test, path)?;
        if o.shared > 0 {
            progress.message(&format!(
                "note: {} of the {} test examples in {} are also training examples (by content)",
                o.shared,
                o.total,
                path.display()
            ));
        }
    }
    let delta_override = check_delta_for_examples(r.delta, private.len(), r.allow_large_delta)?;
    Ok(CheckedInputs {
        generator: paths.load(&paths.generator)?,
        target: paths.load_model()?,
        private,
        test,
        delta_override,
    })
}

/// Every key of `run.label_descriptions` is a label of the training split (a typo would
/// otherwise silently leave its label undescribed), and no description is blank.
fn check_label_descriptions(r: &RunSection, labels: &[String]) -> Result<()> {
    for (label, phrase) in &r.label_descriptions {
        if !labels.contains(label) {
            return Err(SelftError::Config(format!(
                "run.label_descriptions names the label {label:?}, which {} does not have \
                 (its labels: {})",
                r.train_data.display(),
                labels.join(", ")
            )));
        }
        if phrase.trim().is_empty() {
            return Err(SelftError::Config(format!(
                "run.label_descriptions: the description of {label:?} is blank"
            )));
        }
    }
    Ok(())
}

/// Runs the synthetic stage against the run folder's existing ledger and writes `synthetic/`
/// and `synth.json`.
pub(crate) fn synthesize_into(
    config: &RunConfig,
    inputs: CheckedInputs,
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<PrivateData> {
    let r = &config.run;
    progress.message("stage 1/3: DP synthetic data");
    let (synthetic, report) = synthesize(
        &config.synth,
        &inputs.private,
        SynthInputs {
            generator: inputs.generator,
            target: &inputs.target,
            generator_name: &r.generator,
            words: PromptWords {
                kind: &r.data_kind,
                descriptions: &r.label_descriptions,
            },
            task: r.task,
            ledger: &out.join("ledger.json"),
            work_dir: &out.join("synth"),
            held_out: inputs.test.as_ref(),
            seed: r.seed,
            allow_large_delta: r.allow_large_delta,
        },
        StageBudget {
            epsilon: r.epsilon * r.synth_fraction,
            delta: r.delta,
        },
        progress,
    )?;
    synthetic.save(&out.join("synthetic"))?;
    crate::write_json(&out.join("synth.json"), &report)?;
    Ok(inputs.private)
}

/// The fine-tuning plan: (q, T, σ_ft), σ_ft calibrated ([`plan_noise`]) so that the ledger's
/// mechanisms and the T fine-tuning steps together meet the target. `n` is the private split's
/// size.
pub fn train_plan(config: &RunConfig, n: usize, ledger: &Path) -> Result<NoisePlan> {
    let ledger = PrivacyLedger::open(ledger)?;
    Ok(plan_noise(
        n,
        config.train.batch_size,
        Duration::Epochs(config.train.epochs),
        config.run.privacy(),
        &ledger.mechanisms()?,
        ledger.guarantee_accountant().as_ref(),
    )?)
}

/// Stage 2 in the run folder `out` (after [`run_synth`]): reads `config.toml`, `ledger.json`
/// and `synthetic/` — never the private data — and writes `selection.json`. A folder whose
/// fine-tuning has already spent from the ledger is refused: the radius would be planned from
/// the budget left after it, not the final run's σ.
///
/// `settings`, if given, replaces the folder's selection settings (they spend nothing); they
/// are checked, then written into the folder's `config.toml` before the stage runs, so that the
/// folder records what ran and its fine-tuning uses the same learning-rate centre.
pub fn run_select(
    out: &Path,
    paths: &ResolvedPaths,
    settings: Option<&SelectSettings>,
    progress: &mut dyn Progress,
) -> Result<Selection> {
    let _lock = lock_out(out)?;
    let ledger_path = out.join("ledger.json");
    let ledger = PrivacyLedger::open(&ledger_path)?;
    if ledger.entries().iter().any(|e| e.stage == Stage::Train) {
        return Err(SelftError::Config(format!(
            "{}: the fine-tuning stage has already spent from this ledger; `select` runs \
             between `synth` and the fine-tuning (start a new folder with `synth`)",
            ledger_path.display()
        )));
    }
    if let Some(s) = settings {
        let config_path = out.join("config.toml");
        let mut config = RunConfig::load(&config_path)?;
        config.select = s.select.clone();
        config.train.lr = s.lr;
        config.validate()?;
        write_text(&config_path, &config.to_toml()?)?;
    }
    select_stage(out, paths, progress)
}

/// The settings of the selection stage alone: the `[select]` section and the learning rate at
/// which candidates train (`train.lr`, the centre of the rate grid). Changing them spends
/// nothing, so `dpselft select` may rerun a folder's selection with other ones.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectSettings {
    /// The `[select]` section.
    pub select: SelectSection,
    /// `train.lr`.
    pub lr: f64,
}

pub(crate) fn select_stage(
    out: &Path,
    paths: &ResolvedPaths,
    progress: &mut dyn Progress,
) -> Result<Selection> {
    let config = RunConfig::load(&out.join("config.toml"))?;
    let synthetic = SyntheticData::load(&out.join("synthetic"))?;
    let n = synthetic.manifest().private_examples;
    let plan = train_plan(&config, n, &out.join("ledger.json"))?;
    let sigma_ft = plan.noise_multiplier;
    progress.message(&format!(
        "stage 2/3: layer selection on {} synthetic examples (σ_ft = {sigma_ft:.4})",
        synthetic.train().len()
    ));
    let (r, s, t) = (&config.run, &config.select, &config.train);
    let select_config = SelectConfig {
        task: r.task,
        candidates: s.candidates,
        max_candidates: s.max_candidates,
        sub_blocks: s.sub_blocks,
        perturbation: s.perturbation,
        steps: s.steps_for(plan.total_steps),
        final_steps: plan.total_steps,
        final_warmup_steps: 0,
        batch_size: s.batch_size,
        kappa: s.kappa,
        seeds: s.seeds,
        noise_multiplier: sigma_ft,
        final_batch_size: plan.sampling_rate * n as f64,
        clip: t.clip,
        lr: t.lr,
        lr_grid: s.lr_grid.clone(),
        rate_search: s.rate_search,
        lr_perturbation: s.lr_perturbation,
        lr_steps: s.lr_steps_for(plan.total_steps),
        optimizer: t.optimizer,
        max_seq_len: s.max_seq_len,
        max_tokens: t.max_tokens,
        init_seed: 0,
        seed: r.seed.unwrap_or(0),
    };
    let source = || paths.load_model();
    let selection = select(&synthetic, &source, &select_config, progress)?;
    crate::write_json(&out.join("selection.json"), &selection)?;
    Ok(selection)
}

/// Stage 3 in the run folder `out` (after [`run_select`]): DP fine-tuning of the chosen set on
/// the private split, then `model/`, `metrics.json`, `report.md` and `selection.svg`.
pub fn run_train(
    out: &Path,
    paths: &ResolvedPaths,
    private: &PrivateData,
    progress: &mut dyn Progress,
) -> Result<RunMetrics> {
    let _lock = lock_out(out)?;
    train_stage(out, paths, private, Start::Fresh, progress)
}

pub(crate) fn train_stage(
    out: &Path,
    paths: &ResolvedPaths,
    private: &PrivateData,
    start: Start,
    progress: &mut dyn Progress,
) -> Result<RunMetrics> {
    let (summary, train_s) = train_model(out, paths, private, start, progress)?;
    finish_run(out, private, summary, train_s)
}

/// Stage 3's DP fine-tuning into `train/`, then `model/`. Returns the trainer's summary and the
/// stage's seconds.
fn train_model(
    out: &Path,
    paths: &ResolvedPaths,
    private: &PrivateData,
    start: Start,
    progress: &mut dyn Progress,
) -> Result<(TrainSummary, f64)> {
    let config = RunConfig::load(&out.join("config.toml"))?;
    let selection: Selection = read_json(&out.join("selection.json"))?;
    let test = load_test(&config.run, private.labels())?;
    // The σ selection's perturbations were matched to (stage 2 planned it with `train_plan`).
    let sigma_ft = selection.config.noise_multiplier;
    progress.message(&format!(
        "stage 3/3: DP fine-tuning {}",
        selection.chosen_spec
    ));
    let started = Instant::now();
    let mut train_config =
        stage3_config(&config, selection.chosen_spec.clone(), selection.chosen_lr);
    // Stage 3 is the long one: checkpoints let `run --resume` continue it.
    train_config.checkpoints = Checkpoints::Auto;
    let options = TrainerOptions {
        shared_ledger: Some(out.join("ledger.json")),
        stage: Stage::Train,
        prefix_cache: true,
        stage_budget: false,
    };
    let mut trainer = DpTrainer::new_with(
        train_config,
        paths.load_model()?,
        TrainData::Dataset(private.dataset()),
        test.as_ref(),
        &out.join("train"),
        start,
        &options,
    )?;
    let plan = trainer.plan().clone();
    if (plan.noise_multiplier - sigma_ft).abs() > 1e-9 * sigma_ft {
        return Err(SelftError::Config(format!(
            "the fine-tuning σ {} differs from the σ {sigma_ft} selection was matched to",
            plan.noise_multiplier
        )));
    }
    let summary = trainer.run(progress)?;
    dpselft_model::save::save_hf(trainer.model(), &out.join("model"))?;
    Ok((summary, started.elapsed().as_secs_f64()))
}

/// After stage 3: `metrics.json` and `report.md` (`selection.svg` with it).
pub(crate) fn finish_run(
    out: &Path,
    private: &PrivateData,
    summary: TrainSummary,
    train_s: f64,
) -> Result<RunMetrics> {
    let config = RunConfig::load(&out.join("config.toml"))?;
    let selection: Selection = read_json(&out.join("selection.json"))?;
    let synth_report: SynthReport = read_json(&out.join("synth.json"))?;
    let test = load_test(&config.run, private.labels())?;
    let walls = [synth_report.wall_s, selection.wall_s, train_s];
    let majority = test
        .as_ref()
        .and_then(|t| majority_accuracy(private.dataset(), t));
    let ledger_path = out.join("ledger.json");
    let metrics = run_metrics(&config, &ledger_path, &selection, summary, majority, walls)?;
    crate::write_json(&out.join("metrics.json"), &metrics)?;
    crate::report::write_report(out, &config, &synth_report, &selection, &metrics)?;
    Ok(metrics)
}

/// Stage 3's training configuration: the run's settings with `trainable` at peak rate `lr` (the
/// chosen set and its learning rate; the selection bench's oracle runs use it for every
/// candidate).
pub fn stage3_config(config: &RunConfig, trainable: TrainableSpec, lr: f64) -> TrainConfig {
    let (r, t) = (&config.run, &config.train);
    TrainConfig {
        task: r.task,
        trainable,
        duration: Duration::Epochs(t.epochs),
        batch_size: t.batch_size,
        clip: t.clip,
        automatic_clip_gamma: None,
        lr,
        optimizer: t.optimizer,
        warmup_steps: 0,
        privacy: r.privacy(),
        max_tokens: t.max_tokens,
        max_seq_len: t.max_seq_len,
        eval_every: None,
        log_every: 1,
        checkpoints: Checkpoints::Off,
        seed: r.seed,
        init_seed: 0,
        log_private_metrics: false,
        allow_large_delta: r.allow_large_delta,
    }
}

/// `metrics.json`: the test result and the ledger's account, per stage and in total.
/// `walls`: the synth, select and train stages' seconds.
fn run_metrics(
    config: &RunConfig,
    ledger_path: &Path,
    selection: &Selection,
    summary: TrainSummary,
    majority_accuracy: Option<f64>,
    walls: [f64; 3],
) -> Result<RunMetrics> {
    let r = &config.run;
    let ledger = PrivacyLedger::open(ledger_path)?;
    let spent = ledger.spent();
    let stage = |name: &str, wall_s: f64, epsilon: f64| StageSummary {
        stage: name.into(),
        wall_s,
        epsilon,
    };
    let plan = &summary.plan;
    Ok(RunMetrics {
        test: summary.eval.clone(),
        majority_accuracy,
        target_epsilon: r.epsilon,
        delta: r.delta,
        epsilon_pld: spent.epsilon().unwrap_or(f64::INFINITY),
        epsilon_rdp: spent.under("rdp").and_then(|g| g.epsilon),
        lost_epsilon: ledger.lost_epsilon()?,
        stages: vec![
            stage("synth", walls[0], ledger.epsilon_of(Stage::is_synth)?),
            stage("select", walls[1], 0.0),
            stage("train", walls[2], ledger.epsilon_of(|s| s == Stage::Train)?),
        ],
        train_sigma: plan.noise_multiplier,
        train_steps: plan.total_steps,
        train_sampling_rate: plan.sampling_rate,
        train_examples: plan.examples,
        chosen_spec: selection.chosen_spec.clone(),
        trainable_params: plan.trainable_scalars,
        seeded: r.seed.is_some(),
        wall_s: walls.iter().sum(),
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| SelftError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Loads the private train split (a seeded subset if `train_limit` is set).
pub fn load_private(r: &RunSection) -> Result<PrivateData> {
    Ok(PrivateData::new(load_train(r)?))
}

/// The private train split as a plain data set (for baselines that DP-train on it directly; the
/// pipeline wraps it in [`PrivateData`], which selection cannot take).
pub fn load_train(r: &RunSection) -> Result<Dataset> {
    let mut train = load_dataset(&r.train_data, &LoadOptions::default())?;
    if let Some(limit) = r.train_limit {
        dpselft_data::subset(&mut train, limit, r.subset_seed);
    }
    Ok(train)
}

/// Loads the test split, if any (a seeded subset if `test_limit` is set), with the training
/// split's labels.
pub fn load_test(r: &RunSection, labels: &[String]) -> Result<Option<Dataset>> {
    let Some(path) = &r.test_data else {
        return Ok(None);
    };
    let options = LoadOptions {
        known_labels: (!labels.is_empty()).then(|| labels.to_vec()),
        min_examples_per_label: 0,
        ..LoadOptions::default()
    };
    let mut t = load_dataset(path, &options)?;
    if let Some(limit) = r.test_limit {
        dpselft_data::subset(&mut t, limit, r.subset_seed ^ 1);
    }
    Ok(Some(t))
}

/// The test accuracy of always predicting the training split's most frequent label (the floor
/// every classifier should clear).
pub fn majority_accuracy(train: &Dataset, test: &Dataset) -> Option<f64> {
    let counts = train.label_counts();
    let top = (0..counts.len()).max_by_key(|&i| counts[i])?;
    let hits = test
        .examples
        .iter()
        .filter(|e| e.label == Some(top))
        .count();
    (!test.is_empty()).then(|| hits as f64 / test.len() as f64)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    dpselft_fsio::write_bytes_atomic(path, text.as_bytes()).map_err(|e| io_err(path, e))
}
