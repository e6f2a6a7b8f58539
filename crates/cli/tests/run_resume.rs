//! `dpselft run --resume`: a run folder continues at its first unfinished stage; a finished
//! stage is never rerun or re-spent; a stage interrupted with nothing to continue from has its
//! ledger entries marked lost (they keep counting) and runs again.

mod common;

use std::path::Path;

use common::toy_run::setup;
use common::{dpselft, ok};
use dpselft_privacy::{LedgerEntry, PrivacyLedger, Stage};
use serde_json::Value;

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (stage, lost) of every ledger entry.
fn ledger_rows(out: &Path) -> Vec<(String, bool)> {
    let ledger = PrivacyLedger::open(out.join("ledger.json")).unwrap();
    ledger
        .entries()
        .iter()
        .map(|e| (e.stage.to_string(), e.lost))
        .collect()
}

/// Runs stage 1 (`dpselft synth`) of the toy run into `out`.
fn synth(root: &Path, out: &Path) {
    let mut args = setup(root);
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    let mut argv = vec!["synth"];
    argv.extend(args.iter().map(String::as_str));
    ok(&dpselft(&argv));
}

fn resume(out: &Path) -> std::process::Output {
    let out = out.to_string_lossy().into_owned();
    dpselft(&["run", "--resume", "--out", &out, "--json"])
}

#[test]
fn resume_continues_after_a_finished_stage_without_spending_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    synth(tmp.path(), &out);
    let synth_entries = ledger_rows(&out);
    let result = resume(&out);
    ok(&result);
    let metrics: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(metrics["lost_epsilon"].as_f64(), Some(0.0));
    let eps = metrics["epsilon_pld"].as_f64().unwrap();
    assert!(eps <= 4.0 && eps > 3.99, "{eps}");
    let rows = ledger_rows(&out);
    assert_eq!(
        rows[..synth_entries.len()],
        synth_entries[..],
        "stage 1 kept"
    );
    assert_eq!(rows.len(), synth_entries.len() + 1, "one fine-tuning entry");
    assert!(out.join("model/model.safetensors").is_file());
    // A finished run has nothing to resume.
    let again = resume(&out);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("finished run"), "{stderr}");
}

#[test]
fn an_interrupted_synthetic_stage_is_lost_counted_and_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    synth(tmp.path(), &out);
    // Killed after its mechanisms ran, before synth.json was written.
    std::fs::remove_file(out.join("synth.json")).unwrap();
    let result = resume(&out);
    ok(&result);
    let rows = ledger_rows(&out);
    let lost: Vec<bool> = rows.iter().map(|r| r.1).collect();
    assert_eq!(lost, [true, true, false, false, false], "{rows:?}");
    let metrics: Value = serde_json::from_slice(&result.stdout).unwrap();
    let lost_eps = metrics["lost_epsilon"].as_f64().unwrap();
    assert!(
        (lost_eps - 1.0).abs() < 1e-3,
        "the lost attempt spent 0.25 · 4: {lost_eps}"
    );
    let eps = metrics["epsilon_pld"].as_f64().unwrap();
    assert!(eps <= 4.0 && eps > 3.99, "still within the target: {eps}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Interrupted attempts"), "{report}");
}

#[test]
fn a_fine_tuning_killed_before_its_first_checkpoint_is_lost_and_reselected() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    synth(tmp.path(), &out);
    let out_s = out.to_string_lossy().into_owned();
    ok(&dpselft(&["select", "--out", &out_s]));
    let sigma_before = json(&out.join("selection.json"))["config"]["noise_multiplier"]
        .as_f64()
        .unwrap();
    // Stage 3 recorded its first chunk of steps, then died before its first checkpoint.
    let mut ledger = PrivacyLedger::open(out.join("ledger.json")).unwrap();
    ledger
        .record(LedgerEntry::sampled_gaussian(0.2, sigma_before, 1, 1.0, Stage::Train).seeded(true))
        .unwrap();
    drop(ledger);
    let result = resume(&out);
    ok(&result);
    let sigma_after = json(&out.join("selection.json"))["config"]["noise_multiplier"]
        .as_f64()
        .unwrap();
    assert!(
        sigma_after > sigma_before,
        "selection reran for the larger σ of what is left: {sigma_before} → {sigma_after}"
    );
    let rows = ledger_rows(&out);
    assert_eq!(
        rows[rows.len() - 2..],
        [("train".to_string(), true), ("train".to_string(), false)]
    );
    let metrics: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert!(metrics["lost_epsilon"].as_f64().unwrap() > 0.0);
    assert_eq!(metrics["train_sigma"].as_f64(), Some(sigma_after));
    let eps = metrics["epsilon_pld"].as_f64().unwrap();
    assert!(eps <= 4.0 && eps > 3.99, "{eps}");
}

#[test]
fn resume_of_a_folder_without_a_run_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let result = resume(&tmp.path().join("nothing"));
    assert_eq!(result.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("config.toml"), "{stderr}");
}

/// A real kill -9 during stage 3, after its first checkpoint: `run --resume` continues from the
/// checkpoint; nothing is lost or recorded twice.
#[test]
fn a_fine_tuning_killed_after_a_checkpoint_continues_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = setup(tmp.path());
    // A stage 3 long enough (hundreds of tiny steps) to be killed in the middle.
    args.extend(["--epochs".into(), "60".into()]);
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    let mut argv = vec!["synth"];
    argv.extend(args.iter().map(String::as_str));
    ok(&dpselft(&argv));
    let out_s = out.to_string_lossy().into_owned();
    ok(&dpselft(&["select", "--out", &out_s]));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dpselft"))
        .args(["run", "--resume", "--out", &out_s])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let latest = out.join("train/checkpoint/latest.json");
    let started = std::time::Instant::now();
    while !latest.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "stage 3 finished before its first checkpoint was seen"
        );
        assert!(
            started.elapsed().as_secs() < 300,
            "no checkpoint after 5 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("metrics.json").exists(), "killed before the end");
    let result = resume(&out);
    ok(&result);
    let metrics: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(metrics["lost_epsilon"].as_f64(), Some(0.0));
    let ledger = PrivacyLedger::open(out.join("ledger.json")).unwrap();
    let train: Vec<(u64, bool)> = ledger
        .entries()
        .iter()
        .filter(|e| e.stage == Stage::Train)
        .map(|e| (e.steps, e.lost))
        .collect();
    let steps = metrics["train_steps"].as_u64().unwrap();
    assert_eq!(train, [(steps, false)], "recorded once, in one entry");
    let eps = metrics["epsilon_pld"].as_f64().unwrap();
    assert!(eps <= 4.0 && eps > 3.99, "{eps}");
}

/// Killed after stage 3 saved the model, before the report: resume writes the report only.
#[test]
fn a_run_killed_while_writing_its_report_is_finished_without_training_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = setup(tmp.path());
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    let mut argv = vec!["run"];
    argv.extend(args.iter().map(String::as_str));
    ok(&dpselft(&argv));
    let ledger = std::fs::read_to_string(out.join("ledger.json")).unwrap();
    let model = std::fs::read(out.join("model/model.safetensors")).unwrap();
    std::fs::remove_file(out.join("metrics.json")).unwrap();
    std::fs::remove_file(out.join("report.md")).unwrap();
    let result = resume(&out);
    ok(&result);
    assert_eq!(
        std::fs::read_to_string(out.join("ledger.json")).unwrap(),
        ledger
    );
    assert_eq!(
        std::fs::read(out.join("model/model.safetensors")).unwrap(),
        model
    );
    assert!(out.join("report.md").is_file());
    let metrics: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert!(metrics["test"]["accuracy"].as_f64().is_some());
}
