//! Pinned results: a seeded toy `dpselft run` and a seeded utility-grid cell must give the
//! values recorded in `tests/golden/` — the model's weights, the synthetic texts, every selection
//! score, every ledger mechanism and the test metrics — so that refactors provably keep behaviour.
//! Wall times, paths and file formats are left out: only what is computed.
//!
//! What is discrete (texts, chosen specs, step counts, accuracies, σ from the calibration, which
//! runs in f64 on no BLAS) must match exactly. Values that pass through a matrix product are
//! compared to a relative 1e-5: the BLAS picks its kernel and blocking from the CPU it runs on
//! (AVX2 or AVX-512, cache sizes), so the last bits of a loss or a weight differ between
//! machines; a change of behaviour — another noise draw, another step, another layer — moves them
//! by orders of magnitude more. The weights enter as per-tensor checksums for that reason.
//!
//! After an *intended* change of results, rerun with `DPSELFT_BLESS=1` to rewrite the golden
//! files, and say why in the commit.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::toy_run::{grid_bench, setup};
use common::{dpselft, ok};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:x}", Sha256::digest(bytes))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The mechanisms of a ledger as numbers: (kind, q, σ, steps, sensitivity) per entry.
fn ledger_numbers(path: &Path) -> Value {
    let ledger = read_json(path);
    let entries = ledger["entries"].as_array().expect("ledger entries");
    entries
        .iter()
        .map(|e| {
            json!([
                e["kind"],
                e["sampling_rate"],
                e["noise_multiplier"],
                e["steps"],
                e["sensitivity"]
            ])
        })
        .collect()
}

/// Per-tensor checksums of a safetensors file: (elements, Σv, Σv², Σv·(i mod 13 + 1)); the last
/// one notices values that moved between positions.
fn weight_checksums(path: &Path) -> Value {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sums: BTreeMap<String, Value> = tensors
        .into_iter()
        .map(|(name, t)| {
            let v: Vec<f64> = t
                .flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F64))
                .and_then(|t| t.to_vec1())
                .unwrap_or_else(|e| panic!("{}: tensor {name}: {e}", path.display()));
            let sum: f64 = v.iter().sum();
            let sum_sq: f64 = v.iter().map(|x| x * x).sum();
            let weighted: f64 = v
                .iter()
                .enumerate()
                .map(|(i, x)| x * ((i % 13) as f64 + 1.0))
                .sum();
            (name, json!([v.len(), sum, sum_sq, weighted]))
        })
        .collect();
    json!(sums)
}

/// Where `actual` departs from `golden` beyond float rounding, as a JSON path and both values.
fn first_difference(actual: &Value, golden: &Value, at: &str) -> Option<String> {
    let differ = || Some(format!("{at}: computed {actual}, pinned {golden}"));
    match (actual, golden) {
        (Value::Number(a), Value::Number(g)) if a.is_f64() || g.is_f64() => {
            let (a, g) = (a.as_f64()?, g.as_f64()?);
            let tolerance = 1e-5 * a.abs().max(g.abs()).max(1.0);
            if (a - g).abs() > tolerance {
                return differ();
            }
            None
        }
        (Value::Array(a), Value::Array(g)) => {
            if a.len() != g.len() {
                return differ();
            }
            a.iter()
                .zip(g)
                .enumerate()
                .find_map(|(i, (a, g))| first_difference(a, g, &format!("{at}[{i}]")))
        }
        (Value::Object(a), Value::Object(g)) => {
            if a.keys().ne(g.keys()) {
                return differ();
            }
            a.iter()
                .find_map(|(k, v)| first_difference(v, &g[k], &format!("{at}.{k}")))
        }
        _ if actual != golden => differ(),
        _ => None,
    }
}

/// Compares `actual` with `tests/golden/<name>.json`, or writes it there under `DPSELFT_BLESS`.
fn check_golden(name: &str, actual: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("DPSELFT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with DPSELFT_BLESS=1)", path.display()));
    let golden: Value = serde_json::from_str(&golden).unwrap();
    if let Some(difference) = first_difference(actual, &golden, name) {
        panic!(
            "results differ from {}: {difference} (a refactor must keep them; bless only \
             intended changes)\ncomputed:\n{text}",
            path.display()
        );
    }
}

/// What a run folder computed: model bytes, synthetic data, selection scores, ledger, metrics.
fn run_fingerprint(out: &Path) -> Value {
    let selection = read_json(&out.join("selection.json"));
    let row = |c: &Value| {
        json!([
            c["spec"],
            c["lr"],
            c["params"],
            c["radius"],
            c["score"],
            c["accuracy"]
        ])
    };
    let candidates: Vec<Value> = selection["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(row)
        .collect();
    let lr_trials: Vec<Value> = selection["lr_trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(row)
        .collect();
    let metrics = read_json(&out.join("metrics.json"));
    json!({
        "model.safetensors": weight_checksums(&out.join("model/model.safetensors")),
        "2_Dense/model.safetensors": weight_checksums(&out.join("model/2_Dense/model.safetensors")),
        "synthetic/train.jsonl": sha256_of(&out.join("synthetic/train.jsonl")),
        "synthetic/val.jsonl": sha256_of(&out.join("synthetic/val.jsonl")),
        "selection": {
            "candidates": candidates,
            "lr_trials": lr_trials,
            "chosen": selection["chosen_spec"],
            "chosen_lr": selection["chosen_lr"],
        },
        "ledger": ledger_numbers(&out.join("ledger.json")),
        "metrics": {
            "test": metrics["test"],
            "epsilon_pld": metrics["epsilon_pld"],
            "epsilon_rdp": metrics["epsilon_rdp"],
            "train_sigma": metrics["train_sigma"],
            "train_steps": metrics["train_steps"],
            "train_sampling_rate": metrics["train_sampling_rate"],
            "trainable_params": metrics["trainable_params"],
            "chosen_spec": metrics["chosen_spec"],
        },
    })
}

#[test]
fn a_seeded_toy_run_computes_the_pinned_results() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = setup(tmp.path());
    let out = tmp.path().join("run");
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    let mut argv = vec!["run"];
    argv.extend(args.iter().map(String::as_str));
    ok(&dpselft(&argv));
    check_golden("toy_run", &run_fingerprint(&out));
}

#[test]
fn seeded_utility_grid_cells_compute_the_pinned_results() {
    use dpselft_bench::run_grid;
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let bench = grid_bench(tmp.path(), &["dp-selft", "last-k", "random-k"], &[2.0]);
    run_grid(&bench, &mut ()).unwrap();
    let lines = std::fs::read_to_string(bench.out.join("results.jsonl")).unwrap();
    let cells: Vec<Value> = lines
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("wall_s");
            v
        })
        .collect();
    check_golden("grid_cells", &Value::Array(cells));
}

#[test]
fn the_comparison_forgives_rounding_and_nothing_else() {
    let pinned = json!({"loss": 0.6732064239680767, "steps": 10, "spec": "head", "v": [1.0, 2.0]});
    let same_but_rounded =
        json!({"loss": 0.6732064172625541, "steps": 10, "spec": "head", "v": [1.0, 2.0]});
    assert_eq!(first_difference(&same_but_rounded, &pinned, "r"), None);
    for changed in [
        json!({"loss": 0.6733, "steps": 10, "spec": "head", "v": [1.0, 2.0]}),
        json!({"loss": 0.6732064239680767, "steps": 11, "spec": "head", "v": [1.0, 2.0]}),
        json!({"loss": 0.6732064239680767, "steps": 10, "spec": "head,block.0", "v": [1.0, 2.0]}),
        json!({"loss": 0.6732064239680767, "steps": 10, "spec": "head", "v": [1.0]}),
        json!({"loss": 0.6732064239680767, "steps": 10, "spec": "head", "w": [1.0, 2.0]}),
    ] {
        assert!(
            first_difference(&changed, &pinned, "r").is_some(),
            "{changed}"
        );
    }
}
