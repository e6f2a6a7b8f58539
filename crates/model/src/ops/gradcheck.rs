//! Test helper: autograd gradients vs central finite differences in f64.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

/// A seeded tensor of uniform values in [−1, 1), f64.
pub fn rand_f64(shape: &[usize], seed: u64, dev: &Device) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Ok(Tensor::from_vec(v, shape, dev)?)
}

/// Checks the autograd gradient of L = Σ f(inputs) ⊙ R (R a fixed random tensor) against
/// central differences for every input element; panics with the worst element if off.
pub fn check_grad<F>(inputs: &[Tensor], f: F) -> Result<()>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(DType::F64)?))
        .collect::<candle_core::Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts)?;
    let r = rand_f64(out.dims(), 12345, out.device())?;
    let loss =
        |ts: &[Tensor]| -> Result<f64> { Ok(f(ts)?.mul(&r)?.sum_all()?.to_scalar::<f64>()?) };
    let grads = out.mul(&r)?.sum_all()?.backward()?;
    let eps = 1e-6;
    for (i, v) in vars.iter().enumerate() {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("input {i} received no gradient"))
            .flatten_all()?
            .to_vec1::<f64>()?;
        let base = v.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        for j in 0..base.len() {
            let mut plus = base.clone();
            plus[j] += eps;
            let mut minus = base.clone();
            minus[j] -= eps;
            let mk = |vals: Vec<f64>| -> Result<Vec<Tensor>> {
                let mut all = ts.iter().map(|t| t.detach()).collect::<Vec<_>>();
                all[i] = Tensor::from_vec(vals, v.as_tensor().dims(), v.device())?;
                Ok(all)
            };
            let fd = (loss(&mk(plus)?)? - loss(&mk(minus)?)?) / (2.0 * eps);
            let err = (fd - g[j]).abs();
            assert!(
                err <= 1e-6 * (1.0 + fd.abs()),
                "input {i} element {j}: autograd {} vs finite differences {fd}",
                g[j]
            );
        }
    }
    Ok(())
}
