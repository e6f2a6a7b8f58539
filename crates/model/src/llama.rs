//! The Llama decoder (pre-RMSNorm, grouped-query attention, SwiGLU, RoPE), written plainly.
//!
//! Parameter names are Hugging Face's `LlamaForCausalLM` names.

use candle_core::{DType, Tensor};

use crate::config::LlamaConfig;
use crate::error::Result;
use crate::layers::{Ctx, embedding, linear, linear_keyed, rms_norm};
use crate::loader::Weights;
use crate::ops::activation::swiglu;
use crate::ops::attention::{attention_forward, causal_mask, padding_mask};
use crate::ops::rope::{rope_forward, rope_tables};
use crate::params::ParamStore;

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
    let mut names = vec![EMBED.to_string(), FINAL_NORM.to_string()];
    for i in 0..cfg.num_hidden_layers {
        names.extend(block_param_names(i));
    }
    if !cfg.tie_word_embeddings {
        names.push(LM_HEAD.to_string());
    }
    let arch = "Llama (LlamaForCausalLM)";
    let mut store = ParamStore::default();
    for n in names {
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

/// Cached keys and values of one block: (B, KV, S, D) each.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    /// Keys after RoPE.
    pub k: Option<Tensor>,
    /// Values.
    pub v: Option<Tensor>,
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
        Some(c) => {
            let k = match &c.k {
                Some(pk) => Tensor::cat(&[pk, &k], 2)?,
                None => k,
            };
            let v = match &c.v {
                Some(pv) => Tensor::cat(&[pv, &v], 2)?,
                None => v,
            };
            c.k = Some(k.clone());
            c.v = Some(v.clone());
            (k, v)
        }
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
