//! `dpselft eval`: accuracy and macro-F1 (classifier) or perplexity (causal LM) of a model on a
//! held-out data set.
//!
//! ```text
//! dpselft eval --model runs/x [--data test.jsonl] [--json] [--logits out.jsonl]
//! ```
//!
//! `--logits` also writes the model's raw outputs per example (what `scripts/check-hf-export`
//! compares with `transformers`).

use std::path::PathBuf;

use anyhow::Context;
use dpselft_data::{LoadOptions, load_dataset};
use dpselft_dp::{EncodedSet, Task, evaluate, example_logits};
use dpselft_model::{DeviceSpec, Head, Model};

use super::UsageError;
use super::fetch_assets::resolve_model;

/// Arguments of `dpselft eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A model folder (a `dpselft train` output folder, whose `model/` is used), a .gguf file,
    /// or an asset id.
    #[arg(long)]
    pub model: String,
    /// The held-out data (JSONL/CSV/TSV). For a classifier its labels must be among the model's.
    #[arg(long)]
    pub data: PathBuf,
    /// Most padded tokens per batch.
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
    /// Truncate examples to this many tokens (as in training).
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
    /// Evaluate a seeded random subset of this many examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the --limit subset.
    #[arg(long, default_value_t = 1)]
    pub limit_seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write each example's token ids and logits (a classifier's per class, a causal LM's
    /// at the last token) to this JSONL file, one line per example in the data's order.
    #[arg(long)]
    pub logits: Option<PathBuf>,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// Runs `dpselft eval`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut path = resolve_model(&args.model, args.assets.as_deref())?;
    if path.join("model").join("config.json").exists() {
        path = path.join("model");
    }
    let model = super::load_model_on(&path, args.device)?;
    let (task, known_labels) = match &model.head {
        Head::Classifier { labels, .. } => (Task::Classify, Some(labels.clone())),
        Head::CausalLm => (Task::Lm, None),
        Head::None => {
            return Err(UsageError(format!(
                "{}: the model has no task head (neither a classifier nor a causal LM)",
                path.display()
            ))
            .into());
        }
    };
    let options = LoadOptions {
        known_labels,
        labels: if task == Task::Lm {
            dpselft_data::LabelRequirement::Ignore
        } else {
            dpselft_data::LabelRequirement::Required
        },
        min_examples_per_label: 0,
    };
    let mut data = load_dataset(&args.data, &options)
        .with_context(|| format!("loading {}", args.data.display()))?;
    super::train::subset(&mut data, args.limit, args.limit_seed);
    let set = EncodedSet::new(&model, &data, task, args.max_seq_len)?;
    let metrics = evaluate(&model, &set, args.max_tokens)?;
    if let Some(out) = &args.logits {
        write_logits(&model, &set, args.max_tokens, out)?;
    }
    if args.json {
        let mut v = serde_json::to_value(&metrics)?;
        v["task"] = serde_json::json!(task.to_string());
        v["model"] = serde_json::json!(path);
        crate::output::emit_json(&v, false)?;
    } else {
        println!("model              {}", path.display());
        println!("task               {task}");
        super::train::print_eval(&metrics);
    }
    Ok(())
}

/// Writes `{"index", "ids", "logits"}` per example of `set` to `out` (atomically).
fn write_logits(
    model: &Model,
    set: &EncodedSet,
    max_tokens: usize,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let logits = example_logits(model, set, max_tokens)?;
    let mut text = String::new();
    for (i, (ids, row)) in set.ids.iter().zip(&logits).enumerate() {
        let line = serde_json::json!({"index": i, "ids": ids, "logits": row});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    dpselft_fsio::write_bytes_atomic(out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))
}
