//! Fused softmax cross-entropy over the last dimension, a custom op with an analytic backward:
//! the (N, V) log-probabilities are never materialised in the forward pass, and the backward
//! forms ∂logits = (softmax − onehot) · ∂nll in one pass.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::error::{ModelError, Result};

struct SoftmaxXent;

fn rows_nll<T: Copy + Into<f64>>(
    logits: &[T],
    targets: &[u32],
    v: usize,
) -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(targets.len());
    for (row, &t) in logits.chunks_exact(v).zip(targets) {
        let t = t as usize;
        if t >= v {
            return Err(format!("target id {t} outside the {v} classes"));
        }
        let m = row
            .iter()
            .map(|&x| x.into())
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|&x| (x.into() - m).exp()).sum();
        out.push(m + s.ln() - row[t].into());
    }
    Ok(out)
}

impl CustomOp2 for SoftmaxXent {
    fn name(&self) -> &'static str {
        "dpselft-softmax-xent"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let err = |m: String| candle_core::Error::Msg(format!("softmax cross-entropy: {m}"));
        let (n, v) = l1.shape().dims2()?;
        let (a, b) = l1
            .contiguous_offsets()
            .ok_or_else(|| err("logits must be contiguous".into()))?;
        let (c, d) = l2
            .contiguous_offsets()
            .ok_or_else(|| err("targets must be contiguous".into()))?;
        let CpuStorage::U32(t) = s2 else {
            return Err(err("targets must be u32".into()));
        };
        let t = &t[c..d];
        if t.len() != n {
            return Err(err(format!("{} targets for {n} rows", t.len())));
        }
        let out = match s1 {
            CpuStorage::F32(x) => {
                let r = rows_nll(&x[a..b], t, v).map_err(err)?;
                CpuStorage::F32(r.into_iter().map(|x| x as f32).collect())
            }
            CpuStorage::F64(x) => CpuStorage::F64(rows_nll(&x[a..b], t, v).map_err(err)?),
            _ => return Err(err("logits must be f32 or f64".into())),
        };
        Ok((out, Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // ∂logits = ∂nll ⊙ (softmax(logits) − onehot(target)).
        let x = logits.detach();
        let m = x.max_keepdim(1)?;
        let e = x.broadcast_sub(&m)?.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(1)?)?; // (N, V)
        let g = grad.detach().unsqueeze(1)?; // (N, 1)
        let pg = p.broadcast_mul(&g)?;
        let idx = targets.unsqueeze(1)?; // (N, 1)
        let gl = pg.scatter_add(&idx, &g.neg()?, 1)?;
        Ok((Some(gl), None))
    }
}

/// Per-row cross-entropy −log softmax(logits)[target]. logits: (N, V) f32/f64, targets: (N)
/// u32 → (N). Differentiable in the logits.
pub fn softmax_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, _) = logits.dims2()?;
    if targets.dims() != [n] {
        return Err(ModelError::Invalid(format!(
            "cross-entropy: targets of shape {:?} for {n} rows",
            targets.dims()
        )));
    }
    if !logits.device().is_cpu() {
        // The fused kernel is CPU-only: elsewhere, the differentiable composite.
        return crate::ops::loss::cross_entropy_rows_composite(logits, targets);
    }
    Ok(logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, SoftmaxXent)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check_grad, rand_f64};
    use crate::ops::loss::cross_entropy_rows_composite;
    use candle_core::Device;

    #[test]
    fn fused_cross_entropy_matches_composite_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = (rand_f64(&[4, 9], 61, &dev)? * 3.0)?;
        let y = Tensor::new(&[0u32, 8, 3, 3], &dev)?;
        let a = softmax_cross_entropy(&x, &y)?.to_vec1::<f64>()?;
        let b = cross_entropy_rows_composite(&x, &y)?.to_vec1::<f64>()?;
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-12);
        }
        check_grad(std::slice::from_ref(&x), |v| {
            softmax_cross_entropy(&v[0], &y)
        })
    }

    #[test]
    fn out_of_range_target_is_an_error() {
        let x = Tensor::zeros((1, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = Tensor::new(&[3u32], &Device::Cpu).unwrap();
        assert!(softmax_cross_entropy(&x, &y).is_err());
    }
}
