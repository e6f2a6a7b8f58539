//! Parameterised layers looked up by name in a [`ParamStore`], recording for the DP engine
//! when a [`Recorder`] is active and the layer is trainable.

use candle_core::Tensor;

use crate::error::Result;
use crate::ops::linear::linear_forward;
use crate::ops::norm::{layer_norm_forward, rms_norm_forward};
use crate::params::ParamStore;
use crate::records::Recorder;

/// How a forward pass runs: plain autograd, or recording per-example records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx<'a> {
    /// When set, trainable linears and norms record (input, ∂output) under their weight names.
    pub recorder: Option<&'a Recorder>,
}

impl<'a> Ctx<'a> {
    /// Plain autograd.
    pub fn plain() -> Self {
        Self { recorder: None }
    }
    /// Recording into `r`.
    pub fn recording(r: &'a Recorder) -> Self {
        Self { recorder: Some(r) }
    }
}

/// y = x Wᵀ + b with W = `p[w]`, b = `p[b]`. x: (B, T, d_in) → (B, T, d_out).
pub fn linear(p: &ParamStore, ctx: Ctx, x: &Tensor, w: &str, b: Option<&str>) -> Result<Tensor> {
    linear_keyed(p, ctx, x, w, b, w)
}

/// [`linear`] whose record (if any) is stored under `key` (a tied weight used twice).
pub fn linear_keyed(
    p: &ParamStore,
    ctx: Ctx,
    x: &Tensor,
    w: &str,
    b: Option<&str>,
    key: &str,
) -> Result<Tensor> {
    let wt = p.get(w)?;
    let bt = match b {
        Some(n) => Some((n, p.get(n)?)),
        None => None,
    };
    let y = match ctx.recorder {
        Some(r) => r.linear_keyed(key, w, x, wt, bt)?,
        None => linear_forward(x, wt, bt.map(|(_, t)| t))?,
    };
    match p.lora_of(w) {
        // y + s · (x Aᵀ) Bᵀ, each factor a recorded linear of its own.
        Some((a, b)) => {
            let h = linear(p, ctx, x, &a, None)?; // (B, T, r)
            let z = linear(p, ctx, &h, &b, None)?; // (B, T, d_out)
            Ok(y.add(&(z * p.lora_scale)?)?)
        }
        None => Ok(y),
    }
}

/// LayerNorm with γ = `p[g]`, β = `p[b]`. x: (B, T, d) → (B, T, d).
pub fn layer_norm(
    p: &ParamStore,
    ctx: Ctx,
    x: &Tensor,
    g: &str,
    b: &str,
    eps: f64,
) -> Result<Tensor> {
    let gt = p.get(g)?;
    let bt = p.get(b)?;
    match ctx.recorder {
        Some(r) if gt.is_variable() || bt.is_variable() => {
            // x̂ from a unit-γ, zero-β norm, then the recorded affine.
            let ones = gt.ones_like()?;
            let zeros = bt.zeros_like()?;
            let (_, xhat) = layer_norm_forward(x, &ones, &zeros, eps)?;
            r.norm_affine(g, &xhat, gt, Some((b, bt)))
        }
        _ => crate::ops::norm::layer_norm(x, gt, bt, eps),
    }
}

/// RMSNorm with γ = `p[g]`. x: (B, T, d) → (B, T, d).
pub fn rms_norm(p: &ParamStore, ctx: Ctx, x: &Tensor, g: &str, eps: f64) -> Result<Tensor> {
    let gt = p.get(g)?;
    match ctx.recorder {
        Some(r) if gt.is_variable() => {
            let ones = gt.ones_like()?;
            let (_, xhat) = rms_norm_forward(x, &ones, eps)?;
            r.norm_affine(g, &xhat, gt, None)
        }
        _ => crate::ops::norm::rms_norm(x, gt, eps),
    }
}

/// Embedding lookup: rows of `p[w]` (V, d) at ids (B, T) → (B, T, d).
pub fn embedding(p: &ParamStore, ctx: Ctx, ids: &Tensor, w: &str) -> Result<Tensor> {
    let wt = p.get(w)?;
    if let Some(r) = ctx.recorder {
        return r.embedding(w, ids, wt);
    }
    let (b, t) = ids.dims2()?;
    let d = wt.dim(1)?;
    Ok(wt
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, t, d))?)
}
