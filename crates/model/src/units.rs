//! Trainable units: `embeddings`, `block.0` … `block.L-1`, `final_norm`, `head`, each with its
//! parameters and parameter count.

use std::fmt;

use crate::config::ModelConfig;
use crate::heads::{Head, classifier_param_names};
use crate::model::Model;
use crate::{bert, llama};

/// Identifies a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnitId {
    /// Token (and position/type) embeddings, with BERT's embedding LayerNorm.
    Embeddings,
    /// Transformer block i.
    Block(usize),
    /// The final norm (Llama).
    FinalNorm,
    /// The task head (classifier, or an untied LM head; a tied LM head has no own parameters).
    Head,
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitId::Embeddings => write!(f, "embeddings"),
            UnitId::Block(i) => write!(f, "block.{i}"),
            UnitId::FinalNorm => write!(f, "final_norm"),
            UnitId::Head => write!(f, "head"),
        }
    }
}

/// A unit with its parameter names and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Which unit.
    pub id: UnitId,
    /// Its parameters (Hugging Face names).
    pub params: Vec<String>,
    /// Number of scalars.
    pub num_params: usize,
}

/// Parameter names of a unit of `m` (LoRA factors of a block's projections included).
pub fn unit_params(m: &Model, id: UnitId) -> Vec<String> {
    let mut names = match (&m.config, id) {
        (ModelConfig::Bert(_), UnitId::Embeddings) => bert::embedding_param_names(),
        (ModelConfig::Llama(_), UnitId::Embeddings) => vec![llama::EMBED.to_string()],
        (ModelConfig::Bert(_), UnitId::Block(i)) => bert::block_param_names(i),
        (ModelConfig::Llama(_), UnitId::Block(i)) => llama::block_param_names(i),
        (ModelConfig::Bert(_), UnitId::FinalNorm) => vec![],
        (ModelConfig::Llama(_), UnitId::FinalNorm) => vec![llama::FINAL_NORM.to_string()],
        (cfg, UnitId::Head) => match &m.head {
            Head::None => vec![],
            Head::CausalLm => match cfg {
                ModelConfig::Llama(c) if !c.tie_word_embeddings => vec![llama::LM_HEAD.to_string()],
                _ => vec![],
            },
            Head::Classifier { .. } => {
                let (w, b) = classifier_param_names(m.is_decoder());
                let mut v = vec![w.to_string()];
                if let Some(b) = b {
                    v.push(b.to_string());
                }
                v
            }
        },
    };
    if let UnitId::Block(i) = id {
        let prefix = match m.config {
            ModelConfig::Bert(_) => format!("encoder.layer.{i}."),
            ModelConfig::Llama(_) => format!("model.layers.{i}."),
        };
        names.extend(
            m.params
                .names()
                .into_iter()
                .filter(|n| n.starts_with(&prefix) && n.contains(".lora_")),
        );
    }
    names.retain(|n| m.params.contains(n));
    names
}

/// All units of `m`, bottom to top, with their parameter counts.
pub fn units(m: &Model) -> Vec<Unit> {
    let mut ids = vec![UnitId::Embeddings];
    ids.extend((0..m.num_blocks()).map(UnitId::Block));
    if m.is_decoder() {
        ids.push(UnitId::FinalNorm);
    }
    ids.push(UnitId::Head);
    ids.into_iter()
        .map(|id| {
            let params = unit_params(m, id);
            let num_params = m.params.count(&params);
            Unit {
                id,
                params,
                num_params,
            }
        })
        .collect()
}

/// The unit a parameter belongs to.
pub fn unit_of(m: &Model, name: &str) -> Option<UnitId> {
    let block = |prefix: &str| -> Option<usize> {
        name.strip_prefix(prefix)?.split('.').next()?.parse().ok()
    };
    match m.config {
        ModelConfig::Bert(_) => {
            if name.starts_with("embeddings.") {
                Some(UnitId::Embeddings)
            } else if let Some(i) = block("encoder.layer.") {
                Some(UnitId::Block(i))
            } else if name.starts_with("classifier.") {
                Some(UnitId::Head)
            } else {
                None
            }
        }
        ModelConfig::Llama(_) => {
            if name == llama::EMBED {
                Some(UnitId::Embeddings)
            } else if let Some(i) = block("model.layers.") {
                Some(UnitId::Block(i))
            } else if name == llama::FINAL_NORM {
                Some(UnitId::FinalNorm)
            } else if name == llama::LM_HEAD || name.starts_with("score.") {
                Some(UnitId::Head)
            } else {
                None
            }
        }
    }
}
