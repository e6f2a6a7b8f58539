//! One cell of the grid: a dp-selft run, or a baseline trained at every learning rate of the
//! shared grid with the best kept by its validation split — one learning-rate rule for every
//! method, never the test split.
//!
//! - **Baselines** (and `non-private`) hold out `validation_fraction` of the private training
//!   split (seeded, the same for every method), train on the rest at each learning rate, each
//!   run at the cell's full (ε, δ) with its own ledger, and keep the run with the best validation
//!   accuracy (ties: the lower validation loss). This is the literature's convention; choosing
//!   among the runs on private data is itself a release whose privacy cost is **not** accounted
//!   (the table says so).
//! - **dp-selft** trains on the whole private split and chooses its learning rate on its
//!   synthetic validation split S_val (the selection stage's learning-rate trials), which costs
//!   no privacy: its ledger is the whole truth.
//!
//! The frozen blocks below a baseline's trainable set compute the same states in every
//! learning-rate run and every cell with the same boundary, so one process keeps them
//! ([`SharedCaches`]) and computes them once, in file order (the results do not depend on
//! which cells ran before).

use std::path::Path;

use dpselft_data::{Dataset, split_held_out};
use dpselft_dp::{
    DpTrainer, Duration, EncodedSet, EvalMetrics, HeadChoice, OptimizerKind, PrefixCache,
    PrefixCaches, PrivacyTarget, Start, TrainConfig, TrainData, TrainSummary, TrainableParams,
    TrainerOptions, prepare_model,
};
use dpselft_model::{Model, TrainableSpec};
use dpselft_selft::error::{Result, SelftError, io_err};
use dpselft_selft::pipeline::{self, RunConfig, RunMetrics};
use dpselft_selft::select::rate_key;
use dpselft_selft::{Progress, Selection, SynthSection};
use serde::{Deserialize, Serialize};

use crate::grid::{CellResult, UtilityBench};
use crate::methods::{MethodKind, MethodSettings, SelftVariant};

/// The seed of the validation split (public randomness, the same for every method and seed).
pub const VALIDATION_SEED: u64 = 0x7a11_da7e;

/// One learning rate a cell tried and how it scored on the cell's validation data (baselines:
/// the held-out private split; dp-selft: the synthetic S_val).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrTrial {
    /// The peak learning rate.
    pub lr: f64,
    /// Validation accuracy.
    pub accuracy: Option<f64>,
    /// Mean validation loss.
    pub loss: f64,
}

/// What a cell's run gave.
pub(crate) struct CellOutcome {
    pub test: EvalMetrics,
    pub trainable_params: usize,
    pub epsilon_spent: Option<f64>,
    pub trainable: TrainableSpec,
    pub train_examples: usize,
    pub validation_examples: Option<usize>,
    pub steps: u64,
    pub sigma: Option<f64>,
    pub lr: f64,
    pub lr_trials: Vec<LrTrial>,
    /// Seconds of training that earlier attempts of the cell did and this one kept.
    pub earlier_s: f64,
}

/// Frozen-prefix caches of the baselines' training, validation and test sets, kept across the
/// learning-rate runs and cells of one process: per block boundary, the two used last (to
/// bound memory: a boundary of brown-genre's full split holds ~1.5 GB).
#[derive(Default)]
pub(crate) struct SharedCaches {
    /// Most recently used last.
    at: Vec<BoundaryCaches>,
}

struct BoundaryCaches {
    upto: usize,
    fit_val: PrefixCaches,
    test: Option<PrefixCache>,
}

/// Boundaries whose caches are kept.
const KEPT_BOUNDARIES: usize = 2;

impl SharedCaches {
    /// Lends the caches of the trainer's boundary to it where they fit, then fills what is
    /// missing in file order and keeps the result.
    fn lend(&mut self, trainer: &mut DpTrainer, progress: &mut dyn Progress) -> Result<()> {
        let Some(upto) = trainer
            .prefix_caches()
            .train
            .as_ref()
            .map(PrefixCache::upto)
        else {
            return Ok(()); // nothing frozen below the trainable set
        };
        let known = self.take(upto);
        if let Some(b) = &known {
            trainer.reuse_prefix_caches(&b.fit_val);
        } else {
            progress.message(&format!(
                "  computing the frozen blocks 0..{upto} once for the training and validation sets"
            ));
        }
        trainer.fill_prefix_caches()?;
        self.at.push(BoundaryCaches {
            upto,
            fit_val: trainer.prefix_caches(),
            test: known.and_then(|b| b.test),
        });
        if self.at.len() > KEPT_BOUNDARIES {
            self.at.remove(0);
        }
        Ok(())
    }

    /// Removes and returns the caches at `upto`.
    fn take(&mut self, upto: usize) -> Option<BoundaryCaches> {
        let i = self.at.iter().position(|b| b.upto == upto)?;
        Some(self.at.remove(i))
    }

    /// Evaluates `model` on the test set, through the test set's cache at the model's frozen
    /// boundary when the training caches have one, in micro-batches of `max_tokens`.
    fn evaluate_test(
        &mut self,
        model: &Model,
        test: &EncodedSet,
        max_tokens: usize,
    ) -> Result<EvalMetrics> {
        let upto = model.lowest_trainable_block();
        let frozen = !model.embeddings_trainable() && upto > 0;
        let Some(b) = self.at.iter_mut().find(|b| frozen && b.upto == upto) else {
            return Ok(dpselft_dp::evaluate(model, test, max_tokens)?);
        };
        let cache = b
            .test
            .get_or_insert_with(|| PrefixCache::new(upto, test.len()));
        cache.fill_all(model, test, max_tokens)?;
        Ok(dpselft_dp::evaluate_cached(
            model,
            test,
            max_tokens,
            Some(cache),
        )?)
    }
}

/// A dp-selft cell: the whole pipeline at the cell's ε with the grid's shared settings; its
/// final learning rate is the best of the shared grid on S_val.
pub(crate) fn selft_cell(
    bench: &UtilityBench,
    cell: &CellResult,
    variant: SelftVariant,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<CellOutcome> {
    let d = &bench.methods_file.defaults;
    let mut config = RunConfig::preset(bench.scale);
    if let Some(name) = variant.synthesizer {
        config.synth = SynthSection::named(name)?;
        config.synth.scale_to(bench.scale);
    }
    config.run.model = bench.model_name.clone();
    config.run.generator = bench.generator_name.clone();
    config.run.train_data = bench.train_data.clone();
    config.run.test_data = Some(bench.test_data.clone());
    config.run.data_kind = bench.data_kind.clone();
    config.run.label_descriptions = bench.label_descriptions.clone();
    config.run.task = bench.objective;
    config.run.epsilon = cell.epsilon.unwrap_or(f64::INFINITY);
    config.run.delta = d.delta;
    config.run.seed = Some(cell.seed);
    // The same subsets as the baselines, whatever the cell's seed.
    config.run.train_limit = bench.train_limit;
    config.run.test_limit = bench.test_limit;
    config.run.subset_seed = 0;
    if let Some(p) = variant.perturbation {
        config.select.perturbation = p;
    }
    if let Some(r) = variant.rate_search {
        config.select.rate_search = r;
    }
    if let Some(f) = variant.step_fraction {
        config.select.step_fraction = f;
        config.select.lr_step_fraction = f;
    }
    config.select.max_candidates = variant.max_candidates;
    config.select.sub_blocks = variant.sub_blocks;
    // The selection trains its candidates at the grid's geometric centre and the chosen set at
    // every rate of the grid (as multiples of the centre).
    let centre = geometric_centre(&d.lr_grid);
    config.train.lr = centre;
    config.select.lr_grid = d.lr_grid.iter().map(|lr| lr / centre).collect();
    config.train.batch_size = d.batch_size;
    config.train.epochs = d.epochs;
    config.train.clip = d.clip;
    config.train.max_seq_len = d.max_seq_len;
    config.train.max_tokens = d.max_tokens;
    let m = match earlier_attempt(dir, &config)? {
        Earlier::Finished(m) => *m,
        Earlier::Interrupted => {
            progress.message("  continuing the interrupted attempt of this cell");
            pipeline::resume(&bench.paths, dir, progress)?
        }
        Earlier::None => pipeline::run(&config, &bench.paths, dir, progress)?,
    };
    let selection = read_selection(dir)?;
    Ok(CellOutcome {
        test: m
            .test
            .ok_or_else(|| SelftError::Config("no test result".into()))?,
        trainable_params: m.trainable_params,
        epsilon_spent: Some(m.epsilon_pld),
        trainable: m.chosen_spec,
        train_examples: m.train_examples,
        validation_examples: None,
        steps: m.train_steps,
        sigma: Some(m.train_sigma),
        lr: selection.chosen_lr,
        lr_trials: selection
            .lr_trials
            .iter()
            .map(|c| LrTrial {
                lr: c.lr,
                accuracy: c.accuracy,
                loss: c.loss,
            })
            .collect(),
        earlier_s: 0.0,
    })
}

/// What an earlier attempt of a dp-selft cell left in its folder.
enum Earlier {
    /// Nothing (or the run of another configuration, now removed).
    None,
    /// A run of this configuration, killed before it finished: [`pipeline::resume`] continues it.
    Interrupted,
    /// A finished run of this configuration (killed before its result line was written).
    Finished(Box<RunMetrics>),
}

fn earlier_attempt(dir: &Path, config: &RunConfig) -> Result<Earlier> {
    if !dir.exists() {
        return Ok(Earlier::None);
    }
    let same = RunConfig::load(&dir.join("config.toml")).is_ok_and(|c| c == *config);
    if !same {
        std::fs::remove_dir_all(dir).map_err(|e| io_err(dir, e))?;
        return Ok(Earlier::None);
    }
    let path = dir.join("metrics.json");
    if !path.exists() {
        return Ok(Earlier::Interrupted);
    }
    let metrics = read_json(&path, "run's metrics")?;
    Ok(Earlier::Finished(Box::new(metrics)))
}

/// A run folder's `selection.json`.
pub(crate) fn read_selection(dir: &Path) -> Result<Selection> {
    read_json(&dir.join("selection.json"), "selection")
}

/// A JSON file of the run folder; `what` names it in the error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| SelftError::Format {
        path: path.to_path_buf(),
        message: format!("not a {what}: {e}"),
    })
}

/// exp(mean ln lr): the middle of a log-spaced grid.
fn geometric_centre(grid: &[f64]) -> f64 {
    (grid.iter().map(|l| l.ln()).sum::<f64>() / grid.len() as f64).exp()
}

/// A baseline (or non-private) cell: its fixed trainable set trained at every learning rate of
/// the grid on the training split less the validation split; the best on validation is the
/// cell's model, scored once on the test split.
pub(crate) fn baseline_cell(
    bench: &UtilityBench,
    cell: &CellResult,
    settings: &MethodSettings,
    kind: MethodKind,
    dir: &Path,
    caches: &mut SharedCaches,
    progress: &mut dyn Progress,
) -> Result<CellOutcome> {
    let d = &bench.methods_file.defaults;
    let trainable = baseline_spec(bench, cell, settings)?;
    let (train, test) = crate::grid::load_splits(bench)?;
    let (fit, val) = split_held_out(&train, d.validation_fraction, VALIDATION_SEED);
    if val.is_empty() {
        return Err(SelftError::Config(format!(
            "{}: no validation split can be held out (one example, or every example in one \
             group)",
            bench.train_data.display()
        )));
    }
    let privacy = match (kind, cell.epsilon) {
        (MethodKind::NonPrivate, _) | (_, None) => PrivacyTarget::NonPrivate,
        (_, Some(epsilon)) => PrivacyTarget::Private {
            epsilon,
            delta: d.delta,
        },
    };
    let mut trials = Vec::new();
    let mut earlier_s = 0.0;
    let mut best: Option<(usize, TrainSummary)> = None;
    for &lr in &d.lr_grid {
        progress.message(&format!("  {} at lr {lr:.2e}", cell.method));
        let config = baseline_config(bench, trainable.clone(), lr, privacy, cell.seed);
        let run_dir = dir.join(lr_folder(lr));
        let summary = match finished_trial(&run_dir, &config)? {
            Some(summary) => {
                progress.message("    finished in an earlier attempt: kept");
                earlier_s += summary.wall_s;
                summary
            }
            None => train_once(bench, config, &fit, &val, &run_dir, caches, progress)?,
        };
        let v = summary
            .eval
            .clone()
            .ok_or_else(|| SelftError::Config("no validation result".into()))?;
        trials.push(LrTrial {
            lr,
            accuracy: v.accuracy,
            loss: v.loss,
        });
        let i = trials.len() - 1;
        if best
            .as_ref()
            .is_none_or(|(b, _)| better(&trials[i], &trials[*b]))
        {
            best = Some((i, summary));
        }
    }
    let (i, summary) =
        best.ok_or_else(|| SelftError::Config("the learning-rate grid is empty".into()))?;
    let config = baseline_config(bench, trainable.clone(), trials[i].lr, privacy, cell.seed);
    let model = trained_model(bench, &config, &fit, &dir.join(lr_folder(trials[i].lr)))?;
    let test_set = EncodedSet::new(&model, &test, bench.objective, d.max_seq_len)?;
    let test_metrics = caches.evaluate_test(&model, &test_set, d.max_tokens)?;
    Ok(CellOutcome {
        test: test_metrics,
        trainable_params: summary.plan.trainable_scalars,
        epsilon_spent: summary.epsilon,
        trainable,
        train_examples: fit.len(),
        validation_examples: Some(val.len()),
        steps: summary.steps,
        sigma: summary.epsilon.map(|_| summary.plan.noise_multiplier),
        lr: trials[i].lr,
        lr_trials: trials,
        earlier_s,
    })
}

/// The folder of one learning-rate run inside its cell's folder.
fn lr_folder(lr: f64) -> String {
    format!("lr-{lr:.2e}")
}

/// What a learning-rate run's folder holds besides the trainer's files: the configuration it
/// runs (written first) and, once it has finished, its trained parameters (written last).
const RUN_CONFIG: &str = "config.json";
const TRAINED: &str = "trained.safetensors";

/// Whether the training run in `run_dir` was started with `config` ([`write_run_config`]).
pub(crate) fn ran_with(run_dir: &Path, config: &TrainConfig) -> bool {
    std::fs::read_to_string(run_dir.join(RUN_CONFIG))
        .ok()
        .and_then(|t| serde_json::from_str::<TrainConfig>(&t).ok())
        .is_some_and(|c| c == *config)
}

/// Records the configuration a training run in `run_dir` starts with, before it starts.
pub(crate) fn write_run_config(run_dir: &Path, config: &TrainConfig) -> Result<()> {
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| SelftError::Config(format!("serialising the run's configuration: {e}")))?;
    crate::write_text(&run_dir.join(RUN_CONFIG), &text)
}

/// The summary of the learning-rate run in `run_dir` if an earlier attempt of the cell finished
/// it with this very configuration. A folder left with another configuration, or finished but
/// killed before its parameters were saved (nothing of it was used), is removed; one that was
/// interrupted mid-run is left for [`train_once`] to resume from its checkpoint.
fn finished_trial(run_dir: &Path, config: &TrainConfig) -> Result<Option<TrainSummary>> {
    if !run_dir.exists() {
        return Ok(None);
    }
    let same = ran_with(run_dir, config);
    let finished = dpselft_dp::finished_summary(run_dir);
    match (same, finished, run_dir.join(TRAINED).exists()) {
        (true, Some(summary), true) => Ok(Some(summary)),
        (true, None, _) => Ok(None),
        _ => {
            std::fs::remove_dir_all(run_dir).map_err(|e| io_err(run_dir, e))?;
            Ok(None)
        }
    }
}

/// Higher validation accuracy, then lower validation loss: the rule dp-selft's selection
/// uses for its rate too.
fn better(a: &LrTrial, b: &LrTrial) -> bool {
    rate_key(a.accuracy, a.loss) > rate_key(b.accuracy, b.loss)
}

/// One training run of a baseline at one learning rate, through the shared caches: a new run,
/// or the continuation of an interrupted attempt's (from its checkpoint; before the first one,
/// from step 0 with the lost steps still counted). Its trained parameters are saved last.
fn train_once(
    bench: &UtilityBench,
    config: TrainConfig,
    fit: &Dataset,
    val: &Dataset,
    run_dir: &Path,
    caches: &mut SharedCaches,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let start = if run_dir.exists() {
        Start::Resume
    } else {
        Start::Fresh
    };
    std::fs::create_dir_all(run_dir).map_err(|e| io_err(run_dir, e))?;
    write_run_config(run_dir, &config)?;
    let model = bench.paths.load_model()?;
    // Frozen blocks below the trainable ones run once per example (last-k, random-k, head).
    let options = TrainerOptions {
        prefix_cache: true,
        ..TrainerOptions::default()
    };
    let mut trainer = DpTrainer::new_with(
        config,
        model,
        TrainData::Dataset(fit),
        Some(val),
        run_dir,
        start,
        &options,
    )?;
    caches.lend(&mut trainer, progress)?;
    let summary = trainer.run(progress)?;
    dpselft_dp::save_trained(&run_dir.join(TRAINED), trainer.params())?;
    Ok(summary)
}

/// The model a finished learning-rate run trained: the base model set up as the run set it up
/// ([`prepare_model`]), with the run's saved parameters.
fn trained_model(
    bench: &UtilityBench,
    config: &TrainConfig,
    fit: &Dataset,
    run_dir: &Path,
) -> Result<Model> {
    let mut model = bench.paths.load_model()?;
    let head = HeadChoice::New(fit.labels.clone());
    prepare_model(
        &mut model,
        config.task,
        head,
        &config.trainable,
        config.init_seed,
    )?;
    let params = TrainableParams::of(&model)?;
    dpselft_dp::load_trained(&run_dir.join(TRAINED), &params)?;
    Ok(model)
}

/// The trainable set of a baseline: its own, or `random_k` blocks drawn with the cell's seed.
fn baseline_spec(
    bench: &UtilityBench,
    cell: &CellResult,
    settings: &MethodSettings,
) -> Result<TrainableSpec> {
    match (&settings.trainable, settings.random_k) {
        (_, Some(k)) => {
            let blocks = bench.paths.load_model()?.num_blocks();
            Ok(dpselft_dp::random_blocks_spec(k, blocks, cell.seed))
        }
        (Some(t), None) => Ok(t.clone()),
        (None, None) => Err(SelftError::Config(format!(
            "method `{}` needs `trainable` or `random_k`",
            cell.method
        ))),
    }
}

fn baseline_config(
    bench: &UtilityBench,
    trainable: TrainableSpec,
    lr: f64,
    privacy: PrivacyTarget,
    seed: u64,
) -> TrainConfig {
    let d = &bench.methods_file.defaults;
    TrainConfig {
        task: bench.objective,
        trainable,
        duration: Duration::Epochs(d.epochs),
        batch_size: d.batch_size,
        clip: d.clip,
        automatic_clip_gamma: None,
        lr,
        optimizer: OptimizerKind::default(),
        warmup_steps: 0,
        privacy,
        max_tokens: d.max_tokens,
        max_seq_len: d.max_seq_len,
        eval_every: None,
        log_every: 1,
        // A long cell continues after an interruption from its runs' checkpoints.
        checkpoints: dpselft_dp::Checkpoints::Auto,
        seed: Some(seed),
        init_seed: 0,
        log_private_metrics: false,
        allow_large_delta: false,
    }
}
