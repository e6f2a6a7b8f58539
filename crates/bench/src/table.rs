//! The grid's report for people: `table.md` (classification: accuracy and macro-F1; language
//! modelling: perplexity; mean ± sample std per method and ε, the best private mean per column
//! in bold; every cell's row; the floor a method must beat) and `chart.svg` / `chart.png` (the
//! score against ε).

use std::fmt::Write as _;

use dpselft_chart::{Chart, LineChart, Series};

use crate::grid::CellResult;
use crate::methods::Method;

/// What the grid scores, and its floor: what a method must beat to have learned anything.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scoring {
    /// Test accuracy and macro-F1 (higher is better); the floor: always predicting the
    /// training split's most frequent label.
    Accuracy {
        /// The floor's test accuracy, if known.
        majority: Option<f64>,
    },
    /// Test perplexity (lower is better); the floor: the pretrained model, not fine-tuned.
    Perplexity {
        /// The floor's test perplexity, if known.
        pretrained: Option<f64>,
    },
}

/// A cell's score.
type Metric = fn(&CellResult) -> Option<f64>;

impl Scoring {
    /// The headline score, its name, and whether lower is better.
    fn headline(self) -> (Metric, &'static str, bool) {
        match self {
            Scoring::Accuracy { .. } => (|r| r.accuracy, "test accuracy", false),
            Scoring::Perplexity { .. } => (|r| r.perplexity, "test perplexity", true),
        }
    }
}

/// (mean, sample std, count) of `metric` over the seeds of one method at one ε.
fn stats(
    results: &[CellResult],
    method: &Method,
    epsilon: Option<f64>,
    metric: Metric,
) -> Option<(f64, f64, usize)> {
    let acc: Vec<f64> = results
        .iter()
        .filter(|r| &r.method == method && same_epsilon(r.epsilon, epsilon))
        .filter_map(metric)
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

/// The grid's report: mean ± sample std over seeds of the score (classification: test
/// accuracy, then macro-F1; language modelling: test perplexity) per method (rows) and ε
/// (columns; ∞ for non-private), the best private mean per column in bold; the floor of
/// `scoring`; then one row per cell (the trainable set it trained, parameters, ε spent, wall
/// time) and the total wall time. Results of other methods or ε in `results.jsonl` are left
/// out.
pub fn table_markdown(
    methods: &[Method],
    epsilons: &[f64],
    results: &[CellResult],
    scoring: Scoring,
) -> String {
    let in_grid: Vec<&CellResult> = methods
        .iter()
        .flat_map(|m| results.iter().filter(move |r| &r.method == m))
        .filter(|r| {
            r.epsilon
                .is_none_or(|e| epsilons.iter().any(|&x| x.to_bits() == e.to_bits()))
        })
        .collect();
    let (metric, name, lower) = scoring.headline();
    let mut s = match scoring {
        Scoring::Accuracy { .. } => String::from("## Test accuracy\n\n"),
        Scoring::Perplexity { .. } => String::from("## Test perplexity (lower is better)\n\n"),
    };
    s += &metric_table(methods, epsilons, results, metric, lower);
    match scoring {
        Scoring::Accuracy { majority: Some(m) } => {
            let _ = writeln!(
                s,
                "\nAlways predicting the training subset's most frequent label: {m:.4}."
            );
        }
        Scoring::Perplexity {
            pretrained: Some(p),
        } => {
            let _ = writeln!(s, "\nThe pretrained model, not fine-tuned: {p:.4}.");
        }
        _ => {}
    }
    let _ = writeln!(s, "\n![{name} against ε](chart.svg)");
    if let Scoring::Accuracy { .. } = scoring {
        s += "\n## Test macro-F1\n\n";
        s += &metric_table(methods, epsilons, results, |r| r.macro_f1, false);
    }
    s += "\n## Every cell\n\n";
    s += &cell_rows(&in_grid, scoring);
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

/// One row per cell: what it trained, its regime (n, B, T, σ, the chosen learning rate) and its
/// results; then, for grids with the learning-rate rule, how the rates were chosen.
fn cell_rows(cells: &[&CellResult], scoring: Scoring) -> String {
    let (scores, score_cols) = match scoring {
        Scoring::Accuracy { .. } => ("accuracy | macro-F1", "---:|---:|"),
        Scoring::Perplexity { .. } => ("perplexity", "---:|"),
    };
    let mut s = format!(
        "| method | ε | seed | trainable set | parameters | n train | n val | B | epochs | T | σ | \
         lr | {scores} | ε spent | wall time |\n"
    );
    s += "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|";
    s += score_cols;
    s += "---:|---:|\n";
    let opt = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    let score = |v: Option<f64>| opt(v.map(|x| format!("{x:.4}")));
    for r in cells {
        let result = match scoring {
            Scoring::Accuracy { .. } => format!("{} | {}", score(r.accuracy), score(r.macro_f1)),
            Scoring::Perplexity { .. } => score(r.perplexity),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
            r.method,
            r.epsilon.map_or("∞".into(), |e| e.to_string()),
            r.seed,
            r.trainable
                .as_ref()
                .map_or(String::new(), ToString::to_string),
            r.trainable_params,
            opt(r.train_examples.map(|n| n.to_string())),
            match (r.validation_examples, r.lr.is_some()) {
                (Some(n), _) => n.to_string(),
                (None, true) => "S_val".into(),
                (None, false) => "–".into(),
            },
            opt(r.batch_size.map(|b| b.to_string())),
            opt(r.epochs.map(|e| e.to_string())),
            opt(r.steps.map(|t| t.to_string())),
            opt(r.sigma.map(|x| format!("{x:.3}"))),
            opt(r.lr.map(|l| format!("{l:.2e}"))),
            result,
            r.epsilon_spent.map_or("–".into(), |e| format!("{e:.4}")),
            r.wall_s
        );
    }
    if cells.iter().any(|r| r.validation_examples.is_some()) {
        s += "\nLearning rates: every method chose from the same grid. The baselines chose on a \
              held-out share of the private training split (`n val`; they trained on the rest, \
              `n train`) — the literature's convention, and that choice's privacy cost is **not** \
              accounted in `ε spent`. dp-selft chose on its synthetic validation split S_val, at \
              no privacy cost: its `ε spent` is the whole truth.\n";
    }
    s
}

/// One metric's mean ± std per method and ε; the best private mean per column (the lowest when
/// `lower` is better) in bold.
fn metric_table(
    methods: &[Method],
    epsilons: &[f64],
    results: &[CellResult],
    metric: Metric,
    lower: bool,
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
                .fold(None, |a: Option<f64>, v| {
                    Some(a.map_or(v, |a| if lower { a.min(v) } else { a.max(v) }))
                })
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

/// The score against ε, one line per method (mean over seeds), its non-private mean dashed.
pub fn score_chart(
    methods: &[Method],
    epsilons: &[f64],
    results: &[CellResult],
    scoring: Scoring,
) -> Chart {
    let (metric, name, _) = scoring.headline();
    let series = methods
        .iter()
        .map(|m| Series {
            name: m.name().to_string(),
            points: epsilons
                .iter()
                .enumerate()
                .filter_map(|(i, &e)| {
                    stats(results, m, Some(e), metric).map(|(mean, _, _)| (i, mean))
                })
                .collect(),
            reference: stats(results, m, None, metric).map(|(mean, _, _)| mean),
        })
        .collect();
    Chart::Lines(LineChart {
        title: format!("{name} against ε (dashed: non-private)"),
        x_ticks: epsilons.iter().map(|e| format!("ε = {e}")).collect(),
        y_label: format!("{name} (mean over seeds)"),
        series,
    })
}
