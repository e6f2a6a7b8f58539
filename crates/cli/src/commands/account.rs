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
    Mechanism, PldAccountant, PrivacyError, RdpAccountant, calibrate_sigma, sampling_from_epochs,
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

/// Runs `dpselft account`.
pub fn run(args: Args) -> anyhow::Result<()> {
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
    let (q, steps) = sampling(&args)?;
    let delta = args.delta;
    let pld = PldAccountant::with_discretisation(args.discretisation);
    let rdp = RdpAccountant::default();
    let want_pld = matches!(args.accountant, Which::Pld | Which::All);
    let want_rdp = matches!(args.accountant, Which::Rdp | Which::All);

    if let Some(sigma) = args.sigma {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(usage(format!(
                "invalid --sigma {sigma}: expected a finite number > 0"
            )));
        }
        let ev = [Mechanism::sampled_gaussian(q, sigma, steps).map_err(classify)?];
        let e_pld = if want_pld {
            Some(pld.epsilon(&ev, delta).map_err(classify)?)
        } else {
            None
        };
        let g_rdp = if want_rdp {
            Some(rdp.epsilon(&ev, delta).map_err(classify)?)
        } else {
            None
        };
        if args.json {
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
            out.insert("delta".into(), json!(delta));
            out.insert("sampling_rate".into(), json!(q));
            out.insert("steps".into(), json!(steps));
            out.insert("sigma".into(), json!(sigma));
            println!("{}", Value::Object(out));
        } else {
            println!(
                "Poisson-subsampled Gaussian: q = {q}, T = {steps}, sigma = {sigma}, delta = {delta:e}"
            );
            println!("{:<12} {:>12}  note", "accountant", "epsilon");
            if let Some(e) = e_pld {
                println!(
                    "{:<12} {:>12}  discretisation {:e}",
                    "pld",
                    fmt_num(e),
                    args.discretisation
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
        return Ok(());
    }

    let target = args.target_epsilon.unwrap_or(f64::NAN);
    if !(target.is_finite() && target > 0.0) {
        return Err(usage(format!(
            "invalid --target-epsilon {target}: expected a finite number > 0"
        )));
    }
    let template = Mechanism::sampled_gaussian(q, 1.0, steps).map_err(classify)?;
    let s_pld = if want_pld {
        Some(calibrate_sigma(&pld, &[], &template, target, delta).map_err(classify)?)
    } else {
        None
    };
    let s_rdp = if want_rdp {
        Some(calibrate_sigma(&rdp, &[], &template, target, delta).map_err(classify)?)
    } else {
        None
    };
    let e_pld = match s_pld {
        Some(s) => Some(
            pld.epsilon(&[template.with_noise_multiplier(s)], delta)
                .map_err(classify)?,
        ),
        None => None,
    };
    let g_rdp = match s_rdp {
        Some(s) => Some(
            rdp.epsilon(&[template.with_noise_multiplier(s)], delta)
                .map_err(classify)?,
        ),
        None => None,
    };
    if args.json {
        let mut sig = Map::new();
        let mut eps = Map::new();
        if let (Some(s), Some(e)) = (s_pld, e_pld) {
            sig.insert("pld".into(), json!(s));
            eps.insert("pld".into(), num(e));
        }
        if let (Some(s), Some(g)) = (s_rdp, g_rdp) {
            sig.insert("rdp".into(), json!(s));
            eps.insert("rdp".into(), num(g.epsilon));
        }
        let mut out = Map::new();
        out.insert("sigma".into(), Value::Object(sig));
        out.insert("target_epsilon".into(), json!(target));
        out.insert("epsilon".into(), Value::Object(eps));
        if let Some(g) = g_rdp {
            out.insert("rdp_order".into(), num(g.order));
        }
        out.insert("delta".into(), json!(delta));
        out.insert("sampling_rate".into(), json!(q));
        out.insert("steps".into(), json!(steps));
        println!("{}", Value::Object(out));
    } else {
        println!(
            "Noise for target epsilon = {target}: Poisson-subsampled Gaussian, q = {q}, T = {steps}, delta = {delta:e}"
        );
        println!(
            "{:<12} {:>12} {:>12}  note",
            "accountant", "sigma", "epsilon"
        );
        if let (Some(s), Some(e)) = (s_pld, e_pld) {
            println!(
                "{:<12} {:>12.6} {:>12}  discretisation {:e}",
                "pld",
                s,
                fmt_num(e),
                args.discretisation
            );
        }
        if let (Some(s), Some(g)) = (s_rdp, g_rdp) {
            println!(
                "{:<12} {:>12.6} {:>12}  optimal order {}",
                "rdp",
                s,
                fmt_num(g.epsilon),
                g.order
            );
        }
    }
    Ok(())
}
