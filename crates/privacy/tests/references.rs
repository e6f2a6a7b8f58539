//! The accountants against independent references: Google's dp-accounting (committed fixtures,
//! see fixtures/make_fixtures.py), the exact Gaussian curve (Balle & Wang 2018), numerical
//! integration of A_α, and the published Abadi et al. value.

use dpselft_privacy::normal::norm_cdf;
use dpselft_privacy::rdp::{Conversion, rdp_to_epsilon, sampled_gaussian_rdp};
use dpselft_privacy::{Mechanism, PldAccountant, RdpAccountant};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture file");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

/// Exact δ(ε) of the Gaussian mechanism composed T times (μ = √T/σ), Balle & Wang (2018).
fn exact_gaussian_delta(sigma: f64, steps: u64, eps: f64) -> f64 {
    let mu = (steps as f64).sqrt() / sigma;
    norm_cdf(-eps / mu + mu / 2.0) - eps.exp() * norm_cdf(-eps / mu - mu / 2.0)
}

/// Exact ε(δ) by bisection on the exact curve.
fn exact_gaussian_epsilon(sigma: f64, steps: u64, delta: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 200.0);
    if exact_gaussian_delta(sigma, steps, 0.0) <= delta {
        return 0.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if exact_gaussian_delta(sigma, steps, mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

fn events_of(case: &Value) -> Vec<Mechanism> {
    case["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (a, b, c) = (f(&e["a"]), f(&e["b"]), e["count"].as_u64().unwrap());
            match e["kind"].as_str().unwrap() {
                "sampled_gaussian" => Mechanism::sampled_gaussian(a, b, c).unwrap(),
                _ => Mechanism::gaussian(a, b, c).unwrap(),
            }
        })
        .collect()
}

#[test]
fn exact_gaussian_formula_matches_high_precision_values() {
    for c in fixture("exact_gaussian.json")["cases"].as_array().unwrap() {
        let (s, t, e, d) = (
            f(&c["sigma"]),
            c["steps"].as_u64().unwrap(),
            f(&c["epsilon"]),
            f(&c["delta"]),
        );
        let ours = exact_gaussian_delta(s, t, e);
        assert!(
            ((ours - d) / d).abs() < 1e-9,
            "σ={s} T={t} ε={e}: {ours} vs {d}"
        );
    }
}

#[test]
fn pld_sits_just_above_the_exact_gaussian_curve_and_rdp_above_it() {
    let pld = PldAccountant::default();
    let rdp = RdpAccountant::default();
    for &(sigma, steps) in &[
        (1.0, 1),
        (2.0, 10),
        (5.0, 100),
        (0.8, 4),
        (10.0, 1000),
        (3.0, 7),
    ] {
        let ev = [Mechanism::gaussian(sigma, 1.0, steps).unwrap()];
        let composed = pld.compose(&ev).unwrap();
        for delta in [1e-3, 1e-5, 1e-8] {
            let exact = exact_gaussian_epsilon(sigma, steps, delta);
            let e_pld = composed.epsilon(delta);
            let e_rdp = rdp.epsilon(&ev, delta).unwrap().epsilon;
            assert!(
                e_pld >= exact,
                "σ={sigma} T={steps} δ={delta}: PLD {e_pld} < exact {exact}"
            );
            assert!(
                e_pld <= exact + 2e-3 * exact.max(1.0),
                "σ={sigma} T={steps} δ={delta}: PLD {e_pld} far above exact {exact}"
            );
            assert!(e_rdp >= e_pld, "RDP {e_rdp} < PLD {e_pld}");
        }
        for eps in [0.0, 0.5, 1.0, 2.0, 4.0] {
            let exact = exact_gaussian_delta(sigma, steps, eps);
            let d = composed.delta(eps);
            // Connect-the-dots is exact at grid points (ε here are grid points): equal up to the
            // rounding of the two evaluations.
            assert!(
                d >= exact * (1.0 - 1e-12),
                "σ={sigma} T={steps} ε={eps}: δ {d} < exact {exact}"
            );
            assert!(
                d <= exact * 1.01 + 1e-12,
                "σ={sigma} T={steps} ε={eps}: δ {d} vs {exact}"
            );
        }
    }
}

#[test]
fn pld_matches_google_dp_accounting() {
    let pld = PldAccountant::default();
    for case in fixture("google_pld.json")["cases"].as_array().unwrap() {
        let ev = events_of(case);
        let composed = pld.compose(&ev).unwrap();
        for pair in case["epsilon_at_delta"].as_array().unwrap() {
            let (d, g) = (f(&pair[0]), f(&pair[1]));
            let ours = composed.epsilon(d);
            assert!(
                (ours - g).abs() <= 1e-3 * g + 1e-4,
                "{ev:?} δ={d}: ours {ours} vs google {g}"
            );
        }
        for pair in case["delta_at_epsilon"].as_array().unwrap() {
            let (e, g) = (f(&pair[0]), f(&pair[1]));
            let ours = composed.delta(e);
            assert!(
                (ours - g).abs() <= 1e-3 * g + 1e-12,
                "{ev:?} ε={e}: ours {ours} vs google {g}"
            );
        }
    }
}

#[test]
fn integer_order_rdp_matches_google() {
    let fx = fixture("google_rdp.json");
    for c in fx["per_step"].as_array().unwrap() {
        let (q, s) = (f(&c["q"]), f(&c["sigma"]));
        for (o, r) in c["orders"]
            .as_array()
            .unwrap()
            .iter()
            .zip(c["rdp"].as_array().unwrap())
        {
            let ours = sampled_gaussian_rdp(q, s, f(o));
            let g = f(r);
            assert!(
                // Relative 1e-10, or 1e-15 absolute: tiny RDP values are ln A with A ≈ 1, where both
                // codes are limited by rounding of ln A itself.
                (ours - g).abs() <= 1e-10 * g.abs() + 1e-15,
                "q={q} σ={s} α={}: {ours} vs {g}",
                f(o)
            );
        }
    }
    let orders: Vec<f64> = (2..=256).map(f64::from).collect();
    let acc = RdpAccountant {
        orders,
        conversion: Conversion::Improved,
    };
    for c in fx["epsilon_integer_orders"].as_array().unwrap() {
        let ev =
            [
                Mechanism::sampled_gaussian(
                    f(&c["q"]),
                    f(&c["sigma"]),
                    c["steps"].as_u64().unwrap(),
                )
                .unwrap(),
            ];
        let g = acc.epsilon(&ev, f(&c["delta"])).unwrap();
        assert!(
            (g.epsilon - f(&c["epsilon"])).abs() < 1e-9 * g.epsilon,
            "{c}: {g:?}"
        );
        assert_eq!(g.order, f(&c["order"]));
    }
}

/// ln of the integrand of A_α (or of B_α) at z, with A_α = E_{z∼N(0,σ²)}[(μ_mix/μ_0)^α] and
/// B_α = E_{z∼mix}[(μ_0/μ_mix)^α] = ∫ μ_0^α μ_mix^{1−α}.
fn ln_integrand(q: f64, s: f64, alpha: f64, z: f64, b: bool) -> f64 {
    let ln_mu0 = -z * z / (2.0 * s * s) - (2.0 * std::f64::consts::PI * s * s).ln() / 2.0;
    let t = (2.0 * z - 1.0) / (2.0 * s * s);
    // ln(μ_mix/μ_0) = ln(1 − q + q e^t), computed directly (not with the crate's helpers).
    let ln_ratio = if t > 0.0 {
        t + (q + (1.0 - q) * (-t).exp()).ln()
    } else {
        (1.0 - q + q * t.exp()).ln()
    };
    if b {
        ln_mu0 + (1.0 - alpha) * ln_ratio
    } else {
        ln_mu0 + alpha * ln_ratio
    }
}

/// ln ∫ exp(g) by composite Simpson on a wide grid, scaled by the maximum.
fn ln_integral(g: impl Fn(f64) -> f64, lo: f64, hi: f64, n: usize) -> f64 {
    let h = (hi - lo) / n as f64;
    let vals: Vec<f64> = (0..=n).map(|i| g(lo + i as f64 * h)).collect();
    let m = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for (i, v) in vals.iter().enumerate() {
        let w = if i == 0 || i == n {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        s += w * (v - m).exp();
    }
    m + (s * h / 3.0).ln()
}

#[test]
fn rdp_matches_numerical_integration_integer_and_fractional_orders() {
    for &(q, s) in &[
        (0.01, 1.0),
        (0.05, 2.0),
        (0.2, 0.9),
        (0.001, 0.7),
        (0.5, 4.0),
    ] {
        for &alpha in &[
            2.0, 3.0, 5.0, 8.0, 16.0, 32.0, 1.1, 1.5, 2.5, 3.7, 7.3, 12.5,
        ] {
            let lo = -30.0 * s;
            let hi = alpha + 30.0 * s + 1.0;
            let ln_a = ln_integral(|z| ln_integrand(q, s, alpha, z, false), lo, hi, 400_000);
            let want = ln_a / (alpha - 1.0);
            let got = sampled_gaussian_rdp(q, s, alpha);
            assert!(
                // Compared on ln A_α = (α − 1)·rdp: relative 1e-7 or 1e-13 absolute (rounding).
                (got - want).abs() * (alpha - 1.0) <= 1e-7 * ln_a.abs() + 1e-13,
                "q={q} σ={s} α={alpha}: series {got} vs integral {want}"
            );
            // The other direction of the adjacency never exceeds it (Mironov et al. 2019).
            let ln_b = ln_integral(
                |z| ln_integrand(q, s, alpha, z, true),
                lo - alpha,
                hi,
                400_000,
            );
            assert!(
                ln_b <= ln_a + 1e-10,
                "q={q} σ={s} α={alpha}: B {ln_b} > A {ln_a}"
            );
        }
    }
}

#[test]
fn abadi_et_al_published_value_with_classic_conversion() {
    // Abadi et al. (2016): q = 0.01, σ = 4, T = 10,000, δ = 1e-5 gives ε ≈ 1.26 (moments
    // accountant = RDP at integer orders with the classic conversion).
    let ev = [Mechanism::sampled_gaussian(0.01, 4.0, 10_000).unwrap()];
    let orders: Vec<f64> = (2..=64).map(f64::from).collect();
    let acc = RdpAccountant {
        orders: orders.clone(),
        conversion: Conversion::Classic,
    };
    let curve = acc.rdp_curve(&ev).unwrap();
    let (eps, _) = rdp_to_epsilon(&orders, &curve, 1e-5, Conversion::Classic);
    assert!((eps - 1.26).abs() < 0.01, "classic ε = {eps}");
    // The improved conversion and the PLD accountant are both tighter.
    let improved = RdpAccountant::default().epsilon(&ev, 1e-5).unwrap().epsilon;
    let pld = PldAccountant::default().epsilon(&ev, 1e-5).unwrap();
    assert!(improved < eps && pld < improved, "{pld} {improved} {eps}");
}
