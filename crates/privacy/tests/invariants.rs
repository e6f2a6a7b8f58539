//! Invariants every accountant must satisfy: monotonicity, PLD ≤ RDP, composition consistency.

use dpselft_privacy::pld::{Direction, PldOptions, compose, subsampled_gaussian_pld};
use dpselft_privacy::{Accountant, Mechanism, PldAccountant, RdpAccountant, calibrate_sigma};

fn sg(q: f64, s: f64, t: u64) -> Mechanism {
    Mechanism::sampled_gaussian(q, s, t).unwrap()
}

#[test]
fn epsilon_decreases_in_sigma_and_increases_in_q_and_steps() {
    let pld = PldAccountant::default();
    let rdp = RdpAccountant::default();
    let accs: [&dyn Accountant; 2] = [&pld, &rdp];
    for acc in accs {
        let by_sigma: Vec<f64> = [0.6, 0.8, 1.0, 1.5, 3.0]
            .iter()
            .map(|&s| acc.epsilon(&[sg(0.02, s, 500)], 1e-5).unwrap())
            .collect();
        assert!(by_sigma.windows(2).all(|w| w[0] > w[1]), "{by_sigma:?}");
        let by_q: Vec<f64> = [0.001, 0.01, 0.05, 0.2, 1.0]
            .iter()
            .map(|&q| acc.epsilon(&[sg(q, 1.5, 200)], 1e-5).unwrap())
            .collect();
        assert!(by_q.windows(2).all(|w| w[0] < w[1]), "{by_q:?}");
        let by_t: Vec<f64> = [1, 10, 100, 1000, 5000]
            .iter()
            .map(|&t| acc.epsilon(&[sg(0.01, 1.0, t)], 1e-5).unwrap())
            .collect();
        assert!(by_t.windows(2).all(|w| w[0] < w[1]), "{by_t:?}");
        // δ(ε) decreases in ε.
        let by_eps: Vec<f64> = [0.5, 1.0, 2.0, 4.0]
            .iter()
            .map(|&e| acc.delta(&[sg(0.01, 1.0, 1000)], e).unwrap())
            .collect();
        assert!(by_eps.windows(2).all(|w| w[0] > w[1]), "{by_eps:?}");
    }
}

#[test]
fn pld_never_exceeds_rdp() {
    let pld = PldAccountant::default();
    let rdp = RdpAccountant::default();
    for &(q, s, t) in &[
        (0.01, 1.0, 1000),
        (0.001, 0.7, 5000),
        (0.1, 2.0, 100),
        (0.5, 1.0, 10),
        (1.0, 3.0, 5),
        (0.02, 5.0, 2000),
    ] {
        let ev = [sg(q, s, t)];
        for delta in [1e-5, 1e-9] {
            let p = pld.epsilon(&ev, delta).unwrap();
            let r = rdp.epsilon(&ev, delta).unwrap().epsilon;
            assert!(p <= r, "q={q} σ={s} T={t} δ={delta}: PLD {p} > RDP {r}");
        }
        // (Where RDP's δ is meaningful: the PLD's δ has a floor of ~1e-13 from the FFT rounding
        // allowance it adds.)
        for eps in [0.5, 2.0] {
            let p = pld.delta(&ev, eps).unwrap();
            let r = rdp.delta(&ev, eps).unwrap().delta;
            if r < 1e-11 {
                assert!(p < 1e-11, "q={q} σ={s} T={t} ε={eps}: PLD δ {p}");
                continue;
            }
            assert!(p <= r, "q={q} σ={s} T={t} ε={eps}: PLD δ {p} > RDP δ {r}");
        }
    }
}

#[test]
fn t_separate_events_equal_t_self_compositions() {
    // Through the FFT composition itself: T parts of one step vs one part of T steps.
    let o = PldOptions {
        discretisation: 1e-3,
        ..PldOptions::default()
    };
    let r = subsampled_gaussian_pld(0.05, 1.0, Direction::Remove, &o).unwrap();
    let a = subsampled_gaussian_pld(0.05, 1.0, Direction::Add, &o).unwrap();
    let parts: Vec<_> = (0..7).map(|_| (&r, &a, 1u64)).collect();
    let (sep_r, sep_a) = compose(&parts, &o).unwrap();
    let (pow_r, pow_a) = compose(&[(&r, &a, 7)], &o).unwrap();
    for eps in [0.0, 0.2, 0.5, 1.0, 2.0] {
        for (x, y) in [(&sep_r, &pow_r), (&sep_a, &pow_a)] {
            let (dx, dy) = (x.delta_for_epsilon(eps), y.delta_for_epsilon(eps));
            assert!(
                (dx - dy).abs() <= 1e-10 * dy + 1e-15,
                "ε={eps}: {dx} vs {dy}"
            );
        }
    }
    // And through the accountants' event lists.
    let pld = PldAccountant::default();
    let rdp = RdpAccountant::default();
    let many: Vec<Mechanism> = (0..50).map(|_| sg(0.01, 1.0, 20)).collect();
    let one = [sg(0.01, 1.0, 1000)];
    assert_eq!(
        pld.epsilon(&many, 1e-5).unwrap(),
        pld.epsilon(&one, 1e-5).unwrap()
    );
    assert_eq!(
        rdp.epsilon(&many, 1e-5).unwrap(),
        rdp.epsilon(&one, 1e-5).unwrap()
    );
}

#[test]
fn heterogeneous_composition_is_order_free_and_between_its_parts() {
    let pld = PldAccountant::default();
    let synth = sg(0.05, 1.2, 300);
    let hist = Mechanism::gaussian(20.0, 1.0, 1).unwrap();
    let train = sg(0.02, 1.0, 2000);
    let a = pld.epsilon(&[synth, hist, train], 1e-5).unwrap();
    let b = pld.epsilon(&[train, synth, hist], 1e-5).unwrap();
    assert!((a - b).abs() < 1e-9, "{a} {b}");
    let alone = pld.epsilon(&[train], 1e-5).unwrap();
    let sum = pld.epsilon(&[synth], 1e-5).unwrap() + pld.epsilon(&[hist], 1e-5).unwrap() + alone;
    assert!(a > alone && a < sum, "{alone} < {a} < {sum}");
}

#[test]
fn calibration_with_pld_meets_target_and_split_between_stages() {
    let pld = PldAccountant::default();
    let delta = 1e-5;
    let train = sg(0.02, 1.0, 500);
    let s = calibrate_sigma(&pld, &[], &train, 2.0, delta).unwrap();
    assert!(
        pld.epsilon(&[train.with_noise_multiplier(s)], delta)
            .unwrap()
            <= 2.0
    );
    assert!(
        pld.epsilon(&[train.with_noise_multiplier(s / (1.0 + 1e-4))], delta)
            .unwrap()
            > 2.0
    );
    // Stage 1 fixed, stage 3 solved so that the composition meets the total.
    let synth = sg(0.05, 2.0, 100);
    let s3 = calibrate_sigma(&pld, &[synth], &train, 2.0, delta).unwrap();
    assert!(s3 > s);
    let total = pld
        .epsilon(&[synth, train.with_noise_multiplier(s3)], delta)
        .unwrap();
    assert!(total <= 2.0 && total > 1.99, "{total}");
}

#[test]
fn invalid_inputs_are_errors_not_panics() {
    assert!(Mechanism::sampled_gaussian(0.0, 1.0, 1).is_err());
    assert!(Mechanism::sampled_gaussian(1.5, 1.0, 1).is_err());
    assert!(Mechanism::sampled_gaussian(0.1, 0.0, 1).is_err());
    assert!(Mechanism::sampled_gaussian(0.1, f64::NAN, 1).is_err());
    assert!(Mechanism::sampled_gaussian(0.1, 1.0, 0).is_err());
    assert!(Mechanism::gaussian(1.0, 0.0, 1).is_err());
    let ev = [sg(0.1, 1.0, 10)];
    let pld = PldAccountant::default();
    for d in [0.0, 1.0, -1.0, f64::NAN] {
        assert!(pld.epsilon(&ev, d).is_err());
        assert!(RdpAccountant::default().epsilon(&ev, d).is_err());
    }
    assert!(pld.delta(&ev, -1.0).is_err());
    // A tiny σ needs an enormous grid: a clear error.
    assert!(pld.epsilon(&[sg(0.1, 0.001, 10)], 1e-5).is_err());
}

#[test]
fn extreme_parameters_stay_sound() {
    let pld = PldAccountant::default();
    let rdp = RdpAccountant::default();
    for &(q, s, t) in &[
        (1e-6, 0.5, 1_000_000),
        (0.999, 0.5, 3),
        (0.5, 100.0, 1000),
        (0.01, 0.2, 100),
        (1.0, 0.3, 1),
        (1e-3, 30.0, 100_000),
    ] {
        let ev = [sg(q, s, t)];
        let r = rdp.epsilon(&ev, 1e-5).unwrap().epsilon;
        match pld.epsilon(&ev, 1e-5) {
            Ok(p) => assert!(p <= r, "q={q} σ={s} T={t}: PLD {p} > RDP {r}"),
            Err(e) => panic!("q={q} σ={s} T={t}: {e}"),
        }
    }
}
