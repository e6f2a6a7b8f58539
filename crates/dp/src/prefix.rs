//! The frozen-prefix cache: hidden states entering the lowest trainable block, kept per example.
//!
//! When the embeddings and blocks `0..upto` are frozen, what they compute for an example never
//! changes during training, so it is computed once (the first time the example is drawn) and
//! reused in every later step, epoch or selection candidate (docs/design.md, §4). The states are
//! stored per example without padding (T_i × d) and re-padded with zeros for each micro-batch:
//! with right padding the real tokens never attend to the padding (BERT masks it, Llama is
//! causal), so the padded rows' contents change nothing that is scored.
//!
//! Privacy: a pure function of the frozen weights and the example; it changes no clipping or
//! noise, so it is invisible to the accountant.

use candle_core::Tensor;
use dpselft_model::{Batch, Model};

use crate::error::{DpError, Result};
use crate::task::EncodedSet;

/// The frozen-prefix caches of a run: its training set's and its held-out set's. Cloning is
/// cheap (the states are shared, not copied), so one filled pair can serve several runs of the
/// same model and data ([`crate::DpTrainer::reuse_prefix_caches`]).
#[derive(Debug, Clone, Default)]
pub struct PrefixCaches {
    /// The training set's.
    pub train: Option<PrefixCache>,
    /// The held-out set's.
    pub eval: Option<PrefixCache>,
}

/// Hidden states entering block `upto`, per example of one [`EncodedSet`].
#[derive(Debug, Clone)]
pub struct PrefixCache {
    upto: usize,
    /// (T_i, d) per example, once computed.
    states: Vec<Option<Tensor>>,
}

impl PrefixCache {
    /// An empty cache for the `examples` examples of a set, at block boundary `upto`
    /// (0 = the embeddings' output).
    pub fn new(upto: usize, examples: usize) -> Self {
        Self {
            upto,
            states: vec![None; examples],
        }
    }

    /// The block boundary the states enter.
    pub fn upto(&self) -> usize {
        self.upto
    }

    /// Examples of the set the cache belongs to.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the set the cache belongs to is empty.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Whether this cache can stand in for `other`: the same boundary and the same number of
    /// examples (the caller vouches that both belong to the same set and frozen weights).
    pub fn matches(&self, other: &Self) -> bool {
        self.upto == other.upto && self.states.len() == other.states.len()
    }

    /// Examples whose states are cached.
    pub fn cached(&self) -> usize {
        self.states.iter().filter(|s| s.is_some()).count()
    }

    /// Computes the states of every example of `set` not cached yet, in micro-batches of at
    /// most `max_tokens` padded tokens.
    pub fn fill_all(&mut self, model: &Model, set: &EncodedSet, max_tokens: usize) -> Result<()> {
        let missing: Vec<usize> = (0..set.len())
            .filter(|&i| self.states[i].is_none())
            .collect();
        for mb in crate::sampler::split_by_tokens(&missing, &set.lengths, max_tokens)? {
            self.compute(model, set, &mb)?;
        }
        Ok(())
    }

    /// A cache at a higher boundary `upto` computed from this one by running blocks
    /// `self.upto..upto` on the cached states (cheaper than starting from the embeddings).
    /// Only the examples cached here are carried over.
    pub fn advance(
        &self,
        model: &Model,
        set: &EncodedSet,
        upto: usize,
        max_tokens: usize,
    ) -> Result<Self> {
        if upto < self.upto {
            return Err(DpError::Config(format!(
                "a prefix cache at block {} cannot go back to block {upto}",
                self.upto
            )));
        }
        let mut next = Self::new(upto, self.states.len());
        let cached: Vec<usize> = (0..self.states.len())
            .filter(|&i| self.states[i].is_some())
            .collect();
        for mb in crate::sampler::split_by_tokens(&cached, &set.lengths, max_tokens)? {
            let (batch, _) = set.batch(model, &mb)?;
            let h = self.padded(&mb, &batch)?;
            let h = model.run_blocks(&h, &batch, self.upto, upto, dpselft_model::Ctx::plain())?;
            next.store(&mb, &batch, &h.detach())?;
        }
        Ok(next)
    }

    /// The states of `indices` (computing the missing ones), right-padded with zeros to the
    /// length of `batch` (which must be `set.batch(model, indices)`). (B, T, d).
    pub fn states(
        &mut self,
        model: &Model,
        set: &EncodedSet,
        indices: &[usize],
        batch: &Batch,
    ) -> Result<Tensor> {
        let missing: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| self.states[i].is_none())
            .collect();
        if !missing.is_empty() {
            self.compute(model, set, &missing)?;
        }
        self.padded(indices, batch)
    }

    fn compute(&mut self, model: &Model, set: &EncodedSet, indices: &[usize]) -> Result<()> {
        let (batch, _) = set.batch(model, indices)?;
        let h = model.forward_prefix(&batch, self.upto)?;
        self.store(indices, &batch, &h)
    }

    /// Stores rows of h (B, T, d), cut to each example's length.
    fn store(&mut self, indices: &[usize], batch: &Batch, h: &Tensor) -> Result<()> {
        for (row, &i) in indices.iter().enumerate() {
            let len = batch.lengths[row];
            self.states[i] = Some(h.get(row)?.narrow(0, 0, len)?.contiguous()?);
        }
        Ok(())
    }

    fn padded(&self, indices: &[usize], batch: &Batch) -> Result<Tensor> {
        let t = batch.ids.dim(1)?;
        let rows = indices
            .iter()
            .map(|&i| {
                let s = self.states[i].as_ref().ok_or_else(|| {
                    DpError::State(format!("prefix state of example {i} not computed"))
                })?;
                let (len, d) = s.dims2()?;
                if len == t {
                    return Ok(s.clone());
                }
                let pad = Tensor::zeros((t - len, d), s.dtype(), s.device())?;
                Ok(Tensor::cat(&[s, &pad], 0)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }
}
