//! Per-example clipping of the whole trainable gradient, and the clipped sum per parameter.
//!
//! The DP hot path of one micro-batch, top to bottom:
//! 1. [`per_example_norms`]: ‖gᵢ‖ = sqrt(Σ over parameters of ‖∇ᵢ‖²) — *flat* clipping bounds
//!    the gradient of all trainable parameters together (a tied parameter's records add up, so
//!    their cross terms are included);
//! 2. [`Clipping::factors`]: cᵢ = min(1, C/‖gᵢ‖) (or C/(‖gᵢ‖+γ) for automatic clipping);
//! 3. [`GradRecord::clipped_sum`] per parameter: Σᵢ cᵢ ∇ᵢ in one pass (one matmul for a linear
//!    weight: scale g by cᵢ, then gᵀx over all B·T rows).
//!
//! [`clip_and_sum`] runs the three; [`ClippedSumAccumulator`] adds micro-batches of one logical
//! batch. Noise is added once, to the logical batch's sum, by the optimizer.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{DpError, Result, invalid, shape_err};
use crate::norms::{GradRecord, InputGrams, Kind, NormMethod};

/// How per-example gradients are scaled before summing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Clipping {
    /// cᵢ = min(1, C/‖gᵢ‖): every clipped gradient has norm ≤ C (the default, "flat" clipping).
    Flat {
        /// The clip norm C.
        max_norm: f64,
    },
    /// Automatic clipping (Bu et al., 2023): cᵢ = C/(‖gᵢ‖+γ). Every scaled gradient has norm
    /// ‖gᵢ‖·C/(‖gᵢ‖+γ) < C, so the sensitivity is C, exactly as for flat clipping. With C = 1 this
    /// is the paper's g/(‖g‖+γ); any other C only rescales the update by C (for SGD the learning
    /// rate absorbs it; Adam is nearly invariant), while the noise σC scales with it too.
    Automatic {
        /// The scale C (= the sensitivity).
        max_norm: f64,
        /// The stability constant γ > 0 (0.01 in the paper).
        gamma: f64,
    },
    /// No clipping (cᵢ = 1): the plain sum, for non-private baselines only. Unbounded
    /// sensitivity: such a run has ε = ∞.
    Off,
}

impl Clipping {
    /// Check the parameters (C > 0 finite, γ > 0 finite).
    pub fn validate(&self) -> Result<()> {
        let (c, gamma) = match *self {
            Clipping::Flat { max_norm } => (max_norm, 1.0),
            Clipping::Automatic { max_norm, gamma } => (max_norm, gamma),
            Clipping::Off => return Ok(()),
        };
        if !(c.is_finite() && c > 0.0) {
            return Err(invalid("clip norm C", c, "must be finite and > 0"));
        }
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(invalid(
                "automatic clipping γ",
                gamma,
                "must be finite and > 0",
            ));
        }
        Ok(())
    }

    /// The L2 sensitivity of the clipped sum under add/remove-one adjacency: C for flat and
    /// automatic clipping, `None` (unbounded) when clipping is off. The optimizer's noise std is
    /// σ times this.
    pub fn sensitivity(&self) -> Option<f64> {
        match *self {
            Clipping::Flat { max_norm } | Clipping::Automatic { max_norm, .. } => Some(max_norm),
            Clipping::Off => None,
        }
    }

    /// The scale factor of each example from its total gradient norm.
    ///
    /// Guarantee: for every finite norm ‖gᵢ‖ ≥ 0, cᵢ·‖gᵢ‖ ≤ C (a zero norm gets cᵢ = 1 for flat
    /// clipping, C/γ for automatic; either way cᵢ·0 = 0). A NaN or infinite norm is an error,
    /// because no factor bounds such a gradient.
    pub fn factors(&self, norms: &[f64]) -> Result<Vec<f64>> {
        self.validate()?;
        if let Some((example, &norm)) = norms
            .iter()
            .enumerate()
            .find(|(_, n)| !n.is_finite() || **n < 0.0)
        {
            return Err(DpError::NonFiniteNorm { example, norm });
        }
        Ok(norms
            .iter()
            .map(|&n| match *self {
                // n ≤ C ⇒ 1; n > C ⇒ C/n < 1. Written so that n = 0 never divides.
                Clipping::Flat { max_norm } => {
                    if n > max_norm {
                        max_norm / n
                    } else {
                        1.0
                    }
                }
                Clipping::Automatic { max_norm, gamma } => max_norm / (n + gamma),
                Clipping::Off => 1.0,
            })
            .collect())
    }
}

/// The total per-example gradient norms over all trainable parameters: `params[j]` holds the
/// records of parameter j (one, or several for a tied weight whose per-example gradients add up),
/// all with the same batch size B. ‖gᵢ‖² = Σ_j ‖Σ_r ∇ᵢ(r)‖², including the cross terms between
/// records of one parameter (leaving them out could *under*-estimate the norm). Accumulated in
/// f64; one device sync.
pub fn per_example_norms(params: &[Vec<GradRecord>], method: NormMethod) -> Result<Vec<f64>> {
    let batch = common_batch(params)?;
    let Some(device) = params.iter().flatten().next().map(|r| r.device().clone()) else {
        return Ok(vec![0.0; batch]);
    };
    let mut total = Tensor::zeros(batch, DType::F64, &device)?;
    let mut grams = InputGrams::default();
    for records in params {
        for (k, record) in records.iter().enumerate() {
            let sq = record.sq_norms_cached(method, &mut grams)?;
            total = (total + sq.to_dtype(DType::F64)?)?;
            for other in &records[k + 1..] {
                let cross = record.inner_with(other)?.to_dtype(DType::F64)?;
                total = (total + cross.affine(2.0, 0.0)?)?;
            }
        }
    }
    // Rounding can push a sum with cancelling cross terms a hair below 0.
    Ok(total
        .to_vec1::<f64>()?
        .into_iter()
        .map(|s| s.max(0.0).sqrt())
        .collect())
}

/// One micro-batch after clipping.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// Σᵢ cᵢ ∇ᵢ per parameter (its records added), with the parameter's shape, in `params` order.
    pub sums: Vec<Tensor>,
    /// The unclipped total norm ‖gᵢ‖ of each example (empty when clipping is off).
    pub norms: Vec<f64>,
    /// The factor cᵢ applied to each example.
    pub factors: Vec<f64>,
}

/// Clip every example's whole gradient and sum per parameter: the private core of a DP step.
///
/// `params[j]` holds the records of trainable parameter j (see [`per_example_norms`]).
///
/// Guarantee (flat or automatic clipping): the per-example contributions cᵢ∇ᵢ, taken over all
/// parameters together, have L2 norm ≤ C, so adding or removing one example changes the
/// concatenated sums by at most C. This relies on (a) `params` covering *every* trainable
/// parameter (a parameter left out is not clipped) and (b) example i's records depending on
/// example i only (no batch statistics across examples). Floating-point rounding of the norms can
/// exceed C by a relative ~1e-7 (f32); that is the usual practice and not accounted.
pub fn clip_and_sum(
    params: &[Vec<GradRecord>],
    clipping: &Clipping,
    method: NormMethod,
) -> Result<ClipOutput> {
    let batch = common_batch(params)?;
    let norms = match clipping {
        Clipping::Off => Vec::new(),
        _ => per_example_norms(params, method)?,
    };
    let factors = match clipping {
        Clipping::Off => vec![1.0; batch],
        _ => clipping.factors(&norms)?,
    };
    let mut sums = Vec::with_capacity(params.len());
    if let Some(device) = params.iter().flatten().next().map(GradRecord::device) {
        let c = Tensor::from_vec(factors.clone(), batch, device)?;
        for records in params {
            // A tied parameter: its records' clipped sums add up, as its gradients do.
            let mut sum = records[0].clipped_sum(&c)?;
            for record in &records[1..] {
                sum = (sum + record.clipped_sum(&c)?)?;
            }
            sums.push(sum);
        }
    }
    Ok(ClipOutput {
        sums,
        norms,
        factors,
    })
}

impl GradRecord {
    /// Σᵢ cᵢ ∇ᵢ for this parameter, with the parameter's shape. `factors`: (B,) float tensor.
    ///
    /// One pass over the record: for a linear weight, g is scaled row-wise by cᵢ and the whole
    /// micro-batch is contracted in one matmul (B·T rows); embeddings scatter-add the scaled g.
    pub fn clipped_sum(&self, factors: &Tensor) -> Result<Tensor> {
        if factors.dims() != [self.batch] {
            return Err(shape_err(
                "clipping factors",
                format!("({},)", self.batch),
                format!("{:?}", factors.dims()),
            ));
        }
        let c = factors.to_dtype(self.dtype())?.to_device(self.device())?;
        match &self.kind {
            Kind::Linear { x, g } => {
                let (b, t, d_in, d_out) = (x.dim(0)?, x.dim(1)?, x.dim(2)?, g.dim(2)?);
                let g_scaled = g
                    .broadcast_mul(&c.reshape((b, 1, 1))?)?
                    .reshape((b * t, d_out))?;
                let x_rows = x.reshape((b * t, d_in))?;
                Ok(g_scaled.t()?.matmul(&x_rows)?)
            }
            Kind::Embedding { ids, g, vocab } => {
                let (b, t, d) = g.dims3()?;
                let g_scaled = g
                    .broadcast_mul(&c.reshape((b, 1, 1))?)?
                    .reshape((b * t, d))?;
                let rows = Tensor::zeros((*vocab, d), g.dtype(), g.device())?;
                Ok(rows.index_add(&ids.flatten_all()?, &g_scaled, 0)?)
            }
            _ => {
                let shape = self.param_shape()?;
                // (1×B)·(B×P): the weighted sum of the small per-example gradients.
                let sum = c
                    .unsqueeze(0)?
                    .matmul(&self.per_example_grads()?.contiguous()?)?;
                Ok(sum.reshape(shape)?)
            }
        }
    }
}

/// Adds the clipped sums of the micro-batches of one logical batch (in parameter order).
#[derive(Debug, Clone, Default)]
pub struct ClippedSumAccumulator {
    sums: Option<Vec<Tensor>>,
    examples: usize,
}

impl ClippedSumAccumulator {
    /// An empty accumulator (a logical batch with no micro-batch yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one micro-batch's output. Its sums must match the earlier ones in number and shape.
    pub fn add(&mut self, output: &ClipOutput) -> Result<()> {
        self.examples += output.factors.len();
        match &mut self.sums {
            None => self.sums = Some(output.sums.clone()),
            Some(sums) => {
                if sums.len() != output.sums.len() {
                    return Err(shape_err(
                        "micro-batch clipped sums",
                        format!("{} parameters", sums.len()),
                        output.sums.len(),
                    ));
                }
                for (acc, s) in sums.iter_mut().zip(&output.sums) {
                    *acc = acc.add(s)?;
                }
            }
        }
        Ok(())
    }

    /// Examples added so far (the realised batch size — for logging only, never for scaling).
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// The summed clipped gradients, or `None` for an empty logical batch (the optimizer then
    /// takes a noise-only step).
    pub fn into_sums(self) -> Option<Vec<Tensor>> {
        self.sums
    }
}

/// The batch size shared by every record; also checks that each parameter has a record and that
/// the records of one parameter agree on its shape.
fn common_batch(params: &[Vec<GradRecord>]) -> Result<usize> {
    let batch = params
        .iter()
        .flatten()
        .next()
        .map_or(0, GradRecord::batch_size);
    for (j, records) in params.iter().enumerate() {
        let Some(first) = records.first() else {
            return Err(shape_err(
                format!("records of parameter {j}"),
                "at least one",
                0,
            ));
        };
        let shape = first.param_shape()?;
        for r in records {
            if r.batch_size() != batch {
                return Err(shape_err(
                    "records of one micro-batch",
                    format!("batch size {batch} for all"),
                    r.batch_size(),
                ));
            }
            if r.param_shape()? != shape {
                return Err(shape_err(
                    format!("records of parameter {j}"),
                    format!("parameter shape {shape:?} for all"),
                    format!("{:?}", r.param_shape()?),
                ));
            }
        }
    }
    Ok(batch)
}
