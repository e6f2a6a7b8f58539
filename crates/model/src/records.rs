//! Per-example records for the DP engine.
//!
//! For every trainable linear map y = x Wᵀ + b the engine needs, per example, the input x
//! (B×T×d_in) and the gradient at the output ∂L/∂y (B×T×d_out): the per-example weight gradient
//! is ∂yᵢᵀ xᵢ and the bias gradient Σ_t ∂yᵢ. A recording linear computes y from detached
//! operands and routes the backward through a [`CustomOp2`] over (x, W) whose backward
//! returns only ∂L/∂x = ∂L/∂y W and stores (x, ∂L/∂y): autograd never forms the batch-summed
//! ∂W that the engine would discard.
//!
//! Norm weights are recorded the same way with x̂ (the normalised input) as the "input": the
//! per-example gradient of γ is Σ_t ∂yᵢ ⊙ x̂ᵢ (and of β, Σ_t ∂yᵢ).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CudaStorage, CustomOp2, Layout, Shape, Tensor};

use crate::error::{ModelError, Result};
use crate::ops::Precomputed;
use crate::ops::linear::add_bias;

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A linear map: per-example ∂W = gᵀ x (summed over positions), ∂b = Σ_t g.
    Linear,
    /// A norm weight: per-example ∂γ = Σ_t g ⊙ x̂, ∂β = Σ_t g (`input` holds x̂).
    Norm,
    /// An embedding table: per-example ∂E = Σ_t onehot(id_t) g_tᵀ (`input` holds the ids,
    /// (B, T) u32).
    Embedding,
}

/// One trainable layer's record from the last forward + backward.
#[derive(Debug, Clone)]
pub struct Record {
    /// Linear, norm or embedding.
    pub kind: RecordKind,
    /// The parameter whose gradient this record determines. Usually the record's key; a tied
    /// LM head records under its own key with `param` = the embedding matrix, so one parameter
    /// can have two records whose per-example gradients add up.
    pub param: String,
    /// Shape of that parameter.
    pub param_dims: Vec<usize>,
    /// The layer input (x, or x̂ for a norm): (B, T, d_in).
    pub input: Tensor,
    /// ∂L/∂y at the layer output: (B, T, d_out); `None` until backward has run.
    pub grad_output: Option<Tensor>,
    /// Name of the bias / β parameter whose gradient the same record determines, if any.
    pub bias: Option<String>,
}

impl Record {
    /// The per-example weight gradient of example `i`: (d_out, d_in) for a linear, (d) for a norm.
    pub fn per_example_weight_grad(&self, i: usize) -> Result<Tensor> {
        let g = self.grad_output.as_ref().ok_or_else(|| {
            ModelError::Invalid("record has no output gradient: run backward first".into())
        })?;
        let x = self.input.get(i)?; // (T, d_in)
        let g = g.get(i)?; // (T, d_out)
        if self.kind == RecordKind::Embedding {
            let g = g.reshape(((), g.dim(candle_core::D::Minus1)?))?;
            let z = Tensor::zeros(self.param_dims.as_slice(), g.dtype(), g.device())?;
            return Ok(z.index_add(&x.flatten_all()?, &g, 0)?);
        }
        let x = x.reshape(((), x.dim(candle_core::D::Minus1)?))?;
        let g = g.reshape(((), g.dim(candle_core::D::Minus1)?))?;
        Ok(match self.kind {
            RecordKind::Linear => g.t()?.matmul(&x)?,
            RecordKind::Norm => g.mul(&x)?.sum(0)?,
            RecordKind::Embedding => unreachable!("handled above"),
        })
    }

    /// The per-example bias (β) gradient of example `i`: Σ_t ∂yᵢ, (d_out).
    pub fn per_example_bias_grad(&self, i: usize) -> Result<Tensor> {
        let g = self.grad_output.as_ref().ok_or_else(|| {
            ModelError::Invalid("record has no output gradient: run backward first".into())
        })?;
        let g = g.get(i)?;
        let g = g.reshape(((), g.dim(candle_core::D::Minus1)?))?;
        Ok(g.sum(0)?)
    }
}

/// Collects records during one forward/backward, keyed by the weight's parameter name.
/// Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<BTreeMap<String, Record>>>,
}

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Record>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes all records collected so far, leaving the recorder empty.
    pub fn take(&self) -> BTreeMap<String, Record> {
        std::mem::take(&mut *self.lock())
    }

    /// Forgets all records.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Names of the recorded weights.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Recording linear forward: y = x Wᵀ (+ b), registering the record under `name` (the
    /// weight's name). When neither W nor b is a trainable variable this is a plain forward and
    /// nothing is recorded. x: (B, T, d_in), w: (d_out, d_in) → (B, T, d_out).
    pub fn linear(
        &self,
        name: &str,
        x: &Tensor,
        w: &Tensor,
        b: Option<(&str, &Tensor)>,
    ) -> Result<Tensor> {
        self.linear_keyed(name, name, x, w, b)
    }

    /// [`Recorder::linear`] recording under `key` for parameter `param` (tied weights).
    pub fn linear_keyed(
        &self,
        key: &str,
        param: &str,
        x: &Tensor,
        w: &Tensor,
        b: Option<(&str, &Tensor)>,
    ) -> Result<Tensor> {
        let name = key;
        let anchor = match b {
            _ if w.is_variable() => w.clone(),
            Some((_, b)) if b.is_variable() => b.clone(),
            _ => return crate::ops::linear::linear_forward(x, w, b.map(|(_, b)| b)),
        };
        // y with its bias: b's gradient comes from the record, so no bias node is needed (one
        // would keep the product before the bias as one more activation).
        let y0 = crate::ops::linear::linear_forward(
            &x.detach(),
            &w.detach(),
            b.map(|(_, b)| b.detach()).as_ref(),
        )?
        .contiguous()?;
        self.lock().insert(
            name.to_string(),
            Record {
                kind: RecordKind::Linear,
                param: param.to_string(),
                param_dims: w.dims().to_vec(),
                input: x.detach(),
                grad_output: None,
                bias: b.map(|(n, _)| n.to_string()),
            },
        );
        let op = Tap {
            name: name.to_string(),
            recorder: self.clone(),
            kind: RecordKind::Linear,
            w: w.detach(),
            y: Precomputed::new(y0),
        };
        Ok(x.apply_op2(&anchor, op)?)
    }

    /// Recording norm affine: y = x̂ γ (+ β), registering the record under `name` (γ's name).
    /// When neither γ nor β is a trainable variable this is a plain forward.
    /// x̂: (B, T, d) the normalised input, γ: (d) → (B, T, d).
    pub fn norm_affine(
        &self,
        name: &str,
        xhat: &Tensor,
        gamma: &Tensor,
        beta: Option<(&str, &Tensor)>,
    ) -> Result<Tensor> {
        let anchor = match beta {
            _ if gamma.is_variable() => gamma.clone(),
            Some((_, b)) if b.is_variable() => b.clone(),
            _ => {
                let y = xhat.broadcast_mul(gamma)?;
                return Ok(match beta {
                    Some((_, b)) => add_bias(&y, b)?,
                    None => y,
                });
            }
        };
        // As for a linear: β is in y, its gradient comes from the record.
        let y0 = xhat.detach().broadcast_mul(&gamma.detach())?;
        let y0 = match beta {
            Some((_, b)) => add_bias(&y0, &b.detach())?,
            None => y0,
        }
        .contiguous()?;
        self.lock().insert(
            name.to_string(),
            Record {
                kind: RecordKind::Norm,
                param: name.to_string(),
                param_dims: gamma.dims().to_vec(),
                input: xhat.detach(),
                grad_output: None,
                bias: beta.map(|(n, _)| n.to_string()),
            },
        );
        let op = Tap {
            name: name.to_string(),
            recorder: self.clone(),
            kind: RecordKind::Norm,
            w: gamma.detach(),
            y: Precomputed::new(y0),
        };
        Ok(xhat.apply_op2(&anchor, op)?)
    }

    /// Recording embedding lookup: rows of `w` (V, d) at ids (B, T) → (B, T, d), registering
    /// the record under `name` when `w` is a trainable variable.
    pub fn embedding(&self, name: &str, ids: &Tensor, w: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let d = w.dim(1)?;
        if !w.is_variable() {
            return Ok(w.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, d))?);
        }
        let y0 = w
            .detach()
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, d))?
            .contiguous()?;
        self.lock().insert(
            name.to_string(),
            Record {
                kind: RecordKind::Embedding,
                param: name.to_string(),
                param_dims: w.dims().to_vec(),
                input: ids.clone(),
                grad_output: None,
                bias: None,
            },
        );
        let op = Tap {
            name: name.to_string(),
            recorder: self.clone(),
            kind: RecordKind::Embedding,
            w: w.detach(),
            y: Precomputed::new(y0),
        };
        // The ids take no gradient: the op's first input only places it in the graph.
        Ok(ids.apply_op2(w, op)?)
    }

    fn set_grad(&self, name: &str, g: Tensor) {
        let mut m = self.lock();
        if let Some(r) = m.get_mut(name) {
            r.grad_output = Some(match r.grad_output.take() {
                // A layer used twice in one graph accumulates (not expected in our models).
                Some(prev) => (prev + &g).unwrap_or(g),
                None => g,
            });
        }
    }
}

/// The custom op behind recording layers, over (x, the trainable anchor): forward returns the
/// precomputed y, backward records ∂L/∂y and returns ∂L/∂x only.
struct Tap {
    name: String,
    recorder: Recorder,
    kind: RecordKind,
    /// The (detached) weight, to form ∂L/∂x.
    w: Tensor,
    /// y, computed from detached operands.
    y: Precomputed,
}

impl CustomOp2 for Tap {
    fn name(&self) -> &'static str {
        "dpselft-record"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.y.cpu()
    }

    fn cuda_fwd(
        &self,
        _s1: &CudaStorage,
        _l1: &Layout,
        _s2: &CudaStorage,
        _l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.y.cuda()
    }

    fn bwd(
        &self,
        x: &Tensor,
        _anchor: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.detach();
        self.recorder.set_grad(&self.name, grad.clone());
        if !x.track_op() {
            return Ok((None, None));
        }
        let gx = match self.kind {
            // ∂x = ∂y W: (…, d_out) × (d_out, d_in)
            RecordKind::Linear => grad.broadcast_matmul(&self.w)?,
            // ∂x̂ = ∂y ⊙ γ
            RecordKind::Norm => grad.broadcast_mul(&self.w)?,
            RecordKind::Embedding => return Ok((None, None)),
        };
        Ok((Some(gx), None))
    }
}
