//! `dpselft account`: ε for a given noise multiplier, or the noise multiplier for a target ε, of
//! the Poisson-subsampled Gaussian mechanism (DP-SGD), under the PLD and RDP accountants.
//!
//! ```text
//! dpselft account --sigma S --sampling-rate Q --steps T --delta D [--accountant pld|rdp|all] [--json]
//! dpselft account --target-epsilon E --sampling-rate Q --steps T --delta D [--json]
//! dpselft account ... --dataset-size N --batch-size B --epochs K   # q = B/N, T = ceil(K·N/B)
//! ```

use clap::ValueEnum;
use dpselft_privacy::{
    Mechanism, PldAccountant, PrivacyError, RdpAccountant, RdpGuarantee, calibrate_sigma,
    sampling_from_epochs,
};
use serde_json::{Map, Value, json};

use crate::commands::UsageError;

/// Which accountants to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Privacy loss distribution (tight; the default guarantee).
    Pld,
    /// Rényi DP (looser; reported for comparison).
    Rdp,
    /// Both.
    All,
}

/// Arguments of `dpselft account`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["sigma", "target_epsilon"])))]
pub struct Args {
    /// Noise multiplier σ (noise std / clip norm): report the ε it gives.
    #[arg(long, allow_negative_numbers = true)]
    pub sigma: Option<f64>,
    /// Target ε: report the smallest σ that meets it (to 1e-4 relative).
    #[arg(long, allow_negative_numbers = true)]
    pub target_epsilon: Option<f64>,
    /// Poisson sampling rate q in (0, 1] (or give --dataset-size, --batch-size, --epochs).
    #[arg(long, allow_negative_numbers = true, conflicts_with_all = ["dataset_size", "batch_size", "epochs"])]
    pub sampling_rate: Option<f64>,
    /// Number of steps T ≥ 1 (with --sampling-rate).
    #[arg(long, conflicts_with_all = ["dataset_size", "batch_size", "epochs"])]
    pub steps: Option<u64>,
    /// Dataset size N (q = B/N, T = ceil(K·N/B)).
    #[arg(long)]
    pub dataset_size: Option<u64>,
    /// Expected (logical) batch size B.
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// Number of epochs K (may be fractional).
    #[arg(long, allow_negative_numbers = true)]
    pub epochs: Option<f64>,
    /// δ in (0, 1).
    #[arg(long, allow_negative_numbers = true)]
    pub delta: f64,
    /// Accountant(s) to report.
    #[arg(long, value_enum, default_value_t = Which::All)]
    pub accountant: Which,
    /// PLD discretisation of the privacy loss.
    #[arg(long, default_value_t = 1e-4)]
    pub discretisation: f64,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Invalid parameters are usage errors (exit code 2); anything else is a plain failure.
fn classify(err: PrivacyError) -> anyhow::Error {
    match err {
        PrivacyError::InvalidParameter { .. } => usage(err.to_string()),
        other => other.into(),
    }
}

/// (q, T) from either form of the arguments.
fn sampling(args: &Args) -> anyhow::Result<(f64, u64)> {
    match (args.sampling_rate, args.steps) {
        (Some(q), Some(t)) => {
            if !(q > 0.0 && q <= 1.0) {
                return Err(usage(format!(
                    "invalid --sampling-rate {q}: expected a number in (0, 1]"
                )));
            }
            if t == 0 {
                return Err(usage("invalid --steps 0: expected an integer ≥ 1"));
            }
            Ok((q, t))
        }
        (None, None) => match (args.dataset_size, args.batch_size, args.epochs) {
            (Some(n), Some(b), Some(k)) => sampling_from_epochs(n, b, k).map_err(classify),
            _ => Err(usage(
                "give either --sampling-rate and --steps, or --dataset-size, --batch-size and \
                 --epochs",
            )),
        },
        (Some(_), None) => Err(usage("--sampling-rate needs --steps")),
        (None, Some(_)) => Err(usage("--steps needs --sampling-rate")),
    }
}

fn num(x: f64) -> Value {
    // JSON has no infinity: an unbounded ε is null.
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn fmt_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6}")
    } else {
        "unbounded".to_string()
    }
}

/// The checked inputs shared by both modes: (q, T, δ), the accountants and which to report.
struct Inputs {
    q: f64,
    steps: u64,
    delta: f64,
    discretisation: f64,
    pld: PldAccountant,
    rdp: RdpAccountant,
    want_pld: bool,
    want_rdp: bool,
}

/// Validates δ and the PLD discretisation, resolves (q, T) and sets up the accountants.
fn inputs(args: &Args) -> anyhow::Result<Inputs> {
    if !(args.delta > 0.0 && args.delta < 1.0) {
        return Err(usage(format!(
            "invalid --delta {}: expected a number in (0, 1)",
            args.delta
        )));
    }
    if !(args.discretisation.is_finite() && args.discretisation > 0.0 && args.discretisation <= 0.1)
    {
        return Err(usage(format!(
            "invalid --discretisation {}: expected a number in (0, 0.1]",
            args.discretisation
        )));
    }
    let (q, steps) = sampling(args)?;
    Ok(Inputs {
        q,
        steps,
        delta: args.delta,
        discretisation: args.discretisation,
        pld: PldAccountant::with_discretisation(args.discretisation),
        rdp: RdpAccountant::default(),
        want_pld: matches!(args.accountant, Which::Pld | Which::All),
        want_rdp: matches!(args.accountant, Which::Rdp | Which::All),
    })
}

/// Runs `dpselft account`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let inp = inputs(&args)?;
    match args.sigma {
        Some(sigma) => epsilon_for_sigma(&inp, sigma, args.json),
        None => sigma_for_target(&inp, args.target_epsilon, args.json),
    }
}

/// The ε of each requested accountant for σ: (PLD ε, RDP guarantee).
type Epsilons = (Option<f64>, Option<RdpGuarantee>);

/// The `--sigma` mode: validates σ, computes ε under each requested accountant and prints it.
fn epsilon_for_sigma(inp: &Inputs, sigma: f64, json: bool) -> anyhow::Result<()> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(usage(format!(
            "invalid --sigma {sigma}: expected a finite number > 0"
        )));
    }
    let eps = epsilons(inp, sigma)?;
    if json {
        print_epsilon_json(inp, sigma, eps)?;
    } else {
        print_epsilon_table(inp, sigma, eps);
    }
    Ok(())
}

/// ε of the sampled Gaussian (q, σ, T) at δ under each requested accountant (PLD first).
fn epsilons(inp: &Inputs, sigma: f64) -> anyhow::Result<Epsilons> {
    let ev = [Mechanism::sampled_gaussian(inp.q, sigma, inp.steps).map_err(classify)?];
    let e_pld = if inp.want_pld {
        Some(inp.pld.epsilon(&ev, inp.delta).map_err(classify)?)
    } else {
        None
    };
    let g_rdp = if inp.want_rdp {
        Some(inp.rdp.epsilon(&ev, inp.delta).map_err(classify)?)
    } else {
        None
    };
    Ok((e_pld, g_rdp))
}

/// Prints the `--sigma` result as one JSON object.
fn print_epsilon_json(inp: &Inputs, sigma: f64, (e_pld, g_rdp): Epsilons) -> std::io::Result<()> {
    let mut eps = Map::new();
    if let Some(e) = e_pld {
        eps.insert("pld".into(), num(e));
    }
    let mut out = Map::new();
    if let Some(g) = g_rdp {
        eps.insert("rdp".into(), num(g.epsilon));
    }
    out.insert("epsilon".into(), Value::Object(eps));
    if let Some(g) = g_rdp {
        out.insert("rdp_order".into(), num(g.order));
    }
    out.insert("delta".into(), json!(inp.delta));
    out.insert("sampling_rate".into(), json!(inp.q));
    out.insert("steps".into(), json!(inp.steps));
    out.insert("sigma".into(), json!(sigma));
    crate::output::emit_json(&Value::Object(out), false)
}

/// Prints the `--sigma` result as a table, one row per accountant.
fn print_epsilon_table(inp: &Inputs, sigma: f64, (e_pld, g_rdp): Epsilons) {
    let (q, steps, delta) = (inp.q, inp.steps, inp.delta);
    println!(
        "Poisson-subsampled Gaussian: q = {q}, T = {steps}, sigma = {sigma}, delta = {delta:e}"
    );
    println!("{:<12} {:>12}  note", "accountant", "epsilon");
    if let Some(e) = e_pld {
        println!(
            "{:<12} {:>12}  discretisation {:e}",
            "pld",
            fmt_num(e),
            inp.discretisation
        );
    }
    if let Some(g) = g_rdp {
        println!(
            "{:<12} {:>12}  optimal order {}",
            "rdp",
            fmt_num(g.epsilon),
            g.order
        );
    }
}

/// The calibrated σ of each requested accountant with the ε it gives.
struct Calibrated {
    /// (σ, ε) under PLD.
    pld: Option<(f64, f64)>,
    /// (σ, guarantee) under RDP.
    rdp: Option<(f64, RdpGuarantee)>,
    /// Why RDP cannot reach the target, when PLD can (both were asked for).
    rdp_unreachable: Option<String>,
}

/// The `--target-epsilon` mode: validates the target, calibrates σ under each requested
/// accountant and prints it.
fn sigma_for_target(inp: &Inputs, target: Option<f64>, json: bool) -> anyhow::Result<()> {
    let target = target.unwrap_or(f64::NAN);
    if !(target.is_finite() && target > 0.0) {
        return Err(usage(format!(
            "invalid --target-epsilon {target}: expected a finite number > 0"
        )));
    }
    let cal = calibrate(inp, target)?;
    if json {
        print_calibration_json(inp, target, &cal)?;
    } else {
        print_calibration_table(inp, target, &cal);
    }
    Ok(())
}

/// The smallest σ meeting `target` under each requested accountant (PLD, then RDP), then the
/// ε each σ gives (in that order).
fn calibrate(inp: &Inputs, target: f64) -> anyhow::Result<Calibrated> {
    let delta = inp.delta;
    let template = Mechanism::sampled_gaussian(inp.q, 1.0, inp.steps).map_err(classify)?;
    let s_pld = if inp.want_pld {
        Some(calibrate_sigma(&inp.pld, &[], &template, target, delta).map_err(classify)?)
    } else {
        None
    };
    // With both accountants asked for, RDP's looser bound failing to reach a tiny target is
    // reported beside PLD's answer instead of failing the command.
    let mut rdp_unreachable = None;
    let s_rdp = if inp.want_rdp {
        match calibrate_sigma(&inp.rdp, &[], &template, target, delta) {
            Ok(s) => Some(s),
            Err(PrivacyError::Unreachable(why) | PrivacyError::Calibration(why))
                if inp.want_pld =>
            {
                rdp_unreachable = Some(why);
                None
            }
            Err(e) => return Err(classify(e)),
        }
    } else {
        None
    };
    let e_pld = match s_pld {
        Some(s) => Some(
            inp.pld
                .epsilon(&[template.with_noise_multiplier(s)], delta)
                .map_err(classify)?,
        ),
        None => None,
    };
    let g_rdp = match s_rdp {
        Some(s) => Some(
            inp.rdp
                .epsilon(&[template.with_noise_multiplier(s)], delta)
                .map_err(classify)?,
        ),
        None => None,
    };
    Ok(Calibrated {
        pld: s_pld.zip(e_pld),
        rdp: s_rdp.zip(g_rdp),
        rdp_unreachable,
    })
}

/// Prints the `--target-epsilon` result as one JSON object.
fn print_calibration_json(inp: &Inputs, target: f64, cal: &Calibrated) -> std::io::Result<()> {
    let mut sig = Map::new();
    let mut eps = Map::new();
    if let Some((s, e)) = cal.pld {
        sig.insert("pld".into(), json!(s));
        eps.insert("pld".into(), num(e));
    }
    if let Some((s, g)) = cal.rdp {
        sig.insert("rdp".into(), json!(s));
        eps.insert("rdp".into(), num(g.epsilon));
    }
    let mut out = Map::new();
    out.insert("sigma".into(), Value::Object(sig));
    out.insert("target_epsilon".into(), json!(target));
    out.insert("epsilon".into(), Value::Object(eps));
    if let Some((_, g)) = cal.rdp {
        out.insert("rdp_order".into(), num(g.order));
    }
    if let Some(why) = &cal.rdp_unreachable {
        out.insert("rdp_unreachable".into(), json!(why));
    }
    out.insert("delta".into(), json!(inp.delta));
    out.insert("sampling_rate".into(), json!(inp.q));
    out.insert("steps".into(), json!(inp.steps));
    crate::output::emit_json(&Value::Object(out), false)
}

/// Prints the `--target-epsilon` result as a table, one row per accountant.
fn print_calibration_table(inp: &Inputs, target: f64, cal: &Calibrated) {
    let (q, steps, delta) = (inp.q, inp.steps, inp.delta);
    println!(
        "Noise for target epsilon = {target}: Poisson-subsampled Gaussian, q = {q}, T = {steps}, delta = {delta:e}"
    );
    println!(
        "{:<12} {:>12} {:>12}  note",
        "accountant", "sigma", "epsilon"
    );
    if let Some((s, e)) = cal.pld {
        println!(
            "{:<12} {:>12.6} {:>12}  discretisation {:e}",
            "pld",
            s,
            fmt_num(e),
            inp.discretisation
        );
    }
    if let Some((s, g)) = cal.rdp {
        println!(
            "{:<12} {:>12.6} {:>12}  optimal order {}",
            "rdp",
            s,
            fmt_num(g.epsilon),
            g.order
        );
    }
    if let Some(why) = &cal.rdp_unreachable {
        println!("{:<12} {:>12} {:>12}  {why}", "rdp", "-", "-");
    }
}
