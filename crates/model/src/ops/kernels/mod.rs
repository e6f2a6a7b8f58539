//! Fused, multi-threaded CPU kernels for the element-wise and row-wise parts of a training step.
//!
//! candle runs each element-wise op as its own single-threaded pass, and its autograd adds a
//! zero-filled buffer and an addition for every gradient it accumulates; GELU's backward alone
//! is ~10 passes over the (B, T, 4d) activation. Here each op is one pass, split over the rayon
//! pool in fixed chunks (so results do not depend on the number of threads), with its analytic
//! backward as a second kernel. The callers ([`crate::ops`]) use these on CPU tensors of f32 or
//! f64 and keep candle's composites everywhere else (CUDA, half precision); the finite-difference
//! tests run both, and the composites are the reference the kernels are tested against.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, WithDType};
use num_traits::{Float, Zero};
use rayon::prelude::*;

/// Elements per parallel task: large enough that scheduling costs nothing, small enough that two
/// cores share a (B, T, d) activation evenly.
const CHUNK: usize = 1 << 14;

/// The float types the kernels run on.
pub(crate) trait Real: WithDType + Float + Send + Sync {
    /// erf: in f32 the vectorisable [`erf_f32`] (libm's scalar erff was 8% of a MiniLM step),
    /// in f64 candle's own (the finite-difference tests' precision).
    fn erf(self) -> Self;
    /// exp: in f32 the vectorisable [`exp_f32`], in f64 the standard library's.
    fn exp_fast(self) -> Self;
    /// The value as f64 (the accumulators' type).
    fn wide(self) -> f64 {
        WithDType::to_f64(self)
    }
    /// An f64 rounded to this type.
    fn narrow(v: f64) -> Self {
        WithDType::from_f64(v)
    }
}

impl Real for f32 {
    fn erf(self) -> Self {
        erf_f32(self)
    }
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
}

impl Real for f64 {
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
    fn exp_fast(self) -> Self {
        self.exp()
    }
}

/// erf(x) in f32 without branches, so that a loop over it vectorises: x·P(x²)/Q(x²) on x clamped
/// to [-4, 4] (beyond it erf rounds to ±1 in f32). The coefficients are a least-squares fit of
/// the relative error that we made (weighted iteratively, degree 6 over 4); the test checks the
/// absolute and relative error against f64's erf stay below 6e-7, a few f32 ulps.
pub(crate) fn erf_f32(x: f32) -> f32 {
    const P: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI, // the fit lands on 2/√π, erf's slope at 0
        0.199_849_59,
        0.050_549_13,
        0.003_691_370_8,
        0.000_141_045_52,
        -1.941_105_7e-6,
        1.967_264_4e-8,
    ];
    const Q: [f32; 5] = [
        1.0,
        0.510_444,
        0.114_954_09,
        0.014_337_238,
        0.000_951_809_17,
    ];
    let x = x.clamp(-4.0, 4.0);
    let t = x * x;
    let p = P.iter().rev().fold(0.0f32, |acc, &c| acc * t + c);
    let q = Q.iter().rev().fold(0.0f32, |acc, &c| acc * t + c);
    // The fit can overshoot 1 by an ulp near the clamp; erf never does.
    (x * p / q).clamp(-1.0, 1.0)
}

/// eˣ in f32 without branches (and without `mul_add`, a library call unless the build targets
/// FMA): x = k·ln 2 + r with |r| ≤ ln 2 / 2, eʳ by its Taylor polynomial
/// to degree 7 (truncation < 1e-9 relative), 2ᵏ put into the exponent bits. x is clamped to
/// [-87, 88] (where f32's normal range ends), so large negative inputs give ~1e-38, not 0.
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75; // ln 2 split so that k·LN2_HI is exact for |k| < 2⁹
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * std::f32::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut poly = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        poly = poly * r + c;
    }
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    poly * scale
}

/// Whether `x` can take the fused CPU kernels: on the CPU, in f32 or f64.
pub fn fusable_on_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

fn msg(s: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("fused kernel: {s}"))
}

/// The contiguous data of a CPU storage as `&[T]`.
pub(crate) fn data<'a, T: Real>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| msg("input must be contiguous"))?;
    Ok(&s.as_slice::<T>()?[a..b])
}

/// Runs `$body` with `$t` bound to the storage's float type.
macro_rules! by_dtype {
    ($s:expr, $t:ident => $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            _ => Err(msg("only f32 and f64")),
        }
    };
}

/// out[i] = f(a[i]) in parallel chunks.
fn map1<T: Real>(a: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .for_each(|(o, a)| o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a)));
    out
}

/// out[i] = f(a[i], b[i]) in parallel chunks.
fn map2<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            o.iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(o, (&a, &b))| *o = f(a, b))
        });
    out
}

/// Rows of length `n` per parallel task.
fn rows_per_task(n: usize) -> usize {
    (CHUNK / n.max(1)).max(1)
}

/// Calls `f(row_in, row_out)` for every row of length `n`, in parallel groups of rows.
fn for_rows<T: Real>(a: &[T], n: usize, f: impl Fn(&[T], &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    let step = rows_per_task(n) * n;
    out.par_chunks_mut(step)
        .zip(a.par_chunks(step))
        .for_each(|(o, a)| o.chunks_mut(n).zip(a.chunks(n)).for_each(|(o, a)| f(a, o)));
    out
}

/// [`for_rows`] over two inputs of the same shape.
fn for_rows2<T: Real>(
    a: &[T],
    b: &[T],
    n: usize,
    f: impl Fn(&[T], &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    let step = rows_per_task(n) * n;
    out.par_chunks_mut(step)
        .zip(a.par_chunks(step).zip(b.par_chunks(step)))
        .for_each(|(o, (a, b))| {
            o.chunks_mut(n)
                .zip(a.chunks(n).zip(b.chunks(n)))
                .for_each(|(o, (a, b))| f(a, b, o))
        });
    out
}

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

fn owned<T: Real>(v: Vec<T>, l: &Layout) -> (CpuStorage, Shape) {
    (T::to_cpu_storage_owned(v), l.shape().clone())
}

fn c<T: Real>(v: f64) -> T {
    T::narrow(v)
}

// ---------------------------------------------------------------------------------------------
// GELU (erf form)

/// GELU(x) = x Φ(x), written as candle's kernel writes it (in f64 bit for bit the same).
fn gelu<T: Real>(x: T) -> T {
    ((x * c(std::f64::consts::FRAC_1_SQRT_2)).erf() + T::one()) * c(0.5) * x
}

/// GELU'(x) = Φ(x) + x φ(x).
fn gelu_grad<T: Real>(x: T) -> T {
    let cdf = c::<T>(0.5) * (T::one() + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf());
    let pdf = (-(x * x) * c(0.5)).exp_fast()
        * c(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    cdf + x * pdf
}

/// GELU with the fused backward below.
pub(crate) struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "dpselft-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        by_dtype!(s, T => Ok(owned(map1(data::<T>(s, l)?, gelu), l)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &GeluErfGrad)?))
    }
}

/// (x, ∂y) → ∂y · GELU'(x).
struct GeluErfGrad;

impl CustomOp2 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "dpselft-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_dtype!(s1, T => {
            let out = map2(data::<T>(s1, l1)?, data::<T>(s2, l2)?, |x, g| g * gelu_grad(x));
            Ok(owned(out, l1))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation (LayerNorm's and RMSNorm's x̂)

/// One row's centre μ (0 unless `center`) and r = 1/√(var + eps), accumulated in f64.
fn row_stats<T: Real>(x: &[T], eps: f64, center: bool) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mu = if center {
        x.iter().map(|v| v.wide()).sum::<f64>() / n
    } else {
        0.0
    };
    let var = x
        .iter()
        .map(|v| {
            let d = v.wide() - mu;
            d * d
        })
        .sum::<f64>()
        / n;
    (mu, 1.0 / (var + eps).sqrt())
}

/// x̂ = (x − μ)·r over the last dimension, with the fused backward below.
pub(crate) struct Normalize {
    pub eps: f64,
    pub center: bool,
}

impl CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "dpselft-normalize-fused"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (eps, center) = (self.eps, self.center);
        by_dtype!(s, T => {
            let out = for_rows(data::<T>(s, l)?, last_dim(l), |x, o| {
                let (mu, r) = row_stats(x, eps, center);
                o.iter_mut().zip(x).for_each(|(o, &v)| *o = T::narrow((v.wide() - mu) * r));
            });
            Ok(owned(out, l))
        })
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = NormalizeGrad {
            eps: self.eps,
            center: self.center,
        };
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &op)?))
    }
}

/// (x, ∂x̂) → ∂x = r (∂x̂ − mean(∂x̂) − x̂ mean(∂x̂ ⊙ x̂)) per row (no mean(∂x̂) term without
/// centring); μ, r and x̂ are recomputed from x in the same pass.
struct NormalizeGrad {
    eps: f64,
    center: bool,
}

impl CustomOp2 for NormalizeGrad {
    fn name(&self) -> &'static str {
        "dpselft-normalize-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (eps, center) = (self.eps, self.center);
        by_dtype!(s1, T => {
            let n = last_dim(l1);
            let out = for_rows2(data::<T>(s1, l1)?, data::<T>(s2, l2)?, n, |x, g, o| {
                let (mu, r) = row_stats(x, eps, center);
                let (mut g_mean, mut gx_mean) = (0.0, 0.0);
                for (&xv, &gv) in x.iter().zip(g) {
                    let (xh, gv) = ((xv.wide() - mu) * r, gv.wide());
                    g_mean += gv;
                    gx_mean += gv * xh;
                }
                let nf = n.max(1) as f64;
                let g_mean = if center { g_mean / nf } else { 0.0 };
                let gx_mean = gx_mean / nf;
                for ((o, &xv), &gv) in o.iter_mut().zip(x).zip(g) {
                    let xh = (xv.wide() - mu) * r;
                    *o = T::narrow(r * (gv.wide() - g_mean - xh * gx_mean));
                }
            });
            Ok(owned(out, l1))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax's backward

/// (p, ∂p) → ∂x = p ⊙ (∂p − Σ ∂p ⊙ p) per row of the last dimension.
pub(crate) struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "dpselft-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_dtype!(s1, T => {
            let out = for_rows2(data::<T>(s1, l1)?, data::<T>(s2, l2)?, last_dim(l1), |p, g, o| {
                let dot = p.iter().zip(g).fold(T::zero(), |s, (&p, &g)| s + p * g);
                for ((o, &p), &g) in o.iter_mut().zip(p).zip(g) {
                    *o = p * (g - dot);
                }
            });
            Ok(owned(out, l1))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Bias addition

/// y + b over the rows of y (the last dimension is b's), with ∂b = Σ_rows ∂y computed only when
/// b takes part in autograd.
pub(crate) struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "dpselft-add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        by_dtype!(s1, T => {
            let b = data::<T>(s2, l2)?;
            if b.len() != last_dim(l1) {
                return Err(msg("bias length differs from the last dimension"));
            }
            let out = for_rows(data::<T>(s1, l1)?, b.len(), |y, o| {
                for ((o, &y), &b) in o.iter_mut().zip(y).zip(b) {
                    *o = y + b;
                }
            });
            Ok(owned(out, l1))
        })
    }

    fn bwd(
        &self,
        y: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let gy = y.track_op().then(|| grad.clone());
        let gb = match b.track_op() {
            true => Some(bias_grad(grad, b.elem_count())?),
            false => None,
        };
        Ok((gy, gb))
    }
}

/// ∂b = Σ_rows ∂y for a bias of length `n` added to every row of y (∂y: (…, n)).
pub(crate) fn bias_grad(grad: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    grad.contiguous()?
        .reshape(((), n))?
        .apply_op1_no_bwd(&SumRows)
}

// ---------------------------------------------------------------------------------------------
// Reductions

/// (R, n) → (n): the column sums, over fixed groups of rows in parallel, then the groups in
/// order (the same result for any number of threads).
struct SumRows;

impl CustomOp1 for SumRows {
    fn name(&self) -> &'static str {
        "dpselft-sum-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = last_dim(l);
        by_dtype!(s, T => {
            let x = data::<T>(s, l)?;
            let partials: Vec<Vec<T>> = x
                .par_chunks(rows_per_task(n) * n)
                .map(|rows| {
                    let mut acc = vec![T::zero(); n];
                    for row in rows.chunks(n) {
                        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
                    }
                    acc
                })
                .collect();
            let mut out = vec![T::zero(); n];
            for p in partials {
                out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
            }
            Ok((T::to_cpu_storage_owned(out), Shape::from(n)))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels for the DP crate: per-example reductions and element-wise maps

mod per_example;
mod zip;

pub use per_example::{sum_per_example, sum_tokens};
pub use zip::{zip2, zip3};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use crate::ops::gradcheck::rand_f64;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        a.sub(b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_dtype(DType::F64))
            .and_then(|d| d.to_scalar::<f64>())
            .unwrap_or(f64::INFINITY)
    }

    #[test]
    fn reductions_match_candle() -> Result<()> {
        let x = rand_f64(&[3, 70, 5], 1, &Device::Cpu)?;
        assert!(max_diff(&sum_tokens(&x)?, &x.sum(1)?) < 1e-12);
        assert!(max_diff(&sum_per_example(&x)?, &x.sum((1, 2))?) < 1e-12);
        let y = x.reshape((210, 5))?;
        let s = y.apply_op1_no_bwd(&SumRows)?;
        assert!(max_diff(&s, &y.sum(0)?) < 1e-12);
        // f32 goes through the same kernels.
        let x32 = x.to_dtype(DType::F32)?;
        assert!(max_diff(&sum_tokens(&x32)?, &x32.sum(1)?) < 1e-5);
        Ok(())
    }

    #[test]
    fn gelu_matches_candle_in_value_and_gradient() -> Result<()> {
        let x = (rand_f64(&[4, 3000], 2, &Device::Cpu)? * 4.0)?;
        let v = candle_core::Var::from_tensor(&x)?;
        let fused = v.as_tensor().apply_op1(GeluErf)?;
        let reference = v.as_tensor().gelu_erf()?;
        assert!(max_diff(&fused, &reference) < 1e-14);
        let w = rand_f64(&[4, 3000], 3, &Device::Cpu)?;
        let gf = fused.mul(&w)?.sum_all()?.backward()?;
        let gr = reference.mul(&w)?.sum_all()?.backward()?;
        let (gf, gr) = (gf.get(v.as_tensor()), gr.get(v.as_tensor()));
        let (Some(gf), Some(gr)) = (gf, gr) else {
            panic!("no gradient")
        };
        // candle's backward rounds 1/√(2π) to 0.398942; ours is exact.
        assert!(max_diff(gf, gr) < 1e-5, "{}", max_diff(gf, gr));
        Ok(())
    }

    #[test]
    fn zips_match_the_composites_and_reject_mixed_operands() -> Result<()> {
        let a = rand_f64(&[7, 3000], 5, &Device::Cpu)?;
        let b = rand_f64(&[7, 3000], 6, &Device::Cpu)?;
        let c = (rand_f64(&[7, 3000], 7, &Device::Cpu)?.abs()? + 0.1)?;
        let z = zip2(&a, &b, |a, b| 0.9 * a + 0.1 * b)?;
        assert!(max_diff(&z, &((&a * 0.9)? + (&b * 0.1)?)?) < 1e-15);
        let z = zip3(&a, &b, &c, |a, b, c| a - b / c.sqrt())?;
        assert!(max_diff(&z, &(&a - (&b / c.sqrt()?)?)?) < 1e-14);
        assert!(zip2(&a, &b.to_dtype(DType::F32)?, |a, _| a).is_err());
        assert!(zip2(&a, &b.reshape((3000, 7))?, |a, _| a).is_err());
        Ok(())
    }

    #[test]
    fn f32_erf_and_exp_are_within_a_few_ulps() {
        let mut worst_erf: f64 = 0.0;
        let mut worst_exp: f64 = 0.0;
        for i in 0..=2_000_000 {
            let x = -8.0 + 16.0 * i as f64 / 2e6;
            let x32 = x as f32;
            let want = candle_core::cpu::erf::erf_f64(x32 as f64);
            let err = (erf_f32(x32) as f64 - want).abs();
            worst_erf = worst_erf.max(err / want.abs().max(1.0));
            // exp over the range a GELU backward uses (−x²/2), and a bit above zero.
            let y = (-(x * x) / 2.0).max(-87.0) as f32 + 0.5;
            let want = (y as f64).exp();
            worst_exp = worst_exp.max((exp_f32(y) as f64 - want).abs() / want);
        }
        // Tiny arguments: erf(x) ≈ 2x/√π, kept relative.
        for k in 1..200 {
            let x = 10f32.powf(-(k as f32) / 10.0);
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            worst_erf = worst_erf.max((erf_f32(x) as f64 - want).abs() / want);
        }
        assert!(worst_erf < 6e-7, "erf: {worst_erf:e}");
        assert!(worst_exp < 3e-7, "exp: {worst_exp:e}");
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(-1000.0) >= 0.0);
    }

    #[test]
    fn f32_gelu_forward_is_candles_up_to_rounding() -> Result<()> {
        let x = (rand_f64(&[5000], 4, &Device::Cpu)? * 5.0)?.to_dtype(DType::F32)?;
        let a = x.apply_op1_no_bwd(&GeluErf)?;
        let b = x.gelu_erf()?;
        assert!(max_diff(&a, &b) < 5e-6, "{}", max_diff(&a, &b));
        Ok(())
    }
}
