//! `dpselft bench utility`: a cell killed midway continues where it stopped — its finished
//! learning-rate runs are kept, the interrupted one continues from its checkpoint — and gives
//! what an uninterrupted grid gives. So a cell longer than a session finishes over several.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ok;
use common::toy_run::{SPECIALS, grid_bench, setup};
use dpselft_model::{LlamaConfig, ModelConfig};
use dpselft_privacy::PrivacyLedger;
use dpselft_testkit::{save_random_model, tiny_llama_config};
use serde_json::Value;

const CELL: &str = "grid/runs/last-k-eps2-seed0";

/// The toy models, the toy data as the `spam` task's splits (`data/spam/` under `root`, where
/// the command looks first; its labels renamed to the task's, which the synthetic prompts
/// describe), and a methods file whose runs take `epochs` (60: hundreds of tiny steps, long
/// enough to be killed in the middle). The generator reads 128 positions: the spam task's
/// described prompts are ~40 toy tokens, more than the toy generator's 32.
fn prepare(root: &Path, epochs: u32) {
    setup(root);
    let ModelConfig::Llama(llama) = tiny_llama_config(20, true) else {
        unreachable!("a Llama config")
    };
    let long = ModelConfig::Llama(LlamaConfig {
        max_position_embeddings: 128,
        ..llama
    });
    save_random_model(&root.join("generator"), long, 0.3, 5, SPECIALS);
    grid_bench(root, &["last-k"], &[2.0]); // writes root/methods.toml
    let methods = std::fs::read_to_string(root.join("methods.toml"))
        .unwrap()
        .replace("epochs = 1.0", &format!("epochs = {epochs}.0"));
    std::fs::write(root.join("methods.toml"), methods).unwrap();
    let data = root.join("data/spam");
    std::fs::create_dir_all(&data).unwrap();
    for split in ["train.jsonl", "test.jsonl"] {
        let text = std::fs::read_to_string(root.join(split)).unwrap();
        std::fs::write(data.join(split), as_spam_labels(&text)).unwrap();
    }
}

/// The toy JSONL with its labels named as the spam task's (colour → ham, animal → spam).
fn as_spam_labels(jsonl: &str) -> String {
    jsonl
        .lines()
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
            let label = match record["label"].as_str().unwrap() {
                "colour" => "ham",
                "animal" => "spam",
                other => panic!("toy label {other}"),
            };
            record["label"] = label.into();
            format!("{record}\n")
        })
        .collect()
}

fn grid_command(root: &Path, method: &str) -> Command {
    let p = |name: &str| root.join(name).to_string_lossy().into_owned();
    let mut c = Command::new(env!("CARGO_BIN_EXE_dpselft"));
    c.current_dir(root).args([
        "bench",
        "utility",
        "--task",
        "spam",
        "--methods",
        method,
        "--epsilons",
        "2",
        "--seeds",
        "1",
        "--model",
        &p("target"),
        "--generator",
        &p("generator"),
        "--methods-file",
        &p("methods.toml"),
        "--out",
        &p("grid"),
    ]);
    c
}

/// The grid's result lines without their wall times.
fn results(root: &Path) -> Vec<Value> {
    std::fs::read_to_string(root.join("grid/results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("wall_s");
            v
        })
        .collect()
}

fn modified(path: &PathBuf) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn a_grid_cell_killed_midway_continues_to_the_uninterrupted_result() {
    let reference = tempfile::tempdir().unwrap();
    prepare(reference.path(), 60);
    ok(&grid_command(reference.path(), "last-k").output().unwrap());
    let expected = results(reference.path());
    assert_eq!(expected.len(), 1);

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    prepare(root, 60);
    let mut child = grid_command(root, "last-k")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed in the second learning-rate run, after a checkpoint of it: the first has finished.
    let first = root.join(CELL).join("lr-3.00e-3");
    let second = root.join(CELL).join("lr-3.00e-2");
    let latest = second.join("checkpoint/latest.json");
    let started = Instant::now();
    while !latest.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the cell finished before a checkpoint of its second run was seen"
        );
        assert!(
            started.elapsed().as_secs() < 300,
            "no checkpoint after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !root.join("grid/results.jsonl").exists(),
        "killed before the end"
    );
    let first_trained = first.join("trained.safetensors");
    let kept = modified(&first_trained);

    let out = grid_command(root, "last-k").output().unwrap();
    ok(&out);
    assert_eq!(
        results(root),
        expected,
        "the same result as without the kill"
    );
    assert_eq!(
        modified(&first_trained),
        kept,
        "the finished run was not trained again"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("finished in an earlier attempt"),
        "{stderr}"
    );
    // The interrupted run continued from its checkpoint: no step was lost or recorded twice.
    let ledger = PrivacyLedger::open(second.join("ledger.json")).unwrap();
    assert!(
        ledger.entries().iter().all(|e| !e.lost),
        "{:?}",
        ledger.entries()
    );
    let steps: u64 = ledger.entries().iter().map(|e| e.steps).sum();
    assert_eq!(Some(steps), expected[0]["steps"].as_u64());
}

#[test]
fn a_cell_folder_left_with_another_configuration_is_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    prepare(root, 60);
    // A learning-rate run of another configuration (as if the methods file changed since).
    let stale = root.join(CELL).join("lr-3.00e-3");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("config.json"), "{}").unwrap();
    std::fs::write(stale.join("trained.safetensors"), "not a model").unwrap();
    let reference = tempfile::tempdir().unwrap();
    prepare(reference.path(), 60);
    ok(&grid_command(reference.path(), "last-k").output().unwrap());
    ok(&grid_command(root, "last-k").output().unwrap());
    assert_eq!(results(root), results(reference.path()));
}

/// A dp-selft cell killed after its run finished, before its result line: the run is kept
/// (nothing trained or spent again); killed before its report: the report is written.
#[test]
fn a_dp_selft_cell_killed_late_keeps_its_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    prepare(root, 1);
    ok(&grid_command(root, "dp-selft").output().unwrap());
    let expected = results(root);
    let cell = root.join("grid/runs/dp-selft-eps2-seed0");
    let ledger = cell.join("ledger.json");
    let spent = modified(&ledger);
    for removed in ["results.jsonl", "runs/dp-selft-eps2-seed0/metrics.json"] {
        std::fs::remove_file(root.join("grid").join(removed)).unwrap();
        ok(&grid_command(root, "dp-selft").output().unwrap());
        assert_eq!(results(root), expected, "after removing {removed}");
        assert_eq!(modified(&ledger), spent, "nothing spent again");
    }
}
