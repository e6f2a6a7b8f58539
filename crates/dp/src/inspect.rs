//! Inspection of the DP engine's inputs: the *unclipped* per-example gradient norms (over the
//! whole trainable set) and losses of chosen examples, computed exactly as a DP step computes
//! them (one recording forward and one backward per micro-batch, records grouped per trainable
//! parameter, norms from the records), so a clip norm C can be chosen from what the engine sees.
//!
//! Privacy: the norms and losses of private examples are *not* privatised. This is a debugging
//! and calibration tool for public or synthetic data (or for the operator's eyes only).

use std::collections::HashMap;

use dpselft_model::Model;

use crate::bridge::TrainableParams;
use crate::clip::per_example_norms;
use crate::error::Result;
use crate::norms::{GradRecord, NormMethod};
use crate::sampler::{micro_batch_tokens, split_by_tokens};
use crate::step::record_examples;
use crate::task::{EncodedSet, to_f64s};

/// The unclipped per-example gradient norms ‖∇ᵢ‖ over all trainable parameters of `model`
/// (those made trainable by `trainable::apply`) and the per-example losses, of the examples
/// `indices` of `set`, in the order of `indices`.
///
/// The examples are split into micro-batches of at most `max_tokens` padded tokens (as the
/// trainer does; padding does not change any value). The loss of an example is what the trainer
/// minimises ([`per_example_loss_masked`]): the label's cross-entropy for a classifier, the mean
/// next-token cross-entropy over the example's predicted positions for a causal LM. The model
/// has no dropout, so the values are deterministic. A set with prompts
/// ([`EncodedSet::lm_with_prompts`]) is scored on its continuations only, as in training.
///
/// Returns `(norms, losses)`. Errors if the model has no trainable parameter, an index is out of
/// range, or the model has no task head.
pub fn per_example_grad_norms(
    model: &Model,
    set: &EncodedSet,
    indices: &[usize],
    max_tokens: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let params = TrainableParams::of(model)?;
    let micro_batches =
        split_by_tokens(indices, &set.lengths, micro_batch_tokens(model, max_tokens))?;
    let mut by_index: HashMap<usize, (f64, f64)> = HashMap::with_capacity(indices.len());
    for mb in &micro_batches {
        let rec = record_examples(model, &params, set, mb, None)?;
        let loss_values = to_f64s(&rec.losses)?;
        let groups = rec.groups;
        // A parameter without records took no part in the forward pass: its gradient is zero.
        let recorded: Vec<Vec<GradRecord>> = groups
            .groups
            .into_iter()
            .filter(|g| !g.is_empty())
            .collect();
        let norms = if recorded.is_empty() {
            vec![0.0; mb.len()]
        } else {
            per_example_norms(&recorded, NormMethod::Auto)?
        };
        for ((&i, norm), loss) in mb.iter().zip(norms).zip(loss_values) {
            by_index.insert(i, (norm, loss));
        }
    }
    Ok(indices.iter().map(|i| by_index[i]).unzip())
}
