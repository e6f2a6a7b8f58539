//! `table.md` of the utility grid from hand-made results: means and sample standard deviations
//! computed by hand, the best private mean per column in bold (never the non-private one), the
//! macro-F1 table, one row per cell of the grid and none for results outside it; a language-
//! modelling grid's perplexity table, where the lowest mean is the best.

use dpselft_bench::CellResult;
use dpselft_bench::table::{Scoring, table_markdown};

fn cell(method: &str, epsilon: Option<f64>, seed: u64, accuracy: f64, macro_f1: f64) -> CellResult {
    CellResult {
        task: "toy".into(),
        method: method.parse().unwrap(),
        epsilon,
        seed,
        accuracy: Some(accuracy),
        macro_f1: Some(macro_f1),
        perplexity: None,
        trainable_params: 1000 + seed as usize,
        wall_s: 60.0,
        epsilon_spent: epsilon.map(|e| e - 0.0003),
        trainable: Some("head,last:1".parse().unwrap()),
        train_examples: Some(900),
        validation_examples: Some(100),
        test_examples: Some(400),
        batch_size: Some(64),
        epochs: Some(5.0),
        steps: Some(70),
        sigma: epsilon.map(|_| 1.25),
        lr: Some(3.16e-3),
        lr_trials: Vec::new(),
        majority_accuracy: Some(0.5),
        pretrained_perplexity: None,
    }
}

fn table() -> String {
    let results = vec![
        cell("a", Some(1.0), 0, 0.2, 0.1),
        cell("a", Some(1.0), 1, 0.4, 0.3),
        cell("b", Some(1.0), 0, 0.35, 0.05),
        cell("a", Some(3.0), 0, 0.5, 0.45),
        cell("b", Some(3.0), 0, 0.6, 0.4),
        cell("np", None, 0, 0.9, 0.8),
        // Outside the grid: another method, another ε.
        cell("c", Some(1.0), 0, 0.99, 0.99),
        cell("a", Some(8.0), 0, 0.98, 0.98),
    ];
    let methods: Vec<_> = ["a", "b", "np"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    let scoring = Scoring::Accuracy {
        majority: Some(0.25),
    };
    table_markdown(&methods, &[1.0, 3.0], &results, scoring)
}

#[test]
fn accuracy_means_and_sample_stds_with_the_best_private_mean_in_bold() {
    let t = table();
    let (accuracy, rest) = t.split_once("## Test macro-F1").unwrap();
    // a at ε = 1: mean 0.3, sample std sqrt(((0.1)² + (0.1)²) / 1) = 0.1414.
    assert!(
        accuracy.contains("| a | 0.3000 ± 0.1414 (n=2) | 0.5000 ± 0.0000 (n=1) | – |"),
        "{accuracy}"
    );
    assert!(
        accuracy.contains("| b | **0.3500 ± 0.0000 (n=1)** | **0.6000 ± 0.0000 (n=1)** | – |"),
        "{accuracy}"
    );
    // The non-private upper bound is reported, never marked best.
    assert!(
        accuracy.contains("| np | – | – | 0.9000 ± 0.0000 (n=1) |"),
        "{accuracy}"
    );
    assert!(
        accuracy.contains("most frequent label: 0.2500"),
        "{accuracy}"
    );
    let (f1, _) = rest.split_once("## Every cell").unwrap();
    assert!(
        f1.contains("| a | **0.2000 ± 0.1414 (n=2)** | **0.4500 ± 0.0000 (n=1)** | – |"),
        "{f1}"
    );
}

#[test]
fn one_row_per_cell_of_the_grid_only() {
    let t = table();
    let (_, cells) = t.split_once("## Every cell").unwrap();
    let rows: Vec<&str> = cells
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
        .collect();
    assert_eq!(rows.len(), 6, "{cells}");
    assert!(
        !cells.contains("| c |") && !cells.contains("| 8 |"),
        "{cells}"
    );
    assert!(
        cells.contains(
            "| a | 1 | 1 | `head,last:1` | 1001 | 900 | 100 | 64 | 5 | 70 | 1.250 | 3.16e-3 | \
             0.4000 | 0.3000 | 0.9997 | 60 s |"
        ),
        "{cells}"
    );
    assert!(
        cells.contains(
            "| np | ∞ | 0 | `head,last:1` | 1000 | 900 | 100 | 64 | 5 | 70 | – | 3.16e-3 | \
             0.9000 | 0.8000 | – | 60 s |"
        ),
        "{cells}"
    );
    // How the learning rates were chosen, and what that choice costs, is said under the rows.
    assert!(
        cells.contains("privacy cost is **not** accounted"),
        "{cells}"
    );
    assert!(
        cells.contains("6 cells, 360 s (0.1 h) of runs in all."),
        "{cells}"
    );
}

/// A language-modelling cell: perplexity only.
fn lm_cell(method: &str, epsilon: Option<f64>, seed: u64, perplexity: f64) -> CellResult {
    CellResult {
        accuracy: None,
        macro_f1: None,
        perplexity: Some(perplexity),
        majority_accuracy: None,
        pretrained_perplexity: Some(66.25),
        ..cell(method, epsilon, seed, 0.0, 0.0)
    }
}

#[test]
fn a_language_modelling_grid_reports_perplexity_and_the_lowest_mean_is_best() {
    let results = vec![
        lm_cell("a", Some(3.0), 0, 20.0),
        lm_cell("a", Some(3.0), 1, 22.0),
        lm_cell("b", Some(3.0), 0, 30.0),
        lm_cell("np", None, 0, 10.0),
    ];
    let methods: Vec<_> = ["a", "b", "np"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    let scoring = Scoring::Perplexity {
        pretrained: Some(66.25),
    };
    let t = table_markdown(&methods, &[3.0], &results, scoring);
    let (scores, cells) = t.split_once("## Every cell").unwrap();
    assert!(
        scores.starts_with("## Test perplexity (lower is better)"),
        "{t}"
    );
    // a: mean 21, sample std sqrt((1 + 1) / 1) = 1.4142; the lower mean is in bold, and the
    // non-private one never is.
    assert!(
        scores.contains("| a | **21.0000 ± 1.4142 (n=2)** | – |"),
        "{scores}"
    );
    assert!(
        scores.contains("| b | 30.0000 ± 0.0000 (n=1) | – |"),
        "{scores}"
    );
    assert!(
        scores.contains("| np | – | 10.0000 ± 0.0000 (n=1) |"),
        "{scores}"
    );
    assert!(
        scores.contains("The pretrained model, not fine-tuned: 66.2500."),
        "{scores}"
    );
    assert!(!t.contains("accuracy") && !t.contains("macro-F1"), "{t}");
    assert!(
        cells.contains("| lr | perplexity | ε spent | wall time |"),
        "{cells}"
    );
    assert!(
        cells.contains(
            "| b | 3 | 0 | `head,last:1` | 1000 | 900 | 100 | 64 | 5 | 70 | 1.250 | 3.16e-3 | \
             30.0000 | 2.9997 | 60 s |"
        ),
        "{cells}"
    );
}
