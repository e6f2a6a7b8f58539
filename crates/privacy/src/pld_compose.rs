//! Composition of discretised PLDs: a cyclic convolution by FFT on a window chosen with Chernoff
//! bounds (see [`compose`] and the [`pld`](crate::pld) module docs).

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::error::{PrivacyError, Result};
use crate::pld::{DiscretePld, PldOptions};

type C64 = Complex<f64>;

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

/// The orders λ of the Chernoff bounds that choose the composition window.
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

/// The [`Window`] of the composition of `count` copies of each of `parts`, with at most `tail`
/// of the finite mass outside it on each side.
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

/// The FFT length used for `n` points: the smallest power of two, or three times a power of
/// two, that is at least `n`.
fn fft_len(n: usize) -> usize {
    let p2 = n.next_power_of_two();
    let p3 = 3 * (n.div_ceil(3)).next_power_of_two();
    p2.min(p3).max(1)
}

/// `z`^`n` by repeated squaring (zero when |z|^n underflows).
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
    if let Some(trivial) = trivial_composition(parts, options) {
        return Ok(trivial);
    }
    let delta_l = common_discretisation(parts)?;
    let rem: Vec<(&DiscretePld, u64)> = parts.iter().map(|p| (p.0, p.2)).collect();
    let add: Vec<(&DiscretePld, u64)> = parts.iter().map(|p| (p.1, p.2)).collect();
    let (w_rem, w_add) = windows(&rem, &add, options.window_mass)?;
    let n = fft_size(&w_rem, &w_add, options.max_points)?;
    let buf = composed_cyclic(parts, n);
    let r = unpack(&buf, &w_rem, false, &rem, delta_l);
    let a = unpack(&buf, &w_add, true, &add, delta_l);
    Ok((r, a))
}

/// The compositions that need no FFT: of no event (all mass at loss 0), and of one event once
/// (the event itself).
fn trivial_composition(
    parts: &[(&DiscretePld, &DiscretePld, u64)],
    options: &PldOptions,
) -> Option<(DiscretePld, DiscretePld)> {
    if parts.is_empty() {
        let zero = DiscretePld {
            discretisation: options.discretisation,
            offset: 0,
            pmf: vec![1.0],
            infinity_mass: 0.0,
        };
        return Some((zero.clone(), zero));
    }
    if parts.len() == 1 && parts[0].2 == 1 {
        return Some((parts[0].0.clone(), parts[0].1.clone()));
    }
    None
}

/// The grid step shared by every PLD of `parts` (non-empty); an error when they differ.
fn common_discretisation(parts: &[(&DiscretePld, &DiscretePld, u64)]) -> Result<f64> {
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
    Ok(delta_l)
}

/// The composition windows of the Remove and the Add direction, computed on two threads.
fn windows(
    rem: &[(&DiscretePld, u64)],
    add: &[(&DiscretePld, u64)],
    tail: f64,
) -> Result<(Window, Window)> {
    let (w_rem, w_add) = std::thread::scope(|scope| {
        let h = scope.spawn(|| window(add, tail));
        let w_rem = window(rem, tail);
        (w_rem, h.join())
    });
    let w_add = w_add.map_err(|_| PrivacyError::Internal("PLD window thread panicked".into()))?;
    Ok((w_rem, w_add))
}

/// The FFT length covering the wider of the two windows; [`PrivacyError::GridTooLarge`] when a
/// window has more than `max_points` points.
fn fft_size(w_rem: &Window, w_add: &Window, max_points: usize) -> Result<usize> {
    let need = (w_rem.hi - w_rem.lo + 1).max(w_add.hi - w_add.lo + 1);
    if need > max_points as i64 {
        return Err(PrivacyError::GridTooLarge {
            points: need as u64,
            limit: max_points as u64,
        });
    }
    Ok(fft_len(need as usize))
}

/// The length-`n` cyclic convolutions of `count` copies of every event, the Remove direction in
/// the real parts and the Add direction in the imaginary parts (not yet scaled by 1/n).
fn composed_cyclic(parts: &[(&DiscretePld, &DiscretePld, u64)], n: usize) -> Vec<C64> {
    let mut planner = FftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let (acc_r, acc_a, mut buf) = spectrum_powers(parts, fwd.as_ref(), n);
    for f in 0..n {
        buf[f] = acc_r[f] + C64::new(0.0, 1.0) * acc_a[f];
    }
    drop(acc_r);
    drop(acc_a);
    inv.process(&mut buf);
    buf
}

/// The spectra of both composed directions: for each event one forward FFT (both directions
/// packed as the real and imaginary parts), separated and raised to the event's count by
/// repeated squaring, and multiplied together. Returns the two products and the scratch buffer.
fn spectrum_powers(
    parts: &[(&DiscretePld, &DiscretePld, u64)],
    fwd: &dyn Fft<f64>,
    n: usize,
) -> (Vec<C64>, Vec<C64>, Vec<C64>) {
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
    (acc_r, acc_a, buf)
}

/// One direction's composed PLD from the inverse FFT `buf` (its imaginary parts when `im`): the
/// window's grid masses, with P(L = ∞) the composed infinite-loss mass of `ps` plus the Chernoff
/// bound on the mass above the window plus the FFT's negative rounding residue.
fn unpack(
    buf: &[C64],
    w: &Window,
    im: bool,
    ps: &[(&DiscretePld, u64)],
    delta_l: f64,
) -> DiscretePld {
    let n = buf.len();
    let (pmf, neg) = read_window(buf, w, im);
    let inf = composed_infinity_mass(ps);
    let above = mass_above(w, w.lo + n as i64 - 1, delta_l);
    let mut out = DiscretePld {
        discretisation: delta_l,
        offset: w.lo,
        pmf,
        infinity_mass: (inf + above + neg).min(1.0),
    };
    out.trim();
    out
}

/// The n scaled values of `buf` (real or imaginary parts) from grid index `w.lo` on, negative
/// ones (FFT rounding) set to zero; and the total magnitude of those negative values.
fn read_window(buf: &[C64], w: &Window, im: bool) -> (Vec<f64>, f64) {
    let n = buf.len();
    let scale = 1.0 / n as f64;
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
    (pmf, neg)
}

/// P(L = ∞) of the composition: 1 − Π (1 − P_i(L = ∞))^{t_i}, computed in log space.
fn composed_infinity_mass(ps: &[(&DiscretePld, u64)]) -> f64 {
    let ln_fin: f64 = ps
        .iter()
        .map(|(p, t)| *t as f64 * (-p.infinity_mass).ln_1p())
        .sum();
    -ln_fin.exp_m1()
}
