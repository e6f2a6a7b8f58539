//! The BERT encoder (post-LayerNorm), written plainly: embeddings, blocks, pooling.
//!
//! Parameter names are Hugging Face's `BertModel` names without the `bert.` prefix.

use candle_core::{D, DType, Tensor};

use crate::config::BertConfig;
use crate::error::{ModelError, Result};
use crate::layers::{Ctx, embedding, layer_norm, linear};
use crate::loader::Weights;
use crate::ops::activation;
use crate::ops::attention::{attention_forward, padding_mask};
use crate::params::ParamStore;

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
    let mut names = embedding_param_names();
    for i in 0..cfg.num_hidden_layers {
        names.extend(block_param_names(i));
    }
    let mut store = ParamStore::default();
    for n in names {
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
