//! Transformer models for DP training: BERT and Llama families on candle, trainable units,
//! per-example records for the DP engine, Hugging Face and GGUF I/O.
//!
//! Entry points: [`Model::load`] (HF folder or GGUF), [`trainable::TrainableSpec::parse`] +
//! [`trainable::apply`], [`Model::forward_train`] with a [`layers::Ctx`] recording into a
//! [`records::Recorder`], [`Model::forward_prefix`] / [`Model::forward_from`] (prefix cache).
//!
//! One DP step's model side, as the DP engine drives it:
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use dpselft_model::ops::loss::classification_loss_per_example;
//! use dpselft_model::{Ctx, Model, Pooling, Recorder, TrainableSpec, trainable};
//!
//! # fn main() -> dpselft_model::Result<()> {
//! let mut m = Model::load(std::path::Path::new("assets/minilm"), &Device::Cpu)?;
//! m.set_classifier(vec!["ham".into(), "spam".into()], Pooling::Mean, 0)?;
//! let summary = trainable::apply(&mut m, &TrainableSpec::parse("head,last:2")?, 0)?;
//! let batch = m.encode_batch(&["buy now", "lunch at noon?"])?;
//! let rec = Recorder::new();
//! let logits = m.forward_train(&batch, Ctx::recording(&rec))?; // (B, C)
//! let labels = Tensor::new(&[1u32, 0], &Device::Cpu)?;
//! let losses = classification_loss_per_example(&logits, &labels)?; // (B)
//! losses.sum_all()?.backward()?;
//! for (key, r) in rec.take() {
//!     // r.input: (B, T, d_in), r.grad_output: (B, T, d_out) for parameter r.param
//!     let g0 = r.per_example_weight_grad(0)?;
//!     # let _ = (key, g0);
//! }
//! # let _ = summary;
//! # Ok(())
//! # }
//! ```
//!
//! # Model families
//!
//! Everything that differs between families sits behind the object-safe
//! [`arch::Architecture`] trait, implemented by each family's config struct in its own file
//! ([`bert::BertConfig`], [`llama::LlamaConfig`]). [`ModelConfig::arch`] is the one place that
//! maps a family to its implementation; [`Model`], [`units`], [`trainable`], [`save`] and the
//! DP engine, CLI and benchmarks ask the architecture precise questions
//! ([`Model::is_causal`], [`Model::adds_special_tokens`], [`Model::has_final_norm`],
//! [`Model::has_lm_head`], [`Model::default_pooling`]) and never which family a model is.
//!
//! Adding a family (say GPT-2 or Qwen2):
//!
//! 1. One new file `src/<family>.rs`: the config struct (serde, mirroring the Hugging Face
//!    `config.json`), the forward pieces (embeddings, blocks, final norm, LM head) written
//!    with [`layers`] so trainable layers record, and `impl Architecture` for the config.
//! 2. Registration: a [`ModelConfig`] variant, its arm in [`ModelConfig::arch`] and its
//!    detection (`model_type` / `architectures`) in [`ModelConfig::from_json_str`] (all in
//!    `config.rs`); `pub mod <family>;` and the config's re-export here. GGUF files need a
//!    mapping in [`loader::gguf`], which reads Llama files only today.
//!
//! What the boundary does not cover, honestly:
//!
//! - The linear convention. [`layers::linear`], [`records`] (per-example ∂W = gᵀ x, shaped
//!   (d_out, d_in)) and LoRA ([`trainable::apply`] reads (d_out, d_in) from the weight) assume
//!   Hugging Face `nn.Linear`: y = x Wᵀ + b with W stored (d_out, d_in). GPT-2's `Conv1D` stores
//!   W transposed, (d_in, d_out), y = x W + b: a GPT-2 family has to transpose those weights in
//!   `params_from_weights` and back on export (or the records and LoRA need a transposed
//!   variant), and its fused `c_attn` (q, k, v in one matrix) gives LoRA no separate q/k/v
//!   weights to name in `lora_module`.
//! - Name conventions outside the trait: [`trainable::is_bitfit_param`] and [`Model::random`]
//!   recognise norm weights by `LayerNorm` / `norm.weight` and biases by `.bias`; a family
//!   naming norms otherwise (GPT-2's `ln_1.weight`) needs them extended.
//! - KV-cached generation ([`generate::generate_ids`]) is Llama-only; other families get a
//!   clear error. Qwen2 (Llama plus q/k/v biases) would rather extend [`llama`] than add a file.

#![deny(missing_docs)]

pub mod arch;
pub mod batch;
pub mod bert;
pub mod config;
pub mod device;
pub mod error;
pub mod generate;
pub mod heads;
pub mod layers;
pub mod llama;
pub mod loader;
pub mod model;
pub mod ops;
pub mod params;
pub mod records;
pub mod save;
pub mod tokenizer;
pub mod trainable;
pub mod units;

pub use arch::Architecture;
pub use batch::Batch;
pub use config::{BertConfig, LlamaConfig, ModelConfig};
pub use device::DeviceSpec;
pub use error::{ModelError, Result};
pub use heads::{Head, Pooling};
pub use layers::Ctx;
pub use model::Model;
pub use records::{Record, RecordKind, Recorder};
pub use trainable::{TrainableSpec, TrainableSummary};
pub use units::{BlockPart, Unit, UnitId};
