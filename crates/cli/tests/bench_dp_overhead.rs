//! `dpselft bench dp-overhead` and `bench generate` on the built-in tiny random models: the
//! table and the JSON report have one row per (model, trainable set) or batch size, with every
//! field filled in. No timing assertions (the numbers of a tiny model say nothing).

use std::process::Command;

#[test]
fn dp_overhead_on_tiny_models_reports_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let json_path = tmp.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dpselft"))
        .args([
            "bench",
            "dp-overhead",
            "--models",
            "tiny,tiny-llama",
            "--batch",
            "3",
            "--seq-len",
            "12",
            "--reps",
            "2",
            "--json",
            json_path.to_str().unwrap(),
        ])
        .output()
        .expect("run dpselft");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warm-up"),
        "progress goes to stderr: {stderr}"
    );

    let table = String::from_utf8(out.stdout).unwrap();
    let header = table
        .lines()
        .find(|l| l.starts_with("model"))
        .unwrap_or_else(|| panic!("no header: {table}"));
    for col in [
        "trainable",
        "nonpriv s",
        "DP s",
        "DP/np",
        "clip%",
        "nz+opt%",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("tiny")).collect();
    assert_eq!(rows.len(), 6, "{table}");

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(v["batch"], 3);
    assert_eq!(v["seq_len"], 12);
    assert_eq!(v["reps"], 2);
    assert!(!v["method"].as_array().unwrap().is_empty());
    let rows = v["rows"].as_array().unwrap();
    let ids: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["model"].as_str().unwrap().to_string(),
                r["trainable"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = ["tiny", "tiny-llama"]
        .iter()
        .flat_map(|m| {
            ["head", "head,last:1", "all"]
                .iter()
                .map(move |t| (m.to_string(), t.to_string()))
        })
        .collect();
    assert_eq!(ids, want);
    for r in rows {
        assert!(r["trainable_scalars"].as_u64().unwrap() > 0, "{r}");
        for kind in ["non_private", "dp"] {
            let k = &r[kind];
            assert_eq!(k["samples_s"].as_array().unwrap().len(), 2, "{r}");
            assert!(k["median"]["total"].as_f64().unwrap() > 0.0, "{r}");
            let mem = &k["memory"];
            let (peak, growth) = (
                mem["peak_mib"].as_f64().unwrap(),
                mem["growth_mib"].as_f64().unwrap(),
            );
            assert!(peak > 0.0 && growth >= 0.0 && growth <= peak, "{r}");
        }
        let ratio = r["time_ratio"].as_f64().unwrap();
        let want = r["dp"]["median"]["total"].as_f64().unwrap()
            / r["non_private"]["median"]["total"].as_f64().unwrap();
        assert!((ratio - want).abs() <= 1e-9 * want, "{r}");
        for share in ["dp_share_norms_clip", "dp_share_noise_optimizer"] {
            let s = r[share].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&s), "{share} {s}");
        }
        assert!(r["memory_peak_ratio"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn generate_on_a_tiny_decoder_reports_one_row_per_batch_size() {
    let tmp = tempfile::tempdir().unwrap();
    let json_path = tmp.path().join("generate.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dpselft"))
        .args([
            "bench",
            "generate",
            "--model",
            "tiny-llama",
            "--batch",
            "1,3",
        ])
        .args(["--prompt-len", "4", "--new-tokens", "5", "--reps", "2"])
        .args(["--json", json_path.to_str().unwrap()])
        .output()
        .expect("run dpselft");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let table = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("tiny")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(v["reps"], 2);
    let rows = v["rows"].as_array().unwrap();
    let batches: Vec<u64> = rows.iter().map(|r| r["batch"].as_u64().unwrap()).collect();
    assert_eq!(batches, [1, 3]);
    for r in rows {
        assert_eq!(r["new_tokens"], 5);
        assert_eq!(r["dpselft_samples_s"].as_array().unwrap().len(), 2);
        assert!(r["dpselft_tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["pytorch_s"].is_null(), "no peer without --peer");
    }

    // An encoder cannot generate: a usage error, not a panic.
    let out = Command::new(env!("CARGO_BIN_EXE_dpselft"))
        .args(["bench", "generate", "--model", "tiny", "--reps", "1"])
        .output()
        .expect("run dpselft");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no LM head"));
}
