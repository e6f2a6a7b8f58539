//! `dpselft train` and `dpselft eval` end to end on a tiny random BERT saved in the Hugging Face
//! layout with a word-level tokenizer: the output folder, the JSON summary, the ledger, and
//! that `eval` of the saved model reproduces the run's final evaluation.

mod common;

use common::{dpselft, json};
use std::path::Path;

use dpselft_testkit::{PAD_UNK, save_random_model, tiny_bert_config, write_colour_animal_jsonl};

/// A tiny random BERT with a word-level tokenizer, saved under `dir`.
fn tiny_model(dir: &Path) {
    save_random_model(dir, tiny_bert_config(16, 2), 0.2, 11, PAD_UNK);
}

/// Colours vs animals, as JSONL.
fn data(path: &Path, n: usize, seed: usize) {
    write_colour_animal_jsonl(path, n, seed, 2);
}

#[test]
fn train_then_eval_a_tiny_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let (train, test) = (
        tmp.path().join("train.jsonl"),
        tmp.path().join("test.jsonl"),
    );
    data(&train, 200, 0);
    data(&test, 60, 1);
    let out = tmp.path().join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let trained = dpselft(&[
        "train",
        "--model",
        &s(&model),
        "--data",
        &s(&train),
        "--eval-data",
        &s(&test),
        "--epsilon",
        "8",
        "--trainable",
        "head,last:1",
        "--epochs",
        "6",
        "--batch-size",
        "40",
        "--lr",
        "0.02",
        "--seed",
        "1",
        "--max-seq-len",
        "16",
        "--out",
        &s(&out),
        "--json",
    ]);
    let summary = json(&trained);
    // stderr is not a terminal here: progress comes as log lines, without the private loss.
    let log = String::from_utf8_lossy(&trained.stderr);
    assert!(log.contains("training: "), "{log}");
    let steps: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("step ") && l.contains(" ETA "))
        .collect();
    assert!(steps.len() >= 2, "no progress lines: {log}");
    for l in &steps {
        assert!(l.contains(" ε ") && !l.contains("loss"), "{l}");
    }
    let eps = summary["epsilon"].as_f64().unwrap();
    assert!(eps <= 8.0 && eps > 7.0, "ε = {eps}");
    assert_eq!(summary["completed"], true);
    assert_eq!(summary["plan"]["seeded"], true);
    let acc = summary["eval"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.6, "accuracy {acc} (chance: 0.5)");
    for f in [
        "config.json",
        "ledger.json",
        "metrics.jsonl",
        "summary.json",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let evaluated = json(&dpselft(&[
        "eval",
        "--model",
        &s(&out),
        "--data",
        &s(&test),
        "--max-seq-len",
        "16",
        "--json",
    ]));
    assert_eq!(evaluated["task"], "classify");
    let again = evaluated["accuracy"].as_f64().unwrap();
    assert!((again - acc).abs() < 1e-9, "eval {again} vs train's {acc}");

    // A second fresh run into the same folder is refused (exit code 2), --resume is needed.
    let refused = dpselft(&[
        "train",
        "--model",
        &s(&model),
        "--data",
        &s(&train),
        "--epsilon",
        "8",
        "--out",
        &s(&out),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
}

#[test]
fn non_private_run_reports_infinite_epsilon() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let train = tmp.path().join("train.jsonl");
    data(&train, 40, 0);
    let out = tmp.path().join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let summary = json(&dpselft(&[
        "train",
        "--model",
        &s(&model),
        "--data",
        &s(&train),
        "--non-private",
        "--steps",
        "2",
        "--batch-size",
        "10",
        "--out",
        &s(&out),
        "--json",
    ]));
    assert!(summary["epsilon"].is_null(), "{summary}");
    assert_eq!(summary["plan"]["privacy"]["mode"], "non_private");
    assert!(!out.join("ledger.json").exists());
}

#[test]
fn invalid_settings_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = dpselft(&[
        "train",
        "--model",
        &s(tmp.path()),
        "--data",
        "x.jsonl",
        "--epsilon",
        "-1",
        "--out",
        &s(&tmp.path().join("run")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ε = -1"));
}

/// δ ≥ 1/n is refused before anything is written, unless allowed; then the ledger records it.
#[test]
fn delta_not_below_one_over_n_needs_an_explicit_override() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let train = tmp.path().join("train.jsonl");
    data(&train, 40, 0);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = tmp.path().join("run");
    let (model_s, train_s, out_s) = (s(&model), s(&train), s(&out));
    let mut args = vec![
        "train",
        "--model",
        &model_s,
        "--data",
        &train_s,
        "--epsilon",
        "3",
        "--delta",
        "0.1",
        "--trainable",
        "head",
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--max-seq-len",
        "16",
        "--out",
        &out_s,
        "--json",
    ];
    let refused = dpselft(&args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("1/n") && stderr.contains("n = 40"),
        "{stderr}"
    );
    assert!(!out.join("ledger.json").exists(), "nothing may be recorded");
    args.push("--allow-large-delta");
    json(&dpselft(&args));
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ledger.json")).unwrap()).unwrap();
    assert_eq!(ledger["overrides"][0]["kind"], "delta_not_below_one_over_n");
    assert_eq!(ledger["overrides"][0]["examples"], 40);
}

/// Runs `dpselft train` on the tiny model with `data` (and `eval`, if any) into `out`.
fn train_on(model: &Path, data: &Path, eval: Option<&Path>, out: &Path) -> std::process::Output {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, data_s, out_s) = (s(model), s(data), s(out));
    let eval_s = eval.map(s);
    let mut args = vec![
        "train",
        "--model",
        &model_s,
        "--data",
        &data_s,
        "--epsilon",
        "3",
        "--trainable",
        "head",
        "--epochs",
        "1",
        "--batch-size",
        "20",
        "--max-seq-len",
        "16",
        "--out",
        &out_s,
    ];
    if let Some(e) = &eval_s {
        args.extend(["--eval-data", e]);
    }
    dpselft(&args)
}

/// Settings that void the guarantee or the result are refused before the ledger exists: a
/// one-label training set, and evaluation data that is the training data; a small natural
/// overlap is only reported.
#[test]
fn one_label_and_evaluating_on_training_data_are_refused_before_anything_is_spent() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let train = tmp.path().join("train.jsonl");
    data(&train, 100, 0);
    let one_label = tmp.path().join("one.jsonl");
    let lines: String = std::fs::read_to_string(&train)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"colour\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&one_label, lines).unwrap();
    let out = tmp.path().join("run");
    let refused = train_on(&model, &one_label, None, &out);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("one.jsonl") && stderr.contains("\"colour\"") && stderr.contains("two"),
        "{stderr}"
    );
    assert!(!out.join("ledger.json").exists());

    let same = train_on(&model, &train, Some(&train), &out);
    let stderr = String::from_utf8_lossy(&same.stderr);
    assert!(!same.status.success());
    assert!(
        stderr.contains("also in the training data") && stderr.contains("train.jsonl"),
        "{stderr}"
    );
    assert!(!out.join("ledger.json").exists());
    // One example of 30 shared: a note, and the run goes on.
    let eval = tmp.path().join("eval.jsonl");
    data(&eval, 29, 7);
    let first = std::fs::read_to_string(&train).unwrap();
    let first = first.lines().next().unwrap();
    let mut text = std::fs::read_to_string(&eval).unwrap();
    text.push_str(&format!("{first}\n"));
    std::fs::write(&eval, text).unwrap();
    let noted = train_on(&model, &train, Some(&eval), &out);
    assert!(
        noted.status.success(),
        "{}",
        String::from_utf8_lossy(&noted.stderr)
    );
    let stderr = String::from_utf8_lossy(&noted.stderr);
    assert!(stderr.contains("are also training examples"), "{stderr}");
}

/// `train --resume` of a run killed before its first checkpoint restarts it, says what was
/// lost, and the lost steps stay in the ledger; a fresh `train` on the folder points at
/// `--resume`, and `--resume` of a finished run is refused.
#[test]
fn a_killed_run_without_a_checkpoint_restarts_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model);
    let train = tmp.path().join("train.jsonl");
    data(&train, 100, 0);
    let out = tmp.path().join("run");
    let done = train_on(&model, &train, None, &out);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // Simulate the kill: the run had recorded its first chunk, then died (no summary, no model).
    std::fs::remove_file(out.join("summary.json")).unwrap();
    let path = out.join("ledger.json");
    let mut ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    ledger["entries"][0]["steps"] = 1.into();
    std::fs::write(&path, ledger.to_string()).unwrap();
    let again = train_on(&model, &train, None, &out);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("--resume"),
        "{stderr}"
    );
    let s = out.to_str().unwrap();
    let resumed = dpselft(&["train", "--resume", "--out", s]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("no checkpoint") && stderr.contains("lost"),
        "{stderr}"
    );
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let entries = ledger["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{ledger}");
    assert_eq!(entries[0]["lost"], true);
    assert!(
        ledger["spent"]["by_accountant"]["pld"]["epsilon"]
            .as_f64()
            .unwrap()
            <= 3.0
    );
    let finished = dpselft(&["train", "--resume", "--out", s]);
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(
        !finished.status.success() && stderr.contains("finished run"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("finished run").count(),
        1,
        "printed once: {stderr}"
    );
    // Killed after the last step, before the model was saved: the weights are lost, and it says so.
    std::fs::remove_dir_all(out.join("model")).unwrap();
    let lost = dpselft(&["train", "--resume", "--out", s]);
    let stderr = String::from_utf8_lossy(&lost.stderr);
    assert!(!lost.status.success(), "{stderr}");
    assert!(
        stderr.contains("model was not saved") && stderr.contains("ε is spent"),
        "{stderr}"
    );
}
