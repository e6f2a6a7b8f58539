//! Evaluation on a held-out set: accuracy and macro-F1 for classification, perplexity for
//! language modelling. Evaluating on public or held-out data is post-processing of the released
//! model and costs no privacy; evaluating on the *training* data would be a new, unaccounted
//! release.

use candle_core::{D, DType};
use dpselft_model::heads::pool;
use dpselft_model::{Ctx, Head, Model, Pooling};
use serde::{Deserialize, Serialize};

use crate::error::{DpError, Result};
use crate::prefix::PrefixCache;
use crate::sampler::{micro_batch_tokens, split_by_tokens};
use crate::task::{EncodedSet, per_example_loss_masked, to_f64s};

/// What an evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Examples evaluated.
    pub examples: usize,
    /// Mean per-example loss.
    pub loss: f64,
    /// Fraction of correct predictions (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Unweighted mean of the per-class F1 over the classes present in the gold labels or the
    /// predictions (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    /// exp(total next-token cross-entropy / predicted tokens) (language modelling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
}

/// Evaluates `model` on `set` (no gradient, no dropout), in batches of at most `max_tokens`
/// padded tokens.
pub fn evaluate(model: &Model, set: &EncodedSet, max_tokens: usize) -> Result<EvalMetrics> {
    evaluate_cached(model, set, max_tokens, None)
}

/// [`evaluate`] through a frozen-prefix cache of `set` when given: the blocks below its boundary
/// run once per example over all the evaluations that share the cache (the learning-rate
/// trials of a grid cell, the periodic evaluations of a run). The cache must belong to `set`
/// and to this model's frozen blocks.
pub fn evaluate_cached(
    model: &Model,
    set: &EncodedSet,
    max_tokens: usize,
    mut prefix: Option<&mut PrefixCache>,
) -> Result<EvalMetrics> {
    if set.is_empty() {
        return Err(DpError::Config("the evaluation set is empty".into()));
    }
    if let Some(cache) = prefix.as_deref()
        && (cache.len() != set.len() || cache.upto() > model.lowest_trainable_block())
    {
        return Err(DpError::Config(format!(
            "a prefix cache of {} examples at block {} cannot serve a set of {} examples \
             for a model trainable from block {}",
            cache.len(),
            cache.upto(),
            set.len(),
            model.lowest_trainable_block()
        )));
    }
    let all: Vec<usize> = (0..set.len()).collect();
    let mut loss_sum = 0.0;
    let mut nll_tokens = 0.0;
    let mut tokens = 0usize;
    let mut gold = Vec::new();
    let mut pred = Vec::new();
    for mb in split_by_tokens(&all, &set.lengths, micro_batch_tokens(model, max_tokens))? {
        let (batch, labels) = set.batch(model, &mb)?;
        let out = match prefix.as_deref_mut() {
            Some(cache) => {
                let h = cache.states(model, set, &mb, &batch)?;
                model.forward_from(&h, &batch, cache.upto(), Ctx::plain())?
            }
            None => model.forward_train(&batch, Ctx::plain())?,
        }
        .detach();
        let mask = set.loss_mask(model, &mb, batch.ids.dim(1)?)?;
        let losses = per_example_loss_masked(model, &out, &batch, labels.as_ref(), mask.as_ref())?;
        let losses = to_f64s(&losses)?;
        loss_sum += losses.iter().sum::<f64>();
        match &model.head {
            Head::Classifier { .. } => {
                let p: Vec<u32> = out.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?;
                pred.extend(p);
                if let Some(l) = &labels {
                    gold.extend(l.to_vec1::<u32>()?);
                }
            }
            _ => {
                // The LM loss is a mean over the predicted positions of each example.
                for (&i, l) in mb.iter().zip(&losses) {
                    let predicted = set.predicted_tokens(i);
                    nll_tokens += l * predicted as f64;
                    tokens += predicted;
                }
            }
        }
    }
    let n = set.len();
    let mut m = EvalMetrics {
        examples: n,
        loss: loss_sum / n as f64,
        accuracy: None,
        macro_f1: None,
        perplexity: None,
    };
    if matches!(model.head, Head::Classifier { .. }) {
        m.accuracy = Some(accuracy(&gold, &pred));
        m.macro_f1 = Some(macro_f1(&gold, &pred));
    } else if tokens > 0 {
        m.perplexity = Some((nll_tokens / tokens as f64).exp());
    }
    Ok(m)
}

/// The raw outputs of `model` on each example of `set`, in the set's order, for comparing an
/// export with another runtime: a classifier's logits (one per class), a causal LM's logits at
/// the last token (one per vocabulary entry, the next-token prediction after the whole text).
pub fn example_logits(model: &Model, set: &EncodedSet, max_tokens: usize) -> Result<Vec<Vec<f32>>> {
    let all: Vec<usize> = (0..set.len()).collect();
    let mut rows: Vec<(usize, Vec<f32>)> = Vec::with_capacity(set.len());
    for mb in split_by_tokens(&all, &set.lengths, micro_batch_tokens(model, max_tokens))? {
        let (batch, _) = set.batch(model, &mb)?;
        let out = model.forward_train(&batch, Ctx::plain())?.detach();
        let per_example = match &model.head {
            Head::Classifier { .. } => out,
            // The logits at each example's last token, picked as last-token pooling picks.
            _ => pool(&out, &batch, Pooling::LastToken)?,
        };
        let values: Vec<Vec<f32>> = per_example.to_dtype(DType::F32)?.to_vec2()?;
        rows.extend(mb.iter().copied().zip(values));
    }
    rows.sort_by_key(|(i, _)| *i);
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

/// Fraction of positions where `pred` equals `gold` (0 for empty input).
pub fn accuracy(gold: &[u32], pred: &[u32]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    let hits = gold.iter().zip(pred).filter(|(g, p)| g == p).count();
    hits as f64 / gold.len() as f64
}

/// Macro-F1: the unweighted mean of F1 = 2·tp/(2·tp + fp + fn) over every class that occurs in
/// `gold` or `pred` (the scikit-learn convention).
pub fn macro_f1(gold: &[u32], pred: &[u32]) -> f64 {
    let classes: std::collections::BTreeSet<u32> = gold.iter().chain(pred).copied().collect();
    if classes.is_empty() {
        return 0.0;
    }
    let f1s = classes.iter().map(|&c| {
        let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
        for (&g, &p) in gold.iter().zip(pred) {
            match (g == c, p == c) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                _ => {}
            }
        }
        let denom = 2 * tp + fp + fn_;
        if denom == 0 {
            0.0
        } else {
            2.0 * tp as f64 / denom as f64
        }
    });
    f1s.sum::<f64>() / classes.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computation() {
        let gold = [0, 0, 1, 1, 2];
        let pred = [0, 1, 1, 1, 0];
        assert!((accuracy(&gold, &pred) - 0.6).abs() < 1e-12);
        // class 0: tp 1, fp 1, fn 1 → 0.5; class 1: tp 2, fp 1 → 0.8; class 2: fn 1 → 0.
        assert!((macro_f1(&gold, &pred) - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-12);
    }
}
