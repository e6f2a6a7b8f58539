//! Batched products op(aᵢ)·op(bᵢ) for every example i, examples in parallel: the attention's
//! per-head q·kᵀ and p·v (with a gradient), and the Gram matrices and cross terms of the DP
//! engine's ghost norms (without).
//!
//! candle's batched matmul runs the examples one after the other, each a multi-threaded gemm
//! whose threads meet at a barrier several times; for 128×128 outputs that synchronisation costs
//! more than the arithmetic. Here each example is one single-threaded gemm and the examples are
//! spread over the rayon pool, so the cores never wait for each other within a product. A
//! transposed operand is read through its strides, never copied.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::kernels::{Real, data, fusable_on_cpu};

/// (B, M, K) · (B, N, K)ᵀ → (B, M, N), i.e. `a.matmul(&b.t())` per example. No gradient flows
/// through it (the callers are norm computations on recorded, detached tensors).
pub fn batched_a_bt(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    product(
        a,
        b,
        Bmm {
            ta: false,
            tb: true,
        },
        false,
    )
}

/// op(a)·op(b) per example, differentiable: a (B, M, K) or, with `ta`, (B, K, M); b (B, K, N)
/// or, with `tb`, (B, N, K) → (B, M, N).
///
/// CPU f32/f64 operands go through the example-parallel kernel; any other device or dtype takes
/// candle's matmul. Errors if the batch or inner sizes differ.
pub fn batched_matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
    product(a, b, Bmm { ta, tb }, true)
}

fn product(a: &Tensor, b: &Tensor, op: Bmm, backprop: bool) -> Result<Tensor> {
    let (ba, a1, a2) = a.dims3()?;
    let (bb, b1, b2) = b.dims3()?;
    let ka = if op.ta { a1 } else { a2 };
    let kb = if op.tb { b2 } else { b1 };
    if ba != bb || ka != kb || a.dtype() != b.dtype() {
        return Err(crate::error::ModelError::Invalid(format!(
            "batched product: operands of one batch, inner size and dtype, got {:?} {:?}{} and \
             {:?} {:?}{}",
            a.dims(),
            a.dtype(),
            if op.ta { "ᵀ" } else { "" },
            b.dims(),
            b.dtype(),
            if op.tb { "ᵀ" } else { "" },
        )));
    }
    if !(fusable_on_cpu(a) && fusable_on_cpu(b)) {
        let a = if op.ta { a.t()? } else { a.clone() };
        let b = if op.tb { b.t()? } else { b.clone() };
        return Ok(a.matmul(&b)?);
    }
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    Ok(if backprop {
        a.apply_op2(&b, op)?
    } else {
        a.apply_op2_no_bwd(&b, &op)?
    })
}

/// op(a)·op(b) per example; `ta`/`tb`: the operand is stored transposed.
#[derive(Clone, Copy)]
struct Bmm {
    ta: bool,
    tb: bool,
}

impl CustomOp2 for Bmm {
    fn name(&self) -> &'static str {
        "dpselft-batched-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (&[batch, a1, a2], &[_, b1, b2]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!("batched product: needs two (B, rows, columns) operands");
        };
        let sizes = Sizes {
            batch,
            a: (a1, a2),
            b: (b1, b2),
            ta: self.ta,
            tb: self.tb,
        };
        let shape = Shape::from((batch, sizes.m(), sizes.n()));
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let out = products::<f32>(data(s1, l1)?, data(s2, l2)?, sizes);
                Ok((CpuStorage::F32(out), shape))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let out = products::<f64>(data(s1, l1)?, data(s2, l2)?, sizes);
                Ok((CpuStorage::F64(out), shape))
            }
            _ => candle_core::bail!("batched product: f32 or f64 operands of one dtype"),
        }
    }

    /// C = op(A)·op(B): ∂op(A) = ∂C·op(B)ᵀ and ∂op(B) = op(A)ᵀ·∂C, each written as one more
    /// batched product of the stored operands (a transposed operand's gradient is transposed).
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let err = |e: crate::error::ModelError| candle_core::Error::Msg(e.to_string());
        let Bmm { ta, tb } = *self;
        let grad_a = if ta {
            batched_matmul(b, grad, tb, true) // ∂A = op(B)·∂Cᵀ
        } else {
            batched_matmul(grad, b, false, !tb) // ∂A = ∂C·op(B)ᵀ
        };
        let grad_b = if tb {
            batched_matmul(grad, a, true, ta) // ∂B = ∂Cᵀ·op(A)
        } else {
            batched_matmul(a, grad, !ta, false) // ∂B = op(A)ᵀ·∂C
        };
        Ok((Some(grad_a.map_err(err)?), Some(grad_b.map_err(err)?)))
    }
}

/// The stored shapes of one example's operands and how to read them.
#[derive(Clone, Copy)]
struct Sizes {
    batch: usize,
    a: (usize, usize),
    b: (usize, usize),
    ta: bool,
    tb: bool,
}

impl Sizes {
    fn m(&self) -> usize {
        if self.ta { self.a.1 } else { self.a.0 }
    }
    fn k(&self) -> usize {
        if self.ta { self.a.0 } else { self.a.1 }
    }
    fn n(&self) -> usize {
        if self.tb { self.b.0 } else { self.b.1 }
    }
    /// (column stride, row stride) of op(X) for X stored row-major with `cols` columns.
    fn strides(transposed: bool, cols: usize) -> (isize, isize) {
        if transposed {
            (cols as isize, 1)
        } else {
            (1, cols as isize)
        }
    }
}

/// One single-threaded gemm per example, examples in parallel.
fn products<T: Real + 'static>(a: &[T], b: &[T], sizes: Sizes) -> Vec<T> {
    let (m, n, k) = (sizes.m(), sizes.n(), sizes.k());
    let mut out = vec![T::zero(); sizes.batch * m * n];
    if m * n * k == 0 {
        return out; // an empty sum: zeros
    }
    let (a_cs, a_rs) = Sizes::strides(sizes.ta, sizes.a.1);
    let (b_cs, b_rs) = Sizes::strides(sizes.tb, sizes.b.1);
    out.par_chunks_mut(m * n)
        .zip(a.par_chunks(m * k).zip(b.par_chunks(n * k)))
        .for_each(|(o, (ai, bi))| {
            // SAFETY: `o` is m×n row-major (row stride n, column stride 1). `ai` holds one
            // example's A as stored, row-major with a.1 columns, and op(A) (m×k) is read with the
            // strides `Sizes::strides` gives for it; likewise `bi` and op(B) (k×n). The slices
            // have exactly m·k, n·k and m·n elements (chunks of contiguous storage whose shapes
            // the layouts fixed), so every index gemm forms is in bounds; `o` is written only
            // (read_dst = false) and aliases neither input.
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
                    a_cs,
                    a_rs,
                    bi.as_ptr(),
                    b_cs,
                    b_rs,
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
    use crate::ops::gradcheck::{check_grad, rand_f64};
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

    /// Every transposition against candle's matmul, and its gradients against finite
    /// differences.
    #[test]
    fn every_transposition_matches_candle_and_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = rand_f64(if ta { &[3, 4, 2] } else { &[3, 2, 4] }, 5, &dev)?;
            let b = rand_f64(if tb { &[3, 5, 4] } else { &[3, 4, 5] }, 6, &dev)?;
            let op_a = if ta { a.t()? } else { a.clone() };
            let op_b = if tb { b.t()? } else { b.clone() };
            let diff = (batched_matmul(&a, &b, ta, tb)? - op_a.matmul(&op_b)?)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f64>()?;
            assert!(diff < 1e-14, "ta {ta} tb {tb}: {diff}");
            check_grad(&[a, b], |x| batched_matmul(&x[0], &x[1], ta, tb))?;
        }
        let a = rand_f64(&[3, 2, 4], 5, &dev)?;
        assert!(batched_matmul(&a, &a, false, false).is_err());
        Ok(())
    }
}
