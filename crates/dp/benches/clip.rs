//! Cost of the DP part of a step (per-example norms + clipped sums) against the batch-summed
//! weight gradients a non-private backward computes, on the trainable linears of one MiniLM block
//! (d = 384, FFN 1536) at batch 32 × 128 tokens. Not a timed test: prints figures.
//!
//! Run: `cargo bench -p dpselft-dp --bench clip`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use dpselft_dp::{
    Clipping, GradRecord, NoiseRng, NormMethod, Padding, clip_and_sum, fill_gaussian_f32,
};

fn randn(shape: (usize, usize, usize), rng: &mut NoiseRng) -> Tensor {
    let mut v = vec![0f32; shape.0 * shape.1 * shape.2];
    fill_gaussian_f32(&mut v, 1.0, rng).expect("noise");
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn time<F: FnOnce()>(f: F) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn main() {
    let (b, t, d, ff) = (32, 128, 384, 1536);
    let mut rng = NoiseRng::from_seed(0);
    // q, k, v, o, FFN up, FFN down: (d_in, d_out).
    let layers = [(d, d), (d, d), (d, d), (d, d), (d, ff), (ff, d)];
    let data: Vec<(Tensor, Tensor)> = layers
        .iter()
        .map(|&(d_in, d_out)| {
            (
                randn((b, t, d_in), &mut rng),
                randn((b, t, d_out), &mut rng),
            )
        })
        .collect();
    let params: Vec<Vec<GradRecord>> = data
        .iter()
        .flat_map(|(x, g)| {
            [
                vec![GradRecord::linear(x, g, Padding::GradIsZero).expect("record")],
                vec![GradRecord::bias(g, Padding::GradIsZero).expect("record")],
            ]
        })
        .collect();
    let clipping = Clipping::Flat { max_norm: 1.0 };
    println!("clip benchmark: one MiniLM block's linears + biases, B = {b}, T = {t}, f32, CPU");

    // Interleaved, best of 9: the machine is shared, and the minimum is the least disturbed run.
    let plain_gradients = || {
        for (x, g) in &data {
            let (_, _, d_in) = x.dims3().expect("dims");
            let d_out = g.dim(2).expect("dims");
            let xs = x.reshape((b * t, d_in)).expect("reshape");
            let gs = g.reshape((b * t, d_out)).expect("reshape");
            gs.t().expect("t").matmul(&xs).expect("matmul");
            g.sum((0, 1)).expect("sum");
        }
    };
    let configs = [
        (
            "clipped-sum path, no norms (Clipping::Off)",
            Clipping::Off,
            NormMethod::Auto,
        ),
        ("DP norms + clipped sums (Auto)", clipping, NormMethod::Auto),
        (
            "DP norms + clipped sums (Ghost)",
            clipping,
            NormMethod::Ghost,
        ),
        (
            "DP norms + clipped sums (Materialize)",
            clipping,
            NormMethod::Materialize,
        ),
    ];
    let mut plain = f64::INFINITY;
    let mut best = [f64::INFINITY; 4];
    for _ in 0..9 {
        plain = plain.min(time(plain_gradients));
        for (k, (_, clip, method)) in configs.iter().enumerate() {
            best[k] = best[k].min(time(|| {
                clip_and_sum(&params, clip, *method).expect("clip");
            }));
        }
    }
    println!(
        "non-private weight + bias gradients (gᵀx, Σg): {:.1} ms",
        plain * 1e3
    );
    for ((name, _, _), t) in configs.iter().zip(best) {
        println!(
            "{name}: {:.1} ms ({:.2}× the plain gradients)",
            t * 1e3,
            t / plain
        );
    }
}
