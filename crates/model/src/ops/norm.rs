//! LayerNorm and RMSNorm as composites of differentiable candle ops.

use candle_core::{CpuStorage, CudaStorage, CustomOp1, D, Layout, Shape, Tensor};

use crate::error::Result;
use crate::ops::{Precomputed, kernels};

/// LayerNorm over the last dimension: x̂ = (x − mean) / √(var + eps), y = x̂ γ + β.
/// x: (…, d), γ, β: (d) → y: (…, d). Returns (y, x̂) so that the DP engine can use x̂ for the
/// per-example gradient of γ (Σ_t ∂y ⊙ x̂).
pub fn layer_norm_forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let xhat = normalize(x, eps, true)?; // (…, d)
    let y = xhat.broadcast_mul(gamma)?.broadcast_add(beta)?;
    Ok((y, xhat))
}

/// RMSNorm over the last dimension: x̂ = x / √(mean(x²) + eps), y = x̂ γ.
/// x: (…, d), γ: (d) → (y, x̂).
pub fn rms_norm_forward(x: &Tensor, gamma: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let xhat = normalize(x, eps, false)?;
    let y = xhat.broadcast_mul(gamma)?;
    Ok((y, xhat))
}

/// The normalisation x̂ = (x − μ)·r (LayerNorm, `center`) or x·r (RMSNorm), r = 1/√(var + eps)
/// (var = mean((x − μ)²), resp. mean(x²)), over the last dimension, with the analytic backward
/// ∂x = r ⊙ (∂x̂ − mean(∂x̂) − x̂ · mean(∂x̂ ⊙ x̂)) (the mean(∂x̂) term only when centred).
pub fn normalize(x: &Tensor, eps: f64, center: bool) -> Result<Tensor> {
    if kernels::fusable_on_cpu(x) {
        // One pass per row forward and one backward (the composite below takes ~8).
        return Ok(x
            .contiguous()?
            .apply_op1(kernels::Normalize { eps, center })?);
    }
    let xhat = normalize_values(&x.detach(), eps, center)?;
    if !x.track_op() {
        return Ok(xhat);
    }
    Ok(x.apply_op1(Normalize {
        eps,
        center,
        xhat: Precomputed::new(xhat),
    })?)
}

/// x̂ and nothing else (no graph).
fn normalize_values(x: &Tensor, eps: f64, center: bool) -> Result<Tensor> {
    let xc = if center {
        x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?
    } else {
        x.clone()
    };
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?; // (…, 1)
    Ok(xc.broadcast_div(&(var + eps)?.sqrt()?)?.contiguous()?)
}

/// Returns the precomputed x̂ and back-propagates the normalisation's Jacobian into x.
struct Normalize {
    eps: f64,
    center: bool,
    xhat: Precomputed,
}

impl CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "dpselft-normalize"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.xhat.cpu()
    }

    fn cuda_fwd(&self, _s: &CudaStorage, _l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        self.xhat.cuda()
    }

    fn bwd(&self, x: &Tensor, xhat: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let x = x.detach();
        let xhat = &xhat.detach();
        let xc = if self.center {
            x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?
        } else {
            x
        };
        let r = (xc.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?; // (…, 1)
        let g = grad.detach();
        let proj = g.mul(xhat)?.mean_keepdim(D::Minus1)?; // mean(∂x̂ ⊙ x̂)
        let mut inner = g.sub(&xhat.broadcast_mul(&proj)?)?;
        if self.center {
            inner = inner.broadcast_sub(&g.mean_keepdim(D::Minus1)?)?;
        }
        Ok(Some(inner.broadcast_mul(&r)?))
    }
}

/// Whether candle's fused (backward-less) kernels may run on `x`: no autograd, and a dtype they
/// support (not f64).
pub(crate) fn fusable(x: &Tensor) -> bool {
    !x.track_op() && x.dtype() != candle_core::DType::F64
}

/// LayerNorm output only. When no input takes part in autograd (inference, frozen prefix) this
/// uses candle's fused kernel, which has no backward; otherwise the differentiable composite.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if fusable(x) && !gamma.track_op() && !beta.track_op() {
        return Ok(candle_nn::ops::layer_norm(
            &x.contiguous()?,
            gamma,
            beta,
            eps as f32,
        )?);
    }
    Ok(layer_norm_forward(x, gamma, beta, eps)?.0)
}

/// RMSNorm output only; fused kernel when nothing needs a gradient, composite otherwise.
pub fn rms_norm(x: &Tensor, gamma: &Tensor, eps: f64) -> Result<Tensor> {
    if fusable(x) && !gamma.track_op() {
        return Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            gamma,
            eps as f32,
        )?);
    }
    Ok(rms_norm_forward(x, gamma, eps)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check_grad, rand_f64};
    use candle_core::Device;

    #[test]
    fn layer_norm_gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = rand_f64(&[2, 3, 5], 1, &dev)?;
        let g = rand_f64(&[5], 2, &dev)?;
        let b = rand_f64(&[5], 3, &dev)?;
        check_grad(&[x, g, b], |v| {
            Ok(layer_norm_forward(&v[0], &v[1], &v[2], 1e-5)?.0)
        })
    }

    #[test]
    fn fused_inference_paths_agree_with_composites() -> Result<()> {
        let dev = Device::Cpu;
        let x = rand_f64(&[2, 3, 5], 6, &dev)?.to_dtype(candle_core::DType::F32)?;
        let g = rand_f64(&[5], 7, &dev)?.to_dtype(candle_core::DType::F32)?;
        let b = rand_f64(&[5], 8, &dev)?.to_dtype(candle_core::DType::F32)?;
        let d1 = layer_norm(&x, &g, &b, 1e-5)?
            .sub(&layer_norm_forward(&x, &g, &b, 1e-5)?.0)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        let d2 = rms_norm(&x, &g, 1e-5)?
            .sub(&rms_norm_forward(&x, &g, 1e-5)?.0)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(d1 < 1e-5 && d2 < 1e-5, "{d1} {d2}");
        Ok(())
    }

    #[test]
    fn rms_norm_gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = rand_f64(&[2, 3, 5], 4, &dev)?;
        let g = rand_f64(&[5], 5, &dev)?;
        check_grad(&[x, g], |v| Ok(rms_norm_forward(&v[0], &v[1], 1e-5)?.0))
    }
}
