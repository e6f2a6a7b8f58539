//! One process per run folder, with two real processes: while `dpselft train` runs, a second
//! `train` (fresh or `--resume`) on the same folder is refused with the holder's pid and
//! writes nothing; once the first process is killed, the lock is gone and `--resume` takes it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dpselft;
use dpselft_testkit::{PAD_UNK, save_random_model, tiny_bert_config, write_colour_animal_jsonl};

fn train_args(root: &Path, out: &Path) -> Vec<String> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    [
        "train",
        "--model",
        &s(&root.join("tiny")),
        "--data",
        &s(&root.join("train.jsonl")),
        "--epsilon",
        "8",
        "--trainable",
        "all",
        "--epochs",
        "400",
        "--batch-size",
        "20",
        "--checkpoint-every",
        "5",
        "--seed",
        "1",
        "--max-seq-len",
        "16",
        "--out",
        &s(out),
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn a_second_process_on_a_running_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    save_random_model(
        &tmp.path().join("tiny"),
        tiny_bert_config(16, 2),
        0.2,
        11,
        PAD_UNK,
    );
    write_colour_animal_jsonl(&tmp.path().join("train.jsonl"), 200, 0, 2);
    let out = tmp.path().join("run");
    let args = train_args(tmp.path(), &out);
    let mut first = Command::new(env!("CARGO_BIN_EXE_dpselft"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // config.json is written once the trainer holds the folder's lock.
    let started = Instant::now();
    while !out.join("config.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let holder = format!("pid {}", first.id());
    let out_s = out.to_string_lossy().into_owned();
    // A fresh run is refused before it touches anything (the folder holds a run).
    let fresh = dpselft(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!fresh.status.success());
    // --resume (which would continue from the last checkpoint) is refused by the lock.
    let mut resume: Vec<&str> = args.iter().map(String::as_str).collect();
    resume.push("--resume");
    let second = dpselft(&resume);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second process ran: {stderr}");
    assert!(
        stderr.contains("in use by another dpselft process") && stderr.contains(&holder),
        "{stderr}"
    );
    let still_running = first.try_wait().unwrap().is_none();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        still_running,
        "the first run finished before the check; make it longer"
    );
    // The lock died with its process: --resume now takes it (the run is long: it is stopped as
    // soon as the lock file names it).
    let mut resumed = Command::new(env!("CARGO_BIN_EXE_dpselft"))
        .args(["train", "--resume", "--out", &out_s])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = out.join(".lock");
    let started = Instant::now();
    loop {
        let pid = std::fs::read_to_string(&lock).unwrap_or_default();
        if pid.trim() == resumed.id().to_string() {
            break;
        }
        if let Some(status) = resumed.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut resumed.stderr.take().unwrap(), &mut err).unwrap();
            panic!("--resume after the kill failed ({status}): {err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "--resume never took the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    resumed.kill().unwrap();
    resumed.wait().unwrap();
}
