//! `dpselft bench utility`: the privacy–utility grid (dp-selft against every baseline at the same
//! (ε, δ)), resumable, with `results.jsonl`, `table.md` and `chart.svg`.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use dpselft_bench::{Method, MethodsFile, UtilityBench, run_grid};
use dpselft_model::DeviceSpec;
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
        default_value = "dp-selft,head,full,lora,bitfit,last-k,random-k,non-private"
    )]
    pub methods: Vec<Method>,
    /// Target ε values, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,8")]
    pub epsilons: Vec<f64>,
    /// Seeds per cell (0..N).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// dp-selft's stage sizes: small (the `dpselft run` default: 320 synthetic texts, greedy:2)
    /// or full.
    #[arg(long, value_enum, default_value = "small")]
    pub scale: super::run::ScaleArg,
    /// Seeded subset of the training split for every method [default: all of it; 0 = all].
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Seeded subset of the test split [default: all of it; 0 = all].
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
    /// Cells run at a time (one per core is the usual choice): workers that claim cells one
    /// by one, so a second `bench utility` on the same folder may also join in.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Output folder (a second call continues the grid).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Assets folder [default: $DPSELFT_ASSETS, else ./assets].
    #[arg(long, value_name = "DIR")]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// The benchmark tasks.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TaskArg {
    /// 15-way Brown genre classification.
    BrownGenre,
    /// SpamAssassin spam/ham.
    Spam,
    /// SpamAssassin's ham as unlabelled mail: language modelling, scored by test perplexity
    /// (the target must be a causal LM, e.g. `--model smollm2 --methods-file
    /// bench/methods-lm.toml`).
    HamLm,
}

/// Runs `dpselft bench utility`.
impl TaskArg {
    /// The task it names.
    pub fn task(self) -> dpselft_data::BenchmarkTask {
        match self {
            TaskArg::BrownGenre => dpselft_data::BenchmarkTask::BrownGenre,
            TaskArg::Spam => dpselft_data::BenchmarkTask::Spam,
            TaskArg::HamLm => dpselft_data::BenchmarkTask::HamLm,
        }
    }
}

pub fn run(args: UtilityArgs) -> anyhow::Result<()> {
    let task = args.task.task();
    if args.epsilons.iter().any(|e| !(e.is_finite() && *e > 0.0)) || args.seeds == 0 {
        return Err(UsageError("--epsilons must be > 0 and --seeds ≥ 1".into()).into());
    }
    if args.parallel == 0 {
        return Err(UsageError("--parallel must be ≥ 1".into()).into());
    }
    let methods_file = MethodsFile::load(&args.methods_file)
        .with_context(|| "reading the methods file (--methods-file)")?;
    let (train_data, test_data) = super::data::ensure_task_data(task, args.assets.as_deref())?;
    let paths = ResolvedPaths {
        model: resolve_model(&args.model, args.assets.as_deref())?,
        generator: resolve_model(&args.generator, args.assets.as_deref())?,
        device: args.device,
    };
    let scale = match args.scale {
        super::run::ScaleArg::Small => Scale::Small,
        super::run::ScaleArg::Full => Scale::Full,
    };
    // The grid runs on the full splits unless a subset is asked for (issue 15).
    let limit = |given: Option<usize>| given.filter(|&l| l > 0);
    let bench = UtilityBench {
        task: task.name().to_string(),
        objective: if task.is_language_modelling() {
            dpselft_dp::Task::Lm
        } else {
            dpselft_dp::Task::Classify
        },
        train_data,
        test_data,
        data_kind: task.data_kind().into(),
        label_descriptions: dpselft_selft::pipeline::descriptions_of(task),
        paths,
        model_name: args.model.clone(),
        generator_name: args.generator.clone(),
        methods: args.methods.clone(),
        epsilons: args.epsilons.clone(),
        seeds: args.seeds,
        scale,
        train_limit: limit(args.train_limit),
        test_limit: limit(args.test_limit),
        methods_file,
        out: args.out.clone(),
    };
    let results = run_workers(&bench, args.parallel)?;
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

/// Runs the grid with `workers` threads claiming cells (each cell's runs are one thread's);
/// the first error, if any, after every worker has stopped.
fn run_workers(
    bench: &UtilityBench,
    workers: usize,
) -> anyhow::Result<Vec<dpselft_bench::CellResult>> {
    if workers == 1 {
        return Ok(run_grid(bench, &mut Log { worker: None })?);
    }
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| s.spawn(move || run_grid(bench, &mut Log { worker: Some(w) })))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut last = None;
    for outcome in outcomes {
        match outcome {
            Ok(Ok(results)) => last = Some(results),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("a grid worker panicked"),
        }
    }
    last.ok_or_else(|| anyhow::anyhow!("no grid worker ran"))
}

/// Plain log lines (tagged by worker when there are several): a grid runs for hours, usually
/// without a terminal.
#[derive(Default)]
pub struct Log {
    /// The worker's number, when several share the grid.
    pub worker: Option<usize>,
}

impl dpselft_dp::Observer for Log {}

impl Progress for Log {
    fn message(&mut self, text: &str) {
        match self.worker {
            Some(w) => eprintln!("[worker {w}] {text}"),
            None => eprintln!("{text}"),
        }
    }
}
