//! Sampling texts from the generator (post-processing: it reads no private data): batched,
//! KV-cached, each prompt continued once.

use dpselft_dp::NoiseRng;
use dpselft_model::Model;
use dpselft_model::generate::{SampleParams, generate_ids};
use dpselft_model::tokenizer::{decode, encode};

use crate::Progress;
use crate::error::{Result, SelftError};

/// How texts are sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Tokens generated per text at most.
    pub max_new_tokens: usize,
    /// Temperature.
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// Prompts per generation batch.
    pub batch: usize,
}

/// Continues each prompt once (an empty prompt starts from BOS) and returns (its tag, the new
/// text), in order. `stage` names the progress bar.
pub fn generate_texts<T: Copy>(
    generator: &Model,
    prompts: &[(T, String)],
    sampling: &Sampling,
    rng: &mut NoiseRng,
    stage: &str,
    progress: &mut dyn Progress,
) -> Result<Vec<(T, String)>> {
    let tok = generator.tokenizer()?;
    let ids: Vec<(T, Vec<u32>)> = prompts
        .iter()
        .map(|(tag, p)| Ok((*tag, encode(tok, p, false)?)))
        .collect::<Result<_>>()?;
    // Prompt and continuation must fit the generator's position table.
    let longest = ids.iter().map(|(_, p)| p.len().max(1)).max().unwrap_or(1);
    let room = generator.config.max_positions().saturating_sub(longest);
    if room == 0 {
        return Err(SelftError::Config(format!(
            "the generator takes {} positions; the longest prompt already has {longest}",
            generator.config.max_positions()
        )));
    }
    let max_new_tokens = sampling.max_new_tokens.min(room);
    progress.stage(stage, ids.len() as u64);
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(sampling.batch.max(1)) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|(_, p)| p.clone()).collect();
        let params = SampleParams {
            max_new_tokens,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            seed: (rng.uniform_f64() * u64::MAX as f64) as u64,
            stop_at_eos: true,
        };
        let generated = generate_ids(generator, &batch, &params)?;
        for ((tag, _), new) in chunk.iter().zip(generated) {
            out.push((*tag, decode(tok, &new, true)?));
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    Ok(out)
}
