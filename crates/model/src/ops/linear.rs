//! Linear maps y = x Wᵀ + b.

use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Shape, Tensor};

use crate::error::Result;
use crate::ops::{Precomputed, kernels};

/// Forward of a linear map. x: (…, d_in), w: (d_out, d_in), b: (d_out) → y: (…, d_out).
///
/// Backward (candle autograd): ∂x = ∂y W, ∂W = Σ ∂yᵀ x, ∂b = Σ ∂y.
pub fn linear_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let d_in = *dims.last().unwrap_or(&0);
    let (d_out, _) = w.dims2()?;
    let n = x.elem_count() / d_in.max(1);
    let x2 = x.reshape((n, d_in))?; // (N, d_in)
    let y2 = match b {
        Some(b) if fusable_with_bias(&x2, w, b) => linear_with_bias(&x2, w, b)?,
        Some(b) => add_bias(&x2.matmul(&w.t()?)?, b)?,
        None => x2.matmul(&w.t()?)?, // (N, d_out)
    };
    let mut out = dims;
    *out.last_mut().unwrap_or(&mut 0) = d_out;
    Ok(y2.reshape(out)?)
}

/// y + b with b (d) added to every row of y (…, d). On the CPU one fused pass whose backward
/// sums ∂y over the rows only when b needs it (candle's broadcast would materialise a zero-filled
/// (…, d) gradient for the broadcast b and reduce it single-threaded).
pub fn add_bias(y: &Tensor, b: &Tensor) -> Result<Tensor> {
    if kernels::fusable_on_cpu(y) && b.device().is_cpu() && b.dtype() == y.dtype() && b.rank() == 1
    {
        return Ok(y
            .contiguous()?
            .apply_op2(&b.contiguous()?, kernels::AddBias)?);
    }
    Ok(y.broadcast_add(b)?)
}

/// Whether x Wᵀ + b takes part in autograd and may run as one CPU node ([`linear_with_bias`]).
fn fusable_with_bias(x: &Tensor, w: &Tensor, b: &Tensor) -> bool {
    let tracked = x.track_op() || w.track_op() || b.track_op();
    let cpu = |t: &Tensor| kernels::fusable_on_cpu(t) && t.dtype() == x.dtype();
    tracked && cpu(x) && cpu(w) && cpu(b) && b.rank() == 1
}

/// x Wᵀ + b as one graph node over (x, W, b). As a matmul node followed by a bias node, the graph
/// would also keep the product before the bias (one more (N, d_out) activation per layer) that
/// no backward needs. The values and gradients are those of the two-node form, bit for bit: the
/// same products in the same layouts, the same bias kernel.
fn linear_with_bias(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = x.detach().matmul(&w.detach().t()?)?;
    let y = y.apply_op2_no_bwd(&b.detach().contiguous()?, &kernels::AddBias)?;
    Ok(x.apply_op3(w, b, LinearWithBias(Precomputed::new(y)))?)
}

/// The node of [`linear_with_bias`]: returns the precomputed x Wᵀ + b.
struct LinearWithBias(Precomputed);

impl CustomOp3 for LinearWithBias {
    fn name(&self) -> &'static str {
        "dpselft-linear-bias"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        _s3: &CpuStorage,
        _l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.0.cpu()
    }

    fn cuda_fwd(
        &self,
        _s1: &CudaStorage,
        _l1: &Layout,
        _s2: &CudaStorage,
        _l2: &Layout,
        _s3: &CudaStorage,
        _l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.0.cuda()
    }

    /// ∂x = ∂y W, ∂W = (xᵀ ∂y)ᵀ, ∂b = Σ_rows ∂y, each only for an operand in the graph.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.detach();
        let gx = match x.track_op() {
            true => Some(grad.matmul(&w.detach())?),
            false => None,
        };
        let gw = match w.track_op() {
            true => Some(x.detach().t()?.matmul(&grad)?.t()?),
            false => None,
        };
        let gb = match b.track_op() {
            true => Some(kernels::bias_grad(&grad, b.elem_count())?),
            false => None,
        };
        Ok((gx, gw, gb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check_grad, rand_f64};
    use candle_core::{DType, Device, Var};

    #[test]
    fn linear_with_bias_gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = rand_f64(&[2, 3, 4], 51, &dev)?;
        let w = rand_f64(&[5, 4], 52, &dev)?;
        let b = rand_f64(&[5], 53, &dev)?;
        check_grad(&[x, w, b], |v| linear_forward(&v[0], &v[1], Some(&v[2])))
    }

    /// The fused node against the matmul node + bias node it replaces, in f32 (the dtype of
    /// training): the same values and gradients to the bit, with every operand in the graph and
    /// with the input only (a frozen layer under a trainable one).
    #[test]
    fn linear_with_bias_is_the_two_node_form_bit_for_bit() -> Result<()> {
        let dev = Device::Cpu;
        let f32_of = |t: Tensor| t.to_dtype(DType::F32);
        let x = Var::from_tensor(&f32_of(rand_f64(&[2, 7, 16], 54, &dev)?)?)?;
        let w = Var::from_tensor(&f32_of(rand_f64(&[9, 16], 55, &dev)?)?)?;
        let b = Var::from_tensor(&f32_of(rand_f64(&[9], 56, &dev)?)?)?;
        let r = f32_of(rand_f64(&[2, 7, 9], 57, &dev)?)?;
        for frozen_weights in [false, true] {
            let (wt, bt) = match frozen_weights {
                true => (w.as_tensor().detach(), b.as_tensor().detach()),
                false => (w.as_tensor().clone(), b.as_tensor().clone()),
            };
            let fused = linear_forward(x.as_tensor(), &wt, Some(&bt))?;
            let x2 = x.as_tensor().reshape((14, 16))?;
            let two = add_bias(&x2.matmul(&wt.t()?)?, &bt)?.reshape((2, 7, 9))?;
            assert_eq!(
                fused.flatten_all()?.to_vec1::<f32>()?,
                two.flatten_all()?.to_vec1::<f32>()?
            );
            let gf = fused.mul(&r)?.sum_all()?.backward()?;
            let gt = two.mul(&r)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                let (a, c) = (gf.get(v.as_tensor()), gt.get(v.as_tensor()));
                assert_eq!(a.is_some(), c.is_some(), "{name}: gradient presence");
                if let (Some(a), Some(c)) = (a, c) {
                    let (a, c) = (
                        a.flatten_all()?.to_vec1::<f32>()?,
                        c.flatten_all()?.to_vec1::<f32>()?,
                    );
                    assert_eq!(a, c, "{name}: gradient");
                }
            }
        }
        Ok(())
    }
}
