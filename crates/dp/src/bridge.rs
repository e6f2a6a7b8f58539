//! From the model's records to the engine's [`GradRecord`]s, grouped per trainable parameter.
//!
//! After one forward (recording) and one backward on a micro-batch, the model's
//! [`Recorder`](dpselft_model::Recorder) holds, per recorded layer, its input and the gradient at
//! its output. This module turns them into one group of [`GradRecord`]s per trainable parameter,
//! in a fixed parameter order ([`TrainableParams`]), which is what [`clip_and_sum`] and the
//! optimizer consume:
//! - a linear record gives its weight (if trainable) a [`GradRecord::linear`] and its bias (if
//!   trainable) a [`GradRecord::bias`] from the same output gradient;
//! - a norm record gives γ a [`GradRecord::scale`] (x̂, g) and β a [`GradRecord::bias`];
//! - an embedding record gives the table a [`GradRecord::embedding`] (ids, g, vocabulary size);
//! - a tied weight (an LM head sharing the token embedding) records twice under two keys with the
//!   same `param`: both records land in that parameter's group, so their cross terms count.
//!
//! Padding is handled explicitly per record: the output gradient of a record over token positions
//! (its T equals the batch's) is multiplied by the attention mask once ([`mask_padding`]), so a
//! padded position contributes exactly zero whatever the model left there; a record over one
//! position per example (the pooled input of a classification head) has no padding to mask.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Tensor, Var};
use dpselft_model::{Model, Record, RecordKind};

use crate::clip::{ClipOutput, Clipping, clip_and_sum};
use crate::error::{DpError, Result, shape_err};
use crate::norms::{GradRecord, NormMethod, Padding, mask_padding};

/// The trainable parameters of a model in a fixed order (by name): the order of the groups, of
/// the clipped sums and of the optimizer's state.
#[derive(Debug, Clone)]
pub struct TrainableParams {
    /// Parameter names, sorted.
    pub names: Vec<String>,
    /// The variables, in the order of `names`.
    pub vars: Vec<Var>,
}

impl TrainableParams {
    /// The model's trainable variables (those made trainable by `trainable::apply`), by name.
    /// Errors if there are none: a run with nothing to train is a configuration mistake.
    pub fn of(model: &Model) -> Result<Self> {
        let (names, vars): (Vec<String>, Vec<Var>) = model
            .params
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .unzip();
        if names.is_empty() {
            return Err(DpError::Config(
                "the model has no trainable parameter (check the trainable spec)".into(),
            ));
        }
        Ok(Self { names, vars })
    }

    /// Number of trainable parameters (tensors).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false (see [`Self::of`]).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The total number of trainable scalars.
    pub fn num_scalars(&self) -> usize {
        self.vars.iter().map(|v| v.as_tensor().elem_count()).sum()
    }

    /// The current values by name (detached): what a checkpoint or a finished run saves.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.names
            .iter()
            .zip(&self.vars)
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect()
    }

    /// Sets every variable from `saved` by name. Errors, naming `what` was loaded, if one is
    /// missing or has another shape (a checkpoint or a saved run of another trainable set).
    pub fn restore(&self, saved: &HashMap<String, Tensor>, what: &str) -> Result<()> {
        for (name, var) in self.names.iter().zip(&self.vars) {
            let t = saved.get(name).ok_or_else(|| {
                DpError::State(format!("{what} lacks trainable parameter `{name}`"))
            })?;
            if t.dims() != var.dims() {
                return Err(DpError::State(format!(
                    "{what}: parameter `{name}` has shape {:?}, the model {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Whether a parameter is exempt from weight decay (biases and norm weights, the usual
    /// practice; a decision on public information only).
    pub fn weight_decay_mask(&self) -> Vec<bool> {
        self.names
            .iter()
            .map(|n| !dpselft_model::trainable::is_bitfit_param(n))
            .collect()
    }
}

/// The records of one micro-batch, one group per trainable parameter (in [`TrainableParams`]
/// order). A parameter that took no part in the forward pass has an empty group: its gradient is
/// zero for every example.
#[derive(Debug, Clone)]
pub struct ParamGroups {
    /// `groups[j]`: the records of parameter j (one, or two for a tied weight; none if unused).
    pub groups: Vec<Vec<GradRecord>>,
    /// Batch size B of the micro-batch.
    pub batch: usize,
}

/// Group the model's records of one micro-batch per trainable parameter.
///
/// `records`: what `Recorder::take` returned after forward + backward; `params`: the trainable
/// set; `attn`: the micro-batch's B×T attention mask (1 = real token), applied as the padding mask
/// of every record over token positions.
///
/// Errors if a record has no output gradient (backward did not reach it) or an unexpected shape.
/// Records of frozen parameters (a frozen weight whose bias is trainable) are used for the
/// trainable part only.
pub fn group_records(
    records: BTreeMap<String, Record>,
    params: &TrainableParams,
    attn: &Tensor,
) -> Result<ParamGroups> {
    let (batch, tokens) = attn.dims2()?;
    let index: BTreeMap<&str, usize> = params
        .names
        .iter()
        .enumerate()
        .map(|(j, n)| (n.as_str(), j))
        .collect();
    let mut groups: Vec<Vec<GradRecord>> = vec![Vec::new(); params.len()];
    for (key, record) in records {
        let weight = index.get(record.param.as_str()).copied();
        let bias = record.bias.as_deref().and_then(|b| index.get(b).copied());
        if weight.is_none() && bias.is_none() {
            continue;
        }
        let g = record.grad_output.as_ref().ok_or_else(|| {
            DpError::Config(format!(
                "record `{key}` has no output gradient: backward did not reach it"
            ))
        })?;
        if g.dim(0)? != batch {
            return Err(shape_err(
                format!("record `{key}`: output gradient"),
                format!("batch size {batch}"),
                format!("{:?}", g.dims()),
            ));
        }
        // Records over token positions are masked; a per-example record (T = 1 after pooling,
        // or rank 2) has no padding to mask. The mask is applied once, here, and the masked g
        // shared by the weight's and the bias's records: masking in each would hold two copies.
        let g = &if g.rank() == 3 && g.dim(1)? == tokens {
            mask_padding(g, attn, &format!("record `{key}`"))?
        } else {
            g.clone()
        };
        if let Some(j) = weight {
            let r = match record.kind {
                RecordKind::Linear => GradRecord::linear(&record.input, g, Padding::GradIsZero)?,
                RecordKind::Norm => GradRecord::scale(&record.input, g, Padding::GradIsZero)?,
                RecordKind::Embedding => {
                    let vocab = *record.param_dims.first().ok_or_else(|| {
                        shape_err(format!("record `{key}`: table shape"), "V×d", "rank 0")
                    })?;
                    GradRecord::embedding(&record.input, g, vocab, Padding::GradIsZero)?
                }
            };
            groups[j].push(r);
        }
        if let Some(j) = bias {
            groups[j].push(GradRecord::bias(g, Padding::GradIsZero)?);
        }
    }
    Ok(ParamGroups { groups, batch })
}

/// [`clip_and_sum`] over every trainable parameter, a parameter without records contributing a
/// zero sum. Returns the sums in [`TrainableParams`] order.
///
/// Guarantee: as [`clip_and_sum`] — each example's clipped contribution over *all* trainable
/// parameters has norm ≤ C. The model's update is built from these sums only (never from
/// autograd's batch gradient), so a parameter the records do not cover cannot leak an unclipped
/// gradient: it only ever receives the noise.
pub fn clip_groups(
    groups: &ParamGroups,
    params: &TrainableParams,
    clipping: &Clipping,
    method: NormMethod,
) -> Result<ClipOutput> {
    let present: Vec<usize> = (0..params.len())
        .filter(|&j| !groups.groups[j].is_empty())
        .collect();
    let recorded: Vec<Vec<GradRecord>> =
        present.iter().map(|&j| groups.groups[j].clone()).collect();
    let out = clip_and_sum(&recorded, clipping, method)?;
    let mut sums = Vec::with_capacity(params.len());
    let mut next = out.sums.into_iter();
    for (j, var) in params.vars.iter().enumerate() {
        if present.contains(&j) {
            let s = next
                .next()
                .ok_or_else(|| shape_err("clipped sums", "one per recorded parameter", "fewer"))?;
            sums.push(s.to_dtype(var.dtype())?);
        } else {
            sums.push(var.as_tensor().zeros_like()?);
        }
    }
    let (norms, factors) = if recorded.is_empty() {
        // Nothing recorded at all: every gradient is zero.
        let b = groups.batch;
        (
            if matches!(clipping, Clipping::Off) {
                Vec::new()
            } else {
                vec![0.0; b]
            },
            clipping.factors(&vec![0.0; b])?,
        )
    } else {
        (out.norms, out.factors)
    };
    Ok(ClipOutput {
        sums,
        norms,
        factors,
    })
}
