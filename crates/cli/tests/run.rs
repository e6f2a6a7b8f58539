//! `dpselft run`, `synth` and `select` end to end on a tiny random BERT (target) and a tiny
//! random Llama (generator), both saved in the Hugging Face layout with a word-level tokenizer:
//! the run folder's contents, the ledger's total against the target, and that the selection
//! stage runs with the private data gone.

mod common;

use common::toy_run::{grid_bench, setup};
use common::{dpselft, ok};

#[test]
fn run_writes_a_complete_run_folder_within_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = setup(tmp.path());
    let out = tmp.path().join("run");
    args.extend([
        "--out".into(),
        out.to_string_lossy().into_owned(),
        "--json".into(),
    ]);
    let mut argv = vec!["run"];
    argv.extend(args.iter().map(String::as_str));
    let result = dpselft(&argv);
    ok(&result);
    for f in [
        "config.toml",
        "ledger.json",
        "synthetic/train.jsonl",
        "synthetic/val.jsonl",
        "synthetic/manifest.json",
        "synth.json",
        "selection.json",
        "model/config.json",
        "model/model.safetensors",
        "metrics.json",
        "report.md",
        "selection.svg",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let metrics: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let eps = metrics["epsilon_pld"].as_f64().unwrap();
    assert!(eps <= 4.0, "ledger total {eps} exceeds the target");
    assert!(eps > 3.99, "the budget should be spent: {eps}");
    let stages = metrics["stages"].as_array().unwrap();
    let synth_eps = stages[0]["epsilon"].as_f64().unwrap();
    assert!(
        (synth_eps - 1.0).abs() < 1e-3,
        "synth ε {synth_eps} ≠ 0.25 · 4"
    );
    assert_eq!(stages[1]["epsilon"].as_f64(), Some(0.0));
    assert!(metrics["test"]["accuracy"].as_f64().is_some());
    // The ledger names every mechanism: histogram, generator, fine-tuning.
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ledger.json")).unwrap()).unwrap();
    let entries = ledger["entries"].as_array().unwrap();
    let stages: Vec<&str> = entries
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["synth-histogram", "synth-generator", "train"]);
    assert!(
        entries.iter().all(|e| e["seeded"] == true),
        "a seeded run says so in every ledger entry: {ledger}"
    );
    let selection: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("selection.json")).unwrap())
            .unwrap();
    let n = selection["candidates"].as_array().unwrap().len();
    assert!(
        (3..=5).contains(&n),
        "greedy:2 over 3 blocks trains 3 + 2 at most, got {n}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("selection.svg") && report.contains("Test accuracy"));
    // A second run into the same folder is refused (the ledger would be double-counted).
    let again = dpselft(&argv);
    assert!(!again.status.success());
}

#[test]
fn selection_runs_without_the_private_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = setup(tmp.path());
    let out = tmp.path().join("run");
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    let mut argv = vec!["synth"];
    argv.extend(args.iter().map(String::as_str));
    ok(&dpselft(&argv));
    let ledger_before = std::fs::read_to_string(out.join("ledger.json")).unwrap();
    // The private split disappears: selection must not need it.
    std::fs::remove_file(tmp.path().join("train.jsonl")).unwrap();
    std::fs::remove_file(tmp.path().join("test.jsonl")).unwrap();
    let out_s = out.to_string_lossy().into_owned();
    let result = dpselft(&["select", "--out", &out_s, "--json"]);
    ok(&result);
    let selection: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert!(
        selection["chosen_spec"]
            .as_str()
            .unwrap()
            .starts_with("head,block.")
    );
    // Selection spends nothing.
    assert_eq!(
        std::fs::read_to_string(out.join("ledger.json")).unwrap(),
        ledger_before
    );
}

/// The utility grid on the tiny models: every cell runs once, a second call runs nothing, and
/// the table marks the best private mean per ε.
#[test]
fn the_utility_grid_runs_each_cell_once_and_resumes() {
    use dpselft_bench::run_grid;
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let bench = grid_bench(
        tmp.path(),
        &["dp-selft", "last-k", "random-k", "non-private"],
        &[2.0, 6.0],
    );
    let results = run_grid(&bench, &mut ()).unwrap();
    assert_eq!(
        results.len(),
        3 * 2 + 1,
        "three private methods × two ε, non-private once"
    );
    for r in &results {
        match r.epsilon {
            Some(e) => assert!(r.epsilon_spent.unwrap() <= e + 1e-9, "{r:?}"),
            None => assert_eq!(r.epsilon_spent, None),
        }
        assert!((0.0..=1.0).contains(&r.accuracy));
    }
    let lines = std::fs::read_to_string(bench.out.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 7);
    let again = run_grid(&bench, &mut ()).unwrap();
    assert_eq!(again.len(), results.len());
    assert_eq!(
        std::fs::read_to_string(bench.out.join("results.jsonl")).unwrap(),
        lines,
        "a finished grid reruns nothing"
    );
    let table = std::fs::read_to_string(bench.out.join("table.md")).unwrap();
    assert!(
        table.contains("| ε = 2 |") && table.contains("**"),
        "{table}"
    );
    assert!(
        std::fs::read_to_string(bench.out.join("chart.svg"))
            .unwrap()
            .contains("<polyline")
    );
}

/// Every input is checked before the first mechanism: a test split with a label the training
/// split lacks fails with no ledger written (nothing spent), and the same folder can then be
/// used once the file is fixed.
#[test]
fn a_bad_test_split_fails_before_anything_is_spent() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = setup(tmp.path());
    let test = tmp.path().join("test.jsonl");
    let good = std::fs::read_to_string(&test).unwrap();
    std::fs::write(
        &test,
        format!("{good}{{\"text\": \"a fern\", \"label\": \"plant\"}}\n"),
    )
    .unwrap();
    let out = tmp.path().join("run");
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    let mut argv = vec!["run"];
    argv.extend(args.iter().map(String::as_str));
    let failed = dpselft(&argv);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("plant") && stderr.contains("test.jsonl"),
        "{stderr}"
    );
    assert!(
        !out.join("ledger.json").exists(),
        "privacy was spent: a ledger exists"
    );
    std::fs::write(&test, good).unwrap();
    ok(&dpselft(&argv));
}
