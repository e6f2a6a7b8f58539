//! Time to generate Gaussian noise for, and add it to, 100M f32 parameters (one DP step's noise
//! for a ~100M-parameter trainable set). Not a timed test: prints figures.
//!
//! Run: `cargo bench -p dpselft-dp --bench noise` (optionally `-- <millions of values>`).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use dpselft_dp::{NoiseRng, add_gaussian_noise, fill_gaussian_f32};

fn main() {
    let millions: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let n = millions * 1_000_000;
    let mut rng = NoiseRng::from_seed(0);
    println!(
        "noise benchmark: {n} f32 values, {} rayon threads",
        rayon::current_num_threads()
    );

    // Warm-up (page faults of the first large allocation).
    let mut buf = vec![0f32; n];
    fill_gaussian_f32(&mut buf, 1.0, &mut rng).expect("fill");

    let reps = 3;
    let mut best_fill = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        fill_gaussian_f32(&mut buf, 1.0, &mut rng).expect("fill");
        best_fill = best_fill.min(t.elapsed().as_secs_f64());
    }
    println!(
        "fill_gaussian_f32 (into an existing buffer): {:.3} s best of {reps}, {:.2} ns/value",
        best_fill,
        best_fill * 1e9 / n as f64
    );
    drop(buf);

    let params = Tensor::zeros(n, DType::F32, &Device::Cpu).expect("zeros");
    let mut best_add = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        let noisy = add_gaussian_noise(&params, 1.0, &mut rng).expect("add");
        best_add = best_add.min(t.elapsed().as_secs_f64());
        drop(noisy);
    }
    println!(
        "add_gaussian_noise (allocate, fill, add): {:.3} s best of {reps}, {:.2} ns/value",
        best_add,
        best_add * 1e9 / n as f64
    );
}
