//! Fixtures shared by the test suites of `dp`, `selft` and `cli` (a dev-dependency only):
//! a word-level tokenizer over twelve words, tiny random BERT and Llama models, and the toy
//! task "colours vs animals" as a [`Dataset`] or a JSONL file.
//!
//! Every fixture is deterministic, so a test that uses one sees the same data on every run.

use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device};
use dpselft_data::{Dataset, Example};
use dpselft_model::{BertConfig, LlamaConfig, Model, ModelConfig};

/// The vocabulary of the toy task: six colours (label 0), then six animals (label 1).
pub const WORDS: [&str; 12] = [
    "red", "green", "blue", "pink", "gold", "teal", "dog", "cat", "cow", "owl", "eel", "yak",
];

/// The toy task's label names, in label order.
pub const LABELS: [&str; 2] = ["colour", "animal"];

/// Specials of the classifier tests: `[PAD]` = 0, `[UNK]` = 1, so `WORDS` get ids 2..14.
pub const PAD_UNK: &[&str] = &["[PAD]", "[UNK]"];

/// Specials that add an end-of-sequence token: ids 0–2, `WORDS` get 3..15.
pub const PAD_UNK_EOS: &[&str] = &["[PAD]", "[UNK]", "[EOS]"];

/// The `tokenizer.json` of a whitespace-split word-level tokenizer: `specials` take ids
/// 0..k in order, then `WORDS`. `specials` must contain `[UNK]` (the unknown token).
pub fn word_tokenizer_json(specials: &[&str]) -> serde_json::Value {
    assert!(specials.contains(&"[UNK]"), "the specials need [UNK]");
    let vocab: serde_json::Map<String, serde_json::Value> = specials
        .iter()
        .chain(WORDS.iter())
        .enumerate()
        .map(|(id, w)| ((*w).to_string(), id.into()))
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
}

/// The tokenizer of [`word_tokenizer_json`], loaded.
pub fn word_tokenizer(specials: &[&str]) -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_str(&word_tokenizer_json(specials).to_string())
        .expect("a valid word-level tokenizer")
}

/// Writes [`word_tokenizer_json`] as `dir/tokenizer.json` (beside a saved model).
pub fn write_word_tokenizer(dir: &Path, specials: &[&str]) {
    std::fs::write(
        dir.join("tokenizer.json"),
        word_tokenizer_json(specials).to_string(),
    )
    .expect("write tokenizer.json");
}

/// A tiny BERT: d = 16, FFN 24, `layers` blocks, `vocab` ids (the rest as `BertConfig::tiny`).
pub fn tiny_bert_config(vocab: usize, layers: usize) -> ModelConfig {
    ModelConfig::Bert(BertConfig {
        vocab_size: vocab,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: layers,
        ..BertConfig::tiny()
    })
}

/// A tiny Llama: d = 16, FFN 24, `vocab` ids, embeddings tied or not (the rest as
/// `LlamaConfig::tiny`).
pub fn tiny_llama_config(vocab: usize, tied: bool) -> ModelConfig {
    ModelConfig::Llama(LlamaConfig {
        vocab_size: vocab,
        hidden_size: 16,
        intermediate_size: 24,
        ..LlamaConfig::tiny(tied)
    })
}

/// A random f32 model on the CPU (weights N(0, `scale`²) from `seed`) with the word-level
/// tokenizer of `specials` attached.
pub fn random_model(cfg: ModelConfig, scale: f64, seed: u64, specials: &[&str]) -> Model {
    let mut m = Model::random(cfg, scale, seed, DType::F32, &Device::Cpu).expect("random model");
    m.tokenizer = Some(word_tokenizer(specials));
    m
}

/// Saves a random model in the Hugging Face layout under `dir`, with its tokenizer.
pub fn save_random_model(dir: &Path, cfg: ModelConfig, scale: f64, seed: u64, specials: &[&str]) {
    let m = Model::random(cfg, scale, seed, DType::F32, &Device::Cpu).expect("random model");
    dpselft_model::save::save_hf(&m, dir).expect("save the model");
    write_word_tokenizer(dir, specials);
}

/// Example `i` of the toy task: label `i % 2`, `min_len`..`min_len + 3` words of that
/// label's half of `WORDS`; `seed` shifts the lengths and the words.
pub fn colour_animal(i: usize, seed: usize, min_len: usize) -> Example {
    let label = i % 2;
    let len = min_len + (i * 7 + seed) % 4;
    let words: Vec<&str> = (0..len)
        .map(|k| WORDS[label * 6 + (i * 5 + k * 3 + seed) % 6])
        .collect();
    Example {
        text: words.join(" "),
        label: Some(label),
        group: None,
    }
}

/// `n` examples of the toy task (see [`colour_animal`]).
pub fn colour_animal_dataset(n: usize, seed: usize, min_len: usize) -> Dataset {
    Dataset {
        examples: (0..n).map(|i| colour_animal(i, seed, min_len)).collect(),
        labels: LABELS.iter().map(|l| l.to_string()).collect(),
    }
}

/// Writes `n` examples of the toy task to `path` as JSONL (`{"text", "label"}` with the label
/// by name).
pub fn write_colour_animal_jsonl(path: &Path, n: usize, seed: usize, min_len: usize) {
    let lines: String = (0..n)
        .map(|i| {
            let ex = colour_animal(i, seed, min_len);
            let label = LABELS[ex.label.expect("labelled")];
            format!("{}\n", serde_json::json!({"text": ex.text, "label": label}))
        })
        .collect();
    std::fs::write(path, lines).expect("write the JSONL");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_ids_follow_the_specials() {
        let ids = |specials| {
            word_tokenizer(specials)
                .encode("red yak zebra", false)
                .unwrap()
                .get_ids()
                .to_vec()
        };
        assert_eq!(ids(PAD_UNK), vec![2, 13, 1]);
        assert_eq!(ids(PAD_UNK_EOS), vec![3, 14, 1]);
    }

    #[test]
    fn toy_examples_use_their_label_words() {
        let data = colour_animal_dataset(10, 3, 2);
        for (i, ex) in data.examples.iter().enumerate() {
            let label = ex.label.unwrap();
            assert_eq!(label, i % 2);
            let n = ex.text.split(' ').count();
            assert!((2..=5).contains(&n), "{n} words");
            for w in ex.text.split(' ') {
                let idx = WORDS.iter().position(|x| *x == w).unwrap();
                assert_eq!(idx / 6, label, "{w} in a {label} example");
            }
        }
    }
}
