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

#![deny(missing_docs)]

pub mod batch;
pub mod bert;
pub mod config;
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

pub use batch::Batch;
pub use config::{BertConfig, LlamaConfig, ModelConfig};
pub use error::{ModelError, Result};
pub use heads::{Head, Pooling};
pub use layers::Ctx;
pub use model::Model;
pub use records::{Record, RecordKind, Recorder};
pub use trainable::{TrainableSpec, TrainableSummary};
pub use units::{Unit, UnitId};
