//! The committed grid results (`bench/<task>/results.jsonl`) still read with today's types, and
//! `table.md` is what they produce: the typed method names, trainable specs and the table code
//! reproduce the committed files.

use std::path::Path;

use dpselft_bench::table::{Scoring, table_markdown};
use dpselft_bench::{CellResult, Method, MethodsFile};

fn results(task: &str) -> Vec<CellResult> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../bench/{task}/results.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// The committed grids: each task and the methods file its cells ran with.
const GRIDS: [(&str, &str); 3] = [
    ("brown-genre", "methods.toml"),
    ("spam", "methods.toml"),
    ("ham-lm", "methods-lm.toml"),
];

#[test]
fn committed_results_and_methods_file_read() {
    for (task, file) in GRIDS {
        let methods = MethodsFile::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../bench")
                .join(file),
        )
        .unwrap();
        let rs = results(task);
        assert!(!rs.is_empty());
        for r in &rs {
            assert!(methods.settings(&r.method).is_ok(), "{task}: {}", r.method);
            assert!(
                r.trainable.is_some(),
                "{task}: {} has no trainable set",
                r.method
            );
        }
    }
}

#[test]
fn the_committed_tables_are_reproduced_by_their_results() {
    for (task, _) in GRIDS {
        committed_table_is_reproduced(task);
    }
}

fn committed_table_is_reproduced(task: &str) {
    let rs = results(task);
    let table = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../bench/{task}/table.md")),
    )
    .unwrap();
    // The methods in the table's order, and the ε columns, as the committed table shows them.
    let mut methods: Vec<Method> = Vec::new();
    for r in &rs {
        if !methods.contains(&r.method) {
            methods.push(r.method.clone());
        }
    }
    let mut epsilons: Vec<f64> = rs.iter().filter_map(|r| r.epsilon).collect();
    epsilons.sort_by(f64::total_cmp);
    epsilons.dedup();
    // A language-modelling grid's rows carry perplexity and its floor, a classification grid's
    // accuracy and macro-F1 (two metric tables).
    let (scoring, tables) = if rs.iter().any(|r| r.perplexity.is_some()) {
        let pretrained = rs.iter().find_map(|r| r.pretrained_perplexity);
        (Scoring::Perplexity { pretrained }, 1)
    } else {
        let majority = rs.iter().find_map(|r| r.majority_accuracy);
        (Scoring::Accuracy { majority }, 2)
    };
    let ours = table_markdown(&methods, &epsilons, &rs, scoring);
    // The committed table also states the floor; compare the metric rows.
    let rows: Vec<&str> = ours
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("(n="))
        .collect();
    // One row per method in each metric table.
    assert_eq!(rows.len(), tables * methods.len(), "{ours}");
    for line in rows {
        assert!(table.contains(line), "not in the committed table: {line}");
    }
}

/// A methods file without a usable learning-rate grid or validation share is refused with the
/// file's name and the field.
#[test]
fn a_methods_file_needs_a_learning_rate_grid_and_a_validation_share() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("methods.toml");
    let file = |grid: &str, fraction: &str| {
        format!(
            "[defaults]\nbatch_size = 8\nepochs = 1.0\nclip = 1.0\nmax_seq_len = 8\n\
             delta = 1e-5\nlr_grid = {grid}\nvalidation_fraction = {fraction}\n\n\
             [methods.head]\ntrainable = \"head\"\n"
        )
    };
    for (grid, fraction, field) in [
        ("[]", "0.1", "lr_grid"),
        ("[0.01, -1.0]", "0.1", "lr_grid"),
        ("[0.01]", "0.0", "validation_fraction"),
        ("[0.01]", "0.9", "validation_fraction"),
    ] {
        std::fs::write(&path, file(grid, fraction)).unwrap();
        let e = MethodsFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("methods.toml") && e.contains(field), "{e}");
    }
    std::fs::write(&path, file("[0.01, 0.1]", "0.1")).unwrap();
    assert!(MethodsFile::load(&path).is_ok());
    // A per-method learning rate is no longer a setting: one rule for every method.
    std::fs::write(&path, file("[0.01]", "0.1") + "lr = 0.1\n").unwrap();
    assert!(MethodsFile::load(&path).is_err());
}

/// The committed selection reports read with today's types, and their summaries are what their
/// own oracle rows give: each candidate's best run, the regret of the chosen set and of the
/// chosen set at the chosen rate, the Spearman of the synthetic scores.
#[test]
fn committed_selection_reports_agree_with_their_rows() {
    use dpselft_bench::selection::{SelectionReport, spearman};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/selection");
    for name in ["spam.json", "brown-genre.json", "spam-current.json"] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let r: SelectionReport =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let accuracy = |spec: &dpselft_model::TrainableSpec| {
            let row = r.candidates.iter().find(|c| c.spec == *spec);
            row.unwrap_or_else(|| panic!("{name}: no row for {spec}"))
                .test_accuracy
        };
        let best = r.candidates.iter().map(|c| c.test_accuracy);
        let best = best.fold(f64::MIN, f64::max);
        assert_eq!(accuracy(&r.oracle), best, "{name}");
        assert!(
            (r.regret - (best - accuracy(&r.chosen))).abs() < 1e-12,
            "{name}"
        );
        for c in &r.candidates {
            let mut runs = r.runs.iter().filter(|run| run.spec == c.spec);
            assert!(
                runs.all(|run| run.test_accuracy <= c.test_accuracy),
                "{name}: {}",
                c.spec
            );
        }
        if let Some(at_rate) = r.chosen_rate_regret {
            let lr_matches =
                |lr: Option<f64>| lr.is_some_and(|l| (l - r.chosen_lr).abs() <= 1e-6 * l);
            let run = r
                .runs
                .iter()
                .find(|run| run.spec == r.chosen && lr_matches(run.lr));
            assert!(
                (at_rate - (best - run.unwrap().test_accuracy)).abs() < 1e-12,
                "{name}"
            );
        }
        for v in &r.variants {
            let chosen = r.candidates.iter().find(|c| c.spec == v.chosen);
            let want = chosen.map(|c| best - c.test_accuracy);
            let close = match (v.regret, want) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-12,
                (a, b) => a.is_none() && b.is_none(),
            };
            assert!(close, "{name}: {} {:?} vs {want:?}", v.name, v.regret);
        }
        let xs: Vec<f64> = r.candidates.iter().map(|c| c.synthetic_score).collect();
        let ys: Vec<f64> = r.candidates.iter().map(|c| c.test_accuracy).collect();
        assert!((r.spearman - spearman(&xs, &ys)).abs() < 1e-12, "{name}");
    }
}
