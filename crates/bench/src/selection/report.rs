//! The selection bench's report: each candidate's best oracle run, the chosen set's regret (at
//! its best oracle rate and at the rate selection chose), the Spearman agreement of synthetic
//! scores and held-out accuracy — for the run's selection and for each variant — and the
//! scatter chart.

use dpselft_chart::{Chart, Point, ScatterChart};
use dpselft_model::TrainableSpec;
use dpselft_selft::select::rate_key;
use dpselft_selft::{Result, RunConfig, Selection, SelftError};
use serde::{Deserialize, Serialize};

use super::{OracleRow, SelectionBench, row_lr, same_rate};

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
    /// The learning rate selection chose for the chosen set.
    pub chosen_lr: f64,
    /// The held-out accuracy of the chosen set at the chosen rate: what stage 3 would run
    /// (absent where the oracle lacks that run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_rate_accuracy: Option<f64>,
    /// The best candidate's held-out accuracy minus [`Self::chosen_rate_accuracy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_rate_regret: Option<f64>,
    /// The run's `train.lr` η (the oracle's only rate unless it was given others; each row
    /// names its own).
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
    /// Spearman rank correlation of synthetic score and −(held-out loss) (absent for rows
    /// without a loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spearman_loss: Option<f64>,
    /// Every candidate finished, at its best learning rate.
    pub candidates: Vec<OracleRow>,
    /// Candidates of the menu without an oracle run yet (empty when the bench is complete).
    pub missing: Vec<TrainableSpec>,
    /// Every oracle run (candidate × learning rate), when candidates ran at several rates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<OracleRow>,
    /// The other selection designs, scored against the same oracle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantReport>,
}

/// One selection design's agreement with the oracle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantReport {
    /// Its name.
    pub name: String,
    /// Its perturbation, rate search and candidate steps τ.
    pub perturbation: String,
    /// `winner` or `per-candidate`.
    pub rate_search: String,
    /// Training steps per candidate.
    pub steps: u64,
    /// Spearman of its synthetic scores against the oracle's held-out accuracies.
    pub spearman: f64,
    /// … and against −(held-out loss), where the oracle has losses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spearman_loss: Option<f64>,
    /// The best candidate's held-out accuracy minus its chosen candidate's (absent while the
    /// oracle has no run of the chosen set).
    pub regret: Option<f64>,
    /// Its chosen set and learning rate.
    pub chosen: TrainableSpec,
    /// The learning rate it chose.
    pub chosen_lr: f64,
    /// The held-out accuracy of its set at its rate: what its stage 3 would run (absent where
    /// the oracle lacks that run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_rate_accuracy: Option<f64>,
    /// The best candidate's held-out accuracy minus [`Self::chosen_rate_accuracy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_rate_regret: Option<f64>,
    /// Its synthetic score of each candidate with an oracle result.
    pub scores: Vec<SpecScore>,
    /// Seconds of its selection stage.
    pub wall_s: f64,
}

/// A candidate's synthetic score under one design.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecScore {
    /// The candidate.
    pub spec: TrainableSpec,
    /// Its score (−S_val loss at its rate).
    pub synthetic_score: f64,
}

/// The held-out accuracy of `spec` fine-tuned at `lr` — what stage 3 would run for a design
/// that chose them — where the oracle has that run.
fn chosen_rate_accuracy(
    runs: &[OracleRow],
    config: &RunConfig,
    spec: &TrainableSpec,
    lr: f64,
) -> Option<f64> {
    runs.iter()
        .find(|r| r.spec == *spec && same_rate(row_lr(r, config), lr))
        .map(|r| r.test_accuracy)
}

/// Each candidate's best run, by the baselines' rule ([`rate_key`]), in the order the runs
/// first name the candidates.
fn best_per_candidate(rows: &[OracleRow]) -> Vec<OracleRow> {
    let mut best: Vec<OracleRow> = Vec::new();
    for r in rows {
        let key = |o: &OracleRow| rate_key(Some(o.test_accuracy), o.held_out_loss.unwrap_or(0.0));
        match best.iter_mut().find(|b| b.spec == r.spec) {
            Some(b) if key(r) > key(b) => *b = r.clone(),
            Some(_) => {}
            None => best.push(r.clone()),
        }
    }
    best
}

/// Spearman of `scores` (spec → synthetic score) against the oracle's accuracies, and against
/// −(held-out loss) where every row has a loss.
fn agreement(scores: &[(TrainableSpec, f64)], oracle: &[OracleRow]) -> (f64, Option<f64>) {
    let paired: Vec<(f64, &OracleRow)> = oracle
        .iter()
        .filter_map(|o| {
            let s = scores.iter().find(|(spec, _)| *spec == o.spec)?;
            Some((s.1, o))
        })
        .collect();
    let synthetic: Vec<f64> = paired.iter().map(|(s, _)| *s).collect();
    let accuracy: Vec<f64> = paired.iter().map(|(_, o)| o.test_accuracy).collect();
    let losses: Option<Vec<f64>> = paired
        .iter()
        .map(|(_, o)| o.held_out_loss.map(|l| -l))
        .collect();
    (
        spearman(&synthetic, &accuracy),
        losses.map(|l| spearman(&synthetic, &l)),
    )
}

/// One variant's synthetic scores and choice against the oracle of `report`.
pub(super) fn variant_report(
    name: &str,
    selection: &Selection,
    report: &SelectionReport,
    runs: &[OracleRow],
    config: &RunConfig,
) -> VariantReport {
    let scores: Vec<(TrainableSpec, f64)> = selection
        .candidates
        .iter()
        .map(|c| (c.spec.clone(), c.score))
        .collect();
    let (spearman, spearman_loss) = agreement(&scores, &report.candidates);
    let best = report
        .candidates
        .iter()
        .map(|c| c.test_accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    let chosen = report
        .candidates
        .iter()
        .find(|c| c.spec == selection.chosen_spec)
        .map(|c| c.test_accuracy);
    let at_rate = chosen_rate_accuracy(runs, config, &selection.chosen_spec, selection.chosen_lr);
    VariantReport {
        name: name.to_string(),
        perturbation: selection.config.perturbation.to_string(),
        rate_search: selection.config.rate_search.to_string(),
        steps: selection.config.steps,
        spearman,
        spearman_loss,
        regret: chosen.map(|a| best - a),
        chosen: selection.chosen_spec.clone(),
        chosen_lr: selection.chosen_lr,
        chosen_rate_accuracy: at_rate,
        chosen_rate_regret: at_rate.map(|a| best - a),
        scores: scores
            .into_iter()
            .filter(|(spec, _)| report.candidates.iter().any(|c| c.spec == *spec))
            .map(|(spec, synthetic_score)| SpecScore {
                spec,
                synthetic_score,
            })
            .collect(),
        wall_s: selection.wall_s,
    }
}

pub(super) fn summarise(
    bench: &SelectionBench,
    config: &RunConfig,
    selection: &Selection,
    runs: Vec<OracleRow>,
    train_examples: usize,
    held_out_examples: usize,
) -> Result<SelectionReport> {
    let rows = best_per_candidate(&runs);
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
    let scores: Vec<(TrainableSpec, f64)> = rows
        .iter()
        .map(|r| (r.spec.clone(), r.synthetic_score))
        .collect();
    let (rho, rho_loss) = agreement(&scores, &rows);
    let several_rates = runs.len() > rows.len();
    let at_rate = chosen_rate_accuracy(&runs, config, &selection.chosen_spec, selection.chosen_lr);
    Ok(SelectionReport {
        task: bench.task.clone(),
        epsilon: config.run.epsilon,
        spearman: rho,
        spearman_loss: rho_loss,
        regret: best.test_accuracy - chosen.test_accuracy,
        chosen: selection.chosen_spec.clone(),
        oracle: best.spec.clone(),
        chosen_lr: selection.chosen_lr,
        chosen_rate_accuracy: at_rate,
        chosen_rate_regret: at_rate.map(|a| best.test_accuracy - a),
        lr: config.train.lr,
        train_examples,
        held_out_examples,
        synthesizer: config.synth.synthesizer().name().to_string(),
        perturbation: selection.config.perturbation.to_string(),
        seed: config.run.seed,
        candidates: rows,
        missing,
        runs: if several_rates { runs } else { Vec::new() },
        variants: Vec::new(),
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
