//! Per-example squared gradient norms from what one ordinary backward pass leaves behind.
//!
//! The model records, for each trainable parameter, a [`GradRecord`]: for a linear map
//! y = x Wᵀ its input x (B×T×d_in) and the gradient at its output g = ∂L/∂y (B×T×d_out); for
//! other kinds the analogous pair. Example i's gradient is a function of (xᵢ, gᵢ) alone, so its
//! norm can be computed without ever holding B gradients of the layer's size ("book-keeping").
//!
//! Closed forms, per example i (rows t, s are token positions):
//! - linear weight: ∇W = gᵢᵀxᵢ, ‖∇W‖² = ⟨xᵢxᵢᵀ, gᵢgᵢᵀ⟩ = Σ_{t,s} (x_t·x_s)(g_t·g_s)
//!   ("ghost", ~T²(d_in+d_out)), or by materialising gᵢᵀxᵢ (~T·d_in·d_out): cheaper one wins;
//! - bias: ∇b = Σ_t g_t;
//! - embedding rows: ∇E = Σ_t e_{id_t} g_tᵀ (a scatter-add), so repeated tokens add up:
//!   ‖∇E‖² = Σ_{t,s} [id_t = id_s] (g_t·g_s);
//! - elementwise scale (norm-layer weight, y = x̂ ⊙ w): ∇w = Σ_t g_t ⊙ x̂_t;
//! - direct: the caller already has the B per-example gradients (small parameters).
//!
//! A parameter used twice (a tied weight) has two records whose per-example gradients add up;
//! the norm of the sum needs their cross term ([`GradRecord::inner_with`]). Linear maps that read
//! the *same* input tensor (q, k, v) share one Gram matrix xxᵀ within a norm pass.
//!
//! Padding: padded positions must contribute nothing. Every constructor takes a [`Padding`]
//! that says how this is guaranteed, so no call site can forget it.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Shape, Tensor, TensorId};

use dpselft_model::ops::batched::batched_a_bt;
use dpselft_model::ops::kernels::{sum_per_example, sum_tokens};

use crate::error::{Result, invalid, shape_err};

/// How a record's padded token positions are neutralised.
#[derive(Debug, Clone)]
pub enum Padding {
    /// No padding, or the caller guarantees g = 0 at every padded position (true when the loss
    /// ignores them and attention never reads them). Nothing is done.
    GradIsZero,
    /// A B×T mask (1 = real token, 0 = padding; any dtype): g is multiplied by it, so padded
    /// positions contribute exactly zero to norms and sums.
    Mask(Tensor),
}

/// How the norm of a linear weight's per-example gradient is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormMethod {
    /// The cheaper of the two for the record's shape (see [`GradRecord::resolve_method`]).
    #[default]
    Auto,
    /// ⟨xxᵀ, ggᵀ⟩: cost ~B·T²·(d_in+d_out), memory B·T².
    Ghost,
    /// ‖gᵀx‖² by forming gᵀx: cost ~B·T·d_in·d_out, memory B·d_in·d_out.
    Materialize,
}

/// One use of a trainable parameter in one micro-batch, from which its per-example gradients
/// follow. A parameter used once has one record; a tied weight (an LM head sharing the token
/// embedding) has one per use, and [`GradRecord::inner_with`] gives their cross terms.
///
/// All tensors share the batch dimension B (first) and, where there is one, the token dimension T.
/// Cloning is cheap (candle tensors are reference-counted).
#[derive(Debug, Clone)]
pub struct GradRecord {
    pub(crate) kind: Kind,
    pub(crate) batch: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// x: B×T×d_in, g: B×T×d_out; the parameter is W: d_out×d_in.
    Linear { x: Tensor, g: Tensor },
    /// g: B×T×d; the parameter is b: d.
    Bias { g: Tensor },
    /// ids: B×T (u32), g: B×T×d; the parameter is E: vocab×d.
    Embedding {
        ids: Tensor,
        g: Tensor,
        vocab: usize,
    },
    /// x̂: B×T×d, g: B×T×d; the parameter is w: d.
    Scale { x_hat: Tensor, g: Tensor },
    /// grads: B×(parameter shape).
    Direct { grads: Tensor },
}

impl GradRecord {
    /// The weight W (d_out×d_in) of a linear map y = x Wᵀ (+ b).
    ///
    /// `x`: B×T×d_in (or B×d_in for one position per example, e.g. a classification head);
    /// `g` = ∂L/∂y: B×T×d_out (or B×d_out). The same (x, g) pair also serves a LoRA factor:
    /// record A with (x, g·B) and B with (x·Aᵀ, g).
    pub fn linear(x: &Tensor, g: &Tensor, padding: Padding) -> Result<Self> {
        let (x, g) = (
            as_btd(x, "linear record: x")?,
            as_btd(g, "linear record: g")?,
        );
        same_bt(&x, &g, "linear record: x and g")?;
        let g = apply_padding(g, &padding, "linear record")?;
        Ok(Self {
            batch: x.dim(0)?,
            kind: Kind::Linear { x, g },
        })
    }

    /// A bias b (d) added to an output whose gradient is `g`: B×T×d (or B×d).
    pub fn bias(g: &Tensor, padding: Padding) -> Result<Self> {
        let g = apply_padding(as_btd(g, "bias record: g")?, &padding, "bias record")?;
        Ok(Self {
            batch: g.dim(0)?,
            kind: Kind::Bias { g },
        })
    }

    /// Embedding rows E (vocab×d) looked up at `ids` (B×T, integer dtype) with output gradient
    /// `g` (B×T×d). Also serves position embeddings (ids = positions) and token types.
    ///
    /// Errors if an id is negative or ≥ `vocab`.
    pub fn embedding(ids: &Tensor, g: &Tensor, vocab: usize, padding: Padding) -> Result<Self> {
        let g = as_btd(g, "embedding record: g")?;
        let ids = match ids.rank() {
            1 => ids.unsqueeze(1)?,
            2 => ids.clone(),
            r => {
                return Err(shape_err(
                    "embedding record: ids",
                    "rank 2 (B×T)",
                    format!("rank {r}"),
                ));
            }
        };
        if !matches!(ids.dtype(), DType::U8 | DType::U32 | DType::I64) {
            return Err(shape_err(
                "embedding record: ids",
                "an integer dtype",
                format!("{:?}", ids.dtype()),
            ));
        }
        if ids.dims() != &g.dims()[..2] {
            return Err(shape_err(
                "embedding record: ids",
                format!("B×T = {:?}", &g.dims()[..2]),
                format!("{:?}", ids.dims()),
            ));
        }
        if ids.elem_count() > 0 {
            let as_f = ids.to_dtype(DType::F64)?.flatten_all()?;
            let (lo, hi) = (
                as_f.min(0)?.to_scalar::<f64>()?,
                as_f.max(0)?.to_scalar::<f64>()?,
            );
            if lo < 0.0 || hi >= vocab as f64 {
                return Err(invalid(
                    "embedding id",
                    if lo < 0.0 { lo } else { hi },
                    format!("must be in [0, vocab = {vocab})"),
                ));
            }
        }
        let ids = ids.to_dtype(DType::U32)?;
        let g = apply_padding(g, &padding, "embedding record")?;
        Ok(Self {
            batch: g.dim(0)?,
            kind: Kind::Embedding { ids, g, vocab },
        })
    }

    /// An elementwise scale w (d) as in a norm layer y = x̂ ⊙ w (+ β): `x_hat` is the normalised
    /// input, `g` the output gradient, both B×T×d (or B×d). The shift β is a [`Self::bias`].
    pub fn scale(x_hat: &Tensor, g: &Tensor, padding: Padding) -> Result<Self> {
        let (x_hat, g) = (
            as_btd(x_hat, "scale record: x_hat")?,
            as_btd(g, "scale record: g")?,
        );
        if x_hat.dims() != g.dims() {
            return Err(shape_err(
                "scale record: g",
                format!("the shape of x_hat {:?}", x_hat.dims()),
                format!("{:?}", g.dims()),
            ));
        }
        let g = apply_padding(g, &padding, "scale record")?;
        Ok(Self {
            batch: g.dim(0)?,
            kind: Kind::Scale { x_hat, g },
        })
    }

    /// Per-example gradients given directly: `grads` is B×(parameter shape). For small parameters
    /// whose per-example gradient the model computes itself. Padding must already be accounted for.
    pub fn direct(grads: &Tensor) -> Result<Self> {
        if grads.rank() < 2 {
            return Err(shape_err(
                "direct record: grads",
                "rank ≥ 2 (B × parameter shape)",
                format!("rank {}", grads.rank()),
            ));
        }
        Ok(Self {
            batch: grads.dim(0)?,
            kind: Kind::Direct {
                grads: grads.clone(),
            },
        })
    }

    /// The batch size B of the record.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// The shape of the parameter (and of its clipped sum).
    pub fn param_shape(&self) -> Result<Shape> {
        Ok(match &self.kind {
            Kind::Linear { x, g } => Shape::from((g.dim(2)?, x.dim(2)?)),
            Kind::Bias { g } | Kind::Scale { g, .. } => Shape::from(g.dim(2)?),
            Kind::Embedding { g, vocab, .. } => Shape::from((*vocab, g.dim(2)?)),
            Kind::Direct { grads } => Shape::from(&grads.dims()[1..]),
        })
    }

    /// The device of the record's tensors.
    pub fn device(&self) -> &Device {
        match &self.kind {
            Kind::Linear { g, .. }
            | Kind::Bias { g }
            | Kind::Embedding { g, .. }
            | Kind::Scale { g, .. } => g.device(),
            Kind::Direct { grads } => grads.device(),
        }
    }

    /// The float dtype of the record's gradients.
    pub fn dtype(&self) -> DType {
        match &self.kind {
            Kind::Linear { g, .. }
            | Kind::Bias { g }
            | Kind::Embedding { g, .. }
            | Kind::Scale { g, .. } => g.dtype(),
            Kind::Direct { grads } => grads.dtype(),
        }
    }

    /// The method `method` resolves to for this record: for a linear weight with `Auto`, ghost
    /// when T²(d_in+d_out) ≤ T·d_in·d_out (i.e. T(d_in+d_out) ≤ d_in·d_out), else materialise.
    /// Other kinds have a single closed form and report `Auto`.
    pub fn resolve_method(&self, method: NormMethod) -> NormMethod {
        match (&self.kind, method) {
            (Kind::Linear { x, g }, NormMethod::Auto) => {
                let (t, d_in, d_out) = (x.dims()[1], x.dims()[2], g.dims()[2]);
                if t.saturating_mul(d_in + d_out) <= d_in.saturating_mul(d_out) {
                    NormMethod::Ghost
                } else {
                    NormMethod::Materialize
                }
            }
            (Kind::Linear { .. }, m) => m,
            _ => NormMethod::Auto,
        }
    }

    /// The squared L2 norms of the B per-example gradients of this parameter: a (B,) tensor in
    /// the record's dtype, on its device.
    pub fn sq_norms(&self, method: NormMethod) -> Result<Tensor> {
        self.sq_norms_cached(method, &mut InputGrams::default())
    }

    /// [`Self::sq_norms`], reusing the Gram matrix xxᵀ of an input shared by several linear maps
    /// (q, k and v read the same x: pass the same tensor to their records and it is formed once).
    pub(crate) fn sq_norms_cached(
        &self,
        method: NormMethod,
        grams: &mut InputGrams,
    ) -> Result<Tensor> {
        match &self.kind {
            Kind::Linear { x, g } => match self.resolve_method(method) {
                NormMethod::Materialize => {
                    // gᵢᵀxᵢ for all i at once: B×d_out×d_in, dropped right after.
                    Ok(sum_per_example(&g.t()?.matmul(x)?.sqr()?)?)
                }
                _ => {
                    // ⟨xxᵀ, ggᵀ⟩: two B×T×T Gram matrices, never the d_out×d_in gradient.
                    let gram_x = grams.of(x)?;
                    let gram_g = batched_a_bt(g, g)?;
                    Ok(sum_per_example(&(gram_x * gram_g)?)?)
                }
            },
            Kind::Embedding { ids, g, .. } => {
                // Positions with the same id add into the same row, so their gradients interact:
                // ‖∇E‖² = Σ_{t,s} [id_t = id_s] g_t·g_s. (Padded positions have g = 0.)
                let same_id = ids
                    .unsqueeze(2)?
                    .broadcast_eq(&ids.unsqueeze(1)?)?
                    .to_dtype(g.dtype())?;
                let gram_g = batched_a_bt(g, g)?;
                Ok(sum_per_example(&(same_id * gram_g)?)?)
            }
            _ => Ok(self.per_example_grads()?.sqr()?.sum(1)?),
        }
    }

    /// The B per-example inner products ⟨∇ᵢ(self), ∇ᵢ(other)⟩ of two records of the *same*
    /// parameter (a tied weight, e.g. an LM head sharing the token embedding): the cross term of
    /// ‖∇ᵢ(self) + ∇ᵢ(other)‖². Supported pairs: linear–linear, linear–embedding (the tied head),
    /// embedding–embedding, and any two of bias/scale/direct; others are an error.
    pub fn inner_with(&self, other: &GradRecord) -> Result<Tensor> {
        let (shape_a, shape_b) = (self.param_shape()?, other.param_shape()?);
        if shape_a != shape_b || self.batch != other.batch {
            return Err(shape_err(
                "two records of one parameter",
                format!(
                    "the same parameter shape {shape_a:?} and batch {}",
                    self.batch
                ),
                format!("{shape_b:?} and batch {}", other.batch),
            ));
        }
        match (&self.kind, &other.kind) {
            (Kind::Linear { x: xa, g: ga }, Kind::Linear { x: xb, g: gb }) => {
                // ⟨gₐᵀxₐ, g_bᵀx_b⟩ = Σ_{t,s} (xₐ,t·x_b,s)(gₐ,t·g_b,s).
                let cross_x = batched_a_bt(xa, xb)?;
                let cross_g = batched_a_bt(ga, gb)?;
                Ok(sum_per_example(&(cross_x * cross_g)?)?)
            }
            (Kind::Linear { x, g }, Kind::Embedding { ids, g: ge, .. })
            | (Kind::Embedding { ids, g: ge, .. }, Kind::Linear { x, g }) => {
                // Head W = E (vocab×d): ⟨gᵀx, Σ_s e_{id_s} g_e,sᵀ⟩ = Σ_{t,s} g[t, id_s] (x_t·g_e,s).
                let (b, t_lin, t_emb) = (g.dim(0)?, g.dim(1)?, ids.dim(1)?);
                let cols = ids
                    .unsqueeze(1)?
                    .broadcast_as((b, t_lin, t_emb))?
                    .contiguous()?;
                let g_at_ids = g.contiguous()?.gather(&cols, 2)?; // B×T_lin×T_emb
                let cross_x = batched_a_bt(x, ge)?; // B×T_lin×T_emb
                Ok(sum_per_example(&(g_at_ids * cross_x)?)?)
            }
            (Kind::Embedding { ids: ia, g: ga, .. }, Kind::Embedding { ids: ib, g: gb, .. }) => {
                let same_id = ia
                    .unsqueeze(2)?
                    .broadcast_eq(&ib.unsqueeze(1)?)?
                    .to_dtype(ga.dtype())?;
                Ok(sum_per_example(&(same_id * batched_a_bt(ga, gb)?)?)?)
            }
            (Kind::Linear { .. } | Kind::Embedding { .. }, _)
            | (_, Kind::Linear { .. } | Kind::Embedding { .. }) => Err(shape_err(
                "two records of one parameter",
                "linear/embedding pairs or small (bias, scale, direct) pairs",
                "a large record tied to a small one",
            )),
            _ => Ok((self.per_example_grads()? * other.per_example_grads()?)?.sum(1)?),
        }
    }

    /// B×P per-example gradients for the kinds whose gradient is small (bias, scale, direct).
    pub(crate) fn per_example_grads(&self) -> Result<Tensor> {
        Ok(match &self.kind {
            Kind::Bias { g } => sum_tokens(g)?,
            Kind::Scale { x_hat, g } => sum_tokens(&(g * x_hat)?)?,
            Kind::Direct { grads } => grads.flatten_from(1)?,
            Kind::Linear { .. } | Kind::Embedding { .. } => {
                return Err(shape_err(
                    "per-example gradients",
                    "a bias, scale or direct record",
                    "a linear or embedding record",
                ));
            }
        })
    }
}

/// Gram matrices xxᵀ (B×T×T) of layer inputs, keyed by tensor identity, for one norm pass.
#[derive(Default)]
pub(crate) struct InputGrams(HashMap<TensorId, Tensor>);

impl InputGrams {
    fn of(&mut self, x: &Tensor) -> Result<Tensor> {
        if let Some(gram) = self.0.get(&x.id()) {
            return Ok(gram.clone());
        }
        let gram = batched_a_bt(x, x)?;
        self.0.insert(x.id(), gram.clone());
        Ok(gram)
    }
}

/// View a B×T×d or B×d float tensor as B×T×d.
fn as_btd(t: &Tensor, what: &str) -> Result<Tensor> {
    if !t.dtype().is_float() {
        return Err(shape_err(what, "a float dtype", format!("{:?}", t.dtype())));
    }
    match t.rank() {
        2 => Ok(t.unsqueeze(1)?),
        3 => Ok(t.clone()),
        r => Err(shape_err(
            what,
            "rank 3 (B×T×d) or 2 (B×d)",
            format!("rank {r} {:?}", t.dims()),
        )),
    }
}

fn same_bt(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.dims()[..2] != b.dims()[..2] || a.dtype() != b.dtype() {
        return Err(shape_err(
            what,
            format!("the same B×T and dtype as {:?} {:?}", a.dims(), a.dtype()),
            format!("{:?} {:?}", b.dims(), b.dtype()),
        ));
    }
    Ok(())
}

fn apply_padding(g: Tensor, padding: &Padding, what: &str) -> Result<Tensor> {
    match padding {
        Padding::GradIsZero => Ok(g),
        Padding::Mask(mask) => mask_padding(&g, mask, what),
    }
}

/// g (B×T×d) with the positions where `mask` (B×T, 1 = real token) is 0 set to zero: what
/// [`Padding::Mask`] does, for a caller that shares one masked g between several records.
pub fn mask_padding(g: &Tensor, mask: &Tensor, what: &str) -> Result<Tensor> {
    if g.rank() < 2 || mask.dims() != &g.dims()[..2] {
        return Err(shape_err(
            format!("{what}: padding mask"),
            format!("B×T = {:?}", g.dims().get(..2).unwrap_or(g.dims())),
            format!("{:?}", mask.dims()),
        ));
    }
    let mask = mask.to_dtype(g.dtype())?.unsqueeze(D::Minus1)?;
    Ok(g.broadcast_mul(&mask)?)
}
