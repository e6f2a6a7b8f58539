//! `dpselft generate`: sample a continuation from a causal LM (KV-cached).

use std::path::PathBuf;

use dpselft_model::DeviceSpec;

use super::UsageError;
use super::fetch_assets::resolve_model;

/// Arguments of `dpselft generate`.
#[derive(clap::Args)]
pub struct Args {
    /// A causal LM: a model folder, a .gguf file, or the asset id `smollm2`.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// The prompt (encoded without special tokens).
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Seed of the sampling RNG.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// Runs `dpselft generate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return Err(UsageError(format!("--temperature {}: must be ≥ 0", args.temperature)).into());
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        return Err(UsageError(format!("--top-p {}: must be in (0, 1]", args.top_p)).into());
    }
    let path = resolve_model(&args.model, args.assets.as_deref())?;
    let model = super::load_model_on(&path, args.device)?;
    if !model.has_lm_head() {
        return Err(UsageError(format!(
            "--model {}: generation needs a causal LM; the {} family has no LM head",
            args.model,
            model.family()
        ))
        .into());
    }
    let tokenizer = model.tokenizer()?;
    let text = dpselft_model::generate::generate(
        &model,
        tokenizer,
        &args.prompt,
        args.max_new_tokens,
        args.temperature,
        args.top_p,
        args.seed,
    )?;
    println!("{}{}", args.prompt, text);
    Ok(())
}
