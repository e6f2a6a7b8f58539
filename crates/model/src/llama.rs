//! The Llama decoder family (pre-RMSNorm, grouped-query attention, SwiGLU, RoPE), written
//! plainly: its config, embeddings, blocks (with an optional KV cache), final norm, LM head, and
//! its [`Architecture`] implementation.
//!
//! Parameter names are Hugging Face's `LlamaForCausalLM` names.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::arch::{Architecture, to_json};
use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::heads::{Head, Pooling};
use crate::layers::{Ctx, embedding, linear, linear_keyed, rms_norm};
use crate::loader::Weights;
use crate::ops::activation::swiglu;
use crate::ops::attention::{attention_forward, causal_mask, padding_mask};
use crate::ops::rope::{rope_forward, rope_tables};
use crate::params::ParamStore;
use crate::tokenizer::SpecialTokens;
use crate::units::{BlockPart, UnitId};

fn default_max_pos() -> usize {
    512
}
fn default_rms_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_llama_model_type() -> String {
    "llama".into()
}

/// A Llama-family decoder config (`LlamaForCausalLM`), as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Always `["LlamaForCausalLM"]` when we write it.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `"llama"`.
    #[serde(default = "default_llama_model_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width d.
    pub hidden_size: usize,
    /// SwiGLU width.
    pub intermediate_size: usize,
    /// Number of decoder blocks L.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head width; defaults to hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Maximum number of positions.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Whether the LM head shares the token embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// BOS id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// EOS id.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Activation of the gated MLP (`silu`).
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    /// Classifier label names (`id2label`), when this is a classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
}

fn default_silu() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// A tiny Llama for tests and examples: vocabulary 23, 2 blocks of width 8 with grouped-query
    /// attention (4 query / 2 key-value heads), FFN 12, 32 positions; `tied` ties the LM head to
    /// the token embeddings.
    pub fn tiny(tied: bool) -> Self {
        LlamaConfig {
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
        }
    }

    /// Number of key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    /// Checks the sizes are consistent.
    pub fn validate(&self) -> Result<()> {
        let h = self.num_attention_heads;
        let kv = self.kv_heads();
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            return Err(ModelError::Invalid(format!(
                "Llama config: num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(ModelError::Invalid(format!(
                "Llama config: head_dim {} must be even for RoPE",
                self.head_dim()
            )));
        }
        if self.hidden_act != "silu" {
            return Err(ModelError::Invalid(format!(
                "Llama config: hidden_act `{}` unsupported (silu)",
                self.hidden_act
            )));
        }
        Ok(())
    }
}

/// Name of the token embedding matrix.
pub const EMBED: &str = "model.embed_tokens.weight";
/// Name of the final RMSNorm weight.
pub const FINAL_NORM: &str = "model.norm.weight";
/// Name of the untied LM head.
pub const LM_HEAD: &str = "lm_head.weight";
/// Record key of a tied LM head (its parameter is [`EMBED`]).
pub const TIED_HEAD_RECORD: &str = "lm_head.weight(tied:model.embed_tokens.weight)";

/// Names of the parameters of block `i`.
pub fn block_param_names(i: usize) -> Vec<String> {
    let p = format!("model.layers.{i}");
    [
        "input_layernorm.weight",
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "post_attention_layernorm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    ]
    .iter()
    .map(|s| format!("{p}.{s}"))
    .collect()
}

/// Expected shape of each Llama parameter.
pub(crate) fn shape_of(cfg: &LlamaConfig, name: &str) -> Vec<usize> {
    let d = cfg.hidden_size;
    let hd = cfg.head_dim();
    let f = cfg.intermediate_size;
    if name == EMBED || name == LM_HEAD {
        vec![cfg.vocab_size, d]
    } else if name.ends_with("q_proj.weight") {
        vec![cfg.num_attention_heads * hd, d]
    } else if name.ends_with("k_proj.weight") || name.ends_with("v_proj.weight") {
        vec![cfg.kv_heads() * hd, d]
    } else if name.ends_with("o_proj.weight") {
        vec![d, cfg.num_attention_heads * hd]
    } else if name.ends_with("gate_proj.weight") || name.ends_with("up_proj.weight") {
        vec![f, d]
    } else if name.ends_with("down_proj.weight") {
        vec![d, f]
    } else {
        vec![d]
    }
}

/// Takes the Llama parameters out of `w`, checking shapes. With tied embeddings there is no
/// `lm_head.weight` (an `lm_head.weight` equal to the embeddings is dropped).
pub fn params_from_weights(cfg: &LlamaConfig, w: &mut Weights) -> Result<ParamStore> {
    let arch = "Llama (LlamaForCausalLM)";
    let mut store = ParamStore::default();
    for n in cfg.base_param_names() {
        let t = w.take_shaped(&n, arch, &shape_of(cfg, &n))?;
        store.insert(n, t);
    }
    Ok(store)
}

/// Per-batch tensors shared by all blocks: the additive mask and the RoPE tables.
#[derive(Debug, Clone)]
pub struct BatchAux {
    /// Additive mask (B, 1, T, S): causal + key padding.
    pub mask: Tensor,
    /// RoPE cos (B, 1, T, D/2).
    pub cos: Tensor,
    /// RoPE sin (B, 1, T, D/2).
    pub sin: Tensor,
}

/// Positions from a 0/1 key mask: the number of real tokens before each one (so left padding
/// works). attn: (B, S) → the last T columns, (B, T) u32.
pub fn positions_from_mask(attn: &Tensor, t: usize) -> Result<Tensor> {
    let (b, s) = attn.dims2()?;
    let a = attn.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut out = Vec::with_capacity(b * t);
    for row in a {
        let mut seen = 0u32;
        let mut pos = Vec::with_capacity(s);
        for m in row {
            pos.push(seen);
            if m > 0.5 {
                seen += 1;
            }
        }
        out.extend_from_slice(&pos[s - t..]);
    }
    Ok(Tensor::from_vec(out, (b, t), attn.device())?)
}

/// Builds the mask and RoPE tables for T new queries whose keys are the S = past + T columns of
/// `attn` (B, S) 0/1.
pub fn batch_aux(cfg: &LlamaConfig, attn: &Tensor, t: usize, dtype: DType) -> Result<BatchAux> {
    let (_, s) = attn.dims2()?;
    let dev = attn.device();
    let mask = causal_mask(t, s - t, dtype, dev)?.broadcast_add(&padding_mask(attn, dtype)?)?;
    let pos = positions_from_mask(attn, t)?;
    let (cos, sin) = rope_tables(&pos, cfg.head_dim(), cfg.rope_theta, dtype, dev)?;
    Ok(BatchAux { mask, cos, sin })
}

/// Cached keys (after RoPE) and values of one block, (B, KV, capacity, D) each, of which the
/// first `len` positions are filled.
///
/// Written in place and grown by doubling: appending by concatenation reallocated both tensors
/// of every block at every generated token, and the allocator kept the outgrown ones (peak
/// resident size ~25 MB a row of a generation batch, against ~4 MB of cache). Not `Clone`: a
/// copy would share the storage that `append` writes into.
#[derive(Debug, Default)]
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

impl LayerCache {
    /// Appends keys and values (B, KV, T, D) and returns every cached one, (B, KV, len, D).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let need = self.len + k.dim(2)?;
        let capacity = match &self.k {
            Some(c) => c.dim(2)?,
            None => 0,
        };
        if need > capacity {
            let capacity = need.max(2 * capacity).max(64);
            self.k = Some(grown(self.k.as_ref(), k, self.len, capacity)?);
            self.v = Some(grown(self.v.as_ref(), v, self.len, capacity)?);
        }
        let (Some(ck), Some(cv)) = (&self.k, &self.v) else {
            return Err(ModelError::Invalid("KV cache: not allocated".into()));
        };
        ck.slice_set(&k.contiguous()?, 2, self.len)?;
        cv.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = need;
        Ok((ck.narrow(2, 0, need)?, cv.narrow(2, 0, need)?))
    }
}

/// A zeroed (B, KV, capacity, D) cache like `new`, holding the first `len` positions of `old`.
fn grown(old: Option<&Tensor>, new: &Tensor, len: usize, capacity: usize) -> Result<Tensor> {
    let (b, kv, _, d) = new.dims4()?;
    let cache = Tensor::zeros((b, kv, capacity, d), new.dtype(), new.device())?;
    if let Some(old) = old
        && len > 0
    {
        cache.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    }
    Ok(cache)
}

/// Token embeddings. ids: (B, T) → (B, T, d).
pub fn embeddings_forward(p: &ParamStore, ids: &Tensor, ctx: Ctx) -> Result<Tensor> {
    embedding(p, ctx, ids, EMBED)
}

/// One decoder block: x + attn(norm(x)), then + mlp(norm(·)). x: (B, T, d) → (B, T, d).
/// With `cache`, the new keys/values are appended to it and attention covers all of them.
pub fn block_forward(
    p: &ParamStore,
    cfg: &LlamaConfig,
    i: usize,
    x: &Tensor,
    aux: &BatchAux,
    cache: Option<&mut LayerCache>,
    ctx: Ctx,
) -> Result<Tensor> {
    let n = |s: &str| format!("model.layers.{i}.{s}");
    let (b, t, _) = x.dims3()?;
    let (h, kv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
    let xn = rms_norm(p, ctx, x, &n("input_layernorm.weight"), cfg.rms_norm_eps)?;
    let q = linear(p, ctx, &xn, &n("self_attn.q_proj.weight"), None)?;
    let k = linear(p, ctx, &xn, &n("self_attn.k_proj.weight"), None)?;
    let v = linear(p, ctx, &xn, &n("self_attn.v_proj.weight"), None)?;
    let q = q.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?; // (B, H, T, D)
    let k = k.reshape((b, t, kv, hd))?.transpose(1, 2)?.contiguous()?; // (B, KV, T, D)
    let v = v.reshape((b, t, kv, hd))?.transpose(1, 2)?.contiguous()?;
    let q = rope_forward(&q, &aux.cos, &aux.sin)?;
    let k = rope_forward(&k, &aux.cos, &aux.sin)?;
    let (k, v) = match cache {
        Some(c) => c.append(&k, &v)?,
        None => (k, v),
    };
    let a = attention_forward(&q, &k, &v, Some(&aux.mask))?; // (B, H, T, D)
    let a = a.transpose(1, 2)?.contiguous()?.reshape((b, t, h * hd))?;
    let o = linear(p, ctx, &a, &n("self_attn.o_proj.weight"), None)?;
    let x = x.add(&o)?;
    let xn = rms_norm(
        p,
        ctx,
        &x,
        &n("post_attention_layernorm.weight"),
        cfg.rms_norm_eps,
    )?;
    let g = linear(p, ctx, &xn, &n("mlp.gate_proj.weight"), None)?;
    let u = linear(p, ctx, &xn, &n("mlp.up_proj.weight"), None)?;
    let m = linear(p, ctx, &swiglu(&g, &u)?, &n("mlp.down_proj.weight"), None)?;
    Ok(x.add(&m)?)
}

/// Final RMSNorm. x: (B, T, d) → (B, T, d).
pub fn final_norm_forward(
    p: &ParamStore,
    cfg: &LlamaConfig,
    x: &Tensor,
    ctx: Ctx,
) -> Result<Tensor> {
    rms_norm(p, ctx, x, FINAL_NORM, cfg.rms_norm_eps)
}

/// LM logits: x Eᵀ (tied) or x W_headᵀ. x: (B, T, d) → (B, T, V).
pub fn lm_head_forward(p: &ParamStore, cfg: &LlamaConfig, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
    if cfg.tie_word_embeddings {
        // Recorded under its own key (the embedding lookup records under EMBED).
        linear_keyed(p, ctx, x, EMBED, None, TIED_HEAD_RECORD)
    } else {
        linear(p, ctx, x, LM_HEAD, None)
    }
}

impl Architecture for LlamaConfig {
    fn family(&self) -> &'static str {
        "Llama"
    }
    fn is_causal(&self) -> bool {
        true
    }
    fn adds_special_tokens(&self) -> bool {
        false
    }
    fn has_final_norm(&self) -> bool {
        true
    }
    fn has_lm_head(&self) -> bool {
        true
    }
    fn default_pooling(&self) -> Pooling {
        Pooling::LastToken
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
        LlamaConfig::validate(self)
    }
    fn id2label(&self) -> Option<&BTreeMap<String, String>> {
        self.id2label.as_ref()
    }
    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            bos: self.bos_token_id,
            eos: self.eos_token_id,
            pad: self.pad_token_id.or(self.eos_token_id),
        }
    }

    fn base_param_names(&self) -> Vec<String> {
        let mut names = vec![EMBED.to_string(), FINAL_NORM.to_string()];
        for i in 0..self.num_hidden_layers {
            names.extend(block_param_names(i));
        }
        names.extend(self.lm_head_param_names());
        names
    }
    fn shape_of(&self, name: &str) -> Vec<usize> {
        shape_of(self, name)
    }
    fn params_from_weights(&self, w: &mut Weights) -> Result<ParamStore> {
        params_from_weights(self, w)
    }
    fn classifier_param_names(&self) -> (&'static str, Option<&'static str>) {
        ("score.weight", None)
    }
    fn lm_head_param_names(&self) -> Vec<String> {
        if self.tie_word_embeddings {
            vec![]
        } else {
            vec![LM_HEAD.to_string()]
        }
    }

    fn embed(&self, p: &ParamStore, ids: &Tensor, ctx: Ctx) -> Result<Tensor> {
        embeddings_forward(p, ids, ctx)
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
        let t = h.dim(1)?;
        let aux = batch_aux(self, &batch.attn, t, h.dtype())?;
        for i in from..to {
            h = block_forward(p, self, i, &h, &aux, None, ctx)?;
        }
        Ok(h)
    }
    fn final_norm(&self, p: &ParamStore, h: &Tensor, ctx: Ctx) -> Result<Tensor> {
        final_norm_forward(p, self, h, ctx)
    }
    fn headless_output(&self, h: &Tensor, _batch: &Batch) -> Result<Tensor> {
        Ok(h.clone())
    }
    fn lm_head(&self, p: &ParamStore, h: &Tensor, ctx: Ctx) -> Result<Tensor> {
        lm_head_forward(p, self, h, ctx)
    }

    fn blocks_prefix(&self) -> &'static str {
        "model.layers."
    }
    fn unit_param_names(&self, id: UnitId) -> Vec<String> {
        match id {
            UnitId::Embeddings => vec![EMBED.to_string()],
            UnitId::Block(i) => block_param_names(i),
            UnitId::FinalNorm => vec![FINAL_NORM.to_string()],
            UnitId::Head => vec![],
        }
    }
    fn unit_of(&self, name: &str) -> Option<UnitId> {
        if name == EMBED {
            Some(UnitId::Embeddings)
        } else if let Some(i) = self.block_of(name) {
            Some(UnitId::Block(i))
        } else if name == FINAL_NORM {
            Some(UnitId::FinalNorm)
        } else if name == LM_HEAD || name.starts_with("score.") {
            Some(UnitId::Head)
        } else {
            None
        }
    }
    fn block_part_of(&self, name_in_block: &str) -> Option<BlockPart> {
        let n = name_in_block;
        if n == "input_layernorm.weight" || n == "post_attention_layernorm.weight" {
            Some(BlockPart::Norms)
        } else if n.starts_with("self_attn.") {
            Some(BlockPart::Attention)
        } else if n.starts_with("mlp.") {
            Some(BlockPart::Mlp)
        } else {
            None
        }
    }
    fn lora_module(&self, target: &str) -> Option<&'static str> {
        Some(match target {
            "q" => "self_attn.q_proj",
            "k" => "self_attn.k_proj",
            "v" => "self_attn.v_proj",
            "o" => "self_attn.o_proj",
            "gate" => "mlp.gate_proj",
            "up" => "mlp.up_proj",
            "down" => "mlp.down_proj",
            _ => return None,
        })
    }

    fn config_json(&self) -> Result<serde_json::Value> {
        to_json(self)
    }
    /// The causal LM, or the bare decoder under a classifier (whose head is saved as a
    /// sentence-transformers Dense module, as for BERT).
    fn hf_architecture(&self, head: &Head) -> &'static str {
        match head {
            Head::CausalLm => "LlamaForCausalLM",
            _ => "LlamaModel",
        }
    }
    /// PEFT names modules from the class it wraps: the bare `LlamaModel` under a classifier
    /// has no `model.` level.
    fn peft_module_name(&self, name: &str, head: &Head) -> String {
        match head {
            Head::CausalLm => name.to_string(),
            _ => name.strip_prefix("model.").unwrap_or(name).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::rand_f64;
    use candle_core::Device;

    /// Appending in pieces, across the capacity's doublings, holds what one concatenation holds.
    #[test]
    fn the_kv_cache_holds_what_concatenation_holds() -> Result<()> {
        let dev = Device::Cpu;
        let mut cache = LayerCache::default();
        let pieces: Vec<(Tensor, Tensor)> = [40usize, 1, 30, 1, 60]
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let k = rand_f64(&[2, 3, t, 4], i as u64, &dev)?;
                let v = rand_f64(&[2, 3, t, 4], 100 + i as u64, &dev)?;
                Ok((k, v))
            })
            .collect::<Result<_>>()?;
        for (i, (k, v)) in pieces.iter().enumerate() {
            let (all_k, all_v) = cache.append(k, v)?;
            let want_k = Tensor::cat(&pieces[..=i].iter().map(|p| &p.0).collect::<Vec<_>>(), 2)?;
            let want_v = Tensor::cat(&pieces[..=i].iter().map(|p| &p.1).collect::<Vec<_>>(), 2)?;
            assert_eq!(all_k.dims(), want_k.dims());
            for (got, want) in [(all_k, want_k), (all_v, want_v)] {
                let diff = (got - want)?.abs()?.sum_all()?.to_scalar::<f64>()?;
                assert_eq!(diff, 0.0, "after piece {i}");
            }
        }
        Ok(())
    }
}
