//! Task heads: sequence classification (pooled / CLS / last token) and the causal-LM head.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};

use crate::batch::Batch;
use crate::error::{ModelError, Result};

/// How a classifier turns (B, T, d) hidden states into (B, d).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over real tokens (encoders; the sentence-transformers convention).
    Mean,
    /// The first token (`[CLS]`).
    Cls,
    /// The last real token (decoders).
    LastToken,
}

impl Pooling {
    /// The name written to `config.json` (`classifier_pooling`).
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::LastToken => "last",
        }
    }

    /// Parses a `classifier_pooling` name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "last" => Ok(Pooling::LastToken),
            other => Err(ModelError::Invalid(format!(
                "classifier_pooling `{other}`: expected mean, cls or last"
            ))),
        }
    }
}

/// The head on top of the final hidden states.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// No head: the model returns hidden states / sentence embeddings.
    None,
    /// Causal-LM logits over the vocabulary (tied or not, per the config).
    CausalLm,
    /// Sequence classification into `labels.len()` classes.
    Classifier {
        /// Label names, index = class id.
        labels: Vec<String>,
        /// Pooling of the hidden states.
        pooling: Pooling,
    },
}

/// A seeded N(0, std²) initialisation of a (C, d) head weight (bias is zero).
pub fn init_classifier(
    num_labels: usize,
    d: usize,
    std: f64,
    seed: u64,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    if num_labels == 0 {
        return Err(ModelError::Invalid(
            "a classifier needs at least one label".into(),
        ));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, std)
        .map_err(|e| ModelError::Invalid(format!("head init std {std}: {e}")))?;
    let w: Vec<f32> = (0..num_labels * d)
        .map(|_| normal.sample(&mut rng) as f32)
        .collect();
    Ok((
        Tensor::from_vec(w, (num_labels, d), dev)?,
        Tensor::zeros(num_labels, DType::F32, dev)?,
    ))
}

/// Pools hidden (B, T, d) into (B, d).
pub fn pool(hidden: &Tensor, batch: &Batch, pooling: Pooling) -> Result<Tensor> {
    match pooling {
        Pooling::Mean => crate::bert::mean_pool(hidden, &batch.attn),
        Pooling::Cls => {
            let first = if batch.left_padded {
                return Err(ModelError::Invalid(
                    "CLS pooling needs right padding".into(),
                ));
            } else {
                0
            };
            Ok(hidden.narrow(1, first, 1)?.squeeze(1)?)
        }
        Pooling::LastToken => {
            let idx: Vec<u32> = batch.last_positions().iter().map(|&p| p as u32).collect();
            let (b, _, d) = hidden.dims3()?;
            let idx = Tensor::from_vec(idx, (b, 1, 1), hidden.device())?.broadcast_as((b, 1, d))?;
            Ok(hidden.gather(&idx.contiguous()?, 1)?.squeeze(1)?)
        }
    }
}
