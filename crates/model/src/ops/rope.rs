//! Rotary position embeddings, non-interleaved ("rotate half", the Hugging Face layout).

use candle_core::{D, DType, Device, Tensor};

use crate::error::Result;

/// cos/sin tables for the given positions. positions: (B, T) u32 → cos, sin: (B, 1, T, D/2)
/// with angle pos · θ^(−2i/D).
pub fn rope_tables(
    positions: &Tensor,
    head_dim: usize,
    theta: f64,
    dtype: DType,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, 1, half), dev)?; // (1, 1, D/2)
    let (b, t) = positions.dims2()?;
    let pos = positions.to_dtype(DType::F32)?.reshape((b, t, 1))?; // (B, T, 1)
    let ang = pos.broadcast_mul(&inv)?; // (B, T, D/2)
    let cos = ang.cos()?.to_dtype(dtype)?.unsqueeze(1)?;
    let sin = ang.sin()?.to_dtype(dtype)?.unsqueeze(1)?;
    Ok((cos, sin))
}

/// Applies RoPE. x: (B, H, T, D), cos/sin: (B, 1, T, D/2) → (B, H, T, D):
/// [x₁ cos − x₂ sin, x₂ cos + x₁ sin] with x₁, x₂ the two halves of the head.
///
/// Backward (autograd of the composite): the inverse rotation of ∂y.
pub fn rope_forward(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let half = d / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let a = x1.broadcast_mul(cos)?.sub(&x2.broadcast_mul(sin)?)?;
    let b = x2.broadcast_mul(cos)?.add(&x1.broadcast_mul(sin)?)?;
    Ok(Tensor::cat(&[a, b], D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check_grad, rand_f64};

    #[test]
    fn rope_gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let pos = Tensor::new(&[[0u32, 1, 2], [3, 4, 5]], &dev)?;
        let (cos, sin) = rope_tables(&pos, 4, 10000.0, DType::F64, &dev)?;
        let x = rand_f64(&[2, 2, 3, 4], 31, &dev)?;
        check_grad(&[x], |v| rope_forward(&v[0], &cos, &sin))
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_zero() -> Result<()> {
        let dev = Device::Cpu;
        let pos = Tensor::new(&[[0u32, 7]], &dev)?;
        let (cos, sin) = rope_tables(&pos, 4, 10000.0, DType::F64, &dev)?;
        let x = rand_f64(&[1, 1, 2, 4], 32, &dev)?;
        let y = rope_forward(&x, &cos, &sin)?;
        let nx = x.sqr()?.sum(D::Minus1)?.flatten_all()?.to_vec1::<f64>()?;
        let ny = y.sqr()?.sum(D::Minus1)?.flatten_all()?.to_vec1::<f64>()?;
        for (a, b) in nx.iter().zip(&ny) {
            assert!((a - b).abs() < 1e-6);
        }
        let x0 = x.narrow(2, 0, 1)?.flatten_all()?.to_vec1::<f64>()?;
        let y0 = y.narrow(2, 0, 1)?.flatten_all()?.to_vec1::<f64>()?;
        for (a, b) in x0.iter().zip(&y0) {
            assert!((a - b).abs() < 1e-6);
        }
        Ok(())
    }
}
