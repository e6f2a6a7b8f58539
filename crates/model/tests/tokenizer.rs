//! Tokenizers on the real assets.

mod common;

use dpselft_model::tokenizer::{
    decode, encode, load_gguf_tokenizer, load_tokenizer_json, write_gguf_tokenizer_json,
};

#[test]
fn smollm2_tokenizer_from_gguf_metadata() {
    let tok = load_gguf_tokenizer(&common::smollm2_gguf()).unwrap();
    let ids = encode(&tok, "The capital of France is", false).unwrap();
    assert_eq!(ids, vec![504, 3575, 282, 4649, 314]);
    // No BOS even when special tokens are requested.
    assert_eq!(encode(&tok, "The capital of France is", true).unwrap(), ids);
    // Digits are split one by one; special tokens are recognised.
    let d = encode(&tok, "2026", false).unwrap();
    assert_eq!(d.len(), 4);
    let s = encode(&tok, "<|im_start|>user", false).unwrap();
    assert_eq!(s[0], 1);
    assert_eq!(decode(&tok, &[7042], false).unwrap(), " Paris");
    let text = "Héllo wörld, 123 ✓";
    assert_eq!(
        decode(&tok, &encode(&tok, text, false).unwrap(), false).unwrap(),
        text
    );
}

#[test]
fn gguf_tokenizer_json_round_trips() {
    let dir = std::env::temp_dir().join(format!("dpselft-tok-{}", std::process::id()));
    let out = dir.join("tokenizer.json");
    write_gguf_tokenizer_json(&common::smollm2_gguf(), &out).unwrap();
    let tok = load_tokenizer_json(&out).unwrap();
    assert_eq!(
        encode(&tok, "The capital of France is", false).unwrap(),
        vec![504, 3575, 282, 4649, 314]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn minilm_tokenizer_has_no_fixed_padding() {
    let tok = load_tokenizer_json(&common::minilm_dir().join("tokenizer.json")).unwrap();
    let ids = encode(&tok, "Hello world", true).unwrap();
    // [CLS] hello world [SEP], not padded to 128.
    assert_eq!(ids, vec![101, 7592, 2088, 102]);
    let long = "word ".repeat(300);
    assert!(
        encode(&tok, &long, true).unwrap().len() > 300,
        "truncation must be off"
    );
}
