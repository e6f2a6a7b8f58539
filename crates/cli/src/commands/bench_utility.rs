//! `dpselft bench utility`: the privacy–utility grid (dp-selft against every baseline at the same
//! (ε, δ)), resumable, with `results.jsonl`, `table.md` and `chart.svg`.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use dpselft_bench::{Method, MethodsFile, UtilityBench, run_grid};
use dpselft_selft::Progress;
use dpselft_selft::pipeline::{ResolvedPaths, Scale};

use super::UsageError;
use super::fetch_assets::resolve_model;

/// Arguments of `dpselft bench utility`.
#[derive(clap::Args, Debug)]
pub struct UtilityArgs {
    /// The task (its data are built under data/<task>/ if absent).
    #[arg(long, value_enum, default_value = "brown-genre")]
    pub task: TaskArg,
    /// Methods, comma-separated, each a section of the methods file.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dp-selft,full,lora,bitfit,last-k,random-k,non-private"
    )]
    pub methods: Vec<Method>,
    /// Target ε values, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,8")]
    pub epsilons: Vec<f64>,
    /// Seeds per cell (0..N).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Data subsets and stage sizes: small (the `dpselft run` default) or full.
    #[arg(long, value_enum, default_value = "small")]
    pub scale: super::run::ScaleArg,
    /// Seeded subset of the training split for every method [default: the scale's: 1500 for
    /// small, all for full; 0 = all].
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Seeded subset of the test split [default: the scale's: 1000 for small, all for full;
    /// 0 = all].
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// The committed per-method hyperparameters.
    #[arg(long, default_value = "bench/methods.toml")]
    pub methods_file: PathBuf,
    /// Target model.
    #[arg(long, default_value = "minilm")]
    pub model: String,
    /// Generator of dp-selft's synthetic stage.
    #[arg(long, default_value = "smollm2")]
    pub generator: String,
    /// Output folder (a second call continues the grid).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Assets folder [default: $DPSELFT_ASSETS, else ./assets].
    #[arg(long, value_name = "DIR")]
    pub assets: Option<PathBuf>,
}

/// The benchmark tasks.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TaskArg {
    /// 15-way Brown genre classification.
    BrownGenre,
    /// SpamAssassin spam/ham.
    Spam,
}

/// Runs `dpselft bench utility`.
impl TaskArg {
    /// The task it names.
    pub fn task(self) -> dpselft_data::BenchmarkTask {
        match self {
            TaskArg::BrownGenre => dpselft_data::BenchmarkTask::BrownGenre,
            TaskArg::Spam => dpselft_data::BenchmarkTask::Spam,
        }
    }
}

pub fn run(args: UtilityArgs) -> anyhow::Result<()> {
    let task = args.task.task();
    if args.epsilons.iter().any(|e| !(e.is_finite() && *e > 0.0)) || args.seeds == 0 {
        return Err(UsageError("--epsilons must be > 0 and --seeds ≥ 1".into()).into());
    }
    let methods_file = MethodsFile::load(&args.methods_file)
        .with_context(|| "reading the methods file (--methods-file)")?;
    let (train_data, test_data) = super::data::ensure_task_data(task, args.assets.as_deref())?;
    let paths = ResolvedPaths {
        model: resolve_model(&args.model, args.assets.as_deref())?,
        generator: resolve_model(&args.generator, args.assets.as_deref())?,
    };
    let scale = match args.scale {
        super::run::ScaleArg::Small => Scale::Small,
        super::run::ScaleArg::Full => Scale::Full,
    };
    let preset = dpselft_selft::RunConfig::preset(scale).run;
    let limit = |given: Option<usize>, default: Option<usize>| match given {
        Some(0) => None,
        Some(l) => Some(l),
        None => default,
    };
    let bench = UtilityBench {
        task: task.name().to_string(),
        train_data,
        test_data,
        data_kind: task.data_kind().into(),
        paths,
        model_name: args.model.clone(),
        generator_name: args.generator.clone(),
        methods: args.methods.clone(),
        epsilons: args.epsilons.clone(),
        seeds: args.seeds,
        scale,
        train_limit: limit(args.train_limit, preset.train_limit),
        test_limit: limit(args.test_limit, preset.test_limit),
        methods_file,
        out: args.out.clone(),
    };
    let mut progress = Log;
    let results = run_grid(&bench, &mut progress)?;
    let table = std::fs::read_to_string(args.out.join("table.md"))
        .with_context(|| format!("reading {}", args.out.join("table.md").display()))?;
    println!("{table}");
    println!(
        "{} results; results.jsonl, table.md and chart.svg in {}",
        results.len(),
        args.out.display()
    );
    Ok(())
}

/// Plain log lines: a grid runs for hours, usually without a terminal.
pub struct Log;

impl dpselft_dp::Observer for Log {}

impl Progress for Log {
    fn message(&mut self, text: &str) {
        eprintln!("{text}");
    }
}
