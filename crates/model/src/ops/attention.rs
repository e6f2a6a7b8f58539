//! Scaled dot-product attention with grouped-query heads and an additive mask.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::ops::batched::batched_matmul;
use crate::ops::softmax::scaled_softmax_last_dim;

/// The value added to masked attention scores (finite, so fully masked rows stay NaN-free).
pub const MASK_VALUE: f64 = -1e9;

/// Repeats each of the KV heads `n_rep` times. x: (B, KV, S, D) → (B, KV·n_rep, S, D).
pub fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, s, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kv, n_rep, s, d))?
        .reshape((b, kv * n_rep, s, d))?)
}

/// softmax(q kᵀ / √D + mask) v. q: (B, H, T, D); k, v: (B, KV, S, D) with H a multiple of KV;
/// mask: additive, broadcastable to (B, H, T, S) → (B, H, T, D).
pub fn attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let h = q.dim(1)?;
    let kv = k.dim(1)?;
    let n_rep = h / kv;
    let k = repeat_kv(k, n_rep)?;
    let v = repeat_kv(v, n_rep)?;
    let (b, _, t, d) = q.dims4()?;
    let s = k.dim(2)?;
    // Every (example, head) pair is one small product: (B·H, T, D)·(B·H, S, D)ᵀ, then
    // (B·H, T, S)·(B·H, S, D).
    let heads = |x: &Tensor, rows: usize, cols: usize| x.contiguous()?.reshape((b * h, rows, cols));
    let scores = batched_matmul(&heads(q, t, d)?, &heads(&k, s, d)?, false, true)?;
    let scores = scores.reshape((b, h, t, s))?; // (B, H, T, S)
    let p = scaled_softmax_last_dim(&scores, 1.0 / (d as f64).sqrt(), mask)?;
    let out = batched_matmul(&heads(&p, t, s)?, &heads(&v, s, d)?, false, false)?;
    Ok(out.reshape((b, h, t, d))?)
}

/// Additive padding mask from a 0/1 attention mask. attn: (B, S) u32/u8 (1 = real token) →
/// (B, 1, 1, S) with 0 where attended and [`MASK_VALUE`] elsewhere.
pub fn padding_mask(attn: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, s) = attn.dims2()?;
    let a = attn.to_dtype(DType::F32)?;
    let m = ((a - 1.0)? * (-MASK_VALUE))?; // 0 → MASK_VALUE, 1 → 0
    Ok(m.to_dtype(dtype)?.reshape((b, 1, 1, s))?)
}

/// Additive causal mask for T queries at positions offset..offset+T over S = offset+T keys:
/// (1, 1, T, S), MASK_VALUE where key > query.
pub fn causal_mask(t: usize, offset: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let s = offset + t;
    let v: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..s).map(move |j| {
                if j > i + offset {
                    MASK_VALUE as f32
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(v, (1, 1, t, s), dev)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check_grad, rand_f64};

    #[test]
    fn gqa_attention_gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let q = rand_f64(&[2, 4, 3, 2], 41, &dev)?;
        let k = rand_f64(&[2, 2, 3, 2], 42, &dev)?;
        let v = rand_f64(&[2, 2, 3, 2], 43, &dev)?;
        let attn = Tensor::new(&[[1u32, 1, 1], [1, 1, 0]], &dev)?;
        let mask = padding_mask(&attn, DType::F64)?.broadcast_add(&causal_mask(
            3,
            0,
            DType::F64,
            &dev,
        )?)?;
        check_grad(&[q, k, v], |x| {
            attention_forward(&x[0], &x[1], &x[2], Some(&mask))
        })
    }
}
