//! Shared helpers for the integration tests: seeded random tensors and comparisons.
#![allow(dead_code)]

use candle_core::{DType, Device, Shape, Tensor};
use dpselft_dp::{NoiseRng, fill_gaussian_f64};

/// A tensor of N(0, 1) values from a seeded stream, in `dtype`, on the CPU.
pub fn randn(shape: impl Into<Shape>, dtype: DType, rng: &mut NoiseRng) -> Tensor {
    let shape = shape.into();
    let mut v = vec![0f64; shape.elem_count()];
    fill_gaussian_f64(&mut v, 1.0, rng).unwrap();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// All values of a tensor as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// ‖a − b‖ / ‖b‖ over all elements.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (a, b) = (values(a), values(b));
    let diff: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(f64::MIN_POSITIVE)
}

/// The tolerance of the brute-force comparisons for a dtype.
pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-10,
        _ => 1e-5,
    }
}
