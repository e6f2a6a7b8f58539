//! Activations (candle's unary ops, which have a backward).

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::ops::kernels;

/// GELU, erf form (BERT's `gelu`): a fused kernel with an analytic backward on the CPU
/// (candle's backward of `gelu_erf` is ~10 single-threaded passes), candle's op elsewhere.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if kernels::fusable_on_cpu(x) {
        return Ok(x.contiguous()?.apply_op1(kernels::GeluErf)?);
    }
    Ok(x.gelu_erf()?)
}

/// SiLU x·σ(x) (Llama's `silu`).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(x.silu()?)
}

/// SwiGLU: silu(gate) ⊙ up. gate, up: (…, f).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok(silu(gate)?.mul(up)?)
}

/// Applies a Hugging Face `hidden_act` by name.
pub fn by_name(name: &str, x: &Tensor) -> Result<Tensor> {
    match name {
        "gelu" => gelu_erf(x),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(x.gelu()?),
        "relu" => Ok(x.relu()?),
        "silu" => silu(x),
        a => Err(ModelError::Invalid(format!("unsupported activation `{a}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{check_grad, rand_f64};
    use candle_core::Device;

    #[test]
    fn gelu_and_swiglu_gradients_match_finite_differences() -> Result<()> {
        let a = rand_f64(&[2, 5], 21, &Device::Cpu)?;
        let b = rand_f64(&[2, 5], 22, &Device::Cpu)?;
        check_grad(std::slice::from_ref(&a), |v| gelu_erf(&v[0]))?;
        check_grad(&[a, b], |v| swiglu(&v[0], &v[1]))
    }
}
