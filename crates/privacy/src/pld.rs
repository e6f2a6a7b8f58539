//! Privacy loss distributions (PLD) of the Poisson-subsampled Gaussian mechanism, discretised
//! pessimistically, composed with the FFT.
//!
//! For a pair of output distributions (P, Q) the privacy loss is L = ln(P(x)/Q(x)) with x ∼ P, and
//! `δ(ε) = E[(1 − e^{ε − L})₊] + P(L = ∞)` is the tight hockey-stick bound. The loss of a
//! composition is the sum of independent losses, so its distribution is the convolution of the
//! per-event distributions.
//!
//! Both directions of add/remove-one adjacency are kept: [`Direction::Remove`] is
//! (P, Q) = ((1−q)N(0,σ²) + qN(1,σ²), N(0,σ²)) and [`Direction::Add`] the swapped pair. The
//! composed guarantee is the worse of the two.
//!
//! Why every number is an upper bound:
//! * each event is discretised by "connect the dots" (see [`subsampled_gaussian_pld`]): the
//!   discrete pair's hockey-stick curve lies above the true one for every ε, i.e. it is a
//!   dominating pair, and composition preserves domination (Zhu, Dong & Wang 2022);
//! * the composition is computed as a cyclic convolution on a window chosen with a Chernoff bound;
//!   mass that would lie below the window wraps to its top (only increases δ), and a Chernoff
//!   bound on the mass above the window (which wraps to the bottom) is added to P(L = ∞);
//! * FFT rounding leaves tiny negative entries; they are set to zero and their total magnitude,
//!   an estimate of the rounding noise, is also added to P(L = ∞).

use crate::error::{PrivacyError, Result};
use crate::mechanism::{CanonicalEvent, Mechanism, canonicalize};
use crate::rdp::{check_delta, check_epsilon};

pub use crate::pld_compose::compose;
pub use crate::pld_event::subsampled_gaussian_pld;

/// The direction of the add/remove-one adjacency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// P = mechanism on the dataset *with* the record (the mixture), Q = without it.
    Remove,
    /// P = mechanism on the dataset *without* the record, Q = with it (the mixture).
    Add,
}

/// Parameters of the PLD accountant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PldOptions {
    /// Grid step Δ of the privacy loss (default 1e-4).
    pub discretisation: f64,
    /// Mass cut from each tail of each event's loss distribution (default 1e-20); the right tail
    /// goes to +∞, the left tail to the first grid point.
    pub truncation_mass: f64,
    /// Target bound on the mass outside the composition window on each side (default 1e-18).
    pub window_mass: f64,
    /// Largest grid (per event or composed) allowed, in points (default 2^22).
    pub max_points: usize,
    /// Refine the grid step below `discretisation` when one step's privacy loss is narrow
    /// (default true): the step used is min(Δ, s/16) over the events, where
    /// s ≈ q·√(e^{1/σ²} − 1) is the spread of one step's loss, coarsened again (up to Δ) if the
    /// grid would exceed `max_points`. Without it, a loss much narrower than Δ is still bounded
    /// correctly but loosely (each step's loss is spread over a whole grid interval).
    pub adaptive: bool,
}

impl Default for PldOptions {
    fn default() -> Self {
        Self {
            discretisation: 1e-4,
            truncation_mass: 1e-20,
            window_mass: 1e-18,
            max_points: 1 << 22,
            adaptive: true,
        }
    }
}

impl PldOptions {
    /// Checks the grid step and the tail masses.
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.discretisation.is_finite() && self.discretisation > 0.0) {
            return Err(PrivacyError::invalid(
                "discretisation",
                self.discretisation,
                "a finite number > 0",
            ));
        }
        if !(self.truncation_mass > 0.0 && self.truncation_mass < 1e-3) {
            return Err(PrivacyError::invalid(
                "truncation mass",
                self.truncation_mass,
                "a number in (0, 1e-3)",
            ));
        }
        if !(self.window_mass > 0.0 && self.window_mass < 1e-3) {
            return Err(PrivacyError::invalid(
                "window mass",
                self.window_mass,
                "a number in (0, 1e-3)",
            ));
        }
        Ok(())
    }
}

/// A privacy loss distribution on the grid `(offset + i)·discretisation`, plus a mass at +∞.
/// The finite part may be a sub-probability (the rest is at +∞).
#[derive(Clone, Debug, PartialEq)]
pub struct DiscretePld {
    /// Grid step Δ.
    pub discretisation: f64,
    /// Grid index of `pmf[0]`.
    pub offset: i64,
    /// Probability of each grid loss value.
    pub pmf: Vec<f64>,
    /// Probability of infinite loss.
    pub infinity_mass: f64,
}

impl DiscretePld {
    /// The loss value of `pmf[i]`.
    pub fn loss(&self, i: usize) -> f64 {
        (self.offset + i as i64) as f64 * self.discretisation
    }

    /// δ(ε) = P(L = ∞) + Σ_l P(L = l)(1 − e^{ε − l})₊ for this single pair.
    ///
    /// Guarantee: if this PLD dominates a pair (P, Q), the hockey-stick divergence
    /// H_{e^ε}(P‖Q) is at most the returned value.
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let mut d = 0.0;
        for i in (0..self.pmf.len()).rev() {
            let l = self.loss(i);
            if l <= epsilon {
                break;
            }
            d += self.pmf[i] * -(epsilon - l).exp_m1();
        }
        (d + self.infinity_mass).min(1.0)
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta` (`+∞` if the mass at infinite loss is ≥ δ).
    ///
    /// Guarantee: the returned ε satisfies `delta_for_epsilon(ε) ≤ delta` (checked by direct
    /// evaluation; ε is increased if rounding in the closed-form solve made it too small).
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        if self.infinity_mass >= delta {
            return f64::INFINITY;
        }
        // Scan the grid downwards: with bins above l included, δ(ε) = s1 − e^ε s2 on [l, l⁺].
        let (mut s1, mut s2) = (self.infinity_mass, 0.0_f64);
        let mut eps = 0.0;
        let mut found = false;
        for i in (0..self.pmf.len()).rev() {
            let l = self.loss(i);
            if l <= 0.0 {
                break;
            }
            if s1 - l.exp() * s2 > delta {
                eps = ((s1 - delta) / s2).ln();
                found = true;
                break;
            }
            s1 += self.pmf[i];
            s2 += self.pmf[i] * (-l).exp();
        }
        if !found && s1 - s2 > delta {
            eps = ((s1 - delta) / s2).ln();
        }
        let mut eps = eps.max(0.0);
        // Never optimistic: confirm by direct evaluation and step up if rounding fell short.
        let mut step = 1e-12_f64.max(eps * 1e-12);
        while self.delta_for_epsilon(eps) > delta {
            eps += step;
            step *= 2.0;
        }
        eps
    }

    /// Removes zero (or underflowed, < 1e-300) entries at both ends.
    pub(crate) fn trim(&mut self) {
        let first = self.pmf.iter().position(|&p| p > 1e-300);
        match first {
            None => {
                self.infinity_mass += self.pmf.iter().sum::<f64>();
                self.pmf = vec![0.0];
            }
            Some(f) => {
                let last = self.pmf.iter().rposition(|&p| p > 1e-300).unwrap_or(f);
                // Dropped masses at the top go to +∞, those at the bottom to the first kept point.
                let top: f64 = self.pmf[last + 1..].iter().sum();
                let bottom: f64 = self.pmf[..f].iter().sum();
                self.infinity_mass += top;
                self.pmf.truncate(last + 1);
                self.pmf.drain(..f);
                self.pmf[0] += bottom;
                self.offset += f as i64;
            }
        }
    }
}

/// The composed PLDs of a list of events, both directions.
#[derive(Clone, Debug)]
pub struct ComposedPld {
    /// The Remove direction.
    pub remove: DiscretePld,
    /// The Add direction.
    pub add: DiscretePld,
}

impl ComposedPld {
    /// δ(ε) = max over both directions.
    ///
    /// Guarantee: the composition is (ε, δ)-DP under add/remove-one adjacency.
    pub fn delta(&self, epsilon: f64) -> f64 {
        self.remove
            .delta_for_epsilon(epsilon)
            .max(self.add.delta_for_epsilon(epsilon))
    }

    /// ε(δ) = max over both directions (`+∞` when unreachable).
    ///
    /// Guarantee: the composition is (ε, δ)-DP under add/remove-one adjacency.
    pub fn epsilon(&self, delta: f64) -> f64 {
        self.remove
            .epsilon_for_delta(delta)
            .max(self.add.epsilon_for_delta(delta))
    }
}

/// The PLD accountant (the default accountant of dpselft).
#[derive(Clone, Copy, Debug, Default)]
pub struct PldAccountant {
    /// Discretisation and truncation parameters.
    pub options: PldOptions,
}

impl PldAccountant {
    /// An accountant with grid step `discretisation` and default truncations.
    pub fn with_discretisation(discretisation: f64) -> Self {
        Self {
            options: PldOptions {
                discretisation,
                ..PldOptions::default()
            },
        }
    }

    /// Composes `events` (both directions).
    ///
    /// Guarantee: the returned PLDs dominate those of the composition of the events.
    pub fn compose(&self, events: &[Mechanism]) -> Result<ComposedPld> {
        self.options.validate()?;
        let canon = canonicalize(events)?;
        let base = self.options.discretisation;
        if !self.options.adaptive {
            return self.compose_with(&canon, &self.options);
        }
        let mut step = canon
            .iter()
            .map(|e| e.q * (1.0 / (e.sigma * e.sigma)).exp_m1().sqrt() / 16.0)
            .filter(|s| s.is_finite() && *s > 0.0)
            .fold(base, f64::min);
        loop {
            let o = PldOptions {
                discretisation: step,
                ..self.options
            };
            match self.compose_with(&canon, &o) {
                Err(PrivacyError::GridTooLarge { .. }) if step < base => {
                    step = (step * 4.0).min(base);
                }
                other => return other,
            }
        }
    }

    fn compose_with(&self, canon: &[CanonicalEvent], o: &PldOptions) -> Result<ComposedPld> {
        // The two directions are independent: build them on two threads.
        let plds = canon
            .iter()
            .map(|e: &CanonicalEvent| {
                let (r, a) = std::thread::scope(|scope| {
                    let add =
                        scope.spawn(|| subsampled_gaussian_pld(e.q, e.sigma, Direction::Add, o));
                    let rem = subsampled_gaussian_pld(e.q, e.sigma, Direction::Remove, o);
                    let add = add.join().unwrap_or_else(|_| {
                        Err(PrivacyError::Internal(
                            "PLD construction thread panicked".into(),
                        ))
                    });
                    (rem, add)
                });
                Ok((r?, a?, e.count))
            })
            .collect::<Result<Vec<_>>>()?;
        let parts: Vec<(&DiscretePld, &DiscretePld, u64)> =
            plds.iter().map(|(r, a, t)| (r, a, *t)).collect();
        let (remove, add) = compose(&parts, o)?;
        Ok(ComposedPld { remove, add })
    }

    /// The smallest ε such that the composition of `events` is (ε, δ)-DP by this accountant.
    ///
    /// Guarantee: the composition is (ε, δ)-DP under add/remove-one adjacency.
    pub fn epsilon(&self, events: &[Mechanism], delta: f64) -> Result<f64> {
        check_delta(delta)?;
        Ok(self.compose(events)?.epsilon(delta))
    }

    /// The δ at which the composition of `events` is (ε, δ)-DP by this accountant.
    ///
    /// Guarantee: the composition is (ε, δ)-DP under add/remove-one adjacency.
    pub fn delta(&self, events: &[Mechanism], epsilon: f64) -> Result<f64> {
        check_epsilon(epsilon)?;
        Ok(self.compose(events)?.delta(epsilon))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct_convolve(a: &DiscretePld, b: &DiscretePld) -> DiscretePld {
        let mut pmf = vec![0.0; a.pmf.len() + b.pmf.len() - 1];
        for (i, x) in a.pmf.iter().enumerate() {
            for (j, y) in b.pmf.iter().enumerate() {
                pmf[i + j] += x * y;
            }
        }
        let fin = (1.0 - a.infinity_mass) * (1.0 - b.infinity_mass);
        DiscretePld {
            discretisation: a.discretisation,
            offset: a.offset + b.offset,
            pmf,
            infinity_mass: 1.0 - fin,
        }
    }

    #[test]
    fn single_step_mass_sums_to_one() {
        let o = PldOptions::default();
        for &(q, s) in &[(0.01, 1.0), (0.3, 0.7), (1.0, 2.0), (0.999, 1.5)] {
            for d in [Direction::Remove, Direction::Add] {
                let p = subsampled_gaussian_pld(q, s, d, &o).unwrap();
                let total: f64 = p.pmf.iter().sum::<f64>() + p.infinity_mass;
                assert!((total - 1.0).abs() < 1e-12, "{q} {s} {d:?} {total}");
                // A valid PLD has E[e^{-L}] ≤ 1 (connect-the-dots keeps at most the Q-mass).
                let m: f64 = p
                    .pmf
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x * (-p.loss(i)).exp())
                    .sum();
                assert!(m <= 1.0 + 1e-12, "{m}");
            }
        }
    }

    #[test]
    fn fft_composition_matches_direct_convolution() {
        let o = PldOptions {
            discretisation: 1e-2,
            ..PldOptions::default()
        };
        let r1 = subsampled_gaussian_pld(0.2, 1.0, Direction::Remove, &o).unwrap();
        let a1 = subsampled_gaussian_pld(0.2, 1.0, Direction::Add, &o).unwrap();
        let r2 = subsampled_gaussian_pld(1.0, 3.0, Direction::Remove, &o).unwrap();
        let a2 = subsampled_gaussian_pld(1.0, 3.0, Direction::Add, &o).unwrap();
        let (cr, ca) = compose(&[(&r1, &a1, 3), (&r2, &a2, 1)], &o).unwrap();
        let dr = direct_convolve(&direct_convolve(&direct_convolve(&r1, &r1), &r1), &r2);
        let da = direct_convolve(&direct_convolve(&direct_convolve(&a1, &a1), &a1), &a2);
        for eps in [0.0, 0.5, 1.0, 2.0, 4.0] {
            for (c, d) in [(&cr, &dr), (&ca, &da)] {
                let x = c.delta_for_epsilon(eps);
                let y = d.delta_for_epsilon(eps);
                assert!(
                    x >= y * (1.0 - 1e-9) - 1e-15,
                    "eps {eps}: fft {x} < direct {y}"
                );
                assert!(
                    x <= y * (1.0 + 1e-6) + 1e-12,
                    "eps {eps}: fft {x} ≫ direct {y}"
                );
            }
        }
    }

    #[test]
    fn epsilon_inverts_delta() {
        let acc = PldAccountant::default();
        let ev = [Mechanism::sampled_gaussian(0.01, 1.0, 1000).unwrap()];
        let c = acc.compose(&ev).unwrap();
        for delta in [1e-3, 1e-5, 1e-8] {
            let e = c.epsilon(delta);
            assert!(c.delta(e) <= delta);
            assert!(c.delta(e - 1e-6) > delta * (1.0 - 1e-9));
        }
    }
}
