//! The DP engine's per-example reductions over CPU f32/f64 tensors, examples in parallel.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use candle_core::WithDType;
use num_traits::Zero;

use super::{Real, data, fusable_on_cpu, msg};
use crate::error::Result;

/// (B, T, d) → (B, d): the sum over T of each example, examples in parallel.
struct SumTokens;

impl CustomOp1 for SumTokens {
    fn name(&self) -> &'static str {
        "dpselft-sum-tokens"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let &[b, t, d] = l.dims() else {
            return Err(msg("sum over tokens needs (B, T, d)"));
        };
        by_dtype!(s, T => {
            let x = data::<T>(s, l)?;
            let mut out = vec![T::zero(); b * d];
            out.par_chunks_mut(d.max(1))
                .zip(x.par_chunks((t * d).max(1)))
                .for_each(|(o, ex)| {
                    for row in ex.chunks(d.max(1)) {
                        o.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
                    }
                });
            Ok((T::to_cpu_storage_owned(out), Shape::from((b, d))))
        })
    }
}

/// (B, …) → (B): the sum of each example's elements, accumulated in f64, examples in parallel.
struct SumPerExample;

impl CustomOp1 for SumPerExample {
    fn name(&self) -> &'static str {
        "dpselft-sum-per-example"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let b = l.dims().first().copied().unwrap_or(1);
        let per = l.shape().elem_count() / b.max(1);
        by_dtype!(s, T => {
            let x = data::<T>(s, l)?;
            let out: Vec<T> = x
                .par_chunks(per.max(1))
                .map(|ex| T::narrow(ex.iter().map(|v| v.wide()).sum()))
                .collect();
            Ok((T::to_cpu_storage_owned(out), Shape::from(b)))
        })
    }
}

/// Σ over the token dimension: (B, T, d) → (B, d). No gradient (the DP engine's reductions).
pub fn sum_tokens(x: &Tensor) -> Result<Tensor> {
    if fusable_on_cpu(x) && x.rank() == 3 {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&SumTokens)?);
    }
    Ok(x.sum(1)?)
}

/// Σ over everything but the first dimension: (B, …) → (B). No gradient.
pub fn sum_per_example(x: &Tensor) -> Result<Tensor> {
    if fusable_on_cpu(x) && x.rank() >= 1 {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&SumPerExample)?);
    }
    Ok(x.flatten_from(1)?.sum(1)?)
}
