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
//! Resumable: stages 1–2 run once (`run/selection.json`), each candidate's result is appended to
//! `oracle.jsonl` as it finishes (the file rewritten atomically), and a rerun skips what is there.

use std::path::{Path, PathBuf};

use dpselft_chart::{Chart, Point, ScatterChart};
use dpselft_data::{Dataset, split_held_out, write_jsonl};
use dpselft_dp::{DpTrainer, Start, TrainData, TrainerOptions};
use dpselft_model::TrainableSpec;
use dpselft_privacy::Stage;
use dpselft_selft::error::io_err;
use dpselft_selft::pipeline::{ResolvedPaths, load_train, run_select, run_synth, stage3_config};
use dpselft_selft::{Progress, Result, RunConfig, Selection, SelftError};
use serde::{Deserialize, Serialize};

use crate::{read_rows, write_rows, write_text};

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
}

/// One candidate's two scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OracleRow {
    /// The candidate.
    pub spec: TrainableSpec,
    /// Its selection score on the synthetic data.
    pub synthetic_score: f64,
    /// Its accuracy on the held-out part of the private training split after DP fine-tuning
    /// at the run's (ε, δ) (named as in the issue; it is *not* the test split).
    pub test_accuracy: f64,
    /// ε the fine-tuning's ledger ends at (synthetic stage included).
    pub epsilon_spent: f64,
    /// Seconds of its DP fine-tuning.
    pub wall_s: f64,
}

/// `bench/selection/<task>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionReport {
    /// The task.
    pub task: String,
    /// The run's total ε.
    pub epsilon: f64,
    /// Spearman rank correlation of synthetic score and held-out accuracy over the candidates.
    pub spearman: f64,
    /// The best candidate's held-out accuracy minus the chosen candidate's.
    pub regret: f64,
    /// The chosen set.
    pub chosen: TrainableSpec,
    /// The candidate with the best held-out accuracy.
    pub oracle: TrainableSpec,
    /// The learning rate selection chose for the chosen set (the oracle runs all use η).
    pub chosen_lr: f64,
    /// The fine-tuning learning rate η every candidate was trained at.
    pub lr: f64,
    /// Private training examples the run saw, and held out.
    pub train_examples: usize,
    /// Held-out examples scored.
    pub held_out_examples: usize,
    /// The synthesizer.
    pub synthesizer: String,
    /// The perturbation of the selection.
    pub perturbation: String,
    /// The run's seed.
    pub seed: Option<u64>,
    /// Every candidate finished.
    pub candidates: Vec<OracleRow>,
    /// Candidates of the menu without an oracle run yet (empty when the bench is complete).
    pub missing: Vec<TrainableSpec>,
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
    let oracle_log = bench.work.join("oracle.jsonl");
    let mut rows: Vec<OracleRow> = read_rows(&oracle_log, "oracle result")?;
    for c in &selection.candidates {
        if bench.report_only || rows.iter().any(|r| r.spec == c.spec) {
            continue;
        }
        progress.message(&format!(
            "bench selection: DP fine-tuning {} ({} of {})",
            c.spec,
            rows.len() + 1,
            selection.candidates.len()
        ));
        let row = oracle_run(
            bench, &config, &selection, &c.spec, c.score, &seen, &held_out, progress,
        )?;
        rows.push(row);
        write_rows(&oracle_log, &rows)?;
    }
    let report = summarise(bench, &config, &selection, rows, seen.len(), held_out.len())?;
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
        let text = std::fs::read_to_string(&done).map_err(|e| io_err(&done, e))?;
        return serde_json::from_str(&text).map_err(|e| SelftError::Format {
            path: done,
            message: format!("not a selection: {e}"),
        });
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

/// DP fine-tuning of one candidate as stage 3 would run it (the run's ledger copied, so the
/// synthetic stage's spending is accounted and σ is stage 3's), scored on the held-out part.
#[allow(clippy::too_many_arguments)]
fn oracle_run(
    bench: &SelectionBench,
    config: &RunConfig,
    selection: &Selection,
    spec: &TrainableSpec,
    synthetic_score: f64,
    seen: &Dataset,
    held_out: &Dataset,
    progress: &mut dyn Progress,
) -> Result<OracleRow> {
    let dir = bench
        .work
        .join("oracle")
        .join(spec.to_string().replace([',', ':', ';', '='], "_"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let ledger = dir.join("ledger.json");
    let run_ledger = bench.work.join("run").join("ledger.json");
    std::fs::copy(&run_ledger, &ledger).map_err(|e| io_err(&run_ledger, e))?;
    // Stage 3 as the run would do it, at the configured η for every candidate.
    let train_config = stage3_config(config, spec.clone(), config.train.lr);
    let options = TrainerOptions {
        shared_ledger: Some(ledger),
        stage: Stage::Train,
        prefix_cache: true,
        stage_budget: false,
    };
    let started = std::time::Instant::now();
    let mut trainer = DpTrainer::new_with(
        train_config,
        bench.paths.load_model()?,
        TrainData::Dataset(seen),
        Some(held_out),
        &dir.join("train"),
        Start::Fresh,
        &options,
    )?;
    let sigma = trainer.plan().noise_multiplier;
    let want = selection.config.noise_multiplier;
    if (sigma - want).abs() > 1e-9 * want.max(1e-12) {
        return Err(SelftError::Config(format!(
            "the oracle's σ {sigma} differs from the σ {want} selection was matched to"
        )));
    }
    let summary = trainer.run(progress)?;
    Ok(OracleRow {
        spec: spec.clone(),
        synthetic_score,
        test_accuracy: summary.eval.and_then(|e| e.accuracy).unwrap_or(0.0),
        epsilon_spent: summary.epsilon.unwrap_or(f64::INFINITY),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn summarise(
    bench: &SelectionBench,
    config: &RunConfig,
    selection: &Selection,
    rows: Vec<OracleRow>,
    train_examples: usize,
    held_out_examples: usize,
) -> Result<SelectionReport> {
    // The first of the best (menu order), so ties keep a stable oracle.
    let best = rows
        .iter()
        .reduce(|a, b| {
            if b.test_accuracy > a.test_accuracy {
                b
            } else {
                a
            }
        })
        .ok_or_else(|| SelftError::Config("no candidates".into()))?;
    let chosen = rows
        .iter()
        .find(|r| r.spec == selection.chosen_spec)
        .ok_or_else(|| SelftError::Config("the chosen set has no oracle run".into()))?;
    let missing = selection
        .candidates
        .iter()
        .filter(|c| !rows.iter().any(|r| r.spec == c.spec))
        .map(|c| c.spec.clone())
        .collect();
    let synthetic: Vec<f64> = rows.iter().map(|r| r.synthetic_score).collect();
    let held: Vec<f64> = rows.iter().map(|r| r.test_accuracy).collect();
    Ok(SelectionReport {
        task: bench.task.clone(),
        epsilon: config.run.epsilon,
        spearman: spearman(&synthetic, &held),
        regret: best.test_accuracy - chosen.test_accuracy,
        chosen: selection.chosen_spec.clone(),
        oracle: best.spec.clone(),
        chosen_lr: selection.chosen_lr,
        lr: config.train.lr,
        train_examples,
        held_out_examples,
        synthesizer: config.synth.synthesizer().name().to_string(),
        perturbation: selection.config.perturbation.to_string(),
        seed: config.run.seed,
        candidates: rows,
        missing,
    })
}

/// Spearman's ρ: the Pearson correlation of the ranks (ties get their mean rank). 0 when
/// either side is constant or there are fewer than two values.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    if ra.len() < 2 || ra.len() != rb.len() {
        return 0.0;
    }
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// 1-based ranks, ties sharing their mean rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = mean_rank;
        }
        i = j + 1;
    }
    out
}

fn json_err(e: serde_json::Error) -> SelftError {
    SelftError::Config(format!("serialising the report: {e}"))
}

/// Synthetic score (x) against held-out accuracy (y), one labelled dot per candidate, the chosen
/// one in orange and the oracle circled.
pub fn scatter_chart(report: &SelectionReport) -> Chart {
    let partial = match report.missing.len() {
        0 => String::new(),
        m => format!(
            " over {} of {} candidates",
            report.candidates.len(),
            report.candidates.len() + m
        ),
    };
    Chart::Scatter(ScatterChart {
        title: format!(
            "{} at ε = {}: Spearman {:.2}, regret {:.3}{partial} (chosen orange, oracle circled)",
            report.task, report.epsilon, report.spearman, report.regret
        ),
        x_label: "synthetic score (−S_val loss)".into(),
        y_label: "held-out accuracy after DP fine-tuning".into(),
        points: report
            .candidates
            .iter()
            .map(|c| Point {
                label: c.spec.to_string(),
                x: c.synthetic_score,
                y: c.test_accuracy,
                highlight: c.spec == report.chosen,
                circled: c.spec == report.oracle,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_hand_computed_values() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // 1 − 6Σd²/(n(n²−1)) without ties: ranks (1,2,3,4,5) vs (2,1,4,3,5): Σd² = 4 → 0.8.
        let r = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 1.0, 4.0, 3.0, 5.0]);
        assert!((r - 0.8).abs() < 1e-12, "{r}");
        // Ties share their mean rank: b's ranks are (1.5, 1.5, 3); Pearson with (1, 2, 3) = √3/2.
        let t = spearman(&[1.0, 2.0, 3.0], &[5.0, 5.0, 7.0]);
        assert!((t - 3f64.sqrt() / 2.0).abs() < 1e-12, "{t}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0, "a constant side");
    }
}
