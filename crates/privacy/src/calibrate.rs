//! Noise calibration: the smallest noise multiplier that meets a target ε.

use crate::accountant::Accountant;
use crate::error::{PrivacyError, Result};
use crate::mechanism::Mechanism;
use crate::rdp::check_delta;

/// Relative precision of a calibrated σ.
pub const SIGMA_RELATIVE_TOLERANCE: f64 = 1e-4;

const SIGMA_MIN: f64 = 1e-3;
const SIGMA_MAX: f64 = 1e6;

/// The smallest noise multiplier σ (to [`SIGMA_RELATIVE_TOLERANCE`]) such that the composition of
/// `fixed` with `template` (its noise multiplier replaced by σ) is (ε, δ)-DP with
/// ε ≤ `target_epsilon` by `accountant`. With `fixed` empty this is the plain calibration of one
/// mechanism for (q, T, δ); with `fixed` holding an earlier stage it solves for the later stage's
/// noise (the pipeline's split of the budget between stages).
///
/// Guarantee: the returned σ was evaluated and meets the target — ε(σ) ≤ `target_epsilon` — and
/// σ/(1 + 1e-4) was found not to (or σ is the search floor 1e-3). The search assumes ε is
/// non-increasing in σ, which holds for the exact quantities; only the returned value's guarantee
/// matters for privacy, and it is always checked.
pub fn calibrate_sigma<A: Accountant + ?Sized>(
    accountant: &A,
    fixed: &[Mechanism],
    template: &Mechanism,
    target_epsilon: f64,
    delta: f64,
) -> Result<f64> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(PrivacyError::invalid(
            "target epsilon",
            target_epsilon,
            "a finite number > 0",
        ));
    }
    check_delta(delta)?;
    template.validate()?;
    if !fixed.is_empty() {
        let base = accountant.epsilon(fixed, delta)?;
        if base >= target_epsilon {
            return Err(PrivacyError::Unreachable(format!(
                "the fixed mechanisms alone already spend ε = {base:.6} ≥ target {target_epsilon} \
                 at δ = {delta:e} ({})",
                accountant.name()
            )));
        }
    }
    let mut events: Vec<Mechanism> = fixed.to_vec();
    events.push(*template);
    let last = events.len() - 1;
    // ε(σ) − target; an accountant error (e.g. a grid too large for a tiny σ) counts as "too much
    // privacy loss", which can only make the result larger (safer).
    let mut eval = |sigma: f64| -> Result<f64> {
        events[last] = template.with_noise_multiplier(sigma);
        match accountant.epsilon(&events, delta) {
            Ok(e) => Ok(e),
            Err(PrivacyError::GridTooLarge { .. }) => Ok(f64::INFINITY),
            Err(e) => Err(e),
        }
    };

    // Bracket: lo fails (ε > target), hi meets the target.
    let start = template.noise_multiplier().clamp(0.1, 100.0);
    let (mut lo, mut hi);
    let (mut e_lo, mut e_hi);
    let e0 = eval(start)?;
    if e0 <= target_epsilon {
        hi = start;
        e_hi = e0;
        lo = start / 2.0;
        e_lo = eval(lo)?;
        while e_lo <= target_epsilon {
            hi = lo;
            e_hi = e_lo;
            if hi <= SIGMA_MIN {
                return Ok(hi);
            }
            lo = (lo / 4.0).max(SIGMA_MIN / 2.0);
            e_lo = eval(lo)?;
        }
    } else {
        lo = start;
        e_lo = e0;
        hi = start * 2.0;
        e_hi = eval(hi)?;
        while e_hi > target_epsilon {
            lo = hi;
            e_lo = e_hi;
            hi *= 4.0;
            if hi > SIGMA_MAX {
                return Err(PrivacyError::Calibration(format!(
                    "no noise multiplier up to {SIGMA_MAX:e} reaches ε ≤ {target_epsilon} at \
                     δ = {delta:e} ({})",
                    accountant.name()
                )));
            }
            e_hi = eval(hi)?;
        }
    }

    // Refine: interpolate ln ε against ln σ (nearly linear), then probe just either side of the
    // estimate so that the bracket collapses once the estimate is good; fall back to bisection.
    let tol = SIGMA_RELATIVE_TOLERANCE;
    for _ in 0..100 {
        if hi / lo - 1.0 <= tol {
            break;
        }
        let (ll, lh) = (lo.ln(), hi.ln());
        let mut guess = 0.5 * (ll + lh);
        if e_lo.is_finite() && e_lo > 0.0 && e_hi > 0.0 {
            let (fl, fh, ft) = (e_lo.ln(), e_hi.ln(), target_epsilon.ln());
            if fl > fh {
                let g = ll + (ft - fl) * (lh - ll) / (fh - fl);
                // Keep it well inside the bracket.
                let margin = 0.02 * (lh - ll);
                guess = g.clamp(ll + margin, lh - margin);
            }
        }
        let g = guess.exp();
        let probes = [g * (1.0 - 0.45 * tol), g * (1.0 + 0.45 * tol)];
        for p in probes {
            if p <= lo || p >= hi {
                continue;
            }
            let e = eval(p)?;
            if e <= target_epsilon {
                hi = p;
                e_hi = e;
            } else {
                lo = p;
                e_lo = e;
            }
        }
    }
    let _ = e_hi;
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdp::RdpAccountant;

    #[test]
    fn calibrated_sigma_meets_target_and_is_tight() {
        let acc = RdpAccountant::default();
        let m = Mechanism::sampled_gaussian(0.01, 1.0, 1000).unwrap();
        for target in [0.5, 1.0, 3.0, 8.0] {
            let s = calibrate_sigma(&acc, &[], &m, target, 1e-5).unwrap();
            let at = acc
                .epsilon(&[m.with_noise_multiplier(s)], 1e-5)
                .unwrap()
                .epsilon;
            let below = acc
                .epsilon(&[m.with_noise_multiplier(s / (1.0 + 1e-4))], 1e-5)
                .unwrap()
                .epsilon;
            assert!(at <= target, "{target}: {at}");
            assert!(below > target, "{target}: {below}");
        }
    }

    #[test]
    fn fixed_event_that_spends_everything_is_an_error() {
        let acc = RdpAccountant::default();
        let fixed = [Mechanism::gaussian(0.5, 1.0, 1).unwrap()];
        let m = Mechanism::sampled_gaussian(0.01, 1.0, 1000).unwrap();
        assert!(matches!(
            calibrate_sigma(&acc, &fixed, &m, 1.0, 1e-5),
            Err(PrivacyError::Unreachable(_))
        ));
    }

    #[test]
    fn bad_targets_are_rejected() {
        let acc = RdpAccountant::default();
        let m = Mechanism::sampled_gaussian(0.01, 1.0, 10).unwrap();
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(calibrate_sigma(&acc, &[], &m, t, 1e-5).is_err());
        }
        assert!(calibrate_sigma(&acc, &[], &m, 1.0, 0.0).is_err());
    }
}
