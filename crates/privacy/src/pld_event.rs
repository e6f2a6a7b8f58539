//! Discretisation of one event: the dominating ("connect the dots") PLD of one step of the
//! Poisson-subsampled Gaussian mechanism in one direction (see [`subsampled_gaussian_pld`]).

use crate::error::{PrivacyError, Result};
use crate::mechanism::Mechanism;
use crate::normal::{norm_cdf, norm_quantile, norm_sf};
use crate::pld::{Direction, DiscretePld, PldOptions};

/// Complementary probabilities at one loss value l: (mass with L ≤ l, mass with L > l).
type Pair = (f64, f64);

/// ln(1 − q + q·e^t) without overflow or cancellation.
fn ln_mix(q: f64, t: f64) -> f64 {
    if t > 0.0 {
        t + (q + (1.0 - q) * (-t).exp()).ln()
    } else {
        (q * t.exp_m1()).ln_1p()
    }
}

/// The x at which the Remove-direction loss ln(1 − q + q e^{(2x−1)/(2σ²)}) equals `l`
/// (−∞ if `l` is at or below the infimum ln(1 − q)).
fn x_of_loss(q: f64, sigma: f64, l: f64) -> f64 {
    if q >= 1.0 {
        return sigma * sigma * l + 0.5;
    }
    // ln(e^l − 1 + q) − ln q
    let inner = if l > 0.0 {
        l + (-(1.0 - q) * (-l).exp()).ln_1p()
    } else {
        let v = l.exp_m1() + q;
        if v <= 0.0 {
            return f64::NEG_INFINITY;
        }
        v.ln()
    };
    sigma * sigma * (inner - q.ln()) + 0.5
}

/// (Φ(u), 1 − Φ(u)), each accurate where it is small.
fn phi_pair(u: f64) -> (f64, f64) {
    if u == f64::NEG_INFINITY {
        (0.0, 1.0)
    } else if u < 0.0 {
        let c = norm_cdf(u);
        (c, 1.0 - c)
    } else {
        let s = norm_sf(u);
        (1.0 - s, s)
    }
}

/// The discretised PLD of one step of the Poisson-subsampled Gaussian mechanism (sampling rate
/// `q`, noise multiplier `sigma`, sensitivity 1) in the given direction, by "connect the dots"
/// (Doroshenko, Ghazi, Kamath, Kumar & Manurangsi 2022).
///
/// The loss axis is cut at the grid points ε_k = kΔ. The mass of each interval (ε_k, ε_{k+1}] is
/// split between its two end points so that both its P-mass and its Q-mass are preserved (a point
/// at loss ε carries Q-mass e^{−ε} times its P-mass). The resulting discrete pair has the
/// hockey-stick curve that interpolates the true curve linearly in e^ε between grid points; the
/// true curve is convex in e^ε, so the discrete one lies above it everywhere. Below the grid, the
/// whole P-mass is moved up to the first point; above it, the first point receives Q-mass equal to
/// the tail's and the remaining P-mass goes to +∞ (at most `truncation_mass`).
///
/// Guarantee: the returned PLD dominates the mechanism's pair for every ε ∈ ℝ, so δ(ε) computed
/// from it, alone or composed with other dominating PLDs, is an upper bound on the true δ(ε)
/// (up to floating-point rounding of the interval masses, ~1e-12 relative).
pub fn subsampled_gaussian_pld(
    q: f64,
    sigma: f64,
    direction: Direction,
    options: &PldOptions,
) -> Result<DiscretePld> {
    options.validate()?;
    Mechanism::sampled_gaussian(q, sigma, 1)?;
    let delta_l = options.discretisation;
    let (l_lo, l_hi) = truncated_loss_range(q, sigma, direction, options.truncation_mass);
    let (k_lo, k_hi) = grid_range(l_lo, l_hi, delta_l, options.max_points)?;
    let cdfs = |l: f64| loss_cdfs(q, sigma, direction, l);
    let (mut pmf, p_top, q_top) = connect_the_dots(k_lo, k_hi, delta_l, cdfs);
    let infinity_mass = place_top_tail(&mut pmf, k_hi, delta_l, p_top, q_top);
    let mut pld = DiscretePld {
        discretisation: delta_l,
        offset: k_lo,
        pmf,
        infinity_mass,
    };
    pld.trim();
    Ok(pld)
}

/// The range of the loss once `truncation_mass` is cut from the tails of the Gaussians
/// (half on each side), in the given direction.
fn truncated_loss_range(
    q: f64,
    sigma: f64,
    direction: Direction,
    truncation_mass: f64,
) -> (f64, f64) {
    let z = -norm_quantile(0.5 * truncation_mass);
    let s2 = sigma * sigma;
    let loss_remove = |x: f64| ln_mix(q, (2.0 * x - 1.0) / (2.0 * s2));
    // Loss range after truncation.
    match direction {
        Direction::Remove => (loss_remove(-z * sigma), loss_remove(1.0 + z * sigma)),
        Direction::Add => (-loss_remove(z * sigma), -loss_remove(-z * sigma)),
    }
}

/// The grid indices k_lo..=k_hi covering the losses from `l_lo` to `l_hi` with step `delta_l`;
/// [`PrivacyError::GridTooLarge`] when that is more than `max_points` points.
fn grid_range(l_lo: f64, l_hi: f64, delta_l: f64, max_points: usize) -> Result<(i64, i64)> {
    let k_lo = (l_lo / delta_l).ceil();
    let k_hi = (l_hi / delta_l).ceil().max(k_lo);
    let points = k_hi - k_lo + 1.0;
    if !(points.is_finite() && points <= max_points as f64) {
        return Err(PrivacyError::GridTooLarge {
            points: if points.is_finite() {
                points as u64
            } else {
                u64::MAX
            },
            limit: max_points as u64,
        });
    }
    Ok((k_lo as i64, k_hi as i64))
}

/// At a loss value l: ((P(L ≤ l), P(L > l)), (Q(L ≤ l), Q(L > l))) for the pair of the given
/// direction.
fn loss_cdfs(q: f64, sigma: f64, direction: Direction, l: f64) -> (Pair, Pair) {
    match direction {
        Direction::Remove => {
            // L ≤ l ⟺ x ≤ x(l); P = (1−q)N(0,σ²) + qN(1,σ²), Q = N(0,σ²).
            let x = x_of_loss(q, sigma, l);
            let a = phi_pair(x / sigma);
            let b = phi_pair((x - 1.0) / sigma);
            (
                ((1.0 - q) * a.0 + q * b.0, (1.0 - q) * a.1 + q * b.1),
                (a.0, a.1),
            )
        }
        Direction::Add => {
            // L = −ℓ(x) ≤ l ⟺ x ≥ x(−l); P = N(0,σ²), Q = the mixture.
            let x = x_of_loss(q, sigma, -l);
            let a = phi_pair(x / sigma);
            let b = phi_pair((x - 1.0) / sigma);
            (
                (a.1, a.0),
                ((1.0 - q) * a.1 + q * b.1, (1.0 - q) * a.0 + q * b.0),
            )
        }
    }
}

/// Mass between two boundaries, from whichever side is accurate.
fn interval_mass(prev: Pair, cur: Pair) -> f64 {
    let m = if cur.0 <= 0.5 {
        cur.0 - prev.0
    } else {
        prev.1 - cur.1
    };
    m.max(0.0)
}

/// The grid masses of points k_lo..=k_hi: all P-mass with loss ≤ ε_{k_lo} at the first point,
/// then each interval's mass split between its two end points so that both its P-mass and its
/// Q-mass are preserved. Also returns the (P, Q) pairs of `cdfs` at the last point.
fn connect_the_dots(
    k_lo: i64,
    k_hi: i64,
    delta_l: f64,
    cdfs: impl Fn(f64) -> (Pair, Pair),
) -> (Vec<f64>, Pair, Pair) {
    let n = (k_hi - k_lo + 1) as usize;
    let mut pmf = vec![0.0; n];
    let (mut p_prev, mut q_prev) = cdfs(k_lo as f64 * delta_l);
    pmf[0] = p_prev.0; // all P-mass with loss ≤ ε_1 moves up to ε_1
    // Fraction of an interval's P-mass excess that the upper end point takes: 1/(1 − e^{−Δ}).
    let inv_span = 1.0 / -(-delta_l).exp_m1();
    for i in 1..n {
        let lower_edge = (k_lo + i as i64 - 1) as f64 * delta_l;
        let (p_cur, q_cur) = cdfs((k_lo + i as i64) as f64 * delta_l);
        let pb = interval_mass(p_prev, p_cur);
        let qb = interval_mass(q_prev, q_cur);
        let upper = ((pb - lower_edge.exp() * qb) * inv_span).clamp(0.0, pb);
        pmf[i - 1] += pb - upper;
        pmf[i] += upper;
        p_prev = p_cur;
        q_prev = q_cur;
    }
    (pmf, p_prev, q_prev)
}

/// Tail above the last point (grid index `k_hi`): Q-mass kept at the last point, the rest of the
/// P-mass at +∞. Adds the former to `pmf` and returns the latter.
fn place_top_tail(pmf: &mut [f64], k_hi: i64, delta_l: f64, p_top: Pair, q_top: Pair) -> f64 {
    let top = (k_hi as f64 * delta_l).exp();
    let at_top = (top * q_top.1).min(p_top.1);
    let last = pmf.len() - 1;
    pmf[last] += at_top;
    (p_top.1 - at_top).max(0.0)
}
