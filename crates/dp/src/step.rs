//! The DP step's data part, written once: record → forward → loss → backward → group the records
//! → clip → accumulate. The trainer, selection, inspection and the benchmarks all call these two
//! functions; the noise and the update are the optimizer's ([`crate::DpOptimizer::step`]).
//!
//! - [`record_grads`]: one micro-batch's recording forward and backward; returns the per-example
//!   losses and the model's records grouped per trainable parameter ([`ParamGroups`]), from
//!   which per-example norms ([`crate::per_example_norms`]) or clipped sums ([`clip_groups`])
//!   follow.
//! - [`clip_sum`]: a whole logical batch: split into micro-batches by a token budget, each
//!   recorded and clipped, the clipped sums added ([`ClippedSumAccumulator`]).

use candle_core::Tensor;
use dpselft_model::{Batch, Ctx, Model, Recorder};

use crate::bridge::{ParamGroups, TrainableParams, clip_groups, group_records};
use crate::clip::{ClippedSumAccumulator, Clipping};
use crate::error::Result;
use crate::norms::NormMethod;
use crate::prefix::PrefixCache;
use crate::sampler::{micro_batch_tokens, split_by_tokens};
use crate::task::{EncodedSet, per_example_loss_masked, to_f64s};

/// The inputs of one physical micro-batch.
#[derive(Debug, Clone, Copy)]
pub struct MicroBatch<'a> {
    /// The padded token batch.
    pub batch: &'a Batch,
    /// The class labels (classification) or `None` (language modelling).
    pub labels: Option<&'a Tensor>,
    /// The LM loss mask (B, T); `None`: the attention mask.
    pub loss_mask: Option<&'a Tensor>,
    /// The hidden states entering block `upto` (B, T, d) and `upto`, when the frozen blocks
    /// below were run beforehand ([`PrefixCache`]); `None`: the whole model runs.
    pub prefix: Option<(&'a Tensor, usize)>,
}

/// What one micro-batch's forward and backward left: the per-example losses (B) and the records
/// grouped per trainable parameter.
#[derive(Debug, Clone)]
pub struct RecordedGrads {
    /// The per-example losses (not privatised).
    pub losses: Tensor,
    /// The records per trainable parameter.
    pub groups: ParamGroups,
}

/// One recording forward and one backward of `mb` through `model`.
///
/// Privacy: the backward pass only fills the records (input, ∂output) of the trainable layers;
/// the gradient store it returns (the batch sums of autograd) is deliberately dropped, so nothing
/// downstream can use an unclipped batch gradient.
pub fn record_grads(
    model: &Model,
    params: &TrainableParams,
    mb: MicroBatch<'_>,
) -> Result<RecordedGrads> {
    let recorder = Recorder::new();
    let ctx = Ctx::recording(&recorder);
    let out = match mb.prefix {
        Some((h, upto)) => model.forward_from(h, mb.batch, upto, ctx)?,
        None => model.forward_train(mb.batch, ctx)?,
    };
    let losses = per_example_loss_masked(model, &out, mb.batch, mb.labels, mb.loss_mask)?;
    losses.sum_all()?.backward()?;
    // The losses' graph holds every activation of the forward; the records keep only the ones
    // clipping needs. Letting go of the graph here frees the rest before the records are grouped.
    drop(out);
    let losses = losses.detach();
    let groups = group_records(recorder.take(), params, &mb.batch.attn)?;
    Ok(RecordedGrads { losses, groups })
}

/// [`record_grads`] for the examples `indices` of `set`, through `prefix` when given (its
/// states are computed on first use).
pub fn record_examples(
    model: &Model,
    params: &TrainableParams,
    set: &EncodedSet,
    indices: &[usize],
    prefix: Option<&mut PrefixCache>,
) -> Result<RecordedGrads> {
    let (b, labels) = set.batch(model, indices)?;
    let states = match prefix {
        Some(cache) => Some((cache.states(model, set, indices, &b)?, cache.upto())),
        None => None,
    };
    let mask = set.loss_mask(model, indices, b.ids.dim(1)?)?;
    record_grads(
        model,
        params,
        MicroBatch {
            batch: &b,
            labels: labels.as_ref(),
            loss_mask: mask.as_ref(),
            prefix: states.as_ref().map(|(h, upto)| (h, *upto)),
        },
    )
}

/// The clipped sums of a logical batch, and what the step's metrics need.
#[derive(Debug)]
pub struct ClippedBatch {
    /// Σ_i c_i g_i per trainable parameter, in [`TrainableParams`] order (`None`: empty batch).
    pub sums: Option<Vec<Tensor>>,
    /// The realised batch size.
    pub examples: usize,
    /// Σ of the per-example losses (not privatised).
    pub loss_sum: f64,
    /// Examples whose gradient was scaled down (c_i < 1).
    pub clipped: usize,
    /// Physical micro-batches the batch was split into.
    pub micro_batches: usize,
}

/// Σ_i c_i g_i over the examples `batch` of `set`: micro-batches of at most `max_tokens` padded
/// tokens (fewer for a large LM vocabulary: [`micro_batch_tokens`]), each recorded
/// ([`record_examples`], through `prefix` when given) and clipped
/// ([`clip_groups`]), the sums added.
///
/// Guarantee: as [`clip_groups`] — every example's contribution over all trainable parameters
/// has norm ≤ C (for a bounded `clipping`); splitting into micro-batches changes nothing.
pub fn clip_sum(
    model: &Model,
    params: &TrainableParams,
    set: &EncodedSet,
    batch: &[usize],
    mut prefix: Option<&mut PrefixCache>,
    clipping: &Clipping,
    max_tokens: usize,
) -> Result<ClippedBatch> {
    let max_tokens = micro_batch_tokens(model, max_tokens);
    let micro_batches = split_by_tokens(batch, &set.lengths, max_tokens)?;
    let mut acc = ClippedSumAccumulator::new();
    let (mut loss_sum, mut clipped) = (0.0, 0usize);
    for indices in &micro_batches {
        let rec = record_examples(model, params, set, indices, prefix.as_deref_mut())?;
        loss_sum += to_f64s(&rec.losses)?.iter().sum::<f64>();
        let out = clip_groups(&rec.groups, params, clipping, NormMethod::Auto)?;
        clipped += out.factors.iter().filter(|&&c| c < 1.0).count();
        acc.add(&out)?;
    }
    Ok(ClippedBatch {
        examples: acc.examples(),
        sums: acc.into_sums(),
        loss_sum,
        clipped,
        micro_batches: micro_batches.len(),
    })
}
