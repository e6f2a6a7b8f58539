//! The privacy–utility grid: dp-selft against the baselines at the same (ε, δ), on the same
//! data subsets, with per-method hyperparameters fixed in a committed file (`bench/methods.toml`).
//!
//! A grid of (method, ε, seed) cells; each cell is one run in `OUT/runs/<cell>/` and one line in
//! `OUT/results.jsonl`. A cell already in `results.jsonl` is not run again (the grid resumes).
//! A cell interrupted midway continues: a baseline keeps its finished learning-rate runs and
//! resumes the interrupted one from its checkpoint, a dp-selft cell resumes its pipeline
//! ([`dpselft_selft::pipeline::resume`]); a folder left with another configuration is removed.
//! So a cell longer than a session still finishes, over several. Its `wall_s` counts the last
//! attempt and a baseline's learning-rate runs finished before it (not the part of an
//! interrupted run before its checkpoint, nor a dp-selft cell's earlier stages). `table.md` and
//! `chart.svg` ([`crate::table`]) are rewritten after every cell.

use std::path::PathBuf;
use std::time::Instant;

use dpselft_data::Dataset;
use dpselft_dp::{EncodedSet, Task};
use dpselft_model::TrainableSpec;
use dpselft_selft::Progress;
use dpselft_selft::error::{Result, SelftError, io_err};
use dpselft_selft::pipeline::{self, ResolvedPaths, RunSection, Scale};
use serde::{Deserialize, Serialize};

use crate::cell::{LrTrial, SharedCaches, baseline_cell, selft_cell};
use crate::methods::{Method, MethodKind, MethodsFile};
use crate::table::{Scoring, score_chart, table_markdown};
use crate::{read_rows, write_rows, write_text};

/// The grid to run.
#[derive(Debug, Clone)]
pub struct UtilityBench {
    /// Task name (for the results).
    pub task: String,
    /// What every cell's model learns: the labels (scored by test accuracy) or the text itself
    /// (a causal LM, scored by test perplexity).
    pub objective: Task,
    /// Private training split.
    pub train_data: PathBuf,
    /// Test split.
    pub test_data: PathBuf,
    /// What one example is (the synthetic stage's prompts).
    pub data_kind: String,
    /// What each label means (the synthetic stage's prompts).
    pub label_descriptions: std::collections::BTreeMap<String, String>,
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
    /// Test accuracy (classification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Test macro-F1 (classification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    /// Test perplexity (language modelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// Trainable parameters of the final model.
    pub trainable_params: usize,
    /// Seconds for the cell.
    pub wall_s: f64,
    /// ε actually spent (PLD, ledger total); `None` for non-private.
    pub epsilon_spent: Option<f64>,
    /// The trainable set trained (dp-selft: the chosen one; `None` until the cell has run).
    pub trainable: Option<TrainableSpec>,
    // The fields below were added with the learning-rate rule (issue 15); rows of earlier
    // grids lack them.
    /// Examples trained on (baselines: the training split less the validation split).
    #[serde(default)]
    pub train_examples: Option<usize>,
    /// Private validation examples that chose the learning rate (`None`: dp-selft, which
    /// chooses on its synthetic S_val).
    #[serde(default)]
    pub validation_examples: Option<usize>,
    /// Test examples scored.
    #[serde(default)]
    pub test_examples: Option<usize>,
    /// Expected batch size B.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Epochs.
    #[serde(default)]
    pub epochs: Option<f64>,
    /// Fine-tuning steps T.
    #[serde(default)]
    pub steps: Option<u64>,
    /// The fine-tuning noise multiplier σ (`None`: non-private).
    #[serde(default)]
    pub sigma: Option<f64>,
    /// The chosen peak learning rate.
    #[serde(default)]
    pub lr: Option<f64>,
    /// Every learning rate tried and its validation score.
    #[serde(default)]
    pub lr_trials: Vec<LrTrial>,
    /// Test accuracy of always predicting the training split's most frequent label.
    #[serde(default)]
    pub majority_accuracy: Option<f64>,
    /// Test perplexity of the pretrained model, not fine-tuned (language modelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained_perplexity: Option<f64>,
}

impl CellResult {
    fn placeholder(bench: &UtilityBench, method: &Method, epsilon: Option<f64>, seed: u64) -> Self {
        Self {
            task: bench.task.clone(),
            method: method.clone(),
            epsilon,
            seed,
            accuracy: None,
            macro_f1: None,
            perplexity: None,
            trainable_params: 0,
            wall_s: 0.0,
            epsilon_spent: None,
            trainable: None,
            train_examples: None,
            validation_examples: None,
            test_examples: None,
            batch_size: None,
            epochs: None,
            steps: None,
            sigma: None,
            lr: None,
            lr_trials: Vec::new(),
            majority_accuracy: None,
            pretrained_perplexity: None,
        }
    }

    fn key(&self) -> (Method, Option<u64>, u64) {
        (
            self.method.clone(),
            self.epsilon.map(f64::to_bits),
            self.seed,
        )
    }
}

/// Runs every cell not yet in `results.jsonl`, then writes the table and the chart.
///
/// Several processes may run the same grid at once (one per core, `bench utility --parallel`):
/// a process claims a cell by locking `OUT/claims/<cell>/` for as long as it runs it, skips the
/// cells others hold, and adds its result to `results.jsonl` under the lock of
/// `OUT/claims/results/` (read, add, write whole), so no result is lost or written twice.
pub fn run_grid(bench: &UtilityBench, progress: &mut dyn Progress) -> Result<Vec<CellResult>> {
    std::fs::create_dir_all(&bench.out).map_err(|e| io_err(&bench.out, e))?;
    let cells = cells(bench)?;
    // The floor depends on the data subsets only: computed once for every rewrite of the table.
    // (For a language-modelling grid it also checks, before anything is trained, that the
    // model is a causal LM.)
    let scoring = scoring(bench)?;
    let done = read_results(bench)?;
    progress.message(&format!(
        "{} cells, {} already done",
        cells.len(),
        cells.iter().filter(|c| is_done(&done, c)).count()
    ));
    let mut caches = SharedCaches::default();
    while let Some((cell, _claim)) = claim_next(bench, &cells)? {
        progress.message(&format!(
            "cell {}: {} ε = {} seed {}",
            cell_name(&cell),
            cell.method,
            cell.epsilon.map_or("∞".into(), |e| e.to_string()),
            cell.seed
        ));
        let mut r = run_cell(bench, &cell, &mut caches, progress)?;
        match scoring {
            Scoring::Accuracy { majority } => r.majority_accuracy = majority,
            Scoring::Perplexity { pretrained } => r.pretrained_perplexity = pretrained,
        }
        with_results_lock(bench, || {
            let mut results = read_results(bench)?;
            results.push(r);
            write_rows(&bench.out.join("results.jsonl"), &results)?;
            write_outputs(bench, &results, scoring)
        })?;
    }
    let results = read_results(bench)?;
    with_results_lock(bench, || write_outputs(bench, &results, scoring))?;
    Ok(results)
}

fn read_results(bench: &UtilityBench) -> Result<Vec<CellResult>> {
    read_rows(&bench.out.join("results.jsonl"), "benchmark result")
}

fn is_done(results: &[CellResult], cell: &CellResult) -> bool {
    results.iter().any(|r| r.key() == cell.key())
}

/// The first cell neither done nor held by another process, claimed (its lock held by the
/// returned guard); `None` when every cell is done or held.
fn claim_next(
    bench: &UtilityBench,
    cells: &[CellResult],
) -> Result<Option<(CellResult, dpselft_fsio::FolderLock)>> {
    for cell in cells {
        if is_done(&read_results(bench)?, cell) {
            continue;
        }
        let dir = bench.out.join("claims").join(cell_name(cell));
        let lock = match dpselft_fsio::lock_folder(&dir) {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(io_err(&dir, e)),
        };
        // Another process may have finished it between the read and the claim.
        if !is_done(&read_results(bench)?, cell) {
            return Ok(Some((cell.clone(), lock)));
        }
    }
    Ok(None)
}

/// Runs `f` holding the lock of the grid's results (waiting for another process's turn).
fn with_results_lock<T>(bench: &UtilityBench, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let dir = bench.out.join("claims").join("results");
    let _lock = loop {
        match dpselft_fsio::lock_folder(&dir) {
            Ok(lock) => break lock,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(io_err(&dir, e)),
        }
    };
    f()
}

/// The cells of the grid (the result fields other than the key are placeholders), seed by seed:
/// an interrupted grid has whole seeds done first (every method at every ε of seed 0, then of
/// seed 1, …), in the order of the ε values and methods asked for.
fn cells(bench: &UtilityBench) -> Result<Vec<CellResult>> {
    for method in &bench.methods {
        bench.methods_file.settings(method)?;
    }
    let mut out = Vec::new();
    for seed in 0..bench.seeds {
        for (i, &epsilon) in bench.epsilons.iter().enumerate() {
            for method in &bench.methods {
                match method.kind() {
                    // ε = ∞: once per seed, with the first ε.
                    MethodKind::NonPrivate if i > 0 => {}
                    MethodKind::NonPrivate => {
                        out.push(CellResult::placeholder(bench, method, None, seed))
                    }
                    _ => out.push(CellResult::placeholder(bench, method, Some(epsilon), seed)),
                }
            }
        }
    }
    Ok(out)
}

/// A cell's folder name: method, ε and seed (`:` and `=` replaced).
fn cell_name(cell: &CellResult) -> String {
    let eps = cell.epsilon.map_or("inf".into(), |e| format!("{e}"));
    format!("{}-eps{eps}-seed{}", cell.method, cell.seed).replace([':', '='], "_")
}

fn run_cell(
    bench: &UtilityBench,
    cell: &CellResult,
    caches: &mut SharedCaches,
    progress: &mut dyn Progress,
) -> Result<CellResult> {
    // An interrupted cell's folder is continued where its configuration is the same (see
    // `selft_cell` and `baseline_cell`).
    let dir = bench.out.join("runs").join(cell_name(cell));
    let settings = bench.methods_file.settings(&cell.method)?;
    let started = Instant::now();
    let o = match cell.method.kind() {
        MethodKind::Selft(variant) => selft_cell(bench, cell, variant, &dir, progress)?,
        kind => baseline_cell(bench, cell, settings, kind, &dir, caches, progress)?,
    };
    let d = &bench.methods_file.defaults;
    Ok(CellResult {
        accuracy: o.test.accuracy,
        macro_f1: o.test.macro_f1,
        perplexity: o.test.perplexity,
        trainable_params: o.trainable_params,
        epsilon_spent: o.epsilon_spent,
        trainable: Some(o.trainable),
        wall_s: started.elapsed().as_secs_f64() + o.earlier_s,
        train_examples: Some(o.train_examples),
        validation_examples: o.validation_examples,
        test_examples: Some(o.test.examples),
        batch_size: Some(d.batch_size),
        epochs: Some(d.epochs),
        steps: Some(o.steps),
        sigma: o.sigma,
        lr: Some(o.lr),
        lr_trials: o.lr_trials,
        ..cell.clone()
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

/// What the grid scores and its floor: for classification, the test accuracy of always
/// predicting the training subset's most frequent label (as in every run's report); for
/// language modelling, the test perplexity of the pretrained model.
fn scoring(bench: &UtilityBench) -> Result<Scoring> {
    let (train, test) = load_splits(bench)?;
    Ok(match bench.objective {
        Task::Classify => Scoring::Accuracy {
            majority: pipeline::majority_accuracy(&train, &test),
        },
        Task::Lm => {
            let model = bench.paths.load_model()?;
            let d = &bench.methods_file.defaults;
            let set = EncodedSet::new(&model, &test, Task::Lm, d.max_seq_len)?;
            let metrics = dpselft_dp::evaluate(&model, &set, d.max_tokens)?;
            Scoring::Perplexity {
                pretrained: metrics.perplexity,
            }
        }
    })
}

/// The training and test subsets every cell uses.
pub(crate) fn load_splits(bench: &UtilityBench) -> Result<(Dataset, Dataset)> {
    let data = data_section(bench);
    let train = pipeline::load_train(&data)?;
    let test = pipeline::load_test(&data, &train.labels)?
        .ok_or_else(|| SelftError::Config("no test split".into()))?;
    Ok((train, test))
}

/// `table.md` and `chart.svg` over the ε values asked for and every other ε the grid's
/// methods have results for (an earlier call with other `--epsilons`).
fn write_outputs(bench: &UtilityBench, results: &[CellResult], scoring: Scoring) -> Result<()> {
    let mut epsilons = bench.epsilons.clone();
    for r in results.iter().filter(|r| bench.methods.contains(&r.method)) {
        if let Some(e) = r.epsilon
            && !epsilons.iter().any(|x| x.to_bits() == e.to_bits())
        {
            epsilons.push(e);
        }
    }
    epsilons.sort_by(f64::total_cmp);
    let table = table_markdown(&bench.methods, &epsilons, results, scoring);
    write_text(&bench.out.join("table.md"), &table)?;
    let chart = score_chart(&bench.methods, &epsilons, results, scoring);
    dpselft_chart::write(&chart, &bench.out.join("chart.svg"))?;
    Ok(())
}
