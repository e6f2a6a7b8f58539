//! The committed grid results (`bench/<task>/results.jsonl`) still read with today's types, and
//! `table.md` is what they produce: the typed method names, trainable specs and the table code
//! reproduce the committed files.

use std::path::Path;

use dpselft_bench::table::table_markdown;
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

#[test]
fn committed_results_and_methods_file_read() {
    let methods =
        MethodsFile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/methods.toml"))
            .unwrap();
    for task in ["brown-genre", "spam"] {
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
fn the_committed_brown_genre_table_is_reproduced_by_its_results() {
    let rs = results("brown-genre");
    let table = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/brown-genre/table.md"),
    )
    .unwrap();
    // The methods in the table's order, and the ε columns, as the committed table shows them.
    let mut methods: Vec<Method> = Vec::new();
    for r in &rs {
        if !methods.contains(&r.method) {
            methods.push(r.method.clone());
        }
    }
    let epsilons: Vec<f64> = vec![3.0];
    let ours = table_markdown(&methods, &epsilons, &rs, None);
    // The committed table also states the majority floor; compare the metric rows.
    let rows: Vec<&str> = ours
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("(n="))
        .collect();
    // One row per method in each of the two metric tables.
    assert_eq!(rows.len(), 2 * methods.len(), "{ours}");
    for line in rows {
        assert!(table.contains(line), "not in the committed table: {line}");
    }
}
