//! The task side of training: tokenized examples, padded micro-batches and per-example losses.
//!
//! Kept apart from the trainer so that training, evaluation and inspection all tokenize and
//! score an example the same way.

use candle_core::{DType, Tensor};
use dpselft_data::Dataset;
use dpselft_model::ops::loss::{classification_loss_per_example, lm_loss_per_example};
use dpselft_model::{Batch, Head, Model};
use serde::{Deserialize, Serialize};

use crate::error::{DpError, Result};

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Sequence classification: cross-entropy of the example's label.
    Classify,
    /// Causal language modelling: the mean next-token cross-entropy over the example's tokens.
    Lm,
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Task::Classify => "classify",
            Task::Lm => "lm",
        })
    }
}

/// A data set tokenized once for a model: token ids per example (truncated to a maximum
/// length) and, for classification, the label ids.
#[derive(Debug, Clone)]
pub struct EncodedSet {
    /// Token ids of each example.
    pub ids: Vec<Vec<u32>>,
    /// Token count of each example (what micro-batches are split by).
    pub lengths: Vec<usize>,
    /// Label id of each example (classification only).
    pub labels: Option<Vec<u32>>,
    /// The padding id of the model.
    pub pad_id: u32,
    /// For prompted language modelling: the number of leading tokens of each example that are
    /// a prompt (the loss covers only the tokens after it). `None`: every token but the first
    /// is predicted.
    pub loss_starts: Option<Vec<usize>>,
}

impl EncodedSet {
    /// Tokenizes `data` for `model` and `task`: special tokens if the model's family adds them
    /// (as the model's `encode_batch`: encoders do, decoders don't); at most `max_len` tokens
    /// per example, and never more than the model's position table (with special tokens the
    /// final `[SEP]` is kept). Classification needs every example labelled; a language-model
    /// task needs a model with an LM head.
    pub fn new(model: &Model, data: &Dataset, task: Task, max_len: usize) -> Result<Self> {
        if max_len < 2 {
            return Err(DpError::Config(format!(
                "maximum sequence length {max_len}: must be at least 2"
            )));
        }
        if task == Task::Lm && !model.has_lm_head() {
            return Err(DpError::Config(format!(
                "task lm needs a causal (decoder) model; the {} family has no LM head",
                model.family()
            )));
        }
        // Never longer than the model's position table (a longer request is cut, not an error).
        let max_len = max_len.min(model.config.max_positions());
        let tok = model.tokenizer()?;
        let add_special = model.adds_special_tokens();
        let pad_id = model.special.pad.unwrap_or(0);
        let mut ids = Vec::with_capacity(data.len());
        for (i, ex) in data.examples.iter().enumerate() {
            let mut seq = dpselft_model::tokenizer::encode(tok, &ex.text, add_special)?;
            if seq.len() > max_len {
                let last = seq[seq.len() - 1];
                seq.truncate(max_len);
                if add_special {
                    seq[max_len - 1] = last;
                }
            }
            if seq.is_empty() {
                return Err(DpError::Config(format!(
                    "example {} has no tokens (empty text)",
                    i + 1
                )));
            }
            ids.push(seq);
        }
        let labels = match task {
            Task::Lm => None,
            Task::Classify => Some(
                data.examples
                    .iter()
                    .enumerate()
                    .map(|(i, ex)| {
                        ex.label.map(|l| l as u32).ok_or_else(|| {
                            DpError::Config(format!(
                                "example {} has no label (task classify needs labelled data)",
                                i + 1
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        Ok(Self {
            lengths: ids.iter().map(Vec::len).collect(),
            ids,
            labels,
            pad_id,
            loss_starts: None,
        })
    }

    /// Language-modelling examples made of a prompt and a continuation, `(prompt, text)`, with
    /// the loss on the continuation only (the synthetic stage trains on `"<label>\n<text>"`
    /// this way). Prompt and text are tokenized apart (no special tokens) and concatenated, so a
    /// generator later continues exactly the prompt tokens it was trained on; the text is cut so
    /// that the whole example has at most `max_len` tokens.
    pub fn lm_with_prompts(
        model: &Model,
        pairs: &[(String, String)],
        max_len: usize,
    ) -> Result<Self> {
        if !model.has_lm_head() {
            return Err(DpError::Config(format!(
                "prompted language modelling needs a causal (decoder) model; the {} family has \
                 no LM head",
                model.family()
            )));
        }
        let max_len = max_len.min(model.config.max_positions());
        let tok = model.tokenizer()?;
        let mut ids = Vec::with_capacity(pairs.len());
        let mut starts = Vec::with_capacity(pairs.len());
        for (i, (prompt, text)) in pairs.iter().enumerate() {
            let mut seq = dpselft_model::tokenizer::encode(tok, prompt, false)?;
            let start = seq.len();
            if start + 1 >= max_len {
                return Err(DpError::Config(format!(
                    "example {}: its prompt has {start} tokens, leaving nothing of the text within \
                     the maximum length {max_len}",
                    i + 1
                )));
            }
            let text_ids = dpselft_model::tokenizer::encode(tok, text, false)?;
            if text_ids.is_empty() {
                return Err(DpError::Config(format!(
                    "example {} has no tokens (empty text)",
                    i + 1
                )));
            }
            seq.extend(text_ids.into_iter().take(max_len - start));
            ids.push(seq);
            starts.push(start);
        }
        Ok(Self {
            lengths: ids.iter().map(Vec::len).collect(),
            ids,
            labels: None,
            pad_id: model.special.pad.unwrap_or(0),
            loss_starts: Some(starts),
        })
    }

    /// The tokens whose prediction counts in example i's loss.
    pub fn predicted_tokens(&self, i: usize) -> usize {
        let start = self.loss_starts.as_ref().map_or(1, |s| s[i].max(1));
        self.lengths[i].saturating_sub(start)
    }

    /// The loss mask (B, T) u32 of the examples `indices` padded to `t` tokens: 1 where a token
    /// is a prediction target. `None` when the attention mask serves (no prompts).
    pub fn loss_mask(&self, model: &Model, indices: &[usize], t: usize) -> Result<Option<Tensor>> {
        let Some(starts) = &self.loss_starts else {
            return Ok(None);
        };
        let mut m = Vec::with_capacity(indices.len() * t);
        for &i in indices {
            m.extend((0..t).map(|j| u32::from(j >= starts[i] && j < self.lengths[i])));
        }
        Ok(Some(Tensor::from_vec(
            m,
            (indices.len(), t),
            &model.device,
        )?))
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The right-padded batch of the examples `indices`, and their labels (classification).
    pub fn batch(&self, model: &Model, indices: &[usize]) -> Result<(Batch, Option<Tensor>)> {
        let seqs: Vec<Vec<u32>> = indices.iter().map(|&i| self.ids[i].clone()).collect();
        let batch = Batch::from_ids(&seqs, self.pad_id, false, &model.device)?;
        let labels = match &self.labels {
            Some(l) => {
                let v: Vec<u32> = indices.iter().map(|&i| l[i]).collect();
                Some(Tensor::new(v.as_slice(), &model.device)?)
            }
            None => None,
        };
        Ok((batch, labels))
    }
}

/// Per-example losses (B) from the model's output on `batch`: the label's cross-entropy for a
/// classifier (`out`: B×C logits), the mean next-token cross-entropy over each example's real
/// tokens for a causal LM (`out`: B×T×V logits). Example i's loss depends on example i only.
pub fn per_example_loss(
    model: &Model,
    out: &Tensor,
    batch: &Batch,
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    per_example_loss_masked(model, out, batch, labels, None)
}

/// [`per_example_loss`] with an explicit LM loss mask (B, T) (from [`EncodedSet::loss_mask`]):
/// only the positions it marks are predicted. `None`: the attention mask.
pub fn per_example_loss_masked(
    model: &Model,
    out: &Tensor,
    batch: &Batch,
    labels: Option<&Tensor>,
    loss_mask: Option<&Tensor>,
) -> Result<Tensor> {
    match (&model.head, labels) {
        (Head::Classifier { .. }, Some(labels)) => {
            Ok(classification_loss_per_example(out, labels)?)
        }
        (Head::CausalLm, _) => Ok(lm_loss_per_example(
            out,
            &batch.ids,
            loss_mask.unwrap_or(&batch.attn),
        )?),
        (Head::Classifier { .. }, None) => Err(DpError::Config(
            "a classifier needs labels for its loss".into(),
        )),
        (Head::None, _) => Err(DpError::Config(
            "the model has no task head (set a classifier or use a causal LM)".into(),
        )),
    }
}

/// The per-example losses as f64 values.
pub(crate) fn to_f64s(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}
