//! Rényi differential privacy (RDP) of the Poisson-subsampled Gaussian mechanism and the
//! conversion of RDP to (ε, δ)-DP.
//!
//! For a step with sampling rate q and noise multiplier σ, the RDP of order α under add/remove-one
//! adjacency is `ln(A_α)/(α − 1)` with
//! `A_α = E_{z∼N(0,σ²)}[(1 − q + q·exp((2z − 1)/(2σ²)))^α]` (Mironov, Talwar & Zhang 2019). That
//! paper also shows that the divergence in the other direction (B_α) never exceeds A_α, so A_α
//! covers both directions of the adjacency; `tests/rdp_reference.rs` checks this numerically.

use crate::error::{PrivacyError, Result};
use crate::mechanism::{Mechanism, canonicalize};
use crate::normal::ln_erfc;

/// The default grid of Rényi orders: 1.1, 1.2, …, 10.9, then 11, 12, …, 63, then 128, 256, 512,
/// 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (11..=109).map(|k| f64::from(k) / 10.0).collect();
    orders.extend((11..=63).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// ln(e^a + e^b) without overflow.
fn ln_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// ln A_α for integer α ≥ 1: the binomial expansion
/// `A_α = Σ_k C(α,k) (1−q)^{α−k} q^k exp((k² − k)/(2σ²))`, every term positive, summed in log space.
fn ln_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let a = alpha as f64;
    let inv2s2 = 0.5 / (sigma * sigma);
    let mut ln_binom = 0.0_f64; // ln C(α, 0)
    let mut acc = f64::NEG_INFINITY;
    for k in 0..=alpha {
        let kf = k as f64;
        let term = ln_binom + kf * ln_q + (a - kf) * ln_1mq + (kf * kf - kf) * inv2s2;
        acc = ln_add(acc, term);
        // C(α, k+1) = C(α, k) (α − k)/(k + 1)
        ln_binom += (a - kf).ln() - (kf + 1.0).ln();
    }
    acc
}

/// ln A_α for fractional α > 1 by the signed series of Mironov, Talwar & Zhang (2019, §3.3):
/// the integral is split at z₀ = σ² ln(1/q − 1) + 1/2, where the two mixture components are equal,
/// and each side is expanded in a convergent (generalised) binomial series whose coefficients
/// C(α, i) change sign for i > α. Positive and negative terms are summed separately in log space.
/// The tail of the series alternates with decreasing magnitude, so the last included term bounds
/// the remainder; it is added to the positive side (never optimistic). Returns `None` if the
/// series does not settle (the caller then uses a valid integer-order upper bound).
fn ln_a_fractional(q: f64, sigma: f64, alpha: f64) -> Option<f64> {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let s2 = sigma * sigma;
    let inv2s2 = 0.5 / s2;
    let z0 = s2 * (ln_1mq - ln_q) + 0.5;
    let inv_sqrt2_sigma = std::f64::consts::FRAC_1_SQRT_2 / sigma;
    let ln_half = -std::f64::consts::LN_2;

    let (mut pos, mut neg) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let mut ln_binom = 0.0_f64; // ln |C(α, i)|
    let mut sign = 1.0_f64; // sign of C(α, i)
    let mut prev_mag = f64::INFINITY;
    let max_terms = 1_000_000u32;
    for i in 0..max_terms {
        let fi = f64::from(i);
        let j = alpha - fi;
        let t0 = ln_binom + fi * ln_q + j * ln_1mq;
        let t1 = ln_binom + j * ln_q + fi * ln_1mq;
        let s0 = t0 + (fi * fi - fi) * inv2s2 + ln_half + ln_erfc((fi - z0) * inv_sqrt2_sigma);
        let s1 = t1 + (j * j - j) * inv2s2 + ln_half + ln_erfc((z0 - j) * inv_sqrt2_sigma);
        let term = ln_add(s0, s1);
        if sign > 0.0 {
            pos = ln_add(pos, term);
        } else {
            neg = ln_add(neg, term);
        }
        // Stop once past the sign changes, the magnitudes decrease and the term (which bounds
        // the remainder) is negligible against ln A (≈ A − 1, what the RDP is made of): at most
        // 1e-10 of it, or 1e-300 absolute.
        let ln_a_est = if neg < pos {
            pos + (-(neg - pos).exp()).ln_1p()
        } else {
            0.0
        };
        let small = (1e-10 * ln_a_est.max(0.0)).max(1e-300).ln();
        if fi > alpha + 1.0 && term <= prev_mag && term < small {
            // Remainder of an alternating series with decreasing terms: bounded by this term.
            pos = ln_add(pos, term);
            if neg >= pos {
                return None;
            }
            return Some(pos + (-(neg - pos).exp()).ln_1p());
        }
        prev_mag = term;
        // C(α, i+1) = C(α, i) (α − i)/(i + 1)
        let factor = (alpha - fi) / (fi + 1.0);
        if factor == 0.0 {
            return None; // integer α: not this function's job
        }
        if factor < 0.0 {
            sign = -sign;
        }
        ln_binom += factor.abs().ln();
    }
    None
}

/// Per-step RDP ε(α) of the Poisson-subsampled Gaussian mechanism with sampling rate `q` and
/// noise multiplier `sigma`, at order `alpha > 1`, under add/remove-one adjacency (both
/// directions).
///
/// Guarantee: the value is an upper bound on the Rényi divergence of order α between the output
/// distributions on neighbouring datasets — exact (to rounding) for integer orders, the signed
/// series with a bounded remainder for fractional ones; if that series does not settle, the
/// (larger, still valid) value at the next integer order is returned.
pub fn sampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let ln_a = if alpha.fract() == 0.0 && alpha <= 1e6 {
        ln_a_integer(q, sigma, alpha as u64)
    } else {
        match ln_a_fractional(q, sigma, alpha) {
            Some(v) => v,
            // RDP is non-decreasing in the order: the next integer order is an upper bound.
            None => return sampled_gaussian_rdp(q, sigma, alpha.ceil()),
        }
    };
    (ln_a / (alpha - 1.0)).max(0.0)
}

/// How RDP is converted to (ε, δ)-DP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Conversion {
    /// ε = rdp(α) + ln((α−1)/α) − (ln δ + ln α)/(α−1) (Balle et al. 2020; Canonne, Kamath &
    /// Steinke 2020). Always at least as tight as the classic one.
    #[default]
    Improved,
    /// ε = rdp(α) − ln δ/(α−1) (Mironov 2017).
    Classic,
}

/// ε for a fixed δ from the RDP curve `rdp[i]` at `orders[i]`, minimised over the orders.
/// Returns `(ε, optimal order)`.
///
/// Guarantee: a mechanism that is (α, rdp(α))-RDP for every listed α is (ε, δ)-DP.
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64, conv: Conversion) -> (f64, f64) {
    let ln_delta = delta.ln();
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        if a <= 1.0 || a.is_nan() || !r.is_finite() {
            continue;
        }
        let eps = match conv {
            Conversion::Improved => r + ((a - 1.0) / a).ln() - (ln_delta + a.ln()) / (a - 1.0),
            Conversion::Classic => r - ln_delta / (a - 1.0),
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}

/// δ for a fixed ε from the RDP curve (the improved conversion solved for δ), minimised over the
/// orders and capped at 1. Returns `(δ, optimal order)`.
///
/// Guarantee: a mechanism that is (α, rdp(α))-RDP for every listed α is (ε, δ)-DP.
pub fn rdp_to_delta(orders: &[f64], rdp: &[f64], epsilon: f64) -> (f64, f64) {
    let mut best = (1.0_f64, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        if a <= 1.0 || a.is_nan() || !r.is_finite() {
            continue;
        }
        let ln_delta = (a - 1.0) * (r - epsilon + (1.0 - 1.0 / a).ln()) - a.ln();
        let d = ln_delta.exp();
        if d < best.0 {
            best = (d, a);
        }
    }
    best
}

/// The RDP accountant: composes events by adding their RDP curves order by order.
#[derive(Clone, Debug)]
pub struct RdpAccountant {
    /// Rényi orders to evaluate (all > 1).
    pub orders: Vec<f64>,
    /// RDP → DP conversion.
    pub conversion: Conversion,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self {
            orders: default_orders(),
            conversion: Conversion::Improved,
        }
    }
}

/// The (ε, δ) found by the RDP accountant with the order that achieves it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RdpGuarantee {
    /// ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The optimal Rényi order.
    pub order: f64,
}

impl RdpAccountant {
    /// The composed RDP curve of `events` at `self.orders` (one value per order).
    ///
    /// Guarantee: the composition of the events is (α, curve[i])-RDP at every order.
    pub fn rdp_curve(&self, events: &[Mechanism]) -> Result<Vec<f64>> {
        if self.orders.iter().any(|&a| !(a > 1.0 && a.is_finite())) {
            return Err(PrivacyError::invalid(
                "Rényi order",
                "≤ 1",
                "finite orders > 1",
            ));
        }
        let canon = canonicalize(events)?;
        Ok(self
            .orders
            .iter()
            .map(|&a| {
                canon
                    .iter()
                    .map(|e| e.count as f64 * sampled_gaussian_rdp(e.q, e.sigma, a))
                    .sum()
            })
            .collect())
    }

    /// The smallest ε over the orders such that the composition of `events` is (ε, δ)-DP.
    ///
    /// Guarantee: the composition is (ε, δ)-DP under add/remove-one adjacency.
    pub fn epsilon(&self, events: &[Mechanism], delta: f64) -> Result<RdpGuarantee> {
        check_delta(delta)?;
        let curve = self.rdp_curve(events)?;
        let (epsilon, order) = rdp_to_epsilon(&self.orders, &curve, delta, self.conversion);
        Ok(RdpGuarantee {
            epsilon,
            delta,
            order,
        })
    }

    /// The smallest δ over the orders such that the composition of `events` is (ε, δ)-DP.
    ///
    /// Guarantee: the composition is (ε, δ)-DP under add/remove-one adjacency.
    pub fn delta(&self, events: &[Mechanism], epsilon: f64) -> Result<RdpGuarantee> {
        check_epsilon(epsilon)?;
        let curve = self.rdp_curve(events)?;
        let (delta, order) = rdp_to_delta(&self.orders, &curve, epsilon);
        Ok(RdpGuarantee {
            epsilon,
            delta,
            order,
        })
    }
}

pub(crate) fn check_delta(delta: f64) -> Result<()> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid("delta", delta, "a number in (0, 1)"))
    }
}

pub(crate) fn check_epsilon(epsilon: f64) -> Result<()> {
    if epsilon.is_finite() && epsilon >= 0.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "epsilon",
            epsilon,
            "a finite number ≥ 0",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_grid() {
        let o = default_orders();
        assert_eq!(o.first(), Some(&1.1));
        assert!(o.contains(&2.0) && o.contains(&10.9) && o.contains(&63.0) && o.contains(&1024.0));
        assert!(o.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn q_one_is_gaussian_rdp() {
        assert_eq!(sampled_gaussian_rdp(1.0, 2.0, 3.0), 3.0 / 8.0);
    }

    #[test]
    fn fractional_between_neighbouring_integers() {
        for &(q, s) in &[(0.01, 1.0), (0.1, 2.0), (0.5, 0.8), (0.001, 4.0)] {
            for k in 2..20 {
                let lo = sampled_gaussian_rdp(q, s, f64::from(k));
                let hi = sampled_gaussian_rdp(q, s, f64::from(k + 1));
                for t in 1..10 {
                    let a = f64::from(k) + f64::from(t) / 10.0;
                    let v = sampled_gaussian_rdp(q, s, a);
                    assert!(
                        v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9),
                        "{q} {s} {a}"
                    );
                }
            }
        }
    }
}
