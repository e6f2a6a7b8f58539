//! Cross-entropy losses, per example (the DP engine clips per example).

use candle_core::{D, DType, Tensor};

use crate::error::Result;
use crate::ops::softmax::log_softmax_last_dim;

/// Per-row negative log-likelihood (fused custom op). logits: (N, C), targets: (N) u32 → (N).
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    crate::ops::cross_entropy::softmax_cross_entropy(logits, targets)
}

/// The same from differentiable candle ops (log-softmax + gather); the reference for tests.
pub fn cross_entropy_rows_composite(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logp = log_softmax_last_dim(logits)?; // (N, C)
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?; // (N)
    Ok(picked.neg()?)
}

/// Per-example mean next-token cross-entropy of a causal LM.
/// logits: (B, T, V) for positions 0..T; ids: (B, T) u32; loss_mask: (B, T) 0/1, whether the
/// token *at* position t is predicted (scored from position t−1). → (B) mean over predicted
/// positions (0 for an example with none).
pub fn lm_loss_per_example(logits: &Tensor, ids: &Tensor, loss_mask: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    if t < 2 {
        return Ok(Tensor::zeros(b, logits.dtype(), logits.device())?);
    }
    let pred = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?;
    let tgt = ids.narrow(1, 1, t - 1)?.reshape(b * (t - 1))?;
    let m = loss_mask.narrow(1, 1, t - 1)?.to_dtype(logits.dtype())?; // (B, T-1)
    let nll = cross_entropy_rows(&pred, &tgt)?.reshape((b, t - 1))?;
    let count = m.sum(D::Minus1)?.clamp(1.0, f64::MAX)?; // (B)
    Ok(nll.mul(&m)?.sum(D::Minus1)?.div(&count)?)
}

/// Per-example classification cross-entropy. logits: (B, C), labels: (B) u32 → (B).
pub fn classification_loss_per_example(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    cross_entropy_rows(logits, &labels.to_dtype(DType::U32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check_grad, rand_f64};
    use candle_core::Device;

    #[test]
    fn cross_entropy_gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = rand_f64(&[3, 5], 51, &dev)?;
        let y = Tensor::new(&[0u32, 4, 2], &dev)?;
        check_grad(&[x], |v| cross_entropy_rows(&v[0], &y))
    }

    #[test]
    fn lm_loss_masks_positions() -> Result<()> {
        let dev = Device::Cpu;
        let x = rand_f64(&[2, 4, 6], 52, &dev)?;
        let ids = Tensor::new(&[[1u32, 2, 3, 4], [5, 1, 0, 0]], &dev)?;
        let m = Tensor::new(&[[1u32, 1, 1, 1], [1, 1, 0, 0]], &dev)?;
        check_grad(std::slice::from_ref(&x), |v| {
            lm_loss_per_example(&v[0], &ids, &m)
        })?;
        // example 1: only position 1 predicted (token 1 from logits at 0)
        let l = lm_loss_per_example(&x, &ids, &m)?.to_vec1::<f64>()?;
        let row = cross_entropy_rows(&x.get(1)?.narrow(0, 0, 1)?, &Tensor::new(&[1u32], &dev)?)?
            .to_vec1::<f64>()?;
        assert!((l[1] - row[0]).abs() < 1e-12);
        Ok(())
    }
}
