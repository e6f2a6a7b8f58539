//! `dpselft inspect`, `generate` and `fetch-assets` on the real assets (fetched into the
//! workspace's assets folder if absent).

mod common;

use common::{dpselft, json, ok};

#[test]
fn smollm2_predicts_paris() {
    let v = json(&dpselft(&[
        "inspect",
        "--model",
        "smollm2",
        "--text",
        "The capital of France is",
        "--json",
    ]));
    let tokens: Vec<u64> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(tokens, [504, 3575, 282, 4649, 314]);
    let top = &v["next_token_top10"];
    assert_eq!(top.as_array().unwrap().len(), 10);
    assert_eq!(
        top[0][0].as_u64(),
        Some(7042),
        "top-1 should be \" Paris\": {top}"
    );
    assert!(v["last_hidden_mean"].as_f64().unwrap().is_finite());
}

#[test]
fn minilm_embedding_is_unit_length() {
    let v = json(&dpselft(&[
        "inspect",
        "--model",
        "minilm",
        "--text",
        "A sentence to embed.",
        "--json",
    ]));
    let embedding: Vec<f64> = v["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(embedding.len(), 384);
    let norm = embedding.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    // [CLS] ... [SEP] with the uncased WordPiece vocabulary.
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens.first().unwrap().as_u64(), Some(101));
    assert_eq!(tokens.last().unwrap().as_u64(), Some(102));
}

#[test]
fn greedy_generation_is_readable_and_deterministic() {
    let args = [
        "generate",
        "--prompt",
        "The capital of France is",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
    ];
    let first = String::from_utf8(dpselft(&args).stdout).unwrap();
    let second = String::from_utf8(dpselft(&args).stdout).unwrap();
    assert!(
        first.starts_with("The capital of France is Paris"),
        "{first}"
    );
    assert_eq!(first, second);
}

#[test]
fn fetch_assets_twice_downloads_nothing_the_second_time() {
    // The assets are present after the tests above (or fetched now); a second call must only
    // report them.
    ok(&dpselft(&[
        "fetch-assets",
        "--only",
        "brown,gpt2-tokenizer",
    ]));
    let out = dpselft(&["fetch-assets", "--only", "brown,gpt2-tokenizer"]);
    ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("already present").count(), 2, "{text}");
    let out = dpselft(&["fetch-assets", "--list"]);
    ok(&out);
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.contains("brown") && list.contains("ready"), "{list}");
}

#[test]
fn unknown_asset_and_bad_model_path_exit_2() {
    for args in [
        &["fetch-assets", "--only", "nonesuch"][..],
        &["inspect", "--model", "/no/such/model", "--text", "x"][..],
    ] {
        let out = dpselft(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error:"), "{stderr}");
    }
}
