//! `dpselft inspect`: what a model computes for one text, for cross-checks against other
//! implementations; `dpselft inspect grad-norms`: the unclipped per-example gradient norms and
//! losses the DP engine sees, for choosing a clip norm.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dpselft_data::{Dataset, LabelRequirement, LoadOptions, load_dataset};
use dpselft_dp::{EncodedSet, HeadChoice, Task, per_example_grad_norms, prepare_model};
use dpselft_model::TrainableSpec;
use dpselft_model::generate::{inspect_encoder, inspect_lm};
use dpselft_model::{DeviceSpec, Head, Model};

use super::UsageError;
use super::fetch_assets::resolve_model;
use super::train::TaskArg;

/// Arguments of `dpselft inspect`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// What else to inspect (without one: what the model computes for --text).
    #[command(subcommand)]
    pub command: Option<InspectCommand>,
    /// A model folder, a .gguf file, or an asset id (`minilm`, `smollm2`).
    #[arg(long, required = true)]
    pub model: Option<String>,
    /// The text to run through the model.
    #[arg(long, required = true)]
    pub text: Option<String>,
    /// Print one JSON object instead of a readable summary.
    #[arg(long)]
    pub json: bool,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// The subcommands of `dpselft inspect`.
#[derive(clap::Subcommand)]
pub enum InspectCommand {
    /// The unclipped per-example gradient norms (over the whole trainable set) and losses of
    /// the first N examples of a data set, as a DP step computes them (not privatised: for
    /// public data, or the operator's eyes only).
    GradNorms(GradNormsArgs),
}

/// Arguments of `dpselft inspect grad-norms`.
#[derive(clap::Args)]
pub struct GradNormsArgs {
    /// A model folder (or a `dpselft train` run folder), a .gguf file, or an asset id.
    #[arg(long)]
    pub model: String,
    /// The data (JSONL/CSV/TSV/folder); the first --num examples are inspected.
    #[arg(long)]
    pub data: PathBuf,
    /// The task: the loss whose gradient is measured.
    #[arg(long, value_enum, default_value_t = TaskArg::Classify)]
    pub task: TaskArg,
    /// The trainable set over which each example's gradient norm is taken (`head,last:2`, …).
    #[arg(long)]
    pub trainable: String,
    /// How many examples (the first N of the data).
    #[arg(long)]
    pub num: usize,
    /// Seed of the classification head's initialisation and of LoRA factors (as `train
    /// --init-seed`). A model that already has a classifier keeps it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Truncate examples to this many tokens (as in training).
    #[arg(long, default_value_t = 128)]
    pub max_seq_len: usize,
    /// Most padded tokens per micro-batch (memory only; the values do not depend on it).
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
    /// Print `{"norms": [...], "losses": [...]}` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// Runs `dpselft inspect`: for a causal LM the tokens, the mean of the last hidden states and the
/// top-10 next-token logits; for an encoder the tokens and the sentence embedding (mean-pooled,
/// L2-normalised).
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(InspectCommand::GradNorms(args)) = args.command {
        return grad_norms(args);
    }
    let (Some(spec), Some(text)) = (args.model.as_deref(), args.text.as_deref()) else {
        return Err(UsageError("inspect: give --model and --text (or a subcommand)".into()).into());
    };
    let path = resolve_model(spec, args.assets.as_deref())?;
    let model = super::load_model_on(&path, args.device)?;
    if model.has_lm_head() {
        let report = inspect_lm(&model, text)?;
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
        let report = inspect_encoder(&model, text)?;
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

fn usage(msg: String) -> anyhow::Error {
    UsageError(msg).into()
}

/// Runs `dpselft inspect grad-norms`: the model with its task head (a classifier initialised
/// from --seed unless the model has one) and the trainable set applied, the first N examples
/// tokenized as for training, then [`per_example_grad_norms`].
pub fn grad_norms(args: GradNormsArgs) -> anyhow::Result<()> {
    let (spec, task) = check_grad_norms_args(&args)?;
    let (path, mut model) = load_model_dir(&args.model, args.assets.as_deref(), args.device)?;
    let (data, head) = first_examples(&args, &model, task)?;
    prepare_model(&mut model, task, head, &spec, args.seed)
        .with_context(|| format!("setting up {} for --task {task}", path.display()))?;
    let set = EncodedSet::new(&model, &data, task, args.max_seq_len)?;
    let indices: Vec<usize> = (0..set.len()).collect();
    let (norms, losses) = per_example_grad_norms(&model, &set, &indices, args.max_tokens)?;

    if args.json {
        return print_grad_norms_json(&norms, &losses);
    }
    print_grad_norms_table(&path, task, &args.trainable, &set.lengths, &norms, &losses);
    Ok(())
}

/// Checks the numeric options and parses the trainable set and the task.
fn check_grad_norms_args(args: &GradNormsArgs) -> anyhow::Result<(TrainableSpec, Task)> {
    if args.num == 0 {
        return Err(usage("--num 0: inspect at least one example".into()));
    }
    if args.max_seq_len < 2 || args.max_tokens == 0 {
        return Err(usage(
            "--max-seq-len must be ≥ 2 and --max-tokens ≥ 1".into(),
        ));
    }
    let spec = TrainableSpec::parse(&args.trainable).map_err(|e| usage(e.to_string()))?;
    Ok((spec, args.task.into()))
}

/// Resolves and loads the model (the `model/` folder of a `dpselft train` run folder if there
/// is one); returns the folder loaded with the model.
fn load_model_dir(
    model: &str,
    assets: Option<&Path>,
    device: DeviceSpec,
) -> anyhow::Result<(PathBuf, Model)> {
    let mut path = resolve_model(model, assets)?;
    if path.join("model").join("config.json").exists() {
        path = path.join("model");
    }
    let model = super::load_model_on(&path, device)?;
    Ok((path, model))
}

/// Loads the data (labels required for classification, checked against an existing
/// classifier's), keeps its first --num examples, and picks the head: the model's classifier if
/// it has one, else a new one over the data's labels.
fn first_examples(
    args: &GradNormsArgs,
    model: &Model,
    task: Task,
) -> anyhow::Result<(Dataset, HeadChoice)> {
    let existing_labels = match &model.head {
        Head::Classifier { labels, .. } if task == Task::Classify => Some(labels.clone()),
        _ => None,
    };
    let options = LoadOptions {
        labels: match task {
            Task::Classify => LabelRequirement::Required,
            Task::Lm => LabelRequirement::Ignore,
        },
        known_labels: existing_labels.clone(),
        min_examples_per_label: 0,
    };
    let mut data = load_dataset(&args.data, &options)
        .with_context(|| format!("loading {}", args.data.display()))?;
    if args.num > data.len() {
        return Err(usage(format!(
            "--num {}: {} has only {} examples",
            args.num,
            args.data.display(),
            data.len()
        )));
    }
    // Only the first N are tokenized (labels keep the whole file's label set).
    data.examples.truncate(args.num);

    let head = match existing_labels {
        Some(_) => HeadChoice::Existing,
        None => HeadChoice::New(data.labels.clone()),
    };
    Ok((data, head))
}

/// Prints `{"norms": [...], "losses": [...]}`.
fn print_grad_norms_json(norms: &[f64], losses: &[f64]) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Report<'a> {
        norms: &'a [f64],
        losses: &'a [f64],
    }
    let report = Report { norms, losses };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Prints one row per example (tokens, loss, norm), then the norms' min, median, p90 and max.
fn print_grad_norms_table(
    path: &Path,
    task: Task,
    trainable: &str,
    lengths: &[usize],
    norms: &[f64],
    losses: &[f64],
) {
    println!("model      {}", path.display());
    println!("task       {task}, trainable {trainable}");
    println!("example  tokens        loss   grad norm (unclipped)");
    for (i, (norm, loss)) in norms.iter().zip(losses).enumerate() {
        println!(
            "{:>7}  {:>6}  {loss:>10.5}  {norm:>12.6}",
            i + 1,
            lengths[i]
        );
    }
    let mut sorted = norms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let q =
        |p: f64| sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)];
    println!(
        "norms: min {:.6}  median {:.6}  p90 {:.6}  max {:.6}",
        q(0.0),
        q(0.5),
        q(0.9),
        q(1.0)
    );
}
