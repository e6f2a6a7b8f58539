//! Shared helpers for the real-asset tests.
#![allow(dead_code)]

use std::path::PathBuf;

use dpselft_model::{BertConfig, LlamaConfig, ModelConfig};

/// The path `rel` under the assets folder (`$DPSELFT_ASSETS`, else `<workspace>/assets`); the
/// asset it belongs to (its first component) is fetched there first if absent, so these tests
/// never skip.
pub fn asset(rel: &str) -> PathBuf {
    let root = dpselft_assets::workspace_assets_root(env!("CARGO_MANIFEST_DIR"));
    let id = rel.split('/').next().unwrap();
    let spec = dpselft_assets::catalog::find(id).unwrap_or_else(|| panic!("unknown asset {id}"));
    dpselft_model::assets::ensure_asset(&root, spec)
        .unwrap_or_else(|e| panic!("asset {id} is needed and could not be fetched: {e}"));
    root.join(rel)
}

pub fn smollm2_gguf() -> PathBuf {
    asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn minilm_dir() -> PathBuf {
    asset("minilm")
}

/// A tiny BERT (2 blocks, d = 8) for gradient tests.
pub fn tiny_bert() -> ModelConfig {
    ModelConfig::Bert(BertConfig {
        architectures: vec!["BertModel".into()],
        model_type: "bert".into(),
        vocab_size: 23,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 12,
        hidden_act: "gelu".into(),
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        id2label: None,
    })
}

/// A tiny Llama (2 blocks, d = 8, GQA 4/2) for gradient tests.
pub fn tiny_llama(tied: bool) -> ModelConfig {
    ModelConfig::Llama(LlamaConfig {
        architectures: vec!["LlamaForCausalLM".into()],
        model_type: "llama".into(),
        vocab_size: 23,
        hidden_size: 8,
        intermediate_size: 12,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        max_position_embeddings: 32,
        tie_word_embeddings: tied,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        pad_token_id: Some(2),
        hidden_act: "silu".into(),
        id2label: None,
    })
}
