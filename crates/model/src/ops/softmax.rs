//! Softmax over the last dimension, composed of differentiable ops.

use candle_core::{CpuStorage, CudaStorage, CustomOp2, D, DType, Layout, Shape, Tensor};

use crate::error::Result;
use crate::ops::kernels;

/// softmax(x) along the last dimension, with an analytic backward
/// ∂x = p ⊙ (∂p − Σ ∂p ⊙ p) (a custom op over (x, p) that returns p).
///
/// The forward values come from candle's fused kernel (f32/bf16/f16) or from exp(x − max) /
/// Σ exp(x − max) (f64); when `x` takes no part in autograd no graph node is made.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let p = softmax_values(&x.detach())?;
    if !x.track_op() {
        return Ok(p);
    }
    Ok(x.apply_op2(&p, SoftmaxBackward)?)
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

/// Returns its second argument (the precomputed softmax) and back-propagates the softmax
/// Jacobian-vector product into the first.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "dpselft-softmax"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        crate::ops::copy_storage(s2, l2)
    }

    fn cuda_fwd(
        &self,
        _s1: &CudaStorage,
        _l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        crate::ops::copy_cuda_storage(s2, l2)
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _p: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let p = res.detach();
        if kernels::fusable_on_cpu(&p) {
            let dx = p
                .contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &kernels::SoftmaxGrad)?;
            return Ok((Some(dx), None));
        }
        let gp = grad.mul(&p)?; // ∂p ⊙ p
        let s = gp.sum_keepdim(D::Minus1)?; // Σ ∂p ⊙ p
        let dx = gp.sub(&p.broadcast_mul(&s)?)?; // p ⊙ ∂p − p Σ
        Ok((Some(dx), None))
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
