//! Benchmark (not a test): ε for q = 0.01, σ = 1, T = 10,000, δ = 1e-5 under PLD and RDP, and a
//! σ calibration under each. Plain `main`, median of several repetitions, timed with std::time.
//!
//! Run: `cargo bench -p dpselft-privacy`.

use std::time::{Duration, Instant};

use dpselft_privacy::calibrate_sigma;
use dpselft_privacy::{Mechanism, PldAccountant, RdpAccountant};

fn median<F: FnMut() -> f64>(reps: usize, mut f: F) -> (Duration, f64) {
    let mut times = Vec::with_capacity(reps);
    let mut value = f64::NAN;
    for _ in 0..reps {
        let t = Instant::now();
        value = std::hint::black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[reps / 2], value)
}

fn main() {
    let (q, sigma, steps, delta) = (0.01, 1.0, 10_000, 1e-5);
    let ev = [Mechanism::sampled_gaussian(q, sigma, steps).expect("valid")];
    let pld = PldAccountant::default();
    let rdp = RdpAccountant::default();

    let (t, eps) = median(7, || pld.epsilon(&ev, delta).expect("pld"));
    println!(
        "PLD  epsilon(q={q}, sigma={sigma}, T={steps}, delta={delta}) = {eps:.6}  median {t:?}  (target <= 50 ms)"
    );
    let (t, eps) = median(7, || rdp.epsilon(&ev, delta).expect("rdp").epsilon);
    println!(
        "RDP  epsilon(q={q}, sigma={sigma}, T={steps}, delta={delta}) = {eps:.6}  median {t:?}"
    );

    let target = 8.0;
    let (t, s) = median(3, || {
        calibrate_sigma(&pld, &[], &ev[0], target, delta).expect("calibration")
    });
    println!(
        "PLD  calibrate sigma for epsilon={target} (q={q}, T={steps}) = {s:.6}  median {t:?}  (target <= 1 s)"
    );
    let (t, s) = median(3, || {
        calibrate_sigma(&rdp, &[], &ev[0], target, delta).expect("calibration")
    });
    println!("RDP  calibrate sigma for epsilon={target} (q={q}, T={steps}) = {s:.6}  median {t:?}");

    // The pipeline's split: synthetic stage + label histogram fixed, fine-tuning σ solved.
    let synth = Mechanism::sampled_gaussian(0.05, 1.2, 300).expect("valid");
    let hist = Mechanism::gaussian(20.0, 1.0, 1).expect("valid");
    let (t, s) = median(3, || {
        calibrate_sigma(&pld, &[synth, hist], &ev[0], target, delta).expect("calibration")
    });
    println!(
        "PLD  calibrate fine-tuning sigma with synth (q=0.05, sigma=1.2, T=300) + histogram (sigma=20) fixed, total epsilon={target} = {s:.6}  median {t:?}"
    );
}
