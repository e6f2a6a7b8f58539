//! Linear maps y = x Wᵀ + b.

use candle_core::Tensor;

use crate::error::Result;

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
        Some(b) => y2.broadcast_add(b)?,
        None => y2,
    };
    let mut out = dims;
    *out.last_mut().unwrap_or(&mut 0) = d_out;
    Ok(y2.reshape(out)?)
}
