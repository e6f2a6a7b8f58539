//! Differentiable building blocks, one op per function, written as composites of candle ops
//! that have a backward (never the fused `candle_nn` kernels, which silently detach).
//!
//! Shapes use B (batch), T (query length), S (key length), H (heads), D (head width), d (model
//! width), V (vocabulary).

pub mod activation;
pub mod attention;
pub mod batched;
pub mod cross_entropy;
pub mod kernels;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod rope;
pub mod softmax;

#[cfg(test)]
pub(crate) mod gradcheck;

use candle_core::{CpuStorage, CudaStorage, Layout, Shape};

/// Copies a contiguous CPU storage (the forward of the "precomputed value" custom ops).
pub(crate) fn copy_storage(s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("precomputed value must be contiguous".into()))?;
    let out = match s {
        CpuStorage::F32(v) => CpuStorage::F32(v[a..b].to_vec()),
        CpuStorage::F64(v) => CpuStorage::F64(v[a..b].to_vec()),
        CpuStorage::BF16(v) => CpuStorage::BF16(v[a..b].to_vec()),
        CpuStorage::F16(v) => CpuStorage::F16(v[a..b].to_vec()),
        _ => return Err(candle_core::Error::Msg("unsupported dtype".into())),
    };
    Ok((out, l.shape().clone()))
}

/// The CUDA twin of [`copy_storage`]: a device copy of a contiguous, offset-0 storage. Compiles
/// against candle's stub without the `cuda` feature (where it is never called).
pub(crate) fn copy_cuda_storage(
    s: &CudaStorage,
    l: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    match l.contiguous_offsets() {
        Some((0, n)) if n == l.shape().elem_count() => Ok((s.try_clone(l)?, l.shape().clone())),
        _ => Err(candle_core::Error::Msg(
            "precomputed value must be contiguous from offset 0".into(),
        )),
    }
}
