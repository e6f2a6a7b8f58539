//! `dpselft bench synthetic`: the probe accuracy of the synthetic data against real data and the
//! majority floor (the harness is `dpselft_bench::synthetic`).

use std::path::PathBuf;

use anyhow::Context;
use dpselft_bench::synthetic::{Probe, SyntheticBench, run_synthetic_bench};
use dpselft_model::DeviceSpec;

use super::bench_utility::{Log, TaskArg};

/// Arguments of `dpselft bench synthetic`.
#[derive(clap::Args, Debug)]
pub struct SyntheticArgs {
    /// The task.
    #[arg(long, value_enum, default_value = "brown-genre")]
    pub task: TaskArg,
    /// A run configuration whose `[run]` ε, seed, limits and `[synth]` section are used (data
    /// paths are the task's); default: the small preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The synthesizer, with its default settings (ignored with --config): dp-generator or
    /// private-evolution.
    #[arg(long, default_value = "dp-generator")]
    pub synthesizer: String,
    /// The run's total ε (the synthetic stage spends `run.synth_fraction` of it).
    #[arg(long, default_value_t = 3.0)]
    pub epsilon: f64,
    /// Seed of the run (noise included).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probe optimizer steps.
    #[arg(long, default_value_t = Probe::default().steps)]
    pub probe_steps: u64,
    /// Probe learning rate.
    #[arg(long, default_value_t = Probe::default().lr)]
    pub probe_lr: f64,
    /// Test texts on which the DP generator's perplexity is measured before and after its
    /// tuning (`synth.perplexity_examples`; 0: not measured).
    #[arg(long, default_value_t = 256)]
    pub perplexity_examples: usize,
    /// The report [default: bench/synthetic/<task>.<synthesizer>.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Work folder for the synthetic run and the probes (must not exist)
    /// [default: runs/bench-synthetic/<task>-seed<S>-<unix time>].
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long, value_name = "DIR")]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// Runs `dpselft bench synthetic`.
pub fn run(args: SyntheticArgs) -> anyhow::Result<()> {
    let task = args.task.task();
    let (mut config, paths) = super::bench::task_run(
        task,
        args.config.as_deref(),
        Some(&args.synthesizer),
        (args.epsilon, args.seed),
        args.assets.as_deref(),
        args.device,
    )?;
    if let Some(g) = config.synth.generator_mut() {
        g.perplexity_examples = args.perplexity_examples;
    }
    let work = args.work.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("runs/bench-synthetic").join(format!(
            "{}-seed{}-{now}",
            task.name(),
            args.seed
        ))
    });
    let name = config.synth.synthesizer().name();
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("bench/synthetic").join(format!("{}.{name}.json", task.name()))
    });
    let probe = Probe {
        steps: args.probe_steps,
        lr: args.probe_lr,
        ..Probe::default()
    };
    let bench = SyntheticBench {
        task: task.name().to_string(),
        config,
        paths,
        probe,
        work,
    };
    let report = run_synthetic_bench(&bench, &mut Log::default())?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    dpselft_fsio::write_bytes_atomic(&out, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "| task | synthesizer | synthetic | synthetic→real | real probe | majority | target | ε_synth |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        report.task,
        report.synthesizer,
        report.synthetic_examples,
        report.synthetic_to_real_accuracy,
        report.real_probe_accuracy,
        report.majority_accuracy,
        report.target_accuracy,
        report.epsilon_synth
    );
    if let (Some(before), Some(after)) = (
        report.generator_perplexity_before,
        report.generator_perplexity_after,
    ) {
        println!(
            "generator perplexity on {} test texts: {before:.3} before its DP tuning, {after:.3} after",
            report.perplexity_examples.unwrap_or(0)
        );
    }
    println!("report: {}", out.display());
    Ok(())
}
