//! `dpselft inspect`: what a model computes for one text, for cross-checks against other
//! implementations.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use dpselft_model::Model;
use dpselft_model::generate::{inspect_encoder, inspect_lm};

use super::fetch_assets::resolve_model;

/// Arguments of `dpselft inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A model folder, a .gguf file, or an asset id (`minilm`, `smollm2`).
    #[arg(long)]
    pub model: String,
    /// The text to run through the model.
    #[arg(long)]
    pub text: String,
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    pub json: bool,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
}

/// Runs `dpselft inspect`: for a causal LM the tokens, the mean of the last hidden states and the
/// top-10 next-token logits; for an encoder the tokens and the sentence embedding (mean-pooled,
/// L2-normalised).
pub fn run(args: Args) -> anyhow::Result<()> {
    let path = resolve_model(&args.model, args.assets.as_deref())?;
    let model =
        Model::load(&path, &Device::Cpu).with_context(|| format!("loading {}", path.display()))?;
    if model.is_decoder() {
        let report = inspect_lm(&model, &args.text)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("tokens ({}): {:?}", report.tokens.len(), report.tokens);
            println!("last hidden mean: {:.6}", report.last_hidden_mean);
            println!("next token    id     logit  text");
            let tokenizer = model.tokenizer()?;
            for (id, logit) in &report.next_token_top10 {
                let piece = dpselft_model::tokenizer::decode(tokenizer, &[*id], false)?;
                println!("           {id:>6} {logit:>9.4}  {piece:?}");
            }
        }
    } else {
        let report = inspect_encoder(&model, &args.text)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            let head: Vec<String> = report
                .embedding
                .iter()
                .take(8)
                .map(|v| format!("{v:.5}"))
                .collect();
            println!("tokens ({}): {:?}", report.tokens.len(), report.tokens);
            println!(
                "embedding ({} numbers, L2-normalised): [{}, …]",
                report.embedding.len(),
                head.join(", ")
            );
        }
    }
    Ok(())
}
