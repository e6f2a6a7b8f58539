//! `dpselft bench selection`: the selection's choice against the oracle (the harness is
//! `dpselft_bench::selection`).

use std::path::PathBuf;

use anyhow::Context;
use dpselft_bench::selection::{SelectionBench, load_variants, run_selection_bench};
use dpselft_model::DeviceSpec;

use super::UsageError;
use super::bench_utility::{Log, TaskArg};

/// Arguments of `dpselft bench selection`.
#[derive(clap::Args, Debug)]
pub struct SelectionArgs {
    /// The task.
    #[arg(long, value_enum, default_value = "brown-genre")]
    pub task: TaskArg,
    /// A run configuration (data paths are the task's); default: the small preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The synthesizer, with its default settings (ignored with --config).
    #[arg(long)]
    pub synthesizer: Option<String>,
    /// The run's total ε.
    #[arg(long, default_value_t = 3.0)]
    pub epsilon: f64,
    /// Seed of the run (noise included).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of the private training split held out for scoring the candidates.
    #[arg(long, default_value_t = 0.2)]
    pub held_out_fraction: f64,
    /// The report [default: bench/selection/<task>.json, its chart beside it as .svg].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Work folder, resumed if it exists
    /// [default: runs/bench-selection/<task>-<synthesizer>-eps<ε>-seed<S>].
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Train nothing more: summarise the candidates finished so far.
    #[arg(long)]
    pub report_only: bool,
    /// Learning rates every candidate is DP-fine-tuned at (comma-separated); each candidate's
    /// oracle score is its best rate's (held-out accuracy, ties to loss) [default: the run's
    /// train.lr].
    #[arg(long, value_delimiter = ',')]
    pub oracle_lrs: Vec<f64>,
    /// More rates for the head-alone candidate only (cheap: frozen features).
    #[arg(long, value_delimiter = ',')]
    pub oracle_head_lrs: Vec<f64>,
    /// Other selection designs to score against the same oracle: a TOML file of `[name]`
    /// tables whose keys replace the run's `[select]` keys (`lr` replaces train.lr), each run
    /// on the same synthetic data (e.g. bench/selection/variants.toml).
    #[arg(long, value_name = "FILE")]
    pub variants: Option<PathBuf>,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long, value_name = "DIR")]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// Runs `dpselft bench selection`.
pub fn run(args: SelectionArgs) -> anyhow::Result<()> {
    let task = args.task.task();
    if let Some(r) = args
        .oracle_lrs
        .iter()
        .chain(&args.oracle_head_lrs)
        .find(|r| !(r.is_finite() && **r > 0.0))
    {
        return Err(UsageError(format!("--oracle-lrs: {r} is not a learning rate > 0")).into());
    }
    if !(args.held_out_fraction > 0.0 && args.held_out_fraction < 1.0) {
        return Err(UsageError(format!(
            "--held-out-fraction {} must be in (0, 1)",
            args.held_out_fraction
        ))
        .into());
    }
    // The test split is set but never read: the bench scores on held-out training data.
    let (config, paths) = super::bench::task_run(
        task,
        args.config.as_deref(),
        args.synthesizer.as_deref(),
        (args.epsilon, args.seed),
        args.assets.as_deref(),
        args.device,
    )?;
    let synthesizer = config.synth.synthesizer().name();
    let work = args.work.clone().unwrap_or_else(|| {
        PathBuf::from("runs/bench-selection").join(format!(
            "{}-{synthesizer}-eps{}-seed{}",
            task.name(),
            args.epsilon,
            args.seed
        ))
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench/selection").join(format!("{}.json", task.name())));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let variants = match &args.variants {
        Some(path) => load_variants(path, &config)?,
        None => Vec::new(),
    };
    let bench = SelectionBench {
        task: task.name().to_string(),
        config,
        paths,
        held_out_fraction: args.held_out_fraction,
        work,
        report_only: args.report_only,
        oracle_lrs: args.oracle_lrs.clone(),
        oracle_head_lrs: args.oracle_head_lrs.clone(),
        variants,
    };
    let report = run_selection_bench(&bench, &out, &mut Log::default())?;
    println!("| candidate | synthetic score | held-out accuracy | held-out loss | lr |");
    println!("|---|---:|---:|---:|---:|");
    for c in &report.candidates {
        let mark = if c.spec == report.chosen {
            " ← chosen"
        } else {
            ""
        };
        println!(
            "| `{}`{mark} | {:.4} | {:.3} | {} | {} |",
            c.spec,
            c.synthetic_score,
            c.test_accuracy,
            c.held_out_loss.map_or("-".into(), |l| format!("{l:.4}")),
            c.lr.map_or("-".into(), |l| format!("{l:.2e}")),
        );
    }
    for v in &report.variants {
        println!(
            "variant {:<24} ({} / {} / τ {}): Spearman {:.3} (loss {}), regret {}, chose `{}` at lr {:.2e} (regret there {})",
            v.name,
            v.perturbation,
            v.rate_search,
            v.steps,
            v.spearman,
            v.spearman_loss.map_or("-".into(), |s| format!("{s:.3}")),
            at_rate(v.regret),
            v.chosen,
            v.chosen_lr,
            at_rate(v.chosen_rate_regret)
        );
    }
    if !report.missing.is_empty() {
        let missing: Vec<String> = report.missing.iter().map(|s| s.to_string()).collect();
        println!("not run yet: {}", missing.join(" "));
    }
    println!(
        "Spearman {:.3}, regret {:.3} (oracle `{}`, chosen `{}` at lr {:.2e}, regret there {}); report {}",
        report.spearman,
        report.regret,
        report.oracle,
        report.chosen,
        report.chosen_lr,
        at_rate(report.chosen_rate_regret),
        out.display()
    );
    Ok(())
}

/// A regret, or why there is none.
fn at_rate(regret: Option<f64>) -> String {
    regret.map_or("not run yet".into(), |r| format!("{r:.3}"))
}
