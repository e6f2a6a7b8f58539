//! The privacy–utility grid: dp-selft against the baselines at the same (ε, δ), on the same
//! data subsets, with per-method hyperparameters fixed in a committed file (`bench/methods.toml`).
//!
//! A grid of (method, ε, seed) cells; each cell is one run in `OUT/runs/<cell>/` and one line in
//! `OUT/results.jsonl`. A cell already in `results.jsonl` is not run again (the grid resumes);
//! a cell folder left by an interrupted run is removed and the cell rerun. `table.md` and
//! `chart.svg` ([`crate::table`]) are rewritten after every cell.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use dpselft_data::Dataset;
use dpselft_dp::{
    DpTrainer, Duration, EvalMetrics, OptimizerKind, PrivacyTarget, Start, Task, TrainConfig,
    TrainData, TrainerOptions,
};
use dpselft_model::{Model, TrainableSpec};
use dpselft_selft::error::{Result, SelftError, io_err};
use dpselft_selft::pipeline::{self, ResolvedPaths, RunConfig, RunSection, Scale};
use dpselft_selft::{Perturbation, Progress};
use serde::{Deserialize, Serialize};

use crate::methods::{Method, MethodKind, MethodSettings, MethodsFile};
use crate::table::{accuracy_chart, table_markdown};
use crate::{read_rows, write_rows, write_text};

/// The grid to run.
#[derive(Debug, Clone)]
pub struct UtilityBench {
    /// Task name (for the results).
    pub task: String,
    /// Private training split.
    pub train_data: PathBuf,
    /// Test split.
    pub test_data: PathBuf,
    /// What one example is (the synthetic stage's prompts).
    pub data_kind: String,
    /// Target model and generator paths.
    pub paths: ResolvedPaths,
    /// Target model and generator names (for the configs).
    pub model_name: String,
    /// Generator name.
    pub generator_name: String,
    /// Methods, in the table's order.
    pub methods: Vec<Method>,
    /// ε values (non-private runs once per seed, as ε = ∞).
    pub epsilons: Vec<f64>,
    /// Seeds 0..seeds.
    pub seeds: u64,
    /// Stage sizes of dp-selft (the preset's data subsets are replaced by the two limits).
    pub scale: Scale,
    /// Seeded subset of the training split for every method (`None`: all of it).
    pub train_limit: Option<usize>,
    /// Seeded subset of the test split (`None`: all of it).
    pub test_limit: Option<usize>,
    /// The methods file.
    pub methods_file: MethodsFile,
    /// Output folder.
    pub out: PathBuf,
}

/// One line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// Task name.
    pub task: String,
    /// The method.
    pub method: Method,
    /// Target ε (`None`: non-private, ε = ∞).
    pub epsilon: Option<f64>,
    /// Seed.
    pub seed: u64,
    /// Test accuracy.
    pub accuracy: f64,
    /// Test macro-F1.
    pub macro_f1: f64,
    /// Trainable parameters of the final model.
    pub trainable_params: usize,
    /// Seconds for the cell.
    pub wall_s: f64,
    /// ε actually spent (PLD, ledger total); `None` for non-private.
    pub epsilon_spent: Option<f64>,
    /// The trainable set trained (dp-selft: the chosen one; `None` until the cell has run).
    pub trainable: Option<TrainableSpec>,
}

impl CellResult {
    fn key(&self) -> (Method, Option<u64>, u64) {
        (
            self.method.clone(),
            self.epsilon.map(f64::to_bits),
            self.seed,
        )
    }
}

/// Runs every cell not yet in `results.jsonl`, then writes the table and the chart.
pub fn run_grid(bench: &UtilityBench, progress: &mut dyn Progress) -> Result<Vec<CellResult>> {
    std::fs::create_dir_all(&bench.out).map_err(|e| io_err(&bench.out, e))?;
    let results_path = bench.out.join("results.jsonl");
    let mut results: Vec<CellResult> = read_rows(&results_path, "benchmark result")?;
    let cells = cells(bench)?;
    // The floor depends on the data subsets only: computed once for every rewrite of the table.
    let majority = majority_accuracy(bench)?;
    let todo: Vec<_> = cells
        .iter()
        .filter(|c| !results.iter().any(|r| r.key() == c.key()))
        .collect();
    progress.message(&format!(
        "{} cells, {} already done, {} to run",
        cells.len(),
        cells.len() - todo.len(),
        todo.len()
    ));
    for (i, cell) in todo.iter().enumerate() {
        progress.message(&format!(
            "cell {}/{}: {} ε = {} seed {}",
            i + 1,
            todo.len(),
            cell.method,
            cell.epsilon.map_or("∞".into(), |e| e.to_string()),
            cell.seed
        ));
        let r = run_cell(bench, cell, progress)?;
        results.push(r);
        write_rows(&results_path, &results)?;
        write_outputs(bench, &results, majority)?;
    }
    write_outputs(bench, &results, majority)?;
    Ok(results)
}

/// The cells of the grid (the result fields other than the key are placeholders).
fn cells(bench: &UtilityBench) -> Result<Vec<CellResult>> {
    let mut out = Vec::new();
    for method in &bench.methods {
        bench.methods_file.settings(method)?;
        let eps: Vec<Option<f64>> = match method.kind() {
            MethodKind::NonPrivate => vec![None],
            _ => bench.epsilons.iter().map(|&e| Some(e)).collect(),
        };
        for epsilon in eps {
            for seed in 0..bench.seeds {
                out.push(CellResult {
                    task: bench.task.clone(),
                    method: method.clone(),
                    epsilon,
                    seed,
                    accuracy: 0.0,
                    macro_f1: 0.0,
                    trainable_params: 0,
                    wall_s: 0.0,
                    epsilon_spent: None,
                    trainable: None,
                });
            }
        }
    }
    Ok(out)
}

fn cell_dir(bench: &UtilityBench, cell: &CellResult) -> PathBuf {
    let eps = cell.epsilon.map_or("inf".into(), |e| format!("{e}"));
    let name = format!("{}-eps{eps}-seed{}", cell.method, cell.seed).replace([':', '='], "_");
    bench.out.join("runs").join(name)
}

fn run_cell(
    bench: &UtilityBench,
    cell: &CellResult,
    progress: &mut dyn Progress,
) -> Result<CellResult> {
    let dir = cell_dir(bench, cell);
    if dir.exists() {
        // An interrupted cell: its partial run is discarded and the cell starts again.
        std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    }
    let settings = bench.methods_file.settings(&cell.method)?;
    let started = Instant::now();
    let outcome = match cell.method.kind() {
        MethodKind::Selft(perturbation) => {
            selft_cell(bench, cell, settings, perturbation, &dir, progress)?
        }
        kind => baseline_cell(bench, cell, settings, kind, &dir, progress)?,
    };
    Ok(CellResult {
        accuracy: outcome.test.accuracy.unwrap_or(0.0),
        macro_f1: outcome.test.macro_f1.unwrap_or(0.0),
        trainable_params: outcome.trainable_params,
        epsilon_spent: outcome.epsilon_spent,
        trainable: Some(outcome.trainable),
        wall_s: started.elapsed().as_secs_f64(),
        ..cell.clone()
    })
}

/// What a cell's run gave.
struct CellOutcome {
    test: EvalMetrics,
    trainable_params: usize,
    epsilon_spent: Option<f64>,
    trainable: TrainableSpec,
}

/// A dp-selft cell: the whole pipeline at the cell's ε, with the grid's shared settings.
fn selft_cell(
    bench: &UtilityBench,
    cell: &CellResult,
    settings: &MethodSettings,
    perturbation: Perturbation,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<CellOutcome> {
    let d = &bench.methods_file.defaults;
    let mut config = RunConfig::preset(bench.scale);
    config.run.model = bench.model_name.clone();
    config.run.generator = bench.generator_name.clone();
    config.run.train_data = bench.train_data.clone();
    config.run.test_data = Some(bench.test_data.clone());
    config.run.data_kind = bench.data_kind.clone();
    config.run.epsilon = cell.epsilon.unwrap_or(f64::INFINITY);
    config.run.delta = d.delta;
    config.run.seed = Some(cell.seed);
    // The same subsets as the baselines, whatever the cell's seed.
    config.run.train_limit = bench.train_limit;
    config.run.test_limit = bench.test_limit;
    config.run.subset_seed = 0;
    config.select.perturbation = perturbation;
    config.train.lr = settings.lr;
    config.train.batch_size = d.batch_size;
    config.train.epochs = d.epochs;
    config.train.clip = d.clip;
    config.train.max_seq_len = d.max_seq_len;
    let m = pipeline::run(&config, &bench.paths, dir, progress)?;
    Ok(CellOutcome {
        test: m
            .test
            .ok_or_else(|| SelftError::Config("no test result".into()))?,
        trainable_params: m.trainable_params,
        epsilon_spent: Some(m.epsilon_pld),
        trainable: m.chosen_spec,
    })
}

/// A baseline (or non-private) cell: DP fine-tuning of the method's fixed trainable set.
fn baseline_cell(
    bench: &UtilityBench,
    cell: &CellResult,
    settings: &MethodSettings,
    kind: MethodKind,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<CellOutcome> {
    let d = &bench.methods_file.defaults;
    let model = Model::load(&bench.paths.model, &Device::Cpu)?;
    let trainable = match (&settings.trainable, settings.random_k) {
        (_, Some(k)) => dpselft_dp::random_blocks_spec(k, model.num_blocks(), cell.seed),
        (Some(t), None) => t.clone(),
        (None, None) => {
            return Err(SelftError::Config(format!(
                "method `{}` needs `trainable` or `random_k`",
                cell.method
            )));
        }
    };
    let (train, test) = load_splits(bench)?;
    let privacy = match (kind, cell.epsilon) {
        (MethodKind::NonPrivate, _) | (_, None) => PrivacyTarget::NonPrivate,
        (_, Some(epsilon)) => PrivacyTarget::Private {
            epsilon,
            delta: d.delta,
        },
    };
    let config = TrainConfig {
        task: Task::Classify,
        trainable: trainable.clone(),
        duration: Duration::Epochs(d.epochs),
        batch_size: d.batch_size,
        clip: d.clip,
        automatic_clip_gamma: None,
        lr: settings.lr,
        optimizer: OptimizerKind::default(),
        warmup_steps: 0,
        privacy,
        max_tokens: 8192,
        max_seq_len: d.max_seq_len,
        eval_every: None,
        log_every: 1,
        checkpoints: dpselft_dp::Checkpoints::Off,
        seed: Some(cell.seed),
        init_seed: 0,
        log_private_metrics: false,
        allow_large_delta: false,
    };
    // Frozen blocks below the trainable ones run once per example (last-k, random-k, dp-selft).
    let options = TrainerOptions {
        prefix_cache: true,
        ..TrainerOptions::default()
    };
    let mut trainer = DpTrainer::new_with(
        config,
        model,
        TrainData::Dataset(&train),
        Some(&test),
        dir,
        Start::Fresh,
        &options,
    )?;
    let summary = trainer.run(progress)?;
    Ok(CellOutcome {
        test: summary
            .eval
            .ok_or_else(|| SelftError::Config("no test result".into()))?,
        trainable_params: summary.plan.trainable_scalars,
        epsilon_spent: summary.epsilon,
        trainable,
    })
}

/// The data settings of every cell: the same loading and subsets as a dp-selft cell's pipeline
/// (subset seed 0, whatever the cell's seed).
fn data_section(bench: &UtilityBench) -> RunSection {
    RunSection {
        train_data: bench.train_data.clone(),
        test_data: Some(bench.test_data.clone()),
        train_limit: bench.train_limit,
        test_limit: bench.test_limit,
        subset_seed: 0,
        ..RunSection::default()
    }
}

/// The test accuracy of always predicting the training subset's most frequent label, as in
/// every run's report.
fn majority_accuracy(bench: &UtilityBench) -> Result<Option<f64>> {
    let (train, test) = load_splits(bench)?;
    Ok(pipeline::majority_accuracy(&train, &test))
}

/// The training and test subsets every cell uses.
fn load_splits(bench: &UtilityBench) -> Result<(Dataset, Dataset)> {
    let data = data_section(bench);
    let train = pipeline::load_train(&data)?;
    let test = pipeline::load_test(&data, &train.labels)?
        .ok_or_else(|| SelftError::Config("no test split".into()))?;
    Ok((train, test))
}

fn write_outputs(
    bench: &UtilityBench,
    results: &[CellResult],
    majority: Option<f64>,
) -> Result<()> {
    let table = table_markdown(&bench.methods, &bench.epsilons, results, majority);
    write_text(&bench.out.join("table.md"), &table)?;
    let chart = accuracy_chart(&bench.methods, &bench.epsilons, results);
    dpselft_chart::write(&chart, &bench.out.join("chart.svg"))?;
    Ok(())
}
