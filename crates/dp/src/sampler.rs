//! Poisson sampling of logical batches, and their split into physical micro-batches.
//!
//! The privacy analysis (subsampled Gaussian mechanism, add/remove-one adjacency) assumes each
//! example joins each logical batch independently with probability q. The split into micro-batches
//! only bounds memory: the clipped sums of the micro-batches are added before noise, so it changes
//! nothing in the analysis.

use crate::error::{Result, invalid, shape_err};
use dpselft_model::{Head, Model};

use crate::rng::NoiseRng;

/// Poisson sampler over `n` examples with rate `q`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoissonSampler {
    n: usize,
    q: f64,
}

impl PoissonSampler {
    /// A sampler including each of `n` examples independently with probability `q` ∈ (0, 1].
    pub fn new(n: usize, q: f64) -> Result<Self> {
        if n == 0 {
            return Err(invalid("dataset size n", n, "the dataset is empty"));
        }
        if !(q > 0.0 && q <= 1.0) {
            return Err(invalid("sampling rate q", q, "must be in (0, 1]"));
        }
        Ok(Self { n, q })
    }

    /// A sampler whose expected batch size is `expected_batch` (q = B / n).
    pub fn with_expected_batch(n: usize, expected_batch: f64) -> Result<Self> {
        if !(expected_batch > 0.0 && expected_batch <= n as f64) {
            return Err(invalid(
                "expected batch size B",
                expected_batch,
                format!("must be in (0, n = {n}]"),
            ));
        }
        Self::new(n, expected_batch / n as f64)
    }

    /// The sampling rate q (what the accountant needs).
    pub fn rate(&self) -> f64 {
        self.q
    }

    /// The number of examples n.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: a sampler has at least one example.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The expected batch size q·n: the divisor of the noisy sum (never the realised size).
    pub fn expected_batch_size(&self) -> f64 {
        self.q * self.n as f64
    }

    /// One logical batch: the indices (ascending) of the examples drawn. May be empty; an empty
    /// batch must still take a noise-only step.
    ///
    /// Privacy: each index is included independently with probability exactly q (up to 2⁻⁵³),
    /// using one 64-bit draw of `rng` per example, so the batch composition is independent of the
    /// data — the Poisson subsampling the accountant assumes.
    pub fn sample(&self, rng: &mut NoiseRng) -> Vec<usize> {
        (0..self.n).filter(|_| rng.uniform_f64() < self.q).collect()
    }
}

/// Floats of one micro-batch's LM logits (tokens × vocabulary) that [`micro_batch_tokens`]
/// allows: 2²⁵, 128 MiB per f32 copy (the logits, their log-softmax and their gradient each
/// hold one).
const LM_LOGITS_BUDGET: usize = 1 << 25;

/// The padded tokens per micro-batch for `model`: `max_tokens`, capped for a causal-LM head so
/// that one micro-batch's logits stay within [`LM_LOGITS_BUDGET`]. The logits are what a large
/// vocabulary makes huge: at SmolLM2's 49,152 tokens, 4,096 tokens' logits are 0.8 GB per copy,
/// and with the activations kept to backpropagate through its 30 blocks one DP-LoRA step of
/// 64 × 64 tokens ran out of 24 GB. The cap also bounds those activations (they scale with the
/// micro-batch). Micro-batching changes no result ([`split_by_tokens`]).
pub fn micro_batch_tokens(model: &Model, max_tokens: usize) -> usize {
    if model.head != Head::CausalLm {
        return max_tokens;
    }
    let cap = LM_LOGITS_BUDGET / model.arch().vocab_size().max(1);
    max_tokens.min(cap.max(1))
}

/// Split a logical batch into micro-batches of at most `max_tokens` *padded* tokens each
/// (micro-batch size × its longest example), to bound the memory of one forward/backward.
///
/// `lengths[i]` is the token length of example `i` (indexed by dataset index, as in `batch`).
/// Examples are grouped longest-first to reduce padding; the result covers every index of `batch`
/// exactly once. An example longer than `max_tokens` on its own gets a micro-batch of its own
/// (examples are never dropped: dropping would bias the step).
///
/// Privacy: none needed — the split is invisible to the analysis as long as all micro-batches of a
/// logical batch are summed before noise.
pub fn split_by_tokens(
    batch: &[usize],
    lengths: &[usize],
    max_tokens: usize,
) -> Result<Vec<Vec<usize>>> {
    if max_tokens == 0 {
        return Err(invalid("micro-batch token budget", 0, "must be ≥ 1"));
    }
    if let Some(&bad) = batch.iter().find(|&&i| i >= lengths.len()) {
        return Err(shape_err(
            "micro-batch split: example index",
            format!("< {} (the number of lengths)", lengths.len()),
            bad,
        ));
    }
    let mut order = batch.to_vec();
    // Longest first; ties by index so the split is deterministic.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));

    let mut micro_batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0usize;
    for i in order {
        // Sorted longest-first, so the current micro-batch's longest is its first example.
        let padded_len = if current.is_empty() {
            lengths[i]
        } else {
            longest
        };
        let cost = (current.len() + 1).saturating_mul(padded_len.max(1));
        if !current.is_empty() && cost > max_tokens {
            micro_batches.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            longest = lengths[i];
        }
        current.push(i);
    }
    if !current.is_empty() {
        micro_batches.push(current);
    }
    Ok(micro_batches)
}
