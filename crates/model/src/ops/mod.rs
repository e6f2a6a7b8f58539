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

use std::sync::Mutex;

use candle_core::{CpuStorage, CudaStorage, Layout, Shape, Storage, Tensor};

/// A value computed (without a graph) before the custom op that gives it a backward runs: the
/// op's forward hands out a copy once and lets go of the original.
///
/// Passing the value as one more input of the op would work too, but the graph node keeps its
/// inputs until the backward has run, so every such activation would be held twice.
pub(crate) struct Precomputed(Mutex<Option<Tensor>>);

impl Precomputed {
    /// Holds `value` for the op's forward.
    pub(crate) fn new(value: Tensor) -> Self {
        Self(Mutex::new(Some(value)))
    }

    fn take(&self) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| candle_core::Error::Msg("precomputed value used twice".into()))
    }

    /// The value as the CPU forward's output.
    pub(crate) fn cpu(&self) -> candle_core::Result<(CpuStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => copy_storage(s, layout),
            _ => candle_core::bail!("precomputed value is not on the CPU"),
        }
    }

    /// The value as the CUDA forward's output.
    pub(crate) fn cuda(&self) -> candle_core::Result<(CudaStorage, Shape)> {
        let t = self.take()?;
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => copy_cuda_storage(s, layout),
            _ => candle_core::bail!("precomputed value is not on a CUDA device"),
        }
    }
}

/// Copies a contiguous CPU storage (the forward of the "precomputed value" custom ops).
fn copy_storage(s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
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
fn copy_cuda_storage(s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    match l.contiguous_offsets() {
        Some((0, n)) if n == l.shape().elem_count() => Ok((s.try_clone(l)?, l.shape().clone())),
        _ => Err(candle_core::Error::Msg(
            "precomputed value must be contiguous from offset 0".into(),
        )),
    }
}
