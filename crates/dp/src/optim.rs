//! The DP optimizer step. It knows nothing about the model: it gets the clipped sums of one
//! logical batch (one tensor per trainable parameter, in a fixed order) and the parameters.
//!
//! One step, top to bottom:
//! 1. noisy sum = Σᵢ cᵢgᵢ + N(0, σ²C² I)       (the Gaussian mechanism; C = clipping sensitivity)
//! 2. ĝ = noisy sum / B                        (B the *expected* batch size q·n, never realised)
//! 3. an SGD-with-momentum or AdamW update with ĝ, learning rate from [`LrSchedule`]
//!    (post-processing: costs no privacy).

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::clip::Clipping;
use crate::error::{DpError, Result, invalid, shape_err};
use dpselft_model::ops::kernels::{fusable_on_cpu, zip2, zip3};

use crate::noise::{add_gaussian_noise, gaussian_like};
use crate::rng::NoiseRng;

/// Which update rule consumes the privatised gradient ĝ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// SGD with heavy-ball momentum (PyTorch convention: buf ← μ·buf + ĝ, buf₁ = ĝ;
    /// p ← p − lr·buf) and decoupled weight decay p ← p(1 − lr·λ).
    Sgd {
        /// Momentum μ ∈ [0, 1).
        momentum: f64,
        /// Decoupled weight decay λ ≥ 0.
        weight_decay: f64,
    },
    /// AdamW (Loshchilov & Hutter): bias-corrected moments and decoupled weight decay
    /// p ← p(1 − lr·λ) − lr·m̂/(√v̂ + ε).
    AdamW {
        /// β₁ ∈ [0, 1).
        beta1: f64,
        /// β₂ ∈ [0, 1).
        beta2: f64,
        /// ε > 0.
        eps: f64,
        /// Decoupled weight decay λ ≥ 0.
        weight_decay: f64,
    },
}

impl Default for OptimizerKind {
    /// AdamW with β = (0.9, 0.999), ε = 1e-8, λ = 0.01 (PyTorch's defaults).
    fn default() -> Self {
        OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl OptimizerKind {
    fn validate(&self) -> Result<()> {
        let unit = |name, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(invalid(name, v, "must be in [0, 1)"))
            }
        };
        let nonneg = |name, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(invalid(name, v, "must be finite and ≥ 0"))
            }
        };
        match *self {
            OptimizerKind::Sgd {
                momentum,
                weight_decay,
            } => {
                unit("SGD momentum", momentum)?;
                nonneg("weight decay", weight_decay)
            }
            OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                unit("AdamW beta1", beta1)?;
                unit("AdamW beta2", beta2)?;
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(invalid("AdamW eps", eps, "must be finite and > 0"));
                }
                nonneg("weight decay", weight_decay)
            }
        }
    }

    fn weight_decay(&self) -> f64 {
        match *self {
            OptimizerKind::Sgd { weight_decay, .. } | OptimizerKind::AdamW { weight_decay, .. } => {
                weight_decay
            }
        }
    }
}

/// Linear warm-up to `peak_lr` over `warmup_steps`, then linear decay towards 0 at
/// `total_steps`.
///
/// For step s = 1, 2, … (the step being taken):
/// lr(s) = peak·s/W for s ≤ W; peak·(S − s + 1)/(S − W) for W < s ≤ S; 0 after S.
/// So the first step after warm-up uses the peak, the last step (s = S) peak/(S − W) > 0, and no
/// step inside the schedule has lr = 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The learning rate at the end of warm-up.
    pub peak_lr: f64,
    /// W: warm-up steps (0 for none).
    pub warmup_steps: u64,
    /// S: total steps of the run (`u64::MAX` with W = 0 gives a constant rate).
    pub total_steps: u64,
}

impl LrSchedule {
    /// A constant learning rate.
    pub fn constant(lr: f64) -> Self {
        Self {
            peak_lr: lr,
            warmup_steps: 0,
            total_steps: u64::MAX,
        }
    }

    /// Check lr ≥ 0 finite and W ≤ S.
    pub fn validate(&self) -> Result<()> {
        if !(self.peak_lr.is_finite() && self.peak_lr >= 0.0) {
            return Err(invalid(
                "learning rate",
                self.peak_lr,
                "must be finite and ≥ 0",
            ));
        }
        if self.warmup_steps > self.total_steps {
            return Err(invalid(
                "warm-up steps",
                self.warmup_steps,
                format!("must be ≤ total steps {}", self.total_steps),
            ));
        }
        Ok(())
    }

    /// The learning rate of step `step` (1-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        let (w, s) = (self.warmup_steps, self.total_steps);
        if step == 0 || step > s {
            0.0
        } else if step <= w {
            self.peak_lr * step as f64 / w as f64
        } else if s == u64::MAX {
            self.peak_lr
        } else {
            self.peak_lr * (s - step + 1) as f64 / (s - w) as f64
        }
    }
}

/// Everything the DP step needs besides parameters and gradients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpOptimizerConfig {
    /// The update rule (AdamW by default).
    pub optimizer: OptimizerKind,
    /// The learning-rate schedule.
    pub schedule: LrSchedule,
    /// The noise multiplier σ (from the accountant's calibration); 0 only for non-private runs.
    pub noise_multiplier: f64,
    /// The clipping used for the sums; its sensitivity C sets the noise std σC.
    pub clipping: Clipping,
    /// The expected logical batch size B = q·n that divides the noisy sum.
    pub expected_batch_size: f64,
}

impl DpOptimizerConfig {
    /// Check every field, and that noise is only asked for with bounded sensitivity.
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        self.schedule.validate()?;
        self.clipping.validate()?;
        let sigma = self.noise_multiplier;
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(invalid(
                "noise multiplier σ",
                sigma,
                "must be finite and ≥ 0",
            ));
        }
        if sigma > 0.0 && self.clipping.sensitivity().is_none() {
            return Err(invalid(
                "noise multiplier σ",
                sigma,
                "noise without clipping bounds nothing; use clipping or σ = 0",
            ));
        }
        let b = self.expected_batch_size;
        if !(b.is_finite() && b > 0.0) {
            return Err(invalid(
                "expected batch size B",
                b,
                "must be finite and > 0",
            ));
        }
        Ok(())
    }

    /// The std of the noise added to each coordinate of the clipped sum: σ·C (0 without clipping).
    pub fn noise_std(&self) -> f64 {
        self.noise_multiplier * self.clipping.sensitivity().unwrap_or(0.0)
    }
}

/// What one step did (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    /// The 1-based number of the step just taken.
    pub step: u64,
    /// Its learning rate.
    pub lr: f64,
    /// The std of the noise added to the sum (σC).
    pub noise_std: f64,
    /// True when the logical batch was empty (noise-only step).
    pub empty_batch: bool,
}

/// The DP optimizer: noise, scaling by the expected batch size, and the update.
#[derive(Debug, Clone)]
pub struct DpOptimizer {
    config: DpOptimizerConfig,
    step: u64,
    decay: Vec<bool>,
    /// First moment (AdamW) or momentum buffer (SGD), one per parameter.
    m: Vec<Tensor>,
    /// Second moment (AdamW only).
    v: Vec<Tensor>,
}

/// The optimizer's state for a checkpoint: a small serialisable part and the moment tensors
/// (named `m.{i}` / `v.{i}`, ready for `candle_core::safetensors::save`).
#[derive(Debug, Clone)]
pub struct OptimizerCheckpoint {
    /// Step count, update rule and decay mask.
    pub meta: OptimizerMeta,
    /// Moment tensors by name.
    pub tensors: HashMap<String, Tensor>,
}

/// The serialisable part of an [`OptimizerCheckpoint`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerMeta {
    /// Steps taken so far.
    pub step: u64,
    /// The update rule the moments belong to.
    pub optimizer: OptimizerKind,
    /// Which parameters get weight decay (one per parameter).
    pub weight_decay_mask: Vec<bool>,
}

impl DpOptimizer {
    /// A fresh optimizer for `params` (zero moments; every parameter decayed).
    pub fn new(config: DpOptimizerConfig, params: &[Var]) -> Result<Self> {
        config.validate()?;
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        let m = params
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = match config.optimizer {
            OptimizerKind::AdamW { .. } => params
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<Vec<_>>>()?,
            OptimizerKind::Sgd { .. } => Vec::new(),
        };
        Ok(Self {
            config,
            step: 0,
            decay: vec![true; params.len()],
            m,
            v,
        })
    }

    /// Exclude some parameters from weight decay (e.g. biases and norm weights): `mask[i]` says
    /// whether parameter i is decayed.
    pub fn with_weight_decay_mask(mut self, mask: Vec<bool>) -> Result<Self> {
        if mask.len() != self.m.len() {
            return Err(shape_err(
                "weight decay mask",
                format!("{} entries (one per parameter)", self.m.len()),
                mask.len(),
            ));
        }
        self.decay = mask;
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &DpOptimizerConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One DP step on the clipped sums of a logical batch (`None`: the batch was empty).
    ///
    /// Privacy: the gradient released to the update is (Σᵢ cᵢgᵢ + N(0, σ²C² I))/B, with fresh
    /// noise per coordinate from `rng` and B the expected batch size fixed in the config. If the
    /// logical batch was Poisson-sampled with rate q and the sums have sensitivity C (see
    /// `clip_and_sum`), this step is one sampled Gaussian mechanism (q, σ); an empty batch adds
    /// the same noise to zeros, so whether a batch was empty is not revealed. Everything after
    /// the noise is post-processing.
    pub fn step(
        &mut self,
        params: &[Var],
        clipped_sums: Option<&[Tensor]>,
        rng: &mut NoiseRng,
    ) -> Result<StepInfo> {
        self.check_step_shapes(params, clipped_sums)?;
        let std = self.config.noise_std();
        let inv_batch = 1.0 / self.config.expected_batch_size;
        let t = self.step + 1;
        let lr = self.config.schedule.lr_at(t);
        // Parameter by parameter: privatise its sum, then update it, before the next one's noise.
        for (i, param) in params.iter().enumerate() {
            let p = param.as_tensor();
            let sum = match clipped_sums {
                Some(sums) => sums[i].clone(),
                None => p.zeros_like()?,
            };
            let grad = privatised_grad(sum, std, inv_batch, p.dtype(), rng)?;
            self.update_param(i, param, grad, t, lr)?;
        }
        self.step = t;
        Ok(StepInfo {
            step: t,
            lr,
            noise_std: std,
            empty_batch: clipped_sums.is_none(),
        })
    }

    /// Checks every parameter's and clipped sum's shape against those at creation, and the
    /// number of sums, before anything is touched, so a bad call never leaves a half step.
    fn check_step_shapes(&self, params: &[Var], clipped_sums: Option<&[Tensor]>) -> Result<()> {
        if params.len() != self.m.len() {
            return Err(shape_err(
                "optimizer parameters",
                format!("{} (as at creation)", self.m.len()),
                params.len(),
            ));
        }
        for (i, param) in params.iter().enumerate() {
            let want = self.m[i].dims();
            let got = clipped_sums
                .and_then(|sums| sums.get(i))
                .map_or(want, |s| s.dims());
            if param.dims() != want || got != want {
                return Err(shape_err(
                    format!("parameter {i} and its clipped sum"),
                    format!("{want:?} (as at creation)"),
                    format!("{:?} and {got:?}", param.dims()),
                ));
            }
        }
        if let Some(sums) = clipped_sums
            && sums.len() != params.len()
        {
            return Err(shape_err(
                "clipped sums",
                format!("{} (one per parameter)", params.len()),
                sums.len(),
            ));
        }
        Ok(())
    }

    /// Step 3 (post-processing) for parameter `i`: decoupled weight decay, the update rule's
    /// direction from the privatised gradient `grad`, and p ← decayed − lr·direction.
    fn update_param(&mut self, i: usize, param: &Var, grad: Tensor, t: u64, lr: f64) -> Result<()> {
        let p = param.as_tensor();
        let keep = if self.decay[i] {
            1.0 - lr * self.config.optimizer.weight_decay()
        } else {
            1.0
        };
        if fusable_on_cpu(p) && grad.dtype() == p.dtype() && self.m[i].dtype() == p.dtype() {
            return self.update_fused(i, param, grad, t, lr, keep);
        }
        let decayed = if keep != 1.0 {
            p.affine(keep, 0.0)?
        } else {
            p.clone()
        };
        let update = self.direction(i, grad, t)?;
        param.set(&(decayed - update.affine(lr, 0.0)?)?)?;
        Ok(())
    }

    /// [`Self::update_param`] on the CPU in two or three fused passes (the composite runs ~12
    /// single-threaded ones, each allocating a parameter-sized tensor). The same arithmetic,
    /// evaluated in f64 per element: results differ from the composite by float rounding only.
    fn update_fused(
        &mut self,
        i: usize,
        param: &Var,
        grad: Tensor,
        t: u64,
        lr: f64,
        keep: f64,
    ) -> Result<()> {
        let p = param.as_tensor();
        let new_p = match self.config.optimizer {
            OptimizerKind::Sgd { momentum, .. } => {
                self.m[i] = if t == 1 {
                    grad
                } else {
                    zip2(&self.m[i], &grad, |m, g| momentum * m + g)?
                };
                zip2(p, &self.m[i], |p, d| keep * p - lr * d)?
            }
            OptimizerKind::AdamW {
                beta1, beta2, eps, ..
            } => {
                self.m[i] = zip2(&self.m[i], &grad, |m, g| beta1 * m + (1.0 - beta1) * g)?;
                self.v[i] = zip2(&self.v[i], &grad, |v, g| beta2 * v + (1.0 - beta2) * g * g)?;
                let (c1, c2) = (
                    1.0 / (1.0 - beta1.powf(t as f64)),
                    1.0 / (1.0 - beta2.powf(t as f64)),
                );
                zip3(p, &self.m[i], &self.v[i], |p, m, v| {
                    keep * p - lr * (m * c1) / ((v * c2).sqrt() + eps)
                })?
            }
        };
        param.set(&new_p)?;
        Ok(())
    }

    /// Advances parameter `i`'s moments with `grad` at step `t` and returns the update
    /// direction: the momentum buffer (SGD) or m̂/(√v̂ + ε) (AdamW). The composite path, for
    /// tensors the fused kernels do not take (GPU, half precision).
    fn direction(&mut self, i: usize, grad: Tensor, t: u64) -> Result<Tensor> {
        Ok(match self.config.optimizer {
            OptimizerKind::Sgd { momentum, .. } => {
                self.m[i] = if t == 1 {
                    grad
                } else {
                    (self.m[i].affine(momentum, 0.0)? + grad)?
                };
                self.m[i].clone()
            }
            OptimizerKind::AdamW {
                beta1, beta2, eps, ..
            } => {
                self.m[i] = (self.m[i].affine(beta1, 0.0)? + grad.affine(1.0 - beta1, 0.0)?)?;
                self.v[i] =
                    (self.v[i].affine(beta2, 0.0)? + grad.sqr()?.affine(1.0 - beta2, 0.0)?)?;
                let m_hat = self.m[i].affine(1.0 / (1.0 - beta1.powf(t as f64)), 0.0)?;
                let v_hat = self.v[i].affine(1.0 / (1.0 - beta2.powf(t as f64)), 0.0)?;
                (m_hat / v_hat.sqrt()?.affine(1.0, eps)?)?
            }
        })
    }

    /// The step for an empty logical batch: noise only (see [`Self::step`]).
    pub fn noise_only_step(&mut self, params: &[Var], rng: &mut NoiseRng) -> Result<StepInfo> {
        self.step(params, None, rng)
    }

    /// The state to save in a checkpoint.
    pub fn checkpoint(&self) -> OptimizerCheckpoint {
        let mut tensors = HashMap::new();
        for (i, m) in self.m.iter().enumerate() {
            tensors.insert(format!("m.{i}"), m.clone());
        }
        for (i, v) in self.v.iter().enumerate() {
            tensors.insert(format!("v.{i}"), v.clone());
        }
        let meta = OptimizerMeta {
            step: self.step,
            optimizer: self.config.optimizer,
            weight_decay_mask: self.decay.clone(),
        };
        OptimizerCheckpoint { meta, tensors }
    }

    /// Resume from a checkpoint. `config` may differ from the saved run only outside the update
    /// rule (e.g. a longer schedule); the update rule and the parameter shapes must match.
    pub fn restore(
        config: DpOptimizerConfig,
        params: &[Var],
        checkpoint: &OptimizerCheckpoint,
    ) -> Result<Self> {
        let mut opt = Self::new(config, params)?;
        let meta = &checkpoint.meta;
        if std::mem::discriminant(&meta.optimizer) != std::mem::discriminant(&config.optimizer) {
            return Err(DpError::State(format!(
                "checkpoint optimizer {:?} differs from the configured {:?}",
                meta.optimizer, config.optimizer
            )));
        }
        opt = opt.with_weight_decay_mask(meta.weight_decay_mask.clone())?;
        let load = |name: String, like: &Tensor| -> Result<Tensor> {
            let t = checkpoint
                .tensors
                .get(&name)
                .ok_or_else(|| DpError::State(format!("optimizer tensor {name} missing")))?;
            if t.dims() != like.dims() {
                return Err(DpError::State(format!(
                    "optimizer tensor {name} has shape {:?}, parameter has {:?}",
                    t.dims(),
                    like.dims()
                )));
            }
            Ok(t.to_dtype(like.dtype())?.to_device(like.device())?)
        };
        for i in 0..opt.m.len() {
            opt.m[i] = load(format!("m.{i}"), &opt.m[i])?;
        }
        for i in 0..opt.v.len() {
            opt.v[i] = load(format!("v.{i}"), &opt.v[i])?;
        }
        opt.step = meta.step;
        Ok(opt)
    }
}

/// Steps 1–2 for one parameter: the Gaussian mechanism on its clipped `sum` (fresh noise of std
/// `std` from `rng`; none when `std` is 0), then the division by the expected batch size
/// (`inv_batch` = 1/B), cast to the parameter's `dtype`.
fn privatised_grad(
    sum: Tensor,
    std: f64,
    inv_batch: f64,
    dtype: DType,
    rng: &mut NoiseRng,
) -> Result<Tensor> {
    if std > 0.0 && sum.dtype() == dtype && fusable_on_cpu(&sum) {
        // The same arithmetic as below in one parallel pass: (sum + noise)/B, the noise drawn
        // exactly as `add_gaussian_noise` draws it.
        let noise = gaussian_like(&sum, std, rng)?;
        return Ok(zip2(&sum, &noise, |s, z| (s + z) * inv_batch)?);
    }
    let noisy = if std > 0.0 {
        add_gaussian_noise(&sum, std, rng)?
    } else {
        sum
    };
    Ok(noisy.affine(inv_batch, 0.0)?.to_dtype(dtype)?)
}
