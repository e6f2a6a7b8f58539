//! The privacy–utility benchmark: dp-selft against the baselines at the same (ε, δ), on the same
//! data subsets, with per-method hyperparameters fixed in a committed file (`bench/methods.toml`).
//!
//! A grid of (method, ε, seed) cells; each cell is one run in `OUT/runs/<cell>/` and one line in
//! `OUT/results.jsonl`. A cell already in `results.jsonl` is not run again (the grid resumes);
//! a cell folder left by an interrupted run is removed and the cell rerun. `table.md` (accuracy and
//! macro-F1, mean ± std per method and ε, best per column in bold; every cell's row; the
//! majority-class floor) and `chart.svg` (accuracy against ε) are rewritten after every cell.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use dpselft_dp::{DpTrainer, Duration, OptimizerKind, PrivacyTarget, Start, Task, TrainConfig};
use dpselft_model::{Model, TrainableSpec};
use serde::{Deserialize, Serialize};

use crate::Progress;
use crate::error::{Result, SelftError, io_err};
use crate::pipeline::{self, ResolvedPaths, RunConfig, RunSection, Scale};
use crate::select::Perturbation;

/// `bench/methods.toml`: settings shared by every method, and each method's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodsFile {
    /// Shared by every method (the same data, batch, epochs and clip norm for all).
    pub defaults: MethodDefaults,
    /// Per method name.
    pub methods: BTreeMap<String, MethodSettings>,
}

/// Settings every method shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodDefaults {
    /// Expected batch size B.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: f64,
    /// Clip norm C.
    pub clip: f64,
    /// Tokens per example.
    pub max_seq_len: usize,
    /// δ.
    pub delta: f64,
}

/// One method's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSettings {
    /// Peak learning rate.
    pub lr: f64,
    /// The trainable set (baselines); dp-selft methods choose their own.
    #[serde(default)]
    pub trainable: Option<TrainableSpec>,
    /// Train K blocks drawn at random (seeded by the cell's seed) and the head.
    #[serde(default)]
    pub random_k: Option<usize>,
}

impl MethodsFile {
    /// Reads and checks a methods file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let file: Self = toml::from_str(&text).map_err(|e| SelftError::Format {
            path: path.to_path_buf(),
            message: format!("not a methods file: {e}"),
        })?;
        for (name, m) in &file.methods {
            let kind = MethodKind::of(name)?;
            let needs_set = matches!(kind, MethodKind::Baseline | MethodKind::NonPrivate);
            if needs_set && m.trainable.is_none() && m.random_k.is_none() {
                return Err(SelftError::Format {
                    path: path.to_path_buf(),
                    message: format!("method `{name}` needs `trainable` or `random_k`"),
                });
            }
        }
        Ok(file)
    }
}

/// What kind of run a method name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// `dp-selft` or `dp-selft:perturb=<regime>`.
    Selft(Perturbation),
    /// DP fine-tuning of a fixed trainable set.
    Baseline,
    /// `non-private`: no clipping, no noise (ε = ∞).
    NonPrivate,
}

impl MethodKind {
    /// Parses a method name.
    pub fn of(name: &str) -> Result<Self> {
        match name {
            "dp-selft" => Ok(Self::Selft(Perturbation::WorstCase)),
            "non-private" => Ok(Self::NonPrivate),
            _ => match name.strip_prefix("dp-selft:perturb=") {
                Some(p) => Ok(Self::Selft(p.parse()?)),
                None if name.starts_with("dp-selft") => Err(SelftError::Config(format!(
                    "method `{name}`: expected dp-selft or dp-selft:perturb=worst-case|gaussian|none"
                ))),
                None => Ok(Self::Baseline),
            },
        }
    }
}

/// The grid to run.
#[derive(Debug, Clone)]
pub struct UtilityBench {
    /// Task name (for the results).
    pub task: String,
    /// Private training split.
    pub train_data: PathBuf,
    /// Test split.
    pub test_data: PathBuf,
    /// Target model and generator paths.
    pub paths: ResolvedPaths,
    /// Target model and generator names (for the configs).
    pub model_name: String,
    /// Generator name.
    pub generator_name: String,
    /// Methods, in the table's order.
    pub methods: Vec<String>,
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
    /// Method name.
    pub method: String,
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
    fn key(&self) -> (String, Option<u64>, u64) {
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
    let mut results = read_results(&results_path)?;
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
        write_results(&results_path, &results)?;
        write_outputs(bench, &results, majority)?;
    }
    write_outputs(bench, &results, majority)?;
    Ok(results)
}

/// The cells of the grid (the result fields other than the key are placeholders).
fn cells(bench: &UtilityBench) -> Result<Vec<CellResult>> {
    let mut out = Vec::new();
    for method in &bench.methods {
        if !bench.methods_file.methods.contains_key(method) {
            return Err(SelftError::Config(format!(
                "method `{method}` is not in the methods file (it has: {})",
                bench
                    .methods_file
                    .methods
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let eps: Vec<Option<f64>> = match MethodKind::of(method)? {
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
    let settings = &bench.methods_file.methods[&cell.method];
    let d = &bench.methods_file.defaults;
    let started = Instant::now();
    let mut r = cell.clone();
    match MethodKind::of(&cell.method)? {
        MethodKind::Selft(perturbation) => {
            let mut config = RunConfig::preset(bench.scale);
            config.run.model = bench.model_name.clone();
            config.run.generator = bench.generator_name.clone();
            config.run.train_data = bench.train_data.clone();
            config.run.test_data = Some(bench.test_data.clone());
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
            let m = pipeline::run(&config, &bench.paths, &dir, progress)?;
            let test = m
                .test
                .ok_or_else(|| SelftError::Config("no test result".into()))?;
            r.accuracy = test.accuracy.unwrap_or(0.0);
            r.macro_f1 = test.macro_f1.unwrap_or(0.0);
            r.trainable_params = m.trainable_params;
            r.epsilon_spent = Some(m.epsilon_pld);
            r.trainable = Some(m.chosen_spec);
        }
        kind => {
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
            let data = data_section(bench);
            let private = pipeline::load_private(&data)?;
            let test = pipeline::load_test(&data, private.labels())?
                .ok_or_else(|| SelftError::Config("no test split".into()))?;
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
                checkpoint_every: None,
                seed: Some(cell.seed),
                init_seed: 0,
            };
            let mut trainer = DpTrainer::new(
                config,
                model,
                private.dataset(),
                Some(&test),
                &dir,
                Start::Fresh,
            )?;
            let summary = trainer.run(progress)?;
            let test = summary
                .eval
                .ok_or_else(|| SelftError::Config("no test result".into()))?;
            r.accuracy = test.accuracy.unwrap_or(0.0);
            r.macro_f1 = test.macro_f1.unwrap_or(0.0);
            r.trainable_params = summary.plan.trainable_scalars;
            r.epsilon_spent = summary.epsilon;
            r.trainable = Some(trainable);
        }
    }
    r.wall_s = started.elapsed().as_secs_f64();
    Ok(r)
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
    let data = data_section(bench);
    let private = pipeline::load_private(&data)?;
    let test = pipeline::load_test(&data, private.labels())?
        .ok_or_else(|| SelftError::Config("no test split".into()))?;
    Ok(pipeline::majority_accuracy(private.dataset(), &test))
}

fn read_results(path: &Path) -> Result<Vec<CellResult>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| SelftError::Format {
                path: path.to_path_buf(),
                message: format!("line {}: not a benchmark result: {e}", i + 1),
            })
        })
        .collect()
}

fn write_results(path: &Path, results: &[CellResult]) -> Result<()> {
    let mut text = String::new();
    for r in results {
        let line = serde_json::to_string(r)
            .map_err(|e| SelftError::Config(format!("serialising a result: {e}")))?;
        text += &line;
        text.push('\n');
    }
    dpselft_fsio::write_bytes_atomic(path, text.as_bytes()).map_err(|e| io_err(path, e))
}

fn write_outputs(
    bench: &UtilityBench,
    results: &[CellResult],
    majority: Option<f64>,
) -> Result<()> {
    let table = table_markdown(&bench.methods, &bench.epsilons, results, majority);
    let chart = chart_svg(&bench.methods, &bench.epsilons, results);
    for (name, text) in [("table.md", table), ("chart.svg", chart)] {
        let path = bench.out.join(name);
        dpselft_fsio::write_bytes_atomic(&path, text.as_bytes()).map_err(|e| io_err(&path, e))?;
    }
    Ok(())
}

/// (mean, sample std, count) of `metric` over the seeds of one method at one ε.
fn stats(
    results: &[CellResult],
    method: &str,
    epsilon: Option<f64>,
    metric: fn(&CellResult) -> f64,
) -> Option<(f64, f64, usize)> {
    let acc: Vec<f64> = results
        .iter()
        .filter(|r| r.method == method && same_epsilon(r.epsilon, epsilon))
        .map(metric)
        .collect();
    if acc.is_empty() {
        return None;
    }
    let n = acc.len() as f64;
    let mean = acc.iter().sum::<f64>() / n;
    let var = if acc.len() > 1 {
        acc.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt(), acc.len()))
}

fn same_epsilon(a: Option<f64>, b: Option<f64>) -> bool {
    a.map(f64::to_bits) == b.map(f64::to_bits)
}

/// The grid's report: mean ± sample std over seeds of test accuracy, then of macro-F1, per
/// method (rows) and ε (columns; ∞ for non-private), the best private mean per column in bold;
/// then one row per cell (the trainable set it trained, parameters, ε spent, wall time) and the
/// total wall time. `majority`: the test accuracy of always predicting the training split's most
/// frequent label, if known. Results of other methods or ε in `results.jsonl` are left out.
pub fn table_markdown(
    methods: &[String],
    epsilons: &[f64],
    results: &[CellResult],
    majority: Option<f64>,
) -> String {
    let in_grid: Vec<&CellResult> = methods
        .iter()
        .flat_map(|m| results.iter().filter(move |r| &r.method == m))
        .filter(|r| {
            r.epsilon
                .is_none_or(|e| epsilons.iter().any(|&x| x.to_bits() == e.to_bits()))
        })
        .collect();
    let mut s = String::from("## Test accuracy\n\n");
    s += &metric_table(methods, epsilons, results, |r| r.accuracy);
    if let Some(m) = majority {
        let _ = writeln!(
            s,
            "\nAlways predicting the training subset's most frequent label: {m:.4}."
        );
    }
    s += "\n## Test macro-F1\n\n";
    s += &metric_table(methods, epsilons, results, |r| r.macro_f1);
    s += "\n## Every cell\n\n";
    s += "| method | ε | seed | trainable set | parameters | accuracy | macro-F1 | ε spent | wall time |\n";
    s += "|---|---:|---:|---|---:|---:|---:|---:|---:|\n";
    for r in &in_grid {
        let _ = writeln!(
            s,
            "| {} | {} | {} | `{}` | {} | {:.4} | {:.4} | {} | {:.0} s |",
            r.method,
            r.epsilon.map_or("∞".into(), |e| e.to_string()),
            r.seed,
            r.trainable
                .as_ref()
                .map_or(String::new(), ToString::to_string),
            r.trainable_params,
            r.accuracy,
            r.macro_f1,
            r.epsilon_spent.map_or("–".into(), |e| format!("{e:.4}")),
            r.wall_s
        );
    }
    let total: f64 = in_grid.iter().map(|r| r.wall_s).sum();
    let _ = writeln!(
        s,
        "\n{} cells, {:.0} s ({:.1} h) of runs in all.",
        in_grid.len(),
        total,
        total / 3600.0
    );
    s
}

/// One metric's mean ± std per method and ε; the best private mean per column in bold.
fn metric_table(
    methods: &[String],
    epsilons: &[f64],
    results: &[CellResult],
    metric: fn(&CellResult) -> f64,
) -> String {
    let mut cols: Vec<Option<f64>> = epsilons.iter().map(|&e| Some(e)).collect();
    cols.push(None);
    let mut s = String::from("| method |");
    for c in &cols {
        let _ = write!(s, " ε = {} |", c.map_or("∞".into(), |e| e.to_string()));
    }
    s += "\n|---|";
    s += &"---:|".repeat(cols.len());
    s.push('\n');
    let best: Vec<Option<f64>> = cols
        .iter()
        .map(|&c| {
            methods
                .iter()
                .filter_map(|m| stats(results, m, c, metric).map(|x| x.0))
                .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
        })
        .collect();
    for m in methods {
        let _ = write!(s, "| {m} |");
        for (c, b) in cols.iter().zip(&best) {
            match stats(results, m, *c, metric) {
                Some((mean, std, n)) => {
                    let cell = format!("{mean:.4} ± {std:.4} (n={n})");
                    if Some(mean) == *b && c.is_some() {
                        let _ = write!(s, " **{cell}** |");
                    } else {
                        let _ = write!(s, " {cell} |");
                    }
                }
                None => s += " – |",
            }
        }
        s.push('\n');
    }
    s
}

/// Accuracy against ε, one line per method (non-private as a dashed horizontal line).
pub fn chart_svg(methods: &[String], epsilons: &[f64], results: &[CellResult]) -> String {
    // The legend column is wide enough for names like `dp-selft:perturb=gaussian`.
    let (w, h, left, top, bottom) = (720.0, 360.0, 60.0, 30.0, 50.0);
    let plot_w = w - left - 240.0;
    let plot_h = h - top - bottom;
    let colors = [
        "#e8710a", "#4a7ebb", "#3a9a4a", "#b23a48", "#7d5ba6", "#8c6d31", "#17becf", "#555555",
        "#bcbd22", "#e377c2",
    ];
    let x_of = |i: usize| left + plot_w * (i as f64 + 0.5) / epsilons.len().max(1) as f64;
    let all: Vec<f64> = results.iter().map(|r| r.accuracy).collect();
    let lo = all.iter().cloned().fold(1.0f64, f64::min).min(1.0);
    let hi = all.iter().cloned().fold(0.0f64, f64::max).max(lo + 1e-3);
    let y_of = |a: f64| top + plot_h * (1.0 - (a - lo) / (hi - lo));
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="18" font-weight="bold">test accuracy against ε</text><line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    for (i, e) in epsilons.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">ε = {e}</text>"#,
            x_of(i),
            top + plot_h + 18.0
        );
    }
    for a in [lo, (lo + hi) / 2.0, hi] {
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{a:.3}</text>"#,
            left - 6.0,
            y_of(a) + 4.0
        );
    }
    for (k, m) in methods.iter().enumerate() {
        let color = colors[k % colors.len()];
        let ly = top + 16.0 * k as f64;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            left + plot_w + 20.0,
            ly,
            left + plot_w + 36.0,
            ly + 10.0,
            m.replace('<', "&lt;")
        );
        if let Some((mean, _, _)) = stats(results, m, None, |r| r.accuracy) {
            let _ = write!(
                s,
                r#"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{color}" stroke-dasharray="6,4"/>"#,
                left + plot_w,
                y = y_of(mean)
            );
        }
        let pts: Vec<String> = epsilons
            .iter()
            .enumerate()
            .filter_map(|(i, &e)| {
                stats(results, m, Some(e), |r| r.accuracy)
                    .map(|(mean, _, _)| format!("{:.1},{:.1}", x_of(i), y_of(mean)))
            })
            .collect();
        if !pts.is_empty() {
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                pts.join(" ")
            );
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
