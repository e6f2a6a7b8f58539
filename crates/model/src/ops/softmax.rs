//! Softmax over the last dimension, composed of differentiable ops.

use candle_core::{CpuStorage, CudaStorage, CustomOp1, D, DType, Layout, Shape, Tensor};

use crate::error::Result;
use crate::ops::{Precomputed, kernels};

/// softmax(x) along the last dimension, with an analytic backward
/// ∂x = p ⊙ (∂p − Σ ∂p ⊙ p).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    scaled_softmax_last_dim(x, 1.0, None)
}

/// softmax(x·scale + mask) along the last dimension (`mask`: additive, broadcastable to x), as
/// one graph node over x: ∂x = scale · p ⊙ (∂p − Σ ∂p ⊙ p).
///
/// The forward values come from candle's fused kernel (f32/bf16/f16) or from exp(x − max) /
/// Σ exp(x − max) (f64); when `x` takes no part in autograd no graph node is made. Fusing the
/// scale and the mask into the node means the graph keeps x and p only, not the scaled and the
/// masked scores as well (attention's largest activations: B·H·T·S each).
pub fn scaled_softmax_last_dim(x: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let mut z = x.detach();
    if scale != 1.0 {
        z = (z * scale)?;
    }
    if let Some(m) = mask {
        z = z.broadcast_add(m)?;
    }
    let p = softmax_values(&z)?;
    drop(z);
    if !x.track_op() {
        return Ok(p);
    }
    Ok(x.apply_op1(SoftmaxBackward {
        scale,
        p: Precomputed::new(p),
    })?)
}

/// The softmax values, no graph.
fn softmax_values(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F64 {
        return Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?);
    }
    let m = x.max_keepdim(D::Minus1)?; // (…, 1)
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&s)?.contiguous()?)
}

/// Returns the precomputed softmax p of x·scale (+ a constant mask) and back-propagates the
/// softmax Jacobian-vector product into x.
struct SoftmaxBackward {
    scale: f64,
    p: Precomputed,
}

impl CustomOp1 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "dpselft-softmax"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.p.cpu()
    }

    fn cuda_fwd(&self, _s: &CudaStorage, _l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        self.p.cuda()
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let p = res.detach();
        let dz = if kernels::fusable_on_cpu(&p) {
            p.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &kernels::SoftmaxGrad)?
        } else {
            let gp = grad.mul(&p)?; // ∂p ⊙ p
            let s = gp.sum_keepdim(D::Minus1)?; // Σ ∂p ⊙ p
            gp.sub(&p.broadcast_mul(&s)?)? // p ⊙ ∂p − p Σ
        };
        Ok(Some(if self.scale == 1.0 {
            dz
        } else {
            (dz * self.scale)?
        }))
    }
}

/// log softmax along the last dimension: x − max − log Σ exp(x − max).
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let xs = x.broadcast_sub(&m)?;
    let lse = xs.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(xs.broadcast_sub(&lse)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check_grad, rand_f64};
    use candle_core::Device;

    #[test]
    fn softmax_gradients_match_finite_differences() -> Result<()> {
        let x = rand_f64(&[3, 4, 6], 7, &Device::Cpu)?;
        // Weight the outputs so that the loss is not the constant Σp = rows.
        let w = rand_f64(&[3, 4, 6], 8, &Device::Cpu)?;
        check_grad(&[x], |v| Ok(softmax_last_dim(&v[0])?.mul(&w)?))
    }

    #[test]
    fn scaled_masked_softmax_gradients_match_finite_differences() -> Result<()> {
        let x = rand_f64(&[2, 3, 5], 12, &Device::Cpu)?;
        let w = rand_f64(&[2, 3, 5], 13, &Device::Cpu)?;
        let mask = Tensor::new(
            &[[[0f64, 0., -1e9, 0., 0.]], [[0., 0., 0., 0., -1e9]]],
            &Device::Cpu,
        )?;
        check_grad(&[x], |v| {
            Ok(scaled_softmax_last_dim(&v[0], 0.37, Some(&mask))?.mul(&w)?)
        })
    }

    #[test]
    fn scaled_masked_softmax_is_the_composite() -> Result<()> {
        let x = rand_f64(&[2, 3, 5], 14, &Device::Cpu)?;
        let mask = Tensor::new(
            &[[[0f64, 0., -1e9, 0., 0.]], [[0., 0., 0., 0., -1e9]]],
            &Device::Cpu,
        )?;
        let fused = scaled_softmax_last_dim(&x, 0.37, Some(&mask))?;
        let composite = softmax_last_dim(&(x * 0.37)?.broadcast_add(&mask)?)?;
        let diff = (fused - composite)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-15, "{diff}");
        Ok(())
    }

    #[test]
    fn log_softmax_gradients_match_finite_differences() -> Result<()> {
        let x = rand_f64(&[3, 7], 9, &Device::Cpu)?;
        let w = rand_f64(&[3, 7], 10, &Device::Cpu)?;
        check_grad(&[x], |v| Ok(log_softmax_last_dim(&v[0])?.mul(&w)?))
    }

    #[test]
    fn softmax_rows_sum_to_one() -> Result<()> {
        let x = rand_f64(&[2, 5], 11, &Device::Cpu)?;
        let s = softmax_last_dim(&x)?.sum(1)?.to_vec1::<f64>()?;
        assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-12));
        Ok(())
    }
}
