//! `dpselft bench`: measurements of the engine itself.
//!
//! `dpselft bench dp-overhead [--models minilm,smollm2] [--batch 32] [--seq-len 128] [--reps 3]
//! [--json OUT]`: the cost of a DP step against a non-private step on the same trainable set.
//!
//! The steps, their inputs and the report are `dpselft_bench::step_cost`; this module loads the
//! models, runs the memory probes and prints the table.
//!
//! Memory: each kind of step runs once more in a child process of its own (this binary with a
//! hidden `--probe` flag) that sets the row up, returns freed memory to the OS at once (jemalloc
//! `dirty_decay_ms:0,muzzy_decay_ms:0`), resets the kernel's peak-RSS counter (`clear_refs` 5),
//! runs one step and reads the peak (VmHWM). Reported: that peak (the process: weights, data and
//! the step) and the growth over the resident size just before the step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use dpselft_bench::device_parity;
use dpselft_bench::peer::{PeerRep, PeerResult, PeerRow, PeerVersions, Spread};
use dpselft_bench::step_cost::{
    Kind, MemoryProbe, Report, Row, StepBench, StepShape, default_rows, method_notes,
    time_interleaved, tiny_model,
};
use dpselft_model::{DeviceSpec, Model, TrainableSpec};
use dpselft_selft::pipeline::{ResolvedPaths, Scale};
use dpselft_selft::{RunConfig, SynthSection};

use super::UsageError;
use super::bench_peer::Peer;
use super::fetch_assets::resolve_model;

/// Arguments of `dpselft bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The benchmark.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Time and peak memory of a DP step against a non-private step on the same trainable set
    /// (`--peer`: and PyTorch's and Opacus's, interleaved).
    #[command(alias = "step")]
    DpOverhead(DpOverheadArgs),
    /// The privacy–utility grid: dp-selft against every baseline at the same (ε, δ).
    Utility(Box<super::bench_utility::UtilityArgs>),
    /// How much of the task the synthetic data carry: a fixed probe trained on them, scored on
    /// the real test split, against the same probe on real data and the majority floor.
    Synthetic(Box<super::bench_synthetic::SyntheticArgs>),
    /// The selection's choice against the oracle: every candidate DP-fine-tuned on the private
    /// training data and scored on a held-out part of it (never the test split).
    Selection(Box<super::bench_selection::SelectionArgs>),
    /// Whether a device computes what the CPU computes: per-example norms, clipped sums and
    /// three seeded DP steps on tiny random models, each compared with the CPU's (exit 1 if not).
    Device(DeviceArgs),
    /// Tokens/s of batched, KV-cached sampling from a causal LM (`--peer`: and transformers'
    /// `generate` on the same weights, interleaved).
    Generate(super::bench_generate::GenerateArgs),
}

/// Arguments of `dpselft bench device`.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `dpselft bench dp-overhead`.
#[derive(clap::Args, Debug, Clone)]
pub struct DpOverheadArgs {
    /// Models, comma-separated: asset ids (`minilm`, `smollm2`), model paths, or the built-in
    /// random `tiny` (BERT) and `tiny-llama` (for tests).
    #[arg(long, default_value = "minilm,smollm2", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Trainable sets to measure (repeat the flag); default per model: minilm `head`,
    /// `head,last:2`, `all`; smollm2 `head,last:2`, `head,last:8`; tiny `head`, `head,last:1`,
    /// `all`; another encoder as minilm, another decoder as smollm2.
    #[arg(long)]
    pub trainable: Vec<TrainableSpec>,
    /// Examples per step (one micro-batch).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Timed steps of each kind per row (after one warm-up of each).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Skip the peak-memory child processes (always skipped on a GPU: they read the host's
    /// resident size).
    #[arg(long)]
    pub no_memory: bool,
    /// Also time the same steps in PyTorch (non-private) and Opacus (DP), interleaved with ours,
    /// on every row whose model is a Hugging Face encoder folder (`bench/peer/setup` installs
    /// the peer once).
    #[arg(long)]
    pub peer: bool,
    /// The Python of the peer's environment.
    #[arg(long, default_value = "target/peer/venv/bin/python")]
    pub peer_python: PathBuf,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
    /// Internal: run one step of this kind (`dp` or `non-private`) and print its memory.
    #[arg(long, hide = true)]
    pub probe: Option<String>,
}

/// Runs `dpselft bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::DpOverhead(args) => match &args.probe {
            Some(kind) => probe(&args, kind),
            None => dp_overhead(&args).map(|_| ()),
        },
        BenchCommand::Utility(args) => super::bench_utility::run(*args),
        BenchCommand::Synthetic(args) => super::bench_synthetic::run(*args),
        BenchCommand::Selection(args) => super::bench_selection::run(*args),
        BenchCommand::Device(args) => device(&args),
        BenchCommand::Generate(args) => super::bench_generate::run(args),
    }
}

/// Runs `dpselft bench device`: prints the table, writes the JSON, fails on a difference.
fn device(args: &DeviceArgs) -> anyhow::Result<()> {
    let report = device_parity::device_parity(args.device)?;
    print!("{}", device_parity::table(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        dpselft_fsio::write_bytes_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(device_parity::check(&report)?)
}

/// The run configuration and models of a benchmark task: `config` (a file) or the small preset
/// with `synthesizer` (default settings; ignored with a file), the task's data (built if absent)
/// and data kind, the bench's ε and seed, the device. Shared by `bench synthetic` and `bench selection`.
pub(super) fn task_run(
    task: dpselft_data::BenchmarkTask,
    config: Option<&Path>,
    synthesizer: Option<&str>,
    (epsilon, seed): (f64, u64),
    assets: Option<&Path>,
    device: DeviceSpec,
) -> anyhow::Result<(RunConfig, ResolvedPaths)> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(usage(format!("--epsilon {epsilon} must be > 0")));
    }
    let mut c = match config {
        Some(path) => RunConfig::load(path)?,
        None => {
            // The benches' committed size (`bench/synthetic/*.json`): seeded subsets.
            let mut c = RunConfig::preset(Scale::Small);
            c.run.train_limit = Some(1500);
            c.run.test_limit = Some(1000);
            c
        }
    };
    if let (None, Some(name)) = (config, synthesizer) {
        c.synth = SynthSection::named(name).map_err(|e| usage(format!("--synthesizer: {e}")))?;
    }
    let (train_data, test_data) = super::data::ensure_task_data(task, assets)?;
    c.run.train_data = train_data;
    c.run.test_data = Some(test_data);
    c.run.data_kind = task.data_kind().into();
    c.run.label_descriptions = dpselft_selft::pipeline::descriptions_of(task);
    c.run.epsilon = epsilon;
    c.run.seed = Some(seed);
    c.validate().map_err(|e| usage(e.to_string()))?;
    let paths = ResolvedPaths {
        model: resolve_model(&c.run.model, assets)?,
        generator: resolve_model(&c.run.generator, assets)?,
        device,
    };
    Ok((c, paths))
}

fn usage(msg: String) -> anyhow::Error {
    UsageError(msg).into()
}

/// A model by asset id, path, or the built-in random `tiny` / `tiny-llama`.
pub(super) fn load_model(
    id: &str,
    assets: Option<&Path>,
    device: DeviceSpec,
) -> anyhow::Result<Model> {
    if matches!(id, "tiny" | "tiny-llama") {
        return Ok(tiny_model(id, &device.open()?)?);
    }
    super::load_model_on(&resolve_model(id, assets)?, device)
}

/// A field of /proc/self/status in KiB (VmRSS, VmHWM).
fn status_kib(field: &str) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

/// The child side of a memory probe: set up, reset the peak, one step, report.
fn probe(args: &DpOverheadArgs, kind: &str) -> anyhow::Result<()> {
    let kind = match kind {
        "dp" => Kind::Dp,
        "non-private" => Kind::NonPrivate,
        k => bail!("--probe {k}: expected dp or non-private"),
    };
    let [model_id] = args.models.as_slice() else {
        bail!("--probe needs exactly one model");
    };
    let [spec] = args.trainable.as_slice() else {
        bail!("--probe needs exactly one --trainable");
    };
    let base = load_model(model_id, args.assets.as_deref(), args.device)?;
    let mut s = StepBench::new(&base, spec, shape(args))?;
    drop(base);
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS")?;
    let before = status_kib("VmRSS")?;
    s.step(kind)?;
    let peak = status_kib("VmHWM")?;
    let m = MemoryProbe {
        before_mib: before / 1024.0,
        peak_mib: peak / 1024.0,
        growth_mib: (peak - before) / 1024.0,
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// Runs one memory probe in a child process.
fn run_probe(
    args: &DpOverheadArgs,
    model_id: &str,
    spec: &TrainableSpec,
    kind: Kind,
) -> anyhow::Result<MemoryProbe> {
    let exe = std::env::current_exe().context("locating the dpselft binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "bench",
        "dp-overhead",
        "--models",
        model_id,
        "--trainable",
        &spec.to_string(),
    ])
    .args(["--batch", &args.batch.to_string()])
    .args(["--seq-len", &args.seq_len.to_string()])
    .args(["--probe", kind.flag()])
    .env("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0");
    if let Some(a) = &args.assets {
        cmd.arg("--assets").arg(a);
    }
    let out = cmd.output().context("running the memory probe")?;
    if !out.status.success() {
        bail!(
            "memory probe ({model_id}, {spec}, {}) failed: {}",
            kind.flag(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the memory probe's report")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs `dpselft bench dp-overhead`: prints the table, writes the JSON, returns the report.
pub fn dp_overhead(args: &DpOverheadArgs) -> anyhow::Result<Report> {
    if args.batch == 0 || args.seq_len < 3 || args.reps == 0 || args.models.is_empty() {
        return Err(usage(
            "--batch and --reps must be ≥ 1, --seq-len ≥ 3, --models not empty".into(),
        ));
    }
    let started = Instant::now();
    let load_start = loadavg();
    let mut rows = Vec::new();
    let mut peer_versions = None;
    for model_id in &args.models {
        eprintln!("{model_id}: loading");
        let base = load_model(model_id, args.assets.as_deref(), args.device)?;
        let specs = if args.trainable.is_empty() {
            default_rows(model_id, &base)
        } else {
            args.trainable.clone()
        };
        let peer_dir = if args.peer {
            peer_model_dir(model_id, &base, args.assets.as_deref())?
        } else {
            None
        };
        for spec in &specs {
            let (row, versions) = measure_row(args, model_id, &base, spec, peer_dir.as_deref())?;
            peer_versions = peer_versions.or(versions);
            rows.push(row);
        }
    }
    let mut method = method_notes(shape(args), args.reps);
    if args.peer {
        method.push(PEER_NOTE.into());
    }
    let report = Report {
        batch: args.batch,
        seq_len: args.seq_len,
        reps: args.reps,
        method,
        loadavg: [load_start, loadavg()],
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        device: args.device,
        peer_rows: PeerRow::side_by_side(args.batch, args.seq_len, &rows),
        peer_versions: peer_versions.take(),
        rows,
        wall_s: started.elapsed().as_secs_f64(),
    };
    print_table(&report);
    if !report.peer_rows.is_empty() {
        print_peer_table(&report);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        dpselft_fsio::write_bytes_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// How the peer's rows are obtained (the report says so).
const PEER_NOTE: &str = "peer (bench/peer/peer_step.py): the same model folder and shapes in \
    PyTorch, a mean-pooled linear head, random token ids without padding, AdamW; non-private \
    plain autograd, DP Opacus (GradSampleModule hooks, DPOptimizer: C = 1, sigma = 1); \
    OMP_WAIT_POLICY=PASSIVE so that its threads do not spin into our steps; one warm-up of each kind, then one pair right after each of ours (order alternating); peak: the peer \
    process's VmHWM over the step after a reset (weights, data and the step)";

/// The folder the peer loads for `model_id`, or `None` (with a note) when the peer cannot run
/// it: it loads Hugging Face encoder folders (Opacus has no per-sample gradients for Llama's
/// RMSNorm, and the GGUF SmolLM2 has no folder).
fn peer_model_dir(
    model_id: &str,
    base: &Model,
    assets: Option<&Path>,
) -> anyhow::Result<Option<PathBuf>> {
    let path = if matches!(model_id, "tiny" | "tiny-llama") {
        None
    } else {
        Some(resolve_model(model_id, assets)?)
    };
    match path {
        Some(p) if p.join("config.json").is_file() && !base.is_causal() => Ok(Some(p)),
        _ => {
            eprintln!(
                "{model_id}: no peer (it runs Hugging Face encoder folders: Opacus cannot clip \
                 Llama's RMSNorm per example, and a GGUF file has no folder)"
            );
            Ok(None)
        }
    }
}

/// One row: the timed steps in this process (each pair followed by one of the peer's, with
/// `--peer`), then (unless --no-memory) the memory probes.
fn measure_row(
    args: &DpOverheadArgs,
    model_id: &str,
    base: &Model,
    spec: &TrainableSpec,
    peer_dir: Option<&Path>,
) -> anyhow::Result<(Row, Option<PeerVersions>)> {
    let mut s = StepBench::new(base, spec, shape(args))?;
    let scalars = s.trainable_scalars();
    let mut peer = match peer_dir {
        Some(dir) => {
            eprintln!("{model_id} [{spec}]: starting the peer");
            let p = Peer::start(
                &args.peer_python,
                dir,
                &spec.to_string(),
                (args.batch, args.seq_len),
                args.device,
            )?;
            Some(p)
        }
        None => None,
    };
    eprintln!("{model_id} [{spec}] ({scalars} trainable): warm-up");
    let mut peer_reps: Vec<anyhow::Result<PeerRep>> = Vec::new();
    let (np, dp) = time_interleaved(&mut s, args.reps, |r, np, dp| {
        let mut line = format!(
            "{model_id} [{spec}] {}/{}: non-private {:.3} s, DP {:.3} s",
            r + 1,
            args.reps,
            np.total,
            dp.total
        );
        if let Some(p) = peer.as_mut() {
            let rep = p.rep(r);
            if let Ok(rep) = &rep {
                line += &format!(
                    "; PyTorch {:.3} s, Opacus {:.3} s",
                    rep.nonprivate_s, rep.dp_s
                );
            }
            peer_reps.push(rep);
        }
        eprintln!("{line}");
    })?;
    drop(s);
    let versions = peer.take().map(|p| p.versions.clone());
    let peer_result = if versions.is_some() {
        let reps = peer_reps.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        Some(PeerResult::from_reps(&reps))
    } else {
        None
    };
    // The probes read the process's resident size, which says nothing of a GPU's memory.
    let memory = if args.no_memory || args.device != DeviceSpec::Cpu {
        (None, None)
    } else {
        eprintln!("{model_id} [{spec}]: memory probes");
        (
            Some(run_probe(args, model_id, spec, Kind::NonPrivate)?),
            Some(run_probe(args, model_id, spec, Kind::Dp)?),
        )
    };
    let mut row = Row::from_samples(model_id, spec, scalars, (&np, &dp), memory);
    row.peer = peer_result;
    Ok((row, versions))
}

fn shape(args: &DpOverheadArgs) -> StepShape {
    StepShape {
        batch: args.batch,
        seq_len: args.seq_len,
    }
}

fn print_table(r: &Report) {
    println!(
        "dp-overhead: batch {} x {} tokens, {} timed steps of each kind per row (medians), {} CPUs",
        r.batch, r.seq_len, r.reps, r.cpus
    );
    let line = |cells: [&str; 11]| {
        println!(
            "{:<10} {:<12} {:>9} {:>9} {:>9} {:>6} {:>6} {:>7} {:>17} {:>17} {:>12}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9],
            cells[10]
        );
    };
    line([
        "model",
        "trainable",
        "scalars",
        "nonpriv s",
        "DP s",
        "DP/np",
        "clip%",
        "nz+opt%",
        "np MiB peak(+step)",
        "DP MiB peak(+step)",
        "mem DP/np",
    ]);
    for row in &r.rows {
        let mem = |m: &Option<MemoryProbe>| {
            m.map_or("-".into(), |m| {
                format!("{:.0} (+{:.0})", m.peak_mib, m.growth_mib)
            })
        };
        let ratio = match (row.memory_peak_ratio, row.memory_growth_ratio) {
            (Some(p), Some(g)) => format!("{p:.2} ({g:.2})"),
            _ => "-".into(),
        };
        let model = Path::new(&row.model)
            .file_name()
            .map_or(row.model.clone(), |f| f.to_string_lossy().into_owned());
        line([
            &model,
            &row.trainable,
            &row.trainable_scalars.to_string(),
            &format!("{:.3}", row.non_private.median.total),
            &format!("{:.3}", row.dp.median.total),
            &format!("{:.2}", row.time_ratio),
            &format!("{:.1}", 100.0 * row.dp_share_norms_clip),
            &format!("{:.1}", 100.0 * row.dp_share_noise_optimizer),
            &mem(&row.non_private.memory),
            &mem(&row.dp.memory),
            &ratio,
        ]);
    }
    println!(
        "  DP/np: median DP step / median non-private step; clip%, nz+opt%: shares of the median \
         DP step in clip_groups and in noise+optimizer; mem: peak resident MiB of a \
         process doing one such step (+ growth during the step), ratio DP/np of peaks (of growths)"
    );
    for note in &r.method {
        println!("  {note}");
    }
    println!(
        "  load average at start / end: {} / {}; wall time {:.1} s",
        r.loadavg[0], r.loadavg[1], r.wall_s
    );
}

/// The side-by-side table: medians [min–max] of each step, the ratios the targets name, peaks.
fn print_peer_table(r: &Report) {
    let spread = |s: Spread| format!("{:.3} [{:.3}–{:.3}]", s.median, s.min, s.max);
    let ours = |samples: &[f64]| spread(Spread::of(samples));
    println!(
        "\nside by side ({}):",
        r.peer_versions.as_ref().map_or(String::new(), |v| format!(
            "PyTorch {}, Opacus {}, transformers {}, {} threads, {}",
            v.torch, v.opacus, v.transformers, v.threads, v.blas
        ))
    );
    println!(
        "{:<10} {:<12} {:>22} {:>22} {:>22} {:>22} {:>9} {:>9} {:>9} {:>15}",
        "model",
        "trainable",
        "dpselft np s",
        "PyTorch np s",
        "dpselft DP s",
        "Opacus DP s",
        "np/PT",
        "DP/np",
        "DP/Opac",
        "DP MiB us/Opac"
    );
    for row in r.rows.iter() {
        let Some(p) = &row.peer else { continue };
        let model = Path::new(&row.model)
            .file_name()
            .map_or(row.model.clone(), |f| f.to_string_lossy().into_owned());
        let mem = row.dp.memory.map_or("-".into(), |m| {
            format!("{:.0}/{:.0}", m.peak_mib, p.opacus_dp_peak_mib)
        });
        println!(
            "{:<10} {:<12} {:>22} {:>22} {:>22} {:>22} {:>9.2} {:>9.2} {:>9.2} {:>15}",
            model,
            row.trainable,
            ours(&row.non_private.samples_s),
            spread(p.pytorch_nonprivate),
            ours(&row.dp.samples_s),
            spread(p.opacus_dp),
            row.non_private.median.total / p.pytorch_nonprivate.median,
            row.time_ratio,
            row.dp.median.total / p.opacus_dp.median,
            mem
        );
    }
    println!(
        "  np/PT: dpselft's median non-private step / PyTorch's (target ≤ 0.8); DP/np: ours (≤ \
         1.05); DP/Opac: our median DP step / Opacus's (≤ 0.5); DP MiB: peak resident MiB of a \
         process doing one DP step, ours / Opacus's"
    );
}
