//! The RNG and the Gaussian noise: statistics, reproducibility, resumption, parallel determinism.

use candle_core::{DType, Device, Tensor};
use dpselft_dp::{
    NoiseRng, NoiseRngState, SeedSource, add_gaussian_noise, fill_gaussian_f32, fill_gaussian_f64,
};
use rand_chacha::rand_core::RngCore;

#[test]
fn noise_has_std_sigma_c_and_mean_zero() {
    let (sigma, c) = (1.3, 0.7);
    let std = sigma * c;
    let n = 1_000_000;
    let mut v = vec![0f64; n];
    fill_gaussian_f64(&mut v, std, &mut NoiseRng::from_seed(7)).unwrap();
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let emp_std = var.sqrt();
    // Standard errors: of the mean std/√n, of the std ≈ std/√(2n).
    assert!(mean.abs() < 3.0 * std / (n as f64).sqrt(), "mean {mean}");
    assert!(
        (emp_std - std).abs() < 3.0 * std / (2.0 * n as f64).sqrt(),
        "std {emp_std} vs {std}"
    );
    // Shape, not only moments: every decile of N(0, 1) holds a tenth of the values ...
    let deciles = [
        -1.281_551_565_5,
        -0.841_621_233_6,
        -0.524_400_512_7,
        -0.253_347_103_1,
        0.0,
    ];
    let edges: Vec<f64> = deciles
        .iter()
        .copied()
        .chain(deciles[..4].iter().rev().map(|q| -q))
        .collect();
    let mut bins = [0usize; 10];
    for x in &v {
        bins[edges.iter().filter(|&&e| x / std > e).count()] += 1;
    }
    let se = (0.1 * 0.9 / n as f64).sqrt();
    for (k, &count) in bins.iter().enumerate() {
        let frac = count as f64 / n as f64;
        assert!((frac - 0.1).abs() < 4.0 * se, "decile {k} holds {frac}");
    }
    // ... and the tails are right: P(|Z| > 2) = 0.0455 and P(|Z| > 3) = 0.0027.
    for (k, p) in [(2.0, 0.045_500_26), (3.0, 0.002_699_80)] {
        let frac = v.iter().filter(|x| x.abs() > k * std).count() as f64 / n as f64;
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (frac - p).abs() < 4.0 * se,
            "P(|Z| > {k}) = {frac}, expected {p}"
        );
    }
}

#[test]
fn add_gaussian_noise_to_a_tensor() {
    let t = Tensor::full(5f32, (300, 400), &Device::Cpu).unwrap();
    let noisy = add_gaussian_noise(&t, 2.0, &mut NoiseRng::from_seed(1)).unwrap();
    assert_eq!(noisy.dims(), t.dims());
    assert_eq!(noisy.dtype(), DType::F32);
    let v: Vec<f32> = noisy.flatten_all().unwrap().to_vec1().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!((mean - 5.0).abs() < 3.0 * 2.0 / n.sqrt(), "mean {mean}");
    assert!(
        (std - 2.0).abs() < 3.0 * 2.0 / (2.0 * n).sqrt(),
        "std {std}"
    );
    assert!(add_gaussian_noise(&t, -1.0, &mut NoiseRng::from_seed(1)).is_err());
    assert!(add_gaussian_noise(&t, f64::NAN, &mut NoiseRng::from_seed(1)).is_err());
    let ints = Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap();
    assert!(add_gaussian_noise(&ints, 1.0, &mut NoiseRng::from_seed(1)).is_err());
}

#[test]
fn same_seed_same_stream_different_seed_different_stream() {
    let draw = |seed| {
        let mut v = vec![0f32; 1000];
        fill_gaussian_f32(&mut v, 1.0, &mut NoiseRng::from_seed(seed)).unwrap();
        v
    };
    assert_eq!(draw(3), draw(3));
    assert_ne!(draw(3), draw(4));
    let mut a = NoiseRng::from_seed(9);
    let mut b = NoiseRng::from_seed(9);
    assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
}

#[test]
fn f32_noise_is_the_f64_noise_rounded() {
    let mut v32 = vec![0f32; 200_001];
    let mut v64 = vec![0f64; 200_001];
    fill_gaussian_f32(&mut v32, 0.5, &mut NoiseRng::from_seed(11)).unwrap();
    fill_gaussian_f64(&mut v64, 0.5, &mut NoiseRng::from_seed(11)).unwrap();
    assert!(v32.iter().zip(&v64).all(|(&a, &b)| a == b as f32));
}

#[test]
fn noise_does_not_depend_on_the_thread_count() {
    let draw = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut rng = NoiseRng::from_seed(5);
            let mut v = vec![0f32; 300_007];
            fill_gaussian_f32(&mut v, 1.0, &mut rng).unwrap();
            (v, rng.next_u64())
        })
    };
    assert_eq!(draw(1), draw(3));
}

#[test]
fn saved_state_resumes_the_exact_stream() {
    let mut rng = NoiseRng::from_seed(21);
    let mut first = vec![0f32; 1001];
    fill_gaussian_f32(&mut first, 1.0, &mut rng).unwrap();
    rng.next_u32(); // leave the stream at an odd word position
    let state = rng.state();
    let json = serde_json::to_string(&state).unwrap();
    let mut expected = vec![0f32; 777];
    fill_gaussian_f32(&mut expected, 1.0, &mut rng).unwrap();
    let tail_expected = rng.next_u64();

    let restored: NoiseRngState = serde_json::from_str(&json).unwrap();
    let mut resumed = NoiseRng::from_state(&restored).unwrap();
    assert!(resumed.is_seeded());
    let mut got = vec![0f32; 777];
    fill_gaussian_f32(&mut got, 1.0, &mut resumed).unwrap();
    assert_eq!(got, expected);
    assert_eq!(resumed.next_u64(), tail_expected);
}

#[test]
fn os_seeded_rng_says_so_and_differs() {
    let mut a = NoiseRng::from_os_rng().unwrap();
    let mut b = NoiseRng::from_os_rng().unwrap();
    assert_eq!(a.seed_source(), SeedSource::Os);
    assert!(!a.is_seeded());
    assert_ne!(a.next_u64(), b.next_u64());
    // An OS-keyed stream also resumes exactly (and the state still says "os").
    let state = a.state();
    assert_eq!(
        NoiseRng::from_state(&state).unwrap().next_u64(),
        a.next_u64()
    );
    assert_eq!(
        NoiseRng::from_state(&state).unwrap().seed_source(),
        SeedSource::Os
    );
}

#[test]
fn corrupt_states_are_errors() {
    let good = NoiseRng::from_seed(1).state();
    let mut bad = good.clone();
    bad.key_hex.pop();
    assert!(NoiseRng::from_state(&bad).is_err());
    let mut bad = good.clone();
    bad.word_pos = "x".into();
    assert!(NoiseRng::from_state(&bad).is_err());
    let mut bad = good;
    bad.algorithm = "pcg".into();
    assert!(NoiseRng::from_state(&bad).is_err());
}

#[test]
fn split_children_are_independent_and_reproducible() {
    let mut parent = NoiseRng::from_seed(2);
    let mut c1 = parent.split();
    let mut c2 = parent.split();
    assert_ne!(c1.next_u64(), c2.next_u64());
    let mut again = NoiseRng::from_seed(2).split();
    assert_eq!(again.next_u64(), NoiseRng::from_seed(2).split().next_u64());
    assert!(c1.is_seeded());
}

#[test]
fn debug_output_shows_no_key() {
    let rng = NoiseRng::from_seed(12);
    let key = rng.state().key_hex;
    let shown = format!("{rng:?}");
    assert!(!shown.contains(&key[..16]), "{shown}");
    assert!(shown.contains("Explicit"));
}
