//! aᵢ bᵢᵀ for every example i of a batch, examples in parallel: the Gram matrices and cross terms
//! of the DP engine's ghost norms (B × T×T products with a short T).
//!
//! candle's batched matmul runs the examples one after the other, each a multi-threaded gemm
//! whose threads meet at a barrier several times; for 128×128 outputs that synchronisation costs
//! more than the arithmetic. Here each example is one single-threaded gemm and the examples are
//! spread over the rayon pool, so the cores never wait for each other within a product.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::kernels::{Real, data, fusable_on_cpu};

/// (B, M, K) · (B, N, K)ᵀ → (B, M, N), i.e. `a.matmul(&b.t())` per example.
///
/// CPU f32/f64 operands go through the example-parallel kernel; any other device or dtype takes
/// candle's matmul. Errors if the batch or inner sizes differ. No gradient flows through it
/// (the callers are norm computations on recorded, detached tensors).
pub fn batched_a_bt(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ba, _, ka) = a.dims3()?;
    let (bb, _, kb) = b.dims3()?;
    if ba != bb || ka != kb || a.dtype() != b.dtype() {
        return Err(crate::error::ModelError::Invalid(format!(
            "batched a·bᵀ: operands (B, M, K) and (B, N, K) of one dtype, got {:?} {:?} and \
             {:?} {:?}",
            a.dims(),
            a.dtype(),
            b.dims(),
            b.dtype()
        )));
    }
    if !(fusable_on_cpu(a) && fusable_on_cpu(b)) {
        return Ok(a.matmul(&b.t()?)?);
    }
    Ok(a.contiguous()?
        .apply_op2_no_bwd(&b.contiguous()?, &BatchedABt)?)
}

struct BatchedABt;

impl CustomOp2 for BatchedABt {
    fn name(&self) -> &'static str {
        "dpselft-batched-a-bt"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (&[batch, m, k], &[_, n, _]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!("batched a·bᵀ: needs (B, M, K) and (B, N, K)");
        };
        let sizes = Sizes { batch, m, n, k };
        let shape = Shape::from((batch, m, n));
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let out = products::<f32>(data(s1, l1)?, data(s2, l2)?, sizes);
                Ok((CpuStorage::F32(out), shape))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let out = products::<f64>(data(s1, l1)?, data(s2, l2)?, sizes);
                Ok((CpuStorage::F64(out), shape))
            }
            _ => candle_core::bail!("batched a·bᵀ: f32 or f64 operands of one dtype"),
        }
    }
}

#[derive(Clone, Copy)]
struct Sizes {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
}

/// One single-threaded gemm per example, examples in parallel.
fn products<T: Real + 'static>(a: &[T], b: &[T], Sizes { batch, m, n, k }: Sizes) -> Vec<T> {
    let mut out = vec![T::zero(); batch * m * n];
    if m * n * k == 0 {
        return out; // an empty sum: zeros
    }
    out.par_chunks_mut(m * n)
        .zip(a.par_chunks(m * k).zip(b.par_chunks(n * k)))
        .for_each(|(o, (ai, bi))| {
            // SAFETY: `o` is m×n row-major (row stride n, column stride 1); `ai` is m×k row-major
            // and `bi` n×k row-major, read as the k×n matrix bᵢᵀ (row stride 1, column stride k).
            // The three slices have exactly those lengths (chunks of contiguous storage whose
            // shapes the layouts fixed), so every index gemm forms is in bounds; `o` is written
            // only (read_dst = false) and aliases neither input.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    o.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    ai.as_ptr(),
                    1,
                    k as isize,
                    bi.as_ptr(),
                    k as isize,
                    1,
                    T::zero(),
                    T::one(),
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::rand_f64;
    use candle_core::{DType, Device};

    #[test]
    fn matches_candles_batched_matmul() -> Result<()> {
        let a = rand_f64(&[5, 7, 3], 1, &Device::Cpu)?;
        let b = rand_f64(&[5, 4, 3], 2, &Device::Cpu)?;
        for (a, b) in [(a.clone(), b.clone()), (a.clone(), a.clone())] {
            let want = a.matmul(&b.t()?)?;
            let got = batched_a_bt(&a, &b)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f64>()?;
            assert!(diff < 1e-14, "{diff}");
        }
        // f32, and a non-contiguous operand (made contiguous first).
        let a32 = a.to_dtype(DType::F32)?;
        let bt = rand_f64(&[5, 3, 4], 3, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .transpose(1, 2)?;
        let diff = (batched_a_bt(&a32, &bt)? - a32.matmul(&bt.t()?)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        let empty = Tensor::zeros((5, 7, 0), DType::F64, &Device::Cpu)?;
        let zeros = batched_a_bt(&empty, &empty)?;
        assert_eq!(zeros.dims(), [5, 7, 7]);
        assert_eq!(zeros.abs()?.sum_all()?.to_scalar::<f64>()?, 0.0);
        assert!(batched_a_bt(&a, &rand_f64(&[4, 4, 3], 4, &Device::Cpu)?).is_err());
        assert!(batched_a_bt(&a, &rand_f64(&[5, 4, 2], 4, &Device::Cpu)?).is_err());
        Ok(())
    }
}
