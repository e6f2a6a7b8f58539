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
    check_inputs(template, target_epsilon, delta)?;
    check_fixed_budget(accountant, fixed, target_epsilon, delta)?;
    let mut objective = Objective::new(accountant, fixed, template, delta);
    let start = template.noise_multiplier().clamp(0.1, 100.0);
    match bracket(&mut objective, start, target_epsilon)? {
        Bracketing::AtFloor(sigma) => Ok(sigma),
        Bracketing::Found(b) => refine(&mut objective, b, target_epsilon),
    }
}

/// Rejects a target ε that is not a finite number > 0, an invalid δ or an invalid template.
fn check_inputs(template: &Mechanism, target_epsilon: f64, delta: f64) -> Result<()> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(PrivacyError::invalid(
            "target epsilon",
            target_epsilon,
            "a finite number > 0",
        ));
    }
    check_delta(delta)?;
    template.validate()
}

/// Fails with [`PrivacyError::Unreachable`] when the `fixed` mechanisms alone already spend the
/// whole target ε (no σ for the template could then meet it).
fn check_fixed_budget<A: Accountant + ?Sized>(
    accountant: &A,
    fixed: &[Mechanism],
    target_epsilon: f64,
    delta: f64,
) -> Result<()> {
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
    Ok(())
}

/// ε(σ) of the composition of the fixed mechanisms with the template at noise multiplier σ.
struct Objective<'a, A: Accountant + ?Sized> {
    /// The accountant that evaluates ε.
    accountant: &'a A,
    /// The mechanism whose noise multiplier is solved for.
    template: &'a Mechanism,
    /// The fixed mechanisms followed by the template (the last entry is rewritten per σ).
    events: Vec<Mechanism>,
    /// The δ at which ε is evaluated.
    delta: f64,
}

impl<'a, A: Accountant + ?Sized> Objective<'a, A> {
    /// The objective for `fixed` followed by `template`, at `delta`.
    fn new(accountant: &'a A, fixed: &[Mechanism], template: &'a Mechanism, delta: f64) -> Self {
        let mut events: Vec<Mechanism> = fixed.to_vec();
        events.push(*template);
        Self {
            accountant,
            template,
            events,
            delta,
        }
    }

    /// ε(σ); an accountant error (e.g. a grid too large for a tiny σ) counts as "too much
    /// privacy loss" (+∞), which can only make the result larger (safer).
    fn epsilon(&mut self, sigma: f64) -> Result<f64> {
        let last = self.events.len() - 1;
        self.events[last] = self.template.with_noise_multiplier(sigma);
        match self.accountant.epsilon(&self.events, self.delta) {
            Ok(e) => Ok(e),
            Err(PrivacyError::GridTooLarge { .. }) => Ok(f64::INFINITY),
            Err(e) => Err(e),
        }
    }
}

/// A bracket of the calibrated σ: `lo` fails (ε > target), `hi` meets the target.
struct Bracket {
    /// A σ whose ε exceeds the target.
    lo: f64,
    /// A σ whose ε meets the target.
    hi: f64,
    /// ε(`lo`).
    e_lo: f64,
    /// ε(`hi`).
    e_hi: f64,
}

/// The outcome of the bracketing search.
enum Bracketing {
    /// The search floor (or a σ at it) already meets the target: the answer.
    AtFloor(f64),
    /// A bracket to refine.
    Found(Bracket),
}

/// Brackets the calibrated σ starting from `start`: searches down (dividing σ) when `start`
/// meets the target, up (multiplying σ) when it does not.
fn bracket<A: Accountant + ?Sized>(
    objective: &mut Objective<'_, A>,
    start: f64,
    target_epsilon: f64,
) -> Result<Bracketing> {
    let e0 = objective.epsilon(start)?;
    if e0 <= target_epsilon {
        bracket_down(objective, start, e0, target_epsilon)
    } else {
        bracket_up(objective, start, e0, target_epsilon).map(Bracketing::Found)
    }
}

/// From a σ = `hi` that meets the target, lowers σ until it fails (or the floor
/// [`SIGMA_MIN`] meets the target, which is then the answer).
fn bracket_down<A: Accountant + ?Sized>(
    objective: &mut Objective<'_, A>,
    start: f64,
    e_start: f64,
    target_epsilon: f64,
) -> Result<Bracketing> {
    let mut hi = start;
    let mut e_hi = e_start;
    let mut lo = start / 2.0;
    let mut e_lo = objective.epsilon(lo)?;
    while e_lo <= target_epsilon {
        hi = lo;
        e_hi = e_lo;
        if hi <= SIGMA_MIN {
            return Ok(Bracketing::AtFloor(hi));
        }
        lo = (lo / 4.0).max(SIGMA_MIN / 2.0);
        e_lo = objective.epsilon(lo)?;
    }
    Ok(Bracketing::Found(Bracket { lo, hi, e_lo, e_hi }))
}

/// From a σ = `lo` that fails the target, raises σ until it meets it; an error
/// ([`PrivacyError::Calibration`]) past [`SIGMA_MAX`].
fn bracket_up<A: Accountant + ?Sized>(
    objective: &mut Objective<'_, A>,
    start: f64,
    e_start: f64,
    target_epsilon: f64,
) -> Result<Bracket> {
    let mut lo = start;
    let mut e_lo = e_start;
    let mut hi = start * 2.0;
    let mut e_hi = objective.epsilon(hi)?;
    while e_hi > target_epsilon {
        lo = hi;
        e_lo = e_hi;
        hi *= 4.0;
        if hi > SIGMA_MAX {
            return Err(PrivacyError::Calibration(format!(
                "no noise multiplier up to {SIGMA_MAX:e} reaches ε ≤ {target_epsilon} at \
                 δ = {:e} ({})",
                objective.delta,
                objective.accountant.name()
            )));
        }
        e_hi = objective.epsilon(hi)?;
    }
    Ok(Bracket { lo, hi, e_lo, e_hi })
}

/// Narrows the bracket to [`SIGMA_RELATIVE_TOLERANCE`] and returns its upper end (a σ that was
/// evaluated and meets the target): each round probes just either side of the interpolated
/// estimate ([`interpolated_guess`]) so that the bracket collapses once the estimate is good.
fn refine<A: Accountant + ?Sized>(
    objective: &mut Objective<'_, A>,
    mut b: Bracket,
    target_epsilon: f64,
) -> Result<f64> {
    let tol = SIGMA_RELATIVE_TOLERANCE;
    for _ in 0..100 {
        if b.hi / b.lo - 1.0 <= tol {
            break;
        }
        let g = interpolated_guess(&b, target_epsilon).exp();
        let probes = [g * (1.0 - 0.45 * tol), g * (1.0 + 0.45 * tol)];
        for p in probes {
            if p <= b.lo || p >= b.hi {
                continue;
            }
            let e = objective.epsilon(p)?;
            if e <= target_epsilon {
                b.hi = p;
                b.e_hi = e;
            } else {
                b.lo = p;
                b.e_lo = e;
            }
        }
    }
    Ok(b.hi)
}

/// The estimate of ln σ at the target: ln ε interpolated linearly against ln σ (nearly linear)
/// between the bracket's ends, kept well inside the bracket; the midpoint (bisection) when the
/// interpolation is not usable.
fn interpolated_guess(b: &Bracket, target_epsilon: f64) -> f64 {
    let (ll, lh) = (b.lo.ln(), b.hi.ln());
    let mut guess = 0.5 * (ll + lh);
    if b.e_lo.is_finite() && b.e_lo > 0.0 && b.e_hi > 0.0 {
        let (fl, fh, ft) = (b.e_lo.ln(), b.e_hi.ln(), target_epsilon.ln());
        if fl > fh {
            let g = ll + (ft - fl) * (lh - ll) / (fh - fl);
            // Keep it well inside the bracket.
            let margin = 0.02 * (lh - ll);
            guess = g.clamp(ll + margin, lh - margin);
        }
    }
    guess
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
