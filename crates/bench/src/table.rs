//! The grid's report for people: `table.md` (accuracy and macro-F1, mean ± sample std per method
//! and ε, the best private mean per column in bold; every cell's row; the majority-class floor)
//! and `chart.svg` (accuracy against ε).

use std::fmt::Write as _;

use crate::grid::CellResult;
use crate::methods::Method;

/// (mean, sample std, count) of `metric` over the seeds of one method at one ε.
fn stats(
    results: &[CellResult],
    method: &Method,
    epsilon: Option<f64>,
    metric: fn(&CellResult) -> f64,
) -> Option<(f64, f64, usize)> {
    let acc: Vec<f64> = results
        .iter()
        .filter(|r| &r.method == method && same_epsilon(r.epsilon, epsilon))
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
    methods: &[Method],
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
    methods: &[Method],
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
pub fn chart_svg(methods: &[Method], epsilons: &[f64], results: &[CellResult]) -> String {
    let frame = ChartFrame::new(epsilons.len(), results);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12">"#,
        frame.w, frame.h
    );
    chart_axes(&mut s, &frame, epsilons);
    for (k, m) in methods.iter().enumerate() {
        let color = CHART_COLORS[k % CHART_COLORS.len()];
        chart_legend_entry(&mut s, &frame, k, m, color);
        chart_method_lines(&mut s, &frame, m, epsilons, results, color);
    }
    s.push_str("</svg>\n");
    s
}

/// Line colours, one per method (cycled).
const CHART_COLORS: [&str; 10] = [
    "#e8710a", "#4a7ebb", "#3a9a4a", "#b23a48", "#7d5ba6", "#8c6d31", "#17becf", "#555555",
    "#bcbd22", "#e377c2",
];

/// The chart's geometry: canvas and plot area, and the accuracy range the y axis spans.
struct ChartFrame {
    w: f64,
    h: f64,
    left: f64,
    top: f64,
    plot_w: f64,
    plot_h: f64,
    /// The number of ε columns along the x axis.
    columns: usize,
    lo: f64,
    hi: f64,
}

impl ChartFrame {
    /// The frame for `columns` ε values, the y range covering every result's accuracy.
    fn new(columns: usize, results: &[CellResult]) -> Self {
        // The legend column is wide enough for names like `dp-selft:perturb=gaussian`.
        let (w, h, left, top, bottom) = (720.0, 360.0, 60.0, 30.0, 50.0);
        let all: Vec<f64> = results.iter().map(|r| r.accuracy).collect();
        let lo = all.iter().cloned().fold(1.0f64, f64::min).min(1.0);
        let hi = all.iter().cloned().fold(0.0f64, f64::max).max(lo + 1e-3);
        Self {
            w,
            h,
            left,
            top,
            plot_w: w - left - 240.0,
            plot_h: h - top - bottom,
            columns,
            lo,
            hi,
        }
    }

    /// The x of ε column `i` (column centres).
    fn x_of(&self, i: usize) -> f64 {
        self.left + self.plot_w * (i as f64 + 0.5) / self.columns.max(1) as f64
    }

    /// The y of accuracy `a`.
    fn y_of(&self, a: f64) -> f64 {
        self.top + self.plot_h * (1.0 - (a - self.lo) / (self.hi - self.lo))
    }
}

/// The title, the x axis with its ε labels, and the y labels (low, middle, high accuracy).
fn chart_axes(s: &mut String, f: &ChartFrame, epsilons: &[f64]) {
    let (left, top, plot_w, plot_h) = (f.left, f.top, f.plot_w, f.plot_h);
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
            f.x_of(i),
            top + plot_h + 18.0
        );
    }
    for a in [f.lo, (f.lo + f.hi) / 2.0, f.hi] {
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{a:.3}</text>"#,
            left - 6.0,
            f.y_of(a) + 4.0
        );
    }
}

/// Method `k`'s legend entry: a colour swatch and its name.
fn chart_legend_entry(s: &mut String, f: &ChartFrame, k: usize, m: &Method, color: &str) {
    let ly = f.top + 16.0 * k as f64;
    let _ = write!(
        s,
        r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
        f.left + f.plot_w + 20.0,
        ly,
        f.left + f.plot_w + 36.0,
        ly + 10.0,
        m.name().replace('<', "&lt;")
    );
}

/// Method `m`'s lines: its non-private mean accuracy as a dashed horizontal line, then its mean
/// accuracy per ε as a polyline with a dot per point.
fn chart_method_lines(
    s: &mut String,
    f: &ChartFrame,
    m: &Method,
    epsilons: &[f64],
    results: &[CellResult],
    color: &str,
) {
    let left = f.left;
    if let Some((mean, _, _)) = stats(results, m, None, |r| r.accuracy) {
        let _ = write!(
            s,
            r#"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{color}" stroke-dasharray="6,4"/>"#,
            left + f.plot_w,
            y = f.y_of(mean)
        );
    }
    let pts: Vec<String> = epsilons
        .iter()
        .enumerate()
        .filter_map(|(i, &e)| {
            stats(results, m, Some(e), |r| r.accuracy)
                .map(|(mean, _, _)| format!("{:.1},{:.1}", f.x_of(i), f.y_of(mean)))
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
