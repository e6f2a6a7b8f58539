//! Empirical lower bounds on ε from one training run: the canary audit of Steinke, Nasr and
//! Jagielski, "Privacy Auditing with One (1) Training Run" (NeurIPS 2023, arXiv 2305.08846).
//!
//! The accountants of this crate give *upper* bounds on the privacy loss; an audit gives a
//! *lower* bound, so that a bug in the implementation or in the analysis shows up as a lower bound
//! above the upper one.
//!
//! # The game
//!
//! `m` canaries are each included in the training data independently with probability 1/2. After
//! training, an attack assigns every canary a score (higher = more likely included). The auditor
//! guesses "IN" for the `k+` highest scores and "OUT" for the `k−` lowest, abstains on the rest,
//! and counts the `v` correct guesses among the `r = k+ + k−` made. If training is (ε, δ)-DP with
//! respect to adding or removing each canary, the paper (Theorem 3.1) bounds the tail of `v`:
//!
//! ```text
//! P[v ≥ t] ≤ f(t) + 2mδ · max_{1≤i≤t} (f(t − i) − f(t)) / i,
//! f(t) = P[Binomial(r, q) ≥ t],   q = e^ε / (1 + e^ε).
//! ```
//!
//! For δ = 0 the extra term vanishes: `v` is stochastically dominated by Binomial(r, q), the number
//! of correct guesses of ε-DP randomized response. (Terms with `i > t` add nothing, since
//! `f(t − i) = 1` for them and `(1 − f(t))/i` is largest at `i = t`.) The right-hand side,
//! evaluated at the observed `v` and capped at 1, is a p-value for the null hypothesis "training
//! is (ε, δ)-DP" ([`p_value`]); this is the quantity of the paper's Algorithm 2 and of
//! `_one_run_p_value` in google-deepmind/jax_privacy (`jax_privacy/auditing.py`).
//!
//! # The reported bound
//!
//! With significance α = 1 − confidence, [`epsilon_lower_bound`] returns
//!
//! ```text
//! ε̂ = sup { ε ≥ 0 : p(ε') < α for every ε' in [0, ε] }
//! ```
//!
//! (0 when already p(0) ≥ α). Guarantee: if training is (ε, δ)-DP then `P[ε̂ > ε] ≤ α`, because
//! ε̂ > ε requires p(ε) < α, and p(ε) is a valid p-value. Requiring rejection on the whole interval
//! `[0, ε̂]` (rather than only at ε̂) keeps this true even where the δ > 0 bound is not monotone
//! in ε; for δ = 0 it is monotone (binomial tails grow with q) and the definition is just the
//! crossing point. Numerically, "every ε'" is checked at every multiple of 0.25 below ε̂ and by
//! bisection inside the last interval (a tighter check than the paper's and jax_privacy's plain
//! root search; the δ > 0 bound is monotone in every setting the tests probe, where both agree).
//!
//! The guarantee needs the canaries' inclusion bits to be fresh fair coins independent of
//! everything else the auditor uses (scores may depend on anything the training run outputs).
//! Choosing `k+`, `k−` after seeing the scores is a multiple comparison: [`audit_best_k`] tries a
//! grid fixed in advance and applies a Bonferroni correction.
//!
//! ```
//! use dpselft_privacy::audit::{audit_best_k, default_k_grid, epsilon_lower_bound};
//!
//! // 100 guesses, all correct: ε > 3.49 at 95% confidence (for δ = 0).
//! let eps = epsilon_lower_bound(1000, 100, 100, 0.0, 0.95)?;
//! assert!((eps - 3.493).abs() < 1e-3);
//! // From attack scores: canaries 0..100, the even ones included, scored perfectly.
//! let included: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
//! let scores: Vec<f64> = included.iter().map(|&x| f64::from(u8::from(x))).collect();
//! let audit = audit_best_k(&scores, &included, &default_k_grid(100), 1e-5, 0.95)?;
//! assert_eq!(audit.best.correct, audit.best.guesses);
//! # Ok::<(), dpselft_privacy::PrivacyError>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{PrivacyError, Result};

/// The largest ε the search considers. A bound this large needs astronomically many correct
/// guesses (all-correct guesses give only about `ln(r / ln(1/α))`), so reaching it means "at least
/// this much", not an estimate.
pub const EPSILON_SEARCH_MAX: f64 = 50.0;

/// Step of the upward scan for the first ε that is not rejected (then refined by bisection).
const SCAN_STEP: f64 = 0.25;
/// Bisection steps after the scan: resolves the bound to `SCAN_STEP / 2^48 ≈ 1e-15`.
const BISECTION_STEPS: u32 = 48;

/// The outcome of one audit: how many guesses were made, how many were right, and the ε lower
/// bound they support.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditResult {
    /// Number of canaries `m` (each included with probability 1/2).
    pub canaries: usize,
    /// Number of "IN" guesses (the highest scores).
    pub k_plus: usize,
    /// Number of "OUT" guesses (the lowest scores).
    pub k_minus: usize,
    /// Guesses made, `r = k_plus + k_minus`.
    pub guesses: usize,
    /// Correct guesses `v`.
    pub correct: usize,
    /// The δ of the null hypothesis.
    pub delta: f64,
    /// The confidence this bound holds at by itself (after any Bonferroni split, the per-test
    /// confidence).
    pub confidence: f64,
    /// The lower bound ε̂ (see the module documentation for its definition).
    pub epsilon_lower_bound: f64,
}

/// The outcome of [`audit_best_k`]: the audit at every `k` tried and the best one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestKAudit {
    /// The audit with the largest bound (the first such `k` in grid order on ties). Its bound holds
    /// at the overall `confidence` below, thanks to the Bonferroni correction.
    pub best: AuditResult,
    /// Every audit tried, in grid order, each at the per-test confidence `1 − (1 − confidence)/n`.
    pub tried: Vec<AuditResult>,
    /// The overall confidence of `best.epsilon_lower_bound`.
    pub confidence: f64,
}

/// The p-value of the null hypothesis "training is (ε, δ)-DP" after `correct` of `guesses`
/// guesses on `canaries` canaries: the paper's bound on `P[v ≥ correct]` (see the module
/// documentation), capped at 1.
///
/// Small values are evidence against the claim; [`epsilon_lower_bound`] inverts this in ε.
pub fn p_value(
    canaries: usize,
    guesses: usize,
    correct: usize,
    epsilon: f64,
    delta: f64,
) -> Result<f64> {
    check_counts(canaries, guesses, correct)?;
    check_delta(delta)?;
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(PrivacyError::invalid("epsilon", epsilon, "a finite ε ≥ 0"));
    }
    Ok(NullModel::new(canaries, guesses, correct, delta)
        .ln_p_value(epsilon)
        .exp())
}

/// The largest ε that `correct` of `guesses` guesses on `canaries` canaries rule out at the given
/// confidence (e.g. 0.95): if training is (ε, δ)-DP, the returned value exceeds ε with probability
/// at most `1 − confidence`. Exact definition: `sup { ε ≥ 0 : p(ε') < 1 − confidence for all ε' ≤
/// ε }` with `p` from [`p_value`], found by an upward scan in steps of 0.25 then bisection to
/// about 1e-15; 0 when nothing can be concluded; at most [`EPSILON_SEARCH_MAX`].
///
/// `canaries` (the paper's `m`) only matters when δ > 0, through the `2mδ` term.
pub fn epsilon_lower_bound(
    canaries: usize,
    guesses: usize,
    correct: usize,
    delta: f64,
    confidence: f64,
) -> Result<f64> {
    check_counts(canaries, guesses, correct)?;
    check_delta(delta)?;
    check_confidence(confidence)?;
    Ok(bound_at_significance(
        canaries,
        guesses,
        correct,
        delta,
        1.0 - confidence,
    ))
}

/// Audits one attack: guesses IN for the `k_plus` highest `scores`, OUT for the `k_minus` lowest,
/// compares with `included` and returns the counts and the ε lower bound at `confidence`.
///
/// `scores[i]` and `included[i]` belong to canary `i`; `m = scores.len()`. Equal scores are ranked
/// by index, lower index first (treated as "more likely IN"): deterministic, and harmless because
/// the inclusion bits are independent of the indices. Scores must not be NaN (±∞ is fine).
pub fn audit_scores(
    scores: &[f64],
    included: &[bool],
    k_plus: usize,
    k_minus: usize,
    delta: f64,
    confidence: f64,
) -> Result<AuditResult> {
    check_confidence(confidence)?;
    let ranking = rank(scores, included)?;
    audit_ranked(
        &ranking,
        included,
        k_plus,
        k_minus,
        delta,
        confidence,
        1.0 - confidence,
    )
}

/// Audits with `k+ = k− = k` for every `k` in `ks` and reports the best bound, valid at the
/// overall `confidence`.
///
/// The paper lets the auditor choose `k+` and `k−`, but picking the best of several after looking
/// at the scores is a multiple comparison: each of the `n = ks.len()` audits is run at significance
/// `(1 − confidence)/n` (Bonferroni), so that the maximum holds at `confidence`. `ks` must be fixed
/// before looking at the scores (for example [`default_k_grid`]); each `k` needs `2k ≤ m`.
pub fn audit_best_k(
    scores: &[f64],
    included: &[bool],
    ks: &[usize],
    delta: f64,
    confidence: f64,
) -> Result<BestKAudit> {
    check_confidence(confidence)?;
    if ks.is_empty() {
        return Err(PrivacyError::invalid("ks", "[]", "at least one k"));
    }
    let ranking = rank(scores, included)?;
    let alpha = (1.0 - confidence) / ks.len() as f64;
    let tried = ks
        .iter()
        .map(|&k| audit_ranked(&ranking, included, k, k, delta, 1.0 - alpha, alpha))
        .collect::<Result<Vec<_>>>()?;
    let best = tried.iter().copied().fold(tried[0], |best, a| {
        if a.epsilon_lower_bound > best.epsilon_lower_bound {
            a
        } else {
            best
        }
    });
    Ok(BestKAudit {
        best,
        tried,
        confidence,
    })
}

/// A grid of `k` (= `k+` = `k−`) for [`audit_best_k`] that depends only on `m`: 10, 20, 50, 100,
/// 200, 500, … up to `⌊m/2⌋`, followed by `⌊m/2⌋` itself (guessing on every canary) when it is not
/// already in. Empty for `m < 2`.
pub fn default_k_grid(canaries: usize) -> Vec<usize> {
    let half = canaries / 2;
    let mut grid: Vec<usize> = (1..=19)
        .flat_map(|e| [1, 2, 5].map(|d| d * 10usize.pow(e)))
        .take_while(|&k| k <= half)
        .collect();
    if half >= 1 && grid.last() != Some(&half) {
        grid.push(half);
    }
    grid
}

/// The bound at significance `alpha` for validated inputs.
fn bound_at_significance(
    canaries: usize,
    guesses: usize,
    correct: usize,
    delta: f64,
    alpha: f64,
) -> f64 {
    if correct == 0 {
        return 0.0; // p(ε) = 1 for every ε.
    }
    let null = NullModel::new(canaries, guesses, correct, delta);
    let ln_alpha = alpha.ln();
    largest_rejected(|eps| null.ln_p_value(eps) < ln_alpha)
}

/// `sup { ε ≤ EPSILON_SEARCH_MAX : rejects(ε') for all ε' ≤ ε }`, up to the scan resolution for
/// the "all" (a scan from 0 in steps of `SCAN_STEP`, then bisection of the first gap).
fn largest_rejected(rejects: impl Fn(f64) -> bool) -> f64 {
    if !rejects(0.0) {
        return 0.0;
    }
    let mut lo = 0.0_f64;
    let mut hi = loop {
        let next = (lo + SCAN_STEP).min(EPSILON_SEARCH_MAX);
        if !rejects(next) {
            break next;
        }
        if next >= EPSILON_SEARCH_MAX {
            return EPSILON_SEARCH_MAX;
        }
        lo = next;
    };
    for _ in 0..BISECTION_STEPS {
        let mid = 0.5 * (lo + hi);
        if rejects(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The null model Binomial(r, q(ε)) for a fixed observation, with the ε-independent parts
/// precomputed: `ln C(r, j)` for all `j`, and `ln(2mδ)` when δ > 0.
struct NullModel {
    ln_choose: Vec<f64>,
    correct: usize,
    ln_two_m_delta: Option<f64>,
}

impl NullModel {
    fn new(canaries: usize, guesses: usize, correct: usize, delta: f64) -> Self {
        let ln_two_m_delta = (delta > 0.0).then(|| (2.0 * canaries as f64 * delta).ln());
        Self {
            ln_choose: ln_binomial_coefficients(guesses),
            correct,
            ln_two_m_delta,
        }
    }

    /// ln of the paper's bound at ε, capped at 0 (p ≤ 1). Everything stays in log space: the
    /// tails of interest are often far below the smallest positive f64.
    fn ln_p_value(&self, epsilon: f64) -> f64 {
        let ln_pmf = self.ln_pmf(epsilon);
        let (below, above) = ln_pmf.split_at(self.correct);
        let ln_tail = ln_sum_exp(above);
        let ln_p = match self.ln_two_m_delta {
            None => ln_tail,
            Some(ln_c) => ln_add(ln_tail, ln_c + ln_max_window_mean(below)),
        };
        ln_p.min(0.0)
    }

    /// `ln P[Binomial(r, q) = j]` for `j = 0..=r`, `q = e^ε/(1 + e^ε)`, with `ln q` and `ln(1 − q)`
    /// computed without cancellation.
    fn ln_pmf(&self, epsilon: f64) -> Vec<f64> {
        let r = (self.ln_choose.len() - 1) as f64;
        let ln_q = -(-epsilon).exp().ln_1p();
        let ln_1mq = ln_q - epsilon;
        self.ln_choose
            .iter()
            .enumerate()
            .map(|(j, c)| c + j as f64 * ln_q + (r - j as f64) * ln_1mq)
            .collect()
    }
}

/// `ln C(r, j)` for `j = 0..=r`, by the product recurrence up to `r/2` and symmetry above (which
/// halves the accumulated rounding; the error is about `1e-16·r` in absolute terms).
fn ln_binomial_coefficients(r: usize) -> Vec<f64> {
    let mut c = vec![0.0_f64; r + 1];
    for j in 0..r / 2 {
        c[j + 1] = c[j] + ((r - j) as f64 / (j + 1) as f64).ln();
    }
    for j in r / 2 + 1..=r {
        c[j] = c[r - j];
    }
    c
}

/// `max_{1≤i≤t} ln( (1/i) Σ_{j=t−i}^{t−1} e^{x_j} )` for `x = ln pmf[0..t]`: the ln of the
/// paper's `max_i (f(t − i) − f(t))/i`, summed directly (no difference of tails, so no
/// cancellation). `−∞` for `t = 0`.
fn ln_max_window_mean(below: &[f64]) -> f64 {
    let mut acc = f64::NEG_INFINITY;
    let mut best = f64::NEG_INFINITY;
    for (i, &x) in below.iter().rev().enumerate() {
        acc = ln_add(acc, x);
        best = best.max(acc - ((i + 1) as f64).ln());
    }
    best
}

/// `ln(e^a + e^b)` without overflow or underflow.
fn ln_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

/// `ln Σ e^{x_i}` (`−∞` for an empty slice).
fn ln_sum_exp(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// Audits an already ranked attack (`ranking[0]` = most likely IN).
fn audit_ranked(
    ranking: &[usize],
    included: &[bool],
    k_plus: usize,
    k_minus: usize,
    delta: f64,
    confidence: f64,
    alpha: f64,
) -> Result<AuditResult> {
    let m = ranking.len();
    let guesses = k_plus.checked_add(k_minus).filter(|&r| r <= m);
    let guesses = guesses.ok_or_else(|| {
        PrivacyError::invalid(
            "k_plus + k_minus",
            format!("{k_plus} + {k_minus} (m = {m})"),
            "at most the number of canaries",
        )
    })?;
    check_delta(delta)?;
    let hits_in = ranking[..k_plus].iter().filter(|&&i| included[i]).count();
    let hits_out = ranking[m - k_minus..]
        .iter()
        .filter(|&&i| !included[i])
        .count();
    let correct = hits_in + hits_out;
    Ok(AuditResult {
        canaries: m,
        k_plus,
        k_minus,
        guesses,
        correct,
        delta,
        confidence,
        epsilon_lower_bound: bound_at_significance(m, guesses, correct, delta, alpha),
    })
}

/// Canary indices from highest to lowest score, equal scores by increasing index.
fn rank(scores: &[f64], included: &[bool]) -> Result<Vec<usize>> {
    if scores.len() != included.len() {
        return Err(PrivacyError::invalid(
            "included.len()",
            included.len(),
            "one inclusion bit per score",
        ));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(PrivacyError::invalid(
            "score",
            format!("NaN at canary {i}"),
            "a number (±∞ allowed)",
        ));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // No NaN is left, so partial_cmp always answers (and −0 ties with +0, unlike total_cmp).
    order.sort_by(|&a, &b| {
        let by_score = scores[b].partial_cmp(&scores[a]);
        by_score
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    Ok(order)
}

fn check_counts(canaries: usize, guesses: usize, correct: usize) -> Result<()> {
    if correct > guesses {
        return Err(PrivacyError::invalid(
            "correct",
            format!("{correct} (guesses = {guesses})"),
            "at most the number of guesses",
        ));
    }
    if guesses > canaries {
        return Err(PrivacyError::invalid(
            "guesses",
            format!("{guesses} (canaries = {canaries})"),
            "at most the number of canaries",
        ));
    }
    Ok(())
}

fn check_delta(delta: f64) -> Result<()> {
    if (0.0..1.0).contains(&delta) {
        Ok(())
    } else {
        Err(PrivacyError::invalid("delta", delta, "0 ≤ δ < 1"))
    }
}

fn check_confidence(confidence: f64) -> Result<()> {
    if confidence > 0.0 && confidence < 1.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "confidence",
            confidence,
            "0 < confidence < 1",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny deterministic RNG for the simulations (SplitMix64; no dependency).
    struct SplitMix(u64);

    impl SplitMix {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
        }
    }

    fn logistic(eps: f64) -> f64 {
        1.0 / (1.0 + (-eps).exp())
    }

    /// P[Binomial(r, q) = j] by the textbook formula: exact integer C(r, j) (r ≤ 60), powi.
    fn pmf_direct(r: u32, j: u32, q: f64) -> f64 {
        let choose = (0..j).fold(1u128, |c, i| c * u128::from(r - i) / u128::from(i + 1));
        choose as f64 * q.powi(j as i32) * (1.0 - q).powi((r - j) as i32)
    }

    /// Σ_{j=lo}^{hi-1} P[Binomial(r, q) = j].
    fn pmf_sum(r: u32, lo: u32, hi: u32, q: f64) -> f64 {
        (lo..hi).map(|j| pmf_direct(r, j, q)).sum()
    }

    fn rel_err(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    fn pure_dp_p_value_is_the_binomial_tail() {
        for r in [10u32, 20, 37] {
            for eps in [0.0, 0.3, 1.0, 2.5, 6.0] {
                let q = logistic(eps);
                for v in 0..=r {
                    let want = pmf_sum(r, v, r + 1, q);
                    let got = p_value(r as usize, r as usize, v as usize, eps, 0.0).unwrap();
                    assert!(
                        rel_err(got, want) < 1e-12,
                        "r={r} v={v} ε={eps}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn approximate_dp_p_value_matches_the_theorem_in_linear_space() {
        // f(v) + 2mδ max_i (f(v−i) − f(v))/i, capped at 1, with every f a direct sum.
        let (r, m) = (20u32, 50usize);
        for delta in [1e-6, 1e-4, 1e-2] {
            for eps in [0.0, 0.5, 1.5, 4.0] {
                let q = logistic(eps);
                for v in 1..=r {
                    let window = (1..=v)
                        .map(|i| pmf_sum(r, v - i, v, q) / f64::from(i))
                        .fold(0.0, f64::max);
                    let want = (pmf_sum(r, v, r + 1, q) + 2.0 * m as f64 * delta * window).min(1.0);
                    let got = p_value(m, r as usize, v as usize, eps, delta).unwrap();
                    assert!(
                        rel_err(got, want) < 1e-11,
                        "v={v} ε={eps} δ={delta}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn pinned_values_from_an_independent_scipy_implementation() {
        // Obtained with Python 3 + SciPy 1.17.1 in a scratch venv, re-implementing the p-value of
        // jax_privacy's `_one_run_p_value` (jax_privacy/auditing.py): beta = binom.sf(v−1, r, q),
        // alpha = max_i (binom.sf(v−i−1, r, q) − beta)/i, p = min(beta + 2mδ·alpha, 1), and
        // solving p(ε) = 1 − confidence with scipy.optimize.brentq (xtol 1e-12).
        // Columns: m, r, v, δ, confidence, ε̂.
        let cases = [
            (1000, 100, 90, 0.0, 0.95, 1.630_823_192_740_973_5),
            (1000, 100, 90, 1e-5, 0.95, 1.626_143_480_695_544_8),
            (1000, 100, 100, 0.0, 0.95, 3.492_965_431_152_307),
            (10_000, 1000, 700, 1e-5, 0.95, 0.729_253_239_025_934_5),
            (10_000, 1000, 700, 0.0, 0.95, 0.732_010_862_357_390_8),
            (1000, 200, 150, 1e-6, 0.99, 0.715_370_190_058_167_5),
            (100, 20, 20, 1e-3, 0.95, 1.476_281_709_134_250_6),
            (
                1000,
                50,
                45,
                1e-4,
                1.0 - 0.05 / 6.0,
                0.190_527_289_278_863_45,
            ),
            (
                200_000,
                100_000,
                60_000,
                1e-6,
                0.95,
                0.394_780_246_503_468_3,
            ),
            (
                200_000,
                100_000,
                60_000,
                0.0,
                0.95,
                0.394_829_184_318_876_26,
            ),
        ];
        for (m, r, v, delta, confidence, want) in cases {
            let got = epsilon_lower_bound(m, r, v, delta, confidence).unwrap();
            assert!(
                (got - want).abs() < 1e-7,
                "{m} {r} {v} {delta}: {got} vs {want}"
            );
        }
        // p-values from the same script.
        let p = [
            (1000, 100, 90, 1.0, 1e-5, 0.000_841_288_561_438_530_9),
            (1000, 100, 90, 1.0, 0.0, 2.735_812_800_766_158_4e-5),
            (50, 20, 17, 0.5, 1e-2, 0.157_530_986_361_298_14),
        ];
        for (m, r, v, eps, delta, want) in p {
            let got = p_value(m, r, v, eps, delta).unwrap();
            assert!(rel_err(got, want) < 1e-10, "{got} vs {want}");
        }
    }

    #[test]
    fn all_correct_pure_dp_matches_the_closed_form() {
        // P[v = r] = q^r; q^r = 1 − confidence ⇔ q = (1 − confidence)^{1/r}, ε = ln(q/(1 − q)),
        // or 0 when that is negative (q < 1/2: not even ε = 0 is rejected).
        for r in [1usize, 10, 100, 1000, 10_000] {
            for confidence in [0.9, 0.95, 0.99] {
                let ln_q = (1.0_f64 - confidence).ln() / r as f64;
                let want = (ln_q - (-ln_q.exp_m1()).ln()).max(0.0);
                let got = epsilon_lower_bound(r, r, r, 0.0, confidence).unwrap();
                assert!(
                    (got - want).abs() < 1e-9,
                    "r={r} c={confidence}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn nothing_is_concluded_at_or_below_half_correct() {
        for r in 0..=40usize {
            for v in 0..=r / 2 {
                for delta in [0.0, 1e-5] {
                    assert_eq!(epsilon_lower_bound(100, r, v, delta, 0.95).unwrap(), 0.0);
                }
            }
        }
    }

    #[test]
    fn bound_grows_with_correct_and_shrinks_with_delta() {
        for delta in [0.0, 1e-6, 1e-4] {
            let bounds: Vec<f64> = (0..=100)
                .map(|v| epsilon_lower_bound(1000, 100, v, delta, 0.95).unwrap())
                .collect();
            assert!(
                bounds.windows(2).all(|w| w[0] <= w[1]),
                "δ={delta}: {bounds:?}"
            );
            assert!(bounds[100] > 0.0);
        }
        let by_delta: Vec<f64> = [0.0, 1e-8, 1e-6, 1e-4, 1e-3]
            .iter()
            .map(|&d| epsilon_lower_bound(1000, 200, 170, d, 0.95).unwrap())
            .collect();
        assert!(by_delta.windows(2).all(|w| w[0] >= w[1]), "{by_delta:?}");
    }

    #[test]
    fn bound_grows_with_confidence_loss() {
        let at = |c| epsilon_lower_bound(1000, 200, 170, 1e-5, c).unwrap();
        assert!(at(0.5) > at(0.9) && at(0.9) > at(0.99) && at(0.99) > at(0.999_999));
    }

    #[test]
    fn p_value_is_non_decreasing_in_epsilon_on_a_fine_grid() {
        // The δ > 0 bound is not monotone by construction; the search does not rely on it (it
        // scans upwards), but in practice it is, which this checks on typical settings.
        for (m, r, v, delta) in [
            (1000, 100, 90, 1e-5),
            (100, 20, 20, 1e-2),
            (5000, 1000, 650, 1e-4),
        ] {
            let ps: Vec<f64> = (0..=400)
                .map(|i| p_value(m, r, v, f64::from(i) * 0.025, delta).unwrap())
                .collect();
            assert!(
                ps.windows(2).all(|w| w[0] <= w[1] * (1.0 + 1e-12)),
                "{m} {r} {v}"
            );
        }
    }

    /// Fraction of `trials` runs of the canary game in which the bound exceeds the true ε, when
    /// each of `r` guesses is independently correct with probability `p_correct`.
    fn false_claim_rate(r: usize, p_correct: f64, eps: f64, delta: f64, trials: usize) -> f64 {
        let mut rng = SplitMix(0x5EED_A0D1_7000_0001);
        let over = (0..trials)
            .filter(|_| {
                let v = (0..r).filter(|_| rng.uniform() < p_correct).count();
                epsilon_lower_bound(2 * r, r, v, delta, 0.95).unwrap() > eps
            })
            .count();
        over as f64 / trials as f64
    }

    #[test]
    fn monte_carlo_pure_dp_randomized_response_is_covered() {
        // ε-DP randomized response: each guess right w.p. e^ε/(1+e^ε), the worst case for δ = 0.
        // Exact P[ε̂ > 1] at r = 200 is P[Bin(200, 0.731) ≥ 157] = 0.0480 (SciPy), so the rate
        // must sit near 0.048: above 0.03 (the bound is not vacuous) and below 0.05 + 3.5σ.
        let rate = false_claim_rate(200, logistic(1.0), 1.0, 0.0, 4000);
        assert!(rate <= 0.062, "rate {rate}");
        assert!(rate >= 0.03, "rate {rate}");
    }

    #[test]
    fn monte_carlo_approximate_dp_mechanism_is_covered() {
        // (ε, δ)-DP per canary: with probability δ the guess is right outright, otherwise ε-DP
        // randomized response. Exact rate for these settings (SciPy): 0.0154, so the rate must
        // stay below 0.05 + 3.5σ and, for a bound that is not vacuous, above 0.005.
        let delta = 1e-3;
        let p_correct = delta + (1.0 - delta) * logistic(1.0);
        let rate = false_claim_rate(200, p_correct, 1.0, delta, 4000);
        assert!(rate <= 0.062, "rate {rate}");
        assert!(rate >= 0.005, "rate {rate}");
    }

    #[test]
    fn audit_scores_counts_guesses_at_both_ends() {
        let scores = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0];
        let included = [true, true, false, true, false, false];
        let a = audit_scores(&scores, &included, 2, 2, 0.0, 0.95).unwrap();
        assert_eq!((a.canaries, a.guesses, a.correct), (6, 4, 4));
        let want = epsilon_lower_bound(6, 4, 4, 0.0, 0.95).unwrap();
        assert_eq!(a.epsilon_lower_bound, want);
        // Top 3 = {0, 1, 2}: two IN; bottom 3 = {3, 4, 5}: two OUT.
        let b = audit_scores(&scores, &included, 3, 3, 0.0, 0.95).unwrap();
        assert_eq!((b.guesses, b.correct), (6, 4));
        let c = audit_scores(&scores, &included, 0, 0, 0.0, 0.95).unwrap();
        assert_eq!((c.guesses, c.correct, c.epsilon_lower_bound), (0, 0, 0.0));
    }

    #[test]
    fn ties_rank_lower_index_as_more_likely_in() {
        let scores = [0.0, -0.0, 0.0, 0.0];
        // IN-guess goes to canary 0, OUT-guess to canary 3.
        let hit = audit_scores(&scores, &[true, false, false, false], 1, 1, 0.0, 0.9).unwrap();
        assert_eq!(hit.correct, 2);
        let miss = audit_scores(&scores, &[false, true, true, true], 1, 1, 0.0, 0.9).unwrap();
        assert_eq!(miss.correct, 0);
        let scores = [1.0, f64::INFINITY, f64::NEG_INFINITY, 1.0];
        let order = rank(&scores, &[false; 4]).unwrap();
        assert_eq!(order, [1, 0, 3, 2]);
    }

    /// A seeded synthetic attack: `m` canaries, fair-coin inclusion, IN scores shifted by `gap`.
    fn synthetic_attack(m: usize, gap: f64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = SplitMix(42);
        let included: Vec<bool> = (0..m).map(|_| rng.uniform() < 0.5).collect();
        let scores = included
            .iter()
            .map(|&i| rng.uniform() + if i { gap } else { 0.0 })
            .collect();
        (scores, included)
    }

    #[test]
    fn best_k_search_applies_bonferroni() {
        let (scores, included) = synthetic_attack(1000, 0.8);
        let ks = default_k_grid(1000);
        assert_eq!(ks, [10, 20, 50, 100, 200, 500]);
        let search = audit_best_k(&scores, &included, &ks, 1e-5, 0.95).unwrap();
        let per_test = 1.0 - 0.05 / 6.0;
        let mut best = 0.0_f64;
        for (a, &k) in search.tried.iter().zip(&ks) {
            let alone = audit_scores(&scores, &included, k, k, 1e-5, per_test).unwrap();
            assert_eq!(a.correct, alone.correct);
            assert!((a.epsilon_lower_bound - alone.epsilon_lower_bound).abs() < 1e-12);
            let unadjusted = audit_scores(&scores, &included, k, k, 1e-5, 0.95).unwrap();
            assert!(a.epsilon_lower_bound <= unadjusted.epsilon_lower_bound);
            best = best.max(a.epsilon_lower_bound);
        }
        assert_eq!(search.best.epsilon_lower_bound, best);
        assert!(
            best > 0.5,
            "a strong attack should give a real bound: {best}"
        );
        assert_eq!(search.confidence, 0.95);
        // One k: no correction at all.
        let one = audit_best_k(&scores, &included, &[100], 1e-5, 0.95).unwrap();
        let alone = audit_scores(&scores, &included, 100, 100, 1e-5, 0.95).unwrap();
        assert_eq!(one.best, alone);
    }

    #[test]
    fn default_grid_depends_only_on_m() {
        assert_eq!(default_k_grid(0), Vec::<usize>::new());
        assert_eq!(default_k_grid(1), Vec::<usize>::new());
        assert_eq!(default_k_grid(5), [2]);
        assert_eq!(default_k_grid(30), [10, 15]);
        assert_eq!(default_k_grid(40), [10, 20]);
        assert_eq!(default_k_grid(1001), [10, 20, 50, 100, 200, 500]);
        assert_eq!(
            default_k_grid(25_000),
            [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 12_500]
        );
    }

    #[test]
    fn invalid_inputs_are_rejected() {
        let bad = |r: Result<f64>| assert!(matches!(r, Err(PrivacyError::InvalidParameter { .. })));
        bad(epsilon_lower_bound(10, 5, 6, 0.0, 0.95));
        bad(epsilon_lower_bound(10, 11, 6, 0.0, 0.95));
        for delta in [-1e-9, 1.0, f64::NAN] {
            bad(epsilon_lower_bound(10, 5, 5, delta, 0.95));
        }
        for confidence in [0.0, 1.0, -0.5, f64::NAN] {
            bad(epsilon_lower_bound(10, 5, 5, 0.0, confidence));
        }
        bad(p_value(10, 5, 5, -1.0, 0.0));
        bad(p_value(10, 5, 5, f64::INFINITY, 0.0));
        let scores = [1.0, 2.0, 3.0, 4.0];
        let included = [true, false, true, false];
        let bad_audit = |r: Result<AuditResult>| assert!(r.is_err());
        bad_audit(audit_scores(&scores, &included[..3], 1, 1, 0.0, 0.95));
        bad_audit(audit_scores(
            &[1.0, f64::NAN, 3.0, 4.0],
            &included,
            1,
            1,
            0.0,
            0.95,
        ));
        bad_audit(audit_scores(&scores, &included, 3, 2, 0.0, 0.95));
        bad_audit(audit_scores(&scores, &included, usize::MAX, 1, 0.0, 0.95));
        bad_audit(audit_scores(&scores, &included, 1, 1, 1.5, 0.95));
        assert!(audit_best_k(&scores, &included, &[], 0.0, 0.95).is_err());
        assert!(audit_best_k(&scores, &included, &[3], 0.0, 0.95).is_err());
    }

    #[test]
    fn audit_result_round_trips_through_json() {
        let (scores, included) = synthetic_attack(200, 0.5);
        let search = audit_best_k(&scores, &included, &default_k_grid(200), 0.0, 0.95).unwrap();
        let json = serde_json::to_string(&search).unwrap();
        let back: BestKAudit = serde_json::from_str(&json).unwrap();
        // Counts exactly; floats to a few ulps (serde_json's default parser is not always exact).
        assert_eq!(back.tried.len(), search.tried.len());
        for (b, s) in back
            .tried
            .iter()
            .zip(&search.tried)
            .chain([(&back.best, &search.best)])
        {
            assert_eq!(
                (b.canaries, b.k_plus, b.k_minus),
                (s.canaries, s.k_plus, s.k_minus)
            );
            assert_eq!((b.guesses, b.correct), (s.guesses, s.correct));
            assert!((b.epsilon_lower_bound - s.epsilon_lower_bound).abs() <= 1e-15);
            assert!((b.confidence - s.confidence).abs() <= 1e-15);
        }
    }
}
