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

/// A part of a transformer block, the sub-block units a trainable set may name
/// (`block.3.attn`, `block.3.mlp`, `block.3.norms`): together the three partition the block's
/// parameters.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum BlockPart {
    /// The attention: its query, key, value and output projections.
    #[serde(rename = "attn")]
    Attention,
    /// The feed-forward network.
    #[serde(rename = "mlp")]
    Mlp,
    /// The block's norms.
    #[serde(rename = "norms")]
    Norms,
}

impl BlockPart {
    /// Every part, in a fixed order.
    pub const ALL: [BlockPart; 3] = [BlockPart::Attention, BlockPart::Mlp, BlockPart::Norms];

    /// The part's name in a spec.
    pub fn name(self) -> &'static str {
        match self {
            BlockPart::Attention => "attn",
            BlockPart::Mlp => "mlp",
            BlockPart::Norms => "norms",
        }
    }

    /// The part a spec names (`attn`, `mlp`, `norms`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
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

/// Parameter names of one part of block `i` of `m` (LoRA factors excluded: they are trained
/// through `lora`).
pub fn part_params(m: &Model, i: usize, part: BlockPart) -> Vec<String> {
    let arch = m.arch();
    let prefix = arch.block_prefix(i);
    arch.unit_param_names(UnitId::Block(i))
        .into_iter()
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|inner| arch.block_part_of(inner) == Some(part))
        })
        .filter(|n| m.params.contains(n))
        .collect()
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
