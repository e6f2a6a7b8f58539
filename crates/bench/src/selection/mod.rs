//! `dpselft bench selection`: the selection's choice against the oracle.
//!
//! The private training split is cut (seeded, public randomness) into a part the run sees and a
//! held-out *validation* part; the test split is never read — this bench is what selection is
//! developed against, so it must not be the test set. The run's stages 1 and 2 choose a set on
//! the part it sees; then every candidate of the menu is actually DP-fine-tuned on that part at
//! the run's (ε, δ) — the synthetic stage's mechanisms in its ledger, σ calibrated as stage 3
//! would — and scored on the held-out part. Reported: each candidate's synthetic score and its
//! held-out accuracy, their Spearman rank correlation, and the regret (the best candidate's
//! accuracy − the chosen one's).
//!
//! Each candidate is fine-tuned at one or more learning rates (`oracle_lrs`); its oracle score
//! is its best rate's by the baselines' rule (the higher held-out accuracy, ties to the lower
//! loss), as every method of the utility grid gets its own best rate. *Variants* — other
//! selection settings (perturbation, rate search, steps) run on the same synthetic data — are
//! scored against the same oracle, so one bench compares selection designs on real data.
//!
//! Resumable: stages 1–2 run once (`run/selection.json`), each variant's selection once
//! (`variants/<name>/selection.json`), each (candidate, rate) result is appended to
//! `oracle.jsonl` as it finishes (the file rewritten atomically), and a rerun skips what is there;
//! an oracle run stopped midway continues from its last checkpoint (ten per run).

use std::path::{Path, PathBuf};

use dpselft_data::{Dataset, split_held_out, write_jsonl};
use dpselft_dp::checkpoint::has_checkpoint;
use dpselft_dp::{
    Checkpoints, DpTrainer, Start, TrainConfig, TrainData, TrainSummary, TrainerOptions,
};
use dpselft_model::TrainableSpec;
use dpselft_privacy::Stage;
use dpselft_selft::error::io_err;
use dpselft_selft::pipeline::{
    ResolvedPaths, SelectSection, SelectSettings, load_train, run_select, run_synth, stage3_config,
};
use dpselft_selft::select::CandidateResult;
use dpselft_selft::{Progress, Result, RunConfig, Selection, SelftError};
use serde::{Deserialize, Serialize};

use crate::cell::{ran_with, read_selection, write_run_config};
use crate::{read_rows, write_rows, write_text};

mod report;

pub use report::{SelectionReport, SpecScore, VariantReport, scatter_chart, spearman};
use report::{summarise, variant_report};

/// One bench.
pub struct SelectionBench {
    /// The task's name.
    pub task: String,
    /// The run (its data, models, ε, δ, seed and stage settings); `run.test_data` is ignored.
    pub config: RunConfig,
    /// The models.
    pub paths: ResolvedPaths,
    /// Share of the private training split held out for scoring.
    pub held_out_fraction: f64,
    /// The work folder (resumed if it exists).
    pub work: PathBuf,
    /// Train nothing more: summarise the candidates finished so far (for a bench that outlives
    /// a session; the report says which candidates are missing).
    pub report_only: bool,
    /// The learning rates every candidate is DP-fine-tuned at (empty: the run's `train.lr`).
    pub oracle_lrs: Vec<f64>,
    /// More rates for the head-alone candidate only (its runs are cheap: frozen features).
    pub oracle_head_lrs: Vec<f64>,
    /// Other selection settings, each run on the same synthetic data and scored against the
    /// same oracle.
    pub variants: Vec<Variant>,
}

/// One selection design to compare: a name and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// A name for the report (a folder name: letters, digits, `-`, `_`).
    pub name: String,
    /// Its selection settings.
    pub settings: SelectSettings,
}

/// One candidate's two scores (one DP fine-tuning of it, at one learning rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OracleRow {
    /// The candidate.
    pub spec: TrainableSpec,
    /// Its selection score on the synthetic data.
    pub synthetic_score: f64,
    /// Its accuracy on the held-out part of the private training split after DP fine-tuning
    /// at the run's (ε, δ) (named as in the issue; it is *not* the test split).
    pub test_accuracy: f64,
    /// Its mean loss on the held-out part (absent in rows written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_loss: Option<f64>,
    /// The learning rate of the fine-tuning (absent in rows written when every candidate ran
    /// at the run's `train.lr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// ε the fine-tuning's ledger ends at (synthetic stage included).
    pub epsilon_spent: f64,
    /// Seconds of its DP fine-tuning.
    pub wall_s: f64,
}

/// Runs (or resumes) the bench and writes `report_path` and its chart beside it (`.svg`).
pub fn run_selection_bench(
    bench: &SelectionBench,
    report_path: &Path,
    progress: &mut dyn Progress,
) -> Result<SelectionReport> {
    std::fs::create_dir_all(&bench.work).map_err(|e| io_err(&bench.work, e))?;
    let mut config = bench.config.clone();
    let (seen, held_out) = split_private(bench, &mut config)?;
    let selection = synth_and_select(bench, &config, progress)?;
    let variants = select_variants(bench, progress)?;
    let oracle_log = bench.work.join("oracle.jsonl");
    let mut rows: Vec<OracleRow> = read_rows(&oracle_log, "oracle result")?;
    let plan = oracle_plan(bench, &config, &selection, &variants);
    for (i, (spec, score, lr)) in plan.iter().enumerate() {
        if bench.report_only
            || rows
                .iter()
                .any(|r| r.spec == *spec && same_rate(row_lr(r, &config), *lr))
        {
            continue;
        }
        progress.message(&format!(
            "bench selection: DP fine-tuning {spec} at lr {lr:.3e} ({} of {})",
            i + 1,
            plan.len()
        ));
        let run = (spec, *score, *lr);
        let row = oracle_run(bench, &config, &selection, run, &seen, &held_out, progress)?;
        rows.push(row);
        write_rows(&oracle_log, &rows)?;
    }
    let all_runs = rows.clone();
    let mut report = summarise(bench, &config, &selection, rows, seen.len(), held_out.len())?;
    report.variants = variants
        .iter()
        .map(|(name, s)| variant_report(name, s, &report, &all_runs, &config))
        .collect();
    write_text(
        report_path,
        &(serde_json::to_string_pretty(&report).map_err(json_err)? + "\n"),
    )?;
    dpselft_chart::write(&scatter_chart(&report), &report_path.with_extension("svg"))?;
    Ok(report)
}

/// Cuts the private training split into the part the run sees and the held-out part, writes
/// both into the work folder and points the run's `train_data` at the first (once: a resumed
/// bench reuses them).
fn split_private(bench: &SelectionBench, config: &mut RunConfig) -> Result<(Dataset, Dataset)> {
    let (seen_path, held_path) = (
        bench.work.join("train-seen.jsonl"),
        bench.work.join("train-held-out.jsonl"),
    );
    let train = load_train(&config.run)?;
    let (seen, held_out) = split_held_out(&train, bench.held_out_fraction, 0x5e1e_c7ed);
    if held_out.is_empty() {
        return Err(SelftError::Config(format!(
            "{}: nothing can be held out (one example, or every example in one group)",
            config.run.train_data.display()
        )));
    }
    if !seen_path.exists() {
        write_jsonl(&held_path, &held_out)?;
        write_jsonl(&seen_path, &seen)?;
    }
    config.run.train_data = seen_path;
    config.run.train_limit = None;
    config.run.test_data = None;
    Ok((seen, held_out))
}

/// Stages 1–2 in `work/run` (once; an interrupted attempt is started again).
fn synth_and_select(
    bench: &SelectionBench,
    config: &RunConfig,
    progress: &mut dyn Progress,
) -> Result<Selection> {
    let run = bench.work.join("run");
    let done = run.join("selection.json");
    if done.exists() {
        return read_selection(&run);
    }
    if bench.report_only {
        return Err(SelftError::Config(format!(
            "{} has no selection yet: nothing to report",
            bench.work.display()
        )));
    }
    if run.exists() {
        std::fs::remove_dir_all(&run).map_err(|e| io_err(&run, e))?;
    }
    run_synth(config, &bench.paths, &run, progress)?;
    run_select(&run, &bench.paths, None, progress)
}

/// Each variant's selection on the main run's synthetic data, in `work/variants/<name>/` (a
/// copy of the run folder before its selection; once: a rerun reads what is there).
fn select_variants(
    bench: &SelectionBench,
    progress: &mut dyn Progress,
) -> Result<Vec<(String, Selection)>> {
    let run = bench.work.join("run");
    let mut out = Vec::new();
    for v in &bench.variants {
        let dir = bench.work.join("variants").join(&v.name);
        let done = dir.join("selection.json");
        if !done.exists() {
            if bench.report_only {
                continue;
            }
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
            }
            for f in ["config.toml", "ledger.json", "synth.json", "synthetic"] {
                copy_path(&run.join(f), &dir.join(f))?;
            }
            progress.message(&format!("bench selection: variant {}", v.name));
            run_select(&dir, &bench.paths, Some(&v.settings), progress)?;
        }
        out.push((v.name.clone(), read_selection(&dir)?));
    }
    Ok(out)
}

/// Copies a file, or a folder of files, to `to`.
fn copy_path(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to).map_err(|e| io_err(to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| io_err(from, e))? {
            let entry = entry.map_err(|e| io_err(from, e))?;
            copy_path(&entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    std::fs::copy(from, to).map_err(|e| io_err(from, e))?;
    Ok(())
}

/// The oracle's runs: every candidate of the menu at every rate of `oracle_lrs` (the run's
/// `train.lr` without any), the head alone also at `oracle_head_lrs`, and each design's own
/// choice as stage 3 would run it (its set at its chosen rate: the run's selection and every
/// variant's); cheapest first.
fn oracle_plan(
    bench: &SelectionBench,
    config: &RunConfig,
    selection: &Selection,
    variants: &[(String, Selection)],
) -> Vec<(TrainableSpec, f64, f64)> {
    let rates = if bench.oracle_lrs.is_empty() {
        vec![config.train.lr]
    } else {
        bench.oracle_lrs.clone()
    };
    let mut plan = Vec::new();
    for c in &selection.candidates {
        let mut lrs = rates.clone();
        if c.blocks.is_empty() && c.part.is_none() {
            lrs.extend(bench.oracle_head_lrs.iter().filter(|r| !rates.contains(r)));
        }
        plan.extend(lrs.into_iter().map(|lr| (c.spec.clone(), c.score, lr)));
    }
    let designs: Vec<&Selection> = std::iter::once(selection)
        .chain(variants.iter().map(|(_, s)| s))
        .collect();
    for d in &designs {
        let planned = |(spec, _, lr): &(TrainableSpec, f64, f64)| {
            *spec == d.chosen_spec && same_rate(*lr, d.chosen_lr)
        };
        if !plan.iter().any(planned)
            && let Some(c) = candidate(&d.chosen_spec, &designs)
        {
            plan.push((c.spec.clone(), c.score, d.chosen_lr));
        }
    }
    // A candidate backpropagates down to its lowest block, so the highest lowest block is the
    // cheapest (the head alone cheapest of all): an oracle stopped midway has then scored the
    // most candidates. The sort is stable, so ties keep the menu's order.
    plan.sort_by_key(|(spec, _, _)| {
        let lowest = candidate(spec, &designs).and_then(|c| c.blocks.iter().min().copied());
        std::cmp::Reverse(lowest.map_or(usize::MAX, |b| b))
    });
    plan
}

/// `spec`'s result in the first of `designs` that scored it (the run's own selection first, so
/// an oracle row carries the run's synthetic score wherever the run scored the set).
fn candidate<'a>(spec: &TrainableSpec, designs: &[&'a Selection]) -> Option<&'a CandidateResult> {
    designs
        .iter()
        .find_map(|d| d.candidates.iter().find(|c| c.spec == *spec))
}

/// Two learning rates equal up to float rounding (a selection's multiple of its grid's centre
/// against the same rate as the oracle lists it).
fn same_rate(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

/// A row's learning rate (rows without one ran at the run's `train.lr`).
fn row_lr(row: &OracleRow, config: &RunConfig) -> f64 {
    row.lr.unwrap_or(config.train.lr)
}

/// DP fine-tuning of one candidate at one learning rate as stage 3 would run it (the run's
/// ledger copied, so the synthetic stage's spending is accounted and σ is stage 3's), scored
/// on the held-out part.
fn oracle_run(
    bench: &SelectionBench,
    config: &RunConfig,
    selection: &Selection,
    (spec, synthetic_score, lr): (&TrainableSpec, f64, f64),
    seen: &Dataset,
    held_out: &Dataset,
    progress: &mut dyn Progress,
) -> Result<OracleRow> {
    let name = spec.to_string().replace([',', ':', ';', '='], "_");
    let dir = bench.work.join("oracle").join(format!("{name}-lr{lr:e}"));
    let mut train_config = stage3_config(config, spec.clone(), lr);
    // An oracle run is as long as stage 3 (up to an hour here): checkpoints let a bench
    // interrupted mid-run continue it.
    train_config.checkpoints = Checkpoints::Auto;
    let started = std::time::Instant::now();
    let run_ledger = bench.work.join("run").join("ledger.json");
    // A resumed run's wall time counts this bench's part of it only.
    let (summary, wall_s) = match oracle_start(&dir, &train_config, &run_ledger)? {
        OracleStart::Finished(summary) => {
            let wall_s = summary.wall_s;
            (*summary, wall_s)
        }
        OracleStart::Train(start) => {
            let options = TrainerOptions {
                shared_ledger: Some(dir.join("ledger.json")),
                stage: Stage::Train,
                prefix_cache: true,
                stage_budget: false,
            };
            let mut trainer = DpTrainer::new_with(
                train_config,
                bench.paths.load_model()?,
                TrainData::Dataset(seen),
                Some(held_out),
                &dir.join("train"),
                start,
                &options,
            )?;
            let sigma = trainer.plan().noise_multiplier;
            let want = selection.config.noise_multiplier;
            if (sigma - want).abs() > 1e-9 * want.max(1e-12) {
                return Err(SelftError::Config(format!(
                    "the oracle's σ {sigma} differs from the σ {want} selection was matched to"
                )));
            }
            (trainer.run(progress)?, started.elapsed().as_secs_f64())
        }
    };
    Ok(OracleRow {
        spec: spec.clone(),
        synthetic_score,
        test_accuracy: summary
            .eval
            .as_ref()
            .and_then(|e| e.accuracy)
            .unwrap_or(0.0),
        held_out_loss: summary.eval.as_ref().map(|e| e.loss),
        lr: Some(lr),
        epsilon_spent: summary.epsilon.unwrap_or(f64::INFINITY),
        wall_s,
    })
}

/// How an oracle run begins.
enum OracleStart {
    /// An earlier bench finished it but was stopped before recording its row.
    Finished(Box<TrainSummary>),
    /// Trains: from its checkpoint, or afresh.
    Train(Start),
}

/// The oracle run folder `dir` for `config`: continued when an earlier bench left it with this
/// very configuration (finished, or with a checkpoint), otherwise (re)created with a copy of
/// the run's ledger (`run_ledger`) and the configuration written first.
fn oracle_start(dir: &Path, config: &TrainConfig, run_ledger: &Path) -> Result<OracleStart> {
    let train = dir.join("train");
    if ran_with(dir, config) {
        if let Some(summary) = dpselft_dp::finished_summary(&train) {
            return Ok(OracleStart::Finished(Box::new(summary)));
        }
        if has_checkpoint(&train) {
            return Ok(OracleStart::Train(Start::Resume));
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let ledger = dir.join("ledger.json");
    std::fs::copy(run_ledger, &ledger).map_err(|e| io_err(run_ledger, e))?;
    write_run_config(dir, config)?;
    Ok(OracleStart::Train(Start::Fresh))
}

/// The variants of a TOML file: one table per variant, `[name]`, whose keys replace those of
/// `base`'s `[select]` section (`lr` replaces `train.lr`, the centre of the rate grid).
pub fn load_variants(path: &Path, base: &RunConfig) -> Result<Vec<Variant>> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    let bad = |message: String| SelftError::Format {
        path: path.to_path_buf(),
        message,
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| bad(format!("not TOML: {e}")))?;
    let base_select = toml::Table::try_from(&base.select)
        .map_err(|e| bad(format!("the run's [select] section: {e}")))?;
    let mut variants = Vec::new();
    for (name, value) in table {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!(
                "variant `{name}`: a name of letters, digits, `-` and `_` was expected"
            )));
        }
        let toml::Value::Table(overlay) = value else {
            return Err(bad(format!("variant `{name}`: a table was expected")));
        };
        let mut select = base_select.clone();
        let mut lr = base.train.lr;
        for (key, v) in overlay {
            if key == "lr" {
                lr = v.as_float().ok_or_else(|| {
                    bad(format!("variant `{name}`: lr must be a number, got {v}"))
                })?;
            } else {
                select.insert(key, v);
            }
        }
        let select: SelectSection = select
            .try_into()
            .map_err(|e| bad(format!("variant `{name}`: {e}")))?;
        variants.push(Variant {
            name,
            settings: SelectSettings { select, lr },
        });
    }
    Ok(variants)
}

fn json_err(e: serde_json::Error) -> SelftError {
    SelftError::Config(format!("serialising the report: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(dir: &Path, config: &TrainConfig, ledger: &Path) -> &'static str {
        match oracle_start(dir, config, ledger).unwrap() {
            OracleStart::Finished(_) => "finished",
            OracleStart::Train(Start::Resume) => "resume",
            OracleStart::Train(Start::Fresh) => "fresh",
        }
    }

    /// A folder is continued only with its own configuration and a checkpoint; anything else
    /// starts afresh from a new copy of the run's ledger.
    #[test]
    fn an_oracle_run_resumes_only_its_own_checkpointed_configuration() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = tmp.path().join("ledger.json");
        std::fs::write(&ledger, "the run's ledger").unwrap();
        let dir = tmp.path().join("oracle/head-lr1e-2");
        let config = TrainConfig::default();
        assert_eq!(start(&dir, &config, &ledger), "fresh");
        let copied = || std::fs::read_to_string(dir.join("ledger.json")).unwrap();
        assert_eq!(copied(), "the run's ledger");
        // Interrupted before its first checkpoint: nothing to continue from.
        std::fs::write(dir.join("ledger.json"), "spent by the lost attempt").unwrap();
        assert_eq!(start(&dir, &config, &ledger), "fresh");
        assert_eq!(copied(), "the run's ledger");
        // After a checkpoint: continued, its ledger kept.
        let checkpoint = dpselft_dp::checkpoint::checkpoint_dir(&dir.join("train"));
        std::fs::create_dir_all(&checkpoint).unwrap();
        std::fs::write(checkpoint.join("latest.json"), "{}").unwrap();
        std::fs::write(dir.join("ledger.json"), "spent before the checkpoint").unwrap();
        assert_eq!(start(&dir, &config, &ledger), "resume");
        assert_eq!(copied(), "spent before the checkpoint");
        // The same folder for another configuration is not continued.
        let other = TrainConfig {
            lr: config.lr * 2.0,
            ..config.clone()
        };
        assert_eq!(start(&dir, &other, &ledger), "fresh");
        assert_eq!(copied(), "the run's ledger");
        assert!(!checkpoint.exists());
    }

    #[test]
    fn variants_overlay_the_runs_select_section_and_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("variants.toml");
        let base = RunConfig::default();
        std::fs::write(
            &path,
            "[gauss-full]\nperturbation = \"gaussian\"\nstep_fraction = 1.0\nlr = 0.01\n\
             [as-is]\n",
        )
        .unwrap();
        let v = load_variants(&path, &base).unwrap();
        let names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["as-is", "gauss-full"]);
        assert_eq!(v[0].settings.select, base.select);
        assert_eq!(v[0].settings.lr, base.train.lr);
        let g = &v[1].settings;
        assert_eq!(g.select.perturbation, dpselft_selft::Perturbation::Gaussian);
        assert_eq!((g.select.step_fraction, g.lr), (1.0, 0.01));
        assert_eq!(g.select.candidates, base.select.candidates);
        for (text, want) in [
            ("[x]\nperturbation = \"sideways\"\n", "variant `x`"),
            ("[x]\nno_such_key = 1\n", "variant `x`"),
            ("[\"a b\"]\n", "variant `a b`"),
            ("[x]\nlr = \"fast\"\n", "lr must be a number"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load_variants(&path, &base).unwrap_err().to_string();
            assert!(
                e.contains("variants.toml") && e.contains(want),
                "{text}: {e}"
            );
        }
    }
}
