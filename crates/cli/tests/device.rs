//! `--device` on the command line: a malformed one is a usage error, a GPU in a build without
//! CUDA is refused before a run folder holds anything, and `bench device` runs its comparison
//! (on the CPU: the harness against itself) and writes its JSON.

mod common;

use common::dpselft;
use std::path::Path;

use dpselft_testkit::{PAD_UNK, save_random_model, tiny_bert_config, write_colour_animal_jsonl};

fn train_args<'a>(model: &'a str, data: &'a str, out: &'a str, device: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        model,
        "--data",
        data,
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
        "--device",
        device,
        "--out",
        out,
    ]
}

#[test]
fn a_malformed_device_is_a_usage_error_and_a_missing_gpu_spends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    save_random_model(&model, tiny_bert_config(16, 2), 0.2, 11, PAD_UNK);
    let data = tmp.path().join("train.jsonl");
    write_colour_animal_jsonl(&data, 60, 0, 2);
    let out = tmp.path().join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model, data, out_s) = (s(&model), s(&data), s(&out));

    let bad = dpselft(&train_args(&model, &data, &out_s, "gpu"));
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("expected `cpu`, `cuda` or `cuda:N`"),
        "{stderr}"
    );

    if !dpselft_model::DeviceSpec::CUDA_COMPILED {
        let refused = dpselft(&train_args(&model, &data, &out_s, "cuda:0"));
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("--device cuda:0") && stderr.contains("scripts/build-cuda"),
            "{stderr}"
        );
        assert!(!out.join("ledger.json").exists());
    }

    // The default and an explicit `cpu` train the same run.
    let trained = dpselft(&train_args(&model, &data, &out_s, "cpu"));
    common::ok(&trained);
    assert!(out.join("ledger.json").exists());
}

#[test]
fn bench_device_on_the_cpu_compares_the_harness_with_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("parity.json");
    let out = dpselft(&[
        "bench",
        "device",
        "--device",
        "cpu",
        "--json",
        path.to_str().unwrap(),
    ]);
    common::ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("all equal within the tolerances"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(report["device"], "cpu");
    assert_eq!(report["pass"], true);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 15);
    for q in ["per-example norms", "clipped sums", "update of 3 DP steps"] {
        assert!(rows.iter().any(|r| r["quantity"] == q), "{q}");
    }
}
