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

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::error::{PrivacyError, Result};
use crate::mechanism::{CanonicalEvent, Mechanism, canonicalize};
use crate::normal::{norm_cdf, norm_quantile, norm_sf};
use crate::rdp::{check_delta, check_epsilon};

type C64 = Complex<f64>;

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
    fn validate(&self) -> Result<()> {
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
    fn trim(&mut self) {
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
    let z = -norm_quantile(0.5 * options.truncation_mass);
    let s2 = sigma * sigma;
    let loss_remove = |x: f64| ln_mix(q, (2.0 * x - 1.0) / (2.0 * s2));
    // Loss range after truncation.
    let (l_lo, l_hi) = match direction {
        Direction::Remove => (loss_remove(-z * sigma), loss_remove(1.0 + z * sigma)),
        Direction::Add => (-loss_remove(z * sigma), -loss_remove(-z * sigma)),
    };
    // At a loss value l: ((P(L ≤ l), P(L > l)), (Q(L ≤ l), Q(L > l))).
    type Pair = (f64, f64);
    let cdfs = |l: f64| -> (Pair, Pair) {
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
    };
    // Mass between two boundaries, from whichever side is accurate.
    let diff = |prev: Pair, cur: Pair| -> f64 {
        let m = if cur.0 <= 0.5 {
            cur.0 - prev.0
        } else {
            prev.1 - cur.1
        };
        m.max(0.0)
    };
    let k_lo = (l_lo / delta_l).ceil();
    let k_hi = (l_hi / delta_l).ceil().max(k_lo);
    let points = k_hi - k_lo + 1.0;
    if !(points.is_finite() && points <= options.max_points as f64) {
        return Err(PrivacyError::GridTooLarge {
            points: if points.is_finite() {
                points as u64
            } else {
                u64::MAX
            },
            limit: options.max_points as u64,
        });
    }
    let (k_lo, k_hi) = (k_lo as i64, k_hi as i64);
    let n = (k_hi - k_lo + 1) as usize;
    let mut pmf = vec![0.0; n];
    let (mut p_prev, mut q_prev) = cdfs(k_lo as f64 * delta_l);
    pmf[0] = p_prev.0; // all P-mass with loss ≤ ε_1 moves up to ε_1
    // Fraction of an interval's P-mass excess that the upper end point takes: 1/(1 − e^{−Δ}).
    let inv_span = 1.0 / -(-delta_l).exp_m1();
    for i in 1..n {
        let lower_edge = (k_lo + i as i64 - 1) as f64 * delta_l;
        let (p_cur, q_cur) = cdfs((k_lo + i as i64) as f64 * delta_l);
        let pb = diff(p_prev, p_cur);
        let qb = diff(q_prev, q_cur);
        let upper = ((pb - lower_edge.exp() * qb) * inv_span).clamp(0.0, pb);
        pmf[i - 1] += pb - upper;
        pmf[i] += upper;
        p_prev = p_cur;
        q_prev = q_cur;
    }
    // Tail above the last point: Q-mass kept at the last point, the rest of the P-mass at +∞.
    let top = (k_hi as f64 * delta_l).exp();
    let at_top = (top * q_prev.1).min(p_prev.1);
    pmf[n - 1] += at_top;
    let mut pld = DiscretePld {
        discretisation: delta_l,
        offset: k_lo,
        pmf,
        infinity_mass: (p_prev.1 - at_top).max(0.0),
    };
    pld.trim();
    Ok(pld)
}

/// ln Σ_j p_j e^{λ l_j} for λ ≠ 0 (the finite part only), evaluated with a geometric recurrence
/// scaled at the end of the support that dominates, plus a small safety margin.
fn ln_mgf(p: &DiscretePld, lambda: f64) -> f64 {
    let n = p.pmf.len();
    let r = (-lambda.abs() * p.discretisation).exp();
    let mut w = 1.0;
    let mut s = 0.0;
    if lambda > 0.0 {
        for i in (0..n).rev() {
            s += p.pmf[i] * w;
            w *= r;
        }
        s.ln() + lambda * p.loss(n - 1) + 1e-9
    } else {
        for i in 0..n {
            s += p.pmf[i] * w;
            w *= r;
        }
        s.ln() + lambda * p.loss(0) + 1e-9
    }
}

const LAMBDAS: [f64; 12] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0,
];

/// Grid-index window [lo, hi] holding all but `tail` of the composed finite mass on each side
/// (Chernoff bounds over [`LAMBDAS`]), clipped to the exact support; and the cumulant values.
struct Window {
    lo: i64,
    hi: i64,
    support_lo: i64,
    support_hi: i64,
    k_pos: Vec<f64>,
}

fn window(parts: &[(&DiscretePld, u64)], tail: f64) -> Window {
    let delta_l = parts[0].0.discretisation;
    let mut support_lo = 0i64;
    let mut support_hi = 0i64;
    for (p, t) in parts {
        let t = *t as i64;
        support_lo = support_lo.saturating_add(p.offset.saturating_mul(t));
        support_hi =
            support_hi.saturating_add((p.offset + p.pmf.len() as i64 - 1).saturating_mul(t));
    }
    let ln_tail = tail.ln();
    let mut hi = support_hi;
    let mut lo = support_lo;
    let mut k_pos = Vec::with_capacity(LAMBDAS.len());
    for &lam in &LAMBDAS {
        let kp: f64 = parts.iter().map(|(p, t)| *t as f64 * ln_mgf(p, lam)).sum();
        let kn: f64 = parts.iter().map(|(p, t)| *t as f64 * ln_mgf(p, -lam)).sum();
        k_pos.push(kp);
        let h = ((kp - ln_tail) / (lam * delta_l)).ceil();
        if h.is_finite() && h < hi as f64 {
            hi = h as i64;
        }
        let l = ((ln_tail - kn) / (lam * delta_l)).floor();
        if l.is_finite() && l > lo as f64 {
            lo = l as i64;
        }
    }
    if lo > hi {
        // Degenerate (all mass essentially at one point): keep the exact support.
        lo = support_lo;
        hi = support_hi;
    }
    Window {
        lo,
        hi,
        support_lo,
        support_hi,
        k_pos,
    }
}

/// Chernoff bound on the composed finite mass strictly above grid index `hi`.
fn mass_above(w: &Window, hi: i64, delta_l: f64) -> f64 {
    if hi >= w.support_hi {
        return 0.0;
    }
    LAMBDAS
        .iter()
        .zip(&w.k_pos)
        .map(|(&lam, &kp)| (kp - lam * hi as f64 * delta_l).exp())
        .fold(1.0_f64, f64::min)
}

fn fft_len(n: usize) -> usize {
    let p2 = n.next_power_of_two();
    let p3 = 3 * (n.div_ceil(3)).next_power_of_two();
    p2.min(p3).max(1)
}

fn cpow(z: C64, mut n: u64) -> C64 {
    // |z|^n underflows: skip the work.
    let m2 = z.norm_sqr();
    if m2 == 0.0 || 0.5 * m2.ln() * (n as f64) < -745.0 {
        return C64::new(0.0, 0.0);
    }
    let mut base = z;
    let mut acc = C64::new(1.0, 0.0);
    while n > 0 {
        if n & 1 == 1 {
            acc *= base;
        }
        n >>= 1;
        if n > 0 {
            base = base * base;
        }
    }
    acc
}

/// Composes, for each direction, `count_i` copies of each event's PLD: `parts[i] =
/// (remove_pld, add_pld, count)`. One forward FFT per distinct event (both directions packed as
/// the real and imaginary parts), powers by repeated squaring, one inverse FFT.
///
/// Guarantee: each returned PLD dominates the composition of its inputs (see the module docs).
pub fn compose(
    parts: &[(&DiscretePld, &DiscretePld, u64)],
    options: &PldOptions,
) -> Result<(DiscretePld, DiscretePld)> {
    options.validate()?;
    if parts.is_empty() {
        let zero = DiscretePld {
            discretisation: options.discretisation,
            offset: 0,
            pmf: vec![1.0],
            infinity_mass: 0.0,
        };
        return Ok((zero.clone(), zero));
    }
    if parts.len() == 1 && parts[0].2 == 1 {
        return Ok((parts[0].0.clone(), parts[0].1.clone()));
    }
    let delta_l = parts[0].0.discretisation;
    if parts
        .iter()
        .any(|(r, a, _)| r.discretisation != delta_l || a.discretisation != delta_l)
    {
        return Err(PrivacyError::invalid(
            "discretisation",
            "mixed",
            "the same grid step for every composed PLD",
        ));
    }
    let rem: Vec<(&DiscretePld, u64)> = parts.iter().map(|p| (p.0, p.2)).collect();
    let add: Vec<(&DiscretePld, u64)> = parts.iter().map(|p| (p.1, p.2)).collect();
    let (w_rem, w_add) = std::thread::scope(|scope| {
        let h = scope.spawn(|| window(&add, options.window_mass));
        let w_rem = window(&rem, options.window_mass);
        (w_rem, h.join())
    });
    let w_add = w_add.map_err(|_| PrivacyError::Internal("PLD window thread panicked".into()))?;
    let need = (w_rem.hi - w_rem.lo + 1).max(w_add.hi - w_add.lo + 1);
    if need > options.max_points as i64 {
        return Err(PrivacyError::GridTooLarge {
            points: need as u64,
            limit: options.max_points as u64,
        });
    }
    let n = fft_len(need as usize);
    let mut planner = FftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut acc_r = vec![C64::new(1.0, 0.0); n];
    let mut acc_a = vec![C64::new(1.0, 0.0); n];
    let mut buf = vec![C64::new(0.0, 0.0); n];
    for (pr, pa, t) in parts {
        buf.iter_mut().for_each(|c| *c = C64::new(0.0, 0.0));
        for (j, &v) in pr.pmf.iter().enumerate() {
            buf[j % n].re += v;
        }
        for (j, &v) in pa.pmf.iter().enumerate() {
            buf[j % n].im += v;
        }
        fwd.process(&mut buf);
        for f in 0..n {
            let x = buf[f];
            let y = buf[(n - f) % n].conj();
            let r = (x + y) * 0.5;
            let a = (x - y) * C64::new(0.0, -0.5);
            acc_r[f] *= cpow(r, *t);
            acc_a[f] *= cpow(a, *t);
        }
    }
    for f in 0..n {
        buf[f] = acc_r[f] + C64::new(0.0, 1.0) * acc_a[f];
    }
    drop(acc_r);
    drop(acc_a);
    inv.process(&mut buf);
    let scale = 1.0 / n as f64;
    let unpack = |w: &Window, im: bool, ps: &[(&DiscretePld, u64)]| -> DiscretePld {
        // Grid index k lives at cyclic position (k − support_lo) mod n.
        let mut pos = (w.lo - w.support_lo).rem_euclid(n as i64) as usize;
        let mut neg = 0.0;
        let mut pmf = Vec::with_capacity(n);
        for _ in 0..n {
            let c = buf[pos];
            let v = if im { c.im } else { c.re } * scale;
            if v < 0.0 {
                neg -= v;
                pmf.push(0.0);
            } else {
                pmf.push(v);
            }
            pos += 1;
            if pos == n {
                pos = 0;
            }
        }
        let ln_fin: f64 = ps
            .iter()
            .map(|(p, t)| *t as f64 * (-p.infinity_mass).ln_1p())
            .sum();
        let inf = -ln_fin.exp_m1();
        let above = mass_above(w, w.lo + n as i64 - 1, delta_l);
        let mut out = DiscretePld {
            discretisation: delta_l,
            offset: w.lo,
            pmf,
            infinity_mass: (inf + above + neg).min(1.0),
        };
        out.trim();
        out
    };
    let r = unpack(&w_rem, false, &rem);
    let a = unpack(&w_add, true, &add);
    Ok((r, a))
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
