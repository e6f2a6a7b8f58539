//! `dpselft run` with the real SmolLM2-135M as the fine-tuned model (and as the generator), at a
//! small scale: as a classifier (last-token head) and as a language model (test perplexity).
//! The asset is fetched if absent. What is checked: the pipeline runs end to end on the real
//! decoder, the ledger stays within the target, the selection trained candidates among its 30
//! blocks under the budget, and the saved model reproduces the run's test figure. Learning is
//! not asserted: at this size (48 texts, a handful of steps) the result is noise.

mod common;

use common::{dpselft, json, ok};
use std::path::Path;

/// Two topics, 24 sentences each, from templates (written for this test).
fn texts() -> Vec<(String, &'static str)> {
    let weather = ["rain", "snow", "wind", "fog", "sunshine", "a storm"];
    let cooking = ["soup", "bread", "a stew", "rice", "pasta", "a pie"];
    let places = ["in the morning", "tonight", "this weekend", "by noon"];
    let mut out = Vec::new();
    for (i, w) in weather.iter().enumerate() {
        for (j, p) in places.iter().enumerate() {
            out.push((format!("The forecast says {w} {p}."), "weather"));
            let c = cooking[(i + j) % cooking.len()];
            out.push((format!("We are cooking {c} {p} for the family."), "cooking"));
        }
    }
    out
}

/// Writes train (40) and test (8) splits under `dir`, with labels or without.
fn write_data(dir: &Path, labelled: bool) {
    let all = texts();
    let line = |(t, l): &(String, &str)| {
        let v = if labelled {
            serde_json::json!({"text": t, "label": l})
        } else {
            serde_json::json!({"text": t})
        };
        format!("{v}\n")
    };
    let (test, train): (Vec<_>, Vec<_>) = all.iter().enumerate().partition(|(i, _)| i % 6 == 0);
    let join = |v: Vec<(usize, &(String, &str))>| -> String {
        v.into_iter().map(|(_, x)| line(x)).collect()
    };
    std::fs::write(dir.join("train.jsonl"), join(train)).unwrap();
    std::fs::write(dir.join("test.jsonl"), join(test)).unwrap();
}

/// Sized for about a minute of SmolLM2 on one core.
const CONFIG: &str = r#"
[run]
epsilon = 8.0
delta = 1e-5

[synth]
num_samples = 12
steps = 2
batch_size = 8
max_seq_len = 32
max_new_tokens = 12
generation_batch = 12
min_chars = 4

[select]
candidates = "greedy:2"
step_fraction = 0.3
batch_size = 4
lr_grid = [1.0]

[train]
batch_size = 16
epochs = 1.0
lr = 0.001
max_seq_len = 24
max_tokens = 128
"#;

fn smollm2_run(task: &str) -> (serde_json::Value, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    write_data(tmp.path(), task == "classify");
    std::fs::write(tmp.path().join("config.toml"), CONFIG).unwrap();
    let p = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    let out = dpselft(&[
        "run",
        "--config",
        &p("config.toml"),
        "--model",
        "smollm2",
        "--generator",
        "smollm2",
        "--task",
        task,
        "--train-data",
        &p("train.jsonl"),
        "--test-data",
        &p("test.jsonl"),
        "--select-budget",
        "2",
        "--seed",
        "1",
        "--json",
        "--out",
        &p("run"),
    ]);
    ok(&out);
    let metrics: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let eps = metrics["epsilon_pld"].as_f64().unwrap();
    assert!(eps <= 8.0 && eps > 7.9, "ledger total {eps}");
    // Two candidate sets of SmolLM2's 30 blocks under the budget, the top block first.
    let selection: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("run/selection.json")).unwrap(),
    )
    .unwrap();
    let specs: Vec<&str> = selection["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["spec"].as_str().unwrap())
        .collect();
    assert_eq!(specs.len(), 2, "{specs:?}");
    assert!(specs.iter().any(|s| s.contains("block.29")), "{specs:?}");
    (metrics, tmp)
}

/// `dpselft eval` of the run's saved model on the test split.
fn eval_saved(tmp: &Path) -> serde_json::Value {
    let p = |name: &str| tmp.join(name).to_string_lossy().into_owned();
    json(&dpselft(&[
        "eval",
        "--model",
        &p("run/model"),
        "--data",
        &p("test.jsonl"),
        "--max-seq-len",
        "24",
        "--json",
    ]))
}

#[test]
fn the_real_smollm2_classifies_through_the_whole_pipeline() {
    let (metrics, tmp) = smollm2_run("classify");
    let acc = metrics["test"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{metrics}");
    let again = eval_saved(tmp.path())["accuracy"].as_f64().unwrap();
    assert_eq!(
        again, acc,
        "the saved classifier gives {again}, the run said {acc}"
    );
}

#[test]
fn the_real_smollm2_runs_as_a_language_model_through_the_whole_pipeline() {
    let (metrics, tmp) = smollm2_run("lm");
    let ppl = metrics["test"]["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{metrics}");
    let again = eval_saved(tmp.path())["perplexity"].as_f64().unwrap();
    assert!(
        (again - ppl).abs() <= 1e-4 * ppl,
        "the saved model gives {again}, the run said {ppl}"
    );
}
