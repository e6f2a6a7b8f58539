//! The BERT encoder family (post-LayerNorm), written plainly: its config, embeddings, blocks,
//! pooling, and its [`Architecture`] implementation.
//!
//! Parameter names are Hugging Face's `BertModel` names without the `bert.` prefix.

use std::collections::BTreeMap;

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::arch::{Architecture, to_json};
use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::heads::{Head, Pooling};
use crate::layers::{Ctx, embedding, layer_norm, linear};
use crate::loader::Weights;
use crate::ops::activation;
use crate::ops::attention::{attention_forward, padding_mask};
use crate::params::ParamStore;
use crate::tokenizer::SpecialTokens;
use crate::units::{BlockPart, UnitId};

fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_max_pos() -> usize {
    512
}
fn default_bert_model_type() -> String {
    "bert".into()
}

/// A BERT-family encoder config (`BertModel`), as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Always `["BertModel"]` when we write it.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `"bert"`.
    #[serde(default = "default_bert_model_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width d.
    pub hidden_size: usize,
    /// Number of encoder blocks L.
    pub num_hidden_layers: usize,
    /// Number of attention heads (head_dim = d / heads).
    pub num_attention_heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Activation: `gelu` (erf form) or `gelu_new`/`gelu_pytorch_tanh` (tanh form) or `relu`.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Maximum number of positions.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Dropout (ignored: DP training runs without dropout), kept for round-trips.
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    /// Attention dropout (ignored), kept for round-trips.
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    /// Classifier label names (`id2label`), when this is a classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
}

impl BertConfig {
    /// A tiny BERT for tests and examples: vocabulary 23, 2 blocks of width 8 with 2 heads,
    /// FFN 12, 16 positions, no dropout. Change fields with struct-update syntax.
    pub fn tiny() -> Self {
        BertConfig {
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
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the sizes are consistent.
    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(ModelError::Invalid(format!(
                "BERT config: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        match self.hidden_act.as_str() {
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu" => Ok(()),
            a => Err(ModelError::Invalid(format!(
                "BERT config: hidden_act `{a}` unsupported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
            ))),
        }
    }
}

/// Names of the embedding parameters.
pub fn embedding_param_names() -> Vec<String> {
    [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Names of the parameters of block `i`.
pub fn block_param_names(i: usize) -> Vec<String> {
    let p = format!("encoder.layer.{i}");
    [
        "attention.self.query.weight",
        "attention.self.query.bias",
        "attention.self.key.weight",
        "attention.self.key.bias",
        "attention.self.value.weight",
        "attention.self.value.bias",
        "attention.output.dense.weight",
        "attention.output.dense.bias",
        "attention.output.LayerNorm.weight",
        "attention.output.LayerNorm.bias",
        "intermediate.dense.weight",
        "intermediate.dense.bias",
        "output.dense.weight",
        "output.dense.bias",
        "output.LayerNorm.weight",
        "output.LayerNorm.bias",
    ]
    .iter()
    .map(|s| format!("{p}.{s}"))
    .collect()
}

/// Expected shape of each BERT parameter.
pub(crate) fn shape_of(cfg: &BertConfig, name: &str) -> Vec<usize> {
    let d = cfg.hidden_size;
    let f = cfg.intermediate_size;
    if name.ends_with("word_embeddings.weight") {
        vec![cfg.vocab_size, d]
    } else if name.ends_with("position_embeddings.weight") {
        vec![cfg.max_position_embeddings, d]
    } else if name.ends_with("token_type_embeddings.weight") {
        vec![cfg.type_vocab_size, d]
    } else if name.ends_with("intermediate.dense.weight") {
        vec![f, d]
    } else if name.ends_with("intermediate.dense.bias") {
        vec![f]
    } else if name.ends_with("output.dense.weight") && !name.contains("attention") {
        vec![d, f]
    } else if name.ends_with(".weight") && !name.contains("LayerNorm") {
        vec![d, d]
    } else {
        vec![d]
    }
}

/// Takes the BERT parameters out of `w` (accepting an optional `bert.` prefix), checking shapes.
pub fn params_from_weights(cfg: &BertConfig, w: &mut Weights) -> Result<ParamStore> {
    if w.contains("bert.embeddings.word_embeddings.weight") {
        w.strip_prefix("bert.");
    }
    let mut store = ParamStore::default();
    for n in cfg.base_param_names() {
        let t = w.take_shaped(&n, "BERT (BertModel)", &shape_of(cfg, &n))?;
        store.insert(n, t);
    }
    Ok(store)
}

/// Embeddings: word + position + token type (0), then LayerNorm. ids: (B, T) → (B, T, d).
pub fn embeddings_forward(
    p: &ParamStore,
    cfg: &BertConfig,
    ids: &Tensor,
    ctx: Ctx,
) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    if t > cfg.max_position_embeddings {
        return Err(ModelError::Invalid(format!(
            "sequence of {t} tokens exceeds max_position_embeddings {}",
            cfg.max_position_embeddings
        )));
    }
    let dev = ids.device();
    let words = embedding(p, ctx, ids, "embeddings.word_embeddings.weight")?;
    let pos_ids = Tensor::arange(0u32, t as u32, dev)?
        .unsqueeze(0)?
        .broadcast_as((b, t))?
        .contiguous()?;
    let pos = embedding(p, ctx, &pos_ids, "embeddings.position_embeddings.weight")?;
    let type_ids = Tensor::zeros((b, t), DType::U32, dev)?;
    let types = embedding(p, ctx, &type_ids, "embeddings.token_type_embeddings.weight")?;
    let x = words.add(&pos)?.add(&types)?;
    layer_norm(
        p,
        ctx,
        &x,
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
        cfg.layer_norm_eps,
    )
}

/// Splits heads: (B, T, H·D) → (B, H, T, D).
fn split_heads(x: &Tensor, h: usize) -> Result<Tensor> {
    let (b, t, hd) = x.dims3()?;
    Ok(x.reshape((b, t, h, hd / h))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// Merges heads: (B, H, T, D) → (B, T, H·D).
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, t, h * d))?)
}

/// One encoder block (post-LN): x + attn → LN → + FFN → LN.
/// x: (B, T, d), mask: additive (B, 1, 1, T) → (B, T, d).
pub fn block_forward(
    p: &ParamStore,
    cfg: &BertConfig,
    i: usize,
    x: &Tensor,
    mask: &Tensor,
    ctx: Ctx,
) -> Result<Tensor> {
    let n = |s: &str| format!("encoder.layer.{i}.{s}");
    let h = cfg.num_attention_heads;
    let q = linear(
        p,
        ctx,
        x,
        &n("attention.self.query.weight"),
        Some(&n("attention.self.query.bias")),
    )?;
    let k = linear(
        p,
        ctx,
        x,
        &n("attention.self.key.weight"),
        Some(&n("attention.self.key.bias")),
    )?;
    let v = linear(
        p,
        ctx,
        x,
        &n("attention.self.value.weight"),
        Some(&n("attention.self.value.bias")),
    )?;
    let a = attention_forward(
        &split_heads(&q, h)?,
        &split_heads(&k, h)?,
        &split_heads(&v, h)?,
        Some(mask),
    )?;
    let a = merge_heads(&a)?; // (B, T, d)
    let o = linear(
        p,
        ctx,
        &a,
        &n("attention.output.dense.weight"),
        Some(&n("attention.output.dense.bias")),
    )?;
    let x = layer_norm(
        p,
        ctx,
        &o.add(x)?,
        &n("attention.output.LayerNorm.weight"),
        &n("attention.output.LayerNorm.bias"),
        cfg.layer_norm_eps,
    )?;
    let f = linear(
        p,
        ctx,
        &x,
        &n("intermediate.dense.weight"),
        Some(&n("intermediate.dense.bias")),
    )?;
    let f = activation::by_name(&cfg.hidden_act, &f)?;
    let f = linear(
        p,
        ctx,
        &f,
        &n("output.dense.weight"),
        Some(&n("output.dense.bias")),
    )?;
    layer_norm(
        p,
        ctx,
        &f.add(&x)?,
        &n("output.LayerNorm.weight"),
        &n("output.LayerNorm.bias"),
        cfg.layer_norm_eps,
    )
}

/// The additive attention mask of a batch: attn (B, T) 0/1 → (B, 1, 1, T).
pub fn attention_mask(attn: &Tensor, dtype: DType) -> Result<Tensor> {
    padding_mask(attn, dtype)
}

/// Mean over the real tokens. hidden: (B, T, d), attn: (B, T) 0/1 → (B, d).
pub fn mean_pool(hidden: &Tensor, attn: &Tensor) -> Result<Tensor> {
    let m = attn.to_dtype(hidden.dtype())?.unsqueeze(2)?; // (B, T, 1)
    let s = hidden.broadcast_mul(&m)?.sum(1)?; // (B, d)
    let c = m.sum(1)?.clamp(1e-9, f64::MAX)?; // (B, 1)
    Ok(s.broadcast_div(&c)?)
}

/// L2 normalisation of rows. x: (B, d) → (B, d).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&n)?)
}

impl Architecture for BertConfig {
    fn family(&self) -> &'static str {
        "BERT"
    }
    fn is_causal(&self) -> bool {
        false
    }
    fn adds_special_tokens(&self) -> bool {
        true
    }
    fn has_final_norm(&self) -> bool {
        false
    }
    fn has_lm_head(&self) -> bool {
        false
    }
    fn default_pooling(&self) -> Pooling {
        Pooling::Mean
    }

    fn num_layers(&self) -> usize {
        self.num_hidden_layers
    }
    fn hidden_size(&self) -> usize {
        self.hidden_size
    }
    fn max_positions(&self) -> usize {
        self.max_position_embeddings
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn validate(&self) -> Result<()> {
        BertConfig::validate(self)
    }
    fn id2label(&self) -> Option<&BTreeMap<String, String>> {
        self.id2label.as_ref()
    }
    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            bos: None,
            eos: None,
            pad: Some(self.pad_token_id),
        }
    }

    fn base_param_names(&self) -> Vec<String> {
        let mut names = embedding_param_names();
        for i in 0..self.num_hidden_layers {
            names.extend(block_param_names(i));
        }
        names
    }
    fn shape_of(&self, name: &str) -> Vec<usize> {
        shape_of(self, name)
    }
    fn params_from_weights(&self, w: &mut Weights) -> Result<ParamStore> {
        params_from_weights(self, w)
    }
    fn classifier_param_names(&self) -> (&'static str, Option<&'static str>) {
        ("classifier.weight", Some("classifier.bias"))
    }

    fn embed(&self, p: &ParamStore, ids: &Tensor, ctx: Ctx) -> Result<Tensor> {
        embeddings_forward(p, self, ids, ctx)
    }
    fn run_blocks(
        &self,
        p: &ParamStore,
        h: &Tensor,
        batch: &Batch,
        from: usize,
        to: usize,
        ctx: Ctx,
    ) -> Result<Tensor> {
        let mut h = h.clone();
        let mask = attention_mask(&batch.attn, h.dtype())?;
        for i in from..to {
            h = block_forward(p, self, i, &h, &mask, ctx)?;
        }
        Ok(h)
    }
    fn final_norm(&self, _p: &ParamStore, h: &Tensor, _ctx: Ctx) -> Result<Tensor> {
        Ok(h.clone())
    }
    fn headless_output(&self, h: &Tensor, batch: &Batch) -> Result<Tensor> {
        mean_pool(h, &batch.attn)
    }

    fn blocks_prefix(&self) -> &'static str {
        "encoder.layer."
    }
    fn unit_param_names(&self, id: UnitId) -> Vec<String> {
        match id {
            UnitId::Embeddings => embedding_param_names(),
            UnitId::Block(i) => block_param_names(i),
            UnitId::FinalNorm | UnitId::Head => vec![],
        }
    }
    fn unit_of(&self, name: &str) -> Option<UnitId> {
        if name.starts_with("embeddings.") {
            Some(UnitId::Embeddings)
        } else if let Some(i) = self.block_of(name) {
            Some(UnitId::Block(i))
        } else if name.starts_with("classifier.") {
            Some(UnitId::Head)
        } else {
            None
        }
    }
    /// The two LayerNorms are the norms; the rest of `attention.` the attention; the
    /// intermediate and output dense layers the MLP.
    fn block_part_of(&self, name_in_block: &str) -> Option<BlockPart> {
        let n = name_in_block;
        if n.starts_with("attention.output.LayerNorm.") || n.starts_with("output.LayerNorm.") {
            Some(BlockPart::Norms)
        } else if n.starts_with("attention.") {
            Some(BlockPart::Attention)
        } else if n.starts_with("intermediate.") || n.starts_with("output.dense.") {
            Some(BlockPart::Mlp)
        } else {
            None
        }
    }
    fn lora_module(&self, target: &str) -> Option<&'static str> {
        Some(match target {
            "q" => "attention.self.query",
            "k" => "attention.self.key",
            "v" => "attention.self.value",
            "o" => "attention.output.dense",
            "up" => "intermediate.dense",
            "down" => "output.dense",
            _ => return None,
        })
    }

    fn config_json(&self) -> Result<serde_json::Value> {
        to_json(self)
    }
    /// Always the bare encoder: a classifier's head is saved as a sentence-transformers Dense
    /// module (`save::sentence_transformers`), because `BertForSequenceClassification` pools
    /// `[CLS]` through a tanh layer and would not give our logits.
    fn hf_architecture(&self, _head: &Head) -> &'static str {
        "BertModel"
    }
    fn hf_model_input_names(&self) -> &'static [&'static str] {
        &["input_ids", "token_type_ids", "attention_mask"]
    }
}
