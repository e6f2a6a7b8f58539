//! Sampling from a causal LM with a KV cache, one prompt or a batch (left-padded), and the
//! `inspect` reports. KV-cached sampling is Llama-specific (the cache lives in
//! [`crate::llama::block_forward`]); other families get a clear error.

use candle_core::{DType, IndexOp, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tokenizers::Tokenizer;

use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::layers::Ctx;
use crate::llama::{self, LayerCache};
use crate::model::Model;
use crate::tokenizer::{decode, encode};

/// Sampling settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleParams {
    /// Tokens to generate at most (per row).
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 disables top-p.
    pub top_p: f64,
    /// Seed of the sampling RNG (ChaCha20).
    pub seed: u64,
    /// End a row at its EOS token (else every row runs `max_new_tokens`, EOS kept: a
    /// benchmark's fixed amount of work).
    pub stop_at_eos: bool,
}

impl Default for SampleParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 0.8,
            top_p: 0.95,
            seed: 0,
            stop_at_eos: true,
        }
    }
}

/// Generates a continuation of `prompt` (text, no special tokens added) and returns the new text.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt: &str,
    max_new_tokens: usize,
    temperature: f64,
    top_p: f64,
    seed: u64,
) -> Result<String> {
    let ids = encode(tokenizer, prompt, false)?;
    let params = SampleParams {
        max_new_tokens,
        temperature,
        top_p,
        seed,
        stop_at_eos: true,
    };
    let out = generate_ids(model, &[ids], &params)?;
    decode(tokenizer, &out[0], true)
}

/// Batched sampling: continues every prompt (token ids; an empty prompt starts from BOS) and
/// returns only the new tokens of each row, stopping a row at EOS (not included) unless
/// `params.stop_at_eos` is off.
pub fn generate_ids(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &SampleParams,
) -> Result<Vec<Vec<u32>>> {
    // The KV cache lives in the Llama blocks: generation is Llama-only for now.
    let ModelConfig::Llama(cfg) = &model.config else {
        return Err(ModelError::Invalid(format!(
            "KV-cached generation is implemented for the Llama family only (this is a {} model)",
            model.family()
        )));
    };
    let valid = params.top_p > 0.0 && params.top_p <= 1.0 && params.temperature >= 0.0;
    if !valid {
        return Err(ModelError::Invalid(format!(
            "top_p must be in (0, 1] and temperature ≥ 0 (got {} and {})",
            params.top_p, params.temperature
        )));
    }
    let bos = model.special.bos.unwrap_or(0);
    let prompts: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| if p.is_empty() { vec![bos] } else { p.clone() })
        .collect();
    let pad = model.special.pad.unwrap_or(0);
    let batch = Batch::from_ids(&prompts, pad, true, &model.device)?;
    let b = batch.size();
    let mut caches: Vec<LayerCache> = (0..model.num_blocks())
        .map(|_| LayerCache::default())
        .collect();
    let mut attn = batch.attn.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(params.seed);
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut input = batch.ids.clone();
    for _ in 0..params.max_new_tokens {
        let logits = step(model, cfg, &input, &attn, &mut caches)?; // (B, V)
        let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut next = Vec::with_capacity(b);
        for (i, row) in rows.iter().enumerate() {
            let tok = sample(row, params, &mut rng);
            if !done[i] {
                if params.stop_at_eos && Some(tok) == model.special.eos {
                    done[i] = true;
                } else {
                    out[i].push(tok);
                }
            }
            next.push(tok);
        }
        if done.iter().all(|d| *d) {
            break;
        }
        input = Tensor::from_vec(next, (b, 1), &model.device)?;
        let ones = Tensor::ones((b, 1), DType::U32, &model.device)?;
        attn = Tensor::cat(&[&attn, &ones], 1)?;
    }
    Ok(out)
}

/// One cached forward: ids (B, T) new tokens, attn (B, S) all keys → last-position logits (B, V).
fn step(
    model: &Model,
    cfg: &crate::config::LlamaConfig,
    ids: &Tensor,
    attn: &Tensor,
    caches: &mut [LayerCache],
) -> Result<Tensor> {
    let t = ids.dim(1)?;
    let mut h = llama::embeddings_forward(&model.params, ids, Ctx::plain())?;
    let aux = llama::batch_aux(cfg, attn, t, h.dtype())?;
    for (i, c) in caches.iter_mut().enumerate() {
        h = llama::block_forward(&model.params, cfg, i, &h, &aux, Some(c), Ctx::plain())?;
    }
    let h = llama::final_norm_forward(&model.params, cfg, &h.i((.., t - 1..t, ..))?, Ctx::plain())?;
    let logits = llama::lm_head_forward(&model.params, cfg, &h, Ctx::plain())?;
    Ok(logits.squeeze(1)?)
}

/// Samples one id from logits: greedy at temperature 0, else temperature + top-p.
pub fn sample(logits: &[f32], params: &SampleParams, rng: &mut ChaCha20Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |acc, (i, &v)| {
                if v > acc.1 { (i, v) } else { acc }
            })
            .0 as u32
    };
    if params.temperature == 0.0 {
        return argmax();
    }
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i, (((v - m) as f64) / params.temperature).exp()))
        .collect();
    let z: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= z);
    // The nucleus usually lies within the top few hundred ids: partition those out in O(V) and
    // sort only them; sort everything only when their mass falls short of top-p (same result).
    const HEAD: usize = 512;
    if probs.len() > HEAD {
        probs.select_nth_unstable_by(HEAD - 1, |a, b| b.1.total_cmp(&a.1));
        if probs[..HEAD].iter().map(|p| p.1).sum::<f64>() >= params.top_p {
            probs.truncate(HEAD);
        }
    }
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0;
    let mut mass = 0.0;
    for p in &probs {
        kept += 1;
        mass += p.1;
        if mass >= params.top_p {
            break;
        }
    }
    let u: f64 = rng.random::<f64>() * mass;
    let mut acc = 0.0;
    for p in &probs[..kept] {
        acc += p.1;
        if u < acc {
            return p.0 as u32;
        }
    }
    probs[kept - 1].0 as u32
}

/// The top-k (id, logit) pairs of a logit vector (V), highest first.
pub fn top_k(logits: &Tensor, k: usize) -> Result<Vec<(u32, f32)>> {
    let v = logits
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut idx: Vec<(u32, f32)> = v
        .into_iter()
        .enumerate()
        .map(|(i, x)| (i as u32, x))
        .collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1));
    idx.truncate(k);
    Ok(idx)
}

/// `inspect` for a causal LM: tokens, mean of the last hidden state (after the final norm) over
/// the positions and features, and the top-10 next-token logits.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LmInspection {
    /// Token ids of the text (no special tokens added).
    pub tokens: Vec<u32>,
    /// Mean of the final hidden states (T × d).
    pub last_hidden_mean: f64,
    /// Top-10 (id, logit) after the last token.
    pub next_token_top10: Vec<(u32, f32)>,
}

/// `inspect` for an encoder: tokens and the mean-pooled, L2-normalised sentence embedding.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EncoderInspection {
    /// Token ids (with [CLS]/[SEP]).
    pub tokens: Vec<u32>,
    /// The sentence embedding (d numbers).
    pub embedding: Vec<f32>,
}

/// Runs the causal-LM inspection of `text`.
pub fn inspect_lm(model: &Model, text: &str) -> Result<LmInspection> {
    if !model.has_lm_head() {
        return Err(ModelError::Invalid(format!(
            "inspect_lm needs a causal LM (the {} family has no LM head)",
            model.family()
        )));
    }
    let tokens = encode(model.tokenizer()?, text, model.adds_special_tokens())?;
    let batch = Batch::from_ids(std::slice::from_ref(&tokens), 0, false, &model.device)?;
    let h = model.hidden_states(&batch, Ctx::plain())?; // (1, T, d)
    let mean = h.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?;
    let last = h.i((.., tokens.len() - 1..tokens.len(), ..))?;
    let logits = model.arch().lm_head(&model.params, &last, Ctx::plain())?;
    Ok(LmInspection {
        tokens,
        last_hidden_mean: mean,
        next_token_top10: top_k(&logits.flatten_all()?, 10)?,
    })
}

/// Runs the encoder inspection of `text`.
pub fn inspect_encoder(model: &Model, text: &str) -> Result<EncoderInspection> {
    let tokens = encode(model.tokenizer()?, text, model.adds_special_tokens())?;
    let batch = Batch::from_ids(std::slice::from_ref(&tokens), 0, false, &model.device)?;
    let e = model.sentence_embeddings(&batch)?;
    Ok(EncoderInspection {
        tokens,
        embedding: e.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook nucleus sampler: sort everything, keep the top-p mass, draw.
    fn reference(logits: &[f32], params: &SampleParams, rng: &mut ChaCha20Rng) -> u32 {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f64> = logits
            .iter()
            .map(|&v| (((v - m) as f64) / params.temperature).exp())
            .collect();
        let z: f64 = w.iter().sum();
        let mut probs: Vec<(usize, f64)> = w.iter().map(|x| x / z).enumerate().collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (mut kept, mut mass) = (0, 0.0);
        for p in &probs {
            kept += 1;
            mass += p.1;
            if mass >= params.top_p {
                break;
            }
        }
        let u: f64 = rng.random::<f64>() * mass;
        let mut acc = 0.0;
        for p in &probs[..kept] {
            acc += p.1;
            if u < acc {
                return p.0 as u32;
            }
        }
        probs[kept - 1].0 as u32
    }

    #[test]
    fn partial_sort_samples_exactly_like_a_full_sort() {
        let mut logit_rng = ChaCha20Rng::seed_from_u64(1);
        for (temperature, top_p) in [(0.9, 0.95), (2.0, 0.99), (0.5, 0.5), (1.0, 1.0)] {
            // Distinct logits (no ties), a vocabulary much larger than the partial head.
            let logits: Vec<f32> = (0..5000).map(|_| logit_rng.random::<f32>() * 8.0).collect();
            let params = SampleParams {
                max_new_tokens: 1,
                temperature,
                top_p,
                seed: 0,
                stop_at_eos: true,
            };
            for seed in 0..50 {
                let mut a = ChaCha20Rng::seed_from_u64(seed);
                let mut b = ChaCha20Rng::seed_from_u64(seed);
                assert_eq!(
                    sample(&logits, &params, &mut a),
                    reference(&logits, &params, &mut b)
                );
            }
        }
    }
}
