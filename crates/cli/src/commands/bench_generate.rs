//! `dpselft bench generate [--model smollm2] [--batch 1,96] [--prompt-len 32] [--new-tokens 48]
//! [--reps 3] [--peer] [--json OUT]`: tokens/s of batched, KV-cached sampling (what the
//! synthesizers spend their time on), and with `--peer` Hugging Face transformers' `generate`
//! on the same weights and prompts, the runs interleaved (`dpselft_bench::generation`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use dpselft_bench::generation::{
    GenReport, GenRow, GenSampling, GenShape, random_prompts, time_ours,
};
use dpselft_model::{DeviceSpec, Model};

use super::UsageError;
use super::bench_peer::GenPeer;

/// Arguments of `dpselft bench generate`.
#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// A causal LM: a model folder, a .gguf file, the asset id `smollm2`, or the built-in
    /// random `tiny-llama` (for tests).
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// Prompts generated together, one row per value (96: the synthesizers' batch).
    #[arg(long, default_value = "1,96", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    /// Tokens generated per prompt (48: the synthesizers' default).
    #[arg(long, default_value_t = 48)]
    pub new_tokens: usize,
    /// Timed runs per row and side (after one warm-up each).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Also time transformers' `generate` on the same weights (written once as a Hugging Face
    /// folder under target/peer/), interleaved with ours; `bench/peer/setup` installs it.
    #[arg(long)]
    pub peer: bool,
    /// The Python of the peer's environment.
    #[arg(long, default_value = "target/peer/venv/bin/python")]
    pub peer_python: PathBuf,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The assets folder (default: $DPSELFT_ASSETS, else ./assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t, help = super::DEVICE_HELP)]
    pub device: DeviceSpec,
}

/// How the rows are measured (the report says so).
const METHOD: [&str; 3] = [
    "random prompt ids of exactly --prompt-len tokens (seeded per row), the same on both sides; \
     every row continued by exactly --new-tokens tokens (EOS ends nothing: ours with \
     stop_at_eos off, the peer with min_new_tokens); tokens/s = generated tokens / the median \
     run's seconds (prefill included)",
    "sampling: the given temperature and top-p, top-k off, KV cache on both sides",
    "peer (bench/peer/peer_generate.py): transformers' generate on the same weights written as \
     a Hugging Face folder, 2 threads, OMP_WAIT_POLICY=PASSIVE; one warm-up of each side per \
     row, then the runs alternate (ours first on even reps)",
];

/// Runs `dpselft bench generate`: prints the table, writes the JSON.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let bad = |msg: &str| anyhow::Error::from(UsageError(msg.into()));
    if args.batch.is_empty() || args.batch.contains(&0) || args.reps == 0 {
        return Err(bad("--batch values and --reps must be ≥ 1"));
    }
    if args.prompt_len == 0 || args.new_tokens == 0 {
        return Err(bad("--prompt-len and --new-tokens must be ≥ 1"));
    }
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        return Err(bad("--temperature must be > 0 (sampling is what is timed)"));
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        return Err(bad("--top-p must be in (0, 1]"));
    }
    if args.peer && args.device != DeviceSpec::Cpu {
        return Err(bad("--peer runs on the CPU: leave --device out"));
    }
    let started = Instant::now();
    let model = super::bench::load_model(&args.model, args.assets.as_deref(), args.device)?;
    if !model.has_lm_head() {
        return Err(bad(&format!(
            "--model {}: generation needs a causal LM; the {} family has no LM head",
            args.model,
            model.family()
        )));
    }
    let room = model.config.max_positions();
    if args.prompt_len + args.new_tokens > room {
        return Err(bad(&format!(
            "--prompt-len + --new-tokens must fit the model's {room} positions"
        )));
    }
    let mut peer = if args.peer {
        let folder = peer_folder(&model, &args.model)?;
        Some(GenPeer::start(&args.peer_python, &folder)?)
    } else {
        None
    };
    let sampling = GenSampling {
        temperature: args.temperature,
        top_p: args.top_p,
    };
    let mut rows = Vec::new();
    for &batch in &args.batch {
        let shape = GenShape {
            batch,
            prompt_len: args.prompt_len,
            new_tokens: args.new_tokens,
        };
        rows.push(measure_row(&args, &model, peer.as_mut(), shape, sampling)?);
    }
    let report = GenReport {
        sampling,
        reps: args.reps,
        rows,
        peer_versions: peer.as_ref().map(|p| p.versions.clone()),
        method: METHOD.iter().map(|s| s.to_string()).collect(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        wall_s: started.elapsed().as_secs_f64(),
    };
    print_table(&report);
    if let Some(out) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        dpselft_fsio::write_bytes_atomic(out, text.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// One row: a warm-up of each side, then `reps` runs of each, alternating.
fn measure_row(
    args: &GenerateArgs,
    model: &Model,
    mut peer: Option<&mut GenPeer>,
    shape: GenShape,
    sampling: GenSampling,
) -> anyhow::Result<GenRow> {
    let prompts = random_prompts(shape, model.config.vocab_size(), 7 + shape.batch as u64);
    let label = format!(
        "{} x ({} + {} tokens)",
        shape.batch, shape.prompt_len, shape.new_tokens
    );
    eprintln!("{label}: warm-up");
    time_ours(model, &prompts, shape, sampling, 0)?;
    if let Some(p) = peer.as_deref_mut() {
        p.generate(&prompts, shape, sampling, 0)?;
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for r in 0..args.reps {
        let seed = 1 + r as u64;
        let run_ours = || time_ours(model, &prompts, shape, sampling, seed);
        let t = match peer.as_deref_mut() {
            Some(p) if r % 2 == 1 => {
                theirs.push(p.generate(&prompts, shape, sampling, seed)?);
                run_ours()?
            }
            Some(p) => {
                let t = run_ours()?;
                theirs.push(p.generate(&prompts, shape, sampling, seed)?);
                t
            }
            None => run_ours()?,
        };
        ours.push(t);
        let peer_note = theirs
            .last()
            .map_or(String::new(), |s| format!("; transformers {s:.2} s"));
        eprintln!("{label} {}/{}: ours {t:.2} s{peer_note}", r + 1, args.reps);
    }
    Ok(GenRow::from_runs(&args.model, shape, &ours, &theirs))
}

/// The Hugging Face folder the peer loads: the model as we hold it (a GGUF's weights
/// dequantised, as ours samples from them), written once under target/peer/.
fn peer_folder(model: &Model, id: &str) -> anyhow::Result<PathBuf> {
    let stem = Path::new(id)
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let dir = PathBuf::from("target/peer").join(format!("{stem}-hf"));
    if !dir.join("config.json").is_file() {
        eprintln!("writing the peer's copy of the model to {}", dir.display());
        dpselft_model::save::save_hf(model, &dir)
            .with_context(|| format!("writing {}", dir.display()))?;
    }
    Ok(dir)
}

fn print_table(r: &GenReport) {
    println!(
        "generate: temperature {}, top-p {}, {} timed runs per row and side (medians), {} CPUs{}",
        r.sampling.temperature,
        r.sampling.top_p,
        r.reps,
        r.cpus,
        r.peer_versions.as_ref().map_or(String::new(), |v| format!(
            "; peer: PyTorch {}, transformers {}, {} threads, {}",
            v.torch, v.transformers, v.threads, v.blas
        ))
    );
    println!(
        "{:<10} {:>6} {:>7} {:>7} {:>22} {:>22} {:>10} {:>10} {:>8}",
        "model",
        "batch",
        "prompt",
        "new",
        "dpselft s",
        "transformers s",
        "ours t/s",
        "theirs t/s",
        "ours/PT"
    );
    let spread =
        |s: &dpselft_bench::peer::Spread| format!("{:.2} [{:.2}–{:.2}]", s.median, s.min, s.max);
    for row in &r.rows {
        let model = Path::new(&row.model)
            .file_name()
            .map_or(row.model.clone(), |f| f.to_string_lossy().into_owned());
        println!(
            "{:<10} {:>6} {:>7} {:>7} {:>22} {:>22} {:>10.1} {:>10} {:>8}",
            model,
            row.shape.batch,
            row.shape.prompt_len,
            row.shape.new_tokens,
            spread(&row.dpselft_s),
            row.pytorch_s.as_ref().map_or("-".into(), spread),
            row.dpselft_tokens_per_s,
            row.pytorch_tokens_per_s
                .map_or("-".into(), |t| format!("{t:.1}")),
            row.speed_ratio().map_or("-".into(), |x| format!("{x:.2}")),
        );
    }
    println!("  ours/PT: our generated tokens/s over transformers' (target ≥ 1)");
    for note in &r.method {
        println!("  {note}");
    }
    println!("  wall time {:.1} s", r.wall_s);
}
