//! Element-wise maps for other crates (the optimizer's fused update): one parallel pass, in f64.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use num_traits::Zero;

use super::{CHUNK, Real, data, fusable_on_cpu, map2, msg, owned};
use crate::error::Result;

/// out = f(a, b) element by element, computed in f64.
struct Zip2<F>(F);

impl<F: Fn(f64, f64) -> f64 + Sync> CustomOp2 for Zip2<F> {
    fn name(&self) -> &'static str {
        "dpselft-zip2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_dtype!(s1, T => {
            let (a, b) = (data::<T>(s1, l1)?, data::<T>(s2, l2)?);
            Ok(owned(map2(a, b, |a, b| T::narrow((self.0)(a.wide(), b.wide()))), l1))
        })
    }
}

/// out = f(a, b, c) element by element, computed in f64.
struct Zip3<F>(F);

impl<F: Fn(f64, f64, f64) -> f64 + Sync> candle_core::CustomOp3 for Zip3<F> {
    fn name(&self) -> &'static str {
        "dpselft-zip3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_dtype!(s1, T => {
            let (a, b, c) = (data::<T>(s1, l1)?, data::<T>(s2, l2)?, data::<T>(s3, l3)?);
            let mut out = vec![T::zero(); a.len()];
            out.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK).zip(c.par_chunks(CHUNK))))
                .for_each(|(o, (a, (b, c)))| {
                    for (o, (&a, (&b, &c))) in o.iter_mut().zip(a.iter().zip(b.iter().zip(c))) {
                        *o = T::narrow((self.0)(a.wide(), b.wide(), c.wide()));
                    }
                });
            Ok(owned(out, l1))
        })
    }
}

/// Checks that `ts` are CPU tensors of one float dtype (f32/f64) and one shape, and makes them
/// contiguous.
fn zip_operands(ts: &[&Tensor]) -> Result<Vec<Tensor>> {
    let first = ts[0];
    for t in ts {
        if !fusable_on_cpu(t) || t.dtype() != first.dtype() || t.dims() != first.dims() {
            return Err(crate::error::ModelError::Invalid(format!(
                "element-wise kernel: operands must be CPU f32/f64 tensors of one dtype and \
                 shape, got {:?} {:?} and {:?} {:?}",
                first.dtype(),
                first.dims(),
                t.dtype(),
                t.dims()
            )));
        }
    }
    Ok(ts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?)
}

/// f(a, b) element by element in one parallel pass (in f64, rounded to the operands' dtype):
/// for element-wise updates that candle would run as several single-threaded passes, each
/// allocating a tensor. Operands: CPU f32/f64 of one dtype and shape ([`fusable_on_cpu`]);
/// anything else is an error. No gradient flows through it.
pub fn zip2(a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64 + Sync) -> Result<Tensor> {
    let ops = zip_operands(&[a, b])?;
    Ok(ops[0].apply_op2_no_bwd(&ops[1], &Zip2(f))?)
}

/// [`zip2`] of three operands.
pub fn zip3(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    f: impl Fn(f64, f64, f64) -> f64 + Sync,
) -> Result<Tensor> {
    let ops = zip_operands(&[a, b, c])?;
    Ok(ops[0].apply_op3_no_bwd(&ops[1], &ops[2], &Zip3(f))?)
}
