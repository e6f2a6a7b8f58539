//! Poisson sampling and the micro-batch split.

use dpselft_dp::{NoiseRng, PoissonSampler, split_by_tokens};

#[test]
fn poisson_batch_sizes_average_q_n() {
    let (n, q, draws) = (1000, 0.1, 2000);
    let sampler = PoissonSampler::new(n, q).unwrap();
    let mut rng = NoiseRng::from_seed(17);
    let sizes: Vec<f64> = (0..draws)
        .map(|_| sampler.sample(&mut rng).len() as f64)
        .collect();
    let mean = sizes.iter().sum::<f64>() / draws as f64;
    let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (draws - 1) as f64;
    let expected_var = n as f64 * q * (1.0 - q);
    let se = (expected_var / draws as f64).sqrt();
    assert!(
        (mean - q * n as f64).abs() < 3.0 * se,
        "mean batch {mean}, expected {}",
        q * n as f64
    );
    // Binomial(n, q) spread, not a fixed-size batch.
    assert!(
        (var / expected_var - 1.0).abs() < 0.1,
        "variance {var}, expected {expected_var}"
    );
}

#[test]
fn every_example_is_included_at_rate_q() {
    let (n, q, draws) = (20, 0.25, 4000);
    let sampler = PoissonSampler::new(n, q).unwrap();
    let mut rng = NoiseRng::from_seed(18);
    let mut counts = vec![0usize; n];
    for _ in 0..draws {
        let batch = sampler.sample(&mut rng);
        assert!(
            batch.windows(2).all(|w| w[0] < w[1]),
            "indices ascending, no repeats"
        );
        batch.iter().for_each(|&i| counts[i] += 1);
    }
    let se = (q * (1.0 - q) / draws as f64).sqrt();
    for (i, &c) in counts.iter().enumerate() {
        let rate = c as f64 / draws as f64;
        assert!(
            (rate - q).abs() < 4.0 * se,
            "example {i} included at rate {rate}"
        );
    }
}

#[test]
fn sampler_parameters() {
    let s = PoissonSampler::with_expected_batch(500, 50.0).unwrap();
    assert_eq!(s.rate(), 0.1);
    assert_eq!(s.expected_batch_size(), 50.0);
    assert_eq!(
        PoissonSampler::new(7, 1.0)
            .unwrap()
            .sample(&mut NoiseRng::from_seed(0)),
        (0..7).collect::<Vec<_>>()
    );
    assert!(PoissonSampler::new(0, 0.5).is_err());
    assert!(PoissonSampler::new(10, 0.0).is_err());
    assert!(PoissonSampler::new(10, 1.5).is_err());
    assert!(PoissonSampler::new(10, f64::NAN).is_err());
    assert!(PoissonSampler::with_expected_batch(10, 11.0).is_err());
}

#[test]
fn same_seed_same_batches() {
    let s = PoissonSampler::new(100, 0.3).unwrap();
    let (mut a, mut b) = (NoiseRng::from_seed(4), NoiseRng::from_seed(4));
    for _ in 0..10 {
        assert_eq!(s.sample(&mut a), s.sample(&mut b));
    }
}

#[test]
fn micro_batches_cover_the_batch_within_the_budget() {
    let lengths: Vec<usize> = (0..50).map(|i| 1 + (i * 37) % 64).collect();
    let batch: Vec<usize> = (0..50).filter(|i| i % 3 != 0).collect();
    let budget = 128;
    let micro = split_by_tokens(&batch, &lengths, budget).unwrap();
    let mut seen: Vec<usize> = micro.iter().flatten().copied().collect();
    seen.sort();
    assert_eq!(seen, batch);
    for mb in &micro {
        let padded = mb.len() * mb.iter().map(|&i| lengths[i]).max().unwrap();
        assert!(
            padded <= budget,
            "micro-batch {mb:?} costs {padded} padded tokens"
        );
    }
}

#[test]
fn micro_batch_edge_cases() {
    let lengths = [10, 300, 5];
    // An example longer than the budget goes alone rather than being dropped.
    assert_eq!(
        split_by_tokens(&[0, 1, 2], &lengths, 100).unwrap(),
        vec![vec![1], vec![0, 2]]
    );
    assert!(split_by_tokens(&[], &lengths, 100).unwrap().is_empty());
    assert!(split_by_tokens(&[3], &lengths, 100).is_err());
    assert!(split_by_tokens(&[0], &lengths, 0).is_err());
}

/// A causal LM's micro-batches are capped so that their logits (tokens × vocabulary) stay
/// within 2²⁵ floats; a classifier's, and a small vocabulary's, are not.
#[test]
fn a_large_vocabulary_caps_the_micro_batch_tokens() {
    use candle_core::{DType, Device};
    use dpselft_dp::micro_batch_tokens;
    use dpselft_model::{Head, Model};
    let big = dpselft_testkit::tiny_llama_config(1 << 16, true);
    let mut lm = Model::random(big, 0.02, 0, DType::F32, &Device::Cpu).unwrap();
    lm.head = Head::CausalLm;
    assert_eq!(micro_batch_tokens(&lm, 8192), (1 << 25) / (1 << 16));
    assert_eq!(micro_batch_tokens(&lm, 100), 100);
    let mut classifier = lm.clone();
    classifier
        .set_classifier(vec!["a".into(), "b".into()], lm.default_pooling(), 0)
        .unwrap();
    assert_eq!(micro_batch_tokens(&classifier, 8192), 8192);
    let small = dpselft_testkit::tiny_llama_config(20, true);
    let mut lm = Model::random(small, 0.02, 0, DType::F32, &Device::Cpu).unwrap();
    lm.head = Head::CausalLm;
    assert_eq!(micro_batch_tokens(&lm, 8192), 8192);
}
