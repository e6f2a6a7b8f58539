//! Linear maps y = x Wᵀ + b.

use candle_core::Tensor;

use crate::error::Result;
use crate::ops::kernels;

/// Forward of a linear map. x: (…, d_in), w: (d_out, d_in), b: (d_out) → y: (…, d_out).
///
/// Backward (candle autograd): ∂x = ∂y W, ∂W = Σ ∂yᵀ x, ∂b = Σ ∂y.
pub fn linear_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let d_in = *dims.last().unwrap_or(&0);
    let (d_out, _) = w.dims2()?;
    let n = x.elem_count() / d_in.max(1);
    let x2 = x.reshape((n, d_in))?; // (N, d_in)
    let y2 = x2.matmul(&w.t()?)?; // (N, d_out)
    let y2 = match b {
        Some(b) => add_bias(&y2, b)?,
        None => y2,
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
