//! Trainable units: `embeddings`, `block.0` … `block.L-1`, `final_norm`, `head`, each with its
//! parameters and parameter count.

use std::fmt;

use crate::heads::Head;
use crate::model::Model;

/// Identifies a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnitId {
    /// Token (and position/type) embeddings, with BERT's embedding LayerNorm.
    Embeddings,
    /// Transformer block i.
    Block(usize),
    /// The final norm (families that have one, e.g. Llama).
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
    let arch = m.arch();
    let mut names = match id {
        UnitId::Head => match &m.head {
            Head::None => vec![],
            Head::CausalLm => arch.lm_head_param_names(),
            Head::Classifier { .. } => {
                let (w, b) = arch.classifier_param_names();
                let mut v = vec![w.to_string()];
                if let Some(b) = b {
                    v.push(b.to_string());
                }
                v
            }
        },
        id => arch.unit_param_names(id),
    };
    if let UnitId::Block(i) = id {
        let prefix = arch.block_prefix(i);
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
    if m.has_final_norm() {
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
    m.arch().unit_of(name)
}
